//! Delivery channels: what delivers one outbox entry, how an attempt ends, and the one
//! retry policy every channel's failures go through.
//!
//! A [`Channel`] delivers one entry and says how the attempt ended ([`Attempt`]). It
//! never decides retries itself: a failed attempt carries a typed [`DeliveryError`], and
//! [`RetryPolicy::outcome`] turns it into the stored outcome. Whether the entry is tried
//! again is decided by [`DeliveryError::is_retryable`] alone (and the policy's attempt
//! budget); when, by the policy's backoff with jitter, no earlier than the error's own
//! [`DeliveryError::retry_after`] (a plugin's `retry-after`, an open circuit's cool-down).
//!
//! The [`crate::deliver::Deliverer`] keeps one channel per [`OutboxKind`]; an entry of a
//! kind with no channel in this process, or of a kind this version does not know (a row
//! written by another version), fails with a reason that says so: never a silent
//! "delivered".

use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use serde_json::{json, Value};

use nurture_store::{OutboxEntry, OutboxKind, OutboxOutcome, Ts};

/// Delivers outbox entries of some kinds (registered with
/// [`crate::deliver::Deliverer::with_channel`]).
#[async_trait]
pub trait Channel: Send + Sync {
    /// Attempts to deliver `entry` once. Failures are returned as
    /// [`Attempt::Failed`] with a typed error; the caller's [`RetryPolicy`] decides
    /// whether and when to try again.
    async fn deliver(&self, entry: &OutboxEntry) -> Attempt;
}

/// How one delivery attempt ended, in a channel's terms.
#[derive(Debug)]
pub enum Attempt {
    /// Delivered; `record` is kept in `deliveries`.
    Delivered {
        /// What the channel reports about the delivery (channel, status, message id...).
        record: Value,
    },
    /// Not delivered: the error says whether another attempt can help.
    Failed(DeliveryError),
    /// Not attempted now (e.g. the receiving host is busy): due again at `until`; not an
    /// attempt.
    Defer {
        /// Why it waits.
        reason: String,
        /// When it is due again.
        until: Ts,
    },
    /// The send was interrupted after the receiver may have accepted it: not retried
    /// blindly; an operator checks and requeues it.
    Ambiguous {
        /// What happened and what to check.
        reason: String,
    },
}

macro_rules! failed_from {
    ($($e:ty),+) => {$(
        impl From<$e> for Attempt {
            fn from(e: $e) -> Self {
                Attempt::Failed(e.into())
            }
        }
    )+};
}
failed_from!(
    DeliveryError,
    crate::deliver::WebhookError,
    crate::email::SendError
);
#[cfg(feature = "plugins")]
failed_from!(crate::plugin::StepError);

/// Why a delivery attempt failed. [`DeliveryError::is_retryable`] says whether another
/// attempt can help; it alone decides retry or give-up ([`RetryPolicy::outcome`]).
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// A webhook failed.
    #[error(transparent)]
    Webhook(#[from] crate::deliver::WebhookError),
    /// An email or notification failed.
    #[error(transparent)]
    Email(#[from] crate::email::SendError),
    /// A plugin step failed.
    #[cfg(feature = "plugins")]
    #[error(transparent)]
    Plugin(#[from] crate::plugin::StepError),
    /// No channel delivers this kind in this process.
    #[error("no channel delivers `{kind}` entries in this process{}", hint(.kind))]
    NoChannel {
        /// The entry's kind.
        kind: OutboxKind,
    },
    /// The entry's stored kind is not one this version knows.
    #[error("unknown outbox kind `{0}`: this version of nurture delivers {known}; the entry was written by another version or by hand", known = known_kinds())]
    UnknownKind(String),
}

fn hint(kind: &OutboxKind) -> &'static str {
    match kind {
        OutboxKind::Plugin => " (no plugin host: the project's plugins are not loaded here)",
        OutboxKind::Email | OutboxKind::Notify => " (no email channel)",
        _ => "",
    }
}

fn known_kinds() -> String {
    OutboxKind::ALL
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl DeliveryError {
    /// Whether another attempt can help (a network error, a 5xx, a busy plugin
    /// provider), as opposed to one that needs a fix (a refused address, a 4xx, a bad
    /// template, an unknown kind).
    pub fn is_retryable(&self) -> bool {
        match self {
            DeliveryError::Webhook(e) => e.is_retryable(),
            DeliveryError::Email(e) => e.is_retryable(),
            #[cfg(feature = "plugins")]
            DeliveryError::Plugin(e) => e.is_retryable(),
            DeliveryError::NoChannel { .. } | DeliveryError::UnknownKind(_) => false,
        }
    }

    /// The earliest the next attempt may start, when the error says (a plugin's
    /// `retry-after`, an open circuit's cool-down).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            DeliveryError::Webhook(e) => e.retry_after(),
            #[cfg(feature = "plugins")]
            DeliveryError::Plugin(e) => e.retry_after(),
            _ => None,
        }
    }
}

/// Attempts before an entry is marked failed, by default.
pub const DEFAULT_MAX_ATTEMPTS: i64 = 8;

/// The one retry policy of every channel: at most `max_attempts` attempts; before attempt
/// `n + 1`, `base * 2^n` capped at `cap`, less a random share of up to `jitter` of it (so
/// entries that failed together do not all come back at once).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts before an entry is marked failed.
    pub max_attempts: i64,
    /// The wait after the first failed attempt.
    pub base: Duration,
    /// The longest wait.
    pub cap: Duration,
    /// The share of each wait that is random, from 0.0 (none) to 1.0 (anywhere between
    /// zero and the full wait).
    pub jitter: f64,
}

impl Default for RetryPolicy {
    /// 8 attempts; 30 s, 1 min, 2 min... up to 1 h; a fifth of each wait random.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            base: Duration::from_secs(30),
            cap: Duration::from_secs(3600),
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// The wait before the next attempt of an entry that has been attempted `attempts`
    /// times (this failed attempt not counted), without jitter.
    pub fn ceiling(&self, attempts: i64) -> Duration {
        let exp = u32::try_from(attempts.clamp(0, 32)).unwrap_or(32);
        self.base
            .checked_mul(1u32.checked_shl(exp).unwrap_or(u32::MAX))
            .unwrap_or(Duration::MAX)
            .min(self.cap)
    }

    /// The wait before the next attempt, with jitter drawn from `seed`: within
    /// `[ceiling * (1 - jitter), ceiling]`. The same seed gives the same wait.
    pub fn backoff(&self, attempts: i64, seed: u64) -> Duration {
        let ceiling = self.ceiling(attempts);
        let jitter = self.jitter.clamp(0.0, 1.0);
        // A uniform draw in [0, 1) from the seed (splitmix64).
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
        ceiling.mul_f64(1.0 - jitter * unit)
    }

    /// The stored outcome of an attempt of `entry` that failed with `error` at `now`: a
    /// retry after the backoff (and no earlier than the error's own `retry_after`) while
    /// the error is retryable and attempts remain; a permanent failure otherwise.
    pub fn outcome(&self, entry: &OutboxEntry, error: &DeliveryError, now: Ts) -> OutboxOutcome {
        let reason = error.to_string();
        if !error.is_retryable() {
            return OutboxOutcome::Failed { reason };
        }
        if entry.attempts + 1 >= self.max_attempts {
            return OutboxOutcome::Failed {
                reason: format!("{reason} (gave up after {} attempts)", self.max_attempts),
            };
        }
        let wait = self
            .backoff(entry.attempts, seed_of(entry, now))
            .max(error.retry_after().unwrap_or(Duration::ZERO));
        OutboxOutcome::Retry {
            reason,
            retry_at: now
                + chrono::Duration::from_std(wait).unwrap_or_else(|_| chrono::Duration::days(1)),
        }
    }
}

/// A jitter seed for an attempt of `entry`: its key, its attempt count and the time, so
/// entries that fail together spread out.
fn seed_of(entry: &OutboxEntry, now: Ts) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    entry.key.hash(&mut h);
    entry.attempts.hash(&mut h);
    now.timestamp_nanos_opt().unwrap_or_default().hash(&mut h);
    h.finish()
}

/// The channel that records `email` and `notify` entries in `deliveries` as they are,
/// sending nothing: what a [`crate::deliver::Deliverer`] without an email channel does
/// (the benchmark, tests).
pub struct Record;

#[async_trait]
impl Channel for Record {
    async fn deliver(&self, entry: &OutboxEntry) -> Attempt {
        Attempt::Delivered {
            record: json!({"channel": "record", "payload": entry.payload}),
        }
    }
}

/// The stored outcome of an attempt, by `policy` at `now`.
pub fn settle(policy: &RetryPolicy, entry: &OutboxEntry, attempt: Attempt) -> OutboxOutcome {
    match attempt {
        Attempt::Delivered { record } => OutboxOutcome::Delivered { record },
        Attempt::Failed(e) => policy.outcome(entry, &e, Utc::now()),
        Attempt::Defer { reason, until } => OutboxOutcome::Defer { reason, until },
        Attempt::Ambiguous { reason } => OutboxOutcome::Ambiguous { reason },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_within_its_jitter_and_grows_to_the_cap() {
        let p = RetryPolicy::default();
        assert_eq!(p.ceiling(0), Duration::from_secs(30));
        assert_eq!(p.ceiling(1), Duration::from_secs(60));
        assert_eq!(p.ceiling(7), Duration::from_secs(3600));
        assert_eq!(p.ceiling(1000), Duration::from_secs(3600));
        for seed in 0..200u64 {
            let b = p.backoff(2, seed);
            assert!(
                b <= Duration::from_secs(120) && b >= Duration::from_secs(96),
                "{b:?}"
            );
        }
        assert_eq!(p.backoff(3, 7), p.backoff(3, 7));
    }
}
