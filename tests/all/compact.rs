//! `nurture store compact` (issue 27, bounded journal storage): the journal of each run
//! that ended longer ago than `[retention] journal` becomes ONE summary line with its
//! counts; open runs keep every line byte for byte; a SQLite file shrinks; a compacted
//! run's explanation says it was compacted and its replay refuses plainly. On SQLite and
//! Postgres.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Duration, SubsecRound, Utc};
use serde_json::{json, Value};

use crate::util::{nurture, rt_multi as rt};
use nurture_engine::input::IncomingEvent;
use nurture_store::{JournalKind, Run, RunStatus, Store};

/// 5 steps per run: tag, wait 1 day, score, set, untag.
const WALK: &str = "workflow: walk\ntrigger: { event: walk.go }\nreentry: always\nsteps:\n  - id: s1\n    tag: [a]\n  - id: w1\n    wait: 1d\n  - id: s2\n    score: +1\n  - id: s3\n    set: { stage: b }\n  - id: s4\n    untag: [a]\n";
/// A run that stays open for a year.
const HOLD: &str = "workflow: hold\ntrigger: { event: walk.hold }\nsteps:\n  - id: h1\n    tag: [held]\n  - id: h2\n    wait: 365d\n  - id: h3\n    untag: [held]\n";
/// Contacts walking `walk` (enough journal for the file to shrink by pages).
const WALKERS: usize = 200;

fn project(tmp: &Path, retention: &str) -> PathBuf {
    let dir = tmp.join("p");
    std::fs::create_dir_all(dir.join("workflows")).unwrap();
    std::fs::write(
        dir.join("nurture.toml"),
        format!("[retention]\njournal = \"{retention}\"\n"),
    )
    .unwrap();
    std::fs::write(dir.join("workflows/walk.yaml"), WALK).unwrap();
    std::fs::write(dir.join("workflows/hold.yaml"), HOLD).unwrap();
    dir
}

fn ev(i: usize, kind: &str, at: DateTime<Utc>) -> IncomingEvent {
    IncomingEvent {
        index: i,
        id: Some(format!("{kind}-{i}")),
        kind: kind.into(),
        contact: None,
        email: Some(format!("c{i}@example.com")),
        at: Some(at),
        data: json!({}),
    }
}

/// 100 days ago: the walkers' runs ended 99 days ago, past a 30-day retention.
fn t0() -> DateTime<Utc> {
    (Utc::now() - Duration::days(100)).trunc_subsecs(0)
}

/// Runs the walkers to their end and one contact into `hold`; answers the store.
async fn campaign(dir: &Path, url: &str) -> Arc<dyn Store> {
    let project = Arc::new(nurture_core::project::load(dir).project.unwrap());
    let (store, engine) = crate::util::deployed(project, url, t0()).await;
    let mut events: Vec<IncomingEvent> = (0..WALKERS).map(|i| ev(i, "walk.go", t0())).collect();
    events.push(ev(WALKERS, "walk.hold", t0()));
    engine.ingest(&events, t0()).await.unwrap();
    engine.tick(t0()).await.unwrap();
    engine.tick(t0() + Duration::days(1)).await.unwrap();
    store
}

async fn runs(store: &dyn Store, workflow: &str) -> Vec<Run> {
    let filter = nurture_store::RunFilter {
        workflow: Some(workflow.into()),
        ..Default::default()
    };
    store.list_runs(&filter).await.unwrap()
}

fn compact(dir: &Path, url: &str, extra: &[&str]) -> Value {
    let d = dir.to_str().unwrap();
    let mut args = vec![
        "store", "compact", "--dir", d, "--store", url, "--format", "json",
    ];
    args.extend(extra);
    let o = nurture(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// The raw rows of a run's journal as the database holds them.
async fn raw_rows(url: &str, run: &str) -> Vec<(i64, String, String, Vec<u8>)> {
    if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        sqlx::query_as("SELECT id, at, kind, data FROM journal WHERE run_id = ? ORDER BY id")
            .bind(run)
            .fetch_all(&pool)
            .await
            .unwrap()
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        sqlx::query_as(
            "SELECT id, at::text, kind, data FROM nurture.journal WHERE run_id = $1 ORDER BY id",
        )
        .bind(run)
        .fetch_all(&pool)
        .await
        .unwrap()
    }
}

/// Postgres: the bytes on disk of the journal's partitions holding rows (with their
/// indexes; an empty month's are about 24 KiB), its partitions, and the rows in the
/// default one.
async fn postgres_journal(url: &str) -> (i64, Vec<String>, i64) {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let bytes = sqlx::query_scalar(
        "SELECT coalesce(sum(pg_total_relation_size(relid)), 0)::bigint \
         FROM pg_partition_tree('nurture.journal') WHERE pg_relation_size(relid) > 0",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let parts = sqlx::query_scalar(
        "SELECT relid::regclass::text FROM pg_partition_tree('nurture.journal') \
         WHERE isleaf ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let default = sqlx::query_scalar("SELECT count(*) FROM nurture.journal_default")
        .fetch_one(&pool)
        .await
        .unwrap();
    (bytes, parts, default)
}

/// Indexes of the journal's partitions that are not partitions of the journal's own
/// (a rewritten partition whose indexes differ from the journal's gets a second set at
/// ATTACH), or not built full.
async fn postgres_loose_indexes(url: &str) -> Vec<String> {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    sqlx::query_scalar(
        "SELECT x.indexrelid::regclass::text FROM pg_partition_tree('nurture.journal') p \
         JOIN pg_index x ON x.indrelid = p.relid JOIN pg_class c ON c.oid = x.indexrelid \
         WHERE p.isleaf AND (NOT EXISTS (SELECT 1 FROM pg_inherits i \
           WHERE i.inhrelid = x.indexrelid) \
           OR NOT coalesce(c.reloptions, '{}') @> '{fillfactor=100}') ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
}

async fn page_count(url: &str) -> i64 {
    let pool = sqlx::SqlitePool::connect(url).await.unwrap();
    sqlx::query_scalar("PRAGMA page_count")
        .fetch_one(&pool)
        .await
        .unwrap()
}

/// The whole story on one store.
fn compaction_on(url_of: impl Fn(&Path) -> Option<String>) {
    let rt = rt();
    let tmp = tempfile::tempdir().unwrap();
    let dir = project(tmp.path(), "30d");
    let Some(url) = url_of(tmp.path()) else {
        return;
    };
    let sqlite = url.starts_with("sqlite:");
    let store = rt.block_on(campaign(&dir, &url));
    let (walked, held) =
        rt.block_on(async { (runs(&*store, "walk").await, runs(&*store, "hold").await) });
    assert_eq!(walked.len(), WALKERS);
    assert!(walked.iter().all(|r| r.status == RunStatus::Completed));
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].status, RunStatus::Waiting);
    let one = walked[0].id.clone();
    let journal = rt.block_on(store.journal(&one)).unwrap();
    let kinds = |k: &str| journal.iter().filter(|j| j.kind == k).count();
    // By hand: 5 `step` lines, and effects enter, tag, wait, score, set, untag, exit.
    assert_eq!(kinds("step"), 5, "{journal:#?}");
    let open_before = rt.block_on(raw_rows(&url, &held[0].id));
    assert!(!open_before.is_empty());
    let pages_before = if sqlite {
        rt.block_on(page_count(&url))
    } else {
        rt.block_on(postgres_journal(&url)).0
    };
    drop(store);

    let dry = compact(&dir, &url, &["--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["runs"], WALKERS);
    assert_eq!(dry["lines"], WALKERS * journal.len());
    assert_eq!(dry["rows_deleted"], 0);
    let store = rt.block_on(nurture_server::open_store(&url)).unwrap();
    assert_eq!(rt.block_on(store.journal(&one)).unwrap(), journal);

    let done = compact(&dir, &url, &[]);
    assert_eq!(done["runs"], WALKERS, "{done}");
    assert_eq!(done["lines"], WALKERS * journal.len());
    assert_eq!(done["retention"], "30d");
    let summary = rt.block_on(store.journal(&one)).unwrap();
    assert_eq!(summary.len(), 1);
    assert_eq!(summary[0].kind, JournalKind::Summary);
    let d = &summary[0].data;
    assert_eq!(d["workflow"], "walk");
    assert_eq!(d["version"], 1);
    assert_eq!(d["status"], "completed");
    assert_eq!(d["steps"], 5);
    assert_eq!(d["lines"], journal.len());
    let effects: serde_json::Map<String, Value> = d["effects"].as_object().unwrap().clone();
    let effect_lines = journal.iter().filter(|j| j.kind == "effect").count() as u64;
    assert_eq!(
        effects.values().map(|n| n.as_u64().unwrap()).sum::<u64>(),
        effect_lines
    );
    for k in ["tag", "score", "set", "untag"] {
        assert_eq!(effects[k], 1, "{k} in {effects:?}");
    }
    assert_eq!(
        rt.block_on(raw_rows(&url, &held[0].id)),
        open_before,
        "the open run's journal rows are byte-identical"
    );
    if sqlite {
        let pages_after = rt.block_on(page_count(&url));
        assert!(
            pages_after < pages_before,
            "the file shrinks: {pages_before} -> {pages_after} pages"
        );
        assert!(done["file_bytes_after"].as_u64() < done["file_bytes_before"].as_u64());
    } else {
        // The months of t0 were not created ahead (100 days ago): their rows were in the
        // default partition; compaction moved them into their own, copied what they
        // keep and dropped the old files.
        let (bytes_after, parts, default_rows) = rt.block_on(postgres_journal(&url));
        let month = format!("nurture.journal_{}", t0().format("%Y_%m"));
        assert!(parts.contains(&month), "{month} in {parts:?}");
        assert_eq!(default_rows, 0);
        assert_eq!(
            rt.block_on(postgres_loose_indexes(&url)),
            Vec::<String>::new(),
            "every partition's indexes are the journal's (built as they are defined)"
        );
        assert!(
            bytes_after * 3 < pages_before * 2,
            "the journal's files shrink: {pages_before} -> {bytes_after} bytes"
        );
    }
    let again = compact(&dir, &url, &[]);
    assert_eq!(
        (again["runs"].clone(), again["already"].clone()),
        (json!(0), json!(WALKERS))
    );

    let o = nurture(&[
        "runs",
        "explain",
        &one,
        "--dir",
        dir.to_str().unwrap(),
        "--store",
        &url,
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(text.contains("COMPACTED"), "{text}");
    assert!(text.contains("5 steps"), "{text}");
    let project = nurture_core::project::load(&dir).project.unwrap();
    let replay = rt.block_on(nurture_engine::replay::Recording::load(
        &*store, &project, &one,
    ));
    let Err(err) = replay else {
        panic!("a compacted run cannot be replayed");
    };
    let err = err.to_string();
    assert!(err.contains("was compacted"), "{err}");
}

#[test]
fn sqlite_compaction_sums_up_ended_runs_keeps_open_ones_and_shrinks_the_file() {
    compaction_on(|tmp| Some(format!("sqlite://{}", tmp.join("nurture.db").display())));
}

#[test]
fn postgres_compaction_sums_up_ended_runs_and_keeps_open_ones() {
    compaction_on(|_| crate::util::fresh_postgres());
}

/// A fresh Postgres database and a project with a 30-day retention (its folder is kept
/// while the returned `TempDir` lives); `None` without Postgres.
fn postgres_project() -> Option<(String, tempfile::TempDir, PathBuf)> {
    let url = crate::util::fresh_postgres()?;
    let tmp = tempfile::tempdir().unwrap();
    let dir = project(tmp.path(), "30d");
    Some((url, tmp, dir))
}

/// Compaction on Postgres while a worker writes lines of now: moving the old months out
/// of the default partition and swapping the rewritten ones in neither fails a write nor
/// loses one, and the compaction completes.
#[test]
fn postgres_compaction_while_a_worker_writes_loses_no_line() {
    let Some((url, _tmp, dir)) = postgres_project() else {
        return;
    };
    rt().block_on(async {
        let worker = campaign(&dir, &url).await;
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writes = {
            let (worker, done) = (worker.clone(), done.clone());
            tokio::spawn(async move { write_until(&*worker, &done).await })
        };
        let compactor = nurture_server::open_store(&url).await.unwrap();
        let cutoff = Utc::now() - Duration::days(30);
        let compacted = nurture_store::retention::compact(&*compactor, cutoff, false).await;
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let written = writes.await.unwrap();
        assert_eq!(compacted.unwrap().runs, WALKERS as u64);
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        let stored: i64 =
            sqlx::query_scalar("SELECT count(*) FROM nurture.journal WHERE contact = 'probe'")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert!(written > 0);
        assert_eq!(stored, written, "every line written meanwhile is there");
        let (_, parts, default_rows) = postgres_journal(&url).await;
        let month = format!("nurture.journal_{}", t0().format("%Y_%m"));
        assert!(parts.contains(&month), "{month} in {parts:?}");
        assert_eq!(default_rows, 0);
    });
}

/// A reader holding the journal open (a long report, a dump) while compaction runs:
/// moving and rewriting partitions waits for its locks a bounded time (the workers queue
/// behind such a wait) and gives up; the compaction still completes, the partition stays
/// noted, and the next compaction, nothing left to compact, gives the space back.
#[test]
fn postgres_compaction_with_the_journal_held_open_leaves_the_space_for_the_next() {
    let Some((url, _tmp, dir)) = postgres_project() else {
        return;
    };
    rt().block_on(async {
        drop(campaign(&dir, &url).await);
        use sqlx::Connection;
        let mut reader = sqlx::PgConnection::connect(&url).await.unwrap();
        for sql in ["BEGIN", "SELECT count(*) FROM nurture.journal"] {
            sqlx::query(sql).execute(&mut reader).await.unwrap();
        }
        let (held_bytes, _, _) = postgres_journal(&url).await;
        let compactor = nurture_server::open_store(&url).await.unwrap();
        let cutoff = Utc::now() - Duration::days(30);
        let done = nurture_store::retention::compact(&*compactor, cutoff, false)
            .await
            .unwrap();
        assert_eq!(done.runs, WALKERS as u64);
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        let noted = || async {
            sqlx::query_scalar::<_, String>("SELECT partition FROM nurture.journal_reclaim")
                .fetch_all(&pool)
                .await
                .unwrap()
        };
        assert_eq!(noted().await, ["journal_default"]);
        let (_, _, default_rows) = postgres_journal(&url).await;
        assert!(
            default_rows > 0,
            "the months stay where they were meanwhile"
        );
        sqlx::query("COMMIT").execute(&mut reader).await.unwrap();

        let again = nurture_store::retention::compact(&*compactor, cutoff, false)
            .await
            .unwrap();
        assert_eq!((again.runs, again.already), (0, WALKERS as u64));
        assert_eq!(noted().await, Vec::<String>::new());
        let (bytes, parts, default_rows) = postgres_journal(&url).await;
        assert_eq!(default_rows, 0);
        assert!(parts.contains(&format!("nurture.journal_{}", t0().format("%Y_%m"))));
        assert!(bytes * 3 < held_bytes * 2, "{held_bytes} -> {bytes}");
    });
}

/// A month whose partition is missing (it was dropped here; in life, a month beginning)
/// is created when a store opens, also with a pool of one connection (the creation's
/// checks run in its transaction, not on a second connection).
#[test]
fn postgres_a_missing_month_is_created_at_open_with_a_pool_of_one() {
    let Some((url, _tmp, _dir)) = postgres_project() else {
        return;
    };
    rt().block_on(async {
        drop(nurture_server::open_store(&url).await.unwrap());
        let month = format!("journal_{}", Utc::now().format("%Y_%m"));
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        for sql in [
            format!("ALTER TABLE nurture.journal DETACH PARTITION nurture.{month}"),
            format!("DROP TABLE nurture.{month}"),
        ] {
            sqlx::query(&sql).execute(&pool).await.unwrap();
        }
        let mut config = nurture_server::StoreConfig::default();
        config.postgres.pool = 1;
        let store = nurture_server::open_store_with(&url, &config)
            .await
            .unwrap();
        let (_, parts, _) = postgres_journal(&url).await;
        assert!(parts.contains(&format!("nurture.{month}")), "{parts:?}");
        drop(store);
    });
}

/// A line written into a month without a partition while compaction moves that month
/// out of `journal_default` waits for the move, then meets the default partition's new
/// constraint (Postgres 23514): the store answers contention, which its callers retry (it
/// was a database error, failing the unit), and written again the line lands in the
/// month's partition.
#[test]
fn postgres_a_line_routed_to_the_default_partition_during_a_move_is_retried() {
    let Some((url, _tmp, _dir)) = postgres_project() else {
        return;
    };
    rt().block_on(async {
        let store = nurture_server::open_store(&url).await.unwrap();
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        let mut mover = pool.begin().await.unwrap();
        for sql in [
            "LOCK TABLE nurture.journal_default IN SHARE MODE",
            "CREATE TABLE nurture.journal_2020_01 (LIKE nurture.journal INCLUDING DEFAULTS)",
        ] {
            sqlx::query(sql).execute(&mut *mover).await.unwrap();
        }
        let uow = nurture_store::UnitOfWork {
            journal: vec![nurture_store::JournalEntry {
                run_id: None,
                contact: "probe".into(),
                at: "2020-01-15T10:00:00Z".parse().unwrap(),
                kind: "segment".into(),
                data: json!({"entered": "hot"}),
            }],
            ..Default::default()
        };
        let writer = store.clone();
        let first = uow.clone();
        let write = tokio::spawn(async move { writer.commit(&first).await });
        assert!(
            crate::util::until_a_lock_waits(
                &pool,
                "relation = 'nurture.journal_default'::regclass",
                &write
            )
            .await,
            "the write waits for the move"
        );
        sqlx::query(
            "ALTER TABLE nurture.journal ATTACH PARTITION nurture.journal_2020_01 \
             FOR VALUES FROM ('2020-01-01 00:00:00+00') TO ('2020-02-01 00:00:00+00')",
        )
        .execute(&mut *mover)
        .await
        .unwrap();
        mover.commit().await.unwrap();
        let err = write
            .await
            .unwrap()
            .expect_err("routed before the month existed");
        assert!(err.is_retryable(), "{err:?}");
        store.commit(&uow).await.expect("written again");
        let moved: i64 = sqlx::query_scalar("SELECT count(*) FROM nurture.journal_2020_01")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(moved, 1);
    });
}

/// Commits one line of now at a time for contact `probe` until `done` (and at least 20);
/// how many. A failed commit fails the test.
async fn write_until(store: &dyn Store, done: &std::sync::atomic::AtomicBool) -> i64 {
    let mut n = 0;
    while n < 20 || !done.load(std::sync::atomic::Ordering::SeqCst) {
        let line = nurture_store::JournalEntry {
            run_id: None,
            contact: "probe".into(),
            at: Utc::now(),
            kind: "segment".into(),
            data: json!({"n": n}),
        };
        let uow = nurture_store::UnitOfWork {
            journal: vec![line],
            ..Default::default()
        };
        store.commit(&uow).await.expect("a write during compaction");
        n += 1;
    }
    n
}

/// Without a retention nothing is compacted; a retention that is not a duration is an
/// error at its place in nurture.toml.
/// Issue 27 item 4: journal rows are stored encoded (a tag byte, then zstd with the
/// built-in dictionary), several times smaller than their JSON; a row of plain JSON text,
/// as every row was before the encoding, is still read.
fn journal_encoding_on(url_of: impl Fn(&Path) -> Option<String>) {
    let rt = rt();
    let tmp = tempfile::tempdir().unwrap();
    let dir = project(tmp.path(), "30d");
    let Some(url) = url_of(tmp.path()) else {
        return;
    };
    let store = rt.block_on(campaign(&dir, &url));
    let held = rt.block_on(runs(&*store, "hold")).remove(0);
    let raw = rt.block_on(raw_rows(&url, &held.id));
    let mut json_bytes = 0;
    for (_, _, _, data) in &raw {
        assert_eq!(data[0], nurture_store::encoding::TAG_ZSTD_V1, "{data:?}");
        json_bytes += nurture_store::encoding::decode(data)
            .unwrap()
            .to_string()
            .len();
    }
    let stored: usize = raw.iter().map(|r| r.3.len()).sum();
    assert!(
        stored * 3 < json_bytes,
        "{stored} bytes stored for {json_bytes} of JSON"
    );
    let before = rt.block_on(store.journal(&held.id)).unwrap();
    rt.block_on(insert_plain_line(&url, &held));
    let after = rt.block_on(store.journal(&held.id)).unwrap();
    assert_eq!(after[..before.len()], before[..]);
    assert_eq!(after.len(), before.len() + 1);
    assert_eq!(after[before.len()].kind, "note");
    assert_eq!(
        after[before.len()].data,
        json!({"written": "before the encoding"})
    );
}

/// A journal line of `run` as plain JSON text, the way rows were stored before.
async fn insert_plain_line(url: &str, run: &Run) {
    let json = r#"{"written":"before the encoding"}"#;
    macro_rules! insert {
        ($pool:expr, $sql:literal) => {
            sqlx::query($sql)
                .bind(&run.id)
                .bind(&run.contact)
                .bind(json)
                .execute(&$pool)
                .await
                .unwrap()
        };
    }
    if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        insert!(
            pool,
            "INSERT INTO journal (run_id, contact, at, kind, data) \
            VALUES (?, ?, '2030-01-01T00:00:00.000Z', 'note', ?)"
        );
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        insert!(
            pool,
            "INSERT INTO nurture.journal (run_id, contact, at, kind, data) \
            VALUES ($1, $2, now(), 'note', convert_to($3, 'UTF8'))"
        );
    }
}

#[test]
fn sqlite_journal_rows_are_stored_encoded_and_plain_json_rows_still_read() {
    journal_encoding_on(|tmp| Some(format!("sqlite://{}", tmp.join("j.db").display())));
}

#[test]
fn postgres_journal_rows_are_stored_encoded_and_plain_json_rows_still_read() {
    journal_encoding_on(|_| crate::util::fresh_postgres());
}

/// `[retention] contact_lines`: a contact's own lines older than it become ONE summary
/// line (counts by kind and effect) where they were; a row holding consent is kept; newer
/// lines stay; a second compaction leaves the summary alone; a dry run writes nothing.
fn contact_lines_on(url_of: impl Fn(&Path) -> Option<String>) {
    let rt = rt();
    let tmp = tempfile::tempdir().unwrap();
    let dir = project(tmp.path(), "30d");
    let toml = "[retention]\njournal = \"30d\"\ncontact_lines = \"30d\"\n";
    std::fs::write(dir.join("nurture.toml"), toml).unwrap();
    let Some(url) = url_of(tmp.path()) else {
        return;
    };
    let old = t0();
    let line = |at: DateTime<Utc>, kind: &str, data: Value| nurture_store::JournalEntry {
        run_id: None,
        contact: "c-old".into(),
        at,
        kind: kind.into(),
        data,
    };
    let score = |i: i64| {
        line(
            old + Duration::hours(i),
            "effect",
            json!({"effect": "score", "delta": 5, "score": 5 * i}),
        )
    };
    let consent = line(
        old + Duration::hours(2) + Duration::minutes(30),
        "consent",
        json!({"to": "opted_in"}),
    );
    let recent = line(
        Utc::now().trunc_subsecs(0),
        "segment",
        json!({"segment": "s", "entered": true}),
    );
    // A contact no longer stored (erased meanwhile) keeps its lines: nothing is written.
    let gone = nurture_store::JournalEntry {
        contact: "c-gone".into(),
        ..score(1)
    };
    let journal = vec![
        score(1),
        score(2),
        consent.clone(),
        score(3),
        recent.clone(),
        gone,
    ];
    let store = rt.block_on(nurture_server::open_store(&url)).unwrap();
    rt.block_on(store.commit(&nurture_store::UnitOfWork {
        contacts: vec![nurture_store::contract::contact("c-old")],
        journal,
        ..Default::default()
    }))
    .unwrap();
    let lines = |store: &Arc<dyn Store>| rt.block_on(store.contact_lines("c-old", 100)).unwrap();
    let before = lines(&store);
    assert_eq!(before.len(), 5);

    let dry = compact(&dir, &url, &["--dry-run"]);
    assert_eq!(dry["contact_lines"]["contacts"], 2, "{dry}");
    assert_eq!(dry["contact_lines"]["lines"], 4, "{dry}");
    assert_eq!(lines(&store), before, "a dry run writes nothing");

    let done = compact(&dir, &url, &[]);
    let c = &done["contact_lines"];
    assert_eq!(
        (c["contacts"].clone(), c["lines"].clone()),
        (json!(1), json!(3)),
        "{done}"
    );
    assert_eq!(
        (c["rows_deleted"].clone(), c["consent_rows_kept"].clone()),
        (json!(3), json!(1))
    );
    let after = lines(&store);
    assert_eq!(after.len(), 3, "{after:#?}");
    assert_eq!(after[0].kind, JournalKind::Summary);
    let d = &after[0].data;
    assert_eq!(d["lines"], 3);
    assert_eq!(d["kinds"], json!({"effect": 3}));
    assert_eq!(d["effects"], json!({"score": 3}));
    assert_eq!(d["from"], nurture_store::ts_out(old + Duration::hours(1)));
    assert_eq!(d["to"], nurture_store::ts_out(old + Duration::hours(3)));
    assert_eq!(
        after[0].at,
        old + Duration::hours(1),
        "at the first line's time"
    );
    // The summary sorts where the first line was: before the kept consent line.
    assert_eq!(after[1], consent);
    assert_eq!(after[2], recent);

    let gone = rt.block_on(store.contact_lines("c-gone", 100)).unwrap();
    assert_eq!(gone.len(), 1, "{gone:#?}");
    assert_eq!(gone[0].kind, "effect");
    let again = compact(&dir, &url, &[]);
    assert_eq!(again["contact_lines"]["contacts"], 0, "{again}");
    assert_eq!(lines(&store), after);

    // `contact_lines` alone is enough: the runs are then left as they are.
    let only = "[retention]\ncontact_lines = \"30d\"\n";
    std::fs::write(dir.join("nurture.toml"), only).unwrap();
    let alone = compact(&dir, &url, &[]);
    assert_eq!(alone["retention"], Value::Null, "{alone}");
    assert_eq!(alone["runs"], Value::Null, "{alone}");
    assert_eq!(alone["contact_lines"]["contacts"], 0, "{alone}");
}

#[test]
fn sqlite_contact_lines_past_retention_become_one_summary_and_consent_stays() {
    contact_lines_on(|tmp| Some(format!("sqlite://{}", tmp.join("c.db").display())));
}

#[test]
fn postgres_contact_lines_past_retention_become_one_summary_and_consent_stays() {
    contact_lines_on(|_| crate::util::fresh_postgres());
}

#[test]
fn retention_is_required_and_checked_at_its_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = project(tmp.path(), "30d");
    let d = dir.to_str().unwrap();
    std::fs::write(dir.join("nurture.toml"), "timezone = \"UTC\"\n").unwrap();
    let o = nurture(&["store", "compact", "--dir", d]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("[retention] journal"));
    std::fs::write(
        dir.join("nurture.toml"),
        "[retention]\njournal = \"90 days\"\n",
    )
    .unwrap();
    let o = nurture(&["validate", d]);
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!o.status.success(), "{out}");
    assert!(out.contains("nurture.toml:2:11"), "{out}");
}
