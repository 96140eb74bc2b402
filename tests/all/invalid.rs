//! The corpus of invalid projects in `tests/fixtures/invalid/`: one per error kind.
//!
//! Each workflow file states what it must produce in a header comment,
//! `# expect: CODE at LINE:COL`, written by hand; the rendered diagnostics are snapshots.

use std::path::{Path, PathBuf};

use crate::util::{nurture, render_relative, repo};

fn cases() -> Vec<PathBuf> {
    let dir = repo().join("tests/fixtures/invalid");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("fixtures")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

/// (code, line, col, file) from `# expect:` lines.
fn expectations(case: &Path) -> Vec<(String, usize, usize, PathBuf)> {
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = ["workflows", "templates"]
        .iter()
        .filter_map(|d| std::fs::read_dir(case.join(d)).ok())
        .flat_map(|rd| rd.map(|e| e.unwrap().path()))
        .collect();
    files.sort();
    for f in files {
        for line in std::fs::read_to_string(&f).unwrap().lines() {
            // `# expect:` in YAML, `{# expect: ... #}` in templates.
            let line = line.trim_end_matches(" #}");
            if let Some(rest) = line
                .strip_prefix("# expect: ")
                .or_else(|| line.strip_prefix("{# expect: "))
            {
                let (code, pos) = rest.split_once(" at ").expect("CODE at L:C");
                let (l, c) = pos.split_once(':').expect("L:C");
                out.push((
                    code.to_string(),
                    l.parse().unwrap(),
                    c.parse().unwrap(),
                    f.clone(),
                ));
            }
        }
    }
    out
}

#[test]
fn every_error_code_has_a_fixture() {
    let mut seen = std::collections::BTreeSet::new();
    for case in cases() {
        for (code, ..) in expectations(&case) {
            seen.insert(code);
        }
    }
    let documented = std::fs::read_to_string(repo().join("docs/errors.md")).unwrap();
    for code in [
        "N0001", "N0002", "N0003", "N0004", "N0005", "N0010", "N0011", "N0012", "N0013", "N0014",
        "N0020", "N0021", "N0022", "N0023", "N0024", "N0025", "N0026", "N0030", "N0031", "N0032",
        "N0033", "N0034", "N0035", "N0036", "N0037",
    ] {
        assert!(seen.contains(code), "no invalid fixture expects {code}");
        assert!(
            documented.contains(&format!("## {code}")),
            "docs/errors.md has no section for {code}"
        );
    }
}

#[test]
fn each_fixture_reports_its_error_at_the_right_place() {
    for case in cases() {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let loaded = nurture_core::project::load(&case);
        assert!(loaded.project.is_none(), "{name}: loaded despite errors");
        let expected = expectations(&case);
        assert!(!expected.is_empty(), "{name}: no `# expect:` line");
        for (code, line, col, file) in expected {
            let hit = loaded.diagnostics.iter().any(|d| {
                d.code.as_str() == code
                    && d.span.line == line
                    && d.span.col == col
                    && d.file == file
            });
            assert!(
                hit,
                "{name}: expected {code} at {}:{line}:{col}, got:\n{}",
                file.display(),
                loaded.render()
            );
        }
        insta::assert_snapshot!(format!("invalid_{name}"), render_relative(&loaded));
    }
}

#[test]
fn cli_exits_1_and_prints_file_line_col_for_each_fixture() {
    for case in cases() {
        let rel = case
            .strip_prefix(repo())
            .unwrap()
            .to_string_lossy()
            .to_string();
        let out = nurture(&["validate", &rel]);
        assert_eq!(out.status.code(), Some(1), "{rel}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        for (code, line, col, file) in expectations(&case) {
            let file = file.strip_prefix(repo()).unwrap().display().to_string();
            assert!(
                stderr.contains(&format!("{file}:{line}:{col}")) && stderr.contains(&code),
                "{rel}: missing {code} at {file}:{line}:{col} in:\n{stderr}"
            );
        }
        assert!(stderr.contains("nothing was deployed"), "{stderr}");
    }
}

#[test]
fn json_diagnostics_carry_code_file_line_column_and_hint() {
    let out = nurture(&[
        "validate",
        "tests/fixtures/invalid/unknown-key",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    let d = &v["diagnostics"][0];
    assert_eq!(d["code"], "N0002");
    assert_eq!(d["line"], 8);
    assert_eq!(d["column"], 5);
    assert_eq!(d["hint"], "did you mean `wait_for`?");
    assert!(d["file"]
        .as_str()
        .unwrap()
        .ends_with("unknown-key/workflows/w.yaml"));
}

#[test]
fn a_missing_folder_is_an_error_not_a_crash() {
    let out = nurture(&["validate", "does/not/exist"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a folder"));
}
