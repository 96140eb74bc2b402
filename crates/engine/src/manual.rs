//! What operators do by hand: cancel a run, start one for a contact. Each is journaled
//! with who did it and why (`cancelled`, `started_by_hand`), in one fenced unit of work
//! of the contact, like any step.

use serde_json::json;

use crate::{Effect, Engine, EngineError, Work};
use nurture_store::{RunStatus, Ts};

/// Why a manual action was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManualError {
    /// No run has that id.
    #[error("no run `{0}`")]
    NoRun(String),
    /// The run has ended already.
    #[error("run `{0}` has ended already ({1})")]
    Ended(String, &'static str),
    /// No contact has that id.
    #[error("no contact `{0}`")]
    NoContact(String),
    /// The project has no such workflow (or this process does not enrol into it).
    #[error("no workflow `{0}` to start")]
    NoWorkflow(String),
    /// The contact is in the workflow already.
    #[error("the contact has an open run of `{0}` already")]
    AlreadyIn(String),
    /// The workflow is paused: nobody is enrolled, by hand neither.
    #[error("workflow `{0}` is paused; resume it first (`nurture workflows resume`)")]
    Paused(String),
    /// The store or the engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl From<nurture_store::StoreError> for ManualError {
    fn from(e: nurture_store::StoreError) -> Self {
        ManualError::Engine(e.into())
    }
}

impl Engine {
    /// Cancels the open run `run_id`: it ends `exited`, reason `cancelled`, with `by` and
    /// `why` in its journal.
    pub async fn cancel_run(
        &self,
        run_id: &str,
        by: &str,
        why: &str,
        now: Ts,
    ) -> Result<Vec<Effect>, ManualError> {
        let run = self
            .store
            .run(run_id)
            .await?
            .ok_or_else(|| ManualError::NoRun(run_id.to_string()))?;
        if !run.status.is_open() {
            return Err(ManualError::Ended(run.id, run.status.as_str()));
        }
        let done = std::sync::atomic::AtomicBool::new(false);
        let f = |w: &mut Work<'_>| {
            done.store(
                w.cancel(run_id, by, why),
                std::sync::atomic::Ordering::Relaxed,
            );
            Ok(())
        };
        let effects = self.with_retry(&run.contact, now, f).await?;
        if !done.into_inner() {
            // It ended between the read above and the unit of work.
            return Err(ManualError::Ended(run.id, "ended meanwhile"));
        }
        Ok(effects)
    }

    /// Cancels every open run of `contact` (none is not an error).
    pub async fn cancel_contact(
        &self,
        contact: &str,
        by: &str,
        why: &str,
        now: Ts,
    ) -> Result<Vec<Effect>, ManualError> {
        let runs = self.store.runs_of_contact(contact).await?;
        let open: Vec<String> = runs
            .into_iter()
            .filter(|r| r.status.is_open())
            .map(|r| r.id)
            .collect();
        let f = |w: &mut Work<'_>| {
            for id in &open {
                w.cancel(id, by, why);
            }
            Ok(())
        };
        Ok(self.with_retry(contact, now, f).await?)
    }

    /// Starts a run of `workflow` (its current version) for `contact` now, whatever its
    /// triggers and re-entry say; refused while the contact has an open run of it.
    pub async fn start_run(
        &self,
        workflow: &str,
        contact: &str,
        by: &str,
        why: &str,
        now: Ts,
    ) -> Result<Vec<Effect>, ManualError> {
        if self.plans.current().get(workflow).is_none() {
            return Err(ManualError::NoWorkflow(workflow.to_string()));
        }
        if self.is_paused(workflow) {
            return Err(ManualError::Paused(workflow.to_string()));
        }
        if self.store.contact(contact).await?.is_none() {
            return Err(ManualError::NoContact(contact.to_string()));
        }
        let open = self.store.runs_of_contact(contact).await?;
        if open
            .iter()
            .any(|r| r.workflow == workflow && r.status.is_open())
        {
            return Err(ManualError::AlreadyIn(workflow.to_string()));
        }
        let started = std::sync::atomic::AtomicBool::new(false);
        let f = |w: &mut Work<'_>| {
            let s = w.start_by_hand(workflow, by, why)?;
            started.store(s, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        };
        let effects = self.with_retry(contact, now, f).await?;
        if !started.into_inner() {
            if self.store.contact(contact).await?.is_none() {
                // Erased meanwhile.
                return Err(ManualError::NoContact(contact.to_string()));
            }
            // Another start (or an enrolment) opened a run meanwhile.
            return Err(ManualError::AlreadyIn(workflow.to_string()));
        }
        Ok(effects)
    }
}

impl Work<'_> {
    /// Ends run `run_id` of this unit's contact as cancelled, if it is open; whether it did.
    fn cancel(&mut self, run_id: &str, by: &str, why: &str) -> bool {
        let Some(i) = self.runs.iter().position(|r| r.id == run_id) else {
            return false;
        };
        if !self.runs[i].status.is_open() {
            return false;
        }
        self.journal(Some(i), "cancelled", json!({"by": by, "reason": why}));
        self.end_run(i, RunStatus::Exited, "cancelled");
        true
    }

    /// Starts a run of `workflow` by hand, unless one is open (a concurrent start);
    /// whether it did.
    fn start_by_hand(&mut self, workflow: &str, by: &str, why: &str) -> Result<bool, EngineError> {
        if !self.contact_exists {
            // Erased since the caller looked (the caller tells it apart).
            return Ok(false);
        }
        let current = self.current.clone();
        let Some(plan) = current.get(workflow) else {
            return Ok(false);
        };
        if self
            .runs
            .iter()
            .any(|r| r.workflow == workflow && r.status.is_open())
        {
            return Ok(false);
        }
        let trigger = json!({"by_hand": {"by": by, "reason": why}});
        self.start(plan, &format!("by-hand:{by}"), trigger, None)?;
        Ok(true)
    }
}
