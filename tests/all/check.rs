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

/// A population or a horizon too large to simulate in useful time is refused before
/// anything runs, saying the bound.
#[test]
fn check_refuses_a_population_or_horizon_beyond_its_bounds() {
    let dir = repo().join("workflows");
    for (flag, value, bound) in [
        ("--population", "10000000", "10000"),
        ("--horizon", "100000d", "3650d"),
    ] {
        let out = nurture(&["check", dir.to_str().unwrap(), flag, value]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(bound),
            "{flag}: {err}"
        );
    }
}

/// `send_window` and `every_run_ends_within` fail on a project that breaks them, and each
/// counterexample tells first the story of the run that broke the policy.
#[test]
fn send_window_and_run_length_fail_with_the_offending_run_told_first() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    crate::util::copy_project(&repo().join("tests/fixtures/check-broken"), &dir);
    std::fs::write(
        dir.join("policies.yaml"),
        "- send_window: { local: \"10:00-17:00\" }\n- every_run_ends_within: 2d\n",
    )
    .unwrap();
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
    let found = v["violations"].as_array().unwrap();
    let kinds: Vec<&str> = found.iter().map(|f| f["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["send_window", "every_run_ends_within"], "{v}");
    // The send outside the window is told first, not the contact's earliest run (its
    // newsletters start on the first Monday, before it submits the trial form).
    let window = &found[0]["counterexample"];
    let detail = window["detail"].as_str().unwrap();
    let from = detail
        .split(" from ")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    assert_eq!(window["runs"][0]["workflow"], from, "{window}");
    let starts: Vec<&str> = window["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["lines"][0]["at"].as_str().unwrap())
        .collect();
    assert!(starts[1..].iter().any(|s| *s < starts[0]), "{starts:?}");
    // Onboarding runs 4 days (welcome only 2): the trial form alone shows it, and its
    // story comes first although welcome started at the same instant.
    let long = &found[1]["counterexample"];
    assert_eq!(long["events"].as_array().unwrap().len(), 1, "{long}");
    assert!(found[1]["detail"].as_str().unwrap().contains("onboarding"));
    assert_eq!(long["runs"][0]["workflow"], "onboarding", "{long}");
}
