//! Sends held back on the record (issue 25 item 3): every send held back by quiet hours,
//! the frequency cap, consent, an unsubscribe or a suppression has a journal line naming
//! the rule and its parameters, and `nurture report --held-back` sums them by rule, on
//! SQLite and on Postgres.
//!
//! The scenario (UTC, cap 1 email per 7 days), worked out by hand:
//! - `ana` (opted in) signs up at 22:00: `welcome/first` waits for quiet hours (21:00-08:00)
//!   to end: quiet_hours 1. At 08:00 `first` and `second` are queued; the claim sends
//!   one and the cap defers the other: frequency_cap 1.
//! - `bob` (consent unknown) gets the newsletter, which needs opt-in: consent 1.
//! - `cem` unsubscribed, then signs up at 10:00: both welcome emails are skipped:
//!   unsubscribed 2.
//! - `dan` (opted in) gets the newsletter queued; his address is suppressed before the
//!   claim, which skips it: suppression 1.
//!
//! Total 6.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{json, Value};

use crate::util::rt_multi as rt;
use nurture_engine::input::IncomingEvent;
use nurture_store::Store;

const WELCOME: &str = "\
workflow: welcome
version: 1
quiet_hours: { from: \"21:00\", to: \"08:00\" }
trigger:
  event: signed.up
steps:
  - id: first
    send_email: hello
  - id: second
    send_email: hello
";

const NEWS: &str = "\
workflow: news
version: 1
consent: opted_in
trigger:
  event: news.due
steps:
  - id: issue
    send_email: hello
";

fn project(dir: &Path) -> PathBuf {
    let p = dir.join("held");
    std::fs::create_dir_all(p.join("workflows")).unwrap();
    std::fs::create_dir_all(p.join("templates")).unwrap();
    std::fs::write(
        p.join("nurture.toml"),
        "timezone = \"UTC\"\n[sender]\nfrom = \"Acme <hello@acme.test>\"\n\
         [email]\ncap = { max = 1, per = \"7d\" }\n",
    )
    .unwrap();
    std::fs::write(p.join("workflows/welcome.yaml"), WELCOME).unwrap();
    std::fs::write(p.join("workflows/news.yaml"), NEWS).unwrap();
    std::fs::write(
        p.join("templates/hello.html"),
        "---\nsubject: \"Hello\"\n---\n<p>Hi {{ contact.email }}</p>\n",
    )
    .unwrap();
    p
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 10, 0, 0).unwrap()
}

fn ev(id: &str, contact: &str, kind: &str, at: DateTime<Utc>) -> IncomingEvent {
    IncomingEvent {
        index: 0,
        id: Some(id.into()),
        kind: kind.into(),
        contact: Some(contact.into()),
        email: None,
        at: Some(at),
        data: json!({}),
    }
}

/// The scenario's inputs, at the instants they arrive.
fn inputs() -> Vec<(DateTime<Utc>, IncomingEvent)> {
    let t = t0();
    vec![
        (t, ev("cem-unsub", "cem", "email.unsubscribed", t)),
        (t, ev("cem-signup", "cem", "signed.up", t)),
        (t, ev("bob-news", "bob", "news.due", t)),
        (t, ev("dan-news", "dan", "news.due", t)),
        (
            t + Duration::hours(12),
            ev("ana-signup", "ana", "signed.up", t + Duration::hours(12)),
        ),
    ]
}

fn load(dir: &Path) -> Arc<nurture_core::project::Project> {
    let loaded = nurture_core::project::load(dir);
    assert_eq!(loaded.errors(), 0, "{}", loaded.render());
    Arc::new(loaded.project.unwrap())
}

fn rows() -> Vec<nurture_engine::input::ContactRow> {
    let contacts = [
        json!({"id": "ana", "email": "ana@example.com", "consent": "opted_in"}),
        json!({"id": "bob", "email": "bob@example.com"}),
        json!({"id": "cem", "email": "cem@example.com", "consent": "opted_in"}),
        json!({"id": "dan", "email": "dan@example.com", "consent": "opted_in"}),
    ];
    contacts
        .iter()
        .enumerate()
        .map(|(i, v)| nurture_engine::input::parse_contact(i + 1, v).unwrap())
        .collect()
}

/// Runs the scenario live on the store at `url`: the real engine on a virtual clock, the
/// outbox claimed through the store (which applies the cap and the suppressions).
async fn live(dir: &Path, url: &str) -> Arc<dyn Store> {
    let project = load(dir);
    let start = t0() - Duration::hours(1);
    let (store, engine) = crate::util::deployed(project.clone(), url, start).await;
    store.set_send_limits(nurture_store::limits::SendLimits::for_project(&project));
    engine.import_contacts(&rows(), start).await.unwrap();
    let mut inputs = inputs().into_iter().peekable();
    let mut now = start;
    for _ in 0..100 {
        let due: Vec<IncomingEvent> =
            std::iter::from_fn(|| inputs.next_if(|(at, _)| *at <= now).map(|(_, e)| e)).collect();
        engine.ingest(&due, now).await.unwrap();
        engine.tick(now).await.unwrap();
        if now == t0() {
            // Dan's newsletter is queued; his address is suppressed before the claim.
            let s = store.suppress("dan@example.com", "complaint", now).await;
            assert!(s.unwrap());
        }
        crate::util::deliver_recorded(&*store, now).await;
        let next = [
            inputs.peek().map(|(at, _)| *at),
            store.next_timer().await.unwrap(),
        ]
        .into_iter()
        .flatten()
        .min();
        match next {
            Some(n) => now = n.max(now),
            None => return store,
        }
    }
    panic!("the scenario did not end");
}

/// The journal lines of `contact`'s runs that name a rule: (effect, rule, params).
async fn held_lines(store: &dyn Store, contact: &str) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for run in store.runs_of_contact(contact).await.unwrap() {
        for j in store.journal(&run.id).await.unwrap() {
            if let Some(rule) = j.data["rule"].as_str() {
                let effect = j.data["effect"].as_str().unwrap_or_default().to_string();
                out.push((effect, rule.to_string(), j.data["params"].clone()));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

async fn assert_journaled(store: &dyn Store) {
    let email = |extra: Value| {
        let mut p = json!({"channel": "email"});
        p.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        p
    };
    let quiet = json!({"from": "21:00", "to": "08:00", "timezone": "UTC"});
    let cap = email(json!({"max": 1, "per": "7d"}));
    assert_eq!(
        held_lines(store, "ana").await,
        [
            ("deferred".into(), "frequency_cap".into(), cap),
            ("wait".into(), "quiet_hours".into(), quiet),
        ]
    );
    let consent = email(json!({"required": "opted_in", "state": "unknown"}));
    assert_eq!(
        held_lines(store, "bob").await,
        [("email_skipped".into(), "consent".into(), consent)]
    );
    let unsub = (
        "email_skipped".to_string(),
        "unsubscribed".to_string(),
        email(json!({})),
    );
    assert_eq!(held_lines(store, "cem").await, [unsub.clone(), unsub]);
    let suppressed = email(json!({"reason": "complaint"}));
    assert_eq!(
        held_lines(store, "dan").await,
        [("email_skipped".into(), "suppression".into(), suppressed)]
    );
}

fn report(dir: &Path, url: &str, format: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nurture"))
        .args(["report", "--held-back", "--format", format, "--store", url])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn held_back_sends_name_their_rule_in_the_journal_and_report_sums_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = project(tmp.path());
    let mut urls = vec![format!("sqlite://{}", tmp.path().join("live.db").display())];
    urls.extend(crate::util::fresh_postgres());
    for url in &urls {
        rt().block_on(async {
            let store = live(&dir, url).await;
            assert_journaled(&*store).await;
            if url.starts_with("postgres") {
                // The line of the send the claim skipped is stored encoded as every
                // other (it was written as JSON text by SQL of its own).
                let pool = sqlx::PgPool::connect(url).await.unwrap();
                let plain: Vec<String> = sqlx::query_scalar(
                    "SELECT kind FROM nurture.journal WHERE get_byte(data, 0) <> $1",
                )
                .bind(i32::from(nurture_store::encoding::TAG_ZSTD_V1))
                .fetch_all(&pool)
                .await
                .unwrap();
                assert_eq!(plain, Vec::<String>::new());
            }
        });
        let r: Value = serde_json::from_str(&report(&dir, url, "json")).unwrap();
        let by_rule: Vec<(&str, i64)> = r["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| (x["rule"].as_str().unwrap(), x["held"].as_i64().unwrap()))
            .collect();
        assert_eq!(
            by_rule,
            [
                ("unsubscribed", 2),
                ("consent", 1),
                ("frequency_cap", 1),
                ("quiet_hours", 1),
                ("suppression", 1)
            ],
            "{url}"
        );
        assert_eq!(r["total"], 6, "{url}");
        let cap = r["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["rule"] == "frequency_cap")
            .unwrap();
        assert_eq!(cap["settings"]["email"], json!({"max": 1, "per": "7d"}));
        // Both emails are queued at 08:00; the claim takes one (in key order) and defers
        // the other.
        assert_eq!(cap["steps"][0]["workflow"], "welcome");
        let step = cap["steps"][0]["step"].as_str().unwrap();
        assert!(["first", "second"].contains(&step), "{cap}");
        assert_eq!(cap["steps"][0]["outcome"], "deferred");
        let human = report(&dir, url, "human");
        assert!(human.starts_with("sends held back: 6\n"), "{human}");
        assert!(human.contains("welcome/first"), "{human}");
        let csv = report(&dir, url, "csv");
        assert!(
            csv.contains("\nunsubscribed,welcome,first,email,skipped,unsubscribed,1\n"),
            "{csv}"
        );
    }
}
