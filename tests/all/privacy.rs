//! A person's rights (GDPR Art. 15 and 17), on SQLite and on Postgres: the export holds
//! everything about the contact; erasing it in the middle of a campaign leaves no byte of
//! the address or the name in the store (SQLite file and log; Postgres tables after
//! `VACUUM`), no `.eml` file, no queued send, keeps report totals, and the address is never
//! mailed again even when it comes back.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use chrono::Utc;
use serde_json::{json, Value};

use nurture_engine::Engine;
use nurture_store::{CountFilter, OutboxFilter, Store};

use crate::util::{fresh_postgres, rt};

const ADDRESS: &str = "ana.petrova@acme.test";
const NAME: &str = "Petrova";

/// A project whose workflow `w` mails the contact, waits a week and mails again, and
/// whose workflow `hook` posts the address to a webhook that never answers (its send
/// stays queued for a retry).
fn project(dir: &Path) {
    std::fs::create_dir_all(dir.join("workflows")).unwrap();
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(
        dir.join("nurture.toml"),
        "[sender]\nfrom = \"Acme <hello@acme.test>\"\n[egress]\nallow = [\"127.0.0.1\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("templates/hello.html"),
        "---\nsubject: Hello {{ contact.first_name }}\n---\n\
         <p>Hi {{ contact.first_name }} {{ contact.last_name }}</p>\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("workflows/w.yaml"),
        "workflow: w\ntrigger: { event: form.submitted }\nsteps:\n  - id: hi\n    send_email: hello\n  \
         - id: later\n    wait: 7d\n  - id: again\n    send_email: hello\n",
    )
    .unwrap();
    let port = crate::util::free_port();
    std::fs::write(
        dir.join("workflows/hook.yaml"),
        format!(
            "workflow: hook\ntrigger: {{ event: form.submitted }}\nsteps:\n  - id: ping\n    \
             webhook:\n      url: \"http://127.0.0.1:{port}/crm\"\n      \
             body: {{ email: \"${{contact.email}}\", name: \"${{contact.last_name}}\" }}\n"
        ),
    )
    .unwrap();
}

fn ana() -> nurture_engine::input::ContactRow {
    let row = json!({"id": "c-ana", "email": ADDRESS, "first_name": "Ana",
                     "last_name": NAME, "consent": "opted_in"});
    nurture_engine::input::parse_contact(1, &row).unwrap()
}

fn form(id: &str) -> nurture_engine::input::IncomingEvent {
    let e = json!({"id": id, "type": "form.submitted", "email": ADDRESS,
                   "data": {"form": "ebook", "last_name": NAME}});
    nurture_engine::input::parse_event(0, &e).unwrap()
}

/// Contacts `entered` per workflow, all time.
async fn entered(store: &dyn Store) -> Vec<(String, i64)> {
    let filter = CountFilter {
        whole: true,
        ..Default::default()
    };
    let mut v: Vec<(String, i64)> = store
        .counts(&filter)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.metric == "entered")
        .map(|r| (r.workflow, r.n))
        .collect();
    v.sort();
    v
}

fn nurture(dir: &Path, url: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_nurture"))
        .args(args)
        .args(["--dir", dir.to_str().unwrap(), "--store", url])
        .output()
        .unwrap()
}

/// Ana enters both workflows; the first email is delivered (an `.eml` file), the webhook
/// waits for a retry, the run of `w` waits a week. Returns the engine and deliverer.
async fn mid_campaign(
    dir: &Path,
    url: &str,
) -> (Arc<Engine>, nurture_channels::deliver::Deliverer) {
    let project = Arc::new(nurture_core::project::load(dir).project.unwrap());
    let store = nurture_server::open_store(url).await.unwrap();
    let engine = Arc::new(Engine::new(project.clone(), store.clone()));
    let now = Utc::now();
    engine.import_contacts(&[ana()], now).await.unwrap();
    engine.ingest(&[form("f-1")], now).await.unwrap();
    engine.tick(now).await.unwrap();
    let signer = nurture_channels::email::Signer::for_project(dir, None).unwrap();
    let deliverer =
        nurture_server::compose::deliverer(&project, store.clone(), &signer, "https://t.test")
            .unwrap();
    deliverer.deliver_due(now, 100).await.unwrap();
    (engine, deliverer)
}

/// The export of Ana: everything, from the CLI.
fn check_export(dir: &Path, url: &str) {
    let out = nurture(dir, url, &["contacts", "export", ADDRESS]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["format"], "nurture.person-export/1");
    assert_eq!(v["contact"]["email"], ADDRESS);
    assert_eq!(v["contact"]["fields"]["last_name"], NAME);
    let kinds: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"form.submitted"), "{kinds:?}");
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(runs
        .iter()
        .all(|r| !r["journal"].as_array().unwrap().is_empty()));
    let sends = v["sends"].as_array().unwrap();
    let states: Vec<(&str, &str)> = sends
        .iter()
        .map(|s| (s["kind"].as_str().unwrap(), s["state"].as_str().unwrap()))
        .collect();
    assert!(states.contains(&("email", "sent")), "{states:?}");
    assert!(states.iter().any(|(k, _)| *k == "webhook"), "{states:?}");
    assert_eq!(v["deliveries"].as_array().unwrap().len(), 1, "{v:#}");
    assert!(v["consent_history"].is_array());
}

/// Every table's rows as text, searched for the address and the name (Postgres).
async fn postgres_rows_holding(url: &str, needle: &str) -> Vec<String> {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query("VACUUM").execute(&mut c).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'nurture'",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    let mut found = Vec::new();
    for t in tables {
        let q = format!("SELECT count(*) FROM nurture.\"{t}\" x WHERE x::text ILIKE $1");
        let n: i64 = sqlx::query_scalar(&q)
            .bind(format!("%{needle}%"))
            .fetch_one(&mut c)
            .await
            .unwrap();
        if n > 0 {
            found.push(t);
        }
    }
    found
}

/// The SQLite files holding `needle`'s bytes (any case).
/// Journal rows of the SQLite store at `url` whose decoded data (the journal is stored
/// compressed, so the file search above cannot see inside it) or contact holds `needle`.
async fn sqlite_journal_rows_holding(url: &str, needle: &str) -> usize {
    let pool = sqlx::SqlitePool::connect(url).await.unwrap();
    let rows: Vec<(String, Vec<u8>)> = sqlx::query_as("SELECT contact, data FROM journal")
        .fetch_all(&pool)
        .await
        .unwrap();
    let needle = needle.to_lowercase();
    rows.iter()
        .filter(|(contact, data)| {
            let text = nurture_store::encoding::decode(data).unwrap().to_string();
            format!("{contact} {text}").to_lowercase().contains(&needle)
        })
        .count()
}

fn sqlite_files_holding(dir: &Path, needle: &str) -> Vec<String> {
    let needle = needle.to_lowercase().into_bytes();
    ["t.db", "t.db-wal"]
        .iter()
        .filter(|f| {
            let bytes = std::fs::read(dir.join(f))
                .unwrap_or_default()
                .to_ascii_lowercase();
            bytes.windows(needle.len()).any(|w| w == needle)
        })
        .map(|f| f.to_string())
        .collect()
}

/// Erases Ana in the middle of the campaign: her open run ends, her queued webhook is
/// cancelled, her `.eml` file goes, report totals stay, nothing is left to deliver.
async fn erase(dir: &Path, engine: &Engine, deliverer: &nurture_channels::deliver::Deliverer) {
    let store = engine.store.clone();
    let before = entered(&*store).await;
    assert_eq!(eml_files(dir), 1, "the first email was written");
    let queued = store
        .list_outbox(&OutboxFilter {
            contact: Some("c-ana".into()),
            state: Some(nurture_store::OutboxState::Retrying),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(queued.len(), 1, "the webhook waits for a retry: {queued:?}");

    let done = nurture_server::privacy::erase_person(engine, ADDRESS, "test")
        .await
        .unwrap()
        .expect("erased");
    let v = serde_json::to_value(&done).unwrap();
    assert_eq!(v["runs_ended"], 1, "{v}");
    assert_eq!(v["removed"]["queued_cancelled"], 1, "{v}");
    assert_eq!(v["eml_files"], 1, "{v}");
    assert_eq!(eml_files(dir), 0);
    assert!(store.contact("c-ana").await.unwrap().is_none());
    assert_eq!(entered(&*store).await, before, "report totals stay");
    assert_eq!(deliverer.deliver_due(Utc::now(), 100).await.unwrap(), 0);
}

/// She comes back (imported again, a form again): never mailed again.
async fn comes_back(
    dir: &Path,
    engine: &Arc<Engine>,
    deliverer: &nurture_channels::deliver::Deliverer,
) {
    engine.import_contacts(&[ana()], Utc::now()).await.unwrap();
    engine.ingest(&[form("f-2")], Utc::now()).await.unwrap();
    engine.tick(Utc::now()).await.unwrap();
    deliverer.deliver_due(Utc::now(), 100).await.unwrap();
    assert_eq!(eml_files(dir), 0, "the erased address is not mailed again");
    let sends = engine
        .store
        .list_outbox(&OutboxFilter {
            contact: Some("c-ana".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let email = sends
        .iter()
        .find(|s| s.kind.as_str() == "email")
        .expect("queued");
    assert!(
        email
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("suppressed: erased"),
        "{email:?}"
    );
}

fn eml_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("outbox")).map_or(0, |d| {
        d.filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "eml")
        })
        .count()
    })
}

/// The anonymous visitor Ana was before she gave her address (`anon:...`): it walked a
/// workflow of page visits (a run, journal lines with the page), then was merged into her.
/// Her export shows what it did; erasing her erases it too: no row names it afterwards.
const VISITOR: &str = "anon:0badc0ffee0badc0ffee0badc0ffee";

async fn visitor_merged_then_erased(dir: &Path, url: &str) {
    let engine = visitor_merged(dir, url).await;
    let store = engine.store.clone();
    nurture_server::privacy::erase_person(&engine, ADDRESS, "test")
        .await
        .unwrap()
        .expect("erased");
    assert!(store.runs_of_contact(VISITOR).await.unwrap().is_empty());
}

/// An anonymous visitor who walked `visit`, merged into Ana (exported with her).
async fn visitor_merged(dir: &Path, url: &str) -> Arc<Engine> {
    std::fs::write(
        dir.join("workflows/visit.yaml"),
        "workflow: visit\ntrigger: { event: page.visited }\nsteps:\n  - id: mark\n    tag: [visitor]\n",
    )
    .unwrap();
    let project = Arc::new(nurture_core::project::load(dir).project.unwrap());
    let store = nurture_server::open_store(url).await.unwrap();
    let engine = Arc::new(Engine::new(project, store.clone()));
    let now = Utc::now();
    let visit = json!({"id": "v-1", "type": "page.visited", "contact": VISITOR,
                       "data": {"url": "https://acme.test/pricing"}});
    let visit = nurture_engine::input::parse_event(0, &visit).unwrap();
    let anonymous = nurture_engine::input::parse_contact(0, &json!({"id": VISITOR})).unwrap();
    engine.import_contacts(&[anonymous], now).await.unwrap();
    engine.ingest(&[visit], now).await.unwrap();
    engine.tick(now).await.unwrap();
    let runs = store.runs_of_contact(VISITOR).await.unwrap();
    assert_eq!(runs.len(), 1, "the visitor walked `visit`");
    engine.import_contacts(&[ana()], now).await.unwrap();
    engine
        .merge_anonymous(VISITOR, "c-ana", "form", now)
        .await
        .unwrap();
    engine.tick(now).await.unwrap();
    let export = nurture_engine::privacy::export(&*store, ADDRESS, now)
        .await
        .unwrap()
        .expect("Ana");
    let visitors = serde_json::to_value(&export.merged_visitors).unwrap();
    assert_eq!(visitors[0]["id"], VISITOR, "{visitors}");
    assert_eq!(visitors[0]["runs"][0]["workflow"], "visit", "{visitors}");
    assert!(
        !visitors[0]["runs"][0]["journal"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{visitors}"
    );
    engine
}

/// An erasure of a contact with a merged visitor, while a compaction (retention) holds
/// the run of lower id and then asks for the other, as it locks runs in id order: the
/// erasure locks all the person's runs at once in that order, so they wait for each
/// other and both complete. (Deleting the contact's runs, then the visitor's, took the
/// two in the other order: a deadlock, 40P01, one of them failed.)
#[test]
fn an_erasure_and_a_compaction_wait_for_each_other_without_a_deadlock() {
    let Some(url) = fresh_postgres() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    project(dir);
    rt().block_on(async {
        let engine = visitor_merged(dir, &url).await;
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        // The visitor's run gets the lower id.
        for sql in [
            "UPDATE nurture.runs SET id = 'run-0000' WHERE contact = $1",
            "UPDATE nurture.journal SET run_id = 'run-0000' WHERE contact = $1 \
             AND run_id IS NOT NULL",
        ] {
            sqlx::query(sql).bind(VISITOR).execute(&pool).await.unwrap();
        }
        let theirs: String =
            sqlx::query_scalar("SELECT id FROM nurture.runs WHERE contact = 'c-ana'")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert!(theirs.as_str() > "run-0000");
        let mut compaction = pool.begin().await.unwrap();
        let lock = "SELECT id FROM nurture.runs WHERE id = $1 FOR SHARE";
        sqlx::query(lock)
            .bind("run-0000")
            .execute(&mut *compaction)
            .await
            .unwrap();
        let eraser = engine.clone();
        let erase = tokio::spawn(async move {
            nurture_server::privacy::erase_person(&eraser, ADDRESS, "test").await
        });
        assert!(
            crate::util::until_a_lock_waits(
                &pool,
                "locktype IN ('transactionid', 'tuple')",
                &erase
            )
            .await,
            "the erasure waits for the compaction"
        );
        sqlx::query(lock)
            .bind(&theirs)
            .execute(&mut *compaction)
            .await
            .expect("the compaction takes its second run");
        compaction.commit().await.unwrap();
        let erased = erase.await.unwrap();
        assert!(erased.is_ok(), "{erased:?}");
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM nurture.runs")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(left, 0);
    });
}

/// A merged visitor's run left open (begun between the merge's ending of its runs and the
/// merge itself) goes with the erasure, as before: only the contact's own open runs
/// refuse it (the engine cancels those and tries again; it never cancels a visitor's).
#[test]
fn erasure_on_postgres_takes_a_visitors_run_left_open() {
    let Some(url) = fresh_postgres() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    project(dir);
    rt().block_on(async {
        let engine = visitor_merged(dir, &url).await;
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        sqlx::query("UPDATE nurture.runs SET status = 'waiting' WHERE contact = $1")
            .bind(VISITOR)
            .execute(&pool)
            .await
            .unwrap();
        let erased = nurture_server::privacy::erase_person(&engine, ADDRESS, "test").await;
        assert!(matches!(erased, Ok(Some(_))), "{erased:?}");
        assert!(engine
            .store
            .runs_of_contact(VISITOR)
            .await
            .unwrap()
            .is_empty());
    });
}

/// A merge into Ana while her erasure holds her row (its first statement locks it): the
/// merge waits, then finds her gone and moves nothing. Before, it did not wait: the
/// visitor's events, its alias and a `merged` line landed on the erased contact's id
/// after the erasure had deleted her rows.
#[test]
fn a_merge_into_a_contact_being_erased_waits_and_moves_nothing() {
    let Some(url) = fresh_postgres() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    project(dir);
    rt().block_on(async {
        let (engine, pool, mut erasure, merge) = merge_while_erasing(dir, &url, "c-ana").await;
        sqlx::query("DELETE FROM nurture.contacts WHERE id = 'c-ana'")
            .execute(&mut *erasure)
            .await
            .unwrap();
        erasure.commit().await.unwrap();
        assert_eq!(merge.await.unwrap().unwrap(), None);
        for sql in [
            "SELECT count(*) FROM nurture.events WHERE id = 'v-1' AND contact = 'c-ana'",
            "SELECT count(*) FROM nurture.contact_merges",
            "SELECT count(*) FROM nurture.journal WHERE kind = 'merged'",
        ] {
            let n: i64 = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
            assert_eq!(n, 0, "{sql}");
        }
        let err = engine
            .merge_anonymous(VISITOR, "c-ana", "form", Utc::now())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no contact"), "{err}");
    });
}

/// The visitor's merge while an erasure of the visitor itself holds its row: the merge
/// waits for it at its start, the erasure deletes the visitor's queue and events, and
/// both complete. Before, the merge took the visitor's row last, after moving its events
/// and queue: each waited for the other, a deadlock (40P01), one of them failed.
#[test]
fn a_merge_and_an_erasure_of_the_visitor_do_not_deadlock() {
    let Some(url) = fresh_postgres() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    project(dir);
    rt().block_on(async {
        let (_engine, pool, mut erasure, merge) = merge_while_erasing(dir, &url, VISITOR).await;
        for table in ["inbox", "events"] {
            let sql = format!("DELETE FROM nurture.{table} WHERE contact = $1");
            let deleted = sqlx::query(&sql).bind(VISITOR).execute(&mut *erasure).await;
            assert!(deleted.is_ok(), "{table}: {deleted:?}");
        }
        sqlx::query("DELETE FROM nurture.contacts WHERE id = $1")
            .bind(VISITOR)
            .execute(&mut *erasure)
            .await
            .unwrap();
        erasure.commit().await.unwrap();
        let merged = merge.await.unwrap();
        assert!(matches!(merged, Ok(Some(_))), "{merged:?}");
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM nurture.events WHERE id = 'v-1'")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(left, 0);
    });
}

/// A double opt-in confirmation queued for Ana while her erasure holds her row: the
/// unit read her before the erasure, so its commit waits for it, then finds her gone
/// (a conflict), and its retry refuses: no email to her address outlives the erasure.
/// Before, the unit (which does not change the contact) committed at once, and the
/// send was stored after the erasure had deleted her outbox.
#[test]
fn a_send_queued_during_an_erasure_waits_and_is_not_stored() {
    let Some(url) = fresh_postgres() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    project(dir);
    rt().block_on(async {
        let engine = ana_and_visitor(dir, &url, false).await;
        let now = Utc::now();
        let (pool, mut erasure) = erasure_holding(&url, "c-ana").await;
        let queuer = engine.clone();
        let queued = tokio::spawn(async move {
            let payload = json!({"to": ADDRESS, "subject": "Confirm"});
            queuer
                .queue_transactional("c-ana", "confirm-1", payload, now)
                .await
        });
        waits_for_the_erasure(&pool, &queued, "the send").await;
        sqlx::query("DELETE FROM nurture.contacts WHERE id = 'c-ana'")
            .execute(&mut *erasure)
            .await
            .unwrap();
        erasure.commit().await.unwrap();
        let err = queued.await.unwrap().unwrap_err();
        assert!(err.to_string().contains("no contact"), "{err}");
        let sends: i64 = sqlx::query_scalar("SELECT count(*) FROM nurture.outbox")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(sends, 0);
    });
}

/// A visitor's run begun between the merge's ending of its runs and the merge itself
/// (here the store's merge alone, as in that window): when its timer fires, the contact
/// is gone, and the run ends (`merged`), its step does not run, and no empty contact
/// comes back under the visitor's id. (Dropping the unit whole left the run waiting with
/// no timer, for good; creating the contact brought the visitor back.)
#[test]
fn a_merged_visitors_run_left_open_ends_at_its_timer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    project(dir);
    std::fs::write(
        dir.join("workflows/linger.yaml"),
        "workflow: linger\ntrigger: { event: page.visited }\nsteps:\n  - id: pause\n    wait: 1h\n  - id: mark\n    tag: [lingered]\n",
    )
    .unwrap();
    let url = format!("sqlite://{}", dir.join("t.db").display());
    rt().block_on(async {
        let engine = ana_and_visitor(dir, &url, true).await;
        let store = engine.store.clone();
        let now = Utc::now();
        engine.tick(now).await.unwrap();
        let waiting = |runs: &[nurture_store::Run]| {
            runs.iter()
                .filter(|r| r.workflow == "linger" && r.status.is_open())
                .count()
        };
        assert_eq!(waiting(&store.runs_of_contact(VISITOR).await.unwrap()), 1);
        let merged = store.merge_contact(VISITOR, "c-ana", now, "form").await;
        assert!(matches!(merged, Ok(Some(_))), "{merged:?}");
        engine.tick(now + chrono::Duration::hours(2)).await.unwrap();
        let runs = store.runs_of_contact(VISITOR).await.unwrap();
        let linger = runs.iter().find(|r| r.workflow == "linger").unwrap();
        assert_eq!(
            linger.status,
            nurture_store::RunStatus::Exited,
            "{linger:?}"
        );
        assert_eq!(linger.exit_reason.as_deref(), Some("merged"));
        assert!(store.contact(VISITOR).await.unwrap().is_none());
        let ana = store.contact("c-ana").await.unwrap().unwrap();
        assert!(!ana.tags.contains("lingered"), "{ana:?}");
    });
}

/// A visitor merged while its `contact.created` is still queued (imported, not applied
/// yet): the merge takes that event out of the queue, so no pass applies it and creates
/// the visitor again under its old id (its other events go to Ana as before).
#[test]
fn a_visitor_merged_before_its_creation_is_applied_stays_gone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    project(dir);
    let mut urls = vec![format!("sqlite://{}", dir.join("t.db").display())];
    urls.extend(fresh_postgres());
    for url in urls {
        rt().block_on(async {
            let engine = ana_and_visitor(dir, &url, false).await;
            let store = engine.store.clone();
            let now = Utc::now();
            let merged = store.merge_contact(VISITOR, "c-ana", now, "form").await;
            assert!(matches!(merged, Ok(Some(_))), "{merged:?}");
            engine.tick(now).await.unwrap();
            assert!(store.contact(VISITOR).await.unwrap().is_none(), "{url}");
            assert!(store.contact("c-ana").await.unwrap().is_some());
        });
    }
}

/// The visitor and Ana imported (the visitor's `contact.created` queued, not applied),
/// and with `visit` the visitor's page visit `v-1` queued too.
async fn ana_and_visitor(dir: &Path, url: &str, visit: bool) -> Arc<Engine> {
    let project = Arc::new(nurture_core::project::load(dir).project.unwrap());
    let store = nurture_server::open_store(url).await.unwrap();
    let engine = Arc::new(Engine::new(project, store));
    let now = Utc::now();
    let anonymous = nurture_engine::input::parse_contact(0, &json!({"id": VISITOR})).unwrap();
    engine
        .import_contacts(&[anonymous, ana()], now)
        .await
        .unwrap();
    if visit {
        let visit = json!({"id": "v-1", "type": "page.visited", "contact": VISITOR});
        let visit = nurture_engine::input::parse_event(0, &visit).unwrap();
        engine.ingest(&[visit], now).await.unwrap();
    }
    engine
}

/// A transaction of the test's own holding `contact`'s row as an erasure's first
/// statement does, with a pool on the same database.
async fn erasure_holding(
    url: &str,
    contact: &str,
) -> (sqlx::PgPool, sqlx::Transaction<'static, sqlx::Postgres>) {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let mut erasure = pool.begin().await.unwrap();
    sqlx::query("SELECT email FROM nurture.contacts WHERE id = $1 FOR UPDATE")
        .bind(contact)
        .execute(&mut *erasure)
        .await
        .unwrap();
    (pool, erasure)
}

/// Asserts that `task` (`what`) waits for a row lock (the erasure's).
async fn waits_for_the_erasure<T>(
    pool: &sqlx::PgPool,
    task: &tokio::task::JoinHandle<T>,
    what: &str,
) {
    let waits =
        crate::util::until_a_lock_waits(pool, "locktype IN ('transactionid', 'tuple')", task).await;
    assert!(waits, "{what} waits for the erasure");
}

type Merging =
    tokio::task::JoinHandle<Result<Option<nurture_store::Merged>, nurture_store::StoreError>>;

/// [`ana_and_visitor`] with the visit, an erasure holding `locked`'s row
/// ([`erasure_holding`]), and the visitor's merge into Ana started and waiting for it.
async fn merge_while_erasing(
    dir: &Path,
    url: &str,
    locked: &str,
) -> (
    Arc<Engine>,
    sqlx::PgPool,
    sqlx::Transaction<'static, sqlx::Postgres>,
    Merging,
) {
    let engine = ana_and_visitor(dir, url, true).await;
    let (pool, erasure) = erasure_holding(url, locked).await;
    let store = engine.store.clone();
    let now = Utc::now();
    let merge =
        tokio::spawn(async move { store.merge_contact(VISITOR, "c-ana", now, "form").await });
    waits_for_the_erasure(&pool, &merge, "the merge").await;
    (engine, pool, erasure, merge)
}

#[test]
fn erasure_on_sqlite_takes_the_merged_visitor_along() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    project(dir);
    let url = format!("sqlite://{}", dir.join("t.db").display());
    let rt = rt();
    rt.block_on(visitor_merged_then_erased(dir, &url));
    assert_eq!(sqlite_files_holding(dir, VISITOR), Vec::<String>::new());
    assert_eq!(rt.block_on(sqlite_journal_rows_holding(&url, VISITOR)), 0);
}

#[test]
fn erasure_on_postgres_takes_the_merged_visitor_along() {
    let Some(url) = fresh_postgres() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    project(dir);
    let rt = rt();
    rt.block_on(async {
        visitor_merged_then_erased(dir, &url).await;
        assert_eq!(
            postgres_rows_holding(&url, VISITOR).await,
            Vec::<String>::new()
        );
    });
}

/// A provider's bounce that names no message (counted for the contact's last email) and
/// an erasure find the contact's rows by index: neither reads the journal's partitions,
/// the outbox, the segment members or the merges whole (tables that grow with every
/// send and every contact; the journal's delete by contact alone read every partition).
#[test]
fn a_keyless_bounce_and_an_erasure_on_postgres_read_no_table_whole() {
    let Some(url) = fresh_postgres() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    project(dir);
    rt().block_on(async {
        drop(mid_campaign(dir, &url).await);
        use sqlx::Connection;
        let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
        let before = settled_seq_scans(&mut db).await;
        let project = Arc::new(nurture_core::project::load(dir).project.unwrap());
        let store = nurture_server::open_store(&url).await.unwrap();
        let engine = Arc::new(Engine::new(project, store));
        let bounce = json!({"id": "b-1", "type": "email.bounced", "contact": "c-ana",
                            "data": {"permanent": true}});
        let bounce = nurture_engine::input::parse_event(0, &bounce).unwrap();
        engine.ingest(&[bounce], Utc::now()).await.unwrap();
        engine.tick(Utc::now()).await.unwrap();
        nurture_server::privacy::erase_person(&engine, ADDRESS, "test")
            .await
            .unwrap()
            .expect("erased");
        drop(engine);
        let after = settled_seq_scans(&mut db).await;
        let grew = |(t, n): &&(String, i64)| before.iter().any(|(b, m)| b == t && m < n);
        let read_whole: Vec<_> = after
            .iter()
            .filter(|c| c.0.starts_with("seq ") && grew(c))
            .collect();
        assert_eq!(read_whole, Vec::<&(String, i64)>::new());
        // A whole primary key read instead (sequential scans are off in the store's
        // sessions) would not count above: the contact's indexes were the ones read.
        let used: Vec<_> = after
            .iter()
            .filter(|c| c.0.starts_with("index ") && grew(c))
            .map(|c| c.0.as_str())
            .collect();
        assert_eq!(
            used,
            [
                "index contact_merges_into",
                "index outbox_contact",
                "index segment_members_contact"
            ]
        );
    });
}

/// Sequential scans of the tables that hold a contact's rows by the thousand, and scans
/// of the indexes by contact, once every other session of the database has ended (a session reports its counts as it ends;
/// an idle one may keep them).
async fn settled_seq_scans(db: &mut sqlx::PgConnection) -> Vec<(String, i64)> {
    let mut others = -1_i64;
    for _ in 0..100 {
        others = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut *db)
        .await
        .unwrap();
        if others == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(others, 0, "the store's sessions ended");
    sqlx::query_as(
        "SELECT 'seq ' || relname, seq_scan FROM pg_stat_user_tables \
         WHERE schemaname = 'nurture' \
           AND (relname IN ('outbox', 'segment_members', 'contact_merges') \
           OR relname LIKE 'journal\\_2%' OR relname = 'journal_default') \
         UNION ALL SELECT 'index ' || indexrelname, idx_scan FROM pg_stat_user_indexes \
         WHERE schemaname = 'nurture' AND indexrelname IN \
           ('outbox_contact', 'segment_members_contact', 'contact_merges_into') ORDER BY 1",
    )
    .fetch_all(&mut *db)
    .await
    .unwrap()
}

#[test]
fn erasure_on_sqlite_leaves_no_byte_of_the_person_and_no_mail() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    project(dir);
    let url = format!("sqlite://{}", dir.join("t.db").display());
    let rt = rt();
    let (engine, deliverer) = rt.block_on(mid_campaign(dir, &url));
    check_export(dir, &url);
    assert!(
        !sqlite_files_holding(dir, NAME).is_empty(),
        "the search sees the bytes before"
    );
    assert!(
        rt.block_on(sqlite_journal_rows_holding(&url, NAME)) > 0,
        "the journal search sees the person before"
    );
    rt.block_on(erase(dir, &engine, &deliverer));
    for needle in [ADDRESS, NAME] {
        assert_eq!(
            sqlite_files_holding(dir, needle),
            Vec::<String>::new(),
            "{needle}"
        );
        assert_eq!(
            rt.block_on(sqlite_journal_rows_holding(&url, needle)),
            0,
            "{needle}"
        );
    }
    rt.block_on(comes_back(dir, &engine, &deliverer));
}

#[test]
fn erasure_on_postgres_leaves_no_row_of_the_person_and_no_mail() {
    let Some(url) = fresh_postgres() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    project(dir);
    let rt = rt();
    let (engine, deliverer) = rt.block_on(mid_campaign(dir, &url));
    check_export(dir, &url);
    rt.block_on(async {
        assert!(
            !postgres_rows_holding(&url, NAME).await.is_empty(),
            "the search sees the rows before"
        );
        erase(dir, &engine, &deliverer).await;
        for needle in [ADDRESS, NAME] {
            assert_eq!(
                postgres_rows_holding(&url, needle).await,
                Vec::<String>::new(),
                "{needle}"
            );
        }
        comes_back(dir, &engine, &deliverer).await;
    });
}

const API_KEY: &str = "privacy-api-key-0123456789abcdef";

/// `nurture serve` on `dir`, killed when dropped.
struct Served(std::process::Child, String);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(dir: &Path) -> Served {
    let port = crate::util::free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_nurture"))
        .args(["serve", dir.to_str().unwrap(), "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .env("NURTURE_API_KEY", API_KEY)
        .env_remove("NURTURE_TRACKING_KEY")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let s = Served(child, format!("http://127.0.0.1:{port}"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while call(&s, "GET", "/healthz", None, None).0 != 200 {
        assert!(std::time::Instant::now() < deadline, "serve did not start");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    s
}

/// A request; (status, body as JSON or null).
fn call(
    s: &Served,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    rt().block_on(async {
        let client = reqwest::Client::new();
        let mut req = client.request(method.parse().unwrap(), format!("{}{path}", s.1));
        if let Some(k) = key {
            req = req.header("x-api-key", k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        match req.send().await {
            Ok(r) => (r.status().as_u16(), r.json().await.unwrap_or(Value::Null)),
            Err(_) => (0, Value::Null),
        }
    })
}

/// Over HTTP: export and erase need the API key; an erased person's old tracking links
/// record nothing, even for a contact imported again under the same id.
#[test]
fn the_api_exports_and_erases_with_the_key_and_old_links_go_dead() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    project(dir);
    let signer = nurture_channels::email::Signer::for_project(dir, None).unwrap();
    let s = serve(dir);
    let ana = json!({"id": "c-ana", "email": ADDRESS, "last_name": NAME});
    assert_eq!(
        call(&s, "POST", "/v1/contacts", Some(API_KEY), Some(ana.clone())).0,
        200
    );
    let path = "/v1/contacts/c-ana/export";
    assert_eq!(call(&s, "GET", path, None, None).0, 401);
    assert_eq!(
        call(&s, "DELETE", "/v1/contacts/c-ana", Some("wrong"), None).0,
        401
    );
    let (status, doc) = call(&s, "GET", path, Some(API_KEY), None);
    assert_eq!(
        (status, &doc["contact"]["fields"]["last_name"]),
        (200, &json!(NAME))
    );
    let (status, done) = call(
        &s,
        "DELETE",
        &format!("/v1/contacts/{ADDRESS}"),
        Some(API_KEY),
        None,
    );
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["removed"]["suppressed"], true, "{done}");
    assert_eq!(call(&s, "GET", path, Some(API_KEY), None).0, 404);
    assert_eq!(
        call(&s, "DELETE", "/v1/contacts/c-ana", Some(API_KEY), None).0,
        404
    );

    // Imported again under the same id; a link of an email sent before the erasure.
    assert_eq!(
        call(&s, "POST", "/v1/contacts", Some(API_KEY), Some(ana)).0,
        200
    );
    let claims =
        json!({"k": "k-old", "c": "c-ana", "w": "w", "s": "hi", "t": Utc::now().timestamp() - 600});
    let open = signer.sign_for(nurture_channels::email::track::Purpose::Open, &claims);
    assert_eq!(call(&s, "GET", &format!("/t/o/{open}"), None, None).0, 200);
    let (_, events) = call(&s, "GET", "/v1/contacts/c-ana/events", Some(API_KEY), None);
    let opened = events.to_string().contains("email.opened");
    assert!(
        !opened,
        "an erased person's old link recorded an open: {events}"
    );
}

/// `nurture contacts erase` does nothing without `--yes`.
#[test]
fn the_cli_erases_only_with_yes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    project(dir);
    let url = format!("sqlite://{}", dir.join("t.db").display());
    rt().block_on(async {
        let project = Arc::new(nurture_core::project::load(dir).project.unwrap());
        let store = nurture_server::open_store(&url).await.unwrap();
        Engine::new(project, store)
            .import_contacts(&[ana()], Utc::now())
            .await
            .unwrap();
    });
    let out = nurture(dir, &url, &["contacts", "erase", ADDRESS]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--yes"));
    assert!(nurture(dir, &url, &["contacts", "export", "c-ana"])
        .status
        .success());
    let out = nurture(
        dir,
        &url,
        &["contacts", "erase", ADDRESS, "--yes", "--format", "json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["removed"]["suppressed"], true, "{v}");
    assert_eq!(
        nurture(dir, &url, &["contacts", "export", "c-ana"])
            .status
            .code(),
        Some(1)
    );
}

fn cli(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_nurture"))
        .args(args)
        .args(["--dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Scoped keys: each key does what its scopes allow and nothing else (403 with the
/// scope missing), a revoked key stops at once (revoked by another process), the store
/// holds no key, and every erasure is in the audit log with who and from where.
#[test]
fn scoped_keys_allow_their_scopes_only_and_revocation_is_immediate() {
    scoped_keys(None);
}

#[test]
fn scoped_keys_allow_their_scopes_only_and_revocation_is_immediate_on_postgres() {
    let Some(url) = fresh_postgres() else { return };
    scoped_keys(Some(url));
}

/// [`scoped_keys_allow_their_scopes_only_and_revocation_is_immediate`] on the project's
/// SQLite file, or on `postgres`.
fn scoped_keys(postgres: Option<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    project(dir);
    if let Some(url) = &postgres {
        let toml = dir.join("nurture.toml");
        let t = std::fs::read_to_string(&toml).unwrap();
        std::fs::write(&toml, format!("store = \"{url}\"\n{t}")).unwrap();
    }
    let writer = cli(dir, &["keys", "create", "crm", "--scope", "events:write"]);
    let writer = writer.trim();
    let eraser = cli(dir, &["keys", "create", "dpo", "--scope", "contacts:erase"]);
    let eraser = eraser.trim();
    assert!(writer.starts_with("nk_") && eraser.starts_with("nk_"));
    let s = serve(dir);
    let ana = json!({"id": "c-ana", "email": ADDRESS, "last_name": NAME});
    assert_eq!(
        call(&s, "POST", "/v1/contacts", Some(writer), Some(ana)).0,
        200
    );
    let (status, problem) = call(&s, "DELETE", "/v1/contacts/c-ana", Some(writer), None);
    assert_eq!(status, 403, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("contacts:erase"),
        "{problem}"
    );
    assert_eq!(
        call(&s, "GET", "/v1/contacts/c-ana/export", Some(writer), None).0,
        403
    );
    assert_eq!(
        call(&s, "GET", "/v1/reports/funnel", Some(eraser), None).0,
        403
    );
    assert_eq!(call(&s, "GET", "/metrics", Some(writer), None).0, 403);
    assert_eq!(
        call(
            &s,
            "POST",
            "/v1/contacts",
            Some("nk_forged"),
            Some(json!({}))
        )
        .0,
        401
    );
    let (status, done) = call(&s, "DELETE", "/v1/contacts/c-ana", Some(eraser), None);
    assert_eq!(status, 200, "{done}");

    let listed: Value =
        serde_json::from_str(&cli(dir, &["keys", "list", "--format", "json"])).unwrap();
    let crm = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "crm")
        .unwrap();
    cli(dir, &["keys", "revoke", crm["id"].as_str().unwrap()]);
    let again = json!({"id": "c-bo", "email": "bo@acme.test"});
    assert_eq!(
        call(&s, "POST", "/v1/contacts", Some(writer), Some(again)).0,
        401,
        "revoked at once"
    );

    let audit: Value = serde_json::from_str(&cli(dir, &["audit", "--format", "json"])).unwrap();
    let line = &audit.as_array().unwrap()[0];
    assert_eq!(line["action"], "erase", "{audit}");
    assert!(
        line["by"].as_str().unwrap().starts_with("key dpo (key_"),
        "{audit}"
    );
    assert_eq!(line["ip"], "127.0.0.1", "{audit}");
    assert!(
        !line.to_string().contains("c-ana"),
        "the audit log names nobody: {line}"
    );
    drop(s);
    for secret in [writer, eraser] {
        let stored = match &postgres {
            Some(url) => !rt().block_on(postgres_rows_holding(url, secret)).is_empty(),
            None => {
                let db = std::fs::read(dir.join("nurture.db")).unwrap();
                db.windows(secret.len()).any(|w| w == secret.as_bytes())
            }
        };
        assert!(!stored, "a key is stored");
    }
}

/// Over every operation of the OpenAPI document behind the key: without a key 401; with
/// a key whose one scope is not the operation's 403 and nothing done; with the scope it
/// needs, not 401 or 403. So no documented route escapes the key or its scope.
#[test]
fn every_documented_route_checks_the_key_and_its_scope() {
    use nurture_store::keys::Scope;
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(crate::util::repo().join("schema/openapi.json")).unwrap(),
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    project(dir);
    let keys: Vec<(Scope, String)> = Scope::ALL
        .iter()
        .filter(|s| **s != Scope::Admin)
        .map(|s| {
            let out = cli(dir, &["keys", "create", "t", "--scope", s.as_str()]);
            (*s, out.trim().to_string())
        })
        .collect();
    let s = serve(dir);
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !(path.starts_with("/v1/") || path == "/metrics") {
            continue;
        }
        let concrete = path
            .replace("{call}", "track")
            .replace("{provider}", "postmark")
            .replace(['{', '}'], "");
        for method in item.as_object().unwrap().keys() {
            let m: axum::http::Method = method.to_uppercase().parse().unwrap();
            let needed = nurture_server::auth::needed_scope(&m, &concrete);
            assert_eq!(
                call(&s, m.as_str(), &concrete, None, None).0,
                401,
                "{m} {path}"
            );
            for (scope, key) in &keys {
                let (status, body) = call(&s, m.as_str(), &concrete, Some(key), None);
                if *scope == needed {
                    assert!(
                        ![401, 403].contains(&status),
                        "{m} {path} with {scope:?}: {status} {body}"
                    );
                } else {
                    assert_eq!(status, 403, "{m} {path} with {scope:?}: {body}");
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} operations");
}
