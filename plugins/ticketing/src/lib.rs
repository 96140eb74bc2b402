//! The first-party ticketing plugin: opens a sales or support ticket through a
//! Zendesk-style API (`POST /api/v2/tickets`, bearer token). The idempotency key is sent
//! both as a header and as the ticket's `external_id`, so a retried call finds the
//! ticket it already opened instead of opening a second one.

use nurture_plugin_sdk::{http, secrets, Call, Manifest, Outcome, Plugin};
use serde::Deserialize;

pub struct Ticketing;

#[derive(Deserialize)]
struct CreateTask {
    queue: String,
    title: String,
    #[serde(default = "normal")]
    priority: String,
    #[serde(default)]
    body: Option<String>,
}

fn normal() -> String {
    "normal".into()
}

const PRIORITIES: [&str; 4] = ["low", "normal", "high", "urgent"];

impl Plugin for Ticketing {
    fn manifest() -> Manifest {
        Manifest::from_toml(include_str!("../plugin.toml"))
    }

    fn run(call: Call) -> Outcome {
        match call.step.as_str() {
            "create-task" => create(&call),
            other => Outcome::failed(format!("the ticketing plugin has no step `{other}`")),
        }
    }
}

fn create(call: &Call) -> Outcome {
    let cfg: CreateTask = match call.config_as() {
        Ok(c) => c,
        Err(outcome) => return outcome,
    };
    if !PRIORITIES.contains(&cfg.priority.as_str()) {
        return Outcome::failed(format!(
            "priority `{}` is not one of {}",
            cfg.priority,
            PRIORITIES.join(", ")
        ));
    }
    let token = match secrets::get("api_token") {
        Ok(t) => t,
        Err(e) => return Outcome::failed(e),
    };
    let contact = &call.contact;
    let name = [
        contact["first_name"].as_str(),
        contact["last_name"].as_str(),
    ]
    .into_iter()
    .flatten()
    .collect::<Vec<_>>()
    .join(" ");
    let body = cfg.body.clone().unwrap_or_else(|| {
        format!(
            "Opened by nurture for {} ({}).",
            if name.is_empty() { "a contact" } else { &name },
            contact["email"].as_str().unwrap_or("no email")
        )
    });
    let ticket = serde_json::json!({"ticket": {
        "subject": cfg.title,
        "comment": {"body": body},
        "priority": cfg.priority,
        "group": cfg.queue,
        "external_id": call.idempotency_key,
        "requester": {"email": contact["email"], "name": name},
        "tags": ["nurture"],
    }});
    let response = http::Request::post("https://helpdesk.ticketing-provider.test/api/v2/tickets")
        .bearer(&token)
        .idempotency_key(&call.idempotency_key)
        .json(&ticket)
        .send();
    match Outcome::from_response(response) {
        Outcome::Ok(v) => Outcome::ok(serde_json::json!({
            "ticket_id": v["body"]["ticket"]["id"],
            "queue": cfg.queue,
        })),
        other => other,
    }
}

nurture_plugin_sdk::export_plugin!(Ticketing);

#[cfg(test)]
mod tests {
    use super::*;
    use nurture_plugin_sdk::testing::TestHost;
    use serde_json::{json, Value};

    #[test]
    fn create_task_opens_a_ticket_keyed_by_the_idempotency_key() {
        let mut host = TestHost::new()
            .secret("api_token", "zd")
            .respond(|_| Ok(http::Response::json(201, &json!({"ticket": {"id": 42}}))));
        let outcome = host.run::<Ticketing>(
            Call::new("create-task")
                .key("k-9")
                .config(json!({"queue": "sales", "title": "Call Ana", "priority": "high"}))
                .contact(json!({"first_name": "Ana", "email": "ana@example.com"})),
        );
        assert_eq!(
            outcome,
            Outcome::Ok(json!({"ticket_id": 42, "queue": "sales"}))
        );
        let req = &host.requests()[0];
        assert_eq!(req.header_value("authorization"), Some("Bearer zd"));
        let body: Value = req.body_json().unwrap();
        assert_eq!(body["ticket"]["external_id"], "k-9");
        assert_eq!(body["ticket"]["requester"]["email"], "ana@example.com");
        assert_eq!(body["ticket"]["priority"], "high");
    }

    #[test]
    fn an_unknown_priority_fails_before_any_request() {
        let mut host = TestHost::new().secret("api_token", "zd");
        let outcome = host.run::<Ticketing>(
            Call::new("create-task").config(json!({"queue": "q", "title": "t", "priority": "p0"})),
        );
        assert!(matches!(outcome, Outcome::Failed(ref m) if m.contains("priority")));
        assert!(host.requests().is_empty());
    }
}
