//! The first-party SMS plugin: sends a text through a Twilio-style HTTP API
//! (`POST /2010-04-01/Accounts/{sid}/Messages.json`, form body, HTTP Basic auth with the
//! account SID and auth token).

use nurture_plugin_sdk::{http, secrets, Call, Manifest, Outcome, Plugin};
use serde::Deserialize;

pub struct Sms;

#[derive(Deserialize)]
struct Send {
    to: String,
    body: String,
    #[serde(default)]
    from: Option<String>,
}

/// The sender used when a step sets no `from:`.
const DEFAULT_FROM: &str = "nurture";

impl Plugin for Sms {
    fn manifest() -> Manifest {
        Manifest::from_toml(include_str!("../plugin.toml"))
    }

    fn run(call: Call) -> Outcome {
        match call.step.as_str() {
            "send" => send(&call),
            other => Outcome::failed(format!("the sms plugin has no step `{other}`")),
        }
    }
}

fn send(call: &Call) -> Outcome {
    let cfg: Send = match call.config_as() {
        Ok(c) => c,
        Err(outcome) => return outcome,
    };
    if cfg.to.trim().is_empty() {
        return Outcome::failed("the contact has no phone number (`to:` is empty)");
    }
    let (sid, token) = match (secrets::get("account_sid"), secrets::get("auth_token")) {
        (Ok(s), Ok(t)) => (s, t),
        (Err(e), _) | (_, Err(e)) => return Outcome::failed(e),
    };
    let from = cfg.from.as_deref().unwrap_or(DEFAULT_FROM);
    let url = format!("https://api.sms-provider.test/2010-04-01/Accounts/{sid}/Messages.json");
    let response = http::Request::post(&url)
        .basic_auth(&sid, &token)
        .idempotency_key(&call.idempotency_key)
        .form(&[("To", &cfg.to), ("From", from), ("Body", &cfg.body)])
        .send();
    match Outcome::from_response(response) {
        Outcome::Ok(v) => Outcome::ok(serde_json::json!({
            "message_sid": v["body"]["sid"],
            "to": cfg.to,
        })),
        other => other,
    }
}

nurture_plugin_sdk::export_plugin!(Sms);

#[cfg(test)]
mod tests {
    use super::*;
    use nurture_plugin_sdk::testing::TestHost;
    use serde_json::json;

    fn host() -> TestHost {
        TestHost::new()
            .secret("account_sid", "AC123")
            .secret("auth_token", "tok")
            .respond(|_| Ok(http::Response::json(201, &json!({"sid": "SM1"}))))
    }

    #[test]
    fn send_posts_a_form_with_basic_auth_and_the_idempotency_key() {
        let mut host = host();
        let outcome = host.run::<Sms>(
            Call::new("send")
                .key("k-1")
                .config(json!({"to": "+359888000111", "body": "See you at the demo"})),
        );
        assert_eq!(
            outcome,
            Outcome::Ok(json!({"message_sid": "SM1", "to": "+359888000111"}))
        );
        let req = &host.requests()[0];
        assert_eq!(
            req.url,
            "https://api.sms-provider.test/2010-04-01/Accounts/AC123/Messages.json"
        );
        assert_eq!(
            req.header_value("authorization"),
            Some("Basic QUMxMjM6dG9r")
        );
        assert_eq!(req.header_value("idempotency-key"), Some("k-1"));
        assert_eq!(
            req.body_text(),
            "To=%2B359888000111&From=nurture&Body=See+you+at+the+demo"
        );
    }

    #[test]
    fn an_empty_phone_number_fails_without_calling_the_provider() {
        let mut host = host();
        let outcome = host.run::<Sms>(Call::new("send").config(json!({"to": "", "body": "x"})));
        assert!(matches!(outcome, Outcome::Failed(ref m) if m.contains("no phone number")));
        assert!(host.requests().is_empty());
    }

    #[test]
    fn a_throttled_provider_means_retry_after_its_delay() {
        let mut host = host().respond(|_| {
            Ok(http::Response::new(429, "slow down").with_header("Retry-After", "12"))
        });
        let outcome = host.run::<Sms>(Call::new("send").config(json!({"to": "+1", "body": "x"})));
        assert!(
            matches!(outcome, Outcome::RetryAfter { seconds: 12, .. }),
            "{outcome:?}"
        );
    }
}
