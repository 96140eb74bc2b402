//! Each policy held against what a simulation did: the messages it delivered, the runs
//! it started and the steps they reached.

use std::collections::{BTreeMap, BTreeSet};

use chrono::Duration;
use serde::Serialize;

use nurture_core::model::{Policy, SendTo, SendWithout};
use nurture_core::project::Project;
use nurture_store::{Run, Ts};

use crate::simulate::Delivery;

/// What one simulation did, as the policies read it.
#[derive(Debug, Default, Clone)]
pub struct Trace {
    /// Messages delivered, in time order.
    pub deliveries: Vec<Delivery>,
    /// Every run, by contact.
    pub runs: BTreeMap<String, Vec<Run>>,
    /// The steps each run reached, by run id.
    pub steps: BTreeMap<String, BTreeSet<String>>,
    /// The segments each contact was in at the end.
    pub segments: BTreeMap<String, BTreeSet<String>>,
    /// Where the simulation stopped.
    pub end: Option<Ts>,
}

/// A policy broken by one contact (or, for `no_step_unreachable_for`, by the population).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Violation {
    /// The policy's position in `policies.yaml` (0-based).
    pub policy: usize,
    /// Its kind, e.g. `max_messages`.
    pub kind: &'static str,
    /// The contact that shows it, if one does.
    pub contact: Option<String>,
    /// What happened, in words.
    pub detail: String,
    /// The runs that broke it (the sends' runs, or the run that did not end): their
    /// stories are the ones a counterexample tells.
    #[serde(skip)]
    pub runs: Vec<String>,
}

/// Every violation of every policy in `trace`.
pub fn violations(project: &Project, trace: &Trace) -> Vec<Violation> {
    let mut out = Vec::new();
    for (i, p) in project.policies.iter().enumerate() {
        let found = match p {
            Policy::MaxMessages(m) => {
                max_messages(trace, m.per.to_chrono(), m.count as usize, &m.channels)
            }
            Policy::Never(n) => never(trace, n.send_to, n.send_without),
            Policy::SendWindow(w) => send_window(project, trace, &w.local),
            Policy::EveryRunEndsWithin(d) => runs_end(trace, d.to_chrono()),
            Policy::NoStepUnreachableFor(s) => unreachable(project, trace, &s.segment),
        };
        out.extend(found.into_iter().map(|(contact, detail, runs)| Violation {
            policy: i,
            kind: p.kind(),
            contact,
            detail,
            runs,
        }));
    }
    out
}

/// Per violation: the contact, what happened, and the runs that did it.
type Found = Vec<(Option<String>, String, Vec<String>)>;

/// The runs of `ds`, each once, in order.
fn runs_of(ds: &[&Delivery]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in ds.iter().filter_map(|d| d.run.clone()) {
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

fn by_contact(trace: &Trace) -> BTreeMap<&str, Vec<&Delivery>> {
    let mut m: BTreeMap<&str, Vec<&Delivery>> = BTreeMap::new();
    for d in &trace.deliveries {
        m.entry(d.contact.as_str()).or_default().push(d);
    }
    m
}

fn what(d: &Delivery) -> String {
    format!(
        "{} {} from {}/{}",
        nurture_store::ts_out(d.at),
        d.channel,
        d.workflow.as_deref().unwrap_or("-"),
        d.step.as_deref().unwrap_or("-")
    )
}

fn max_messages(trace: &Trace, per: Duration, count: usize, channels: &[String]) -> Found {
    let mut out = Found::new();
    for (contact, mut ds) in by_contact(trace) {
        ds.retain(|d| channels.is_empty() || channels.contains(&d.channel));
        ds.sort_by_key(|d| d.at);
        // The first window holding more than `count`.
        let hit = (0..ds.len()).find_map(|i| {
            let j = i + count;
            (j < ds.len() && ds[j].at - ds[i].at < per).then_some((i, j))
        });
        if let Some((i, j)) = hit {
            let list: Vec<String> = ds[i..=j].iter().map(|d| what(d)).collect();
            out.push((
                Some(contact.to_string()),
                format!(
                    "{} messages within {}: {}",
                    j - i + 1,
                    human(ds[j].at - ds[i].at),
                    list.join("; ")
                ),
                runs_of(&ds[i..=j]),
            ));
        }
    }
    out
}

fn never(trace: &Trace, to: Option<SendTo>, without: Option<SendWithout>) -> Found {
    let mut out = Found::new();
    for (contact, ds) in by_contact(trace) {
        let bad = ds.iter().find(|d| match (to, without) {
            (Some(SendTo::Unsubscribed), _) => d.unsubscribed || d.consent == "opted_out",
            (_, Some(SendWithout::Consent)) => d.consent != "opted_in",
            _ => false,
        });
        if let Some(d) = bad {
            let state = if d.unsubscribed {
                "unsubscribed".to_string()
            } else {
                format!("consent to {} `{}`", d.channel, d.consent)
            };
            out.push((
                Some(contact.to_string()),
                format!("{} sent to a contact with {state}", what(d)),
                runs_of(&[*d]),
            ));
        }
    }
    out
}

fn send_window(project: &Project, trace: &Trace, w: &nurture_core::model::LocalWindow) -> Found {
    let mut out = Found::new();
    for (contact, ds) in by_contact(trace) {
        let bad = ds.iter().find_map(|d| {
            let tz = zone(project, d);
            let local = d.at.with_timezone(&tz);
            (!w.contains(local.time())).then_some((d, local, tz))
        });
        if let Some((d, local, tz)) = bad {
            out.push((
                Some(contact.to_string()),
                format!(
                    "{} went out at {} local time ({tz}), outside {w}",
                    what(d),
                    local.format("%H:%M")
                ),
                runs_of(&[*d]),
            ));
        }
    }
    out
}

/// The contact's zone, else its workflow's, else the project's, else UTC.
fn zone(project: &Project, d: &Delivery) -> chrono_tz::Tz {
    if let Some(tz) = d.timezone.as_deref().and_then(|t| t.parse().ok()) {
        return tz;
    }
    let plan = project
        .plans
        .iter()
        .find(|p| Some(p.id()) == d.workflow.as_deref());
    match plan {
        Some(p) => nurture_core::plan::workflow_tz(&p.workflow, &project.settings),
        None => project
            .settings
            .timezone
            .as_deref()
            .and_then(|t| t.parse().ok())
            .unwrap_or(chrono_tz::UTC),
    }
}

fn runs_end(trace: &Trace, bound: Duration) -> Found {
    let mut out = Found::new();
    let Some(end) = trace.end else { return out };
    for (contact, runs) in &trace.runs {
        let bad = runs.iter().find(|r| {
            let until = r.ended_at.unwrap_or(end);
            until - r.started_at > bound
        });
        if let Some(r) = bad {
            let how = match r.ended_at {
                Some(e) => format!("ended after {}", human(e - r.started_at)),
                None => format!(
                    "still open after {} at step `{}`",
                    human(end - r.started_at),
                    r.step.as_deref().unwrap_or("-")
                ),
            };
            out.push((
                Some(contact.clone()),
                format!(
                    "run of {} started {} {how}",
                    r.workflow,
                    nurture_store::ts_out(r.started_at)
                ),
                vec![r.id.clone()],
            ));
        }
    }
    out
}

/// Steps of the workflows the segment's members entered that no member reached.
fn unreachable(project: &Project, trace: &Trace, segment: &str) -> Found {
    let members: Vec<&String> = trace
        .segments
        .iter()
        .filter(|(_, s)| s.contains(segment))
        .map(|(c, _)| c)
        .collect();
    let mut reached: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for c in &members {
        for r in trace.runs.get(*c).into_iter().flatten() {
            let steps = reached.entry(r.workflow.as_str()).or_default();
            for s in trace.steps.get(&r.id).into_iter().flatten() {
                steps.insert(s.as_str());
            }
        }
    }
    let mut out = Found::new();
    for (workflow, steps) in reached {
        let Some(plan) = project.plans.iter().find(|p| p.id() == workflow) else {
            continue;
        };
        let missing: Vec<&str> = plan
            .workflow
            .steps
            .iter()
            .map(|s| s.id.as_str())
            .filter(|s| !steps.contains(s))
            .collect();
        if !missing.is_empty() {
            out.push((
                None,
                format!(
                    "contacts of segment `{segment}` ran {workflow} but none reached step(s) {}",
                    missing.join(", ")
                ),
                Vec::new(),
            ));
        }
    }
    out
}

/// A duration in words: `4d 2h`.
pub fn human(d: Duration) -> String {
    let mins = d.num_minutes();
    let (days, hours, m) = (mins / 1440, mins % 1440 / 60, mins % 60);
    match (days, hours, m) {
        (0, 0, m) => format!("{m}m"),
        (0, h, 0) => format!("{h}h"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, 0, _) => format!("{d}d"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}
