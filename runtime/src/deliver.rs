//! Delivering the outbox.
//!
//! Each entry is delivered once per idempotency key: the delivery record and the outbox
//! state change commit together, so a delivered entry is never picked again. Webhooks are
//! real HTTP calls carrying an `Idempotency-Key` header (a crash between the HTTP response
//! and the commit repeats the call with the same key, which receivers use to de-duplicate),
//! retried with exponential backoff on network errors, 429 and 5xx. Plugin steps run in
//! the wasm [`PluginHost`]; their outcomes map onto the same retry policy (a plugin's
//! `retry-after` is honoured as a minimum). Email and notifications go to the email
//! channel.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{json, Value};

use crate::plugin::{CallOutcome, PluginHost, StepCall};
use crate::store::{OutboxEntry, OutboxOutcome, Store, StoreError, Ts};

/// Contacts whose outbox entries are delivered at once by one process.
pub const CONCURRENCY: usize = 32;

/// The `User-Agent` of webhooks.
pub const USER_AGENT: &str = concat!("nurture/", env!("CARGO_PKG_VERSION"));

/// Attempts before an entry is marked failed.
pub const MAX_ATTEMPTS: i64 = 8;

/// The longest one delivery attempt takes: a webhook waits at most
/// [`crate::egress::PERMIT_WAIT`] for its host's turn, then at most
/// [`crate::egress::MAX_TIMEOUT`] for its answer.
const ATTEMPT_LIMIT: Duration = Duration::from_secs(20);

/// How long a webhook whose host has its limit of requests in flight is deferred.
const BUSY_DEFER: chrono::Duration = match chrono::Duration::try_seconds(5) {
    Some(d) => d,
    None => panic!("5 s"),
};

/// The last instant a delivery attempt may start on entries claimed at `claimed_at` for
/// `lease` (the store's, [`Store::lease`]): it must end before their lease does, or
/// another worker could claim them and deliver them again. With the default 60 s lease:
/// 40 s after the claim.
pub fn last_start(claimed_at: Instant, lease: Duration) -> Instant {
    claimed_at + lease - ATTEMPT_LIMIT.min(lease / 3)
}

pub struct Deliverer {
    store: Arc<dyn Store>,
    egress: Arc<crate::egress::Egress>,
    plugins: Option<Arc<PluginHost>>,
    email: Option<Arc<crate::email::EmailChannel>>,
    /// Woken when an outcome that a run awaits was recorded (the engine loop's wake-up;
    /// the durable wake-up is the `outcome` event itself).
    wake: Option<Arc<tokio::sync::Notify>>,
}

/// Backoff before attempt `n + 1`: 30 s, 1 min, 2 min... capped at 1 h.
pub fn backoff(attempts: i64) -> chrono::Duration {
    let secs = 30i64.saturating_mul(1 << attempts.clamp(0, 7));
    chrono::Duration::seconds(secs.min(3600))
}

impl Deliverer {
    /// A deliverer with the default egress rules ([`crate::egress::Egress::strict`]):
    /// webhooks to private addresses are refused.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Deliverer {
            store,
            egress: Arc::new(crate::egress::Egress::strict(USER_AGENT)),
            plugins: None,
            email: None,
            wake: None,
        }
    }

    /// Wakes `engine` whenever it records an outcome that a run awaits, so the run goes on
    /// at once rather than at the engine's next poll.
    pub fn waking(mut self, engine: Arc<tokio::sync::Notify>) -> Self {
        self.wake = Some(engine);
        self
    }

    /// Sends webhooks through these egress rules and limits (`[egress]` in nurture.toml).
    pub fn with_egress(mut self, egress: Arc<crate::egress::Egress>) -> Self {
        self.egress = egress;
        self
    }

    /// Sends `email` and `notify` entries through this channel (without one they are
    /// recorded in `deliveries` as they are, as `nurture simulate` does).
    pub fn with_email(mut self, channel: Arc<crate::email::EmailChannel>) -> Self {
        self.email = Some(channel);
        self
    }

    /// Runs `plugin` entries in this host (without one they wait and retry).
    pub fn with_plugins(mut self, host: Arc<PluginHost>) -> Self {
        self.plugins = Some(host);
        self
    }

    /// Delivers what is due at `now`; returns how many entries were attempted.
    ///
    /// In waves: the first due entry of every contact, then the second... Up to
    /// [`CONCURRENCY`] deliveries of a wave are in flight at once, and the wave's outcomes
    /// are recorded in one transaction (one disk sync for the whole wave). A contact's
    /// entries thus go one after another, in order, each recorded before the next is
    /// attempted (its order and the frequency cap stay exact).
    pub async fn deliver_due(&self, now: Ts, limit: i64) -> Result<usize, StoreError> {
        let claimed_at = Instant::now();
        let due = self.store.pending_outbox(now, limit).await?;
        let n = due.len();
        self.deliver(due, claimed_at).await?;
        Ok(n)
    }

    /// Delivers entries this process claimed at `claimed_at` (by
    /// [`Deliverer::deliver_due`], or at commit: the engine's hand-off), in waves as
    /// [`Deliverer::deliver_due`] describes.
    ///
    /// No attempt starts after [`last_start`]: entries not attempted by then stay leased
    /// and come back to every worker when the lease runs out, rather than being delivered
    /// here while another worker, seeing the lease over, delivers them too (slow receivers
    /// can make a batch outlast its lease).
    pub async fn deliver(
        &self,
        due: Vec<OutboxEntry>,
        claimed_at: Instant,
    ) -> Result<(), StoreError> {
        use futures::StreamExt;
        let last = last_start(claimed_at, self.store.lease());
        let total = due.len();
        let mut attempted = 0;
        let chains = crate::store::by_contact(due, |e| &e.contact);
        for round in 0.. {
            let wave: Vec<&OutboxEntry> = chains.iter().filter_map(|(_, c)| c.get(round)).collect();
            if wave.is_empty() {
                break;
            }
            let attempts: Vec<futures::future::BoxFuture<'_, (usize, Option<OutboxOutcome>)>> =
                wave.iter()
                    .enumerate()
                    .map(|(i, e)| {
                        Box::pin(async move {
                            if Instant::now() <= last {
                                (i, Some(self.attempt(e).await))
                            } else {
                                (i, None)
                            }
                        }) as _
                    })
                    .collect();
            // Unordered: a slow attempt holds its own slot only, never the start of the
            // attempts after it (outcomes are put back in wave order below).
            let mut outcomes: Vec<(usize, Option<OutboxOutcome>)> = futures::stream::iter(attempts)
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
            outcomes.sort_by_key(|(i, _)| *i);
            let outcomes = outcomes.into_iter().map(|(_, o)| o);
            // The entries attempted, and their outcomes to record.
            let (done, items): (Vec<&OutboxEntry>, Vec<(String, OutboxOutcome)>) = wave
                .iter()
                .zip(outcomes)
                .filter_map(|(e, o)| o.map(|o| (*e, (e.key.clone(), o))))
                .unzip();
            let late = done.len() < wave.len();
            attempted += done.len();
            if !items.is_empty() {
                let now = Utc::now();
                // Final outcomes of entries a run awaits wake it, in the same transaction.
                let wakes: Vec<(String, crate::store::NewEvent)> = done
                    .iter()
                    .zip(&items)
                    .filter_map(|(e, (k, o))| {
                        crate::engine::outcome::wake_event(e, o, now).map(|w| (k.clone(), w))
                    })
                    .collect();
                let results = match wakes.is_empty() {
                    true => self.store.complete_outbox_many(&items, now).await?,
                    false => {
                        let r = self
                            .store
                            .complete_outbox_waking(&items, &wakes, now)
                            .await?;
                        if let Some(wake) = &self.wake {
                            wake.notify_one();
                        }
                        r
                    }
                };
                for ((entry, (_, outcome)), r) in done.iter().zip(&items).zip(results) {
                    if let Err(e) = r {
                        tracing::warn!(key = %entry.key, error = %e, "outcome not recorded: completed elsewhere");
                        continue;
                    }
                    log_outcome(entry, outcome);
                }
            }
            if late {
                tracing::warn!(
                    left = total - attempted,
                    "deliveries left for after the lease: this batch took too long"
                );
                break;
            }
        }
        Ok(())
    }

    async fn attempt(&self, entry: &OutboxEntry) -> OutboxOutcome {
        match entry.kind.as_str() {
            "webhook" => self.webhook(entry).await,
            "plugin" => self.plugin(entry).await,
            "email" | "notify" if self.email.is_some() => {
                self.email.as_ref().expect("checked").deliver(entry).await
            }
            _ => OutboxOutcome::Delivered {
                record: json!({"channel": "record", "payload": entry.payload}),
            },
        }
    }

    async fn webhook(&self, entry: &OutboxEntry) -> OutboxOutcome {
        let p = &entry.payload;
        let raw = p["url"].as_str().unwrap_or_default();
        let shown = crate::egress::redact_url(raw);
        let url = match self.egress.parse(raw) {
            Ok(url) => url,
            Err(e) => {
                return OutboxOutcome::Failed {
                    reason: format!("webhook to {shown} refused: {e}"),
                }
            }
        };
        // A receiving host is its name and port (two services on one address are two).
        let host = format!(
            "{}:{}",
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or(0)
        );
        let pass = match self.egress.gates.enter(&host).await {
            Ok(pass) => pass,
            Err(closed) => return gate_closed(entry, &shown, closed),
        };
        let follow = p["follow_redirects"].as_bool().unwrap_or(false);
        let timeout = self.egress.timeout;
        let send = self
            .webhook_request(entry, url, follow)
            .timeout(timeout)
            .send();
        let result = match tokio::time::timeout(timeout, send).await {
            Ok(r) => r.map_err(|e| (crate::egress::refusal_of(&e), crate::egress::describe(e))),
            Err(_) => Err((None, "timed out".to_string())),
        };
        // Only errors, timeouts, 429 and 5xx count against the host's circuit (a 4xx is
        // an answer; a refusal is ours).
        pass.done(match &result {
            Ok(r) => r.status().as_u16() != 429 && !r.status().is_server_error(),
            Err((refused, _)) => refused.is_some(),
        });
        match result {
            Ok(resp) => {
                let mut outcome = webhook_answer(entry, &shown, resp.status());
                // A run awaits it: keep the answer's JSON for its `response`.
                if let OutboxOutcome::Delivered { record } = &mut outcome {
                    if crate::engine::outcome::awaited(&entry.payload) {
                        record["response"] = crate::engine::outcome::json_body(resp).await;
                    }
                }
                outcome
            }
            Err((Some(refused), _)) => OutboxOutcome::Failed {
                reason: format!("webhook to {shown} refused: {refused}"),
            },
            Err((None, e)) => retry_or_give_up(
                entry,
                format!("request to {shown} failed: {e}"),
                chrono::Duration::zero(),
            ),
        }
    }

    /// The request of a webhook entry to its checked `url`.
    fn webhook_request(
        &self,
        entry: &OutboxEntry,
        url: url::Url,
        follow_redirects: bool,
    ) -> reqwest::RequestBuilder {
        let p = &entry.payload;
        let method = reqwest::Method::from_bytes(
            p["method"]
                .as_str()
                .unwrap_or("POST")
                .to_ascii_uppercase()
                .as_bytes(),
        )
        .unwrap_or(reqwest::Method::POST);
        let mut req = self
            .egress
            .client(follow_redirects)
            .request(method, url)
            .header("Idempotency-Key", &entry.key)
            .header("Content-Type", "application/json");
        if let Some(h) = p["headers"].as_object() {
            for (k, v) in h {
                if let Some(v) = v.as_str() {
                    req = req.header(k.as_str(), v);
                }
            }
        }
        let body = p.get("body").cloned().unwrap_or(Value::Null);
        req.body(body.to_string())
    }
}

/// The outcome of a webhook its host's gate did not let through: deferred (not an
/// attempt) while the host has its limit in flight; a failed attempt, retried after
/// the cool-down, while its circuit is open.
fn gate_closed(entry: &OutboxEntry, shown: &str, closed: crate::egress::Closed) -> OutboxOutcome {
    match closed {
        crate::egress::Closed::Busy { .. } => OutboxOutcome::Defer {
            reason: format!("webhook to {shown} waits: {closed}"),
            until: Utc::now() + BUSY_DEFER,
        },
        crate::egress::Closed::Open { remaining, .. } => retry_or_give_up(
            entry,
            format!("webhook to {shown} not attempted: {closed}"),
            chrono::Duration::from_std(remaining).unwrap_or(chrono::Duration::zero()),
        ),
    }
}

/// The outcome of a webhook answered with `status` (`shown`: its redacted URL).
fn webhook_answer(entry: &OutboxEntry, shown: &str, status: reqwest::StatusCode) -> OutboxOutcome {
    let code = status.as_u16();
    if status.is_success() {
        OutboxOutcome::Delivered {
            record: json!({"channel": "http", "url": shown, "status": code}),
        }
    } else if code == 429 || status.is_server_error() {
        retry_or_give_up(
            entry,
            format!("HTTP {status} from {shown}"),
            chrono::Duration::zero(),
        )
    } else if status.is_redirection() {
        OutboxOutcome::Failed {
            reason: format!("HTTP {status} from {shown}: redirects are not followed (a step may set `follow_redirects: true`)"),
        }
    } else {
        OutboxOutcome::Failed {
            reason: format!("HTTP {status} from {shown}"),
        }
    }
}

fn log_outcome(entry: &OutboxEntry, outcome: &OutboxOutcome) {
    match outcome {
        OutboxOutcome::Delivered { .. } => {
            tracing::info!(key = %entry.key, kind = %entry.kind, contact = %entry.contact, "delivered")
        }
        OutboxOutcome::Retry { reason, retry_at } => {
            tracing::warn!(key = %entry.key, %reason, retry_at = %retry_at, "delivery failed, will retry")
        }
        OutboxOutcome::Failed { reason } => {
            tracing::error!(key = %entry.key, %reason, "delivery failed for good")
        }
        OutboxOutcome::Defer { reason, until } => {
            tracing::info!(key = %entry.key, %reason, until = %until, "delivery deferred")
        }
        OutboxOutcome::Ambiguous { reason } => {
            tracing::error!(key = %entry.key, %reason, "delivery ambiguous: needs an operator")
        }
    }
}

/// A retry after the backoff (or `at_least`, whichever is later), or a permanent failure
/// once [`MAX_ATTEMPTS`] are used up.
pub(crate) fn retry_or_give_up(
    entry: &OutboxEntry,
    reason: String,
    at_least: chrono::Duration,
) -> OutboxOutcome {
    if entry.attempts + 1 >= MAX_ATTEMPTS {
        OutboxOutcome::Failed {
            reason: format!("{reason} (gave up after {MAX_ATTEMPTS} attempts)"),
        }
    } else {
        OutboxOutcome::Retry {
            reason,
            retry_at: Utc::now() + backoff(entry.attempts).max(at_least),
        }
    }
}

impl Deliverer {
    async fn plugin(&self, entry: &OutboxEntry) -> OutboxOutcome {
        let p = &entry.payload;
        let full = p["plugin"].as_str().unwrap_or_default();
        let (plugin, step) = full.split_once('/').unwrap_or((full, ""));
        let Some(host) = &self.plugins else {
            return retry_or_give_up(
                entry,
                "no plugin host in this process".into(),
                chrono::Duration::zero(),
            );
        };
        let outcome = host
            .call(StepCall {
                plugin,
                step,
                config: &p["with"],
                contact: &p["contact"],
                event: p.get("event").filter(|e| !e.is_null()),
                idempotency_key: &entry.key,
                attempt: u32::try_from(entry.attempts + 1).unwrap_or(u32::MAX),
            })
            .await;
        match outcome {
            CallOutcome::Ok { output } => OutboxOutcome::Delivered {
                record: json!({"channel": "plugin", "plugin": full, "output": output}),
            },
            CallOutcome::Retry { after, reason } => retry_or_give_up(
                entry,
                reason,
                chrono::Duration::from_std(after).unwrap_or(chrono::Duration::zero()),
            ),
            CallOutcome::Failed { reason } => OutboxOutcome::Failed { reason },
        }
    }
}
