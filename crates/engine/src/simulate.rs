//! `nurture simulate`: the real engine on a virtual clock, nothing sent.
//!
//! The engine runs on a private in-memory store made for it (`nurture-store-memory`). The clock jumps from one instant
//! to the next at which something is due: an input event, a timer, a schedule firing.
//! Effects are reported in time order; the same input gives the same output, byte for byte.
//!
//! A contact is created at the start, or when the input says (`created_at`, or an explicit
//! `contact.created` event, which then is its creation).
//!
//! When the simulation ends: at `until` if given; otherwise when no input event and no
//! timer is left (schedule triggers and segment timers fire only while something else is
//! pending, or up to `until`).

use std::collections::HashMap;
use std::sync::Arc;

use crate::ingest::CONTACT_CREATED;
use crate::input::{id_for_email, ContactRow, Creation, IncomingEvent};
use crate::{Effect, Engine, EngineError};
use nurture_core::project::Project;
use nurture_store::limits::SendLimits;
use nurture_store::{OutboxEntry, OutboxOutcome, Store, Ts};
use nurture_store_memory::MemoryStore;

/// The simulated delivery of the outbox: everything due is "sent" at once (recorded, as
/// by a deliverer without channels), except what a frequency cap defers, which is
/// reported (`deferred`) and sent when the cap allows (`sent`).
struct Outbox {
    /// Keys of entries deferred at least once.
    deferred: std::collections::HashSet<String>,
    /// The project's templates: every email and notification is rendered as it would be
    /// sent, and one that does not render fails (`failed`, with why).
    renderer: nurture_core::template::Renderer,
    /// Every message delivered to a contact, when recorded (for `nurture check`).
    sends: Option<Vec<Delivery>>,
}

/// A message the simulation delivered to a contact, with the contact as it was when the
/// message was queued (what `nurture check` holds against the policies).
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// When it went out (simulated time).
    pub at: Ts,
    /// The outbox key.
    pub key: String,
    /// The contact it went to.
    pub contact: String,
    /// The run that queued it.
    pub run: Option<String>,
    /// Its workflow and step.
    pub workflow: Option<String>,
    /// The step that queued it.
    pub step: Option<String>,
    /// `email`, or the channel of a plugin step (`sms`...).
    pub channel: String,
    /// The contact's consent to that channel (`opted_in`, `opted_out`, `unknown`).
    pub consent: String,
    /// The contact had unsubscribed or complained.
    pub unsubscribed: bool,
    /// The contact's time zone, if it has one.
    pub timezone: Option<String>,
}

impl Delivery {
    /// The delivery of `e` at `at`, if it is a message to the contact (an email, or a
    /// plugin step with a channel; not a notification, a webhook or another plugin).
    fn of(e: &OutboxEntry, at: Ts) -> Option<Delivery> {
        let p = &e.payload;
        let channel = match e.kind.as_str() {
            "email" => "email".to_string(),
            "plugin" => p.get("channel")?.as_str()?.to_string(),
            _ => return None,
        };
        let c = p.get("contact").cloned().unwrap_or_default();
        let consent = if channel == "email" {
            c.get("consent").and_then(|v| v.as_str())
        } else {
            c.get(crate::channels::consent_key(&channel))
                .and_then(|v| v.as_str())
        };
        Some(Delivery {
            at,
            key: e.key.clone(),
            contact: e.contact.clone(),
            run: e.run_id.clone(),
            workflow: e.workflow.clone(),
            step: e.step.clone(),
            consent: consent.unwrap_or("unknown").to_string(),
            channel,
            unsubscribed: c.get("unsubscribed").and_then(|v| v.as_bool()) == Some(true),
            timezone: c.get("timezone").and_then(|v| v.as_str()).map(String::from),
        })
    }
}

impl Outbox {
    /// Delivers what is due at `now`: on the in-memory store with the deferrals of the
    /// send limits, on another store (`run_on`) what it hands out.
    async fn deliver(&mut self, store: &Backing, now: Ts) -> Result<Vec<Effect>, EngineError> {
        let mut effects = Vec::new();
        loop {
            let (due, later) = match store {
                Backing::Memory(m) => m.claim_outbox(now, 1000).await?,
                Backing::Other(s) => (s.pending_outbox(now, 1000).await?, Vec::new()),
            };
            for (e, d) in &later {
                self.deferred.insert(e.key.clone());
                let mut extra = what(e);
                extra.insert("until".into(), nurture_store::ts_out(d.until).into());
                extra.insert("reason".into(), d.cause.into());
                effects.push(effect(e, now, "deferred", extra));
            }
            if due.is_empty() {
                break;
            }
            let items: Vec<(String, OutboxOutcome)> = due
                .iter()
                .map(|e| (e.key.clone(), self.outcome(e)))
                .collect();
            store.get().complete_outbox_many(&items, now).await?;
            for (e, (_, outcome)) in due.iter().zip(&items) {
                if let (Some(sends), OutboxOutcome::Delivered { .. }) = (&mut self.sends, outcome) {
                    sends.extend(Delivery::of(e, now));
                }
                if let OutboxOutcome::Failed { reason } = outcome {
                    let mut extra = what(e);
                    extra.insert("reason".into(), reason.clone().into());
                    effects.push(effect(e, now, "failed", extra));
                } else if self.deferred.remove(&e.key) {
                    effects.push(effect(e, now, "sent", what(e)));
                }
            }
        }
        Ok(effects)
    }
}

impl Outbox {
    fn new(project: &Project, record: bool) -> Outbox {
        let (renderer, _) = nurture_core::template::Renderer::new(&project.templates);
        Outbox {
            deferred: Default::default(),
            renderer,
            sends: record.then(Vec::new),
        }
    }

    /// The simulated outcome of delivering `e`: delivered, unless it is an email or a
    /// notification whose template does not render for its contact.
    fn outcome(&self, e: &OutboxEntry) -> OutboxOutcome {
        let p = &e.payload;
        let Some(template) = p["template"].as_str() else {
            return OutboxOutcome::Delivered {
                record: serde_json::json!({"channel": "simulate"}),
            };
        };
        let contact = p.get("contact").cloned().unwrap_or_default();
        let ctx = serde_json::json!({
            "contact": contact,
            "owner": {"email": contact.get("owner").cloned().unwrap_or_default()},
            "event": p.get("event").cloned().unwrap_or_default(),
            "unsubscribe_url": "https://simulated.invalid/u/TOKEN",
        });
        match self.renderer.check(template, &ctx, p["subject"].as_str()) {
            Ok(_) => OutboxOutcome::Delivered {
                record: serde_json::json!({"channel": "simulate"}),
            },
            Err(e) => OutboxOutcome::Failed {
                reason: e.to_string(),
            },
        }
    }
}

/// What an outbox entry sends, for a simulated effect.
fn what(e: &OutboxEntry) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("kind".into(), e.kind.as_str().into());
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

/// The store a simulation runs on: its own in-memory one, or one given (`run_on`).
enum Backing {
    Memory(Arc<MemoryStore>),
    Other(Arc<dyn Store>),
}

impl Backing {
    fn get(&self) -> Arc<dyn Store> {
        match self {
            Backing::Memory(m) => m.clone(),
            Backing::Other(s) => s.clone(),
        }
    }
}

/// What a simulation did, for the closing summary.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Summary {
    /// The simulated start: `--start`, or the earliest event or creation.
    pub start: Option<Ts>,
    /// The simulated time it stopped at.
    pub end: Option<Ts>,
    /// Contact rows given.
    pub contacts: usize,
    /// Events given.
    pub events: usize,
    /// Effects emitted.
    pub effects: usize,
    /// Events refused: (line, reason).
    pub rejected_events: Vec<(usize, String)>,
    /// Contact rows refused: (line, reason).
    pub rejected_contacts: Vec<(usize, String)>,
}

/// Runs a simulation; `emit` receives each effect in order.
///
/// Contacts are created at the start, except those whose creation the input states: a
/// contact's `created_at`, or else its first explicit `contact.created` event (which is
/// then that creation, not a second one). Such a contact is created at that instant, with
/// its `contact.created` event; before it, events for it are rejected. A second creation
/// of one contact (a `contact.created` event besides its `created_at`, or two events) is
/// rejected with a reason.
pub async fn run(
    project: Arc<Project>,
    contacts: &[ContactRow],
    events: Vec<IncomingEvent>,
    start: Option<Ts>,
    until: Option<Ts>,
    emit: impl FnMut(&Effect),
) -> Result<Summary, EngineError> {
    Ok(run_keeping(project, contacts, events, start, until, emit)
        .await?
        .0)
}

/// [`run`], also handing back the simulation's in-memory store (for its reports).
pub async fn run_keeping(
    project: Arc<Project>,
    contacts: &[ContactRow],
    events: Vec<IncomingEvent>,
    start: Option<Ts>,
    until: Option<Ts>,
    emit: impl FnMut(&Effect),
) -> Result<(Summary, Arc<dyn Store>), EngineError> {
    let memory = Backing::Memory(Arc::new(MemoryStore::new()));
    let (summary, store, _) = run_inner(
        memory,
        project,
        contacts,
        events,
        (start, until),
        false,
        emit,
    )
    .await?;
    Ok((summary, store))
}

/// [`run`] on `store` instead of a private in-memory one (`nurture bench --only storage`
/// measures what a campaign leaves in a durable store). Sends deferred by a frequency cap
/// are not reported as such.
pub async fn run_on(
    store: Arc<dyn Store>,
    project: Arc<Project>,
    contacts: &[ContactRow],
    events: Vec<IncomingEvent>,
    (start, until): (Option<Ts>, Option<Ts>),
) -> Result<Summary, EngineError> {
    let backing = Backing::Other(store);
    let run = run_inner(
        backing,
        project,
        contacts,
        events,
        (start, until),
        false,
        |_| {},
    );
    Ok(run.await?.0)
}

/// What [`run_recording`] hands back: the summary, the store and every delivery.
pub type Recorded = (Summary, Arc<dyn Store>, Vec<Delivery>);

/// [`run_keeping`], also recording every message delivered to a contact.
pub async fn run_recording(
    project: Arc<Project>,
    contacts: &[ContactRow],
    events: Vec<IncomingEvent>,
    start: Option<Ts>,
    until: Option<Ts>,
) -> Result<Recorded, EngineError> {
    let memory = Backing::Memory(Arc::new(MemoryStore::new()));
    run_inner(
        memory,
        project,
        contacts,
        events,
        (start, until),
        true,
        |_| {},
    )
    .await
}

async fn run_inner(
    memory: Backing,
    project: Arc<Project>,
    contacts: &[ContactRow],
    mut events: Vec<IncomingEvent>,
    (start, until): (Option<Ts>, Option<Ts>),
    record: bool,
    mut emit: impl FnMut(&Effect),
) -> Result<Recorded, EngineError> {
    let store = memory.get();
    // The frequency caps apply as in a live run (rate limits are about throughput).
    store.set_send_limits(SendLimits::for_project(&project).caps_only());
    let mut outbox = Outbox::new(&project, record);
    let engine = Arc::new(Engine::new(project, store.clone()).simulating_outcomes());
    let first = events
        .iter()
        .filter_map(|e| e.at)
        .chain(
            contacts
                .iter()
                .filter_map(|c| c.created.as_ref().map(|k| k.at)),
        )
        .min();
    let t0 = start.or(first).ok_or_else(|| {
        EngineError::Invalid(
            "nothing to simulate: give events with `at`, contacts with `created_at`, or --start"
                .into(),
        )
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

    let mut rows: Vec<ContactRow> = contacts.to_vec();
    events = take_creations(&mut rows, events, &mut summary);
    let (now_rows, mut later) = by_creation(rows, t0);
    let imported = engine.import_contacts(&now_rows, t0).await?;
    summary
        .rejected_contacts
        .extend(imported.rejected.iter().map(|r| (r.at, r.reason.clone())));
    // Records the start for schedule triggers: they fire from t0 on.
    engine.fire_schedules(t0).await?;

    let mut clock = t0;
    let mut idx = 0;
    let mut first_round = true;
    for _ in 0..10_000_000u64 {
        let next_event = events.get(idx).and_then(|e| e.at);
        let next_creation = later.first().map(|(at, _)| *at);
        let next_timer = store.next_timer().await?;
        // Sends deferred by a frequency cap.
        let next_send = store.next_outbox().await?;
        let pending = next_event.is_some()
            || next_timer.is_some()
            || next_creation.is_some()
            || next_send.is_some();
        // Schedules and segment timers keep no simulation going on their own.
        let (next_schedule, next_segment) = if pending || until.is_some() {
            (
                engine.next_schedule(clock),
                engine.next_segment_timer().await?,
            )
        } else {
            (None, None)
        };
        // The first round runs at t0: contacts created then (with a `created_at` before
        // every event) enter their workflows then, not at the first event.
        let at_start = first_round.then_some(t0);
        let candidates = [
            at_start,
            next_event,
            next_creation,
            next_timer,
            next_schedule,
            next_segment,
            next_send,
        ];
        let Some(mut t) = candidates.iter().flatten().min().copied() else {
            if first_round {
                // Contacts imported at t0 may have pending work.
                let mut effects = engine.tick(clock).await?;
                effects.extend(outbox.deliver(&memory, clock).await?);
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
        let due = later.iter().take_while(|(at, _)| *at <= clock).count();
        if due > 0 {
            let rows: Vec<ContactRow> = later.drain(..due).flat_map(|(_, r)| r).collect();
            let imported = engine.import_contacts(&rows, clock).await?;
            summary
                .rejected_contacts
                .extend(imported.rejected.iter().map(|r| (r.at, r.reason.clone())));
        }
        let mut batch = Vec::new();
        while idx < events.len() && events[idx].at.is_some_and(|a| a <= clock) {
            batch.push(events[idx].clone());
            idx += 1;
        }
        if !batch.is_empty() {
            for o in engine.ingest(&batch, clock).await? {
                if o.status == "rejected" {
                    let reason = o.reason.unwrap_or_default();
                    let event = batch.iter().find(|e| e.index == o.index);
                    let pending = event
                        .and_then(|e| e.contact.as_deref())
                        .and_then(|c| later.iter().find(|(_, rows)| key(&rows[0]) == c));
                    let reason = match pending {
                        Some((at, rows)) => format!(
                            "contact `{}` is created at {} (line {} of the contacts), after this event",
                            key(&rows[0]),
                            nurture_store::ts_out(*at),
                            rows[0].line
                        ),
                        None => reason,
                    };
                    summary.rejected_events.push((o.index, reason));
                }
            }
        }
        let mut effects = engine.tick(clock).await?;
        effects.extend(outbox.deliver(&memory, clock).await?);
        summary.effects += effects.len();
        effects.iter().for_each(&mut emit);
    }
    summary.end = Some(clock);
    Ok((summary, store, outbox.sends.unwrap_or_default()))
}

/// The id a row's contact gets in the simulation's empty store.
fn key(row: &ContactRow) -> String {
    row.id
        .clone()
        .unwrap_or_else(|| id_for_email(row.email.as_deref().unwrap_or_default()))
}

/// Makes each explicit `contact.created` event of a contact of `rows` its creation (the
/// first row of that contact gets it), unless the contact's creation is already stated:
/// then the event is rejected. Answers the other events.
fn take_creations(
    rows: &mut [ContactRow],
    events: Vec<IncomingEvent>,
    summary: &mut Summary,
) -> Vec<IncomingEvent> {
    // Per contact: its first row, and where its creation was stated (a line of the
    // contacts, or of the events).
    let mut stated: HashMap<String, String> = HashMap::new();
    let mut first_row: HashMap<String, usize> = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        let k = key(r);
        first_row.entry(k.clone()).or_insert(i);
        if r.created.is_some() {
            stated
                .entry(k)
                .or_insert(format!("`created_at` on line {} of the contacts", r.line));
        }
    }
    let mut rest = Vec::with_capacity(events.len());
    for e in events {
        if e.kind != CONTACT_CREATED {
            rest.push(e);
            continue;
        }
        let found = match (&e.contact, &e.email) {
            (Some(c), _) => first_row.get(c).map(|_| c.clone()),
            (None, Some(email)) => rows
                .iter()
                .find(|r| r.email.as_deref() == Some(email.as_str()))
                .map(key),
            (None, None) => None,
        };
        let Some(k) = found else {
            // Not a contact of the file: ingestion creates it by email (the event is its
            // creation), or rejects an unknown id.
            rest.push(e);
            continue;
        };
        if let Some(by) = stated.get(&k) {
            summary.rejected_events.push((
                e.index,
                format!("contact `{k}` is already created by {by}; a contact is created once"),
            ));
            continue;
        }
        stated.insert(
            k.clone(),
            format!("the `contact.created` event on line {}", e.index),
        );
        let at = e.at.expect("simulated events have a time");
        rows[first_row[&k]].created = Some(Creation { at, data: e.data });
    }
    rest
}

/// Rows created at `t0` (no stated creation, or one before it), and the others grouped by
/// contact, in order of creation.
fn by_creation(rows: Vec<ContactRow>, t0: Ts) -> (Vec<ContactRow>, Vec<(Ts, Vec<ContactRow>)>) {
    let mut created: HashMap<String, Ts> = HashMap::new();
    for r in &rows {
        if let Some(c) = &r.created {
            let at = created.entry(key(r)).or_insert(c.at);
            *at = (*at).min(c.at);
        }
    }
    let mut now = Vec::new();
    let mut later: Vec<(Ts, Vec<ContactRow>)> = Vec::new();
    for r in rows {
        match created.get(&key(&r)) {
            Some(at) if *at > t0 => match later.iter_mut().find(|(_, rs)| key(&rs[0]) == key(&r)) {
                Some((_, rs)) => rs.push(r),
                None => later.push((*at, vec![r])),
            },
            _ => now.push(r),
        }
    }
    // Stable: contacts created at one instant keep their file order.
    later.sort_by_key(|(at, _)| *at);
    (now, later)
}

/// One effect as a JSON line (the outbox key is internal and left out).
pub fn effect_line(e: &Effect) -> String {
    let mut e = e.clone();
    e.extra.shift_remove("key");
    serde_json::to_string(&e).expect("effect serializes")
}
