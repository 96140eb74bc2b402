//! `nurture simulate`: the real engine on a virtual clock, nothing sent.
//!
//! The engine runs on a private in-memory SQLite store. The clock jumps from one instant
//! to the next at which something is due: an input event, a timer, a schedule firing.
//! Effects are reported in time order; the same input gives the same output, byte for byte.
//!
//! When the simulation ends: at `until` if given; otherwise when no input event and no
//! timer is left (schedule triggers fire only while something else is pending, or up to
//! `until`).

use std::sync::Arc;

use crate::engine::{Effect, Engine, EngineError};
use crate::input::{ContactRow, IncomingEvent};
use crate::project::Project;
use crate::store::limits::SendLimits;
use crate::store::{sqlite::SqliteStore, OutboxEntry, OutboxOutcome, Store, Ts};

/// The simulated delivery of the outbox: everything due is "sent" at once (recorded, as
/// by a deliverer without channels), except what a frequency cap defers, which is
/// reported (`deferred`) and sent when the cap allows (`sent`).
#[derive(Default)]
struct Outbox {
    /// Keys of entries deferred at least once.
    deferred: std::collections::HashSet<String>,
}

impl Outbox {
    async fn deliver(&mut self, store: &SqliteStore, now: Ts) -> Result<Vec<Effect>, EngineError> {
        let mut effects = Vec::new();
        loop {
            let (due, later) = store.claim_outbox(now, 1000).await?;
            for (e, d) in &later {
                self.deferred.insert(e.key.clone());
                let mut extra = what(e);
                extra.insert("until".into(), crate::store::ts_out(d.until).into());
                extra.insert("reason".into(), d.cause.into());
                effects.push(effect(e, now, "deferred", extra));
            }
            if due.is_empty() {
                break;
            }
            let items: Vec<(String, OutboxOutcome)> = due
                .iter()
                .map(|e| {
                    let record = serde_json::json!({"channel": "simulate"});
                    (e.key.clone(), OutboxOutcome::Delivered { record })
                })
                .collect();
            store.complete_outbox_many(&items, now).await?;
            for e in due {
                if self.deferred.remove(&e.key) {
                    effects.push(effect(&e, now, "sent", what(&e)));
                }
            }
        }
        Ok(effects)
    }
}

/// What an outbox entry sends, for a simulated effect.
fn what(e: &OutboxEntry) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("kind".into(), e.kind.clone().into());
    for k in ["template", "plugin", "channel"] {
        if let Some(v) = e.payload.get(k).filter(|v| !v.is_null()) {
            m.insert(k.into(), v.clone());
        }
    }
    m
}

fn effect(
    e: &OutboxEntry,
    at: Ts,
    kind: &'static str,
    extra: serde_json::Map<String, serde_json::Value>,
) -> Effect {
    Effect {
        at,
        contact: e.contact.clone(),
        workflow: e.workflow.clone(),
        step: e.step.clone(),
        effect: kind,
        extra,
    }
}

/// What a simulation did, for the closing summary.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Summary {
    pub start: Option<Ts>,
    pub end: Option<Ts>,
    pub contacts: usize,
    pub events: usize,
    pub effects: usize,
    pub rejected_events: Vec<(usize, String)>,
    pub rejected_contacts: Vec<(usize, String)>,
}

/// Runs a simulation; `emit` receives each effect in order.
pub async fn run(
    project: Arc<Project>,
    contacts: &[ContactRow],
    mut events: Vec<IncomingEvent>,
    start: Option<Ts>,
    until: Option<Ts>,
    mut emit: impl FnMut(&Effect),
) -> Result<Summary, EngineError> {
    let sqlite = Arc::new(SqliteStore::open("sqlite::memory:").await?);
    let store: Arc<dyn Store> = sqlite.clone();
    // The frequency caps apply as in a live run (rate limits are about throughput).
    store.set_send_limits(SendLimits::for_project(&project).caps_only());
    let engine = Arc::new(Engine::new(project, store.clone()));
    let mut outbox = Outbox::default();
    let first = events.iter().filter_map(|e| e.at).min();
    let t0 = start.or(first).ok_or_else(|| {
        EngineError::Invalid("nothing to simulate: give events with `at`, or --start".into())
    })?;
    for e in events.iter_mut() {
        e.at.get_or_insert(t0);
    }
    // Stable: events at the same instant keep their file order.
    events.sort_by_key(|e| e.at);
    let mut summary = Summary {
        start: Some(t0),
        contacts: contacts.len(),
        events: events.len(),
        ..Default::default()
    };

    let imported = engine.import_contacts(contacts, t0).await?;
    summary.rejected_contacts = imported
        .rejected
        .iter()
        .map(|r| (r.at, r.reason.clone()))
        .collect();
    // Records the start for schedule triggers: they fire from t0 on.
    engine.fire_schedules(t0).await?;

    let mut clock = t0;
    let mut idx = 0;
    let mut first_round = true;
    for _ in 0..10_000_000u64 {
        let next_event = events.get(idx).and_then(|e| e.at);
        let next_timer = store.next_timer().await?;
        // Sends deferred by a frequency cap.
        let next_send = store.next_outbox().await?;
        let pending = next_event.is_some() || next_timer.is_some() || next_send.is_some();
        let next_schedule = if pending || until.is_some() {
            engine.next_schedule(clock)
        } else {
            None
        };
        let candidates = [next_event, next_timer, next_schedule, next_send];
        let Some(mut t) = candidates.iter().flatten().min().copied() else {
            if first_round {
                // Contacts imported at t0 may have pending work.
                let mut effects = engine.tick(clock).await?;
                effects.extend(outbox.deliver(&sqlite, clock).await?);
                summary.effects += effects.len();
                effects.iter().for_each(&mut emit);
                first_round = false;
                continue;
            }
            break;
        };
        first_round = false;
        if until.is_some_and(|u| t > u) {
            break;
        }
        t = t.max(clock);
        clock = t;
        let mut batch = Vec::new();
        while idx < events.len() && events[idx].at.is_some_and(|a| a <= clock) {
            batch.push(events[idx].clone());
            idx += 1;
        }
        if !batch.is_empty() {
            for o in engine.ingest(&batch, clock).await? {
                if o.status == "rejected" {
                    summary
                        .rejected_events
                        .push((o.index, o.reason.unwrap_or_default()));
                }
            }
        }
        let mut effects = engine.tick(clock).await?;
        effects.extend(outbox.deliver(&sqlite, clock).await?);
        summary.effects += effects.len();
        effects.iter().for_each(&mut emit);
    }
    summary.end = Some(clock);
    Ok(summary)
}

/// One effect as a JSON line (the outbox key is internal and left out).
pub fn effect_line(e: &Effect) -> String {
    let mut e = e.clone();
    e.extra.shift_remove("key");
    serde_json::to_string(&e).expect("effect serializes")
}
