//! The campaign project model: workflows, steps, triggers, scoring, segments, settings.
//!
//! The serde representation of these types *is* the file format: `nurture schema` prints
//! the JSON Schema derived from them (committed as `schema/workflow.schema.json`), and
//! [`crate::project`] parses files into them with precise diagnostics.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

mod days;
pub mod net;
mod policy;
pub use days::{DayError, DaySpec};
pub use policy::{
    LocalWindow, MaxMessages, Never, NoStepUnreachableFor, Policy, SendTo, SendWindow, SendWithout,
    WindowError,
};

/// A marker that custom deserializers put in front of their messages so that the
/// diagnostic gets a specific code. See [`crate::project`].
pub(crate) const DURATION_ERR: &str = "invalid duration";
pub(crate) const TIME_ERR: &str = "invalid time";

/// One campaign workflow, one per file in `workflows/`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
#[schemars(title = "nurture workflow")]
pub struct Workflow {
    /// Unique id in the project, `[a-z0-9-]+`.
    pub workflow: String,
    /// Human name, shown in reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Bumped on every deployed change.
    #[serde(default = "one")]
    pub version: u32,
    /// IANA time zone for `wait_until` and quiet hours; a contact's own timezone wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Emails due inside these local hours are deferred to their end, never dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<QuietHours>,
    /// What enrols a contact: one trigger or a list of them.
    pub trigger: OneOrMany<Trigger>,
    /// May a contact enter again: `never` (default), `always`, or `after 30d`.
    #[serde(default)]
    pub reentry: Reentry,
    /// Reaching it ends the run as converted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goal: Option<Goal>,
    /// CEL condition checked before every step; true ends the run as exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_if: Option<Expr>,
    /// Which contacts may receive this workflow's marketing email.
    #[serde(default)]
    pub consent: ConsentPolicy,
    /// What happens to open runs of older versions when this version is deployed:
    /// `keep` (default: they finish on their version), `exit` (they end, reason
    /// `superseded`) or `migrate` (they move to this version, a step id kept where it is;
    /// `{ migrate: { OLD_STEP: NEW_STEP } }` maps renamed or removed steps).
    #[serde(default, skip_serializing_if = "OnNewVersion::is_keep")]
    pub on_new_version: OnNewVersion,
    /// `false` pauses the workflow (deployed like any edit): it enrols nobody and holds
    /// its runs' timers and sends until it is `true` again, as `nurture workflows pause`
    /// does without an edit. Default `true`.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
    /// The steps; the first is the entry.
    pub steps: Vec<Step>,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

fn one() -> u32 {
    1
}

/// Either a single item or a list of them.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    /// A single item, written without a list.
    One(T),
    /// A list of items.
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    /// The items, one or many alike.
    pub fn as_slice(&self) -> &[T] {
        match self {
            OneOrMany::One(t) => std::slice::from_ref(t),
            OneOrMany::Many(v) => v,
        }
    }
}

/// Local hours in which messages are not sent: those due wait for the period's end.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    /// Local time the quiet period starts, `HH:MM`.
    pub from: TimeOfDay,
    /// Local time it ends, `HH:MM` (may be earlier than `from`: overnight; equal to `from`
    /// with `days`: the whole day).
    pub to: TimeOfDay,
    /// The days whose quiet period this is (a period belongs to the day it starts on):
    /// names (`mon`, `tue`...) and ranges (`mon..fri`). Default: every day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<Vec<DaySpec>>,
}

/// Consent required to send marketing email from a workflow.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ConsentPolicy {
    /// Send unless the contact opted out (soft opt-in; the default).
    #[default]
    NotOptedOut,
    /// Send only to contacts who opted in explicitly (double opt-in lists, GDPR).
    OptedIn,
}

/// What enrols a contact into a workflow.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(untagged)]
pub enum Trigger {
    /// An event of the contact enrols it.
    Event(EventTrigger),
    /// Entering a segment enrols the contact.
    Segment(SegmentTrigger),
    /// The lead score reaching a threshold enrols the contact.
    Score(ScoreTrigger),
    /// A cron schedule enrols a segment's members at each firing.
    Schedule(ScheduleTrigger),
}

/// `trigger: {event: TYPE, if?: CONDITION}`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EventTrigger {
    /// Event type, e.g. `form.submitted`.
    pub event: String,
    /// CEL filter over `event` and `contact`.
    #[serde(rename = "if", default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Expr>,
}

/// `trigger: {segment: ID}`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SegmentTrigger {
    /// The contact enters this segment (from `segments.yaml`).
    pub segment: String,
}

/// `trigger: {score: {reaches: N}}`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScoreTrigger {
    /// The threshold.
    pub score: ScoreThreshold,
}

/// A score threshold of a score trigger.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScoreThreshold {
    /// Fires when the score crosses this value upwards.
    pub reaches: i64,
}

/// `trigger: {schedule: CRON, audience: SEGMENT}`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScheduleTrigger {
    /// Cron expression (5 fields, or 6 with seconds) in the workflow's timezone.
    pub schedule: String,
    /// Segment whose members are enrolled at each firing.
    pub audience: String,
}

/// What a deploy does with the open runs of older versions of a workflow
/// (`on_new_version`), as the new version's file says.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnNewVersion {
    /// They finish on the version they started on (the default).
    #[default]
    Keep,
    /// They end with reason `superseded`.
    Exit,
    /// They move to the new version: a run at step `OLD` goes to the step the map names
    /// for `OLD`, else to the step of the same id; with neither it would be stranded (and
    /// the deploy is refused).
    Migrate(BTreeMap<String, String>),
}

impl OnNewVersion {
    fn is_keep(&self) -> bool {
        *self == OnNewVersion::Keep
    }
}

impl<'de> Deserialize<'de> for OnNewVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "snake_case", deny_unknown_fields)]
        enum Raw {
            Keep,
            Exit,
            Migrate(BTreeMap<String, String>),
        }
        let v = Value::deserialize(d)?;
        if v == "migrate" {
            return Ok(OnNewVersion::Migrate(BTreeMap::new()));
        }
        match Raw::deserialize(v) {
            Ok(Raw::Keep) => Ok(OnNewVersion::Keep),
            Ok(Raw::Exit) => Ok(OnNewVersion::Exit),
            Ok(Raw::Migrate(map)) => Ok(OnNewVersion::Migrate(map)),
            Err(_) => Err(serde::de::Error::custom(
                "expected `keep`, `exit`, `migrate` or `{ migrate: { OLD_STEP: NEW_STEP } }`",
            )),
        }
    }
}

/// Re-entry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reentry {
    /// Enter once, ever (the default).
    #[default]
    Never,
    /// Enter again each time the trigger fires, once the previous run has ended.
    Always,
    /// Enter again once this long has passed since the last run started.
    After(Duration),
}

impl Serialize for Reentry {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Reentry::Never => s.serialize_str("never"),
            Reentry::Always => s.serialize_str("always"),
            Reentry::After(d) => s.serialize_str(&format!("after {d}")),
        }
    }
}

impl<'de> Deserialize<'de> for Reentry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.trim() {
            "never" => Ok(Reentry::Never),
            "always" => Ok(Reentry::Always),
            other => match other.strip_prefix("after ") {
                Some(dur) => dur
                    .trim()
                    .parse()
                    .map(Reentry::After)
                    .map_err(serde::de::Error::custom),
                None => Err(serde::de::Error::custom(format!(
                    "invalid reentry `{other}`: use `never`, `always` or `after DURATION` (e.g. `after 30d`)"
                ))),
            },
        }
    }
}

impl JsonSchema for Reentry {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Reentry".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "never | always | after DURATION (e.g. `after 30d`)",
            "pattern": "^(never|always|after\\s+([0-9]+[smhdw])+)$"
        })
    }
}

/// The conversion goal of a workflow: an event, a condition on the contact, or both.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Goal {
    /// Event type that counts as conversion (when its `if` holds). Without it, the goal
    /// is a condition on the contact, reached as soon as `if` holds: checked before every
    /// step and whenever the contact changes, also while the run waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// CEL condition over `contact` (and `event` with an `event` goal) that must hold.
    #[serde(rename = "if", default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Expr>,
}

/// A step of a workflow: an id, exactly one kind key, and an optional successor.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[schemars(extend("unevaluatedProperties" = false))]
pub struct Step {
    /// Unique in the workflow; referenced by `next`, `on_timeout` and branches.
    pub id: String,
    /// The kind key and its value, e.g. `wait: 2d`.
    #[serde(flatten)]
    pub kind: StepKind,
    /// Config of a `plugin:` step, checked against the plugin's manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with: Option<BTreeMap<String, Value>>,
    /// Explicit successor (`end` stops the run). Default: the next step in the list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Where a `wait_for` goes when its timeout passes. Default: same as on the event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_timeout: Option<String>,
    /// `webhook` and `plugin` steps: the run waits for the delivery's outcome (delivered,
    /// or failed after its retries) before it goes on; later conditions read `outcome`
    /// and `response`. Default false: fire and forget.
    #[serde(rename = "await", default, skip_serializing_if = "std::ops::Not::not")]
    pub await_outcome: bool,
    /// With `await`: contact fields set from the outcome, `FIELD: EXPRESSION` (CEL reading
    /// `response`, `outcome`, `contact`...), e.g. `crm_id: response.id`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub save: BTreeMap<String, Expr>,
    /// With `await`: how long to wait for the outcome at most (default `1d`); then the run
    /// goes on with `outcome.ok == false` and `outcome.error == "timed out"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// One item of an `actions:` list.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[schemars(extend("unevaluatedProperties" = false))]
pub struct Action {
    /// The kind key and its value, e.g. `tag: vip`.
    #[serde(flatten)]
    pub kind: StepKind,
    /// Config of a `plugin:` action, checked against the plugin's manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with: Option<BTreeMap<String, Value>>,
}

/// The kind of a step; the key that names it in the file.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// Render a template and send it.
    SendEmail(EmailRef),
    /// Wait for a duration: `30m`, `2h`, `7d`, `3w`.
    Wait(Duration),
    /// Wait until the next matching local time.
    WaitUntil(WaitUntil),
    /// Wait for an event of this contact, or the timeout.
    WaitFor(WaitFor),
    /// First arm whose condition is true wins; `else` is required.
    Branch(Vec<BranchArm>),
    /// A/B(/n) split by a stable hash of (workflow, step, contact).
    Split(Vec<SplitArm>),
    /// Add (or with a minus sign remove) lead-score points.
    Score(i64),
    /// Add tags to the contact.
    Tag(OneOrMany<String>),
    /// Remove tags from the contact.
    Untag(OneOrMany<String>),
    /// Set contact fields; `lifecycle` is one of them.
    Set(BTreeMap<String, Value>),
    /// Sales hand-off: pick an owner from a team in `nurture.toml`.
    AssignOwner(AssignOwner),
    /// Internal alert email.
    Notify(Notify),
    /// HTTP call with retries and an idempotency key.
    Webhook(Webhook),
    /// A wasm plugin step, `NAME/STEP`, configured by `with:`.
    Plugin(String),
    /// Several actions, in order.
    Actions(Vec<Action>),
}

impl StepKind {
    /// The file key of every kind, in declaration order.
    pub const KEYS: &'static [&'static str] = &[
        "send_email",
        "wait",
        "wait_until",
        "wait_for",
        "branch",
        "split",
        "score",
        "tag",
        "untag",
        "set",
        "assign_owner",
        "notify",
        "webhook",
        "plugin",
        "actions",
    ];

    /// The file key of this kind, e.g. `send_email`.
    pub fn key(&self) -> &'static str {
        match self {
            StepKind::SendEmail(_) => "send_email",
            StepKind::Wait(_) => "wait",
            StepKind::WaitUntil(_) => "wait_until",
            StepKind::WaitFor(_) => "wait_for",
            StepKind::Branch(_) => "branch",
            StepKind::Split(_) => "split",
            StepKind::Score(_) => "score",
            StepKind::Tag(_) => "tag",
            StepKind::Untag(_) => "untag",
            StepKind::Set(_) => "set",
            StepKind::AssignOwner(_) => "assign_owner",
            StepKind::Notify(_) => "notify",
            StepKind::Webhook(_) => "webhook",
            StepKind::Plugin(_) => "plugin",
            StepKind::Actions(_) => "actions",
        }
    }

    /// Actions that interpolate expressions or send the contact along (their payload
    /// carries its JSON view): the engine builds the expression scope for these alone.
    pub fn uses_scope(&self) -> bool {
        matches!(
            self,
            StepKind::SendEmail(_)
                | StepKind::Set(_)
                | StepKind::Notify(_)
                | StepKind::Webhook(_)
                | StepKind::Plugin(_)
        )
    }

    /// Kinds that do something to the contact or the world and may stand in `actions:`.
    pub fn is_action(&self) -> bool {
        !matches!(
            self,
            StepKind::Wait(_)
                | StepKind::WaitUntil(_)
                | StepKind::WaitFor(_)
                | StepKind::Branch(_)
                | StepKind::Split(_)
                | StepKind::Actions(_)
        )
    }
}

/// `send_email: TEMPLATE` or `{template, subject?, from?}`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(
    untagged,
    expecting = "a template name, or a map {template, subject?, from?}"
)]
pub enum EmailRef {
    /// The short form: just the template's name.
    Template(String),
    /// The long form, with overrides.
    Full(EmailSpec),
}

/// The long form of `send_email`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmailSpec {
    /// Name of a template in `templates/`.
    pub template: String,
    /// Overrides the template's subject (may interpolate `${...}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Overrides the From address of the template and of `[sender]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

impl EmailRef {
    /// The template's name, in either form.
    pub fn template(&self) -> &str {
        match self {
            EmailRef::Template(t) => t,
            EmailRef::Full(s) => &s.template,
        }
    }
    /// The subject override, if the long form gives one.
    pub fn subject(&self) -> Option<&str> {
        match self {
            EmailRef::Template(_) => None,
            EmailRef::Full(s) => s.subject.as_deref(),
        }
    }
}

/// `wait_until`: the next local time matching all the given parts.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WaitUntil {
    /// Local time of day, `HH:MM`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<TimeOfDay>,
    /// Only on this weekday (`mon`..`sun`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weekday: Option<Weekday>,
    /// CEL expression giving a date or timestamp, e.g. `contact.webinar_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<Expr>,
}

/// A day of the week, `mon` to `sun`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
// The variants are the days themselves (and docs on them would turn the schema's `enum`
// into a `oneOf`).
#[allow(missing_docs)]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    /// The same day as chrono's weekday.
    pub fn to_chrono(self) -> chrono::Weekday {
        match self {
            Weekday::Mon => chrono::Weekday::Mon,
            Weekday::Tue => chrono::Weekday::Tue,
            Weekday::Wed => chrono::Weekday::Wed,
            Weekday::Thu => chrono::Weekday::Thu,
            Weekday::Fri => chrono::Weekday::Fri,
            Weekday::Sat => chrono::Weekday::Sat,
            Weekday::Sun => chrono::Weekday::Sun,
        }
    }
}

/// `wait_for`: an event of this contact, or the timeout.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WaitFor {
    /// Event type to wait for, e.g. `email.opened`.
    pub event: String,
    /// CEL filter over `event` and `contact`: only a matching event ends the wait.
    #[serde(rename = "if", default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Expr>,
    /// How long to wait before taking `on_timeout`.
    pub timeout: Duration,
}

/// `{if: EXPR, next: STEP}` or `{else: STEP}`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BranchArm {
    /// CEL condition; the first arm whose condition holds is taken.
    #[serde(rename = "if", default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Expr>,
    /// Step the `if` arm leads to (`end` stops the run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Step of the `else` arm, taken when no condition holds.
    #[serde(rename = "else", default, skip_serializing_if = "Option::is_none")]
    pub otherwise: Option<String>,
}

/// One arm of a `split`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SplitArm {
    /// Relative weight, positive.
    pub weight: i64,
    /// Step this variant leads to.
    pub next: String,
    /// Variant name used in reports; defaults to the `next` step id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `assign_owner`: pick a sales owner for the contact from a team.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AssignOwner {
    /// A team from `[teams]` in `nurture.toml`.
    pub team: String,
    /// How the owner is picked (default `round-robin`).
    #[serde(default)]
    pub strategy: OwnerStrategy,
}

/// How `assign_owner` picks a team member.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OwnerStrategy {
    /// Each member in turn, in the order of `members`.
    #[default]
    RoundRobin,
}

/// `notify`: an internal alert email.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    /// `owner` (the contact's sales owner) or an email address.
    pub to: String,
    /// Name of a template in `templates/` for the alert.
    pub template: String,
}

/// `webhook`: an HTTP request to another system.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// Target URL; `${...}` interpolations are percent-encoded.
    pub url: String,
    /// HTTP method (default `POST`).
    #[serde(default = "post")]
    pub method: String,
    /// JSON body, with `${...}` interpolated (default: the contact, the workflow id and
    /// the step id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// Extra request headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Follow redirects (at most 5 hops, each checked like the URL itself); default
    /// false: a redirect answer fails the delivery.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub follow_redirects: bool,
}

fn post() -> String {
    "POST".into()
}

/// A CEL expression, compiled when the project is loaded.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Eq, Hash)]
#[serde(transparent)]
pub struct Expr(pub String);

/// A duration written as `30m`, `2h`, `7d`, `3w` (or combined, `1d12h`; `s` for seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub u64);

impl Duration {
    /// The length in seconds.
    pub fn seconds(self) -> u64 {
        self.0
    }
    /// The length as a chrono duration.
    pub fn to_chrono(self) -> chrono::Duration {
        chrono::Duration::seconds(self.0 as i64)
    }
}

/// A duration that is not numbers with units (`30m`, `1d12h`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{DURATION_ERR} `{0}`: write a number and a unit (m, h, d or w), e.g. 30m, 2h, 7d, 3w")]
pub struct DurationError(pub String);

impl FromStr for Duration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, DurationError> {
        let bad = || DurationError(s.to_string());
        let t = s.trim();
        if t.is_empty() {
            return Err(bad());
        }
        let mut total: u64 = 0;
        let mut num = String::new();
        for c in t.chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            let unit = match c {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                'w' => 604_800,
                _ => return Err(bad()),
            };
            let n: u64 = num.parse().map_err(|_| bad())?;
            total = n
                .checked_mul(unit)
                .and_then(|x| total.checked_add(x))
                .ok_or_else(bad)?;
            num.clear();
        }
        if !num.is_empty() || total == 0 {
            return Err(bad());
        }
        Ok(Duration(total))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        for (unit, secs) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
            if rest >= secs {
                write!(f, "{}{unit}", rest / secs)?;
                rest %= secs;
            }
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match v {
            Value::String(s) => s.parse().map_err(serde::de::Error::custom),
            other => Err(serde::de::Error::custom(format!(
                "{DURATION_ERR} `{other}`: write a number and a unit (m, h, d or w), e.g. 30m, 2h, 7d, 3w"
            ))),
        }
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "a number and a unit: 30m, 2h, 7d, 3w (combinations like 1d12h allowed)",
            "pattern": "^([0-9]+[smhdw])+$"
        })
    }
}

/// A local time of day, `HH:MM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimeOfDay(pub chrono::NaiveTime);

/// A time of day that is not `HH:MM`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{TIME_ERR} `{text}`: write a 24-hour local time as HH:MM, e.g. 09:00")]
pub struct TimeError {
    /// The text as written.
    pub text: String,
    /// Why chrono refused it.
    #[source]
    pub source: chrono::ParseError,
}

impl FromStr for TimeOfDay {
    type Err = TimeError;
    fn from_str(s: &str) -> Result<Self, TimeError> {
        chrono::NaiveTime::parse_from_str(s.trim(), "%H:%M")
            .map(TimeOfDay)
            .map_err(|source| TimeError {
                text: s.to_string(),
                source,
            })
    }
}

impl Serialize for TimeOfDay {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.format("%H:%M").to_string())
    }
}

impl<'de> Deserialize<'de> for TimeOfDay {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let s = match v {
            Value::String(s) => s,
            other => other.to_string(),
        };
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for TimeOfDay {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "TimeOfDay".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "24-hour local time, HH:MM",
            "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$"
        })
    }
}

/// `scoring.yaml`: lead-scoring rules and grades.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Scoring {
    /// Points rules, checked against each event and each contact change.
    #[serde(default)]
    pub rules: Vec<ScoreRule>,
    /// Grade name to minimum score; a contact's grade is the highest threshold reached,
    /// else `cold`.
    #[serde(default)]
    pub grades: BTreeMap<String, i64>,
}

/// Points for an event (each time) or for a profile condition (while it holds).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScoreRule {
    /// Event type whose every occurrence earns the points, e.g. `email.clicked`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// CEL filter over `event` and `contact`: the event only earns the points when it holds.
    #[serde(rename = "if", default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Expr>,
    /// CEL condition over the contact; its points count while it holds (given when it
    /// becomes true, taken back when it becomes false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<Expr>,
    /// Points given (negative to take away).
    pub points: i64,
    /// The points of each event lose half their value every `half_life` (event rules
    /// only), counted from the event's time: `points × 0.5^(age / half_life)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decay: Option<Decay>,
    /// The points of each event count for this long after the event, then nothing
    /// (event rules only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Duration>,
}

/// `decay: { half_life: 30d }` of a scoring rule.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Decay {
    /// After this long an event's points count half, after twice as long a quarter.
    pub half_life: Duration,
}

/// One entry of `segments.yaml`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    /// Unique id, referenced by segment triggers and schedule audiences.
    pub id: String,
    /// Human name, shown in reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// CEL condition over the contact: members are the contacts for which it holds.
    #[serde(rename = "if")]
    pub condition: Expr,
}

/// `nurture.toml`: project settings, all optional.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Store URL: `sqlite://nurture.db` (default, relative to the project) or `postgres://...`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    /// Default time zone for workflows that do not set one (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Folders searched for plugins, relative to the project (default `plugins`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugin_dirs: Vec<String>,
    /// Default sender of marketing email (`[sender]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<Sender>,
    /// The SMTP server that sends the email (`[smtp]`); without it, the file transport.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<Smtp>,
    /// The HTTP API (`[api]`): listen address, key, limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<Api>,
    /// Sales teams for `assign_owner`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub teams: BTreeMap<String, Team>,
    /// The email channel: links, tracking, rate limit, frequency cap, DKIM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailSettings>,
    /// Operator settings per plugin: `[plugins.sms]`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub plugins: BTreeMap<String, PluginSettings>,
    /// Outgoing HTTP of webhooks and plugins: allowed private destinations, limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<EgressSettings>,
    /// Tracking and unsubscribe links: expiry of open and click links, limits per client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking: Option<TrackingSettings>,
    /// Limits of the channels plugins declare (`channel = "sms"`): `[channels.sms]`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub channels: BTreeMap<String, ChannelSettings>,
    /// Hosted forms, served at `POST /f/NAME`: `[forms.newsletter]`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub forms: BTreeMap<String, FormSettings>,
    /// How long the journal of an ended run is kept line for line (`[retention]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionSettings>,
}

/// `[retention]` in nurture.toml: what `nurture store compact` keeps.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RetentionSettings {
    /// How long after its end a run keeps its whole journal (every step, decision and
    /// effect), e.g. `90d`; after that, `nurture store compact` replaces it by one
    /// summary line (status, times, steps, effects counted by kind). Unset: runs are
    /// never compacted. Open runs are never compacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal: Option<Duration>,
    /// How long a contact's own journal lines (no run: scoring rules, segment changes,
    /// imports) are kept line for line, e.g. `365d`; after that, `nurture store compact`
    /// sums them up in one summary line per contact (lines counted by kind and effect),
    /// so `contacts show` no longer lists them one by one. Consent lines, the proof of
    /// consent, are always kept. Unset: never summed up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_lines: Option<Duration>,
}

/// `[forms.NAME]` in nurture.toml: a form browsers post to `/f/NAME` (see
/// docs/operators.md, "Hosted forms").
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FormSettings {
    /// Fields kept besides `email` (always required); each becomes a contact field and
    /// a key of the `form.submitted` event's `data`. Other fields are ignored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// Where a browser's post is sent after it is accepted (303): an `https://` URL or
    /// a path (`/thanks`). Without it, a short thank-you page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<String>,
    /// Ask the address to confirm before the contact's consent is `opted_in`: the
    /// confirmation email (`confirm_template`) carries a signed link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub double_opt_in: Option<bool>,
    /// The template of the confirmation email (`templates/NAME.html`); it links
    /// `{{ confirm_url }}`. Required with `double_opt_in`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm_template: Option<String>,
    /// How long a confirmation link works (default 7d).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm_ttl: Option<Duration>,
    /// The hidden field robots fill and people do not (default `website`): a post with
    /// it filled is answered as accepted and nothing is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub honeypot: Option<String>,
    /// Origins allowed to post (`https://www.acme.test`); when set, a post whose
    /// `Origin` is another (or absent) is refused (403). Default: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<String>,
}

/// `[channels.NAME]` in nurture.toml: the limits of a plugin channel (see
/// `nurture_store::limits`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChannelSettings {
    /// At most `max` messages of this channel per contact per `per` (default: the
    /// `[email]` cap's numbers, counted for this channel apart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap: Option<FrequencyCap>,
    /// Messages per second on this channel, across all workers (default unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_sec: Option<f64>,
}

/// A channel name as a plugin manifest may declare it: 1 to 32 of `a-z`, `0-9`, `_`,
/// starting with a letter; not `email` (the built-in channel).
pub fn valid_channel(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
        && name != "email"
}

/// `[egress]` in nurture.toml (see `nurture_channels::egress`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EgressSettings {
    /// Host names, addresses and CIDR ranges webhooks and plugins may reach although
    /// they are loopback, private, link-local...: `["127.0.0.1", "10.0.0.0/8",
    /// "hooks.internal.test"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "Vec<String>")]
    pub allow: Vec<net::Allow>,
    /// Total time of one webhook attempt: connect, headers and body (default 10s, at
    /// most 15s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Webhook requests in flight at once per host and port (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_host: Option<u32>,
    /// Consecutive failures (errors, timeouts, 429, 5xx) after which a host's webhooks
    /// fail fast for `breaker_cooldown` (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker_failures: Option<u32>,
    /// How long a host's open circuit fails fast before one probe is let through
    /// (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker_cooldown: Option<Duration>,
}

/// `[tracking]` in nurture.toml.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrackingSettings {
    /// Days an open pixel or click link keeps working after the send (default 365).
    /// Unsubscribe links never expire (RFC 8058).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_ttl_days: Option<u32>,
    /// Opens and clicks recorded per client address (IPv6: per /64) per minute (default
    /// 120). Beyond it a hit is still answered (pixel, redirect) but not recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hits_per_minute: Option<u32>,
    /// Take the client address from the last `X-Forwarded-For` entry (behind a reverse
    /// proxy that sets it; default false: the connection's peer address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarded_for: Option<bool>,
    /// Web sites whose pages may record visits with the tracking script
    /// (`/t/nurture.js`): their origins, e.g. `https://www.example.com` (scheme, host and
    /// port if not the default). Empty or absent: website tracking is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_origins: Option<Vec<String>>,
}

/// `[email]` in nurture.toml.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmailSettings {
    /// Public base URL of the HTTP API, for tracking and unsubscribe links (default:
    /// `http://` + the API's listen address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Open pixel and click redirects (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking: Option<bool>,
    /// Marketing emails per second, across all workers (default unlimited); each process
    /// also spaces its sends per sender address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_sec: Option<f64>,
    /// Frequency cap: at most `max` marketing emails per contact per `per` (deferred,
    /// never dropped, beyond it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap: Option<FrequencyCap>,
    /// Folder (relative to the project) for the file transport (default `outbox`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox_dir: Option<String>,
    /// DKIM signing of outgoing email (`[email.dkim]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dkim: Option<Dkim>,
    /// Bounce and complaint webhooks of email providers (`[email.webhooks]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<EmailWebhooks>,
}

/// `[email.webhooks]` in nurture.toml: what the providers' bounce and complaint
/// webhooks must prove (see the server's `providers` module).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmailWebhooks {
    /// The SNS topics (`TopicArn`) whose signed messages are taken at
    /// `/v1/bounces/ses`; any other topic is refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sns_topics: Vec<String>,
    /// Folder (relative to the project) of SNS signing certificates, each named as the
    /// last part of its `SigningCertURL` (`SimpleNotificationService-....pem`): used
    /// instead of fetching it (offline servers, tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sns_certs: Option<String>,
    /// Name of the environment variable holding Mailgun's HTTP webhook signing key
    /// (never the key); without it `/v1/bounces/mailgun` refuses everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mailgun_signing_key_env: Option<String>,
}

/// A frequency cap: at most `max` messages per contact in any window of `per`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FrequencyCap {
    /// Messages allowed per window.
    pub max: u32,
    /// Length of the sliding window.
    pub per: Duration,
}

/// DKIM signing key and where its public half is published.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Dkim {
    /// DNS selector: the public key is at `SELECTOR._domainkey.DOMAIN`.
    pub selector: String,
    /// Signing domain (`d=`), normally the sender's domain.
    pub domain: String,
    /// Private key file (relative to the project): RSA PKCS#1 PEM, or an Ed25519 key as
    /// base64 with `algorithm = "ed25519"`.
    pub key_file: String,
    /// `rsa` (default) or `ed25519`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
}

/// Operator settings of one plugin. Secret values never live in files: each secret is
/// read from an environment variable, `NURTURE_SECRET_<PLUGIN>_<NAME>` unless
/// `secrets_env` names another.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PluginSettings {
    /// Secret name -> environment variable holding its value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets_env: BTreeMap<String, String>,
    /// Allowed host -> base URL to send its requests to instead (staging, local fakes).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub routes: BTreeMap<String, String>,
}

/// `[sender]` in nurture.toml: the default From and Reply-To of marketing email.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Sender {
    /// From address, e.g. `"Acme <news@acme.test>"`.
    pub from: String,
    /// Reply-To address, when replies should go elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
}

/// `[smtp]` in nurture.toml: the SMTP relay that sends email.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Smtp {
    /// Host name of the relay.
    pub host: String,
    /// Port (default by `tls`: 587 for `starttls`, 465 for `tls`, 25 for `none`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// User name for SMTP authentication, if the relay wants one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Name of the environment variable holding the password (never the password).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_env: Option<String>,
    /// `starttls` (default), `tls` or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<String>,
}

/// `[api]` in nurture.toml: the HTTP API server.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Api {
    /// Address to listen on (default `127.0.0.1:8025`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Name of the environment variable holding the API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_env: Option<String>,
    /// Time a client has to send a request's headers (default 10s); a connection that
    /// has not finished them by then is closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_timeout: Option<Duration>,
    /// Time a client has to send a request's whole body (default 30s): answered 408 after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_timeout: Option<Duration>,
    /// Open connections at most (default 1024); more wait to be accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// Largest request body in bytes (default 8 MiB): answered 413 beyond it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<usize>,
    /// Largest `data` of one event in bytes of JSON (default 64 KiB): the event is
    /// rejected beyond it (413 for a request of that one event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_event_data_bytes: Option<usize>,
    /// How far in the past an event's `at` may be (default 365d).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_max_age: Option<Duration>,
    /// How far in the future an event's `at` may be (default 1d).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_max_ahead: Option<Duration>,
    /// Hosted form posts (`/f/NAME`) taken per client address per minute (default 10;
    /// the address as `[tracking] forwarded_for` says): 429 beyond it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub form_posts_per_minute: Option<u32>,
}

/// The lifecycle stages a contact's `lifecycle` may take, in order.
pub const LIFECYCLE_STAGES: &[&str] = &[
    "subscriber",
    "lead",
    "mql",
    "sal",
    "sql",
    "opportunity",
    "customer",
    "evangelist",
];

/// A sales team of `[teams]` in nurture.toml.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Team {
    /// Sales reps' email addresses, in round-robin order.
    pub members: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print() {
        assert_eq!("30m".parse::<Duration>().unwrap().seconds(), 1800);
        assert_eq!("7d".parse::<Duration>().unwrap().seconds(), 7 * 86_400);
        assert_eq!("3w".parse::<Duration>().unwrap().to_string(), "21d");
        assert_eq!("1d12h".parse::<Duration>().unwrap().to_string(), "1d12h");
        for bad in ["", "7", "d", "7x", "0d", "-1d", "7 d"] {
            assert!(
                bad.parse::<Duration>().is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn reentry_forms() {
        let r: Reentry = serde_json::from_value(Value::from("after 30d")).unwrap();
        assert_eq!(r, Reentry::After(Duration(30 * 86_400)));
        assert!(serde_json::from_value::<Reentry>(Value::from("sometimes")).is_err());
    }

    #[test]
    fn time_of_day_rejects_out_of_range() {
        assert!("09:00".parse::<TimeOfDay>().is_ok());
        assert!("25:00".parse::<TimeOfDay>().is_err());
    }
}
