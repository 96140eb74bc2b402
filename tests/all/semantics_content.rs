//! Issue 17, items 2, 10, 11 and 12: what a recipient sees (the preheader), what
//! `nurture validate` catches before contacts hit it (event names ingestion refuses,
//! contact fields that may be missing), events resent without an id, and contacts'
//! creation in simulations.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};

use crate::email::{decoded, ebook, edit_file, header, headers, noon_yesterday, start_smtp, world};
use crate::util::rt_multi as rt;
use crate::util::{example_project, nurture, repo};

fn time(s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

// ---------------------------------------------------------------------------------------
// Item 2: the preheader.

/// The e-book template's preheader made personal (and with characters HTML escapes).
fn personal_preheader(dir: &Path) {
    edit_file(
        dir,
        "templates/ebook-delivery.html",
        "preheader: \"Download link inside\"",
        "preheader: \"For {{ contact.first_name | default('you') }}: <link> & more\"",
    );
}

/// The hidden preheader element (the HTML part, quoted-printable decoded).
const HIDDEN: &str =
    "<div style=\"display:none;max-height:0;max-width:0;opacity:0;overflow:hidden;mso-hide:all\">";

/// The HTML and text parts of a raw message, decoded.
fn parts(raw: &str) -> (String, String) {
    let body = decoded(raw);
    let html_at = body.find("Content-Type: text/html").expect("an HTML part");
    let text_at = body.find("Content-Type: text/plain").expect("a text part");
    let (text, html) = if text_at < html_at {
        (&body[text_at..html_at], &body[html_at..])
    } else {
        (&body[text_at..], &body[html_at..text_at])
    };
    (html.to_string(), text.to_string())
}

fn assert_preheader(raw: &str, expected: &str) {
    let (html, text) = parts(raw);
    let element = format!("{HIDDEN}{expected}</div>");
    let body_tag = html.find("<body").expect("a body");
    let at = html
        .find(&element)
        .unwrap_or_else(|| panic!("no hidden preheader {element:?} in\n{html}"));
    let after_body = html[body_tag..].find('>').unwrap() + body_tag + 1;
    assert_eq!(at, after_body, "the preheader opens the body:\n{html}");
    assert!(
        !text.contains("For Ana:") && !text.contains("For you:"),
        "the text part has no preheader: {text}"
    );
}

#[test]
fn preheader_is_sent_rendered_and_hidden_over_smtp() {
    let tmp = tempfile::tempdir().unwrap();
    let smtp = start_smtp(&tmp.path().join("smtp"));
    let dir = example_project(
        tmp.path(),
        &format!(
            "[smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n",
            smtp.port
        ),
    );
    personal_preheader(&dir);
    rt().block_on(async {
        let w = world(&dir).await;
        let t0 = noon_yesterday();
        w.contacts(
            &[json!({"id": "ana", "email": "ana@example.com", "first_name": "Ana"})],
            t0,
        )
        .await;
        w.events(&[ebook("ana")], t0).await;
        assert_eq!(w.deliver(t0).await, 1);
    });
    let got = smtp.received();
    assert_eq!(got.len(), 1);
    assert_preheader(&got[0].0, "For Ana: &lt;link&gt; &amp; more");
}

#[test]
fn preheader_is_in_the_eml_of_the_file_transport_for_every_contact() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = example_project(tmp.path(), "");
    personal_preheader(&dir);
    rt().block_on(async {
        let w = world(&dir).await;
        let t0 = noon_yesterday();
        w.contacts(
            &[
                json!({"id": "ana", "email": "ana@example.com", "first_name": "Ana"}),
                json!({"id": "kim", "email": "kim@example.com"}),
            ],
            t0,
        )
        .await;
        w.events(&[ebook("ana"), ebook("kim")], t0).await;
        assert_eq!(w.deliver(t0).await, 2);
        for (who, expected) in [
            ("ana", "For Ana: &lt;link&gt; &amp; more"),
            ("kim", "For you: &lt;link&gt; &amp; more"),
        ] {
            let key = &w.outbox_of(who, "email").await[0];
            let raw =
                std::fs::read_to_string(dir.join("outbox").join(format!("{key}.eml"))).unwrap();
            assert_eq!(
                header(&headers(&raw), "Subject"),
                "Your e-book: The B2B Nurture Playbook"
            );
            assert_preheader(&raw, expected);
        }
    });
}

#[test]
fn email_preview_shows_the_rendered_preheader() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = example_project(tmp.path(), "");
    personal_preheader(&dir);
    let contacts = tmp.path().join("contacts.jsonl");
    std::fs::write(
        &contacts,
        "{\"id\": \"ana\", \"email\": \"ana@example.com\", \"first_name\": \"Ana\"}\n",
    )
    .unwrap();
    let d = dir.to_str().unwrap();
    let out = nurture(&["contacts", "import", contacts.to_str().unwrap(), "--dir", d]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = nurture(&[
        "email",
        "preview",
        "ebook-delivery",
        "--contact",
        "ana",
        "--dir",
        d,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Preheader: For Ana: <link> & more"),
        "{stdout}"
    );
    let html = tmp.path().join("preview.html");
    let out = nurture(&[
        "email",
        "preview",
        "ebook-delivery",
        "--contact",
        "ana",
        "--dir",
        d,
        "--out",
        html.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(html).unwrap();
    assert!(
        html.contains(&format!("<body style=\"margin: 0; padding: 0; background-color: #f4f4f5\">{HIDDEN}For Ana: &lt;link&gt; &amp; more</div>")),
        "{html}"
    );
}

// ---------------------------------------------------------------------------------------
// Item 10: validation.

/// A project in `tmp` with these files (path under the project, text).
fn project_with(tmp: &Path, files: &[(&str, &str)]) -> PathBuf {
    let dir = tmp.join("p");
    std::fs::create_dir_all(dir.join("workflows")).unwrap();
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(
        dir.join("nurture.toml"),
        "[sender]\nfrom = \"Team <team@example.test>\"\n",
    )
    .unwrap();
    for (path, text) in files {
        std::fs::write(dir.join(path), text).unwrap();
    }
    dir
}

#[test]
fn an_event_name_ingestion_refuses_is_a_validation_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = project_with(
        tmp.path(),
        &[
            (
                "workflows/w.yaml",
                "workflow: w\ntrigger: { event: go }\ngoal: { event: Deal.Won }\nsteps:\n  - id: wait\n    wait_for: { event: clicked, timeout: 1d }\n  - id: done\n    tag: [x]\n",
            ),
            ("scoring.yaml", "rules:\n  - { event: visit, points: 3 }\n"),
        ],
    );
    // The very rule ingestion applies.
    for name in ["go", "Deal.Won", "clicked", "visit"] {
        let refused = nurture_engine::input::parse_event(0, &json!({"type": name, "contact": "c"}))
            .unwrap_err()
            .to_string();
        assert!(refused.contains("dotted lowercase"), "{refused}");
    }
    let loaded = nurture_core::project::load(&dir);
    assert!(loaded.project.is_none(), "nothing half-valid is deployed");
    let found: Vec<(String, usize, usize)> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.code.as_str() == "N0014")
        .map(|d| {
            (
                d.file.file_name().unwrap().to_string_lossy().to_string(),
                d.span.line,
                d.span.col,
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            ("scoring.yaml".to_string(), 2, 14),
            ("w.yaml".to_string(), 2, 19),
            ("w.yaml".to_string(), 3, 16),
            ("w.yaml".to_string(), 6, 24),
        ],
        "{}",
        loaded.render()
    );
    let go = loaded
        .diagnostics
        .iter()
        .find(|d| d.code.as_str() == "N0014" && d.span.line == 2 && d.span.col == 19)
        .unwrap();
    assert!(
        go.message.contains("`go` can never arrive"),
        "{}",
        go.message
    );
    assert!(
        go.hint.as_deref().unwrap().contains("e.g. `custom.go`"),
        "{:?}",
        go.hint
    );
    // The CLI: exit 1, file:line:col and the fix.
    let out = nurture(&["validate", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("error[N0014]"), "{stderr}");
    assert!(stderr.contains("w.yaml:2:19"), "{stderr}");
    assert!(stderr.contains("help: rename it"), "{stderr}");
}

#[test]
fn a_field_some_contacts_lack_is_a_warning_with_a_default_hint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = project_with(
        tmp.path(),
        &[
            (
                "templates/hi.html",
                "---\nsubject: \"Hi {{ contact.first_name }}\"\n---\n<p>{{ contact.first_name | default('there') }}</p>\n<p>{{ contact.company.name }}</p>\n{% if contact.title %}<p>{{ contact.title }}</p>{% endif %}\n<p>{{ contact.email }}</p>\n",
            ),
            (
                "workflows/w.yaml",
                "workflow: w\ntrigger: { event: form.submitted }\nsteps:\n  - id: hi\n    send_email: hi\n  - id: crm\n    webhook:\n      url: https://crm.example.test/hook\n      body: { name: \"${contact.first_name}\", phone: \"${has(contact.phone) ? contact.phone : ''}\", id: \"${contact.id}\" }\n",
            ),
        ],
    );
    let loaded = nurture_core::project::load(&dir);
    assert_eq!(loaded.errors(), 0, "{}", loaded.render());
    assert!(loaded.project.is_some(), "warnings do not stop a project");
    let warnings: Vec<String> = loaded
        .diagnostics
        .iter()
        .map(|d| {
            assert_eq!(d.severity, nurture_core::diag::Severity::Warning);
            assert_eq!(d.code.as_str(), "N0038");
            format!(
                "{}:{}:{} {}",
                d.file.file_name().unwrap().to_string_lossy(),
                d.span.line,
                d.span.col,
                d.message
            )
        })
        .collect();
    assert_eq!(
        warnings,
        [
            "hi.html:2:17 template `hi` (subject): `contact.first_name` may be missing for some contacts, and the email then fails to render",
            "hi.html:5:7 template `hi` (html): `contact.company.name` may be missing for some contacts, and the email then fails to render",
            "w.yaml:9:24 `contact.first_name` may be missing for some contacts, and this step then fails to render",
        ],
        "{}",
        loaded.render()
    );
    let hints: Vec<&str> = loaded
        .diagnostics
        .iter()
        .map(|d| d.hint.as_deref().unwrap())
        .collect();
    assert!(
        hints[0].contains("{{ contact.first_name | default(\"...\") }}"),
        "{}",
        hints[0]
    );
    assert!(
        hints[1].contains("{{ contact.company | default(\"...\") }}"),
        "{}",
        hints[1]
    );
    assert!(
        hints[2].contains("${has(contact.first_name) ? contact.first_name : \"...\"}"),
        "{}",
        hints[2]
    );
    // `nurture validate` shows them and still succeeds.
    let out = nurture(&["validate", dir.to_str().unwrap()]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("warning[N0038]"), "{stderr}");
    assert!(stderr.contains("w.yaml:9:24"), "{stderr}");
    assert!(stderr.contains("3 warnings"), "{stderr}");
    let out = nurture(&["validate", dir.to_str().unwrap(), "--format", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["diagnostics"][0]["severity"], "warning");
}

#[test]
fn example_project_validates_without_warnings() {
    let loaded = nurture_core::project::load(&repo().join("workflows"));
    assert!(loaded.diagnostics.is_empty(), "{}", loaded.render());
    let out = nurture(&["validate", "workflows/"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

/// The demo-request example for a contact created by an event (only an email): the
/// ticket, the SMS and the sequence go on (the step failed on `No such key: first_name`).
#[test]
fn demo_request_runs_for_a_contact_created_by_an_event() {
    let loaded = nurture_core::project::load(&repo().join("workflows"));
    let project = Arc::new(loaded.project.unwrap());
    let events = vec![
        nurture_engine::input::parse_event(
            1,
            &json!({"type": "demo.requested", "email": "new@example.com", "at": "2026-03-02T09:00:00Z"}),
        )
        .unwrap(),
    ];
    let mut effects: Vec<Value> = Vec::new();
    let summary = rt()
        .block_on(nurture_engine::simulate::run(
            project,
            &[],
            events,
            None,
            None,
            |e| {
                effects
                    .push(serde_json::from_str(&nurture_engine::simulate::effect_line(e)).unwrap())
            },
        ))
        .unwrap();
    assert!(summary.rejected_events.is_empty());
    let demo: Vec<&Value> = effects
        .iter()
        .filter(|e| e["workflow"] == "demo-request")
        .collect();
    let kinds: Vec<String> = demo
        .iter()
        .map(|e| {
            format!(
                "{}/{}",
                e["step"].as_str().unwrap_or("-"),
                e["effect"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        kinds.contains(&"book-meeting/email".to_string())
            && kinds.contains(&"crm-sync/webhook".to_string()),
        "{kinds:#?}"
    );
    let ticket = demo
        .iter()
        .find(|e| e["plugin"] == "ticketing/create-task")
        .expect("the ticket");
    assert_eq!(
        ticket["with"]["title"],
        "Prepare a demo for new@example.com (new@example.com)"
    );
    let sms = demo.iter().find(|e| e["plugin"] == "sms/send");
    // Without a booking there is no SMS step on the path; the reminder email instead.
    assert!(sms.is_none() || sms.unwrap()["with"]["to"] == "", "{sms:?}");
    assert!(!demo.iter().any(|e| e["reason"]
        .as_str()
        .is_some_and(|r| r.contains("No such key"))));
    let exit = demo.iter().find(|e| e["effect"] == "exit").unwrap();
    assert_eq!(exit["reason"], "end", "{demo:#?}");
}

// ---------------------------------------------------------------------------------------
// Item 11: events resent without an id.

/// A small project: page visits score 3.
fn scoring_project(tmp: &Path) -> PathBuf {
    project_with(
        tmp,
        &[
            (
                "workflows/w.yaml",
                "workflow: w\ntrigger: { event: form.submitted }\nsteps:\n  - id: t\n    tag: [x]\n",
            ),
            ("scoring.yaml", "rules:\n  - { event: page.visited, points: 3 }\n"),
        ],
    )
}

/// The API of `project` over `store_url`: (base URL, engine).
async fn api(project: &Path, store_url: &str) -> (String, Arc<nurture_engine::Engine>) {
    let loaded = nurture_core::project::load(project);
    assert_eq!(loaded.errors(), 0, "{}", loaded.render());
    let project = Arc::new(loaded.project.unwrap());
    let store = nurture_server::open_store(store_url).await.unwrap();
    let engine = Arc::new(nurture_engine::Engine::new(project, store));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = nurture_server::router(nurture_server::AppState::new(
        engine.clone(),
        Arc::new("k".into()),
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(nurture_channels::email::Signer::new(b"test-tracking-key")),
    ));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, engine)
}

/// SQLite in `tmp`, and a fresh Postgres database when the suite has one.
fn store_urls(tmp: &Path) -> Vec<String> {
    let mut urls = vec![format!("sqlite://{}", tmp.join("n.db").display())];
    urls.extend(crate::util::fresh_postgres());
    urls
}

async fn post(http: &reqwest::Client, url: String, body: Value) -> Value {
    let r = http
        .post(url)
        .bearer_auth("k")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    r.json().await.unwrap()
}

#[test]
fn an_id_less_event_posted_twice_is_stored_and_scored_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = scoring_project(tmp.path());
    for url in store_urls(tmp.path()) {
        rt().block_on(async {
            let (base, engine) = api(&dir, &url).await;
            let http = reqwest::Client::new();
            let created = post(
                &http,
                format!("{base}/v1/contacts"),
                json!({"id": "c1", "email": "c1@example.com"}),
            )
            .await;
            assert_eq!(created["created"], 1, "{url}");
            // The same visit twice (a client's retry), the second with its data's keys
            // in another order: one event.
            let first = post(
                &http,
                format!("{base}/v1/events"),
                json!({"type": "page.visited", "contact": "c1", "data": {"url": "/blog", "ref": "mail"}}),
            )
            .await;
            assert_eq!(first["accepted"], 1, "{url}: {first}");
            let again = post(
                &http,
                format!("{base}/v1/events"),
                json!({"type": "page.visited", "contact": "c1", "data": {"ref": "mail", "url": "/blog"}}),
            )
            .await;
            assert_eq!(again["duplicates"], 1, "{url}: {again}");
            assert_eq!(again["results"][0]["id"], first["results"][0]["id"]);
            // Another page is another event.
            let other = post(
                &http,
                format!("{base}/v1/events"),
                json!({"type": "page.visited", "contact": "c1", "data": {"url": "/about"}}),
            )
            .await;
            assert_eq!(other["accepted"], 1, "{url}: {other}");
            engine.tick(chrono::Utc::now()).await.unwrap();
            let visits = engine
                .store
                .contact_events("c1", chrono::Utc::now() - chrono::Duration::days(1))
                .await
                .unwrap()
                .into_iter()
                .filter(|e| e.kind == "page.visited")
                .count();
            assert_eq!(visits, 2, "{url}");
            let c = engine.store.contact("c1").await.unwrap().unwrap();
            assert_eq!(c.score, 6, "{url}: scored once per distinct visit");
        });
    }
}

#[test]
fn a_bounce_without_a_provider_id_posted_twice_is_recorded_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = scoring_project(tmp.path());
    for url in store_urls(tmp.path()) {
        rt().block_on(async {
            let (base, engine) = api(&dir, &url).await;
            let http = reqwest::Client::new();
            post(
                &http,
                format!("{base}/v1/contacts"),
                json!({"id": "b1", "email": "b1@example.com"}),
            )
            .await;
            let bounce = json!([{"email": "B1@example.com", "type": "bounce", "permanent": true, "reason": "550 no such user"}]);
            for _ in 0..2 {
                let r = post(&http, format!("{base}/v1/bounces"), bounce.clone()).await;
                assert_eq!(r["results"][0]["status"], "accepted", "{url}: {r}");
            }
            // A provider id makes its own event.
            let with_id = json!([{"email": "b1@example.com", "type": "bounce", "permanent": true, "reason": "550 no such user", "id": "prov-1"}]);
            post(&http, format!("{base}/v1/bounces"), with_id.clone()).await;
            post(&http, format!("{base}/v1/bounces"), with_id).await;
            let bounces = engine
                .store
                .contact_events("b1", chrono::Utc::now() - chrono::Duration::days(1))
                .await
                .unwrap()
                .into_iter()
                .filter(|e| e.kind == "email.bounced")
                .count();
            assert_eq!(bounces, 2, "{url}: one without id, one with");
        });
    }
}

// ---------------------------------------------------------------------------------------
// Item 12: creation in simulations.

/// A project whose workflow greets every new contact.
fn welcome_project(tmp: &Path) -> Arc<nurture_core::project::Project> {
    let dir = project_with(
        tmp,
        &[(
            "workflows/welcome.yaml",
            "workflow: welcome\ntrigger: { event: contact.created }\nsteps:\n  - id: hi\n    tag: [welcomed]\n",
        )],
    );
    let loaded = nurture_core::project::load(&dir);
    assert_eq!(loaded.errors(), 0, "{}", loaded.render());
    Arc::new(loaded.project.unwrap())
}

/// Simulates: (the `enter` effects as `AT CONTACT enter`, summary).
fn sim(
    project: Arc<nurture_core::project::Project>,
    contacts: &[Value],
    events: &[Value],
) -> (Vec<String>, nurture_engine::simulate::Summary) {
    let (effects, summary) =
        crate::simulate::simulate_with_summary(project, contacts, events, None);
    let enters = effects
        .iter()
        .filter(|v| v["effect"] == "enter")
        .map(|v| {
            format!(
                "{} {} enter",
                v["at"].as_str().unwrap(),
                v["contact"].as_str().unwrap()
            )
        })
        .collect();
    (enters, summary)
}

#[test]
fn a_contact_is_created_at_its_created_at() {
    let tmp = tempfile::tempdir().unwrap();
    let (enters, summary) = sim(
        welcome_project(tmp.path()),
        &[
            json!({"id": "old", "email": "old@example.com"}),
            json!({"id": "new", "email": "new@example.com", "created_at": "2026-03-05T10:00:00+02:00"}),
        ],
        &[json!({"type": "form.submitted", "contact": "old", "at": "2026-03-02T09:00:00Z"})],
    );
    assert_eq!(
        enters,
        [
            "2026-03-02T09:00:00Z old enter",
            "2026-03-05T08:00:00Z new enter"
        ]
    );
    assert!(summary.rejected_contacts.is_empty());
    assert_eq!(summary.end, Some(time("2026-03-05T08:00:00Z")));
    // A `created_at` before every event starts the simulation.
    let (enters, summary) = sim(
        welcome_project(tmp.path()),
        &[json!({"id": "early", "email": "e@example.com", "created_at": "2026-01-01T00:00:00Z"})],
        &[json!({"type": "form.submitted", "contact": "early", "at": "2026-03-02T09:00:00Z"})],
    );
    assert_eq!(enters, ["2026-01-01T00:00:00Z early enter"]);
    assert_eq!(summary.start, Some(time("2026-01-01T00:00:00Z")));
}

#[test]
fn an_explicit_contact_created_event_is_the_creation() {
    let tmp = tempfile::tempdir().unwrap();
    let (enters, summary) = sim(
        welcome_project(tmp.path()),
        &[
            json!({"id": "a", "email": "a@example.com"}),
            json!({"id": "b", "email": "b@example.com"}),
        ],
        &[
            json!({"type": "form.submitted", "contact": "a", "at": "2026-03-02T09:00:00Z"}),
            json!({"type": "contact.created", "contact": "b", "at": "2026-03-04T12:00:00Z", "data": {"source": "webinar"}}),
            // By email, for a contact of no file: it creates the contact, once.
            json!({"type": "contact.created", "email": "c@example.com", "at": "2026-03-06T12:00:00Z"}),
        ],
    );
    assert!(
        summary.rejected_events.is_empty(),
        "{:?}",
        summary.rejected_events
    );
    assert_eq!(
        enters,
        [
            "2026-03-02T09:00:00Z a enter",
            "2026-03-04T12:00:00Z b enter",
            &format!(
                "2026-03-06T12:00:00Z {} enter",
                nurture_engine::input::id_for_email("c@example.com")
            ),
        ]
    );
}

#[test]
fn a_second_creation_and_events_before_the_creation_are_rejected_with_reasons() {
    let tmp = tempfile::tempdir().unwrap();
    let (enters, summary) = sim(
        welcome_project(tmp.path()),
        &[json!({"id": "b", "email": "b@example.com", "created_at": "2026-03-04T12:00:00Z"})],
        &[
            json!({"type": "form.submitted", "contact": "b", "at": "2026-03-02T09:00:00Z"}),
            json!({"type": "contact.created", "contact": "b", "at": "2026-03-05T12:00:00Z"}),
        ],
    );
    assert_eq!(enters, ["2026-03-04T12:00:00Z b enter"]);
    let reasons: Vec<(usize, String)> = summary.rejected_events.clone();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons.iter().any(|(i, r)| *i == 2
            && r.contains("already created by `created_at` on line 1 of the contacts")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|(i, r)| *i == 1
            && r.contains(
                "is created at 2026-03-04T12:00:00Z (line 1 of the contacts), after this event"
            )),
        "{reasons:?}"
    );
}

#[test]
fn a_bad_created_at_is_rejected_with_its_line() {
    let err =
        nurture_engine::input::parse_contact(3, &json!({"id": "x", "created_at": "last week"}))
            .unwrap_err()
            .to_string();
    assert!(
        err.contains("`created_at` \"last week\" is not an RFC 3339 time"),
        "{err}"
    );
    let err = nurture_engine::input::parse_contact(3, &json!({"id": "x", "created_at": 5}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`created_at` must be a string"), "{err}");
    // Through the CLI: the line and the reason; the good rows are simulated.
    let tmp = tempfile::tempdir().unwrap();
    let contacts = tmp.path().join("contacts.csv");
    std::fs::write(
        &contacts,
        "id,email,created_at\nok,ok@example.com,2026-03-01T09:00:00Z\nbad,bad@example.com,2026-13-01\n",
    )
    .unwrap();
    let out = nurture(&[
        "simulate",
        "workflows",
        "--contacts",
        contacts.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("contacts.csv:3: `created_at` \"2026-13-01\" is not an RFC 3339 time"),
        "{stderr}"
    );
    assert!(
        stderr.contains("simulated 1 contacts and 0 events from 2026-03-01T09:00:00Z"),
        "{stderr}"
    );
}
