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
    /// The retention of ended runs applied, as written (`90d`); none when only
    /// `contact_lines` is set.
    retention: Option<String>,
    #[serde(flatten)]
    compacted: Option<Compacted>,
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
    let settings = project.settings.retention.clone().unwrap_or_default();
    let keep = older_than.or(settings.journal);
    if keep.is_none() && settings.contact_lines.is_none() {
        bail!(
            "no retention: set `[retention] journal = \"90d\"` (ended runs) or \
             `contact_lines = \"365d\"` (a contact's own lines) in nurture.toml, or give \
             --older-than 90d; nothing is compacted without one"
        );
    }
    let url = crate::commands::store_url(dir, Some(&project), store_flag);
    let before = sqlite_file_bytes(&url);
    let ago = |d: Duration| chrono::Utc::now() - d.to_chrono();
    // A contact's own lines first: the runs' compaction then gives the space back.
    let contact_lines = match settings.contact_lines {
        Some(k) => Some(retention::compact_contact_lines(&*store, ago(k), dry_run).await?),
        None => None,
    };
    let compacted = match keep {
        Some(k) => Some(retention::compact(&*store, ago(k), dry_run).await?),
        None => None,
    };
    // The runs' compaction gives the space back; without it, this does.
    if !dry_run && compacted.is_none() {
        store.reclaim_space().await?;
    }
    drop(store);
    let out = Outcome {
        retention: keep.map(|k| k.to_string()),
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
    let mut s = String::new();
    if let (Some(c), Some(retention)) = (&o.compacted, &o.retention) {
        let verb = if c.dry_run {
            "would compact"
        } else {
            "compacted"
        };
        s.push_str(&format!(
            "{verb} {} runs ended more than {retention} ago: {} journal lines ({} rows) -> {} summary lines\n",
            c.runs, c.lines, c.rows_deleted, c.runs
        ));
        s.push_str(&format!(
            "left as they were: {} ended runs already compacted, {} ended too recently; open runs are never compacted\n",
            c.already, c.kept
        ));
    }
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
