//! What the engine does when a contact changes, whoever changed it:
//!
//! - consent set by a step (`set: { consent: opted_in }`) is a change of the contact's
//!   consent, the one sending decisions read, journaled with its cause;
//! - open runs are re-checked at every settle: a run whose `exit_if` or contact goal
//!   (`goal: { if: ... }` without an event) now holds ends at once, also while it waits
//!   (its timer is cleared and the journal says why), not at its next step;
//! - profile scoring rules count while they hold: the points are taken back when the
//!   condition stops holding, and both changes are journaled with the rule.

use std::collections::{BTreeSet, HashMap};

use serde_json::{json, Map, Value};

use super::{Engine, EngineError, StepError, Work};
pub use nurture_core::plan::contact::CONSENT_VALUES;
use nurture_core::plan::Plan;
use nurture_store::{Consent, OutboxEntry, OutboxKind, RunStatus, Ts};

/// A consent value from its name.
pub fn parse_consent(s: &str) -> Option<Consent> {
    match s {
        "opted_in" => Some(Consent::OptedIn),
        "opted_out" => Some(Consent::OptedOut),
        "unknown" => Some(Consent::Unknown),
        _ => None,
    }
}

impl Engine {
    /// Sets contact `id`'s consent from outside a workflow (a hosted form's double opt-in
    /// confirmation), journaled as a `consent` line `{from, to, cause}`: the proof of
    /// consent (`cause` says what: form, client address...). `Ok(false)` when it already
    /// was `to` (nothing journaled); an error for a contact that does not exist.
    pub async fn set_consent_because(
        &self,
        id: &str,
        to: Consent,
        cause: Value,
        now: Ts,
    ) -> Result<bool, EngineError> {
        let changed = std::sync::atomic::AtomicBool::new(false);
        self.with_retry(id, now, |w| {
            if !w.contact_exists {
                return Err(EngineError::Invalid(format!("no contact `{id}`")));
            }
            let from = w.contact.consent;
            if from == to {
                return Ok(());
            }
            w.contact.consent = to;
            w.contact_changed = true;
            let data = json!({"from": from.as_str(), "to": to.as_str(), "cause": cause});
            w.journal(None, "consent", data);
            changed.store(true, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        })
        .await?;
        Ok(changed.into_inner())
    }

    /// Queues a transactional email (`notify` outbox entry: no consent policy, tracking
    /// or unsubscribe link) to contact `id` under the idempotency `key`: a key already
    /// queued is not queued again. `payload` is the channel's (`to`, `template`...).
    pub async fn queue_transactional(
        &self,
        id: &str,
        key: &str,
        payload: Value,
        now: Ts,
    ) -> Result<(), EngineError> {
        self.with_retry(id, now, |w| {
            if !w.contact_exists {
                return Err(EngineError::Invalid(format!("no contact `{id}`")));
            }
            w.uow.outbox.push(OutboxEntry {
                key: key.to_string(),
                run_id: None,
                contact: id.to_string(),
                workflow: None,
                step: None,
                kind: OutboxKind::Notify,
                payload: payload.clone(),
                created_at: now,
                due_at: now,
                attempts: 0,
            });
            Ok(())
        })
        .await?;
        Ok(())
    }
}

impl Work<'_> {
    /// `set: { consent: VALUE }` in run `i`'s `step`: the contact's consent (what sending
    /// decisions and conditions read) changes, journaled with its cause.
    pub(super) fn set_consent(&mut self, i: usize, step: &str, v: &Value) -> Result<(), StepError> {
        let to = v
            .as_str()
            .and_then(parse_consent)
            .ok_or_else(|| StepError::BadConsent(v.clone()))?;
        // Written by earlier versions, which stored it as a field the real one hid.
        if self.contact.fields.remove("consent").is_some() {
            self.contact_changed = true;
        }
        let from = self.contact.consent;
        if from == to {
            return Ok(());
        }
        self.contact.consent = to;
        self.contact_changed = true;
        let run = &self.runs[i];
        let cause = json!({"workflow": run.workflow, "step": step, "run": run.id});
        self.journal(
            Some(i),
            "consent",
            json!({"from": from.as_str(), "to": to.as_str(), "cause": cause}),
        );
        Ok(())
    }

    /// Run `i`'s goal when it is a condition on the contact (no `event`), evaluated and
    /// journaled as `exit_if` is before each step.
    pub(super) fn contact_goal(&mut self, i: usize, plan: &Plan) -> bool {
        let Some(src) = contact_goal(plan) else {
            return false;
        };
        let ev = self.runs[i].event.clone();
        self.condition(Some(i), &plan.programs, src, ev.as_ref(), "goal")
    }

    /// Ends at once every open run whose contact goal or `exit_if` holds now. Called at
    /// every settle, so whatever changed the contact (an event, a step of another run, an
    /// API update, an import) ends a waiting run without waiting for its timer: its timer
    /// is cleared and the journal says why. Conditions are evaluated quietly; only the
    /// one that ends a run is journaled (with what it read).
    pub(super) fn recheck_open_runs(&mut self) {
        for i in 0..self.runs.len() {
            if !self.runs[i].status.is_open() {
                continue;
            }
            let Some(plan) = self.run_plan(i) else {
                continue;
            };
            let plan = &*plan;
            let checks = [
                (contact_goal(plan), RunStatus::Converted, "goal"),
                (
                    plan.workflow.exit_if.as_ref().map(|x| x.0.as_str()),
                    RunStatus::Exited,
                    "exit_if",
                ),
            ];
            for (src, status, what) in checks {
                let Some(src) = src else { continue };
                let ev = self.runs[i].event.clone();
                if !self.condition(None, &plan.programs, src, ev.as_ref(), what) {
                    continue;
                }
                // Again, to journal it with what it read.
                self.condition(Some(i), &plan.programs, src, ev.as_ref(), what);
                let data = json!({
                    "step": self.runs[i].step,
                    "status": self.runs[i].status.as_str(),
                    "wait": self.runs[i].wait,
                    "reason": what,
                });
                self.journal(Some(i), "interrupted", data);
                self.end_run(i, status, what);
                break;
            }
        }
    }

    /// Profile scoring rules count while they hold: a rule that holds now and did not
    /// adds its points, one that held and does not any more takes them back; both are
    /// journaled (a `score` effect with the `rule`, and `taken_back` for the latter).
    /// A rule changes at most once per settle (`flipped`): a rule that reads the score
    /// cannot make a settle go back and forth. Returns whether the score changed.
    pub(super) fn profile_rules(&mut self, flipped: &mut BTreeSet<usize>) -> bool {
        let engine = self.engine;
        let empty = HashMap::new();
        let mut changed = false;
        for (idx, rule) in engine.project.scoring.rules.iter().enumerate() {
            let Some(src) = &rule.profile else { continue };
            if flipped.contains(&idx) {
                continue;
            }
            let holds = self.condition(None, &empty, &src.0, None, "profile");
            let counted = self.contact.profile_rules.contains(&idx);
            if holds == counted {
                continue;
            }
            flipped.insert(idx);
            changed = true;
            let mut note = Map::new();
            note.insert("rule".into(), Value::from(src.0.clone()));
            let delta = if holds {
                self.contact.profile_rules.insert(idx);
                rule.points
            } else {
                self.contact.profile_rules.remove(&idx);
                note.insert("taken_back".into(), Value::Bool(true));
                -rule.points
            };
            self.change_score_noting(None, None, delta, "profile", note);
        }
        changed
    }
}

/// The goal of `plan` when it is a condition on the contact: `if` without `event`.
fn contact_goal(plan: &Plan) -> Option<&str> {
    plan.workflow
        .goal
        .as_ref()
        .filter(|g| g.event.is_none())
        .and_then(|g| g.condition.as_ref())
        .map(|c| c.0.as_str())
}
