//! Command-line conventions (issue 23): shell completions, `-` for standard input, a
//! quiet end on a closed pipe, and exit status 1 for an invalid project in every command
//! that needs a valid one.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// `nurture ARGS` run from `cwd` with `input` on its standard input.
fn nurture_with_stdin(cwd: &Path, args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nurture"))
        .args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A project made by `nurture init` in `tmp/p`.
fn init(tmp: &Path) -> std::path::PathBuf {
    let o = nurture_with_stdin(tmp, &["init", "p"], "");
    assert!(o.status.success(), "{}", text(&o));
    tmp.join("p")
}

#[test]
fn completions_are_printed_for_bash_zsh_and_fish() {
    let tmp = tempfile::tempdir().unwrap();
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef nurture"),
        ("fish", "complete -c nurture"),
    ] {
        let o = crate::util::nurture(&["completions", shell]);
        assert!(o.status.success(), "{shell}: {}", text(&o));
        let script = String::from_utf8(o.stdout).unwrap();
        assert!(script.contains(marker), "{shell}: no {marker:?}");
        for sub in ["validate", "simulate", "deploy", "completions"] {
            assert!(script.contains(sub), "{shell}: no {sub}");
        }
        std::fs::write(tmp.path().join(shell), &script).unwrap();
    }
    // The bash script loads in bash and registers the completion for `nurture`.
    let o = Command::new("bash")
        .arg("-c")
        .arg("source \"$1\" && complete -p nurture")
        .arg("-")
        .arg(tmp.path().join("bash"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("nurture"));
}

#[test]
fn contacts_import_reads_csv_and_json_lines_from_stdin() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = init(tmp.path());
    let csv = "id,email,first_name\nana,ana@example.com,Ana\nbad,not-an-address,Bo\n";
    let o = nurture_with_stdin(
        &dir,
        &["contacts", "import", "-", "--input-format", "csv"],
        csv,
    );
    // The good row is kept, the bad one named by line, on <stdin>.
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("<stdin>:3: rejected"), "{}", text(&o));
    assert!(text(&o).contains("1 created"), "{}", text(&o));
    // Without --input-format, stdin's first line tells: JSON Lines here, then CSV.
    let jsonl = "{\"id\": \"kim\", \"email\": \"kim@example.com\"}\n";
    let o = nurture_with_stdin(
        &dir,
        &["contacts", "import", "-", "--format", "json"],
        jsonl,
    );
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["created"], 1, "{v}");
    let o = nurture_with_stdin(
        &dir,
        &["contacts", "import", "-"],
        "email\nlee@example.com\n",
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("1 created"), "{}", text(&o));
    let o = nurture_with_stdin(&dir, &["contacts", "show", "lee@example.com"], "");
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn events_send_and_simulate_read_stdin() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = init(tmp.path());
    let events = "{\"id\": \"e-1\", \"type\": \"page.visited\", \"email\": \"ana@example.com\", \"data\": {\"url\": \"/pricing\"}}\nnot json\n";
    let o = nurture_with_stdin(&dir, &["events", "send", "-"], events);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("<stdin>:2: rejected"), "{}", text(&o));
    assert!(text(&o).contains("1 accepted"), "{}", text(&o));

    let repo = crate::util::repo();
    let contacts = std::fs::read_to_string(repo.join("workflows/sample/contacts.jsonl")).unwrap();
    let from_file = crate::util::nurture(&[
        "simulate",
        "workflows",
        "--contacts",
        "workflows/sample/contacts.jsonl",
        "--events",
        "workflows/sample/events.jsonl",
    ]);
    let from_stdin = nurture_with_stdin(
        &repo,
        &[
            "simulate",
            "workflows",
            "--contacts",
            "-",
            "--events",
            "workflows/sample/events.jsonl",
        ],
        &contacts,
    );
    assert!(from_stdin.status.success(), "{}", text(&from_stdin));
    assert!(!from_stdin.stdout.is_empty());
    assert_eq!(from_stdin.stdout, from_file.stdout);
    // Both from one stdin cannot be.
    let o = nurture_with_stdin(
        &repo,
        &["simulate", "workflows", "--contacts", "-", "--events", "-"],
        "",
    );
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("cannot both read standard input"));
}

#[test]
fn runs_replay_reads_a_recording_from_stdin_with_its_size_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = init(tmp.path());
    let o = nurture_with_stdin(&dir, &["runs", "replay", "--file", "-"], "{not a recording");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("error: <stdin>:"), "{}", text(&o));
    // 64 MiB and one byte more is refused before it is parsed.
    let big = " ".repeat((64 << 20) + 1);
    let o = nurture_with_stdin(&dir, &["runs", "replay", "--file", "-"], &big);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("is over"), "{}", text(&o));
}

/// `nurture ... | head` ends quietly when `head` stops reading: the read end is closed
/// before the command writes (its output is larger than a pipe holds, so it cannot have
/// finished before), and the command must not panic (status 101).
#[test]
fn a_closed_pipe_ends_the_command_quietly_not_with_a_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = init(tmp.path());
    // Enough contacts that simulate's output is far over a pipe's 64 KiB.
    let contacts: String = (0..2000)
        .map(|i| format!("{{\"id\": \"c{i}\", \"email\": \"c{i}@example.com\", \"consent\": \"opted_in\"}}\n"))
        .collect();
    std::fs::write(dir.join("contacts.jsonl"), contacts).unwrap();
    let events: String = (0..2000)
        .map(|i| format!("{{\"id\": \"e{i}\", \"type\": \"form.submitted\", \"contact\": \"c{i}\", \"at\": \"2026-03-02T09:00:00Z\", \"data\": {{\"form\": \"signup\"}}}}\n"))
        .collect();
    std::fs::write(dir.join("events.jsonl"), events).unwrap();
    for args in [
        &[
            "simulate",
            "--contacts",
            "contacts.jsonl",
            "--events",
            "events.jsonl",
        ][..],
        &["completions", "bash"][..],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_nurture"))
            .args(args)
            .current_dir(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let o = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        use std::os::unix::process::ExitStatusExt as _;
        assert!(
            o.status.code() == Some(0) || o.status.signal() == Some(13),
            "{args:?}: {:?} {stderr}",
            o.status
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn commands_on_an_invalid_project_exit_1_like_validate() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = init(tmp.path());
    let wf = dir.join("workflows/welcome.yaml");
    let text_before = std::fs::read_to_string(&wf).unwrap();
    std::fs::write(&wf, format!("{text_before}\nbogus_key: 1\n")).unwrap();
    let validate = nurture_with_stdin(&dir, &["validate"], "");
    assert_eq!(validate.status.code(), Some(1), "{}", text(&validate));
    for args in [
        &["run", "--listen", "127.0.0.1:0"][..],
        &["deploy"][..],
        &["report"][..],
        &["contacts", "import", "-"][..],
    ] {
        let o = nurture_with_stdin(&dir, args, "{\"email\": \"a@example.com\"}\n");
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o));
        // The diagnostics themselves, with the file and line, not a bare "invalid".
        assert!(text(&o).contains("welcome.yaml:"), "{args:?}: {}", text(&o));
        assert!(
            !text(&o).contains("error: the project"),
            "{args:?}: {}",
            text(&o)
        );
    }
}
