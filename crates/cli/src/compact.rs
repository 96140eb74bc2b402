//! `nurture store compact`: the journal of each run that ended longer ago than the
//! project's `[retention] journal` (or `--older-than`) becomes one summary line, and a
//! SQLite file is vacuumed so that it shrinks (`nurture_store::retention`).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Result};
use serde::Serialize;

use nurture_core::model::Duration;
use nurture_store::{retention, Compacted, CompactedContacts};

use crate::bench::storage::sqlite_file_bytes;

/// What `nurture store compact` prints with `--format json`.
#[derive(Serialize)]
struct Outcome {
    /// The retention applied, as written (`90d`).
    retention: String,
    #[serde(flatten)]
    compacted: Compacted,
    /// A contact's own lines summed up (`[retention] contact_lines`), when set.
    contact_lines: Option<CompactedContacts>,
    /// Bytes of the SQLite file and its write-ahead log before and after (SQLite only).
    file_bytes_before: Option<u64>,
    file_bytes_after: Option<u64>,
}

/// `nurture store compact [--dry-run] [--older-than D] [--format json]`.
pub(crate) async fn compact(
    dir: &Path,
    store_flag: Option<String>,
    older_than: Option<Duration>,
    dry_run: bool,
    json_out: bool,
) -> Result<ExitCode> {
    let (project, store) = crate::commands::open(dir, store_flag.clone()).await?;
    let configured = project.settings.retention.as_ref().and_then(|r| r.journal);
    let Some(keep) = older_than.or(configured) else {
        bail!(
            "no retention: set `[retention] journal = \"90d\"` in nurture.toml (or give \
             --older-than 90d); runs are never compacted without one"
        );
    };
    let url = crate::commands::store_url(dir, Some(&project), store_flag);
    let before = sqlite_file_bytes(&url);
    let cutoff = chrono::Utc::now() - keep.to_chrono();
    // A contact's own lines first: the runs' compaction then gives the space back.
    let contact_keep = project
        .settings
        .retention
        .as_ref()
        .and_then(|r| r.contact_lines);
    let contact_lines = match contact_keep {
        Some(k) => {
            let before = chrono::Utc::now() - k.to_chrono();
            Some(retention::compact_contact_lines(&*store, before, dry_run).await?)
        }
        None => None,
    };
    let compacted = retention::compact(&*store, cutoff, dry_run).await?;
    let summed = contact_lines.as_ref().is_some_and(|c| c.contacts > 0);
    if !dry_run && compacted.runs == 0 && summed {
        store.reclaim_space().await?;
    }
    drop(store);
    let out = Outcome {
        retention: keep.to_string(),
        compacted,
        contact_lines,
        file_bytes_before: before,
        file_bytes_after: sqlite_file_bytes(&url),
    };
    if json_out {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", render(&out));
    }
    Ok(ExitCode::SUCCESS)
}

fn render(o: &Outcome) -> String {
    let c = &o.compacted;
    let verb = if c.dry_run {
        "would compact"
    } else {
        "compacted"
    };
    let mut s = format!(
        "{verb} {} runs ended more than {} ago: {} journal lines ({} rows) -> {} summary lines\n",
        c.runs, o.retention, c.lines, c.rows_deleted, c.runs
    );
    s.push_str(&format!(
        "left as they were: {} ended runs already compacted, {} ended too recently; open runs are never compacted\n",
        c.already, c.kept
    ));
    if let Some(c) = &o.contact_lines {
        s.push_str(&format!(
            "contact lines: {} contacts' {} lines ({} rows) -> one summary line each; {} rows with consent kept\n",
            c.contacts, c.lines, c.rows_deleted, c.consent_rows_kept
        ));
    }
    if let (Some(b), Some(a)) = (o.file_bytes_before, o.file_bytes_after) {
        s.push_str(&format!("SQLite file (with its log): {b} -> {a} bytes\n"));
    }
    s
}
