//! `nurture bench`: throughput of the durable engine, measured against the machine's own
//! ceiling in the same run (disk sync rates swing widely between machines and neighbours).
//!
//! - **steps/s**: N contacts walk a 6-step campaign with two 1-day waits on a virtual
//!   clock; every step is executed and committed durably (SQLite `synchronous=FULL`, or
//!   Postgres with fsync on). Group commit makes one transaction per batch of contacts.
//! - **ceiling**: single-row INSERT commits per second, one per transaction, on the same
//!   store (the rate a one-commit-per-step engine could reach), and a bulk insert rate.
//! - **HTTP ingestion**: events per second through `POST /v1/events`, batches of 100,
//!   4 concurrent clients.
//! - **peak RSS** of the process (VmHWM).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::TimeZone;
use serde::Serialize;
use serde_json::json;

use crate::engine::{Engine, EngineError};
use crate::input::IncomingEvent;
use crate::store::Ts;

const WORKFLOW: &str = "workflow: bench\ntrigger: { event: bench.start }\nreentry: always\nsteps:\n  - id: s1\n    tag: [a]\n  - id: w1\n    wait: 1d\n  - id: s2\n    score: +1\n  - id: w2\n    wait: 1d\n  - id: s3\n    set: { stage: b }\n  - id: s4\n    untag: [a]\n";
const STEPS: usize = 6;

#[derive(Debug, Clone, Serialize)]
pub struct StoreFigures {
    pub store: String,
    pub contacts: usize,
    pub steps: usize,
    pub seconds: f64,
    pub steps_per_sec: f64,
    pub ceiling_single_commits_per_sec: f64,
    pub ceiling_bulk_rows_per_sec: f64,
    /// steps/s divided by single-row commits/s: how far past one-commit-per-step we are.
    pub steps_per_single_commit: f64,
    pub ingest_direct_events_per_sec: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: String,
    pub stores: Vec<StoreFigures>,
    pub http_events_per_sec: f64,
    pub peak_rss_mb: f64,
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map_or(String::new(), |kb| {
            format!(", {:.0} GiB", kb / 1024.0 / 1024.0)
        });
    format!("{cpus} cores ({model}){mem}")
}

/// Peak resident set size of this process, in MB.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn project(dir: &std::path::Path) -> Result<Arc<crate::project::Project>, EngineError> {
    std::fs::create_dir_all(dir.join("workflows"))
        .map_err(|e| EngineError::Invalid(e.to_string()))?;
    std::fs::write(dir.join("workflows/bench.yaml"), WORKFLOW)
        .map_err(|e| EngineError::Invalid(e.to_string()))?;
    let mut loaded = crate::project::load(dir);
    match loaded.project.take() {
        Some(p) => Ok(Arc::new(p)),
        None => Err(EngineError::Invalid(loaded.render())),
    }
}

fn events(n: usize, at: Ts) -> Vec<IncomingEvent> {
    (0..n)
        .map(|i| IncomingEvent {
            index: i,
            id: Some(format!("b{i}")),
            kind: "bench.start".into(),
            contact: None,
            email: Some(format!("b{i}@bench.test")),
            at: Some(at),
            data: json!({}),
        })
        .collect()
}

/// Durable steps per second on the store at `url`.
pub async fn steps(
    url: &str,
    contacts: usize,
    progress: &indicatif::ProgressBar,
) -> Result<StoreFigures, EngineError> {
    let dir = tempfile_dir()?;
    let project = project(&dir)?;
    let store = crate::store::open(url).await?;
    let engine = Engine::new(project, store.clone());
    let t0 = chrono::Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap();
    let evs = events(contacts, t0);
    let started = Instant::now();
    for chunk in evs.chunks(1000) {
        engine.ingest(chunk, t0).await?;
    }
    let ingest = contacts as f64 / started.elapsed().as_secs_f64();
    progress.set_length((contacts * STEPS) as u64);
    progress.set_position(0);
    let started = Instant::now();
    let mut clock = t0;
    let mut executed = 0usize;
    loop {
        let effects = engine.tick(clock).await?;
        // Each step leaves exactly one effect here (tag, wait, score, wait, set, untag).
        executed += effects.iter().filter(|e| e.step.is_some()).count();
        progress.set_position(executed as u64);
        match store.next_timer().await? {
            Some(t) => clock = t.max(clock),
            None => break,
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let (single, bulk) = ceiling(url).await?;
    let _ = std::fs::remove_dir_all(&dir);
    let steps_per_sec = executed as f64 / seconds;
    Ok(StoreFigures {
        store: url.split(':').next().unwrap_or(url).to_string(),
        contacts,
        steps: executed,
        seconds,
        steps_per_sec,
        ceiling_single_commits_per_sec: single,
        ceiling_bulk_rows_per_sec: bulk,
        steps_per_single_commit: steps_per_sec / single.max(1.0),
        ingest_direct_events_per_sec: ingest,
    })
}

fn tempfile_dir() -> Result<std::path::PathBuf, EngineError> {
    let dir = std::env::temp_dir().join(format!(
        "nurture-bench-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| EngineError::Invalid(e.to_string()))?;
    Ok(dir)
}

/// The store's own limits: one-row commits per second for 2 s, and bulk rows per second.
async fn ceiling(url: &str) -> Result<(f64, f64), EngineError> {
    let db = |e: sqlx::Error| EngineError::Store(e.into());
    let window = Duration::from_secs(2);
    if url.starts_with("sqlite:") {
        use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
        use std::str::FromStr;
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(db)?
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full);
        let pool = sqlx::SqlitePool::connect_with(opts).await.map_err(db)?;
        sqlx::query("CREATE TABLE IF NOT EXISTS bench_ceiling (id INTEGER, v TEXT)")
            .execute(&pool)
            .await
            .map_err(db)?;
        let start = Instant::now();
        let mut n = 0;
        while start.elapsed() < window {
            sqlx::query("INSERT INTO bench_ceiling VALUES (?, 'x')")
                .bind(n)
                .execute(&pool)
                .await
                .map_err(db)?;
            n += 1;
        }
        let single = n as f64 / start.elapsed().as_secs_f64();
        let start = Instant::now();
        sqlx::query(
            "INSERT INTO bench_ceiling WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 500000) SELECT i, 'x' FROM c",
        )
        .execute(&pool)
        .await
        .map_err(db)?;
        let bulk = 500_000.0 / start.elapsed().as_secs_f64();
        sqlx::query("DROP TABLE bench_ceiling")
            .execute(&pool)
            .await
            .map_err(db)?;
        Ok((single, bulk))
    } else {
        let pool = sqlx::PgPool::connect(url).await.map_err(db)?;
        sqlx::query("CREATE TABLE IF NOT EXISTS bench_ceiling (id BIGINT, v TEXT)")
            .execute(&pool)
            .await
            .map_err(db)?;
        let start = Instant::now();
        let mut n: i64 = 0;
        while start.elapsed() < window {
            sqlx::query("INSERT INTO bench_ceiling VALUES ($1, 'x')")
                .bind(n)
                .execute(&pool)
                .await
                .map_err(db)?;
            n += 1;
        }
        let single = n as f64 / start.elapsed().as_secs_f64();
        let start = Instant::now();
        sqlx::query("INSERT INTO bench_ceiling SELECT i, 'x' FROM generate_series(1, 500000) i")
            .execute(&pool)
            .await
            .map_err(db)?;
        let bulk = 500_000.0 / start.elapsed().as_secs_f64();
        sqlx::query("DROP TABLE bench_ceiling")
            .execute(&pool)
            .await
            .map_err(db)?;
        Ok((single, bulk))
    }
}

/// Events per second through the HTTP API (SQLite store, batches of 100, 4 clients).
pub async fn http_ingest(total: usize) -> Result<f64, EngineError> {
    let dir = tempfile_dir()?;
    let project = project(&dir)?;
    let store = crate::store::open(&format!("sqlite://{}", dir.join("http.db").display())).await?;
    let engine = Arc::new(Engine::new(project, store));
    let state = crate::server::AppState {
        engine,
        api_key: Arc::new("bench".into()),
        wake: Arc::new(tokio::sync::Notify::new()),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| EngineError::Invalid(e.to_string()))?;
    let addr = listener
        .local_addr()
        .map_err(|e| EngineError::Invalid(e.to_string()))?;
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, crate::server::router(state)).await;
    });
    let client = reqwest::Client::new();
    let per_client = total / 4;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..4 {
        let client = client.clone();
        let url = format!("http://{addr}/v1/events");
        tasks.push(tokio::spawn(async move {
            for batch in 0..per_client / 100 {
                let body: Vec<serde_json::Value> = (0..100)
                    .map(|i| json!({"id": format!("h{c}-{batch}-{i}"), "type": "page.visited", "email": format!("h{c}-{i}@bench.test"), "data": {"url": "/"}}))
                    .collect();
                let r = client.post(&url).bearer_auth("bench").json(&body).send().await;
                if !r.is_ok_and(|r| r.status().is_success()) {
                    return Err(());
                }
            }
            Ok(())
        }));
    }
    for t in tasks {
        if !matches!(t.await, Ok(Ok(()))) {
            return Err(EngineError::Invalid("an HTTP request failed".into()));
        }
    }
    let rate = (per_client / 100 * 100 * 4) as f64 / started.elapsed().as_secs_f64();
    server.abort();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(rate)
}

pub async fn run(
    contacts: usize,
    postgres: Option<String>,
    http_events: usize,
    show_progress: bool,
) -> Result<Report, EngineError> {
    let progress = if show_progress {
        let p = indicatif::ProgressBar::new(0);
        p.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:10} {bar:40} {pos}/{len} steps ({per_sec})",
            )
            .expect("template"),
        );
        p
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut stores = Vec::new();
    let dir = tempfile_dir()?;
    progress.set_message("sqlite");
    stores.push(
        steps(
            &format!("sqlite://{}", dir.join("bench.db").display()),
            contacts,
            &progress,
        )
        .await?,
    );
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(url) = postgres {
        progress.set_message("postgres");
        stores.push(steps(&url, contacts, &progress).await?);
    }
    progress.finish_and_clear();
    let http_events_per_sec = http_ingest(http_events).await?;
    Ok(Report {
        machine: machine(),
        stores,
        http_events_per_sec,
        peak_rss_mb: peak_rss_mb(),
    })
}

/// The report as a table for people.
pub fn table(r: &Report) -> String {
    let mut out = format!("machine: {}\n\n", r.machine);
    out.push_str(&format!(
        "{:<9} {:>9} {:>9} {:>8} {:>11} {:>16} {:>14} {:>12} {:>14}\n",
        "store",
        "contacts",
        "steps",
        "seconds",
        "steps/s",
        "1-row commits/s",
        "bulk rows/s",
        "steps/commit",
        "ingest ev/s"
    ));
    for s in &r.stores {
        out.push_str(&format!(
            "{:<9} {:>9} {:>9} {:>8.2} {:>11.0} {:>16.0} {:>14.0} {:>12.1} {:>14.0}\n",
            s.store,
            s.contacts,
            s.steps,
            s.seconds,
            s.steps_per_sec,
            s.ceiling_single_commits_per_sec,
            s.ceiling_bulk_rows_per_sec,
            s.steps_per_single_commit,
            s.ingest_direct_events_per_sec
        ));
    }
    out.push_str(&format!(
        "\nHTTP ingestion (POST /v1/events, SQLite, 4 clients x batches of 100): {:.0} events/s\npeak RSS of this process: {:.0} MB\n",
        r.http_events_per_sec, r.peak_rss_mb
    ));
    out
}
