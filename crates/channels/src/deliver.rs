//! Delivering the outbox.
//!
//! Each entry is delivered once per idempotency key: the delivery record and the outbox
//! state change commit together, so a delivered entry is never picked again. The
//! [`Deliverer`] hands each entry to the [`Channel`] registered for its [`OutboxKind`]
//! (webhook here, [`crate::email::EmailChannel`] for `email` and `notify`, the wasm
//! [`PluginHost`] for `plugin`); an entry of a kind with no channel, or of a kind this
//! version does not know, fails with a reason saying so. A failed attempt's typed error
//! says whether a retry can help; the one [`RetryPolicy`] then retries it with backoff
//! and jitter (no earlier than the error's own `retry_after`: a plugin's `retry-after`,
//! an open circuit's cool-down) or gives up.
//!
//! Webhooks are real HTTP calls carrying an `Idempotency-Key` header (a crash between the
//! HTTP response and the commit repeats the call with the same key, which receivers use to
//! de-duplicate), retried on network errors, timeouts, 408, 429 and 5xx.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{json, Value};

use crate::channel::{Attempt, Channel, DeliveryError, Record, RetryPolicy};
#[cfg(feature = "plugins")]
use crate::plugin::PluginHost;
use nurture_store::{OutboxEntry, OutboxKind, OutboxOutcome, Store, StoreError, Ts};

/// Contacts whose outbox entries are delivered at once by one process.
pub const CONCURRENCY: usize = 32;

/// The `User-Agent` of webhooks.
pub const USER_AGENT: &str = concat!("nurture/", env!("CARGO_PKG_VERSION"));

/// Attempts before an entry is marked failed, by the default [`RetryPolicy`].
pub const MAX_ATTEMPTS: i64 = crate::channel::DEFAULT_MAX_ATTEMPTS;

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

/// Delivers due outbox entries, each through the [`Channel`] registered for its kind,
/// and records the outcomes (failures through the one [`RetryPolicy`]).
pub struct Deliverer {
    store: Arc<dyn Store>,
    /// The channel of each kind this process delivers.
    channels: HashMap<OutboxKind, Arc<dyn Channel>>,
    policy: RetryPolicy,
    /// Woken when an outcome that a run awaits was recorded (the engine loop's wake-up;
    /// the durable wake-up is the `outcome` event itself).
    wake: Option<Arc<tokio::sync::Notify>>,
    /// The engine whose paused workflows' sends are held (deferred by its
    /// [`nurture_engine::Engine::hold`] at a time) rather than attempted.
    holding: Option<Arc<nurture_engine::Engine>>,
    /// Where attempts are counted (the engine's, once [`Deliverer::with_metrics`]).
    metrics: nurture_engine::metrics::Metrics,
}

impl Deliverer {
    /// A deliverer with webhooks under the default egress rules
    /// ([`crate::egress::Egress::strict`]: webhooks to private addresses are refused), and
    /// `email` and `notify` entries recorded in `deliveries` as they are ([`Record`], as
    /// the benchmark does) until [`Deliverer::with_email`]. `plugin` entries fail until
    /// [`Deliverer::with_plugins`] gives it a host.
    pub fn new(store: Arc<dyn Store>) -> Self {
        let d = Deliverer {
            store,
            channels: HashMap::new(),
            policy: RetryPolicy::default(),
            wake: None,
            holding: None,
            metrics: nurture_engine::metrics::Metrics::new(),
        };
        let record: Arc<dyn Channel> = Arc::new(Record);
        d.with_egress(Arc::new(crate::egress::Egress::strict(USER_AGENT)))
            .with_channel(OutboxKind::Email, record.clone())
            .with_channel(OutboxKind::Notify, record)
    }

    /// A deliverer with no channel at all: every entry fails until a channel for its
    /// kind is registered ([`Deliverer::with_channel`]).
    pub fn bare(store: Arc<dyn Store>) -> Self {
        Deliverer {
            store,
            channels: HashMap::new(),
            policy: RetryPolicy::default(),
            wake: None,
            holding: None,
            metrics: nurture_engine::metrics::Metrics::new(),
        }
    }

    /// Wakes `engine` whenever it records an outcome that a run awaits, so the run goes on
    /// at once rather than at the engine's next poll.
    pub fn waking(mut self, engine: Arc<tokio::sync::Notify>) -> Self {
        self.wake = Some(engine);
        self
    }

    /// Holds the sends of `engine`'s paused workflows: deferred, not attempted, until
    /// the workflow is resumed.
    pub fn holding(mut self, engine: Arc<nurture_engine::Engine>) -> Self {
        self.holding = Some(engine);
        self
    }

    /// Counts attempts, their latency and outcomes, and lease expiries in `metrics`
    /// (the process's, [`nurture_engine::Engine::metrics`]).
    pub fn with_metrics(mut self, metrics: nurture_engine::metrics::Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Delivers entries of `kind` through `channel` (in place of any before).
    pub fn with_channel(mut self, kind: OutboxKind, channel: Arc<dyn Channel>) -> Self {
        self.channels.insert(kind, channel);
        self
    }

    /// Decides retries by `policy` (default: [`RetryPolicy::default`]).
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Sends webhooks through these egress rules and limits (`[egress]` in nurture.toml).
    pub fn with_egress(self, egress: Arc<crate::egress::Egress>) -> Self {
        self.with_channel(OutboxKind::Webhook, Arc::new(Webhook::new(egress)))
    }

    /// Sends `email` and `notify` entries through this channel.
    pub fn with_email(self, channel: Arc<crate::email::EmailChannel>) -> Self {
        self.with_channel(OutboxKind::Email, channel.clone())
            .with_channel(OutboxKind::Notify, channel)
    }

    /// Runs `plugin` entries in this host.
    #[cfg(feature = "plugins")]
    pub fn with_plugins(self, host: Arc<PluginHost>) -> Self {
        self.with_channel(OutboxKind::Plugin, host)
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
        let chains = nurture_store::by_contact(due, |e| &e.contact);
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
                let wakes: Vec<(String, nurture_store::NewEvent)> = done
                    .iter()
                    .zip(&items)
                    .filter_map(|(e, (k, o))| {
                        nurture_engine::outcome::wake_event(e, o, now).map(|w| (k.clone(), w))
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
                self.metrics
                    .lease_expiries
                    .inc_by((wave.len() - done.len()) as u64);
                tracing::warn!(
                    left = total - attempted,
                    "deliveries left for after the lease: this batch took too long"
                );
                break;
            }
        }
        Ok(())
    }

    /// One attempt of `entry` through its kind's channel, and its outcome to record.
    async fn attempt(&self, entry: &OutboxEntry) -> OutboxOutcome {
        let paused = |e: &Arc<nurture_engine::Engine>| {
            let w = entry.workflow.as_deref().filter(|w| e.is_paused(w))?;
            Some((w.to_string(), e.hold()))
        };
        if let Some((w, hold)) = self.holding.as_ref().and_then(paused) {
            return OutboxOutcome::Defer {
                reason: format!("workflow `{w}` is paused"),
                until: Utc::now() + hold,
            };
        }
        let started = Instant::now();
        let attempt = match &entry.kind {
            OutboxKind::Unknown(kind) => DeliveryError::UnknownKind(kind.clone()).into(),
            kind => match self.channels.get(kind) {
                Some(channel) => channel.deliver(entry).await,
                None => DeliveryError::NoChannel { kind: kind.clone() }.into(),
            },
        };
        let outcome = crate::channel::settle(&self.policy, entry, attempt);
        let channel = match &entry.kind {
            OutboxKind::Unknown(_) => "unknown",
            kind => kind.as_str(),
        };
        let name = match &outcome {
            OutboxOutcome::Delivered { .. } => "delivered",
            OutboxOutcome::Retry { .. } => "retry",
            OutboxOutcome::Failed { .. } => "failed",
            OutboxOutcome::Defer { .. } => "deferred",
            OutboxOutcome::Ambiguous { .. } => "ambiguous",
        };
        self.metrics.delivery(channel, name, started.elapsed());
        outcome
    }
}

/// Why a webhook was not delivered. [`WebhookError::is_retryable`]: network errors,
/// timeouts, an open circuit, 408, 429 and 5xx answers; not refusals, redirects or other
/// 4xx.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The egress rules refuse the URL or an address it resolves to.
    #[error("webhook to {url} refused: {source}")]
    Refused {
        /// The URL, redacted.
        url: String,
        /// Which rule refused it.
        source: crate::egress::EgressError,
    },
    /// The host's circuit is open after repeated failures.
    #[error("webhook to {url} not attempted: {source}")]
    CircuitOpen {
        /// The URL, redacted.
        url: String,
        /// The host's gate.
        source: crate::egress::Closed,
    },
    /// The request failed (connection, TLS, reading the answer).
    #[error("request to {url} failed: {reason}")]
    Request {
        /// The URL, redacted.
        url: String,
        /// The error and its causes, without the URL.
        reason: String,
        /// The client's error.
        source: reqwest::Error,
    },
    /// No answer within the egress timeout.
    #[error("request to {url} failed: timed out")]
    TimedOut {
        /// The URL, redacted.
        url: String,
    },
    /// Answered with a status that is not a success.
    #[error("HTTP {status} from {url}")]
    Status {
        /// The URL, redacted.
        url: String,
        /// The status answered.
        status: reqwest::StatusCode,
    },
    /// Answered with a redirect the step does not follow.
    #[error("HTTP {status} from {url}: redirects are not followed (a step may set `follow_redirects: true`)")]
    Redirect {
        /// The URL, redacted.
        url: String,
        /// The redirect status answered.
        status: reqwest::StatusCode,
    },
}

impl WebhookError {
    /// Whether another attempt can help.
    pub fn is_retryable(&self) -> bool {
        match self {
            WebhookError::Refused { .. } | WebhookError::Redirect { .. } => false,
            WebhookError::CircuitOpen { .. }
            | WebhookError::Request { .. }
            | WebhookError::TimedOut { .. } => true,
            // 408: the receiver gave up waiting for the request; 429: it asks us to slow
            // down; 5xx: it failed. Any other answer is the same on every attempt.
            WebhookError::Status { status, .. } => {
                matches!(status.as_u16(), 408 | 429) || status.is_server_error()
            }
        }
    }

    /// The earliest the next attempt may start: when the host's circuit closes.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            WebhookError::CircuitOpen {
                source: crate::egress::Closed::Open { remaining, .. },
                ..
            } => Some(*remaining),
            _ => None,
        }
    }
}

/// The webhook channel: real HTTP calls with an `Idempotency-Key` header, through the
/// egress rules and each host's gate (requests in flight, circuit breaker).
pub struct Webhook {
    egress: Arc<crate::egress::Egress>,
}

impl Webhook {
    /// Webhooks sent through `egress`.
    pub fn new(egress: Arc<crate::egress::Egress>) -> Self {
        Webhook { egress }
    }
}

#[async_trait::async_trait]
impl Channel for Webhook {
    async fn deliver(&self, entry: &OutboxEntry) -> Attempt {
        let p = &entry.payload;
        let raw = p["url"].as_str().unwrap_or_default();
        let shown = crate::egress::redact_url(raw);
        let url = match self.egress.parse(raw) {
            Ok(url) => url,
            Err(source) => return WebhookError::Refused { url: shown, source }.into(),
        };
        // A receiving host is its name and port (two services on one address are two).
        let host = format!(
            "{}:{}",
            url.host_str().unwrap_or_default(),
            url.port_or_known_default().unwrap_or(0)
        );
        let pass = match self.egress.gates.enter(&host).await {
            Ok(pass) => pass,
            Err(closed) => return gate_closed(shown, closed),
        };
        let follow = p["follow_redirects"].as_bool().unwrap_or(false);
        let timeout = self.egress.timeout;
        let send = self
            .webhook_request(entry, url, follow)
            .timeout(timeout)
            .send();
        let result = match tokio::time::timeout(timeout, send).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) if e.is_timeout() => Err(WebhookError::TimedOut { url: shown.clone() }),
            Ok(Err(e)) => Err(match crate::egress::refusal_of(&e) {
                Some(source) => WebhookError::Refused {
                    url: shown.clone(),
                    source,
                },
                None => {
                    let e = e.without_url();
                    WebhookError::Request {
                        url: shown.clone(),
                        reason: crate::egress::explain(&e),
                        source: e,
                    }
                }
            }),
            Err(_) => Err(WebhookError::TimedOut { url: shown.clone() }),
        };
        // Only errors, timeouts, 429 and 5xx count against the host's circuit (a 4xx is
        // an answer; a refusal is ours).
        pass.done(match &result {
            Ok(r) => r.status().as_u16() != 429 && !r.status().is_server_error(),
            Err(e) => matches!(e, WebhookError::Refused { .. }),
        });
        let resp = match result {
            Ok(resp) => resp,
            Err(e) => return e.into(),
        };
        let status = resp.status();
        if status.is_redirection() {
            return WebhookError::Redirect { url: shown, status }.into();
        }
        if !status.is_success() {
            return WebhookError::Status { url: shown, status }.into();
        }
        let mut record = json!({"channel": "http", "url": shown, "status": status.as_u16()});
        // A run awaits it: keep the answer's JSON for its `response`.
        if nurture_engine::outcome::awaited(&entry.payload) {
            record["response"] = json_body(resp).await;
        }
        Attempt::Delivered { record }
    }
}

impl Webhook {
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

/// The attempt of a webhook its host's gate did not let through: deferred (not an
/// attempt) while the host has its limit in flight; a failed attempt, retried no earlier
/// than the cool-down, while its circuit is open.
fn gate_closed(shown: String, closed: crate::egress::Closed) -> Attempt {
    match closed {
        crate::egress::Closed::Busy { .. } => Attempt::Defer {
            reason: format!("webhook to {shown} waits: {closed}"),
            until: Utc::now() + BUSY_DEFER,
        },
        crate::egress::Closed::Open { .. } => WebhookError::CircuitOpen {
            url: shown,
            source: closed,
        }
        .into(),
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
/// The body of a webhook's answer as JSON: `null` when it is not JSON, is larger than
/// [`MAX_RESPONSE`](nurture_engine::outcome::MAX_RESPONSE), or cannot be read in time (the request's own timeout bounds it).
async fn json_body(mut resp: reqwest::Response) -> Value {
    if resp
        .content_length()
        .is_some_and(|n| n > nurture_engine::outcome::MAX_RESPONSE as u64)
    {
        return Value::Null;
    }
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > nurture_engine::outcome::MAX_RESPONSE {
                    return Value::Null;
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(_) => return Value::Null,
        }
    }
    serde_json::from_slice(&body).unwrap_or(Value::Null)
}
