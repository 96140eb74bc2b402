//! # nurture-channels: effects that leave the system
//!
//! The engine writes outbox entries; this crate delivers them, each once per idempotency
//! key:
//! - [`channel`]: the `Channel` trait every kind of delivery implements, and the one
//!   retry policy (backoff with jitter);
//! - [`deliver`]: the outbox loop, retries and give-up, recording outcomes;
//! - [`egress`]: outgoing HTTP of webhooks and plugins (refused private ranges, pinned
//!   resolution, timeouts, per-host limits and circuit breakers);
//! - [`email`]: SMTP (or a folder of `.eml` files), DKIM, tracking tokens and hits;
//! - [`plugin`]: the sandboxed wasm plugin host (wasmtime), behind the default-on cargo
//!   feature `plugins`.

#![warn(missing_docs)]
#![warn(unreachable_pub)]

pub mod channel;
pub mod deliver;
pub mod egress;
pub mod email;
#[cfg(feature = "plugins")]
pub mod plugin;
