//! Replay (issue 20): runs of every example workflow, recorded on SQLite and Postgres,
//! replay identical; an edited workflow gives the expected first divergence; recorded
//! journals in `tests/journals/` replay identical in CI (an engine change that alters
//! what past runs would do fails here with the divergence).
//!
//! `NURTURE_RECORD_JOURNALS=1 cargo test -p nurture --test all -- replay::` writes the
//! fixtures again from the SQLite recording.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{json, Value};

use crate::util::rt_multi as rt;
use nurture_engine::input::IncomingEvent;
use nurture_engine::replay::{self, Recording, Report, Target, Verdict};
use nurture_engine::Engine;
use nurture_store::{RunFilter, Store};

fn t0() -> DateTime<Utc> {
    // Monday 2 March 2026, 11:00 in Sofia.
    Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap()
}

fn ev(id: &str, contact: &str, kind: &str, at: DateTime<Utc>, data: Value) -> IncomingEvent {
    IncomingEvent {
        index: 0,
        id: Some(id.into()),
        kind: kind.into(),
        contact: Some(contact.into()),
        email: None,
        at: Some(at),
        data,
    }
}

/// What happens when: events, or contact rows imported.
enum Input {
    Events(Vec<IncomingEvent>),
    Contacts(Vec<Value>),
}

fn contacts() -> Vec<Value> {
    let sofia = "Europe/Sofia";
    let old = "2025-06-01T09:00:00Z";
    vec![
        json!({"id": "ana", "email": "ana@example.com", "timezone": sofia, "consent": "opted_in", "tags": ["newsletter"]}),
        json!({"id": "bob", "email": "bob@example.com"}),
        json!({"id": "cem", "email": "cem@example.com", "title": "VP Sales"}),
        json!({"id": "kim", "email": "kim@example.com", "title": "CMO", "timezone": sofia}),
        json!({"id": "jon", "email": "jon@example.com", "title": "Marketing manager", "timezone": sofia}),
        json!({"id": "lee", "email": "lee@example.com", "phone": "+359888123456"}),
        json!({"id": "dan", "email": "dan@example.com"}),
        json!({"id": "max", "email": "max@example.com"}),
        json!({"id": "sam", "email": "sam@example.com"}),
        json!({"id": "old1", "email": "old1@example.com", "created_at": old}),
        json!({"id": "old2", "email": "old2@example.com", "created_at": old}),
        json!({"id": "ab1", "email": "ab1@example.com", "first_name": "Ab"}),
        json!({"id": "ab2", "email": "ab2@example.com"}),
        json!({"id": "ab3", "email": "ab3@example.com"}),
        json!({"id": "ab4", "email": "ab4@example.com"}),
        json!({"id": "ab5", "email": "ab5@example.com"}),
        json!({"id": "ab6", "email": "ab6@example.com"}),
    ]
}

/// Every example workflow, both paths of each branch (see the module doc of each).
fn timeline() -> Vec<(DateTime<Utc>, Input)> {
    let t = t0();
    let h = Duration::hours;
    let pricing = |c: &str, k: u32, at: DateTime<Utc>| {
        ev(
            &format!("{c}-price-{k}"),
            c,
            "page.visited",
            at,
            json!({"url": "/pricing"}),
        )
    };
    let ebook = json!({"form": "ebook"});
    let offer = json!({"url": "/enterprise/offer", "clicked": "enterprise-offer"});
    let mut out = vec![
        (
            t - h(2),
            Input::Events((0..2).map(|k| pricing("cem", k, t - h(2))).collect()),
        ),
        (
            t,
            Input::Events(vec![
                ev("ana-form", "ana", "form.submitted", t, ebook.clone()),
                ev("bob-form", "bob", "form.submitted", t, ebook.clone()),
                ev("cem-form", "cem", "form.submitted", t, ebook),
            ]),
        ),
        (
            t + h(1),
            Input::Events(
                (1..=6)
                    .map(|k| {
                        let c = format!("ab{k}");
                        let data = json!({"form": "webinar-interest"});
                        ev(&format!("{c}-form"), &c, "form.submitted", t + h(1), data)
                    })
                    .chain([ev(
                        "ana-open",
                        "ana",
                        "email.opened",
                        t + h(1),
                        json!({"step": "deliver"}),
                    )])
                    .collect(),
            ),
        ),
        (
            t + h(2),
            Input::Events(vec![
                ev("kim-visit", "kim", "page.visited", t + h(2), offer.clone()),
                ev("jon-visit", "jon", "page.visited", t + h(2), offer),
            ]),
        ),
        (
            t + h(3),
            Input::Events(vec![ev(
                "cem-open",
                "cem",
                "email.opened",
                t + h(3),
                json!({"step": "deliver"}),
            )]),
        ),
        (
            t + h(4),
            Input::Events(vec![
                ev("lee-demo", "lee", "demo.requested", t + h(4), json!({})),
                ev("dan-demo", "dan", "demo.requested", t + h(4), json!({})),
            ]),
        ),
        (
            t + h(4) + Duration::minutes(20),
            Input::Events(vec![ev(
                "lee-asset",
                "lee",
                "asset.downloaded",
                t + h(4) + Duration::minutes(20),
                json!({"asset": "competitor-comparison"}),
            )]),
        ),
        (
            t + h(5),
            Input::Events(
                (0..5)
                    .flat_map(|k| [pricing("max", k, t + h(5)), pricing("sam", k, t + h(5))])
                    .collect(),
            ),
        ),
        (
            t + h(24),
            Input::Events(vec![
                ev("lee-booked", "lee", "meeting.booked", t + h(24), json!({})),
                ev("ab1-open", "ab1", "email.opened", t + h(24), json!({})),
                ev("ab2-open", "ab2", "email.opened", t + h(24), json!({})),
            ]),
        ),
        (
            t + h(48),
            Input::Contacts(vec![json!({"id": "sam", "lifecycle": "customer"})]),
        ),
        (
            t + h(75),
            Input::Events(vec![ev(
                "old1-click",
                "old1",
                "email.clicked",
                t + h(75),
                json!({}),
            )]),
        ),
        (
            t + Duration::days(9),
            Input::Events(vec![ev(
                "kim-click",
                "kim",
                "email.clicked",
                t + Duration::days(9),
                json!({}),
            )]),
        ),
    ];
    out.sort_by_key(|(at, _)| *at);
    out
}

/// The end of the recorded period: every run of the timeline has ended or waits long.
fn end() -> DateTime<Utc> {
    t0() + Duration::days(45)
}

/// A store of `url` with the example project deployed, driven through the timeline on a
/// virtual clock: each instant is the next event, timer, schedule firing or segment
/// timer. Nothing is delivered (no example step awaits an outcome).
async fn record(dir: &Path, url: &str) -> (Arc<dyn Store>, Arc<nurture_core::project::Project>) {
    let project = Arc::new(nurture_core::project::load(dir).project.unwrap());
    let store = nurture_server::open_store(url).await.unwrap();
    let engine = Arc::new(Engine::new(project.clone(), store.clone()));
    let start = t0() - Duration::days(1);
    let plan = nurture_engine::deploy::plan(&*store, &project, "test", start)
        .await
        .unwrap();
    nurture_engine::deploy::apply(&engine, &plan, start)
        .await
        .unwrap();
    import(&engine, contacts(), start).await;
    engine.tick(start).await.unwrap();
    let mut inputs = timeline().into_iter().peekable();
    let mut now = start;
    for _ in 0..10_000 {
        let next = [
            inputs.peek().map(|(at, _)| *at),
            store.next_timer().await.unwrap(),
            engine.next_schedule(now),
            engine.next_segment_timer().await.unwrap(),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next.filter(|t| *t <= end()) else {
            return (store, project);
        };
        now = next.max(now);
        while let Some((_, input)) = inputs.next_if(|(at, _)| *at <= now) {
            match input {
                Input::Events(evs) => {
                    engine.ingest(&evs, now).await.unwrap();
                }
                Input::Contacts(rows) => import(&engine, rows, now).await,
            }
        }
        engine.tick(now).await.unwrap();
    }
    panic!("the recording did not end");
}

async fn import(engine: &Engine, rows: Vec<Value>, now: DateTime<Utc>) {
    let rows: Vec<_> = rows
        .iter()
        .enumerate()
        .map(|(i, v)| nurture_engine::input::parse_contact(i + 1, v).unwrap())
        .collect();
    engine.import_contacts(&rows, now).await.unwrap();
}

async fn recordings(store: &dyn Store, project: &nurture_core::project::Project) -> Vec<Recording> {
    let filter = RunFilter {
        limit: 10_000,
        ..Default::default()
    };
    let mut out = Vec::new();
    for run in store.list_runs(&filter).await.unwrap() {
        out.push(Recording::load(store, project, &run.id).await.unwrap());
    }
    out.sort_by(|a, b| {
        (&a.run.workflow, &a.run.contact, a.run.started_at).cmp(&(
            &b.run.workflow,
            &b.run.contact,
            b.run.started_at,
        ))
    });
    out
}

/// The (workflow, step) pairs the recordings' runs went through.
fn steps_taken(recs: &[Recording]) -> BTreeSet<(String, String)> {
    recs.iter()
        .flat_map(|r| {
            r.journal.iter().filter(|j| j.kind == "step").map(|j| {
                (
                    r.run.workflow.clone(),
                    j.data["step"].as_str().unwrap_or_default().to_string(),
                )
            })
        })
        .collect()
}

/// The paths the timeline is meant to take: both ways of every branch, split and wait.
const PATHS: &[(&str, &str)] = &[
    ("ebook-nurture", "week-later"),
    ("ebook-nurture", "nudge"),
    ("ebook-nurture", "handoff"),
    ("ebook-nurture", "newsletter"),
    ("ab-subject-test", "subject-a"),
    ("ab-subject-test", "subject-b"),
    ("ab-subject-test", "opened"),
    ("demo-request", "sms-reminder"),
    ("demo-request", "book-reminder"),
    ("demo-request", "send-comparison"),
    ("demo-request", "crm-sync"),
    ("enterprise-followup", "cmo-roi"),
    ("enterprise-followup", "manager-howto"),
    ("enterprise-followup", "case-study"),
    ("enterprise-followup", "last-touch"),
    ("hot-lead-handoff", "remind-owner"),
    ("re-engagement", "welcome-back"),
    ("re-engagement", "go-dormant"),
    ("weekly-newsletter", "send"),
];

fn assert_identical(reports: &[Report]) {
    let bad: Vec<String> = reports
        .iter()
        .filter(|r| !r.identical())
        .map(Report::render)
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} runs did not replay identical:\n{}",
        bad.len(),
        reports.len(),
        bad.join("\n")
    );
}

fn journals_dir() -> PathBuf {
    crate::util::repo().join("tests/journals")
}

/// Every example workflow's runs, recorded on SQLite and on Postgres, replay identical;
/// the timeline took every path it was meant to (and hot-lead-handoff's `else` for sam,
/// whose lifecycle an import changed: an input the replay reads from the journal).
#[test]
fn runs_of_every_example_workflow_replay_identical_on_each_store() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = crate::util::example_project(tmp.path(), "");
    let mut urls = vec![format!("sqlite://{}", tmp.path().join("r.db").display())];
    urls.extend(crate::util::fresh_postgres());
    for (k, url) in urls.iter().enumerate() {
        rt().block_on(async {
            let (store, project) = record(&dir, url).await;
            let recs = recordings(&*store, &project).await;
            let taken = steps_taken(&recs);
            for (w, s) in PATHS {
                assert!(
                    taken.contains(&(w.to_string(), s.to_string())),
                    "{url}: no run of {w} went through {s}"
                );
            }
            let workflows: BTreeSet<&str> = recs.iter().map(|r| r.run.workflow.as_str()).collect();
            assert_eq!(workflows.len(), project.plans.len(), "{url}: {workflows:?}");
            let target = Target {
                project: &project,
                against: None,
            };
            let reports = replay::replay(&target, &recs, |_| {}).await.unwrap();
            assert_eq!(reports.len(), recs.len());
            assert_identical(&reports);
            if k == 0 && std::env::var_os("NURTURE_RECORD_JOURNALS").is_some() {
                write_fixtures(&recs);
            }
        });
    }
}

/// One fixture per run: `WORKFLOW--CONTACT--N.json`.
fn write_fixtures(recs: &[Recording]) {
    let dir = journals_dir();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut seen = std::collections::HashMap::new();
    for r in recs {
        let n = seen
            .entry((r.run.workflow.clone(), r.run.contact.clone()))
            .or_insert(0);
        *n += 1;
        let name = format!("{}--{}--{}.json", r.run.workflow, r.run.contact, n);
        std::fs::write(
            dir.join(name),
            serde_json::to_string_pretty(r).unwrap() + "\n",
        )
        .unwrap();
    }
}

fn fixtures() -> Vec<(PathBuf, Recording)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(journals_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let r = Recording::from_json(&std::fs::read_to_string(&p).unwrap()).unwrap();
            (p, r)
        })
        .collect()
}

fn example() -> nurture_core::project::Project {
    let tmp = tempfile::tempdir().unwrap();
    let dir = crate::util::example_project(tmp.path(), "");
    nurture_core::project::load(&dir).project.unwrap()
}

/// The recorded journals replay identical with today's engine, and they cover every
/// example workflow and every path of [`PATHS`].
#[test]
fn recorded_journals_replay_identical() {
    let project = example();
    let fixtures = fixtures();
    let recs: Vec<Recording> = fixtures.iter().map(|(_, r)| r.clone()).collect();
    let taken = steps_taken(&recs);
    for (w, s) in PATHS {
        assert!(
            taken.contains(&(w.to_string(), s.to_string())),
            "no fixture of {w} goes through {s}"
        );
    }
    let workflows: BTreeSet<&str> = recs.iter().map(|r| r.run.workflow.as_str()).collect();
    assert_eq!(workflows.len(), project.plans.len(), "{workflows:?}");
    let reports = rt().block_on(async {
        let target = Target {
            project: &project,
            against: None,
        };
        replay::replay(&target, &recs, |_| {}).await.unwrap()
    });
    assert_identical(&reports);
}

/// The e-book's `qualify` edited (`>= 50` to `>= 5`): ana's run, which read a score of
/// 10 and took `else`, now takes `handoff`; the first divergence is that condition.
#[test]
fn an_edited_branch_diverges_at_its_condition() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = crate::util::example_project(tmp.path(), "");
    let path = dir.join("workflows/ebook-nurture.yaml");
    let src = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        src.replace("contact.score >= 50", "contact.score >= 5"),
    )
    .unwrap();
    let edited = nurture_core::project::load(&dir).project.unwrap();
    let project = example();
    let (_, ana) = fixtures()
        .into_iter()
        .find(|(p, _)| p.ends_with("ebook-nurture--ana--1.json"))
        .expect("the fixture of ana's e-book run");
    let reports = rt().block_on(async {
        let target = Target {
            project: &project,
            against: Some(&edited),
        };
        replay::replay(&target, std::slice::from_ref(&ana), |_| {})
            .await
            .unwrap()
    });
    let Verdict::Diverged {
        index,
        step,
        recorded,
        now,
        cause,
        entries,
    } = &reports[0].verdict
    else {
        panic!("{:?}", reports[0]);
    };
    let q = ana
        .journal
        .iter()
        .position(|j| j.kind == "condition" && j.data["where"] == "qualify[0]")
        .unwrap();
    assert_eq!(*index, q, "{}", reports[0].render());
    assert_eq!(*entries, ana.journal.len());
    assert_eq!(step.as_deref(), Some("qualify"));
    let (then, now) = (recorded.as_ref().unwrap(), now.as_ref().unwrap());
    assert_eq!(
        (then.data["result"].clone(), now.data["result"].clone()),
        (json!(false), json!(true))
    );
    assert_eq!(now.data["expr"], "contact.score >= 5");
    assert_eq!(
        cause,
        "the step `qualify` is not the same in the replayed workflow"
    );
    // Unedited, the same recording is identical.
    let same = rt().block_on(async {
        let target = Target {
            project: &project,
            against: Some(&project),
        };
        replay::replay(&target, std::slice::from_ref(&ana), |_| {})
            .await
            .unwrap()
    });
    assert!(same[0].identical(), "{}", same[0].render());
}

/// An input taken out of a recording (the open that ended ana's wait) makes the replay
/// diverge where it mattered: a recording that was tampered with does not pass.
#[test]
fn a_recording_whose_inputs_were_tampered_with_diverges() {
    let project = example();
    let (_, mut ana) = fixtures()
        .into_iter()
        .find(|(p, _)| p.ends_with("ebook-nurture--ana--1.json"))
        .unwrap();
    // The open that ended her wait is gone: the wait now times out.
    ana.events.retain(|f| f.event.id != "ana-open");
    let reports = rt().block_on(async {
        let target = Target {
            project: &project,
            against: None,
        };
        replay::replay(&target, std::slice::from_ref(&ana), |_| {})
            .await
            .unwrap()
    });
    let Verdict::Diverged {
        step,
        recorded,
        now,
        ..
    } = &reports[0].verdict
    else {
        panic!("{}", reports[0].render());
    };
    // Recorded: the open's filter was read; now: nothing came, the wait times out.
    let (then, now) = (recorded.as_ref().unwrap(), now.as_ref().unwrap());
    assert_eq!(then.kind, "condition");
    assert_eq!(then.data["where"], "wait_for");
    assert_eq!(now.kind, "timeout", "{}", reports[0].render());
    assert_eq!(
        step.as_deref(),
        Some("wait-open"),
        "{}",
        reports[0].render()
    );
}

fn nurture(dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_nurture"))
        .args(args)
        .arg("--dir")
        .arg(dir)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

/// `runs replay`, `runs export` + `runs replay --file`, bulk `replay` (with and without
/// `--against`) and `deploy --dry-run --replay N`, on the project's own store.
#[test]
fn the_cli_replays_exports_and_replays_in_bulk() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = crate::util::example_project(tmp.path(), "");
    let url = format!("sqlite://{}", dir.join("nurture.db").display());
    let run = rt().block_on(async {
        let (store, _) = record(&dir, &url).await;
        let runs = store
            .list_runs(&RunFilter {
                workflow: Some("ebook-nurture".into()),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        runs.into_iter().find(|r| r.contact == "ana").unwrap().id
    });
    let o = nurture(&dir, &["runs", "replay", &run]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains(&format!("{run}: identical (")), "{out}");

    let file = tmp.path().join("ana.json");
    let o = nurture(
        &dir,
        &["runs", "export", &run, "-o", file.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = nurture(
        &dir,
        &[
            "runs",
            "replay",
            "--file",
            file.to_str().unwrap(),
            "--format",
            "json",
        ],
    );
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["verdict"], "identical", "{v}");
    assert_eq!(v["run"], run.as_str());

    let o = nurture(&dir, &["replay", "--workflow", "ebook-nurture"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("identical 3"), "{out}");

    // The edited project: `qualify` lowered to 5; a new version number.
    let edited = tmp.path().join("edited");
    crate::util::copy_project(&dir, &edited);
    let path = edited.join("workflows/ebook-nurture.yaml");
    let src = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        src.replace("contact.score >= 50", "contact.score >= 5")
            .replace("version: 1", "version: 2"),
    )
    .unwrap();
    let o = nurture(
        &dir,
        &[
            "replay",
            "--workflow",
            "ebook-nurture",
            "--against",
            edited.to_str().unwrap(),
            "--format",
            "json",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    // ana read a score of 10 and now goes to `handoff`; bob's 0 still goes to the
    // newsletter, and cem went to `handoff` already.
    assert_eq!(
        (v["identical"].as_u64(), v["diverged"].as_u64()),
        (Some(2), Some(1)),
        "{v}"
    );
    assert_eq!(v["diverged_at"]["qualify"], 1, "{v}");
    assert_eq!(v["reports"][0]["contact"], "ana", "{v}");

    let o = std::process::Command::new(env!("CARGO_BIN_EXE_nurture"))
        .args([
            "deploy",
            edited.to_str().unwrap(),
            "--dry-run",
            "--replay",
            "10",
            "--store",
            &url,
        ])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("replayed 3 run(s) of ebook-nurture"), "{out}");
    assert!(out.contains("diverged first at qualify: 1"), "{out}");
    assert!(out.contains("dry run: nothing was changed"), "{out}");

    let o = nurture(&dir, &["runs", "replay", "no-such-run"]);
    assert_eq!(o.status.code(), Some(1));
}

/// `nurture contacts show`: the score's history with reasons, segments since when, the
/// lifecycle's history (a workflow's `set`, then an import) and `--timeline`, from the
/// recorded timeline's store; `GET /v1/contacts/{id}` answers the same story.
#[test]
fn a_contacts_story_has_its_histories_and_timeline() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = crate::util::example_project(tmp.path(), "");
    let url = format!("sqlite://{}", dir.join("nurture.db").display());
    rt().block_on(async {
        record(&dir, &url).await;
    });
    let show = |who: &str| {
        let o = nurture(&dir, &["contacts", "show", who, "--format", "json"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<Value>(&o.stdout).unwrap()
    };
    let cem = show("cem");
    let reasons: Vec<&str> = cem["score_history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["reason"].as_str().unwrap())
        .collect();
    // VP (a profile rule, at the import), two pricing visits (two rules each), the open.
    assert!(
        reasons[0].starts_with("profile rule `has(contact.title)"),
        "{cem}"
    );
    assert_eq!(
        reasons[1..],
        ["page.visited"; 4]
            .iter()
            .copied()
            .chain(["email.opened"])
            .collect::<Vec<_>>()[..],
        "{cem}"
    );
    let last = cem["score_history"].as_array().unwrap().last().unwrap();
    assert_eq!(last["score"], cem["contact"]["score"], "{cem}");

    let sam = show("sam@example.com");
    let life: Vec<(Value, String)> = sam["lifecycle_history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["to"].clone(), c["cause"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        life,
        [
            (
                json!("mql"),
                "workflow hot-lead-handoff step handoff".to_string()
            ),
            (json!("customer"), "import".to_string())
        ],
        "{sam}"
    );

    let ana = show("ana");
    let seg = &ana["segments"][0];
    assert_eq!(seg["segment"], "newsletter-subscribers", "{ana}");
    assert!(seg["since"].is_string(), "{ana}");

    let o = nurture(&dir, &["contacts", "show", "sam", "--timeline"]);
    let text = String::from_utf8_lossy(&o.stdout);
    let at = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in\n{text}"))
    };
    assert!(
        at("page.visited") < at("entered workflow hot-lead-handoff"),
        "{text}"
    );
    assert!(
        at("entered workflow hot-lead-handoff") < at("import changed"),
        "{text}"
    );
    let times: Vec<&str> = text.lines().map(|l| &l[..20]).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "not in time order:\n{text}"
    );
}

/// A file that is not a recording (another JSON document, another format, a workflow
/// source that is a YAML alias bomb) is refused with a reason, exit 1, and nothing runs
/// away; a file over the size limit is refused before it is read.
#[test]
fn a_replay_file_that_is_not_a_recording_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = crate::util::example_project(tmp.path(), "");
    let (_, ana) = fixtures()
        .into_iter()
        .find(|(p, _)| p.ends_with("ebook-nurture--ana--1.json"))
        .unwrap();
    let run = |name: &str, text: &str| {
        let f = tmp.path().join(name);
        std::fs::write(&f, text).unwrap();
        let o = nurture(&dir, &["runs", "replay", "--file", f.to_str().unwrap()]);
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };
    let (code, err) = run("other.json", r#"{"hello": "world"}"#);
    assert_eq!(code, Some(1));
    assert!(err.contains("not a recording"), "{err}");
    let mut newer = serde_json::to_value(&ana).unwrap();
    newer["format"] = json!("nurture-run/9");
    let (code, err) = run("newer.json", &newer.to_string());
    assert_eq!(code, Some(1));
    assert!(err.contains("this version reads `nurture-run/1`"), "{err}");
    // A billion laughs as the workflow's source: refused by the YAML reader's alias limit.
    let mut bomb = serde_json::to_value(&ana).unwrap();
    let mut src = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for k in 1..12 {
        src += &format!(
            "{}: &{} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n",
            (b'a' + k) as char,
            (b'a' + k) as char,
            p = (b'a' + k - 1) as char
        );
    }
    bomb["workflow"]["source"] = json!(src);
    let f = tmp.path().join("bomb.json");
    std::fs::write(&f, bomb.to_string()).unwrap();
    let o = nurture(
        &dir,
        &[
            "runs",
            "replay",
            "--file",
            f.to_str().unwrap(),
            "--format",
            "json",
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["verdict"], "failed", "{v}");
    assert!(
        v["reason"].as_str().unwrap().contains("does not compile"),
        "{v}"
    );
    // Over the limit: refused by its size.
    let big = tmp.path().join("big.json");
    let file = std::fs::File::create(&big).unwrap();
    file.set_len(65 << 20).unwrap();
    let o = nurture(&dir, &["runs", "replay", "--file", big.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("a recording is at most"));
}

/// The sample files sent at once, months after the times their events carry (as
/// `nurture contacts import` and `nurture events send` do on a fresh project): events with
/// an old `at` applied now, and two workflows started in one unit (lee's demo request and
/// the hand-off its score reached, which counts the demo workflow's `score: +30`). Each
/// run replays identical: a replay reads the contact's whole history and runs the whole
/// project (regression: all four diverged at their first entry).
#[test]
fn runs_of_late_events_and_of_one_unit_replay_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = crate::util::example_project(tmp.path(), "");
    let url = format!("sqlite://{}", tmp.path().join("late.db").display());
    rt().block_on(async {
        let project = Arc::new(nurture_core::project::load(&dir).project.unwrap());
        let store = nurture_server::open_store(&url).await.unwrap();
        let engine = Arc::new(Engine::new(project.clone(), store.clone()));
        let now = Utc.with_ymd_and_hms(2026, 12, 3, 15, 0, 0).unwrap();
        let plan = nurture_engine::deploy::plan(&*store, &project, "test", now)
            .await
            .unwrap();
        nurture_engine::deploy::apply(&engine, &plan, now)
            .await
            .unwrap();
        let (rows, _) =
            nurture_engine::input::read_contacts(&dir.join("sample/contacts.jsonl")).unwrap();
        engine.import_contacts(&rows, now).await.unwrap();
        let text = std::fs::read_to_string(dir.join("sample/events.jsonl")).unwrap();
        let events: Vec<IncomingEvent> = text
            .lines()
            .enumerate()
            .map(|(i, l)| {
                nurture_engine::input::parse_event(i + 1, &serde_json::from_str(l).unwrap())
                    .unwrap()
            })
            .collect();
        engine.ingest(&events, now).await.unwrap();
        engine.tick(now).await.unwrap();
        let recs = recordings(&*store, &project).await;
        let workflows: BTreeSet<&str> = recs.iter().map(|r| r.run.workflow.as_str()).collect();
        assert!(
            workflows.contains("hot-lead-handoff") && workflows.contains("demo-request"),
            "{workflows:?}"
        );
        let target = Target {
            project: &project,
            against: None,
        };
        assert_identical(&replay::replay(&target, &recs, |_| {}).await.unwrap());
    });
}
