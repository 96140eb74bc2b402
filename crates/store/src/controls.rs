//! Operators' controls of a workflow: paused or running, by whom, when and why
//! (`nurture workflows pause|resume`, table `workflow_controls`). A paused workflow
//! enrols nobody and holds its runs' timers and sends; the engine reads the controls
//! with the deployed versions, every few seconds.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{StoreError, Ts};

/// The last pause or resume of a workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowControl {
    /// The workflow.
    pub workflow: String,
    /// Whether it is paused.
    pub paused: bool,
    /// Who paused or resumed it.
    pub by: String,
    /// When.
    pub at: Ts,
    /// Why.
    pub reason: String,
}

/// The controls table. Every [`crate::Store`] implements it.
#[async_trait]
pub trait ControlStore: Send + Sync {
    /// Records that `c.workflow` is now paused (or not), replacing the last record;
    /// texts over [`crate::versions::MAX_LABEL`] are [`StoreError::TooLarge`].
    async fn set_control(&self, c: &WorkflowControl) -> Result<(), StoreError>;

    /// The last control of every workflow ever paused, by workflow.
    async fn controls(&self) -> Result<Vec<WorkflowControl>, StoreError>;
}

/// Checks a control's texts before it is written.
pub fn check_control(c: &WorkflowControl) -> Result<(), StoreError> {
    let limit = crate::versions::MAX_LABEL;
    crate::versions::bounded(&c.workflow, limit, || {
        "a workflow control's workflow".into()
    })?;
    crate::versions::bounded(&c.by, limit, || "a workflow control's `by`".into())?;
    crate::versions::bounded(&c.reason, limit, || "a workflow control's reason".into())
}
