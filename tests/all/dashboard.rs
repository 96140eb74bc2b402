//! The dashboard (`/ui`) in a real browser: Debian's Chromium driven over WebDriver
//! ([`crate::webdriver`]) against a real `nurture run` of the example project on SQLite,
//! fed the sample contacts and events (and a contact whose name is markup). Screenshots
//! of every page go to `$CARGO_TARGET_DIR/ui-screenshots/` for review.
//!
//! Also, over plain HTTP: a forged session, a missing or wrong CSRF token, a login form
//! posted from elsewhere, and the security headers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::webdriver::{self, Browser};

const KEY: &str = "test-key-0123456789abcdef0123456789";

/// A `nurture run` of the example project with the sample data in it.
struct Served {
    child: Child,
    base: String,
    _tmp: tempfile::TempDir,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nurture_in(dir: &Path, args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_nurture"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nurture {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts `nurture run` and loads the sample contacts and events (and a contact named
/// `<img src=x onerror=...>`), then waits for their runs.
fn serve() -> Served {
    crate::util::built_plugins();
    let tmp = tempfile::tempdir().unwrap();
    let dir = crate::util::example_project(tmp.path(), "");
    // Without quiet hours the figures do not depend on the time of day of the test.
    let wf = dir.join("workflows/ebook-nurture.yaml");
    let text = std::fs::read_to_string(&wf).unwrap();
    std::fs::write(
        &wf,
        text.replace("quiet_hours: { from: \"21:00\", to: \"08:00\" }\n", ""),
    )
    .unwrap();
    // A step may be called `trigger`: the graph must not mistake it for the trigger.
    std::fs::write(
        dir.join("workflows/step-named-trigger.yaml"),
        "workflow: step-named-trigger\nversion: 1\ntrigger:\n  event: probe.happened\n\
         steps:\n  - id: trigger\n    tag: [probe]\n",
    )
    .unwrap();
    let mut contacts = std::fs::read_to_string(dir.join("sample/contacts.jsonl")).unwrap();
    contacts.push_str(
        "{\"id\": \"mallory\", \"email\": \"mallory@example.com\", \
         \"first_name\": \"<img src=x onerror=alert(1)>\", \"consent\": \"opted_in\"}\n",
    );
    std::fs::write(dir.join("contacts.jsonl"), contacts).unwrap();
    let mut events = std::fs::read_to_string(dir.join("sample/events.jsonl")).unwrap();
    events.push_str(
        "{\"id\": \"m-1\", \"type\": \"form.submitted\", \"contact\": \"mallory\", \
         \"data\": {\"form\": \"ebook\"}}\n",
    );
    std::fs::write(dir.join("events.jsonl"), events).unwrap();
    let port = crate::util::free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_nurture"))
        .args(["run", dir.to_str().unwrap(), "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["--poll-ms", "100"])
        .env("NURTURE_API_KEY", KEY)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let served = Served {
        child,
        base: format!("http://127.0.0.1:{port}"),
        _tmp: tmp,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while http("GET", &served.base, "/healthz", &[], "").0 != 200 {
        assert!(Instant::now() < deadline, "nurture run did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
    nurture_in(
        &dir,
        &["contacts", "import", "contacts.jsonl", "--dir", "."],
    );
    nurture_in(&dir, &["events", "send", "events.jsonl", "--dir", "."]);
    // The sample's events are all in the past: every run moves as far as it can at once.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, _, body) = http(
            "GET",
            &served.base,
            "/v1/reports/workflows/ebook-nurture",
            &[("authorization", &format!("Bearer {KEY}"))],
            "",
        );
        let entered =
            serde_json::from_str::<Value>(&body).map_or(0, |v| v["entered"].as_i64().unwrap_or(0));
        if entered >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sample runs did not start: {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    served
}

/// One HTTP/1.1 request: status, headers (lowercase names) and body.
pub(crate) fn http(
    method: &str,
    base: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    use std::io::{Read, Write};
    let addr = base.trim_start_matches("http://");
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return (0, Vec::new(), String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// Logs in over plain HTTP: the session cookie (`nurture_session=...`).
fn login(base: &str) -> String {
    login_with(base, KEY)
}

/// Logs in over plain HTTP with `key`: the session cookie (`nurture_session=...`).
pub(crate) fn login_with(base: &str, key: &str) -> String {
    let (_, h, page) = http("GET", base, "/ui/login", &[], "");
    let login_cookie = header(&h, "set-cookie")[0]
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let csrf = hidden(&page, "csrf");
    let (status, h, _) = post_login(base, &login_cookie, &csrf, key);
    assert_eq!(status, 303);
    header(&h, "set-cookie")
        .into_iter()
        .find(|c| c.starts_with("nurture_session="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

/// `POST /ui/login` with `cookie`, the form's `csrf` token and `key`.
fn post_login(
    base: &str,
    cookie: &str,
    csrf: &str,
    key: &str,
) -> (u16, Vec<(String, String)>, String) {
    http(
        "POST",
        base,
        "/ui/login",
        &[
            ("cookie", cookie),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        &format!("csrf={csrf}&key={key}"),
    )
}

/// The value of the hidden input `name` in `page`.
fn hidden(page: &str, name: &str) -> String {
    let at = page
        .find(&format!("name=\"{name}\" value=\""))
        .expect("hidden input")
        + name.len()
        + 15;
    page[at..].split('"').next().unwrap().to_string()
}

fn screenshots() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| crate::util::repo().join("target"));
    let dir = target.join("ui-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every landmark and every visible form control labelled, on the page shown.
fn assert_accessible(b: &Browser, page: &str) {
    let v = b.js(
        "const unlabelled = [...document.querySelectorAll('input, select, textarea')]
           .filter(e => e.type !== 'hidden')
           .filter(e => !(e.id && document.querySelector('label[for=\"' + e.id + '\"]')) && !e.getAttribute('aria-label'))
           .map(e => e.outerHTML);
         return {unlabelled, main: !!document.querySelector('main'),
                 header: !!document.querySelector('header'), lang: document.documentElement.lang,
                 h1: document.querySelectorAll('h1').length};",
        Value::Array(vec![]),
    );
    assert_eq!(
        v["unlabelled"],
        Value::Array(vec![]),
        "{page}: unlabelled controls"
    );
    assert_eq!(v["main"], true, "{page}: no <main>");
    assert_eq!(v["header"], true, "{page}: no <header>");
    assert_eq!(v["lang"], "en", "{page}");
    assert_eq!(v["h1"], 1, "{page}: one <h1>");
}

/// No console entry at warning level or above since the last check.
fn assert_quiet_console(b: &Browser, page: &str) {
    let bad: Vec<_> = b
        .console()
        .into_iter()
        .filter(|(level, _)| level == "SEVERE" || level == "WARNING")
        .collect();
    assert!(bad.is_empty(), "{page}: console: {bad:?}");
}

/// Opens `path`, checks it, and saves its screenshot as `name`.png.
fn visit(b: &Browser, base: &str, path: &str, name: &str) {
    b.goto(&format!("{base}{path}"));
    assert_accessible(b, path);
    assert_quiet_console(b, path);
    // The search box starts empty (a page's own `q` once leaked into it).
    let q = b.js(
        "const q = document.querySelector('#q'); return q ? q.value : ''",
        Value::Array(vec![]),
    );
    assert_eq!(q, "", "{path}: the search box holds {q}");
    b.screenshot(&screenshots().join(format!("{name}.png")));
}

#[test]
fn the_dashboard_works_in_a_real_browser() {
    if !webdriver::available() {
        assert!(
            std::env::var_os("NURTURE_REQUIRE_BROWSER").is_none(),
            "Chromium and ChromeDriver are required (scripts/test installs them)"
        );
        eprintln!("skipped: no /usr/bin/chromium or /usr/bin/chromedriver");
        return;
    }
    let s = serve();
    let b = Browser::start(1280, 1000);

    // Not logged in: every page sends the browser to the login form, which remembers it.
    b.goto(&format!("{}/ui/contacts/kim", s.base));
    let url = b.wait_url("/ui/login?next=%2Fui%2Fcontacts%2Fkim");
    assert!(
        url.ends_with("/ui/login?next=%2Fui%2Fcontacts%2Fkim"),
        "{url}"
    );
    b.type_into(&b.find("#key"), KEY);
    b.click(&b.find("form.login button"));
    let url = b.wait_url("/ui/contacts/kim");
    assert!(url.ends_with("/ui/contacts/kim"), "{url}");
    b.click(&b.find("form.logout button"));
    let url = b.wait_url("/ui/login");
    assert!(url.ends_with("/ui/login"), "{url}");
    visit(&b, &s.base, "/ui/login", "login");

    // A wrong key is refused, and says so.
    let key = b.find("#key");
    b.type_into(&key, "not-the-key");
    b.click(&b.find("form.login button"));
    let url = b.wait_url("/ui/login");
    assert!(url.ends_with("/ui/login"), "{url}");
    let problem =
        b.wait_js("const p = document.querySelector('.problem'); return p && p.textContent");
    assert!(
        problem.as_str().unwrap().contains("not the API key"),
        "{problem}"
    );
    assert!(!b.cookies().iter().any(|(n, _)| n == "nurture_session"));
    b.console(); // (the 401 of the refused login is logged by Chromium as a failed load)

    // The right key opens the campaigns page.
    let key = b.find("#key");
    b.type_into(&key, KEY);
    b.click(&b.find("form.login button"));
    let url = b.wait_url("/ui/");
    assert!(url.ends_with("/ui/"), "{url}");
    visit(&b, &s.base, "/ui/", "campaigns");
    let rows = b.js(
        "return [...document.querySelectorAll('tr[data-workflow]')].map(r => r.dataset.workflow)",
        Value::Array(vec![]),
    );
    assert!(rows.as_array().unwrap().len() >= 7, "{rows}");

    campaign_graph_matches_the_report(&b, &s.base);
    run_page_tells_the_story(&b, &s.base);
    contact_page_charts_the_score(&b, &s.base);
    visit(&b, &s.base, "/ui/funnel", "funnel");
    visit(&b, &s.base, "/ui/ops", "ops");
    let queued = b.js(
        "return document.querySelector('[data-queued-events]').dataset.queuedEvents",
        Value::Array(vec![]),
    );
    assert!(queued.as_str().unwrap().parse::<i64>().is_ok(), "{queued}");

    // Search by address lands on the contact.
    let q = b.find("#q");
    b.type_into(&q, "lee@example.com");
    b.click(&b.find("form.search button"));
    let url = b.wait_url("/ui/contacts/lee");
    assert!(url.ends_with("/ui/contacts/lee"), "{url}");

    // Readable on a phone: nothing wider than the screen but the scrolling tables.
    b.resize(390, 844);
    for path in [
        "/ui/",
        "/ui/campaigns/ebook-nurture",
        "/ui/contacts/lee",
        "/ui/ops",
    ] {
        b.goto(&format!("{}{path}", s.base));
        let wide = b.js(
            "return document.documentElement.scrollWidth - window.innerWidth",
            Value::Array(vec![]),
        );
        assert!(
            wide.as_i64().unwrap() <= 0,
            "{path} is {wide} px wider than a phone"
        );
    }
    b.screenshot(&screenshots().join("phone-ops.png"));
    b.resize(1280, 1000);

    // Log out: the session is gone.
    b.goto(&format!("{}/ui/", s.base));
    b.click(&b.find("form.logout button"));
    let url = b.wait_url("/ui/login");
    assert!(url.ends_with("/ui/login"), "{url}");
    b.goto(&format!("{}/ui/ops", s.base));
    let url = b.wait_url("/ui/login?next=%2Fui%2Fops");
    assert!(url.ends_with("/ui/login?next=%2Fui%2Fops"), "{url}");
    assert_quiet_console(&b, "after logout");
}

/// The counts drawn on the campaign graph are the report API's.
fn campaign_graph_matches_the_report(b: &Browser, base: &str) {
    visit(b, base, "/ui/campaigns/ebook-nurture", "campaign");
    let (_, _, body) = http(
        "GET",
        base,
        "/v1/reports/workflows/ebook-nurture",
        &[("authorization", &format!("Bearer {KEY}"))],
        "",
    );
    let report: Value = serde_json::from_str(&body).unwrap();
    let drawn = b.js(
        "return {nodes: [...document.querySelectorAll('svg.graph .node')].map(n => [n.dataset.step, +n.dataset.passed, +n.dataset.waiting]),
                 edges: [...document.querySelectorAll('svg.graph .edge[data-runs]')].map(e => [e.dataset.from, e.dataset.label, e.dataset.to, +e.dataset.runs])}",
        Value::Array(vec![]),
    );
    let nodes = drawn["nodes"].as_array().unwrap();
    let mut checked = 0;
    for step in report["steps"].as_array().unwrap() {
        let id = step["step"].as_str().unwrap();
        let node = nodes
            .iter()
            .find(|n| n[0] == id)
            .unwrap_or_else(|| panic!("no node {id} in {drawn}"));
        assert_eq!(node[1], step["passed"], "passed at {id}");
        assert_eq!(node[2], step["waiting"], "waiting at {id}");
        for e in step["edges"].as_array().unwrap() {
            let to = e["to"].as_str().unwrap_or("end");
            assert!(
                drawn["edges"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|d| d[0] == id && d[1] == e["label"] && d[2] == to && d[3] == e["runs"]),
                "edge {id} -{}-> {to} ({}) not drawn: {drawn}",
                e["label"],
                e["runs"]
            );
            checked += 1;
        }
    }
    let trigger = nodes.iter().find(|n| n[0] == "(trigger)").unwrap();
    assert_eq!(trigger[1], report["entered"]);
    assert!(report["entered"].as_i64().unwrap() >= 2);
    assert!(checked >= 1, "no counted edge to compare: {report}");
}

/// Ana's e-book run: its page shows the explain story.
fn run_page_tells_the_story(b: &Browser, base: &str) {
    b.goto(&format!("{base}/ui/contacts/ana"));
    let href = b.js(
        "return [...document.querySelectorAll('a[href^=\"/ui/runs/\"]')].map(a => a.getAttribute('href'))",
        Value::Array(vec![]),
    );
    let first = href[0]
        .as_str()
        .unwrap_or_else(|| panic!("no run link: {href}"));
    visit(b, base, first, "run");
    let lines = b.js(
        "return [...document.querySelectorAll('li.explain')].map(l => l.textContent)",
        Value::Array(vec![]),
    );
    let lines: Vec<&str> = lines
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(lines.len() >= 3, "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("deliver")), "{lines:?}");
}

/// Lee's score went up with his demo request and download: the chart and the table show
/// it; Mallory's markup name is shown as text, never run.
fn contact_page_charts_the_score(b: &Browser, base: &str) {
    visit(b, base, "/ui/contacts/lee", "contact");
    let v = b.js(
        "return {points: document.querySelectorAll('svg.chart circle').length,
                 rows: document.querySelectorAll('table.score-history tbody tr').length,
                 score: document.querySelector('[data-score]').dataset.score}",
        Value::Array(vec![]),
    );
    assert!(v["points"].as_i64().unwrap() >= 3, "{v}");
    assert!(v["rows"].as_i64().unwrap() >= 2, "{v}");
    assert!(
        v["score"].as_str().unwrap().parse::<i64>().unwrap() >= 70,
        "{v}"
    );

    visit(b, base, "/ui/contacts/mallory", "contact-markup");
    let v = b.js(
        "return {imgs: document.querySelectorAll('main img').length,
                 text: document.querySelector('main').textContent.includes('<img src=x onerror=alert(1)>')}",
        Value::Array(vec![]),
    );
    assert_eq!(v["imgs"], 0, "markup in a contact field became an element");
    assert_eq!(v["text"], true, "{v}");
}

#[test]
fn forged_sessions_and_forms_without_the_csrf_token_are_refused() {
    let s = serve();
    let base = &s.base;
    // No session, a forged one: to the login page; the API key itself is no cookie.
    for cookie in [
        "",
        "nurture_session=00ff",
        &format!("nurture_session={KEY}"),
    ] {
        let (status, h, _) = http("GET", base, "/ui/ops", &[("cookie", cookie)], "");
        assert_eq!(
            (status, header(&h, "location")),
            (303, vec!["/ui/login?next=%2Fui%2Fops"]),
            "{cookie}"
        );
    }
    // htmx's refresh without a session: a redirect of the whole page, not the login form
    // swapped into the graph.
    let (status, h, _) = http(
        "GET",
        base,
        "/ui/campaigns/ebook-nurture/graph",
        &[("hx-request", "true")],
        "",
    );
    assert_eq!(
        (status, header(&h, "hx-redirect")),
        (401, vec!["/ui/login"])
    );
    // Without the key, no route but the API's takes a large body (413 before it is
    // read), and `/ui` errors carry the dashboard's headers too.
    let (status, h, _) = http(
        "POST",
        base,
        "/ui/login",
        &[("content-type", "application/x-www-form-urlencoded")],
        &"x".repeat(20_000),
    );
    assert_eq!(status, 413);
    assert_eq!(header(&h, "x-frame-options"), vec!["DENY"]);
    let (status, h, _) = http("GET", base, "/ui/no-such-page", &[], "");
    assert_eq!(status, 404);
    assert!(header(&h, "content-security-policy")[0].contains("default-src 'none'"));
    let session = login(base);
    let (status, h, page) = http("GET", base, "/ui/ops", &[("cookie", &session)], "");
    assert_eq!(status, 200);
    let csp = header(&h, "content-security-policy").join("");
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(header(&h, "x-frame-options"), vec!["DENY"]);
    assert_eq!(header(&h, "cache-control"), vec!["no-store"]);
    let csrf = hidden(&page, "csrf");
    let form = [
        ("cookie", session.as_str()),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    // Logout and requeue without the token, or with another, change nothing.
    for body in ["", "csrf=", "csrf=00ff", &format!("csrf={}", &csrf[..63])] {
        assert_eq!(
            http("POST", base, "/ui/logout", &form, body).0,
            403,
            "{body}"
        );
        let requeue = format!("{body}&key=nope");
        assert_eq!(
            http("POST", base, "/ui/ops/requeue", &form, &requeue).0,
            403,
            "{body}"
        );
    }
    assert_eq!(
        http("GET", base, "/ui/ops", &[("cookie", &session)], "").0,
        200
    );
    // A link cannot make the page claim a send was requeued.
    let (_, _, page) = http(
        "GET",
        base,
        "/ui/ops?requeued=everything",
        &[("cookie", &session)],
        "",
    );
    assert!(!page.contains("Requeued everything"), "{page}");
    // With it: a requeue of nothing is a 404 naming it; logout ends the session.
    let (status, _, page) = http(
        "POST",
        base,
        "/ui/ops/requeue",
        &form,
        &format!("csrf={csrf}&key=no-such-key"),
    );
    assert_eq!(status, 404);
    assert!(page.contains("no-such-key"), "{page}");
    assert_eq!(
        http("POST", base, "/ui/logout", &form, &format!("csrf={csrf}")).0,
        303
    );
    assert_eq!(
        http("GET", base, "/ui/ops", &[("cookie", &session)], "").0,
        303
    );

    // A login posted from another site (no login cookie, or another one) is refused,
    // even with the right key.
    let (_, _, page) = http("GET", base, "/ui/login", &[], "");
    let token = hidden(&page, "csrf");
    let post = |cookie: &str| post_login(base, cookie, &token, KEY).0;
    assert_eq!(post(""), 403);
    assert_eq!(post("nurture_login=0000"), 403);
    assert_eq!(post(&format!("nurture_login={token}")), 303);
    // A wrong key is a 401 with the form again, and no session.
    let cookie = format!("nurture_login={token}");
    let attempt = |key: &str| post_login(base, &cookie, &token, key);
    let (status, h, page) = attempt("wrong");
    assert_eq!(status, 401);
    assert!(page.contains("not the API key"));
    assert!(!header(&h, "set-cookie")
        .iter()
        .any(|c| c.starts_with("nurture_session=")));

    // Guessing is throttled: after 10 wrong keys from one address, even the right key
    // is refused there for 15 minutes.
    for _ in 0..9 {
        assert_eq!(attempt("guess").0, 401);
    }
    let (status, _, page) = attempt(KEY);
    assert_eq!(status, 429, "{page}");
    assert!(page.contains("Too many wrong keys"), "{page}");
}

#[test]
fn pages_escape_what_the_store_holds_and_404_what_it_lacks() {
    let s = serve();
    let session = login(&s.base);
    let get = |path: &str| http("GET", &s.base, path, &[("cookie", &session)], "");
    let (status, _, page) = get("/ui/contacts/mallory");
    assert_eq!(status, 200);
    assert!(
        page.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "not escaped"
    );
    assert!(!page.contains("<img src=x"), "markup echoed");
    for (path, text) in [
        (
            "/ui/contacts/%3Cb%3Enobody",
            "There is no contact &lt;b&gt;nobody",
        ),
        ("/ui/runs/run-none", "There is no run run-none"),
        ("/ui/campaigns/nope", "There is no campaign nope"),
    ] {
        let (status, _, page) = get(path);
        assert_eq!(status, 404, "{path}");
        assert!(page.contains(text), "{path}: {page}");
    }
    assert_eq!(get("/ui/campaigns/ebook-nurture?version=x").0, 400);
    // The trigger's node and a step called `trigger` are two nodes.
    let (status, _, page) = get("/ui/campaigns/step-named-trigger");
    assert_eq!(status, 200);
    assert_eq!(page.matches("data-step=\"(trigger)\"").count(), 1, "{page}");
    let nodes = page.matches("data-step=\"trigger\" data-passed").count();
    assert_eq!(nodes, 1, "{page}");
    assert!(
        page.contains("data-from=\"(trigger)\" data-to=\"trigger\""),
        "{page}"
    );
    let (status, h, _) = get("/ui/search?q=ana%40example.com");
    assert_eq!(
        (status, header(&h, "location")),
        (303, vec!["/ui/contacts/ana"])
    );
    let (status, _, page) = get("/ui/search?q=%3Cscript%3E");
    assert_eq!(status, 200);
    assert!(page.contains("No contact or run matches <strong>&lt;script&gt;</strong>"));
    // An id may hold `@`, and be another contact's address: links and the API go by id,
    // search lists both, and finds addresses in any case.
    let body = r#"[{"id": "alice@corp.test", "email": "alice.private@example.com"},
                   {"id": "impostor", "email": "alice@corp.test"}]"#;
    let auth = format!("Bearer {KEY}");
    let json = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    assert_eq!(http("POST", &s.base, "/v1/contacts", &json, body).0, 200);
    let (_, _, page) = get("/ui/contacts/alice@corp.test");
    assert!(page.contains("alice.private@example.com"), "{page}");
    let (_, _, api) = http("GET", &s.base, "/v1/contacts/alice@corp.test", &json, "");
    assert!(api.contains("alice.private@example.com"), "{api}");
    let (status, _, page) = get("/ui/search?q=alice%40corp.test");
    assert_eq!(status, 200);
    assert!(
        page.contains("href=\"/ui/contacts/alice@corp.test\"")
            && page.contains("href=\"/ui/contacts/impostor\""),
        "{page}"
    );
    let (status, h, _) = get("/ui/search?q=ALICE.PRIVATE%40EXAMPLE.COM");
    assert_eq!(
        (status, header(&h, "location")),
        (303, vec!["/ui/contacts/alice@corp.test"])
    );
    // Assets are served from the binary.
    let (status, h, js) = get("/ui/assets/htmx.min.js");
    assert_eq!(status, 200);
    assert!(header(&h, "content-type")[0].starts_with("text/javascript"));
    assert!(js.len() > 40_000);
    assert_eq!(get("/ui/assets/..%2Fmod.rs").0, 404);
}
