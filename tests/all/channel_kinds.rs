//! Typed outbox kinds, delivery channels and the one retry policy (issue 18, items 1 and
//! 2 for delivery): an outbox row of a kind this version does not know, or of a kind no
//! channel delivers, fails with a reason and is never reported delivered; retry backoff
//! has jitter within bounds and grows to its cap; a permanent error gives up at once
//! while a retryable one is retried, until the policy's attempts are used up.
//!
//! Real SQLite and Postgres stores (rows written with raw SQL where the store API cannot
//! write them), and a real local HTTP server as the webhook receiver.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use nurture_channels::channel::RetryPolicy;
use nurture_channels::deliver::Deliverer;
use nurture_channels::egress::{Egress, Settings};
use nurture_store::{OutboxEntry, OutboxKind, Store, UnitOfWork};
use serde_json::{json, Value};

use crate::util::{fresh_postgres, rt, RecordingServer};

/// Each store to test: its name and URL (a fresh database each).
fn store_urls(dir: &std::path::Path) -> Vec<(&'static str, String)> {
    let mut v = vec![("sqlite", format!("sqlite://{}", dir.join("t.db").display()))];
    if let Some(pg) = fresh_postgres() {
        v.push(("postgres", pg));
    }
    v
}

/// Raw SQL on the store's own database (what the store API cannot write or read).
enum Raw {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Raw {
    async fn connect(url: &str) -> Raw {
        if url.starts_with("sqlite:") {
            Raw::Sqlite(sqlx::SqlitePool::connect(url).await.unwrap())
        } else {
            Raw::Postgres(sqlx::PgPool::connect(url).await.unwrap())
        }
    }

    /// A pending outbox row of `kind` (any text), due now, as another version (or a hand)
    /// would write it.
    async fn insert_outbox(&self, key: &str, kind: &str) {
        match self {
            Raw::Sqlite(p) => {
                let now = nurture_store::ts(Utc::now());
                sqlx::query(
                    "INSERT INTO outbox (key, run_id, contact, workflow, step, kind, payload, \
                     created_at, due_at) VALUES (?, NULL, 'c1', 'w', 's', ?, '{}', ?, ?)",
                )
                .bind(key)
                .bind(kind)
                .bind(&now)
                .bind(&now)
                .execute(p)
                .await
                .unwrap();
            }
            Raw::Postgres(p) => {
                sqlx::query(
                    "INSERT INTO nurture.outbox (key, run_id, contact, workflow, step, kind, \
                     payload, created_at, due_at) VALUES ($1, NULL, 'c1', 'w', 's', $2, '{}', \
                     now(), now())",
                )
                .bind(key)
                .bind(kind)
                .execute(p)
                .await
                .unwrap();
                sqlx::query("INSERT INTO nurture.outbox_pending (key, due_at) VALUES ($1, now())")
                    .bind(key)
                    .execute(p)
                    .await
                    .unwrap();
            }
        }
    }

    /// The state, last error and attempts of an outbox entry.
    async fn outbox(&self, key: &str) -> (String, String, i64) {
        let (state, err, attempts): (String, Option<String>, i64) = match self {
            Raw::Sqlite(p) => {
                sqlx::query_as("SELECT state, last_error, attempts FROM outbox WHERE key = ?")
                    .bind(key)
                    .fetch_one(p)
                    .await
                    .unwrap()
            }
            Raw::Postgres(p) => sqlx::query_as(
                "SELECT state, last_error, attempts FROM nurture.outbox WHERE key = $1",
            )
            .bind(key)
            .fetch_one(p)
            .await
            .unwrap(),
        };
        (state, err.unwrap_or_default(), attempts)
    }
}

fn entry(key: &str, kind: OutboxKind, payload: Value) -> OutboxEntry {
    OutboxEntry {
        key: key.into(),
        run_id: None,
        contact: "c1".into(),
        workflow: Some("w".into()),
        step: Some("s".into()),
        kind,
        payload,
        created_at: Utc::now(),
        due_at: Utc::now(),
        attempts: 0,
    }
}

async fn queue(store: &Arc<dyn Store>, entries: Vec<OutboxEntry>) {
    store
        .commit(&UnitOfWork {
            outbox: entries,
            ..Default::default()
        })
        .await
        .unwrap();
}

/// Webhooks to loopback allowed; the host's circuit never opens.
fn loopback() -> Arc<Egress> {
    let s = Settings {
        allow: vec!["127.0.0.1".parse().unwrap()],
        breaker_failures: 1000,
        ..Default::default()
    };
    Arc::new(Egress::new(&s, "test").unwrap())
}

#[test]
fn an_outbox_row_of_an_unknown_kind_fails_with_a_reason_and_is_not_delivered() {
    let dir = tempfile::tempdir().unwrap();
    for (name, url) in store_urls(dir.path()) {
        rt().block_on(async {
            let store = nurture_server::open_store(&url).await.unwrap();
            let raw = Raw::connect(&url).await;
            raw.insert_outbox("u1", "sms").await;
            // Read back, the kind is kept as it was stored, and known to be unknown.
            let due = store.pending_outbox(Utc::now(), 10).await.unwrap();
            assert_eq!(due.len(), 1, "{name}");
            assert_eq!(due[0].kind, OutboxKind::Unknown("sms".into()), "{name}");
            // A deliverer with every channel it has by default.
            Deliverer::new(store.clone())
                .deliver(due, std::time::Instant::now())
                .await
                .unwrap();
            let (state, error, _) = raw.outbox("u1").await;
            assert_eq!(state, "failed", "{name}: {error}");
            assert!(
                error.contains("unknown outbox kind `sms`"),
                "{name}: {error}"
            );
            assert!(
                store
                    .deliveries()
                    .await
                    .unwrap()
                    .iter()
                    .all(|d| d.key != "u1"),
                "{name}: an unknown kind was recorded as delivered"
            );
        });
    }
}

#[test]
fn an_entry_whose_kind_has_no_registered_channel_fails_with_a_clear_reason() {
    let dir = tempfile::tempdir().unwrap();
    for (name, url) in store_urls(dir.path()) {
        rt().block_on(async {
            let store = nurture_server::open_store(&url).await.unwrap();
            let raw = Raw::connect(&url).await;
            // No plugin host in this process: a plugin step cannot run here; and a
            // deliverer with no channel at all delivers no email either.
            let cases = [
                (
                    Deliverer::new(store.clone()),
                    "p1",
                    OutboxKind::Plugin,
                    json!({"plugin": "sms/send"}),
                    "no channel delivers `plugin` entries in this process",
                ),
                (
                    Deliverer::bare(store.clone()),
                    "e1",
                    OutboxKind::Email,
                    json!({"to": "a@example.com"}),
                    "no channel delivers `email` entries",
                ),
            ];
            for (deliverer, key, kind, payload, reason) in cases {
                queue(&store, vec![entry(key, kind, payload)]).await;
                deliverer.deliver_due(Utc::now(), 10).await.unwrap();
                let (state, error, _) = raw.outbox(key).await;
                assert_eq!(state, "failed", "{name}: {error}");
                assert!(error.contains(reason), "{name}: {error}");
            }
            assert!(
                store.deliveries().await.unwrap().is_empty(),
                "{name}: nothing delivered"
            );
        });
    }
}

#[test]
fn retry_backoff_has_jitter_within_bounds_and_grows_to_the_cap() {
    let p = RetryPolicy::default();
    let (low, high) = (1.0 - p.jitter, 1.0);
    let mut last_ceiling = Duration::ZERO;
    for attempts in 0..12 {
        let ceiling = p.ceiling(attempts);
        assert!(ceiling >= last_ceiling, "the wait never shrinks");
        assert!(ceiling <= p.cap);
        last_ceiling = ceiling;
        let waits: Vec<Duration> = (0..500u64).map(|seed| p.backoff(attempts, seed)).collect();
        for w in &waits {
            assert!(
                *w >= ceiling.mul_f64(low) && *w <= ceiling.mul_f64(high),
                "attempt {attempts}: {w:?} outside {:?}..={ceiling:?}",
                ceiling.mul_f64(low)
            );
        }
        let (min, max) = (waits.iter().min().unwrap(), waits.iter().max().unwrap());
        // Jitter: the draws spread over most of the range.
        assert!(
            max.as_secs_f64() - min.as_secs_f64() > ceiling.as_secs_f64() * p.jitter * 0.8,
            "attempt {attempts}: {min:?}..{max:?} is not jittered"
        );
    }
    assert_eq!(p.ceiling(0), p.base, "the first wait is the base");
    assert_eq!(
        p.ceiling(7),
        p.cap,
        "30 s doubled 7 times passes the hour: capped"
    );
    assert_eq!(p.ceiling(11), p.cap);

    // Through the deliverer: entries failing together come back spread over the jitter
    // window of their first backoff (24 s to 30 s by default), none earlier or later.
    let server = RecordingServer::start(|_| (503, "{}".into()));
    let dir = tempfile::tempdir().unwrap();
    for (name, url) in store_urls(dir.path()) {
        rt().block_on(async {
            let store = nurture_server::open_store(&url).await.unwrap();
            let raw = Raw::connect(&url).await;
            let keys: Vec<String> = (0..6).map(|i| format!("j{i}")).collect();
            queue(
                &store,
                keys.iter()
                    .map(|k| {
                        let mut e = entry(
                            k,
                            OutboxKind::Webhook,
                            json!({"url": format!("{}/busy", server.base_url())}),
                        );
                        // One contact each: all attempted in one wave.
                        e.contact = format!("c-{k}");
                        e
                    })
                    .collect(),
            )
            .await;
            let before = Utc::now();
            let d = Deliverer::new(store.clone()).with_egress(loopback());
            assert_eq!(d.deliver_due(before, 100).await.unwrap(), 6, "{name}");
            let after = Utc::now();
            for k in &keys {
                let (state, error, attempts) = raw.outbox(k).await;
                assert_eq!(
                    (state.as_str(), attempts),
                    ("pending", 1),
                    "{name}: {error}"
                );
            }
            let earliest =
                before + chrono::Duration::seconds(24) - chrono::Duration::milliseconds(5);
            assert!(
                store
                    .pending_outbox(earliest, 100)
                    .await
                    .unwrap()
                    .is_empty(),
                "{name}: a retry due before the jitter window"
            );
            let latest = after + chrono::Duration::seconds(30);
            assert_eq!(
                store.pending_outbox(latest, 100).await.unwrap().len(),
                6,
                "{name}: a retry due after the full backoff"
            );
        });
    }
}

#[test]
fn a_permanent_error_gives_up_at_once_while_a_retryable_one_is_retried() {
    let server = RecordingServer::start(|r| match r.path.as_str() {
        "/gone" => (404, r#"{"error":"no such contact"}"#.into()),
        // The receiver timed out reading the request: trying again can help.
        "/slow" => (408, "{}".into()),
        _ => (503, "{}".into()),
    });
    let dir = tempfile::tempdir().unwrap();
    for (name, url) in store_urls(dir.path()) {
        rt().block_on(async {
            let store = nurture_server::open_store(&url).await.unwrap();
            let raw = Raw::connect(&url).await;
            let hook = |key: &str, contact: &str, path: &str| {
                let mut e = entry(
                    key,
                    OutboxKind::Webhook,
                    json!({"url": format!("{}{path}", server.base_url())}),
                );
                e.contact = contact.into();
                e
            };
            queue(
                &store,
                vec![
                    hook("gone", "c1", "/gone"),
                    hook("slow", "c2", "/slow"),
                    hook("busy", "c3", "/busy"),
                ],
            )
            .await;
            // Two attempts at most, no wait between them.
            let policy = RetryPolicy {
                max_attempts: 2,
                base: Duration::ZERO,
                cap: Duration::ZERO,
                jitter: 0.5,
            };
            let d = Deliverer::new(store.clone())
                .with_egress(loopback())
                .with_retry(policy);
            assert_eq!(d.deliver_due(Utc::now(), 100).await.unwrap(), 3, "{name}");
            let (state, error, attempts) = raw.outbox("gone").await;
            assert_eq!((state.as_str(), attempts), ("failed", 1), "{name}: {error}");
            assert!(error.starts_with("HTTP 404"), "{name}: {error}");
            assert!(!error.contains("gave up"), "{name}: {error}");
            for key in ["slow", "busy"] {
                let (state, error, attempts) = raw.outbox(key).await;
                assert_eq!(
                    (state.as_str(), attempts),
                    ("pending", 1),
                    "{name}: {key}: {error}"
                );
            }
            // The second attempt is the last the policy allows.
            let later = Utc::now() + chrono::Duration::seconds(1);
            assert_eq!(d.deliver_due(later, 100).await.unwrap(), 2, "{name}");
            for (key, status) in [("slow", "HTTP 408"), ("busy", "HTTP 503")] {
                let (state, error, attempts) = raw.outbox(key).await;
                assert_eq!(
                    (state.as_str(), attempts),
                    ("failed", 2),
                    "{name}: {key}: {error}"
                );
                assert!(
                    error.starts_with(status) && error.ends_with("(gave up after 2 attempts)"),
                    "{name}: {key}: {error}"
                );
            }
            let seen = server.requests();
            let count = |p: &str| seen.iter().filter(|r| r.path == p).count();
            assert!(count("/gone") >= 1 && count("/slow") >= 2 && count("/busy") >= 2);
        });
    }
}
