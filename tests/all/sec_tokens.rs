//! Issue 16, tracking and unsubscribe tokens, secrets and the API key, against real
//! `nurture serve` / `nurture run` processes over loopback: full tags, purposes, expiry,
//! replays scored once, the open pixel's limits, key files, the bearer scheme.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};

use crate::util::free_port;
use crate::util::rt;

/// The tracking key the tests write into the project (64 hex characters).
const TRACKING_KEY: &str = "5ec7e7a1c0ffee5ec7e7a1c0ffee5ec7e7a1c0ffee5ec7e7a1c0ffee5ec7e7a1";
const API_KEY: &str = "sec-tokens-api-key-0123456789abcdef";
const BROWSER: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0)";

/// A project: one idle workflow, opens +10 and clicks +2, `[tracking]` as given, and the
/// tracking key written as an operator would.
fn project(dir: &Path, tracking: &str) {
    std::fs::create_dir_all(dir.join("workflows")).unwrap();
    std::fs::write(
        dir.join("nurture.toml"),
        format!("[sender]\nfrom = \"Acme <news@acme.test>\"\n{tracking}\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("workflows/idle.yaml"),
        "workflow: idle\ntrigger: { event: never.happens }\nsteps:\n  - id: tag-it\n    tag: [seen]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("scoring.yaml"),
        "rules:\n  - { event: email.opened, points: 10 }\n  - { event: email.clicked, points: 2 }\n",
    )
    .unwrap();
    write_key(dir, "tracking-key", TRACKING_KEY);
}

fn write_key(dir: &Path, name: &str, key: &str) {
    std::fs::create_dir_all(dir.join(".nurture")).unwrap();
    std::fs::write(dir.join(".nurture").join(name), key).unwrap();
}

/// A `nurture` process, killed when dropped.
struct Proc {
    child: Child,
    api: String,
    dir: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `nurture ROLE DIR` (serve or run) and waits for `/healthz`.
fn start(dir: &Path, role: &str) -> Proc {
    let port = free_port();
    let child = nurture_cmd(dir, role, port)
        .env("NURTURE_API_KEY", API_KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nurture");
    let p = Proc {
        child,
        api: format!("http://127.0.0.1:{port}"),
        dir: dir.to_path_buf(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !healthy(&p.api) {
        assert!(Instant::now() < deadline, "nurture {role} did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    p
}

fn nurture_cmd(dir: &Path, role: &str, port: u16) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nurture"));
    c.args([
        role,
        dir.to_str().unwrap(),
        "--listen",
        &format!("127.0.0.1:{port}"),
    ])
    .env_remove("NURTURE_API_KEY")
    .env_remove("NURTURE_TRACKING_KEY")
    .env("RUST_LOG", "warn");
    c
}

/// An answer: its status and headers.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
}

/// Sends one request (a browser's user agent, no redirects followed) and waits for it.
fn send(method: &str, url: &str, headers: &[(&str, &str)], body: Option<Value>) -> Answer {
    rt().block_on(async {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(BROWSER)
            .build()
            .unwrap();
        let mut req = client.request(method.parse().unwrap(), url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        Answer {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
        }
    })
}

fn healthy(api: &str) -> bool {
    rt().block_on(async {
        reqwest::get(format!("{api}/healthz"))
            .await
            .is_ok_and(|r| r.status() == 200)
    })
}

impl Proc {
    fn import_ana(&self) {
        let r = send(
            "POST",
            &format!("{}/v1/contacts", self.api),
            &[("x-api-key", API_KEY)],
            Some(json!({"id": "ana", "email": "ana@example.com"})),
        );
        assert_eq!(r.status, 200);
    }

    fn store(&self) -> std::sync::Arc<dyn nurture_store::Store> {
        let url = format!("sqlite://{}", self.dir.join("nurture.db").display());
        rt().block_on(nurture_server::open_store(&url)).unwrap()
    }

    /// Ana's stored events of `kind`.
    fn events(&self, kind: &str) -> Vec<Value> {
        let store = self.store();
        let since = chrono::Utc::now() - chrono::Duration::days(30);
        rt().block_on(store.contact_events("ana", since))
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == kind)
            .map(|e| e.data)
            .collect()
    }

    fn get(&self, path: &str) -> Answer {
        send("GET", &format!("{}{path}", self.api), &[], None)
    }

    fn post(&self, path: &str) -> Answer {
        let form = [("content-type", "application/x-www-form-urlencoded")];
        send("POST", &format!("{}{path}", self.api), &form, None)
    }
}

/// A token as the email channel issues it: claims (with the purpose `p` when given) and
/// the full HMAC-SHA256 tag under the project's tracking key. Signed here, not through
/// the library, so these tests also run against builds that predate purposes.
fn token(purpose: Option<&str>, claims: &Value) -> String {
    let mut claims = claims.clone();
    if let Some(p) = purpose {
        claims["p"] = json!(p);
    }
    let body = claims.to_string();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(TRACKING_KEY.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(&body),
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

/// Claims of an email sent to Ana an hour ago (a click then is a person's, not a bot's).
fn sent(key: &str) -> Value {
    let t = chrono::Utc::now().timestamp() - 3600;
    json!({"k": key, "c": "ana", "w": "news", "s": "send", "t": t})
}

fn click_claims(key: &str) -> Value {
    let mut c = sent(key);
    c["u"] = json!("https://acme.test/pricing");
    c
}

/// The token with its tag cut to `n` bytes.
fn truncated(token: &str, n: usize) -> String {
    let (body, tag) = token.split_once('.').unwrap();
    let tag = URL_SAFE_NO_PAD.decode(tag).unwrap();
    format!("{body}.{}", URL_SAFE_NO_PAD.encode(&tag[..n]))
}

#[test]
fn truncated_tag_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    project(tmp.path(), "");
    let p = start(tmp.path(), "serve");
    p.import_ana();
    let click = token(Some("click"), &click_claims("k1"));
    let open = token(Some("open"), &sent("k1"));
    for n in [1, 16] {
        assert_eq!(
            p.get(&format!("/t/c/{}", truncated(&click, n))).status,
            404,
            "{n}-byte tag"
        );
        assert_eq!(p.get(&format!("/t/o/{}", truncated(&open, n))).status, 200);
    }
    assert!(
        p.events("email.opened").is_empty(),
        "no open from a cut tag"
    );
    assert!(p.events("email.clicked").is_empty());
    // The genuine token works.
    let r = p.get(&format!("/t/c/{click}"));
    assert_eq!(r.status, 302);
    assert_eq!(r.headers["location"], "https://acme.test/pricing");
}

#[test]
fn open_token_at_unsubscribe_is_refused_and_suppresses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    project(tmp.path(), "");
    let p = start(tmp.path(), "serve");
    p.import_ana();
    let open = token(Some("open"), &sent("k1"));
    assert_eq!(p.post(&format!("/u/{open}")).status, 404);
    assert_eq!(p.get(&format!("/u/{open}")).status, 404);
    let store = p.store();
    assert_eq!(rt().block_on(store.suppression("")).unwrap(), None);
    assert_eq!(
        rt().block_on(store.suppression("ana@example.com")).unwrap(),
        None
    );
    assert!(p.events("email.unsubscribed").is_empty());
    // The genuine unsubscribe token does unsubscribe.
    let unsub = token(
        Some("unsub"),
        &json!({"k": "k1", "c": "ana", "a": "ana@example.com", "w": "news"}),
    );
    assert_eq!(p.post(&format!("/u/{unsub}")).status, 200);
    assert!(rt()
        .block_on(store.suppression("ana@example.com"))
        .unwrap()
        .is_some());
}

#[test]
fn unsubscribe_token_at_open_pixel_is_not_counted() {
    let tmp = tempfile::tempdir().unwrap();
    project(tmp.path(), "");
    let p = start(tmp.path(), "serve");
    p.import_ana();
    let unsub = token(
        Some("unsub"),
        &json!({"k": "k1", "c": "ana", "a": "ana@example.com", "w": "news"}),
    );
    let r = p.get(&format!("/t/o/{unsub}"));
    assert_eq!(r.status, 200, "the pixel is always answered");
    assert_eq!(r.headers["content-type"], "image/gif");
    assert_eq!(p.get(&format!("/t/c/{unsub}")).status, 404);
    // A purpose-less token (signed with the key, but for nothing) counts for nothing.
    let bare = token(None, &click_claims("k2"));
    assert_eq!(p.get(&format!("/t/o/{bare}")).status, 200);
    assert_eq!(p.get(&format!("/t/c/{bare}")).status, 404);
    assert!(p.events("email.opened").is_empty());
    assert!(p.events("email.clicked").is_empty());
}

#[test]
fn expired_click_token_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    project(tmp.path(), "[tracking]\nlink_ttl_days = 7\n");
    let p = start(tmp.path(), "serve");
    p.import_ana();
    let mut old = click_claims("k1");
    old["t"] = json!(chrono::Utc::now().timestamp() - 8 * 86_400);
    let expired = token(Some("click"), &old);
    assert_eq!(p.get(&format!("/t/c/{expired}")).status, 410);
    let mut open = sent("k1");
    open["t"] = old["t"].clone();
    let expired_open = token(Some("open"), &open);
    assert_eq!(p.get(&format!("/t/o/{expired_open}")).status, 200);
    assert!(p.events("email.clicked").is_empty());
    assert!(p.events("email.opened").is_empty());
    // Within the TTL it works; an unsubscribe link from years ago still works.
    let fresh = token(Some("click"), &click_claims("k2"));
    assert_eq!(p.get(&format!("/t/c/{fresh}")).status, 302);
    let unsub = token(
        Some("unsub"),
        &json!({"k": "k0", "c": "ana", "a": "ana@example.com", "w": "news", "t": 0}),
    );
    assert_eq!(p.get(&format!("/u/{unsub}")).status, 200);
}

#[test]
fn replayed_click_and_open_are_scored_once() {
    let tmp = tempfile::tempdir().unwrap();
    project(tmp.path(), "");
    let p = start(tmp.path(), "run");
    p.import_ana();
    let open = token(Some("open"), &sent("k1"));
    let click = token(Some("click"), &click_claims("k1"));
    for _ in 0..5 {
        assert_eq!(p.get(&format!("/t/o/{open}")).status, 200);
        assert_eq!(p.get(&format!("/t/c/{click}")).status, 302);
    }
    let store = p.store();
    let score = || {
        rt().block_on(store.contact("ana"))
            .unwrap()
            .map_or(0, |c| c.score)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while score() < 12 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(score(), 12, "one open (+10) and one click (+2)");
    assert_eq!(p.events("email.opened").len(), 1);
    assert_eq!(p.events("email.clicked").len(), 1);
}

#[test]
fn pixel_hits_5000_store_one_open() {
    let tmp = tempfile::tempdir().unwrap();
    project(tmp.path(), "");
    let p = start(tmp.path(), "serve");
    p.import_ana();
    let url = format!("{}/t/o/{}", p.api, token(Some("open"), &sent("k1")));
    let ok = rt().block_on(async {
        let client = reqwest::Client::builder()
            .user_agent(BROWSER)
            .build()
            .unwrap();
        let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(32));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..5000 {
            let (client, url) = (client.clone(), url.clone());
            let permit = sem.clone().acquire_owned().await.unwrap();
            tasks.spawn(async move {
                let r = client.get(&url).send().await;
                drop(permit);
                r.is_ok_and(|r| r.status() == 200)
            });
        }
        let mut ok = 0;
        while let Some(r) = tasks.join_next().await {
            ok += usize::from(r.unwrap());
        }
        ok
    });
    assert_eq!(ok, 5000, "every hit gets its pixel");
    assert_eq!(p.events("email.opened").len(), 1);
}

#[test]
fn opens_beyond_a_clients_rate_are_answered_not_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    project(tmp.path(), "[tracking]\nhits_per_minute = 5\n");
    let p = start(tmp.path(), "serve");
    p.import_ana();
    for i in 0..20 {
        let t = token(Some("open"), &sent(&format!("k{i}")));
        let r = p.get(&format!("/t/o/{t}"));
        assert_eq!(r.status, 200);
        assert_eq!(r.headers["content-type"], "image/gif");
    }
    assert_eq!(p.events("email.opened").len(), 5);
}

/// Runs `nurture serve` expecting it to refuse to start; returns its stderr.
fn refused(dir: &Path, env: &[(&str, &str)]) -> String {
    let mut c = nurture_cmd(dir, "serve", free_port());
    for (k, v) in env {
        c.env(k, v);
    }
    let mut child = c
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("nurture serve started with a bad key");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    err
}

#[test]
fn empty_or_short_key_file_is_refused_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    project(dir, "");
    write_key(dir, "tracking-key", "");
    let err = refused(dir, &[("NURTURE_API_KEY", API_KEY)]);
    assert!(
        err.contains("tracking-key") && err.contains("too short"),
        "{err}"
    );
    write_key(dir, "tracking-key", "0123abcd");
    let err = refused(dir, &[("NURTURE_API_KEY", API_KEY)]);
    assert!(
        err.contains("too short") && !err.contains("0123abcd"),
        "{err}"
    );
    write_key(dir, "tracking-key", TRACKING_KEY);
    // The API key: an empty file, a short one, an empty variable.
    write_key(dir, "api-key", "");
    let err = refused(dir, &[]);
    assert!(
        err.contains("api-key") && err.contains("too short"),
        "{err}"
    );
    write_key(dir, "api-key", "shortkey");
    let err = refused(dir, &[]);
    assert!(!err.contains("shortkey"), "the key is never printed: {err}");
    let err = refused(dir, &[("NURTURE_API_KEY", "")]);
    assert!(
        err.contains("NURTURE_API_KEY") && err.contains("empty"),
        "{err}"
    );
    let err = refused(
        dir,
        &[
            ("NURTURE_TRACKING_KEY", "abc"),
            ("NURTURE_API_KEY", API_KEY),
        ],
    );
    assert!(
        err.contains("NURTURE_TRACKING_KEY") && !err.contains("abc "),
        "{err}"
    );
}

#[test]
fn generated_key_files_are_mode_0600() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    project(dir, "");
    std::fs::remove_dir_all(dir.join(".nurture")).unwrap();
    let port = free_port();
    let _p = Proc {
        child: nurture_cmd(dir, "serve", port)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        api: String::new(),
        dir: dir.to_path_buf(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let api = format!("http://127.0.0.1:{port}");
    while !healthy(&api) {
        assert!(Instant::now() < deadline, "nurture serve did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut names: Vec<String> = std::fs::read_dir(dir.join(".nurture"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["api-key", "tracking-key"],
        "no temporary files left"
    );
    for name in names {
        let path = dir.join(".nurture").join(&name);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name}");
        assert_eq!(std::fs::read_to_string(&path).unwrap().len(), 64, "{name}");
    }
    // The generated API key works, lower-case scheme or not.
    let key = std::fs::read_to_string(dir.join(".nurture/api-key")).unwrap();
    let bearer = format!("bearer {key}");
    let r = send(
        "GET",
        &format!("{api}/v1/runs/none"),
        &[("authorization", &bearer)],
        None,
    );
    assert_eq!(r.status, 404);
}

#[test]
fn bearer_scheme_is_case_insensitive() {
    let tmp = tempfile::tempdir().unwrap();
    project(tmp.path(), "");
    let p = start(tmp.path(), "serve");
    let status = |name: &str, value: String| {
        send(
            "GET",
            &format!("{}/v1/runs/none", p.api),
            &[(name, &value)],
            None,
        )
        .status
    };
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        assert_eq!(
            status("authorization", format!("{scheme} {API_KEY}")),
            404,
            "{scheme}"
        );
    }
    assert_eq!(status("authorization", "bearer wrong-key".into()), 401);
    assert_eq!(status("authorization", "Basic ".to_string() + API_KEY), 401);
    assert_eq!(status("authorization", "bearer ".into()), 401);
    assert_eq!(status("x-api-key", String::new()), 401);
    assert_eq!(status("x-api-key", API_KEY.into()), 404);
}
