//! What the engine does when a contact changes (issue 17, items 4 to 6): consent set by a
//! step persists and counts, `exit_if` and goals end waiting runs at once, profile scoring
//! rules count while they hold. Each runs on SQLite and on Postgres.

use std::sync::Arc;

use chrono::{Duration, TimeZone, Utc};
use serde_json::{json, Value};

use crate::util::rt;
use nurture_engine::input::IncomingEvent;
use nurture_engine::{Effect, Engine};
use nurture_store::{Consent, Run, RunStatus, Store};

type Ts = chrono::DateTime<Utc>;

fn t0() -> Ts {
    Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap()
}

/// A project in a temporary folder: workflow files, and other files by path.
fn project(files: &[(&str, &str)]) -> (tempfile::TempDir, Arc<nurture_core::project::Project>) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("workflows")).unwrap();
    std::fs::create_dir_all(root.join("templates")).unwrap();
    std::fs::write(
        root.join("nurture.toml"),
        "[sender]\nfrom = \"Team <team@example.test>\"\n",
    )
    .unwrap();
    for (path, text) in files {
        std::fs::write(root.join(path), text).unwrap();
    }
    let loaded = nurture_core::project::load(root);
    let rendered = loaded.render();
    let project = loaded.project.unwrap_or_else(|| panic!("{rendered}"));
    (dir, Arc::new(project))
}

fn template(subject: &str) -> String {
    format!(
        "---\nsubject: \"{subject}\"\n---\n<p>Hi {{{{ contact.first_name | default(\"there\") }}}}</p>\n<p><a href=\"{{{{ unsubscribe_url }}}}\">Unsubscribe</a></p>\n"
    )
}

/// Every store, each on a fresh database, with its URL.
async fn stores() -> Vec<(&'static str, String, Arc<dyn Store>, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let mut v = vec![(
        "sqlite",
        url.clone(),
        nurture_server::open_store(&url).await.unwrap(),
        dir,
    )];
    if let Some(pg) = tokio::task::spawn_blocking(crate::util::fresh_postgres)
        .await
        .unwrap()
    {
        let store = nurture_server::open_store(&pg)
            .await
            .expect("open postgres store");
        v.push(("postgres", pg, store, tempfile::tempdir().unwrap()));
    }
    v
}

fn event(kind: &str, contact: Option<&str>, data: Value) -> IncomingEvent {
    IncomingEvent {
        index: 0,
        id: None,
        kind: kind.into(),
        contact: contact.map(str::to_string),
        email: match contact {
            None => Some("ana@example.com".into()),
            Some(_) => None,
        },
        at: None,
        data,
    }
}

/// Ingests `e` at `at` and runs everything due then; returns the contact id and effects.
async fn send(engine: &Arc<Engine>, e: IncomingEvent, at: Ts) -> (String, Vec<Effect>) {
    let out = engine.ingest(&[e], at).await.unwrap();
    let contact = out[0].contact.clone().expect("event accepted");
    (contact, engine.tick(at).await.unwrap())
}

async fn run_of(store: &Arc<dyn Store>, contact: &str, workflow: &str) -> Run {
    let runs = store.runs_of_contact(contact).await.unwrap();
    runs.into_iter()
        .filter(|r| r.workflow == workflow)
        .max_by_key(|r| r.started_at)
        .unwrap_or_else(|| panic!("no run of {workflow}"))
}

fn has_effect(effects: &[Effect], workflow: &str, effect: &str) -> bool {
    effects
        .iter()
        .any(|e| e.workflow.as_deref() == Some(workflow) && e.effect == effect)
}

/// The journal entries of `contact` with no run (contact-level scoring), in order, read
/// straight from the store's table (nothing in the engine reads them by contact).
async fn contact_journal(name: &str, url: &str, contact: &str) -> Vec<(String, Value)> {
    use sqlx::{Connection, Row};
    let rows: Vec<(String, Vec<u8>)> = match name {
        "sqlite" => {
            let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::query(
                "SELECT kind, data FROM journal WHERE contact = ? AND run_id IS NULL ORDER BY id",
            )
            .bind(contact)
            .fetch_all(&mut c)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
        }
        _ => {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query(
                "SELECT kind, data FROM nurture.journal \
                 WHERE contact = $1 AND run_id IS NULL ORDER BY id",
            )
            .bind(contact)
            .fetch_all(&mut c)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
        }
    };
    let mut out = Vec::new();
    for (kind, data) in rows {
        let data = nurture_store::encoding::decode(&data).unwrap();
        match (kind.as_str(), data) {
            (nurture_store::PACKED, Value::Array(items)) => {
                for item in items {
                    out.push((
                        item["kind"].as_str().unwrap().to_string(),
                        item["data"].clone(),
                    ));
                }
            }
            (_, data) => out.push((kind, data)),
        }
    }
    out
}

const DOUBLE_OPT_IN: &str = r#"workflow: double-opt-in
trigger: { event: signup.requested }
steps:
  - id: ask
    send_email: confirm
  - id: confirmed
    wait_for: { event: subscription.confirmed, timeout: 7d }
    on_timeout: end
  - id: opt-in
    set: { consent: opted_in }
  - id: check
    branch:
      - if: contact.consent == "opted_in"
        next: mark
      - else: end
  - id: mark
    tag: [confirmed]
"#;

const WELCOME: &str = r#"workflow: welcome
trigger: { segment: opted-in }
consent: opted_in
steps:
  - id: hello
    send_email: welcome
"#;

const OPT_OUT: &str = r#"workflow: opt-out
trigger: { event: preferences.saved }
steps:
  - id: out
    set: { consent: opted_out }
  - id: news
    send_email: welcome
"#;

/// A double opt-in: the confirmation email goes to a contact of unknown consent; the
/// confirm event resumes the run, whose `set: { consent: opted_in }` is stored on the
/// contact (not as a field the real consent hides), journaled with its cause, seen by
/// the next step's branch, by the segment of opted-in contacts and by the `consent:
/// opted_in` workflow it triggers, whose email goes out. A later `set: { consent:
/// opted_out }` stops the email of the very next step.
#[test]
fn consent_set_by_a_step_persists_is_journaled_and_lets_the_later_email_go_out() {
    let (_dir, project) = project(&[
        ("workflows/double-opt-in.yaml", DOUBLE_OPT_IN),
        ("workflows/welcome.yaml", WELCOME),
        ("workflows/opt-out.yaml", OPT_OUT),
        (
            "segments.yaml",
            "- id: opted-in\n  if: contact.consent == \"opted_in\"\n",
        ),
        ("templates/confirm.html", &template("Please confirm")),
        ("templates/welcome.html", &template("Welcome")),
    ]);
    rt().block_on(async {
        for (name, _url, store, _d) in stores().await {
            let engine = Arc::new(Engine::new(project.clone(), store.clone()));
            let (ana, fx) = send(&engine, event("signup.requested", None, json!({})), t0()).await;
            assert!(has_effect(&fx, "double-opt-in", "email"), "{name}: {fx:?}");
            assert!(!has_effect(&fx, "welcome", "enter"), "{name}: {fx:?}");

            let t1 = t0() + Duration::hours(1);
            let confirm = event("subscription.confirmed", Some(&ana), json!({}));
            let (_, fx) = send(&engine, confirm, t1).await;
            assert!(
                has_effect(&fx, "double-opt-in", "tag"),
                "{name}: the branch saw it: {fx:?}"
            );
            assert!(has_effect(&fx, "welcome", "enter"), "{name}: {fx:?}");
            assert!(
                has_effect(&fx, "welcome", "email"),
                "{name}: the opted_in workflow's email went out: {fx:?}"
            );
            let queued = store.pending_outbox(t1, 100).await.unwrap();
            assert!(
                queued
                    .iter()
                    .any(|o| o.workflow.as_deref() == Some("welcome") && o.kind == "email"),
                "{name}: {queued:?}"
            );

            let stored = store.contact(&ana).await.unwrap().unwrap();
            assert_eq!(stored.consent, Consent::OptedIn, "{name}");
            assert!(!stored.fields.contains_key("consent"), "{name}: {stored:?}");
            let run = run_of(&store, &ana, "double-opt-in").await;
            let journal = store.journal(&run.id).await.unwrap();
            let change = journal
                .iter()
                .find(|j| j.kind == "consent")
                .unwrap_or_else(|| panic!("{name}: no consent entry: {journal:?}"));
            assert_eq!(
                change.data,
                json!({"from": "unknown", "to": "opted_in",
                       "cause": {"workflow": "double-opt-in", "step": "opt-in", "run": run.id}}),
                "{name}"
            );

            // Opting out in a step: the next step's email is skipped.
            let t2 = t1 + Duration::hours(1);
            let (_, fx) = send(
                &engine,
                event("preferences.saved", Some(&ana), json!({})),
                t2,
            )
            .await;
            let skipped = fx
                .iter()
                .find(|e| e.workflow.as_deref() == Some("opt-out") && e.effect == "email_skipped");
            assert_eq!(
                skipped.map(|e| e.extra["reason"].clone()),
                Some(json!("opted_out")),
                "{name}: {fx:?}"
            );
            assert!(!has_effect(&fx, "opt-out", "email"), "{name}: {fx:?}");
            let stored = store.contact(&ana).await.unwrap().unwrap();
            assert_eq!(stored.consent, Consent::OptedOut, "{name}");
        }
    });
}

const EXITS: &str = r#"workflow: onboarding
trigger: { event: signup.done }
exit_if: contact.lifecycle == "customer"
steps:
  - id: pause
    wait: 7d
  - id: later
    tag: [onboarded]
"#;

const CONVERTS: &str = r#"workflow: trial
trigger: { event: signup.done }
goal: { if: 'contact.lifecycle == "customer"' }
steps:
  - id: pause
    wait_for: { event: trial.used, timeout: 14d }
  - id: later
    tag: [trialled]
"#;

const PURCHASE: &str = r#"workflow: purchase
trigger: { event: order.paid }
steps:
  - id: won
    set: { lifecycle: customer }
"#;

/// A contact who becomes a customer while two runs wait (a `wait` and a `wait_for`):
/// the run with `exit_if: customer` exits and the one whose goal is being a customer
/// converts, at once, not when their waits end; their timers are gone and their journals
/// say what they were waiting for.
#[test]
fn a_waiting_run_ends_at_once_when_the_contact_meets_exit_if_or_the_goal() {
    let (_dir, project) = project(&[
        ("workflows/onboarding.yaml", EXITS),
        ("workflows/trial.yaml", CONVERTS),
        ("workflows/purchase.yaml", PURCHASE),
    ]);
    rt().block_on(async {
        for (name, _url, store, _d) in stores().await {
            let engine = Arc::new(Engine::new(project.clone(), store.clone()));
            let (ana, _) = send(&engine, event("signup.done", None, json!({})), t0()).await;
            for wf in ["onboarding", "trial"] {
                let run = run_of(&store, &ana, wf).await;
                assert_eq!(run.status, RunStatus::Waiting, "{name}: {run:?}");
            }
            assert!(store.next_timer().await.unwrap().is_some(), "{name}");

            let t1 = t0() + Duration::hours(1);
            let (_, fx) = send(&engine, event("order.paid", Some(&ana), json!({})), t1).await;
            let onboarding = run_of(&store, &ana, "onboarding").await;
            assert_eq!(
                (
                    onboarding.status,
                    onboarding.exit_reason.as_deref(),
                    onboarding.ended_at
                ),
                (RunStatus::Exited, Some("exit_if"), Some(t1)),
                "{name}: {fx:?}"
            );
            let trial = run_of(&store, &ana, "trial").await;
            assert_eq!(
                (trial.status, trial.exit_reason.as_deref(), trial.ended_at),
                (RunStatus::Converted, Some("goal"), Some(t1)),
                "{name}: {fx:?}"
            );
            assert_eq!(
                store.next_timer().await.unwrap(),
                None,
                "{name}: timers cleared"
            );
            let later = t0() + Duration::days(30);
            assert!(
                store.due_timers(later, 10).await.unwrap().is_empty(),
                "{name}"
            );

            let journal = store.journal(&onboarding.id).await.unwrap();
            let why = journal
                .iter()
                .find(|j| j.kind == "interrupted")
                .unwrap_or_else(|| panic!("{name}: {journal:?}"));
            assert_eq!(why.data["reason"], "exit_if", "{name}");
            assert_eq!(why.data["step"], "pause", "{name}");
            assert_eq!(why.data["wait"]["kind"], "timer", "{name}");
            let journal = store.journal(&trial.id).await.unwrap();
            let why = journal.iter().find(|j| j.kind == "interrupted").unwrap();
            assert_eq!(why.data["reason"], "goal", "{name}");
            assert_eq!(why.data["wait"]["event"], "trial.used", "{name}");

            // Nothing else happens to them later.
            let fx = engine.tick(later).await.unwrap();
            assert!(fx.iter().all(|e| e.effect != "tag"), "{name}: {fx:?}");
        }
    });
}

/// The same, when the contact changes through a contact update (the path of
/// `POST /v1/contacts` and `nurture contacts import`) rather than an event: the waiting
/// runs end in the commit of the update, with no tick in between.
#[test]
fn a_contact_update_ends_waiting_runs_at_once() {
    let (_dir, project) = project(&[
        ("workflows/onboarding.yaml", EXITS),
        ("workflows/trial.yaml", CONVERTS),
    ]);
    rt().block_on(async {
        for (name, _url, store, _d) in stores().await {
            let engine = Arc::new(Engine::new(project.clone(), store.clone()));
            let (ana, _) = send(&engine, event("signup.done", None, json!({})), t0()).await;
            let t1 = t0() + Duration::hours(1);
            let row = nurture_engine::input::parse_contact(
                1,
                &json!({"id": ana, "lifecycle": "customer"}),
            )
            .unwrap();
            let summary = engine.import_contacts(&[row], t1).await.unwrap();
            assert_eq!(summary.updated, 1, "{name}");
            let onboarding = run_of(&store, &ana, "onboarding").await;
            assert_eq!(
                (onboarding.status, onboarding.exit_reason.as_deref()),
                (RunStatus::Exited, Some("exit_if")),
                "{name}"
            );
            let trial = run_of(&store, &ana, "trial").await;
            assert_eq!(
                (trial.status, trial.exit_reason.as_deref()),
                (RunStatus::Converted, Some("goal")),
                "{name}"
            );
            assert_eq!(
                store.next_timer().await.unwrap(),
                None,
                "{name}: timers cleared"
            );
        }
    });
}

const TITLES: &str = r#"workflow: titles
trigger: { event: title.changed }
reentry: always
steps:
  - id: update
    set: { title: "${event.data.title}" }
"#;

const SCORING: &str = r#"rules:
  - { profile: 'has(contact.title) && contact.title.matches("(?i)\\bVP")', points: 15 }
"#;

/// A VP demoted to intern loses the +15 of the VP profile rule, and gets it again when
/// promoted back; the journal records each change with the rule.
#[test]
fn a_profile_rule_is_taken_back_when_the_contact_stops_matching() {
    let (_dir, project) = project(&[("workflows/titles.yaml", TITLES), ("scoring.yaml", SCORING)]);
    rt().block_on(async {
        for (name, url, store, _d) in stores().await {
            let engine = Arc::new(Engine::new(project.clone(), store.clone()));
            let title = |t: &str| json!({"title": t});
            let (ana, _) = send(&engine, event("title.changed", None, title("VP Sales")), t0()).await;
            let score = |store: Arc<dyn Store>, id: String| async move {
                store.contact(&id).await.unwrap().unwrap().score
            };
            assert_eq!(score(store.clone(), ana.clone()).await, 15, "{name}");

            let t1 = t0() + Duration::hours(1);
            send(&engine, event("title.changed", Some(&ana), title("Intern")), t1).await;
            assert_eq!(score(store.clone(), ana.clone()).await, 0, "{name}: taken back");

            let t2 = t1 + Duration::hours(1);
            send(&engine, event("title.changed", Some(&ana), title("VP Marketing")), t2).await;
            assert_eq!(score(store.clone(), ana.clone()).await, 15, "{name}: given again");

            let rule = r#"has(contact.title) && contact.title.matches("(?i)\\bVP")"#;
            let scores: Vec<Value> = contact_journal(name, &url, &ana)
                .await
                .into_iter()
                .filter(|(kind, d)| kind == "effect" && d["effect"] == "score")
                .map(|(_, d)| d)
                .collect();
            assert_eq!(
                scores,
                [
                    json!({"effect": "score", "delta": 15, "score": 15, "reason": "profile", "rule": rule}),
                    json!({"effect": "score", "delta": -15, "score": 0, "reason": "profile", "rule": rule, "taken_back": true}),
                    json!({"effect": "score", "delta": 15, "score": 15, "reason": "profile", "rule": rule}),
                ],
                "{name}"
            );
        }
    });
}

/// `nurture validate` names a consent that does not exist and a `set:` of a key the
/// engine computes, and a goal with neither `event` nor `if`.
#[test]
fn validate_rejects_unknown_consent_computed_keys_and_empty_goals() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("workflows")).unwrap();
    std::fs::write(
        dir.path().join("workflows/w.yaml"),
        "workflow: w\ntrigger: { event: go.now }\ngoal: {}\nsteps:\n  - id: s\n    set: { consent: opted-in, score: 5 }\n",
    )
    .unwrap();
    let loaded = nurture_core::project::load(dir.path());
    let text = loaded.render();
    assert!(loaded.project.is_none(), "{text}");
    assert!(text.contains("unknown consent `opted-in`"), "{text}");
    assert!(text.contains("did you mean `opted_in`?"), "{text}");
    assert!(text.contains("`score` cannot be set"), "{text}");
    assert!(
        text.contains("a goal needs `event`, `if`, or both"),
        "{text}"
    );
}
