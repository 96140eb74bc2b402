//! `nurture report --held-back`: the sends held back, summed by the rule that held them
//! ([`nurture_store::held`]), read from the report counts like every report.
//!
//! | count | rule |
//! | --- | --- |
//! | `email.skipped.R:S`, `skipped.R:S` (a plugin channel) | R's rule: `consent`, `unsubscribed`, `suppression`, `no_address` |
//! | `email.deferred.C:S`, `deferred.C:S` | C: `frequency_cap`, `rate_limit`, `quiet_hours` |
//!
//! A deferral is counted once per message and rule (a message the cap defers twice is
//! one message held back by the cap); a quiet-hours wait once per step it held.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Value};

use nurture_core::model::StepKind;
use nurture_core::plan::Plan;
use nurture_core::project::Project;
use nurture_store::counts::{CountFilter, CountRow};
use nurture_store::held::rule_of_skip;
use nurture_store::limits::SendLimits;
use nurture_store::{Store, StoreError};

use super::Options;

/// The sends held back in a period, by rule.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HeldBackReport {
    /// Sends held back by any rule.
    pub total: i64,
    /// Per rule, the most first.
    pub rules: Vec<RuleReport>,
}

/// The sends one rule held back.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RuleReport {
    /// `quiet_hours`, `frequency_cap`, `rate_limit`, `consent`, `unsubscribed`,
    /// `suppression`, `no_address`.
    pub rule: String,
    /// Sends it held back.
    pub held: i64,
    /// The rule's parameters as the project sets them now (per workflow or channel).
    pub settings: BTreeMap<String, Value>,
    /// Where: per workflow, step and reason.
    pub steps: Vec<HeldAt>,
}

/// The sends a rule held back at one step, for one reason.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HeldAt {
    /// The workflow.
    pub workflow: String,
    /// The step.
    pub step: String,
    /// `email`, or the plugin channel (`sms`...).
    pub channel: String,
    /// `deferred` (sent later) or `skipped` (not sent).
    pub outcome: String,
    /// The reason recorded (`no_consent`, `opted_out`, `frequency_cap`...).
    pub reason: String,
    /// How many.
    pub n: i64,
}

/// The held-back report of `workflow` (all workflows when `None`) over `o`'s period.
pub async fn held_back(
    store: &dyn Store,
    project: &Project,
    workflow: Option<&str>,
    o: &Options,
) -> Result<HeldBackReport, StoreError> {
    let filter = CountFilter {
        workflow: workflow.map(str::to_string),
        version: o.version,
        since: o.since,
        until: o.until,
        whole: true,
    };
    let rows = store.counts(&filter).await?;
    Ok(build(project, &rows))
}

/// The report from its count rows (see [`held_back`]).
pub fn build(project: &Project, rows: &[CountRow]) -> HeldBackReport {
    let mut at: BTreeMap<(String, String, String, String, String, String), i64> = BTreeMap::new();
    for r in rows.iter().filter(|r| !r.workflow.is_empty()) {
        let Some((rule, outcome, reason, step)) = classify(&r.metric) else {
            continue;
        };
        let channel = channel_of(project, &r.workflow, &step);
        let k = (
            rule,
            r.workflow.clone(),
            step,
            channel,
            outcome.into(),
            reason,
        );
        *at.entry(k).or_default() += r.n;
    }
    let mut rules: BTreeMap<String, RuleReport> = BTreeMap::new();
    for ((rule, workflow, step, channel, outcome, reason), n) in at {
        let entry = rules.entry(rule.clone()).or_insert_with(|| RuleReport {
            settings: settings(project, &rule),
            rule,
            held: 0,
            steps: Vec::new(),
        });
        entry.held += n;
        entry.steps.push(HeldAt {
            workflow,
            step,
            channel,
            outcome,
            reason,
            n,
        });
    }
    let mut rules: Vec<RuleReport> = rules.into_values().filter(|r| r.held != 0).collect();
    rules.sort_by(|a, b| b.held.cmp(&a.held).then_with(|| a.rule.cmp(&b.rule)));
    HeldBackReport {
        total: rules.iter().map(|r| r.held).sum(),
        rules,
    }
}

/// A held-back count's rule, outcome, reason and step, if `metric` is one.
fn classify(metric: &str) -> Option<(String, &'static str, String, String)> {
    let (name, step) = metric.split_once(':')?;
    let name = name.strip_prefix("email.").unwrap_or(name);
    if let Some(reason) = name.strip_prefix("skipped.") {
        let rule = rule_of_skip(reason).to_string();
        return Some((rule, "skipped", reason.to_string(), step.to_string()));
    }
    let cause = name.strip_prefix("deferred.")?;
    Some((
        cause.to_string(),
        "deferred",
        cause.to_string(),
        step.to_string(),
    ))
}

/// The channel step `step` of `workflow` sends on: `email`, a plugin's channel, or `-`.
fn channel_of(project: &Project, workflow: &str, step: &str) -> String {
    let kind = project
        .plans
        .iter()
        .find(|p| p.id() == workflow)
        .and_then(|p| p.workflow.steps.iter().find(|s| s.id == step))
        .map(|s| &s.kind);
    let sends = |k: &StepKind| match k {
        StepKind::SendEmail(_) => Some("email".to_string()),
        StepKind::Plugin(name) => {
            let plugin = name.split_once('/').map_or(name.as_str(), |(p, _)| p);
            project.plugins.get(plugin)?.channel.clone()
        }
        _ => None,
    };
    let found = match kind {
        Some(StepKind::Actions(list)) => list.iter().find_map(|a| sends(&a.kind)),
        Some(k) => sends(k),
        None => None,
    };
    found.unwrap_or_else(|| "-".into())
}

/// The parameters of `rule` as `project` sets them now: per workflow (quiet hours,
/// consent) or per channel (caps, rates).
fn settings(project: &Project, rule: &str) -> BTreeMap<String, Value> {
    let per_workflow = |f: &dyn Fn(&Plan) -> Option<Value>| -> BTreeMap<String, Value> {
        project
            .plans
            .iter()
            .filter_map(|p| Some((p.id().to_string(), f(p)?)))
            .collect()
    };
    let limits = SendLimits::for_project(project);
    let per_channel = |f: &dyn Fn(&nurture_store::limits::ChannelLimits) -> Option<Value>| {
        limits
            .channels
            .iter()
            .filter_map(|(ch, l)| Some((ch.clone(), f(l)?)))
            .collect()
    };
    match rule {
        "quiet_hours" => per_workflow(&|p| {
            let q = p.workflow.quiet_hours.as_ref()?;
            serde_json::to_value(q).ok()
        }),
        "consent" => per_workflow(&|p| serde_json::to_value(p.workflow.consent).ok()),
        "frequency_cap" => per_channel(&|l| {
            let c = l.cap?;
            let per = nurture_core::model::Duration(c.per.num_seconds().max(0) as u64);
            Some(json!({"max": c.max, "per": per.to_string()}))
        }),
        "rate_limit" => per_channel(&|l| Some(json!({"per_second": l.rate_per_sec?}))),
        _ => BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_back_counts_are_told_from_the_others() {
        let c = classify;
        let s = |a: &str, o: &'static str, b: &str, st: &str| {
            Some((a.to_string(), o, b.to_string(), st.to_string()))
        };
        assert_eq!(
            c("email.skipped.no_consent:news"),
            s("consent", "skipped", "no_consent", "news")
        );
        assert_eq!(
            c("email.deferred.frequency_cap:second"),
            s("frequency_cap", "deferred", "frequency_cap", "second")
        );
        assert_eq!(
            c("deferred.quiet_hours:text"),
            s("quiet_hours", "deferred", "quiet_hours", "text")
        );
        assert_eq!(
            c("skipped.opted_out:text"),
            s("consent", "skipped", "opted_out", "text")
        );
        assert_eq!(c("email.sent:news"), None);
        assert_eq!(c("entered"), None);
        assert_eq!(c("exit:goal"), None);
    }
}
