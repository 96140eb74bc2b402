//! The step interpreter: what each step of a plan means for a run (wait, branch, split,
//! actions), and the loop that advances a run from step to step until it waits or ends.
//! What each action does is in [`super::actions`].

use petgraph::graph::NodeIndex;
use petgraph::visit::EdgeRef;
use serde_json::{json, Value};

use super::EngineError;
use super::{eval, outcome, split_bucket, time, Flow, Work};
use nurture_core::model::{BranchArm, SplitArm, Step, StepKind, WaitFor, WaitUntil};
use nurture_core::plan::{Edge, Plan, PlanNode};
use nurture_store::{RunStatus, Timer, Ts, Wait};

/// Why a step failed: its run fails, with this text as the journal's `message`.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The plan has no edge where the step goes on.
    #[error("no successor")]
    NoSuccessor,
    /// A branch whose conditions were all false has no `else` edge.
    #[error("no else")]
    NoElse,
    /// A split has no edge for the variant it chose.
    #[error("no variant")]
    NoVariant,
    /// An expression of the step is not among the plan's compiled ones.
    #[error("expression not compiled")]
    NotCompiled,
    /// A `wait_until: { date }` did not give a date.
    #[error("`{0}` is not a date")]
    NotADate(String),
    /// `assign_owner` names a team the settings do not have.
    #[error("no team {0}")]
    NoTeam(String),
    /// `assign_owner` names a team without members.
    #[error("team {0} has no members")]
    EmptyTeam(String),
    /// A step kind that is not an action reached the action interpreter.
    #[error("`{0}` is not an action")]
    NotAnAction(&'static str),
    /// `set: { consent }` gave a value that is not a consent.
    #[error("`consent` {} is not one of {}", .0, nurture_core::plan::contact::CONSENT_VALUES.join(", "))]
    BadConsent(Value),
    /// An expression of the step failed.
    #[error(transparent)]
    Eval(#[from] eval::EvalError),
}

impl<'e> Work<'e> {
    pub(super) fn advance(&mut self, i: usize, node: Option<NodeIndex>) -> Result<(), EngineError> {
        self.advance_from(i, node, false)
    }

    /// Executes steps from `node` until the run waits or ends.
    pub(super) fn advance_from(
        &mut self,
        i: usize,
        mut node: Option<NodeIndex>,
        mut quiet_ok: bool,
    ) -> Result<(), EngineError> {
        let Some(plan) = self.run_plan(i) else {
            self.fail(i, None, &self.no_plan(i));
            return Ok(());
        };
        let plan = &*plan;
        for _ in 0..=plan.workflow.steps.len() + 1 {
            let Some(n) = node else {
                self.fail(
                    i,
                    self.runs[i].step.clone().as_deref(),
                    "no step to go on to",
                );
                return Ok(());
            };
            let PlanNode::Step(si) = plan.graph[n] else {
                self.end_run(i, RunStatus::Completed, "end");
                return Ok(());
            };
            let step = &plan.workflow.steps[si];
            let goal = self.contact_goal(i, plan);
            if self.fail_if_aborted(i, &step.id) {
                return Ok(());
            }
            if goal {
                self.end_run(i, RunStatus::Converted, "goal");
                return Ok(());
            }
            if let Some(x) = &plan.workflow.exit_if {
                let ev = self.runs[i].event.clone();
                let exit = self.condition(Some(i), &plan.programs, &x.0, ev.as_ref(), "exit_if");
                if self.fail_if_aborted(i, &step.id) {
                    return Ok(());
                }
                if exit {
                    self.end_run(i, RunStatus::Exited, "exit_if");
                    return Ok(());
                }
            }
            self.runs[i].step = Some(step.id.clone());
            self.runs[i].updated_at = self.now;
            self.changed_runs.insert(i);
            self.journal(
                Some(i),
                "step",
                json!({"step": step.id, "kind": step.kind.key()}),
            );
            let flow = self.execute(i, plan, si, quiet_ok);
            if self.fail_if_aborted(i, &step.id) {
                return Ok(());
            }
            match flow {
                Ok(Flow::Goto(next)) => node = Some(next),
                Ok(Flow::Wait) => return Ok(()),
                Err(e) => {
                    self.fail(i, Some(&step.id), &e.to_string());
                    return Ok(());
                }
            }
            quiet_ok = false;
        }
        self.fail(i, None, "more steps than the workflow has in one go");
        Ok(())
    }

    /// Fails run `i` when one of its conditions could not be evaluated at all.
    fn fail_if_aborted(&mut self, i: usize, step: &str) -> bool {
        let Some(msg) = self.aborted.take() else {
            return false;
        };
        self.fail(i, Some(step), &msg);
        true
    }

    pub(super) fn set_timer(&mut self, i: usize, due: Ts, wait: Wait) {
        self.runs[i].status = RunStatus::Waiting;
        self.runs[i].wait = Some(wait);
        self.uow.timers_set.push(Timer {
            run_id: self.runs[i].id.clone(),
            contact: self.runs[i].contact.clone(),
            due_at: due,
        });
    }

    /// A `wait` or `wait_until`: the run sleeps until `until`.
    fn wait_timer(&mut self, i: usize, step: &str, until: Ts) -> Flow {
        self.set_timer(i, until, Wait::Timer);
        self.effect(
            Some(i),
            Some(step),
            "wait",
            json!({"until": nurture_store::ts_out(until)}),
        );
        Flow::Wait
    }

    pub(super) fn tz(&self, plan: &Plan) -> chrono_tz::Tz {
        self.contact
            .timezone
            .as_deref()
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| {
                nurture_core::plan::workflow_tz(&plan.workflow, &self.engine.project.settings)
            })
    }

    /// Executes step `si` of `plan` in run `i`: where the run goes next, or that it waits.
    fn execute(
        &mut self,
        i: usize,
        plan: &Plan,
        si: usize,
        quiet_ok: bool,
    ) -> Result<Flow, StepError> {
        let step = &plan.workflow.steps[si];
        match &step.kind {
            StepKind::Wait(d) => Ok(self.wait_timer(i, &step.id, self.now + d.to_chrono())),
            StepKind::WaitUntil(wu) => self.wait_until(i, plan, step, wu),
            StepKind::WaitFor(wf) => Ok(self.wait_for(i, step, wf)),
            StepKind::Branch(arms) => self.branch(i, plan, step, arms),
            StepKind::Split(arms) => self.split(i, plan, si, arms),
            StepKind::Actions(actions) => {
                // All or nothing: a failing action takes back what the others did.
                let saved = self.checkpoint(i);
                for (j, a) in actions.iter().enumerate() {
                    match self.action(i, plan, &step.id, j, &a.kind, a.with.as_ref(), quiet_ok) {
                        // Quiet hours stop the step at action `j`: the step runs again,
                        // whole, when they end; what the actions before `j` did now is
                        // taken back so that it is not done twice.
                        Ok(Some(f)) if j > 0 => {
                            self.restore(i, &step.id, saved, false);
                            return Ok(self.quiet_hours(i, plan, &step.id, quiet_ok).unwrap_or(f));
                        }
                        Ok(Some(f)) => return Ok(f),
                        Ok(None) => {}
                        Err(e) => {
                            self.restore(i, &step.id, saved, true);
                            return Err(e);
                        }
                    }
                }
                next(plan, step)
            }
            kind => {
                // `set` changes fields one by one: all or none of them.
                let saved = matches!(kind, StepKind::Set(_)).then(|| self.checkpoint(i));
                let done = self.action(i, plan, &step.id, 0, kind, step.with.as_ref(), quiet_ok);
                if let (Err(_), Some(saved)) = (&done, saved) {
                    self.restore(i, &step.id, saved, true);
                }
                if let Some(f) = done? {
                    return Ok(f);
                }
                if outcome::awaits(step) {
                    return self.await_outcome(i, plan, step);
                }
                next(plan, step)
            }
        }
    }

    /// What a step's actions may change in run `i`'s unit, before they run.
    fn checkpoint(&self, i: usize) -> Checkpoint {
        Checkpoint {
            contact: self.contact.clone(),
            contact_changed: self.contact_changed,
            crossed: self.crossed.clone(),
            counters: self.counters.clone(),
            run: self.runs[i].clone(),
            run_changed: self.changed_runs.contains(&i),
            effects: self.effects.len(),
            journal: self.uow.journal.len(),
            outbox: self.uow.outbox.len(),
            timers_set: self.uow.timers_set.len(),
            timers_clear: self.uow.timers_clear.len(),
        }
    }

    /// Puts back what run `i`'s step `step` changed since `saved`, and journals which of
    /// its effects were taken back when `journaled`.
    fn restore(&mut self, i: usize, step: &str, saved: Checkpoint, journaled: bool) {
        let undone: Vec<Value> = self.uow.journal[saved.journal..]
            .iter()
            .filter(|j| j.kind == "effect")
            .map(|j| j.data["effect"].clone())
            .collect();
        self.contact = saved.contact;
        self.contact_changed = saved.contact_changed;
        self.crossed = saved.crossed;
        self.counters = saved.counters;
        self.runs[i] = saved.run;
        if !saved.run_changed {
            self.changed_runs.remove(&i);
        }
        self.effects.truncate(saved.effects);
        self.uow.journal.truncate(saved.journal);
        self.uow.outbox.truncate(saved.outbox);
        self.uow.timers_set.truncate(saved.timers_set);
        self.uow.timers_clear.truncate(saved.timers_clear);
        if journaled && !undone.is_empty() {
            self.journal(Some(i), "undone", json!({"step": step, "effects": undone}));
        }
    }

    /// A `wait_until`: sleeps until its date or next local time, or goes on when that is
    /// not in the future.
    fn wait_until(
        &mut self,
        i: usize,
        plan: &Plan,
        step: &Step,
        wu: &WaitUntil,
    ) -> Result<Flow, StepError> {
        let tz = self.tz(plan);
        let until = match (&wu.date, wu.time) {
            (Some(expr), _) => {
                let program = plan
                    .programs
                    .get(&expr.0)
                    .cloned()
                    .ok_or(StepError::NotCompiled)?;
                let ev = self.runs[i].event.clone();
                let v = self.scope_event(ev.as_ref(), |s| {
                    eval::eval(&program, s)
                        .map(|v| eval::to_json(&v))
                        .unwrap_or(Value::Null)
                });
                let s = v
                    .as_str()
                    .ok_or_else(|| StepError::NotADate(expr.0.clone()))?;
                time::parse_date_or_time(s, tz).ok_or_else(|| StepError::NotADate(s.into()))?
            }
            (None, Some(t)) => {
                time::next_local(self.now, tz, t.0, wu.weekday.map(|w| w.to_chrono()))
            }
            (None, None) => self.now,
        };
        if until <= self.now {
            self.journal(
                Some(i),
                "wait_skipped",
                json!({"step": step.id, "until": nurture_store::ts_out(until)}),
            );
            return next(plan, step);
        }
        Ok(self.wait_timer(i, &step.id, until))
    }

    /// A `wait_for`: the run waits for the event, at most its timeout.
    fn wait_for(&mut self, i: usize, step: &Step, wf: &WaitFor) -> Flow {
        let until = self.now + wf.timeout.to_chrono();
        self.set_timer(
            i,
            until,
            Wait::Event {
                event: wf.event.clone(),
            },
        );
        self.effect(
            Some(i),
            Some(&step.id),
            "wait",
            json!({"until": nurture_store::ts_out(until), "for": wf.event}),
        );
        Flow::Wait
    }

    /// A `branch`: the first arm whose condition holds, else the `else` arm.
    fn branch(
        &mut self,
        i: usize,
        plan: &Plan,
        step: &Step,
        arms: &[BranchArm],
    ) -> Result<Flow, StepError> {
        let ev = self.runs[i].event.clone();
        for (j, arm) in arms.iter().enumerate() {
            if let Some(c) = &arm.condition {
                if self.condition(
                    Some(i),
                    &plan.programs,
                    &c.0,
                    ev.as_ref(),
                    &format!("{}[{j}]", step.id),
                ) {
                    return edge_target(
                        plan,
                        &step.id,
                        |e| matches!(e, Edge::Yes { index, .. } if *index == j),
                    )
                    .map(Flow::Goto)
                    .ok_or(StepError::NoSuccessor);
                }
            }
        }
        self.journal(Some(i), "branch_else", json!({"step": step.id}));
        edge_target(plan, &step.id, |e| *e == Edge::Else)
            .map(Flow::Goto)
            .ok_or(StepError::NoElse)
    }

    /// A `split`: the variant of the contact's stable bucket ([`split_bucket`]).
    fn split(
        &mut self,
        i: usize,
        plan: &Plan,
        si: usize,
        arms: &[SplitArm],
    ) -> Result<Flow, StepError> {
        let step = &plan.workflow.steps[si];
        let n = NodeIndex::new(si);
        let total: i64 = arms.iter().map(|a| a.weight.max(0)).sum();
        let bucket = split_bucket(plan.id(), &step.id, &self.contact.id, total as u64) as i64;
        let mut acc = 0;
        let mut chosen = 0;
        for (j, a) in arms.iter().enumerate() {
            acc += a.weight;
            if bucket < acc {
                chosen = j;
                break;
            }
        }
        let name = arms[chosen]
            .name
            .clone()
            .unwrap_or_else(|| arms[chosen].next.clone());
        self.runs[i].variants.insert(step.id.clone(), name.clone());
        self.journal(
            Some(i),
            "split",
            json!({"step": step.id, "variant": name, "bucket": bucket, "total": total}),
        );
        plan.graph
            .edges(n)
            .find(|e| matches!(e.weight(), Edge::Variant { index, .. } if *index == chosen))
            .map(|e| Flow::Goto(e.target()))
            .ok_or(StepError::NoVariant)
    }
}

/// What [`Work::checkpoint`] saves: the contact, the run, and how far the unit's lists
/// went.
struct Checkpoint {
    contact: nurture_store::Contact,
    contact_changed: bool,
    crossed: std::collections::BTreeSet<i64>,
    counters: std::collections::HashMap<String, (i64, i64)>,
    run: nurture_store::Run,
    run_changed: bool,
    effects: usize,
    journal: usize,
    outbox: usize,
    timers_set: usize,
    timers_clear: usize,
}

/// The `next` edge of `step`.
fn next(plan: &Plan, step: &Step) -> Result<Flow, StepError> {
    edge_target(plan, &step.id, |e| *e == Edge::Next)
        .map(Flow::Goto)
        .ok_or(StepError::NoSuccessor)
}

/// The target of the first outgoing edge of `step` that matches.
pub(super) fn edge_target(
    plan: &Plan,
    step: &str,
    pred: impl Fn(&Edge) -> bool,
) -> Option<NodeIndex> {
    let n = *plan.index.get(step)?;
    plan.graph
        .edges(n)
        .find(|e| pred(e.weight()))
        .map(|e| e.target())
}
