//! Safe live edits (issue 19): workflow versions in the store, runs pinned to the version
//! they started on, `on_new_version` (keep, migrate, exit) applied at deploy, and a deploy
//! that would strand runs refused. The scenario of the issue: three contacts enter
//! `first (email) -> pause (wait 40s) -> second (email)`; the workflow is edited to
//! version 2 without `pause` and deployed while they wait. Every test runs on SQLite and
//! on Postgres.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::json;

use crate::util::rt_multi as rt;
use nurture_core::project::Project;
use nurture_engine::deploy;
use nurture_engine::Engine;
use nurture_store::{RunFilter, RunStatus, Store};

const V1: &str = "workflow: nurture\nversion: 1\ntrigger: { event: form.submitted }\nsteps:\n  - id: first\n    send_email: first\n  - id: pause\n    wait: 40s\n  - id: second\n    send_email: second\n";

/// Version 2 without `pause`, with `POLICY` lines above its steps, and a `final` step.
fn v2(policy: &str) -> String {
    format!("workflow: nurture\nversion: 2\n{policy}trigger: {{ event: form.submitted }}\nsteps:\n  - id: first\n    send_email: first\n  - id: second\n    send_email: second\n  - id: final\n    send_email: final\n")
}

/// A project of one workflow file, loaded.
fn project(root: &Path, workflow: &str) -> Arc<Project> {
    std::fs::create_dir_all(root.join("workflows")).unwrap();
    std::fs::create_dir_all(root.join("templates")).unwrap();
    std::fs::write(
        root.join("nurture.toml"),
        "[sender]\nfrom = \"Team <team@example.test>\"\n",
    )
    .unwrap();
    for t in ["first", "second", "final"] {
        std::fs::write(
            root.join(format!("templates/{t}.html")),
            format!("---\nsubject: {t}\n---\n<p>{t}</p>\n"),
        )
        .unwrap();
    }
    std::fs::write(root.join("workflows/nurture.yaml"), workflow).unwrap();
    let loaded = nurture_core::project::load(root);
    assert_eq!(loaded.errors(), 0, "{}", loaded.render());
    Arc::new(loaded.project.unwrap())
}

fn stores(dir: &Path) -> Vec<String> {
    let mut urls = vec![format!("sqlite://{}", dir.join("t.db").display())];
    urls.extend(crate::util::fresh_postgres());
    urls
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap()
}

/// Deploys `project` to `store` at `now` (the plan must be accepted); its engine.
async fn deployed(
    project: &Arc<Project>,
    store: &Arc<dyn Store>,
    now: DateTime<Utc>,
) -> Arc<Engine> {
    let engine = Arc::new(Engine::new(project.clone(), store.clone()));
    let plan = deploy::plan(&**store, project, "test", now).await.unwrap();
    assert!(
        plan.ok(),
        "{}",
        plan.problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
    deploy::apply(&engine, &plan, now).await.unwrap();
    engine
}

/// Version 1 deployed, three contacts waiting at `pause`: the store and their ids.
async fn three_waiting(dir: &Path, url: &str) -> (Arc<dyn Store>, Vec<String>) {
    let store = nurture_server::open_store(url).await.unwrap();
    let engine = deployed(&project(&dir.join("v1"), V1), &store, t0()).await;
    let events: Vec<_> = (1..=3)
        .map(|i| nurture_engine::input::IncomingEvent {
            index: i,
            id: Some(format!("e{i}")),
            kind: "form.submitted".into(),
            contact: None,
            email: Some(format!("c{i}@example.test")),
            at: Some(t0()),
            data: json!({}),
        })
        .collect();
    let outcomes = engine.ingest(&events, t0()).await.unwrap();
    let effects = engine.tick(t0()).await.unwrap();
    let runs = open_runs(&store).await;
    assert_eq!(runs.len(), 3, "{outcomes:?} {effects:?}");
    assert!(runs
        .iter()
        .all(|r| r.step.as_deref() == Some("pause") && r.workflow_version == 1));
    let contacts = outcomes.into_iter().map(|o| o.contact.unwrap()).collect();
    (store, contacts)
}

async fn open_runs(store: &Arc<dyn Store>) -> Vec<nurture_store::Run> {
    let all = store.list_runs(&RunFilter::default()).await.unwrap();
    all.into_iter().filter(|r| r.status.is_open()).collect()
}

/// The templates each contact was sent, in order.
async fn sent(store: &Arc<dyn Store>, contact: &str) -> Vec<String> {
    let mut out = Vec::new();
    for r in store.runs_of_contact(contact).await.unwrap() {
        for j in store.journal(&r.id).await.unwrap() {
            if j.kind == "effect" && j.data["effect"] == "email" {
                out.push(j.data["template"].as_str().unwrap_or_default().to_string());
            }
        }
    }
    out
}

#[test]
fn keep_finishes_open_runs_on_their_version() {
    let dir = tempfile::tempdir().unwrap();
    let urls = stores(dir.path());
    rt().block_on(async {
        for (k, url) in urls.iter().enumerate() {
            let d = dir.path().join(k.to_string());
            let (store, contacts) = three_waiting(&d, url).await;
            // Version 2 (no `pause`) deployed by a restarted process, default policy.
            let engine = deployed(&project(&d.join("v2"), &v2("")), &store, t0()).await;
            engine.tick(t0() + Duration::seconds(41)).await.unwrap();
            for c in &contacts {
                let runs = store.runs_of_contact(c).await.unwrap();
                assert_eq!(runs.len(), 1);
                assert_eq!(runs[0].status, RunStatus::Completed, "{url}: {:?}", runs[0]);
                assert_eq!(runs[0].workflow_version, 1);
                assert_eq!(sent(&store, c).await, ["first", "second"], "{url}");
            }
        }
    });
}

#[test]
fn migrate_moves_open_runs_to_the_mapped_step() {
    let dir = tempfile::tempdir().unwrap();
    let urls = stores(dir.path());
    rt().block_on(async {
        for (k, url) in urls.iter().enumerate() {
            let d = dir.path().join(k.to_string());
            let (store, contacts) = three_waiting(&d, url).await;
            let policy = "on_new_version: { migrate: { pause: final } }\n";
            deployed(&project(&d.join("v2"), &v2(policy)), &store, t0()).await;
            for c in &contacts {
                let runs = store.runs_of_contact(c).await.unwrap();
                assert_eq!(runs[0].workflow_version, 2, "{url}");
                assert_eq!(runs[0].status, RunStatus::Completed, "{url}: {:?}", runs[0]);
                assert_eq!(sent(&store, c).await, ["first", "final"], "{url}");
                let journal = store.journal(&runs[0].id).await.unwrap();
                let m = journal
                    .iter()
                    .find(|j| j.kind == "effect" && j.data["effect"] == "migrated")
                    .expect("journaled");
                assert_eq!(m.data["from"], 1);
                assert_eq!(m.data["to"], 2);
                assert_eq!(m.data["from_step"], "pause");
                assert_eq!(m.data["step"], "final");
            }
        }
    });
}

#[test]
fn exit_ends_open_runs_as_superseded() {
    let dir = tempfile::tempdir().unwrap();
    let urls = stores(dir.path());
    rt().block_on(async {
        for (k, url) in urls.iter().enumerate() {
            let d = dir.path().join(k.to_string());
            let (store, contacts) = three_waiting(&d, url).await;
            let engine = deployed(
                &project(&d.join("v2"), &v2("on_new_version: exit\n")),
                &store,
                t0(),
            )
            .await;
            engine.tick(t0() + Duration::seconds(41)).await.unwrap();
            for c in &contacts {
                let runs = store.runs_of_contact(c).await.unwrap();
                assert_eq!(runs[0].status, RunStatus::Exited, "{url}");
                assert_eq!(runs[0].exit_reason.as_deref(), Some("superseded"));
                assert_eq!(sent(&store, c).await, ["first"], "{url}");
            }
        }
    });
}

#[test]
fn a_deploy_that_would_strand_runs_is_refused_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let urls = stores(dir.path());
    rt().block_on(async {
        for (k, url) in urls.iter().enumerate() {
            let d = dir.path().join(k.to_string());
            let (store, _) = three_waiting(&d, url).await;
            let p2 = project(&d.join("v2"), &v2("on_new_version: migrate\n"));
            let engine = Arc::new(Engine::new(p2.clone(), store.clone()));
            let plan = deploy::plan(&*store, &p2, "test", t0()).await.unwrap();
            assert_eq!(plan.stranded(), 3);
            let err = deploy::apply(&engine, &plan, t0()).await.unwrap_err();
            assert!(err.to_string().contains("wait at `pause`"), "{err}");
            let latest = store.latest_versions().await.unwrap();
            assert_eq!(latest.len(), 1);
            assert_eq!(latest[0].version, 1, "{url}: nothing deployed");
            assert!(open_runs(&store)
                .await
                .iter()
                .all(|r| r.workflow_version == 1));
        }
    });
}

/// The dry run of the scenario, as `nurture deploy --dry-run` prints it.
#[test]
fn dry_run_of_the_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let shown = rt().block_on(async {
        let (store, _) = three_waiting(dir.path(), &url).await;
        let mut out = String::new();
        for policy in [
            "",
            "on_new_version: { migrate: { pause: final } }\n",
            "on_new_version: migrate\n",
        ] {
            let p2 = project(&dir.path().join("v2"), &v2(policy));
            let plan = deploy::plan(&*store, &p2, "test", t0()).await.unwrap();
            out.push_str(&format!("--- {}\n", policy.trim()));
            out.push_str(&plan.to_string());
        }
        out
    });
    insta::assert_snapshot!("dry_run_scenario", shown);
}
