//! The engine: executes compiled plans durably.
//!
//! All work belongs to one contact at a time and is done in a *unit of work*: load the
//! contact, its runs and its history; apply one event (scoring, goals, resumed waits,
//! triggers) or fire one timer; advance every affected run until it waits or ends; then
//! commit everything in one transaction ([`Store::commit`]). A crash before the commit
//! loses nothing (the event stays queued, the timer stays due) and repeats nothing (the
//! committed work is not done again). Effects that leave the system (emails,
//! notifications, webhooks, plugin calls) go to the outbox with an idempotency key derived
//! from (run, step, action), and are delivered by [`nurture_channels::deliver`].

#![warn(missing_docs)]
#![warn(unreachable_pub)]

mod actions;
pub mod backtest;
pub mod channels;
pub mod check;
pub mod contact;
pub mod deploy;
pub mod eval;
pub mod explain;
pub mod ids;
pub mod ingest;
pub mod input;
pub mod manual;
pub mod merge;
pub mod metrics;
pub mod outcome;
pub mod privacy;
pub mod replay;
pub mod report;
pub mod segments;
pub mod simulate;
mod steps;
pub mod story;
mod tally;
pub mod time;
pub mod versions;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use chrono::Utc;
use serde::Serialize;
use serde_json::{json, Map, Value};

use nurture_core::aging::{score_json, Aging};
use nurture_core::model::{Reentry, StepKind, Trigger};
use nurture_core::plan::{Edge, Plan};
use nurture_core::project::Project;
use nurture_core::versions::Fate;
use nurture_store::{
    Contact, DueTimer, JournalEntry, OutboxEntry, Run, RunStatus, Store, StoreError, StoredEvent,
    Ts, UnitOfWork, Wait,
};

pub use crate::ids::{digest, split_bucket};
use eval::Scope;
use steps::edge_target;
pub use steps::StepError;

/// Errors of the engine. [`EngineError::is_retryable`] says whether trying again can help.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    /// The store failed; retryable when the store error is ([`StoreError::is_retryable`]).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A request the engine cannot do, or a task of it that stopped; says why.
    #[error("invalid input: {0}")]
    Invalid(String),
}

impl EngineError {
    /// Whether the same work may succeed if tried again (a busy or unreachable store).
    pub fn is_retryable(&self) -> bool {
        matches!(self, EngineError::Store(e) if e.is_retryable())
    }
}

/// One observable effect, as `nurture simulate` prints it.
#[derive(Debug, Clone, PartialEq)]
pub struct Effect {
    /// When it happened (simulated time under `nurture simulate`).
    pub at: Ts,
    /// The contact it happened to.
    pub contact: String,
    /// The workflow of the run that did it; `None` for scoring and other work outside runs.
    pub workflow: Option<String>,
    /// The step that did it, if a step did.
    pub step: Option<String>,
    /// Its kind: `enter`, `exit`, `email`, `set`, `score`, `save`, `sent`, `deferred`...
    pub effect: &'static str,
    /// Details of the kind (template, fields set, reason...), printed beside the fixed keys.
    pub extra: Map<String, Value>,
}

impl Serialize for Effect {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(5 + self.extra.len()))?;
        m.serialize_entry("at", &nurture_store::ts_out(self.at))?;
        m.serialize_entry("contact", &self.contact)?;
        m.serialize_entry("workflow", &self.workflow)?;
        m.serialize_entry("step", &self.step)?;
        m.serialize_entry("effect", self.effect)?;
        for (k, v) in &self.extra {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// How far back `activity()` looks; windows longer than this see no older events.
const HISTORY_DAYS: i64 = 400;

/// Most recent events of a contact a unit of work reads (within the window and types of
/// [`history_read`]): `activity()` counts at most this many.
pub const HISTORY_LIMIT: i64 = 1000;

/// How far back a unit of work loads its contact's events: the longest window of any
/// `activity(TYPE, WINDOW)` call in the project's workflows, scoring rules, segments and
/// templates (at most [`HISTORY_DAYS`]; a window that is not a literal string counts as
/// that much), or `None` when nothing calls `activity`: then no history is read at all,
/// which spares every unit a query whose cost grows with the contact's past.
pub fn history_window(project: &Project) -> Option<chrono::Duration> {
    activity_calls(project).map(|(w, _)| w)
}

/// The events a unit of work reads, relative to now: [`history_window`], only the types
/// that `activity` calls name (all types when one names its type with an expression), at
/// most the [`HISTORY_LIMIT`] most recent.
pub fn history_read(project: &Project) -> Option<(chrono::Duration, Option<Vec<String>>)> {
    activity_calls(project).map(|(w, types)| (w, types.map(|t| t.into_iter().collect())))
}

/// The literal string at the start of `s` (after blanks), and what follows it.
fn literal(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start();
    let q = s.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let body = &s[1..];
    let end = body.find(q)?;
    Some((&body[..end], &body[end + 1..]))
}

/// The longest window and the event types (`None`: not all literal) of the project's
/// `activity` calls; `None` when there are none.
fn activity_calls(
    project: &Project,
) -> Option<(chrono::Duration, Option<std::collections::BTreeSet<String>>)> {
    fn strings<'v>(v: &'v Value, out: &mut Vec<&'v str>) {
        match v {
            Value::String(s) => out.push(s),
            Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
            Value::Object(o) => o.values().for_each(|v| strings(v, out)),
            _ => {}
        }
    }
    let most = chrono::Duration::days(HISTORY_DAYS);
    let workflows: Vec<_> = project.plans.iter().map(|p| &p.workflow).collect();
    let docs: Result<Vec<Value>, _> = [
        serde_json::to_value(workflows),
        serde_json::to_value(&project.scoring),
        serde_json::to_value(&project.segments),
        serde_json::to_value(&project.templates),
    ]
    .into_iter()
    .collect();
    // (Not expected: the model is plain data. If it happened, read the full history.)
    let Ok(docs) = docs else {
        return Some((most, None));
    };
    let mut texts = Vec::new();
    docs.iter().for_each(|d| strings(d, &mut texts));
    let mut window: Option<chrono::Duration> = None;
    let mut types = Some(std::collections::BTreeSet::new());
    for text in texts {
        for (at, _) in text.match_indices("activity(") {
            let args = literal(&text[at + "activity(".len()..]);
            match args {
                Some((kind, _)) => {
                    if let Some(t) = types.as_mut() {
                        t.insert(kind.to_string());
                    }
                }
                None => types = None,
            }
            let w = args
                .and_then(|(_, rest)| rest.trim_start().strip_prefix(','))
                .and_then(literal)
                .and_then(|(w, _)| w.parse::<nurture_core::model::Duration>().ok())
                .map_or(most, |d| d.to_chrono().min(most));
            window = Some(window.map_or(w, |x| x.max(w)));
        }
    }
    window.map(|w| (w, types))
}
/// Guard against runaway loops inside one unit of work.
const MAX_ROUNDS: usize = 16;
/// Units of work per group commit (per lane and round).
const BATCH: i64 = 256;
/// Every how many rounds a lane claims a kind of work (events, timers) whose last claim
/// came back empty (see [`Engine::lane_round`]).
const RECHECK: usize = 4;

/// What a lane of [`Engine::tick_some`] learnt in its earlier rounds.
#[derive(Default)]
struct Lane {
    /// Whether the lane skips claims of a kind that came back empty: on a store where an
    /// empty claim still costs a scan ([`Store::empty_claims_cost`], Postgres).
    skips: bool,
    round: usize,
    events_empty: bool,
    timers_empty: bool,
}

/// Executes one project's compiled plans over one store: ingests events, imports
/// contacts, fires timers and schedules, each change to a contact in one unit of work.
pub struct Engine {
    /// The project whose plans, scoring and segments it runs.
    pub project: Arc<Project>,
    /// Where contacts, runs, timers and the outbox live.
    pub store: Arc<dyn Store>,
    /// The plans runs execute and new enrolments use (see [`versions`]).
    pub plans: versions::Plans,
    /// See [`history_read`].
    history: Option<(chrono::Duration, Option<Vec<String>>)>,
    /// Notified after every commit that queued outbox entries, so a delivery loop starts
    /// on them at once rather than when the engine's whole pass ends.
    pub outbox_queued: Arc<tokio::sync::Notify>,
    /// Where commits hand the outbox entries they claim, while a deliverer of this
    /// process takes them ([`Engine::hand_off`]).
    hand_off: std::sync::Mutex<Option<HandOff>>,
    scoring_programs: HashMap<String, Arc<cel::Program>>,
    /// The project's time-dependent conditions, if any (segment timers).
    clock: Option<segments::Clock>,
    /// `nurture simulate`: awaited steps go on at once as delivered (nothing is sent).
    simulated_outcomes: bool,
    /// How long held work of a paused workflow waits before it is looked at again.
    hold: chrono::Duration,
    /// Under [`replay`]: the values the conditions of the replayed runs read when they
    /// were recorded, which the replay's conditions read in turn.
    replay_reads: Option<replay::Reads>,
    /// The process's metrics ([`metrics`]).
    pub metrics: metrics::Metrics,
    /// Schedule expressions parsed once: the scheduler asks for the next firing every
    /// pass (parsing was a tenth of the simulator's time).
    crons: std::sync::Mutex<HashMap<String, Option<cron::Schedule>>>,
}

/// Outbox entries handed over and not yet recorded, beyond which commits stop claiming
/// (the entries then wait for the delivery loop's own claims): a slow channel cannot pile
/// up claimed entries in memory while their leases run out.
pub const HAND_OFF_CAP: usize = 2048;

/// The sending end of [`Engine::hand_off`].
#[derive(Clone)]
struct HandOff {
    tx: tokio::sync::mpsc::UnboundedSender<(std::time::Instant, Vec<OutboxEntry>)>,
    held: Arc<AtomicUsize>,
}

/// The receiving end of [`Engine::hand_off`]: batches of outbox entries leased to this
/// process, to be delivered at once, each with the instant it was claimed (its lease runs
/// from then).
pub struct HandedOff {
    /// Batches of claimed entries, each with the instant of its claim.
    pub rx: tokio::sync::mpsc::UnboundedReceiver<(std::time::Instant, Vec<OutboxEntry>)>,
    /// Entries handed over and not yet recorded: the receiver subtracts those it has
    /// recorded (delivered, to retry, failed).
    pub held: Arc<AtomicUsize>,
}

impl Engine {
    /// An engine for `project` over `store`, its scoring and segment conditions compiled once.
    pub fn new(project: Arc<Project>, store: Arc<dyn Store>) -> Self {
        let mut scoring_programs = HashMap::new();
        let mut add = |src: &str| {
            if let Ok(p) = nurture_core::expr::compile(src) {
                scoring_programs.insert(src.to_string(), Arc::new(p));
            }
        };
        for r in &project.scoring.rules {
            if let Some(c) = &r.condition {
                add(&c.0);
            }
            if let Some(c) = &r.profile {
                add(&c.0);
            }
        }
        for s in &project.segments {
            add(&s.condition.0);
        }
        // Workflows in id order: enrolment order is deterministic.
        let plans = versions::Plans::new(&project);
        Engine {
            history: history_read(&project),
            clock: segments::Clock::new(&project),
            outbox_queued: Arc::new(tokio::sync::Notify::new()),
            hand_off: std::sync::Mutex::new(None),
            project,
            store,
            plans,
            scoring_programs,
            simulated_outcomes: false,
            hold: HOLD,
            replay_reads: None,
            metrics: metrics::Metrics::new(),
            crons: Default::default(),
        }
    }

    /// An engine whose awaited `webhook`/`plugin` steps go on at once with a delivered
    /// outcome (`nurture simulate`, which sends nothing).
    pub fn simulating_outcomes(mut self) -> Self {
        self.simulated_outcomes = true;
        self
    }

    /// Held timers and sends of a paused workflow are looked at again after `hold`
    /// (default [`HOLD`]): resumed work goes out within it; shorter costs more units of
    /// work while paused.
    pub fn holding_for(mut self, hold: chrono::Duration) -> Self {
        self.hold = hold.max(chrono::Duration::seconds(1));
        self
    }

    /// See [`Engine::holding_for`].
    pub fn hold(&self) -> chrono::Duration {
        self.hold
    }

    /// The round-robin counters of the teams (read before a batch; commits are fenced on
    /// the values read).
    async fn load_counters(&self) -> Result<HashMap<String, i64>, EngineError> {
        let mut out = HashMap::new();
        for team in self.project.settings.teams.keys() {
            let name = format!("owner:{team}");
            let v = self.store.counter(&name).await?;
            out.insert(name, v);
        }
        Ok(out)
    }

    /// Starts handing over outbox entries: from now on, a commit that queues entries due
    /// at once claims them in its own transaction ([`Store::commit_claiming`]) and sends
    /// them here, so this process delivers them without a claim of its own and without
    /// waiting for its delivery loop to come round. A scheduler calls it once; its
    /// receiver ends after [`Engine::end_hand_off`].
    pub fn hand_off(&self) -> HandedOff {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let held = Arc::new(AtomicUsize::new(0));
        *self.hand_off.lock().expect("hand-off lock") = Some(HandOff {
            tx,
            held: held.clone(),
        });
        HandedOff { rx, held }
    }

    /// Stops handing over (commits leave their entries to the delivery loop's claims);
    /// the receiver gets what was sent before, then its end.
    pub fn end_hand_off(&self) {
        self.hand_off.lock().expect("hand-off lock").take();
    }

    /// Commits `uow` to the store. Every commit of the engine goes through here.
    ///
    /// Its outbox entries due at `now` are handed over to this process's deliverer when
    /// there is one ([`Engine::hand_off`]) with room; the delivery loop is woken
    /// ([`Engine::outbox_queued`]) for any others.
    async fn commit(&self, uow: &UnitOfWork, now: Ts) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let r = self.commit_inner(uow, now).await;
        self.metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        match &r {
            Ok(()) => {
                let units: std::collections::HashSet<&str> = uow
                    .contacts
                    .iter()
                    .map(|c| c.id.as_str())
                    .chain(uow.journal.iter().map(|j| j.contact.as_str()))
                    .collect();
                let steps = uow
                    .journal
                    .iter()
                    .filter(|j| j.kind == nurture_store::JournalKind::Step)
                    .count();
                if !units.is_empty() {
                    self.metrics.units.inc_by(units.len() as u64);
                    self.metrics.group_commit_units.observe(units.len() as f64);
                }
                self.metrics.steps.inc_by(steps as u64);
            }
            Err(StoreError::Conflict { .. }) => {
                self.metrics.conflicts.inc();
            }
            Err(_) => {}
        }
        r
    }

    async fn commit_inner(&self, uow: &UnitOfWork, now: Ts) -> Result<(), StoreError> {
        let due = uow.outbox.iter().filter(|e| e.due_at <= now).count();
        let sink = match due {
            0 => None,
            _ => self
                .hand_off
                .lock()
                .expect("hand-off lock")
                .clone()
                .filter(|h| h.held.load(Ordering::Relaxed) + due <= HAND_OFF_CAP),
        };
        let Some(sink) = sink else {
            self.store.commit(uow).await?;
            if !uow.outbox.is_empty() {
                self.outbox_queued.notify_one();
            }
            return Ok(());
        };
        let claimed_at = std::time::Instant::now();
        let keys: std::collections::HashSet<String> = self
            .store
            .commit_claiming(
                uow,
                now,
                nurture_store::lease_end(Utc::now(), self.store.lease()),
            )
            .await?
            .into_iter()
            .collect();
        let handed: Vec<OutboxEntry> = uow
            .outbox
            .iter()
            .filter(|e| keys.contains(&e.key))
            .cloned()
            .collect();
        if handed.len() < uow.outbox.len() {
            self.outbox_queued.notify_one();
        }
        if !handed.is_empty() {
            let n = handed.len();
            sink.held.fetch_add(n, Ordering::Relaxed);
            if sink.tx.send((claimed_at, handed)).is_err() {
                // The deliverer has gone (shutting down): the entries stay leased to this
                // process until the lease runs out, then any worker delivers them.
                sink.held.fetch_sub(n, Ordering::Relaxed);
                tracing::warn!(entries = n, "claimed outbox entries left to the lease");
            }
        }
        Ok(())
    }

    /// Which of its contact's events a unit loaded at `now` reads, if any.
    fn history_since(&self, now: Ts) -> Option<nurture_store::HistoryRead> {
        self.history
            .as_ref()
            .map(|(w, types)| nurture_store::HistoryRead {
                since: now - *w,
                types: types.clone(),
                limit: HISTORY_LIMIT,
            })
    }

    /// Whether `workflow` is paused (see [`versions::Current::paused`]).
    pub fn is_paused(&self, workflow: &str) -> bool {
        self.plans.current().paused.contains_key(workflow)
    }

    /// Pauses (or resumes) `workflow` for every process of the store: recorded with who
    /// and why, effective here at once and elsewhere at their next refresh (2 s).
    pub async fn set_paused(
        &self,
        workflow: &str,
        paused: bool,
        by: &str,
        reason: &str,
        now: Ts,
    ) -> Result<Vec<versions::Change>, EngineError> {
        // A workflow paused and then removed from the project can still be resumed.
        let known = self.plans.current().get(workflow).is_some()
            || (!paused
                && self
                    .store
                    .controls()
                    .await?
                    .iter()
                    .any(|c| c.workflow == workflow));
        if !known {
            return Err(EngineError::Invalid(format!("no workflow `{workflow}`")));
        }
        let c = nurture_store::WorkflowControl {
            workflow: workflow.to_string(),
            paused,
            by: by.to_string(),
            at: now,
            reason: reason.to_string(),
        };
        self.store.set_control(&c).await?;
        self.refresh_versions().await
    }

    /// Makes the latest deployed versions current (see [`versions::Plans::refresh`]);
    /// returns what changed. Schedulers call it every few seconds.
    pub async fn refresh_versions(&self) -> Result<Vec<versions::Change>, EngineError> {
        self.plans.refresh(&*self.store, &self.project).await
    }

    /// Loads the plans of the versions the open runs of `data` are pinned to.
    async fn ensure_plans(&self, data: &[nurture_store::UnitData]) -> Result<(), EngineError> {
        let runs = data.iter().flat_map(|d| d.runs.iter());
        self.plans.ensure(&*self.store, &self.project, runs).await
    }

    /// Applies queued events, oldest first; returns how many and their effects.
    pub async fn process_events(
        &self,
        now: Ts,
        limit: i64,
    ) -> Result<(usize, Vec<Effect>), EngineError> {
        let events = self.store.pending_events(limit).await?;
        // A contact's queued events (oldest first) are applied in one unit of work, each
        // settled before the next, as if they had come one per round.
        let units = nurture_store::by_contact(events, |e| &e.contact);
        self.run_units(units, now, |w, evs: &Vec<StoredEvent>| {
            w.in_turn(evs, Work::apply_event)
        })
        .await
    }

    /// Fires due timers; returns how many and their effects.
    pub async fn fire_timers(
        &self,
        now: Ts,
        limit: i64,
    ) -> Result<(usize, Vec<Effect>), EngineError> {
        let timers = self.store.due_timers(now, limit).await?;
        let mut live = Vec::with_capacity(timers.len());
        let mut orphans = Vec::new();
        for t in timers {
            match t.contact {
                Some(_) => live.push(t),
                None => orphans.push(t.run_id),
            }
        }
        // A contact's due timers (one per run) fire in one unit of work, in due order,
        // each settled before the next: none of them waits for another round.
        let units = nurture_store::by_contact(live, |t| t.contact.as_deref().unwrap_or_default());
        if !orphans.is_empty() {
            // Timers without a run: drop them.
            let uow = UnitOfWork {
                timers_clear: orphans,
                ..Default::default()
            };
            self.commit(&uow, now).await?;
        }
        let (n, mut effects) = self
            .run_units(units, now, |w, ts: &Vec<DueTimer>| {
                w.in_turn(ts, Work::fire_timer)
            })
            .await?;
        let (m, more) = self.fire_segment_timers(now, limit).await?;
        effects.extend(more);
        Ok((n + m, effects))
    }

    /// Runs one unit of work per contact (its items grouped by [`nurture_store::by_contact`])
    /// as one group commit ([`Engine::run_group`]); returns how many items it applied.
    async fn run_units<T, F>(
        &self,
        batch: Vec<(String, Vec<T>)>,
        now: Ts,
        f: F,
    ) -> Result<(usize, Vec<Effect>), EngineError>
    where
        T: Sync,
        F: Fn(&mut Work<'_>, &Vec<T>) -> Result<(), EngineError> + Sync,
    {
        let n = batch.iter().map(|(_, items)| items.len()).sum();
        if n == 0 {
            return Ok((0, Vec::new()));
        }
        Ok((n, self.run_group(&batch, now, &f).await?))
    }

    /// Group commit: the units' writes are merged into one transaction, so a group costs
    /// one commit (one disk sync) instead of one per unit. If that commit conflicts (a
    /// concurrent worker or lane touched one of the contacts, two units raced for a
    /// round-robin counter), the group is split in halves that are redone from fresh
    /// state, down to single units retried alone: a conflict costs a few extra commits,
    /// not one per unit. A unit that still conflicts was handled elsewhere and is skipped.
    fn run_group<'a, T, F>(
        &'a self,
        batch: &'a [(String, T)],
        now: Ts,
        f: &'a F,
    ) -> futures::future::BoxFuture<'a, Result<Vec<Effect>, EngineError>>
    where
        T: Sync,
        F: Fn(&mut Work<'_>, &T) -> Result<(), EngineError> + Sync,
    {
        Box::pin(async move {
            if let [(contact, item)] = batch {
                return match self.with_retry(contact, now, |w| f(w, item)).await {
                    Err(EngineError::Store(e @ StoreError::Conflict { .. })) => {
                        tracing::debug!(%contact, what = %e, "skipped: handled elsewhere");
                        Ok(Vec::new())
                    }
                    r => r,
                };
            }
            let mut merged = UnitOfWork::default();
            let mut effects = Vec::new();
            let ids: Vec<String> = batch.iter().map(|(c, _)| c.clone()).collect();
            let data = self
                .store
                .load_units(&ids, self.history_since(now).as_ref())
                .await?;
            self.ensure_plans(&data).await?;
            let counters = self.load_counters().await?;
            for ((contact, item), data) in batch.iter().zip(data) {
                let mut w = Work::from_data(self, contact, now, data, counters.clone());
                f(&mut w, item)?;
                w.settle()?;
                let (uow, fx) = w.finish();
                merged.merge(uow);
                effects.extend(fx);
            }
            match self.commit(&merged, now).await {
                Ok(()) => return Ok(effects),
                // A deadlock (40P01) or serialization failure too: the database ended
                // this commit to let another go; its halves are tried again.
                Err(e) if e.conflict().is_some() || e.is_contention() => {
                    tracing::debug!(what = %e, units = batch.len(), "group commit conflicted; splitting");
                }
                Err(e) => return Err(e.into()),
            }
            let (left, right) = batch.split_at(batch.len() / 2);
            let mut effects = self.run_group(left, now, f).await?;
            effects.extend(self.run_group(right, now, f).await?);
            Ok(effects)
        })
    }

    /// The next firing of any schedule trigger strictly after `after`.
    pub fn next_schedule(&self, after: Ts) -> Option<Ts> {
        self.schedules()
            .into_iter()
            .filter_map(|(p, cron, _)| {
                let tz = nurture_core::plan::workflow_tz(&p.workflow, &self.project.settings);
                cron.after(&after.with_timezone(&tz))
                    .next()
                    .map(|t| t.with_timezone(&Utc))
            })
            .min()
    }

    /// The schedule triggers of the current plans: plan, schedule, audience.
    fn schedules(&self) -> Vec<(Arc<Plan>, cron::Schedule, String)> {
        let current = self.plans.current();
        let mut out = Vec::new();
        for p in current.plans() {
            for t in p.workflow.trigger.as_slice() {
                if let Trigger::Schedule(s) = t {
                    if let Some(c) = self.cron(&s.schedule) {
                        out.push((p.clone(), c, s.audience.clone()));
                    }
                }
            }
        }
        out
    }

    /// `expr` parsed (once per engine), or `None` if it does not parse.
    fn cron(&self, expr: &str) -> Option<cron::Schedule> {
        let mut crons = self.crons.lock().unwrap_or_else(|e| e.into_inner());
        crons
            .entry(expr.to_string())
            .or_insert_with(|| nurture_core::plan::parse_cron(expr).ok())
            .clone()
    }

    /// Fires schedule triggers due at `now`: every member of the audience is enrolled.
    /// The first call for a workflow only records `now` (no firing for the past).
    pub async fn fire_schedules(&self, now: Ts) -> Result<Vec<Effect>, EngineError> {
        let mut effects = Vec::new();
        for (plan, cron, audience) in self.schedules() {
            let id = plan.id().to_string();
            let last = match self.store.schedule_last(&id).await? {
                Some(t) => t,
                None => {
                    let uow = UnitOfWork {
                        schedules: vec![(id.clone(), now)],
                        ..Default::default()
                    };
                    self.commit(&uow, now).await?;
                    continue;
                }
            };
            let tz = nurture_core::plan::workflow_tz(&plan.workflow, &self.project.settings);
            let firings: Vec<Ts> = cron
                .after(&last.with_timezone(&tz))
                .take_while(|t| t.with_timezone(&Utc) <= now)
                .map(|t| t.with_timezone(&Utc))
                .collect();
            let Some(&latest) = firings.last() else {
                continue;
            };
            // Missed firings (downtime) collapse into the latest: one newsletter, not ten.
            let key = format!("schedule:{}", nurture_store::ts(latest));
            // The audience's stored members (kept current by segment timers), not a scan.
            for contact in self.audience(&audience).await? {
                let r = self
                    .with_retry(&contact, latest, |w| w.schedule_enrol(&id, &audience, &key))
                    .await;
                match r {
                    Ok(e) => effects.extend(e),
                    // Already enrolled for this firing (a crash between contacts).
                    Err(EngineError::Store(StoreError::Conflict { .. })) => {}
                    Err(e) => return Err(e),
                }
            }
            let uow = UnitOfWork {
                schedules: vec![(id.clone(), latest)],
                ..Default::default()
            };
            self.commit(&uow, now).await?;
        }
        Ok(effects)
    }

    /// Everything due at `now`: events, timers (repeatedly, as steps schedule new ones),
    /// schedules. Returns every effect, so it is for bounded work (`simulate`, tests); a
    /// long-running scheduler uses [`Engine::tick_some`].
    pub async fn tick(self: &Arc<Self>, now: Ts) -> Result<Vec<Effect>, EngineError> {
        let mut all = Vec::new();
        loop {
            let (effects, more) = self.tick_some(now, usize::MAX).await?;
            all.extend(effects);
            if !more {
                return Ok(all);
            }
        }
    }

    /// At most `rounds` batches of events and of timers due at `now` (then schedules, once
    /// nothing more is due). Returns the effects and whether more work is due: memory
    /// stays bounded however many waits come due at once, and a shutdown request is
    /// seen between calls.
    ///
    /// The other lanes run as tasks of their own, so that their CPU work (executing units,
    /// encoding documents) spreads over the runtime's threads: joined in one task, the
    /// lanes of one process had used one core at most (one worker gave 62,000 steps/s
    /// where two processes with the same lanes gave 80,000).
    pub async fn tick_some(
        self: &Arc<Self>,
        now: Ts,
        rounds: usize,
    ) -> Result<(Vec<Effect>, bool), EngineError> {
        // Lane 0 starts alone: under a light load its first round is the whole pass, and
        // one lane answers fastest. If that round met a full batch (a backlog), it goes on
        // and the other lanes join it for the remaining rounds.
        let (go, ready) = tokio::sync::oneshot::channel::<bool>();
        let first = async move {
            let mut lane = self.new_lane();
            let (mut effects, found, full) = self.lane_round(now, &mut lane).await?;
            let _ = go.send(full);
            // Not a backlog: end the pass here (the caller goes again at once if anything
            // was found), so what this round produced is delivered without waiting.
            if !full || rounds <= 1 {
                return Ok::<_, EngineError>((effects, found));
            }
            let (e, more) = self.lane(now, rounds - 1, lane).await?;
            effects.extend(e);
            Ok((effects, more))
        };
        let others = async move {
            let lanes = self.store.parallelism().max(1);
            if lanes < 2 || rounds <= 1 || !ready.await.unwrap_or(false) {
                return Vec::new();
            }
            let tasks: Vec<_> = (1..lanes)
                .map(|_| {
                    let engine = Arc::clone(self);
                    tokio::spawn(async move {
                        let lane = engine.new_lane();
                        engine.lane(now, rounds - 1, lane).await
                    })
                })
                .collect();
            futures::future::join_all(tasks)
                .await
                .into_iter()
                .map(|t| match t {
                    Ok(r) => r,
                    // A lane that panicked panics here, as a lane joined in this task did.
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Err(e) => Err(EngineError::Invalid(format!("an engine lane stopped: {e}"))),
                })
                .collect()
        };
        let (first, others) = tokio::join!(first, others);
        let (mut effects, mut more) = first?;
        for r in others {
            let (e, m) = r?;
            effects.extend(e);
            more |= m;
        }
        if !more {
            effects.extend(self.fire_schedules(now).await?);
            // Schedule firings may have started runs with zero waits.
            let (_, e) = self.fire_timers(now, BATCH).await?;
            effects.extend(e);
        }
        Ok((effects, more))
    }

    fn new_lane(&self) -> Lane {
        Lane {
            skips: self.store.empty_claims_cost(),
            ..Lane::default()
        }
    }

    /// One lane of [`Engine::tick_some`]: up to `rounds` batches of events and of timers,
    /// each a group commit. On a store with [`Store::parallelism`] above 1, lanes run
    /// concurrently: each claims its own batches (the claims skip what another lane
    /// holds), so one lane's transaction waits for the disk while another computes.
    async fn lane(
        &self,
        now: Ts,
        rounds: usize,
        mut lane: Lane,
    ) -> Result<(Vec<Effect>, bool), EngineError> {
        let mut effects = Vec::new();
        for _ in 0..rounds {
            let (e, found, _) = self.lane_round(now, &mut lane).await?;
            effects.extend(e);
            if !found {
                return Ok((effects, false));
            }
        }
        Ok((effects, true))
    }

    /// One batch of events and one of timers: their effects, whether anything was due,
    /// and whether a batch was full (a backlog). In a lane that skips ([`Lane::skips`]), a
    /// kind whose last claim in it came back empty is claimed again only every [`RECHECK`]
    /// rounds, or when the other kind found nothing either: in a backlog of timers the
    /// drained inbox's claim still costs a scan (and the reverse), a few milliseconds a
    /// round for nothing.
    async fn lane_round(
        &self,
        now: Ts,
        lane: &mut Lane,
    ) -> Result<(Vec<Effect>, bool, bool), EngineError> {
        lane.round += 1;
        let recheck = !lane.skips || lane.round % RECHECK == 0;
        let mut effects = Vec::new();
        let (mut ne, mut nt) = (None, None);
        if !lane.events_empty || recheck {
            let (n, e) = self.process_events(now, BATCH).await?;
            effects.extend(e);
            ne = Some(n);
        }
        if !lane.timers_empty || recheck {
            let (n, e) = self.fire_timers(now, BATCH).await?;
            effects.extend(e);
            nt = Some(n);
        }
        // Nothing in what was claimed: claim the kind skipped before saying nothing is due.
        if ne.unwrap_or(0) == 0 && nt.unwrap_or(0) == 0 {
            if ne.is_none() {
                let (n, e) = self.process_events(now, BATCH).await?;
                effects.extend(e);
                ne = Some(n);
            }
            if nt.is_none() {
                let (n, e) = self.fire_timers(now, BATCH).await?;
                effects.extend(e);
                nt = Some(n);
            }
        }
        if let Some(n) = ne {
            lane.events_empty = n == 0;
        }
        if let Some(n) = nt {
            lane.timers_empty = n == 0;
        }
        let (ne, nt) = (ne.unwrap_or(0), nt.unwrap_or(0));
        let full = ne >= BATCH as usize || nt >= BATCH as usize;
        Ok((effects, ne > 0 || nt > 0, full))
    }

    /// Moves or ends, in batches of [`BATCH`] runs each one group commit (fenced like any
    /// unit of work), the open runs of `workflow` on versions older than its current one,
    /// as the current version's `on_new_version` says. Returns the effects (`migrated`,
    /// `exit` with reason `superseded`, and whatever moved runs did at once).
    pub async fn migrate_runs(&self, workflow: &str, now: Ts) -> Result<Vec<Effect>, EngineError> {
        let current = self.plans.current();
        let Some(plan) = current.get(workflow) else {
            return Ok(Vec::new());
        };
        if plan.workflow.on_new_version == nurture_core::model::OnNewVersion::Keep {
            return Ok(Vec::new());
        }
        let to = plan.workflow.version;
        let mut effects = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .store
                .open_runs_below(workflow, to, after.as_deref(), BATCH)
                .await?;
            let Some(last) = page.last() else {
                return Ok(effects);
            };
            after = Some(last.run.clone());
            let units = nurture_store::by_contact(page, |r| &r.contact);
            let (_, e) = self
                .run_units(units, now, |w, refs: &Vec<nurture_store::OpenRunRef>| {
                    w.in_turn(refs, Work::migrate_run)
                })
                .await?;
            effects.extend(e);
        }
    }

    /// Runs `f` in a unit of work for `contact`, committing it; on a conflict (a concurrent
    /// writer), reloads and tries again a few times.
    async fn with_retry<F>(&self, contact: &str, now: Ts, f: F) -> Result<Vec<Effect>, EngineError>
    where
        F: Fn(&mut Work<'_>) -> Result<(), EngineError>,
    {
        let mut attempt = 0;
        loop {
            let mut w = Work::load(self, contact, now).await?;
            f(&mut w)?;
            w.settle()?;
            let (uow, effects) = w.finish();
            match self.commit(&uow, now).await {
                Ok(()) => return Ok(effects),
                // A run taken or moved on elsewhere is not retried: its unit was handled.
                Err(StoreError::Conflict { what, .. })
                    if attempt < 3 && what != nurture_store::ConflictKind::Run =>
                {
                    attempt += 1;
                }
                Err(e) if attempt < 3 && e.is_contention() => attempt += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// How long a held timer or send of a paused workflow waits, by default, before it is
/// looked at again: a resumed workflow's held work goes out within this
/// ([`Engine::holding_for`]).
pub const HOLD: chrono::Duration = chrono::Duration::seconds(30);

/// One unit of work for one contact.
pub struct Work<'e> {
    engine: &'e Engine,
    /// The plans new enrolments of this unit use.
    current: Arc<versions::Current>,
    now: Ts,
    contact: Contact,
    /// The contact as this unit loaded it: a run started here journals it as its input
    /// (see [`replay`]).
    loaded_contact: Contact,
    contact_exists: bool,
    contact_changed: bool,
    history: Arc<Vec<StoredEvent>>,
    runs: Vec<Run>,
    changed_runs: BTreeSet<usize>,
    uow: UnitOfWork,
    effects: Vec<Effect>,
    crossed: BTreeSet<i64>,
    counters: HashMap<String, (i64, i64)>,
    preloaded_counters: HashMap<String, i64>,
    /// A condition of the current run whose evaluation was aborted (the evaluator
    /// panicked): the run fails with this reason.
    aborted: Option<String>,
    /// The segments the contact was loaded with, whether this unit fired its segment
    /// timer, and its earliest event stored with a later time (see [`segments`]).
    loaded_segments: BTreeSet<String>,
    segment_fired: bool,
    later_event: Option<Ts>,
    /// The runs loaded open, with the version and step each was at: the report's
    /// "waiting at each step" moves by what changed ([`tally`]).
    loaded_open: HashMap<String, (u32, Option<String>)>,
    /// The last contact view conditions read, with the contact it is of ([`Work::take_view`]).
    view: Option<(Contact, Value)>,
}

enum Flow {
    /// Go to this plan node next.
    Goto(petgraph::graph::NodeIndex),
    /// The run now waits.
    Wait,
}

/// What a unit of a contact that is not stored still writes ([`Work::finish`]): the
/// timers it fired cleared, its segment timer removed, the schedules' firings, and its
/// stored runs' changes with their lines (no contact is created by it, and it starts no
/// run: see [`Work::enrol`]).
fn housekeeping(uow: UnitOfWork) -> UnitOfWork {
    UnitOfWork {
        runs: uow.runs,
        journal: uow
            .journal
            .into_iter()
            .filter(|j| j.run_id.is_some())
            .collect(),
        timers_set: uow.timers_set,
        timers_clear: uow.timers_clear,
        segment_timers: uow
            .segment_timers
            .into_iter()
            .filter(|(_, due)| due.is_none())
            .collect(),
        schedules: uow.schedules,
        ..UnitOfWork::default()
    }
}

impl<'e> Work<'e> {
    async fn load(engine: &'e Engine, contact_id: &str, now: Ts) -> Result<Work<'e>, EngineError> {
        let ids = [contact_id.to_string()];
        let data = engine
            .store
            .load_units(&ids, engine.history_since(now).as_ref())
            .await?;
        engine.ensure_plans(&data).await?;
        let counters = engine.load_counters().await?;
        let data = data.into_iter().next().unwrap_or_default();
        Ok(Work::from_data(engine, contact_id, now, data, counters))
    }

    fn from_data(
        engine: &'e Engine,
        contact_id: &str,
        now: Ts,
        data: nurture_store::UnitData,
        preloaded_counters: HashMap<String, i64>,
    ) -> Work<'e> {
        let (contact, exists) = match data.contact {
            Some(c) => (c, true),
            None => (
                Contact {
                    id: contact_id.to_string(),
                    ..Default::default()
                },
                false,
            ),
        };
        let later_event = segments::later_event(&data.events, now);
        let loaded_segments = segments::loaded(&contact);
        let history = data.events.into_iter().filter(|e| e.at <= now).collect();
        let loaded_open = data
            .runs
            .iter()
            .filter(|r| r.status.is_open())
            .map(|r| (r.id.clone(), (r.workflow_version, r.step.clone())))
            .collect();
        Work {
            engine,
            current: engine.plans.current(),
            now,
            loaded_contact: contact.clone(),
            contact,
            contact_exists: exists,
            contact_changed: false,
            history: Arc::new(history),
            runs: data.runs,
            changed_runs: BTreeSet::new(),
            uow: UnitOfWork::default(),
            effects: Vec::new(),
            crossed: BTreeSet::new(),
            counters: HashMap::new(),
            preloaded_counters,
            aborted: None,
            loaded_segments,
            segment_fired: false,
            later_event,
            loaded_open,
            view: None,
        }
    }

    /// Whether the unit's contact is not stored and no event of it was applied (an event
    /// is how a stored contact's unit meets it): erased, or merged away, since a timer, a
    /// schedule or a segment named it.
    fn contact_gone(&self) -> bool {
        !self.contact_exists && self.uow.events_done.is_empty()
    }

    fn finish(mut self) -> (UnitOfWork, Vec<Effect>) {
        self.segment_bookkeeping();
        self.tally();
        let gone = self.contact_gone();
        for i in &self.changed_runs {
            self.uow.runs.push(self.runs[*i].clone());
        }
        for (name, (expected, new)) in self.counters {
            self.uow.counters.push((name, expected, new));
        }
        if gone {
            // Nothing is written about it but the queues' housekeeping and what its runs
            // left (a merged visitor's run ended): no empty contact, line or send comes
            // back under the id.
            return (housekeeping(std::mem::take(&mut self.uow)), Vec::new());
        }
        if self.contact_changed || !self.contact_exists {
            self.uow.contacts.push(self.contact.clone());
        } else if !self.uow.is_empty() {
            self.uow.contacts_kept.push(self.contact.id.clone());
        }
        (self.uow, self.effects)
    }

    /// The plan run `i` executes (its version's).
    fn run_plan(&self, i: usize) -> Option<Arc<Plan>> {
        self.engine.plans.of_run(&self.current, &self.runs[i])
    }

    fn contact_view(&self) -> Value {
        eval::contact_view_at(&self.contact, &self.engine.project.scoring, self.now)
    }

    fn effect(&mut self, run: Option<usize>, step: Option<&str>, kind: &'static str, extra: Value) {
        self.effect_recording(run, step, kind, extra, Map::new());
    }

    /// [`Work::effect`], with `recorded` in its journal line only (not in the effect that
    /// logs and `simulate` report): the inputs a replay reads ([`replay`]).
    fn effect_recording(
        &mut self,
        run: Option<usize>,
        step: Option<&str>,
        kind: &'static str,
        extra: Value,
        recorded: Map<String, Value>,
    ) {
        let extra = match extra {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        let (workflow, run_id) = match run {
            Some(i) => (
                Some(self.runs[i].workflow.clone()),
                Some(self.runs[i].id.clone()),
            ),
            None => (None, None),
        };
        let mut data = extra.clone();
        data.insert("effect".into(), Value::from(kind));
        if let Some(s) = step {
            data.insert("step".into(), Value::from(s));
        }
        data.extend(recorded);
        self.uow.journal.push(JournalEntry {
            run_id,
            contact: self.contact.id.clone(),
            at: self.now,
            kind: "effect".into(),
            data: Value::Object(data),
        });
        self.effects.push(Effect {
            at: self.now,
            contact: self.contact.id.clone(),
            workflow,
            step: step.map(str::to_string),
            effect: kind,
            extra,
        });
    }

    fn journal(&mut self, run: Option<usize>, kind: &str, data: Value) {
        self.uow.journal.push(JournalEntry {
            run_id: run.map(|i| self.runs[i].id.clone()),
            contact: self.contact.id.clone(),
            at: self.now,
            kind: kind.into(),
            data,
        });
    }

    fn change_score(&mut self, run: Option<usize>, step: Option<&str>, delta: i64, reason: &str) {
        self.change_score_noting(run, step, delta, reason, Map::new());
    }

    /// [`Work::change_score`], with more to say in its effect (`note`).
    fn change_score_noting(
        &mut self,
        run: Option<usize>,
        step: Option<&str>,
        delta: i64,
        reason: &str,
        note: Map<String, Value>,
    ) {
        self.score_points(run, step, delta, None, reason, note);
    }

    /// Adds `delta` points to the score, aging from `aged`'s time when given (an event
    /// rule with `decay` or `expires`): the score before and after are read at `now`
    /// ([`Contact::score_at`]), so a score trigger fires when the points added now lift
    /// the aged score across its threshold.
    fn score_points(
        &mut self,
        run: Option<usize>,
        step: Option<&str>,
        delta: i64,
        aged: Option<(Aging, Ts)>,
        reason: &str,
        note: Map<String, Value>,
    ) {
        let before = self.contact.score_at(self.now);
        match aged {
            Some((aging, at)) => self.contact.add_aging(delta, aging, at, self.now),
            None => self.contact.score += delta,
        }
        let after = self.contact.score_at(self.now);
        self.contact_changed = true;
        for p in self.current.plans() {
            for t in p.workflow.trigger.as_slice() {
                if let Trigger::Score(s) = t {
                    let reaches = s.score.reaches as f64;
                    if before < reaches && after >= reaches {
                        self.crossed.insert(s.score.reaches);
                    }
                }
            }
        }
        let source = match note.get("rule").and_then(Value::as_str) {
            Some(rule) => format!("{reason} `{rule}`"),
            None => reason.to_string(),
        };
        let points = self.contact.points.entry(source.clone()).or_default();
        *points += delta;
        if *points == 0 {
            self.contact.points.remove(&source);
        }
        let mut extra = json!({"delta": delta, "score": score_json(after), "reason": reason});
        if let Value::Object(m) = &mut extra {
            if let Some((aging, at)) = aged {
                m.insert("aging".into(), json!(aging));
                m.insert("earned_at".into(), Value::from(nurture_store::ts_out(at)));
            }
            m.extend(note);
        }
        self.effect(run, step, "score", extra);
    }

    fn scope_event(&self, event: Option<&Value>, f: impl FnOnce(&Scope<'_>) -> Value) -> Value {
        let c = self.contact_view();
        let scope = Scope {
            contact: &c,
            event,
            now: self.now,
            history: self.history.clone(),
            outcome: None,
        };
        f(&scope)
    }

    /// Evaluates a condition; errors count as false and are journaled.
    fn condition(
        &mut self,
        run: Option<usize>,
        programs: &HashMap<String, Arc<cel::Program>>,
        source: &str,
        event: Option<&Value>,
        what: &str,
    ) -> bool {
        let program = programs
            .get(source)
            .or_else(|| self.engine.scoring_programs.get(source))
            .cloned();
        let Some(program) = program else {
            return false;
        };
        let (of, mut c) = self.take_view();
        let replayed = match (run, &self.engine.replay_reads) {
            (Some(i), Some(book)) => {
                book.apply(&self.runs[i].id, what, source, &mut c);
                true
            }
            _ => false,
        };
        let out = run.and_then(|i| self.runs[i].outcome.clone());
        let scope = Scope {
            contact: &c,
            event,
            now: self.now,
            history: self.history.clone(),
            outcome: out.as_ref(),
        };
        let result = eval::eval_bool(&program, &scope);
        if run.is_some() {
            let reads = eval::reads(source, &scope);
            let (res, err) = match &result {
                Ok(b) => (Value::from(*b), Value::Null),
                Err(e) => (Value::from(false), Value::from(e.to_string())),
            };
            if let Err(e @ eval::EvalError::Aborted) = &result {
                self.aborted = Some(format!("{what}: {e}"));
            }
            self.journal(
                run,
                "condition",
                json!({"where": what, "expr": source, "reads": reads, "result": res, "error": err}),
            );
        }
        if !replayed {
            self.view = Some((of, c));
        }
        result.unwrap_or(false)
    }

    /// [`Work::contact_view`], reusing the last one while the contact is unchanged (a
    /// unit evaluates many conditions against one contact), with the contact it is the
    /// view of. The memo is left empty: the caller puts both back if it did not change
    /// the view.
    fn take_view(&mut self) -> (Contact, Value) {
        match self.view.take() {
            Some((of, v)) if of == self.contact => (of, v),
            _ => (self.contact.clone(), self.contact_view()),
        }
    }

    fn apply_event(&mut self, e: &StoredEvent) -> Result<(), EngineError> {
        self.uow.events_done.push(e.seq);
        if e.kind == outcome::EVENT {
            return self.apply_outcome(e);
        }
        self.engagement_tally(&e.kind, &e.data, e.at);
        // An open or click flagged as a scanner's or a prefetcher's stays in the history
        // (visible, countable) but moves nothing: no trigger, score or `wait_for`.
        if e.data.get("bot") == Some(&Value::Bool(true)) {
            return Ok(());
        }
        let ev = eval::event_view(e);
        // Consent and deliverability signals.
        match e.kind.as_str() {
            "email.unsubscribed" | "email.complained" => {
                self.contact.unsubscribed = true;
                self.contact_changed = true;
            }
            "email.bounced" if e.data.get("permanent") == Some(&Value::Bool(true)) => {
                self.contact.suppressed = true;
                self.contact_changed = true;
            }
            other => self.channel_event(other),
        }
        // Scoring rules: every matching event rule counts.
        let rules: Vec<(Option<String>, i64, Aging)> = self
            .engine
            .project
            .scoring
            .rules
            .iter()
            .filter(|r| r.event.as_deref() == Some(e.kind.as_str()))
            .map(|r| {
                (
                    r.condition.as_ref().map(|c| c.0.clone()),
                    r.points,
                    Aging::of(r),
                )
            })
            .collect();
        let empty = HashMap::new();
        for (cond, points, aging) in rules {
            let ok = match &cond {
                Some(src) => self.condition(None, &empty, src, Some(&ev), "scoring"),
                None => true,
            };
            if ok {
                let aged = aging.ages().then_some((aging, e.at));
                self.score_points(None, None, points, aged, &e.kind, Map::new());
            }
        }
        // Goals end open runs as converted.
        for i in 0..self.runs.len() {
            if !self.runs[i].status.is_open() {
                continue;
            }
            let Some(plan) = self.run_plan(i) else {
                continue;
            };
            let plan = &*plan;
            let Some(goal) = &plan.workflow.goal else {
                continue;
            };
            if goal.event.as_deref() != Some(e.kind.as_str()) {
                continue;
            }
            let ok = match &goal.condition {
                Some(c) => self.condition(Some(i), &plan.programs, &c.0, Some(&ev), "goal"),
                None => true,
            };
            if ok {
                self.end_run(i, RunStatus::Converted, "goal");
            }
        }
        // Waiting runs resume on their event.
        for i in 0..self.runs.len() {
            let Some(Wait::Event { event }) = &self.runs[i].wait else {
                continue;
            };
            if *event != e.kind || self.runs[i].status != RunStatus::Waiting {
                continue;
            }
            let Some(plan) = self.run_plan(i) else {
                continue;
            };
            let plan = &*plan;
            let step_id = self.runs[i].step.clone().unwrap_or_default();
            let Some(step) = plan.step(&step_id) else {
                continue;
            };
            let StepKind::WaitFor(wf) = &step.kind else {
                continue;
            };
            let ok = match &wf.condition {
                Some(c) => self.condition(Some(i), &plan.programs, &c.0, Some(&ev), "wait_for"),
                None => true,
            };
            if !ok {
                continue;
            }
            if self.current.paused.contains_key(plan.id()) {
                self.hold_event(i, &step_id, e, ev.clone());
                continue;
            }
            self.uow.timers_clear.push(self.runs[i].id.clone());
            self.runs[i].wait = None;
            self.runs[i].status = RunStatus::Active;
            self.runs[i].event = Some(ev.clone());
            self.changed_runs.insert(i);
            self.journal(
                Some(i),
                "resume",
                json!({"step": step_id, "event": {"id": e.id, "type": e.kind}}),
            );
            let next = edge_target(plan, &step_id, |edge| *edge == Edge::Event);
            self.advance(i, next)?;
        }
        // Event triggers enrol.
        let current = self.current.clone();
        for plan in current.plans() {
            for t in plan.workflow.trigger.as_slice() {
                let Trigger::Event(et) = t else { continue };
                if et.event != e.kind {
                    continue;
                }
                let ok = match &et.condition {
                    Some(c) => self.condition(None, &plan.programs, &c.0, Some(&ev), "trigger"),
                    None => true,
                };
                if ok {
                    self.enrol(
                        plan,
                        &format!("event:{}", e.id),
                        json!({"event": e.kind}),
                        Some(ev.clone()),
                    )?;
                    break;
                }
            }
        }
        Ok(())
    }

    /// Applies one contact's items in order in this unit, each settled before the next,
    /// as if they had come one per round.
    fn in_turn<T>(
        &mut self,
        items: &[T],
        apply: impl Fn(&mut Self, &T) -> Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        for (k, item) in items.iter().enumerate() {
            if k > 0 {
                self.settle()?;
            }
            apply(self, item)?;
        }
        Ok(())
    }

    /// Applies the current version's `on_new_version` to open run `r` of an older version
    /// (a deploy's migration pass): it stays, ends as `superseded`, or moves to the mapped
    /// step, which it executes at once unless it is the step it waits at (then its wait
    /// goes on). Journaled per run: the effect `migrated` (from, to, from_step, step), or
    /// `superseded` (from, to, step) before the run's `exit`.
    fn migrate_run(&mut self, r: &nurture_store::OpenRunRef) -> Result<(), EngineError> {
        let Some(i) = self.runs.iter().position(|x| x.id == r.run) else {
            return Ok(());
        };
        let current = self.current.clone();
        let Some(plan) = current.get(&self.runs[i].workflow) else {
            return Ok(());
        };
        let (from, to) = (self.runs[i].workflow_version, plan.workflow.version);
        if !self.runs[i].status.is_open() || from >= to {
            return Ok(());
        }
        let step = self.runs[i].step.clone();
        let policy = &plan.workflow.on_new_version;
        match nurture_core::versions::fate(policy, step.as_deref(), &plan.workflow) {
            Fate::Stay | Fate::Stranded => Ok(()),
            Fate::Exit => {
                let data = json!({"from": from, "to": to, "step": step});
                self.journal(Some(i), "superseded", data);
                self.end_run(i, RunStatus::Exited, "superseded");
                Ok(())
            }
            Fate::Move(target) => {
                self.runs[i].workflow_version = to;
                self.runs[i].updated_at = self.now;
                self.changed_runs.insert(i);
                let extra = json!({"from": from, "to": to, "from_step": step});
                self.effect(Some(i), Some(&target), "migrated", extra);
                if step.as_deref() == Some(target.as_str()) {
                    return Ok(());
                }
                self.uow.timers_clear.push(self.runs[i].id.clone());
                self.runs[i].wait = None;
                self.runs[i].status = RunStatus::Active;
                self.advance(i, plan.index.get(&target).copied())
            }
        }
    }

    /// Why run `i` has no plan here.
    fn no_plan(&self, i: usize) -> String {
        let r = &self.runs[i];
        format!(
            "version {} of workflow `{}` is not available in this process (see its log)",
            r.workflow_version, r.workflow
        )
    }

    fn fire_timer(&mut self, t: &DueTimer) -> Result<(), EngineError> {
        self.uow.timers_clear.push(t.run_id.clone());
        let Some(i) = self.runs.iter().position(|r| r.id == t.run_id) else {
            return Ok(());
        };
        if self.runs[i].status != RunStatus::Waiting {
            return Ok(());
        }
        if self.contact_gone() {
            // A merged visitor's run begun between the merge's ending of its runs and the
            // merge: it ends now, nothing of it runs for a contact that is gone.
            self.end_run(i, RunStatus::Exited, "merged");
            return Ok(());
        }
        let Some(plan) = self.run_plan(i) else {
            self.fail(i, None, &self.no_plan(i));
            return Ok(());
        };
        let plan = &*plan;
        if self.current.paused.contains_key(plan.id()) {
            // Held: the timer comes due again after HOLD, and fires for real (late, with
            // quiet hours and caps applied then) once the workflow is resumed.
            let wait = self.runs[i].wait.clone().unwrap_or(Wait::Timer);
            let mut until = self.now + self.engine.hold;
            let step = self.runs[i].step.as_deref().and_then(|s| plan.step(s));
            if let (Wait::Outcome { .. }, Some(step)) = (&wait, step) {
                // Its send is held too: the step's timeout counts again from the resume.
                until += outcome::timeout_of(step);
            }
            self.set_timer(i, until, wait);
            self.changed_runs.insert(i);
            return Ok(());
        }
        let step_id = self.runs[i].step.clone().unwrap_or_default();
        let wait = self.runs[i].wait.take();
        self.runs[i].status = RunStatus::Active;
        self.changed_runs.insert(i);
        match wait {
            Some(Wait::Timer) => {
                self.journal(Some(i), "wake", json!({"step": step_id}));
                let next = edge_target(plan, &step_id, |e| *e == Edge::Next);
                self.advance(i, next)
            }
            Some(Wait::Event { event }) => {
                self.journal(Some(i), "timeout", json!({"step": step_id, "event": event}));
                let next = edge_target(plan, &step_id, |e| *e == Edge::Timeout);
                self.advance(i, next)
            }
            Some(Wait::QuietHours) => {
                self.journal(Some(i), "quiet_hours_over", json!({"step": step_id}));
                let node = plan.index.get(&step_id).copied();
                self.advance_from(i, node, true)
            }
            Some(Wait::Outcome { .. }) => self.outcome_timeout(i, plan, &step_id),
            Some(Wait::EventHeld { event }) => {
                self.journal(
                    Some(i),
                    "resume",
                    json!({"step": step_id, "event": {"type": event}, "held": true}),
                );
                let next = edge_target(plan, &step_id, |e| *e == Edge::Event);
                self.advance(i, next)
            }
            None => Ok(()),
        }
    }

    /// The event a `wait_for` of a paused workflow awaited came: the run keeps it and
    /// goes on along the event edge once the workflow is resumed (see [`Wait::EventHeld`]).
    fn hold_event(&mut self, i: usize, step_id: &str, e: &StoredEvent, ev: Value) {
        self.runs[i].event = Some(ev);
        let wait = Wait::EventHeld {
            event: e.kind.clone(),
        };
        self.set_timer(i, self.now + self.engine.hold, wait);
        self.changed_runs.insert(i);
        self.journal(
            Some(i),
            "event_held",
            json!({"step": step_id, "event": {"id": e.id, "type": e.kind}, "why": "workflow paused"}),
        );
    }

    fn schedule_enrol(
        &mut self,
        workflow: &str,
        audience: &str,
        key: &str,
    ) -> Result<(), EngineError> {
        let Some(seg) = self
            .engine
            .project
            .segments
            .iter()
            .find(|s| s.id == audience)
        else {
            return Ok(());
        };
        let src = seg.condition.0.clone();
        let empty = HashMap::new();
        if self.condition(None, &empty, &src, None, "audience") {
            let current = self.current.clone();
            if let Some(plan) = current.get(workflow) {
                self.enrol(plan, key, json!({"schedule": audience}), None)?;
            }
        }
        Ok(())
    }

    /// Re-evaluates what depends on the contact after changes: profile scoring (see
    /// [`Work::profile_rules`]), the goals and `exit_if` of open runs
    /// ([`Work::recheck_open_runs`]), segments (entering one fires segment triggers) and
    /// score thresholds (score triggers).
    fn settle(&mut self) -> Result<(), EngineError> {
        let mut flipped = BTreeSet::new();
        for _ in 0..MAX_ROUNDS {
            let empty = HashMap::new();
            let mut changed = self.profile_rules(&mut flipped);
            self.recheck_open_runs();
            let segments: Vec<(String, String)> = self
                .engine
                .project
                .segments
                .iter()
                .map(|s| (s.id.clone(), s.condition.0.clone()))
                .collect();
            let mut now_in = BTreeSet::new();
            for (id, src) in &segments {
                if self.condition(None, &empty, src, None, "segment") {
                    now_in.insert(id.clone());
                }
            }
            let entered: Vec<String> = now_in.difference(&self.contact.segments).cloned().collect();
            if now_in != self.contact.segments {
                self.contact.segments = now_in;
                self.contact_changed = true;
            }
            let crossed: Vec<i64> = std::mem::take(&mut self.crossed).into_iter().collect();
            let current = self.current.clone();
            for plan in current.plans() {
                for t in plan.workflow.trigger.as_slice() {
                    let fire = match t {
                        Trigger::Segment(s) if entered.contains(&s.segment) => Some((
                            format!("segment:{}", s.segment),
                            json!({"segment": s.segment}),
                        )),
                        Trigger::Score(s) if crossed.contains(&s.score.reaches) => Some((
                            format!("score:{}", s.score.reaches),
                            json!({"score": s.score.reaches}),
                        )),
                        _ => None,
                    };
                    if let Some((key, desc)) = fire {
                        if self.enrol(plan, &key, desc, None)? {
                            changed = true;
                        }
                        break;
                    }
                }
            }
            if !changed && self.crossed.is_empty() {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Enrols the contact in `plan` if re-entry allows; returns whether it did.
    fn enrol(
        &mut self,
        plan: &Plan,
        key: &str,
        trigger: Value,
        event: Option<Value>,
    ) -> Result<bool, EngineError> {
        if self.contact_gone() {
            return Ok(false);
        }
        let mine: Vec<&Run> = self
            .runs
            .iter()
            .filter(|r| r.workflow == plan.id())
            .collect();
        if mine.iter().any(|r| r.status.is_open()) || self.current.paused.contains_key(plan.id()) {
            return Ok(false);
        }
        let allowed = match plan.workflow.reentry {
            Reentry::Never => mine.is_empty(),
            Reentry::Always => true,
            Reentry::After(d) => mine
                .iter()
                .map(|r| r.started_at)
                .max()
                .is_none_or(|last| last + d.to_chrono() <= self.now),
        };
        if !allowed {
            return Ok(false);
        }
        self.start(plan, key, trigger, event)?;
        Ok(true)
    }

    /// Starts a run of `plan` for the contact (re-entry already allowed) and executes it
    /// until it waits or ends.
    fn start(
        &mut self,
        plan: &Plan,
        key: &str,
        trigger: Value,
        event: Option<Value>,
    ) -> Result<(), EngineError> {
        let mine: Vec<&Run> = self
            .runs
            .iter()
            .filter(|r| r.workflow == plan.id())
            .collect();
        // A new run starts after every earlier run of the workflow, even when this unit's
        // clock is behind the one that stamped the latest (workers' clocks differ, and a
        // long pass keeps the time it began with): the latest run of a workflow is then
        // always its open one if it has one, which is all a unit loads (`UnitData::runs`).
        let started_at = mine
            .iter()
            .map(|r| r.started_at + chrono::Duration::microseconds(1))
            .max()
            .map_or(self.now, |after| after.max(self.now));
        let id = format!(
            "run-{}",
            digest(&[
                plan.id(),
                &self.contact.id,
                key,
                &nurture_store::ts(self.now)
            ])
        );
        let run = Run {
            id,
            workflow: plan.id().to_string(),
            workflow_version: plan.workflow.version,
            contact: self.contact.id.clone(),
            status: RunStatus::Active,
            step: None,
            wait: None,
            trigger_event: event.clone(),
            event,
            outcome: None,
            started_at,
            updated_at: self.now,
            ended_at: None,
            exit_reason: None,
            variants: Default::default(),
            rev: 0,
        };
        self.runs.push(run);
        let i = self.runs.len() - 1;
        self.changed_runs.insert(i);
        let input = replay::input(&self.loaded_contact, key, self.uow.events_done.first());
        let recorded = Map::from_iter([("input".to_string(), input)]);
        self.effect_recording(
            Some(i),
            None,
            "enter",
            json!({"trigger": trigger}),
            recorded,
        );
        self.advance(i, Some(plan.entry))
    }

    fn end_run(&mut self, i: usize, status: RunStatus, reason: &str) {
        self.end_run_noting(i, status, reason, json!({"reason": reason}));
    }

    /// Fails run `i`: journals `message` (at `step`) and ends the run with it, so the log
    /// line of its exit says why.
    fn fail(&mut self, i: usize, step: Option<&str>, message: &str) {
        self.journal(Some(i), "error", json!({"step": step, "message": message}));
        let exit = json!({"reason": "error", "message": message});
        self.end_run_noting(i, RunStatus::Failed, "error", exit);
    }

    /// [`Work::end_run`] with `exit` as the exit effect's data.
    fn end_run_noting(&mut self, i: usize, status: RunStatus, reason: &str, exit: Value) {
        let run = &mut self.runs[i];
        run.status = status;
        run.wait = None;
        run.ended_at = Some(self.now);
        run.updated_at = self.now;
        run.exit_reason = Some(reason.to_string());
        run.step = None;
        let id = run.id.clone();
        self.changed_runs.insert(i);
        // A timer this unit set for the run (it waited, then ended) is not written.
        self.uow.timers_set.retain(|t| t.run_id != id);
        self.uow.timers_clear.push(id);
        self.effect(Some(i), None, "exit", exit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// Queues a `custom.go` event for a new contact; returns its id.
    async fn go(engine: &Engine, name: &str, at: Ts) -> String {
        let e = crate::input::IncomingEvent {
            index: 0,
            id: None,
            kind: "custom.go".into(),
            contact: None,
            email: Some(format!("{name}@example.com")),
            at: None,
            data: json!({}),
        };
        let out = engine.ingest(&[e], at).await.unwrap();
        out[0].contact.clone().unwrap()
    }

    /// A unit of a contact that is not stored (erased since a timer, a schedule's
    /// audience or a segment named it) writes nothing about it, whatever it did: no empty
    /// contact or line comes back under the id (contacts are created by ingestion and
    /// imports, in the store).
    #[tokio::test]
    async fn a_unit_of_a_contact_not_stored_writes_nothing_of_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("workflows")).unwrap();
        let project = Arc::new(nurture_core::project::load(dir.path()).project.unwrap());
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = nurture_store_sqlite::SqliteStore::open(&url, &Default::default())
            .await
            .unwrap();
        let engine = Engine::new(project, Arc::new(store));
        let now = chrono::Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap();
        engine
            .with_retry("gone", now, |w| {
                w.journal(None, "note", json!({}));
                Ok(())
            })
            .await
            .unwrap();
        assert!(engine.store.contact("gone").await.unwrap().is_none());
        assert!(engine
            .store
            .contact_lines("gone", 10)
            .await
            .unwrap()
            .is_empty());
    }

    /// A lane that skips (as on Postgres; the mechanism is the same on this SQLite store)
    /// skips claiming a kind of work whose last claim in it came back empty (here the
    /// inbox, while a timer is due), claims it again before it says nothing is due, and in
    /// any case every `RECHECK` rounds. A SQLite engine's lanes do not skip.
    #[tokio::test]
    async fn a_lane_skips_an_empty_kind_but_never_misses_its_work() {
        let dir = tempfile::tempdir().unwrap();
        let wf = "workflow: w\ntrigger: { event: custom.go }\nsteps:\n  - id: w1\n    wait: 1h\n  - id: t1\n    tag: [done]\n";
        std::fs::create_dir_all(dir.path().join("workflows")).unwrap();
        std::fs::write(dir.path().join("workflows/w.yaml"), wf).unwrap();
        let project = Arc::new(nurture_core::project::load(dir.path()).project.unwrap());
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let engine = Arc::new(Engine::new(
            project,
            Arc::new(
                nurture_store_sqlite::SqliteStore::open(&url, &Default::default())
                    .await
                    .unwrap(),
            ),
        ));
        assert!(!engine.new_lane().skips, "SQLite's lanes do not skip");
        let t0 = chrono::Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap();
        let later = t0 + chrono::Duration::hours(2);
        let runs = |c: &String| {
            let (store, c) = (engine.store.clone(), c.clone());
            async move { store.runs_of_contact(&c).await.unwrap().len() }
        };
        // c1 waits (its timer is due later); c2's and c3's events are queued.
        let c1 = go(&engine, "c1", t0).await;
        engine.tick(t0).await.unwrap();
        let c2 = go(&engine, "c2", t0).await;

        // Round 1 of a lane whose inbox came back empty: the timer fires, c2 waits.
        let mut lane = Lane {
            skips: true,
            events_empty: true,
            ..Default::default()
        };
        let (effects, found, _) = engine.lane_round(later, &mut lane).await.unwrap();
        assert!(found);
        assert!(effects.iter().any(|e| e.contact == c1), "{effects:?}");
        assert_eq!(runs(&c2).await, 0, "the inbox was skipped");
        // Round 2: no timer is due, so the skipped inbox is claimed before giving up.
        let (effects, found, _) = engine.lane_round(later, &mut lane).await.unwrap();
        assert!(found, "c2's event was found");
        assert!(effects.iter().any(|e| e.contact == c2), "{effects:?}");
        assert_eq!(runs(&c2).await, 1);

        // Every RECHECK rounds, an empty kind is claimed even while the other has work:
        // c2's timer is due and c3's event is queued; both are applied.
        let latest = later + chrono::Duration::hours(2);
        let c3 = go(&engine, "c3", latest).await;
        let mut lane = Lane {
            skips: true,
            round: RECHECK - 1,
            events_empty: true,
            ..Default::default()
        };
        let (effects, _, _) = engine.lane_round(latest, &mut lane).await.unwrap();
        assert!(effects.iter().any(|e| e.contact == c2), "{effects:?}");
        assert!(effects.iter().any(|e| e.contact == c3), "{effects:?}");
    }
}
