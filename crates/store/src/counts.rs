//! Report counts: what campaigns did, counted in the commit that did it.
//!
//! Reports never scan the journal. Each commit adds [`Tally`]s to hourly rows of the
//! `report_counts` table (workflow, version, metric, hour, n) in the same transaction as
//! the state change they count, so a report reads a few rows per metric and hour. Metric
//! names are stable strings (documented in `docs/marketers.md`):
//!
//! | metric | counted when |
//! | --- | --- |
//! | `entered` | a run starts |
//! | `step:S` | a run begins step S |
//! | `edge:S:L` | a run leaves S by edge L (`0`, `1`.. for a branch's arms, `else`, a split's variant, `event`, `timeout`) |
//! | `exit:R` | a run ends for reason R (`end`, `goal`, `exit_if`, `superseded`, `error`, `cancelled`) |
//! | `goal_min:N` | a run reaches its goal N minutes after it started |
//! | `goal:S:V` | a run that took variant V of split S reaches its goal |
//! | `email.queued:S` | step S queues an email |
//! | `email.skipped.R:S` | step S sends no email, for reason R (`unsubscribed`, `no_consent`..) |
//! | `skipped.R:S` | plugin step S sends nothing on its channel, for reason R (`no_consent`, `opted_out`) |
//! | `deferred.quiet_hours:S` | step S waits for quiet hours to end |
//! | `email.sent:S`, `email.failed:S` .. | per message, once: see [`Scope::Message`] |
//! | `lifecycle:A>B` | a contact's lifecycle stage changes from A (`-` for none) to B |
//! | `lifecycle_min:A>B:N` | .. N minutes after it became A |
//! | `mql_points:R` | a contact becomes MQL with R (a scoring reason) having given these points |
//! | `waiting:S` | a run is open at step S (+1), or no longer (-1); a gauge, at [`GAUGE_HOUR`] |
//!
//! Contact-level metrics (`lifecycle..`, `mql_points..`) have the workflow `""` and
//! version 0.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{StoreError, Ts};

/// The hour of gauges (counts that go up and down, not events in time): the open runs
/// per step (`waiting:S`), stored at the Unix epoch, so a report of a period never sums
/// them, and the report of all time reads them apart.
pub const GAUGE_HOUR: Ts = chrono::DateTime::UNIX_EPOCH;

/// What a [`Tally`] counts for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// A workflow version.
    Workflow {
        /// The workflow's id.
        workflow: String,
        /// Its version.
        version: u32,
    },
    /// One outbox message, by key: counted once per message and metric (a second open of
    /// the same email is not another unique open), for the workflow, version and step that
    /// queued it, the step appended to the metric (`email.opened` -> `email.opened:S`).
    Message(String),
    /// The email most recently delivered to this contact ([`Scope::Message`]): a bounce
    /// or complaint a provider reports by address.
    LastEmail(String),
    /// No workflow: the contacts' lifecycle and scoring (workflow `""`, version 0).
    Contacts,
}

/// One count to add.
#[derive(Debug, Clone, PartialEq)]
pub struct Tally {
    /// What it counts for.
    pub scope: Scope,
    /// The metric (see the module doc).
    pub metric: String,
    /// When it happened (its hour's row gets it).
    pub at: Ts,
    /// How many.
    pub n: i64,
}

impl Tally {
    /// A count of 1 for a workflow version.
    pub fn workflow(workflow: &str, version: u32, metric: String, at: Ts) -> Tally {
        let scope = Scope::Workflow {
            workflow: workflow.to_string(),
            version,
        };
        Tally::of(scope, metric, at, 1)
    }

    /// A count of `n`.
    pub fn of(scope: Scope, metric: String, at: Ts, n: i64) -> Tally {
        Tally {
            scope,
            metric,
            at,
            n,
        }
    }
}

/// The per-message metric an email's delivery outcome counts (`email.sent`,
/// `email.failed`, `email.ambiguous`); retries and deferrals by the deliverer count none.
pub fn outcome_metric(outcome: &crate::OutboxOutcome) -> Option<&'static str> {
    use crate::OutboxOutcome as O;
    match outcome {
        O::Delivered { .. } => Some("email.sent"),
        O::Failed { .. } => Some("email.failed"),
        O::Ambiguous { .. } => Some("email.ambiguous"),
        _ => None,
    }
}

/// What the send limits held back at a claim: `email.deferred.frequency_cap` (or
/// `rate_limit`) per email message, `deferred.CAUSE` per message of another channel.
pub fn deferrals<'a>(
    entries: impl IntoIterator<Item = &'a crate::OutboxEntry>,
    deferred: &[crate::limits::Deferral],
    now: Ts,
) -> Vec<Tally> {
    let entries: Vec<&crate::OutboxEntry> = entries.into_iter().collect();
    deferred
        .iter()
        .filter_map(|d| {
            let e = entries.iter().find(|e| e.key == d.key)?;
            let prefix = if e.kind == crate::OutboxKind::Email {
                "email."
            } else {
                ""
            };
            Some(message(
                &d.key,
                format!("{prefix}deferred.{}", d.cause),
                now,
            ))
        })
        .collect()
}

/// A per-message count of 1.
pub fn message(key: &str, metric: impl Into<String>, at: Ts) -> Tally {
    Tally::of(Scope::Message(key.to_string()), metric.into(), at, 1)
}

/// The start of `t`'s hour.
pub fn hour_of(t: Ts) -> Ts {
    use chrono::{DurationRound, TimeDelta};
    t.duration_trunc(TimeDelta::hours(1)).unwrap_or(t)
}

/// Workflow-scope tallies summed by (workflow, version, metric, hour) ([`merged`]); the
/// others as they are (each is counted once per message, or resolved to one).
pub fn summed(tallies: &[Tally]) -> (Vec<CountRow>, Vec<&Tally>) {
    let mut rows = Vec::new();
    let mut rest = Vec::new();
    for t in tallies {
        let (workflow, version) = match &t.scope {
            Scope::Workflow { workflow, version } => (workflow.clone(), *version),
            Scope::Contacts => (String::new(), 0),
            _ => {
                rest.push(t);
                continue;
            }
        };
        rows.push(CountRow {
            workflow,
            version,
            metric: t.metric.clone(),
            hour: hour_of(t.at),
            n: t.n,
        });
    }
    (merged(rows), rest)
}

/// The row a per-message tally `t` adds once resolved to its message's workflow, version
/// (0 when its run is gone) and step: the step is appended to the metric
/// (`email.opened` -> `email.opened:S`).
pub fn message_row(
    t: &Tally,
    workflow: String,
    version: Option<i64>,
    step: Option<String>,
) -> CountRow {
    CountRow {
        workflow,
        version: version.unwrap_or(0) as u32,
        metric: format!("{}:{}", t.metric, step.unwrap_or_default()),
        hour: hour_of(t.at),
        n: t.n,
    }
}

/// `rows` with those of one (workflow, version, metric, hour) summed into one, in key
/// order: what one upsert statement may hold (Postgres refuses a row twice).
pub fn merged(rows: Vec<CountRow>) -> Vec<CountRow> {
    use std::collections::BTreeMap;
    let mut sums: BTreeMap<(String, u32, String, Ts), i64> = BTreeMap::new();
    for r in rows {
        *sums
            .entry((r.workflow, r.version, r.metric, r.hour))
            .or_default() += r.n;
    }
    sums.into_iter()
        .map(|((workflow, version, metric, hour), n)| CountRow {
            workflow,
            version,
            metric,
            hour,
            n,
        })
        .collect()
}

/// One stored count: a metric of a workflow version in one hour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CountRow {
    /// The workflow (`""` for contact-level metrics).
    pub workflow: String,
    /// Its version (0 for contact-level metrics).
    pub version: u32,
    /// The metric.
    pub metric: String,
    /// The start of the hour.
    pub hour: Ts,
    /// The count.
    pub n: i64,
}

/// Which counts [`CountView::counts`] returns.
#[derive(Debug, Clone, Default)]
pub struct CountFilter {
    /// Only this workflow (`Some("")` for contact-level metrics).
    pub workflow: Option<String>,
    /// Only this version.
    pub version: Option<u32>,
    /// Only hours starting at or after this.
    pub since: Option<Ts>,
    /// Only hours starting before this.
    pub until: Option<Ts>,
    /// Each metric summed over the hours selected: one row per workflow, version and
    /// metric, at the earliest of its hours (what a report without periods reads: tens
    /// of rows instead of metrics x hours).
    pub whole: bool,
}

/// Reading the report counts. Every [`crate::Store`] implements it.
#[async_trait]
pub trait CountView: Send + Sync {
    /// The counts `filter` selects, by workflow, version, metric and hour.
    async fn counts(&self, filter: &CountFilter) -> Result<Vec<CountRow>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn tallies_of_one_hour_sum_into_one_row() {
        let t = |h: u32, m: u32| chrono::Utc.with_ymd_and_hms(2026, 3, 2, h, m, 0).unwrap();
        let tallies = [
            Tally::workflow("w", 1, "entered".into(), t(9, 5)),
            Tally::workflow("w", 1, "entered".into(), t(9, 55)),
            Tally::workflow("w", 1, "entered".into(), t(10, 0)),
            Tally::workflow("w", 2, "entered".into(), t(9, 0)),
            Tally::of(Scope::Contacts, "lifecycle:->mql".into(), t(9, 1), 1),
            Tally::of(Scope::Message("k".into()), "email.sent".into(), t(9, 1), 1),
        ];
        let (rows, rest) = summed(&tallies);
        let got: Vec<(&str, u32, &str, u32, i64)> = rows
            .iter()
            .map(|r| {
                use chrono::Timelike;
                (
                    r.workflow.as_str(),
                    r.version,
                    r.metric.as_str(),
                    r.hour.hour(),
                    r.n,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("", 0, "lifecycle:->mql", 9, 1),
                ("w", 1, "entered", 9, 2),
                ("w", 1, "entered", 10, 1),
                ("w", 2, "entered", 9, 1),
            ]
        );
        assert_eq!(rest.len(), 1);
    }
}
