//! What a unit of work counts for reports ([`nurture_store::counts`]): derived from the
//! journal lines, runs and contact it commits, and written in the same transaction, so a
//! count never runs ahead of or behind the state it counts.

use std::collections::HashMap;

use serde_json::Value;

use nurture_store::counts::{Scope, Tally};
use nurture_store::{JournalEntry, Run, Ts};

use crate::Work;

use nurture_store::counts::GAUGE_HOUR;

impl Work<'_> {
    /// Adds the unit's tallies to its unit of work: per journal line of a run, the
    /// lifecycle change of the contact, and the engagement of the events it applied.
    pub(super) fn tally(&mut self) {
        let runs: HashMap<&str, &Run> = self.runs.iter().map(|r| (r.id.as_str(), r)).collect();
        let mut out = Vec::new();
        for j in &self.uow.journal {
            let Some(run) = j.run_id.as_deref().and_then(|id| runs.get(id)) else {
                continue;
            };
            for metric in metrics(j, run) {
                out.push(Tally::workflow(
                    &run.workflow,
                    run.workflow_version,
                    metric,
                    j.at,
                ));
            }
        }
        self.lifecycle_tally(&mut out);
        self.waiting_tally(&mut out);
        self.uow.tallies.extend(out);
    }

    /// Open runs per step, kept as counts at [`GAUGE_HOUR`]: `waiting:S` -1 where a
    /// changed run was (open, at S, in its version when loaded) and +1 where it is now.
    fn waiting_tally(&self, out: &mut Vec<Tally>) {
        for &i in &self.changed_runs {
            let r = &self.runs[i];
            let before = self
                .loaded_open
                .get(&r.id)
                .and_then(|(v, s)| Some((*v, s.clone()?)));
            let after = r
                .status
                .is_open()
                .then(|| r.step.clone())
                .flatten()
                .map(|s| (r.workflow_version, s));
            if before == after {
                continue;
            }
            for (at, n) in [(before, -1), (after, 1)] {
                if let Some((version, step)) = at {
                    let scope = Scope::Workflow {
                        workflow: r.workflow.clone(),
                        version,
                    };
                    out.push(Tally::of(scope, format!("waiting:{step}"), GAUGE_HOUR, n));
                }
            }
        }
    }

    /// The lead funnel: a lifecycle stage change (`lifecycle:A>B`), the minutes since the
    /// contact became A (`lifecycle_min:A>B:N`), and on becoming an MQL the points each
    /// reason gave its score (`mql_points:R`).
    fn lifecycle_tally(&mut self, out: &mut Vec<Tally>) {
        let (from, to) = (&self.loaded_contact.lifecycle, &self.contact.lifecycle);
        if from == to || to.is_none() {
            return;
        }
        let stage = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".into());
        let change = format!("{}>{}", stage(from), stage(to));
        let now = self.now;
        let count = |metric: String, n: i64| Tally::of(Scope::Contacts, metric, now, n);
        out.push(count(format!("lifecycle:{change}"), 1));
        if let Some(since) = self.loaded_contact.lifecycle_since {
            let mins = (now - since).num_minutes().max(0);
            out.push(count(format!("lifecycle_min:{change}:{mins}"), 1));
        }
        if to.as_deref() == Some("mql") {
            for (reason, points) in &self.contact.points {
                out.push(count(format!("mql_points:{reason}"), *points));
            }
        }
        self.contact.lifecycle_since = Some(now);
        self.contact_changed = true;
    }

    /// An engagement event (`email.opened`, `email.clicked`, `email.unsubscribed`,
    /// `email.complained`, `email.bounced`): counted once per message (a bot-flagged open
    /// or click apart, as `..._bot`). Tracking hits name their message; a provider's
    /// bounce or complaint counts for the last email delivered to the contact.
    pub(super) fn engagement_tally(&mut self, kind: &str, data: &Value, at: Ts) {
        let metric = match kind {
            "email.opened" | "email.clicked" | "email.unsubscribed" | "email.complained" => {
                kind.to_string()
            }
            "email.bounced" if data.get("permanent") == Some(&Value::Bool(true)) => {
                "email.bounced_hard".into()
            }
            "email.bounced" => "email.bounced_soft".into(),
            _ => return,
        };
        let bot = data.get("bot") == Some(&Value::Bool(true));
        let metric = if bot { format!("{metric}_bot") } else { metric };
        let scope = match data.get("key").and_then(Value::as_str) {
            Some(key) => Scope::Message(key.to_string()),
            None => Scope::LastEmail(self.contact.id.clone()),
        };
        self.uow.tallies.push(Tally::of(scope, metric, at, 1));
    }
}

/// The metrics one journal line of `run` counts.
fn metrics(j: &JournalEntry, run: &Run) -> Vec<String> {
    let d = &j.data;
    let step = d["step"].as_str().unwrap_or_default();
    let edge = |label: &str| vec![format!("edge:{step}:{label}")];
    match j.kind.as_str() {
        "step" => vec![format!("step:{step}")],
        "condition" => branch_arm(d)
            .map(|(s, arm)| vec![format!("edge:{s}:{arm}")])
            .unwrap_or_default(),
        "branch_else" => edge("else"),
        "split" => edge(d["variant"].as_str().unwrap_or_default()),
        "resume" => edge("event"),
        "timeout" => edge("timeout"),
        "effect" => effect_metrics(d, step, run, j.at),
        _ => Vec::new(),
    }
}

/// The arm a branch took: a condition `STEP[N]` that held.
fn branch_arm(d: &Value) -> Option<(&str, &str)> {
    if d["result"] != Value::Bool(true) {
        return None;
    }
    let (step, rest) = d["where"].as_str()?.split_once('[')?;
    Some((step, rest.strip_suffix(']')?))
}

/// The metrics of an effect line.
fn effect_metrics(d: &Value, step: &str, run: &Run, at: Ts) -> Vec<String> {
    match d["effect"].as_str().unwrap_or_default() {
        "enter" => vec!["entered".into()],
        "email" => vec![format!("email.queued:{step}")],
        "email_skipped" => {
            let why = d["reason"].as_str().unwrap_or("skipped");
            vec![format!("email.skipped.{why}:{step}")]
        }
        "plugin_skipped" => {
            let why = d["reason"].as_str().unwrap_or("skipped");
            vec![format!("skipped.{why}:{step}")]
        }
        "wait" if d["reason"] == "quiet_hours" => vec![format!("deferred.quiet_hours:{step}")],
        "exit" => {
            let reason = d["reason"].as_str().unwrap_or("end");
            let mut out = vec![format!("exit:{reason}")];
            if reason == "goal" {
                let mins = (at - run.started_at).num_minutes().max(0);
                out.push(format!("goal_min:{mins}"));
                out.extend(run.variants.iter().map(|(s, v)| format!("goal:{s}:{v}")));
            }
            out
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_branch_arm_is_read_from_a_held_condition_only() {
        let held = json!({"where": "qualify[1]", "result": true});
        assert_eq!(branch_arm(&held), Some(("qualify", "1")));
        assert_eq!(
            branch_arm(&json!({"where": "qualify[0]", "result": false})),
            None
        );
        assert_eq!(
            branch_arm(&json!({"where": "exit_if", "result": true})),
            None
        );
    }
}
