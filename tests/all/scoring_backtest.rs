//! Scoring that ages (`decay`, `expires`) through a real project and SQLite store, its
//! validation, and `nurture scoring backtest` over a generated history.

use std::path::Path;
use std::process::{Command, Output};

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::Value;

fn nurture_in(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nurture"))
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A project in `dir` with `scoring` as its scoring.yaml and one workflow.
fn project(dir: &Path, scoring: &str) {
    std::fs::create_dir_all(dir.join("workflows")).unwrap();
    std::fs::write(
        dir.join("nurture.toml"),
        "[sender]\nfrom = \"Team <team@example.test>\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("workflows/w.yaml"),
        "workflow: w\ntrigger: { event: form.submitted }\nsteps:\n  - id: t\n    tag: [x]\n",
    )
    .unwrap();
    std::fs::write(dir.join("scoring.yaml"), scoring).unwrap();
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 0, 0, 0).unwrap()
}

fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// One event line for `nurture events send`.
fn line(id: &str, kind: &str, email: &str, at: DateTime<Utc>) -> String {
    format!(
        "{{\"id\":\"{id}\",\"type\":\"{kind}\",\"email\":\"{email}\",\"at\":\"{}\",\"data\":{{}}}}\n",
        ts(at)
    )
}

fn send(dir: &Path, events: &str) {
    std::fs::write(dir.join("e.jsonl"), events).unwrap();
    let o = nurture_in(dir, &["events", "send", "e.jsonl", "--dir", "."]);
    assert!(o.status.success(), "{}", text(&o));
    let n = events.lines().count();
    assert!(text(&o).contains(&format!("{n} accepted")), "{}", text(&o));
}

fn store_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("nurture.db").display())
}

#[test]
fn decayed_and_expired_points_read_from_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    project(
        dir,
        "rules:\n  - { event: page.visited, points: 10, decay: { half_life: 30d } }\n  - { event: demo.requested, points: 10, expires: 90d }\n  - { event: form.submitted, points: 7 }\ngrades: { hot: 100 }\n",
    );
    let t = t0();
    let events = line("d1", "page.visited", "decay@example.test", t)
        + &line("x1", "demo.requested", "expire@example.test", t)
        + &line("f1", "form.submitted", "fixed@example.test", t);
    send(dir, &events);
    let url = store_url(dir);
    let rt = crate::util::rt();
    rt.block_on(async {
        let store = nurture_server::open_store(&url).await.unwrap();
        // `events send` queues; the engine applies the queue (as `nurture run` would).
        let project = nurture_core::project::load(dir).project.unwrap();
        let scoring = project.scoring.clone();
        let engine = std::sync::Arc::new(nurture_engine::Engine::new(
            std::sync::Arc::new(project),
            store.clone(),
        ));
        engine.tick(Utc::now()).await.unwrap();
        let decay = store
            .contact_by_email("decay@example.test")
            .await
            .unwrap()
            .unwrap();
        // 10 points, half-life 30 days: 10 at once, 5 after 30 days, 2.5 after 60.
        assert_eq!(decay.score_at(t), 10.0);
        assert_eq!(decay.score_at(t + Duration::days(30)), 5.0);
        assert_eq!(decay.score_at(t + Duration::days(60)), 2.5);
        // What conditions read (`contact.score`, `contact.grade`) is the aged score.
        let view = nurture_engine::eval::contact_view_at(&decay, &scoring, t + Duration::days(30));
        assert_eq!(view["score"], serde_json::json!(5), "{view}");
        let expire = store
            .contact_by_email("expire@example.test")
            .await
            .unwrap()
            .unwrap();
        // 10 points expiring after 90 days: 10 until then, 0 from then on.
        assert_eq!(expire.score_at(t + Duration::days(89)), 10.0);
        assert_eq!(expire.score_at(t + Duration::days(90)), 0.0);
        let view = nurture_engine::eval::contact_view_at(&expire, &scoring, t + Duration::days(90));
        assert_eq!(view["score"], serde_json::json!(0), "{view}");
        // Points without aging stay whole.
        let fixed = store
            .contact_by_email("fixed@example.test")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(fixed.score_at(t + Duration::days(365)), 7.0);
    });
}

/// `nurture validate` on a project whose scoring.yaml is `scoring`: its exit code and output.
fn validate(scoring: &str) -> (Option<i32>, String) {
    let tmp = tempfile::tempdir().unwrap();
    project(tmp.path(), scoring);
    let o = nurture_in(tmp.path(), &["validate", "."]);
    (o.status.code(), text(&o))
}

#[test]
fn validate_points_at_a_bad_decay() {
    let (code, out) = validate(
        "rules:\n  - { event: page.visited, points: 3 }\n  - event: email.opened\n    points: 10\n    decay: { half_life: -3 }\n",
    );
    assert_eq!(code, Some(1), "{out}");
    // Line 5, inside the decay mapping.
    assert!(out.contains("scoring.yaml:5:"), "{out}");
    let (code, out) = validate(
        "rules:\n  - profile: 'has(contact.title)'\n    points: 15\n    decay: { half_life: 30d }\n  - profile: 'has(contact.country)'\n    points: 8\n    expires: 90d\n",
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("scoring.yaml:4:12"), "{out}");
    assert!(out.contains("scoring.yaml:7:14"), "{out}");
    assert!(out.contains("`decay` goes with `event` rules"), "{out}");
    assert!(out.contains("`expires` goes with `event` rules"), "{out}");
    // The same rules without the aging on profile rules are fine.
    let (code, out) = validate(
        "rules:\n  - profile: 'has(contact.title)'\n    points: 15\n  - { event: email.opened, points: 10, decay: { half_life: 30d }, expires: 90d }\n",
    );
    assert_eq!(code, Some(0), "{out}");
}

const CURRENT: &str = "rules:\n  - { event: page.visited, points: 10 }\n  - { event: demo.requested, points: 40 }\ngrades: { hot: 50, warm: 20 }\n";
const NEW: &str = "rules:\n  - { event: page.visited, points: 10, expires: 30d }\n  - { event: demo.requested, points: 60 }\ngrades: { hot: 50, warm: 20 }\n";

/// 20 contacts c00..c19, by `i % 4` (days after T0 = 2025-03-01):
/// - A (0): page.visited on days 0, 10, 20, 30, 40 (5 events).
///   Current: 10 each, 50 on day 40: MQL at T0+40d.
///   New: visits expire after 30 days (age >= 30d counts 0), so at day 40 only the
///   visits of days 20, 30, 40 count (day 10's is exactly 30 days old): 30, and at
///   no event more than 30: never MQL. → no_longer_mql.
/// - B (1): demo.requested on day 5 (1 event). Current: 40 < 50, never. New: 60 at
///   day 5. → newly_mql at T0+5d.
/// - C (2): demo.requested on day 5, page.visited on day 20 (2 events). Current: 40,
///   then 50 on day 20: T0+20d. New: 60 on day 5: T0+5d. → earlier.
/// - D (3): page.visited on day 1 (1 event): 10 under both, no row.
///
/// Events sent: 5×5 + 5×1 + 5×2 + 5×1 = 45, plus the `contact.created` the store keeps
/// for each new contact: 65 read.
fn history() -> String {
    let t = t0();
    let mut out = String::new();
    for i in 0..20 {
        let email = format!("c{i:02}@example.test");
        let days: Vec<(&str, i64)> = match i % 4 {
            0 => (0..5).map(|k| ("page.visited", k * 10)).collect(),
            1 => vec![("demo.requested", 5)],
            2 => vec![("demo.requested", 5), ("page.visited", 20)],
            _ => vec![("page.visited", 1)],
        };
        for (n, (kind, d)) in days.into_iter().enumerate() {
            out += &line(&format!("e{i:02}-{n}"), kind, &email, t + Duration::days(d));
        }
    }
    out
}

#[test]
fn backtest_finds_the_mql_changes_computed_by_hand() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    project(dir, CURRENT);
    std::fs::write(dir.join("NEW.yaml"), NEW).unwrap();
    send(dir, &history());
    // Contact ids by email.
    let url = store_url(dir);
    let ids: Vec<String> = crate::util::rt().block_on(async {
        let store = nurture_server::open_store(&url).await.unwrap();
        let mut ids = Vec::new();
        for i in 0..20 {
            let c = store
                .contact_by_email(&format!("c{i:02}@example.test"))
                .await
                .unwrap()
                .unwrap();
            ids.push(c.id);
        }
        ids
    });
    let args = |format: &str| {
        let v = [
            "scoring",
            "backtest",
            ".",
            "--scoring",
            "NEW.yaml",
            "--from",
            "2025-03-01",
            "--to",
            "2025-06-30",
            "--format",
        ];
        let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
        v.push(format.to_string());
        v
    };
    let run = |format: &str| {
        let a = args(format);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let o = nurture_in(dir, &a);
        assert!(o.status.success(), "{}", text(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    let json: Value = serde_json::from_str(&run("json")).unwrap();
    assert_eq!(json["contacts"], 20, "{json}");
    assert_eq!(json["events"], 65, "{json}");
    assert_eq!(json["mql_grade"], "hot", "{json}");
    assert_eq!(json["mql_score"], 50, "{json}");
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 15, "{json}");
    let day = |d: i64| ts(t0() + Duration::days(d));
    let mut expected = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let (change, current, new) = match i % 4 {
            0 => ("no_longer_mql", Some(day(40)), None),
            1 => ("newly_mql", None, Some(day(5))),
            2 => ("earlier", Some(day(20)), Some(day(5))),
            _ => continue,
        };
        expected.push((id.clone(), change, current, new));
    }
    expected.sort();
    let got: Vec<(String, &str, Option<String>, Option<String>)> = rows
        .iter()
        .map(|r| {
            let at = |v: &Value| v["mql_at"].as_str().map(|s| ts(s.parse().unwrap()));
            (
                r["contact"].as_str().unwrap().to_string(),
                r["change"].as_str().unwrap(),
                at(&r["current"]),
                at(&r["new"]),
            )
        })
        .collect();
    assert_eq!(got, expected);
    // Scores at `to` (June 30): A 50 current / 0 new (every visit expired), B 40 / 60,
    // C 50 / 60 (its March 21 visit expired April 20).
    for r in rows {
        let i = ids
            .iter()
            .position(|id| id == r["contact"].as_str().unwrap())
            .unwrap();
        let want = [(50.0, 0.0), (40.0, 60.0), (50.0, 60.0)][i % 4];
        let got = (
            r["current"]["score"].as_f64().unwrap(),
            r["new"]["score"].as_f64().unwrap(),
        );
        assert_eq!(got, want, "{r}");
    }

    // CSV: a header and the same 15 rows.
    let csv = run("csv");
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("contact,current_mql_at,new_mql_at,change,current_score,new_score")
    );
    let mut csv_rows: Vec<(String, String, Option<String>, Option<String>)> = lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 6, "{l}");
            let at = |s: &str| (!s.is_empty()).then(|| ts(s.parse().unwrap()));
            (f[0].to_string(), f[3].to_string(), at(f[1]), at(f[2]))
        })
        .collect();
    csv_rows.sort();
    let expected: Vec<(String, String, Option<String>, Option<String>)> = expected
        .into_iter()
        .map(|(a, b, c, d)| (a, b.to_string(), c, d))
        .collect();
    assert_eq!(csv_rows, expected);

    // Without --scoring the rules are compared with themselves: no change anywhere.
    let o = nurture_in(
        dir,
        &[
            "scoring",
            "backtest",
            ".",
            "--from",
            "2025-03-01",
            "--to",
            "2025-06-30",
            "--format",
            "json",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let same: Value = serde_json::from_slice(&o.stdout).unwrap();
    let rows = same["rows"].as_array().unwrap();
    // Under the current rules A (day 40) and C (day 20) are MQLs: 10 rows, all `same`.
    assert_eq!(rows.len(), 10, "{same}");
    assert!(rows.iter().all(|r| r["change"] == "same"), "{same}");
}

#[test]
fn backtest_refuses_bad_new_rules_and_rules_without_grades() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    project(dir, CURRENT);
    let args = [
        "scoring",
        "backtest",
        ".",
        "--scoring",
        "NEW.yaml",
        "--from",
        "2025-03-01",
        "--to",
        "2025-06-30",
    ];
    // A NEW.yaml that does not validate: refused with its diagnostics, nothing printed.
    std::fs::write(
        dir.join("NEW.yaml"),
        "rules:\n  - { event: page.visited, points: 10, decay: { half_life: -3 } }\ngrades: { hot: 50 }\n",
    )
    .unwrap();
    let o = nurture_in(dir, &args);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(o.stdout.is_empty(), "{}", text(&o));
    assert!(text(&o).contains("NEW.yaml"), "{}", text(&o));
    // New rules without grades have no MQL to compare.
    std::fs::write(
        dir.join("NEW.yaml"),
        "rules:\n  - { event: page.visited, points: 10 }\n",
    )
    .unwrap();
    let o = nurture_in(dir, &args);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("no `grades`"), "{}", text(&o));
}

#[test]
fn contacts_show_prints_the_score_as_worth_now() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    project(
        dir,
        "rules:\n  - { event: page.visited, points: 10, decay: { half_life: 30d } }\ngrades: { hot: 100 }\n",
    );
    // A visit 30 days ago is worth 5 now (a few seconds later: 5.00001, shown as 5).
    let at = Utc::now() - Duration::days(30);
    send(dir, &line("v1", "page.visited", "now@example.test", at));
    let url = store_url(dir);
    crate::util::rt().block_on(async {
        let store = nurture_server::open_store(&url).await.unwrap();
        let project = nurture_core::project::load(dir).project.unwrap();
        let engine = std::sync::Arc::new(nurture_engine::Engine::new(
            std::sync::Arc::new(project),
            store.clone(),
        ));
        engine.tick(Utc::now()).await.unwrap();
    });
    let o = nurture_in(dir, &["contacts", "show", "now@example.test", "--dir", "."]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("score      5\n"), "{}", text(&o));
}
