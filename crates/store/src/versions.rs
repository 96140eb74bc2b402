//! Deployed workflow versions: the table `workflow_versions` and the queries a deploy
//! needs about open runs.
//!
//! Every distinct compiled workflow a project deploys is kept as a [`WorkflowVersion`]:
//! its source text, a hash of its content, when and by whom it was deployed. Runs are
//! pinned to the version they started on (`runs.workflow_version`); workers load a
//! version's plan from here when a run of it comes due. A deploy is all or nothing and
//! fenced: it names, per workflow, the latest version it planned against, and fails with
//! [`StoreError::Conflict`] ([`ConflictKind::WorkflowVersion`]) when another deploy moved
//! one of them meanwhile, storing nothing.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{ConflictKind, RunStatus, StoreError, Ts};

/// The largest workflow source a deploy stores, in bytes (1 MiB): a bigger one is
/// [`StoreError::TooLarge`].
pub const MAX_SOURCE: usize = 1 << 20;

/// The largest workflow id, content hash, path or `deployed_by` a deploy stores, and the
/// largest worker note, in bytes (4 KiB): a bigger one is [`StoreError::TooLarge`].
pub const MAX_LABEL: usize = 4 << 10;

/// Every run status, in the order of [`RunStatus`]'s variants.
const STATUSES: [RunStatus; 6] = [
    RunStatus::Active,
    RunStatus::Waiting,
    RunStatus::Completed,
    RunStatus::Converted,
    RunStatus::Exited,
    RunStatus::Failed,
];

/// The stored statuses of open runs ([`RunStatus::is_open`]), as the queries of open
/// runs filter `runs.status`.
pub fn open_statuses() -> Vec<&'static str> {
    STATUSES
        .into_iter()
        .filter(|s| s.is_open())
        .map(RunStatus::as_str)
        .collect()
}

/// A stored version number (an SQL integer) as the `u32` it was written from; anything
/// else is [`StoreError::Corrupt`].
pub fn stored_version(v: i64) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("workflow version {v}")))
}

/// Checks the sizes of the versions a deploy would store (before any write):
/// [`StoreError::TooLarge`] for a source over [`MAX_SOURCE`] or another text over
/// [`MAX_LABEL`].
pub fn check_sizes(versions: &[WorkflowVersion]) -> Result<(), StoreError> {
    for v in versions {
        let of = |field: &str| {
            let id: String = v.workflow.chars().take(64).collect();
            format!("{field} of workflow {id:?} v{}", v.version)
        };
        bounded(&v.source, MAX_SOURCE, || of("the source"))?;
        bounded(&v.workflow, MAX_LABEL, || of("the id"))?;
        bounded(&v.hash, MAX_LABEL, || of("the hash"))?;
        bounded(&v.path, MAX_LABEL, || of("the path"))?;
        bounded(&v.deployed_by, MAX_LABEL, || of("deployed_by"))?;
    }
    Ok(())
}

/// [`StoreError::TooLarge`] (naming `what`) when `text` is over `limit` bytes.
pub fn bounded(text: &str, limit: usize, what: impl FnOnce() -> String) -> Result<(), StoreError> {
    if text.len() > limit {
        return Err(StoreError::TooLarge {
            what: what(),
            size: text.len(),
            limit,
        });
    }
    Ok(())
}

/// One deployed version of one workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowVersion {
    /// The workflow's id.
    pub workflow: String,
    /// The file's `version`.
    pub version: u32,
    /// Hex SHA-256 of the workflow's content (`nurture_core::versions::content_hash`).
    pub hash: String,
    /// The workflow file's text, compiled again by the workers that load it.
    pub source: String,
    /// The file's path relative to the project, for diagnostics.
    pub path: String,
    /// When it was deployed.
    pub deployed_at: Ts,
    /// Who or what deployed it: `nurture deploy (user@host)`, `nurture run (host pid 42)`.
    pub deployed_by: String,
}

/// What a deploy expects the latest deployed version of a workflow to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The workflow's id.
    pub workflow: String,
    /// Its latest deployed version when the deploy was planned; `None`: none was.
    pub version: Option<u32>,
}

/// The latest deployed version of a workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LatestVersion {
    /// The workflow's id.
    pub workflow: String,
    /// Its highest deployed version.
    pub version: u32,
    /// That version's content hash.
    pub hash: String,
}

/// How many open runs (active or waiting) of a workflow are at one step of one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpenRunCount {
    /// The version the runs are pinned to.
    pub version: u32,
    /// The step they are at; `None` for a run that has not reached a step.
    pub step: Option<String>,
    /// How many.
    pub runs: i64,
}

/// An open run of an older version, as a deploy's migration pass walks them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenRunRef {
    /// The run's id.
    pub run: String,
    /// Its contact.
    pub contact: String,
}

/// The versions table. Every [`crate::Store`] implements it.
#[async_trait]
pub trait VersionStore: Send + Sync {
    /// Stores `versions` in one transaction when, for every entry of `expected`, the
    /// workflow's highest stored version is still `expected.version`; otherwise stores
    /// nothing and fails with a conflict ([`ConflictKind::WorkflowVersion`], detail: the
    /// workflow). A version already stored with the same hash is left as it is; one stored
    /// with another hash is a conflict too.
    async fn deploy(
        &self,
        versions: &[WorkflowVersion],
        expected: &[Expected],
    ) -> Result<(), StoreError>;

    /// The highest deployed version of every workflow, by workflow id.
    async fn latest_versions(&self) -> Result<Vec<LatestVersion>, StoreError>;

    /// One stored version, with its source.
    async fn workflow_version(
        &self,
        workflow: &str,
        version: u32,
    ) -> Result<Option<WorkflowVersion>, StoreError>;

    /// Every stored version (of `workflow` only, when given), by workflow then version.
    async fn workflow_versions(
        &self,
        workflow: Option<&str>,
    ) -> Result<Vec<WorkflowVersion>, StoreError>;

    /// The open runs of `workflow`, counted per version and step (by version, then step).
    async fn open_runs(&self, workflow: &str) -> Result<Vec<OpenRunCount>, StoreError>;

    /// Up to `limit` open runs of `workflow` pinned to a version below `below`, by run
    /// id, after the run id `after` when given (to walk them in batches).
    async fn open_runs_below(
        &self,
        workflow: &str,
        below: u32,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<OpenRunRef>, StoreError>;

    /// Records a worker's note (`None` clears it): what it refuses to do and why, shown
    /// by `nurture workers`. A store without a workers table ignores it.
    async fn set_worker_note(&self, _id: &str, _note: Option<&str>) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The conflict a fenced deploy fails with when `workflow` moved on.
pub fn version_conflict(workflow: &str) -> StoreError {
    StoreError::Conflict {
        what: ConflictKind::WorkflowVersion,
        detail: workflow.to_string(),
        source: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The open statuses are exactly those [`RunStatus::is_open`] says, and
    /// `STATUSES` lists every variant (a new one must be added there).
    #[test]
    fn open_statuses_are_the_open_run_statuses() {
        assert_eq!(open_statuses(), ["active", "waiting"]);
        for s in STATUSES {
            // Exhaustive: a new variant fails to compile here; list it in STATUSES too.
            match s {
                RunStatus::Active
                | RunStatus::Waiting
                | RunStatus::Completed
                | RunStatus::Converted
                | RunStatus::Exited
                | RunStatus::Failed => {}
            }
            assert_eq!(RunStatus::parse(s.as_str()).unwrap(), s);
        }
    }

    /// A source over 1 MiB is refused with a typed, non-retryable error naming it.
    #[test]
    fn an_oversized_source_is_refused_before_any_write() {
        let v = WorkflowVersion {
            workflow: "welcome".into(),
            version: 2,
            hash: "h".into(),
            source: "x".repeat(MAX_SOURCE + 1),
            path: "workflows/welcome.yaml".into(),
            deployed_at: chrono::DateTime::UNIX_EPOCH,
            deployed_by: "test".into(),
        };
        let e = check_sizes(std::slice::from_ref(&v)).unwrap_err();
        assert!(
            matches!(e, StoreError::TooLarge { size, limit: MAX_SOURCE, .. } if size == MAX_SOURCE + 1)
        );
        assert!(!e.is_retryable() && !e.is_unavailable(), "{e:?}");
        assert!(e.to_string().contains("welcome"), "{e}");
        let fits = WorkflowVersion {
            source: "x".repeat(MAX_SOURCE),
            ..v
        };
        check_sizes(&[fits]).unwrap();
    }
}
