//! Issue 23, item 4: website tracking. The script `/t/nurture.js` in a real headless
//! Chromium on a test site of another origin (consent first, then page visits of an
//! anonymous visitor), the visitor identified by a Segment `identify` (its visits, points
//! and segments move to the contact, journaled, once), and the defences of the public
//! `POST /t/p`. Real `nurture run` processes on SQLite and Postgres.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::{free_port, fresh_postgres, rt};
use crate::webdriver::{self, Browser};

const KEY: &str = "test-key-0123456789abcdef0123456789";

/// A project: the example's two `page.visited` scoring rules (+3 each, +20 for
/// `/pricing`), a segment on the score, and `site` allowed to record visits.
fn project(dir: &Path, site: &str) {
    std::fs::create_dir_all(dir.join("workflows")).unwrap();
    std::fs::write(
        dir.join("nurture.toml"),
        format!("[sender]\nfrom = \"T <t@example.test>\"\n\n[tracking]\nallowed_origins = [\"{site}\"]\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("scoring.yaml"),
        "rules:\n  - { event: page.visited, points: 3 }\n  \
         - { event: page.visited, if: 'event.data.url.startsWith(\"/pricing\")', points: 20 }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("segments.yaml"),
        "- id: interested\n  name: Score 20 or more\n  if: contact.score >= 20\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("workflows/hello.yaml"),
        "workflow: hello\ntrigger: { event: signup.done }\nsteps:\n  - id: tag-it\n    tag: [seen]\n",
    )
    .unwrap();
}

/// A `nurture run` (scheduler and API), killed when dropped.
struct Run {
    child: Child,
    base: String,
    log: std::path::PathBuf,
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Run {
    fn start(dir: &Path, store: Option<&str>, port: u16) -> Run {
        let log = dir.join("run.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nurture"));
        cmd.args(["run", dir.to_str().unwrap(), "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["--poll-ms", "100"]);
        if let Some(s) = store {
            cmd.args(["--store", s]);
        }
        let child = cmd
            .env("NURTURE_API_KEY", KEY)
            .env("RUST_LOG", "info,sqlx=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let run = Run {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
            http: reqwest::Client::new(),
            rt: rt(),
        };
        run.wait_for("nurture run to start", || run.get("/healthz").0 == 200);
        run
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to 30 s for `ok`.
    fn wait_for(&self, what: &str, mut ok: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ok() {
            assert!(Instant::now() < deadline, "{what}: {}", self.log_text());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn send(&self, r: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, String) {
        self.rt.block_on(async {
            let Ok(r) = r.send().await else {
                return (0, Default::default(), String::new());
            };
            let (status, headers) = (r.status().as_u16(), r.headers().clone());
            (status, headers, r.text().await.unwrap())
        })
    }

    /// An API GET (with the key): status and JSON.
    fn get(&self, path: &str) -> (u16, Value) {
        let (st, _, body) = self.send(
            self.http
                .get(format!("{}{path}", self.base))
                .bearer_auth(KEY),
        );
        (st, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// An API POST (with the key): status and JSON.
    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (st, _, text) = self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .bearer_auth(KEY)
                .json(body),
        );
        (st, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// `POST /t/p` as a browser would send it (no key), from `origin` if any.
    fn visit(&self, origin: Option<&str>, body: &str) -> (u16, reqwest::header::HeaderMap) {
        let mut r = self
            .http
            .post(format!("{}/t/p", self.base))
            .header("content-type", "text/plain;charset=UTF-8")
            .body(body.to_string());
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        let (st, h, _) = self.send(r);
        (st, h)
    }

    fn contact(&self, id: &str) -> (u16, Value) {
        self.get(&format!("/v1/contacts/{id}"))
    }

    /// The `data.url` of the contact's `page.visited` events.
    fn visited(&self, id: &str) -> Vec<String> {
        let (_, v) = self.contact(id);
        v["recent_events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["type"] == "page.visited")
            .map(|e| e["data"]["url"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    fn score(&self, id: &str) -> Option<i64> {
        self.contact(id).1["contact"]["score"].as_i64()
    }

    /// The ids of the stored contacts.
    fn contact_ids(&self) -> Vec<String> {
        let (_, v) = self.get("/v1/contacts?limit=100");
        v["contacts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["id"].as_str().map(str::to_string))
            .collect()
    }

    fn identify(&self, user: &str, anonymous: &str) -> Value {
        let (st, v) = self.post(
            "/v1/segment/identify",
            &json!({"userId": user, "anonymousId": anonymous, "traits": {"email": format!("{user}@example.com")}}),
        );
        assert_eq!(st, 200, "{v}");
        v["results"][0].clone()
    }
}

/// A test web site on its own port (another origin than nurture's): every path is a page
/// titled by its path, with the tracking script of `nurture` and a form posting to its
/// `/f/demo`.
fn site(nurture: &str) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let nurture = nurture.to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                    break;
                }
            }
            let page = format!(
                "<!doctype html><html><head><title>Page {path}</title>\
                 <script src=\"{nurture}/t/nurture.js\"></script></head><body>\
                 <form id=\"demo\" action=\"{nurture}/f/demo\" method=\"post\"><input name=\"email\"></form>\
                 </body></html>"
            );
            let _ = stream.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                    page.len()
                )
                .as_bytes(),
            );
        }
    });
    format!("http://127.0.0.1:{port}")
}

#[test]
fn a_visitor_tracked_after_consent_is_merged_into_the_contact_in_a_real_browser() {
    if !webdriver::available() {
        assert!(
            std::env::var_os("NURTURE_REQUIRE_BROWSER").is_none(),
            "Chromium and ChromeDriver are required (scripts/test installs them)"
        );
        eprintln!("skipped: no /usr/bin/chromium or /usr/bin/chromedriver");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("project");
    // The site's address goes into the project before nurture starts: the site serves
    // on a port reserved now, and learns nurture's address when it starts.
    let nurture_port = free_port();
    let site = site(&format!("http://127.0.0.1:{nurture_port}"));
    project(&dir, &site);
    let run = Run::start(&dir, None, nurture_port);
    let b = Browser::start(1024, 768);

    // Before consent: the script is there, and records nothing, sets no cookie.
    b.goto(&format!("{site}/"));
    let loaded = b.js("return typeof window.nurture;", json!([]));
    assert_eq!(loaded, "object", "the script did not load");
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        !b.cookies().iter().any(|(n, _)| n == "nurture_aid"),
        "{:?}",
        b.cookies()
    );
    assert!(
        !run.contact_ids().iter().any(|c| c.starts_with("anon:")),
        "{:?}",
        run.contact_ids()
    );
    let none = b.js(
        "return document.querySelector('input[name=nurture_anonymous_id]') === null;",
        json!([]),
    );
    assert_eq!(none, true);

    // Consent: the cookie holds a fresh id, and this page is recorded for it.
    let id = b.js("nurture.consent(); return nurture.id();", json!([]));
    let id = id.as_str().expect("an id").to_string();
    assert!(
        id.len() == 32 && id.bytes().all(|c| c.is_ascii_hexdigit()),
        "{id}"
    );
    let cookie = b.cookies();
    assert!(
        cookie.iter().any(|(n, v)| n == "nurture_aid" && *v == id),
        "{cookie:?}"
    );
    let anon = format!("anon:{id}");
    run.wait_for("the first visit", || run.visited(&anon) == ["/"]);

    // The next page is recorded at load; the form to nurture's /f/ carries the id.
    b.goto(&format!("{site}/pricing?plan=pro"));
    run.wait_for("the pricing visit", || run.visited(&anon).len() == 2);
    assert_eq!(run.visited(&anon), ["/", "/pricing"]);
    let field = b.js(
        "return document.querySelector('#demo input[name=nurture_anonymous_id]').value;",
        json!([]),
    );
    assert_eq!(field, id.as_str());
    // Scored as any contact: 3 + 3 + 20.
    run.wait_for("the visitor's score", || run.score(&anon) == Some(26));

    // Identified: the visits move to the contact, with their points and segment.
    let r = run.identify("pat", &id);
    assert_eq!(r["merged"]["moved"], 2, "{r}");
    assert_eq!(r["merged"]["from"], anon.as_str(), "{r}");
    run.wait_for("the contact's score", || run.score("pat") == Some(26));
    assert_eq!(run.visited("pat"), ["/", "/pricing"]);
    let (_, pat) = run.contact("pat");
    assert!(
        pat["contact"]["segments"]
            .as_array()
            .is_some_and(|s| s.contains(&json!("interested"))),
        "{pat}"
    );
    let merged: Vec<&Value> = pat["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["what"] == "merged")
        .collect();
    assert_eq!(merged.len(), 1, "{}", pat["timeline"]);
    let text = merged[0]["text"].as_str().unwrap();
    assert!(
        text.contains(&anon) && text.contains("2 events") && text.contains("segment.identify"),
        "{text}"
    );
    assert_eq!(run.contact(&anon).0, 404);

    // Identified again: nothing moves twice.
    let r = run.identify("pat", &id);
    assert_eq!(r["merged"]["moved"], 0, "{r}");
    assert_eq!(r["merged"]["before"], true, "{r}");

    // Later visits with the same cookie go to the contact.
    b.goto(&format!("{site}/pricing"));
    run.wait_for("the contact's later visit", || {
        run.visited("pat").len() == 3
    });
    run.wait_for("the later visit's points", || run.score("pat") == Some(49));
    assert_eq!(run.contact(&anon).0, 404);
    let (_, pat) = run.contact("pat");
    let merges = pat["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["what"] == "merged")
        .count();
    assert_eq!(merges, 1);

    // Revoked: the cookie is gone and the next page records nothing.
    b.js("nurture.revoke();", json!([]));
    assert!(!b.cookies().iter().any(|(n, _)| n == "nurture_aid"));
    b.goto(&format!("{site}/after-revoke"));
    std::thread::sleep(Duration::from_millis(800));
    assert!(!run.visited("pat").contains(&"/after-revoke".to_string()));
    assert!(
        !run.contact_ids().iter().any(|c| c.starts_with("anon:")),
        "{:?}",
        run.contact_ids()
    );
}

const SITE: &str = "https://shop.example";

/// A visit body of `aid` for `url`.
fn visit_body(aid: &str, url: &str) -> String {
    json!({"aid": aid, "url": url, "title": "Pricing", "referrer": ""}).to_string()
}

/// The defences of the public `POST /t/p`, and the merge's, on one store.
fn defences_on(store: Option<&str>) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("project");
    project(&dir, SITE);
    let run = Run::start(&dir, store, free_port());
    let (st, v) = run.post(
        "/v1/contacts",
        &json!({"id": "pat", "email": "pat@example.com"}),
    );
    assert!(st < 300, "{st} {v}");
    let aid = "0123456789abcdef0123456789abcdef";
    let anon = format!("anon:{aid}");

    // The script itself: JavaScript, cacheable, no key needed.
    let (st, h, js) = run.send(run.http.get(format!("{}/t/nurture.js", run.base)));
    assert_eq!(st, 200);
    assert!(h["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/javascript"));
    assert!(h["cache-control"].to_str().unwrap().contains("max-age"));
    assert!(js.contains("nurture_aid") && js.contains("getRandomValues"));

    // A visit that names a contact (an identified one) is refused: a page cannot
    // make events (and so campaigns) for someone else's contact.
    let forged = json!({"aid": aid, "url": format!("{SITE}/pricing"), "contact": "pat"});
    assert_eq!(run.visit(Some(SITE), &forged.to_string()).0, 400);
    // Nor is an id that is not the script's: another contact's, a prefixed one, a short
    // one, a long one.
    for bad in [
        "pat",
        "anon:0123456789abcdef",
        "pat@example.com-0123456789",
        "0123",
        &"a".repeat(65),
        "0123456789abcdef/../../x",
    ] {
        let (st, _) = run.visit(Some(SITE), &visit_body(bad, &format!("{SITE}/pricing")));
        assert_eq!(st, 400, "{bad}");
    }
    // Another site's page (the Origin header or the page's URL), or no origin at all:
    // refused, without CORS headers.
    for (origin, url) in [
        (
            Some("https://evil.example"),
            "https://evil.example/pricing".to_string(),
        ),
        (Some("https://evil.example"), format!("{SITE}/pricing")),
        (None, format!("{SITE}/pricing")),
    ] {
        let (st, h) = run.visit(origin, &visit_body(aid, &url));
        assert!(st == 403, "{origin:?} {url}: {st}");
        assert!(h.get("access-control-allow-origin").is_none());
    }
    let (st, _) = run.visit(Some(SITE), &visit_body(aid, "https://evil.example/pricing"));
    assert_eq!(st, 400);
    // A body over 4 KiB: 413 (a long title alone would be a 400).
    let big = json!({"aid": aid, "url": format!("{SITE}/pricing"), "title": "x".repeat(6000)});
    assert_eq!(run.visit(Some(SITE), &big.to_string()).0, 413);
    // A preflight from another origin gets no CORS headers; the site's does.
    let (st, h, _) = run.send(
        run.http
            .request(reqwest::Method::OPTIONS, format!("{}/t/p", run.base))
            .header("origin", "https://evil.example")
            .header("access-control-request-method", "POST"),
    );
    assert_eq!(st, 403);
    assert!(h.get("access-control-allow-origin").is_none());
    // None of that stored anything.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(run.contact_ids(), ["pat"], "{}", run.log_text());
    assert!(run.visited("pat").is_empty());

    // The site's own visit is taken, with its CORS header.
    let (st, h) = run.visit(Some(SITE), &visit_body(aid, &format!("{SITE}/pricing?x=1")));
    assert_eq!(st, 204);
    assert_eq!(h["access-control-allow-origin"], SITE);
    run.wait_for("the visit", || run.score(&anon) == Some(23));

    // Merged into another anonymous contact: refused (the call's contact is stored, the
    // merge is not), nothing moves.
    let r = run.identify_refused(&anon);
    assert!(r.is_some(), "{r:?}");
    assert_eq!(run.visited(&anon), ["/pricing"]);

    // Merged: once.
    let r = run.identify("pat", aid);
    assert_eq!(r["merged"]["moved"], 1, "{r}");
    run.wait_for("the contact's points", || run.score("pat") == Some(23));
    let r = run.identify("pat", aid);
    assert_eq!(r["merged"]["moved"], 0, "{r}");
    let (_, pat) = run.contact("pat");
    let merges: Vec<&str> = pat["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["what"] == "merged")
        .filter_map(|m| m["text"].as_str())
        .collect();
    assert_eq!(merges.len(), 1, "{merges:?}");
    assert!(
        merges[0].contains(&anon) && merges[0].contains("1 events"),
        "{merges:?}"
    );
    // The visit sent again after the merge goes to the contact, and counts again.
    let (st, _) = run.visit(Some(SITE), &visit_body(aid, &format!("{SITE}/about")));
    assert_eq!(st, 204);
    run.wait_for("the later visit", || run.score("pat") == Some(26));
    assert_eq!(run.visited("pat"), ["/pricing", "/about"]);
    assert_eq!(run.contact(&anon).0, 404);
    assert!(!run.contact_ids().contains(&anon));
}

impl Run {
    /// A Segment `identify` whose `userId` is itself anonymous: the merge is refused
    /// (its result says why); returns the reason.
    fn identify_refused(&self, anon: &str) -> Option<String> {
        let aid = anon.trim_start_matches("anon:");
        let (st, v) = self.post(
            "/v1/segment/identify",
            &json!({"userId": "anon:someone-else-0123456789", "anonymousId": aid}),
        );
        assert_eq!(st, 200, "{v}");
        v["results"][0]["merged"]["error"]
            .as_str()
            .map(str::to_string)
    }
}

#[test]
fn the_collect_endpoint_refuses_what_a_page_may_not_send_on_sqlite() {
    defences_on(None);
}

#[test]
fn the_collect_endpoint_refuses_what_a_page_may_not_send_on_postgres() {
    let Some(url) = fresh_postgres() else { return };
    defences_on(Some(&url));
}
