//! `nurture check`: the example project's policies hold; a project built to break them
//! fails with a shrunk counterexample.

use crate::util::{nurture, repo};

#[test]
fn the_example_project_passes_its_policies() {
    let out = nurture(&["check", repo().join("workflows").to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("all 4 policies hold"), "{text}");
}

/// Run ids are random: replaced by `run-[id]`.
fn redact_runs(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("run-") {
        out.push_str(&rest[..i]);
        out.push_str("run-[id]");
        let tail = &rest[i + 4..];
        let n = tail
            .find(|c: char| !c.is_ascii_hexdigit())
            .unwrap_or(tail.len());
        rest = &tail[n..];
    }
    out.push_str(rest);
    out
}

#[test]
fn a_broken_project_fails_with_shrunk_counterexamples() {
    let dir = repo().join("tests/fixtures/check-broken");
    let out = nurture(&["check", dir.to_str().unwrap(), "--population", "12"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("violation of max_messages"), "{text}");
    assert!(text.contains("violation of never"), "{text}");
    insta::assert_snapshot!("check_broken_human", redact_runs(&text));
}

#[test]
fn json_names_each_kind_and_the_smallest_event_sequence() {
    let dir = repo().join("tests/fixtures/check-broken");
    let out = nurture(&[
        "check",
        dir.to_str().unwrap(),
        "--population",
        "12",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let kinds: Vec<&str> = v["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["max_messages", "never"]);
    // Four emails in a week need only the one trial form; the newsletter needs none.
    let caps = &v["violations"][0]["counterexample"];
    assert_eq!(caps["shrunk"], true);
    assert_eq!(caps["events"].as_array().unwrap().len(), 1, "{caps}");
    let consent = &v["violations"][1]["counterexample"];
    assert_eq!(consent["events"].as_array().unwrap().len(), 0, "{consent}");
    assert_ne!(consent["contact"]["consent"], "opted_in");
}

#[test]
fn an_unknown_segment_in_policies_is_a_diagnostic() {
    let tmp = tempfile::tempdir().unwrap();
    let src = repo().join("tests/fixtures/check-broken");
    for f in ["nurture.toml", "segments.yaml"] {
        std::fs::copy(src.join(f), tmp.path().join(f)).unwrap();
    }
    std::fs::create_dir(tmp.path().join("workflows")).unwrap();
    std::fs::write(
        tmp.path().join("policies.yaml"),
        "- max_messages: { per: 7d, count: 3 }\n- no_step_unreachable_for: { segment: evryone }\n- send_window: { local: \"8-20\" }\n",
    )
    .unwrap();
    let out = nurture(&["validate", tmp.path().to_str().unwrap()]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("policies.yaml:2:"), "{text}");
    assert!(text.contains("unknown segment `evryone`"), "{text}");
    assert!(text.contains("did you mean `everyone`?"), "{text}");
    assert!(text.contains("policies.yaml:3:"), "{text}");
}
