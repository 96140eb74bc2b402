//! The example project in `workflows/` is valid, and its compiled plans are pinned.

use nurture_core::plan::Edge;

use crate::util::{nurture, repo};

fn example() -> nurture_core::project::Project {
    let loaded = nurture_core::project::load(&repo().join("workflows"));
    assert_eq!(loaded.errors(), 0, "{}", loaded.render());
    loaded.project.expect("valid project")
}

#[test]
fn example_project_validates_with_exit_0() {
    let out = nurture(&["validate", "workflows/"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("ok: 7 workflows"), "{stdout}");
}

#[test]
fn example_project_json_output_is_machine_readable() {
    let out = nurture(&["validate", "workflows/", "--format", "json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["ok"], true);
    assert_eq!(v["errors"], 0);
    assert_eq!(v["workflows"].as_array().map(Vec::len), Some(7));
}

#[test]
fn compiled_plans_of_every_example() {
    let project = example();
    assert_eq!(project.plans.len(), 7);
    for plan in &project.plans {
        insta::assert_yaml_snapshot!(format!("plan_{}", plan.id()), plan.view());
    }
}

/// DOMAIN.md: "if it is opened, one week later send a webinar invitation; if it is
/// ignored, wait a few weeks and send a free e-book instead".
#[test]
fn ebook_nurture_opened_goes_to_webinar_ignored_goes_to_free_ebook() {
    let project = example();
    let plan = project
        .plans
        .iter()
        .find(|p| p.id() == "ebook-nurture")
        .unwrap();
    let succ = plan.successors("wait-open");
    assert!(
        succ.contains(&(&Edge::Event, Some("week-later"))),
        "{succ:?}"
    );
    assert!(succ.contains(&(&Edge::Timeout, Some("nudge"))), "{succ:?}");
    assert_eq!(plan.successors("week-later")[0].1, Some("webinar"));
    assert_eq!(plan.successors("nudge")[0].1, Some("free-ebook"));
    assert_eq!(
        plan.successors("handoff")[0].1,
        None,
        "handoff ends the run"
    );
}

#[test]
fn scoring_uses_the_seed_figures() {
    let project = example();
    let points = |event: &str| -> Vec<i64> {
        project
            .scoring
            .rules
            .iter()
            .filter(|r| r.event.as_deref() == Some(event))
            .map(|r| r.points)
            .collect()
    };
    assert_eq!(points("email.opened"), [10]);
    assert_eq!(points("asset.downloaded"), [40]);
    assert_eq!(points("page.visited"), [3, 20]);
    assert_eq!(project.scoring.grades.get("hot"), Some(&100));
}

#[test]
fn every_step_kind_and_trigger_kind_is_exercised_by_the_examples() {
    let project = example();
    let mut kinds = std::collections::BTreeSet::new();
    let mut triggers = std::collections::BTreeSet::new();
    for p in &project.plans {
        for s in &p.workflow.steps {
            kinds.insert(s.kind.key());
            if let nurture_core::model::StepKind::Actions(a) = &s.kind {
                kinds.extend(a.iter().map(|a| a.kind.key()));
            }
        }
        for t in p.workflow.trigger.as_slice() {
            triggers.insert(match t {
                nurture_core::model::Trigger::Event(_) => "event",
                nurture_core::model::Trigger::Segment(_) => "segment",
                nurture_core::model::Trigger::Score(_) => "score",
                nurture_core::model::Trigger::Schedule(_) => "schedule",
            });
        }
    }
    let all: std::collections::BTreeSet<&str> = nurture_core::model::StepKind::KEYS
        .iter()
        .copied()
        .collect();
    let missing: Vec<_> = all.difference(&kinds).collect();
    assert!(
        missing.is_empty(),
        "step kinds without an example: {missing:?}"
    );
    for t in ["event", "segment", "score", "schedule"] {
        assert!(triggers.contains(t), "no example with a {t} trigger");
    }
}

/// The README's quoted outputs of `validate` and `simulate` are what the commands print.
#[test]
fn readme_tour_outputs_are_what_the_commands_print() {
    let readme = std::fs::read_to_string(crate::util::repo().join("README.md")).unwrap();
    let quoted = |prefix: &str| -> String {
        readme
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("README quotes no `{prefix}...` line"))
            .to_string()
    };
    let o = crate::util::nurture(&["validate", "workflows/"]);
    let printed = String::from_utf8_lossy(&o.stdout);
    let ok = printed
        .lines()
        .find(|l| l.starts_with("ok: "))
        .unwrap_or("");
    assert_eq!(ok, quoted("ok: "), "{printed}");
    let o = crate::util::nurture(&[
        "simulate",
        "workflows",
        "--contacts",
        "workflows/sample/contacts.jsonl",
        "--events",
        "workflows/sample/events.jsonl",
        "--until",
        "2026-03-31T00:00:00Z",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    let summary = err
        .lines()
        .find(|l| l.starts_with("simulated "))
        .unwrap_or_default();
    assert_eq!(summary, quoted("simulated "), "{err}");
}
