//! JSON Schemas of the project's files, for editors and for any validator: workflow files,
//! `scoring.yaml`, `segments.yaml`, `policies.yaml` and `nurture.toml`, derived from the [`crate::model`]
//! types and committed under `schema/` (a test keeps them current).
//!
//! They are JSON Schema 2020-12 and pass `ajv` in its default strict mode: the integer
//! formats schemars writes (`int64`, `uint32`...) are not standard and are left out (the
//! bounds are nurture's to check), and a step's keys are closed with
//! `unevaluatedProperties`, so a misspelled `on_timout` is an error in the editor too.

use serde_json::Value;

use crate::model;

/// A file of a project that has a schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaFile {
    /// A workflow, `workflows/*.yaml`.
    Workflow,
    /// `scoring.yaml`.
    Scoring,
    /// `segments.yaml`.
    Segments,
    /// `policies.yaml`.
    Policies,
    /// `nurture.toml` (for TOML editors that read JSON Schema, e.g. Taplo).
    Settings,
}

impl SchemaFile {
    /// Every file, in the order `nurture init` writes them.
    pub const ALL: [SchemaFile; 5] = [
        SchemaFile::Workflow,
        SchemaFile::Scoring,
        SchemaFile::Segments,
        SchemaFile::Policies,
        SchemaFile::Settings,
    ];

    /// The schema's file name under `schema/`.
    pub fn file_name(self) -> &'static str {
        match self {
            SchemaFile::Workflow => "workflow.schema.json",
            SchemaFile::Scoring => "scoring.schema.json",
            SchemaFile::Segments => "segments.schema.json",
            SchemaFile::Policies => "policies.schema.json",
            SchemaFile::Settings => "nurture.schema.json",
        }
    }

    /// The schema as pretty JSON with a final newline.
    pub fn json(self) -> String {
        let schema = match self {
            SchemaFile::Workflow => schemars::schema_for!(model::Workflow),
            SchemaFile::Scoring => schemars::schema_for!(model::Scoring),
            SchemaFile::Segments => segments(),
            SchemaFile::Policies => policies(),
            SchemaFile::Settings => schemars::schema_for!(model::Settings),
        };
        let mut value = schema.to_value();
        drop_nonstandard_formats(&mut value);
        let mut s = serde_json::to_string_pretty(&value).expect("schema serializes");
        s.push('\n');
        s
    }
}

/// `segments.yaml` is a list of segments.
fn segments() -> schemars::Schema {
    let mut schema = schemars::schema_for!(Vec<model::Segment>);
    schema.insert("title".into(), "nurture segments".into());
    schema
}

/// `policies.yaml` is a list of policies, each one key naming its kind.
fn policies() -> schemars::Schema {
    let mut schema = schemars::schema_for!(Vec<model::Policy>);
    schema.insert("title".into(), "nurture policies".into());
    schema
}

/// The `format`s JSON Schema 2020-12 defines; others make strict validators refuse the
/// schema.
const STANDARD_FORMATS: &[&str] = &[
    "date-time",
    "date",
    "time",
    "duration",
    "email",
    "idn-email",
    "hostname",
    "idn-hostname",
    "ipv4",
    "ipv6",
    "uri",
    "uri-reference",
    "iri",
    "iri-reference",
    "uuid",
    "uri-template",
    "json-pointer",
    "relative-json-pointer",
    "regex",
];

fn drop_nonstandard_formats(v: &mut Value) {
    match v {
        Value::Object(map) => {
            let nonstandard = map
                .get("format")
                .and_then(Value::as_str)
                .is_some_and(|f| !STANDARD_FORMATS.contains(&f));
            if nonstandard {
                map.remove("format");
            }
            map.values_mut().for_each(drop_nonstandard_formats);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nonstandard_formats),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_formats_are_dropped_but_a_property_named_format_is_kept() {
        let mut v = serde_json::json!({
            "type": "integer", "format": "int64",
            "properties": {"format": {"type": "string", "format": "date-time"}}
        });
        drop_nonstandard_formats(&mut v);
        assert_eq!(
            v,
            serde_json::json!({
                "type": "integer",
                "properties": {"format": {"type": "string", "format": "date-time"}}
            })
        );
    }

    #[test]
    fn step_and_action_keys_are_closed() {
        let v: Value = serde_json::from_str(&SchemaFile::Workflow.json()).unwrap();
        for def in ["Step", "Action"] {
            assert_eq!(v["$defs"][def]["unevaluatedProperties"], false, "{def}");
        }
        assert!(!SchemaFile::Workflow.json().contains("int64"));
    }
}
