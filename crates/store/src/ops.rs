//! What an operator watches: queued events, due timers and their lag, and the outbox
//! entries not delivered yet, counted by the store (the dashboard's operations page).

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::Serialize;

use crate::{StoreError, Ts};

/// The queues of a store at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QueueSummary {
    /// Events stored and not processed yet.
    pub queued_events: i64,
    /// Run timers due at the moment asked (or before).
    pub due_timers: i64,
    /// The due time of the oldest of them.
    pub oldest_due: Option<Ts>,
    /// Timers set for later.
    pub later_timers: i64,
    /// Outbox entries by [`crate::OutboxState`] name, for the states that still need
    /// something: `queued`, `retrying`, `deferred`, `failed`, `ambiguous`.
    pub outbox: BTreeMap<String, i64>,
}

/// Counts of the queues. Every [`crate::Store`] implements it.
#[async_trait]
pub trait OpsView: Send + Sync {
    /// The queues at `now`.
    async fn queue_summary(&self, now: Ts) -> Result<QueueSummary, StoreError>;
}

/// The outbox states [`QueueSummary::outbox`] counts.
pub const OPEN_OUTBOX_STATES: [crate::OutboxState; 5] = [
    crate::OutboxState::Queued,
    crate::OutboxState::Retrying,
    crate::OutboxState::Deferred,
    crate::OutboxState::Failed,
    crate::OutboxState::Ambiguous,
];

/// One SQL statement (the same on SQLite and Postgres) counting the outbox entries of
/// [`OPEN_OUTBOX_STATES`], one column per state, named as the state.
pub fn outbox_counts_sql() -> String {
    let cols: Vec<String> = OPEN_OUTBOX_STATES
        .iter()
        .map(|s| {
            format!(
                "COALESCE(SUM(CASE WHEN {} THEN 1 ELSE 0 END), 0) AS {}",
                s.sql(),
                s.as_str()
            )
        })
        .collect();
    format!(
        "SELECT {} FROM outbox WHERE state IN ('pending', 'failed', 'ambiguous')",
        cols.join(", ")
    )
}
