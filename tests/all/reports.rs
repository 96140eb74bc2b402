//! Reports (issue 21): a scenario whose figures were worked out by hand before it ran
//! (funnel, exits, goal, email rates, an A/B split, the lead funnel with stage times)
//! matches the report exactly: simulated, then live on SQLite and Postgres through
//! `nurture report` and the HTTP endpoints; the split's p-value and interval match an
//! independent computation with scipy (`tests/support/ab_test.py`).
//!
//! The scenario, 200 contacts entering `offer-test` at T0 (Monday 2 March 2026, 09:00
//! UTC); the split sends 100 of them (by its documented hash) to `discount`, 100 to
//! `bonus`:
//! - discount: 40 open at T0+1h (5 of them twice), 3 others are bot-flagged opens; 10 of
//!   the openers click (5 at T0+2h, 5 at T0+4h); 1 hard bounce; 30 non-clickers buy at
//!   T0+1d (the goal).
//! - bonus: 50 open; 20 of them click (10 at T0+2h, 10 at T0+6h); 2 unsubscribe; 1 soft
//!   bounce; 45 non-clickers buy at T0+1d.
//!
//! Worked out: entered 200; wait-click left by `event` 30 (the clickers: lead -> mql) and
//! `timeout` 200 - 30 - 75 = 95; exits goal 75, end 95 + 30 = 125; goal rate 0.375,
//! median time to goal 1440 min; discount open rate 40/100, click 10/100, click-to-open
//! 10/40, bounce 1/100; bonus open 50/100, click 20/100, click-to-open 20/50, unsubscribe
//! 2/100, bounce 1/100; lead -> mql 30 of 200 (0.15), minutes in lead: 15 x 120, 5 x 240,
//! 10 x 360, so the median is (120 + 240) / 2 = 180; the 30 MQLs got 30 x 5 points from
//! opens and 30 x 10 from clicks; bonus 45/100 against discount 30/100 is significant
//! (p about 0.028) with 100 contacts each: bonus wins at the default minimum of 100, and
//! not at a minimum of 150.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{json, Value};

use crate::util::rt_multi as rt;
use nurture_engine::input::IncomingEvent;
use nurture_engine::report::{self, Options};
use nurture_engine::Engine;
use nurture_store::Store;

const WORKFLOW: &str = "\
workflow: offer-test
name: Trial offer test
version: 1
trigger:
  event: trial.started
goal:
  event: purchase.made
steps:
  - id: mark-lead
    set: { lifecycle: lead }
  - id: offer
    split:
      - { weight: 50, next: offer-a, name: discount }
      - { weight: 50, next: offer-b, name: bonus }
  - id: offer-a
    send_email: offer-discount
    next: wait-click
  - id: offer-b
    send_email: offer-bonus
  - id: wait-click
    wait_for:
      event: email.clicked
      timeout: 5d
    on_timeout: end
  - id: engaged
    set: { lifecycle: mql }
  - id: linger
    wait: 7d
";

/// The scenario's project in `dir`.
fn project(dir: &Path) -> PathBuf {
    let p = dir.join("offers");
    std::fs::create_dir_all(p.join("workflows")).unwrap();
    std::fs::create_dir_all(p.join("templates")).unwrap();
    std::fs::write(
        p.join("nurture.toml"),
        "timezone = \"UTC\"\n[sender]\nfrom = \"Acme <hello@acme.test>\"\n",
    )
    .unwrap();
    std::fs::write(p.join("workflows/offer-test.yaml"), WORKFLOW).unwrap();
    std::fs::write(
        p.join("scoring.yaml"),
        "rules:\n  - { event: email.opened, points: 5 }\n  - { event: email.clicked, points: 10 }\n",
    )
    .unwrap();
    for (t, subject) in [
        ("offer-discount", "20% off"),
        ("offer-bonus", "A free month"),
    ] {
        let body = format!("---\nsubject: \"{subject}\"\n---\n<p>Hi {{{{ contact.email }}}}</p>\n");
        std::fs::write(p.join(format!("templates/{t}.html")), body).unwrap();
    }
    p
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap()
}

/// The first 100 contacts of each variant, by the split's hash: (discount, bonus).
fn variants() -> (Vec<String>, Vec<String>) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0.. {
        let c = format!("p{i:04}");
        let bucket = nurture_engine::ids::split_bucket("offer-test", "offer", &c, 100);
        match bucket < 50 {
            true if a.len() < 100 => a.push(c),
            false if b.len() < 100 => b.push(c),
            _ => {}
        }
        if a.len() == 100 && b.len() == 100 {
            return (a, b);
        }
    }
    unreachable!()
}

fn contacts() -> Vec<Value> {
    let (a, b) = variants();
    a.iter()
        .chain(&b)
        .map(|c| json!({"id": c, "email": format!("{c}@example.com"), "consent": "opted_in"}))
        .collect()
}

fn ev(id: String, contact: &str, kind: &str, at: DateTime<Utc>, data: Value) -> IncomingEvent {
    IncomingEvent {
        index: 0,
        id: Some(id),
        kind: kind.into(),
        contact: Some(contact.into()),
        email: None,
        at: Some(at),
        data,
    }
}

/// Every event of the scenario (the module doc), in time order.
fn events() -> Vec<IncomingEvent> {
    let (a, b) = variants();
    let (t, h) = (t0(), Duration::hours);
    let mut out = Vec::new();
    let mut add = |c: &str, kind: &str, at: DateTime<Utc>, data: Value| {
        let id = format!("{c}-{kind}-{}", at.timestamp());
        out.push(ev(id, c, kind, at, data));
    };
    for c in a.iter().chain(&b) {
        add(c, "trial.started", t, json!({}));
    }
    let bounce = |permanent: bool| json!({"permanent": permanent, "reason": "mailbox"});
    add(
        &a[99],
        "email.bounced",
        t + Duration::minutes(30),
        bounce(true),
    );
    add(
        &b[95],
        "email.bounced",
        t + Duration::minutes(30),
        bounce(false),
    );
    for c in &a[..40] {
        add(c, "email.opened", t + h(1), json!({}));
    }
    for c in &a[40..43] {
        add(c, "email.opened", t + h(1), json!({"bot": true}));
    }
    for c in &a[30..35] {
        add(
            c,
            "email.opened",
            t + h(1) + Duration::minutes(30),
            json!({}),
        );
    }
    for c in &b[..50] {
        add(c, "email.opened", t + h(1), json!({}));
    }
    for (i, c) in a[..10].iter().enumerate() {
        add(
            c,
            "email.clicked",
            t + h(if i < 5 { 2 } else { 4 }),
            json!({}),
        );
    }
    for (i, c) in b[..20].iter().enumerate() {
        add(
            c,
            "email.clicked",
            t + h(if i < 10 { 2 } else { 6 }),
            json!({}),
        );
    }
    for c in &b[90..92] {
        add(c, "email.unsubscribed", t + h(3), json!({}));
    }
    for c in a[50..80].iter().chain(&b[20..65]) {
        add(c, "purchase.made", t + Duration::days(1), json!({}));
    }
    out.sort_by_key(|e| e.at);
    out
}

fn load(dir: &Path) -> Arc<nurture_core::project::Project> {
    let loaded = nurture_core::project::load(dir);
    assert_eq!(loaded.errors(), 0, "{}", loaded.render());
    Arc::new(loaded.project.unwrap())
}

fn rows() -> Vec<nurture_engine::input::ContactRow> {
    contacts()
        .iter()
        .enumerate()
        .map(|(i, v)| nurture_engine::input::parse_contact(i + 1, v).unwrap())
        .collect()
}

/// The reports of the simulated scenario, as JSON: (workflow, funnel).
async fn simulated(dir: &Path, o: &Options) -> (Value, Value) {
    let project = load(dir);
    let (_, store) = nurture_engine::simulate::run_keeping(
        project.clone(),
        &rows(),
        events(),
        None,
        None,
        |_| {},
    )
    .await
    .unwrap();
    reports(&*store, &project, o).await
}

async fn reports(
    store: &dyn Store,
    project: &nurture_core::project::Project,
    o: &Options,
) -> (Value, Value) {
    let w = report::workflow(store, &project.plans[0], o).await.unwrap();
    let f = report::lead_funnel(store, o).await.unwrap();
    (json!(w), json!(f))
}

fn get<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, k| match k.parse::<usize>() {
        Ok(i) => &v[i],
        Err(_) => &v[k],
    })
}

/// The figures worked out by hand (the module doc), against a report's JSON.
fn assert_worked_out(w: &Value, f: &Value) {
    let expect: &[(&str, Value)] = &[
        ("entered", json!(200)),
        ("exits", json!({"goal": 75, "end": 125})),
        ("goal.conversions", json!(75)),
        ("goal.rate", json!(0.375)),
        ("goal.median_minutes", json!(1440)),
        ("emails.0.step", json!("offer-a")),
        ("emails.0.queued", json!(100)),
        ("emails.0.sent", json!(100)),
        ("emails.0.opens", json!(40)),
        ("emails.0.opens_bot", json!(3)),
        ("emails.0.clicks", json!(10)),
        ("emails.0.bounced_hard", json!(1)),
        ("emails.0.bounced_soft", json!(0)),
        ("emails.0.unsubscribes", json!(0)),
        (
            "emails.0.rates",
            json!({"open": 0.4, "click": 0.1, "click_to_open": 0.25, "unsubscribe": 0.0, "bounce": 0.01}),
        ),
        ("emails.1.step", json!("offer-b")),
        ("emails.1.sent", json!(100)),
        ("emails.1.opens", json!(50)),
        ("emails.1.clicks", json!(20)),
        ("emails.1.unsubscribes", json!(2)),
        ("emails.1.bounced_soft", json!(1)),
        (
            "emails.1.rates",
            json!({"open": 0.5, "click": 0.2, "click_to_open": 0.4, "unsubscribe": 0.02, "bounce": 0.01}),
        ),
        (
            "splits.0.variants.0",
            json!({"name": "discount", "entered": 100, "conversions": 30, "rate": 0.3, "opens": 40, "clicks": 10}),
        ),
        (
            "splits.0.variants.1",
            json!({"name": "bonus", "entered": 100, "conversions": 45, "rate": 0.45, "opens": 50, "clicks": 20}),
        ),
        ("splits.0.winner", json!("bonus")),
    ];
    for (path, want) in expect {
        assert_eq!(get(w, path), want, "{path} in {w:#}");
    }
    let steps: BTreeMap<&str, (i64, i64)> = w["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let n = |k: &str| s[k].as_i64().unwrap();
            (s["step"].as_str().unwrap(), (n("passed"), n("waiting")))
        })
        .collect();
    let want: BTreeMap<&str, (i64, i64)> = [
        ("mark-lead", (200, 0)),
        ("offer", (200, 0)),
        ("offer-a", (100, 0)),
        ("offer-b", (100, 0)),
        ("wait-click", (200, 0)),
        ("engaged", (30, 0)),
        ("linger", (30, 0)),
    ]
    .into();
    assert_eq!(steps, want);
    let edges = |step: &str| -> Vec<(String, Value, i64)> {
        let s = w["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["step"] == step)
            .unwrap();
        s["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["label"].as_str().unwrap().to_string(),
                    e["to"].clone(),
                    e["runs"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(
        edges("offer"),
        [
            ("bonus".into(), json!("offer-b"), 100),
            ("discount".into(), json!("offer-a"), 100)
        ]
    );
    assert_eq!(
        edges("wait-click"),
        [
            ("event".into(), json!("engaged"), 30),
            ("timeout".into(), json!("end"), 95)
        ]
    );
    assert_eq!(
        f["stages"],
        json!([{"stage": "lead", "reached": 200}, {"stage": "mql", "reached": 30}])
    );
    assert_eq!(
        f["transitions"],
        json!([
            {"from": "-", "to": "lead", "contacts": 200, "median_minutes": null},
            {"from": "lead", "to": "mql", "contacts": 30, "median_minutes": 180},
        ])
    );
    assert_eq!(
        f["conversions"][0],
        json!({"from": "lead", "to": "mql", "rate": 0.15})
    );
    assert_eq!(
        f["mql_points"],
        json!([["email.clicked", 300], ["email.opened", 150]])
    );
}

/// The split's test against scipy's chi-square test of the same table (its p-value is
/// the pooled z-test's) and normal quantile.
fn assert_matches_scipy(w: &Value) {
    let out = std::process::Command::new("python3")
        .arg(crate::util::repo().join("tests/support/ab_test.py"))
        .args(["100", "30", "100", "45"])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want: Value = serde_json::from_slice(&out.stdout).unwrap();
    let test = &w["splits"][0]["comparisons"][0]["test"];
    for k in ["p_value", "difference", "ci_low", "ci_high"] {
        let (got, want) = (test[k].as_f64().unwrap(), want[k].as_f64().unwrap());
        assert!(
            (got - want).abs() < 1e-9,
            "{k}: {got} against scipy's {want}"
        );
    }
    let p = test["p_value"].as_f64().unwrap();
    assert!((0.028..0.029).contains(&p), "{p}");
}

#[test]
fn a_worked_out_scenario_matches_its_report_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = project(tmp.path());
    let (w, f) = rt().block_on(simulated(&dir, &Options::default()));
    assert_worked_out(&w, &f);
    assert_matches_scipy(&w);
    assert_eq!(w["splits"][0]["verdict"], "bonus wins (p = 0.0285)");
    // The same counts with a higher bar for a winner: significant, not enough contacts.
    let strict = Options {
        min_sample: 150,
        ..Default::default()
    };
    let (w, _) = rt().block_on(simulated(&dir, &strict));
    assert_eq!(w["splits"][0]["winner"], Value::Null);
    assert_eq!(
        w["splits"][0]["verdict"],
        "significant, but below the minimum of 150 contacts per variant: about 100 more contacts needed"
    );
}

#[test]
fn a_report_by_day_and_a_period_count_what_happened_in_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = project(tmp.path());
    let by_day = Options {
        by: Some(report::Period::Day),
        ..Default::default()
    };
    let (w, _) = rt().block_on(simulated(&dir, &by_day));
    let days = w["periods"].as_array().unwrap();
    assert_eq!(
        days[0],
        json!({"start": "2026-03-02T00:00:00Z", "entered": 200, "conversions": 0, "sent": 200, "opens": 90, "clicks": 30})
    );
    assert_eq!(days[1]["conversions"], 75);
    // Only the second day: the purchases, nobody entering.
    let day2 = Options {
        since: Some(t0() + Duration::hours(15)),
        until: Some(t0() + Duration::hours(39)),
        ..Default::default()
    };
    let (w, _) = rt().block_on(simulated(&dir, &day2));
    assert_eq!(
        (w["entered"].clone(), w["goal"]["conversions"].clone()),
        (json!(0), json!(75))
    );
}

/// Who waits where three hours in: the 15 contacts who clicked at T0+2h (5 of discount,
/// 10 of bonus) at `linger`, the other 185 at `wait-click`; the gauge the commits keep
/// equals the open runs the store counts.
#[test]
fn waiting_at_each_step_follows_the_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = project(tmp.path());
    rt().block_on(async {
        let project = load(&dir);
        let until = Some(t0() + Duration::hours(3));
        let (_, store) = nurture_engine::simulate::run_keeping(
            project.clone(),
            &rows(),
            events(),
            None,
            until,
            |_| {},
        )
        .await
        .unwrap();
        let w = report::workflow(&*store, &project.plans[0], &Options::default())
            .await
            .unwrap();
        let waiting = waiting_at(&w);
        let want: BTreeMap<String, i64> =
            [("linger".to_string(), 15), ("wait-click".to_string(), 185)].into();
        assert_eq!(waiting, want);
        let open: BTreeMap<String, i64> = store
            .open_runs("offer-test")
            .await
            .unwrap()
            .into_iter()
            .map(|c| (c.step.unwrap_or_default(), c.runs))
            .collect();
        assert_eq!(open, want, "the store's own count of open runs");
    });
}

/// A store whose runs were open before it kept counts: its migration backfills the
/// gauge of open runs per step from the runs table. (The counts' tables and their
/// migration are removed from a live store three hours in, then the store is opened
/// again.)
#[test]
fn an_upgraded_store_counts_the_runs_open_before_the_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = project(tmp.path());
    let mut urls = vec![format!("sqlite://{}", tmp.path().join("old.db").display())];
    urls.extend(crate::util::fresh_postgres());
    let want: BTreeMap<String, i64> =
        [("linger".to_string(), 15), ("wait-click".to_string(), 185)].into();
    for url in &urls {
        rt().block_on(async {
            let store = live_until(&dir, url, Some(t0() + Duration::hours(3))).await;
            drop(store);
            forget_counts(url).await;
            let store = nurture_server::open_store(url).await.unwrap();
            let w = report::workflow(&*store, &load(&dir).plans[0], &Options::default())
                .await
                .unwrap();
            assert_eq!(waiting_at(&w), want, "{url}");
            assert_eq!(
                w.entered, 0,
                "{url}: counts before the upgrade are not invented"
            );
        });
    }
}

/// Takes the store at `url` back to before the report counts: their tables and the
/// record of their migration (SQLite 9, Postgres 17) removed.
async fn forget_counts(url: &str) {
    let drop = "DROP TABLE report_counts; DROP TABLE report_once;";
    if url.starts_with("postgres") {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        let sql = format!(
            "SET search_path TO nurture; {drop} DELETE FROM _sqlx_migrations WHERE version = 17;"
        );
        sqlx::raw_sql(&sql).execute(&mut c).await.unwrap();
    } else {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        let sql = format!("{drop} DELETE FROM _sqlx_migrations WHERE version = 9;");
        sqlx::raw_sql(&sql).execute(&mut c).await.unwrap();
    }
}

/// Drives the scenario live on the store at `url`: the real engine on a virtual clock,
/// the outbox delivered through the store as a deliverer records it.
async fn live(dir: &Path, url: &str) -> Arc<dyn Store> {
    live_until(dir, url, None).await
}

/// [`live`], stopping before the first instant after `until`.
async fn live_until(dir: &Path, url: &str, until: Option<DateTime<Utc>>) -> Arc<dyn Store> {
    let project = load(dir);
    let start = t0() - Duration::hours(1);
    let (store, engine) = crate::util::deployed(project, url, start).await;
    engine.import_contacts(&rows(), start).await.unwrap();
    let mut inputs = events().into_iter().peekable();
    let mut now = start;
    for _ in 0..1_000 {
        engine.tick(now).await.unwrap();
        crate::util::deliver_recorded(&*store, now).await;
        let next = [
            inputs.peek().and_then(|e| e.at),
            store.next_timer().await.unwrap(),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next.filter(|n| until.is_none_or(|u| *n <= u)) else {
            return store;
        };
        now = next.max(now);
        let due: Vec<IncomingEvent> =
            std::iter::from_fn(|| inputs.next_if(|e| e.at <= Some(now))).collect();
        engine.ingest(&due, now).await.unwrap();
    }
    panic!("the live run did not end");
}

/// The report of `path` from the API over `store`.
async fn http(project: &Path, store: Arc<dyn Store>, paths: &[&str]) -> Vec<Value> {
    let base = crate::util::api(Arc::new(Engine::new(load(project), store))).await;
    let client = reqwest::Client::new();
    let mut out = Vec::new();
    for p in paths {
        let r = client
            .get(format!("{base}{p}"))
            .bearer_auth("k")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{p}");
        out.push(r.json().await.unwrap());
    }
    out
}

#[test]
fn a_live_run_reports_the_same_figures_on_each_store_by_cli_and_http() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = project(tmp.path());
    let (want, want_funnel) = rt().block_on(simulated(&dir, &Options::default()));
    let mut urls = vec![format!("sqlite://{}", tmp.path().join("live.db").display())];
    urls.extend(crate::util::fresh_postgres());
    for url in &urls {
        // One runtime for the store's whole use: its pool lives on it.
        let (w, f, got) = rt().block_on(async {
            let store = live(&dir, url).await;
            let (w, f) = reports(&*store, &load(&dir), &Options::default()).await;
            let paths = [
                "/v1/reports/workflows/offer-test",
                "/v1/reports/funnel",
                "/v1/reports/workflows/offer-test/splits",
                "/v1/reports/workflows/offer-test/emails",
            ];
            (w, f, http(&dir, store, &paths).await)
        });
        assert_eq!(w, want, "{url}");
        assert_eq!(f, want_funnel, "{url}");
        assert_eq!(got[0], want, "{url}: HTTP");
        assert_eq!(got[1], want_funnel, "{url}: HTTP");
        assert_eq!(got[2]["splits"], want["splits"], "{url}: HTTP");
        assert_eq!(got[3]["emails"], want["emails"], "{url}: HTTP");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_nurture"))
            .args([
                "report",
                "--workflow",
                "offer-test",
                "--format",
                "json",
                "--store",
                url,
            ])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(cli["workflows"][0], want, "{url}: nurture report");
    }
}

#[test]
fn report_tables_and_csv_show_the_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = project(tmp.path());
    let url = format!("sqlite://{}", tmp.path().join("live.db").display());
    rt().block_on(live(&dir, &url));
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_nurture"))
            .arg("report")
            .args(args)
            .args(["--store", &url])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let summary = run(&[]);
    assert!(summary.contains("offer-test"), "{summary}");
    assert!(
        summary.contains("lead -> mql: 30, median 3h 0m in lead"),
        "{summary}"
    );
    let table = run(&["--workflow", "offer-test"]);
    for line in [
        "entered 200, goal 75 (37.5%), median time to goal 1d 0h",
        "event: 30 -> engaged, timeout: 95 -> end",
        "bonus vs discount: +15.0 points (95% CI +1.7 .. +28.3), p = 0.0285",
        "verdict: bonus wins (p = 0.0285)",
    ] {
        assert!(table.contains(line), "no `{line}` in:\n{table}");
    }
    let csv = run(&["--workflow", "offer-test", "--format", "csv"]);
    assert!(
        csv.starts_with("section,workflow,item,metric,value\n"),
        "{csv}"
    );
    for row in [
        "edge,offer-test,wait-click,timeout,95",
        "email,offer-test,offer-b,opens,50",
        "split,offer-test,offer,winner,bonus",
    ] {
        assert!(csv.lines().any(|l| l == row), "no `{row}` in:\n{csv}");
    }
}

#[test]
fn a_report_query_that_is_not_understood_is_a_400_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = project(tmp.path());
    let url = format!("sqlite://{}", tmp.path().join("q.db").display());
    rt().block_on(async {
        let store = nurture_server::open_store(&url).await.unwrap();
        let base = crate::util::api(Arc::new(Engine::new(load(&dir), store))).await;
        let client = reqwest::Client::new();
        let r = client
            .get(format!("{base}/v1/reports/funnel"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "a report without the key");
        for (q, status) in [
            ("/v1/reports/workflows/offer-test?since=yesterday", 400),
            ("/v1/reports/workflows/offer-test?min_sample=-1", 400),
            ("/v1/reports/workflows/nope", 404),
            ("/v1/reports/funnel?by=month", 400),
        ] {
            let r = client
                .get(format!("{base}{q}"))
                .bearer_auth("k")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), status, "{q}");
            let body: Value = r.json().await.unwrap();
            assert!(body["detail"].is_string(), "{q}: {body}");
        }
    });
}

/// The steps where runs of `w` wait now, with how many.
fn waiting_at(w: &report::WorkflowReport) -> BTreeMap<String, i64> {
    w.steps
        .iter()
        .filter(|s| s.waiting != 0)
        .map(|s| (s.step.clone(), s.waiting))
        .collect()
}
