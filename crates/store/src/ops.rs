//! What an operator watches: queued events, due timers and their lag, and the outbox
//! entries not delivered yet, counted by the store (the dashboard's operations page).

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::Serialize;

use crate::{StoreError, Ts};

/// Each count stops here: a backlog larger than this reads as `COUNT_CAP + 1` ("more
/// than 100,000"), so the page costs the same however large the backlog is.
pub const COUNT_CAP: i64 = 100_000;

/// The queues of a store at one moment; each count at most [`COUNT_CAP`] + 1.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QueueSummary {
    /// Events stored and not processed yet.
    pub queued_events: i64,
    /// Run timers due at the moment asked (or before).
    pub due_timers: i64,
    /// The due time of the oldest of them.
    pub oldest_due: Option<Ts>,
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

/// The SQL (the same on SQLite and Postgres) of the counts, one column each, every count
/// stopping at [`COUNT_CAP`] + 1: `queued_events`, `due_timers` (due at the first
/// parameter, `$1`/`?1`), `oldest_due` (the earliest timer) and one column per state of
/// [`OPEN_OUTBOX_STATES`], named as the state.
pub fn counts_sql(param: &str) -> String {
    let cap = COUNT_CAP + 1;
    let capped =
        |from: &str| format!("(SELECT count(*) FROM (SELECT 1 FROM {from} LIMIT {cap}) c)");
    let mut cols = vec![
        format!("{} AS queued_events", capped("inbox")),
        format!(
            "{} AS due_timers",
            capped(&format!("timers WHERE due_at <= {param}"))
        ),
        "(SELECT MIN(due_at) FROM timers) AS oldest_due".to_string(),
    ];
    cols.extend(OPEN_OUTBOX_STATES.iter().map(|s| {
        format!(
            "{} AS {}",
            capped(&format!("outbox WHERE {}", s.sql())),
            s.as_str()
        )
    }));
    format!("SELECT {}", cols.join(", "))
}
