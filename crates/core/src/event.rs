//! A stored event and the store's time format, as the campaign language reads them: the
//! CEL evaluator ([`crate::eval`]) takes a contact's history of these. The store crate
//! re-exports them (`nurture_store::StoredEvent`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A point in time as the store keeps it: UTC.
pub type Ts = DateTime<Utc>;

/// Formats a timestamp as stored: RFC 3339, UTC, milliseconds (sorts as text).
pub fn ts(t: Ts) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Formats a timestamp for output: RFC 3339, UTC, seconds unless sub-second.
pub fn ts_out(t: Ts) -> String {
    if t.timestamp_subsec_millis() == 0 {
        t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        ts(t)
    }
}

/// An event as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredEvent {
    /// Insertion order, used to apply a contact's events in order.
    pub seq: i64,
    /// The event's id (its idempotency key).
    pub id: String,
    /// The id of the contact it is about.
    pub contact: String,
    /// Its type, e.g. `page.visited` (`type` in JSON).
    #[serde(rename = "type")]
    pub kind: String,
    /// When it happened (as its sender says, not when it was stored).
    pub at: Ts,
    /// Its payload, as sent.
    pub data: Value,
}
