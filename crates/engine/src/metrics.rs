//! The process's Prometheus metrics (`prometheus-client`: no global recorder, so several
//! engines in one process, as in tests, each count their own).
//!
//! One [`Metrics`] per [`crate::Engine`]; its clones share the same counters. The engine
//! counts commits, units, steps, conflicts and events; the deliverer (nurture-channels)
//! counts deliveries; the server sets the store gauges at scrape time and renders
//! [`Metrics::encode`] at `GET /metrics`. Labels are bounded: channel, outcome, state,
//! status, never a contact, URL or free text.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of a delivery: its channel (outbox kind) and outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    /// `email`, `webhook`, `notify`, `plugin`, or `unknown`.
    pub channel: String,
    /// `delivered`, `retry`, `failed`, `deferred`, `ambiguous`.
    pub outcome: String,
}

/// A channel label alone.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabel {
    /// The channel (outbox kind).
    pub channel: String,
}

/// A status label (events) or state label (outbox).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    /// The status or state.
    pub status: String,
}

/// An outbox state label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    /// `queued`, `retrying`, `deferred`, `failed`, `ambiguous`.
    pub state: String,
}

/// A plugin label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabel {
    /// The plugin's name (from the project's manifests: bounded).
    pub plugin: String,
}

fn seconds() -> Histogram {
    // 0.5 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every metric of a process. Cheap to clone (the counters are shared).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    /// Events stored, by outcome: `accepted`, `duplicate`.
    pub events_ingested: Family<StatusLabel, Counter>,
    /// Events refused, by status: `rejected` (invalid), `conflict`.
    pub events_rejected: Family<StatusLabel, Counter>,
    /// Units of work committed (one per contact and commit).
    pub units: Counter,
    /// Workflow steps committed.
    pub steps: Counter,
    /// Engine commits' latency.
    pub commit_seconds: Histogram,
    /// Units of work per group commit.
    pub group_commit_units: Histogram,
    /// Commits refused as conflicting (then split or retried).
    pub conflicts: Counter,
    /// Delivery attempts' latency per channel.
    pub delivery_seconds: Family<ChannelLabel, Histogram, fn() -> Histogram>,
    /// Delivery outcomes per channel.
    pub deliveries: Family<DeliveryLabels, Counter>,
    /// Claimed outbox entries left unattempted because their lease was running out.
    pub lease_expiries: Counter,
    /// Plugin calls' latency.
    pub plugin_call_seconds: Family<PluginLabel, Histogram, fn() -> Histogram>,
    /// Plugin calls that trapped (deadline, memory, panic, trap).
    pub plugin_traps: Family<PluginLabel, Counter>,
    /// Events stored and not processed yet (read from the store at scrape time).
    pub queued_events: Gauge,
    /// Run timers due now (scrape time).
    pub due_timers: Gauge,
    /// Seconds since the oldest timer became due (0 when none is due).
    pub oldest_due_timer_lag: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Outbox entries not delivered yet, by state.
    pub outbox_entries: Family<StateLabel, Gauge>,
    /// Workers alive (the store's registry; 1 on a store without one).
    pub workers_alive: Gauge,
    /// Scrapes whose store reads failed or took too long.
    pub scrape_store_errors: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// A fresh set of metrics, registered under the `nurture_` prefix.
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("nurture");
        let m = Metrics {
            registry: Arc::new(Registry::default()),
            events_ingested: Family::default(),
            events_rejected: Family::default(),
            units: Counter::default(),
            steps: Counter::default(),
            commit_seconds: seconds(),
            group_commit_units: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            conflicts: Counter::default(),
            delivery_seconds: Family::new_with_constructor(seconds),
            deliveries: Family::default(),
            lease_expiries: Counter::default(),
            plugin_call_seconds: Family::new_with_constructor(seconds),
            plugin_traps: Family::default(),
            queued_events: Gauge::default(),
            due_timers: Gauge::default(),
            oldest_due_timer_lag: Gauge::default(),
            outbox_entries: Family::default(),
            workers_alive: Gauge::default(),
            scrape_store_errors: Counter::default(),
        };
        let c = m.clone();
        r.register(
            "events_ingested",
            "Events stored, by status (accepted, duplicate)",
            c.events_ingested,
        );
        r.register(
            "events_rejected",
            "Events refused, by status (rejected, conflict)",
            c.events_rejected,
        );
        r.register("units", "Units of work committed", c.units);
        r.register("steps", "Workflow steps committed", c.steps);
        r.register(
            "commit_duration_seconds",
            "Latency of the engine's commits",
            c.commit_seconds,
        );
        r.register(
            "group_commit_units",
            "Units of work per group commit",
            c.group_commit_units,
        );
        r.register(
            "commit_conflicts",
            "Commits refused as conflicting (split or retried)",
            c.conflicts,
        );
        r.register(
            "delivery_duration_seconds",
            "Latency of delivery attempts, by channel",
            c.delivery_seconds,
        );
        r.register(
            "deliveries",
            "Delivery outcomes, by channel and outcome",
            c.deliveries,
        );
        r.register(
            "lease_expiries",
            "Claimed outbox entries left to their lease (not attempted in time)",
            c.lease_expiries,
        );
        r.register(
            "plugin_call_duration_seconds",
            "Latency of plugin calls, by plugin",
            c.plugin_call_seconds,
        );
        r.register(
            "plugin_traps",
            "Plugin calls that trapped, by plugin",
            c.plugin_traps,
        );
        r.register(
            "queued_events",
            "Events stored and not processed yet",
            c.queued_events,
        );
        r.register("due_timers", "Run timers due now", c.due_timers);
        r.register(
            "oldest_due_timer_lag_seconds",
            "Seconds since the oldest due timer became due",
            c.oldest_due_timer_lag,
        );
        r.register(
            "outbox_entries",
            "Outbox entries not delivered yet, by state",
            c.outbox_entries,
        );
        r.register("workers_alive", "Workers alive", c.workers_alive);
        r.register(
            "scrape_store_errors",
            "Scrapes whose store reads failed or timed out",
            c.scrape_store_errors,
        );
        Metrics {
            registry: Arc::new(r),
            ..m
        }
    }

    /// Counts the outcome of one event offered to ingestion.
    pub fn event(&self, status: &str) {
        let family = match status {
            "accepted" | "duplicate" => &self.events_ingested,
            _ => &self.events_rejected,
        };
        let status = match status {
            "accepted" | "duplicate" | "conflict" => status,
            _ => "rejected",
        };
        family
            .get_or_create(&StatusLabel {
                status: status.to_string(),
            })
            .inc();
    }

    /// Counts one delivery attempt on `channel` that took `took`.
    pub fn delivery(&self, channel: &str, outcome: &str, took: std::time::Duration) {
        let channel = channel.to_string();
        self.delivery_seconds
            .get_or_create(&ChannelLabel {
                channel: channel.clone(),
            })
            .observe(took.as_secs_f64());
        self.deliveries
            .get_or_create(&DeliveryLabels {
                channel,
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// The metrics in the OpenMetrics text format (`# EOF` last).
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }

    /// The metrics in Prometheus' classic text format (`text/plain; version=0.0.4`), which
    /// every scraper and `promtool check metrics` read.
    pub fn encode(&self) -> String {
        classic(&self.encode_openmetrics())
    }
}

/// OpenMetrics text to the classic format: a counter's `HELP` and `TYPE` name its
/// samples (`x_total`), `UNIT` lines and `# EOF` go.
fn classic(open: &str) -> String {
    let counters: std::collections::HashSet<&str> = open
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open.len());
    for line in open.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((p, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                out.push_str(format!("{p}{name}{suffix} {tail}").trim_end());
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_counts_and_names_are_prefixed() {
        let m = Metrics::new();
        m.clone().event("accepted");
        m.event("rejected");
        m.delivery("email", "delivered", std::time::Duration::from_millis(3));
        let text = m.encode();
        assert!(
            text.contains("nurture_events_ingested_total{status=\"accepted\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("nurture_events_rejected_total{status=\"rejected\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("nurture_deliveries_total{channel=\"email\",outcome=\"delivered\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE nurture_deliveries_total counter") && !text.contains("# EOF"),
            "{text}"
        );
        // Another set counts apart.
        assert!(!Metrics::new().encode().contains("status=\"accepted\"} 1"));
    }
}
