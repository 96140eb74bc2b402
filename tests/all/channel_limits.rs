//! Sends to a person on any channel obey quiet hours, consent and the frequency cap; the
//! cap and the rate limit hold in the store, across workers; `nurture simulate` applies
//! the cap (issue 17, items 8 and 9).

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use nurture_channels::deliver::Deliverer;
use nurture_engine::{Effect, Engine};
use nurture_store::{OutboxEntry, Store, UnitOfWork};

use crate::util::{fresh_postgres, repo};

fn time(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// Writes a project: `nurture.toml`, workflows, a template `hello` and the first-party SMS
/// plugin's manifest (which declares `channel = "sms"`).
fn write_project(dir: &Path, toml: &str, workflows: &[(&str, &str)]) {
    std::fs::create_dir_all(dir.join("workflows")).unwrap();
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::create_dir_all(dir.join("plugins/sms")).unwrap();
    std::fs::write(
        dir.join("nurture.toml"),
        format!("[sender]\nfrom = \"Acme <hello@acme.test>\"\n{toml}"),
    )
    .unwrap();
    for (name, text) in workflows {
        std::fs::write(dir.join("workflows").join(name), text).unwrap();
    }
    std::fs::write(
        dir.join("templates/hello.html"),
        "---\nsubject: \"Hello\"\n---\n<html><body><p>Hi</p><a href=\"{{ unsubscribe_url }}\">unsubscribe</a></body></html>\n",
    )
    .unwrap();
    std::fs::copy(
        repo().join("plugins/sms/plugin.toml"),
        dir.join("plugins/sms/plugin.toml"),
    )
    .unwrap();
}

fn load(dir: &Path) -> Arc<nurture_core::project::Project> {
    let loaded = nurture_core::project::load(dir);
    assert_eq!(loaded.errors(), 0, "{}", loaded.render());
    Arc::new(loaded.project.unwrap())
}

/// The stores under test: SQLite, and Postgres when the suite has it.
async fn stores(dir: &Path) -> Vec<(&'static str, Arc<dyn Store>)> {
    let mut out = vec![(
        "sqlite",
        nurture_server::open_store(&format!("sqlite://{}", dir.join("t.db").display()))
            .await
            .unwrap(),
    )];
    if let Some(url) = tokio::task::spawn_blocking(fresh_postgres).await.unwrap() {
        out.push(("postgres", nurture_server::open_store(&url).await.unwrap()));
    }
    out
}

fn rows(contacts: &[Value]) -> Vec<nurture_engine::input::ContactRow> {
    contacts
        .iter()
        .enumerate()
        .map(|(i, c)| nurture_engine::input::parse_contact(i + 1, c).unwrap())
        .collect()
}

async fn go(engine: &Arc<Engine>, contact: &str, at: DateTime<Utc>) -> Vec<Effect> {
    let e = nurture_engine::input::parse_event(1, &json!({"type": "test.go", "contact": contact}))
        .unwrap();
    engine.ingest(&[e], at).await.unwrap();
    engine.tick(at).await.unwrap()
}

/// `(contact, effect, extra)` of each effect.
fn summary(effects: &[Effect]) -> Vec<(String, String, Value)> {
    effects
        .iter()
        .filter(|e| e.workflow.is_some())
        .map(|e| {
            let mut extra = e.extra.clone();
            extra.shift_remove("key");
            (
                e.contact.clone(),
                e.effect.to_string(),
                Value::Object(extra),
            )
        })
        .collect()
}

const TEXTS: &str = r#"
workflow: texts
timezone: UTC
quiet_hours: { from: "21:00", to: "08:00", days: [mon..fri] }
trigger: { event: test.go }
steps:
  - id: text
    plugin: sms/send
    with: { to: "${contact.phone}", body: "Hi" }
"#;

/// An SMS step (a plugin whose manifest declares `channel = "sms"`) waits out weekday
/// quiet hours like an email, is sent only with `consent_sms: opted_in`, and is not sent
/// after an `sms.unsubscribed` event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sms_step_obeys_weekday_quiet_hours_and_sms_consent() {
    let tmp = tempfile::tempdir().unwrap();
    write_project(tmp.path(), "", &[("texts.yaml", TEXTS)]);
    let project = load(tmp.path());
    assert_eq!(project.plugins["sms"].channel.as_deref(), Some("sms"));
    for (name, store) in stores(tmp.path()).await {
        let engine = Arc::new(Engine::new(project.clone(), store.clone()));
        // Friday 2026-03-06, 22:00 UTC: inside Friday's quiet period (until Saturday 08:00).
        let fri = time("2026-03-06T22:00:00Z");
        let contacts = [
            json!({"id": "yes", "phone": "+1555", "consent_sms": "opted_in"}),
            json!({"id": "unknown", "phone": "+1556"}),
            json!({"id": "no", "phone": "+1557", "consent_sms": "opted_out"}),
            json!({"id": "stop", "phone": "+1558", "consent_sms": "opted_in"}),
            json!({"id": "sat", "phone": "+1559", "consent_sms": "opted_in"}),
        ];
        engine.import_contacts(&rows(&contacts), fri).await.unwrap();
        let e = nurture_engine::input::parse_event(
            1,
            &json!({"type": "sms.unsubscribed", "contact": "stop"}),
        )
        .unwrap();
        engine.ingest(&[e], fri).await.unwrap();
        engine.tick(fri).await.unwrap();
        let mut effects = Vec::new();
        for c in ["yes", "unknown", "no", "stop"] {
            effects.extend(go(&engine, c, fri).await);
        }
        let wait =
            json!({"until": "2026-03-07T08:00:00Z", "reason": "quiet_hours", "timezone": "UTC"});
        let held: Vec<_> = summary(&effects)
            .into_iter()
            .filter(|e| ["wait", "plugin", "plugin_skipped"].contains(&e.1.as_str()))
            .collect();
        assert_eq!(
            held,
            ["yes", "unknown", "no", "stop"]
                .iter()
                .map(|c| (c.to_string(), "wait".to_string(), wait.clone()))
                .collect::<Vec<_>>(),
            "{name}: quiet hours hold every text"
        );
        // Saturday 08:00: quiet hours over; only the contact who opted in gets the text.
        let sat = time("2026-03-07T08:00:00Z");
        let effects = summary(&engine.tick(sat).await.unwrap());
        let texts: Vec<_> = effects.iter().filter(|e| e.1 == "plugin").collect();
        assert_eq!(texts.len(), 1, "{name}: {effects:#?}");
        assert_eq!(texts[0].0, "yes");
        for (c, reason) in [
            ("unknown", "no_consent"),
            ("no", "opted_out"),
            ("stop", "opted_out"),
        ] {
            assert!(
                effects.contains(&(
                    c.to_string(),
                    "plugin_skipped".to_string(),
                    json!({"plugin": "sms/send", "channel": "sms", "reason": reason})
                )),
                "{name}: {c}: {effects:#?}"
            );
        }
        // Saturday 22:00: quiet hours are for weekdays only; the text goes at once.
        let sat_night = time("2026-03-07T22:00:00Z");
        let effects = summary(&go(&engine, "sat", sat_night).await);
        assert!(
            effects.iter().any(|e| e.1 == "plugin" && e.0 == "sat"),
            "{name}: {effects:#?}"
        );
        // The outbox entry carries its channel, for the cap and the rate limit.
        let deliveries = Deliverer::new(store.clone())
            .deliver_due(sat_night, 100)
            .await
            .unwrap();
        assert_eq!(deliveries, 2, "{name}: yes's and sat's texts");
    }
}

/// `days` with a bad day name, and a plugin manifest with a bad channel, are reported
/// with their file, line, column and a fix.
#[test]
fn bad_quiet_days_and_bad_plugin_channel_are_diagnosed() {
    let tmp = tempfile::tempdir().unwrap();
    write_project(
        tmp.path(),
        "",
        &[("texts.yaml", &TEXTS.replace("[mon..fri]", "[mon..fry]"))],
    );
    std::fs::write(
        tmp.path().join("plugins/sms/plugin.toml"),
        std::fs::read_to_string(repo().join("plugins/sms/plugin.toml"))
            .unwrap()
            .replace("channel = \"sms\"", "channel = \"Text Messages\""),
    )
    .unwrap();
    let loaded = nurture_core::project::load(tmp.path());
    let d: Vec<_> = loaded.diagnostics.iter().map(|d| d.to_json()).collect();
    let day = d
        .iter()
        .find(|d| d["message"].as_str().unwrap().contains("unknown day `fry`"))
        .unwrap_or_else(|| panic!("{d:#?}"));
    assert_eq!(day["code"], "N0004");
    assert!(day["file"].as_str().unwrap().ends_with("texts.yaml"));
    assert_eq!(
        (day["line"].as_u64(), day["column"].as_u64()),
        (Some(4), Some(51)),
        "{day}"
    );
    assert!(day["hint"].as_str().unwrap().contains("mon..fri"), "{day}");
    let channel = d
        .iter()
        .find(|d| {
            d["message"]
                .as_str()
                .unwrap()
                .contains("invalid plugin channel")
        })
        .unwrap_or_else(|| panic!("{d:#?}"));
    assert!(channel["file"].as_str().unwrap().ends_with("plugin.toml"));
    assert!(
        channel["hint"].as_str().unwrap().contains("lowercase"),
        "{channel}"
    );
    let text = std::fs::read_to_string(tmp.path().join("plugins/sms/plugin.toml")).unwrap();
    let line = text.lines().position(|l| l.starts_with("channel")).unwrap() + 1;
    assert_eq!(
        (channel["line"].as_u64(), channel["column"].as_u64()),
        (Some(line as u64), Some(11))
    );
}

/// `n` email entries of `contact`, due at `at`, queued through a commit.
async fn queue_emails(store: &Arc<dyn Store>, contacts: &[&str], n: usize, at: DateTime<Utc>) {
    let mut uow = UnitOfWork::default();
    for c in contacts {
        for i in 0..n {
            uow.outbox.push(OutboxEntry {
                key: format!("{c}-{i}"),
                run_id: None,
                contact: c.to_string(),
                workflow: Some("w".into()),
                step: Some(format!("s{i}")),
                kind: "email".into(),
                payload: json!({"to": format!("{c}@example.com"), "template": "hello", "contact": {"id": c}}),
                created_at: at,
                due_at: at,
                attempts: 0,
            });
        }
    }
    store.commit(&uow).await.unwrap();
}

/// Two deliverers (two workers' channels and deliverers) sharing a store, started at once.
async fn two_deliverers(
    project: &nurture_core::project::Project,
    store: &Arc<dyn Store>,
    at: DateTime<Utc>,
    limit: i64,
) -> usize {
    let signer = nurture_channels::email::Signer::new(b"test-tracking-key");
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let channel = nurture_channels::email::EmailChannel::for_project(
            project,
            store.clone(),
            signer.clone(),
            "http://127.0.0.1:1",
        )
        .unwrap();
        let d = Deliverer::new(store.clone()).with_email(Arc::new(channel));
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            d.deliver_due(at, limit).await.unwrap()
        }));
    }
    let mut n = 0;
    for t in tasks {
        n += t.await.unwrap();
    }
    n
}

async fn delivered(store: &Arc<dyn Store>, contact: &str) -> usize {
    store
        .deliveries()
        .await
        .unwrap()
        .iter()
        .filter(|d| d.contact == contact)
        .count()
}

/// Two deliverers at once never send one contact more than the cap: the claim counts
/// and records the sends in one transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_deliverers_never_exceed_the_cap_for_one_contact() {
    let tmp = tempfile::tempdir().unwrap();
    write_project(
        tmp.path(),
        "[email]\ncap = { max = 2, per = \"1h\" }\n",
        &[],
    );
    let project = load(tmp.path());
    let t0 = time("2026-03-02T09:00:00Z");
    for (name, store) in stores(tmp.path()).await {
        queue_emails(&store, &["c1"], 6, t0).await;
        // Each worker claims 3 entries of the contact at once.
        two_deliverers(&project, &store, t0, 3).await;
        assert_eq!(delivered(&store, "c1").await, 2, "{name}");
        // Still capped a minute later; an hour after the first sends, two more go.
        two_deliverers(&project, &store, t0 + chrono::Duration::minutes(1), 3).await;
        assert_eq!(delivered(&store, "c1").await, 2, "{name}");
        let later = t0 + chrono::Duration::minutes(61);
        two_deliverers(&project, &store, later, 3).await;
        assert_eq!(delivered(&store, "c1").await, 4, "{name}");
        let mut states = Vec::new();
        for i in 0..6 {
            states.push(
                store
                    .outbox_state(&format!("c1-{i}"))
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        states.sort();
        assert_eq!(
            states,
            [
                "delivered",
                "delivered",
                "delivered",
                "delivered",
                "pending",
                "pending"
            ],
            "{name}: deferred, never dropped"
        );
    }
}

/// The email rate limit holds across workers: two deliverers together send at most the
/// rate in one second; the rest is deferred to the next second, not dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_deliverers_never_exceed_the_rate_together() {
    let tmp = tempfile::tempdir().unwrap();
    write_project(tmp.path(), "[email]\nrate_per_sec = 3\n", &[]);
    let project = load(tmp.path());
    let t0 = time("2026-03-02T09:00:00Z");
    let contacts: Vec<String> = (0..8).map(|i| format!("r{i}")).collect();
    let contacts: Vec<&str> = contacts.iter().map(String::as_str).collect();
    for (name, store) in stores(tmp.path()).await {
        queue_emails(&store, &contacts, 1, t0).await;
        two_deliverers(&project, &store, t0, 4).await;
        assert_eq!(
            store.deliveries().await.unwrap().len(),
            3,
            "{name}: 3 per second"
        );
        two_deliverers(
            &project,
            &store,
            t0 + chrono::Duration::milliseconds(500),
            4,
        )
        .await;
        assert_eq!(
            store.deliveries().await.unwrap().len(),
            3,
            "{name}: same second"
        );
        two_deliverers(&project, &store, t0 + chrono::Duration::seconds(1), 4).await;
        assert_eq!(
            store.deliveries().await.unwrap().len(),
            6,
            "{name}: next second"
        );
        two_deliverers(&project, &store, t0 + chrono::Duration::seconds(2), 4).await;
        assert_eq!(
            store.deliveries().await.unwrap().len(),
            8,
            "{name}: all sent"
        );
    }
}

/// `nurture simulate` applies the frequency cap as a live run does: the third email in
/// two hours is deferred until the cap allows it, then sent.
#[test]
fn simulate_applies_the_cap() {
    let tmp = tempfile::tempdir().unwrap();
    let wf = r#"
workflow: drip
trigger: { event: test.go }
steps:
  - id: one
    send_email: hello
  - id: pause
    wait: 1h
  - id: two
    send_email: hello
  - id: pause2
    wait: 1h
  - id: three
    send_email: hello
"#;
    write_project(
        tmp.path(),
        "[email]\ncap = { max = 2, per = \"1d\" }\n",
        &[("drip.yaml", wf)],
    );
    let project = load(tmp.path());
    let contacts = rows(&[json!({"id": "ana", "email": "ana@example.com"})]);
    let events = vec![nurture_engine::input::parse_event(
        1,
        &json!({"type": "test.go", "contact": "ana", "at": "2026-03-02T09:00:00Z"}),
    )
    .unwrap()];
    let mut lines = Vec::new();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(nurture_engine::simulate::run(
            project,
            &contacts,
            events,
            None,
            None,
            |e| {
                let v: Value =
                    serde_json::from_str(&nurture_engine::simulate::effect_line(e)).unwrap();
                if ["email", "deferred", "sent"].contains(&v["effect"].as_str().unwrap()) {
                    lines.push(format!(
                        "{} {} {} {}",
                        v["at"].as_str().unwrap(),
                        v["step"].as_str().unwrap_or("-"),
                        v["effect"].as_str().unwrap(),
                        v["until"].as_str().unwrap_or("")
                    ));
                }
            },
        ))
        .unwrap();
    assert_eq!(
        lines,
        [
            "2026-03-02T09:00:00Z one email ",
            "2026-03-02T10:00:00Z two email ",
            "2026-03-02T11:00:00Z three email ",
            "2026-03-02T11:00:00Z three deferred 2026-03-03T09:00:00Z",
            "2026-03-03T09:00:00Z three sent ",
        ]
    );
}
