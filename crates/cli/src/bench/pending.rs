//! (d) Waiting contacts: a store (SQLite, and Postgres with `--postgres`) seeded with
//! many contacts whose runs wait on a timer, and a `nurture worker` process over it: its
//! memory while every wait is in the future, then while a part of them comes due at once
//! and fires; the store's size on disk.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::storage::Sql;
use nurture_engine::{Engine, EngineError};
use nurture_server::StoreConfig;
use nurture_store::Ts;

/// (d) figures of one store.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PendingFigures {
    pub(crate) store: String,
    /// Contacts each with one run waiting on a timer.
    pub(crate) pending_waits: usize,
    pub(crate) seed_seconds: f64,
    /// The store's tables and indexes (Postgres) or file and log (SQLite), after seeding.
    pub(crate) store_bytes: u64,
    /// Peak RSS of a `nurture worker` process, idle over the pending waits.
    pub(crate) worker_idle_peak_rss_mb: f64,
    /// Waits made due at one instant.
    pub(crate) due: usize,
    /// Of them, fired by one worker before every one fired or `firing_seconds` passed.
    pub(crate) fired_waits: usize,
    /// From starting the worker to the last due wait fired (or the limit).
    pub(crate) firing_seconds: f64,
    /// Peak RSS of the worker firing them.
    pub(crate) worker_firing_peak_rss_mb: f64,
    /// Each fired wait runs `s2` (score) and parks in `w2`: two steps.
    pub(crate) fired_steps: usize,
}

impl PendingFigures {
    pub(crate) fn line(&self) -> String {
        format!(
            "  {}: {} waiting contacts (seeded in {:.1} s), {:.0} MB on disk ({:.0} bytes per waiting contact); worker peak RSS {:.0} MB idle, {:.0} MB firing; {} made due at once: {} fired in {:.1} s ({:.0} waits/s, {:.0} steps/s)\n",
            self.store,
            self.pending_waits,
            self.seed_seconds,
            self.store_bytes as f64 / 1e6,
            self.store_bytes as f64 / self.pending_waits.max(1) as f64,
            self.worker_idle_peak_rss_mb,
            self.worker_firing_peak_rss_mb,
            self.due,
            self.fired_waits,
            self.firing_seconds,
            self.fired_waits as f64 / self.firing_seconds.max(1e-9),
            self.fired_steps as f64 / self.firing_seconds.max(1e-9),
        )
    }
}

/// Where the bench's campaign is and what the worker is started with.
pub(crate) struct Setup<'a> {
    pub(crate) config: &'a StoreConfig,
    pub(crate) exe: &'a std::path::Path,
    /// Seconds the worker may take to fire the due waits.
    pub(crate) firing_seconds: f64,
}

/// Seeds `url` (a Postgres store is emptied first) with `pending` waiting contacts (1,000
/// made by the engine, then copied in SQL), measures a worker idle over them, then makes
/// `due` of them due at once and measures the worker firing them.
pub(crate) async fn measure(
    url: &str,
    setup: &Setup<'_>,
    pending: usize,
    due: usize,
) -> Result<PendingFigures, EngineError> {
    let dir = super::tempfile_dir()?;
    let project = super::project(&dir)?;
    let sql = Sql::connect(url, setup.config).await?;
    sql.empty().await?;
    let started = Instant::now();
    let t0 = chrono::Utc::now();
    let base = 1000.min(pending.max(1));
    {
        let store = nurture_server::open_store_with(url, setup.config).await?;
        let engine = std::sync::Arc::new(Engine::new(project, store));
        for chunk in super::events(base, t0).chunks(1000) {
            engine.ingest(chunk, t0).await?;
        }
        while !engine.tick(t0).await?.is_empty() {}
    }
    sql.copy_waits(pending.div_ceil(base) - 1).await?;
    let total = sql.count_timers(None).await?;
    let seed_seconds = started.elapsed().as_secs_f64();
    let store_bytes = sql.bytes(url).await?;
    // Idle: every wait is a day away.
    let mut idle = spawn_worker(setup.exe, &dir, url)?;
    tokio::time::sleep(Duration::from_secs_f64(
        (setup.firing_seconds / 3.0).clamp(1.0, 5.0),
    ))
    .await;
    let idle_rss = super::peak_rss_mb_of(&idle.id().to_string());
    let _ = idle.kill();
    let _ = idle.wait();
    let past = t0 - chrono::Duration::hours(1);
    let due = sql.make_due(due, past).await?;
    let (fired, firing_seconds, firing_rss) = fire(&sql, setup, &dir, url, due, past).await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(PendingFigures {
        store: url.split(':').next().unwrap_or_default().to_string(),
        pending_waits: total,
        seed_seconds,
        store_bytes,
        worker_idle_peak_rss_mb: idle_rss,
        due,
        fired_waits: fired,
        firing_seconds,
        worker_firing_peak_rss_mb: firing_rss,
        fired_steps: fired * 2,
    })
}

/// Starts a worker over `due` due waits and waits until it fired them all (or the
/// setup's limit): waits fired, seconds, the worker's peak RSS.
async fn fire(
    sql: &Sql,
    setup: &Setup<'_>,
    dir: &std::path::Path,
    url: &str,
    due: usize,
    past: Ts,
) -> Result<(usize, f64, f64), EngineError> {
    let started = Instant::now();
    let mut worker = spawn_worker(setup.exe, dir, url)?;
    let mut left = due;
    while left > 0 && started.elapsed().as_secs_f64() < setup.firing_seconds {
        tokio::time::sleep(Duration::from_millis(250)).await;
        left = sql.count_timers(Some(past)).await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let rss = super::peak_rss_mb_of(&worker.id().to_string());
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status();
    let _ = worker.wait();
    Ok((due - left.min(due), seconds, rss))
}

fn spawn_worker(
    exe: &std::path::Path,
    dir: &std::path::Path,
    url: &str,
) -> Result<std::process::Child, EngineError> {
    std::process::Command::new(exe)
        .args(["worker", dir.to_str().unwrap_or(".")])
        .args(["--store", url, "--poll-ms", "200"])
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| EngineError::Invalid(format!("starting a worker: {e}")))
}

fn db(e: sqlx::Error) -> EngineError {
    EngineError::Store(e.into())
}

/// Copies the contacts, runs and timers once per row `i` of `k`, with new ids (`ID-i`):
/// SQLite.
const SQLITE_COPY: [&str; 3] = [
    "INSERT INTO contacts (id, email, doc, version) SELECT c.id || '-' || k.i, k.i || '-' || c.email, json_set(c.doc, '$.id', c.id || '-' || k.i, '$.email', k.i || '-' || c.email), c.version FROM contacts c, k",
    "INSERT INTO runs (id, workflow, workflow_version, contact, status, doc, started_at, rev) SELECT r.id || '-' || k.i, r.workflow, r.workflow_version, r.contact || '-' || k.i, r.status, json_set(r.doc, '$.id', r.id || '-' || k.i, '$.contact', r.contact || '-' || k.i), r.started_at, r.rev FROM runs r, k",
    "INSERT INTO timers (run_id, due_at) SELECT t.run_id || '-' || k.i, t.due_at FROM timers t, k",
];

/// [`SQLITE_COPY`] for Postgres (on one connection whose search path is the store's),
/// after `k` is made.
const POSTGRES_COPY: [&str; 4] = [
    "INSERT INTO contacts (id, email, doc, version) SELECT c.id || '-' || k.i, k.i || '-' || c.email, (c.doc::jsonb || jsonb_build_object('id', c.id || '-' || k.i, 'email', k.i || '-' || c.email))::json, c.version FROM contacts c, k",
    "INSERT INTO runs (id, workflow, workflow_version, contact, status, doc, started_at, rev) SELECT r.id || '-' || k.i, r.workflow, r.workflow_version, r.contact || '-' || k.i, r.status, (r.doc::jsonb || jsonb_build_object('id', r.id || '-' || k.i, 'contact', r.contact || '-' || k.i))::json, r.started_at, r.rev FROM runs r, k",
    "INSERT INTO timers (run_id, due_at, contact) SELECT t.run_id || '-' || k.i, t.due_at, t.contact || '-' || k.i FROM timers t, k",
    "ANALYZE contacts, runs, timers",
];

impl Sql {
    async fn copy_waits(&self, copies: usize) -> Result<(), EngineError> {
        if copies == 0 {
            return Ok(());
        }
        match self {
            Sql::Sqlite(pool) => {
                let mut c = pool.acquire().await.map_err(db)?;
                let k = format!("CREATE TEMP TABLE k AS WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < {copies}) SELECT i FROM k");
                for q in std::iter::once(k.as_str())
                    .chain(SQLITE_COPY)
                    .chain(["DROP TABLE k"])
                {
                    sqlx::query(q).execute(&mut *c).await.map_err(db)?;
                }
            }
            Sql::Postgres(pool, schema) => {
                let mut c = pool.acquire().await.map_err(db)?;
                let k =
                    format!("CREATE TEMP TABLE k AS SELECT i FROM generate_series(1, {copies}) i");
                for q in [format!("SET search_path TO \"{schema}\""), k]
                    .iter()
                    .map(String::as_str)
                    .chain(POSTGRES_COPY)
                    .chain(["DROP TABLE k", "RESET search_path"])
                {
                    sqlx::query(q).execute(&mut *c).await.map_err(db)?;
                }
            }
        }
        Ok(())
    }

    /// Timers (due at or before `until`, if given).
    async fn count_timers(&self, until: Option<Ts>) -> Result<usize, EngineError> {
        let n: i64 = match (self, until) {
            (Sql::Sqlite(p), None) => sqlx::query_scalar("SELECT count(*) FROM timers")
                .fetch_one(p)
                .await
                .map_err(db)?,
            (Sql::Sqlite(p), Some(t)) => {
                sqlx::query_scalar("SELECT count(*) FROM timers WHERE due_at <= ?")
                    .bind(nurture_store::ts(t))
                    .fetch_one(p)
                    .await
                    .map_err(db)?
            }
            (Sql::Postgres(p, s), None) => {
                sqlx::query_scalar(&format!("SELECT count(*) FROM \"{s}\".timers"))
                    .fetch_one(p)
                    .await
                    .map_err(db)?
            }
            (Sql::Postgres(p, s), Some(t)) => {
                let q = format!("SELECT count(*) FROM \"{s}\".timers WHERE due_at <= $1");
                sqlx::query_scalar(&q)
                    .bind(t)
                    .fetch_one(p)
                    .await
                    .map_err(db)?
            }
        };
        Ok(n as usize)
    }

    /// Moves `n` timers (the first by run id) to `at`; returns how many moved.
    async fn make_due(&self, n: usize, at: Ts) -> Result<usize, EngineError> {
        let moved = match self {
            Sql::Sqlite(p) => sqlx::query(
                "UPDATE timers SET due_at = ? WHERE run_id IN (SELECT run_id FROM timers ORDER BY run_id LIMIT ?)",
            )
            .bind(nurture_store::ts(at))
            .bind(n as i64)
            .execute(p)
            .await
            .map_err(db)?
            .rows_affected(),
            Sql::Postgres(p, s) => sqlx::query(&format!(
                "UPDATE \"{s}\".timers SET due_at = $1 WHERE run_id IN (SELECT run_id FROM \"{s}\".timers ORDER BY run_id LIMIT $2)"
            ))
            .bind(at)
            .bind(n as i64)
            .execute(p)
            .await
            .map_err(db)?
            .rows_affected(),
        };
        Ok(moved as usize)
    }

    /// The store's size on disk: a SQLite file and its log (checkpointed first), or the
    /// Postgres schema's tables with their indexes and TOAST.
    async fn bytes(&self, url: &str) -> Result<u64, EngineError> {
        match self {
            Sql::Sqlite(p) => {
                sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .execute(p)
                    .await
                    .map_err(db)?;
                Ok(super::storage::sqlite_file_bytes(url).unwrap_or(0))
            }
            Sql::Postgres(p, s) => {
                let b: i64 = sqlx::query_scalar(
                    "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c \
                     JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind = 'r'",
                )
                .bind(s)
                .fetch_one(p)
                .await
                .map_err(db)?;
                Ok(b as u64)
            }
        }
    }
}

/// The (d) lines of the table.
pub(crate) fn table(figures: &[PendingFigures]) -> String {
    if figures.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "\nwaiting contacts under one worker (bench campaign, each run waiting 1 day at w1):\n",
    );
    for f in figures {
        out.push_str(&f.line());
    }
    out
}
