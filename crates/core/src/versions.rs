//! Workflow versions: what identifies a version's content, what changed between two
//! versions, and where a deploy moves an open run of an older version.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::model::{OnNewVersion, Workflow};

/// Hex SHA-256 of everything a workflow says but its `version`: two files that compile
/// to the same workflow have the same hash, whatever their comments and layout.
pub fn content_hash(w: &Workflow) -> String {
    let mut v = serde_json::to_value(w).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.remove("version");
    }
    let text = serde_json::to_string(&v).unwrap_or_default();
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The differences between two versions of a workflow.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WorkflowDiff {
    /// Steps only the new version has, in its order.
    pub added: Vec<String>,
    /// Steps only the old version has, in its order.
    pub removed: Vec<String>,
    /// Steps of both whose definition differs, in the new version's order.
    pub changed: Vec<String>,
    /// Workflow-level keys that differ (`trigger`, `goal`, `on_new_version`...).
    pub settings: Vec<String>,
}

impl WorkflowDiff {
    /// Whether nothing but the version number differs.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.settings.is_empty()
    }
}

/// What differs from `old` to `new`.
pub fn diff(old: &Workflow, new: &Workflow) -> WorkflowDiff {
    let old_ids: BTreeSet<&str> = old.steps.iter().map(|s| s.id.as_str()).collect();
    let new_ids: BTreeSet<&str> = new.steps.iter().map(|s| s.id.as_str()).collect();
    let mut d = WorkflowDiff::default();
    for (i, s) in new.steps.iter().enumerate() {
        match old.steps.iter().position(|o| o.id == s.id) {
            None => d.added.push(s.id.clone()),
            Some(j) if step_value(old, j) != step_value(new, i) => d.changed.push(s.id.clone()),
            Some(_) => {}
        }
    }
    d.removed = old
        .steps
        .iter()
        .filter(|s| !new_ids.contains(s.id.as_str()))
        .map(|s| s.id.clone())
        .collect();
    debug_assert!(d.added.iter().all(|a| !old_ids.contains(a.as_str())));
    d.settings = header_changes(old, new);
    d
}

/// Step `i` of `w` as compared: its definition with its successor made explicit (a step
/// without `next` goes on to the one after it, which an edit elsewhere may change).
fn step_value(w: &Workflow, i: usize) -> Option<Value> {
    let mut v = serde_json::to_value(&w.steps[i]).ok()?;
    let next = w.steps[i].next.clone().unwrap_or_else(|| {
        w.steps
            .get(i + 1)
            .map_or_else(|| "end".to_string(), |s| s.id.clone())
    });
    if let Value::Object(m) = &mut v {
        m.insert("next".into(), Value::String(next));
    }
    Some(v)
}

/// The top-level keys other than `version`, `steps` and `on_new_version` (which says what
/// a deploy does, not what runs do) whose values differ.
fn header_changes(old: &Workflow, new: &Workflow) -> Vec<String> {
    let obj = |w: &Workflow| match serde_json::to_value(w) {
        Ok(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    let (a, b) = (obj(old), obj(new));
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| !["version", "steps", "on_new_version"].contains(&k.as_str()))
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}

/// Where a deploy sends an open run of an older version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "fate", content = "to")]
pub enum Fate {
    /// It finishes on its own version (`keep`).
    Stay,
    /// It ends with reason `superseded` (`exit`).
    Exit,
    /// It moves to this step of the new version (`migrate`; the same id when the step
    /// kept it).
    Move(String),
    /// It waits at a step the new version does not have and no map names: the deploy is
    /// refused.
    Stranded,
}

/// Where `policy` (the new version's `on_new_version`) sends a run at `step` of an older
/// version, given the new version's workflow.
pub fn fate(policy: &OnNewVersion, step: Option<&str>, new: &Workflow) -> Fate {
    match policy {
        OnNewVersion::Keep => Fate::Stay,
        OnNewVersion::Exit => Fate::Exit,
        OnNewVersion::Migrate(map) => {
            let Some(step) = step else {
                return Fate::Stranded;
            };
            let to = map.get(step).map_or(step, String::as_str);
            if new.steps.iter().any(|s| s.id == to) {
                Fate::Move(to.to_string())
            } else {
                Fate::Stranded
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workflow(yaml: &str) -> Workflow {
        let root = crate::yaml::parse(yaml).expect("yaml");
        let mut diags = Vec::new();
        let w = crate::project::parse_workflow(std::path::Path::new("w.yaml"), &root, &mut diags);
        assert!(diags.is_empty(), "{diags:?}");
        w.expect("workflow")
    }

    const V1: &str = "workflow: w\nversion: 1\ntrigger: { event: form.submitted }\nsteps:\n  - id: first\n    send_email: welcome\n  - id: pause\n    wait: 40s\n  - id: second\n    send_email: follow-up\n";

    #[test]
    fn the_hash_ignores_version_layout_and_comments() {
        let a = workflow(V1);
        let b = workflow(&format!(
            "# a comment\n{}",
            V1.replace("version: 1", "version: 7")
        ));
        assert_eq!(content_hash(&a), content_hash(&b));
        let c = workflow(&V1.replace("40s", "41s"));
        assert_ne!(content_hash(&a), content_hash(&c));
    }

    #[test]
    fn a_diff_names_added_removed_and_changed_steps() {
        let old = workflow(V1);
        let new = workflow(
            "workflow: w\nversion: 2\ntrigger: { event: form.submitted }\nsteps:\n  - id: first\n    send_email: welcome-2\n  - id: second\n    send_email: follow-up\n  - id: last\n    tag: done\n",
        );
        let d = diff(&old, &new);
        assert_eq!(d.added, ["last"]);
        assert_eq!(d.removed, ["pause"]);
        // `second` now goes on to `last` instead of ending.
        assert_eq!(d.changed, ["first", "second"]);
        assert!(d.settings.is_empty());
        assert!(diff(&old, &old).is_empty());
    }

    #[test]
    fn migrate_moves_mapped_and_kept_steps_and_strands_the_rest() {
        let new = workflow(
            "workflow: w\nversion: 2\non_new_version: { migrate: { pause: final } }\ntrigger: { event: form.submitted }\nsteps:\n  - id: first\n    send_email: welcome\n  - id: final\n    send_email: follow-up\n",
        );
        let p = &new.on_new_version;
        assert_eq!(fate(p, Some("pause"), &new), Fate::Move("final".into()));
        assert_eq!(fate(p, Some("first"), &new), Fate::Move("first".into()));
        assert_eq!(fate(p, Some("gone"), &new), Fate::Stranded);
        assert_eq!(fate(&OnNewVersion::Keep, Some("gone"), &new), Fate::Stay);
        assert_eq!(fate(&OnNewVersion::Exit, Some("first"), &new), Fate::Exit);
        let bare = workflow(&V1.replace("version: 1", "version: 2\non_new_version: migrate"));
        assert_eq!(
            bare.on_new_version,
            OnNewVersion::Migrate(Default::default())
        );
    }
}
