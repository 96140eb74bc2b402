//! Operating nurture day to day (issue 26): a step is all or nothing, failed deliveries
//! are visible in `runs show` and `outbox list`, `init` makes a project that validates,
//! commands find their project from a subfolder, read-only commands work on a project
//! with errors, contacts are looked up by address, and one SQLite store has at most one
//! scheduler.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use serde_json::{json, Value};

use crate::util::rt_multi as rt;
use nurture_store::RunStatus;

/// `nurture ARGS` run from `cwd`.
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

/// A project in `dir` with one workflow file and a `hello` template.
fn project(dir: &Path, settings: &str, workflow: &str) {
    std::fs::create_dir_all(dir.join("workflows")).unwrap();
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    let toml = format!("[sender]\nfrom = \"Team <team@example.test>\"\n{settings}");
    std::fs::write(dir.join("nurture.toml"), toml).unwrap();
    std::fs::write(
        dir.join("templates/hello.html"),
        "---\nsubject: hello\n---\n<p>hello</p>\n",
    )
    .unwrap();
    std::fs::write(dir.join("workflows/w.yaml"), workflow).unwrap();
}

/// An event `id` of type `kind` for the contact of address `email`, at `at`.
fn event(
    id: &str,
    kind: &str,
    email: &str,
    at: chrono::DateTime<Utc>,
) -> nurture_engine::input::IncomingEvent {
    nurture_engine::input::IncomingEvent {
        index: 0,
        id: Some(id.into()),
        kind: kind.into(),
        contact: None,
        email: Some(email.into()),
        at: Some(at),
        data: json!({}),
    }
}

/// The step of the issue: lifecycle, tag and score, then an action that fails for a
/// contact without `first_name`.
const MARK_SAL: &str = "workflow: mark\ntrigger: { event: demo.requested }\nsteps:\n  - id: mark-sal\n    actions:\n      - set: { lifecycle: sal }\n      - tag: [demo-requested]\n      - score: +30\n      - set: { greeting: \"Hi ${contact.first_name}\" }\n";

#[test]
fn a_failing_action_takes_back_the_whole_step() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    project(dir, "", MARK_SAL);
    let loaded = nurture_core::project::load(dir);
    assert_eq!(loaded.errors(), 0, "{}", loaded.render());
    let project = std::sync::Arc::new(loaded.project.unwrap());
    let url = format!("sqlite://{}", dir.join("t.db").display());
    let t0 = Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap();
    rt().block_on(async {
        let store = nurture_server::open_store(&url).await.unwrap();
        let engine = std::sync::Arc::new(nurture_engine::Engine::new(project, store.clone()));
        let event = event("d1", "demo.requested", "noname@example.test", t0);
        let out = engine.ingest(&[event], t0).await.unwrap();
        let effects = engine.tick(t0).await.unwrap();
        let contact_id = out[0].contact.clone().unwrap();
        let c = store.contact(&contact_id).await.unwrap().unwrap();
        assert_eq!(c.lifecycle, None, "{effects:?}");
        assert!(c.tags.is_empty(), "{:?}", c.tags);
        assert_eq!(c.score, 0);
        let runs = store.runs_of_contact(&contact_id).await.unwrap();
        assert_eq!(runs[0].status, RunStatus::Failed);
        let journal = store.journal(&runs[0].id).await.unwrap();
        let undone = journal.iter().find(|j| j.kind == "undone").expect("undone");
        assert_eq!(undone.data["effects"], json!(["set", "tag", "score"]));
        let error = journal.iter().find(|j| j.kind == "error").expect("error");
        let msg = error.data["message"].as_str().unwrap();
        assert!(msg.contains("first_name"), "{msg}");
        // The exit effect carries the reason, so the log line of a failed run says why.
        let exit = effects.iter().find(|e| e.effect == "exit").unwrap();
        assert_eq!(exit.extra["message"], msg);
        // Effects of the failed step are not reported either.
        assert!(!effects.iter().any(|e| e.effect == "tag"), "{effects:?}");
    });
}

/// A local HTTP server answering every request `400 Bad Request`.
fn refusing_receiver() -> u16 {
    let bad = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 3\r\nconnection: close\r\n\r\nbad";
    crate::util::http_receiver(bad).0
}

fn spawn_run(dir: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_nurture"))
        .args(["run", dir.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .args(["--poll-ms", "100"])
        .env("NURTURE_API_KEY", "test-key-0123456789abcdef0123456789")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn stop(child: &mut Child) {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap();
}

/// Polls `f` every 200 ms until it gives a value (20 s at most).
fn eventually<T>(what: &str, f: impl Fn() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn send_event(dir: &Path, line: &str) {
    std::fs::write(dir.join("e.jsonl"), format!("{line}\n")).unwrap();
    let d = dir.to_str().unwrap();
    let o = nurture_in(dir, &["events", "send", "e.jsonl", "--dir", d]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn a_failed_delivery_shows_in_runs_show_and_outbox_list() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let port = refusing_receiver();
    let workflow = format!("workflow: hook\ntrigger: {{ event: form.submitted }}\nsteps:\n  - id: tell-crm\n    webhook: {{ url: \"http://127.0.0.1:{port}/hook\" }}\n");
    project(dir, "[egress]\nallow = [\"127.0.0.1\"]\n", &workflow);
    let mut run = spawn_run(dir);
    send_event(
        dir,
        r#"{"id":"f1","type":"form.submitted","email":"maria@example.com"}"#,
    );
    let d = dir.to_str().unwrap();
    let rows: Vec<Value> = eventually("a failed outbox entry", || {
        let o = nurture_in(
            dir,
            &[
                "outbox", "list", "--dir", d, "--state", "failed", "--format", "json",
            ],
        );
        let v: Vec<Value> = serde_json::from_slice(&o.stdout).ok()?;
        (!v.is_empty()).then_some(v)
    });
    stop(&mut run);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["kind"], "webhook");
    assert_eq!(rows[0]["workflow"], "hook");
    assert!(
        rows[0]["reason"].as_str().unwrap().contains("400"),
        "{rows:?}"
    );
    // By the contact's address too; other states hold nothing.
    let o = nurture_in(
        dir,
        &[
            "outbox",
            "list",
            "--dir",
            d,
            "--contact",
            "maria@example.com",
        ],
    );
    let human = text(&o);
    assert!(
        human.contains("failed") && human.contains("hook/tell-crm"),
        "{human}"
    );
    let o = nurture_in(dir, &["outbox", "list", "--dir", d, "--state", "queued"]);
    assert!(text(&o).contains("no outbox entries"), "{}", text(&o));
    // `runs list --contact ADDRESS` finds the run; `runs show` puts the state beside the
    // effect.
    let o = nurture_in(
        dir,
        &[
            "runs",
            "list",
            "--dir",
            d,
            "--contact",
            "maria@example.com",
            "--format",
            "json",
        ],
    );
    let runs: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(runs.len(), 1, "{}", text(&o));
    let id = runs[0]["id"].as_str().unwrap();
    // The contact column fits a 26-character id: the columns after it line up.
    let o = nurture_in(dir, &["runs", "list", "--dir", d]);
    let listed = String::from_utf8_lossy(&o.stdout).to_string();
    let (head, row) = (
        listed.lines().next().unwrap(),
        listed.lines().nth(1).unwrap(),
    );
    assert_eq!(runs[0]["contact"].as_str().unwrap().len(), 26);
    assert_eq!(head.find("STATUS"), row.find("completed"), "{listed}");
    let o = nurture_in(dir, &["runs", "show", id, "--dir", d]);
    let shown = text(&o);
    let key = rows[0]["key"].as_str().unwrap();
    assert!(
        shown.contains("[failed: ") && shown.contains(key),
        "{shown}"
    );
    let o = nurture_in(
        dir,
        &[
            "runs",
            "list",
            "--dir",
            d,
            "--contact",
            "nobody@example.com",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}

#[test]
fn init_makes_a_project_that_validates_and_the_example_copies() {
    let tmp = tempfile::tempdir().unwrap();
    let new = tmp.path().join("new");
    let o = nurture_in(tmp.path(), &["init", "new"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = nurture_in(tmp.path(), &["validate", "new"]);
    assert!(o.status.success(), "{}", text(&o));
    let ignore = std::fs::read_to_string(new.join(".gitignore")).unwrap();
    for kept_out in ["nurture.db*", "outbox/", ".nurture/"] {
        assert!(ignore.lines().any(|l| l == kept_out), "{ignore}");
    }
    let wf = std::fs::read_to_string(new.join("workflows/welcome.yaml")).unwrap();
    assert!(wf.starts_with("# yaml-language-server: $schema=../schema/workflow.schema.json"));
    assert!(new.join("schema/workflow.schema.json").is_file());
    // A second init changes nothing.
    let before = std::fs::read_to_string(new.join("nurture.toml")).unwrap();
    let o = nurture_in(tmp.path(), &["init", "new"]);
    assert!(!o.status.success() && text(&o).contains("already holds a project"));
    assert_eq!(
        std::fs::read_to_string(new.join("nurture.toml")).unwrap(),
        before
    );
    // The README's copy of the example, with its plugins beside it, validates.
    let repo = crate::util::repo();
    let copy = tmp.path().join("copy");
    std::fs::create_dir_all(&copy).unwrap();
    let o = Command::new("cp")
        .args(["-r", "workflows", "plugins"])
        .arg(&copy)
        .current_dir(&repo)
        .output()
        .unwrap();
    assert!(o.status.success());
    let o = nurture_in(&copy, &["validate", "workflows"]);
    assert!(o.status.success(), "{}", text(&o));
    // Without the plugins the hint says where they were looked for.
    std::fs::remove_dir_all(copy.join("plugins")).unwrap();
    let o = nurture_in(&copy, &["validate", "workflows"]);
    assert!(
        text(&o).contains("plugin_dirs = [\"../plugins\"]"),
        "{}",
        text(&o)
    );
}

#[test]
fn commands_find_the_project_from_a_subfolder_and_say_so() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("campaigns");
    project(&dir, "", "workflow: w\ntrigger: { event: form.submitted }\nsteps:\n  - id: hi\n    send_email: hello\n");
    let o = nurture_in(&dir.join("workflows"), &["validate"]);
    assert!(o.status.success(), "{}", text(&o));
    let canon = dir.canonicalize().unwrap();
    assert!(
        text(&o).contains(&format!("using the project in {}", canon.display())),
        "{}",
        text(&o)
    );
    // From the folder above: none found, and the folder holding one is named.
    let o = nurture_in(tmp.path(), &["runs", "list"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("--dir campaigns"), "{}", text(&o));
    // A folder of workflows without nurture.toml inside that project is a project of
    // its own, not replaced by the one above.
    let inner = dir.join("inner");
    std::fs::create_dir_all(inner.join("workflows")).unwrap();
    std::fs::write(
        inner.join("workflows/t.yaml"),
        "workflow: t\ntrigger: { event: form.submitted }\nsteps:\n  - id: mark\n    tag: [x]\n",
    )
    .unwrap();
    let o = nurture_in(&inner, &["validate"]);
    assert!(
        o.status.success() && !text(&o).contains("using the project"),
        "{}",
        text(&o)
    );
    // Every command defaults the same way: `outbox list` and `plugins list` too.
    for args in [
        &["outbox", "list"][..],
        &["plugins", "list"],
        &["runs", "list"],
    ] {
        let o = nurture_in(&dir.join("templates"), args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
    }
}

#[test]
fn read_only_commands_work_on_a_project_with_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    project(dir, "", "workflow: w\ntrigger: { event: form.submitted }\nsteps:\n  - id: hi\n    send_email: hello\n");
    send_event(
        dir,
        r#"{"id":"f1","type":"form.submitted","email":"ana@example.com"}"#,
    );
    std::fs::write(
        dir.join("workflows/broken.yaml"),
        "workflow: broken\nsteps: 3\n",
    )
    .unwrap();
    let d = dir.to_str().unwrap();
    for args in [
        &["runs", "list", "--dir", d][..],
        &["outbox", "list", "--dir", d],
        &["contacts", "show", "ana@example.com", "--dir", d],
        &["versions", "--dir", d],
    ] {
        let o = nurture_in(dir, args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        assert!(
            text(&o).contains("warning: the project"),
            "{args:?}: {}",
            text(&o)
        );
    }
    let o = nurture_in(
        dir,
        &[
            "contacts",
            "show",
            "ana@example.com",
            "--dir",
            d,
            "--format",
            "json",
        ],
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["contact"]["email"], "ana@example.com");
}

#[test]
fn a_second_scheduler_on_one_sqlite_store_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    project(dir, "", "workflow: w\ntrigger: { event: form.submitted }\nsteps:\n  - id: hi\n    send_email: hello\n");
    let mut first = spawn_run(dir);
    let lock: PathBuf = dir.join("nurture.db.scheduler.lock");
    let pid = first.id().to_string();
    eventually("the first scheduler holds the lock", || {
        (std::fs::read_to_string(&lock).ok()? == pid).then_some(())
    });
    let o = nurture_in(
        dir,
        &["run", dir.to_str().unwrap(), "--listen", "127.0.0.1:0"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("another nurture scheduler (pid {pid})")),
        "{}",
        text(&o)
    );
    // Readers are not schedulers: they still work beside it.
    let o = nurture_in(dir, &["runs", "list", "--dir", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    stop(&mut first);
    // Once it has stopped, the next one starts.
    let mut again = spawn_run(dir);
    let pid = again.id().to_string();
    eventually("the next scheduler holds the lock", || {
        (std::fs::read_to_string(&lock).ok()? == pid).then_some(())
    });
    stop(&mut again);
}

/// A typo in a template: `validate` warns at the file's line (front matter counted), and
/// `simulate` fails the email for a contact without the field, at that line, exit 1.
#[test]
fn template_typos_are_found_at_file_lines_before_anything_is_sent() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    project(dir, "", "workflow: w\ntrigger: { event: form.submitted }\nsteps:\n  - id: hi\n    send_email: typo\n");
    std::fs::write(
        dir.join("templates/typo.html"),
        "---\nsubject: hi\n---\n<p>Hello</p>\n<p>{{ contact.fist_name }}</p>\n",
    )
    .unwrap();
    let d = dir.to_str().unwrap();
    let o = nurture_in(dir, &["validate", d]);
    assert!(text(&o).contains("typo.html:5:"), "{}", text(&o));
    let events = dir.join("e.jsonl");
    std::fs::write(
        &events,
        "{\"type\":\"form.submitted\",\"email\":\"a@example.com\",\"at\":\"2026-03-02T09:00:00Z\"}\n",
    )
    .unwrap();
    let o = nurture_in(dir, &["simulate", d, "--events", events.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let failed: Vec<Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["effect"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{}", text(&o));
    let reason = failed[0]["reason"].as_str().unwrap();
    assert!(reason.contains("typo.html, line 5"), "{reason}");
}

/// `runs start` and `runs cancel`, by the CLI and the HTTP API: journaled with who and
/// why; refused (exit 1, 404 or 409) for what does not exist or does not fit.
#[test]
fn runs_are_started_and_cancelled_by_hand_with_who_and_why() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    project(dir, "", "workflow: w\ntrigger: { event: form.submitted }\nsteps:\n  - id: hi\n    send_email: hello\n  - id: pause\n    wait: 1d\n");
    std::fs::write(
        dir.join("c.jsonl"),
        "{\"id\":\"ana\",\"email\":\"ana@example.com\"}\n",
    )
    .unwrap();
    let d = dir.to_str().unwrap();
    let ok = |args: &[&str]| {
        let o = nurture_in(dir, args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        text(&o)
    };
    let refused = |args: &[&str], why: &str| {
        let o = nurture_in(dir, args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(why), "{args:?}: {}", text(&o));
    };
    ok(&["contacts", "import", "c.jsonl", "--dir", d]);
    let started = ok(&[
        "runs",
        "start",
        "w",
        "--contact",
        "ana@example.com",
        "--reason",
        "VIP",
        "--dir",
        d,
    ]);
    assert!(started.contains("\"effect\":\"enter\""), "{started}");
    refused(
        &["runs", "start", "w", "--contact", "ana", "--dir", d],
        "open run of `w` already",
    );
    refused(
        &["runs", "start", "nope", "--contact", "ana", "--dir", d],
        "no workflow `nope`",
    );
    refused(
        &["runs", "start", "w", "--contact", "ghost", "--dir", d],
        "no contact `ghost`",
    );
    let list = ok(&[
        "runs",
        "list",
        "--contact",
        "ana",
        "--format",
        "json",
        "--dir",
        d,
    ]);
    let runs: Vec<Value> = serde_json::from_str(&list).unwrap();
    let id = runs[0]["id"].as_str().unwrap().to_string();
    assert_eq!(runs[0]["step"], "pause");
    ok(&[
        "runs",
        "cancel",
        &id,
        "--reason",
        "asked us to stop\u{1b}[2J",
        "--dir",
        d,
    ]);
    let shown = ok(&["runs", "show", &id, "--dir", d]);
    assert!(
        !shown.contains('\u{1b}'),
        "no terminal escapes reach it: {shown:?}"
    );
    let raw = ok(&["runs", "show", &id, "--format", "json", "--dir", d]);
    assert!(
        raw.contains("stop\\u001b[2J"),
        "stored as given, escaped in JSON: {raw}"
    );
    let story = ok(&["runs", "explain", &id, "--dir", d]);
    assert!(
        !story.contains('\u{1b}') && story.contains("asked us to stop"),
        "{story:?}"
    );
    assert!(shown.contains("exited (cancelled)"), "{shown}");
    assert!(
        shown.contains("cancelled by nurture runs cancel") && shown.contains("asked us to stop"),
        "{shown}"
    );
    assert!(
        shown.contains("\"by_hand\"") && shown.contains("VIP"),
        "{shown}"
    );
    refused(
        &["runs", "cancel", &id, "--reason", "again", "--dir", d],
        "has ended already",
    );
    refused(
        &["runs", "list", "--workflow", "nope", "--dir", d],
        "no workflow `nope`",
    );

    // The same through the HTTP API.
    let port = crate::util::free_port();
    let key = "test-key-0123456789abcdef0123456789";
    let mut server = Command::new(env!("CARGO_BIN_EXE_nurture"))
        .args(["run", d, "--listen", &format!("127.0.0.1:{port}")])
        .env("NURTURE_API_KEY", key)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    rt().block_on(async {
        let http = reqwest::Client::new();
        let up = || async { http.get(format!("{base}/healthz")).send().await.is_ok() };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !up().await {
            assert!(Instant::now() < deadline, "the server did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let post = |path: &str, body: Value| {
            http.post(format!("{base}{path}"))
                .bearer_auth(key)
                .json(&body)
                .send()
        };
        let r = post(
            "/v1/runs",
            json!({"workflow": "w", "contact": "ana", "reason": "api test"}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), 201);
        let v: Value = r.json().await.unwrap();
        let run = v["run"]["id"].as_str().unwrap().to_string();
        assert_ne!(run, id);
        let again = post(
            "/v1/runs",
            json!({"workflow": "w", "contact": "ana", "reason": "x"}),
        )
        .await
        .unwrap();
        assert_eq!(again.status(), 409);
        let cancel = format!("/v1/runs/{run}/cancel");
        assert_eq!(
            post(&cancel, json!({"reason": "done"}))
                .await
                .unwrap()
                .status(),
            200
        );
        assert_eq!(
            post(&cancel, json!({"reason": "done"}))
                .await
                .unwrap()
                .status(),
            409
        );
        let ghost = post("/v1/runs/ghost/cancel", json!({"reason": "x"}))
            .await
            .unwrap();
        assert_eq!(ghost.status(), 404);
        let no_reason = post(&cancel, json!({"reason": " "})).await.unwrap();
        assert_eq!(no_reason.status(), 422);
        let unknown_key = post(&cancel, json!({"reason": "x", "sql": "drop"}))
            .await
            .unwrap();
        assert_eq!(unknown_key.status(), 400);
        let r = http
            .post(format!("{base}{cancel}"))
            .json(&json!({"reason": "no key"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    });
    stop(&mut server);
}

/// Pausing a workflow (CLI) reaches the running scheduler: nobody enrols, a run's due
/// timer is held, and so is a send queued before the pause; resumed, they go out (late).
/// The same through the HTTP API, and `enabled: false` in the file pauses it too.
#[test]
fn a_paused_workflow_enrols_nobody_and_holds_timers_and_sends_until_resumed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
    let (port, seen) = crate::util::http_receiver(ok);
    let hits = move || seen.lock().unwrap().values().sum::<usize>();
    let workflow = format!("workflow: w\ntrigger: {{ event: form.submitted }}\nreentry: always\nsteps:\n  - id: hi\n    webhook: {{ url: \"http://127.0.0.1:{port}/hi\" }}\n  - id: pause\n    wait: 6s\n  - id: bye\n    webhook: {{ url: \"http://127.0.0.1:{port}/bye\" }}\n");
    project(dir, "[egress]\nallow = [\"127.0.0.1\"]\n", &workflow);
    let d = dir.to_str().unwrap();
    let api_port = crate::util::free_port();
    let key = "test-key-0123456789abcdef0123456789";
    let mut server = Command::new(env!("CARGO_BIN_EXE_nurture"))
        .args([
            "run",
            d,
            "--listen",
            &format!("127.0.0.1:{api_port}"),
            "--poll-ms",
            "100",
        ])
        .env("NURTURE_API_KEY", key)
        .env("NURTURE_HOLD_SECS", "1")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    send_event(
        dir,
        r#"{"id":"a","type":"form.submitted","email":"ana@example.com"}"#,
    );
    eventually("ana's first webhook", || (hits() == 1).then_some(()));
    let o = nurture_in(
        dir,
        &[
            "workflows",
            "pause",
            "w",
            "--reason",
            "fixing a typo",
            "--dir",
            d,
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    // The scheduler sees the pause within 2 s, before ana's timer (6 s) is due; wait
    // past it.
    std::thread::sleep(Duration::from_millis(7000));
    send_event(
        dir,
        r#"{"id":"b","type":"form.submitted","email":"bo@example.com"}"#,
    );
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(hits(), 1, "nothing goes out while paused");
    let list = nurture_in(dir, &["workflows", "list", "--dir", d, "--format", "json"]);
    let rows: Vec<Value> = serde_json::from_slice(&list.stdout).unwrap();
    assert!(
        rows[0]["paused"]
            .as_str()
            .unwrap()
            .contains("fixing a typo"),
        "{rows:?}"
    );
    assert_eq!(rows[0]["open_runs"], 1, "bo was not enrolled: {rows:?}");
    let o = nurture_in(dir, &["workflows", "resume", "w", "--dir", d]);
    assert!(o.status.success(), "{}", text(&o));
    eventually("ana's held step after the resume", || {
        (hits() == 2).then_some(())
    });
    // The same controls through the HTTP API.
    let base = format!("http://127.0.0.1:{api_port}");
    rt().block_on(async {
        let http = reqwest::Client::new();
        let post = |path: &str, body: Value| {
            http.post(format!("{base}{path}"))
                .bearer_auth(key)
                .json(&body)
                .send()
        };
        let r = post("/v1/workflows/w/pause", json!({"reason": "api"}))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["paused"], true);
        let r = post("/v1/workflows/nope/pause", json!({"reason": "api"}))
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        let r = post("/v1/workflows/w/resume", json!({"reason": "api"}))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    });
    stop(&mut server);
    // `enabled: false` in the file: listed as paused without any command.
    let off = workflow.replace("reentry: always\n", "reentry: always\nenabled: false\n");
    std::fs::write(dir.join("workflows/w.yaml"), off).unwrap();
    let list = nurture_in(dir, &["workflows", "list", "--dir", d]);
    assert!(
        text(&list).contains("paused `enabled: false`"),
        "{}",
        text(&list)
    );
}

/// A send queued before its workflow was paused is held by the deliverer (deferred, not
/// attempted, with why) and goes out once the workflow is resumed.
#[test]
fn a_send_queued_before_the_pause_is_held_until_the_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
    let (port, seen) = crate::util::http_receiver(ok);
    let workflow = format!("workflow: w\ntrigger: {{ event: form.submitted }}\nsteps:\n  - id: hi\n    webhook: {{ url: \"http://127.0.0.1:{port}/hi\" }}\n");
    project(dir, "[egress]\nallow = [\"127.0.0.1\"]\n", &workflow);
    let loaded = nurture_core::project::load(dir);
    let project = std::sync::Arc::new(loaded.project.unwrap());
    let url = format!("sqlite://{}", dir.join("t.db").display());
    rt().block_on(async {
        let store = nurture_server::open_store(&url).await.unwrap();
        let engine = std::sync::Arc::new(
            nurture_engine::Engine::new(project.clone(), store.clone())
                .holding_for(chrono::Duration::seconds(5)),
        );
        let now = Utc::now();
        let event = event("a", "form.submitted", "ana@example.com", now);
        engine.ingest(&[event], now).await.unwrap();
        engine.tick(now).await.unwrap();
        engine
            .set_paused("w", true, "test", "hold it", now)
            .await
            .unwrap();
        let by_hand = engine.start_run("w", "nobody", "test", "x", now).await;
        assert!(
            matches!(by_hand, Err(nurture_engine::manual::ManualError::Paused(_))),
            "{by_hand:?}"
        );
        let signer = nurture_channels::email::Signer::for_project(dir, None).unwrap();
        let deliverer = nurture_server::compose::deliverer(
            &project,
            store.clone(),
            &signer,
            "http://127.0.0.1:1",
        )
        .unwrap()
        .holding(engine.clone());
        assert_eq!(deliverer.deliver_due(now, 100).await.unwrap(), 1);
        assert_eq!(seen.lock().unwrap().len(), 0, "not attempted while paused");
        let filter = nurture_store::OutboxFilter {
            state: Some(nurture_store::OutboxState::Deferred),
            limit: 10,
            ..Default::default()
        };
        let held = store.list_outbox(&filter).await.unwrap();
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].reason.as_deref(), Some("workflow `w` is paused"));
        engine
            .set_paused("w", false, "test", "go", now)
            .await
            .unwrap();
        let later = now + chrono::Duration::seconds(6);
        assert_eq!(deliverer.deliver_due(later, 100).await.unwrap(), 1);
        assert_eq!(seen.lock().unwrap().values().sum::<usize>(), 1);
    });
}

/// Quiet hours stop a step at its email, after a score action: the score is taken back
/// and the whole step runs once when they end (it was added twice before).
#[test]
fn a_step_held_by_quiet_hours_midway_is_applied_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    project(dir, "", "workflow: w\ntimezone: UTC\nquiet_hours: { from: \"20:00\", to: \"09:00\" }\ntrigger: { event: form.submitted }\nsteps:\n  - id: both\n    actions:\n      - score: +5\n      - send_email: hello\n");
    let project = std::sync::Arc::new(nurture_core::project::load(dir).project.unwrap());
    let url = format!("sqlite://{}", dir.join("t.db").display());
    let night = Utc.with_ymd_and_hms(2026, 3, 2, 22, 0, 0).unwrap();
    rt().block_on(async {
        let store = nurture_server::open_store(&url).await.unwrap();
        let engine = std::sync::Arc::new(nurture_engine::Engine::new(project, store.clone()));
        let event = event("q", "form.submitted", "q@example.test", night);
        let out = engine.ingest(&[event], night).await.unwrap();
        engine.tick(night).await.unwrap();
        let id = out[0].contact.clone().unwrap();
        assert_eq!(
            store.contact(&id).await.unwrap().unwrap().score,
            0,
            "held whole"
        );
        let morning = Utc.with_ymd_and_hms(2026, 3, 3, 9, 0, 1).unwrap();
        engine.tick(morning).await.unwrap();
        assert_eq!(store.contact(&id).await.unwrap().unwrap().score, 5);
        let runs = store.runs_of_contact(&id).await.unwrap();
        assert_eq!(runs[0].status, RunStatus::Completed);
        let journal = store.journal(&runs[0].id).await.unwrap();
        let emails = journal
            .iter()
            .filter(|j| j.data["effect"] == "email")
            .count();
        let scores = journal
            .iter()
            .filter(|j| j.data["effect"] == "score")
            .count();
        assert_eq!((emails, scores), (1, 1), "{journal:?}");
    });
}

/// The event a `wait_for` of a paused workflow awaits comes while paused: the run keeps
/// it and stays put (nothing after the wait runs), then takes the event path once
/// resumed; a workflow paused and then removed from the project can still be resumed.
#[test]
fn an_event_for_a_paused_wait_for_is_kept_and_followed_on_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    project(dir, "", "workflow: w\ntrigger: { event: form.submitted }\nsteps:\n  - id: await\n    wait_for: { event: trial.used, timeout: 7d }\n    on_timeout: late\n  - id: used\n    tag: [used]\n    next: end\n  - id: late\n    tag: [late]\n");
    let project = std::sync::Arc::new(nurture_core::project::load(dir).project.unwrap());
    let url = format!("sqlite://{}", dir.join("t.db").display());
    let hold = chrono::Duration::seconds(30);
    rt().block_on(async {
        let store = nurture_server::open_store(&url).await.unwrap();
        let engine = std::sync::Arc::new(
            nurture_engine::Engine::new(project, store.clone()).holding_for(hold),
        );
        let t0 = Utc::now();
        let out = engine
            .ingest(&[event("a", "form.submitted", "ana@example.com", t0)], t0)
            .await
            .unwrap();
        engine.tick(t0).await.unwrap();
        let id = out[0].contact.clone().unwrap();
        engine
            .set_paused("w", true, "test", "hold", t0)
            .await
            .unwrap();
        let t1 = t0 + chrono::Duration::seconds(1);
        engine
            .ingest(&[event("b", "trial.used", "ana@example.com", t1)], t1)
            .await
            .unwrap();
        engine.tick(t1).await.unwrap();
        let t2 = t1 + hold + chrono::Duration::seconds(1);
        engine.tick(t2).await.unwrap();
        let run = store.runs_of_contact(&id).await.unwrap().remove(0);
        assert_eq!(run.status, RunStatus::Waiting, "held while paused");
        assert!(store.contact(&id).await.unwrap().unwrap().tags.is_empty());
        let journal = store.journal(&run.id).await.unwrap();
        assert!(
            journal.iter().any(|j| j.kind.as_str() == "event_held"),
            "{journal:?}"
        );
        engine
            .set_paused("w", false, "test", "go", t2)
            .await
            .unwrap();
        engine
            .tick(t2 + hold + chrono::Duration::seconds(1))
            .await
            .unwrap();
        let run = store.runs_of_contact(&id).await.unwrap().remove(0);
        assert_eq!(run.status, RunStatus::Completed);
        let tags = store.contact(&id).await.unwrap().unwrap().tags;
        assert_eq!(
            tags.into_iter().collect::<Vec<_>>(),
            ["used"],
            "the event path, not the timeout"
        );

        // Paused, then removed from the project: resume still works, pause does not.
        engine
            .set_paused("w", true, "test", "again", t2)
            .await
            .unwrap();
        let other = tmp.path().join("other");
        project_at(&other);
        let p2 = std::sync::Arc::new(nurture_core::project::load(&other).project.unwrap());
        let e2 = nurture_engine::Engine::new(p2, store.clone());
        assert!(e2.set_paused("w", true, "test", "x", t2).await.is_err());
        e2.set_paused("w", false, "test", "removed", t2)
            .await
            .unwrap();
        let controls = store.controls().await.unwrap();
        assert!(controls.iter().all(|c| !c.paused), "{controls:?}");
    });
}

/// A project with only a workflow `v`.
fn project_at(dir: &Path) {
    project(
        dir,
        "",
        "workflow: v\ntrigger: { event: form.submitted }\nsteps:\n  - id: t\n    tag: [x]\n",
    );
    std::fs::rename(dir.join("workflows/w.yaml"), dir.join("workflows/v.yaml")).unwrap();
}
