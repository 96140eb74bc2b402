//! The first-party ads plugin: adds a contact to, or removes it from, a custom audience
//! of a Meta/Google-style ad platform. Only the SHA-256 of the normalised email leaves
//! nurture, as the platforms require.

use nurture_plugin_sdk::{hashed_email, http, secrets, Call, Manifest, Outcome, Plugin};
use serde::Deserialize;

pub struct Ads;

#[derive(Deserialize)]
struct Audience {
    audience: String,
}

impl Plugin for Ads {
    fn manifest() -> Manifest {
        Manifest::from_toml(include_str!("../plugin.toml"))
    }

    fn run(call: Call) -> Outcome {
        match call.step.as_str() {
            "add-to-audience" => change(&call, "POST"),
            "remove-from-audience" => change(&call, "DELETE"),
            other => Outcome::failed(format!("the ads plugin has no step `{other}`")),
        }
    }
}

fn change(call: &Call, method: &str) -> Outcome {
    let cfg: Audience = match call.config_as() {
        Ok(c) => c,
        Err(outcome) => return outcome,
    };
    let Some(email) = call.contact_str("email").filter(|e| e.contains('@')) else {
        return Outcome::failed("the contact has no email address to match an audience by");
    };
    let token = match secrets::get("access_token") {
        Ok(t) => t,
        Err(e) => return Outcome::failed(e),
    };
    let hash = hashed_email(email);
    let url = format!(
        "https://graph.ads-provider.test/v1/audiences/{}/users",
        http::urlencode(&cfg.audience)
    );
    let response = http::Request::new(method, &url)
        .bearer(&token)
        .idempotency_key(&call.idempotency_key)
        .json(&serde_json::json!({"schema": ["EMAIL_SHA256"], "data": [[hash]]}))
        .send();
    match Outcome::from_response(response) {
        Outcome::Ok(_) => Outcome::ok(serde_json::json!({
            "audience": cfg.audience,
            "action": if method == "POST" { "added" } else { "removed" },
            "email_sha256": hash,
        })),
        other => other,
    }
}

nurture_plugin_sdk::export_plugin!(Ads);

#[cfg(test)]
mod tests {
    use super::*;
    use nurture_plugin_sdk::testing::TestHost;
    use serde_json::{json, Value};

    #[test]
    fn add_sends_only_the_hashed_normalised_email() {
        let mut host = TestHost::new().secret("access_token", "at");
        let outcome = host.run::<Ads>(
            Call::new("add-to-audience")
                .config(json!({"audience": "enterprise-prospects"}))
                .contact(json!({"email": " Ana@Example.COM "})),
        );
        assert!(outcome.is_ok(), "{outcome:?}");
        let req = &host.requests()[0];
        assert_eq!(req.method, "POST");
        assert_eq!(req.header_value("authorization"), Some("Bearer at"));
        let body: Value = req.body_json().unwrap();
        // sha256("ana@example.com")
        assert_eq!(
            body["data"][0][0],
            "8e43ca37701228e74983efdbd0cff5c16b3b1e5d4e29a7c05626d4d25a018e11"
        );
        assert!(
            !req.body_text().contains('@'),
            "no clear-text email leaves the plugin"
        );
    }

    #[test]
    fn remove_uses_delete() {
        let mut host = TestHost::new().secret("access_token", "at");
        host.run::<Ads>(
            Call::new("remove-from-audience")
                .config(json!({"audience": "newsletter-lookalike"}))
                .contact(json!({"email": "a@b.test"})),
        );
        assert_eq!(host.requests()[0].method, "DELETE");
    }
}
