//! Outgoing HTTP (issue 16, items 2, 3, 10 and 12's webhook part): webhooks and plugins
//! refused at private addresses after resolution and on redirect hops, interpolated URL
//! values encoded, the plugin allow-list parsing what is sent, a host that never answers
//! holding up no one else, and no credentials or query strings in logs.
//!
//! Real HTTP on loopback throughout; the deliverer runs against a real SQLite store, the
//! plugin is a real wasm component, and the log test runs `nurture run`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use nurture_channels::deliver::Deliverer;
use nurture_channels::egress::{Egress, Settings};
use nurture_store::{OutboxEntry, Store, UnitOfWork};
use serde_json::{json, Value};

use crate::util::rt_multi as rt;
use crate::util::{free_port, RecordingServer};

fn egress(allow: &[&str], tweak: impl FnOnce(&mut Settings)) -> Arc<Egress> {
    let mut s = Settings {
        allow: allow.iter().map(|a| a.parse().unwrap()).collect(),
        ..Default::default()
    };
    tweak(&mut s);
    Arc::new(Egress::new(&s, "test").unwrap())
}

fn hook(key: &str, contact: &str, payload: Value) -> OutboxEntry {
    OutboxEntry {
        key: key.into(),
        run_id: Some(format!("run-{key}")),
        contact: contact.into(),
        workflow: Some("w".into()),
        step: Some("hook".into()),
        kind: "webhook".into(),
        payload,
        created_at: Utc::now(),
        due_at: Utc::now(),
        attempts: 0,
    }
}

/// A SQLite store in `dir`, and a pool on the same file to read what it recorded.
async fn store(dir: &std::path::Path) -> (Arc<dyn Store>, sqlx::SqlitePool) {
    let url = format!("sqlite://{}", dir.join("t.db").display());
    let s = nurture_server::open_store(&url).await.unwrap();
    (s, sqlx::SqlitePool::connect(&url).await.unwrap())
}

/// The state and last error of an outbox entry.
async fn outbox_row(pool: &sqlx::SqlitePool, key: &str) -> (String, String) {
    let (state, err): (String, Option<String>) =
        sqlx::query_as("SELECT state, last_error FROM outbox WHERE key = ?")
            .bind(key)
            .fetch_one(pool)
            .await
            .unwrap();
    (state, err.unwrap_or_default())
}

/// Delivers one webhook with `payload` through `egress`; its state and last error.
fn deliver_one(egress: Arc<Egress>, payload: Value) -> (String, String) {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (s, pool) = store(dir.path()).await;
        let entries = vec![hook("k", "c", payload)];
        s.commit(&UnitOfWork {
            outbox: entries.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
        let d = Deliverer::new(s.clone()).with_egress(egress);
        d.deliver(entries, Instant::now()).await.unwrap();
        outbox_row(&pool, "k").await
    })
}

fn ok_server() -> RecordingServer {
    RecordingServer::start(|_| (200, "{}".into()))
}

#[test]
fn webhook_to_loopback_is_refused_with_its_reason() {
    let server = ok_server();
    let url = format!("http://127.0.0.1:{}/hook", server.port);
    let (state, reason) = deliver_one(egress(&[], |_| {}), json!({"url": url}));
    assert_eq!(state, "failed", "{reason}");
    assert!(
        reason.contains("refused") && reason.contains("loopback"),
        "{reason}"
    );
    assert!(
        reason.contains("[egress] allow"),
        "says how to allow it: {reason}"
    );
    assert!(server.requests().is_empty());
}

#[test]
fn webhook_to_the_cloud_metadata_address_is_refused() {
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/latest/meta-data/",
        "http://0xa9fea9fe/latest/meta-data/",
    ] {
        let (state, reason) = deliver_one(egress(&[], |_| {}), json!({"url": url}));
        assert_eq!(state, "failed", "{url}: {reason}");
        assert!(reason.contains("link-local"), "{url}: {reason}");
    }
}

#[test]
fn webhook_to_a_name_resolving_to_loopback_is_refused() {
    let server = ok_server();
    let url = format!("http://localhost:{}/hook", server.port);
    let (state, reason) = deliver_one(egress(&[], |_| {}), json!({"url": url}));
    assert_eq!(state, "failed", "{reason}");
    assert!(
        reason.contains("`localhost`") && reason.contains("loopback"),
        "{reason}"
    );
    assert!(server.requests().is_empty());
    // Allowed by the operator, it is delivered.
    let (state, reason) = deliver_one(egress(&["localhost"], |_| {}), json!({"url": url}));
    assert_eq!(state, "delivered", "{reason}");
    assert_eq!(server.requests().len(), 1);
}

/// A raw HTTP server answering every request with a redirect to `location(path)`;
/// returns its port.
fn redirector(location: impl Fn(&str) -> String + Send + 'static) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                    break;
                }
            }
            let reply = format!(
                "HTTP/1.1 302 Found\r\nlocation: {}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                location(&path)
            );
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    port
}

#[test]
fn redirects_are_not_followed_by_default() {
    let target = ok_server();
    let to = format!("http://127.0.0.1:{}/landed", target.port);
    let port = redirector(move |_| to.clone());
    let url = format!("http://127.0.0.1:{port}/hook");
    let (state, reason) = deliver_one(egress(&["127.0.0.1"], |_| {}), json!({"url": url}));
    assert_eq!(state, "failed", "{reason}");
    assert!(
        reason.contains("302") && reason.contains("follow_redirects"),
        "{reason}"
    );
    assert!(target.requests().is_empty());
}

/// Opted in, a redirect is followed, each hop checked: by name through the same
/// resolver, by literal address by the redirect policy.
#[test]
fn redirects_are_followed_when_opted_in_but_a_hop_to_a_private_address_is_refused() {
    let target = ok_server();
    let tp = target.port;
    let port = redirector(move |path| match path {
        "/to-allowed" => format!("http://localhost:{tp}/landed"),
        "/to-loopback-literal" => format!("http://127.0.0.1:{tp}/landed"),
        _ => "http://169.254.169.254/latest/meta-data/".into(),
    });
    // Only the name `localhost` is allowed: the literal 127.0.0.1 is not.
    let allow = egress(&["localhost"], |_| {});
    let go = |path: &str| {
        let url = format!("http://localhost:{port}{path}");
        deliver_one(allow.clone(), json!({"url": url, "follow_redirects": true}))
    };
    let (state, reason) = go("/to-allowed");
    assert_eq!(state, "delivered", "{reason}");
    assert_eq!(target.requests().len(), 1);
    assert_eq!(target.requests()[0].path, "/landed");
    for path in ["/to-loopback-literal", "/to-metadata"] {
        let (state, reason) = go(path);
        assert_eq!(state, "failed", "{path}: {reason}");
        assert!(reason.contains("refused"), "{path}: {reason}");
    }
    assert_eq!(
        target.requests().len(),
        1,
        "no refused hop reached anything"
    );
}

/// A receiver that accepts connections, reads the request and never answers. Counts the
/// connections it holds and the most held at once.
struct Hanging {
    port: u16,
    open: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
}

fn hanging_receiver() -> Hanging {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let open = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let (o, p, a) = (open.clone(), peak.clone(), accepted.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            a.fetch_add(1, Ordering::SeqCst);
            let now = o.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(now, Ordering::SeqCst);
            let o = o.clone();
            std::thread::spawn(move || {
                // Read until the client gives up (EOF or error); never write.
                let mut buf = [0u8; 1024];
                while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
                o.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    Hanging {
        port,
        open,
        peak,
        accepted,
    }
}

/// 60 contacts' webhooks to a host that never answers, and an unrelated contact's
/// webhook to another receiver in the same batch: the bad host gets at most its
/// per-host share of connections, and the other receiver gets its webhook while the bad
/// host's attempts are still hanging (before their timeout).
#[test]
fn a_hanging_host_gets_its_per_host_share_and_holds_up_no_other_receiver() {
    let bad = hanging_receiver();
    let good = ok_server();
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (s, pool) = store(dir.path()).await;
        let mut entries: Vec<OutboxEntry> = (0..60)
            .map(|i| {
                let url = format!("http://127.0.0.1:{}/hook/{i}", bad.port);
                hook(
                    &format!("bad{i:02}"),
                    &format!("a{i:02}"),
                    json!({"url": url}),
                )
            })
            .collect();
        // Sorted after every bad contact: on the old code it waited for their timeouts.
        let url = format!("http://127.0.0.1:{}/hook", good.port);
        entries.push(hook("good", "zz-unrelated", json!({"url": url})));
        s.commit(&UnitOfWork {
            outbox: entries.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
        let timeout = Duration::from_secs(8);
        let e = egress(&["127.0.0.1"], |s| s.timeout = timeout);
        let d = Arc::new(Deliverer::new(s.clone()).with_egress(e));
        let started = Instant::now();
        let run = tokio::spawn({
            let d = d.clone();
            async move { d.deliver(entries, Instant::now()).await.unwrap() }
        });
        while good.requests().is_empty() {
            assert!(
                started.elapsed() < timeout * 3,
                "the unrelated webhook never came"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let open_when_good_arrived = bad.open.load(Ordering::SeqCst);
        assert!(
            !run.is_finished(),
            "the batch is still waiting on the bad host"
        );
        assert!(
            open_when_good_arrived > 0,
            "the bad host's attempts were still hanging when the unrelated one arrived"
        );
        run.await.unwrap();
        assert!(
            bad.peak.load(Ordering::SeqCst) <= nurture_channels::egress::DEFAULT_PER_HOST,
            "at most the per-host limit in flight: peak {}",
            bad.peak.load(Ordering::SeqCst)
        );
        assert!(bad.accepted.load(Ordering::SeqCst) <= nurture_channels::egress::DEFAULT_PER_HOST);
        assert_eq!(outbox_row(&pool, "good").await.0, "delivered");
        // The attempts that waited for the host's turn were deferred, not failed; the
        // ones that hung timed out and wait for a retry.
        let (state, reason) = outbox_row(&pool, "bad59").await;
        assert_eq!(state, "pending", "{reason}");
        let timed_out: i64 =
            sqlx::query_scalar("SELECT count(*) FROM outbox WHERE last_error LIKE '%timed out%'")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(timed_out, nurture_channels::egress::DEFAULT_PER_HOST as i64);
    });
}

/// After `breaker_failures` failures in a row a host's webhooks fail fast (not
/// attempted) for the cool-down, with the reason.
#[test]
fn a_host_that_keeps_failing_is_skipped_for_its_cooldown() {
    let bad = hanging_receiver();
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let (s, pool) = store(dir.path()).await;
        let e = egress(&["127.0.0.1"], |s| {
            s.timeout = Duration::from_millis(300);
            s.breaker_failures = 2;
            s.breaker_cooldown = Duration::from_secs(60);
        });
        let d = Deliverer::new(s.clone()).with_egress(e);
        for i in 0..4 {
            let url = format!("http://127.0.0.1:{}/hook", bad.port);
            let entry = hook(&format!("k{i}"), &format!("c{i}"), json!({"url": url}));
            s.commit(&UnitOfWork {
                outbox: vec![entry.clone()],
                ..Default::default()
            })
            .await
            .unwrap();
            d.deliver(vec![entry], Instant::now()).await.unwrap();
        }
        assert_eq!(
            bad.accepted.load(Ordering::SeqCst),
            2,
            "two attempts, then none"
        );
        let (state, reason) = outbox_row(&pool, "k3").await;
        assert_eq!(state, "pending");
        assert!(reason.contains("circuit open"), "{reason}");
    });
}

fn misbehave_dir() -> std::path::PathBuf {
    crate::util::built_plugins()
        .iter()
        .find(|(n, _)| n == "misbehave")
        .map(|(_, d)| d.clone())
        .unwrap()
}

/// `http://127.0.0.1:PORT\@allowed.provider.test/x` is 127.0.0.1 to the URL parser the
/// client uses: the plugin host checks that host (not in the manifest), and nothing is
/// sent. Through the real wasm plugin `misbehave`.
#[test]
fn plugin_backslash_at_trick_is_refused() {
    use nurture_channels::plugin::{CallOutcome, Limits, PluginConfig, PluginHost, StepCall};
    let server = ok_server();
    let dir = misbehave_dir();
    let cache = tempfile::tempdir().unwrap();
    let mut host = PluginHost::new(Limits::default()).unwrap();
    host.load(
        crate::util::plugin_manifest(&dir),
        &dir,
        PluginConfig::default(),
        cache.path(),
    )
    .unwrap();
    let fetch = |url: String| {
        let host = &host;
        async move {
            let with = json!({ "url": url });
            host.call(StepCall {
                plugin: "misbehave",
                step: "fetch",
                config: &with,
                contact: &json!({"id": "c"}),
                event: None,
                idempotency_key: "k",
                attempt: 1,
            })
            .await
        }
    };
    rt().block_on(async {
        let p = server.port;
        for url in [
            format!("http://127.0.0.1:{p}\\@allowed.provider.test/x"),
            format!("http://127.0.0.1:{p}/@allowed.provider.test/x"),
            format!("http://user:pw@127.0.0.1:{p}#@allowed.provider.test/x"),
        ] {
            match fetch(url.clone()).await {
                CallOutcome::Failed { reason } => {
                    assert!(
                        reason.contains("host `127.0.0.1` is not in plugin `misbehave`'s manifest"),
                        "{url}: {reason}"
                    );
                    assert!(!reason.contains("pw@"), "{reason}");
                }
                other => panic!("{url}: {other:?}"),
            }
        }
    });
    assert!(server.requests().is_empty(), "{:?}", server.requests());
}

/// The plugin's own host, routed by the operator, still works; and a manifest host is
/// still subject to the address rules without a route (checked after resolution).
#[test]
fn plugin_requests_to_allowed_hosts_follow_routes_and_the_address_rules() {
    use nurture_channels::plugin::{CallOutcome, Limits, PluginConfig, PluginHost, StepCall};
    let server = ok_server();
    let dir = misbehave_dir();
    let cache = tempfile::tempdir().unwrap();
    let mut host = PluginHost::new(Limits::default()).unwrap();
    let routes = [("allowed.provider.test".to_string(), server.base_url())];
    host.load(
        crate::util::plugin_manifest(&dir),
        &dir,
        PluginConfig {
            routes: routes.into_iter().collect(),
            ..Default::default()
        },
        cache.path(),
    )
    .unwrap();
    let with = json!({"url": "https://allowed.provider.test/v1/ping?token=abc"});
    let out = rt().block_on(host.call(StepCall {
        plugin: "misbehave",
        step: "fetch",
        config: &with,
        contact: &json!({"id": "c"}),
        event: None,
        idempotency_key: "k",
        attempt: 1,
    }));
    assert_eq!(
        out,
        CallOutcome::Ok {
            output: json!({"status": 200})
        }
    );
    assert_eq!(server.requests()[0].path, "/v1/ping?token=abc");
}

/// `nurture run` with a project whose webhook URL interpolates a contact's field and
/// carries credentials and a query: the field's `/`, `@`, `#`, `?` are encoded (it
/// stays one path segment on the configured host); no log line shows the password or
/// the query, not even the retry warnings of a webhook to a closed port.
#[test]
fn interpolated_values_are_encoded_and_logs_show_no_password_or_query() {
    let receiver = ok_server();
    let closed = free_port();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("workflows")).unwrap();
    std::fs::write(
        dir.join("nurture.toml"),
        "[egress]\nallow = [\"127.0.0.1\"]\n",
    )
    .unwrap();
    let rp = receiver.port;
    std::fs::write(
        dir.join("workflows/sync.yaml"),
        format!(
            "workflow: sync\ntrigger: {{ event: crm.sync }}\nsteps:\n  - id: push\n    webhook: {{ url: \"http://bot:hunter2@127.0.0.1:{rp}/crm/${{contact.crm_id}}/hook?token=s3cr3t\" }}\n  - id: down\n    webhook: {{ url: \"http://bot:hunter2@127.0.0.1:{closed}/x?token=s3cr3t\" }}\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let log = dir.join("run.log");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_nurture"))
        .args([
            "run",
            dir.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("NURTURE_API_KEY", "test-key-0123456789abcdef0123456789")
        .env("RUST_LOG", "info")
        .stdout(std::fs::File::create(dir.join("run.out")).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let api = format!("http://127.0.0.1:{port}");
    let outcome = rt().block_on(async {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !http.get(format!("{api}/healthz")).send().await.is_ok_and(|r| r.status() == 200) {
            if Instant::now() > deadline {
                return Err("nurture run did not start".to_string());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let post = |path: &str, body: Value| {
            http.post(format!("{api}{path}")).bearer_auth("test-key-0123456789abcdef0123456789").json(&body).send()
        };
        let contact = json!({"id": "lee", "email": "lee@example.com", "crm_id": "../admin@169.254.169.254#x?y=1"});
        let r = post("/v1/contacts", contact).await.unwrap();
        assert_eq!(r.status(), 200);
        let r = post("/v1/events", json!({"id": "e1", "type": "crm.sync", "contact": "lee"}))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        while receiver.requests().is_empty() {
            if Instant::now() > deadline {
                return Err("the webhook never came".to_string());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Let the second webhook fail once and its warning be logged.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        Ok(())
    });
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    outcome.unwrap();
    let seen = receiver.requests();
    assert_eq!(
        seen[0].path,
        "/crm/..%2Fadmin%40169.254.169.254%23x%3Fy%3D1/hook?token=s3cr3t"
    );
    assert_eq!(
        seen[0].header("authorization"),
        Some("Basic Ym90Omh1bnRlcjI="),
        "credentials in the URL are still sent"
    );
    let text = std::fs::read_to_string(&log).unwrap()
        + &std::fs::read_to_string(dir.join("run.out")).unwrap();
    assert!(text.contains("delivery failed, will retry"), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{closed}/x?…")), "{text}");
    for secret in ["hunter2", "s3cr3t", "token="] {
        assert!(!text.contains(secret), "`{secret}` in the logs:\n{text}");
    }
}

/// `[egress] allow` entries are checked when the project loads: a bad one is a
/// diagnostic of `nurture validate`.
#[test]
fn a_bad_egress_allow_entry_is_a_diagnostic() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("workflows")).unwrap();
    std::fs::write(
        tmp.path().join("nurture.toml"),
        "[egress]\nallow = [\"10.0.0.0/40\"]\n",
    )
    .unwrap();
    let loaded = nurture_core::project::load(tmp.path());
    let text = loaded.render();
    assert!(loaded.errors() > 0, "{text}");
    assert!(text.contains("prefix length must be 0 to 32"), "{text}");
}
