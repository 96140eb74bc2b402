//! The `Store` contract: everything the engine keeps durably.
//!
//! Reads are plain methods. Every write the engine makes goes through one method,
//! [`Store::commit`], which applies a [`UnitOfWork`] in a single transaction: a run's state,
//! its timer, its outbox entries, its journal lines and the contact changes succeed or fail
//! together. Rows carry a version; a commit whose expected version no longer matches is
//! rejected with [`StoreError::Conflict`] (fencing), so a stale worker cannot overwrite
//! newer state. Implementations: `nurture-store-sqlite` (the embedded default) and
//! `nurture-store-postgres`; both pass the same contract suite ([`contract`]).
#![warn(missing_docs)]
#![warn(unreachable_pub)]

pub mod contract;
pub mod controls;
pub mod counts;
pub mod encoding;
pub mod error;
pub mod held;
pub mod keys;
pub mod kinds;
pub mod limits;
pub mod ops;
pub mod outbox;
pub mod privacy;
pub mod reads;
pub mod retention;
pub mod versions;

pub use error::{ConfigError, ConflictKind, StoreError, Unavailability};

use std::collections::BTreeSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use controls::{ControlStore, WorkflowControl};
pub use counts::{CountFilter, CountRow, CountView, Scope, Tally};
pub use keys::{ApiKey, AuditEntry, KeyStore};
pub use kinds::{JournalKind, OutboxKind, UnknownKind};
pub use ops::{OpsView, QueueSummary};
pub use outbox::{OutboxFilter, OutboxRow, OutboxState, OutboxView};
pub use privacy::{EraseError, Erased, Erasure, PrivacyStore};
pub use reads::ReadView;
pub use retention::{Compacted, CompactedContacts, RetentionStore};
// The event and the time as the campaign language sees them; the store keeps them.
pub use nurture_core::event::{ts, ts_out, StoredEvent, Ts};
pub use versions::{
    Expected, LatestVersion, OpenRunCount, OpenRunRef, VersionStore, WorkflowVersion,
};

/// How long a worker holds the timers and outbox entries it claimed, unless its store's
/// configuration says otherwise ([`SqliteConfig::lease`], [`PostgresConfig::lease`]; the
/// binary reads `NURTURE_LEASE_SECS`): 60 s.
pub const DEFAULT_LEASE: std::time::Duration = std::time::Duration::from_secs(60);

/// When a lease of `lease` taken at `now` runs out.
pub fn lease_end(now: Ts, lease: std::time::Duration) -> Ts {
    now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX)
}

/// The `email` entries of `uow` among the keys a claiming commit leased
/// ([`Store::commit_claiming`]): those it checks against the suppression list.
pub fn claimed_emails<'u>(uow: &'u UnitOfWork, claimed: &[String]) -> Vec<&'u str> {
    uow.outbox
        .iter()
        .filter(|e| e.kind == OutboxKind::Email && claimed.contains(&e.key))
        .map(|e| e.key.as_str())
        .collect()
}

/// Reads a stored timestamp (RFC 3339); anything else is [`StoreError::Timestamp`].
pub fn parse_ts(s: &str) -> Result<Ts, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|source| StoreError::Timestamp {
            value: s.to_string(),
            source,
        })
}

/// The row of `counters` that [`Store::probe_write`] rewrites (the teams' counters are
/// named `owner:TEAM`).
pub const HEALTH_ROW: &str = "nurture:healthz";

/// Consent to marketing email.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Consent {
    /// The contact agreed to marketing email.
    OptedIn,
    /// The contact refused or withdrew it.
    OptedOut,
    /// Never stated (the default): a workflow whose consent policy is `opted_in` sends
    /// such a contact no marketing email.
    #[default]
    Unknown,
}

impl Consent {
    /// The consent as stored and shown: `opted_in`, `opted_out` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Consent::OptedIn => "opted_in",
            Consent::OptedOut => "opted_out",
            Consent::Unknown => "unknown",
        }
    }
}

/// A contact and everything the engine tracks about it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Contact {
    /// The contact's id (events name their contact by it).
    pub id: String,
    /// Its email address, unique among contacts; none for a contact known by id alone.
    #[serde(default)]
    pub email: Option<String>,
    /// Any other field: first_name, last_name, title, company {name, employees}...
    #[serde(default)]
    pub fields: Map<String, Value>,
    /// Tags set by `tag` actions (and removed by `untag`).
    #[serde(default)]
    pub tags: BTreeSet<String>,
    /// Lead score: the points of the scoring rules and `score` actions so far.
    #[serde(default)]
    pub score: i64,
    /// Consent to marketing email, as last stated.
    #[serde(default)]
    pub consent: Consent,
    /// Lifecycle stage (one of `nurture_core::model::LIFECYCLE_STAGES`), if set.
    #[serde(default)]
    pub lifecycle: Option<String>,
    /// When a workflow last changed its lifecycle stage (the lead funnel counts the time
    /// between stages from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle_since: Option<Ts>,
    /// The points its score got so far from each reason (a scoring rule's event or
    /// profile rule, a workflow's `score` step): what made it an MQL, in reports.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub points: std::collections::BTreeMap<String, i64>,
    /// Sales owner, as `assign_owner` picked from a team or an import set.
    #[serde(default)]
    pub owner: Option<String>,
    /// IANA time zone (e.g. `Europe/Sofia`) its quiet hours are counted in.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Unsubscribed from marketing email (one-click or event).
    #[serde(default)]
    pub unsubscribed: bool,
    /// Address suppressed (hard bounce, complaint).
    #[serde(default)]
    pub suppressed: bool,
    /// Segments the contact is in, as last evaluated.
    #[serde(default)]
    pub segments: BTreeSet<String>,
    /// Points of scoring rules that age (`decay`, `expires`): each with its event's time
    /// and its rule's aging, counted into [`Contact::score_at`] as they are worth then.
    /// Not in `score`, which holds the points that do not age.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aging: Vec<AgingPoints>,
    /// Indexes of the `profile` scoring rules whose points the score counts now.
    #[serde(default)]
    pub profile_rules: BTreeSet<usize>,
    /// When its segment membership may change next by the clock alone (its row in the
    /// store's segment timers; `engine::segments`), as last computed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_due: Option<Ts>,
    /// Row version for optimistic concurrency; 0 for a contact not stored yet.
    #[serde(default)]
    pub version: i64,
}

/// Points of a scoring rule that ages, given at `at` (`Contact::aging`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AgingPoints {
    /// When the event that earned them happened.
    pub at: Ts,
    /// Their value at `at` (fractional once merged: see [`Contact::add_aging`]).
    pub points: f64,
    /// How they age (the rule's `decay` and `expires` when they were given).
    #[serde(flatten)]
    pub aging: nurture_core::aging::Aging,
}

/// The most aging entries a contact keeps: past it the oldest is dropped (a contact
/// flooded with events cannot make every read of its score slow).
pub const MAX_AGING: usize = 1000;

impl Contact {
    /// Its lead score at `now`: the points that do not age plus each aging entry as it is
    /// worth at `now` ([`nurture_core::aging::Aging::value`]).
    pub fn score_at(&self, now: Ts) -> f64 {
        self.score as f64
            + self
                .aging
                .iter()
                .map(|p| p.aging.value(p.points, p.at, now))
                .sum::<f64>()
    }

    /// Adds `points` of a rule aging as `aging`, earned at `at`, as of `now`. Entries
    /// worth nothing at `now` (expired, or decayed past 60 half-lives) are dropped;
    /// decay-only points of the same half-life are merged into one entry at the later time
    /// (`a × 0.5^((t2 − t1)/h) + b` at `t2`: the same value at every later instant).
    pub fn add_aging(&mut self, points: i64, aging: nurture_core::aging::Aging, at: Ts, now: Ts) {
        self.aging.retain(|p| {
            let gone = p
                .aging
                .expires
                .is_some_and(|e| (now - p.at).num_seconds() >= e as i64);
            let faded = p
                .aging
                .half_life
                .is_some_and(|h| (now - p.at).num_seconds() > 60 * h as i64);
            !gone && !faded
        });
        let mut new = AgingPoints {
            at,
            points: points as f64,
            aging,
        };
        if aging.expires.is_none() {
            if let Some(i) = self.aging.iter().position(|p| p.aging == aging) {
                let old = self.aging.remove(i);
                let later = old.at.max(at);
                new = AgingPoints {
                    at: later,
                    points: aging.value(old.points, old.at, later)
                        + aging.value(points as f64, at, later),
                    aging,
                };
            }
        }
        self.aging.push(new);
        if self.aging.len() > MAX_AGING {
            if let Some(i) = (0..self.aging.len()).min_by_key(|&i| self.aging[i].at) {
                self.aging.remove(i);
            }
        }
    }
}

/// An event to store (the id is the idempotency key).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NewEvent {
    /// The event's id: a second event with the same id is a duplicate, not stored again.
    pub id: String,
    /// The id of the contact it is about.
    pub contact: String,
    /// Its type, e.g. `page.visited` (`type` in JSON).
    #[serde(rename = "type")]
    pub kind: String,
    /// When it happened.
    pub at: Ts,
    /// Its payload, as sent.
    pub data: Value,
}

/// Where a run is in its life: open (active, waiting) or ended, and how it ended.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Executing or about to.
    Active,
    /// Waiting for a timer or an event.
    Waiting,
    /// Ended at `end`.
    Completed,
    /// Ended by reaching the goal.
    Converted,
    /// Ended by `exit_if`.
    Exited,
    /// Ended by an error.
    Failed,
}

impl RunStatus {
    /// The status as stored: `active`, `waiting`, `completed`, `converted`, `exited` or
    /// `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Active => "active",
            RunStatus::Waiting => "waiting",
            RunStatus::Completed => "completed",
            RunStatus::Converted => "converted",
            RunStatus::Exited => "exited",
            RunStatus::Failed => "failed",
        }
    }
    /// Reads a stored status; any other text is [`StoreError::Corrupt`].
    pub fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "active" => RunStatus::Active,
            "waiting" => RunStatus::Waiting,
            "completed" => RunStatus::Completed,
            "converted" => RunStatus::Converted,
            "exited" => RunStatus::Exited,
            "failed" => RunStatus::Failed,
            other => return Err(StoreError::Corrupt(format!("run status {other:?}"))),
        })
    }
    /// Whether the run has not ended yet (active or waiting).
    pub fn is_open(self) -> bool {
        matches!(self, RunStatus::Active | RunStatus::Waiting)
    }
}

/// What a waiting run waits for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Wait {
    /// `wait` / `wait_until`: continue at the timer.
    Timer,
    /// `wait_for`: an event of this type (the step's `if` is checked on arrival), or the
    /// timer (timeout).
    Event {
        /// The event type awaited.
        event: String,
    },
    /// An email step deferred by quiet hours: run the step again at the timer.
    QuietHours,
    /// A `wait_for` whose event came while its workflow was paused (the run keeps the
    /// event): it goes on along the event edge at the timer, once the workflow runs.
    EventHeld {
        /// The event type that came.
        event: String,
    },
    /// A `webhook` or `plugin` step with `await: true`: the delivery of the outbox entry
    /// `key` ends (its completion queues an `outcome` event, see
    /// `nurture_engine::outcome`), or the timer (the step's `timeout`).
    Outcome {
        /// The idempotency key of the awaited outbox entry.
        key: String,
    },
}

/// One contact's walk through one workflow.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Run {
    /// The run's id.
    pub id: String,
    /// The id of the workflow it walks.
    pub workflow: String,
    /// The version of the workflow the run started on.
    pub workflow_version: u32,
    /// The id of the contact it walks.
    pub contact: String,
    /// Open (active, waiting) or how it ended.
    pub status: RunStatus,
    /// The step the run is at (executing, or waiting in).
    pub step: Option<String>,
    /// What it waits for, while waiting.
    pub wait: Option<Wait>,
    /// The event that enrolled the contact, if any.
    pub trigger_event: Option<Value>,
    /// The event in scope for conditions: the trigger, or the one that resumed a wait.
    #[serde(default)]
    pub event: Option<Value>,
    /// The outcome of the last awaited `webhook`/`plugin` step (`outcome` and `response`
    /// in conditions): `{ok, status, error, response}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Value>,
    /// When the contact entered the workflow.
    pub started_at: Ts,
    /// When the run last changed.
    pub updated_at: Ts,
    /// When it ended, once it has.
    pub ended_at: Option<Ts>,
    /// Why it ended (e.g. `goal`, `error`), once it has.
    pub exit_reason: Option<String>,
    /// The variant the run took at each split it passed (split step -> variant name),
    /// so a goal reached later counts for that variant.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub variants: std::collections::BTreeMap<String, String>,
    /// Row version; 0 for a run not stored yet.
    pub rev: i64,
}

/// A pending timer of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Timer {
    /// The run it resumes.
    pub run_id: String,
    /// The run's contact, handed back with the timer when it comes due (the Postgres
    /// store keeps it in the timer's row; a timer stored without it looks the run up).
    pub contact: String,
    /// When it fires.
    pub due_at: Ts,
}

/// `items` grouped by contact: one group per contact, in the order each contact first
/// appears, each group in its original order (a contact's queued events, its outbox
/// entries: applied or delivered one after another).
pub fn by_contact<T>(items: Vec<T>, contact: impl Fn(&T) -> &str) -> Vec<(String, Vec<T>)> {
    let mut groups: Vec<(String, Vec<T>)> = Vec::new();
    let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for item in items {
        let c = contact(&item);
        match at.get(c) {
            Some(&i) => groups[i].1.push(item),
            None => {
                at.insert(c.to_string(), groups.len());
                groups.push((c.to_string(), vec![item]));
            }
        }
    }
    groups
}

/// A batch's loaded units in the order of `contacts` (an empty unit for one not found).
pub fn in_order(
    contacts: &[String],
    mut by: std::collections::HashMap<&str, UnitData>,
) -> Vec<UnitData> {
    contacts
        .iter()
        .map(|c| by.remove(c.as_str()).unwrap_or_default())
        .collect()
}

/// The journal's stored `kind` for a packed row: consecutive entries of one unit of work
/// for one run share a row, `data` holding `[{"kind": .., "data": ..}, ..]`. A step writes
/// two or three entries (the step, its effect, a wake), so packing cuts the rows and index
/// entries written per step by as much; readers see the entries one by one.
pub const PACKED: &str = "entries";

/// A value as JSON text, serialized straight from it (no intermediate
/// `serde_json::Value` tree): the stores' documents and journal data.
pub fn to_json<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).expect("stored values serialize to JSON")
}

/// Bytes as lowercase hex: hashes of secrets and addresses, and SQLite's journal data
/// on its way to `unhex` (one string, no allocation per byte).
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// One journal row to write: run, contact, time, kind, data (its JSON text, encoded by
/// [`encoding::encode`]).
pub type JournalRow<'a> = (Option<&'a str>, &'a str, Ts, &'a str, Vec<u8>);

/// Packs consecutive entries with the same run, contact and time into one row (see
/// [`PACKED`]); an entry alone keeps its own kind. The data is serialized straight from
/// the entries (the engine writes a row per step: no copy of their JSON trees), then
/// encoded ([`encoding`]).
pub fn pack_journal(entries: &[JournalEntry]) -> Vec<JournalRow<'_>> {
    #[derive(Serialize)]
    struct Item<'a> {
        kind: &'a str,
        data: &'a Value,
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < entries.len() {
        let first = &entries[i];
        let mut j = i + 1;
        while j < entries.len()
            && entries[j].run_id == first.run_id
            && entries[j].contact == first.contact
            && entries[j].at == first.at
        {
            j += 1;
        }
        let (kind, data) = if j - i == 1 {
            (first.kind.as_str(), to_json(&first.data))
        } else {
            let items: Vec<Item> = entries[i..j]
                .iter()
                .map(|e| Item {
                    kind: e.kind.as_str(),
                    data: &e.data,
                })
                .collect();
            (PACKED, to_json(items.as_slice()))
        };
        out.push((
            first.run_id.as_deref(),
            first.contact.as_str(),
            first.at,
            kind,
            encoding::encode(&data),
        ));
        i = j;
    }
    out
}

/// The entries of one stored journal row (unpacking a [`PACKED`] row).
pub fn unpack_journal(
    run_id: Option<String>,
    contact: String,
    at: Ts,
    kind: String,
    data: Value,
    out: &mut Vec<JournalEntry>,
) -> Result<(), StoreError> {
    if kind != PACKED {
        out.push(JournalEntry {
            run_id,
            contact,
            at,
            kind: kind.into(),
            data,
        });
        return Ok(());
    }
    let Value::Array(items) = data else {
        return Err(StoreError::Corrupt(
            "packed journal row is not a list".into(),
        ));
    };
    for item in items {
        let Value::Object(mut m) = item else {
            return Err(StoreError::Corrupt(
                "packed journal entry is not an object".into(),
            ));
        };
        let kind = match m.remove("kind") {
            Some(Value::String(k)) => k,
            _ => {
                return Err(StoreError::Corrupt(
                    "packed journal entry has no kind".into(),
                ))
            }
        };
        out.push(JournalEntry {
            run_id: run_id.clone(),
            contact: contact.clone(),
            at,
            kind: kind.into(),
            data: m.remove("data").unwrap_or(Value::Null),
        });
    }
    Ok(())
}

/// A timer claimed by [`Store::due_timers`], with its run's contact (`None` when the run
/// is gone), so a batch of timers is grouped by contact without a lookup per timer.
#[derive(Debug, Clone, PartialEq)]
pub struct DueTimer {
    /// The run it resumes.
    pub run_id: String,
    /// When it was due.
    pub due_at: Ts,
    /// The run's contact; `None` when the run is gone.
    pub contact: Option<String>,
}

/// A line of a run's (or a contact's) journal.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JournalEntry {
    /// The run that wrote it; `None` for a line about the contact alone.
    pub run_id: Option<String>,
    /// The contact it is about.
    pub contact: String,
    /// When it was written (the engine's clock at the step).
    pub at: Ts,
    /// What it records.
    pub kind: JournalKind,
    /// The details, shaped by the kind (see [`JournalKind`]).
    pub data: Value,
}

/// An effect to deliver, with its idempotency key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OutboxEntry {
    /// Idempotency key: an entry is stored and delivered at most once per key.
    pub key: String,
    /// The run whose step queued it, if a run did.
    pub run_id: Option<String>,
    /// The contact it is for (or about, for a notification to its owner).
    pub contact: String,
    /// The workflow of that run.
    pub workflow: Option<String>,
    /// The step that queued it.
    pub step: Option<String>,
    /// Which channel delivers it (stored as `email`, `notify`, `webhook`, `plugin`).
    pub kind: OutboxKind,
    /// What the channel needs to deliver it (template and variables, URL and body...).
    pub payload: Value,
    /// When it was queued.
    pub created_at: Ts,
    /// When it may be (re)tried.
    pub due_at: Ts,
    /// Delivery attempts made so far (deferrals do not count).
    pub attempts: i64,
}

/// What happened to an outbox entry.
#[derive(Debug, Clone, PartialEq)]
pub enum OutboxOutcome {
    /// Delivered; `record` is kept in `deliveries` (same transaction).
    Delivered {
        /// What the channel reports of the delivery (e.g. the provider's message id).
        record: Value,
    },
    /// Failed; try again at `retry_at`.
    Retry {
        /// Why the attempt failed.
        reason: String,
        /// When to try again.
        retry_at: Ts,
    },
    /// Failed for good.
    Failed {
        /// Why it failed.
        reason: String,
    },
    /// Not attempted now (e.g. the frequency cap): due again at `until`; not an attempt.
    Defer {
        /// Why it was not attempted.
        reason: String,
        /// When it is due again.
        until: Ts,
    },
    /// The send was interrupted after the server may have accepted it: not retried
    /// blindly. An operator checks and requeues it (`nurture outbox retry KEY`).
    Ambiguous {
        /// What interrupted the send.
        reason: String,
    },
}

/// A delivered outbox entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Delivery {
    /// The outbox entry's key.
    pub key: String,
    /// The channel that delivered it.
    pub kind: OutboxKind,
    /// The contact it was for.
    pub contact: String,
    /// When it was delivered.
    pub at: Ts,
    /// What the channel reported ([`OutboxOutcome::Delivered`]).
    pub record: Value,
}

/// How often a worker refreshes its registration ([`Store::heartbeat`]).
pub const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(1);
/// A worker not seen for this long counts as gone (its share of the database goes to the
/// others; its leases run out on their own).
pub const WORKER_ALIVE: std::time::Duration = std::time::Duration::from_secs(5);

/// A live worker, as registered by [`Store::heartbeat`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkerInfo {
    /// The worker's id, unique per process start.
    pub id: String,
    /// The host name it runs on.
    pub host: String,
    /// Its process id on that host.
    pub pid: u32,
    /// When it first registered.
    pub started_at: Ts,
    /// Its last heartbeat.
    pub seen_at: Ts,
    /// Its concurrent group commits ([`Store::parallelism`]) when last seen.
    pub lanes: usize,
    /// What it refuses to do and why ([`VersionStore::set_worker_note`]), if anything.
    pub note: Option<String>,
}

/// Filter for listing runs.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only runs of this workflow.
    pub workflow: Option<String>,
    /// Only runs of this contact.
    pub contact: Option<String>,
    /// Only runs in this status.
    pub status: Option<RunStatus>,
    /// At most this many runs.
    pub limit: i64,
}

/// All the writes of one engine transaction.
#[derive(Debug, Default, Clone)]
pub struct UnitOfWork {
    /// Contacts to insert (version 0) or update (expected stored version); stored with
    /// version + 1.
    pub contacts: Vec<Contact>,
    /// Runs to insert (rev 0) or update (expected rev); stored with rev + 1.
    pub runs: Vec<Run>,
    /// Timers to set (a run has one: setting replaces it).
    pub timers_set: Vec<Timer>,
    /// Runs whose timer to remove, by run id.
    pub timers_clear: Vec<String>,
    /// Effects to deliver; an entry whose key is already stored is left as it is.
    pub outbox: Vec<OutboxEntry>,
    /// Journal lines to append.
    pub journal: Vec<JournalEntry>,
    /// Pending events now processed.
    pub events_done: Vec<i64>,
    /// Counters: (name, expected value, new value).
    pub counters: Vec<(String, i64, i64)>,
    /// Schedule triggers: (workflow, last firing).
    pub schedules: Vec<(String, Ts)>,
    /// Segment timers: (contact, due) sets the contact's one row, (contact, None) removes it.
    pub segment_timers: Vec<(String, Option<Ts>)>,
    /// Segment membership: (segment, contact, member) adds or removes a row.
    pub segment_members: Vec<(String, String, bool)>,
    /// Report counts to add ([`counts`]), in the same transaction as what they count.
    pub tallies: Vec<Tally>,
    /// Contacts the unit read as stored and does not write, which its other writes name
    /// (a run it starts, a line, a send): they must still be stored when it commits, else
    /// the commit is a `Conflict` (`contact`) and writes nothing. An erasure between the
    /// read and the commit would otherwise be outlived by what the unit writes about the
    /// person. Postgres keeps them from being deleted until the commit (`FOR KEY SHARE`).
    pub contacts_kept: Vec<String>,
}

impl UnitOfWork {
    /// Appends another unit's writes (of other contacts) to this one.
    pub fn merge(&mut self, other: UnitOfWork) {
        self.contacts.extend(other.contacts);
        self.runs.extend(other.runs);
        self.timers_set.extend(other.timers_set);
        self.timers_clear.extend(other.timers_clear);
        self.outbox.extend(other.outbox);
        self.journal.extend(other.journal);
        self.events_done.extend(other.events_done);
        self.counters.extend(other.counters);
        self.schedules.extend(other.schedules);
        self.segment_timers.extend(other.segment_timers);
        self.segment_members.extend(other.segment_members);
        self.tallies.extend(other.tallies);
        self.contacts_kept.extend(other.contacts_kept);
    }

    /// Whether the unit writes nothing at all (the contacts it keeps are not writes).
    pub fn is_empty(&self) -> bool {
        self.contacts.is_empty()
            && self.runs.is_empty()
            && self.timers_set.is_empty()
            && self.timers_clear.is_empty()
            && self.outbox.is_empty()
            && self.journal.is_empty()
            && self.events_done.is_empty()
            && self.counters.is_empty()
            && self.schedules.is_empty()
            && self.segment_timers.is_empty()
            && self.segment_members.is_empty()
            && self.tallies.is_empty()
    }
}

/// Result of storing one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// Stored and queued for processing.
    New,
    /// Its id was already stored: nothing stored or queued.
    Duplicate,
}

/// What a unit of work reads about one contact.
#[derive(Debug, Clone, Default)]
pub struct UnitData {
    /// The contact as stored; `None` if it is not.
    pub contact: Option<Contact>,
    /// Its runs, oldest first: at least, per workflow, its latest run (by `started_at`,
    /// then id). That is all a unit of work reads: a contact has at most one open run per
    /// workflow, and the engine stamps a new run after every earlier one of its workflow,
    /// so the latest is the open one if there is one; re-entry rules look at the latest.
    /// A store need not load the completed history of a contact that re-enters a
    /// workflow again and again.
    pub runs: Vec<Run>,
    /// Its events as the [`HistoryRead`] asked for, oldest first (none if not asked).
    pub events: Vec<StoredEvent>,
}

/// Which of a contact's events a unit of work reads: a bounded read, never the whole
/// history.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRead {
    /// At or after this time.
    pub since: Ts,
    /// Of these types only (`None`: any type).
    pub types: Option<Vec<String>>,
    /// At most this many per contact, the most recent.
    pub limit: i64,
}

impl From<Ts> for HistoryRead {
    /// Every event since then (at most 1,000 per contact).
    fn from(since: Ts) -> Self {
        HistoryRead {
            since,
            types: None,
            limit: 1000,
        }
    }
}

impl HistoryRead {
    /// Keeps, of a contact's events since `since` (oldest first), those this read takes.
    pub fn select(&self, mut events: Vec<StoredEvent>) -> Vec<StoredEvent> {
        if let Some(types) = &self.types {
            events.retain(|e| types.contains(&e.kind));
        }
        let extra = events.len().saturating_sub(self.limit.max(0) as usize);
        events.drain(..extra);
        events
    }

    /// The types as a JSON array (`null` for any type), for a query parameter.
    pub fn types_json(&self) -> Option<String> {
        self.types.as_ref().map(to_json)
    }
}

/// What [`Store::merge_contact`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Merged {
    /// The contact the anonymous one is merged into (for a merge done before: the
    /// contact named then).
    pub into: String,
    /// Events moved by this call (0 when merged before).
    pub moved: u64,
    /// Whether the anonymous contact had been merged before (nothing was done).
    pub already: bool,
}

/// A durable store of contacts, events, runs, timers, the outbox and the journal: see
/// the crate documentation. Shared by the engine's tasks (`Arc<dyn Store>`).
#[async_trait]
pub trait Store:
    VersionStore
    + OutboxView
    + ControlStore
    + CountView
    + OpsView
    + ReadView
    + PrivacyStore
    + KeyStore
    + RetentionStore
    + Send
    + Sync
{
    /// Loads what the units of work of `contacts` read, in the same order: with their
    /// events as `history` says, or none when it is `None` (nothing in the project reads
    /// a contact's history). The default makes three calls per contact; a store may answer
    /// a whole batch in three queries.
    async fn load_units(
        &self,
        contacts: &[String],
        history: Option<&HistoryRead>,
    ) -> Result<Vec<UnitData>, StoreError> {
        let mut out = Vec::with_capacity(contacts.len());
        for c in contacts {
            out.push(UnitData {
                contact: self.contact(c).await?,
                runs: self.runs_of_contact(c).await?,
                events: match history {
                    Some(h) => h.select(self.contact_events(c, h.since).await?),
                    None => Vec::new(),
                },
            });
        }
        Ok(out)
    }

    /// The contact `id`, if stored.
    async fn contact(&self, id: &str) -> Result<Option<Contact>, StoreError>;
    /// The contact with the address `email`, if any.
    async fn contact_by_email(&self, email: &str) -> Result<Option<Contact>, StoreError>;
    /// The stored contacts among `ids`, and those whose address is among `emails`, as
    /// `(id, email)` pairs: what ingestion needs to resolve a batch of events at once.
    async fn find_contacts(
        &self,
        ids: &[String],
        emails: &[String],
    ) -> Result<Vec<(String, Option<String>)>, StoreError> {
        let mut out = Vec::new();
        for id in ids {
            if let Some(c) = self.contact(id).await? {
                out.push((c.id, c.email));
            }
        }
        for email in emails {
            if let Some(c) = self.contact_by_email(email).await? {
                out.push((c.id, c.email));
            }
        }
        Ok(out)
    }
    /// The ids of all stored contacts.
    async fn contact_ids(&self) -> Result<Vec<String>, StoreError>;

    /// Stores events (idempotent by id) and queues the new ones for processing, in one
    /// transaction. Contacts created alongside (by email) are inserted first.
    async fn insert_events(
        &self,
        new_contacts: &[Contact],
        events: &[NewEvent],
    ) -> Result<Vec<Inserted>, StoreError>;
    /// The stored events among `ids`: (id, contact, type) each, so a reused id can be told
    /// from a replay.
    async fn event_owners(
        &self,
        ids: &[String],
    ) -> Result<Vec<(String, String, String)>, StoreError>;
    /// Queued events, oldest first: for each contact handed out, its oldest queued event
    /// and possibly the ones after it, in order (the engine applies them in one unit of
    /// work). About `limit` events or contacts. Postgres claims them for a lease
    /// (`FOR UPDATE SKIP LOCKED` on each contact's oldest), so concurrent workers split
    /// the inbox by contact and never apply one contact's events out of order.
    async fn pending_events(&self, limit: i64) -> Result<Vec<StoredEvent>, StoreError>;
    /// A contact's events at or after `since`, oldest first.
    async fn contact_events(
        &self,
        contact: &str,
        since: Ts,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// Merges the anonymous contact `from` into the contact `into`, in one transaction:
    /// its events (but its `contact.created`) become `into`'s and are queued again (the
    /// engine applies them to `into`: scoring, segments), the contact `from` is deleted
    /// with its segment rows, `from` becomes an alias of `into` ([`Store::merged_into`])
    /// and `into`'s journal gets a `merged` line (`{from, moved, source}`). A contact
    /// merged before changes nothing (`already`). `None` when `into` is not stored (erased
    /// since the caller looked): nothing changes, nothing of the person is moved into a
    /// contact that no longer exists. A store with concurrent writers keeps `into` from
    /// being deleted until the merge commits.
    async fn merge_contact(
        &self,
        from: &str,
        into: &str,
        at: Ts,
        source: &str,
    ) -> Result<Option<Merged>, StoreError>;
    /// The merged contacts among `ids`, each with the contact it was merged into.
    async fn merged_into(&self, ids: &[String]) -> Result<Vec<(String, String)>, StoreError>;

    /// The run `id`, if stored.
    async fn run(&self, id: &str) -> Result<Option<Run>, StoreError>;
    /// Every run of `contact`, oldest first.
    async fn runs_of_contact(&self, contact: &str) -> Result<Vec<Run>, StoreError>;
    /// The runs `filter` selects, newest first.
    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<Run>, StoreError>;
    /// The journal of run `run_id`, in the order it was written (packed rows unpacked).
    async fn journal(&self, run_id: &str) -> Result<Vec<JournalEntry>, StoreError>;
    /// The newest `limit` journal lines about `contact` alone (no run: scoring rules,
    /// segment changes, imports), oldest first.
    async fn contact_lines(
        &self,
        contact: &str,
        limit: i64,
    ) -> Result<Vec<JournalEntry>, StoreError>;
    /// Claims the timers due at or before `now`, earliest first: they are not due again
    /// for a lease (60 s), so concurrent workers do not take the same ones and a crashed
    /// worker's timers come back. Committing the unit that fired one clears it.
    async fn due_timers(&self, now: Ts, limit: i64) -> Result<Vec<DueTimer>, StoreError>;
    /// When the earliest timer is due, if there is one.
    async fn next_timer(&self) -> Result<Option<Ts>, StoreError>;
    /// Claims the segment timers due at or before `now` (one row per contact: when its
    /// segment membership may change by the clock alone), earliest first, for a lease as
    /// [`Store::due_timers`]: `(contact, due)`. The commit of the unit that re-evaluates
    /// the contact sets or removes its row ([`UnitOfWork::segment_timers`]).
    async fn due_segment_timers(
        &self,
        now: Ts,
        limit: i64,
    ) -> Result<Vec<(String, Ts)>, StoreError>;
    /// The earliest segment timer, if any.
    async fn next_segment_timer(&self) -> Result<Option<Ts>, StoreError>;
    /// The segment timer of one contact, if it has one.
    async fn segment_timer(&self, contact: &str) -> Result<Option<Ts>, StoreError>;
    /// Members of `segment` as stored (the contacts whose last evaluation put them in it),
    /// by id after `after`, at most `limit`.
    async fn segment_members(
        &self,
        segment: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<String>, StoreError>;

    /// The value of counter `name` (0 if never written): e.g. a team's round-robin
    /// position, `owner:TEAM`.
    async fn counter(&self, name: &str) -> Result<i64, StoreError>;
    /// When the schedule trigger of `workflow` last fired, if it has.
    async fn schedule_last(&self, workflow: &str) -> Result<Option<Ts>, StoreError>;

    /// How many group commits the engine should run at once: 1 where writers are
    /// serialised anyway (SQLite), more where concurrent transactions share log flushes.
    /// On a store shared by several workers, this process's share of the database's
    /// budget, which follows [`Store::heartbeat`].
    fn parallelism(&self) -> usize {
        1
    }

    /// Whether a claim that finds nothing still costs a scan: on a store shared by
    /// concurrent lanes and workers (Postgres), the claim steps over rows others hold and
    /// rows just deleted but not yet vacuumed. The engine's lanes then skip claiming a
    /// kind of work that was just empty (see `Engine::lane_round`). Not on SQLite: there,
    /// skipping cost `bench` (a) a quarter of its steps per second, measured.
    fn empty_claims_cost(&self) -> bool {
        false
    }

    /// Registers the worker `id` (on `host`, process `pid`) as alive; the scheduler calls
    /// it every [`HEARTBEAT`]. Returns how many workers are alive, this one included (seen
    /// within [`WORKER_ALIVE`]). A store several processes share sizes this process's
    /// [`Store::parallelism`] from it. The default (a store one process uses) keeps none.
    async fn heartbeat(&self, id: &str, host: &str, pid: u32) -> Result<usize, StoreError> {
        let _ = (id, host, pid);
        Ok(1)
    }

    /// Removes the worker `id` at a clean shutdown, so the others take up its share now
    /// rather than once its heartbeat is stale.
    async fn retire(&self, id: &str) -> Result<(), StoreError> {
        let _ = id;
        Ok(())
    }

    /// The workers alive, oldest first (empty where the store keeps no registry).
    async fn workers(&self) -> Result<Vec<WorkerInfo>, StoreError> {
        Ok(Vec::new())
    }

    /// How long this store's claims lease timers and outbox entries ([`DEFAULT_LEASE`]
    /// unless configured): a claiming commit's lease ends this long after it, and a
    /// deliverer starts no attempt once its claim's lease is nearly over.
    fn lease(&self) -> std::time::Duration {
        DEFAULT_LEASE
    }

    /// Checks that the store accepts a write now: upserts its one-row health marker
    /// (`/healthz` answers 503 when this fails, e.g. on a full disk).
    async fn probe_write(&self) -> Result<(), StoreError>;

    /// Applies a unit of work atomically; `Conflict` if any expected version differs.
    async fn commit(&self, uow: &UnitOfWork) -> Result<(), StoreError>;

    /// [`Store::commit`] that also claims, in the same transaction, the outbox entries the
    /// unit adds that are due at `now`, leased to the caller until `until` exactly as
    /// [`Store::pending_outbox`] would lease them. The committing process then delivers
    /// them at once, without claiming them again (the engine's hand-off; see
    /// `Engine::hand_off`). Returns the keys claimed: new keys only (an entry whose key was
    /// already stored is not this commit's to deliver), less `email` entries to suppressed
    /// addresses, which become `skipped` here as at a claim. A worker that dies before
    /// delivering them leaves them to the others once the lease runs out.
    ///
    /// The default claims nothing: the entries wait for `pending_outbox`.
    async fn commit_claiming(
        &self,
        uow: &UnitOfWork,
        now: Ts,
        until: Ts,
    ) -> Result<Vec<String>, StoreError> {
        let _ = (now, until);
        self.commit(uow).await?;
        Ok(Vec::new())
    }

    /// Sets the send limits (frequency cap, rate limit per channel) that this store's
    /// claims of outbox entries enforce from now on ([`limits`]); none by default.
    fn set_send_limits(&self, limits: limits::SendLimits) {
        let _ = limits;
    }

    /// Claims the outbox entries due at `now`, oldest first, for a lease (as `due_timers`).
    /// In the same transaction, due `email` entries whose address is on the suppression
    /// list become `skipped` with an `email_skipped` effect in the journal instead: an
    /// unsubscribe committed before the claim always wins over a queued send.
    async fn pending_outbox(&self, now: Ts, limit: i64) -> Result<Vec<OutboxEntry>, StoreError>;
    /// When the earliest pending outbox entry is due, if there is one.
    async fn next_outbox(&self) -> Result<Option<Ts>, StoreError>;
    /// Records the outcome of a delivery attempt (a delivery row and the outbox state
    /// change in one transaction: delivered at most once per key).
    async fn complete_outbox(
        &self,
        key: &str,
        outcome: &OutboxOutcome,
        now: Ts,
    ) -> Result<(), StoreError>;
    /// Records several outcomes at once (one transaction where the store can): each
    /// entry's result, a `Conflict` for a stale completion, without failing the others.
    async fn complete_outbox_many(
        &self,
        items: &[(String, OutboxOutcome)],
        now: Ts,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let mut out = Vec::with_capacity(items.len());
        for (key, outcome) in items {
            match self.complete_outbox(key, outcome, now).await {
                Err(e) if e.conflict().is_none() => return Err(e),
                r => out.push(r),
            }
        }
        Ok(out)
    }
    /// [`Store::complete_outbox_many`] that also stores and queues, in the same
    /// transaction, the events in `wakes` (each with the key of the entry it belongs to)
    /// of the entries whose outcome it records (not those of stale completions): the
    /// `outcome` events that wake runs awaiting a delivery. Events are stored idempotently
    /// by id, so a second completion never wakes a run twice, and a crash after the
    /// commit loses no wake-up.
    async fn complete_outbox_waking(
        &self,
        items: &[(String, OutboxOutcome)],
        wakes: &[(String, NewEvent)],
        now: Ts,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError>;
    /// Every delivery recorded, oldest first.
    async fn deliveries(&self) -> Result<Vec<Delivery>, StoreError>;
    /// Adds an address to the suppression list; false if it was already there.
    async fn suppress(&self, address: &str, reason: &str, now: Ts) -> Result<bool, StoreError>;
    /// Why an address is suppressed, if it is.
    async fn suppression(&self, address: &str) -> Result<Option<String>, StoreError>;
    /// When the contact's emails delivered since `since` were sent (frequency cap).
    async fn emails_since(&self, contact: &str, since: Ts) -> Result<Vec<Ts>, StoreError>;
    /// Puts an `ambiguous` or `failed` entry back in the queue with a fresh budget of
    /// attempts (attempts and last error cleared); false if it is neither.
    async fn requeue_outbox(&self, key: &str, now: Ts) -> Result<bool, StoreError>;
    /// Outbox state of a key: `pending`, `delivered`, `failed`, `ambiguous` or `skipped`.
    async fn outbox_state(&self, key: &str) -> Result<Option<String>, StoreError>;
}

/// `url` fit for logs and errors: the password of its user part and its query string (which
/// may hold a password or key, e.g. `?password=`) become `***`. Anything that is not a URL
/// with `//` comes back unchanged but for the query string.
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, _)) => (b, "?***"),
        None => (url, ""),
    };
    let Some((scheme, rest)) = base.split_once("://") else {
        return format!("{base}{query}");
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _)) => format!("{name}:***@{host}"),
            None => format!("{user}@{host}"),
        },
        None => authority.to_string(),
    };
    format!("{scheme}://{authority}{path}{query}")
}

/// The secret parts of a store URL (its password and query string), as they may appear in
/// a driver's error text.
fn url_secrets(url: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Some((_, query)) = url.split_once('?') {
        out.push(query.to_string());
        out.extend(
            query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(_, v)| v.to_string()),
        );
    }
    if let Some(rest) = url.split_once("://").map(|(_, r)| r) {
        let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
        if let Some((user, _)) = authority.rsplit_once('@') {
            if let Some((_, password)) = user.split_once(':') {
                out.push(password.to_string());
            }
        }
    }
    out.retain(|s| s.len() >= 3);
    out
}

impl StoreError {
    /// This error with the secrets of `url` (its password, query string) masked, in case
    /// the driver quoted them.
    pub fn redacted(self, url: &str) -> StoreError {
        let secrets = url_secrets(url);
        let base = url.split('?').next().unwrap_or(url);
        let clean = |m: String| {
            let m = m.replace(url, &redact_url(url));
            let m = m.replace(base, &redact_url(base));
            secrets.iter().fold(m, |m, s| m.replace(s.as_str(), "***"))
        };
        self.masking(&secrets, clean)
    }
}

#[cfg(test)]
mod redact_tests {
    use super::*;

    #[test]
    fn store_url_credentials_are_redacted() {
        assert_eq!(
            redact_url("postgres://nurture:s3cret@db.example:5432/app?sslpassword=x"),
            "postgres://nurture:***@db.example:5432/app?***"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("sqlite:///var/lib/n.db"),
            "sqlite:///var/lib/n.db"
        );
        assert_eq!(redact_url("sqlite::memory:"), "sqlite::memory:");
        let e =
            StoreError::Corrupt("bad password s3cret for postgres://nurture:s3cret@db/app".into())
                .redacted("postgres://nurture:s3cret@db/app");
        assert!(!e.to_string().contains("s3cret"), "{e}");
        // A driver error quoting the secret keeps its classification, not the secret.
        let e = StoreError::from(sqlx::Error::Io(std::io::Error::other(
            "cannot reach postgres://nurture:s3cret@db/app",
        )))
        .redacted("postgres://nurture:s3cret@db/app");
        assert!(e.is_unavailable() && e.is_retryable(), "{e:?}");
        assert!(!format!("{e:?}").contains("s3cret"), "{e:?}");
    }
}
