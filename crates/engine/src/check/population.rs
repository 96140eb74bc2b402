//! The population `nurture check` simulates: contacts drawn from a seed across time
//! zones (DST-switching ones included), consent states, lifecycle stages, tags and
//! company sizes the project's conditions read, and event streams drawn from the
//! project's triggers, `wait_for` steps and scoring rules.

use chrono::Duration;
use serde_json::{json, Map, Value};

use nurture_core::model::{StepKind, Trigger};
use nurture_core::project::Project;
use nurture_store::Ts;

use crate::input::{parse_contact, parse_event, ContactRow, IncomingEvent};

/// Time zones of generated contacts: three that switch to summer time on different
/// dates (north and south), one with a half-hour offset and no DST, and none (the
/// workflow's or the project's zone applies).
pub const TIME_ZONES: &[Option<&str>] = &[
    Some("America/New_York"),
    Some("Europe/Berlin"),
    Some("Australia/Sydney"),
    Some("Asia/Kolkata"),
    None,
];

/// Consent states of generated contacts.
pub const CONSENTS: &[&str] = &["opted_in", "unknown", "opted_out"];

/// A small deterministic generator (SplitMix64): the same seed gives the same population
/// on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// One item of `items` (not empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// True with probability `num`/`den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The seed.
    pub seed: u64,
    /// How many contacts.
    pub contacts: usize,
    /// The most events per contact.
    pub max_events: usize,
    /// The simulated start.
    pub start: Ts,
    /// Events fall in `start..start + horizon`.
    pub horizon: Duration,
}

/// An event the project reacts to: its type and the data its conditions look for.
pub type EventShape = (String, Value);

/// Generates contacts and their events.
pub fn generate(project: &Project, spec: &Spec) -> (Vec<ContactRow>, Vec<IncomingEvent>) {
    let mut rng = Rng::new(spec.seed);
    let shapes = event_shapes(project);
    let tags = tags_read(project);
    let mut contacts = Vec::new();
    let mut events = Vec::new();
    for i in 0..spec.contacts {
        let id = format!("gen-{i:04}");
        let row = contact(&mut rng, &id, &tags);
        contacts.extend(parse_contact(i + 1, &row).ok());
        let n = rng.below(spec.max_events as u64 + 1) as usize;
        for _ in 0..n {
            let (kind, data) = if rng.chance(1, 25) {
                ("email.unsubscribed".to_string(), json!({}))
            } else if shapes.is_empty() {
                break;
            } else {
                rng.pick(&shapes).clone()
            };
            let secs = rng.below(spec.horizon.num_seconds().max(1) as u64) as i64;
            let at = spec.start + Duration::seconds(secs);
            let v =
                json!({"type": kind, "contact": id, "at": nurture_store::ts_out(at), "data": data});
            events.extend(parse_event(events.len() + 1, &v).ok());
        }
    }
    (contacts, events)
}

fn contact(rng: &mut Rng, id: &str, tags: &[String]) -> Value {
    let mut c = Map::new();
    c.insert("id".into(), id.into());
    c.insert("email".into(), format!("{id}@example.test").into());
    c.insert("first_name".into(), "Gen".into());
    if let Some(tz) = rng.pick(TIME_ZONES) {
        c.insert("timezone".into(), (*tz).into());
    }
    c.insert("consent".into(), (*rng.pick(CONSENTS)).into());
    let stages = nurture_core::model::LIFECYCLE_STAGES;
    c.insert("lifecycle".into(), (*rng.pick(stages)).into());
    let mine: Vec<&String> = tags.iter().filter(|_| rng.chance(1, 2)).collect();
    c.insert("tags".into(), json!(mine));
    let employees = *rng.pick(&[8, 40, 99, 150, 800]);
    c.insert(
        "company".into(),
        json!({"name": "Gen Co", "employees": employees}),
    );
    if rng.chance(1, 2) {
        c.insert("phone".into(), "+15550100".into());
        c.insert("consent_sms".into(), (*rng.pick(CONSENTS)).into());
    }
    Value::Object(c)
}

/// The events the project reacts to: event triggers, `wait_for` steps and event scoring
/// rules, each with the data its condition compares (`event.data.form == "ebook"`).
pub fn event_shapes(project: &Project) -> Vec<EventShape> {
    let mut out: Vec<EventShape> = Vec::new();
    let mut add = |kind: &str, cond: Option<&str>| {
        let shape = (kind.to_string(), data_for(cond.unwrap_or_default()));
        if !out.contains(&shape) {
            out.push(shape);
        }
    };
    for plan in &project.plans {
        for t in plan.workflow.trigger.as_slice() {
            if let Trigger::Event(e) = t {
                add(&e.event, e.condition.as_ref().map(|c| c.0.as_str()));
            }
        }
        for step in &plan.workflow.steps {
            if let StepKind::WaitFor(w) = &step.kind {
                add(&w.event, w.condition.as_ref().map(|c| c.0.as_str()));
            }
        }
    }
    for rule in &project.scoring.rules {
        if let Some(kind) = &rule.event {
            add(kind, rule.condition.as_ref().map(|c| c.0.as_str()));
        }
    }
    out
}

/// Data that satisfies the simple comparisons of a condition: `event.data.K == "V"`,
/// `event.data.K.startsWith("V")` and `has(event.data.K)`.
pub fn data_for(cond: &str) -> Value {
    let mut data = Map::new();
    let mut rest = cond;
    while let Some(i) = rest.find("event.data.") {
        rest = &rest[i + "event.data.".len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .unwrap_or(rest.len());
        let mut path = &rest[..end];
        let after = rest[end..].trim_start();
        let value = if let Some(p) = path.strip_suffix(".startsWith") {
            path = p;
            quoted(after.strip_prefix('('))
        } else {
            quoted(after.strip_prefix("=="))
        };
        let key = path.split('.').next().unwrap_or_default().to_string();
        match value {
            Some(v) => {
                data.insert(key, v.into());
            }
            None => {
                data.entry(key).or_insert_with(|| "x".into());
            }
        }
    }
    Value::Object(data)
}

/// The text of a string literal at the start of `s` (after spaces).
fn quoted(s: Option<&str>) -> Option<String> {
    let s = s?.trim_start().strip_prefix('"')?;
    Some(s[..s.find('"')?].to_string())
}

/// The tags the project's conditions test (`"newsletter" in contact.tags`).
fn tags_read(project: &Project) -> Vec<String> {
    let mut texts: Vec<&str> = project
        .segments
        .iter()
        .map(|s| s.condition.0.as_str())
        .collect();
    let sources: Vec<&String> = project.workflow_sources.values().collect();
    texts.extend(sources.iter().map(|s| s.as_str()));
    let mut tags = Vec::new();
    for t in texts {
        let mut rest = t;
        while let Some(i) = rest.find("\" in contact.tags") {
            let before = &rest[..i];
            if let Some(j) = before.rfind('"') {
                let tag = before[j + 1..].to_string();
                if !tag.is_empty() && !tags.contains(&tag) {
                    tags.push(tag);
                }
            }
            rest = &rest[i + 1..];
        }
    }
    tags.sort();
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_satisfies_simple_comparisons() {
        assert_eq!(
            data_for(r#"event.data.form == "ebook""#),
            json!({"form": "ebook"})
        );
        assert_eq!(
            data_for(
                r#"event.data.url.startsWith("/enterprise") && has(event.data.clicked) && event.data.clicked == "offer""#
            ),
            json!({"url": "/enterprise", "clicked": "offer"})
        );
        assert_eq!(data_for(""), json!({}));
    }

    #[test]
    fn the_same_seed_gives_the_same_numbers() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let xs: Vec<u64> = (0..5).map(|_| a.below(100)).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.below(100)).collect();
        assert_eq!(xs, ys);
        assert_ne!(
            xs,
            (0..5).map(|_| Rng::new(8).below(100)).collect::<Vec<_>>()
        );
    }
}
