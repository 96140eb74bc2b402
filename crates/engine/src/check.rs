//! `nurture check`: the project's policies (`policies.yaml`) proved by simulation.
//!
//! A population drawn from a seed ([`population`]), plus the sample files if given, runs
//! through the real engine on a virtual clock ([`crate::simulate`]) over a horizon; every
//! policy is held against what it did ([`policies`]). For each policy broken, the first
//! contact that breaks it is *shrunk*: simulated alone, then with its events dropped one
//! at a time (an event stays dropped when the policy is still broken without it), so the
//! counterexample is the smallest event sequence that still breaks the rule, told by the
//! explain story of its runs.

pub mod policies;
pub mod population;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Duration;
use serde::Serialize;
use serde_json::{json, Value};

use nurture_core::project::Project;
use nurture_store::{Store, Ts};

use crate::explain::{explain_run, Explanation};
use crate::input::{id_for_email, ContactRow, IncomingEvent};
use crate::EngineError;
use policies::{violations, Trace, Violation};

/// The most simulations spent shrinking one counterexample.
pub const MAX_SHRINK_RUNS: usize = 200;

/// The most runs whose story a counterexample tells: those that broke the policy first,
/// then the contact's others in order of start.
pub const MAX_STORIES: usize = 4;

/// What `nurture check` simulates.
#[derive(Debug, Clone)]
pub struct Options {
    /// The population's seed.
    pub seed: u64,
    /// How many contacts to generate.
    pub contacts: usize,
    /// The most events generated per contact.
    pub max_events: usize,
    /// The simulated start.
    pub start: Ts,
    /// How long to simulate.
    pub horizon: Duration,
    /// Contacts of the sample file, simulated with the generated ones.
    pub sample_contacts: Vec<ContactRow>,
    /// Events of the sample file.
    pub sample_events: Vec<IncomingEvent>,
}

/// Contacts and events: one simulation's input.
#[derive(Debug, Clone, Default)]
pub struct Case {
    /// The contacts.
    pub contacts: Vec<ContactRow>,
    /// Their events.
    pub events: Vec<IncomingEvent>,
}

/// What `nurture check` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The population's seed.
    pub seed: u64,
    /// Contacts simulated.
    pub contacts: usize,
    /// Events simulated.
    pub events: usize,
    /// The simulated start and end.
    pub start: String,
    /// Where the simulation stopped.
    pub end: String,
    /// Messages delivered.
    pub messages: usize,
    /// Runs started.
    pub runs: usize,
    /// The policies checked, as written.
    pub policies: Vec<String>,
    /// One per policy broken.
    pub violations: Vec<Finding>,
}

/// A policy broken.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// The policy's kind, e.g. `max_messages`.
    pub kind: &'static str,
    /// The policy as written.
    pub policy: String,
    /// How many contacts of the population break it (0: the population as a whole).
    pub contacts: usize,
    /// What the population's first breach was.
    pub detail: String,
    /// The shrunk counterexample, when one contact shows the breach.
    pub counterexample: Option<Counterexample>,
}

/// The smallest contact and event sequence found that still breaks the policy.
#[derive(Debug, Clone, Serialize)]
pub struct Counterexample {
    /// The contact.
    pub contact: Value,
    /// Its events, in time order.
    pub events: Vec<Value>,
    /// How many events it had in the population.
    pub events_before: usize,
    /// The breach as the shrunk simulation shows it.
    pub detail: String,
    /// False when the contact did not break the policy alone (other contacts matter):
    /// then the counterexample is the unshrunk population's view of it.
    pub shrunk: bool,
    /// The explain story of each of its runs.
    pub runs: Vec<Explanation>,
}

/// The id a row's contact has in a simulation.
fn row_key(r: &ContactRow) -> String {
    r.id.clone()
        .unwrap_or_else(|| id_for_email(r.email.as_deref().unwrap_or_default()))
}

fn event_key(e: &IncomingEvent) -> Option<String> {
    e.contact
        .clone()
        .or_else(|| e.email.as_deref().map(id_for_email))
}

/// Simulates `case` from `start` to `until` and reads back what the policies need.
pub async fn simulate(
    project: &Arc<Project>,
    case: &Case,
    start: Ts,
    until: Ts,
) -> Result<(Trace, Arc<dyn Store>), EngineError> {
    let (summary, store, deliveries) = crate::simulate::run_recording(
        project.clone(),
        &case.contacts,
        case.events.clone(),
        Some(start),
        Some(until),
    )
    .await?;
    let mut trace = Trace {
        deliveries,
        end: summary.end.map(|e| e.max(until)),
        ..Default::default()
    };
    let mut ids: Vec<String> = case.contacts.iter().map(row_key).collect();
    ids.extend(case.events.iter().filter_map(event_key));
    ids.sort();
    ids.dedup();
    for id in ids {
        let runs = store.runs_of_contact(&id).await?;
        for r in &runs {
            let steps = store
                .journal(&r.id)
                .await?
                .into_iter()
                .filter(|j| j.kind.as_str() == "step")
                .filter_map(|j| j.data.get("step")?.as_str().map(String::from))
                .collect();
            trace.steps.insert(r.id.clone(), steps);
        }
        if let Some(c) = store.contact(&id).await? {
            trace.segments.insert(id.clone(), c.segments);
        }
        trace.runs.insert(id, runs);
    }
    Ok((trace, store))
}

/// Runs the check: the population, then a shrunk counterexample per policy broken.
pub async fn check(project: Arc<Project>, opts: &Options) -> Result<Report, EngineError> {
    let spec = population::Spec {
        seed: opts.seed,
        contacts: opts.contacts,
        max_events: opts.max_events,
        start: opts.start,
        horizon: opts.horizon,
    };
    let (mut contacts, mut events) = population::generate(&project, &spec);
    contacts.extend(opts.sample_contacts.iter().cloned());
    events.extend(opts.sample_events.iter().cloned());
    let case = Case { contacts, events };
    let until = opts.start + opts.horizon;
    let (trace, _) = simulate(&project, &case, opts.start, until).await?;
    let found = violations(&project, &trace);
    let mut report = Report {
        seed: opts.seed,
        contacts: case.contacts.len(),
        events: case.events.len(),
        start: nurture_store::ts_out(opts.start),
        end: nurture_store::ts_out(until),
        messages: trace.deliveries.len(),
        runs: trace.runs.values().map(Vec::len).sum(),
        policies: project.policies.iter().map(|p| p.describe()).collect(),
        violations: Vec::new(),
    };
    let mut by_policy: BTreeMap<usize, Vec<&Violation>> = BTreeMap::new();
    for v in &found {
        by_policy.entry(v.policy).or_default().push(v);
    }
    for (i, vs) in by_policy {
        let first = vs[0];
        let counterexample = match &first.contact {
            Some(c) => Some(shrink(&project, &case, first, c, (opts.start, until)).await?),
            None => None,
        };
        report.violations.push(Finding {
            kind: first.kind,
            policy: project.policies[i].describe(),
            contacts: vs.iter().filter(|v| v.contact.is_some()).count(),
            detail: first.detail.clone(),
            counterexample,
        });
    }
    Ok(report)
}

/// The breach of policy `v.policy` by `contact` in a simulation of `case`, if any.
async fn breach(
    project: &Arc<Project>,
    case: &Case,
    v: &Violation,
    contact: &str,
    (start, until): (Ts, Ts),
) -> Result<Option<(Violation, Arc<dyn Store>)>, EngineError> {
    let (trace, store) = simulate(project, case, start, until).await?;
    let hit = violations(project, &trace)
        .into_iter()
        .find(|w| w.policy == v.policy && w.contact.as_deref() == Some(contact));
    Ok(hit.map(|w| (w, store)))
}

/// Greedy shrinking: the contact alone with its events, then without each event in turn
/// while the policy stays broken.
async fn shrink(
    project: &Arc<Project>,
    case: &Case,
    v: &Violation,
    contact: &str,
    window: (Ts, Ts),
) -> Result<Counterexample, EngineError> {
    let alone = Case {
        contacts: case
            .contacts
            .iter()
            .filter(|r| row_key(r) == contact)
            .cloned()
            .collect(),
        events: case
            .events
            .iter()
            .filter(|e| event_key(e).as_deref() == Some(contact))
            .cloned()
            .collect(),
    };
    let events_before = alone.events.len();
    let Some(mut best) = breach(project, &alone, v, contact, window).await? else {
        // Other contacts take part: keep the population's view, unshrunk.
        let (_, store) = simulate(project, case, window.0, window.1).await?;
        return counterexample(&alone, v, &store, contact, events_before, false).await;
    };
    let mut current = alone;
    let mut i = 0;
    let mut runs = 1;
    while i < current.events.len() && runs < MAX_SHRINK_RUNS {
        let mut fewer = current.clone();
        fewer.events.remove(i);
        runs += 1;
        match breach(project, &fewer, v, contact, window).await? {
            Some(hit) => {
                best = hit;
                current = fewer;
            }
            None => i += 1,
        }
    }
    let (violation, store) = best;
    counterexample(&current, &violation, &store, contact, events_before, true).await
}

async fn counterexample(
    case: &Case,
    v: &Violation,
    store: &Arc<dyn Store>,
    contact: &str,
    events_before: usize,
    shrunk: bool,
) -> Result<Counterexample, EngineError> {
    let mut runs = Vec::new();
    for r in store.runs_of_contact(contact).await? {
        runs.extend(explain_run(&**store, &r.id).await?);
    }
    // The offending runs first (in the order the violation names them), then by start.
    let rank = |id: &str| v.runs.iter().position(|r| r == id).unwrap_or(usize::MAX);
    runs.sort_by_key(|e| (rank(&e.run), e.lines.first().map(|l| l.at)));
    runs.truncate(MAX_STORIES);
    Ok(Counterexample {
        contact: case.contacts.first().map(row_json).unwrap_or_default(),
        events: case.events.iter().map(event_json).collect(),
        events_before,
        detail: v.detail.clone(),
        shrunk,
        runs,
    })
}

/// A contact row as it could be written in a contacts file.
pub fn row_json(r: &ContactRow) -> Value {
    let mut m = r.fields.clone();
    m.insert("id".into(), row_key(r).into());
    if let Some(e) = &r.email {
        m.insert("email".into(), e.clone().into());
    }
    if let Some(t) = &r.timezone {
        m.insert("timezone".into(), t.clone().into());
    }
    if let Some(c) = &r.consent {
        m.insert("consent".into(), c.as_str().into());
    }
    if let Some(l) = &r.lifecycle {
        m.insert("lifecycle".into(), l.clone().into());
    }
    if let Some(t) = &r.tags {
        m.insert("tags".into(), json!(t));
    }
    Value::Object(m)
}

/// An event as it could be written in an events file.
pub fn event_json(e: &IncomingEvent) -> Value {
    json!({
        "type": e.kind,
        "contact": event_key(e),
        "at": e.at.map(nurture_store::ts_out),
        "data": e.data,
    })
}

impl Report {
    /// For people: the summary, then each violation with its counterexample and story.
    pub fn render(&self) -> String {
        let mut out = format!(
            "simulated {} contacts and {} events from {} to {} (seed {}): {} messages, {} runs\n",
            self.contacts, self.events, self.start, self.end, self.seed, self.messages, self.runs
        );
        for p in &self.policies {
            let broken = self.violations.iter().any(|f| &f.policy == p);
            out.push_str(&format!(
                "  {} {p}\n",
                if broken { "BROKEN" } else { "ok    " }
            ));
        }
        for f in &self.violations {
            out.push_str(&f.render());
        }
        out.push_str(&match self.violations.len() {
            0 => format!("all {} policies hold\n", self.policies.len()),
            n => format!("{n} of {} policies broken\n", self.policies.len()),
        });
        out
    }
}

impl Finding {
    fn render(&self) -> String {
        let mut out = format!("\nviolation of {} ({})\n", self.kind, self.policy);
        let who = match self.contacts {
            0 => "the population".to_string(),
            1 => "1 contact".to_string(),
            n => format!("{n} contacts"),
        };
        out.push_str(&format!("  broken by {who}: {}\n", self.detail));
        let Some(c) = &self.counterexample else {
            return out;
        };
        out.push_str(&format!(
            "  counterexample ({}): {} of its {} events\n",
            if c.shrunk {
                "shrunk"
            } else {
                "not shrunk: it needs other contacts"
            },
            c.events.len(),
            c.events_before
        ));
        out.push_str(&format!("    contact {}\n", c.contact));
        for e in &c.events {
            out.push_str(&format!("    event   {e}\n"));
        }
        out.push_str(&format!("  {}\n", c.detail));
        for r in &c.runs {
            for line in r.render().lines() {
                out.push_str(&format!("    {line}\n"));
            }
        }
        out
    }
}
