//! Bounded journal storage (`nurture store compact`): the journal of a run that ended
//! longer ago than the project's retention is replaced by ONE summary line (kind
//! `summary`): its workflow, version, status, start and end, the lines and steps it had
//! and its effects counted by kind. Open runs are never touched. On SQLite the file is
//! then vacuumed, so it shrinks.
//!
//! The store offers three narrow operations ([`RetentionStore`]); the walk over the ended
//! runs and the summaries are here, the same for every store ([`compact`]).

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::{json, Value};

use crate::{JournalEntry, JournalKind, Run, Store, StoreError, Ts};

/// Ended runs read per page by [`compact`].
pub const PAGE: i64 = 500;

/// What a compaction did (or, dry, would do).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Compacted {
    /// Whether nothing was written.
    pub dry_run: bool,
    /// Runs whose end is before this were compacted.
    pub ended_before: Option<Ts>,
    /// Runs compacted (each now has one summary line).
    pub runs: u64,
    /// Journal lines replaced by the summaries.
    pub lines: u64,
    /// Rows of the journal table deleted (a row may hold several lines).
    pub rows_deleted: u64,
    /// Ended runs already compacted before, left as they were.
    pub already: u64,
    /// Runs left because they ended too recently or are still open (counted from the
    /// ended runs read; open runs are not read at all).
    pub kept: u64,
}

/// The store's part of compaction. Every [`crate::Store`] implements it; the in-memory
/// store of simulations answers [`StoreError::Unsupported`].
#[async_trait]
pub trait RetentionStore: Send + Sync {
    /// Up to `limit` ended runs (any status but `active` and `waiting`) whose id sorts
    /// after `after`, in id order.
    async fn ended_runs(&self, after: &str, limit: i64) -> Result<Vec<Run>, StoreError>;

    /// In one transaction, for each summary line: deletes every journal row of its run
    /// and inserts the line, only if that run is still stored as ended. Answers the rows
    /// deleted.
    async fn replace_journals(&self, summaries: &[JournalEntry]) -> Result<u64, StoreError>;

    /// Up to `limit` contacts, in id order after `after`, with lines of their own (no
    /// run) stored at a time before `before`.
    async fn contacts_with_lines_before(
        &self,
        after: &str,
        before: Ts,
        limit: i64,
    ) -> Result<Vec<String>, StoreError>;

    /// The rows of `contact`'s own lines (no run) stored at a time before `before`, in id
    /// order: each row's id and its lines.
    async fn contact_rows_before(
        &self,
        contact: &str,
        before: Ts,
    ) -> Result<Vec<(i64, Vec<JournalEntry>)>, StoreError>;

    /// In one transaction, while the contact is stored (its row locked against an
    /// erasure, which would otherwise miss the new row): deletes `contact`'s own rows
    /// `ids` and stores `summary` as one row with the first of those ids, so that it
    /// sorts where they were. Answers the rows deleted (none when they are gone already
    /// or the contact is: then nothing is inserted).
    async fn replace_contact_rows(
        &self,
        contact: &str,
        ids: &[i64],
        summary: &JournalEntry,
    ) -> Result<u64, StoreError>;

    /// Gives the space freed back to the file system where the store can (SQLite:
    /// `VACUUM` when the file has free pages, or an incremental vacuum when the file is
    /// in that mode; Postgres: the journal's partitions of ended months rows were deleted
    /// from are copied and the old ones dropped). Cheap when there is nothing to give.
    async fn reclaim_space(&self) -> Result<(), StoreError>;
}

/// The runs `summaries` are about (what [`RetentionStore::replace_journals`] checks
/// are still ended).
pub fn runs_of(summaries: &[JournalEntry]) -> Vec<String> {
    summaries.iter().filter_map(|l| l.run_id.clone()).collect()
}

/// The summaries whose run is in `ended`.
pub fn of_ended(summaries: &[JournalEntry], ended: &[String]) -> Vec<JournalEntry> {
    let ended: std::collections::HashSet<&str> = ended.iter().map(String::as_str).collect();
    summaries
        .iter()
        .filter(|l| l.run_id.as_deref().is_some_and(|r| ended.contains(r)))
        .cloned()
        .collect()
}

/// Whether a run's journal is already its summary.
pub fn is_compacted(journal: &[JournalEntry]) -> bool {
    journal.len() == 1 && journal[0].kind == JournalKind::Summary
}

/// The one line a compacted run keeps, from the run and its journal.
pub fn summary_line(run: &Run, journal: &[JournalEntry]) -> JournalEntry {
    let mut effects: BTreeMap<String, u64> = BTreeMap::new();
    let mut steps = 0u64;
    for e in journal {
        match e.kind {
            JournalKind::Step => steps += 1,
            JournalKind::Effect => {
                let kind = e.data.get("effect").and_then(Value::as_str).unwrap_or("?");
                *effects.entry(kind.to_string()).or_default() += 1;
            }
            _ => {}
        }
    }
    let at = run.ended_at.unwrap_or(run.updated_at);
    JournalEntry {
        run_id: Some(run.id.clone()),
        contact: run.contact.clone(),
        at,
        kind: JournalKind::Summary,
        data: json!({
            "workflow": run.workflow,
            "version": run.workflow_version,
            "status": run.status.as_str(),
            "exit_reason": run.exit_reason,
            "started_at": crate::ts_out(run.started_at),
            "ended_at": crate::ts_out(at),
            "lines": journal.len(),
            "steps": steps,
            "effects": effects,
        }),
    }
}

/// What a compaction of a contact's own lines did (or, dry, would do).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct CompactedContacts {
    /// Lines stored before this were summed up.
    pub before: Option<Ts>,
    /// Contacts whose old lines became one summary line each.
    pub contacts: u64,
    /// Lines replaced by the summaries.
    pub lines: u64,
    /// Rows deleted.
    pub rows_deleted: u64,
    /// Rows kept because they hold a consent line (the proof of consent is never summed
    /// up).
    pub consent_rows_kept: u64,
}

/// Whether a line is consent or a change of it (kept: it is the proof).
fn is_consent(line: &JournalEntry) -> bool {
    line.kind == "consent" || line.data["changes"].get("consent").is_some()
}

/// Adds `line` to a contact summary's counts (a summary from an earlier compaction adds
/// its own counts).
fn add_to_summary(counts: &mut Value, line: &JournalEntry) {
    let add = |counts: &mut Value, key: &str, name: &str, n: u64| {
        let slot = &mut counts[key][name];
        *slot = json!(slot.as_u64().unwrap_or(0) + n);
    };
    if line.kind == JournalKind::Summary {
        counts["lines"] =
            json!(counts["lines"].as_u64().unwrap_or(0) + line.data["lines"].as_u64().unwrap_or(0));
        for key in ["kinds", "effects"] {
            if let Some(m) = line.data[key].as_object() {
                for (name, n) in m {
                    add(counts, key, name, n.as_u64().unwrap_or(0));
                }
            }
        }
        if let Some(from) = line.data["from"].as_str() {
            counts["from"] = json!(from);
        }
        return;
    }
    counts["lines"] = json!(counts["lines"].as_u64().unwrap_or(0) + 1);
    add(counts, "kinds", line.kind.as_str(), 1);
    if let Some(effect) = line.data["effect"].as_str() {
        add(counts, "effects", effect, 1);
    }
    if counts["from"].is_null() {
        counts["from"] = json!(crate::ts_out(line.at));
    }
}

/// The summary line of a contact's `lines` (oldest first, not empty).
pub fn contact_summary(contact: &str, lines: &[&JournalEntry]) -> JournalEntry {
    let mut counts = json!({"from": null, "to": null, "lines": 0, "kinds": {}, "effects": {}});
    for l in lines {
        add_to_summary(&mut counts, l);
    }
    // At the first line's time, as at its id: it sorts where they were, by id or by time.
    let last = lines.last().map_or_else(chrono::Utc::now, |l| l.at);
    counts["to"] = json!(crate::ts_out(last));
    JournalEntry {
        run_id: None,
        contact: contact.to_string(),
        at: lines.first().map_or(last, |l| l.at),
        kind: JournalKind::Summary,
        data: counts,
    }
}

/// Replaces every contact's own lines stored before `before` (no run: scoring, segments,
/// imports) by one summary line per contact, counts by kind and effect; rows that hold a
/// consent line are kept as they are. Nothing is written when `dry_run`.
pub async fn compact_contact_lines(
    store: &dyn Store,
    before: Ts,
    dry_run: bool,
) -> Result<CompactedContacts, StoreError> {
    let mut done = CompactedContacts {
        before: Some(before),
        ..Default::default()
    };
    let mut after = String::new();
    loop {
        let page = store
            .contacts_with_lines_before(&after, before, PAGE)
            .await?;
        let Some(last) = page.last() else { break };
        after = last.clone();
        for contact in &page {
            let rows = store.contact_rows_before(contact, before).await?;
            let (kept, gone): (Vec<_>, Vec<_>) = rows
                .iter()
                .partition(|(_, lines)| lines.iter().any(is_consent));
            done.consent_rows_kept += kept.len() as u64;
            let lines: Vec<&JournalEntry> = gone.iter().flat_map(|(_, l)| l).collect();
            // One summary alone is what an earlier compaction left: nothing to do.
            if gone.is_empty() || (gone.len() == 1 && is_compacted(&gone[0].1)) {
                continue;
            }
            if !dry_run {
                let ids: Vec<i64> = gone.iter().map(|(id, _)| *id).collect();
                let summary = contact_summary(contact, &lines);
                let deleted = store.replace_contact_rows(contact, &ids, &summary).await?;
                if deleted == 0 {
                    continue;
                }
                done.rows_deleted += deleted;
            }
            done.contacts += 1;
            done.lines += lines.len() as u64;
        }
    }
    Ok(done)
}

/// Replaces the journal of every run that ended before `ended_before` by its summary
/// line (nothing written when `dry_run`), then gives the space back.
pub async fn compact(
    store: &dyn Store,
    ended_before: Ts,
    dry_run: bool,
) -> Result<Compacted, StoreError> {
    let mut done = Compacted {
        dry_run,
        ended_before: Some(ended_before),
        ..Default::default()
    };
    let mut after = String::new();
    loop {
        let page = store.ended_runs(&after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.id.clone();
        let mut summaries = Vec::new();
        for run in &page {
            if run.ended_at.is_none_or(|t| t >= ended_before) {
                done.kept += 1;
                continue;
            }
            let journal = store.journal(&run.id).await?;
            if is_compacted(&journal) || journal.is_empty() {
                done.already += 1;
                continue;
            }
            done.runs += 1;
            done.lines += journal.len() as u64;
            summaries.push(summary_line(run, &journal));
        }
        if !dry_run && !summaries.is_empty() {
            done.rows_deleted += store.replace_journals(&summaries).await?;
        }
    }
    // Also when nothing was compacted now: space an earlier compaction could not give
    // back (a Postgres partition that was busy, or whose month had not ended) is.
    if !dry_run {
        store.reclaim_space().await?;
    }
    Ok(done)
}
