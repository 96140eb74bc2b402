//! The outbox as operators see it: each entry's state in words (queued, retrying,
//! deferred, sent, failed, ambiguous) with why, for `nurture runs show` and
//! `nurture outbox list`.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{OutboxKind, StoreError, Ts};

/// The most entries one listing returns.
pub const MAX_LIST: i64 = 10_000;

/// What became of an outbox entry so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboxState {
    /// Waiting for its first attempt.
    Queued,
    /// An attempt failed; it is tried again at `due_at`.
    Retrying,
    /// Not attempted yet (quiet hours, a frequency cap, a rate limit): due at `due_at`.
    Deferred,
    /// Delivered.
    Sent,
    /// Failed for good.
    Failed,
    /// Interrupted after the server may have accepted it; `nurture outbox retry KEY`
    /// requeues it once checked.
    Ambiguous,
    /// Not sent, for good: the address is on the suppression list.
    Skipped,
}

impl OutboxState {
    /// Every state, in the order above.
    pub const ALL: [OutboxState; 7] = [
        OutboxState::Queued,
        OutboxState::Retrying,
        OutboxState::Deferred,
        OutboxState::Sent,
        OutboxState::Failed,
        OutboxState::Ambiguous,
        OutboxState::Skipped,
    ];

    /// Its name, as listed and filtered.
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxState::Queued => "queued",
            OutboxState::Retrying => "retrying",
            OutboxState::Deferred => "deferred",
            OutboxState::Sent => "sent",
            OutboxState::Failed => "failed",
            OutboxState::Ambiguous => "ambiguous",
            OutboxState::Skipped => "skipped",
        }
    }

    /// The state of a stored row: its `state` column, attempts and last error.
    pub fn of_row(state: &str, attempts: i64, last_error: Option<&str>) -> OutboxState {
        match (state, attempts, last_error) {
            ("delivered", _, _) => OutboxState::Sent,
            ("failed", _, _) => OutboxState::Failed,
            ("ambiguous", _, _) => OutboxState::Ambiguous,
            ("skipped", _, _) => OutboxState::Skipped,
            (_, 0, Some(_)) => OutboxState::Deferred,
            (_, n, _) if n > 0 => OutboxState::Retrying,
            _ => OutboxState::Queued,
        }
    }

    /// The SQL condition on `state`, `attempts` and `last_error` that selects it (the same
    /// on SQLite and Postgres).
    pub fn sql(self) -> &'static str {
        match self {
            OutboxState::Sent => "state = 'delivered'",
            OutboxState::Failed => "state = 'failed'",
            OutboxState::Ambiguous => "state = 'ambiguous'",
            OutboxState::Skipped => "state = 'skipped'",
            OutboxState::Deferred => {
                "state = 'pending' AND attempts = 0 AND last_error IS NOT NULL"
            }
            OutboxState::Retrying => "state = 'pending' AND attempts > 0",
            OutboxState::Queued => "state = 'pending' AND attempts = 0 AND last_error IS NULL",
        }
    }
}

impl std::str::FromStr for OutboxState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        OutboxState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = OutboxState::ALL.iter().map(|s| s.as_str()).collect();
                format!("no outbox state `{s}`; one of {}", names.join(", "))
            })
    }
}

/// One outbox entry, without its payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxRow {
    /// Its idempotency key (what `nurture outbox retry` takes).
    pub key: String,
    /// Which channel delivers it.
    pub kind: OutboxKind,
    /// The contact it is for.
    pub contact: String,
    /// The run, workflow and step that queued it.
    pub run_id: Option<String>,
    /// The workflow of that run.
    pub workflow: Option<String>,
    /// The step that queued it.
    pub step: Option<String>,
    /// What became of it.
    pub state: OutboxState,
    /// Why it is deferred, retried, failed or ambiguous.
    pub reason: Option<String>,
    /// Delivery attempts so far.
    pub attempts: i64,
    /// When it was queued.
    pub created_at: Ts,
    /// When it is (or was) next due.
    pub due_at: Ts,
}

/// Which entries [`OutboxView::list_outbox`] returns: all filters hold; newest first.
#[derive(Debug, Clone, Default)]
pub struct OutboxFilter {
    /// Only in this state.
    pub state: Option<OutboxState>,
    /// Only for this contact id.
    pub contact: Option<String>,
    /// Only queued by this workflow.
    pub workflow: Option<String>,
    /// At most this many (capped at [`MAX_LIST`]).
    pub limit: i64,
}

/// Reading the outbox table. Every [`crate::Store`] implements it.
#[async_trait]
pub trait OutboxView: Send + Sync {
    /// The entries whose keys are among `keys` (unknown keys are left out), in key order.
    async fn outbox_entries(&self, keys: &[String]) -> Result<Vec<OutboxRow>, StoreError>;

    /// The entries `filter` selects, newest first.
    async fn list_outbox(&self, filter: &OutboxFilter) -> Result<Vec<OutboxRow>, StoreError>;
}
