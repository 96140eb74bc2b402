//! `nurture graph`: DOT that Graphviz renders, and Mermaid that is well-formed.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::util::{nurture, repo};

fn example_files() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(repo().join("workflows/workflows"))
        .unwrap()
        .map(|e| {
            e.unwrap()
                .path()
                .strip_prefix(repo())
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    v.sort();
    v
}

#[test]
fn dot_output_renders_with_graphviz() {
    // The test command installs graphviz; without `dot` this test fails on purpose.
    for file in example_files() {
        let out = nurture(&["graph", &file, "--format", "dot"]);
        assert!(out.status.success(), "{file}");
        let mut dot = Command::new("dot")
            .arg("-Tsvg")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("graphviz `dot` is installed (the README's test command installs it)");
        dot.stdin.take().unwrap().write_all(&out.stdout).unwrap();
        let res = dot.wait_with_output().unwrap();
        assert!(
            res.status.success(),
            "{file}: dot failed: {}",
            String::from_utf8_lossy(&res.stderr)
        );
        let svg = String::from_utf8_lossy(&res.stdout);
        assert!(svg.contains("<svg"), "{file}");
    }
}

#[test]
fn dot_labels_edges_with_yes_no_timeout_and_variants() {
    let ebook = nurture(&["graph", "workflows/workflows/ebook-nurture.yaml"]);
    let dot = String::from_utf8_lossy(&ebook.stdout);
    assert!(
        dot.contains("\"wait-open\" -> \"nudge\" [label=\"timeout\"]"),
        "{dot}"
    );
    assert!(
        dot.contains("\"wait-open\" -> \"week-later\" [label=\"event\"]"),
        "{dot}"
    );
    assert!(
        dot.contains("\"qualify\" -> \"newsletter\" [label=\"no\"]"),
        "{dot}"
    );
    assert!(dot.contains("label=\"yes: contact.score >= 50\""), "{dot}");
    let ab = nurture(&["graph", "workflows/workflows/ab-subject-test.yaml"]);
    let dot = String::from_utf8_lossy(&ab.stdout);
    assert!(dot.contains("label=\"variant question (50)\""), "{dot}");
}

/// Mermaid flowchart grammar, for the statements we emit: a header, node declarations
/// with one shape each, and edges between declared nodes with an optional quoted label.
#[test]
fn mermaid_output_is_well_formed() {
    let node = regex_lite(
        r#"^  ([A-Za-z_][A-Za-z0-9_]*)(\(\["[^"]*"\]\)|\["[^"]*"\]|\{"[^"]*"\}|\[/"[^"]*"/\]|\(\("[^"]*"\)\))$"#,
    );
    let edge =
        regex_lite(r#"^  ([A-Za-z_][A-Za-z0-9_]*) -->(\|"[^"|]*"\|)? ([A-Za-z_][A-Za-z0-9_]*)$"#);
    for file in example_files() {
        let out = nurture(&["graph", &file, "--format", "mermaid"]);
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("flowchart TD"), "{file}");
        let mut declared = std::collections::HashSet::new();
        for line in lines {
            if let Some(c) = node(line) {
                assert!(
                    declared.insert(c[0].clone()),
                    "{file}: {line} declared twice"
                );
            } else if let Some(c) = edge(line) {
                assert!(
                    declared.contains(&c[0]),
                    "{file}: edge from undeclared node: {line}"
                );
                assert!(
                    declared.contains(&c[2]),
                    "{file}: edge to undeclared node: {line}"
                );
            } else {
                panic!("{file}: not a Mermaid statement we emit: {line:?}");
            }
        }
    }
}

/// A tiny matcher over std only: compiles `pattern` with the `regex` crate that cel
/// already depends on.
fn regex_lite(pattern: &str) -> impl Fn(&str) -> Option<Vec<String>> {
    let re = regex::Regex::new(pattern).unwrap();
    move |s| {
        re.captures(s).map(|c| {
            (1..c.len())
                .map(|i| c.get(i).map_or(String::new(), |m| m.as_str().to_string()))
                .collect()
        })
    }
}
