//! Outcomes of webhook and plugin steps reach the workflow (issue 17, item 7): a step with
//! `await: true` waits for its delivery's outcome, later steps branch on `outcome.ok`, and
//! `save:` maps the JSON answer into the contact. Real local HTTP servers, real stores
//! (SQLite and Postgres), the real deliverer.

use std::path::Path;
use std::sync::Arc;

use chrono::{Duration, Utc};
use nurture_channels::deliver::Deliverer;
use nurture_channels::egress::{Egress, Settings};
use nurture_engine::input::IncomingEvent;
use nurture_engine::Engine;
use nurture_store::{OutboxOutcome, RunStatus, Store, Wait};
use serde_json::{json, Value};

use crate::util::rt_multi as rt;
use crate::util::{fresh_postgres, RecordingServer};

/// SQLite (in `dir`) and, when the suite has it, a fresh Postgres database: store URLs.
fn store_urls(dir: &Path) -> Vec<(&'static str, String)> {
    let mut v = vec![("sqlite", format!("sqlite://{}", dir.join("t.db").display()))];
    if let Some(pg) = fresh_postgres() {
        v.push(("postgres", pg));
    }
    v
}

/// A project in `dir` with the workflow `wf`.
fn project(dir: &Path, wf: &str) -> Arc<nurture_core::project::Project> {
    std::fs::create_dir_all(dir.join("workflows")).unwrap();
    std::fs::write(dir.join("workflows").join("w.yaml"), wf).unwrap();
    let mut loaded = nurture_core::project::load(dir);
    let rendered = loaded.render();
    Arc::new(
        loaded
            .project
            .take()
            .unwrap_or_else(|| panic!("{rendered}")),
    )
}

/// Webhooks to loopback allowed; the host's circuit never opens (every attempt reaches
/// the server).
fn egress() -> Arc<Egress> {
    let s = Settings {
        allow: vec!["127.0.0.1".parse().unwrap()],
        breaker_failures: 1000,
        ..Default::default()
    };
    Arc::new(Egress::new(&s, "test").unwrap())
}

/// The CRM sync workflow: the webhook is awaited when `awaits`; its id saved.
fn crm_workflow(port: u16, awaits: bool) -> String {
    let awaiting = if awaits {
        "    await: true\n    save: { crm_id: response.id, missing: response.nope }\n"
    } else {
        ""
    };
    format!(
        "workflow: crm-sync\ntrigger: {{ event: form.submitted }}\nsteps:\n  - id: push\n    webhook: {{ url: \"http://127.0.0.1:{port}/contacts\" }}\n{awaiting}  - id: check\n    branch:\n      - if: {}\n        next: synced\n      - else: failed\n  - id: synced\n    tag: [synced]\n    next: end\n  - id: failed\n    tag: [sync-failed]\n",
        if awaits { "outcome.ok" } else { "\"true\"" }
    )
}

/// A store at `url`, an engine running the CRM workflow (its project in `pdir`), and a
/// deliverer allowed to reach the local server.
async fn crm_setup(
    url: &str,
    pdir: &Path,
    port: u16,
    awaits: bool,
) -> (Arc<dyn Store>, Arc<Engine>, Deliverer) {
    let store = nurture_server::open_store(url).await.unwrap();
    let p = project(pdir, &crm_workflow(port, awaits));
    let engine = Arc::new(Engine::new(p, store.clone()));
    let d = Deliverer::new(store.clone()).with_egress(egress());
    (store, engine, d)
}

/// Queues a `form.submitted` event for a new contact `name`; returns its id.
async fn submit(engine: &Engine, name: &str, at: chrono::DateTime<Utc>) -> String {
    let e = IncomingEvent {
        index: 0,
        id: None,
        kind: "form.submitted".into(),
        contact: None,
        email: Some(format!("{name}@example.com")),
        at: None,
        data: json!({}),
    };
    let out = engine.ingest(&[e], at).await.unwrap();
    out[0].contact.clone().unwrap()
}

async fn tags(store: &Arc<dyn Store>, c: &str) -> Vec<String> {
    let contact = store.contact(c).await.unwrap().unwrap();
    contact.tags.into_iter().collect()
}

async fn field(store: &Arc<dyn Store>, c: &str, f: &str) -> Value {
    let contact = store.contact(c).await.unwrap().unwrap();
    contact.fields.get(f).cloned().unwrap_or(Value::Null)
}

/// The journal entries of `c`'s only run.
async fn journal(store: &Arc<dyn Store>, c: &str) -> Vec<nurture_store::JournalEntry> {
    let runs = store.runs_of_contact(c).await.unwrap();
    store.journal(&runs[0].id).await.unwrap()
}

#[test]
fn an_awaited_webhook_that_succeeds_takes_the_success_path_and_saves_the_answer() {
    let server = RecordingServer::start(|_| (200, r#"{"id":"crm-42","ok":true}"#.into()));
    let dir = tempfile::tempdir().unwrap();
    for (name, url) in store_urls(dir.path()) {
        rt().block_on(async {
            let pdir = tempfile::tempdir().unwrap();
            let (store, engine, d) = crm_setup(&url, pdir.path(), server.port, true).await;
            let t0 = Utc::now();
            let c = submit(&engine, &format!("ana-{name}"), t0).await;
            engine.tick(t0).await.unwrap();
            // The run waits at the webhook: nothing after it has happened yet.
            let run = &store.runs_of_contact(&c).await.unwrap()[0];
            assert_eq!(run.status, RunStatus::Waiting, "{name}");
            assert!(
                matches!(run.wait, Some(Wait::Outcome { .. })),
                "{name}: {:?}",
                run.wait
            );
            assert!(tags(&store, &c).await.is_empty(), "{name}");

            assert_eq!(d.deliver_due(Utc::now(), 100).await.unwrap(), 1, "{name}");
            engine.tick(t0 + Duration::seconds(1)).await.unwrap();

            let run = &store.runs_of_contact(&c).await.unwrap()[0];
            assert_eq!(run.status, RunStatus::Completed, "{name}");
            assert_eq!(tags(&store, &c).await, ["synced"], "{name}");
            assert_eq!(field(&store, &c, "crm_id").await, "crm-42", "{name}");
            let o = run.outcome.as_ref().expect("outcome kept on the run");
            assert_eq!(o["ok"], true, "{name}");
            assert_eq!(o["status"], 200, "{name}");
            // A missing field of the answer sets nothing, and the journal says why.
            assert_eq!(field(&store, &c, "missing").await, Value::Null, "{name}");
            let j = journal(&store, &c).await;
            let save = j
                .iter()
                .find(|e| e.data["effect"] == "save")
                .unwrap_or_else(|| panic!("{name}: no save in {j:?}"));
            assert_eq!(save.data["fields"]["crm_id"], "crm-42", "{name}");
            assert!(
                save.data["skipped"]["missing"]
                    .as_str()
                    .is_some_and(|s| s.contains("nope")),
                "{name}: {save:?}"
            );
        });
    }
}

#[test]
fn an_awaited_webhook_that_keeps_failing_takes_the_failure_path_once_given_up() {
    let server = RecordingServer::start(|_| (500, r#"{"error":"down"}"#.into()));
    let dir = tempfile::tempdir().unwrap();
    for (name, url) in store_urls(dir.path()) {
        rt().block_on(async {
            let pdir = tempfile::tempdir().unwrap();
            let (store, engine, d) = crm_setup(&url, pdir.path(), server.port, true).await;
            let t0 = Utc::now();
            let c = submit(&engine, &format!("bo-{name}"), t0).await;
            engine.tick(t0).await.unwrap();
            // Every attempt fails with a 500; retries are due after their backoff (the
            // deliverer is asked as if that much time had passed).
            for k in 1..=nurture_channels::deliver::MAX_ATTEMPTS {
                let now = Utc::now() + Duration::hours(2 * k);
                assert_eq!(
                    d.deliver_due(now, 100).await.unwrap(),
                    1,
                    "{name}: attempt {k}"
                );
                if k < nurture_channels::deliver::MAX_ATTEMPTS {
                    // While retries remain, the run still waits.
                    engine.tick(t0).await.unwrap();
                    let run = &store.runs_of_contact(&c).await.unwrap()[0];
                    assert_eq!(run.status, RunStatus::Waiting, "{name}: attempt {k}");
                }
            }
            engine.tick(t0 + Duration::seconds(1)).await.unwrap();
            let run = &store.runs_of_contact(&c).await.unwrap()[0];
            assert_eq!(run.status, RunStatus::Completed, "{name}");
            assert_eq!(tags(&store, &c).await, ["sync-failed"], "{name}");
            let o = run.outcome.as_ref().unwrap();
            assert_eq!(o["ok"], false, "{name}");
            assert_eq!(o["status"], 500, "{name}");
            assert!(
                o["error"].as_str().is_some_and(|e| e.contains("HTTP 500")),
                "{name}: {o}"
            );
            assert_eq!(field(&store, &c, "crm_id").await, Value::Null, "{name}");
        });
    }
}

#[test]
fn without_await_the_run_goes_on_at_once_and_no_outcome_is_queued() {
    let server = RecordingServer::start(|_| (200, r#"{"id":"crm-1"}"#.into()));
    let dir = tempfile::tempdir().unwrap();
    for (name, url) in store_urls(dir.path()) {
        rt().block_on(async {
            let pdir = tempfile::tempdir().unwrap();
            let (store, engine, d) = crm_setup(&url, pdir.path(), server.port, false).await;
            let t0 = Utc::now();
            let c = submit(&engine, &format!("cy-{name}"), t0).await;
            engine.tick(t0).await.unwrap();
            let run = &store.runs_of_contact(&c).await.unwrap()[0];
            assert_eq!(run.status, RunStatus::Completed, "{name}: fire and forget");
            assert_eq!(tags(&store, &c).await, ["synced"], "{name}");
            assert_eq!(d.deliver_due(Utc::now(), 100).await.unwrap(), 1, "{name}");
            assert!(
                store.pending_events(10).await.unwrap().is_empty(),
                "{name}: no outcome event for a step nobody awaits"
            );
            assert_eq!(field(&store, &c, "crm_id").await, Value::Null, "{name}");
        });
    }
}

/// The wake-up is durable: the completion commits with its `outcome` event, the worker
/// that delivered dies, and a new engine on a new connection resumes the run; a second
/// completion of the same entry wakes nothing.
#[test]
fn a_worker_crash_between_delivery_and_resume_loses_no_wake_up_and_wakes_once() {
    let server = RecordingServer::start(|_| (200, r#"{"id":"crm-9"}"#.into()));
    let dir = tempfile::tempdir().unwrap();
    for (name, url) in store_urls(dir.path()) {
        let pdir = tempfile::tempdir().unwrap();
        let p = project(pdir.path(), &crm_workflow(server.port, true));
        let t0 = Utc::now();
        let (c, key) = rt().block_on(async {
            let store = nurture_server::open_store(&url).await.unwrap();
            let engine = Arc::new(Engine::new(p.clone(), store.clone()));
            let c = submit(&engine, &format!("di-{name}"), t0).await;
            engine.tick(t0).await.unwrap();
            let run = store.runs_of_contact(&c).await.unwrap().remove(0);
            let Some(Wait::Outcome { key }) = run.wait else {
                panic!("{name}: not awaiting: {run:?}")
            };
            Deliverer::new(store.clone())
                .with_egress(egress())
                .deliver_due(Utc::now(), 100)
                .await
                .unwrap();
            (c, key)
        });
        // That process is gone (its runtime, store and engine dropped) before any tick.
        rt().block_on(async {
            let store = nurture_server::open_store(&url).await.unwrap();
            assert_eq!(
                store.outbox_state(&key).await.unwrap().as_deref(),
                Some("delivered"),
                "{name}"
            );
            // A repeated completion (a redelivery racing the first) is refused and its
            // wake-up is not stored twice.
            let wake = nurture_store::NewEvent {
                id: format!("outcome-{key}"),
                contact: c.clone(),
                kind: "outcome".into(),
                at: Utc::now(),
                data: json!({"key": key, "ok": false, "status": 500, "error": "late", "response": null}),
            };
            let again = store
                .complete_outbox_waking(
                    &[(key.clone(), OutboxOutcome::Failed { reason: "late".into() })],
                    &[(key.clone(), wake.clone())],
                    Utc::now(),
                )
                .await
                .unwrap();
            assert!(again[0].is_err(), "{name}: a second completion is stale");
            assert_eq!(
                store.insert_events(&[], &[wake]).await.unwrap(),
                [nurture_store::Inserted::Duplicate],
                "{name}: one wake-up per entry"
            );
            let engine = Arc::new(Engine::new(p.clone(), store.clone()));
            engine.tick(t0 + Duration::seconds(1)).await.unwrap();
            engine.tick(t0 + Duration::seconds(2)).await.unwrap();
            let run = &store.runs_of_contact(&c).await.unwrap()[0];
            assert_eq!(run.status, RunStatus::Completed, "{name}");
            assert_eq!(tags(&store, &c).await, ["synced"], "{name}");
            assert_eq!(field(&store, &c, "crm_id").await, "crm-9", "{name}");
            let resumed = journal(&store, &c)
                .await
                .iter()
                .filter(|e| e.kind == "outcome")
                .count();
            assert_eq!(resumed, 1, "{name}: resumed once");
        });
    }
}

/// An awaited step whose delivery never ends goes on at its `timeout`, down the failure
/// path, with `outcome.error == "timed out"`.
#[test]
fn an_awaited_step_goes_on_at_its_timeout_without_an_outcome() {
    let dir = tempfile::tempdir().unwrap();
    for (name, url) in store_urls(dir.path()) {
        rt().block_on(async {
            let pdir = tempfile::tempdir().unwrap();
            let wf = crm_workflow(9, true)
                .replace("    await: true\n", "    await: true\n    timeout: 2h\n");
            let store = nurture_server::open_store(&url).await.unwrap();
            let engine = Arc::new(Engine::new(project(pdir.path(), &wf), store.clone()));
            let t0 = Utc::now();
            let c = submit(&engine, &format!("ed-{name}"), t0).await;
            engine.tick(t0).await.unwrap();
            engine.tick(t0 + Duration::hours(1)).await.unwrap();
            assert!(tags(&store, &c).await.is_empty(), "{name}: still waiting");
            engine.tick(t0 + Duration::hours(2)).await.unwrap();
            assert_eq!(tags(&store, &c).await, ["sync-failed"], "{name}");
            let run = &store.runs_of_contact(&c).await.unwrap()[0];
            assert_eq!(
                run.outcome.as_ref().unwrap()["error"],
                "timed out",
                "{name}"
            );
        });
    }
}

/// Misuse of the keys is a validation error with its position and a fix.
#[test]
fn save_without_await_and_await_on_a_step_without_outcome_are_diagnostics() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("workflows")).unwrap();
    std::fs::write(
        dir.path().join("workflows").join("w.yaml"),
        "workflow: w\ntrigger: { event: form.submitted }\nsteps:\n  - id: push\n    webhook: { url: \"https://crm.example/x\" }\n    save: { crm_id: response.id }\n  - id: t\n    tag: [x]\n    await: true\n  - id: b\n    branch:\n      - if: outcome.ok\n        next: end\n      - else: end\n",
    )
    .unwrap();
    let loaded = nurture_core::project::load(dir.path());
    assert!(loaded.project.is_none());
    let find = |msg: &str| {
        loaded
            .diagnostics
            .iter()
            .find(|d| d.message.contains(msg))
            .unwrap_or_else(|| panic!("no `{msg}` in {}", loaded.render()))
    };
    let save = find("`save` needs `await: true`");
    assert_eq!(save.code.as_str(), "N0003");
    assert_eq!((save.span.line, save.span.col), (6, 5));
    assert!(save.hint.as_deref().unwrap().contains("await: true"));
    let aw = find("`await` belongs to a `webhook` or `plugin` step");
    assert_eq!(aw.code.as_str(), "N0002");
    assert_eq!((aw.span.line, aw.span.col), (9, 5));
    let warn = find("reads `outcome`");
    assert_eq!(warn.severity, nurture_core::diag::Severity::Warning);
}

/// A plugin step awaited: the plugin's output is the `response` (`misbehave/echo`
/// returns its config), saved into the contact; the run takes the success path.
#[test]
fn an_awaited_plugin_step_saves_its_output_and_takes_the_success_path() {
    use nurture_channels::plugin::{Limits, PluginConfig, PluginHost};
    let (_, built) = crate::util::built_plugins()
        .iter()
        .find(|(n, _)| n == "misbehave")
        .expect("the misbehave test plugin is built");
    let dir = tempfile::tempdir().unwrap();
    for (name, url) in store_urls(dir.path()) {
        let pdir = tempfile::tempdir().unwrap();
        let to = pdir.path().join("plugins").join("misbehave");
        std::fs::create_dir_all(&to).unwrap();
        for f in ["plugin.toml", "misbehave.wasm"] {
            std::fs::copy(built.join(f), to.join(f)).unwrap();
        }
        let wf = "workflow: crm-plugin\ntrigger: { event: form.submitted }\nsteps:\n  - id: push\n    plugin: misbehave/echo\n    with: { id: \"crm-7\", stage: \"${contact.email}\" }\n    await: true\n    save: { crm_id: response.id }\n  - id: check\n    branch:\n      - if: outcome.ok && response.stage == contact.email\n        next: synced\n      - else: failed\n  - id: synced\n    tag: [synced]\n    next: end\n  - id: failed\n    tag: [sync-failed]\n";
        let p = project(pdir.path(), wf);
        let mut host = PluginHost::new(Limits::default()).unwrap();
        host.load(
            crate::util::plugin_manifest(&to),
            &to,
            PluginConfig {
                secrets: [("own_token".to_string(), "mine".to_string())].into(),
                ..Default::default()
            },
            &pdir.path().join("cache"),
        )
        .unwrap();
        rt().block_on(async {
            let store = nurture_server::open_store(&url).await.unwrap();
            let engine = Arc::new(Engine::new(p, store.clone()));
            let d = Deliverer::new(store.clone()).with_plugins(Arc::new(host));
            let t0 = Utc::now();
            let c = submit(&engine, &format!("fy-{name}"), t0).await;
            engine.tick(t0).await.unwrap();
            let run = &store.runs_of_contact(&c).await.unwrap()[0];
            assert_eq!(run.status, RunStatus::Waiting, "{name}");
            assert_eq!(d.deliver_due(Utc::now(), 100).await.unwrap(), 1, "{name}");
            engine.tick(t0 + Duration::seconds(1)).await.unwrap();
            assert_eq!(tags(&store, &c).await, ["synced"], "{name}");
            assert_eq!(field(&store, &c, "crm_id").await, "crm-7", "{name}");
            let run = &store.runs_of_contact(&c).await.unwrap()[0];
            assert_eq!(
                run.outcome.as_ref().unwrap()["status"],
                Value::Null,
                "{name}"
            );
        });
    }
}
