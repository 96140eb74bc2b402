//! The committed JSON Schema matches the model, and describes the example files.

use crate::util::{nurture, repo};

#[test]
fn committed_schema_is_up_to_date() {
    let committed = std::fs::read_to_string(repo().join("schema/workflow.schema.json"))
        .expect("schema/workflow.schema.json is committed");
    let generated = nurture_core::workflow_schema();
    assert!(
        committed == generated,
        "schema/workflow.schema.json is stale: run `cargo run -p nurture -- schema > schema/workflow.schema.json`"
    );
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
}

#[test]
fn schema_knows_every_step_kind() {
    let schema = nurture_core::workflow_schema();
    for key in nurture_core::model::StepKind::KEYS {
        assert!(schema.contains(&format!("\"{key}\"")), "schema lacks {key}");
    }
}
