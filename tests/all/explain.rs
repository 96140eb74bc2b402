//! `nurture runs explain` (issue 20): runs of the example project told in plain words,
//! pinned by snapshots; each scenario runs on SQLite and Postgres and must tell the same
//! story on both.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{json, Value};

use crate::util::rt_multi as rt;
use nurture_engine::input::IncomingEvent;
use nurture_engine::Engine;
use nurture_store::Store;

fn t0() -> DateTime<Utc> {
    // Monday 2 March 2026, 11:00 in Sofia: outside the example's quiet hours.
    Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap()
}

fn ev(id: &str, kind: &str, at: DateTime<Utc>, data: Value) -> IncomingEvent {
    IncomingEvent {
        index: 0,
        id: Some(id.into()),
        kind: kind.into(),
        contact: None,
        email: Some("ana@example.com".into()),
        at: Some(at),
        data,
    }
}

/// The example project (with `extra` appended to its settings, and `demo-request`
/// replaced by a one-email workflow on the same trigger), deployed on a fresh store of
/// each kind.
struct World {
    store: Arc<dyn Store>,
    engine: Arc<Engine>,
    deliverer: nurture_channels::deliver::Deliverer,
}

fn urls(dir: &Path) -> Vec<String> {
    let mut urls = vec![format!("sqlite://{}", dir.join("t.db").display())];
    urls.extend(crate::util::fresh_postgres());
    urls
}

async fn world(dir: &Path, url: &str) -> World {
    let project = Arc::new(nurture_core::project::load(dir).project.unwrap());
    let store = nurture_server::open_store(url).await.unwrap();
    let engine = Arc::new(Engine::new(project.clone(), store.clone()));
    let plan = nurture_engine::deploy::plan(&*store, &project, "test", t0())
        .await
        .unwrap();
    nurture_engine::deploy::apply(&engine, &plan, t0())
        .await
        .unwrap();
    let signer = nurture_channels::email::Signer::for_project(dir, None).unwrap();
    let deliverer =
        nurture_server::compose::deliverer(&project, store.clone(), &signer, "http://127.0.0.1:1")
            .unwrap();
    World {
        store,
        engine,
        deliverer,
    }
}

fn project(tmp: &Path, extra: &str) -> std::path::PathBuf {
    let dir = crate::util::example_project(tmp, extra);
    std::fs::remove_file(dir.join("workflows/demo-request.yaml")).unwrap();
    std::fs::write(
        dir.join("workflows/demo-thanks.yaml"),
        "workflow: demo-thanks\ntrigger: { event: demo.requested }\nsteps:\n  - id: thanks\n    send_email: meeting-setup\n",
    )
    .unwrap();
    dir
}

impl World {
    /// Ingests `events` and works at `now`: events, timers, deliveries.
    async fn at(&self, now: DateTime<Utc>, events: &[IncomingEvent]) {
        if !events.is_empty() {
            self.engine.ingest(events, now).await.unwrap();
        }
        self.engine.tick(now).await.unwrap();
        self.deliverer.deliver_due(now, 100).await.unwrap();
    }

    /// The story of ana's run of `workflow`, ids redacted.
    async fn story(&self, workflow: &str) -> String {
        let contact = nurture_engine::input::id_for_email("ana@example.com");
        let runs = self.store.runs_of_contact(&contact).await.unwrap();
        let run = runs.iter().find(|r| r.workflow == workflow).unwrap();
        let x = nurture_engine::explain::explain_run(&*self.store, &run.id)
            .await
            .unwrap()
            .unwrap();
        x.render()
            .replace(&run.id, "[RUN]")
            .replace(&contact, "[CONTACT]")
    }
}

/// Runs `scenario` on every store; the stories of `workflows` must be the same on each.
fn stories<F>(extra: &str, workflows: &[&str], scenario: F) -> Vec<String>
where
    F: for<'w> Fn(&'w World) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'w>>,
{
    let tmp = tempfile::tempdir().unwrap();
    let dir = project(tmp.path(), extra);
    let mut seen: Option<Vec<String>> = None;
    for url in urls(tmp.path()) {
        let got = rt().block_on(async {
            let w = world(&dir, &url).await;
            scenario(&w).await;
            let mut out = Vec::new();
            for wf in workflows {
                out.push(w.story(wf).await);
            }
            out
        });
        if let Some(first) = &seen {
            assert_eq!(first, &got, "{url} tells another story");
        }
        seen = Some(got);
    }
    seen.unwrap()
}

fn submitted(at: DateTime<Utc>) -> IncomingEvent {
    ev("form-1", "form.submitted", at, json!({"form": "ebook"}))
}

/// Opened: a bot's open (a scanner) does not count; ana's does, a week later the webinar,
/// then `qualify` reads her score and sends her to the newsletter.
#[test]
fn ebook_opened_story() {
    let out = stories("", &["ebook-nurture"], |w| {
        Box::pin(async move {
            w.at(t0(), &[submitted(t0())]).await;
            let scan = t0() + Duration::minutes(1);
            let bot = json!({"step": "deliver", "bot": true, "bot_reason": "scanner user agent"});
            w.at(scan, &[ev("open-bot", "email.opened", scan, bot)])
                .await;
            let open = t0() + Duration::hours(1);
            let data = json!({"step": "deliver"});
            w.at(open, &[ev("open-1", "email.opened", open, data)])
                .await;
            w.at(open + Duration::days(7), &[]).await;
        })
    });
    insta::assert_snapshot!("explain_ebook_opened", out[0]);
}

/// Ignored: an open of another email does not count (the filter was false); the wait
/// times out, the free e-book follows two weeks later.
#[test]
fn ebook_ignored_story() {
    let out = stories("", &["ebook-nurture"], |w| {
        Box::pin(async move {
            w.at(t0(), &[submitted(t0())]).await;
            let other = t0() + Duration::days(1);
            let data = json!({"step": "newsletter"});
            w.at(other, &[ev("open-x", "email.opened", other, data)])
                .await;
            w.at(t0() + Duration::days(7), &[]).await;
            w.at(t0() + Duration::days(21), &[]).await;
        })
    });
    insta::assert_snapshot!("explain_ebook_ignored", out[0]);
}

/// Submitted at 22:30 in Sofia the night clocks go forward: the e-book is held by quiet
/// hours until 08:00 local time, which is 05:00 UTC after the change (06:00 before).
#[test]
fn quiet_hours_across_dst_story() {
    let night = Utc.with_ymd_and_hms(2026, 3, 28, 20, 30, 0).unwrap();
    let out = stories("", &["ebook-nurture"], move |w| {
        Box::pin(async move {
            w.at(night, &[submitted(night)]).await;
            w.at(Utc.with_ymd_and_hms(2026, 3, 29, 5, 0, 1).unwrap(), &[])
                .await;
        })
    });
    insta::assert_snapshot!("explain_quiet_hours_dst", out[0]);
}

/// A demo request is the e-book's goal (converted); the thank-you email of the demo
/// workflow is deferred by the frequency cap (one email per 7 days).
#[test]
fn goal_exit_and_frequency_cap_story() {
    let cap = "[email]\ncap = { max = 1, per = \"7d\" }\n";
    let out = stories(cap, &["ebook-nurture", "demo-thanks"], |w| {
        Box::pin(async move {
            w.at(t0(), &[submitted(t0())]).await;
            let demo = t0() + Duration::hours(2);
            w.at(demo, &[ev("demo-1", "demo.requested", demo, json!({}))])
                .await;
        })
    });
    insta::assert_snapshot!("explain_goal_exit", out[0]);
    insta::assert_snapshot!("explain_frequency_cap", out[1]);
}

/// `nurture runs explain` prints the story (human and JSON) from the project's store, and
/// says so, exit 1, for a run that does not exist.
#[test]
fn the_cli_explains_a_run_and_refuses_an_unknown_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = project(tmp.path(), "");
    let url = format!("sqlite://{}", dir.join("nurture.db").display());
    let run_id = rt().block_on(async {
        let w = world(&dir, &url).await;
        w.at(t0(), &[submitted(t0())]).await;
        let runs = w.store.list_runs(&Default::default()).await.unwrap();
        runs[0].id.clone()
    });
    let nurture = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_nurture"))
            .args(args)
            .arg("--dir")
            .arg(&dir)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let o = nurture(&["runs", "explain", &run_id]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("waiting for email.opened until"), "{out}");
    let o = nurture(&["runs", "explain", &run_id, "--format", "json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["run"], run_id.as_str());
    assert_eq!(v["lines"][1]["kind"], "sent", "{v}");
    let o = nurture(&["runs", "explain", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no run nope"));
}
