//! One contact's whole story (`nurture contacts show`, `GET /v1/contacts/{id}`): the
//! profile, its score with the history and reason of every change, the segments it is in
//! and since when, its lifecycle and consent histories, its recent events and its runs;
//! and a timeline that merges all of it in time order.
//!
//! Read from the store: the contact, its runs, the journals of its latest runs
//! ([`RUNS_READ`]), its own journal lines (scoring rules, segment changes, imports; the
//! newest [`LINES_READ`]) and its events of the last [`EVENTS_DAYS`] days (the newest
//! [`EVENTS_READ`]). Bounded: a contact with a long past shows its recent part.

use serde::Serialize;
use serde_json::Value;

use nurture_store::{Contact, JournalEntry, Run, Store, StoreError, StoredEvent, Ts};

/// The latest runs whose journals are read.
pub const RUNS_READ: usize = 50;
/// The newest contact-level journal lines read.
pub const LINES_READ: i64 = 1000;
/// Events of this many days back are read...
pub const EVENTS_DAYS: i64 = 90;
/// ...the newest this many of them.
pub const EVENTS_READ: usize = 100;

/// A change of the score, with its reason.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ScoreChange {
    /// When.
    pub at: Ts,
    /// Points added (negative: taken).
    pub delta: i64,
    /// The score after it.
    pub score: i64,
    /// Why: the event type of a scoring rule, ``profile rule `CONDITION` `` for a profile rule,
    /// `workflow/step` for a workflow's `score` action.
    pub reason: String,
    /// The workflow and step of a `score` action.
    pub workflow: Option<String>,
    /// The step of a `score` action.
    pub step: Option<String>,
}

/// A change of one attribute (lifecycle, consent), with its cause.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Change {
    /// When.
    pub at: Ts,
    /// The value before, when known.
    pub from: Option<Value>,
    /// The value after.
    pub to: Value,
    /// What changed it: `workflow W step S`, `import`...
    pub cause: String,
}

/// A segment the contact is in, and since when (when the journal says).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Membership {
    /// The segment.
    pub segment: String,
    /// When it last entered, if journaled.
    pub since: Option<Ts>,
}

/// One line of the timeline.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Moment {
    /// When.
    pub at: Ts,
    /// `event`, `run`, `score`, `segment`, `lifecycle`, `consent`, `import`, `email`...
    pub what: String,
    /// In words.
    pub text: String,
    /// The run it belongs to, if any.
    pub run: Option<String>,
}

/// A contact's story.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ContactStory {
    /// The contact as stored.
    pub contact: Contact,
    /// Every change of its score in the lines read, oldest first.
    pub score_history: Vec<ScoreChange>,
    /// Its lifecycle changes, oldest first.
    pub lifecycle_history: Vec<Change>,
    /// Its consent changes, oldest first.
    pub consent_history: Vec<Change>,
    /// The segments it is in now.
    pub segments: Vec<Membership>,
    /// Its recent events, oldest first.
    pub recent_events: Vec<StoredEvent>,
    /// All its runs, oldest first.
    pub runs: Vec<Run>,
    /// Everything above in time order.
    pub timeline: Vec<Moment>,
}

/// The contact `given`: the one with that id, else (when it holds `@`) the one with that
/// address, in any case. An id is tried first: ids may hold `@`, and another contact's
/// address must not hide the contact whose id it is.
pub async fn find_contact(store: &dyn Store, given: &str) -> Result<Option<Contact>, StoreError> {
    if let Some(c) = store.contact(given).await? {
        return Ok(Some(c));
    }
    if !given.contains('@') {
        return Ok(None);
    }
    store.contact_by_email(&given.to_lowercase()).await
}

/// The story of the contact `given` ([`find_contact`]); `None` when there is no such
/// contact.
pub async fn contact_story(
    store: &dyn Store,
    given: &str,
    now: Ts,
) -> Result<Option<ContactStory>, StoreError> {
    let Some(contact) = find_contact(store, given).await? else {
        return Ok(None);
    };
    story_of(store, contact, now).await.map(Some)
}

/// The story of `contact`.
pub async fn story_of(
    store: &dyn Store,
    contact: Contact,
    now: Ts,
) -> Result<ContactStory, StoreError> {
    let runs = store.runs_of_contact(&contact.id).await?;
    let mut lines = store.contact_lines(&contact.id, LINES_READ).await?;
    for r in runs.iter().rev().take(RUNS_READ) {
        lines.extend(store.journal(&r.id).await?);
    }
    // Stable: a run's lines keep their order within an instant.
    lines.sort_by_key(|j| j.at);
    let since = now - chrono::Duration::days(EVENTS_DAYS);
    let mut events = store.contact_events(&contact.id, since).await?;
    let skip = events.len().saturating_sub(EVENTS_READ);
    events.drain(..skip);
    Ok(build(contact, runs, &lines, events))
}

/// The story of `contact` from what was read: its runs, the journal lines in time order,
/// its events. (`privacy::export` passes everything, not the bounded part.)
pub(crate) fn build(
    contact: Contact,
    runs: Vec<Run>,
    lines: &[JournalEntry],
    events: Vec<StoredEvent>,
) -> ContactStory {
    let workflow_of = |j: &JournalEntry| {
        j.run_id
            .as_ref()
            .and_then(|id| runs.iter().find(|r| &r.id == id))
            .map(|r| r.workflow.clone())
    };
    let mut s = ContactStory {
        contact,
        score_history: Vec::new(),
        lifecycle_history: Vec::new(),
        consent_history: Vec::new(),
        segments: Vec::new(),
        recent_events: Vec::new(),
        runs: Vec::new(),
        timeline: Vec::new(),
    };
    let mut lifecycle: Option<Value> = None;
    for j in lines {
        let wf = workflow_of(j);
        let step = j.data["step"].as_str().map(str::to_string);
        let by = match (&wf, &step, j.data["cause"]["form"].as_str()) {
            (Some(w), Some(st), _) => format!("workflow {w} step {st}"),
            (Some(w), None, _) => format!("workflow {w}"),
            // A hosted form's double opt-in: the proof of consent.
            (None, _, Some(form)) => format!(
                "form {form} confirmed from {}",
                j.data["cause"]["ip"]
                    .as_str()
                    .unwrap_or("an unknown address")
            ),
            _ => "the contact".to_string(),
        };
        if let Some(m) = moment(j, &by) {
            s.timeline.push(m);
        }
        match (j.kind.as_str(), j.data["effect"].as_str()) {
            ("effect", Some("score")) => s.score_history.push(ScoreChange {
                at: j.at,
                delta: j.data["delta"].as_i64().unwrap_or_default(),
                // An aged score is fractional in the journal; the story shows the
                // nearest whole point.
                score: j.data["score"]
                    .as_i64()
                    .or_else(|| j.data["score"].as_f64().map(|f| f.round() as i64))
                    .unwrap_or_default(),
                reason: score_reason(&j.data),
                workflow: wf.clone(),
                step: step.clone(),
            }),
            ("effect", Some("set")) => {
                if let Some(to) = j.data["fields"].get("lifecycle") {
                    s.lifecycle_history.push(Change {
                        at: j.at,
                        from: lifecycle.replace(to.clone()),
                        to: to.clone(),
                        cause: by.clone(),
                    });
                }
            }
            ("contact_updated", _) => {
                let changes = &j.data["changes"];
                if let Some(c) = changes.get("lifecycle") {
                    lifecycle = Some(c["to"].clone());
                    s.lifecycle_history.push(change(j.at, c, "import"));
                }
                if let Some(c) = changes.get("consent") {
                    s.consent_history.push(change(j.at, c, "import"));
                }
            }
            ("consent", _) => s.consent_history.push(Change {
                at: j.at,
                from: j.data.get("from").cloned(),
                to: j.data["to"].clone(),
                cause: by.clone(),
            }),
            _ => {}
        }
    }
    s.segments = s
        .contact
        .segments
        .iter()
        .map(|seg| Membership {
            segment: seg.clone(),
            since: lines
                .iter()
                .rev()
                .find(|j| {
                    j.kind == "segment" && j.data["segment"] == *seg && j.data["entered"] == true
                })
                .map(|j| j.at),
        })
        .collect();
    for e in &events {
        s.timeline.push(Moment {
            at: e.at,
            what: "event".into(),
            text: format!("{} {}", e.kind, e.data),
            run: None,
        });
    }
    s.timeline.sort_by_key(|m| m.at);
    s.recent_events = events;
    s.runs = runs;
    s
}

fn change(at: Ts, c: &Value, cause: &str) -> Change {
    Change {
        at,
        from: c.get("from").cloned(),
        to: c["to"].clone(),
        cause: cause.into(),
    }
}

/// A score change's reason as journaled: the event type of a scoring rule, `profile` (with
/// the rule's index, and whether its points were taken back), or `workflow/step`.
fn score_reason(d: &Value) -> String {
    let reason = d["reason"].as_str().unwrap_or("-").to_string();
    let rule = d
        .get("rule")
        .map(|r| r.as_str().map_or(r.to_string(), str::to_string));
    match (rule, d["taken_back"] == true) {
        (Some(rule), true) => format!("{reason} rule `{rule}` (taken back)"),
        (Some(rule), false) => format!("{reason} rule `{rule}`"),
        (None, _) => reason,
    }
}

/// A journal line in the timeline (the ones a person cares about), in words.
fn moment(j: &JournalEntry, by: &str) -> Option<Moment> {
    let d = &j.data;
    let s = |k: &str| d[k].as_str().unwrap_or("-").to_string();
    let (what, text) = match (j.kind.as_str(), d["effect"].as_str()) {
        ("effect", Some("enter")) => ("run", format!("entered {by}")),
        ("effect", Some("exit")) => ("run", format!("left {by}: {}", s("reason"))),
        ("effect", Some("score")) => (
            "score",
            format!(
                "score {} = {} ({})",
                signed(&d["delta"]),
                d["score"],
                score_reason(d)
            ),
        ),
        ("effect", Some("set")) => ("set", format!("set {} by {by}", d["fields"])),
        ("effect", Some("tag")) | ("effect", Some("untag")) => {
            ("tags", format!("{} {} by {by}", s("effect"), d["tags"]))
        }
        ("effect", Some("assign_owner")) => ("owner", format!("owner {} by {by}", s("owner"))),
        ("effect", Some(e @ ("email" | "email_skipped" | "notify" | "webhook" | "plugin"))) => {
            (e, format!("{e} {} by {by}", s("template")))
        }
        ("segment", _) => (
            "segment",
            format!(
                "{} segment {}",
                if d["entered"] == true {
                    "entered"
                } else {
                    "left"
                },
                s("segment")
            ),
        ),
        ("consent", _) => (
            "consent",
            format!("consent {} -> {} by {by}", d["from"], d["to"]),
        ),
        ("contact_updated", _) => ("import", format!("import changed {}", d["changes"])),
        ("merged", _) => (
            "merged",
            format!(
                "merged the anonymous visitor {} ({} events, by {})",
                s("from"),
                d["moved"],
                s("source")
            ),
        ),
        _ => return None,
    };
    Some(Moment {
        at: j.at,
        what: what.into(),
        text: crate::explain::printable(&text),
        run: j.run_id.clone(),
    })
}

fn signed(v: &Value) -> String {
    match v.as_i64() {
        Some(n) => format!("{n:+}"),
        None => v.to_string(),
    }
}
