//! The `Store` contract ([`nurture_store::contract`]), written once and run against
//! every implementation, one test per check and backend (`store::sqlite_contract::*`,
//! `store::postgres_contract::*`), each on a fresh database; then what one implementation
//! does of its own.

use std::sync::Arc;

use chrono::Utc;
use serde_json::json;

use crate::util::{rt, rt_multi};
use nurture_server::{PostgresConfig, SqliteConfig, StoreConfig};
use nurture_store::contract::{self, contact, event, expect, outbox, run, t, version};
use nurture_store::{
    ConflictKind, Contact, NewEvent, OutboxEntry, Run, Store, StoreError, Timer, UnitOfWork, Wait,
};

/// A fresh SQLite store in a temporary directory (kept alive by the `TempDir`), with its
/// configuration spelled out.
pub(crate) async fn sqlite_store() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let config = StoreConfig {
        sqlite: SqliteConfig::default(),
        ..Default::default()
    };
    (
        nurture_server::open_store_with(&url, &config)
            .await
            .unwrap(),
        dir,
    )
}

/// A fresh Postgres store on a database of its own, with its configuration spelled out;
/// `None` without a Postgres to test against (see [`crate::util::fresh_postgres`]).
pub(crate) async fn postgres_store() -> Option<Arc<dyn Store>> {
    let url = fresh_postgres().await?;
    let config = StoreConfig {
        postgres: PostgresConfig::default(),
        ..Default::default()
    };
    Some(
        nurture_server::open_store_with(&url, &config)
            .await
            .expect("open postgres store"),
    )
}

/// Every implementation, each on a fresh database.
async fn stores() -> Vec<(&'static str, Arc<dyn Store>, tempfile::TempDir)> {
    let (sqlite, dir) = sqlite_store().await;
    let mut v = vec![("sqlite", sqlite, dir)];
    if let Some(store) = postgres_store().await {
        v.push(("postgres", store, tempfile::tempdir().unwrap()));
    }
    v
}

/// One test per check of [`contract::CHECKS`] and backend: `sqlite_contract::NAME` and
/// `postgres_contract::NAME` (skipped without Postgres to test against).
macro_rules! contract_tests {
    ($($check:ident),* $(,)?) => {
        mod sqlite_contract {
            use super::*;
            $(
                #[test]
                fn $check() {
                    rt().block_on(async {
                        let (s, _dir) = sqlite_store().await;
                        contract::$check(&*s).await;
                    });
                }
            )*
        }
        mod postgres_contract {
            use super::*;
            $(
                #[test]
                fn $check() {
                    rt().block_on(async {
                        if let Some(s) = postgres_store().await {
                            contract::$check(&*s).await;
                        }
                    });
                }
            )*
        }
        /// Every check of the contract has its tests here.
        #[test]
        fn every_contract_check_runs_on_both_backends() {
            assert_eq!(contract::CHECKS, [$(stringify!($check)),*]);
        }
    };
}

contract_tests!(
    events_are_idempotent_by_id_and_queued_once,
    a_stale_commit_is_rejected_and_changes_nothing,
    outbox_entries_are_delivered_at_most_once_per_key,
    a_commit_claims_the_due_entries_it_adds_for_its_worker_alone,
    timers_fire_in_due_order_and_counters_are_fenced,
    a_wave_of_completions_keeps_the_good_ones_when_one_is_stale,
    a_wave_of_mixed_outcomes_records_each_its_own_way,
    units_load_the_open_or_latest_run_of_each_workflow,
    a_deploy_is_fenced_by_the_expected_latest_versions_and_all_or_nothing,
    a_version_deployed_again_is_kept_unless_its_content_differs,
    versions_list_by_workflow_then_version_and_the_latest_of_each,
    open_runs_count_per_version_and_step_ignoring_ended_runs,
    open_runs_below_a_version_page_by_run_id,
    queues_count_events_due_timers_and_open_sends_by_state,
    compaction_sums_up_runs_ended_before_the_cutoff_and_nothing_else,
    a_merge_into_a_contact_not_stored_moves_nothing,
    a_commit_keeping_a_contact_gone_since_conflicts_and_writes_nothing,
);

/// A fresh Postgres database's URL (see [`crate::util::fresh_postgres`]), from async code.
async fn fresh_postgres() -> Option<String> {
    tokio::task::spawn_blocking(crate::util::fresh_postgres)
        .await
        .unwrap()
}

/// Runs `test` on a fresh Postgres database's URL; skips it when there is no Postgres
/// to test against (see [`crate::util::fresh_postgres`]).
fn on_fresh_postgres<F: std::future::Future<Output = ()>>(test: impl FnOnce(String) -> F) {
    rt().block_on(async {
        if let Some(url) = fresh_postgres().await {
            test(url).await;
        }
    });
}

/// Postgres: concurrent claims split the inbox by contact (a contact's queue goes to one
/// claimer, whole and in order), and a commit that would apply a contact's event while an
/// older one it did not take is still queued is rejected.
#[test]
fn postgres_claims_split_the_inbox_by_contact_and_fence_the_order() {
    rt().block_on(async {
        let mut ran = false;
        for (name, s, _d) in stores().await {
            if name != "postgres" {
                continue;
            }
            ran = true;
            s.insert_events(
                &[contact("a"), contact("b")],
                &[
                    event("a1", "a", 1),
                    event("b1", "b", 2),
                    event("a2", "a", 3),
                    event("b2", "b", 4),
                ],
            )
            .await
            .unwrap();
            // Each claim takes one contact's whole queue; the second claimer gets the other.
            let first = s.pending_events(1).await.unwrap();
            let second = s.pending_events(1).await.unwrap();
            let ids = |v: &[nurture_store::StoredEvent]| -> Vec<String> {
                v.iter().map(|e| e.id.clone()).collect()
            };
            assert_eq!(ids(&first), ["a1", "a2"]);
            assert_eq!(ids(&second), ["b1", "b2"]);
            assert!(s.pending_events(10).await.unwrap().is_empty(), "all leased");
            // A late event older than a2 arrives: applying a2 without it is refused.
            s.insert_events(&[], &[event("a0", "a", 2)]).await.unwrap();
            let skip_older = s
                .commit(&UnitOfWork {
                    events_done: vec![first[1].seq],
                    ..Default::default()
                })
                .await;
            assert!(
                matches!(skip_older, Err(StoreError::Conflict { .. })),
                "{skip_older:?}"
            );
            // b's queue, applied whole, commits.
            s.commit(&UnitOfWork {
                events_done: second.iter().map(|e| e.seq).collect(),
                ..Default::default()
            })
            .await
            .unwrap();
        }
        assert!(
            ran || std::env::var("DATABASE_URL").is_err(),
            "DATABASE_URL is set but the Postgres store did not run"
        );
    });
}

/// Workers register with a heartbeat and split the database's lanes (4 by default): each
/// gets its share, at least 1, and a retired worker's share goes back to the others.
#[test]
fn workers_split_the_database_lanes_and_a_retired_one_gives_its_share_back() {
    rt().block_on(async {
        for (name, s, _d) in stores().await {
            if name == "sqlite" {
                // One process: no registry, one lane.
                assert_eq!(s.heartbeat("a", "h", 1).await.unwrap(), 1);
                assert_eq!(s.parallelism(), 1);
                assert!(s.workers().await.unwrap().is_empty());
                continue;
            }
            assert_eq!(
                s.parallelism(),
                4,
                "{name}: the whole budget before any heartbeat"
            );
            assert_eq!(s.heartbeat("a", "h", 1).await.unwrap(), 1);
            assert_eq!(s.parallelism(), 4);
            assert_eq!(s.heartbeat("b", "h", 2).await.unwrap(), 2);
            assert_eq!(s.parallelism(), 2);
            for (id, pid) in [("c", 3), ("d", 4), ("e", 5)] {
                s.heartbeat(id, "h", pid).await.unwrap();
            }
            assert_eq!(s.heartbeat("a", "h", 1).await.unwrap(), 5);
            assert_eq!(s.parallelism(), 1, "at least one lane each");
            let listed: Vec<(String, u32)> = s
                .workers()
                .await
                .unwrap()
                .into_iter()
                .map(|w| (w.id, w.pid))
                .collect();
            assert_eq!(listed.len(), 5, "{listed:?}");
            assert!(listed.contains(&("e".to_string(), 5)), "{listed:?}");
            for id in ["b", "c", "d", "e"] {
                s.retire(id).await.unwrap();
            }
            assert_eq!(s.heartbeat("a", "h", 1).await.unwrap(), 1);
            assert_eq!(s.parallelism(), 4);
            let w = s.workers().await.unwrap();
            assert_eq!((w.len(), w[0].lanes), (1, 4), "{w:?}");
        }
    });
}

/// The engine's hand-off: with a deliverer of this process taking them
/// (`Engine::hand_off`), a commit's due entries come to it at once and no claim hands them
/// out again; beyond `HAND_OFF_CAP` unrecorded entries, and after `end_hand_off`, they
/// wait for the claims as before.
#[test]
fn the_engine_hands_the_due_entries_it_queues_to_its_own_deliverer() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("workflows")).unwrap();
        std::fs::write(
            dir.path().join("workflows/ping.yaml"),
            "workflow: ping\ntrigger: { event: test.ping }\nreentry: always\nsteps:\n  - id: hook\n    webhook: { url: \"http://127.0.0.1:9/hook\" }\n",
        )
        .unwrap();
        let project = Arc::new(
            nurture_core::project::load(dir.path())
                .project
                .expect("valid project"),
        );
        let ping = |id: &str, email: &str| nurture_engine::input::IncomingEvent {
            index: 0,
            id: Some(id.into()),
            kind: "test.ping".into(),
            contact: None,
            email: Some(email.into()),
            at: None,
            data: json!({}),
        };
        for (name, s, _d) in stores().await {
            let engine = std::sync::Arc::new(nurture_engine::Engine::new(project.clone(), s.clone()));
            let mut handed = engine.hand_off();
            let now = Utc::now();
            engine
                .ingest(&[ping("e1", "a@example.com"), ping("e2", "b@example.com")], now)
                .await
                .unwrap();
            engine.tick(now).await.unwrap();
            let mut got: Vec<String> = Vec::new();
            while let Ok((_, batch)) = handed.rx.try_recv() {
                got.extend(batch.into_iter().map(|e| e.kind.to_string()));
            }
            assert_eq!(got, ["webhook", "webhook"], "{name}");
            assert_eq!(handed.held.load(std::sync::atomic::Ordering::Relaxed), 2, "{name}");
            assert!(
                s.pending_outbox(Utc::now(), 10).await.unwrap().is_empty(),
                "{name}: claimed by the commit, so no claim hands them out again"
            );
            // A deliverer holding its limit of unrecorded entries gets no more: they
            // wait for a claim.
            handed
                .held
                .store(nurture_engine::HAND_OFF_CAP, std::sync::atomic::Ordering::Relaxed);
            engine
                .ingest(&[ping("e3", "a@example.com")], now)
                .await
                .unwrap();
            engine.tick(now).await.unwrap();
            assert!(handed.rx.try_recv().is_err(), "{name}: over the limit");
            assert_eq!(
                s.pending_outbox(Utc::now(), 10).await.unwrap().len(),
                1,
                "{name}: over the limit, the entry waits for a claim"
            );
            engine.end_hand_off();
            engine
                .ingest(&[ping("e4", "a@example.com")], now)
                .await
                .unwrap();
            engine.tick(now).await.unwrap();
            assert!(handed.rx.recv().await.is_none(), "{name}: the hand-off ended");
            assert_eq!(
                s.pending_outbox(Utc::now(), 10).await.unwrap().len(),
                1,
                "{name}: without a hand-off, the entry waits for a claim"
            );
        }
    });
}

/// A batch that has taken too long starts no more attempts once its lease is nearly over
/// (`deliver::last_start`): its entries stay leased and come back to every worker
/// afterwards, instead of this worker delivering them while another, seeing the lease
/// over, delivers them too.
#[test]
fn deliveries_do_not_start_once_their_lease_is_nearly_over() {
    let server = crate::util::RecordingServer::start(|_| (200, "{}".into()));
    let seen = || server.seen.lock().unwrap().len();
    rt().block_on(async {
        for (name, s, _d) in stores().await {
            let hook = |key: &str| OutboxEntry {
                kind: "webhook".into(),
                payload: json!({"url": format!("http://127.0.0.1:{}/hook", server.port)}),
                ..outbox(key)
            };
            s.commit(&UnitOfWork {
                outbox: vec![hook("h1"), hook("h2")],
                ..Default::default()
            })
            .await
            .unwrap();
            // The receiver is on loopback: allowed explicitly (refused by default).
            let loopback = nurture_channels::egress::Settings {
                allow: vec!["127.0.0.1".parse().unwrap()],
                ..Default::default()
            };
            let egress = nurture_channels::egress::Egress::new(&loopback, "test").unwrap();
            let d = nurture_channels::deliver::Deliverer::new(s.clone())
                .with_egress(std::sync::Arc::new(egress));
            let due = s.pending_outbox(Utc::now(), 10).await.unwrap();
            assert_eq!(due.len(), 2, "{name}");
            let before = seen();
            // Claimed a whole lease ago: too late to start any attempt.
            let long_ago = std::time::Instant::now()
                .checked_sub(s.lease())
                .expect("uptime longer than a lease");
            d.deliver(due.clone(), long_ago).await.unwrap();
            assert_eq!(seen(), before, "{name}: nothing attempted");
            for key in ["h1", "h2"] {
                assert_eq!(
                    s.outbox_state(key).await.unwrap().as_deref(),
                    Some("pending"),
                    "{name}: {key} left to its lease"
                );
            }
            // Claimed just now: both delivered, one after the other (one contact).
            d.deliver(due, std::time::Instant::now()).await.unwrap();
            assert_eq!(seen(), before + 2, "{name}");
            for key in ["h1", "h2"] {
                assert_eq!(
                    s.outbox_state(key).await.unwrap().as_deref(),
                    Some("delivered"),
                    "{name}: {key}"
                );
            }
        }
    });
}

/// A due timer comes back with its run's contact: the Postgres store keeps it in the
/// timer's row, and a timer stored before it did (no contact) still gets it from the run.
#[test]
fn a_due_timer_comes_back_with_its_runs_contact() {
    on_fresh_postgres(|url| async move {
        let s = nurture_server::open_store(&url).await.unwrap();
        s.commit(&UnitOfWork {
            contacts: vec![contact("c1"), contact("c2")],
            runs: vec![run("r1", "c1"), run("r2", "c2")],
            timers_set: vec![
                Timer {
                    run_id: "r1".into(),
                    contact: "c1".into(),
                    due_at: t(5),
                },
                Timer {
                    run_id: "r2".into(),
                    contact: "c2".into(),
                    due_at: t(6),
                },
            ],
            ..Default::default()
        })
        .await
        .unwrap();
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        let stored: Vec<(String, Option<String>)> =
            sqlx::query_as("SELECT run_id, contact FROM nurture.timers ORDER BY run_id")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        assert_eq!(
            stored,
            [
                ("r1".into(), Some("c1".into())),
                ("r2".into(), Some("c2".into()))
            ]
        );
        // As a database written before timers kept their contact holds it.
        sqlx::query("UPDATE nurture.timers SET contact = NULL WHERE run_id = 'r2'")
            .execute(&mut conn)
            .await
            .unwrap();
        let due: Vec<(String, Option<String>)> = s
            .due_timers(t(7), 10)
            .await
            .unwrap()
            .into_iter()
            .map(|d| (d.run_id, d.contact))
            .collect();
        assert_eq!(
            due,
            [
                ("r1".into(), Some("c1".into())),
                ("r2".into(), Some("c2".into()))
            ]
        );
    });
}

/// The rows a step updates (the inbox's lease, the run, the contact) keep their new
/// version on their own page (a HOT update: no new index entries), even when every row of
/// a full page is updated in one batch as the engine does (migration 0009; at fillfactor
/// 80 most of them moved to another page).
#[test]
fn a_steps_updates_stay_on_their_rows_pages() {
    on_fresh_postgres(|url| async move {
        let s = nurture_server::open_store(&url).await.unwrap();
        let n = 200;
        let ids: Vec<String> = (0..n).map(|i| format!("contact-{i:05}")).collect();
        // Documents of a size the benchmark's campaign stores (about 600 bytes a run).
        let payload =
            json!({"form": "webinar-signup", "page": "/pricing", "note": "x".repeat(300)});
        let events: Vec<NewEvent> = ids
            .iter()
            .map(|c| NewEvent {
                data: payload.clone(),
                ..event(&format!("ev-{c}"), c, 2)
            })
            .collect();
        let contacts: Vec<Contact> = ids.iter().map(|c| contact(c)).collect();
        s.insert_events(&contacts, &events).await.unwrap();
        let runs: Vec<Run> = ids
            .iter()
            .map(|c| Run {
                trigger_event: Some(payload.clone()),
                event: Some(payload.clone()),
                ..run(&format!("run-{c}"), c)
            })
            .collect();
        s.commit(&UnitOfWork {
            runs: runs.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        // Each row's page (the block of its ctid), by key.
        let pages = |table: &'static str, key: &'static str| {
            format!("SELECT {key}::text, (ctid::text::point)[0]::bigint FROM nurture.{table} ORDER BY 1")
        };
        // The tables a step updates, with their keys.
        let tables = [("inbox", "seq"), ("runs", "id"), ("contacts", "id")];
        let mut before = Vec::new();
        for (table, key) in tables {
            let rows: Vec<(String, i64)> = sqlx::query_as(&pages(table, key))
                .fetch_all(&mut conn)
                .await
                .unwrap();
            assert_eq!(rows.len(), n, "{table}");
            before.push(rows);
        }
        // The engine's batch: claim the events (a lease on each inbox row), then update
        // every run and contact at once.
        assert_eq!(s.pending_events(n as i64).await.unwrap().len(), n);
        let mut stored = Vec::new();
        for id in &ids {
            stored.push(s.contact(id).await.unwrap().expect("stored with its event"));
        }
        s.commit(&UnitOfWork {
            contacts: stored
                .into_iter()
                .map(|mut c| {
                    c.score += 10;
                    c.tags.insert("webinar".into());
                    c
                })
                .collect(),
            runs: runs
                .into_iter()
                .map(|r| Run {
                    step: Some("follow-up".into()),
                    updated_at: t(3),
                    rev: 1,
                    ..r
                })
                .collect(),
            ..Default::default()
        })
        .await
        .unwrap();
        for ((table, key), was) in tables.into_iter().zip(before) {
            let now: Vec<(String, i64)> = sqlx::query_as(&pages(table, key))
                .fetch_all(&mut conn)
                .await
                .unwrap();
            let moved = was.iter().zip(&now).filter(|(a, b)| a != b).count();
            assert_eq!(
                moved, 0,
                "{table}: {moved} of {n} rows moved to another page"
            );
        }
    });
}

/// The store's sessions keep a keyed statement on its index on a table that grew after
/// the statement's plan was cached. A generic plan made while the outbox was nearly empty
/// had been a sequential scan, and went on scanning the whole outbox as it grew (a
/// delivery outcome's update took 2 ms in the benchmark's (c) until autovacuum analyzed
/// the table). Fails without `enable_seqscan = off` in the session options.
#[test]
fn a_keyed_statement_keeps_its_index_on_a_table_grown_since_it_was_planned() {
    on_fresh_postgres(|url| async move {
        // The schema, migrated.
        nurture_server::open_store(&url).await.unwrap();
        use sqlx::{Connection, Executor};
        let opts = nurture_store_postgres::PostgresStore::session_options(
            &url,
            &PostgresConfig::default(),
        )
        .unwrap();
        let mut conn = sqlx::PgConnection::connect_with(&opts).await.unwrap();
        // Statistics that say the outbox is empty, and no autovacuum to update them.
        conn.execute("ALTER TABLE outbox SET (autovacuum_enabled = off)")
            .await
            .unwrap();
        conn.execute("ANALYZE outbox").await.unwrap();
        // The statement the deliverer runs, prepared and executed enough times while the
        // table is small that Postgres caches a generic plan for it.
        conn.execute(
            "PREPARE delivered(text[]) AS \
             UPDATE outbox SET state = 'delivered', attempts = attempts + 1 WHERE key = ANY($1)",
        )
        .await
        .unwrap();
        for _ in 0..8 {
            conn.execute("EXECUTE delivered('{k1,k2}')").await.unwrap();
        }
        conn.execute(
            "INSERT INTO outbox (key, contact, kind, payload, created_at, due_at) \
             SELECT 'k' || i, 'c', 'webhook', '{}', now(), now() FROM generate_series(1, 20000) i",
        )
        .await
        .unwrap();
        let plan: Vec<String> = sqlx::query_scalar("EXPLAIN EXECUTE delivered('{k1,k2}')")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        let plan = plan.join("\n");
        assert!(!plan.contains("Seq Scan"), "{plan}");
        assert!(plan.contains("outbox_pkey"), "{plan}");
    });
}

/// Contacts, runs and the journal written while their documents were `jsonb` read back
/// the same once migration 0010 has made them `json` (and dropped the journal's id index)
/// and 0021 the journal's data `bytea` (encoded from then on, the old rows kept as text).
#[test]
fn documents_written_as_jsonb_read_the_same_after_they_become_json() {
    on_fresh_postgres(|url| async move {
        let entry = |kind: &str, data: serde_json::Value| nurture_store::JournalEntry {
            run_id: Some("r1".into()),
            contact: "c1".into(),
            at: t(2),
            kind: kind.into(),
            data,
        };
        let mut c = contact("c1");
        c.tags = ["vip".to_string()].into();
        c.fields
            .insert("plan".into(), json!({"tier": "pro", "seats": 3}));
        let journal = vec![
            // Two entries of one run at one time share a row (packed); the third is alone.
            entry("step", json!({"step": "s1", "kind": "tag"})),
            entry(
                "effect",
                json!({"effect": "tag", "tags": ["vip"], "é": "\"q\""}),
            ),
            nurture_store::JournalEntry {
                at: t(3),
                ..entry("effect", json!({"effect": "wait", "until": null}))
            },
        ];
        let s = nurture_server::open_store(&url).await.unwrap();
        s.commit(&UnitOfWork {
            contacts: vec![c.clone()],
            runs: vec![run("r1", "c1")],
            journal: journal.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
        drop(s);
        // The database as the builds before 0010 left it: jsonb documents (keys in
        // jsonb's order), the journal one table (not partitioned) with its rows as jsonb
        // (the two entries at t(2) packed, as the store writes them) and an index of its
        // ids, 0010, 0021, 0022 and 0023 not applied.
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        for sql in [
            "ALTER TABLE nurture.contacts ALTER COLUMN doc TYPE jsonb USING doc::jsonb",
            "ALTER TABLE nurture.runs ALTER COLUMN doc TYPE jsonb USING doc::jsonb",
            "DROP TABLE nurture.journal, nurture.journal_reclaim",
            r#"CREATE TABLE nurture.journal (id BIGSERIAL PRIMARY KEY, run_id TEXT COLLATE "C",
               contact TEXT COLLATE "C" NOT NULL, at TIMESTAMPTZ NOT NULL, kind TEXT NOT NULL,
               data JSONB NOT NULL)"#,
            "CREATE INDEX journal_run ON nurture.journal (run_id, id)",
            "CREATE INDEX journal_contact_lines ON nurture.journal (contact, id) \
             WHERE run_id IS NULL",
            r#"INSERT INTO nurture.journal (run_id, contact, at, kind, data) VALUES
               ('r1', 'c1', '2026-03-01T02:00:00Z', 'entries', '[{"kind": "step", "data": {"step": "s1", "kind": "tag"}}, {"kind": "effect", "data": {"effect": "tag", "tags": ["vip"], "é": "\"q\""}}]'),
               ('r1', 'c1', '2026-03-01T03:00:00Z', 'effect', '{"effect": "wait", "until": null}')"#,
            "DELETE FROM nurture._sqlx_migrations WHERE version IN (10, 21, 22, 23)",
        ] {
            sqlx::query(sql).execute(&mut conn).await.unwrap();
        }
        let s = nurture_server::open_store(&url).await.unwrap();
        let types: Vec<String> = sqlx::query_scalar(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE (attrelid, attname) IN (('nurture.contacts'::regclass, 'doc'), \
               ('nurture.runs'::regclass, 'doc'), ('nurture.journal'::regclass, 'data'))",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        assert_eq!(types, ["json", "json", "bytea"]);
        let partitioned: String = sqlx::query_scalar(
            "SELECT relkind::text FROM pg_class WHERE oid = 'nurture.journal'::regclass",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(partitioned, "p", "0022 made the journal partitioned");
        let by_run: String = sqlx::query_scalar(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = 'nurture' \
             AND indexname = 'journal_run'",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert!(
            by_run.ends_with("(run_id) WITH (fillfactor='100')"),
            "0023 keyed the index by run alone: {by_run}"
        );
        let got = s.contact("c1").await.unwrap().unwrap();
        assert_eq!((got.tags, got.fields), (c.tags, c.fields));
        let r = s.run("r1").await.unwrap().unwrap();
        assert_eq!(
            (r.step.clone(), r.wait.clone(), r.rev),
            (Some("pause".into()), Some(Wait::Timer), 1)
        );
        assert_eq!(s.journal("r1").await.unwrap(), journal);
        // And the upgraded tables take new writes.
        s.commit(&UnitOfWork {
            runs: vec![Run {
                step: Some("next".into()),
                ..r
            }],
            journal: vec![entry("step", json!({"step": "next"}))],
            ..Default::default()
        })
        .await
        .unwrap();
        assert_eq!(s.run("r1").await.unwrap().unwrap().rev, 2);
        assert_eq!(s.journal("r1").await.unwrap().len(), 4);
    });
}

/// A claim of queued events that follows one which filled its batch starts after that
/// one's last head instead of stepping over the leased rows before it again; what it passes
/// by (a lease run out, an event stored with an older time) is claimed once a claim comes
/// back short and the next one starts from the head.
#[test]
fn inbox_claims_past_the_head_leave_nothing_behind() {
    on_fresh_postgres(|url| async move {
        let s = nurture_server::open_store(&url).await.unwrap();
        s.insert_events(
            &[contact("a"), contact("b"), contact("c"), contact("d")],
            &[
                event("a1", "a", 1),
                event("b1", "b", 2),
                event("c1", "c", 3),
            ],
        )
        .await
        .unwrap();
        let ids = |v: Vec<nurture_store::StoredEvent>| -> Vec<String> {
            v.into_iter().map(|e| e.id).collect()
        };
        // The first claim starts at the head and fills its batch of one.
        assert_eq!(ids(s.pending_events(1).await.unwrap()), ["a1"]);
        // a1's lease runs out (its worker died); d0 arrives, older than everything queued.
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        sqlx::query(
            "UPDATE nurture.inbox SET lease_until = now() - interval '1 second' \
             WHERE seq = (SELECT seq FROM nurture.events WHERE id = 'a1')",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        s.insert_events(&[], &[event("d0", "d", 0)]).await.unwrap();
        // The next claims go on after a1, then come back short at the end of the queue.
        assert_eq!(ids(s.pending_events(1).await.unwrap()), ["b1"]);
        assert_eq!(ids(s.pending_events(1).await.unwrap()), ["c1"]);
        assert!(s.pending_events(1).await.unwrap().is_empty());
        // Which sends the next one to the head: what the cursor passed by, in order.
        assert_eq!(ids(s.pending_events(10).await.unwrap()), ["d0", "a1"]);
    });
}

/// Two deploys planned against the same latest version (v1), one storing v2 and the other
/// v3, race through two stores on one database (as two processes would): exactly one
/// wins and the other is a `WorkflowVersion` conflict, and the latest is the winner's.
/// Deploys are serialised (Postgres: an advisory lock; SQLite: the write lock taken at
/// `BEGIN`); without that both read v1 and both store (Postgres), or one fails busy
/// (SQLite). Twenty rounds, each on a workflow of its own.
#[test]
fn racing_deploys_planned_against_one_latest_version_end_one_won_one_conflicted() {
    rt_multi().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut urls = vec![(
            "sqlite",
            format!("sqlite://{}", dir.path().join("t.db").display()),
        )];
        if let Some(url) = fresh_postgres().await {
            urls.push(("postgres", url));
        }
        for (name, url) in urls {
            let a = nurture_server::open_store(&url).await.unwrap();
            let b = nurture_server::open_store(&url).await.unwrap();
            for round in 0..20 {
                let wf = format!("w{round}");
                a.deploy(&[version(&wf, 1, "h1")], &[expect(&wf, None)])
                    .await
                    .unwrap();
                let go = |s: Arc<dyn Store>, v: u32| {
                    let wf = wf.clone();
                    tokio::spawn(async move {
                        s.deploy(
                            &[version(&wf, v, &format!("h{v}"))],
                            &[expect(&wf, Some(1))],
                        )
                        .await
                    })
                };
                let (ra, rb) = (go(a.clone(), 2), go(b.clone(), 3));
                let (ra, rb) = (ra.await.unwrap(), rb.await.unwrap());
                let conflict = |r: &Result<(), StoreError>| {
                    matches!(r, Err(e) if e.conflict() == Some(ConflictKind::WorkflowVersion))
                };
                let winner = match (&ra, &rb) {
                    (Ok(()), r) if conflict(r) => 2,
                    (r, Ok(())) if conflict(r) => 3,
                    _ => panic!("{name} round {round}: {ra:?} and {rb:?}"),
                };
                let latest = a.latest_versions().await.unwrap();
                assert_eq!(latest.len(), round + 1, "{name}: {latest:?}");
                let mine = latest.iter().find(|l| l.workflow == wf).unwrap();
                assert_eq!(mine.version, winner, "{name} round {round}");
                assert_eq!(
                    a.workflow_versions(Some(&wf)).await.unwrap().len(),
                    2,
                    "{name} round {round}: v1 and the winner's only"
                );
            }
        }
    });
}

/// A worker's note (what it refuses to do and why) shows in the list of workers until it
/// is cleared, through heartbeats; a note over the bound is refused. SQLite keeps no
/// registry: the note is accepted and there is still no worker to show.
#[test]
fn a_workers_note_shows_in_the_list_of_workers_until_cleared() {
    rt().block_on(async {
        for (name, s, _d) in stores().await {
            s.heartbeat("a", "h", 1).await.unwrap();
            s.heartbeat("b", "h", 2).await.unwrap();
            let note = "refuses to enrol into `welcome`: its project has v1, v2 is deployed";
            s.set_worker_note("a", Some(note)).await.unwrap();
            if name == "sqlite" {
                assert!(s.workers().await.unwrap().is_empty());
                continue;
            }
            let notes = || async {
                s.workers()
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|w| (w.id, w.note))
                    .collect::<Vec<_>>()
            };
            assert_eq!(
                notes().await,
                [
                    ("a".to_string(), Some(note.to_string())),
                    ("b".to_string(), None)
                ]
            );
            s.heartbeat("a", "h", 1).await.unwrap();
            assert_eq!(
                notes().await[0].1.as_deref(),
                Some(note),
                "kept by heartbeats"
            );
            s.set_worker_note("a", None).await.unwrap();
            assert_eq!(notes().await[0].1, None);
            let long = "x".repeat(nurture_store::versions::MAX_LABEL + 1);
            let r = s.set_worker_note("b", Some(&long)).await;
            assert!(matches!(r, Err(StoreError::TooLarge { .. })), "{r:?}");
            assert_eq!(notes().await[1].1, None);
        }
    });
}
