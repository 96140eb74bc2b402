//! `nurture runs explain`: a run's journal told as the story a marketer reads, one line
//! per decision: why the contact entered, each branch with the values it read, how each
//! wait ended (and which events came meanwhile but did not count, and why), each send
//! and what held it back, and how the run ended.
//!
//! A pure function of what the store holds: the run, its journal, the contact's events
//! since the run started, the outbox entries its sends queued and the workflow file of its
//! version as deployed (for the trigger filter, the quiet hours, the goal and `exit_if`).

use serde::Serialize;
use serde_json::Value;

use nurture_core::model::{Trigger, Workflow};
use nurture_store::{JournalEntry, OutboxRow, Run, Store, StoredEvent, Ts};

use crate::EngineError;

/// A run's story.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Explanation {
    /// The run's id.
    pub run: String,
    /// Its workflow and version.
    pub workflow: String,
    /// The version it ran on.
    pub version: u32,
    /// Its contact.
    pub contact: String,
    /// Its status (and exit reason).
    pub status: String,
    /// One line per decision, in time order.
    pub lines: Vec<Line>,
}

/// One decision of a run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Line {
    /// When it was decided (the engine's clock).
    pub at: Ts,
    /// The step it is about, if any.
    pub step: Option<String>,
    /// What kind of decision: `entered`, `branch`, `split`, `wait`, `resumed`,
    /// `timed_out`, `ignored`, `sent`, `held`, `skipped`, `action`, `ended`, `error`,
    /// `compacted` (the journal was replaced by its summary: the decisions are gone).
    pub kind: &'static str,
    /// The decision in words.
    pub text: String,
}

/// What [`explain`] reads.
pub struct Inputs<'a> {
    /// The run.
    pub run: &'a Run,
    /// Its journal, oldest first.
    pub journal: &'a [JournalEntry],
    /// The contact's events since the run started, oldest first.
    pub events: &'a [StoredEvent],
    /// The outbox entries of the run's sends.
    pub outbox: &'a [OutboxRow],
    /// The workflow of the run's version, when it is stored and parses.
    pub workflow: Option<&'a Workflow>,
}

/// Tells the story of `inp.run`.
pub fn explain(inp: &Inputs<'_>) -> Explanation {
    let mut story = Story {
        inp,
        lines: Vec::new(),
        waiting: None,
    };
    for (n, j) in inp.journal.iter().enumerate() {
        story.entry(n, j);
    }
    let run = inp.run;
    Explanation {
        run: run.id.clone(),
        workflow: run.workflow.clone(),
        version: run.workflow_version,
        contact: run.contact.clone(),
        status: match &run.exit_reason {
            Some(r) => format!("{} ({r})", run.status.as_str()),
            None => run.status.as_str().to_string(),
        },
        lines: story.lines,
    }
}

/// A `wait_for` in progress: since when, for which event type.
struct Waiting {
    since: Ts,
    event: String,
    step: String,
}

struct Story<'a, 'i> {
    inp: &'i Inputs<'a>,
    lines: Vec<Line>,
    waiting: Option<Waiting>,
}

fn s<'v>(d: &'v Value, k: &str) -> &'v str {
    d.get(k).and_then(Value::as_str).unwrap_or("")
}

fn when(t: Ts) -> String {
    nurture_store::ts_out(t)
}

/// The words of a compacted run's summary line.
fn compacted(d: &Value) -> String {
    let effects = d["effects"].as_object().map_or(String::new(), |m| {
        let each: Vec<String> = m.iter().map(|(k, n)| format!("{k} {n}")).collect();
        each.join(", ")
    });
    format!(
        "COMPACTED (`nurture store compact`): this run's journal was replaced by its \
         summary, so its decisions are no longer stored. Started {}, ended {} ({}); {} \
         journal lines, {} steps; effects: {}",
        s(d, "started_at"),
        s(d, "ended_at"),
        s(d, "status"),
        d["lines"],
        d["steps"],
        if effects.is_empty() {
            "none".into()
        } else {
            effects
        }
    )
}

impl Story<'_, '_> {
    fn push(&mut self, j: &JournalEntry, step: Option<&str>, kind: &'static str, text: String) {
        let step = step.filter(|s| !s.is_empty()).map(String::from);
        self.lines.push(Line {
            at: j.at,
            step,
            kind,
            text,
        });
    }

    fn entry(&mut self, n: usize, j: &JournalEntry) {
        let d = &j.data;
        match j.kind.as_str() {
            "effect" => self.effect(j),
            "condition" => self.condition(n, j),
            "branch_else" => {
                let to = self.next_step(n);
                let text = format!("no condition held: took `else` to {to}");
                self.push(j, Some(s(d, "step")), "branch", text);
            }
            "split" => {
                let text = format!(
                    "A/B split: variant `{}` (the contact's bucket {} of {})",
                    s(d, "variant"),
                    d["bucket"],
                    d["total"]
                );
                self.push(j, Some(s(d, "step")), "split", text);
            }
            "resume" => self.resumed(j),
            "timeout" => self.timed_out(j),
            "wake" => self.push(j, Some(s(d, "step")), "wait", "the wait ended".into()),
            "wait_skipped" => {
                let text = format!("wait skipped: its time ({}) had passed", s(d, "until"));
                self.push(j, Some(s(d, "step")), "wait", text);
            }
            "quiet_hours_over" => {
                let text = "quiet hours over: the held step runs now".to_string();
                self.push(j, Some(s(d, "step")), "held", text);
            }
            "event_held" => {
                let text = format!(
                    "{} came while the workflow was paused: kept, followed on resume",
                    s(&d["event"], "type")
                );
                self.push(j, Some(s(d, "step")), "resumed", text);
            }
            "error" => {
                let text = format!("failed: {}", s(d, "message"));
                self.push(j, Some(s(d, "step")), "error", text);
            }
            "undone" => {
                let text = format!("the step's changes were taken back: {}", d["effects"]);
                self.push(j, Some(s(d, "step")), "error", text);
            }
            "cancelled" => {
                let text = format!("cancelled by {}: {}", s(d, "by"), s(d, "reason"));
                self.push(j, None, "ended", text);
            }
            "interrupted" => {
                let text = format!("interrupted at {}: {}", s(d, "step"), s(d, "reason"));
                self.push(j, Some(s(d, "step")), "ended", text);
            }
            "outcome" => {
                let text = format!("the awaited delivery ended: {}", d["outcome"]);
                self.push(j, Some(s(d, "step")), "resumed", text);
            }
            "summary" => self.push(j, None, "compacted", compacted(d)),
            _ => {}
        }
    }

    /// The step the run went to after journal line `n` (the next `step` line).
    fn next_step(&self, n: usize) -> String {
        self.inp.journal[n + 1..]
            .iter()
            .find(|j| j.kind.as_str() == "step")
            .map(|j| format!("`{}`", s(&j.data, "step")))
            .unwrap_or_else(|| "the end".into())
    }

    fn condition(&mut self, n: usize, j: &JournalEntry) {
        let d = &j.data;
        let place = s(d, "where");
        let held = d["result"] == Value::Bool(true);
        let read = reads(&d["reads"]);
        let err = d
            .get("error")
            .and_then(Value::as_str)
            .map(|e| format!(" (error, counted as false: {e})"))
            .unwrap_or_default();
        let Some((step, _)) = place.split_once('[') else {
            // `exit_if`, `goal` and `wait_for` conditions are told with what they decide.
            if place == "wait_for" && !held {
                let (event, step) = match &self.waiting {
                    Some(w) => (w.event.clone(), Some(w.step.clone())),
                    None => ("an event".to_string(), None),
                };
                let text = format!(
                    "{event} did not count: the filter `{}` was false{read}{err}",
                    s(d, "expr")
                );
                self.push(j, step.as_deref(), "ignored", text);
            }
            return;
        };
        let text = if held {
            format!("`{}` held{read}: took {}", s(d, "expr"), self.next_step(n))
        } else {
            format!("`{}` was false{read}{err}", s(d, "expr"))
        };
        self.push(j, Some(step), "branch", text);
    }

    fn effect(&mut self, j: &JournalEntry) {
        let d = &j.data;
        let step = d.get("step").and_then(Value::as_str);
        match s(d, "effect") {
            "enter" => self.entered(j),
            "exit" => self.ended(j),
            "wait" => self.wait(j),
            "email" => {
                let text = format!("email `{}`{}", s(d, "template"), self.outbox_note(d));
                self.push(j, step, "sent", text);
            }
            "email_skipped" => {
                let text = format!(
                    "email `{}` not sent: {}",
                    s(d, "template"),
                    skip_reason(s(d, "reason"))
                );
                self.push(j, step, "skipped", text);
            }
            "deferred" => {
                let text = format!(
                    "{} held back by the {} ({}) until {}",
                    s(d, "kind"),
                    s(d, "rule").replace('_', " "),
                    held_params(&d["params"]),
                    s(d, "until")
                );
                self.push(j, step, "deferred", text);
            }
            "score" => {
                let text = format!(
                    "score {:+} to {} ({})",
                    d["delta"].as_i64().unwrap_or(0),
                    d["score"],
                    s(d, "reason")
                );
                self.push(j, step, "action", text);
            }
            "migrated" => {
                let from_step = d.get("from_step").and_then(Value::as_str).unwrap_or("-");
                let text = format!(
                    "moved from version {} (at `{from_step}`) to version {} by `on_new_version: migrate`",
                    d["from"], d["to"]
                );
                self.push(j, step, "action", text);
            }
            other => {
                let text = format!("{}{}", action_text(other, d), self.outbox_note(d));
                self.push(j, step, "action", text);
            }
        }
    }

    /// The delivery state of an effect's outbox entry, e.g. ` [deferred: frequency cap]`.
    fn outbox_note(&self, d: &Value) -> String {
        let Some(key) = d.get("key").and_then(Value::as_str) else {
            return String::new();
        };
        match self.inp.outbox.iter().find(|o| o.key == key) {
            Some(o) => match &o.reason {
                Some(r) => format!(" [{}: {r}]", o.state.as_str()),
                None => format!(" [{}]", o.state.as_str()),
            },
            None => String::new(),
        }
    }

    fn entered(&mut self, j: &JournalEntry) {
        let run = self.inp.run;
        let trigger = &j.data["trigger"];
        let mut text = match (
            trigger.get("event").and_then(Value::as_str),
            &run.trigger_event,
        ) {
            (Some(kind), Some(ev)) => format!(
                "entered on {kind} (event data {})",
                ev.get("data").unwrap_or(&Value::Null)
            ),
            (Some(kind), None) => format!("entered on {kind}"),
            _ => format!("entered: {trigger}"),
        };
        if let Some(filter) = self.trigger_filter(trigger) {
            text.push_str(&format!("; trigger filter `{filter}` held"));
        }
        self.push(j, None, "entered", text);
    }

    /// The `if` of the event trigger that enrolled the run, from its plan.
    fn trigger_filter(&self, trigger: &Value) -> Option<String> {
        let kind = trigger.get("event")?.as_str()?;
        let plan = self.inp.workflow?;
        plan.trigger.as_slice().iter().find_map(|t| match t {
            Trigger::Event(et) if et.event == kind => et.condition.as_ref().map(|c| c.0.clone()),
            _ => None,
        })
    }

    fn wait(&mut self, j: &JournalEntry) {
        let d = &j.data;
        let step = d.get("step").and_then(Value::as_str);
        let until = s(d, "until");
        if s(d, "reason") == "quiet_hours" {
            let text = format!(
                "send held by quiet hours until {until}{}",
                self.quiet_rule(d)
            );
            return self.push(j, step, "held", text);
        }
        if let Some(event) = d.get("for").and_then(Value::as_str) {
            self.waiting = Some(Waiting {
                since: j.at,
                event: event.to_string(),
                step: step.unwrap_or_default().to_string(),
            });
            let what = if event == "outcome" {
                "the delivery's outcome"
            } else {
                event
            };
            let text = format!("waiting for {what} until {until}");
            return self.push(j, step, "wait", text);
        }
        self.push(j, step, "wait", format!("waiting until {until}"));
    }

    /// ` (21:00-08:00 Europe/Sofia)`: the hours from the plan, when known, and the
    /// timezone the engine used (the contact's, else the workflow's).
    fn quiet_rule(&self, d: &Value) -> String {
        let Some(q) = self.inp.workflow.and_then(|w| w.quiet_hours.as_ref()) else {
            return String::new();
        };
        let tz = d.get("timezone").and_then(Value::as_str);
        let local = tz
            .and_then(|t| t.parse::<chrono_tz::Tz>().ok())
            .zip(nurture_store::parse_ts(s(d, "until")).ok())
            .map(|(tz, until)| {
                format!(
                    ", that is {} local time",
                    until.with_timezone(&tz).format("%a %H:%M")
                )
            })
            .unwrap_or_default();
        let tz = tz.map(|t| format!(" {t}")).unwrap_or_default();
        format!(
            " ({}-{}{tz}{local})",
            q.from.0.format("%H:%M"),
            q.to.0.format("%H:%M")
        )
    }

    fn resumed(&mut self, j: &JournalEntry) {
        let d = &j.data;
        let ev = &d["event"];
        let id = ev.get("id").and_then(Value::as_str);
        self.ignored_during(j, id);
        let came = self
            .inp
            .events
            .iter()
            .find(|e| Some(e.id.as_str()) == id)
            .map(|e| format!(" (happened {})", when(e.at)))
            .unwrap_or_default();
        let held = if d["held"] == Value::Bool(true) {
            ", held by a pause until now"
        } else {
            ""
        };
        let text = format!("{} came{came}{held}: the wait is over", s(ev, "type"));
        self.push(j, Some(s(d, "step")), "resumed", text);
    }

    fn timed_out(&mut self, j: &JournalEntry) {
        let d = &j.data;
        self.ignored_during(j, None);
        let text = format!("no {} that counted came in time: timed out", s(d, "event"));
        self.push(j, Some(s(d, "step")), "timed_out", text);
    }

    /// The events of the awaited type that came during the wait that ends at `j` and did
    /// not end it, with why: flagged as a bot's (a filter that was false is told by its
    /// condition line).
    fn ignored_during(&mut self, j: &JournalEntry, resumed_by: Option<&str>) {
        let Some(w) = self.waiting.take() else { return };
        let bots: Vec<String> = self
            .inp
            .events
            .iter()
            .filter(|e| e.kind == w.event && e.at >= w.since && e.at <= j.at)
            .filter(|e| Some(e.id.as_str()) != resumed_by)
            .filter(|e| e.data.get("bot") == Some(&Value::Bool(true)))
            .map(|e| {
                let why = e
                    .data
                    .get("bot_reason")
                    .and_then(Value::as_str)
                    .unwrap_or("automated");
                format!(
                    "{} at {} did not count: flagged as a bot ({why})",
                    e.kind,
                    when(e.at)
                )
            })
            .collect();
        for text in bots {
            self.push(j, None, "ignored", text);
        }
    }

    fn ended(&mut self, j: &JournalEntry) {
        let d = &j.data;
        let text = match s(d, "reason") {
            "goal" => self.goal_text(),
            "exit_if" => match self.inp.workflow.and_then(|w| w.exit_if.as_ref()) {
                Some(c) => format!("exited: `exit_if` `{}` came to hold", c.0),
                None => "exited: its `exit_if` came to hold".into(),
            },
            "completed" | "end" => "completed: reached the end".into(),
            "error" => format!("failed: {}", s(d, "message")),
            "superseded" => {
                "exited: a new version replaced this one (`on_new_version: exit`)".into()
            }
            "cancelled" => "ended: cancelled by hand".into(),
            other => format!("ended: {other}"),
        };
        self.push(j, None, "ended", text);
    }

    fn goal_text(&self) -> String {
        match self.inp.workflow.and_then(|w| w.goal.as_ref()) {
            Some(g) => match (&g.event, &g.condition) {
                (Some(e), _) => format!("converted: the goal event {e} came"),
                (None, Some(c)) => format!("converted: the goal `{}` came to hold", c.0),
                _ => "converted: goal reached".into(),
            },
            None => "converted: goal reached".into(),
        }
    }
}

/// ` (contact.score was 35)`, from a condition's `reads`.
fn reads(r: &Value) -> String {
    let Some(m) = r.as_object().filter(|m| !m.is_empty()) else {
        return String::new();
    };
    let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k} was {v}")).collect();
    format!(" ({})", parts.join(", "))
}

/// What an action did, in words.
fn action_text(effect: &str, d: &Value) -> String {
    let list = |k: &str| {
        d[k].as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    match effect {
        "tag" => format!("tagged {}", list("tags")),
        "untag" => format!("untagged {}", list("tags")),
        "set" => match d["fields"].as_object() {
            Some(m) => {
                let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                format!("set {}", parts.join(", "))
            }
            None => format!("set {}", action_detail(d)),
        },
        "assign_owner" => format!("owner {} (team {})", d["owner"], s(d, "team")),
        "notify" => match d["to"].as_str() {
            Some(to) => format!("notified {to} (template `{}`)", s(d, "template")),
            None => format!("no notification: {}", s(d, "skipped")),
        },
        "webhook" => format!("webhook {} {}", s(d, "method"), s(d, "url")),
        "plugin" => format!("plugin {}", s(d, "plugin")),
        other => format!("{other} {}", action_detail(d)),
    }
}

/// An effect's data without its key and bookkeeping.
fn action_detail(d: &Value) -> String {
    let mut rest = d.clone();
    if let Some(m) = rest.as_object_mut() {
        for k in ["effect", "step", "key"] {
            m.remove(k);
        }
    }
    rest.to_string()
}

/// Why an email was not sent, in words.
fn skip_reason(reason: &str) -> &str {
    match reason {
        "no_email" => "the contact has no email address",
        "suppressed" => "the address is suppressed (a hard bounce or a complaint)",
        "unsubscribed" => "the contact unsubscribed",
        "opted_out" => "the contact opted out",
        "no_consent" => "no consent to email (the project requires it)",
        other => other,
    }
}

/// Loads what [`explain`] reads from `store` and tells the story of run `id`; `None` for
/// an unknown run.
pub async fn explain_run(store: &dyn Store, id: &str) -> Result<Option<Explanation>, EngineError> {
    let Some(run) = store.run(id).await? else {
        return Ok(None);
    };
    let journal = store.journal(id).await?;
    let events = store.contact_events(&run.contact, run.started_at).await?;
    let keys: Vec<String> = journal
        .iter()
        .filter_map(|j| j.data.get("key").and_then(Value::as_str).map(String::from))
        .collect();
    let outbox = store.outbox_entries(&keys).await?;
    let stored = store
        .workflow_version(&run.workflow, run.workflow_version)
        .await?;
    let workflow = stored.and_then(|v| {
        let root = nurture_core::yaml::parse(&v.source).ok()?;
        let mut diags = Vec::new();
        nurture_core::project::parse_workflow(std::path::Path::new(&v.path), &root, &mut diags)
    });
    let inputs = Inputs {
        run: &run,
        journal: &journal,
        events: &events,
        outbox: &outbox,
        workflow: workflow.as_ref(),
    };
    Ok(Some(explain(&inputs)))
}

impl Explanation {
    /// The story for people: a header, then `TIME  STEP  TEXT` lines.
    pub fn render(&self) -> String {
        let mut out = format!(
            "run {} of {} (version {}) for contact {}: {}\n",
            self.run, self.workflow, self.version, self.contact, self.status
        );
        for l in &self.lines {
            let step = l.step.as_deref().unwrap_or("-");
            let line = format!("{}  {step:<14} {}", when(l.at), l.text);
            out.push_str(&printable(&line));
            out.push('\n');
        }
        out
    }
}

/// `text` safe for a terminal: control characters (escape sequences a reason or an
/// error message given through the API could carry) are shown as `\u{..}`.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| match c.is_control() {
            true => c.escape_unicode().to_string(),
            false => c.to_string(),
        })
        .collect()
}

/// A held-back rule's parameters in words: `1 per 7d on email`, `10/s on email`.
fn held_params(p: &Value) -> String {
    let on = p["channel"].as_str().unwrap_or("-");
    match (p.get("max"), p.get("per_second")) {
        (Some(max), _) => format!("{max} per {} on {on}", p["per"].as_str().unwrap_or("-")),
        (None, Some(rate)) => format!("{rate}/s on {on}"),
        _ => on.to_string(),
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendered_stories_carry_no_terminal_escapes() {
        let x = Explanation {
            run: "r".into(),
            workflow: "w".into(),
            version: 1,
            contact: "c".into(),
            status: "exited (cancelled)".into(),
            lines: vec![Line {
                at: chrono::DateTime::UNIX_EPOCH,
                step: None,
                kind: "ended",
                text: "cancelled by ops: \u{1b}[2Jgone\r\nforged line".into(),
            }],
        };
        let out = x.render();
        assert!(!out.contains('\u{1b}') && !out.contains('\r'), "{out:?}");
        assert!(out.contains("\\u{1b}[2Jgone"), "{out:?}");
        assert_eq!(out.lines().count(), 2, "one line per decision: {out:?}");
    }
}
