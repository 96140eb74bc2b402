//! Issue 23, item 3: Segment's spec at `/v1/segment/...` (authenticated as Segment sends
//! its write key: Basic auth, the key as the user name) and CloudEvents at `/v1/events`
//! (structured, batched and binary modes), with the payloads of each spec's own
//! examples. Real `nurture serve` processes, real HTTP, SQLite and Postgres.
//!
//! The samples are the "complete example" payloads of Segment's spec pages
//! (segment.com/docs/connections/spec/{identify,page,track}) and the examples of the
//! CloudEvents 1.0 JSON format and HTTP binding (github.com/cloudevents/spec).

use serde_json::{json, Value};

use crate::sec_server::{project, Serve};
use crate::util::{fresh_postgres, rt};

const KEY: &str = "test-key-0123456789abcdef0123456789";

/// The spec examples are from 2015 and 2018: the project accepts events that old.
const OLD_EVENTS: &str = "[api]\nevent_max_age = \"36500d\"\n";

const SEGMENT_IDENTIFY: &str = r#"{
  "anonymousId": "507f191e810c19729de860ea",
  "channel": "browser",
  "context": {
    "ip": "8.8.8.8",
    "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_9_5) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/40.0.2214.115 Safari/537.36"
  },
  "integrations": { "All": false, "Mixpanel": true, "Salesforce": true },
  "messageId": "022bb90c-bbac-11e4-8dfc-aa07a5b093db",
  "receivedAt": "2015-02-23T22:28:55.387Z",
  "sentAt": "2015-02-23T22:28:55.111Z",
  "timestamp": "2015-02-23T22:28:55.111Z",
  "traits": {
    "name": "Peter Gibbons",
    "email": "peter@example.com",
    "plan": "premium",
    "logins": 5,
    "address": { "street": "6th St", "city": "San Francisco", "state": "CA", "postalCode": "94103", "country": "USA" }
  },
  "type": "identify",
  "userId": "97980cfea0067",
  "version": "1.1"
}"#;

const SEGMENT_PAGE: &str = r#"{
  "anonymousId": "507f191e810c19729de860ea",
  "channel": "browser",
  "context": {
    "ip": "8.8.8.8",
    "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_9_5) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/40.0.2214.115 Safari/537.36"
  },
  "integrations": { "All": true, "Mixpanel": false, "Salesforce": false },
  "messageId": "022bb90c-bbac-11e4-8dfc-aa07a5b093db",
  "name": "Home",
  "properties": { "title": "Welcome | Initech", "url": "http://www.example.com" },
  "receivedAt": "2015-02-23T22:28:55.387Z",
  "sentAt": "2015-02-23T22:28:55.111Z",
  "timestamp": "2015-02-23T22:28:55.111Z",
  "type": "page",
  "userId": "97980cfea0067",
  "version": "1.1"
}"#;

const SEGMENT_TRACK: &str = r#"{
  "anonymousId": "23adfd82-aa0f-45a7-a756-24f2a7a4c895",
  "context": {
    "library": { "name": "analytics.js", "version": "2.11.1" },
    "page": { "path": "/academy/", "referrer": "", "search": "", "title": "Analytics Academy", "url": "https://segment.com/academy/" },
    "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_11_0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/46.0.2490.86 Safari/537.36",
    "ip": "108.0.78.21"
  },
  "event": "Course Clicked",
  "integrations": {},
  "messageId": "ajs-f8ca1e4de5024d9430b3928bd8ac6b96",
  "properties": { "title": "Intro to Analytics" },
  "receivedAt": "2015-12-12T19:11:01.266Z",
  "sentAt": "2015-12-12T19:11:01.169Z",
  "timestamp": "2015-12-12T19:11:01.249Z",
  "type": "track",
  "userId": "AiUGstSDIg",
  "originalTimestamp": "2015-12-12T19:11:01.152Z"
}"#;

const CLOUDEVENT: &str = r#"{
    "specversion" : "1.0",
    "type" : "com.example.someevent",
    "source" : "/mycontext",
    "id" : "A234-1234-1234",
    "time" : "2018-04-05T17:31:00Z",
    "comexampleextension1" : "value",
    "comexampleothervalue" : 5,
    "datacontenttype" : "application/json",
    "data" : {
        "appinfoA" : "abc",
        "appinfoB" : 123,
        "appinfoC" : true
    }
}"#;

/// A `nurture serve` of a fresh project on SQLite and on Postgres, with `test` run
/// against each.
fn on_each_store(test: impl AsyncFn(&reqwest::Client, &Serve)) {
    let tmp = tempfile::tempdir().unwrap();
    let mut urls = vec![format!("sqlite://{}", tmp.path().join("f.db").display())];
    urls.extend(fresh_postgres());
    for (n, url) in urls.iter().enumerate() {
        let dir = tmp.path().join(format!("p{n}"));
        project(&dir, OLD_EVENTS);
        let mut serve = Serve::start(&dir, Some(url));
        rt().block_on(async {
            let http = reqwest::Client::new();
            serve.ready(&http).await;
            test(&http, &serve).await;
        });
    }
}

/// POSTs `body` to `path` as Segment does: the key as the Basic-auth user name.
async fn segment(http: &reqwest::Client, serve: &Serve, path: &str, body: &str) -> (u16, Value) {
    let r = http
        .post(format!("{}{path}", serve.base))
        .basic_auth(KEY, Some(""))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The contact's stored state (`GET /v1/contacts/{id}`).
async fn contact(http: &reqwest::Client, serve: &Serve, id: &str) -> Value {
    let r = http
        .get(format!("{}/v1/contacts/{}", serve.base, urlencode(id)))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "contact {id}");
    r.json().await.unwrap()
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The contact's events of type `kind` (`GET /v1/contacts/{id}/events`).
async fn events_of(http: &reqwest::Client, serve: &Serve, id: &str, kind: &str) -> Vec<Value> {
    let r = http
        .get(format!(
            "{}/v1/contacts/{}/events",
            serve.base,
            urlencode(id)
        ))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "events of {id}");
    let page: Value = r.json().await.unwrap();
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == kind)
        .cloned()
        .collect()
}

#[test]
fn segment_spec_examples_become_contacts_and_events() {
    on_each_store(async |http, serve| {
        let (st, a) = segment(http, serve, "/v1/segment/identify", SEGMENT_IDENTIFY).await;
        assert_eq!(st, 200, "{a}");
        assert_eq!(a["accepted"], 1, "{a}");
        let peter = contact(http, serve, "97980cfea0067").await;
        assert_eq!(peter["contact"]["email"], "peter@example.com");
        assert_eq!(peter["contact"]["fields"]["plan"], "premium");
        assert_eq!(peter["contact"]["fields"]["logins"], 5);
        assert_eq!(
            peter["contact"]["fields"]["address"]["city"],
            "San Francisco"
        );

        let (st, a) = segment(http, serve, "/v1/segment/page", SEGMENT_PAGE).await;
        assert_eq!((st, &a["accepted"]), (200, &json!(1)), "{a}");
        contact(http, serve, "97980cfea0067").await;
        let pages = events_of(http, serve, "97980cfea0067", "page.visited").await;
        assert_eq!(pages.len(), 1, "{pages:?}");
        assert_eq!(pages[0]["data"]["url"], "/");
        assert_eq!(pages[0]["data"]["href"], "http://www.example.com");
        assert_eq!(pages[0]["data"]["title"], "Welcome | Initech");
        assert_eq!(
            pages[0]["id"],
            "segment:022bb90c-bbac-11e4-8dfc-aa07a5b093db"
        );
        assert_eq!(pages[0]["at"], "2015-02-23T22:28:55.111Z");

        // A user not yet known is created by its first track call.
        let (st, a) = segment(http, serve, "/v1/segment/track", SEGMENT_TRACK).await;
        assert_eq!((st, &a["accepted"]), (200, &json!(1)), "{a}");
        contact(http, serve, "AiUGstSDIg").await;
        let clicks = events_of(http, serve, "AiUGstSDIg", "course.clicked").await;
        assert_eq!(clicks.len(), 1, "{clicks:?}");
        assert_eq!(clicks[0]["data"]["title"], "Intro to Analytics");

        // Segment retries: the same messageId is one event.
        let (st, a) = segment(http, serve, "/v1/segment/track", SEGMENT_TRACK).await;
        assert_eq!((st, &a["duplicates"]), (200, &json!(1)), "{a}");
    });
}

#[test]
fn segment_batches_are_answered_per_message() {
    on_each_store(async |http, serve| {
        let batch = json!({"batch": [
            {"type": "identify", "userId": "u-1", "traits": {"email": "u1@example.com", "score": 99}},
            {"type": "alias", "userId": "u-1", "previousId": "x"},
            {"type": "track", "userId": "u-1", "event": "Demo Requested", "messageId": "m-1"},
            {"type": "track", "event": "Nobody Did This"},
            {"type": "page", "anonymousId": "a-9", "properties": {"url": "https://shop.example/pricing?p=1"}}
        ]});
        let (st, a) = segment(http, serve, "/v1/segment/batch", &batch.to_string()).await;
        assert_eq!(st, 200, "{a}");
        let status: Vec<&str> = a["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["status"].as_str().unwrap())
            .collect();
        assert_eq!(
            status,
            ["accepted", "rejected", "accepted", "rejected", "accepted"],
            "{a}"
        );
        assert_eq!(a["results"][0]["ignored"], json!(["score"]), "{a}");
        assert!(
            a["results"][1]["reason"]
                .as_str()
                .unwrap()
                .contains("alias"),
            "{a}"
        );
        assert!(
            a["results"][3]["reason"]
                .as_str()
                .unwrap()
                .contains("userId"),
            "{a}"
        );
        let u1 = contact(http, serve, "u-1").await;
        assert_eq!(
            u1["contact"]["score"], 0,
            "a trait cannot set the score: {u1}"
        );
        assert_eq!(
            events_of(http, serve, "u-1", "demo.requested").await.len(),
            1
        );
        let visits = events_of(http, serve, "anon:a-9", "page.visited").await;
        assert_eq!(visits[0]["data"]["url"], "/pricing");
    });
}

#[test]
fn segment_calls_need_the_key_and_their_own_route() {
    on_each_store(async |http, serve| {
        let url = format!("{}/v1/segment/track", serve.base);
        for wrong in [
            http.post(&url).basic_auth("not-the-key", Some("")),
            http.post(&url),
            http.post(&url).basic_auth("segment", Some("not-the-key")),
        ] {
            let r = wrong.body(SEGMENT_TRACK).send().await.unwrap();
            assert_eq!(r.status(), 401);
        }
        // The key as the password (a webhook URL's `user:KEY@`) works too.
        let r = http
            .post(&url)
            .basic_auth("segment", Some(KEY))
            .body(SEGMENT_TRACK)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let (st, a) = segment(http, serve, "/v1/segment/track", SEGMENT_PAGE).await;
        assert_eq!(st, 400, "a page message sent to track: {a}");
        let (st, _) = segment(http, serve, "/v1/segment/alias", SEGMENT_PAGE).await;
        assert_eq!(st, 404);
    });
}

/// POSTs a CloudEvents request to `/v1/events`.
async fn cloudevents(
    http: &reqwest::Client,
    serve: &Serve,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Value) {
    let mut r = http
        .post(format!("{}/v1/events", serve.base))
        .bearer_auth(KEY)
        .body(body.to_string());
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[test]
fn cloudevents_in_every_http_mode_are_stored_once() {
    on_each_store(async |http, serve| {
        let structured = [(
            "content-type",
            "application/cloudevents+json; charset=UTF-8",
        )];
        // The spec's example names no contact: refused with the way to name one.
        let (st, a) = cloudevents(http, serve, &structured, CLOUDEVENT).await;
        assert_eq!(st, 422, "{a}");
        assert!(
            a["errors"][0]["reason"]
                .as_str()
                .unwrap()
                .contains("subject"),
            "{a}"
        );

        let mut ev: Value = serde_json::from_str(CLOUDEVENT).unwrap();
        ev["email"] = json!("Ce@Example.com");
        let (st, a) = cloudevents(http, serve, &structured, &ev.to_string()).await;
        assert_eq!((st, &a["accepted"]), (200, &json!(1)), "{a}");
        let got = events_of(http, serve, "ce@example.com", "com.example.someevent").await;
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0]["id"], "ce:/mycontext#A234-1234-1234");
        assert_eq!(got[0]["data"]["appinfoB"], 123);
        assert_eq!(got[0]["at"], "2018-04-05T17:31:00Z");
        // A redelivery (same source and id) is one event.
        let (_, a) = cloudevents(http, serve, &structured, &ev.to_string()).await;
        assert_eq!(a["duplicates"], 1, "{a}");

        // Binary mode, the HTTP binding's example, with the contact as `subject`.
        let binary = [
            ("ce-specversion", "1.0"),
            ("ce-type", "com.example.someevent"),
            ("ce-time", "2018-04-05T03:56:24Z"),
            ("ce-id", "1234-1234-1234"),
            ("ce-source", "/mycontext/subcontext"),
            ("ce-subject", "user%2042"),
            ("content-type", "application/json; charset=utf-8"),
        ];
        let (st, a) = cloudevents(http, serve, &binary, r#"{"plan": "pro"}"#).await;
        assert_eq!((st, &a["accepted"]), (200, &json!(1)), "{a}");
        let got = events_of(http, serve, "user 42", "com.example.someevent").await;
        assert_eq!(got[0]["data"]["plan"], "pro");

        // Batched mode: answered per event.
        let batch = json!([
            {"specversion": "1.0", "type": "com.example.order.paid", "source": "/shop", "id": "1", "subject": "user 42"},
            {"specversion": "0.3", "type": "com.example.order.paid", "source": "/shop", "id": "2", "subject": "user 42"},
            {"specversion": "1.0", "type": "Com.Example.Bad", "source": "/shop", "id": "3", "subject": "user 42"},
            {"specversion": "1.0", "type": "com.example.order.paid", "source": "/shop", "id": "4", "subject": "user 42", "data_base64": "AAAA"}
        ]);
        let batched = [("content-type", "application/cloudevents-batch+json")];
        let (st, a) = cloudevents(http, serve, &batched, &batch.to_string()).await;
        assert_eq!(st, 200, "{a}");
        let status: Vec<&str> = a["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["status"].as_str().unwrap())
            .collect();
        assert_eq!(
            status,
            ["accepted", "rejected", "rejected", "rejected"],
            "{a}"
        );
        // nurture's own events still go to the same route.
        let own = json!({"type": "signup.done", "contact": "user 42"});
        let (st, a) = cloudevents(
            http,
            serve,
            &[("content-type", "application/json")],
            &own.to_string(),
        )
        .await;
        assert_eq!((st, &a["accepted"]), (200, &json!(1)), "{a}");
    });
}
