//! Store errors classified by code, not text (typed conflicts, an unavailable store, a
//! failure no retry helps), and the stores' configuration: the Postgres schema, the lease.

use std::sync::Arc;
use std::time::Duration;

use crate::store::{postgres_store, sqlite_store};
use crate::util::rt;
use nurture_server::{PostgresConfig, SqliteConfig, StoreConfig};
use nurture_store::contract::{self, contact, event, t};
use nurture_store::{
    ConfigError, ConflictKind, Store, StoreError, Timer, Unavailability, UnitOfWork,
};

/// Both backends, each on a fresh database.
async fn stores() -> Vec<(&'static str, Arc<dyn Store>, Option<tempfile::TempDir>)> {
    let (sqlite, dir) = sqlite_store().await;
    let mut v = vec![("sqlite", sqlite, Some(dir))];
    if let Some(pg) = postgres_store().await {
        v.push(("postgres", pg, None));
    }
    v
}

/// The test cluster's admin URL, when there is one.
fn admin_url() -> Option<String> {
    std::env::var("NURTURE_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// A contact's address taken by another contact is a conflict on the contact email, from
/// the database's unique-violation code (SQLite 2067, Postgres 23505 on
/// `contacts_email_key`), with the driver's error as its source: on an update and on an
/// insert.
#[test]
fn a_taken_email_is_a_typed_conflict_on_both_backends() {
    rt().block_on(async {
        for (name, s, _d) in stores().await {
            s.commit(&UnitOfWork {
                contacts: vec![contact("a"), contact("b")],
                ..Default::default()
            })
            .await
            .unwrap();
            let mut b = s.contact("b").await.unwrap().unwrap();
            b.email = Some("a@example.com".into());
            let err = s
                .commit(&UnitOfWork {
                    contacts: vec![b],
                    ..Default::default()
                })
                .await
                .expect_err("the address is taken");
            assert_eq!(
                err.conflict(),
                Some(ConflictKind::ContactEmail),
                "{name}: {err:?}"
            );
            assert!(
                err.is_retryable() && !err.is_unavailable(),
                "{name}: {err:?}"
            );
            assert!(
                std::error::Error::source(&err).is_some(),
                "{name}: the unique violation is kept as the source: {err:?}"
            );
            let mut x = contact("x");
            x.email = Some("a@example.com".into());
            let err = s
                .insert_events(&[x], &[event("e1", "x", 1)])
                .await
                .expect_err("the address is taken");
            assert_eq!(
                err.conflict(),
                Some(ConflictKind::ContactEmail),
                "{name}: {err:?}"
            );
            assert!(
                s.contact("x").await.unwrap().is_none(),
                "{name}: nothing stored"
            );
        }
    });
}

/// A failure no retry helps is classified by its code even when its text says "locked"
/// or "busy" (here the name of a table that does not exist): not retryable, not
/// unavailable. So is a NOT NULL violation.
#[test]
fn a_syntax_or_constraint_failure_is_not_retryable_whatever_its_text() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("raw.db").display());
        let opts: sqlx::sqlite::SqliteConnectOptions = url.parse().unwrap();
        use sqlx::Connection;
        let mut sqlite = sqlx::SqliteConnection::connect_with(&opts.create_if_missing(true))
            .await
            .unwrap();
        let statements = [
            "SELECT * FROM locked_rows",
            "SELEC busy",
            "CREATE TEMP TABLE t (k TEXT NOT NULL)",
            "INSERT INTO t (k) VALUES (NULL)",
        ];
        let mut errors = vec![];
        for sql in statements {
            if let Err(e) = sqlx::query(sql).execute(&mut sqlite).await {
                errors.push(("sqlite", sql, StoreError::from(e)));
            }
        }
        if let Some(admin) = admin_url() {
            let mut pg = sqlx::PgConnection::connect(&admin).await.unwrap();
            for sql in statements {
                if let Err(e) = sqlx::query(sql).execute(&mut pg).await {
                    errors.push(("postgres", sql, StoreError::from(e)));
                }
            }
        }
        assert_eq!(
            errors.len(),
            if admin_url().is_some() { 6 } else { 3 },
            "{errors:?}"
        );
        for (name, sql, e) in errors {
            assert!(
                !e.is_retryable() && !e.is_unavailable(),
                "{name}: {sql}: {e:?}"
            );
            assert!(
                matches!(e, StoreError::Database { .. }),
                "{name}: {sql}: {e:?}"
            );
        }
    });
}

/// SQLite held by another writer past the configured busy timeout (200 ms here, not the
/// default 30 s): unavailable (busy), retryable, by the result code (SQLITE_BUSY).
#[test]
fn a_sqlite_store_locked_by_another_writer_is_busy_and_retryable() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let config = StoreConfig {
            sqlite: SqliteConfig {
                busy_timeout: Duration::from_millis(200),
                ..Default::default()
            },
            ..Default::default()
        };
        let s = nurture_server::open_store_with(&url, &config)
            .await
            .unwrap();
        use sqlx::Connection;
        let mut holder = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("BEGIN EXCLUSIVE")
            .execute(&mut holder)
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let err = s
            .commit(&UnitOfWork {
                contacts: vec![contact("c1")],
                ..Default::default()
            })
            .await
            .expect_err("the file is locked");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "gave up after the configured busy timeout, not the default: {:?}",
            started.elapsed()
        );
        assert!(
            matches!(
                err,
                StoreError::Unavailable {
                    reason: Unavailability::Busy,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.is_retryable() && err.is_unavailable(), "{err:?}");
        sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
        s.commit(&UnitOfWork {
            contacts: vec![contact("c1")],
            ..Default::default()
        })
        .await
        .expect("works once the lock is gone");
    });
}

/// A Postgres server that is not there (a closed port), and a database dropped under a
/// running store: unavailable (unreachable) and retryable, nothing stored.
#[test]
fn an_unreachable_postgres_is_retryable_and_unavailable() {
    rt().block_on(async {
        let err = nurture_server::open_store("postgres://nurture@127.0.0.1:1/nowhere")
            .await
            .err()
            .expect("nothing listens on port 1");
        assert!(err.is_unavailable() && err.is_retryable(), "{err:?}");
        let Some(admin) = admin_url() else {
            return;
        };
        let url = tokio::task::spawn_blocking(crate::util::fresh_postgres)
            .await
            .unwrap()
            .expect("a test cluster");
        let s = nurture_server::open_store(&url).await.unwrap();
        s.probe_write().await.unwrap();
        let db = url.rsplit('/').next().unwrap().to_string();
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&admin).await.unwrap();
        sqlx::query(&format!("DROP DATABASE \"{db}\" WITH (FORCE)"))
            .execute(&mut c)
            .await
            .unwrap();
        for _ in 0..3 {
            let err = s
                .commit(&UnitOfWork {
                    contacts: vec![contact("c1")],
                    ..Default::default()
                })
                .await
                .expect_err("the database is gone");
            assert!(err.is_unavailable() && err.is_retryable(), "{err:?}");
        }
    });
}

/// A Postgres store configured with a schema of its own keeps its tables (and its
/// migrations) there, passes the contract there, and does not see a store of the same
/// database in the default schema.
#[test]
fn a_postgres_store_in_its_own_schema_works_end_to_end() {
    rt().block_on(async {
        let Some(url) = tokio::task::spawn_blocking(crate::util::fresh_postgres)
            .await
            .unwrap()
        else {
            return;
        };
        let config = |schema: &str| StoreConfig {
            postgres: PostgresConfig {
                schema: schema.into(),
                ..Default::default()
            },
            ..Default::default()
        };
        let own = nurture_server::open_store_with(&url, &config("campaigns_2026"))
            .await
            .unwrap();
        contract::events_are_idempotent_by_id_and_queued_once(&*own).await;
        contract::a_commit_claims_the_due_entries_it_adds_for_its_worker_alone(&*own).await;
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = 'campaigns_2026' ORDER BY 1",
        )
        .fetch_all(&mut c)
        .await
        .unwrap();
        for t in ["_sqlx_migrations", "contacts", "events", "outbox", "runs"] {
            assert!(tables.iter().any(|x| x == t), "{t} in {tables:?}");
        }
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM campaigns_2026.events")
            .fetch_one(&mut c)
            .await
            .unwrap();
        assert_eq!(stored, 2);
        let default: Option<String> =
            sqlx::query_scalar("SELECT to_regclass('nurture.contacts')::text")
                .fetch_one(&mut c)
                .await
                .unwrap();
        assert_eq!(default, None, "nothing in the default schema");
        // A second store of the same database, in the default schema: its own tables.
        let other = nurture_server::open_store_with(&url, &config("nurture"))
            .await
            .unwrap();
        assert!(other.contact("c1").await.unwrap().is_none());
        assert!(own.contact("c1").await.unwrap().is_some());
    });
}

/// A schema name outside `[a-z_][a-z0-9_]*` is refused with a typed error before the
/// store connects or creates anything.
#[test]
fn an_invalid_schema_name_is_refused() {
    rt().block_on(async {
        let url = tokio::task::spawn_blocking(crate::util::fresh_postgres)
            .await
            .unwrap()
            // Refused before connecting: no server needed.
            .unwrap_or_else(|| "postgres://nurture@127.0.0.1:1/nowhere".into());
        for bad in [
            "",
            "Campaigns",
            "1st",
            "a-b",
            "x\"; DROP SCHEMA public; --",
            "pg_mine",
            &"a".repeat(64),
        ] {
            let config = StoreConfig {
                postgres: PostgresConfig {
                    schema: bad.to_string(),
                    ..Default::default()
                },
                ..Default::default()
            };
            let err = nurture_server::open_store_with(&url, &config)
                .await
                .err()
                .unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert!(
                matches!(&err, StoreError::Config(ConfigError::SchemaName(s)) if s == bad),
                "{bad:?}: {err:?}"
            );
            assert!(!err.is_retryable(), "{err:?}");
        }
    });
}

/// Each store claims for the lease its configuration gives (the binary's
/// `NURTURE_LEASE_SECS`; the library reads no environment): a timer claimed at `t` is
/// claimable again just after `t` + 5 s, not before.
#[test]
fn a_stores_lease_comes_from_its_configuration() {
    rt().block_on(async {
        let lease = Duration::from_secs(5);
        let dir = tempfile::tempdir().unwrap();
        let mut config = StoreConfig::default();
        config.sqlite.lease = lease;
        config.postgres.lease = lease;
        let mut urls = vec![format!("sqlite://{}", dir.path().join("t.db").display())];
        if let Some(pg) = tokio::task::spawn_blocking(crate::util::fresh_postgres)
            .await
            .unwrap()
        {
            urls.push(pg);
        }
        for url in urls {
            let s = nurture_server::open_store_with(&url, &config)
                .await
                .unwrap();
            assert_eq!(s.lease(), lease, "{url}");
            s.commit(&UnitOfWork {
                timers_set: vec![Timer {
                    run_id: "r1".into(),
                    contact: "c1".into(),
                    due_at: t(1),
                }],
                ..Default::default()
            })
            .await
            .unwrap();
            assert_eq!(s.due_timers(t(2), 10).await.unwrap().len(), 1, "{url}");
            let before = t(2) + chrono::Duration::seconds(4);
            assert!(s.due_timers(before, 10).await.unwrap().is_empty(), "{url}");
            let after = t(2) + chrono::Duration::seconds(6);
            assert_eq!(s.due_timers(after, 10).await.unwrap().len(), 1, "{url}");
        }
    });
}
