//! Checks of the workflow-level keys: `workflow` (its id), `timezone`, `trigger`,
//! `goal` and `exit_if`.

use super::{at, is_valid_id, parse_cron, Compiler};
use crate::diag::Code;
use crate::model::{Goal, OnNewVersion, Trigger, Workflow};
use crate::yaml::Node;

impl Compiler<'_, '_> {
    /// Everything of `w` above its steps.
    pub(super) fn header(&mut self, w: &Workflow) {
        let root = self.root;
        if !is_valid_id(&w.workflow) {
            self.sink.error(
                Code::BadId,
                root.get("workflow").map_or(root.span, |n| n.span),
                format!("workflow id `{}` must use only a-z, 0-9 and -", w.workflow),
                Some(format!(
                    "e.g. `workflow: {}`",
                    w.workflow
                        .to_lowercase()
                        .replace(|ch: char| !ch.is_ascii_alphanumeric(), "-")
                )),
            );
        }
        if let Some(tz) = &w.timezone {
            self.timezone(root.get("timezone").unwrap_or(root), tz);
        }
        let tnode = root.get("trigger").unwrap_or(root);
        for (i, t) in w.trigger.as_slice().iter().enumerate() {
            let node = if tnode.as_seq().is_some() {
                tnode.locate([i.to_string()])
            } else {
                tnode
            };
            self.trigger(node, t);
        }
        if let Some(g) = &w.goal {
            self.goal(g);
        }
        if let Some(x) = &w.exit_if {
            self.expr(at(root, &["exit_if"]), &x.0);
        }
        if let OnNewVersion::Migrate(map) = &w.on_new_version {
            self.migrate_map(w, map);
        }
    }

    /// Every step a `migrate` map moves runs to must be a step of this workflow.
    fn migrate_map(&mut self, w: &Workflow, map: &std::collections::BTreeMap<String, String>) {
        let ids: Vec<&str> = w.steps.iter().map(|s| s.id.as_str()).collect();
        for (old, new) in map {
            if ids.contains(&new.as_str()) {
                continue;
            }
            let node = at(self.root, &["on_new_version", "migrate", old]);
            let hint = match crate::diag::did_you_mean(new, ids.iter().copied()) {
                Some(s) => {
                    format!("did you mean `{s}`? runs at `{old}` move to a step of this version")
                }
                None => format!("map `{old}` to one of: {}", ids.join(", ")),
            };
            self.sink.error(
                Code::UnknownStep,
                node.span,
                format!("`on_new_version` moves runs at `{old}` to `{new}`, which is not a step of this workflow"),
                Some(hint),
            );
        }
    }

    fn trigger(&mut self, node: &Node, t: &Trigger) {
        match t {
            Trigger::Event(e) => {
                self.event_type(node.get("event").unwrap_or(node), &e.event);
                if let Some(cond) = &e.condition {
                    self.expr(node.get("if").unwrap_or(node), &cond.0);
                }
            }
            Trigger::Segment(s) => self.segment(node.get("segment").unwrap_or(node), &s.segment),
            Trigger::Score(_) => {}
            Trigger::Schedule(s) => {
                if let Err(e) = parse_cron(&s.schedule) {
                    self.sink.error(
                        Code::BadTime,
                        node.get("schedule").unwrap_or(node).span,
                        format!("invalid cron schedule `{}`: {e}", s.schedule),
                        Some("five fields: minute hour day-of-month month weekday, e.g. \"0 9 * * MON\"".into()),
                    );
                }
                self.segment(node.get("audience").unwrap_or(node), &s.audience);
            }
        }
    }

    fn goal(&mut self, g: &Goal) {
        let root = self.root;
        if let Some(event) = &g.event {
            self.event_type(at(root, &["goal", "event"]), event);
        }
        if let Some(cond) = &g.condition {
            let n = at(root, &["goal", "if"]);
            self.expr(n, &cond.0);
        }
        if g.event.is_none() && g.condition.is_none() {
            self.sink.error(
                Code::MissingKey,
                at(root, &["goal"]).span,
                "a goal needs `event`, `if`, or both",
                Some("`goal: { event: demo.requested }` or `goal: { if: 'contact.lifecycle == \"customer\"' }`".into()),
            );
        }
    }
}
