//! The email channel against a real SMTP server (aiosmtpd, `tests/support/smtp_server.py`),
//! with DKIM verified by dkimpy, the HTTP API serving tracking and unsubscribe links, and
//! the example project's templates.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use nurture_channels::deliver::Deliverer;
use nurture_channels::email::{EmailChannel, Signer};
use nurture_engine::Engine;
use nurture_store::{RunFilter, Store};
use serde_json::{json, Value};

use crate::util::{example_project as project, free_port, repo};

pub(crate) struct Smtp {
    child: Child,
    pub(crate) port: u16,
    dir: PathBuf,
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn start_smtp(dir: &Path) -> Smtp {
    use std::io::{BufRead, BufReader};
    let port = free_port();
    let mut child = Command::new("python3")
        .arg(repo().join("tests/support/smtp_server.py"))
        .arg(port.to_string())
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 with aiosmtpd (scripts/test installs it)");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "the SMTP server did not start");
    Smtp {
        child,
        port,
        dir: dir.to_path_buf(),
    }
}

impl Smtp {
    /// Received messages, oldest first: (raw message, envelope).
    pub(crate) fn received(&self) -> Vec<(String, Value)> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| {
                let env = std::fs::read_to_string(p.with_extension("json")).unwrap();
                (
                    std::fs::read_to_string(p).unwrap(),
                    serde_json::from_str(&env).unwrap(),
                )
            })
            .collect()
    }
}

/// An RSA DKIM key: (PEM file name in `dir`, the DNS TXT record).
fn dkim_key(dir: &Path) -> (String, String) {
    let pem = dir.join("dkim.pem");
    let ok = Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&pem)
        .arg("2048")
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success());
    let der = Command::new("openssl")
        .args(["rsa", "-pubout", "-outform", "DER", "-in"])
        .arg(&pem)
        .stderr(Stdio::null())
        .output()
        .unwrap();
    use base64::Engine as _;
    let p = base64::engine::general_purpose::STANDARD.encode(der.stdout);
    ("dkim.pem".into(), format!("v=DKIM1; k=rsa; p={p}"))
}

/// Yesterday at noon UTC: daytime in Sofia (no quiet hours), always in the past.
pub(crate) fn noon_yesterday() -> DateTime<Utc> {
    (Utc::now() - chrono::Duration::days(1))
        .date_naive()
        .and_hms_opt(12, 0, 0)
        .unwrap()
        .and_utc()
}

pub(crate) struct World {
    pub(crate) engine: Arc<Engine>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) channel: Arc<EmailChannel>,
    signer: Signer,
    api: String,
    project: PathBuf,
}

pub(crate) async fn world(project_dir: &Path) -> World {
    let loaded = nurture_core::project::load(project_dir);
    assert_eq!(loaded.errors(), 0, "{}", loaded.render());
    let project = Arc::new(loaded.project.unwrap());
    let db = format!("sqlite://{}", project_dir.join("nurture.db").display());
    let store = nurture_server::open_store(&db).await.unwrap();
    let engine = Arc::new(Engine::new(project.clone(), store.clone()));
    let signer = Signer::new(b"test-tracking-key");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    let app = nurture_server::router(nurture_server::AppState::new(
        engine.clone(),
        Arc::new("k".into()),
        Arc::new(tokio::sync::Notify::new()),
        Arc::new(signer.clone()),
    ));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let channel =
        Arc::new(EmailChannel::for_project(&project, store.clone(), signer.clone(), &api).unwrap());
    World {
        engine,
        store,
        channel,
        signer,
        api,
        project: project_dir.to_path_buf(),
    }
}

impl World {
    pub(crate) async fn contacts(&self, rows: &[Value], at: DateTime<Utc>) {
        let rows: Vec<_> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| nurture_engine::input::parse_contact(i, r).unwrap())
            .collect();
        self.engine.import_contacts(&rows, at).await.unwrap();
    }
    pub(crate) async fn events(&self, events: &[Value], at: DateTime<Utc>) {
        let events: Vec<_> = events
            .iter()
            .enumerate()
            .map(|(i, e)| nurture_engine::input::parse_event(i, e).unwrap())
            .collect();
        self.engine.ingest(&events, at).await.unwrap();
        self.engine.tick(at).await.unwrap();
    }
    pub(crate) async fn deliver(&self, at: DateTime<Utc>) -> usize {
        Deliverer::new(self.store.clone())
            .with_email(self.channel.clone())
            .deliver_due(at, 500)
            .await
            .unwrap()
    }
    /// The step the contact's run of `workflow` is at.
    async fn step_of(&self, contact: &str, workflow: &str) -> Option<String> {
        let runs = self
            .store
            .list_runs(&RunFilter {
                contact: Some(contact.into()),
                workflow: Some(workflow.into()),
                limit: 1,
                ..Default::default()
            })
            .await
            .unwrap();
        runs[0].step.clone()
    }

    pub(crate) async fn outbox_of(&self, contact: &str, kind: &str) -> Vec<String> {
        let runs = self
            .store
            .list_runs(&RunFilter {
                contact: Some(contact.into()),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut keys = Vec::new();
        for r in runs {
            for j in self.store.journal(&r.id).await.unwrap() {
                if j.kind == "effect" && j.data["effect"] == kind {
                    if let Some(k) = j.data["key"].as_str() {
                        keys.push(k.to_string());
                    }
                }
            }
        }
        keys
    }
}

pub(crate) fn ebook(contact: &str) -> Value {
    json!({"type": "form.submitted", "contact": contact, "data": {"form": "ebook"}})
}

/// Splits a raw message into its headers (unfolded) and body.
pub(crate) fn headers(raw: &str) -> Vec<(String, String)> {
    let head = raw.split("\r\n\r\n").next().unwrap().replace("\r\n ", " ");
    head.lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub(crate) fn header<'a>(h: &'a [(String, String)], name: &str) -> &'a str {
    h.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {name} header in {h:#?}"))
}

/// Decoded quoted-printable text of the message.
pub(crate) fn decoded(raw: &str) -> String {
    raw.replace("=\r\n", "").replace("=3D", "=")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_delivery_is_well_formed_dkim_signed_and_tracked() {
    let tmp = tempfile::tempdir().unwrap();
    let smtp = start_smtp(&tmp.path().join("smtp"));
    let dir = project(tmp.path(), "");
    let (key_file, record) = dkim_key(&dir);
    let toml = format!(
        "[smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n[email.dkim]\nselector = \"nurture\"\ndomain = \"acme.test\"\nkey_file = \"{key_file}\"\n",
        smtp.port
    );
    let dir = {
        let p = dir.join("nurture.toml");
        let t = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, format!("{t}\n{toml}")).unwrap();
        dir
    };
    let w = world(&dir).await;
    let t0 = noon_yesterday();
    w.contacts(
        &[json!({"id": "ana", "email": "ana@example.com", "first_name": "Ana", "consent": "opted_in"})],
        t0,
    )
    .await;
    w.events(&[ebook("ana")], t0).await;
    assert_eq!(w.deliver(t0).await, 1);
    let got = smtp.received();
    assert_eq!(got.len(), 1);
    let (raw, envelope) = &got[0];
    assert_eq!(envelope["to"], json!(["ana@example.com"]));
    assert_eq!(envelope["from"], "hello@acme.test");

    // DKIM verifies, with the unsubscribe headers among the signed ones.
    let eml = tmp.path().join("got.eml");
    std::fs::write(&eml, raw).unwrap();
    let verify = Command::new("python3")
        .arg(repo().join("tests/support/dkim_verify.py"))
        .arg(&eml)
        .arg(&record)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&verify.stdout).trim(), "pass");
    let h = headers(raw);
    let signed = header(&h, "DKIM-Signature").replace(' ', "");
    assert!(
        signed.contains("list-unsubscribe:list-unsubscribe-post"),
        "{signed}"
    );
    // Tampering breaks it.
    std::fs::write(
        &eml,
        raw.replace("Subject: Your e-book", "Subject: Your free e-book"),
    )
    .unwrap();
    let tampered = Command::new("python3")
        .arg(repo().join("tests/support/dkim_verify.py"))
        .arg(&eml)
        .arg(&record)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&tampered.stdout).trim(), "fail");

    // Headers, redacted: tokens, key-derived ids, date, boundary, signature.
    let key = &w.outbox_of("ana", "email").await[0];
    let token = regex::Regex::new(r"/u/[A-Za-z0-9_\-.]+").unwrap();
    let api = regex::Regex::new(r"http://127\.0\.0\.1:\d+").unwrap();
    let boundary = regex::Regex::new(r#"boundary="[^"]+""#).unwrap();
    let mut shown = Vec::new();
    for (k, v) in &h {
        let v = v.replace(key.as_str(), "[KEY]");
        let v = token.replace_all(&v, "/u/[TOKEN]").to_string();
        let v = api.replace_all(&v, "[API]").to_string();
        let v = match k.as_str() {
            "Date" => "[DATE]".into(),
            "DKIM-Signature" => "[SIGNATURE]".into(),
            "Content-Type" => boundary.replace(&v, "boundary=[B]").to_string(),
            _ => v,
        };
        shown.push(format!("{k}: {v}"));
    }
    insta::assert_snapshot!("ebook_delivery_headers", shown.join("\n"));

    // Both parts, personalised; links tracked in HTML, plain in text.
    let body = decoded(raw);
    assert!(!body.contains("<img"), "the open pixel is no <img>");
    assert!(body.contains("Content-Type: text/plain; charset=utf-8"));
    assert!(body.contains("Content-Type: text/html; charset=utf-8"));
    assert!(body.contains("<p>Hi Ana,</p>"));
    assert!(body.contains(
        "Here is your copy of the playbook (https://acme.test/ebooks/nurture-playbook.pdf)"
    ));
    assert!(
        !body.contains("href=\"https://acme.test/ebooks"),
        "the HTML link is tracked"
    );
    let click = regex::Regex::new(r#"href="(http://127\.0\.0\.1:\d+/t/c/[^"]+)""#).unwrap();
    let click_url = click.captures(&body).expect("a tracked link")[1].to_string();
    let pixel =
        regex::Regex::new(r#"<td background="(http://127\.0\.0\.1:\d+/t/o/[^"]+)""#).unwrap();
    let pixel_url = pixel.captures(&body).expect("an open pixel")[1].to_string();

    // A security scanner's fetch is recorded, flagged, and does not resolve the wait.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = http
        .get(&pixel_url)
        .header("user-agent", "Mozilla/5.0 (compatible; Barracuda Sentinel)")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "image/gif");
    w.engine.tick(Utc::now()).await.unwrap();
    let run = w.step_of("ana", "ebook-nurture").await;
    assert_eq!(
        run.as_deref(),
        Some("wait-open"),
        "a bot open must not move the run"
    );
    // A person opens it: `wait_for: email.opened` resolves for this step.
    http.get(&pixel_url)
        .header("user-agent", "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0)")
        .send()
        .await
        .unwrap();
    w.engine.tick(Utc::now()).await.unwrap();
    let run = w.step_of("ana", "ebook-nurture").await;
    assert_eq!(run.as_deref(), Some("week-later"));
    let opens: Vec<_> = w
        .store
        .contact_events("ana", t0 - chrono::Duration::days(1))
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "email.opened")
        .collect();
    assert_eq!(opens.len(), 2);
    assert_eq!(opens[0].data["bot"], true);
    assert!(opens[0].data["bot_reason"]
        .as_str()
        .unwrap()
        .contains("barracuda"));
    assert_eq!(opens[1].data["workflow"], "ebook-nurture");
    assert_eq!(opens[1].data["step"], "deliver");
    assert_eq!(opens[1].data["key"], key.as_str());
    assert!(opens[1].data.get("bot").is_none());

    // The click redirects to the signed URL and records the event.
    let r = http
        .get(&click_url)
        .header("user-agent", "Mozilla/5.0 (X11; Linux)")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(
        r.headers()["location"],
        "https://acme.test/ebooks/nurture-playbook.pdf"
    );
    // A token signed with another key (an open redirect attempt) is refused.
    let forged = Signer::new(b"not-our-key").sign(&json!({"c": "ana", "u": "https://evil.test"}));
    assert_eq!(
        http.get(format!("{}/t/c/{forged}", w.api))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert!(w.signer.verify(&forged).is_none());
    let clicks: Vec<_> = w
        .store
        .contact_events("ana", t0 - chrono::Duration::days(1))
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "email.clicked")
        .collect();
    assert_eq!(clicks.len(), 1);
    assert_eq!(
        clicks[0].data["url"],
        "https://acme.test/ebooks/nurture-playbook.pdf"
    );
    let _ = w.project;
}

/// Sends the e-book email to a contact with a first name and one without, after `edit`
/// changed the copied example project, and answers the two `.eml` Subject headers.
async fn ebook_subjects(edit: impl FnOnce(&Path)) -> (String, String) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = project(tmp.path(), "");
    edit(&dir);
    let w = world(&dir).await;
    let t0 = noon_yesterday();
    w.contacts(
        &[
            json!({"id": "lee", "email": "lee@example.com", "first_name": "Lee"}),
            json!({"id": "kim", "email": "kim@example.com"}),
        ],
        t0,
    )
    .await;
    w.events(&[ebook("lee"), ebook("kim")], t0).await;
    assert_eq!(w.deliver(t0).await, 2);
    let mut subjects = Vec::new();
    for who in ["lee", "kim"] {
        let key = &w.outbox_of(who, "email").await[0];
        let raw = std::fs::read_to_string(dir.join("outbox").join(format!("{key}.eml"))).unwrap();
        subjects.push(header(&headers(&raw), "Subject").to_string());
    }
    (subjects[0].clone(), subjects[1].clone())
}

/// Replaces `from` by `to` in the project file `rel`.
pub(crate) fn edit_file(dir: &Path, rel: &str, from: &str, to: &str) {
    let path = dir.join(rel);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{rel} has no {from:?}");
    std::fs::write(&path, text.replace(from, to)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personalised_template_subject_is_sent_rendered() {
    let (lee, kim) = ebook_subjects(|dir| {
        edit_file(
            dir,
            "templates/ebook-delivery.html",
            "subject: \"Your e-book: The B2B Nurture Playbook\"",
            "subject: \"hello {{ contact.first_name | default('friend') }}\"",
        )
    })
    .await;
    assert_eq!((lee.as_str(), kim.as_str()), ("hello Lee", "hello friend"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_subject_override_is_sent_rendered() {
    let (lee, kim) = ebook_subjects(|dir| {
        edit_file(
            dir,
            "workflows/ebook-nurture.yaml",
            "    send_email: ebook-delivery\n",
            "    send_email:\n      template: ebook-delivery\n      subject: \"For {{ contact.first_name | default('you') }}: the playbook\"\n",
        )
    })
    .await;
    assert_eq!(
        (lee.as_str(), kim.as_str()),
        ("For Lee: the playbook", "For you: the playbook")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_file_transport_writes_eml_files_into_the_project_outbox() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = project(tmp.path(), "");
    let w = world(&dir).await;
    let t0 = noon_yesterday();
    w.contacts(
        &[json!({"id": "lee", "email": "lee@example.com", "first_name": "Lee"})],
        t0,
    )
    .await;
    w.events(&[ebook("lee")], t0).await;
    assert_eq!(w.deliver(t0).await, 1);
    let key = &w.outbox_of("lee", "email").await[0];
    let raw = std::fs::read_to_string(dir.join("outbox").join(format!("{key}.eml"))).unwrap();
    let h = headers(&raw);
    assert_eq!(header(&h, "Message-ID"), format!("<{key}@acme.test>"));
    assert_eq!(
        header(&h, "Subject"),
        "Your e-book: The B2B Nurture Playbook"
    );
    assert_eq!(
        header(&h, "List-Unsubscribe-Post"),
        "List-Unsubscribe=One-Click"
    );
    assert!(decoded(&raw).contains("<p>Hi Lee,</p>"));
}

/// A reader of the outbox folder (a script, a test waiting for a mail) sees each `.eml`
/// whole or not at all: it is written aside and renamed into place. Written in place, it
/// is there empty or half-written for a moment; a test reading it then found no link in
/// it (CI, 2026-12-07). A file written in place keeps its inode, so a hard link made
/// beforehand sees the writing; a renamed one is a new inode and the link keeps its text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_transport_replaces_the_eml_whole_instead_of_writing_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = project(tmp.path(), "");
    let w = world(&dir).await;
    let t0 = noon_yesterday();
    w.contacts(&[json!({"id": "lee", "email": "lee@example.com"})], t0)
        .await;
    w.events(&[ebook("lee")], t0).await;
    let key = &w.outbox_of("lee", "email").await[0];
    let outbox = dir.join("outbox");
    std::fs::create_dir_all(&outbox).unwrap();
    let spy = tmp.path().join("spy");
    std::fs::write(&spy, "untouched").unwrap();
    std::fs::hard_link(&spy, outbox.join(format!("{key}.eml"))).unwrap();
    assert_eq!(w.deliver(t0).await, 1);
    assert_eq!(std::fs::read_to_string(&spy).unwrap(), "untouched");
    let raw = std::fs::read_to_string(outbox.join(format!("{key}.eml"))).unwrap();
    assert_eq!(
        header(&headers(&raw), "Message-ID"),
        format!("<{key}@acme.test>")
    );
    let names: Vec<_> = std::fs::read_dir(&outbox)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, [format!("{key}.eml")], "no .part file left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_click_unsubscribe_wins_over_a_queued_send() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = project(tmp.path(), "");
    let w = world(&dir).await;
    let t0 = noon_yesterday();
    w.contacts(
        &[
            json!({"id": "ana", "email": "Ana@Example.com", "first_name": "Ana"}),
            json!({"id": "lee", "email": "lee@example.com", "first_name": "Lee"}),
        ],
        t0,
    )
    .await;
    // Both e-book emails are queued (the engine's own checks passed)...
    w.events(&[ebook("ana"), ebook("lee")], t0).await;
    // ...then Ana unsubscribes from an earlier email's link.
    let ana = nurture_engine::eval::contact_view(
        &w.store.contact("ana").await.unwrap().unwrap(),
        &Default::default(),
    );
    let (message, _) = w.channel.preview("ebook-delivery", "ana", &ana).unwrap();
    let link = message
        .headers()
        .get_raw("List-Unsubscribe")
        .unwrap()
        .trim_matches(['<', '>'])
        .to_string();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // GET (a link scanner) changes nothing.
    let page = http.get(&link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page
        .text()
        .await
        .unwrap()
        .contains("<form method=\"post\">"));
    assert_eq!(w.store.suppression("ana@example.com").await.unwrap(), None);
    // RFC 8058 POST: no cookie, no redirect, idempotent.
    for _ in 0..2 {
        let r = http
            .post(&link)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("List-Unsubscribe=One-Click")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "no redirect");
        assert!(r.text().await.unwrap().contains("is unsubscribed"));
    }
    assert_eq!(
        w.store
            .suppression("ANA@example.com")
            .await
            .unwrap()
            .as_deref(),
        Some("unsubscribed")
    );
    let unsubs = w
        .store
        .contact_events("ana", t0 - chrono::Duration::days(1))
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "email.unsubscribed")
        .count();
    assert_eq!(unsubs, 1, "a repeated POST is not a second unsubscribe");

    // The queued batch is claimed: Ana's email is skipped at claim time, Lee's is sent.
    w.deliver(t0).await;
    let ana_key = &w.outbox_of("ana", "email").await[0];
    let lee_key = &w.outbox_of("lee", "email").await[0];
    assert_eq!(
        w.store.outbox_state(ana_key).await.unwrap().as_deref(),
        Some("skipped")
    );
    assert_eq!(
        w.store.outbox_state(lee_key).await.unwrap().as_deref(),
        Some("delivered")
    );
    assert!(!dir.join("outbox").join(format!("{ana_key}.eml")).exists());
    let skipped = w.outbox_of("ana", "email_skipped").await;
    assert_eq!(
        &skipped,
        std::slice::from_ref(ana_key),
        "an email_skipped effect with its reason"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounces_are_classified_and_a_cut_session_is_ambiguous() {
    let tmp = tempfile::tempdir().unwrap();
    let smtp = start_smtp(&tmp.path().join("smtp"));
    let dir = project(
        tmp.path(),
        &format!(
            "[smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n",
            smtp.port
        ),
    );
    let w = world(&dir).await;
    let t0 = noon_yesterday();
    w.contacts(
        &[
            json!({"id": "hard", "email": "x-bounce-hard@example.com"}),
            json!({"id": "soft", "email": "y-bounce-soft@example.com"}),
            json!({"id": "drop", "email": "z-drop@example.com"}),
        ],
        t0,
    )
    .await;
    w.events(&[ebook("hard"), ebook("soft"), ebook("drop")], t0)
        .await;
    w.deliver(t0).await;
    let state = |c: &'static str| {
        let w = &w;
        async move {
            let key = w.outbox_of(c, "email").await[0].clone();
            (
                key.clone(),
                w.store.outbox_state(&key).await.unwrap().unwrap(),
            )
        }
    };
    // 550: permanent, the address is suppressed.
    assert_eq!(state("hard").await.1, "failed");
    assert!(w
        .store
        .suppression("x-bounce-hard@example.com")
        .await
        .unwrap()
        .unwrap()
        .contains("550"));
    // 451: temporary, retried later, never suppressed.
    assert_eq!(state("soft").await.1, "pending");
    assert_eq!(
        w.store
            .suppression("y-bounce-soft@example.com")
            .await
            .unwrap(),
        None
    );
    // Accepted by the server but the reply never came: not resent blindly.
    let (drop_key, drop_state) = state("drop").await;
    assert_eq!(drop_state, "ambiguous");
    assert!(smtp
        .received()
        .iter()
        .any(|(_, e)| e["to"] == json!(["z-drop@example.com"])));
    assert_eq!(
        w.deliver(Utc::now() + chrono::Duration::hours(2)).await,
        1,
        "only the soft bounce is retried"
    );
    assert!(
        w.store.requeue_outbox(&drop_key, Utc::now()).await.unwrap(),
        "an operator can requeue it"
    );
    assert_eq!(
        w.store.outbox_state(&drop_key).await.unwrap().as_deref(),
        Some("pending")
    );
    // With a fresh budget: shown as queued, not as retrying with the old error.
    let queued = nurture_store::OutboxFilter {
        state: Some(nurture_store::OutboxState::Queued),
        limit: 100,
        ..Default::default()
    };
    let listed = w.store.list_outbox(&queued).await.unwrap();
    assert!(listed.iter().any(|e| e.key == drop_key), "{listed:?}");

    // The inbound bounce/complaint webhook.
    let http = reqwest::Client::new();
    let r: Value = http
        .post(format!("{}/v1/bounces", w.api))
        .bearer_auth("k")
        .json(&json!([
            {"email": "lee@example.com", "type": "complaint", "reason": "abuse report"},
            {"email": "mia@example.com", "type": "bounce", "permanent": false},
            {"email": "not-an-address", "type": "bounce"}
        ]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["results"][0]["suppressed"], true);
    assert_eq!(r["results"][1]["suppressed"], false);
    assert_eq!(r["results"][2]["status"], "rejected");
    assert!(w
        .store
        .suppression("lee@example.com")
        .await
        .unwrap()
        .is_some());
    assert_eq!(w.store.suppression("mia@example.com").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_spaces_sends_and_frequency_cap_defers() {
    let tmp = tempfile::tempdir().unwrap();
    let smtp = start_smtp(&tmp.path().join("smtp"));
    let dir = project(
        tmp.path(),
        &format!("[smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n[email]\nrate_per_sec = 5\ncap = {{ max = 1, per = \"7d\" }}\n", smtp.port),
    );
    let w = world(&dir).await;
    let t0 = noon_yesterday();
    let contacts: Vec<Value> = (0..6).map(|i| json!({"id": format!("c{i}"), "email": format!("c{i}@example.com"), "first_name": "C"})).collect();
    w.contacts(&contacts, t0).await;
    w.events(
        &(0..6).map(|i| ebook(&format!("c{i}"))).collect::<Vec<_>>(),
        t0,
    )
    .await;
    w.deliver(t0).await;
    // The rate holds in the store, across workers: 5 in this second, the sixth is
    // deferred to the next one.
    assert_eq!(smtp.received().len(), 5);
    w.deliver(t0 + chrono::Duration::seconds(1)).await;
    let got = smtp.received();
    assert_eq!(got.len(), 6);
    let at: Vec<f64> = got.iter().map(|(_, e)| e["at"].as_f64().unwrap()).collect();
    let span = at.last().unwrap() - at.first().unwrap();
    // 5 per second: 6 sends take at least 5 gaps of 0.2 s.
    assert!(span >= 0.9, "6 sends at 5/s took only {span:.2} s");

    // c0 gets a second email the same day (a demo request): the cap (1 per 7 days)
    // defers it; nothing is dropped and no attempt is used.
    w.events(
        &[json!({"type": "demo.requested", "contact": "c0"})],
        t0 + chrono::Duration::hours(1),
    )
    .await;
    w.deliver(t0 + chrono::Duration::hours(1)).await;
    let keys = w.outbox_of("c0", "email").await;
    assert_eq!(keys.len(), 2);
    let mut states = Vec::new();
    for k in &keys {
        states.push(w.store.outbox_state(k).await.unwrap().unwrap());
    }
    states.sort();
    assert_eq!(states, ["delivered", "pending"]);
    assert_eq!(smtp.received().len(), 6, "deferred, not sent");
    let sent = w
        .store
        .emails_since("c0", t0 - chrono::Duration::days(1))
        .await
        .unwrap();
    assert_eq!(sent.len(), 1);
    // Deferred to when the first email leaves the 7-day window: still held an hour later.
    w.deliver(Utc::now() + chrono::Duration::hours(1)).await;
    assert_eq!(smtp.received().len(), 6);
}

/// The SpamAssassin score of a raw message, with local tests only (`-L`: no DNS, no
/// network lists), and its report.
fn spamassassin_score(eml: &Path) -> (f64, String) {
    let out = Command::new("spamassassin")
        .args(["-L", "-t"])
        .stdin(std::fs::File::open(eml).unwrap())
        .output()
        .expect("spamassassin (Debian package spamassassin; scripts/test installs it)");
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    let score = regex::Regex::new(r"X-Spam-Status: \w+, score=(-?[0-9.]+)")
        .unwrap()
        .captures(&report)
        .unwrap_or_else(|| panic!("no X-Spam-Status in {report}"))[1]
        .parse()
        .unwrap();
    let details = report
        .split("Content analysis details:")
        .nth(1)
        .unwrap_or(&report)
        .to_string();
    (score, details)
}

/// Every example template, built as the channel sends it (tracked links, open pixel,
/// unsubscribe headers, the `https://` link base operators are told to set), scores
/// below 1.0 in SpamAssassin. An `<img>` open pixel alone scored 1.4 to 2.0
/// (`HTML_IMAGE_ONLY_*`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_templates_score_below_one_in_spamassassin() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = project(
        tmp.path(),
        "[email]\nbase_url = \"https://mail.acme.test/\"\n",
    );
    let w = world(&dir).await;
    let contact = json!({
        "id": "ana", "email": "ana@example.com", "first_name": "Ana", "last_name": "Petrova",
        "title": "Marketing manager", "company": {"name": "Acme", "employees": 40},
        "owner": "olena.s@acme.test", "owner_name": "Olena", "score": 120, "grade": "hot",
    });
    let names: Vec<String> = nurture_core::project::load(&dir)
        .project
        .unwrap()
        .templates
        .into_keys()
        .filter(|n| !n.starts_with('_'))
        .collect();
    assert!(names.len() >= 10, "{names:?}");
    let mut checks = Vec::new();
    for name in &names {
        let (message, _) = w
            .channel
            .preview(name, "ana", &contact)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let raw = String::from_utf8(message.formatted()).unwrap();
        assert!(raw.contains("/t/o/"), "{name} has an open pixel");
        let eml = tmp.path().join(format!("{name}.eml"));
        std::fs::write(&eml, raw).unwrap();
        checks.push((
            name.clone(),
            std::thread::spawn(move || spamassassin_score(&eml)),
        ));
    }
    let mut failed = Vec::new();
    for (name, check) in checks {
        let (score, details) = check.join().unwrap();
        if score >= 1.0 {
            failed.push(format!("{name}: {score}\n{details}"));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
