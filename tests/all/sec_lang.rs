//! Issue 16, the language layers, with real `nurture` processes: CEL conditions, YAML
//! aliases and templates are bounded (refused with a diagnostic, or failing one send),
//! and links out of the project folder are not followed.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::free_port;

/// Runs `nurture ARGS` in `dir`, killed after `limit`: (output, time taken).
fn nurture_in(dir: &Path, args: &[&str], limit: Duration) -> (Output, Duration) {
    let start = Instant::now();
    // Output goes to files: a full pipe would stall the child.
    let (stdout, stderr) = (tempfile::tempfile().unwrap(), tempfile::tempfile().unwrap());
    let mut child = Command::new(env!("CARGO_BIN_EXE_nurture"))
        .args(args)
        .current_dir(dir)
        .stdout(stdout.try_clone().unwrap())
        .stderr(stderr.try_clone().unwrap())
        .spawn()
        .expect("start nurture");
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            child.kill().unwrap();
            panic!("nurture {args:?} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |mut f: std::fs::File| {
        use std::io::Seek;
        let mut v = Vec::new();
        f.rewind().unwrap();
        f.read_to_end(&mut v).unwrap();
        v
    };
    let out = Output {
        status,
        stdout: read(stdout),
        stderr: read(stderr),
    };
    (out, start.elapsed())
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A project with one workflow file `w.yaml` holding `workflow` and the given templates.
fn project(dir: &Path, workflow: &str, templates: &[(&str, &str)]) {
    std::fs::create_dir_all(dir.join("workflows")).unwrap();
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(
        dir.join("nurture.toml"),
        "[sender]\nfrom = \"Sec <sec@example.test>\"\n",
    )
    .unwrap();
    std::fs::write(dir.join("workflows/w.yaml"), workflow).unwrap();
    for (name, body) in templates {
        std::fs::write(dir.join(format!("templates/{name}.html")), body).unwrap();
    }
}

/// A workflow whose branch condition is `1+1+...+1 == N` with `terms` terms.
fn long_condition(terms: usize) -> String {
    let sum = vec!["1"; terms].join("+");
    format!(
        "workflow: w\ntrigger: {{ event: signup.done }}\nsteps:\n  - id: b\n    branch:\n      - if: '{sum} == {terms}'\n        next: t\n      - else: t\n  - id: t\n    tag: [x]\n"
    )
}

/// Exited with status 1 (refused), not killed by a signal (a crash).
fn assert_refused(out: &Output) {
    assert_eq!(out.status.code(), Some(1), "{}", text(out));
}

#[test]
fn cel_condition_of_20000_terms_is_refused_by_validate_and_run() {
    let tmp = tempfile::tempdir().unwrap();
    project(tmp.path(), &long_condition(20_000), &[]);
    let (out, _) = nurture_in(tmp.path(), &["validate", "."], Duration::from_secs(30));
    assert_refused(&out);
    let all = text(&out);
    assert!(
        all.contains("error[N0011]: expression is too large"),
        "{all}"
    );
    assert!(all.contains("workflows/w.yaml:6:"), "{all}");
    assert!(all.contains("help: split the condition"), "{all}");
    // `run` loads the same way: the poison pill is refused before anything starts.
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let (out, _) = nurture_in(
        tmp.path(),
        &["run", ".", "--listen", &listen],
        Duration::from_secs(30),
    );
    // Refused with an error status, not killed by a signal.
    assert!(out.status.code().is_some_and(|c| c != 0), "{}", text(&out));
    assert!(
        text(&out).contains("expression is too large"),
        "{}",
        text(&out)
    );
}

#[test]
fn cel_condition_of_100000_terms_does_not_crash_validate() {
    let tmp = tempfile::tempdir().unwrap();
    project(tmp.path(), &long_condition(100_000), &[]);
    let (out, _) = nurture_in(tmp.path(), &["validate", "."], Duration::from_secs(30));
    assert_refused(&out);
    assert!(
        text(&out).contains("expression is too large"),
        "{}",
        text(&out)
    );
}

#[test]
fn cel_condition_nested_too_deep_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let deep = format!("{}true{}", "(".repeat(2000), ")".repeat(2000));
    let wf = long_condition(1).replace("1 == 1", &deep);
    project(tmp.path(), &wf, &[]);
    let (out, _) = nurture_in(tmp.path(), &["validate", "."], Duration::from_secs(30));
    assert_refused(&out);
    assert!(
        text(&out).contains("brackets nested deeper than"),
        "{}",
        text(&out)
    );
}

/// The classic billion laughs, 9 levels of 10 aliases (10^9 strings when expanded).
fn billion_laughs() -> String {
    let mut s = String::from("lol0: &a0 [\"lol\"]\n");
    for i in 1..=9 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        s.push_str(&format!("lol{i}: &a{i} [{refs}]\n"));
    }
    s
}

/// The peak resident memory (VmHWM) of a running process, in kB.
fn peak_kb(child: &Child) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn yaml_alias_bomb_is_refused_quickly_with_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let bomb = format!("workflow: w\n{}steps: []\n", billion_laughs());
    assert!(bomb.len() < 1000, "{} bytes", bomb.len());
    project(tmp.path(), &bomb, &[]);
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nurture"))
        .args(["validate", "."])
        .current_dir(tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        peak = peak.max(peak_kb(&child).unwrap_or(0));
        if start.elapsed() > Duration::from_secs(20) {
            child.kill().unwrap();
            panic!("validate still running after 20 s, {peak} kB");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().unwrap();
    assert_refused(&out);
    let all = text(&out);
    assert!(
        all.contains("error[N0001]: invalid YAML: aliases expand too much"),
        "{all}"
    );
    assert!(all.contains("workflows/w.yaml:"), "{all}");
    assert!(
        all.contains("help: anchors and aliases may repeat"),
        "{all}"
    );
    assert!(peak < 300_000, "validate peaked at {peak} kB");
}

/// A template whose three nested loops over a literal string run 10^12 times.
const LOOPING_TEMPLATE: &str = "---\nsubject: Loop\n---\n{% set s = \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\" * 100 %}{% for a in s %}{% for b in s %}{% for c in s %}{{ a }}{% endfor %}{% endfor %}{% endfor %}\n";

/// Loops over a literal that print a lot: the output cap stops them before the fuel.
const WIDE_TEMPLATE: &str =
    "---\nsubject: Wide\n---\n{% for a in \"x\" * 3000 %}{{ \"y\" * 9999 }}{% endfor %}\n";

const SEND_WORKFLOW: &str = "workflow: w\ntrigger: { event: signup.done }\nsteps:\n  - id: mail\n    send_email: loop\n  - id: wide\n    send_email: wide\n  - id: done\n    tag: [sent]\n";

fn get(port: u16, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The (state, last_error) of every email of the outbox, once none is pending.
fn settled_emails(db: &Path, limit: Duration) -> Vec<(String, String)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = format!("sqlite://{}", db.display());
    let start = Instant::now();
    loop {
        let rows: Vec<(String, String)> = rt.block_on(async {
            let Ok(pool) = sqlx::SqlitePool::connect(&url).await else {
                return Vec::new();
            };
            sqlx::query_as::<_, (String, Option<String>)>(
                "SELECT state, last_error FROM outbox WHERE kind = 'email' ORDER BY key",
            )
            .fetch_all(&pool)
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|(s, e)| (s, e.unwrap_or_default()))
            .collect()
        });
        if rows.len() == 2 && rows.iter().all(|(s, _)| s != "pending") {
            return rows;
        }
        assert!(start.elapsed() < limit, "emails not settled: {rows:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn looping_template_fails_its_send_not_the_process() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    project(
        dir,
        SEND_WORKFLOW,
        &[("loop", LOOPING_TEMPLATE), ("wide", WIDE_TEMPLATE)],
    );
    let (out, _) = nurture_in(dir, &["validate", "."], Duration::from_secs(30));
    assert!(out.status.success(), "{}", text(&out));
    std::fs::write(
        dir.join("events.jsonl"),
        "{\"id\":\"e1\",\"type\":\"signup.done\",\"email\":\"a@example.com\"}\n",
    )
    .unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nurture"))
        .args(["run", ".", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--poll-ms", "100"])
        .current_dir(dir)
        .env("NURTURE_API_KEY", "test-key-0123456789abcdef0123456789")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let (out, _) = nurture_in(
        dir,
        &["events", "send", "events.jsonl", "--dir", "."],
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", text(&out));
    let emails = settled_emails(&dir.join("nurture.db"), Duration::from_secs(60));
    let alive = child.try_wait().unwrap().is_none();
    let health = get(port, "/healthz");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(alive, "nurture run died");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let reasons: Vec<&str> = emails.iter().map(|(_, e)| e.as_str()).collect();
    assert!(emails.iter().all(|(s, _)| s == "failed"), "{emails:?}");
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("template `loop`: rendering stopped after")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("template `wide`: the rendered text would be larger")),
        "{reasons:?}"
    );
}

#[test]
fn email_preview_stops_on_a_looping_template() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    project(
        dir,
        SEND_WORKFLOW,
        &[("loop", LOOPING_TEMPLATE), ("wide", WIDE_TEMPLATE)],
    );
    std::fs::write(
        dir.join("contacts.jsonl"),
        "{\"email\":\"a@example.com\"}\n",
    )
    .unwrap();
    let (out, _) = nurture_in(
        dir,
        &["contacts", "import", "contacts.jsonl", "--dir", "."],
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", text(&out));
    let (out, took) = nurture_in(
        dir,
        &[
            "email",
            "preview",
            "loop",
            "--contact",
            "a@example.com",
            "--dir",
            ".",
        ],
        Duration::from_secs(60),
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("rendering stopped after"),
        "{}",
        text(&out)
    );
    assert!(took < Duration::from_secs(30), "{took:?}");
}

#[test]
fn workflow_link_out_of_the_project_is_refused_without_its_content() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("project");
    project(&dir, &long_condition(1), &[]);
    let secret = tmp.path().join("secret.yaml");
    std::fs::write(&secret, "AWS_SECRET=hunter2-do-not-print\nmore: text\n").unwrap();
    std::os::unix::fs::symlink(&secret, dir.join("workflows/leak.yaml")).unwrap();
    std::os::unix::fs::symlink("/proc/self/environ", dir.join("workflows/env.yaml")).unwrap();
    let (out, _) = nurture_in(&dir, &["validate", "."], Duration::from_secs(30));
    assert_refused(&out);
    let all = text(&out);
    assert!(!all.contains("hunter2"), "{all}");
    assert!(!all.contains("AWS_SECRET"), "{all}");
    assert!(!all.contains("PATH="), "{all}");
    assert!(
        all.contains("workflows/leak.yaml` leads outside the project folder"),
        "{all}"
    );
    assert!(all.contains("workflows/env.yaml"), "{all}");
    // The same in JSON.
    let (out, _) = nurture_in(
        &dir,
        &["validate", ".", "--format", "json"],
        Duration::from_secs(30),
    );
    assert!(!text(&out).contains("hunter2"), "{}", text(&out));
}

#[test]
fn template_link_out_of_the_project_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("project");
    project(&dir, &long_condition(1), &[]);
    let secret = tmp.path().join("t.html");
    std::fs::write(
        &secret,
        "---\nsubject: hunter2-do-not-print {{ nope }}\n---\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(&secret, dir.join("templates/t.html")).unwrap();
    let (out, _) = nurture_in(&dir, &["validate", "."], Duration::from_secs(30));
    assert_refused(&out);
    let all = text(&out);
    assert!(!all.contains("hunter2"), "{all}");
    assert!(all.contains("leads outside the project folder"), "{all}");
}
