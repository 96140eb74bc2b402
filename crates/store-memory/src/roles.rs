//! The role traits of the store: versions, controls, the outbox and queues as operators
//! see them, report counts, pages; erasure, API keys and journal compaction are not
//! offered.

use std::collections::BTreeMap;

use async_trait::async_trait;

use nurture_store::counts::{CountFilter, CountRow};
use nurture_store::keys::{ApiKey, AuditEntry};
use nurture_store::privacy::{EraseError, Erased, Erasure};
use nurture_store::*;

use crate::data::{Outboxed, State};
use crate::{ms, unsupported, MemoryStore};

#[async_trait]
impl VersionStore for MemoryStore {
    async fn deploy(
        &self,
        new: &[WorkflowVersion],
        expected: &[Expected],
    ) -> Result<(), StoreError> {
        versions::check_sizes(new)?;
        let mut inner = self.lock();
        let latest = |v: &BTreeMap<(String, u32), WorkflowVersion>, wf: &str| {
            v.keys().filter(|(w, _)| w == wf).map(|(_, n)| *n).max()
        };
        for e in expected {
            if latest(&inner.versions, &e.workflow) != e.version {
                return Err(versions::version_conflict(&e.workflow));
            }
        }
        let mut add = Vec::new();
        for v in new {
            match inner.versions.get(&(v.workflow.clone(), v.version)) {
                Some(s) if s.hash == v.hash => continue,
                Some(_) => return Err(versions::version_conflict(&v.workflow)),
                None => match add.iter().find(|a: &&&WorkflowVersion| {
                    a.workflow == v.workflow && a.version == v.version
                }) {
                    Some(a) if a.hash == v.hash => continue,
                    Some(_) => return Err(versions::version_conflict(&v.workflow)),
                    None => add.push(v),
                },
            }
        }
        for v in add {
            let mut stored = v.clone();
            stored.deployed_at = ms(v.deployed_at);
            inner
                .versions
                .insert((v.workflow.clone(), v.version), stored);
        }
        Ok(())
    }

    async fn latest_versions(&self) -> Result<Vec<LatestVersion>, StoreError> {
        let inner = self.lock();
        let mut out: BTreeMap<&str, &WorkflowVersion> = BTreeMap::new();
        for v in inner.versions.values() {
            out.insert(&v.workflow, v);
        }
        Ok(out
            .into_values()
            .map(|v| LatestVersion {
                workflow: v.workflow.clone(),
                version: v.version,
                hash: v.hash.clone(),
            })
            .collect())
    }

    async fn workflow_version(
        &self,
        workflow: &str,
        version: u32,
    ) -> Result<Option<WorkflowVersion>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .versions
            .get(&(workflow.to_string(), version))
            .cloned())
    }

    async fn workflow_versions(
        &self,
        workflow: Option<&str>,
    ) -> Result<Vec<WorkflowVersion>, StoreError> {
        let inner = self.lock();
        Ok(inner
            .versions
            .values()
            .filter(|v| workflow.is_none_or(|w| v.workflow == w))
            .cloned()
            .collect())
    }

    async fn open_runs(&self, workflow: &str) -> Result<Vec<OpenRunCount>, StoreError> {
        let inner = self.lock();
        let mut counts: BTreeMap<(u32, Option<String>), i64> = BTreeMap::new();
        for r in inner.runs.values() {
            if r.workflow == workflow && r.status.is_open() {
                *counts
                    .entry((r.workflow_version, r.step.clone()))
                    .or_default() += 1;
            }
        }
        Ok(counts
            .into_iter()
            .map(|((version, step), runs)| OpenRunCount {
                version,
                step,
                runs,
            })
            .collect())
    }

    async fn open_runs_below(
        &self,
        workflow: &str,
        below: u32,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<OpenRunRef>, StoreError> {
        let inner = self.lock();
        let mut out: Vec<OpenRunRef> = inner
            .runs
            .values()
            .filter(|r| r.workflow == workflow && r.workflow_version < below)
            .filter(|r| r.status.is_open() && r.id.as_str() > after.unwrap_or(""))
            .map(|r| OpenRunRef {
                run: r.id.clone(),
                contact: r.contact.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.run.cmp(&b.run));
        out.truncate(limit.max(0) as usize);
        Ok(out)
    }
}

fn outbox_row(o: &Outboxed) -> OutboxRow {
    let e = &o.entry;
    OutboxRow {
        key: e.key.clone(),
        kind: e.kind.clone(),
        contact: e.contact.clone(),
        run_id: e.run_id.clone(),
        workflow: e.workflow.clone(),
        step: e.step.clone(),
        state: OutboxState::of_row(o.state.as_str(), e.attempts, o.last_error.as_deref()),
        reason: o.last_error.clone(),
        attempts: e.attempts,
        created_at: e.created_at,
        due_at: e.due_at,
    }
}

/// Whether `o` is in `state`, as [`OutboxState::sql`] selects.
fn in_state(o: &Outboxed, state: OutboxState) -> bool {
    let pending = o.state == State::Pending;
    match state {
        OutboxState::Sent => o.state == State::Delivered,
        OutboxState::Failed => o.state == State::Failed,
        OutboxState::Ambiguous => o.state == State::Ambiguous,
        OutboxState::Skipped => o.state == State::Skipped,
        OutboxState::Deferred => pending && o.entry.attempts == 0 && o.last_error.is_some(),
        OutboxState::Retrying => pending && o.entry.attempts > 0,
        OutboxState::Queued => pending && o.entry.attempts == 0 && o.last_error.is_none(),
    }
}

#[async_trait]
impl OutboxView for MemoryStore {
    async fn outbox_entries(&self, keys: &[String]) -> Result<Vec<OutboxRow>, StoreError> {
        let inner = self.lock();
        let mut keys: Vec<&String> = keys.iter().collect();
        keys.sort();
        keys.dedup();
        Ok(keys
            .into_iter()
            .filter_map(|k| inner.outbox.get(k))
            .map(outbox_row)
            .collect())
    }

    async fn list_outbox(&self, f: &OutboxFilter) -> Result<Vec<OutboxRow>, StoreError> {
        let inner = self.lock();
        let mut rows: Vec<&Outboxed> = inner
            .outbox
            .values()
            .filter(|o| f.state.is_none_or(|s| in_state(o, s)))
            .filter(|o| f.contact.as_ref().is_none_or(|c| &o.entry.contact == c))
            .filter(|o| {
                f.workflow
                    .as_ref()
                    .is_none_or(|w| o.entry.workflow.as_ref() == Some(w))
            })
            .collect();
        rows.sort_by(|a, b| {
            b.entry
                .created_at
                .cmp(&a.entry.created_at)
                .then_with(|| a.entry.key.cmp(&b.entry.key))
        });
        rows.truncate(f.limit.clamp(0, outbox::MAX_LIST) as usize);
        Ok(rows.into_iter().map(outbox_row).collect())
    }
}

#[async_trait]
impl ControlStore for MemoryStore {
    async fn set_control(&self, c: &WorkflowControl) -> Result<(), StoreError> {
        controls::check_control(c)?;
        let mut stored = c.clone();
        stored.at = ms(c.at);
        self.lock().controls.insert(c.workflow.clone(), stored);
        Ok(())
    }

    async fn controls(&self) -> Result<Vec<WorkflowControl>, StoreError> {
        Ok(self.lock().controls.values().cloned().collect())
    }
}

#[async_trait]
impl CountView for MemoryStore {
    async fn counts(&self, f: &CountFilter) -> Result<Vec<CountRow>, StoreError> {
        let inner = self.lock();
        let selected = inner.report_counts.iter().filter(|((w, v, _, h), _)| {
            f.workflow.as_ref().is_none_or(|x| x == w)
                && f.version.is_none_or(|x| x == *v)
                && f.since.is_none_or(|s| *h >= ms(s))
                && f.until.is_none_or(|u| *h < ms(u))
        });
        let rows: Vec<CountRow> = if f.whole {
            let mut sums: BTreeMap<(&str, u32, &str), (Ts, i64)> = BTreeMap::new();
            for ((w, v, m, h), n) in selected {
                let e = sums.entry((w.as_str(), *v, m.as_str())).or_insert((*h, 0));
                e.0 = e.0.min(*h);
                e.1 += n;
            }
            sums.into_iter()
                .map(|((w, v, m), (hour, n))| CountRow {
                    workflow: w.to_string(),
                    version: v,
                    metric: m.to_string(),
                    hour,
                    n,
                })
                .collect()
        } else {
            selected
                .map(|((w, v, m, h), n)| CountRow {
                    workflow: w.clone(),
                    version: *v,
                    metric: m.clone(),
                    hour: *h,
                    n: *n,
                })
                .collect()
        };
        Ok(rows)
    }
}

#[async_trait]
impl OpsView for MemoryStore {
    async fn queue_summary(&self, now: Ts) -> Result<QueueSummary, StoreError> {
        let inner = self.lock();
        let cap = (ops::COUNT_CAP + 1) as usize;
        let mut outbox = BTreeMap::new();
        for s in ops::OPEN_OUTBOX_STATES {
            let n = inner.outbox.values().filter(|o| in_state(o, s)).take(cap);
            outbox.insert(s.as_str().to_string(), n.count() as i64);
        }
        let now = ms(now);
        let oldest = inner.timer_queue.first().map(|(t, _)| *t);
        Ok(QueueSummary {
            queued_events: inner.inbox.len().min(cap) as i64,
            due_timers: inner
                .timer_queue
                .iter()
                .take_while(|(t, _)| *t <= now)
                .take(cap)
                .count() as i64,
            oldest_due: oldest.filter(|t| *t <= now),
            outbox,
        })
    }
}

#[async_trait]
impl ReadView for MemoryStore {
    async fn contacts_page(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Contact>, StoreError> {
        let inner = self.lock();
        let limit = limit.clamp(0, reads::MAX_PAGE) as usize;
        Ok(inner
            .contacts
            .values()
            .filter(|c| after.is_none_or(|a| c.id.as_str() > a))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn contact_events_page(
        &self,
        contact: &str,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let inner = self.lock();
        let mut seqs: Vec<i64> = inner
            .events_of
            .get(contact)
            .into_iter()
            .flatten()
            .map(|(_, s)| *s)
            .filter(|s| *s > after_seq)
            .collect();
        seqs.sort_unstable();
        seqs.truncate(limit.clamp(0, reads::MAX_PAGE) as usize);
        Ok(seqs
            .iter()
            .filter_map(|s| inner.events.get(s).cloned())
            .collect())
    }
}

#[async_trait]
impl PrivacyStore for MemoryStore {
    async fn deliveries_of(&self, contact: &str) -> Result<Vec<Delivery>, StoreError> {
        let inner = self.lock();
        let mut out: Vec<Delivery> = inner
            .deliveries
            .iter()
            .filter(|d| d.contact == contact)
            .cloned()
            .collect();
        out.sort_by(|a, b| (a.at, &a.key).cmp(&(b.at, &b.key)));
        Ok(out)
    }

    async fn erase_contact(&self, _e: &Erasure) -> Result<Option<Erased>, EraseError> {
        Err(unsupported("erasing a contact").into())
    }

    /// Nothing is ever erased here.
    async fn is_erased(&self, _contact: &str) -> Result<bool, StoreError> {
        Ok(false)
    }

    async fn merged_visitors(&self, contact: &str) -> Result<Vec<String>, StoreError> {
        let inner = self.lock();
        let mut out: Vec<String> = inner
            .merges
            .iter()
            .filter(|(_, into)| *into == contact)
            .map(|(from, _)| from.clone())
            .collect();
        out.sort();
        Ok(out)
    }
}

/// A simulation's journal lives as long as the simulation: nothing to compact.
#[async_trait]
impl RetentionStore for MemoryStore {
    async fn ended_runs(&self, _after: &str, _limit: i64) -> Result<Vec<Run>, StoreError> {
        Err(unsupported("journal compaction"))
    }

    async fn replace_journals(&self, _summaries: &[JournalEntry]) -> Result<u64, StoreError> {
        Err(unsupported("journal compaction"))
    }

    async fn contacts_with_lines_before(
        &self,
        _after: &str,
        _before: Ts,
        _limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        Err(unsupported("journal compaction"))
    }

    async fn contact_rows_before(
        &self,
        _contact: &str,
        _before: Ts,
    ) -> Result<Vec<(i64, Vec<JournalEntry>)>, StoreError> {
        Err(unsupported("journal compaction"))
    }

    async fn replace_contact_rows(
        &self,
        _contact: &str,
        _ids: &[i64],
        _summary: &JournalEntry,
    ) -> Result<u64, StoreError> {
        Err(unsupported("journal compaction"))
    }

    async fn reclaim_space(&self) -> Result<(), StoreError> {
        Err(unsupported("journal compaction"))
    }
}

#[async_trait]
impl KeyStore for MemoryStore {
    async fn create_key(&self, _key: &ApiKey, _hash: &str) -> Result<(), StoreError> {
        Err(unsupported("API keys"))
    }

    async fn keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        Err(unsupported("API keys"))
    }

    async fn key_by_hash(&self, _hash: &str) -> Result<Option<ApiKey>, StoreError> {
        Err(unsupported("API keys"))
    }

    async fn revoke_key(&self, _id: &str, _at: Ts) -> Result<bool, StoreError> {
        Err(unsupported("API keys"))
    }

    async fn audit(
        &self,
        _at: Ts,
        _by: &str,
        _action: &str,
        _contact: &str,
        _ip: Option<&str>,
    ) -> Result<(), StoreError> {
        Err(unsupported("the audit log"))
    }

    async fn audit_log(&self, _limit: i64) -> Result<Vec<AuditEntry>, StoreError> {
        Err(unsupported("the audit log"))
    }
}
