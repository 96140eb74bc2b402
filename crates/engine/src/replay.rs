//! Replay: a run re-executed from its journal on a private in-memory store, compared
//! entry by entry with what it recorded.
//!
//! A run's inputs are what the engine read that the plan does not decide (format
//! [`FORMAT`]): the contact as the unit that started the run loaded it and the key it
//! was started with (journaled in the `enter` effect as `input`), the contact's events
//! (stored; each fed at the first instant of the run at or after it, or at the instant
//! of the journal line that names it), the timers' instants (the journal's), the
//! round-robin counters read (`assign_owner`'s `counter`) and the outcomes of awaited
//! steps (stored as `outcome` events). A [`Recording`] holds them with the run's journal
//! and its workflow version's source; [`replay`] re-executes recordings with the real
//! engine on a private in-memory store (`nurture-store-memory`) (nothing is sent, nothing is written to the
//! live store) and returns a [`Report`] per run: identical, or the first divergence with
//! what was recorded, what the engine does now, and the input it followed.
//!
//! Many recordings replay together, one unit per contact and instant, each contact on its
//! own clock: a batch commits once per round, as a worker's group commit does.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{Engine, EngineError, Work};
use nurture_core::plan::Plan;
use nurture_core::project::Project;
use nurture_store::{
    Contact, DueTimer, JournalEntry, NewEvent, Run, Store, StoreError, StoredEvent, Ts, UnitOfWork,
    WorkflowVersion,
};

/// The journal format this version writes: 1 added the `input` of the `enter` effect and
/// the `counter` of `assign_owner`.
pub const FORMAT: u32 = 1;

/// The tag of an exported recording (`nurture runs export`).
pub const FILE_FORMAT: &str = "nurture-run/1";

/// Most recordings replayed together on one private store.
pub const BATCH: usize = 256;

/// Batches replayed at once.
pub const PARALLEL: usize = 16;

/// Most rounds one recording may take: a replay that does not settle fails.
const MAX_ROUNDS: usize = 10_000;

/// The `input` of a run's `enter` effect.
pub(crate) fn input(contact: &Contact, key: &str, from_seq: Option<&i64>) -> Value {
    json!({"v": FORMAT, "key": key, "contact": contact, "from_seq": from_seq})
}

/// The values the conditions of recorded runs read, by run and (where, expression), in
/// the order they were evaluated: a replayed condition reads its recorded values of
/// `contact.*` (a field changed outside the run, by an import or another workflow, is an
/// input like an event).
#[derive(Default)]
pub(crate) struct Reads {
    book: std::sync::Mutex<HashMap<String, RunReads>>,
}

/// One run's recorded reads: by (where, expression), in evaluation order.
type RunReads = HashMap<(String, String), VecDeque<Value>>;

impl Reads {
    fn of(recs: &[&Recording]) -> Reads {
        let mut book: HashMap<String, RunReads> = HashMap::new();
        for r in recs {
            let runs = book.entry(r.run.id.clone()).or_default();
            for j in r.journal.iter().filter(|j| j.kind == "condition") {
                let key = (
                    j.data["where"].as_str().unwrap_or_default().to_string(),
                    j.data["expr"].as_str().unwrap_or_default().to_string(),
                );
                runs.entry(key)
                    .or_default()
                    .push_back(j.data["reads"].clone());
            }
        }
        Reads {
            book: std::sync::Mutex::new(book),
        }
    }

    /// Sets, in the contact view `c`, the `contact.*` values the next recorded evaluation
    /// of this condition of `run` read (a value read as null was absent).
    pub(crate) fn apply(&self, run: &str, what: &str, expr: &str, c: &mut Value) {
        let reads = {
            let mut book = self.book.lock().expect("replay reads");
            let key = (what.to_string(), expr.to_string());
            book.get_mut(run)
                .and_then(|r| r.get_mut(&key))
                .and_then(VecDeque::pop_front)
        };
        let Some(Value::Object(reads)) = reads else {
            return;
        };
        for (path, v) in reads {
            let Some(rest) = path.strip_prefix("contact.") else {
                continue;
            };
            set_path(c, rest, v);
        }
    }
}

/// Sets `path` (dotted) in `c` to `v`, creating objects on the way. A null (what a read
/// of an absent field records too) only replaces a value that is there: an absent field
/// stays absent, so `has()` answers as it did.
fn set_path(c: &mut Value, path: &str, v: Value) {
    let mut at = c;
    let mut segs = path.split('.').peekable();
    while let Some(seg) = segs.next() {
        let last = segs.peek().is_none();
        if v.is_null() && at.get(seg).is_none() {
            return;
        }
        if !at.is_object() {
            *at = Value::Object(Default::default());
        }
        let m = at.as_object_mut().expect("an object");
        if last {
            m.insert(seg.to_string(), v);
            return;
        }
        at = m.entry(seg.to_string()).or_insert(Value::Null);
    }
}

/// Why a run cannot be replayed (a replay that runs and differs is a [`Verdict`]).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// No run has this id.
    #[error("no run `{0}`")]
    NotFound(String),
    /// The run was recorded before its inputs were journaled.
    #[error(
        "run `{0}` was recorded before journal format {FORMAT} (nurture 0.7): its inputs \
         were not journaled, so it cannot be replayed"
    )]
    NoInput(String),
    /// The run's journal was compacted (`nurture store compact`): only its summary is
    /// left, which a replay cannot walk again.
    #[error(
        "run `{run}` was compacted on retention ({ended}): its journal is one summary line \
         ({lines} lines, {steps} steps before), so it cannot be replayed; `nurture runs \
         explain {run}` shows the summary"
    )]
    Compacted {
        /// The run.
        run: String,
        /// When it ended.
        ended: String,
        /// The lines its journal had.
        lines: u64,
        /// The steps it took.
        steps: u64,
    },
    /// The store does not have the version the run is pinned to.
    #[error("version {version} of workflow `{workflow}` is not stored")]
    NoVersion {
        /// The workflow.
        workflow: String,
        /// Its version.
        version: u32,
    },
    /// An exported recording that cannot be read.
    #[error("not a recording: {0}")]
    Format(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// What a run's `enter` effect journals as its input.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Input {
    /// The journal format.
    pub v: u32,
    /// The key the run was started with (the trigger event's id, a schedule firing...).
    pub key: String,
    /// The contact as the unit that started the run loaded it.
    pub contact: Contact,
    /// The first event that unit applied (store order), if any.
    #[serde(default)]
    pub from_seq: Option<i64>,
}

/// An event fed to a replay at an instant of the run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Fed {
    /// The instant of the run it is applied at.
    pub instant: Ts,
    /// The event.
    pub event: NewEvent,
}

/// Everything a replay of one run needs: a self-contained file once exported.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Recording {
    /// [`FILE_FORMAT`].
    pub format: String,
    /// The run as stored.
    pub run: Run,
    /// The version of the workflow it ran on.
    pub workflow: WorkflowVersion,
    /// Its journaled input.
    pub input: Input,
    /// The contact's events applied before the run started (for conditions that read
    /// its history).
    pub history: Vec<NewEvent>,
    /// The events applied while the run was open, each with its instant.
    pub events: Vec<Fed>,
    /// Round-robin counters as the run read them.
    pub counters: BTreeMap<String, i64>,
    /// The contact's runs (of any workflow) that had ended when this one started, as
    /// they ended: re-entry rules read them.
    #[serde(default)]
    pub prior_runs: Vec<Run>,
    /// The run's journal.
    pub journal: Vec<JournalEntry>,
}

impl Recording {
    /// Reads run `id`'s recording from `store`; `project` says how far back conditions
    /// read a contact's history.
    pub async fn load(
        store: &dyn Store,
        project: &Project,
        id: &str,
    ) -> Result<Recording, ReplayError> {
        let run = store
            .run(id)
            .await?
            .ok_or_else(|| ReplayError::NotFound(id.into()))?;
        let journal = store.journal(id).await?;
        if nurture_store::retention::is_compacted(&journal) {
            let d = &journal[0].data;
            return Err(ReplayError::Compacted {
                run: id.into(),
                ended: d["ended_at"].as_str().unwrap_or("?").into(),
                lines: d["lines"].as_u64().unwrap_or(0),
                steps: d["steps"].as_u64().unwrap_or(0),
            });
        }
        let input = journal
            .iter()
            .find(|j| j.kind == "effect" && j.data["effect"] == "enter")
            .and_then(|j| serde_json::from_value::<Input>(j.data.get("input")?.clone()).ok())
            .ok_or_else(|| ReplayError::NoInput(id.into()))?;
        let workflow = store
            .workflow_version(&run.workflow, run.workflow_version)
            .await?
            .ok_or_else(|| ReplayError::NoVersion {
                workflow: run.workflow.clone(),
                version: run.workflow_version,
            })?;
        let start = journal.first().map_or(run.started_at, |j| j.at);
        let window = crate::history_window(project).unwrap_or_default();
        // All of the contact's events: one sent with an old `at` (an import, a late
        // client) may still have been applied while the run was open.
        let stored = store.contact_events(&run.contact, Ts::UNIX_EPOCH).await?;
        let (history, events) = split_events(&run, &input, &journal, stored, start - window);
        let prior_runs = store
            .runs_of_contact(&run.contact)
            .await?
            .into_iter()
            .filter(|r| r.id != run.id && r.ended_at.is_some_and(|e| e <= start))
            .collect();
        Ok(Recording {
            format: FILE_FORMAT.into(),
            counters: counters(&journal),
            prior_runs,
            run,
            workflow,
            input,
            history,
            events,
            journal,
        })
    }

    /// A recording read back from an exported file's text.
    pub fn from_json(text: &str) -> Result<Recording, ReplayError> {
        let r: Recording =
            serde_json::from_str(text).map_err(|e| ReplayError::Format(e.to_string()))?;
        if r.format != FILE_FORMAT {
            return Err(ReplayError::Format(format!(
                "format `{}`, this version reads `{FILE_FORMAT}`",
                r.format
            )));
        }
        Ok(r)
    }

    /// The instants of the run's journal, in order, each once.
    fn instants(&self) -> Vec<Ts> {
        let mut out: Vec<Ts> = self.journal.iter().map(|j| j.at).collect();
        out.sort();
        out.dedup();
        out
    }
}

/// The contact's stored events split into those applied before the run (history at or
/// after `history_since`) and those fed to it, each at its instant. The events of the
/// unit that started the run (from `input.from_seq` up to the trigger) come at the first
/// instant; one a journal line names (a resumed wait, an outcome) at that line's; any
/// other at the first instant at or after it happened; one after the run's last instant
/// is left out (the run did not see it).
fn split_events(
    run: &Run,
    input: &Input,
    journal: &[JournalEntry],
    stored: Vec<StoredEvent>,
    history_since: Ts,
) -> (Vec<NewEvent>, Vec<Fed>) {
    let instants: Vec<Ts> = journal.iter().map(|j| j.at).collect();
    let (Some(&first), Some(&last)) = (instants.first(), instants.iter().max()) else {
        return (Vec::new(), Vec::new());
    };
    let named = named_events(journal);
    let trigger = run.trigger_event.as_ref().and_then(|e| e["id"].as_str());
    let trigger_seq = stored
        .iter()
        .find(|e| Some(e.id.as_str()) == trigger)
        .map(|e| e.seq);
    let mut history = Vec::new();
    let mut fed = Vec::new();
    for e in stored {
        let before = match input.from_seq {
            Some(from) => e.seq < from,
            None => e.at <= first && !named.contains_key(&e.id),
        };
        if before {
            if e.at >= history_since {
                history.push(new_event(e));
            }
            continue;
        }
        let in_start_unit = input.from_seq.is_some() && trigger_seq.is_some_and(|t| e.seq <= t);
        let instant = match named.get(&e.id) {
            Some(at) => Some(*at),
            None if in_start_unit => Some(first),
            None => instants
                .iter()
                .copied()
                .filter(|t| *t >= e.at.max(first))
                .min(),
        };
        match instant {
            Some(instant) if instant <= last => fed.push(Fed {
                instant,
                event: new_event(e),
            }),
            _ => {}
        }
    }
    fed.sort_by_key(|f| f.instant);
    (history, fed)
}

/// The events journal lines name, with the instant of the first line naming each: a
/// resumed or held wait's event, an awaited step's outcome.
fn named_events(journal: &[JournalEntry]) -> HashMap<String, Ts> {
    let mut out = HashMap::new();
    for j in journal {
        let id = match j.kind.as_str() {
            "resume" | "event_held" => j.data["event"]["id"].as_str().map(str::to_string),
            "outcome" => j.data["key"].as_str().map(|k| format!("outcome-{k}")),
            _ => None,
        };
        if let Some(id) = id {
            out.entry(id).or_insert(j.at);
        }
    }
    out
}

fn new_event(e: StoredEvent) -> NewEvent {
    NewEvent {
        id: e.id,
        contact: e.contact,
        kind: e.kind,
        at: e.at,
        data: e.data,
    }
}

/// The round-robin counters as the run's `assign_owner` effects read them (the first of
/// each team).
fn counters(journal: &[JournalEntry]) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for j in journal
        .iter()
        .filter(|j| j.data["effect"] == "assign_owner")
    {
        if let (Some(team), Some(c)) = (j.data["team"].as_str(), j.data["counter"].as_i64()) {
            out.entry(format!("owner:{team}")).or_insert(c);
        }
    }
    out
}

/// One journal line, as a report shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Line {
    /// When.
    pub at: Ts,
    /// Its kind.
    pub kind: String,
    /// Its details (without the `enter` effect's `input`).
    pub data: Value,
}

/// How a replay compared with the recording.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Every entry the same.
    Identical {
        /// Entries compared.
        entries: usize,
    },
    /// The first entry that differs.
    Diverged {
        /// Entries recorded.
        entries: usize,
        /// Index (from 0) of the first entry that differs.
        index: usize,
        /// The step it is about, if any.
        step: Option<String>,
        /// What was recorded there (`None`: the replay wrote more).
        recorded: Option<Box<Line>>,
        /// What the engine does now (`None`: the replay stopped short).
        now: Option<Box<Line>>,
        /// The input (or change) that led there.
        cause: String,
    },
    /// The replay could not run.
    Failed {
        /// Why.
        reason: String,
    },
}

/// The replay of one run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// The run.
    pub run: String,
    /// Its workflow.
    pub workflow: String,
    /// The version it ran on.
    pub version: u32,
    /// Its contact.
    pub contact: String,
    /// The result.
    #[serde(flatten)]
    pub verdict: Verdict,
}

impl Report {
    /// The report of `run`'s replay.
    pub fn of(run: &Run, verdict: Verdict) -> Report {
        Report {
            run: run.id.clone(),
            workflow: run.workflow.clone(),
            version: run.workflow_version,
            contact: run.contact.clone(),
            verdict,
        }
    }

    /// Whether the replay matched the recording.
    pub fn identical(&self) -> bool {
        matches!(self.verdict, Verdict::Identical { .. })
    }

    /// The report for people: one line, or the divergence with what differs.
    pub fn render(&self) -> String {
        let p = crate::explain::printable;
        match &self.verdict {
            Verdict::Identical { entries } => {
                format!("{}: identical ({entries} entries)", self.run)
            }
            Verdict::Failed { reason } => format!("{}: failed: {}", self.run, p(reason)),
            Verdict::Diverged {
                entries,
                index,
                recorded,
                now,
                cause,
                ..
            } => {
                let line = |l: &Option<Box<Line>>| match l {
                    Some(l) => p(&format!(
                        "{} {} {}",
                        nurture_store::ts_out(l.at),
                        l.kind,
                        l.data
                    )),
                    None => "(nothing)".into(),
                };
                format!(
                    "{}: diverged at entry {index} of {entries}\n  recorded: {}\n  now:      {}\n  because:  {}",
                    self.run,
                    line(recorded),
                    line(now),
                    p(cause)
                )
            }
        }
    }
}

/// What to replay on: the project whose settings, templates and segments the engine
/// uses, and optionally another project whose version of each workflow replaces the
/// recorded one (`--against`).
pub struct Target<'p> {
    /// The project (settings, scoring, segments, templates, plugins).
    pub project: &'p Project,
    /// Replay on this project's workflows instead of the recorded versions.
    pub against: Option<&'p Project>,
}

/// Replays `recordings`, in batches of [`BATCH`] contacts of one workflow version;
/// `progress` is told how many are done after each batch. Reports come in the order of
/// `recordings`.
pub async fn replay(
    target: &Target<'_>,
    recordings: &[Recording],
    mut progress: impl FnMut(usize),
) -> Result<Vec<Report>, ReplayError> {
    let mut order: Vec<usize> = (0..recordings.len()).collect();
    order.sort_by(|a, b| {
        let (x, y) = (&recordings[*a].workflow, &recordings[*b].workflow);
        (&x.workflow, x.version).cmp(&(&y.workflow, y.version))
    });
    use futures::StreamExt;
    let mut out: Vec<Option<Report>> = vec![None; recordings.len()];
    let mut done = 0;
    // A few batches at once: each private store answers on a thread of its own, so one
    // batch's engine work overlaps another's queries.
    let mut replays = futures::stream::iter(batches(recordings, &order))
        .map(|batch| async move {
            let recs: Vec<&Recording> = batch.iter().map(|i| &recordings[*i]).collect();
            replay_batch(target, &recs)
                .await
                .map(|reports| (batch, reports))
        })
        .buffer_unordered(PARALLEL);
    while let Some(r) = replays.next().await {
        let (batch, reports) = r?;
        done += batch.len();
        for (i, r) in batch.into_iter().zip(reports) {
            out[i] = Some(r);
        }
        progress(done);
    }
    Ok(out.into_iter().flatten().collect())
}

/// Groups of at most [`BATCH`] recordings of one workflow version, with distinct
/// contacts.
fn batches(recordings: &[Recording], order: &[usize]) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut open: Vec<(Vec<usize>, std::collections::HashSet<String>)> = Vec::new();
    let mut last: Option<(String, u32)> = None;
    for &i in order {
        let r = &recordings[i];
        let key = (r.workflow.workflow.clone(), r.workflow.version);
        if last.as_ref() != Some(&key) {
            out.extend(open.drain(..).map(|(b, _)| b));
            last = Some(key);
        }
        let slot = open
            .iter_mut()
            .find(|(b, c)| b.len() < BATCH && !c.contains(&r.run.contact));
        match slot {
            Some((b, c)) => {
                b.push(i);
                c.insert(r.run.contact.clone());
            }
            None => open.push((vec![i], [r.run.contact.clone()].into())),
        }
    }
    out.extend(open.into_iter().map(|(b, _)| b));
    out
}

/// The plan `r` replays on: its recorded version, or the `against` project's workflow.
fn plan_for(target: &Target<'_>, r: &Recording) -> Result<Plan, String> {
    match target.against {
        Some(p) => p
            .plans
            .iter()
            .find(|p| p.id() == r.workflow.workflow)
            .cloned()
            .ok_or_else(|| format!("workflow `{}` is not in that project", r.workflow.workflow)),
        None => crate::versions::compile_stored(target.project, &r.workflow)
            .map_err(|why| format!("its version does not compile: {why}")),
    }
}

async fn replay_batch(
    target: &Target<'_>,
    recs: &[&Recording],
) -> Result<Vec<Report>, ReplayError> {
    let plan = match plan_for(target, recs[0]) {
        Ok(p) => p,
        Err(reason) => {
            return Ok(recs
                .iter()
                .map(|r| {
                    Report::of(
                        &r.run,
                        Verdict::Failed {
                            reason: reason.clone(),
                        },
                    )
                })
                .collect())
        }
    };
    // The whole project, the replayed workflow's version swapped in: what the contact's
    // other workflows did meanwhile (a score, a lifecycle) happens on replay too.
    let mut project = target.against.unwrap_or(target.project).clone();
    project.plans.retain(|p| p.id() != plan.id());
    project.plans.push(plan.clone());
    project.plans.sort_by(|a, b| a.id().cmp(b.id()));
    let store: Arc<dyn Store> = Arc::new(nurture_store_memory::MemoryStore::new());
    let mut engine = Engine::new(Arc::new(project), store.clone());
    engine.replay_reads = Some(Reads::of(recs));
    seed(&*store, recs).await?;
    let mut driver = Driver::new(&engine, recs);
    driver.run().await?;
    let recorded_plan = crate::versions::compile_stored(target.project, &recs[0].workflow).ok();
    Ok(recs
        .iter()
        .zip(driver.lives)
        .map(|(r, live)| {
            let verdict = match live.failed {
                Some(reason) => Verdict::Failed { reason },
                None => compare(r, &live.journal, recorded_plan.as_ref(), &plan),
            };
            Report::of(&r.run, verdict)
        })
        .collect())
}

/// Stores the contacts as their runs' units loaded them, with their history applied and
/// their runs that had ended.
async fn seed(store: &dyn Store, recs: &[&Recording]) -> Result<(), ReplayError> {
    let contacts: Vec<Contact> = recs
        .iter()
        .map(|r| Contact {
            version: 0,
            segment_due: None,
            ..r.input.contact.clone()
        })
        .collect();
    let history: Vec<NewEvent> = recs
        .iter()
        .flat_map(|r| r.history.iter().cloned())
        .collect();
    store.insert_events(&contacts, &history).await?;
    let runs: Vec<Run> = recs
        .iter()
        .flat_map(|r| r.prior_runs.iter())
        .map(|r| Run {
            rev: 0,
            ..r.clone()
        })
        .collect();
    if !runs.is_empty() {
        store
            .commit(&UnitOfWork {
                runs,
                ..Default::default()
            })
            .await?;
    }
    loop {
        let pending = store.pending_events(10_000).await?;
        if pending.is_empty() {
            return Ok(());
        }
        let uow = UnitOfWork {
            events_done: pending.iter().map(|e| e.seq).collect(),
            ..Default::default()
        };
        store.commit(&uow).await?;
    }
}

/// One recording's replay in progress.
struct Live<'r> {
    rec: &'r Recording,
    instants: Vec<Ts>,
    /// The next instant of `instants` not reached yet.
    pos: usize,
    /// The next event of `rec.events` not fed yet.
    fed: usize,
    /// The clock of this contact.
    now: Option<Ts>,
    /// The round-robin counters its units read (the recording's).
    counters: HashMap<String, i64>,
    /// The audience and key of its run's schedule firing, if a schedule started it.
    schedule: Option<(String, String)>,
    /// Its timers: run id, due.
    timers: BTreeMap<String, Ts>,
    segment_due: Option<Ts>,
    scheduled: bool,
    rounds: usize,
    done: bool,
    failed: Option<String>,
    /// What the replay journaled for the contact's runs of the replayed workflow.
    journal: Vec<JournalEntry>,
}

impl Live<'_> {
    /// The next recorded instant of this contact, if any is left. A worker ticks when it
    /// can: the replay ticks at the recorded instants, and a timer fires at the first of
    /// them at or after it is due (as it did, late or not).
    fn next(&self) -> Option<Ts> {
        self.instants.get(self.pos).copied()
    }
}

/// Drives a batch's recordings round by round: in each, every contact's unit runs at its
/// own next instant, events first, then timers, segment timers and schedules, as a tick
/// does; each phase of a round is one commit.
struct Driver<'e, 'r> {
    engine: &'e Engine,
    lives: Vec<Live<'r>>,
}

/// What one contact does in a phase of a round.
enum Phase {
    Events,
    Timers,
    Segments,
    Schedule,
}

impl<'e, 'r> Driver<'e, 'r> {
    fn new(engine: &'e Engine, recs: &[&'r Recording]) -> Self {
        let lives: Vec<Live<'r>> = recs
            .iter()
            .map(|r| Live {
                rec: r,
                instants: r.instants(),
                pos: 0,
                fed: 0,
                now: None,
                counters: r.counters.clone().into_iter().collect(),
                schedule: schedule_of(r),
                timers: BTreeMap::new(),
                segment_due: None,
                scheduled: false,
                rounds: 0,
                done: false,
                failed: None,
                journal: Vec::new(),
            })
            .collect();
        Driver { engine, lives }
    }

    async fn run(&mut self) -> Result<(), ReplayError> {
        loop {
            let active = self.advance_clocks();
            if active.is_empty() {
                return Ok(());
            }
            self.feed(&active).await?;
            for phase in [
                Phase::Events,
                Phase::Timers,
                Phase::Segments,
                Phase::Schedule,
            ] {
                self.phase(&active, phase).await?;
            }
        }
    }

    /// Moves each contact's clock to its next instant; returns those that have one.
    fn advance_clocks(&mut self) -> Vec<usize> {
        let mut active = Vec::new();
        for (i, l) in self.lives.iter_mut().enumerate() {
            if l.done {
                continue;
            }
            let Some(now) = l.next() else {
                l.done = true;
                continue;
            };
            l.rounds += 1;
            if l.rounds > MAX_ROUNDS {
                l.failed = Some(format!("the replay did not settle in {MAX_ROUNDS} rounds"));
                l.done = true;
                continue;
            }
            l.now = Some(now);
            while l.instants.get(l.pos).is_some_and(|t| *t <= now) {
                l.pos += 1;
            }
            active.push(i);
        }
        active
    }

    /// Stores the events due at each active contact's instant (queued, as ingestion does).
    async fn feed(&mut self, active: &[usize]) -> Result<(), ReplayError> {
        let mut events = Vec::new();
        for &i in active {
            let l = &mut self.lives[i];
            let now = l.now.expect("active");
            while let Some(f) = l.rec.events.get(l.fed).filter(|f| f.instant <= now) {
                events.push(f.event.clone());
                l.fed += 1;
            }
        }
        if !events.is_empty() {
            self.engine.store.insert_events(&[], &events).await?;
        }
        Ok(())
    }

    /// Runs one phase of a round for the active contacts with something to do in it, as
    /// one commit.
    async fn phase(&mut self, active: &[usize], phase: Phase) -> Result<(), ReplayError> {
        let mut pending: HashMap<String, Vec<StoredEvent>> = HashMap::new();
        if let Phase::Events = phase {
            for (c, evs) in
                nurture_store::by_contact(self.engine.store.pending_events(i64::MAX).await?, |e| {
                    &e.contact
                })
            {
                pending.insert(c, evs);
            }
        }
        let mut units: Vec<usize> = Vec::new();
        for &i in active {
            let l = &self.lives[i];
            let now = l.now.expect("active");
            let has = match phase {
                Phase::Events => pending.contains_key(&l.rec.run.contact),
                Phase::Timers => l.timers.values().any(|t| *t <= now),
                Phase::Segments => l.segment_due.is_some_and(|t| t <= now),
                Phase::Schedule => {
                    !l.scheduled && l.schedule.is_some() && l.instants.first() == Some(&now)
                }
            };
            if has {
                units.push(i);
            }
        }
        if units.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = units
            .iter()
            .map(|i| self.lives[*i].rec.run.contact.clone())
            .collect();
        let min_now = units
            .iter()
            .filter_map(|i| self.lives[*i].now)
            .min()
            .expect("units");
        let data = self
            .engine
            .store
            .load_units(&ids, self.engine.history_since(min_now).as_ref())
            .await?;
        self.engine.ensure_plans(&data).await?;
        let mut merged = UnitOfWork::default();
        for (i, data) in units.into_iter().zip(data) {
            let l = &mut self.lives[i];
            let now = l.now.expect("active");
            let contact = l.rec.run.contact.clone();
            let mut w = Work::from_data(self.engine, &contact, now, data, l.counters.clone());
            let r = match phase {
                Phase::Events => {
                    let evs = pending.remove(&contact).unwrap_or_default();
                    w.in_turn(&evs, Work::apply_event)
                }
                Phase::Timers => {
                    let mut due: Vec<DueTimer> = l
                        .timers
                        .iter()
                        .filter(|(_, t)| **t <= now)
                        .map(|(run, t)| DueTimer {
                            run_id: run.clone(),
                            due_at: *t,
                            contact: Some(contact.clone()),
                        })
                        .collect();
                    due.sort_by_key(|t| t.due_at);
                    w.in_turn(&due, Work::fire_timer)
                }
                Phase::Segments => {
                    w.segment_fired = true;
                    let due = l.segment_due.map(nurture_store::ts_out);
                    w.journal(None, "segment_timer", json!({ "due": [due] }));
                    Ok(())
                }
                Phase::Schedule => {
                    l.scheduled = true;
                    let (audience, key) = l.schedule.as_ref().expect("a schedule");
                    w.schedule_enrol(&l.rec.run.workflow, audience, key)
                }
            };
            let r = r.and_then(|()| w.settle());
            if let Err(e) = r {
                l.failed = Some(e.to_string());
                l.done = true;
                continue;
            }
            let (mut uow, _) = w.finish();
            // Counters were read from the recording: nothing to fence here.
            uow.counters.clear();
            track(l, &uow);
            merged.merge(uow);
        }
        self.engine.store.commit(&merged).await?;
        Ok(())
    }
}

/// Notes what a unit did to its contact's timers and journal.
fn track(l: &mut Live<'_>, uow: &UnitOfWork) {
    for run in &uow.timers_clear {
        l.timers.remove(run);
    }
    for t in &uow.timers_set {
        l.timers.insert(t.run_id.clone(), t.due_at);
    }
    for (_, due) in &uow.segment_timers {
        l.segment_due = *due;
    }
    // Only the replayed workflow's runs: the project's other workflows run too (their
    // effects count), but their journals are not compared. A run that journals is
    // among the unit's changed runs.
    let mine: std::collections::HashSet<&str> = uow
        .runs
        .iter()
        .filter(|r| r.workflow == l.rec.run.workflow)
        .map(|r| r.id.as_str())
        .collect();
    l.journal.extend(
        uow.journal
            .iter()
            .filter(|j| j.run_id.as_deref().is_some_and(|id| mine.contains(id)))
            .cloned(),
    );
}

/// The audience and key of a run a schedule started.
fn schedule_of(r: &Recording) -> Option<(String, String)> {
    let enter = r
        .journal
        .iter()
        .find(|j| j.kind == "effect" && j.data["effect"] == "enter")?;
    let audience = enter.data["trigger"]["schedule"].as_str()?;
    Some((audience.to_string(), r.input.key.clone()))
}

/// The entries of a journal as compared: the `enter` effect without its `input`.
fn comparable(j: &JournalEntry) -> Line {
    let mut data = j.data.clone();
    if let Some(m) = data.as_object_mut() {
        if m.get("effect") == Some(&Value::from("enter")) {
            m.remove("input");
        }
    }
    Line {
        at: j.at,
        kind: j.kind.as_str().to_string(),
        data,
    }
}

/// What of a line a replay must reproduce: all of it, except a condition's expression
/// and the values it read (a replay `--against` an edited condition diverges only where
/// its result differs), and the rule and parameters named on a held-back send's line
/// ([`nurture_store::held`]: they follow from its `reason` and the settings, and journals
/// recorded before they were written replay identical).
fn behaviour(l: &Line) -> Line {
    let mut l = l.clone();
    let held = l.kind == "effect"
        && matches!(
            l.data["effect"].as_str(),
            Some("wait" | "email_skipped" | "plugin_skipped")
        );
    if let Some(m) = l.data.as_object_mut() {
        if l.kind == "condition" {
            m.remove("expr");
            m.remove("reads");
        }
        if held {
            m.remove("rule");
            m.remove("params");
        }
    }
    l
}

/// The step a line is about: its `step`, or a branch condition's (`where: "qualify[0]"`).
fn step_of(l: &Line) -> Option<String> {
    if let Some(s) = l.data["step"].as_str() {
        return Some(s.to_string());
    }
    let w = l.data["where"].as_str()?;
    w.split_once('[').map(|(s, _)| s.to_string())
}

/// Compares the recording's journal with the replay's entries of the same run (or, when
/// the replay started none by that id, of the first run of the workflow it started).
fn compare(
    r: &Recording,
    replayed: &[JournalEntry],
    recorded_plan: Option<&Plan>,
    plan: &Plan,
) -> Verdict {
    let id = if replayed
        .iter()
        .any(|j| j.run_id.as_deref() == Some(&r.run.id))
    {
        Some(r.run.id.as_str())
    } else {
        replayed.first().and_then(|j| j.run_id.as_deref())
    };
    let now: Vec<Line> = replayed
        .iter()
        .filter(|j| j.run_id.as_deref() == id && id.is_some())
        .map(comparable)
        .collect();
    let then: Vec<Line> = r.journal.iter().map(comparable).collect();
    let key = |l: Option<&Line>| l.map(behaviour);
    let Some(index) =
        (0..then.len().max(now.len())).find(|i| key(then.get(*i)) != key(now.get(*i)))
    else {
        return Verdict::Identical {
            entries: then.len(),
        };
    };
    let (a, b) = (then.get(index).cloned(), now.get(index).cloned());
    let step = [&a, &b].into_iter().flatten().find_map(step_of);
    let cause = cause(
        r,
        a.as_ref(),
        b.as_ref(),
        step.as_deref(),
        recorded_plan,
        plan,
    );
    Verdict::Diverged {
        entries: then.len(),
        index,
        step,
        recorded: a.map(Box::new),
        now: b.map(Box::new),
        cause,
    }
}

/// The input or change a divergence follows: a condition that read another value, a
/// step that is not the same in the replayed workflow, the event or timer of that
/// instant; else the engine itself.
fn cause(
    r: &Recording,
    then: Option<&Line>,
    now: Option<&Line>,
    step: Option<&str>,
    recorded_plan: Option<&Plan>,
    plan: &Plan,
) -> String {
    if let (Some(a), Some(b)) = (then, now) {
        if a.kind == "condition" && b.kind == "condition" && a.data["reads"] != b.data["reads"] {
            return reads_differ(&a.data["reads"], &b.data["reads"]);
        }
        if a.kind == "split" && b.kind == "split" && a.data["bucket"] != b.data["bucket"] {
            return format!(
                "the split put this contact in bucket {} when recorded and {} now: the \
                 bucketing changed (an engine change)",
                a.data["bucket"], b.data["bucket"]
            );
        }
    }
    if let (Some(step), Some(old)) = (step, recorded_plan) {
        match (old.step(step), plan.step(step)) {
            (Some(x), Some(y)) if x != y => {
                return format!("the step `{step}` is not the same in the replayed workflow")
            }
            (Some(_), None) => return format!("the replayed workflow has no step `{step}`"),
            (None, Some(_)) => return format!("the step `{step}` is new in the replayed workflow"),
            _ => {}
        }
    }
    let at = then.or(now).map(|l| l.at);
    if let Some(f) = r.events.iter().find(|f| Some(f.instant) == at) {
        return format!(
            "the event {} `{}` (happened {}) applied at {}",
            f.event.kind,
            f.event.id,
            nurture_store::ts_out(f.event.at),
            nurture_store::ts_out(f.instant)
        );
    }
    if recorded_plan.is_some_and(|old| !same_plan(old, plan)) {
        return "the replayed workflow differs from the recorded version".into();
    }
    match at {
        Some(t) => format!(
            "a timer or the engine at {}: same inputs, another result (an engine change)",
            nurture_store::ts_out(t)
        ),
        None => "the engine: same inputs, another result (an engine change)".into(),
    }
}

fn same_plan(a: &Plan, b: &Plan) -> bool {
    a.workflow == b.workflow
}

fn reads_differ(then: &Value, now: &Value) -> String {
    let empty = serde_json::Map::new();
    let (a, b) = (
        then.as_object().unwrap_or(&empty),
        now.as_object().unwrap_or(&empty),
    );
    for k in a.keys().chain(b.keys()) {
        let (x, y) = (a.get(k), b.get(k));
        if x != y {
            let show = |v: Option<&Value>| v.map_or("nothing".to_string(), Value::to_string);
            return format!(
                "the condition read `{k}` as {} when recorded and {} on replay",
                show(x),
                show(y)
            );
        }
    }
    "the condition read other values".into()
}
