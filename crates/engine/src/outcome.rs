//! Outcomes of `webhook` and `plugin` steps that a run awaits (`await: true`).
//!
//! A step with `await: true` queues its outbox entry (marked `"await": true` in its
//! payload) and its run waits ([`Wait::Outcome`]) with a timer for the step's `timeout`
//! (default [`DEFAULT_TIMEOUT`]). When the delivery has a final outcome (delivered, or
//! failed for good after its retries), the deliverer records it together with an event of
//! type [`EVENT`] in one transaction ([`nurture_store::Store::complete_outbox_waking`]):
//! the wake-up is as durable as the outcome, and the engine applies it on its normal
//! lanes. The event's id comes from the entry's key, so a second completion cannot wake a
//! run twice, and only a run still waiting for that key resumes. `outcome` (`ok`,
//! `status`, `error`) and `response` (the parsed JSON answer, at most [`MAX_RESPONSE`]
//! bytes) are then in scope for the run's later conditions and for the step's `save:`
//! mappings, which set contact fields.
//!
//! The type `outcome` has no dot, so ingestion (`POST /v1/events`) refuses it: an
//! outcome cannot be forged from outside.

use serde_json::{json, Map, Value};

use super::{eval, EngineError, Flow, StepError, Work};
use nurture_core::model::{Step, StepKind};
use nurture_core::plan::{Edge, Plan};
use nurture_store::{NewEvent, OutboxEntry, OutboxOutcome, RunStatus, StoredEvent, Ts, Wait};

/// The type of the events that carry outcomes.
pub const EVENT: &str = "outcome";
/// The largest response body read and kept (bytes); a larger one is `null`.
pub const MAX_RESPONSE: usize = 64 * 1024;
/// How long an awaited step waits when it sets no `timeout`: longer than the retries of a
/// delivery (8 attempts, about an hour of backoff).
pub const DEFAULT_TIMEOUT: chrono::Duration = match chrono::Duration::try_days(1) {
    Some(d) => d,
    None => panic!("1 day"),
};

/// How long awaited step `step` waits for its outcome: its `timeout`, else
/// [`DEFAULT_TIMEOUT`].
pub(crate) fn timeout_of(step: &Step) -> chrono::Duration {
    step.timeout.map_or(DEFAULT_TIMEOUT, |d| d.to_chrono())
}

/// At most this many `save:` fields are set per outcome.
pub const MAX_SAVE_FIELDS: usize = 32;
/// The largest value (bytes of JSON) a `save:` field may set.
pub const MAX_SAVE_BYTES: usize = 4096;
/// The longest `outcome.error` (characters).
const MAX_ERROR: usize = 300;

/// Whether a run awaits the outcome of this outbox entry's delivery.
pub fn awaited(payload: &Value) -> bool {
    payload.get("await") == Some(&Value::Bool(true))
}

/// The HTTP status at the start of a delivery's failure reason (`HTTP 500 ... from ...`).
fn status_in(reason: &str) -> Option<u16> {
    let rest = reason.strip_prefix("HTTP ")?;
    let code = rest.get(..3)?;
    code.parse()
        .ok()
        .filter(|c| (100..600).contains(c) && !rest[3..].starts_with(|c: char| c.is_ascii_digit()))
}

fn short(reason: &str) -> String {
    match reason.char_indices().nth(MAX_ERROR) {
        Some((at, _)) => format!("{}...", &reason[..at]),
        None => reason.to_string(),
    }
}

/// `{ok, status, error, response}` of a final outcome; `None` while it is not final (a
/// retry or deferral is still to come).
pub fn view(outcome: &OutboxOutcome) -> Option<Value> {
    match outcome {
        OutboxOutcome::Delivered { record } => Some(json!({
            "ok": true,
            "status": record.get("status").cloned().unwrap_or(Value::Null),
            "error": null,
            "response": record
                .get("response")
                .or_else(|| record.get("output"))
                .cloned()
                .unwrap_or(Value::Null),
        })),
        OutboxOutcome::Failed { reason } | OutboxOutcome::Ambiguous { reason } => Some(json!({
            "ok": false,
            "status": status_in(reason),
            "error": short(reason),
            "response": null,
        })),
        OutboxOutcome::Retry { .. } | OutboxOutcome::Defer { .. } => None,
    }
}

/// The event that wakes the run awaiting `entry`, if one does and `outcome` is final.
pub fn wake_event(entry: &OutboxEntry, outcome: &OutboxOutcome, now: Ts) -> Option<NewEvent> {
    if !awaited(&entry.payload) {
        return None;
    }
    let mut data = view(outcome)?;
    data["key"] = Value::from(entry.key.clone());
    Some(NewEvent {
        id: format!("outcome-{}", entry.key),
        contact: entry.contact.clone(),
        kind: EVENT.into(),
        at: now,
        data,
    })
}

/// The key of the outbox entry of action `index` of `step` in run `run_id`.
pub(super) fn outbox_key(run_id: &str, step: &str, index: usize) -> String {
    super::digest(&[run_id, step, &index.to_string()])
}

/// Whether `step` awaits the outcome of its action.
pub(super) fn awaits(step: &Step) -> bool {
    step.await_outcome && matches!(step.kind, StepKind::Webhook(_) | StepKind::Plugin(_))
}

/// Sets a contact field as `set:` does (`lifecycle`, `owner`, `timezone` and `email` are
/// the contact's own; anything else is a field).
pub(super) fn set_field(contact: &mut nurture_store::Contact, key: &str, v: Value) {
    match key {
        "lifecycle" => contact.lifecycle = v.as_str().map(str::to_string),
        "owner" => contact.owner = v.as_str().map(str::to_string),
        "timezone" => contact.timezone = v.as_str().map(str::to_string),
        "email" => contact.email = v.as_str().map(str::to_string),
        _ => {
            contact.fields.insert(key.to_string(), v);
        }
    }
}

impl<'e> Work<'e> {
    /// Marks the payload of an awaited step's entry, for the deliverer ([`awaited`]).
    pub(super) fn mark_awaited(&self, plan: &Plan, step: &str, index: usize, payload: &mut Value) {
        if index == 0 && plan.step(step).is_some_and(awaits) {
            payload["await"] = Value::Bool(true);
        }
    }

    /// After an awaited step queued its entry: the run waits for its outcome. An entry
    /// that was not queued (the step skipped the send) is a failed outcome at once.
    pub(super) fn await_outcome(
        &mut self,
        i: usize,
        plan: &Plan,
        step: &Step,
    ) -> Result<Flow, StepError> {
        let key = outbox_key(&self.runs[i].id, &step.id, 0);
        self.runs[i].outcome = None;
        if !self.uow.outbox.iter().any(|e| e.key == key) {
            let outcome =
                json!({"ok": false, "status": null, "error": "not sent", "response": null});
            return self.take_outcome(i, plan, step, outcome, "not_sent");
        }
        if self.engine.simulated_outcomes {
            let outcome = json!({"ok": true, "status": null, "error": null, "response": null});
            return self.take_outcome(i, plan, step, outcome, "simulated");
        }
        let until = self.now + timeout_of(step);
        self.set_timer(i, until, Wait::Outcome { key: key.clone() });
        self.effect(
            Some(i),
            Some(&step.id),
            "wait",
            json!({"until": nurture_store::ts_out(until), "for": "outcome", "key": key}),
        );
        Ok(Flow::Wait)
    }

    /// An [`EVENT`]: the run waiting for its entry resumes with it; a late or repeated
    /// one (the run timed out, ended, or already resumed) changes nothing.
    pub(super) fn apply_outcome(&mut self, e: &StoredEvent) -> Result<(), EngineError> {
        let key = e
            .data
            .get("key")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let found = self.runs.iter().position(|r| {
            r.status == RunStatus::Waiting
                && matches!(&r.wait, Some(Wait::Outcome { key: k }) if k == key)
        });
        let Some(i) = found else {
            self.journal(
                None,
                "outcome_ignored",
                json!({"key": key, "reason": "no run waits for it"}),
            );
            return Ok(());
        };
        let Some(plan) = self.run_plan(i) else {
            return Ok(());
        };
        let plan = &*plan;
        let step_id = self.runs[i].step.clone().unwrap_or_default();
        let Some(step) = plan.step(&step_id) else {
            return Ok(());
        };
        self.uow.timers_clear.push(self.runs[i].id.clone());
        self.runs[i].wait = None;
        self.runs[i].status = RunStatus::Active;
        self.changed_runs.insert(i);
        let mut outcome = e.data.clone();
        if let Some(m) = outcome.as_object_mut() {
            m.remove("key");
        }
        self.resume(i, plan, step, outcome, "outcome")
    }

    /// The timer of an awaited step: no outcome in time.
    pub(super) fn outcome_timeout(
        &mut self,
        i: usize,
        plan: &Plan,
        step_id: &str,
    ) -> Result<(), EngineError> {
        let Some(step) = plan.step(step_id) else {
            self.fail(
                i,
                Some(step_id),
                "the awaited step is not in the run's version",
            );
            return Ok(());
        };
        let outcome = json!({"ok": false, "status": null, "error": "timed out", "response": null});
        self.resume(i, plan, step, outcome, "timeout")
    }

    /// Puts `outcome` in the run's scope, applies the step's `save:`, and goes on.
    fn resume(
        &mut self,
        i: usize,
        plan: &Plan,
        step: &Step,
        outcome: Value,
        why: &str,
    ) -> Result<(), EngineError> {
        match self.take_outcome(i, plan, step, outcome, why) {
            Ok(Flow::Goto(next)) => self.advance(i, Some(next)),
            Ok(Flow::Wait) => Ok(()),
            Err(e) => {
                self.fail(i, Some(&step.id), &e.to_string());
                Ok(())
            }
        }
    }

    fn take_outcome(
        &mut self,
        i: usize,
        plan: &Plan,
        step: &Step,
        outcome: Value,
        why: &str,
    ) -> Result<Flow, StepError> {
        let summary = json!({
            "ok": outcome.get("ok"),
            "status": outcome.get("status"),
            "error": outcome.get("error"),
        });
        self.journal(
            Some(i),
            "outcome",
            json!({"step": step.id, "why": why, "outcome": summary}),
        );
        self.runs[i].outcome = Some(outcome);
        self.runs[i].updated_at = self.now;
        self.changed_runs.insert(i);
        self.save_outcome(i, plan, step);
        super::edge_target(plan, &step.id, |e| *e == Edge::Next)
            .map(Flow::Goto)
            .ok_or(StepError::NoSuccessor)
    }

    /// The step's `save:` mappings, evaluated against the outcome: each field whose
    /// expression gives a value (not `null`, not too large) is set on the contact; the
    /// others set nothing and the journal says why. Never fails the run.
    fn save_outcome(&mut self, i: usize, plan: &Plan, step: &Step) {
        if step.save.is_empty() {
            return;
        }
        let c = self.contact_view();
        let ev = self.runs[i].event.clone();
        let out = self.runs[i].outcome.clone();
        let scope = eval::Scope {
            contact: &c,
            event: ev.as_ref(),
            now: self.now,
            history: self.history.clone(),
            outcome: out.as_ref(),
        };
        let mut saved = Map::new();
        let mut skipped = Map::new();
        for (n, (field, expr)) in step.save.iter().enumerate() {
            if n >= MAX_SAVE_FIELDS {
                skipped.insert(field.clone(), Value::from("too many fields"));
                continue;
            }
            let Some(program) = plan.programs.get(&expr.0) else {
                skipped.insert(field.clone(), Value::from("expression not compiled"));
                continue;
            };
            match eval::eval(program, &scope) {
                Ok(v) => {
                    let v = eval::to_json(&v);
                    let size = serde_json::to_vec(&v).map_or(usize::MAX, |b| b.len());
                    if v.is_null() {
                        skipped.insert(field.clone(), Value::from("no value"));
                    } else if size > MAX_SAVE_BYTES {
                        skipped.insert(
                            field.clone(),
                            Value::from(format!("{size} bytes, more than {MAX_SAVE_BYTES}")),
                        );
                    } else {
                        saved.insert(field.clone(), v);
                    }
                }
                Err(e) => {
                    skipped.insert(field.clone(), Value::from(short(&e.to_string())));
                }
            }
        }
        for (k, v) in &saved {
            set_field(&mut self.contact, k, v.clone());
        }
        if !saved.is_empty() {
            self.contact_changed = true;
        }
        let mut extra = json!({"fields": saved, "from": "outcome"});
        if !skipped.is_empty() {
            extra["skipped"] = Value::Object(skipped);
        }
        self.effect(Some(i), Some(&step.id), "save", extra);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_outcomes_have_a_view_and_the_status_of_an_http_failure() {
        let v = view(&OutboxOutcome::Failed {
            reason: "HTTP 500 Internal Server Error from http://x/ (gave up after 8 attempts)"
                .into(),
        })
        .unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["status"], 500);
        let v = view(&OutboxOutcome::Failed {
            reason: "plugin failed".into(),
        })
        .unwrap();
        assert_eq!(v["status"], Value::Null);
        let v = view(&OutboxOutcome::Delivered {
            record: json!({"status": 201, "response": {"id": "x"}}),
        })
        .unwrap();
        assert_eq!(
            (v["ok"].clone(), v["status"].clone()),
            (json!(true), json!(201))
        );
        assert_eq!(v["response"]["id"], "x");
        assert!(view(&OutboxOutcome::Retry {
            reason: "HTTP 500".into(),
            retry_at: chrono::Utc::now()
        })
        .is_none());
        assert_eq!(short(&"x".repeat(1000)).len(), MAX_ERROR + 3);
    }
}
