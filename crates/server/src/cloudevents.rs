//! CloudEvents 1.0 at `POST /v1/events` ([HTTP binding][binding]), told from nurture's
//! own events by the request: structured mode (`Content-Type:
//! application/cloudevents+json`, one event), batched mode
//! (`application/cloudevents-batch+json`, a list) and binary mode (the attributes in
//! `ce-` headers, the body is `data`).
//!
//! | CloudEvents | nurture |
//! | --- | --- |
//! | `type` | the event type, a dotted lowercase name (`com.example.order.paid`) |
//! | `source` + `id` | the event's id (`ce:<source>#<id>`): a redelivery is one event |
//! | `time` | when it happened (else when it is stored) |
//! | extension `email`, else `data.email`, else a `subject` that is an address | the contact's address |
//! | extension `contact`, else a `subject` that is not an address | the contact's id (created when not known) |
//! | `data` | `data` (a JSON object; other JSON values as `{"value": ...}`) |
//!
//! [binding]: https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/bindings/http-protocol-binding.md

use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use crate::problem::{ApiError, ProblemKind};
use crate::{store_events, AppState, EventItem};
use nurture_engine::input;

/// How a request carries CloudEvents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// One event as JSON, attributes and `data` together.
    Structured,
    /// A JSON list of structured events.
    Batched,
    /// Attributes in `ce-` headers, `data` in the body.
    Binary,
}

/// The CloudEvents mode of a request, `None` for nurture's own events.
pub(crate) fn mode(headers: &HeaderMap) -> Option<Mode> {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    match content_type.as_str() {
        "application/cloudevents+json" => Some(Mode::Structured),
        "application/cloudevents-batch+json" => Some(Mode::Batched),
        _ if headers.contains_key("ce-specversion") => Some(Mode::Binary),
        _ => None,
    }
}

/// The request's events, each as its attributes (`data` among them).
pub(crate) fn items(
    mode: Mode,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<Map<String, Value>>, ApiError> {
    let bad = |m: String| ApiError::new(ProblemKind::BadRequest, m);
    match mode {
        Mode::Structured => match serde_json::from_slice(body) {
            Ok(Value::Object(e)) => Ok(vec![e]),
            Ok(_) => Err(bad("a structured CloudEvent is a JSON object".into())),
            Err(e) => Err(bad(format!("the body is not a CloudEvent (JSON): {e}"))),
        },
        Mode::Batched => match serde_json::from_slice(body) {
            Ok(Value::Array(list)) => Ok(list
                .into_iter()
                .map(|v| match v {
                    Value::Object(e) => e,
                    // (Refused with a reason of its own by `translate`.)
                    _ => Map::new(),
                })
                .collect()),
            Ok(_) => Err(bad("a CloudEvents batch is a JSON list".into())),
            Err(e) => Err(bad(format!(
                "the body is not a CloudEvents batch (JSON): {e}"
            ))),
        },
        Mode::Binary => binary(headers, body).map(|e| vec![e]),
    }
}

/// A binary-mode event: `ce-` headers (percent-decoded) and the body as `data`.
fn binary(headers: &HeaderMap, body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let mut attrs = Map::new();
    for (name, value) in headers {
        let Some(attr) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        let text = value.to_str().map_err(|_| {
            ApiError::new(
                ProblemKind::BadRequest,
                format!("the header `{name}` is not text"),
            )
        })?;
        let decoded = percent_decode(text);
        attrs.insert(attr.to_string(), Value::from(decoded));
    }
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    if !body.is_empty() {
        let json_type = content_type.contains("json");
        let data: Value = match serde_json::from_slice(body) {
            Ok(v) if json_type => v,
            _ => return Err(ApiError::new(
                ProblemKind::Unprocessable,
                "a binary-mode CloudEvent's body must be JSON (`Content-Type: application/json`)",
            )),
        };
        attrs.insert("data".into(), data);
    }
    Ok(attrs)
}

/// Stores the events, creating the contacts they name: answered per event like
/// nurture's own events.
pub(crate) async fn ingest(
    s: &AppState,
    events: Vec<Map<String, Value>>,
) -> Result<Response, ApiError> {
    let mut items: Vec<EventItem> = events
        .iter()
        .map(|e| match translate(e) {
            Ok(v) => EventItem::Event(v),
            Err(reason) => EventItem::Refused(reason),
        })
        .collect();
    crate::standard::create_contacts(s, &mut items).await?;
    let answer = store_events(s, items, Vec::new()).await?;
    Ok(Json(answer).into_response())
}

/// One CloudEvent in nurture's own shape.
fn translate(e: &Map<String, Value>) -> Result<Value, String> {
    let attr = |k: &str| {
        e.get(k)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    match attr("specversion") {
        Some("1.0") => {}
        Some(v) => {
            return Err(format!(
                "CloudEvents `specversion` {} is not taken: send 1.0",
                nurture_core::events::shown(v)
            ))
        }
        None => {
            return Err("a CloudEvent needs `specversion` (1.0), `id`, `source` and `type`".into())
        }
    }
    let (Some(id), Some(source), Some(kind)) = (attr("id"), attr("source"), attr("type")) else {
        return Err("a CloudEvent needs `id`, `source` and `type`".into());
    };
    let data = match e.get("data") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(d)) => d.clone(),
        Some(other) => Map::from_iter([("value".to_string(), other.clone())]),
    };
    if e.contains_key("data_base64") {
        return Err("`data_base64` is not taken: send `data` as JSON".into());
    }
    let mut event = json!({"id": event_id(source, id), "type": kind, "data": data});
    let (contact, email) = who(e, &event["data"]);
    if contact.is_none() && email.is_none() {
        return Err("the CloudEvent names no contact: set the `contact` extension (a contact id), the `email` extension, `data.email`, or `subject` (an id or an address)".into());
    }
    if let Some(c) = contact {
        event["contact"] = Value::from(c);
    }
    if let Some(m) = email {
        event["email"] = Value::from(m);
    }
    if let Some(t) = attr("time") {
        event["at"] = Value::from(t);
    }
    Ok(event)
}

/// The contact id and the address an event names (see the module docs).
fn who(e: &Map<String, Value>, data: &Value) -> (Option<String>, Option<String>) {
    let text = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let subject = text(e.get("subject"));
    let subject_email = subject.clone().filter(|s| input::valid_email(s));
    let email = text(e.get("email"))
        .or_else(|| text(data.get("email")))
        .or(subject_email.clone())
        .map(|m| m.to_lowercase());
    let contact = text(e.get("contact")).or(subject.filter(|_| subject_email.is_none()));
    (contact, email)
}

/// `ce:<source>#<id>`; a digest of both when that is longer than an id may be.
fn event_id(source: &str, id: &str) -> String {
    let plain = format!("ce:{source}#{id}");
    if plain.len() <= input::MAX_ID_LEN && !plain.chars().any(char::is_control) {
        return plain;
    }
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("{source}\n{id}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("ce:sha256:{hex}")
}

/// RFC 3986 percent-decoding of a header value (the HTTP binding's encoding of
/// attributes); invalid sequences are kept as they are.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_mode_attributes_are_percent_decoded() {
        assert_eq!(
            percent_decode("Euro%20%E2%82%AC%20%F0%9F%98%80"),
            "Euro € 😀"
        );
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn long_source_and_id_make_a_digest_id() {
        assert_eq!(event_id("/shop", "A-1"), "ce:/shop#A-1");
        let long = event_id(&"s".repeat(300), "1");
        assert!(long.starts_with("ce:sha256:") && long.len() <= input::MAX_ID_LEN);
    }
}
