//! One `nurture run --workspaces` process serving two workspaces, `acme` and `globex`,
//! each its own project, store (SQLite file, or Postgres schema of one shared database)
//! and keys: a key of one reaches nothing of the other (OWASP API1), the links of one are
//! dead in the other, and a busy workspace does not hold up the other's runs.

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::{fresh_postgres, rt};

const ACME_KEY: &str = "acme-server-key-0123456789abcdef";
const GLOBEX_KEY: &str = "globex-server-key-0123456789abcdef";
const BEA: &str = "bea@globex.test";

/// A project in `dir` whose server key is in `key_env`, on `store` (SQLite in the folder
/// when `None`), with a form `form` and the workflow `workflow` (YAML).
fn project(dir: &Path, key_env: &str, store: Option<&str>, form: &str, workflow: &str) {
    std::fs::create_dir_all(dir.join("workflows")).unwrap();
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    let store = store
        .map(|s| format!("store = \"{s}\"\n"))
        .unwrap_or_default();
    std::fs::write(
        dir.join("nurture.toml"),
        format!(
            "{store}[sender]\nfrom = \"Team <hi@{form}.test>\"\n[api]\nkey_env = \"{key_env}\"\n\
             [egress]\nallow = [\"127.0.0.1\"]\n[forms.{form}]\nfields = [\"first_name\"]\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("templates/hello.html"),
        "---\nsubject: Hello {{ contact.first_name }}\n---\n\
         <p>Hi {{ contact.first_name }}, see <a href=\"https://globex.test/pricing\">pricing</a></p>\n",
    )
    .unwrap();
    std::fs::write(dir.join("workflows/main.yaml"), workflow).unwrap();
}

/// `globex`'s workflow: mail, wait a week, mail again.
const ONBOARD: &str = "workflow: onboard-b\ntrigger: { event: form.submitted }\nsteps:\n  \
    - id: hi\n    send_email: hello\n  - id: later\n    wait: 7d\n  - id: again\n    send_email: hello\n";

/// `acme`'s workflow: a tag.
const WELCOME: &str =
    "workflow: welcome-a\ntrigger: { event: form.submitted }\nsteps:\n  - id: t\n    tag: [lead]\n";

/// A `nurture run --workspaces` process, killed when dropped.
struct Host {
    child: Child,
    base: String,
    client: reqwest::Client,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes `root/workspaces.toml` for `acme` and `globex` and runs it.
fn host(root: &Path) -> Host {
    std::fs::write(
        root.join("workspaces.toml"),
        "[workspaces.acme]\nproject = \"acme\"\n[workspaces.globex]\nproject = \"globex\"\n",
    )
    .unwrap();
    let port = crate::util::free_port();
    let log = std::fs::File::create(root.join("host.log")).unwrap();
    let child = nurture(root)
        .args(["run", "--workspaces", "workspaces.toml", "--poll-ms", "100"])
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let h = Host {
        child,
        base: format!("http://127.0.0.1:{port}"),
        client,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while h.call("GET", "/healthz", None, None).0 != 200 {
        let log = std::fs::read_to_string(root.join("host.log")).unwrap_or_default();
        assert!(Instant::now() < deadline, "the host did not start: {log}");
        std::thread::sleep(Duration::from_millis(100));
    }
    h
}

/// The `nurture` command in `root` with both workspaces' keys and no shared secret.
fn nurture(root: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nurture"));
    c.current_dir(root)
        .env("ACME_KEY", ACME_KEY)
        .env("GLOBEX_KEY", GLOBEX_KEY)
        .env_remove("NURTURE_API_KEY")
        .env_remove("NURTURE_TRACKING_KEY")
        .env_remove("NURTURE_PG_SCHEMA")
        .env("RUST_LOG", "warn");
    c
}

impl Host {
    /// A request (a JSON body, or a form when `body` is a string); (status, body as JSON
    /// or as a string).
    fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        rt().block_on(async {
            let mut req = self
                .client
                .request(method.parse().unwrap(), format!("{}{path}", self.base));
            if let Some(k) = key {
                req = req.header("x-api-key", k);
            }
            req = match body {
                Some(Value::String(form)) => req
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(form),
                Some(b) => req.json(&b),
                None => req,
            };
            match req.send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let text = r.text().await.unwrap_or_default();
                    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
                    (status, v)
                }
                Err(_) => (0, Value::Null),
            }
        })
    }
}

/// Waits (at most 30 s) until `f` holds.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What `globex` holds, as its own key reads it.
fn globex_state(h: &Host, root: &Path) -> Vec<Value> {
    let mut state: Vec<Value> = [
        "/v1/contacts",
        "/v1/runs",
        "/v1/contacts/c-bea",
        "/v1/contacts/c-bea/events",
        "/v1/reports/workflows",
    ]
    .iter()
    .map(|p| {
        let (status, body) = h.call("GET", p, Some(GLOBEX_KEY), None);
        json!({"path": p, "status": status, "body": body})
    })
    .collect();
    state.push(json!({"mails": mails(&root.join("globex")).len()}));
    state
}

/// The decoded `.eml` files of a project's file transport.
fn mails(dir: &Path) -> Vec<String> {
    let Ok(d) = std::fs::read_dir(dir.join("outbox")) else {
        return Vec::new();
    };
    d.map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .map(|p| crate::email::decoded(&std::fs::read_to_string(p).unwrap()))
        .collect()
}

/// The token of the first link of `mail` starting with `prefix`.
fn token_after(mail: &str, prefix: &str) -> String {
    let at = mail
        .find(prefix)
        .unwrap_or_else(|| panic!("no {prefix} in {mail}"));
    mail[at + prefix.len()..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect()
}

/// The store URL of workspace `name` on `postgres` (one database, a schema each).
fn schema_url(postgres: &str, name: &str) -> String {
    let sep = if postgres.contains('?') { '&' } else { '?' };
    format!("{postgres}{sep}schema=ws_{name}")
}

/// `acme` and `globex` on SQLite files, or on schemas of one Postgres database.
fn two_workspaces(root: &Path, postgres: Option<&str>) {
    let store = |name| postgres.map(|p| schema_url(p, name));
    project(
        &root.join("acme"),
        "ACME_KEY",
        store("acme").as_deref(),
        "signup-a",
        WELCOME,
    );
    let globex = root.join("globex");
    project(
        &globex,
        "GLOBEX_KEY",
        store("globex").as_deref(),
        "signup-b",
        ONBOARD,
    );
}

/// The concrete path of `path` with `globex`'s ids in it; `None` when it takes no id.
fn with_globex_ids(path: &str, run: &str, tokens: &[(&str, String)]) -> Option<String> {
    if !path.contains("{id}") && !path.contains("{token}") && !path.contains("{form}") {
        return None;
    }
    let id = if path.starts_with("/v1/contacts/") {
        "c-bea"
    } else if path.starts_with("/v1/runs/") {
        run
    } else {
        "onboard-b"
    };
    let token = tokens
        .iter()
        .find(|(prefix, _)| path.starts_with(prefix))
        .map_or("none", |(_, t)| t.as_str());
    Some(
        path.replace("{id}", id)
            .replace("{token}", token)
            .replace("{form}", "signup-b"),
    )
}

/// What an operation answers to ids it does not hold: 404, or for an operation that
/// never answers 404 (the open pixel) its one documented answer.
fn expected_for_foreign_ids(op: &Value) -> u16 {
    let codes: Vec<u16> = op["responses"]
        .as_object()
        .unwrap()
        .keys()
        .filter_map(|c| c.parse().ok())
        .collect();
    if codes.contains(&404) || codes.len() != 1 {
        404
    } else {
        codes[0]
    }
}

/// The cross-tenant table: every operation of the OpenAPI document that takes an id,
/// called with `globex`'s ids and `acme`'s key (by key alone and under `/w/acme`), is
/// refused as unknown, and under `/w/globex` the key is refused; lists and writes
/// without ids show and change nothing of `globex`. `globex` is the same afterwards.
fn cross_tenant(postgres: Option<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    two_workspaces(root, postgres.as_deref());
    let out = nurture(root)
        .args([
            "keys", "create", "probe", "--scope", "admin", "--dir", "acme",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stored = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let h = host(root);
    let bea = json!({"id": "c-bea", "email": BEA, "first_name": "Bea", "consent": "opted_in"});
    assert_eq!(
        h.call("POST", "/v1/contacts", Some(GLOBEX_KEY), Some(bea))
            .0,
        200
    );
    let form = json!({"type": "form.submitted", "contact": "c-bea"});
    let (status, body) = h.call("POST", "/v1/events", Some(GLOBEX_KEY), Some(form.clone()));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        h.call(
            "POST",
            "/v1/events",
            Some(ACME_KEY),
            Some(json!({"type": "form.submitted", "email": "ann@acme.test"}))
        )
        .0,
        200
    );
    eventually("globex's first email", || {
        !mails(&root.join("globex")).is_empty()
    });
    let mail = mails(&root.join("globex")).remove(0);
    let at = format!("{}/w/globex", h.base);
    let tokens = [
        ("/t/o/", token_after(&mail, &format!("{at}/t/o/"))),
        ("/t/c/", token_after(&mail, &format!("{at}/t/c/"))),
        ("/u/", token_after(&mail, &format!("{at}/u/"))),
        ("/f/", token_after(&mail, &format!("{at}/u/"))),
    ];
    let (_, runs) = h.call("GET", "/v1/runs", Some(GLOBEX_KEY), None);
    let run = runs["runs"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{runs}"))
        .to_string();
    eventually("globex's run waiting", || {
        let (_, r) = h.call("GET", &format!("/v1/runs/{run}"), Some(GLOBEX_KEY), None);
        r.to_string().contains("waiting")
    });
    let before = globex_state(&h, root);
    assert_eq!(before[2]["status"], 200, "{}", before[2]);

    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(crate::util::repo().join("schema/openapi.json")).unwrap(),
    )
    .unwrap();
    let mut checked = 0;
    // Lists first (the writes below put a c-bea into acme).
    for list in ["/v1/contacts", "/v1/runs", "/v1/reports/workflows"] {
        let q = format!("{list}?contact=c-bea&workflow=onboard-b&q={BEA}");
        let (status, body) = h.call("GET", &q, Some(ACME_KEY), None);
        let text = body.to_string();
        assert!(
            status < 500 && !text.contains(BEA) && !text.contains("onboard-b"),
            "{q}: {status} {text}"
        );
    }
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let m = method.to_uppercase();
            let api = path.starts_with("/v1/");
            let Some(concrete) = with_globex_ids(path, &run, &tokens) else {
                continue;
            };
            let body = if path.starts_with("/f/") {
                Value::String(format!("email={BEA}&first_name=Mallory"))
            } else {
                json!({"reason": "probe"})
            };
            let expected = expected_for_foreign_ids(op);
            // acme's server key under its prefix; its stored key by key alone.
            let mut tries = vec![(format!("/w/acme{concrete}"), ACME_KEY)];
            if api {
                tries.push((concrete.clone(), stored.as_str()));
            }
            for (p, key) in &tries {
                let (status, answer) = h.call(&m, p, Some(key), Some(body.clone()));
                assert_eq!(status, expected, "{m} {p} with acme's key: {answer}");
            }
            if api {
                let p = format!("/w/globex{concrete}");
                for key in [ACME_KEY, stored.as_str()] {
                    let (status, answer) = h.call(&m, &p, Some(key), Some(body.clone()));
                    assert_eq!(status, 401, "{m} {p} with acme's key: {answer}");
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} operations take an id");
    // The dashboard: a session of acme's key shows acme's campaigns and not globex's
    // person or run; a session of globex's key does.
    let pages = |key: &str, path: &str| {
        let cookie = crate::dashboard::login_with(&h.base, key);
        let (status, _, page) =
            crate::dashboard::http("GET", &h.base, path, &[("cookie", &cookie)], "");
        (status, page)
    };
    let (status, page) = pages(ACME_KEY, "/ui/");
    assert!(
        status == 200 && page.contains("welcome-a") && !page.contains("onboard-b"),
        "{status} {page}"
    );
    for p in ["/ui/contacts/c-bea".to_string(), format!("/ui/runs/{run}")] {
        assert_eq!(pages(ACME_KEY, &p).0, 404, "{p} with acme's session");
        assert_eq!(pages(GLOBEX_KEY, &p).0, 200, "{p} with globex's session");
    }

    // Writes without ids that name globex's person: acme does not know her, then has
    // its own c-bea; globex's is untouched.
    let event = json!({"type": "form.submitted", "contact": "c-bea"});
    let (status, answer) = h.call("POST", "/v1/events", Some(ACME_KEY), Some(event.clone()));
    assert!(
        status == 422 && answer.to_string().contains("unknown contact"),
        "{status} {answer}"
    );
    let writes = [
        (
            "/v1/contacts",
            json!({"id": "c-bea", "email": BEA, "first_name": "Mallory"}),
        ),
        ("/v1/events", event),
        ("/v1/bounces", json!({"email": BEA, "type": "complaint"})),
    ];
    for (p, body) in writes {
        let (status, answer) = h.call("POST", p, Some(ACME_KEY), Some(body));
        assert_eq!(status, 200, "POST {p}: {answer}");
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(globex_state(&h, root), before, "globex changed");

    // Control: the same ids are real in globex, under its prefix and with its key.
    for (path, item) in doc["paths"].as_object().unwrap() {
        let Some(concrete) = with_globex_ids(path, &run, &tokens) else {
            continue;
        };
        if item.get("get").is_none() || path.contains("/confirm/") {
            continue;
        }
        let p = format!("/w/globex{concrete}");
        let (status, answer) = h.call("GET", &p, Some(GLOBEX_KEY), None);
        assert!(
            [200, 302].contains(&status),
            "GET {p} with globex's key: {status} {answer}"
        );
    }
    // Paths that try to step out of the prefix, or spell the name otherwise, reach no
    // workspace; a dashboard login too large to read is refused before any is chosen.
    for p in [
        "/w/acme/../globex/v1/contacts/c-bea",
        "/w/acme/%2e%2e/globex/v1/contacts/c-bea",
        "/w/ACME/v1/contacts/c-bea",
        "/w/globex%2f/v1/contacts/c-bea",
        "/w//v1/contacts/c-bea",
    ] {
        // (Raw, as sent: an HTTP client would resolve the dot segments itself.)
        let headers = [("x-api-key", ACME_KEY)];
        let (status, _, answer) = crate::dashboard::http("GET", &h.base, p, &headers, "");
        assert!(status == 404 || status == 401, "{p}: {status} {answer}");
        assert!(!answer.contains(BEA), "{p}: {answer}");
    }
    let big = format!("csrf=x&key={}", "k".repeat(40_000));
    let (status, _) = h.call("POST", "/ui/login", None, Some(Value::String(big)));
    assert_eq!(status, 413);
    // Without a prefix, a link has no workspace.
    assert_eq!(
        h.call("GET", &format!("/u/{}", tokens[2].1), None, None).0,
        404
    );
}

#[test]
fn a_key_of_one_workspace_reaches_no_route_of_another_on_sqlite() {
    cross_tenant(None);
}

#[test]
fn a_key_of_one_workspace_reaches_no_route_of_another_on_postgres() {
    let Some(url) = fresh_postgres() else { return };
    cross_tenant(Some(url));
}

/// `acme` has 20,000 runs due when the host starts; `globex`'s one webhook call is
/// still made at once, long before `acme` is through: each workspace has a scheduler
/// and a deliverer of its own. (In one project the same call waits for the 20,000
/// runs before it: 3.4 s, measured when this test was written.)
#[test]
fn a_busy_workspace_does_not_hold_up_another() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (port, answered) = receiver();
    let ping = format!(
        "workflow: ping-b\ntrigger: {{ event: form.submitted }}\nsteps:\n  - id: crm\n    \
         webhook:\n      url: \"http://127.0.0.1:{port}/crm\"\n      body: {{ id: \"${{contact.id}}\" }}\n"
    );
    project(&root.join("acme"), "ACME_KEY", None, "signup-a", WELCOME);
    project(&root.join("globex"), "GLOBEX_KEY", None, "signup-b", &ping);
    const N: usize = 20_000;
    let lines: String = (0..N)
        .map(|i| format!("{{\"type\":\"form.submitted\",\"email\":\"c-{i}@acme.test\"}}\n"))
        .collect();
    std::fs::write(root.join("acme.jsonl"), lines).unwrap();
    let out = nurture(root)
        .args([
            "events",
            "send",
            "acme.jsonl",
            "--dir",
            "acme",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let h = host(root);
    let one = json!({"type": "form.submitted", "email": "gus@globex.test"});
    assert_eq!(
        h.call("POST", "/v1/events", Some(GLOBEX_KEY), Some(one)).0,
        200
    );
    let started = Instant::now();
    eventually("globex's webhook call", || {
        answered.load(Ordering::SeqCst) == 1
    });
    let waited = started.elapsed();
    let (_, report) = h.call("GET", "/v1/reports/workflows", Some(ACME_KEY), None);
    let done = report["workflows"][0]["exits"]["end"].as_u64().unwrap_or(0) as usize;
    eprintln!(
        "globex's webhook was called {waited:?} after its event; acme had ended {done} of {N} runs"
    );
    assert!(done < N, "acme ended all {N} runs first: {report}");
}

/// A local webhook receiver; counts the calls.
fn receiver() -> (u16, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let counted = counted.clone();
            std::thread::spawn(move || answer(stream, &counted));
        }
    });
    (port, calls)
}

fn answer(mut s: std::net::TcpStream, calls: &AtomicUsize) {
    let mut buf = [0u8; 4096];
    let mut seen = Vec::new();
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    calls.fetch_add(1, Ordering::SeqCst);
    let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
}

/// Mistakes in the workspaces file, and workspaces that would share a store or a key,
/// stop the process before it serves anything, saying which and how to fix it.
#[test]
fn workspaces_that_would_share_a_store_or_a_key_are_refused_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    two_workspaces(root, None);
    // `serve` on `file`, with NURTURE_TRACKING_KEY set to `tracking` when given: fails.
    let start = |file: &str, tracking: Option<&str>| {
        std::fs::write(root.join("ws.toml"), file).unwrap();
        let mut c = nurture(root);
        c.args([
            "serve",
            "--workspaces",
            "ws.toml",
            "--listen",
            "127.0.0.1:0",
        ]);
        if let Some(t) = tracking {
            c.env("NURTURE_TRACKING_KEY", t);
        }
        let out = c.output().unwrap();
        assert!(!out.status.success(), "{file}");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let run = |file: &str| start(file, None);
    let e = run("[workspaces.acme]\nproject = \"acme\"\npath = \"x\"\n");
    assert!(
        e.contains("ws.toml") && e.contains("line 3") && e.contains("path"),
        "{e}"
    );
    let e = run("[workspaces.Acme]\nproject = \"acme\"\n");
    assert!(e.contains("lower-case"), "{e}");
    let e = run("[workspaces.acme]\nproject = \"nowhere\"\n");
    assert!(e.contains("no nurture.toml"), "{e}");
    let e = run("listen = \"127.0.0.1:0\"\n");
    assert!(e.contains("no workspace"), "{e}");
    // Two names for one folder: one store.
    let e = run("[workspaces.a]\nproject = \"acme\"\n[workspaces.b]\nproject = \"acme/../acme\"\n");
    assert!(e.contains("same store"), "{e}");
    // Both keys from one variable.
    let toml = root.join("globex/nurture.toml");
    let t = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(&toml, t.replace("GLOBEX_KEY", "ACME_KEY")).unwrap();
    let both = "[workspaces.acme]\nproject = \"acme\"\n[workspaces.globex]\nproject = \"globex\"\n";
    let e = run(both);
    assert!(e.contains("same API key") && !e.contains(ACME_KEY), "{e}");
    std::fs::write(&toml, t).unwrap();
    // One tracking key for both (NURTURE_TRACKING_KEY set).
    let e = start(both, Some("one-key-for-all-0123456789abcdef"));
    assert!(e.contains("same tracking key"), "{e}");
}
