//! (g) Report latency on a store with many runs: `nurture report`'s reads (a workflow's
//! report, all time and its last 7 days, and the lead funnel) on a store holding N runs
//! of the benchmark campaign over 90 days, 5% of them still waiting.
//!
//! The runs are written with bulk SQL, and their counts as the commits of a live run
//! leave them (one commit of tallies per hour of the campaign, summed per hour as group
//! commits sum them, and the gauge of open runs per step): a report reads count rows
//! (metrics x hours, whatever N is), never the runs.

use std::time::Instant;

use chrono::{Duration, TimeZone};
use serde::Serialize;

use nurture_engine::report::{self, Options};
use nurture_engine::EngineError;
use nurture_store::counts::{Scope, Tally};
use nurture_store::{Store, UnitOfWork};

/// The campaign's length in hours.
const HOURS: i64 = 90 * 24;

/// One store's figures.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ReportFigures {
    pub(crate) store: String,
    pub(crate) runs: usize,
    pub(crate) open_runs: usize,
    pub(crate) count_rows: usize,
    pub(crate) fill_seconds: f64,
    /// Median of 5, milliseconds.
    pub(crate) workflow_all_ms: f64,
    pub(crate) workflow_7d_ms: f64,
    pub(crate) funnel_ms: f64,
}

/// Fills a store of `url` (emptied first when it is Postgres) with `runs` runs and
/// measures the reports on it.
pub(crate) async fn measure(
    url: &str,
    runs: usize,
    config: &nurture_server::StoreConfig,
) -> Result<ReportFigures, EngineError> {
    let dir = super::tempfile_dir()?;
    let project = super::project(&dir)?;
    let store = nurture_server::open_store_with(url, config).await?;
    let schema = config
        .postgres
        .schema_name()
        .map_err(nurture_store::StoreError::from)?;
    let t0 = chrono::Utc.with_ymd_and_hms(2026, 1, 5, 0, 0, 0).unwrap();
    let started = Instant::now();
    fill_runs(url, runs, schema).await?;
    let count_rows = fill_counts(&*store, runs, t0).await?;
    let fill_seconds = started.elapsed().as_secs_f64();
    let plan = &project.plans[0];
    let all = Options::default();
    let week = Options {
        since: Some(t0 + Duration::hours(HOURS - 24 * 7)),
        ..Default::default()
    };
    let workflow_all_ms =
        median_ms(|| async { report::workflow(&*store, plan, &all).await.map(drop) }).await?;
    let workflow_7d_ms =
        median_ms(|| async { report::workflow(&*store, plan, &week).await.map(drop) }).await?;
    let funnel_ms =
        median_ms(|| async { report::lead_funnel(&*store, &all).await.map(drop) }).await?;
    // The open runs as the report counts them.
    let open_runs = report::workflow(&*store, plan, &all)
        .await?
        .steps
        .iter()
        .map(|s| s.waiting as usize)
        .sum();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ReportFigures {
        store: url.split(':').next().unwrap_or_default().to_string(),
        runs,
        open_runs,
        count_rows,
        fill_seconds,
        workflow_all_ms,
        workflow_7d_ms,
        funnel_ms,
    })
}

/// The median of 5 timed calls of `f` (after one to warm the cache), in milliseconds.
async fn median_ms<F, Fut>(f: F) -> Result<f64, EngineError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), nurture_store::StoreError>>,
{
    f().await?;
    let mut ms = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        f().await?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    Ok(ms[2])
}

/// `runs` runs of the benchmark campaign over 90 days: every 20th waiting at `w1`, the
/// others completed.
async fn fill_runs(url: &str, runs: usize, schema: &str) -> Result<(), EngineError> {
    let n = runs as i64;
    if url.starts_with("postgres") {
        // One connection, so the search path set on it holds for every statement.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await
            .map_err(nurture_store::StoreError::from)?;
        let search = format!("SET search_path TO \"{schema}\"");
        sqlx::query(&search)
            .execute(&pool)
            .await
            .map_err(nurture_store::StoreError::from)?;
        for sql in [
            "TRUNCATE runs, report_counts, report_once",
            "INSERT INTO runs (id, workflow, workflow_version, contact, status, doc, started_at, rev) \
             SELECT 'r' || i, 'bench', 1, 'c' || i, \
               CASE WHEN i % 20 = 0 THEN 'waiting' ELSE 'completed' END, \
               json_build_object('step', CASE WHEN i % 20 = 0 THEN 'w1' END), \
               timestamptz '2026-01-05' + (i * 7776000 / $1) * interval '1 second', 1 \
             FROM generate_series(0, $1 - 1) i",
            "ANALYZE runs",
        ] {
            sqlx::query(sql)
                .bind(n)
                .execute(&pool)
                .await
                .map_err(nurture_store::StoreError::from)?;
        }
        return Ok(());
    }
    let opts = url
        .parse::<sqlx::sqlite::SqliteConnectOptions>()
        .map_err(nurture_store::StoreError::from)?;
    let pool = sqlx::SqlitePool::connect_with(opts)
        .await
        .map_err(nurture_store::StoreError::from)?;
    sqlx::query(
        "INSERT INTO runs (id, workflow, workflow_version, contact, status, doc, started_at, rev) \
         WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i + 1 < ?1) \
         SELECT 'r' || i, 'bench', 1, 'c' || i, \
           CASE WHEN i % 20 = 0 THEN 'waiting' ELSE 'completed' END, \
           json_object('step', CASE WHEN i % 20 = 0 THEN 'w1' END), \
           strftime('%Y-%m-%dT%H:%M:%fZ', '2026-01-05', '+' || (i * 7776000 / ?1) || ' seconds'), 1 \
         FROM s",
    )
    .bind(n)
    .execute(&pool)
    .await
    .map_err(nurture_store::StoreError::from)?;
    sqlx::query("ANALYZE")
        .execute(&pool)
        .await
        .map_err(nurture_store::StoreError::from)?;
    Ok(())
}

/// The counts `runs` runs leave, one commit per hour; returns how many rows it wrote.
async fn fill_counts(
    store: &dyn Store,
    runs: usize,
    t0: chrono::DateTime<chrono::Utc>,
) -> Result<usize, EngineError> {
    let per_hour = (runs as i64 / HOURS).max(1);
    // The gauge of open runs per step: the fill's every 20th run waits at w1.
    let open = (runs as i64 + 19) / 20;
    let scope = Scope::Workflow {
        workflow: "bench".into(),
        version: 1,
    };
    let gauge = Tally::of(
        scope,
        "waiting:w1".into(),
        nurture_store::counts::GAUGE_HOUR,
        open,
    );
    store
        .commit(&UnitOfWork {
            tallies: vec![gauge],
            ..Default::default()
        })
        .await?;
    let mut rows = 1;
    for h in 0..HOURS {
        let at = t0 + Duration::hours(h);
        let scope = Scope::Workflow {
            workflow: "bench".into(),
            version: 1,
        };
        let wf = |metric: String, n: i64| Tally::of(scope.clone(), metric, at, n);
        let mut tallies: Vec<Tally> = [
            "entered", "step:s1", "step:w1", "step:s2", "step:w2", "step:s3", "step:s4",
        ]
        .iter()
        .map(|m| wf(m.to_string(), per_hour))
        .collect();
        let goals = per_hour / 10;
        tallies.extend([
            wf("exit:end".into(), per_hour - goals),
            wf("exit:goal".into(), goals),
            wf(format!("goal_min:{}", 60 + (h * 37) % 4000), goals),
            wf(format!("goal_min:{}", 90 + (h * 53) % 6000), 1),
            Tally::of(Scope::Contacts, "lifecycle:lead>mql".into(), at, goals),
            Tally::of(
                Scope::Contacts,
                format!("lifecycle_min:lead>mql:{}", (h * 41) % 9000),
                at,
                goals,
            ),
            Tally::of(
                Scope::Contacts,
                "mql_points:email.opened".into(),
                at,
                goals * 10,
            ),
            Tally::of(
                Scope::Contacts,
                "mql_points:page.visited".into(),
                at,
                goals * 3,
            ),
        ]);
        rows += tallies.len();
        store
            .commit(&UnitOfWork {
                tallies,
                ..Default::default()
            })
            .await?;
    }
    Ok(rows)
}
