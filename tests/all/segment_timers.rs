//! Segments that follow time (issue 17, item 3): a per-contact segment timer enters and
//! leaves time-based segments when due, not at the contact's next event; contact updates
//! through `POST /v1/contacts` and CSV import re-evaluate segments in the commit of the
//! update; a schedule's audience is the stored membership. Every test runs on SQLite and
//! on Postgres.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{json, Value};

use crate::util::rt_multi as rt;
use nurture_engine::Engine;
use nurture_store::Store;

const SEGMENTS: &str = r#"
- id: silent-3d
  name: No visit and no sign-up for three days
  if: activity("page.visited", "3d") == 0 && activity("contact.created", "3d") == 0
- id: recent-visitor
  name: Visited in the past two days
  if: activity("page.visited", "2d") > 0
- id: big
  name: Companies of 500 employees or more
  if: has(contact.company.employees) && contact.company.employees >= 500
"#;

/// Only a segment that does not depend on time.
const STATIC_SEGMENTS: &str = r#"
- id: big
  name: Companies of 500 employees or more
  if: has(contact.company.employees) && contact.company.employees >= 500
"#;

const SILENT: &str =
    "workflow: silent\ntrigger: { segment: silent-3d }\nsteps:\n  - id: mark\n    tag: [silent]\n";
const BIG: &str =
    "workflow: big\ntrigger: { segment: big }\nsteps:\n  - id: mark\n    tag: [big-account]\n";
/// Mondays 09:00 UTC, to the silent segment.
const WEEKLY: &str = "workflow: weekly\ntimezone: UTC\ntrigger:\n  schedule: \"0 9 * * MON\"\n  audience: silent-3d\nreentry: always\nsteps:\n  - id: mark\n    tag: [weekly]\n";

fn project(root: &Path, segments: &str) -> Arc<nurture_core::project::Project> {
    std::fs::create_dir_all(root.join("workflows")).unwrap();
    std::fs::write(
        root.join("nurture.toml"),
        "[sender]\nfrom = \"Team <team@example.test>\"\n",
    )
    .unwrap();
    std::fs::write(root.join("segments.yaml"), segments).unwrap();
    for (name, text) in [
        ("silent.yaml", SILENT),
        ("big.yaml", BIG),
        ("weekly.yaml", WEEKLY),
    ] {
        // Workflows on a segment the project does not have are left out.
        let dangling = text.contains("silent-3d") && !segments.contains("silent-3d");
        if !dangling {
            std::fs::write(root.join("workflows").join(name), text).unwrap();
        }
    }
    let loaded = nurture_core::project::load(root);
    assert_eq!(loaded.errors(), 0, "{}", loaded.render());
    Arc::new(loaded.project.unwrap())
}

/// The stores every test runs on: a SQLite file, and a fresh Postgres database.
fn stores(dir: &Path) -> Vec<String> {
    let mut urls = vec![format!("sqlite://{}", dir.join("t.db").display())];
    urls.extend(crate::util::fresh_postgres());
    urls
}

/// Monday 2026-03-02 09:00 UTC.
fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap()
}

/// The store at `url`, an engine of `project` on it, and `contact` imported at t0.
async fn start(
    url: &str,
    project: &Arc<nurture_core::project::Project>,
    contact: Value,
) -> (Arc<dyn Store>, Arc<Engine>) {
    let store = nurture_server::open_store(url).await.unwrap();
    let engine = Arc::new(Engine::new(project.clone(), store.clone()));
    engine
        .import_contacts(&[contact_row(contact)], t0())
        .await
        .unwrap();
    (store, engine)
}

fn contact_row(v: Value) -> nurture_engine::input::ContactRow {
    nurture_engine::input::parse_contact(1, &v).unwrap()
}

fn visit(contact: &str, id: &str, at: DateTime<Utc>) -> nurture_engine::input::IncomingEvent {
    nurture_engine::input::parse_event(
        1,
        &json!({"id": id, "type": "page.visited", "contact": contact, "at": nurture_store::ts_out(at), "data": {"url": "/"}}),
    )
    .unwrap()
}

async fn segments_of(store: &Arc<dyn Store>, id: &str) -> Vec<String> {
    let c = store.contact(id).await.unwrap().unwrap();
    c.segments.into_iter().collect()
}

async fn workflows_of(store: &Arc<dyn Store>, id: &str) -> Vec<String> {
    let mut w: Vec<String> = store
        .runs_of_contact(id)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.workflow)
        .collect();
    w.sort();
    w
}

/// The contact is created at t0 and visits at t0 + 1h; nothing else happens. The
/// "silent for 3 days" segment is entered at t0 + 1h + 3d by its segment timer (it used
/// to wait for the contact's next event), and the segment trigger fires then; "visited in
/// the past two days" is left at t0 + 1h + 2d.
#[test]
fn a_silent_for_3_days_segment_is_entered_at_day_3_not_at_the_next_event() {
    let tmp = tempfile::tempdir().unwrap();
    let project = project(tmp.path(), SEGMENTS);
    for url in stores(tmp.path()) {
        rt().block_on(async {
            let (t0, visit_at) = (t0(), t0() + Duration::hours(1));
            let (store, engine) = start(
                &url,
                &project,
                json!({"id": "ana", "email": "ana@example.com"}),
            )
            .await;
            engine.tick(t0).await.unwrap();
            engine
                .ingest(&[visit("ana", "v1", visit_at)], visit_at)
                .await
                .unwrap();
            engine.tick(visit_at).await.unwrap();
            assert_eq!(
                segments_of(&store, "ana").await,
                ["recent-visitor"],
                "{url}"
            );
            // One row for the contact, due when the first of its events leaves a window:
            // the visit leaves "2d".
            assert_eq!(
                store.segment_timer("ana").await.unwrap(),
                Some(visit_at + Duration::days(2)),
                "{url}"
            );

            // Leaving: two days after the visit, at the timer, not at the next event.
            let left = visit_at + Duration::days(2);
            engine.tick(left - Duration::seconds(1)).await.unwrap();
            assert_eq!(
                segments_of(&store, "ana").await,
                ["recent-visitor"],
                "{url}"
            );
            engine.tick(left).await.unwrap();
            assert!(segments_of(&store, "ana").await.is_empty(), "{url}");
            assert!(
                store
                    .segment_members("recent-visitor", None, 10)
                    .await
                    .unwrap()
                    .is_empty(),
                "{url}: membership removed"
            );
            // The next change: the sign-up leaves "3d" (still not silent: the visit is
            // in it), then the visit does.
            let silent_at = visit_at + Duration::days(3);
            assert_eq!(
                store.segment_timer("ana").await.unwrap(),
                Some(t0 + Duration::days(3)),
                "{url}"
            );

            // Entering: three days after the last activity, with the segment trigger.
            engine.tick(silent_at - Duration::seconds(1)).await.unwrap();
            assert!(workflows_of(&store, "ana").await.is_empty(), "{url}");
            let effects = engine.tick(silent_at).await.unwrap();
            assert_eq!(segments_of(&store, "ana").await, ["silent-3d"], "{url}");
            let enter = effects
                .iter()
                .find(|e| e.effect == "enter")
                .unwrap_or_else(|| panic!("{url}: no enrolment in {effects:?}"));
            assert_eq!(enter.at, silent_at, "{url}");
            assert_eq!(enter.workflow.as_deref(), Some("silent"), "{url}");
            assert_eq!(
                store.segment_members("silent-3d", None, 10).await.unwrap(),
                ["ana"],
                "{url}"
            );
            // Nothing in any window any more: no timer row left.
            assert_eq!(store.segment_timer("ana").await.unwrap(), None, "{url}");
            assert_eq!(store.next_segment_timer().await.unwrap(), None, "{url}");
        });
    }
}

/// A project whose segments do not depend on time keeps no segment timer for anyone.
#[test]
fn a_contact_without_time_dependent_segments_gets_no_timer_row() {
    let tmp = tempfile::tempdir().unwrap();
    let project = project(tmp.path(), STATIC_SEGMENTS);
    for url in stores(tmp.path()) {
        rt().block_on(async {
            let t0 = t0();
            let (store, engine) = start(
                &url,
                &project,
                json!({"id": "bo", "email": "bo@example.com", "company": {"employees": 900}}),
            )
            .await;
            engine.ingest(&[visit("bo", "v1", t0)], t0).await.unwrap();
            engine.tick(t0).await.unwrap();
            assert_eq!(segments_of(&store, "bo").await, ["big"], "{url}");
            assert_eq!(store.segment_timer("bo").await.unwrap(), None, "{url}");
            assert_eq!(store.next_segment_timer().await.unwrap(), None, "{url}");
            assert_eq!(engine.next_segment_timer().await.unwrap(), None, "{url}");
        });
    }
}

/// `POST /v1/contacts` that updates a contact (employees 10 -> 900) enters its segment
/// and fires the segment trigger in the commit of the update: no event, no tick.
#[test]
fn a_contact_updated_through_the_api_enters_its_segment_in_the_same_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let project = project(tmp.path(), SEGMENTS);
    for url in stores(tmp.path()) {
        rt().block_on(async {
            let store = nurture_server::open_store(&url).await.unwrap();
            let engine = Arc::new(Engine::new(project.clone(), store.clone()));
            let base = crate::util::api(engine.clone()).await;
            let http = reqwest::Client::new();
            let post = |body: Value| {
                http.post(format!("{base}/v1/contacts"))
                    .bearer_auth("k")
                    .json(&body)
                    .send()
            };
            let r =
                post(json!({"id": "cy", "email": "cy@example.com", "company": {"employees": 10}}))
                    .await
                    .unwrap();
            assert_eq!(r.status(), 200, "{url}");
            engine.tick(Utc::now()).await.unwrap();
            assert!(
                !segments_of(&store, "cy").await.contains(&"big".to_string()),
                "{url}"
            );

            let r = post(json!({"id": "cy", "company": {"employees": 900}}))
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{url}");
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["updated"], 1, "{url}: {body}");
            // No tick since: the update's own commit re-evaluated the segments.
            assert!(
                segments_of(&store, "cy").await.contains(&"big".to_string()),
                "{url}"
            );
            assert_eq!(workflows_of(&store, "cy").await, ["big"], "{url}");
            let c = store.contact("cy").await.unwrap().unwrap();
            assert!(c.tags.contains("big-account"), "{url}: {c:?}");
            assert_eq!(c.fields["company"]["employees"], 900, "{url}");
        });
    }
}

/// `nurture contacts import` of a CSV that updates a contact enters its segment and fires
/// the segment trigger in the commit of the import.
#[test]
fn a_contact_updated_by_csv_import_enters_its_segment_in_the_same_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let project = project(root, SEGMENTS);
    let import = |url: &str, csv: &str| {
        let file = root.join("contacts.csv");
        std::fs::write(&file, csv).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_nurture"))
            .args(["contacts", "import"])
            .arg(&file)
            .arg("--dir")
            .arg(root)
            .args(["--store", url])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    for url in stores(root) {
        import(&url, "id,email,company.employees\ndi,di@example.com,10\n");
        rt().block_on(async {
            let store = nurture_server::open_store(&url).await.unwrap();
            let engine = Arc::new(Engine::new(project.clone(), store.clone()));
            engine.tick(Utc::now()).await.unwrap();
            assert!(
                !segments_of(&store, "di").await.contains(&"big".to_string()),
                "{url}"
            );
        });
        import(&url, "id,company.employees\ndi,900\n");
        rt().block_on(async {
            let store = nurture_server::open_store(&url).await.unwrap();
            assert!(
                segments_of(&store, "di").await.contains(&"big".to_string()),
                "{url}"
            );
            assert_eq!(workflows_of(&store, "di").await, ["big"], "{url}");
            assert_eq!(
                store.segment_members("big", None, 10).await.unwrap(),
                ["di"],
                "{url}"
            );
        });
    }
}

/// A schedule's audience is the segment's stored membership, kept current by segment
/// timers: the contact who fell silent on Thursday is in Monday's audience. A contact
/// written behind the engine's back (never evaluated, so in no stored segment) is not:
/// the firing reads the membership index instead of evaluating every contact.
#[test]
fn a_schedule_audience_is_the_stored_segment_membership() {
    let tmp = tempfile::tempdir().unwrap();
    let project = project(tmp.path(), SEGMENTS);
    for url in stores(tmp.path()) {
        rt().block_on(async {
            let t0 = t0();
            let (store, engine) = start(
                &url,
                &project,
                json!({"id": "ed", "email": "ed@example.com"}),
            )
            .await;
            engine.tick(t0).await.unwrap();
            // Behind the engine's back: a contact that would match, never evaluated.
            store
                .commit(&nurture_store::UnitOfWork {
                    contacts: vec![nurture_store::Contact {
                        id: "ghost".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .await
                .unwrap();
            // Thursday 09:00: ed has been silent for three days (timer).
            engine.tick(t0 + Duration::days(3)).await.unwrap();
            assert_eq!(
                store.segment_members("silent-3d", None, 10).await.unwrap(),
                ["ed"],
                "{url}"
            );
            // Monday 09:00: the weekly schedule fires to its audience.
            let monday = t0 + Duration::days(7);
            let effects = engine.tick(monday).await.unwrap();
            let enrolled: Vec<&str> = effects
                .iter()
                .filter(|e| e.effect == "enter" && e.workflow.as_deref() == Some("weekly"))
                .map(|e| e.contact.as_str())
                .collect();
            assert_eq!(enrolled, ["ed"], "{url}: {effects:?}");
        });
    }
}
