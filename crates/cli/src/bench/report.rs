//! (g) Report latency on a store with many runs: `nurture report`'s reads (a workflow's
//! report, all time and its last 7 days, and the lead funnel) on a store holding N runs
//! of the benchmark campaign over 90 days, 5% of them still waiting.
//!
//! The runs are written with bulk SQL, and their counts as the commits of a live run
//! leave them (one commit of tallies per hour of the campaign, summed per hour as group
//! commits sum them, and the gauge of open runs per step): a report reads count rows
//! (metrics x hours, whatever N is), never the runs.
//!
//! Then the dashboard's pages are rendered by the server's router in this process (as a
//! logged-in browser asks for them, no network between): campaigns, a campaign with its
//! graph, a run, a contact (one real contact with a run and its journal among the N),
//! the lead funnel and the operations page (over the timers of the open runs).

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
    /// Each dashboard page's server-side time, median of 5, milliseconds.
    pub(crate) pages_ms: Vec<(String, f64)>,
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
    let pages_ms = pages(project, store).await?;
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
        pages_ms,
    })
}

/// Each dashboard page's server-side time (median of 5, after one to warm up).
async fn pages(
    project: std::sync::Arc<nurture_core::project::Project>,
    store: std::sync::Arc<dyn Store>,
) -> Result<Vec<(String, f64)>, EngineError> {
    let (run, contact) = real_run(&*store).await?;
    let engine = std::sync::Arc::new(nurture_engine::Engine::new(project, store));
    let router = nurture_server::router(nurture_server::AppState::new(
        engine,
        std::sync::Arc::new("bench-key".into()),
        std::sync::Arc::new(tokio::sync::Notify::new()),
        std::sync::Arc::new(nurture_channels::email::Signer::new(b"bench")),
    ));
    let cookie = login(&router).await?;
    let mut out = Vec::new();
    for (name, path) in [
        ("campaigns", "/ui/".to_string()),
        ("campaign", "/ui/campaigns/bench".to_string()),
        ("run", format!("/ui/runs/{run}")),
        ("contact", format!("/ui/contacts/{contact}")),
        ("funnel", "/ui/funnel".to_string()),
        ("ops", "/ui/ops".to_string()),
    ] {
        let mut ms = Vec::new();
        for _ in 0..6 {
            let t = Instant::now();
            let status = get(&router, &path, &cookie).await?.0;
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            if status != 200 {
                return Err(EngineError::Invalid(format!("{path} answered {status}")));
            }
        }
        ms.remove(0);
        ms.sort_by(f64::total_cmp);
        out.push((name.to_string(), ms[2]));
    }
    Ok(out)
}

/// A GET through the router: status, the `set-cookie` headers and the body.
async fn get(
    router: &axum::Router,
    path: &str,
    cookie: &str,
) -> Result<(u16, Vec<String>, String), EngineError> {
    use tower::ServiceExt as _;
    let req = axum::http::Request::get(path)
        .header("cookie", cookie)
        .body(axum::body::Body::empty())
        .map_err(|e| EngineError::Invalid(e.to_string()))?;
    answer(router.clone().oneshot(req).await).await
}

async fn answer(
    r: Result<axum::response::Response, std::convert::Infallible>,
) -> Result<(u16, Vec<String>, String), EngineError> {
    let r = r.map_err(|e| EngineError::Invalid(e.to_string()))?;
    let status = r.status().as_u16();
    let cookies = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().to_string())
        .collect();
    let body = axum::body::to_bytes(r.into_body(), 1 << 24)
        .await
        .map_err(|e| EngineError::Invalid(e.to_string()))?;
    Ok((status, cookies, String::from_utf8_lossy(&body).into_owned()))
}

/// Logs in as a browser does; the session cookie.
async fn login(router: &axum::Router) -> Result<String, EngineError> {
    use tower::ServiceExt as _;
    let (_, cookies, page) = get(router, "/ui/login", "").await?;
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_default();
    let req = axum::http::Request::post("/ui/login")
        .header("cookie", cookies.join("; "))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(axum::body::Body::from(format!("csrf={csrf}&key=bench-key")))
        .map_err(|e| EngineError::Invalid(e.to_string()))?;
    let (status, cookies, _) = answer(router.clone().oneshot(req).await).await?;
    cookies
        .into_iter()
        .find(|c| c.starts_with("nurture_session="))
        .ok_or_else(|| EngineError::Invalid(format!("the bench's login answered {status}")))
}

/// One real contact with a run, its journal and score history among the filled runs.
async fn real_run(store: &dyn Store) -> Result<(String, String), EngineError> {
    use nurture_store::{Contact, JournalEntry, JournalKind, Run, RunStatus};
    let at = chrono::Utc.with_ymd_and_hms(2026, 2, 1, 9, 0, 0).unwrap();
    let contact = Contact {
        id: "bench-contact".into(),
        email: Some("bench-contact@bench.test".into()),
        score: 30,
        ..Default::default()
    };
    let run = Run {
        id: "bench-run".into(),
        workflow: "bench".into(),
        workflow_version: 1,
        contact: contact.id.clone(),
        status: RunStatus::Completed,
        step: None,
        wait: None,
        trigger_event: None,
        event: None,
        outcome: None,
        started_at: at,
        updated_at: at,
        ended_at: Some(at),
        exit_reason: None,
        variants: Default::default(),
        rev: 0,
    };
    let line = |kind: JournalKind, data: serde_json::Value| JournalEntry {
        run_id: Some(run.id.clone()),
        contact: contact.id.clone(),
        at,
        kind,
        data,
    };
    let journal = vec![
        line(
            JournalKind::Effect,
            serde_json::json!({"effect": "enter", "trigger": {"event": "signup"}}),
        ),
        line(
            JournalKind::Step,
            serde_json::json!({"step": "s1", "kind": "score"}),
        ),
        line(
            JournalKind::Effect,
            serde_json::json!({"effect": "score", "step": "s1", "delta": 30, "score": 30, "reason": "bench"}),
        ),
        line(
            JournalKind::Effect,
            serde_json::json!({"effect": "exit", "reason": "end"}),
        ),
    ];
    store
        .commit(&UnitOfWork {
            contacts: vec![contact.clone()],
            runs: vec![run.clone()],
            journal,
            ..Default::default()
        })
        .await?;
    Ok((run.id, contact.id))
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
            "TRUNCATE runs, timers, report_counts, report_once",
            "DELETE FROM journal WHERE contact = 'bench-contact' AND $1 > 0",
            "DELETE FROM contacts WHERE id = 'bench-contact' AND $1 > 0",
            "INSERT INTO runs (id, workflow, workflow_version, contact, status, doc, started_at, rev) \
             SELECT 'r' || i, 'bench', 1, 'c' || i, \
               CASE WHEN i % 20 = 0 THEN 'waiting' ELSE 'completed' END, \
               json_build_object('step', CASE WHEN i % 20 = 0 THEN 'w1' END), \
               timestamptz '2026-01-05' + (i * 7776000 / $1) * interval '1 second', 1 \
             FROM generate_series(0, $1 - 1) i",
            "INSERT INTO timers (run_id, due_at, contact) \
             SELECT id, started_at + interval '1 day', contact FROM runs WHERE status = 'waiting' \
             AND $1 > 0",
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
    sqlx::query(
        "INSERT INTO timers (run_id, due_at) SELECT id, \
         strftime('%Y-%m-%dT%H:%M:%fZ', started_at, '+1 day') FROM runs WHERE status = 'waiting'",
    )
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
