//! Issue 23, item 6: the email providers' bounce and complaint webhooks
//! (`/v1/bounces/{ses,sendgrid,postmark,mailgun}`), fed the providers' documented sample
//! payloads (tests/fixtures/providers, see its README) through a real `nurture serve`
//! on SQLite. SNS signatures are made with `openssl` and a key generated per run.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::sec_server::{project, Serve};
use crate::util::rt;

const KEY: &str = "test-key-0123456789abcdef0123456789";
const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:ses-bounces";
const CERT_URL: &str =
    "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-nurturetest.pem";
const MAILGUN_ENV: &str = "NURTURE_TEST_MAILGUN_SIGNING_KEY";
const MAILGUN_KEY: &str = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/providers")
            .join(name),
    )
    .unwrap()
}

/// A self-signed key and certificate in `dir` (key.pem), the certificate also in the
/// project's `sns-certs` folder under the name of [`CERT_URL`].
fn sns_key(dir: &Path) {
    std::fs::create_dir_all(dir.join("sns-certs")).unwrap();
    let ok = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=sns.amazonaws.com", "-keyout"])
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("sns-certs/SimpleNotificationService-nurturetest.pem"))
        .output()
        .expect("openssl is installed (scripts/test)");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

/// An SNS notification of `message`, signed (version `version`) with the key of `dir`.
fn sns(dir: &Path, message: &str, version: &str, cert_url: &str) -> Value {
    let mut env = json!({
        "Type": "Notification",
        "MessageId": format!("msg-{}", nurture_engine::digest(&[message, version])),
        "TopicArn": TOPIC,
        "Message": message,
        "Timestamp": "2016-01-27T14:59:38.237Z",
        "SignatureVersion": version,
        "SigningCertURL": cert_url,
        "UnsubscribeURL": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=x",
    });
    let mut canonical = String::new();
    for k in [
        "Message",
        "MessageId",
        "Subject",
        "Timestamp",
        "TopicArn",
        "Type",
    ] {
        if let Some(v) = env[k].as_str() {
            canonical.push_str(&format!("{k}\n{v}\n"));
        }
    }
    let text = dir.join("canonical.txt");
    std::fs::write(&text, canonical).unwrap();
    let digest = if version == "1" { "-sha1" } else { "-sha256" };
    let out = Command::new("openssl")
        .args(["dgst", digest, "-sign"])
        .arg(dir.join("key.pem"))
        .arg(&text)
        .output()
        .unwrap();
    assert!(out.status.success());
    use base64::Engine as _;
    env["Signature"] = Value::from(base64::engine::general_purpose::STANDARD.encode(out.stdout));
    env
}

fn mailgun_signed(event: &Value, key: &str, timestamp: i64, token: &str) -> Value {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(format!("{timestamp}{token}").as_bytes());
    let tag: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    json!({"signature": {"timestamp": timestamp.to_string(), "token": token, "signature": tag},
           "event-data": event["event-data"].clone()})
}

async fn send(http: &reqwest::Client, serve: &Serve, path: &str, body: String) -> (u16, Value) {
    let r = http
        .post(format!("{}{path}", serve.base))
        .basic_auth("nurture", Some(KEY))
        .header("content-type", "text/plain; charset=UTF-8")
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[test]
fn each_providers_samples_suppress_hard_bounces_and_complaints_only() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    project(
        &dir,
        &format!(
            "[api]\nevent_max_age = \"36500d\"\n[email.webhooks]\nsns_topics = [\"{TOPIC}\"]\nsns_certs = \"sns-certs\"\nmailgun_signing_key_env = \"{MAILGUN_ENV}\"\n"
        ),
    );
    sns_key(&dir);
    // (Only this test reads the variable; the server inherits it.)
    std::env::set_var(MAILGUN_ENV, MAILGUN_KEY);
    let url = format!("sqlite://{}", tmp.path().join("p.db").display());
    let mut serve = Serve::start(&dir, Some(&url));
    rt().block_on(async {
        let http = reqwest::Client::new();
        serve.ready(&http).await;
        let store = nurture_server::open_store(&url).await.unwrap();
        let suppressed = async |a: &str| store.suppression(a).await.unwrap().is_some();

        // SES through SNS, signature versions 1 and 2.
        let b = sns(&dir, &fixture("ses-bounce.json"), "1", CERT_URL);
        let (st, v) = send(&http, &serve, "/v1/bounces/ses", b.to_string()).await;
        assert_eq!((st, &v["accepted"]), (200, &json!(1)), "{v}");
        assert!(suppressed("jane@example.com").await);
        let c = sns(&dir, &fixture("ses-complaint.json"), "2", CERT_URL);
        let (st, v) = send(&http, &serve, "/v1/bounces/ses", c.to_string()).await;
        assert_eq!((st, &v["accepted"]), (200, &json!(1)), "{v}");
        assert!(suppressed("richard@example.com").await);
        let soft = fixture("ses-bounce.json")
            .replace("Permanent", "Transient")
            .replace("jane@", "soft-ses@")
            .replace("0680-000000", "0681-000000");
        let (st, v) = send(
            &http,
            &serve,
            "/v1/bounces/ses",
            sns(&dir, &soft, "2", CERT_URL).to_string(),
        )
        .await;
        assert_eq!(
            (st, &v["results"][0]["suppressed"]),
            (200, &json!(false)),
            "{v}"
        );
        assert!(!suppressed("soft-ses@example.com").await);

        // A forged SNS message: the signed message with another recipient.
        let mut forged = b.clone();
        forged["Message"] = Value::from(fixture("ses-bounce.json").replace("jane@", "mallory@"));
        let (st, v) = send(&http, &serve, "/v1/bounces/ses", forged.to_string()).await;
        assert_eq!(st, 403, "{v}");
        assert!(!suppressed("mallory@example.com").await);
        // A certificate elsewhere than on an SNS host is never fetched.
        let trap = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        trap.set_nonblocking(true).unwrap();
        let elsewhere = format!(
            "https://127.0.0.1:{}/SimpleNotificationService-nurturetest.pem",
            trap.local_addr().unwrap().port()
        );
        let m = fixture("ses-bounce.json").replace("jane@", "ssrf@");
        let (st, v) = send(
            &http,
            &serve,
            "/v1/bounces/ses",
            sns(&dir, &m, "1", &elsewhere).to_string(),
        )
        .await;
        assert_eq!(st, 403, "{v}");
        assert!(
            trap.accept().is_err(),
            "the server connected to the certificate URL"
        );
        assert!(!suppressed("ssrf@example.com").await);
        // A topic not in `sns_topics`.
        let mut other = sns(&dir, &m, "1", CERT_URL);
        other["TopicArn"] = Value::from("arn:aws:sns:us-east-1:999999999999:other");
        let (st, _) = send(&http, &serve, "/v1/bounces/ses", other.to_string()).await;
        assert_eq!(st, 403);
        assert!(!suppressed("ssrf@example.com").await);

        // SendGrid.
        let (st, v) = send(
            &http,
            &serve,
            "/v1/bounces/sendgrid",
            fixture("sendgrid-events.json"),
        )
        .await;
        assert_eq!(st, 200, "{v}");
        let statuses: Vec<&str> = v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["status"].as_str().unwrap())
            .collect();
        assert_eq!(
            statuses,
            ["ignored", "accepted", "accepted", "accepted", "accepted"],
            "{v}"
        );
        for (a, s) in [
            ("hard@test.com", true),
            ("blocked@test.com", false),
            ("dropped@test.com", true),
            ("spam@test.com", true),
            ("example@test.com", false),
        ] {
            assert_eq!(suppressed(a).await, s, "{a}");
        }

        // Postmark.
        let (st, v) = send(
            &http,
            &serve,
            "/v1/bounces/postmark",
            fixture("postmark-bounce.json"),
        )
        .await;
        assert_eq!((st, &v["accepted"]), (200, &json!(1)), "{v}");
        assert!(suppressed("john@example.com").await);
        let (st, v) = send(
            &http,
            &serve,
            "/v1/bounces/postmark",
            fixture("postmark-spam-complaint.json"),
        )
        .await;
        assert_eq!((st, &v["accepted"]), (200, &json!(1)), "{v}");
        assert!(suppressed("complainer@example.com").await);
        let soft = fixture("postmark-bounce.json")
            .replace("\"HardBounce\"", "\"SoftBounce\"")
            .replace("john@", "soft-pm@")
            .replace("4323372036854775807", "77");
        let (st, v) = send(&http, &serve, "/v1/bounces/postmark", soft).await;
        assert_eq!((st, &v["accepted"]), (200, &json!(1)), "{v}");
        assert!(!suppressed("soft-pm@example.com").await);

        // Mailgun: signed, then replayed, forged, stale.
        let sample: Value =
            serde_json::from_str(&fixture("mailgun-failed-permanent.json")).unwrap();
        let now = chrono::Utc::now().timestamp();
        let ok = mailgun_signed(&sample, MAILGUN_KEY, now, "token-1").to_string();
        let (st, v) = send(&http, &serve, "/v1/bounces/mailgun", ok.clone()).await;
        assert_eq!((st, &v["accepted"]), (200, &json!(1)), "{v}");
        assert!(suppressed("alice@example.com").await);
        let mut temp = sample.clone();
        temp["event-data"]["severity"] = json!("temporary");
        temp["event-data"]["recipient"] = json!("later@example.com");
        temp["event-data"]["id"] = json!("tmp-1");
        for (body, what) in [
            (ok, "replayed token"),
            (
                mailgun_signed(&temp, "key-wrong", now, "token-2").to_string(),
                "bad HMAC",
            ),
            (
                mailgun_signed(&temp, MAILGUN_KEY, now - 301, "token-3").to_string(),
                "stale timestamp",
            ),
        ] {
            let (st, v) = send(&http, &serve, "/v1/bounces/mailgun", body).await;
            assert_eq!(st, 403, "{what}: {v}");
        }
        assert!(store
            .contact_by_email("later@example.com")
            .await
            .unwrap()
            .is_none());
        let (st, v) = send(
            &http,
            &serve,
            "/v1/bounces/mailgun",
            mailgun_signed(&temp, MAILGUN_KEY, now, "token-4").to_string(),
        )
        .await;
        assert_eq!((st, &v["accepted"]), (200, &json!(1)), "{v}");
        assert!(!suppressed("later@example.com").await);

        // Unknown formats are 422, never 200.
        for (path, body) in [
            ("/v1/bounces/postmark", fixture("sendgrid-events.json")),
            ("/v1/bounces/sendgrid", fixture("postmark-bounce.json")),
            ("/v1/bounces/ses", fixture("ses-bounce.json")),
            ("/v1/bounces/mailgun", "{\"hello\": 1}".to_string()),
            ("/v1/bounces", fixture("sendgrid-events.json")),
        ] {
            let (st, v) = send(&http, &serve, path, body).await;
            assert_eq!(st, 422, "{path}: {v}");
        }
        // And the API key is still needed.
        let r = http
            .post(format!("{}/v1/bounces/postmark", serve.base))
            .body(fixture("postmark-bounce.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    });
}
