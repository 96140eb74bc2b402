//! (i) Journal storage: what a campaign leaves on disk per step, before and after
//! `nurture store compact`. `nurture check`'s generated population (seed 1) walks the
//! example project's workflows for a number of days on a durable store (a SQLite file,
//! and Postgres with `--postgres`); then the journal is measured: rows, lines, the
//! `step` lines (steps taken), and the bytes of the journal table with its indexes
//! (SQLite: the `dbstat` table; Postgres: `pg_total_relation_size` of every partition,
//! and the write-ahead log written meanwhile, for every table). Then every ended run is
//! compacted and the journal measured again.

use std::time::Instant;

use serde::Serialize;

use nurture_engine::EngineError;
use nurture_server::StoreConfig;
use nurture_store::{retention, StoreError, PACKED};

/// (i) One store's journal, before and after compaction.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StorageFigures {
    pub(crate) store: String,
    /// The project whose workflows ran.
    pub(crate) project: String,
    pub(crate) contacts: usize,
    pub(crate) days: u32,
    /// Seconds the campaign took to run on the store.
    pub(crate) seconds: f64,
    /// Runs, and of them ended (what compaction may touch).
    pub(crate) runs: u64,
    pub(crate) ended_runs: u64,
    pub(crate) before: JournalSize,
    pub(crate) after: JournalSize,
    /// After a contact's own lines were summed up too (`[retention] contact_lines`).
    pub(crate) after_contacts: JournalSize,
    /// Postgres: bytes of write-ahead log written while the campaign ran (all tables).
    pub(crate) wal_bytes: Option<i64>,
    /// Postgres: bytes of write-ahead log the compaction wrote.
    pub(crate) compact_wal_bytes: Option<i64>,
    /// SQLite: bytes of the file and its log before and after compaction.
    pub(crate) file_bytes: Option<(u64, u64)>,
}

/// The journal at one moment.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct JournalSize {
    /// Rows of the table (a row may hold several lines of one run at one instant).
    pub(crate) rows: i64,
    /// Journal lines.
    pub(crate) lines: i64,
    /// `step` lines, plus the steps a summary line counts.
    pub(crate) steps: i64,
    /// Lines about a contact alone (no run: scoring, segments, imports, consent), which
    /// compaction keeps.
    pub(crate) contact_lines: i64,
    /// Bytes of the table and its indexes.
    pub(crate) bytes: i64,
    /// `bytes` per step taken by the campaign (the steps before compaction).
    pub(crate) bytes_per_step: f64,
    /// Postgres: where the bytes are.
    pub(crate) parts: Option<PartitionBytes>,
}

/// Postgres: the journal's bytes by kind, and the share of its partitions without a row
/// (this month's and the next ones created ahead, the default one: about 24 KiB each
/// whatever the journal holds, so a cost per partition, not per step).
#[derive(Debug, Clone, Default, Serialize, sqlx::FromRow)]
pub(crate) struct PartitionBytes {
    /// Tables' own files (rows).
    pub(crate) heap: i64,
    pub(crate) indexes: i64,
    /// TOAST tables with their indexes.
    pub(crate) toast: i64,
    /// Partitions without a row, and their bytes (all kinds).
    pub(crate) empty_partitions: i64,
    pub(crate) empty_bytes: i64,
}

/// The campaign (i) runs.
pub(crate) struct Campaign {
    pub(crate) contacts: usize,
    pub(crate) days: u32,
    /// The population's seed.
    pub(crate) seed: u64,
    /// Where to keep a copy of a SQLite store before compaction (and after, in
    /// `NAME.compacted.db`).
    pub(crate) keep: Option<std::path::PathBuf>,
}

/// Runs the campaign of `project` on `url`, and measures.
pub(crate) async fn measure(
    url: &str,
    config: &StoreConfig,
    project_dir: &std::path::Path,
    campaign: &Campaign,
) -> Result<StorageFigures, EngineError> {
    let (contacts, days) = (campaign.contacts, campaign.days);
    let project = super::speed::load(project_dir)?;
    let sql = Sql::connect(url, config).await?;
    sql.empty().await?;
    let store = nurture_server::open_store_with(url, config).await?;
    let mut spec = super::speed::population_spec(contacts, days);
    spec.seed = campaign.seed;
    let start = spec.start;
    let (mut rows, mut events) = nurture_engine::check::population::generate(&project, &spec);
    // The benchmark's contacts have addresses at bench.test (`check_bench_database`).
    let to_bench = |e: &mut Option<String>| {
        if let Some(s) = e {
            *s = s.replace("@example.test", "@bench.test");
        }
    };
    rows.iter_mut().for_each(|r| to_bench(&mut r.email));
    events.iter_mut().for_each(|e| to_bench(&mut e.email));
    let wal0 = sql.wal().await?;
    let started = Instant::now();
    let until = start + spec.horizon;
    let summary = nurture_engine::simulate::run_on(
        store.clone(),
        project,
        &rows,
        events,
        (Some(start), Some(until)),
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    let wal1 = sql.wal().await?;
    let (runs, ended_runs) = sql.runs().await?;
    let mut before = sql.journal().await?;
    let file0 = sqlite_file_bytes(url);
    if let Some(keep) = &campaign.keep {
        sql.keep(keep).await?;
    }
    let end = summary.end.unwrap_or(until) + chrono::Duration::seconds(1);
    retention::compact(&*store, end, false).await?;
    sql.settle().await?;
    let wal2 = sql.wal().await?;
    let mut after = sql.journal().await?;
    if let Some(keep) = &campaign.keep {
        sql.keep(&keep.with_extension("compacted.db")).await?;
    }
    retention::compact_contact_lines(&*store, end, false).await?;
    store.reclaim_space().await?;
    sql.settle().await?;
    let mut after_contacts = sql.journal().await?;
    let steps = before.steps.max(1) as f64;
    before.bytes_per_step = before.bytes as f64 / steps;
    after.bytes_per_step = after.bytes as f64 / steps;
    after_contacts.bytes_per_step = after_contacts.bytes as f64 / steps;
    let file1 = sqlite_file_bytes(url);
    drop(store);
    sql.empty().await?;
    Ok(StorageFigures {
        store: url.split(':').next().unwrap_or(url).to_string(),
        project: project_dir.display().to_string(),
        contacts,
        days,
        seconds,
        runs,
        ended_runs,
        before,
        after,
        after_contacts,
        wal_bytes: wal0.zip(wal1).map(|(a, b)| b - a),
        compact_wal_bytes: wal1.zip(wal2).map(|(a, b)| b - a),
        file_bytes: file0.zip(file1),
    })
}

/// The bytes of a SQLite store's file and its log; `None` for another store.
pub(crate) fn sqlite_file_bytes(url: &str) -> Option<u64> {
    let path = url.strip_prefix("sqlite://")?;
    let path = path.split('?').next().unwrap_or(path);
    let size = |p: String| std::fs::metadata(p).map_or(0, |m| m.len());
    Some(size(path.to_string()) + size(format!("{path}-wal")))
}

/// The measuring connection: SQLite or Postgres SQL for the same questions.
pub(crate) enum Sql {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool, String),
}

fn db(e: sqlx::Error) -> EngineError {
    EngineError::Store(StoreError::from(e))
}

impl Sql {
    pub(crate) async fn connect(url: &str, config: &StoreConfig) -> Result<Sql, EngineError> {
        if url.starts_with("sqlite:") {
            use std::str::FromStr;
            let opts = sqlx::sqlite::SqliteConnectOptions::from_str(url)
                .map_err(db)?
                .create_if_missing(true);
            let pool = sqlx::SqlitePool::connect_with(opts).await.map_err(db)?;
            return Ok(Sql::Sqlite(pool));
        }
        let schema = config.postgres.schema_name().map_err(StoreError::from)?;
        let pool = sqlx::PgPool::connect(url).await.map_err(db)?;
        Ok(Sql::Postgres(pool, schema.to_string()))
    }

    /// Empties every table of a Postgres store but its migrations (a SQLite file is new).
    pub(crate) async fn empty(&self) -> Result<(), EngineError> {
        let Sql::Postgres(pool, schema) = self else {
            return Ok(());
        };
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT format('%I.%I', table_schema, table_name) FROM information_schema.tables \
             WHERE table_schema = $1 AND table_type = 'BASE TABLE' \
             AND table_name NOT IN ('_sqlx_migrations', 'privacy_salt')",
        )
        .bind(schema)
        .fetch_all(pool)
        .await
        .map_err(db)?;
        if !tables.is_empty() {
            sqlx::query(&format!("TRUNCATE {}", tables.join(", ")))
                .execute(pool)
                .await
                .map_err(db)?;
        }
        Ok(())
    }

    /// The write-ahead log position (Postgres), in bytes.
    async fn wal(&self) -> Result<Option<i64>, EngineError> {
        let Sql::Postgres(pool, _) = self else {
            return Ok(None);
        };
        let lsn: i64 = sqlx::query_scalar("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint")
            .fetch_one(pool)
            .await
            .map_err(db)?;
        Ok(Some(lsn))
    }

    /// Postgres: a plain VACUUM of the journal (what autovacuum would do: the space of
    /// the deleted rows becomes free for later rows; the files shrink only at their end).
    async fn settle(&self) -> Result<(), EngineError> {
        if let Sql::Postgres(pool, schema) = self {
            sqlx::query(&format!("VACUUM \"{schema}\".journal"))
                .execute(pool)
                .await
                .map_err(db)?;
        }
        Ok(())
    }

    /// SQLite: a copy of the store in `path` (replaced), by `VACUUM INTO`.
    async fn keep(&self, path: &std::path::Path) -> Result<(), EngineError> {
        if let Sql::Sqlite(pool) = self {
            let _ = std::fs::remove_file(path);
            sqlx::query("VACUUM INTO ?")
                .bind(path.display().to_string())
                .execute(pool)
                .await
                .map_err(db)?;
        }
        Ok(())
    }

    /// Runs, and of them ended.
    async fn runs(&self) -> Result<(u64, u64), EngineError> {
        let q =
            "SELECT count(*), count(*) FILTER (WHERE status NOT IN ('active', 'waiting')) FROM ";
        let (all, ended): (i64, i64) = match self {
            Sql::Sqlite(pool) => sqlx::query_as(&format!("{q}runs"))
                .fetch_one(pool)
                .await
                .map_err(db)?,
            Sql::Postgres(pool, schema) => sqlx::query_as(&format!("{q}\"{schema}\".runs"))
                .fetch_one(pool)
                .await
                .map_err(db)?,
        };
        Ok((all as u64, ended as u64))
    }

    /// The journal's rows, lines, steps and bytes.
    async fn journal(&self) -> Result<JournalSize, EngineError> {
        let q = "SELECT kind, run_id IS NULL, data FROM ";
        type Rows = Vec<(String, bool, Vec<u8>)>;
        let (rows, bytes, parts): (Rows, i64, Option<PartitionBytes>) = match self {
            Sql::Sqlite(pool) => {
                let rows = sqlx::query_as(&format!("{q}journal"))
                    .fetch_all(pool)
                    .await
                    .map_err(db)?;
                (rows, sqlite_bytes(pool).await?, None)
            }
            Sql::Postgres(pool, schema) => {
                let rows = sqlx::query_as(&format!("{q}\"{schema}\".journal"))
                    .fetch_all(pool)
                    .await
                    .map_err(db)?;
                let parts = partition_bytes(pool, schema).await?;
                (rows, parts.heap + parts.indexes + parts.toast, Some(parts))
            }
        };
        let mut size = JournalSize {
            rows: rows.len() as i64,
            bytes,
            parts,
            ..Default::default()
        };
        for (kind, alone, data) in &rows {
            count_row(
                &mut size,
                kind,
                *alone,
                &nurture_store::encoding::decode(data)?,
            );
        }
        Ok(size)
    }
}

/// Adds one stored row's lines, steps and lines about a contact alone to `size`.
fn count_row(size: &mut JournalSize, kind: &str, alone: bool, data: &serde_json::Value) {
    let steps_of = |kind: &str, data: &serde_json::Value| match kind {
        "step" => 1,
        "summary" => data
            .get("steps")
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(0),
        _ => 0,
    };
    let (lines, steps) = if kind == PACKED {
        let items = data.as_array().map(Vec::as_slice).unwrap_or_default();
        let steps = items
            .iter()
            .map(|i| steps_of(i["kind"].as_str().unwrap_or(""), &i["data"]))
            .sum();
        (items.len() as i64, steps)
    } else {
        (1, steps_of(kind, data))
    };
    size.lines += lines;
    size.steps += steps;
    if alone {
        size.contact_lines += lines;
    }
}

/// Bytes of the journal table and its indexes in a SQLite file: their pages, from the
/// `dbstat` table (compiled into the bundled SQLite).
async fn sqlite_bytes(pool: &sqlx::SqlitePool) -> Result<i64, EngineError> {
    sqlx::query_scalar(
        "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name = 'journal' OR name IN \
         (SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'journal')",
    )
    .fetch_one(pool)
    .await
    .map_err(db)
}

/// Postgres: the bytes of the journal's partitions by kind (`pg_total_relation_size` is
/// their sum).
async fn partition_bytes(pool: &sqlx::PgPool, schema: &str) -> Result<PartitionBytes, EngineError> {
    sqlx::query_as(&format!(
        "SELECT coalesce(sum(pg_relation_size(c.oid)), 0)::bigint AS heap, \
           coalesce(sum(pg_indexes_size(c.oid)), 0)::bigint AS indexes, \
           coalesce(sum(pg_total_relation_size(c.reltoastrelid)), 0)::bigint AS toast, \
           count(*) FILTER (WHERE pg_relation_size(c.oid) = 0) AS empty_partitions, \
           coalesce(sum(pg_total_relation_size(c.oid)) \
             FILTER (WHERE pg_relation_size(c.oid) = 0), 0)::bigint AS empty_bytes \
         FROM pg_partition_tree('\"{schema}\".journal') p JOIN pg_class c ON c.oid = p.relid \
         WHERE p.isleaf"
    ))
    .fetch_one(pool)
    .await
    .map_err(db)
}

/// The (i) lines of the table.
pub(crate) fn table(figures: &[StorageFigures]) -> String {
    let Some(first) = figures.first() else {
        return String::new();
    };
    let mut out = format!(
        "\njournal storage ({}, `nurture check` population of {} contacts, {} days; after = `nurture store compact` of every ended run):\n",
        first.project, first.contacts, first.days
    );
    out.push_str(&format!(
        "{:<9} {:>7} {:>7} {:>9} {:>9} {:>8} {:>12} {:>10} {:>9} {:>12} {:>10}\n",
        "store",
        "runs",
        "ended",
        "rows",
        "lines",
        "steps",
        "bytes",
        "bytes/step",
        "rows af.",
        "bytes after",
        "b/step af."
    ));
    for f in figures {
        out.push_str(&format!(
            "{:<9} {:>7} {:>7} {:>9} {:>9} {:>8} {:>12} {:>10.0} {:>9} {:>12} {:>10.0}\n",
            f.store,
            f.runs,
            f.ended_runs,
            f.before.rows,
            f.before.lines,
            f.before.steps,
            f.before.bytes,
            f.before.bytes_per_step,
            f.after.rows,
            f.after.bytes,
            f.after.bytes_per_step
        ));
        out.push_str(&format!(
            "  {}: lines about a contact alone (no run; kept by compaction): {} of {} before, {} of {} after\n",
            f.store, f.before.contact_lines, f.before.lines, f.after.contact_lines, f.after.lines
        ));
        out.push_str(&format!(
            "  {}: and a contact's own lines summed up too (`[retention] contact_lines`): {} rows, {} bytes, {:.0} bytes/step, {} lines about a contact alone\n",
            f.store,
            f.after_contacts.rows,
            f.after_contacts.bytes,
            f.after_contacts.bytes_per_step,
            f.after_contacts.contact_lines
        ));
        if let Some(p) = &f.after_contacts.parts {
            let steps = f.before.steps.max(1) as f64;
            let held = f.after_contacts.bytes - p.empty_bytes;
            out.push_str(&format!(
                "  {}: of which rows {}, indexes {}, TOAST {}; {} partitions without a row {} bytes; the partitions holding rows {held} bytes, {:.0} bytes/step\n",
                f.store, p.heap, p.indexes, p.toast, p.empty_partitions, p.empty_bytes,
                held as f64 / steps
            ));
        }
        if let Some((b, a)) = f.file_bytes {
            out.push_str(&format!(
                "  {}: whole file with its log {b} -> {a} bytes; campaign ran in {:.1} s\n",
                f.store, f.seconds
            ));
        }
        if let (Some(w), Some(c)) = (f.wal_bytes, f.compact_wal_bytes) {
            let steps = f.before.steps.max(1) as f64;
            out.push_str(&format!(
                "  {}: WAL written by the campaign {w} bytes ({:.0}/step, all tables), by the compaction {c}; campaign ran in {:.1} s\n",
                f.store,
                w as f64 / steps,
                f.seconds
            ));
        }
    }
    out
}
