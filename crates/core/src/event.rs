//! A stored event and the store's time format, as the campaign language reads them: the
//! CEL evaluator ([`crate::eval`]) takes a contact's history of these. The store crate
//! re-exports them (`nurture_store::StoredEvent`).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A point in time as the store keeps it: UTC.
pub type Ts = DateTime<Utc>;

/// Formats a timestamp as stored: RFC 3339, UTC, milliseconds (sorts as text).
pub fn ts(t: Ts) -> String {
    // Same text as `format("%Y-%m-%dT%H:%M:%S%.3fZ")` for years 0 to 9999, without
    // parsing a format string at every call.
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Formats a timestamp for output: RFC 3339, UTC, seconds unless sub-second.
pub fn ts_out(t: Ts) -> String {
    if t.timestamp_subsec_millis() == 0 {
        t.to_rfc3339_opts(SecondsFormat::Secs, true)
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn timestamps_read_as_the_strftime_formats_wrote_them() {
        let times = [
            Utc.with_ymd_and_hms(2026, 3, 1, 9, 5, 7).unwrap(),
            Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(1899, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.timestamp_millis_opt(1_780_000_000_123).unwrap(),
            Utc.timestamp_nanos(1_780_000_000_000_000_999),
        ];
        for t in times {
            assert_eq!(ts(t), t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string());
            let out = if t.timestamp_subsec_millis() == 0 {
                t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
            } else {
                t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
            };
            assert_eq!(ts_out(t), out, "{t:?}");
        }
    }
}
