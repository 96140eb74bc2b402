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
    project_with(root, workflow, &["first", "second", "final"])
}

/// A project of one workflow file and the `templates` named, loaded.
fn project_with(root: &Path, workflow: &str, templates: &[&str]) -> Arc<Project> {
    write_project(root, workflow, templates);
    let loaded = nurture_core::project::load(root);
    assert_eq!(loaded.errors(), 0, "{}", loaded.render());
    Arc::new(loaded.project.unwrap())
}

/// Writes a project of one workflow file and the `templates` named to `root`.
fn write_project(root: &Path, workflow: &str, templates: &[&str]) {
    let _ = std::fs::remove_dir_all(root.join("templates"));
    std::fs::create_dir_all(root.join("workflows")).unwrap();
    std::fs::create_dir_all(root.join("templates")).unwrap();
    std::fs::write(
        root.join("nurture.toml"),
        "[sender]\nfrom = \"Team <team@example.test>\"\n",
    )
    .unwrap();
    for t in templates {
        std::fs::write(
            root.join(format!("templates/{t}.html")),
            format!("---\nsubject: {t}\n---\n<p>{t}</p>\n"),
        )
        .unwrap();
    }
    std::fs::write(root.join("workflows/nurture.yaml"), workflow).unwrap();
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
            // The story of a migrated run (the same on every store).
            let run = &store.runs_of_contact(&contacts[0]).await.unwrap()[0];
            let story = nurture_engine::explain::explain_run(&*store, &run.id)
                .await
                .unwrap()
                .unwrap()
                .render()
                .replace(&run.id, "[RUN]")
                .replace(&contacts[0], "[CONTACT]");
            insta::assert_snapshot!("explain_migrated", story);
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

/// Templates stay live, so a template that open runs' version still sends cannot be
/// removed while they stay on it: the deploy is refused until they are let go (`exit`).
#[test]
fn removing_a_template_open_runs_still_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let urls = stores(dir.path());
    let v2_without_second = "workflow: nurture\nversion: 2\n{policy}trigger: { event: form.submitted }\nsteps:\n  - id: first\n    send_email: first\n  - id: final\n    send_email: final\n";
    rt().block_on(async {
        for (k, url) in urls.iter().enumerate() {
            let d = dir.path().join(k.to_string());
            let (store, _) = three_waiting(&d, url).await;
            let keep = v2_without_second.replace("{policy}", "");
            let p2 = project_with(&d.join("v2"), &keep, &["first", "final"]);
            let engine = Arc::new(Engine::new(p2.clone(), store.clone()));
            let plan = deploy::plan(&*store, &p2, "test", t0()).await.unwrap();
            let used: Vec<_> = plan
                .problems
                .iter()
                .filter_map(|p| match p {
                    deploy::Problem::StillUsed {
                        version,
                        runs,
                        reason,
                        ..
                    } => Some((*version, *runs, reason.clone())),
                    _ => None,
                })
                .collect();
            assert_eq!(used.len(), 1, "{url}: {:?}", plan.problems);
            assert_eq!((used[0].0, used[0].1), (1, 3));
            assert!(used[0].2.contains("second"), "{}", used[0].2);
            assert!(deploy::apply(&engine, &plan, t0()).await.is_err());
            assert_eq!(store.latest_versions().await.unwrap()[0].version, 1);
            // Letting the runs go makes the same removal deployable.
            let exit = v2_without_second.replace("{policy}", "on_new_version: exit\n");
            let p2 = project_with(&d.join("v2"), &exit, &["first", "final"]);
            let plan = deploy::plan(&*store, &p2, "test", t0()).await.unwrap();
            assert!(plan.ok(), "{url}: {:?}", plan.problems);
        }
    });
}

/// A `nurture` process over the store at `url` for the project in `dir`.
fn spawn(command: &str, dir: &Path, url: &str) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_nurture"))
        .args([command, dir.to_str().unwrap(), "--store", url])
        .args(["--poll-ms", "100"])
        .env("NURTURE_LEASE_SECS", "2")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Stops `child` with SIGTERM; it must exit 0.
fn stop(child: &mut std::process::Child) {
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
}

/// `nurture ARGS` (run from `dir`); stdout, asserting the exit code is `code`.
fn cli(dir: &Path, args: &[&str], code: i32) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nurture"))
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(code),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `nurture events send` of one `form.submitted` per address in `emails`.
fn send_forms(dir: &Path, url: &str, emails: &[String]) {
    let lines: String = emails
        .iter()
        .map(|e| format!("{{\"id\":\"f-{e}\",\"type\":\"form.submitted\",\"email\":\"{e}\"}}\n"))
        .collect();
    let file = dir.join("events.jsonl");
    std::fs::write(&file, lines).unwrap();
    let (d, f) = (dir.to_str().unwrap(), file.to_str().unwrap());
    cli(dir, &["events", "send", f, "--dir", d, "--store", url], 0);
}

/// Polls the store at `url` until `done` holds for its runs (30 s at most).
fn wait_runs(url: &str, what: &str, done: impl Fn(&[nurture_store::Run]) -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    rt().block_on(async {
        let store = nurture_server::open_store(url).await.unwrap();
        loop {
            let runs = store.list_runs(&RunFilter::default()).await.unwrap();
            if done(&runs) {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "{what}: {runs:?}");
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    });
}

/// The scenario with processes: a worker on version 1 (a 3 s pause) is stopped while
/// three runs wait, and restarted with the version 2 project. It deploys version 2 and
/// finishes the three runs on version 1: each contact gets `first` then `second`.
#[test]
fn a_worker_restarted_with_a_newer_project_finishes_old_runs_on_their_version() {
    let Some(url) = crate::util::fresh_postgres() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (d1, d2) = (tmp.path().join("v1"), tmp.path().join("v2"));
    let all = ["first", "second", "final"];
    write_project(&d1, &V1.replace("wait: 40s", "wait: 3s"), &all);
    write_project(&d2, &v2(""), &all);
    let mut worker = spawn("worker", &d1, &url);
    let emails: Vec<String> = (1..=3).map(|i| format!("c{i}@example.test")).collect();
    send_forms(&d1, &url, &emails);
    wait_runs(&url, "three runs waiting at pause", |runs| {
        runs.len() == 3 && runs.iter().all(|r| r.step.as_deref() == Some("pause"))
    });
    stop(&mut worker);
    let mut worker = spawn("worker", &d2, &url);
    wait_runs(&url, "three runs completed", |runs| {
        runs.iter().all(|r| r.status == RunStatus::Completed)
    });
    stop(&mut worker);
    rt().block_on(async {
        let store = nurture_server::open_store(&url).await.unwrap();
        assert_eq!(store.latest_versions().await.unwrap()[0].version, 2);
        for r in store.list_runs(&RunFilter::default()).await.unwrap() {
            assert_eq!(r.workflow_version, 1);
            assert_eq!(sent(&store, &r.contact).await, ["first", "second"]);
        }
    });
}

/// A rolling deploy on one Postgres: a worker on the version 1 project runs alone; version
/// 2 is deployed beside it (`nurture deploy`) and it picks that up without a restart,
/// enrolling into version 2 from then on; then a worker on the version 2 project joins.
/// Nothing enrols into version 1 after the deploy.
#[test]
fn workers_with_different_project_versions_enrol_only_into_the_latest() {
    let Some(url) = crate::util::fresh_postgres() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (d1, d2) = (tmp.path().join("v1"), tmp.path().join("v2"));
    let all = ["first", "second", "final"];
    write_project(&d1, &V1.replace("wait: 40s", "wait: 1s"), &all);
    write_project(&d2, &v2(""), &all);
    let mut old = spawn("worker", &d1, &url);
    let batch = |from: usize| -> Vec<String> {
        (from..from + 10)
            .map(|i| format!("c{i}@example.test"))
            .collect()
    };
    let done = |n: usize| {
        move |runs: &[nurture_store::Run]| {
            runs.len() == n && runs.iter().all(|r| r.status == RunStatus::Completed)
        }
    };
    send_forms(&d1, &url, &batch(0));
    wait_runs(&url, "version 1, the old worker alone", done(10));
    cli(&d2, &["deploy", d2.to_str().unwrap(), "--store", &url], 0);
    // Running processes look for new versions every 2 s.
    std::thread::sleep(std::time::Duration::from_millis(3000));
    send_forms(&d1, &url, &batch(10));
    wait_runs(&url, "version 2, the old worker alone", done(20));
    let mut new = spawn("worker", &d2, &url);
    send_forms(&d2, &url, &batch(20));
    wait_runs(&url, "both workers", done(30));
    stop(&mut old);
    stop(&mut new);
    rt().block_on(async {
        let store = nurture_server::open_store(&url).await.unwrap();
        let before: std::collections::HashSet<String> = batch(0)
            .iter()
            .map(|e| nurture_engine::input::id_for_email(e))
            .collect();
        for r in store.list_runs(&RunFilter::default()).await.unwrap() {
            let (version, sent_want): (u32, &[&str]) = if before.contains(&r.contact) {
                (1, &["first", "second"])
            } else {
                (2, &["first", "second", "final"])
            };
            assert_eq!(r.workflow_version, version, "{r:?}");
            assert_eq!(sent(&store, &r.contact).await, sent_want);
        }
    });
}

/// `nurture deploy` and `nurture versions` as people and scripts see them.
#[test]
fn deploy_and_versions_commands_human_and_json() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", tmp.path().join("t.db").display());
    rt().block_on(three_waiting(&tmp.path().join("setup"), &url));
    let d2 = tmp.path().join("v2");
    let all = ["first", "second", "final"];
    let dir = d2.to_str().unwrap();
    // A stranding policy: refused, exit 1, nothing stored.
    write_project(&d2, &v2("on_new_version: migrate\n"), &all);
    let out = cli(&d2, &["deploy", dir, "--store", &url], 1);
    assert!(
        out.contains("STRANDED") && out.contains("nothing was deployed"),
        "{out}"
    );
    let out = cli(
        &d2,
        &["deploy", dir, "--store", &url, "--format", "json"],
        1,
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["deployed"], false);
    assert_eq!(v["plan"]["problems"][0]["problem"], "stranded");
    assert_eq!(v["plan"]["problems"][0]["runs"], 3);
    // Mapped: the dry run changes nothing, the deploy moves the runs.
    write_project(
        &d2,
        &v2("on_new_version: { migrate: { pause: final } }\n"),
        &all,
    );
    let out = cli(&d2, &["deploy", dir, "--store", &url, "--dry-run"], 0);
    assert!(
        out.contains("move to `final`") && out.contains("dry run"),
        "{out}"
    );
    let out = cli(
        &d2,
        &[
            "versions", "--dir", dir, "--store", &url, "--format", "json",
        ],
        0,
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "{out}");
    assert_eq!(v[0]["open_runs"], 3);
    let out = cli(&d2, &["deploy", dir, "--store", &url], 0);
    assert!(
        out.contains("deployed: nurture v2; 3 run(s) migrated"),
        "{out}"
    );
    let out = cli(&d2, &["versions", "--dir", dir, "--store", &url], 0);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("WORKFLOW") && lines.len() == 4,
        "{out}"
    );
    assert!(lines.iter().any(|l| l.contains(" 2* ")), "{out}");
    let out = cli(
        &d2,
        &[
            "versions", "nurture", "--dir", dir, "--store", &url, "--format", "json",
        ],
        0,
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let latest: Vec<_> = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["latest"] == true)
        .collect();
    assert_eq!(
        (latest.len(), &latest[0]["version"]),
        (1, &json!(2)),
        "{out}"
    );
}
