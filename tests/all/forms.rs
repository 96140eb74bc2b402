//! Hosted forms (`POST /f/{form}`) against a real `nurture run` over loopback: the
//! contact and its `form.submitted` event, a workflow it starts, the JSON and redirect
//! answers, the defences (honeypot, per-client rate, body size, unknown form, origin),
//! and double opt-in through a real SMTP server (aiosmtpd): the emailed link confirms,
//! with the client's address journaled; forged, expired and foreign tokens change nothing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};

use crate::email::{decoded, start_smtp};
use crate::util::{free_port, rt};

const TRACKING_KEY: &str = "f0f0f0f0c0ffee5ec7e7a1c0ffee5ec7e7a1c0ffee5ec7e7a1c0ffee5ec7e7a1";
const API_KEY: &str = "forms-api-key-0123456789abcdef-long";

/// A project: a `newsletter` form (first name kept, redirect), a `ebook` form with
/// double opt-in, a workflow started by the newsletter form, `extra` appended to
/// nurture.toml.
fn project(dir: &Path, extra: &str) {
    std::fs::create_dir_all(dir.join("workflows")).unwrap();
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(
        dir.join("nurture.toml"),
        format!(
            "[sender]\nfrom = \"Acme <news@acme.test>\"\n\
             [forms.newsletter]\nfields = [\"first_name\"]\nredirect = \"https://acme.test/thanks\"\n\
             [forms.ebook]\nfields = [\"first_name\"]\ndouble_opt_in = true\nconfirm_template = \"confirm\"\n\
             {extra}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("workflows/welcome.yaml"),
        "workflow: welcome\ntrigger:\n  event: form.submitted\n  if: event.data.form == \"newsletter\"\nsteps:\n  - id: tag-it\n    tag: [subscriber]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("templates/confirm.html"),
        "---\nsubject: Please confirm your subscription\n---\n<p>Hello, please confirm: <a href=\"{{ confirm_url }}\">confirm</a></p>\n",
    )
    .unwrap();
    std::fs::create_dir_all(dir.join(".nurture")).unwrap();
    std::fs::write(dir.join(".nurture/tracking-key"), TRACKING_KEY).unwrap();
}

/// A `nurture run` process, killed when dropped.
struct Proc {
    child: Child,
    api: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path) -> Proc {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_nurture"))
        .args([
            "run",
            dir.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("NURTURE_API_KEY", API_KEY)
        .env_remove("NURTURE_TRACKING_KEY")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nurture");
    let p = Proc {
        child,
        api: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while send(&p, "GET", "/healthz", &[], None).status != 200 {
        assert!(Instant::now() < deadline, "nurture run did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    p
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// One request (no redirects followed); `body` is (content type, bytes).
fn send(
    p: &Proc,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, Vec<u8>)>,
) -> Answer {
    rt().block_on(async {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", p.api)
        };
        let mut req = client.request(method.parse().unwrap(), url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some((ct, b)) = body {
            req = req.header("content-type", ct).body(b);
        }
        match req.send().await {
            Ok(r) => Answer {
                status: r.status().as_u16(),
                headers: r.headers().clone(),
                body: r.text().await.unwrap_or_default(),
            },
            Err(_) => Answer {
                status: 0,
                headers: Default::default(),
                body: String::new(),
            },
        }
    })
}

fn post_form(p: &Proc, form: &str, body: &str) -> Answer {
    send(
        p,
        "POST",
        &format!("/f/{form}"),
        &[],
        Some((
            "application/x-www-form-urlencoded",
            body.as_bytes().to_vec(),
        )),
    )
}

/// The contact (its story) by address, `None` when there is none.
fn contact(p: &Proc, email: &str) -> Option<Value> {
    let r = send(
        p,
        "GET",
        &format!("/v1/contacts/{email}"),
        &[("x-api-key", API_KEY)],
        None,
    );
    match r.status {
        200 => Some(r.json()),
        404 => None,
        s => panic!("GET contact: {s} {}", r.body),
    }
}

/// Waits until `f` holds (at most 20 s).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn events_of(story: &Value, kind: &str) -> Vec<Value> {
    story["recent_events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["type"] == kind || e["kind"] == kind)
        .cloned()
        .collect()
}

#[test]
fn urlencoded_post_redirects_stores_the_contact_and_starts_the_workflow() {
    let tmp = tempfile::tempdir().unwrap();
    project(tmp.path(), "");
    let p = start(tmp.path());
    let r = post_form(
        &p,
        "newsletter",
        "email=Ana%40Example.com&first_name=Ana&plan=gold&nurture_anonymous_id=v-123&website=",
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.headers["location"], "https://acme.test/thanks");
    let story = contact(&p, "ana@example.com").expect("the contact was created");
    let c = &story["contact"];
    assert_eq!(c["email"], "ana@example.com");
    assert_eq!(c["fields"]["first_name"], "Ana");
    assert!(
        c["fields"].get("plan").is_none(),
        "unknown fields are ignored: {c}"
    );
    assert!(c["fields"].get("nurture_anonymous_id").is_none());
    assert_eq!(
        c["consent"], "unknown",
        "a form without double opt-in sets no consent"
    );
    let submitted = events_of(&story, "form.submitted");
    assert_eq!(submitted.len(), 1, "{story}");
    assert_eq!(
        submitted[0]["data"],
        json!({"form": "newsletter", "first_name": "Ana"})
    );
    eventually("the welcome workflow's run", || {
        let story = contact(&p, "ana@example.com").unwrap();
        story["runs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["workflow"] == "welcome")
    });
}

#[test]
fn json_post_gets_a_json_answer_and_bad_addresses_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    project(tmp.path(), "");
    let p = start(tmp.path());
    let body = json!({"email": "bob@example.com", "first_name": "Bob"}).to_string();
    let r = send(
        &p,
        "POST",
        "/f/newsletter",
        &[],
        Some(("application/json", body.into_bytes())),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"], "accepted");
    assert_eq!(r.json()["form"], "newsletter");
    assert!(contact(&p, "bob@example.com").is_some());
    // A browser post that accepts JSON gets JSON too.
    let r = send(
        &p,
        "POST",
        "/f/newsletter",
        &[("accept", "application/json")],
        Some((
            "application/x-www-form-urlencoded",
            b"email=cleo%40example.com".to_vec(),
        )),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "accepted");
    // Not an address: 422, and the value is not echoed.
    let r = post_form(
        &p,
        "newsletter",
        "email=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
    );
    assert_eq!(r.status, 422);
    assert!(!r.body.contains("<script>"), "{}", r.body);
}

#[test]
fn a_filled_honeypot_is_answered_as_accepted_and_stores_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    project(tmp.path(), "");
    let p = start(tmp.path());
    let r = post_form(
        &p,
        "newsletter",
        "email=robot%40example.com&first_name=R&website=http%3A%2F%2Fspam.test",
    );
    assert_eq!(r.status, 303, "answered as a person's post");
    assert_eq!(r.headers["location"], "https://acme.test/thanks");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        contact(&p, "robot@example.com").is_none(),
        "a robot's post creates no contact"
    );
    // The same post without the honeypot is stored.
    let r = post_form(&p, "newsletter", "email=robot%40example.com&first_name=R");
    assert_eq!(r.status, 303);
    assert!(contact(&p, "robot@example.com").is_some());
}

#[test]
fn a_client_over_its_rate_gets_429_with_retry_after() {
    let tmp = tempfile::tempdir().unwrap();
    project(tmp.path(), "[api]\nform_posts_per_minute = 3\n");
    let p = start(tmp.path());
    for i in 0..3 {
        let r = post_form(&p, "newsletter", &format!("email=p{i}%40example.com"));
        assert_eq!(r.status, 303, "post {i}: {}", r.body);
    }
    let r = post_form(&p, "newsletter", "email=p9%40example.com");
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(r.headers["retry-after"], "20");
    assert_eq!(r.headers["content-type"], "application/problem+json");
    assert!(contact(&p, "p9@example.com").is_none(), "nothing stored");
}

#[test]
fn oversized_unknown_and_foreign_origin_posts_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    project(
        tmp.path(),
        "[forms.partner]\nallowed_origins = [\"https://www.acme.test\"]\n",
    );
    let p = start(tmp.path());
    let big = format!(
        "email=big%40example.com&first_name={}",
        "a".repeat(20 * 1024)
    );
    let r = post_form(&p, "newsletter", &big);
    assert_eq!(r.status, 413);
    assert!(contact(&p, "big@example.com").is_none());
    let r = post_form(&p, "nope", "email=x%40example.com");
    assert_eq!(r.status, 404);
    assert_eq!(r.headers["content-type"], "application/problem+json");
    assert!(contact(&p, "x@example.com").is_none());
    // Too many fields.
    let many: String = (0..60).map(|i| format!("f{i}=1&")).collect();
    let r = post_form(&p, "newsletter", &format!("{many}email=m%40example.com"));
    assert_eq!(r.status, 422);
    assert!(contact(&p, "m@example.com").is_none());
    // `allowed_origins`: another site's post (or none) is refused.
    let body = b"email=o%40example.com".to_vec();
    let ct = "application/x-www-form-urlencoded";
    let evil = [("origin", "https://evil.test")];
    let r = send(&p, "POST", "/f/partner", &evil, Some((ct, body.clone())));
    assert_eq!(r.status, 403);
    let r = send(&p, "POST", "/f/partner", &[], Some((ct, body.clone())));
    assert_eq!(r.status, 403);
    assert!(contact(&p, "o@example.com").is_none());
    let ours = [("origin", "https://www.acme.test")];
    let r = send(&p, "POST", "/f/partner", &ours, Some((ct, body)));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(contact(&p, "o@example.com").is_some());
}

/// A confirmation token signed with `key`.
fn token(key: &str, claims: &Value) -> String {
    let body = claims.to_string();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(&body),
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

fn consent(p: &Proc, email: &str) -> Value {
    contact(p, email).unwrap()["contact"]["consent"].clone()
}

#[test]
fn double_opt_in_confirms_by_the_emailed_link_with_the_address_journaled() {
    let tmp = tempfile::tempdir().unwrap();
    let smtp = start_smtp(&tmp.path().join("smtp"));
    let dir: PathBuf = tmp.path().join("project");
    project(
        &dir,
        &format!(
            "[smtp]\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n",
            smtp.port
        ),
    );
    let p = start(&dir);
    let r = post_form(&p, "ebook", "email=dora%40example.com&first_name=Dora");
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("confirm"), "{}", r.body);
    assert_eq!(
        consent(&p, "dora@example.com"),
        "unknown",
        "not before the link"
    );
    eventually("the confirmation email", || !smtp.received().is_empty());
    let (raw, envelope) = smtp.received().remove(0);
    assert_eq!(envelope["to"], json!(["dora@example.com"]));
    let text = decoded(&raw);
    let start_at = text
        .find(&format!("{}/f/ebook/confirm/", p.api))
        .expect(&text);
    let link: String = text[start_at..]
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '"' && *c != '<' && *c != ')')
        .collect();
    // The same post again the same day sends no second email.
    let r = post_form(&p, "ebook", "email=dora%40example.com&first_name=Dora");
    assert_eq!(r.status, 200);
    // Following the link shows a button and changes nothing (mail scanners fetch links).
    let r = send(&p, "GET", &link, &[], None);
    assert_eq!(r.status, 200);
    assert!(r.body.contains("<form method=\"post\">"), "{}", r.body);
    assert_eq!(consent(&p, "dora@example.com"), "unknown");
    // Forged, expired and other forms' tokens are refused and change nothing.
    let exp = chrono::Utc::now().timestamp() + 3600;
    let id = contact(&p, "dora@example.com").unwrap()["contact"]["id"].clone();
    let claims = json!({"c": id, "a": "dora@example.com", "f": "ebook", "e": exp, "p": "confirm"});
    let forged = token("not-the-project-key-0123456789abcdef", &claims);
    let r = send(&p, "POST", &format!("/f/ebook/confirm/{forged}"), &[], None);
    assert_eq!(r.status, 404);
    let mut tampered = link.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(send(&p, "POST", &tampered, &[], None).status, 404);
    let mut old = claims.clone();
    old["e"] = json!(chrono::Utc::now().timestamp() - 60);
    let expired = token(TRACKING_KEY, &old);
    let r = send(
        &p,
        "POST",
        &format!("/f/ebook/confirm/{expired}"),
        &[],
        None,
    );
    assert_eq!(r.status, 410);
    let genuine_elsewhere = token(TRACKING_KEY, &claims);
    let r = send(
        &p,
        "POST",
        &format!("/f/newsletter/confirm/{genuine_elsewhere}"),
        &[],
        None,
    );
    assert_eq!(r.status, 404, "a token is for its own form");
    let mut unsub = claims.clone();
    unsub["p"] = json!("unsub");
    let wrong_purpose = token(TRACKING_KEY, &unsub);
    let r = send(
        &p,
        "POST",
        &format!("/f/ebook/confirm/{wrong_purpose}"),
        &[],
        None,
    );
    assert_eq!(r.status, 404);
    assert_eq!(consent(&p, "dora@example.com"), "unknown");
    // The genuine link confirms, with the time, the address and the form as the proof.
    let r = send(&p, "POST", &link, &[], None);
    assert_eq!(r.status, 200, "{}", r.body);
    let story = contact(&p, "dora@example.com").unwrap();
    assert_eq!(story["contact"]["consent"], "opted_in");
    let history = story["consent_history"].as_array().unwrap();
    let last = history.last().expect("a consent change");
    assert_eq!(last["to"], "opted_in");
    assert_eq!(
        last["cause"], "form ebook confirmed from 127.0.0.1",
        "{story}"
    );
    assert_eq!(events_of(&story, "form.confirmed").len(), 1, "{story}");
    assert_eq!(smtp.received().len(), 1, "one confirmation email");
}

#[test]
fn forms_settings_are_checked_with_their_place() {
    let tmp = tempfile::tempdir().unwrap();
    project(
        tmp.path(),
        "[forms.bad]\nfields = [\"consent\"]\nredirect = \"javascript:alert(1)\"\ndouble_opt_in = true\n",
    );
    let loaded = nurture_core::project::load(tmp.path());
    let text = crate::util::render_relative(&loaded);
    assert!(loaded.errors() >= 3, "{text}");
    assert!(text.contains("nurture.toml:"), "{text}");
    assert!(text.contains("field `consent`"), "{text}");
    assert!(text.contains("redirect `javascript:alert(1)`"), "{text}");
    assert!(
        text.contains("double_opt_in needs `confirm_template`"),
        "{text}"
    );
    // An allowed origin that no browser sends (a path, a user, no scheme, a bad port)
    // would refuse every post or visit: an error at its place, for forms and tracking.
    let tmp = tempfile::tempdir().unwrap();
    project(
        tmp.path(),
        "[forms.site]\nallowed_origins = [\"https://www.acme.test/contact\", \"https://ok.test:8443\", \"acme.test\", \"https://x.test/page\"]\n\n[tracking]\nallowed_origins = [\"https://x.test/page\", \"https://ok.test/\", \"http://[::1]:99999\"]\n",
    );
    let loaded = nurture_core::project::load(tmp.path());
    let text = crate::util::render_relative(&loaded);
    assert_eq!(loaded.errors(), 5, "{text}");
    for bad in [
        "allowed origin `https://www.acme.test/contact`: an origin has no path",
        "allowed origin `acme.test`: an origin starts with https://",
        "[tracking] allowed origin `https://x.test/page`: an origin has no path",
        "[tracking] allowed origin `http://[::1]:99999`: the port is 1 to 65535",
    ] {
        assert!(text.contains(bad), "{bad} in {text}");
    }
    // Also in [forms.site] on line 11: the tracking one is found in its own section.
    assert!(
        text.contains("nurture.toml:14:20"),
        "the tracking origin's line: {text}"
    );
    assert_eq!(
        nurture_core::project::origin_problem("http://a.test:+80"),
        Some("the port is 1 to 65535, without a leading 0")
    );
    assert_eq!(
        nurture_core::project::origin_problem("https://a.test/@x"),
        Some("an origin has no path, query or space after the host")
    );
    for ok in [
        "https://a.test",
        "http://localhost:8025",
        "https://[::1]:8443",
        "HTTPS://WWW.Acme.test",
        "http://web_app:3000",
        "https://a.test.",
    ] {
        assert_eq!(nurture_core::project::origin_problem(ok), None, "{ok}");
    }
    for bad in [
        "https://user@a.test",
        "https://a.test?x=1",
        "https://",
        "https://a.test:0",
        "https://a.test:443",
        "http://a.test:080",
        "http://a.test:+80",
        "http://a..b",
        "https://a..",
        "https://bücher.example",
        "https://[::1",
        "https://[::1]x",
    ] {
        assert!(
            nurture_core::project::origin_problem(bad).is_some(),
            "{bad}"
        );
    }
    // A misspelled key is refused with its line and column.
    let tmp = tempfile::tempdir().unwrap();
    project(tmp.path(), "[forms.typo]\nredirct = \"/thanks\"\n");
    let loaded = nurture_core::project::load(tmp.path());
    let text = crate::util::render_relative(&loaded);
    assert!(text.contains("unknown field `redirct`"), "{text}");
}

/// A visitor tracked on the site (`POST /t/p` from an allowed origin) who then posts a
/// form with the script's hidden `nurture_anonymous_id` is merged into the contact: the
/// visits become the contact's, the anonymous contact is gone.
#[test]
fn a_tracked_visitor_who_posts_a_form_is_merged_into_the_contact() {
    let tmp = tempfile::tempdir().unwrap();
    let site = "https://shop.example";
    project(
        tmp.path(),
        &format!("[tracking]\nallowed_origins = [\"{site}\"]\n"),
    );
    let p = start(tmp.path());
    let aid = "fedcba9876543210fedcba9876543210";
    let visit = json!({"aid": aid, "url": format!("{site}/pricing"), "title": "Pricing"});
    let r = send(
        &p,
        "POST",
        "/t/p",
        &[("origin", site)],
        Some(("text/plain", visit.to_string().into_bytes())),
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let anon = format!("anon:{aid}");
    eventually("the anonymous visit", || contact(&p, &anon).is_some());

    let body = format!("email=bo%40example.com&first_name=Bo&nurture_anonymous_id={aid}");
    assert_eq!(post_form(&p, "newsletter", &body).status, 303);
    eventually("the visit moved to the contact", || {
        contact(&p, "bo@example.com").is_some_and(|s| {
            events_of(&s, "page.visited")
                .iter()
                .any(|e| e["data"]["url"] == "/pricing")
        })
    });
    assert!(
        contact(&p, &anon).is_none(),
        "the anonymous contact is merged"
    );
}
