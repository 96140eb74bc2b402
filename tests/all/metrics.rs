//! Issue 23, item 2: Prometheus `/metrics` (checked by `promtool check metrics`), log
//! fields as JSON under `--log-json`, no colour codes when stderr is not a terminal.
//! A real `nurture run` process, a real webhook receiver on loopback.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::{free_port, http_receiver, rt};

const KEY: &str = "metrics-key-0123456789abcdef0123456789";

fn project(dir: &Path, hook_port: u16) {
    std::fs::create_dir_all(dir.join("workflows")).unwrap();
    std::fs::create_dir_all(dir.join("templates")).unwrap();
    std::fs::write(
        dir.join("nurture.toml"),
        "[sender]\nfrom = \"M <m@example.test>\"\n[egress]\nallow = [\"127.0.0.1\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("workflows/hook.yaml"),
        format!("workflow: hook\ntrigger: {{ event: signup.done }}\nsteps:\n  - id: tag-it\n    tag: [seen]\n  - id: tell\n    webhook: {{ url: \"http://127.0.0.1:{hook_port}/hook\" }}\n"),
    )
    .unwrap();
}

struct Run {
    child: Child,
    base: String,
    log: std::path::PathBuf,
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path) -> Run {
    spawn(dir, "run", "--listen")
}

/// `nurture COMMAND DIR LISTEN_FLAG 127.0.0.1:PORT --log-json`, logging to
/// `DIR/COMMAND.log`.
fn spawn(dir: &Path, command: &str, listen_flag: &str) -> Run {
    let port = free_port();
    let log = dir.join(format!("{command}.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_nurture"))
        .args([command, dir.to_str().unwrap(), listen_flag])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--log-json")
        .env("NURTURE_API_KEY", KEY)
        .env("RUST_LOG", "info,sqlx=warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("start nurture {command}: {e}"));
    Run {
        child,
        base: format!("http://127.0.0.1:{port}"),
        log,
    }
}

async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn scrape(http: &reqwest::Client, base: &str) -> String {
    let r = http
        .get(format!("{base}/metrics"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    r.text().await.unwrap()
}

/// Posts three signups (and `extra` events) to the API at `api`, waits for their three
/// webhooks, and returns the metrics at `counted` once its three deliveries show (with
/// the six steps and three units of their runs).
async fn three_signups(
    http: &reqwest::Client,
    api: &str,
    counted: &str,
    seen: &crate::util::Seen,
    extra: &[Value],
) -> String {
    let mut events: Vec<Value> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, who)| json!({"id": format!("e{}", i + 1), "type": "signup.done", "email": format!("{who}@example.com")}))
        .collect();
    events.extend_from_slice(extra);
    let r = http
        .post(format!("{api}/v1/events"))
        .header("x-api-key", KEY)
        .json(&events)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    eventually("three webhooks", || async {
        (seen.lock().unwrap().len() == 3).then_some(())
    })
    .await;
    let text = eventually("three delivered webhooks counted", || async {
        let t = scrape(http, counted).await;
        let d = sample(
            &t,
            "nurture_deliveries_total{channel=\"webhook\",outcome=\"delivered\"}",
        );
        (d == Some(3.0)).then_some(t)
    })
    .await;
    assert!(
        sample(&text, "nurture_steps_total").unwrap() >= 6.0,
        "{text}"
    );
    assert!(
        sample(&text, "nurture_units_total").unwrap() >= 3.0,
        "{text}"
    );
    text
}

/// The value of the sample `name` (with its labels as written), if present.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_count_the_work_and_pass_promtool() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (hook_port, seen) = http_receiver(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
    project(dir, hook_port);
    let run = start(dir);
    let http = reqwest::Client::new();
    rt().block_on(async {
        let base = run.base.clone();
        eventually("the API", || async {
            let r = http.get(format!("{base}/healthz")).send().await.ok()?;
            (r.status() == 200).then_some(())
        })
        .await;
        // Without the key: 401 problem+json, and no metric leaks.
        let r = http.get(format!("{base}/metrics")).send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        assert!(!r.text().await.unwrap().contains("nurture_"));
        let r = http
            .get(format!("{base}/metrics"))
            .header("x-api-key", "wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);

        let bad = json!({"id": "bad", "type": "signup.done"});
        let text = three_signups(&http, &base, &base, &seen, &[bad]).await;
        assert_eq!(
            sample(&text, "nurture_events_ingested_total{status=\"accepted\"}"),
            Some(3.0),
            "{text}"
        );
        assert!(sample(&text, "nurture_commit_duration_seconds_count").unwrap() > 0.0);
        assert!(sample(&text, "nurture_group_commit_units_count").unwrap() > 0.0);
        // Every attempt is timed and counted by outcome: 3 delivered, and any retried or
        // deferred attempt (a slow receiver on a loaded machine) in both figures alike.
        let attempts: f64 = text
            .lines()
            .filter(|l| l.starts_with("nurture_deliveries_total{channel=\"webhook\","))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum();
        assert!(attempts >= 3.0, "{text}");
        assert_eq!(
            sample(
                &text,
                "nurture_delivery_duration_seconds_count{channel=\"webhook\"}"
            ),
            Some(attempts),
            "{text}"
        );
        for name in [
            "nurture_commit_conflicts_total",
            "nurture_lease_expiries_total",
            "nurture_queued_events",
            "nurture_due_timers",
            "nurture_oldest_due_timer_lag_seconds",
            "nurture_outbox_entries{state=\"queued\"}",
            "nurture_outbox_entries{state=\"failed\"}",
            "nurture_scrape_store_errors_total",
        ] {
            assert!(sample(&text, name).is_some(), "{name} missing:\n{text}");
        }
        assert_eq!(sample(&text, "nurture_workers_alive"), Some(1.0));
        assert_eq!(
            sample(&text, "nurture_scrape_store_errors_total"),
            Some(0.0)
        );
        promtool(&text);
    });
    let log = std::fs::read_to_string(&run.log).unwrap();
    drop(run);
    // Not a terminal: no colour codes.
    assert!(!log.contains("\x1b["), "{log}");
    // Every line is JSON; an effect's fields and data are JSON values, not a message.
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let effect = lines
        .iter()
        .find(|l| l["fields"]["effect"] == "tag")
        .unwrap_or_else(|| panic!("no tag effect logged:\n{log}"));
    let f = &effect["fields"];
    assert_eq!(f["workflow"], "hook", "{effect}");
    assert_eq!(f["step"], "tag-it", "{effect}");
    assert!(f["contact"].is_string(), "{effect}");
    assert!(f["data"].is_object(), "data is not a JSON object: {effect}");
}

/// A `nurture worker` beside a `nurture serve` on one store: the worker's metrics port
/// (`--metrics-listen`) counts the units, steps and deliveries it did (the API's process
/// did none: before, a fleet of workers had no metrics of its work at all), needs the
/// key, and serves nothing of the API.
#[test]
fn a_worker_counts_its_own_work_on_its_metrics_port() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (hook_port, seen) = http_receiver(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
    project(dir, hook_port);
    let api = spawn(dir, "serve", "--listen");
    let worker = spawn(dir, "worker", "--metrics-listen");
    let http = reqwest::Client::new();
    rt().block_on(async {
        for base in [&api.base, &worker.base] {
            eventually("the health check", || async {
                let r = http.get(format!("{base}/healthz")).send().await.ok()?;
                (r.status() == 200).then_some(())
            })
            .await;
        }
        let w = &worker.base;
        let r = http.get(format!("{w}/metrics")).send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert!(!r.text().await.unwrap().contains("nurture_"));
        let event = json!([{"id": "x", "type": "signup.done", "email": "x@example.com"}]);
        for (method, path) in [
            ("POST", "/v1/events"),
            ("GET", "/v1/contacts"),
            ("GET", "/ui"),
        ] {
            let r = http
                .request(method.parse().unwrap(), format!("{w}{path}"))
                .bearer_auth(KEY)
                .json(&event)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 404, "{method} {path} on the metrics port");
        }
        let text = three_signups(&http, &api.base, w, &seen, &[]).await;
        assert_eq!(
            sample(&text, "nurture_scrape_store_errors_total"),
            Some(0.0)
        );
        promtool(&text);
        let served = scrape(&http, &api.base).await;
        assert_eq!(
            sample(&served, "nurture_steps_total"),
            Some(0.0),
            "{served}"
        );
        assert_eq!(
            sample(
                &served,
                "nurture_events_ingested_total{status=\"accepted\"}"
            ),
            Some(3.0),
            "{served}"
        );
    });
    let log = std::fs::read_to_string(&worker.log).unwrap();
    drop(worker);
    let running = log
        .lines()
        .find(|l| l.contains("nurture is running"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(running.contains("/metrics"), "{running}");
}

/// `promtool check metrics` on `text`: exit 0 and no problem printed.
fn promtool(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package `prometheus`; scripts/test installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool: {said}\n{text}");
    assert!(said.trim().is_empty(), "promtool: {said}\n{text}");
}
