//! Issue 18, item 3: the API's errors are RFC 9457 problem details
//! (`application/problem+json`) with the status that tells the client what to do, a
//! database failure answers 500 without the database's text (a correlation id instead,
//! also in the server log), an unreachable store 503 with `Retry-After`, and a batch is
//! answered per item, never storing part of it while saying nothing was stored. Real
//! `nurture serve` processes, real HTTP on loopback, real SQLite and Postgres.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::sec_server::{project, Serve};
use crate::util::{fresh_postgres, rt};

const KEY: &str = "test-key-0123456789abcdef0123456789";

/// SQLite, and Postgres when the suite has it.
fn store_urls(dir: &Path) -> Vec<String> {
    let mut urls = vec![format!("sqlite://{}", dir.join("problem.db").display())];
    urls.extend(fresh_postgres());
    urls
}

/// Runs `test` against a `nurture serve` of a fresh project (`extra` in its nurture.toml)
/// on each store, with the store's URL.
fn on_each_store(extra: &str, test: impl AsyncFn(&reqwest::Client, &Serve, &str)) {
    let tmp = tempfile::tempdir().unwrap();
    for (n, url) in store_urls(tmp.path()).into_iter().enumerate() {
        let dir = tmp.path().join(format!("p{n}"));
        project(&dir, extra);
        let mut serve = Serve::start(&dir, Some(&url));
        rt().block_on(async {
            let http = reqwest::Client::new();
            serve.ready(&http).await;
            test(&http, &serve, &url).await;
        });
    }
}

/// An answer: status, headers, body.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Answer {
    async fn of(request: reqwest::RequestBuilder) -> Answer {
        let r = request.send().await.unwrap();
        Answer {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            text: r.text().await.unwrap(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The problem document, checked: its media type and members (`status` the HTTP
    /// status).
    fn problem(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{}",
            self.text
        );
        let v: Value = serde_json::from_str(&self.text).expect("a JSON body");
        assert_eq!(v["status"], status, "{v}");
        assert!(
            v["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("urn:nurture:problem:")),
            "{v}"
        );
        assert!(v["title"].as_str().is_some_and(|t| !t.is_empty()), "{v}");
        assert!(v["detail"].as_str().is_some_and(|t| !t.is_empty()), "{v}");
        v
    }
}

/// A raw request on a new connection (headers and what body there is), then the answer
/// as text, as far as the server sends it within 10 s.
fn raw(port: u16, request: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// The problem in a raw answer, checked as [`Answer::problem`] does.
fn raw_problem(answer: &str, status: u16) -> Value {
    assert!(
        answer.starts_with(&format!("HTTP/1.1 {status}")),
        "{answer}"
    );
    let (head, body) = answer.split_once("\r\n\r\n").expect("headers end");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "{head}"
    );
    let v: Value = serde_json::from_str(body).expect("a JSON body");
    assert_eq!(v["status"], status, "{v}");
    v
}

fn post(http: &reqwest::Client, serve: &Serve, path: &str) -> reqwest::RequestBuilder {
    http.post(format!("{}{path}", serve.base)).bearer_auth(KEY)
}

/// Each error status of the API, as a problem: 400 (not JSON; JSON of the wrong shape),
/// 401 with `WWW-Authenticate`, 404 (unknown run, unknown route) and 405 (with `Allow`)
/// with bodies, 408 for a slow body, 409 for a reused event id, 413 past `max_body_bytes`,
/// 422 for invalid items with each in `errors`. (Before, 400/401/409/413/422 were
/// `{"error": ...}` or the batch answer as `application/json`, 404 and 405 had no body,
/// and a scalar body was a 422.)
#[test]
fn each_error_status_is_a_problem_document() {
    on_each_store(
        "[api]\nmax_body_bytes = 20000\nbody_timeout = \"1s\"\n",
        async |http, serve, url| {
            let a = Answer::of(post(http, serve, "/v1/events").body("nope")).await;
            let v = a.problem(400);
            assert_eq!(v["type"], "urn:nurture:problem:bad-request", "{url}");
            let a = Answer::of(post(http, serve, "/v1/events").body("42")).await;
            a.problem(400);

            let a = Answer::of(
                http.post(format!("{}/v1/events", serve.base))
                    .json(&json!({"type": "signup.done"})),
            )
            .await;
            a.problem(401);
            assert_eq!(
                a.header("www-authenticate"),
                Some("Bearer realm=\"nurture\""),
                "{url}"
            );

            let a = Answer::of(
                http.get(format!("{}/v1/runs/no-such-run", serve.base))
                    .bearer_auth(KEY),
            )
            .await;
            let v = a.problem(404);
            assert!(v["detail"].as_str().unwrap().contains("no-such-run"), "{v}");
            let a = Answer::of(
                http.get(format!("{}/v1/no-such-route", serve.base))
                    .bearer_auth(KEY),
            )
            .await;
            a.problem(404);

            let a = Answer::of(
                http.get(format!("{}/v1/events", serve.base))
                    .bearer_auth(KEY),
            )
            .await;
            a.problem(405);
            assert!(
                a.header("allow").is_some_and(|m| m.contains("POST")),
                "{:?}",
                a.headers
            );

            let first = json!({"id": "ev-1", "type": "signup.done", "email": "first@example.com"});
            let a = Answer::of(post(http, serve, "/v1/events").json(&first)).await;
            assert_eq!(a.status, 200, "{}", a.text);
            let reused = json!({"id": "ev-1", "type": "signup.done", "email": "other@example.com"});
            let a = Answer::of(post(http, serve, "/v1/events").json(&reused)).await;
            let v = a.problem(409);
            assert_eq!(v["errors"][0]["index"], 0, "{v}");
            assert_eq!(v["errors"][0]["status"], 409, "{v}");
            assert_eq!(
                v["results"][0]["status"], "conflict",
                "the batch answer stays: {v}"
            );

            let invalid =
                json!([{"type": "signup.done"}, {"type": "signup.done", "contact": "nul\u{0}"}]);
            let a = Answer::of(post(http, serve, "/v1/events").json(&invalid)).await;
            let v = a.problem(422);
            assert_eq!(v["errors"].as_array().unwrap().len(), 2, "{v}");
            assert_eq!(v["errors"][1]["index"], 1, "{v}");
            assert_eq!(v["errors"][1]["status"], 422, "{v}");
            assert!(
                v["errors"][0]["reason"]
                    .as_str()
                    .unwrap()
                    .contains("contact"),
                "{v}"
            );
            let a = Answer::of(
                post(http, serve, "/v1/contacts")
                    .json(&json!({"id": "c1", "lifecycle": "overlord"})),
            )
            .await;
            let v = a.problem(422);
            assert_eq!(v["errors"][0]["index"], 0, "{v}");
            assert_eq!(v["created"], 0, "{v}");

            // Over the documented limit: refused before the body is read.
            let answer = raw(
            serve.port,
            &format!("POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: 30000\r\n\r\n"),
        );
            let v = raw_problem(&answer, 413);
            assert_eq!(v["max_body_bytes"], 20000, "{v}");
            assert!(
                v["detail"].as_str().unwrap().contains("max_body_bytes"),
                "{v}"
            );
            // A body that does not come within `body_timeout`.
            let answer = raw(
            serve.port,
            &format!("POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\nContent-Length: 100\r\n\r\n[{{"),
        );
            raw_problem(&answer, 408);
        },
    );
}

/// Renames the `events` table under a running server (SQLite) or drops it (Postgres).
async fn break_events_table(url: &str) {
    use sqlx::Connection;
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query("ALTER TABLE events RENAME TO events_gone")
            .execute(&mut c)
            .await
            .unwrap();
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query("DROP TABLE nurture.events CASCADE")
            .execute(&mut c)
            .await
            .unwrap();
    }
}

/// A database failure a retry cannot mend (a table the handler needs is gone) answers 500
/// with a correlation id and none of the database's text, which is in the server log under
/// that id; no `Retry-After`. A bounce batch the store refuses stores nothing, not even
/// its suppressions, and lists every item in `errors`. (Before: 503 with `Retry-After` and
/// "no such table: events" in the body, and the bounce's address suppressed while the
/// answer said nothing was stored.)
#[test]
fn a_database_failure_answers_500_with_a_correlation_id_and_no_database_text() {
    on_each_store("", async |http, serve, url| {
        break_events_table(url).await;

        let event = json!({"type": "signup.done", "email": "x@example.com"});
        let a = Answer::of(post(http, serve, "/v1/events").json(&event)).await;
        let v = a.problem(500);
        assert_eq!(a.header("retry-after"), None, "{url}");
        let id = v["correlation_id"]
            .as_str()
            .expect("a correlation id")
            .to_string();
        assert!(id.starts_with("err-"), "{v}");
        assert!(v["detail"].as_str().unwrap().contains(&id), "{v}");
        assert_eq!(v["errors"][0]["index"], 0, "{v}");
        assert_eq!(v["errors"][0]["status"], 500, "{v}");
        for internal in [
            "no such table",
            "does not exist",
            "events_gone",
            "relation \"",
            "database error",
            "sqlite",
        ] {
            assert!(
                !a.text.contains(internal),
                "{url}: {internal:?} in {}",
                a.text
            );
        }
        let log = serve.log_text();
        let logged = log
            .lines()
            .find(|l| l.contains(&id))
            .unwrap_or_else(|| panic!("{id} not in the log: {log}"));
        assert!(
            logged.contains("no such table") || logged.contains("does not exist"),
            "the full error is logged with the id: {logged}"
        );

        let bounce = json!([{"email": "gone@example.com", "type": "complaint", "reason": "abuse"}]);
        let a = Answer::of(post(http, serve, "/v1/bounces").json(&bounce)).await;
        let v = a.problem(500);
        assert_eq!(v["errors"][0]["index"], 0, "{v}");
        assert!(
            !a.text.contains("no such table") && !a.text.contains("does not exist"),
            "{}",
            a.text
        );
        let store = nurture_server::open_store(url).await.unwrap();
        assert_eq!(
            store.suppression("gone@example.com").await.unwrap(),
            None,
            "{url}: nothing was stored, not even the suppression"
        );
    });
}

/// The events `/v1/events` answered while the store could not take them: 503 with
/// `Retry-After`, as a problem without the database's text (`hidden`).
async fn assert_503(http: &reqwest::Client, serve: &Serve, hidden: &[&str]) {
    let event = json!({"id": "during", "type": "signup.done", "email": "during@example.com"});
    let a = Answer::of(post(http, serve, "/v1/events").json(&event)).await;
    let v = a.problem(503);
    assert_eq!(a.header("retry-after"), Some("5"));
    assert_eq!(v["type"], "urn:nurture:problem:store-unavailable");
    assert_eq!(v["errors"][0]["status"], 503, "{v}");
    for internal in hidden {
        assert!(!a.text.contains(internal), "{internal:?} in {}", a.text);
    }
    let a = Answer::of(http.get(format!("{}/healthz", serve.base))).await;
    a.problem(503);
}

/// A SQLite store another process holds locked for longer than its busy timeout (30 s)
/// is busy: 503 with `Retry-After`, and nothing was stored. (Before: `application/json`
/// with "database unavailable: ... database is locked".)
#[test]
fn a_locked_sqlite_store_answers_503_with_retry_after() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", tmp.path().join("locked.db").display());
    let dir = tmp.path().join("p");
    project(&dir, "");
    let mut serve = Serve::start(&dir, Some(&url));
    rt().block_on(async {
        use sqlx::Connection;
        let http = reqwest::Client::new();
        serve.ready(&http).await;
        let mut lock = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("BEGIN EXCLUSIVE")
            .execute(&mut lock)
            .await
            .unwrap();
        assert_503(&http, &serve, &["locked", "database unavailable"]).await;
        sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
        let store = nurture_server::open_store(&url).await.unwrap();
        assert!(store
            .contact_by_email("during@example.com")
            .await
            .unwrap()
            .is_none());
    });
}

/// The store cannot be reached (its Postgres database refuses connections): 503 with
/// `Retry-After`, as a problem without the database's text; `/healthz` is 503 too, as a
/// problem. (Before: `application/json` with "database unavailable: ..." and the driver's
/// text; and, with the store classifying only I/O and pool errors as unreachable, the
/// refused connection would have been a 500.)
#[test]
fn an_unreachable_store_answers_503_with_retry_after() {
    let Some(url) = fresh_postgres() else {
        return;
    };
    let db = url.rsplit('/').next().unwrap().to_string();
    let admin = std::env::var("NURTURE_TEST_DATABASE_URL").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    project(tmp.path(), "");
    let mut serve = Serve::start(tmp.path(), Some(&url));
    rt().block_on(async {
        use sqlx::Connection;
        let http = reqwest::Client::new();
        serve.ready(&http).await;
        let mut admin = sqlx::PgConnection::connect(&admin).await.unwrap();
        for sql in [
            format!("ALTER DATABASE {db} ALLOW_CONNECTIONS false"),
            format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}'"
            ),
        ] {
            sqlx::query(&sql).execute(&mut admin).await.unwrap();
        }
        for _ in 0..2 {
            let hidden = [
                "accepting connections",
                "database unavailable",
                "pool",
                db.as_str(),
            ];
            assert_503(&http, &serve, &hidden).await;
        }
        sqlx::query(&format!("ALTER DATABASE {db} ALLOW_CONNECTIONS true"))
            .execute(&mut admin)
            .await
            .unwrap();
    });
}

/// A bounce batch with bad items: the good ones are stored (events and suppressions), each
/// bad one is reported with its index and reason, and the answer counts what was stored.
/// A batch of only bad items is a 422 problem. (Before: a `reason` with a null byte was
/// accepted on SQLite and, on Postgres, made the whole request a 503 "nothing was stored"
/// after the first item's address had been suppressed; an all-bad batch was a 200.)
#[test]
fn a_bounce_batch_with_a_bad_item_stores_the_good_ones_and_says_so() {
    on_each_store("", async |http, serve, url| {
        let batch = json!([
            {"email": "hard@example.com", "type": "bounce", "permanent": true, "reason": "550 no such user"},
            {"email": "nul@example.com", "type": "bounce", "permanent": true, "reason": "550 \u{0} user"},
            {"email": "lee@example.com", "type": "complaint", "reason": "abuse report"},
            {"email": "not-an-address", "type": "bounce"},
        ]);
        let a = Answer::of(post(http, serve, "/v1/bounces").json(&batch)).await;
        assert_eq!(a.status, 200, "{url}: {}", a.text);
        let v: Value = serde_json::from_str(&a.text).unwrap();
        assert_eq!(
            (v["accepted"].clone(), v["rejected"].clone()),
            (json!(2), json!(2)),
            "{v}"
        );
        assert_eq!(v["results"][0]["status"], "accepted", "{v}");
        assert_eq!(v["results"][0]["suppressed"], true, "{v}");
        assert_eq!(v["results"][1]["status"], "rejected", "{v}");
        assert_eq!(v["results"][1]["index"], 1, "{v}");
        assert_eq!(v["results"][1]["code"], 422, "{v}");
        assert!(
            v["results"][1]["reason"]
                .as_str()
                .unwrap()
                .contains("`reason`"),
            "{v}"
        );
        assert_eq!(v["results"][2]["status"], "accepted", "{v}");
        assert_eq!(v["results"][3]["status"], "rejected", "{v}");
        assert!(
            v["results"][3]["reason"]
                .as_str()
                .unwrap()
                .contains("`email`"),
            "{v}"
        );

        let store = nurture_server::open_store(url).await.unwrap();
        for stored in ["hard@example.com", "lee@example.com"] {
            assert!(
                store.suppression(stored).await.unwrap().is_some(),
                "{url}: {stored}"
            );
            let c = store
                .contact_by_email(stored)
                .await
                .unwrap()
                .expect("its contact");
            let events = store
                .contact_events(&c.id, chrono::Utc::now() - chrono::Duration::days(1))
                .await
                .unwrap();
            assert!(
                events.iter().any(|e| e.kind.starts_with("email.")),
                "{url}: {stored}'s event: {events:?}"
            );
        }
        assert_eq!(store.suppression("nul@example.com").await.unwrap(), None);
        assert!(store
            .contact_by_email("nul@example.com")
            .await
            .unwrap()
            .is_none());

        let bad = json!([{"email": "nope"}, {"email": "x@example.com", "type": "spam"}]);
        let a = Answer::of(post(http, serve, "/v1/bounces").json(&bad)).await;
        let v = a.problem(422);
        assert_eq!(v["errors"].as_array().unwrap().len(), 2, "{v}");
        assert_eq!(v["errors"][1]["index"], 1, "{v}");
        assert!(
            v["errors"][1]["reason"]
                .as_str()
                .unwrap()
                .contains("`type`"),
            "{v}"
        );
    });
}
