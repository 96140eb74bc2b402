//! The committed JSON Schemas match the model, pass an independent validator (ajv, in
//! its default strict mode), describe the example files, and refuse what nurture refuses.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nurture_core::schema::SchemaFile;

use crate::util::{nurture, repo};

#[test]
fn committed_schemas_are_up_to_date() {
    for file in SchemaFile::ALL {
        let path = repo().join("schema").join(file.file_name());
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("{} is committed", path.display()));
        assert!(
            committed == file.json(),
            "{} is stale: run `cargo run -p nurture -- schema {} > schema/{}`",
            path.display(),
            match file {
                SchemaFile::Workflow => "workflow",
                SchemaFile::Scoring => "scoring",
                SchemaFile::Segments => "segments",
                SchemaFile::Policies => "policies",
                SchemaFile::Settings => "settings",
            },
            file.file_name()
        );
    }
}

#[test]
fn schema_command_prints_the_schema() {
    let out = nurture(&["schema"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["title"], "nurture workflow");
    let required: Vec<&str> = v["required"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x.as_str())
        .collect();
    assert!(required.contains(&"steps") && required.contains(&"trigger"));
    let out = nurture(&["schema", "segments"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["type"], "array");
}

#[test]
fn schema_knows_every_step_kind() {
    let schema = nurture_core::workflow_schema();
    for key in nurture_core::model::StepKind::KEYS {
        assert!(schema.contains(&format!("\"{key}\"")), "schema lacks {key}");
    }
}

/// ajv-cli, installed by `scripts/test` (`NURTURE_AJV`); `None` (the test is skipped with
/// a note) when run outside it without ajv.
fn ajv() -> Option<PathBuf> {
    match std::env::var_os("NURTURE_AJV") {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            assert!(
                std::env::var("NURTURE_REQUIRE_POSTGRES").is_err(),
                "scripts/test sets NURTURE_AJV; the schema checks must not be skipped there"
            );
            eprintln!("note: ajv checks skipped (run ./scripts/test to include them)");
            None
        }
    }
}

/// `ajv ARGS` with JSON Schema 2020-12 and ajv's default (strict) options.
fn run_ajv(ajv: &Path, args: &[&str]) -> Output {
    Command::new(ajv)
        .arg("--spec=draft2020")
        .args(args)
        .current_dir(repo())
        .output()
        .expect("run ajv")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn ajv_strict_mode_compiles_every_schema_without_a_warning() {
    let Some(ajv) = ajv() else { return };
    for file in SchemaFile::ALL {
        let schema = format!("schema/{}", file.file_name());
        let o = run_ajv(&ajv, &["compile", "-s", &schema]);
        assert!(o.status.success(), "{schema}: {}", text(&o));
        assert!(!text(&o).contains("strict mode"), "{schema}: {}", text(&o));
    }
}

#[test]
fn ajv_accepts_the_example_files() {
    let Some(ajv) = ajv() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let mut checks: Vec<(String, String)> = Vec::new();
    for wf in std::fs::read_dir(repo().join("workflows/workflows")).unwrap() {
        let wf = wf.unwrap().path();
        checks.push(("workflow".into(), wf.display().to_string()));
    }
    checks.push(("scoring".into(), "workflows/scoring.yaml".into()));
    checks.push(("segments".into(), "workflows/segments.yaml".into()));
    // ajv reads JSON and YAML; nurture.toml is checked as its JSON translation.
    let settings: toml::Value =
        toml::from_str(&std::fs::read_to_string(repo().join("workflows/nurture.toml")).unwrap())
            .unwrap();
    let as_json = tmp.path().join("nurture.json");
    std::fs::write(&as_json, serde_json::to_string(&settings).unwrap()).unwrap();
    checks.push(("nurture".into(), as_json.display().to_string()));
    for (schema, data) in checks {
        let schema = format!("schema/{schema}.schema.json");
        let o = run_ajv(&ajv, &["validate", "-s", &schema, "-d", &data]);
        assert!(o.status.success(), "{data}: {}", text(&o));
    }
}

/// ajv's verdict on `text` written to `dir/NAME` against `schema/SCHEMA`.
fn ajv_on(ajv: &Path, schema: &str, dir: &Path, name: &str, text: &str) -> Output {
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    let schema = format!("schema/{schema}");
    run_ajv(
        ajv,
        &["validate", "-s", &schema, "-d", &file.display().to_string()],
    )
}

#[test]
fn ajv_refuses_a_misspelled_key_inside_a_step_as_validate_does() {
    let Some(ajv) = ajv() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let check = |schema: &str, name: &str, text: &str| ajv_on(&ajv, schema, tmp.path(), name, text);
    let wf = "workflow.schema.json";
    let workflow = "workflow: typo\ntrigger:\n  event: form.submitted\nsteps:\n  - id: wait-open\n    wait_for:\n      event: email.opened\n      timeout: 3d\n    on_timout: end\n";
    let o = check(wf, "typo.yaml", workflow);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("unevaluated"), "{}", text(&o));
    // The same file with the key spelled right is valid.
    let o = check(
        wf,
        "typo.yaml",
        &workflow.replace("on_timout", "on_timeout"),
    );
    assert!(o.status.success(), "{}", text(&o));
    // Two kinds in one step match two branches of `oneOf`.
    let two = "workflow: two\ntrigger:\n  event: form.submitted\nsteps:\n  - id: both\n    wait: 2d\n    score: 5\n";
    let o = check(wf, "two.yaml", two);
    assert!(!o.status.success(), "{}", text(&o));
    // A misspelled key in an `actions` item and in `nurture.toml` too.
    let action = "workflow: act\ntrigger:\n  event: form.submitted\nsteps:\n  - id: many\n    actions:\n      - tag: vip\n        wiht: {}\n";
    let o = check(wf, "act.yaml", action);
    assert!(!o.status.success(), "{}", text(&o));
    let o = check(
        "nurture.schema.json",
        "settings.json",
        r#"{"timezon": "Europe/Sofia"}"#,
    );
    assert!(!o.status.success(), "{}", text(&o));
}
