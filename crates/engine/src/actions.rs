//! What each action of a step does: change the contact (score, tags, fields, owner) or
//! queue an effect that leaves the system (email, notification, webhook, plugin call) in
//! the outbox, with an idempotency key derived from (run, step, action).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::channels::{consent_key, held};
use super::eval::{self, Scope};
use super::steps::StepError;
use super::{outcome, Flow, Work};
use nurture_core::model::{AssignOwner, ConsentPolicy, EmailRef, Notify, StepKind, Webhook};
use nurture_core::plan::Plan;
use nurture_store::{Consent, OutboxEntry};

/// Where an action runs: run `i`, step `step` of `plan`, action `index` of the step.
struct At<'p> {
    i: usize,
    plan: &'p Plan,
    step: &'p str,
    index: usize,
}

impl<'e> Work<'e> {
    fn outbox(&mut self, i: usize, step: &str, index: usize, kind: &str, payload: Value) -> String {
        let run = &self.runs[i];
        let key = outcome::outbox_key(&run.id, step, index);
        self.uow.outbox.push(OutboxEntry {
            key: key.clone(),
            run_id: Some(run.id.clone()),
            contact: self.contact.id.clone(),
            workflow: Some(run.workflow.clone()),
            step: Some(step.to_string()),
            kind: kind.into(),
            payload,
            created_at: self.now,
            due_at: self.now,
            attempts: 0,
        });
        key
    }

    /// Executes one action; `Some(flow)` when it interrupts the step (quiet hours).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn action(
        &mut self,
        i: usize,
        plan: &Plan,
        step: &str,
        index: usize,
        kind: &StepKind,
        with: Option<&BTreeMap<String, Value>>,
        quiet_ok: bool,
    ) -> Result<Option<Flow>, StepError> {
        // The expression scope (a JSON view of the contact, the run's event), built only
        // for the actions that use it (`StepKind::uses_scope`): tags, scores and the like
        // run on every step.
        let (c, ev) = match kind.uses_scope() {
            true => (self.contact_view(), self.runs[i].event.clone()),
            false => (Value::Null, None),
        };
        let out = self.runs[i].outcome.clone();
        let scope = Scope {
            contact: &c,
            event: ev.as_ref(),
            now: self.now,
            history: self.history.clone(),
            outcome: out.as_ref(),
        };
        let at = At {
            i,
            plan,
            step,
            index,
        };
        match kind {
            StepKind::SendEmail(e) => return self.send_email(&at, e, &scope, quiet_ok),
            StepKind::Score(points) => {
                let reason = format!("{}/{}", plan.id(), step);
                self.change_score(Some(i), Some(step), *points, &reason);
            }
            StepKind::Tag(tags) => self.tag(&at, tags.as_slice(), true),
            StepKind::Untag(tags) => self.tag(&at, tags.as_slice(), false),
            StepKind::Set(fields) => self.set_fields(&at, fields, &scope)?,
            StepKind::AssignOwner(a) => self.assign_owner(&at, a)?,
            StepKind::Notify(n) => self.notify(&at, n, &c),
            StepKind::Webhook(w) => self.webhook(&at, w, &scope)?,
            StepKind::Plugin(name) => return self.plugin(&at, name, with, &scope, quiet_ok),
            StepKind::Wait(_)
            | StepKind::WaitUntil(_)
            | StepKind::WaitFor(_)
            | StepKind::Branch(_)
            | StepKind::Split(_)
            | StepKind::Actions(_) => return Err(StepError::NotAnAction(kind.key())),
        }
        Ok(None)
    }

    /// The parameters of the rule `rule` that holds back an email of `plan`.
    fn email_skip_params(&self, plan: &Plan, rule: &str) -> Value {
        if rule != "consent" {
            return json!({"channel": "email"});
        }
        let required = match plan.workflow.consent {
            ConsentPolicy::OptedIn => "opted_in",
            _ => "not_opted_out",
        };
        json!({"channel": "email", "required": required, "state": self.contact.consent})
    }

    /// Why the contact gets no marketing email from `plan`, if so.
    fn email_skip(&self, plan: &Plan) -> Option<&'static str> {
        if self.contact.email.is_none() {
            Some("no_email")
        } else if self.contact.suppressed {
            Some("suppressed")
        } else if self.contact.unsubscribed {
            Some("unsubscribed")
        } else if self.contact.consent == Consent::OptedOut {
            Some("opted_out")
        } else if plan.workflow.consent == ConsentPolicy::OptedIn
            && self.contact.consent != Consent::OptedIn
        {
            Some("no_consent")
        } else {
            None
        }
    }

    fn send_email(
        &mut self,
        at: &At<'_>,
        e: &EmailRef,
        scope: &Scope<'_>,
        quiet_ok: bool,
    ) -> Result<Option<Flow>, StepError> {
        let (i, step) = (at.i, at.step);
        if let Some(f) = self.quiet_hours(i, at.plan, step, quiet_ok) {
            return Ok(Some(f));
        }
        if let Some(reason) = self.email_skip(at.plan) {
            let rule = nurture_store::held::rule_of_skip(reason);
            let params = self.email_skip_params(at.plan, rule);
            self.effect_recording(
                Some(i),
                Some(step),
                "email_skipped",
                json!({"template": e.template(), "reason": reason}),
                held(rule, params),
            );
            return Ok(None);
        }
        let subject = match e.subject() {
            Some(s) => Some(eval::interpolate(s, &at.plan.programs, scope)?),
            None => None,
        };
        let mut payload = json!({
            "to": self.contact.email,
            "template": e.template(),
            // Only a step's override: the channel renders the template's own
            // subject with the contact (copying its raw text here sent
            // `{{ ... }}` as the Subject header).
            "subject": subject.clone(),
            "contact": scope.contact,
        });
        if let EmailRef::Full(spec) = e {
            if let Some(from) = &spec.from {
                payload["from"] = Value::from(from.clone());
            }
        }
        let key = self.outbox(i, step, at.index, "email", payload);
        let mut extra = json!({"template": e.template()});
        if let Some(s) = subject {
            extra["subject"] = Value::from(s);
        }
        extra["key"] = Value::from(key);
        self.effect(Some(i), Some(step), "email", extra);
        Ok(None)
    }

    /// `tag` (`add`) or `untag`.
    fn tag(&mut self, at: &At<'_>, tags: &[String], add: bool) {
        let list: Vec<String> = tags.to_vec();
        for t in &list {
            if add {
                self.contact.tags.insert(t.clone());
            } else {
                self.contact.tags.remove(t);
            }
        }
        self.contact_changed = true;
        self.effect(
            Some(at.i),
            Some(at.step),
            if add { "tag" } else { "untag" },
            json!({"tags": list}),
        );
    }

    fn set_fields(
        &mut self,
        at: &At<'_>,
        fields: &BTreeMap<String, Value>,
        scope: &Scope<'_>,
    ) -> Result<(), StepError> {
        let mut out = Map::new();
        for (k, v) in fields {
            let v = eval::interpolate_value(v, &at.plan.programs, scope)?;
            match k.as_str() {
                "lifecycle" => self.contact.lifecycle = v.as_str().map(str::to_string),
                "owner" => self.contact.owner = v.as_str().map(str::to_string),
                "timezone" => self.contact.timezone = v.as_str().map(str::to_string),
                "email" => self.contact.email = v.as_str().map(str::to_string),
                "consent" => self.set_consent(at.i, at.step, &v)?,
                _ => {
                    self.contact.fields.insert(k.clone(), v.clone());
                }
            }
            out.insert(k.clone(), v);
        }
        self.contact_changed = true;
        self.effect(Some(at.i), Some(at.step), "set", json!({"fields": out}));
        Ok(())
    }

    /// The next member of the team, round robin over a counter fenced at commit.
    fn assign_owner(&mut self, at: &At<'_>, a: &AssignOwner) -> Result<(), StepError> {
        let team = self
            .engine
            .project
            .settings
            .teams
            .get(&a.team)
            .ok_or_else(|| StepError::NoTeam(a.team.clone()))?;
        if team.members.is_empty() {
            return Err(StepError::EmptyTeam(a.team.clone()));
        }
        let name = format!("owner:{}", a.team);
        let current = match self.counters.get(&name) {
            Some((_, v)) => *v,
            None => {
                // Read through the store (sync context): counters are cached per work.
                let v = self.counter_value(&name);
                self.counters.insert(name.clone(), (v, v));
                v
            }
        };
        let owner = team.members[(current as usize) % team.members.len()].clone();
        if let Some(e) = self.counters.get_mut(&name) {
            e.1 = current + 1;
        }
        self.contact.owner = Some(owner.clone());
        self.contact_changed = true;
        // The counter read is an input of the run (for replay).
        let recorded = Map::from_iter([("counter".to_string(), json!(current))]);
        self.effect_recording(
            Some(at.i),
            Some(at.step),
            "assign_owner",
            json!({"team": a.team, "owner": owner}),
            recorded,
        );
        Ok(())
    }

    /// `notify`: to the contact's owner or an address; `c` is the contact's view.
    fn notify(&mut self, at: &At<'_>, n: &Notify, c: &Value) {
        let (i, step) = (at.i, at.step);
        let to = if n.to == "owner" {
            self.contact.owner.clone()
        } else {
            Some(n.to.clone())
        };
        match to {
            Some(to) => {
                let payload = json!({"to": to, "template": n.template, "contact": c});
                let key = self.outbox(i, step, at.index, "notify", payload);
                self.effect(
                    Some(i),
                    Some(step),
                    "notify",
                    json!({"to": to, "template": n.template, "key": key}),
                );
            }
            None => self.effect(
                Some(i),
                Some(step),
                "notify",
                json!({"to": null, "template": n.template, "skipped": "no_owner"}),
            ),
        }
    }

    fn webhook(&mut self, at: &At<'_>, w: &Webhook, scope: &Scope<'_>) -> Result<(), StepError> {
        let (i, plan, step) = (at.i, at.plan, at.step);
        let url = eval::interpolate_url(&w.url, &plan.programs, scope)?;
        let body = match &w.body {
            Some(b) => eval::interpolate_value(b, &plan.programs, scope)?,
            None => json!({"contact": scope.contact, "workflow": plan.id(), "step": step}),
        };
        let mut payload =
            json!({"url": url, "method": w.method, "headers": w.headers, "body": body});
        if w.follow_redirects {
            payload["follow_redirects"] = Value::Bool(true);
        }
        self.mark_awaited(plan, step, at.index, &mut payload);
        let key = self.outbox(i, step, at.index, "webhook", payload);
        let shown = nurture_core::model::net::redact_url(&url);
        self.effect(
            Some(i),
            Some(step),
            "webhook",
            json!({"url": shown, "method": w.method, "key": key}),
        );
        Ok(())
    }

    fn plugin(
        &mut self,
        at: &At<'_>,
        name: &str,
        with: Option<&BTreeMap<String, Value>>,
        scope: &Scope<'_>,
        quiet_ok: bool,
    ) -> Result<Option<Flow>, StepError> {
        let (i, plan, step) = (at.i, at.plan, at.step);
        // A plugin that contacts the person: quiet hours and consent of its channel.
        let channel = self.plugin_channel(name);
        if let Some(ch) = &channel {
            if let Some(f) = self.quiet_hours(i, plan, step, quiet_ok) {
                return Ok(Some(f));
            }
            if let Some(reason) = self.channel_refusal(ch) {
                let state = self.contact.fields.get(&consent_key(ch)).cloned();
                let params = json!({"channel": ch, "required": "opted_in", "state": state.unwrap_or(Value::from("unknown"))});
                self.effect_recording(
                    Some(i),
                    Some(step),
                    "plugin_skipped",
                    json!({"plugin": name, "channel": ch, "reason": reason}),
                    held("consent", params),
                );
                return Ok(None);
            }
        }
        let cfg = match with {
            Some(m) => eval::interpolate_value(
                &Value::Object(m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
                &plan.programs,
                scope,
            )?,
            None => json!({}),
        };
        let mut payload =
            json!({"plugin": name, "with": cfg, "contact": scope.contact, "event": scope.event});
        if let Some(ch) = channel {
            payload["channel"] = Value::from(ch);
        }
        self.mark_awaited(plan, step, at.index, &mut payload);
        let key = self.outbox(i, step, at.index, "plugin", payload);
        self.effect(
            Some(i),
            Some(step),
            "plugin",
            json!({"plugin": name, "with": cfg, "key": key}),
        );
        Ok(None)
    }

    fn counter_value(&self, name: &str) -> i64 {
        // Counters are read before the unit of work starts (see `Work::load`); a missing
        // one starts at 0. The commit is fenced on the value read.
        self.preloaded_counters.get(name).copied().unwrap_or(0)
    }
}
