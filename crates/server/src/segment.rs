//! Segment's spec ([Track, Identify, Page, Screen, Batch][spec]) at
//! `POST /v1/segment/{track,identify,page,screen,batch}`, so a Segment source, a Segment
//! destination (Webhooks) or any library that speaks the spec can send to nurture.
//!
//! Authentication is what Segment's own API uses: the write key as the Basic-auth user
//! name with an empty password (here: the API key; Bearer and `X-Api-Key` work too).
//!
//! What each call becomes:
//!
//! | call | nurture |
//! | --- | --- |
//! | `track` | an event: `Form Submitted` becomes `form.submitted` (the last word is the action, the words before it the object), a single word `Registered` becomes `custom.registered`, a name that is already dotted lowercase is kept; `data` is `properties` |
//! | `page` | a `page.visited` event: `data.url` is the page's path (what scoring rules match, e.g. `/pricing`), `data.href` the whole URL, `title`, `name`, `referrer` |
//! | `screen` | a `screen.viewed` event, `data` is `properties` and `name` |
//! | `identify` | the contact is created or updated: `traits.email` its address, `context.timezone` its time zone, other traits its fields; with `anonymousId` too, the anonymous visitor `anon:<anonymousId>` is merged into it ([`nurture_engine::merge`]: its events move to the contact) |
//! | `batch` | each item of `batch` as above, answered per item |
//!
//! `userId` is the contact's id (a contact not yet known is created, with the address
//! the call carries in `traits.email`, `context.traits.email` or `properties.email`);
//! without it, `anonymousId` names an anonymous contact `anon:<anonymousId>`.
//! `messageId` makes a resent call one event (its id is `segment:<messageId>`);
//! `timestamp` (else `originalTimestamp`) is when it happened.
//!
//! [spec]: https://segment.com/docs/connections/spec/

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde_json::{json, Map, Value};

use crate::openapi as doc;
use crate::problem::{ApiError, ProblemKind};
use crate::{store_events, AppState, EventItem};
use nurture_engine::input;

/// The calls served, by the last part of the path.
const CALLS: &[&str] = &["track", "identify", "page", "screen", "batch"];

/// Trait names nurture computes itself; an `identify` carrying them is stored without
/// them (they are listed in the item's `ignored`).
const COMPUTED: &[&str] = &["score", "grade", "segments", "unsubscribed", "suppressed"];

/// `POST /v1/segment/{call}`.
#[utoipa::path(
    post,
    path = "/v1/segment/{call}",
    tag = "events",
    operation_id = "post_segment",
    summary = "Segment calls",
    description = "Segment's spec: `track`, `page` and `screen` become events, `identify` creates or updates the contact, `batch` holds any of them. Authenticate as Segment does: the API key as the Basic user name with an empty password (Bearer and `X-Api-Key` work too).",
    params(("call" = doc::SegmentCall, Path, description = "The call")),
    request_body(content = Object, description = "A Segment message (for `batch`: `{\"batch\": [...]}`)"),
    responses(
        (status = 200, description = "Stored, at least in part: one result per item", body = doc::EventsAnswer),
        (status = 400, description = "The body is not a Segment message (a JSON object), or its `type` disagrees with the path", body = doc::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such call", body = doc::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Every message conflicts with a stored one (each in `errors`): nothing was stored", body = doc::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Every message's `data` is over `max_event_data_bytes` (each in `errors`): nothing was stored", body = doc::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Every message was refused (each in `errors`, the batch's answer as extension members): nothing was stored", body = doc::Problem, content_type = "application/problem+json")
    )
)]
pub(crate) async fn post(
    State(s): State<AppState>,
    Path(call): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    if !CALLS.contains(&call.as_str()) {
        return Err(ApiError::new(
            ProblemKind::NotFound,
            format!(
                "no Segment call `{}`: use one of {}",
                call.chars().take(40).collect::<String>(),
                CALLS.join(", ")
            ),
        ));
    }
    let messages = messages(&call, &body)?;
    let answer = ingest(&s, &messages).await?;
    Ok(Json(answer).into_response())
}

/// The messages of a request: the object itself (its `type` defaults to the path's
/// call and must agree with it), or each item of a batch's `batch` list.
fn messages(call: &str, body: &[u8]) -> Result<Vec<Value>, ApiError> {
    let bad = |m: String| ApiError::new(ProblemKind::BadRequest, m);
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| bad(format!("the body must be a Segment message (JSON): {e}")))?;
    let Value::Object(mut obj) = v else {
        return Err(bad(
            "the body must be a Segment message: a JSON object".into()
        ));
    };
    if call == "batch" {
        return match obj.remove("batch") {
            Some(Value::Array(items)) => Ok(items),
            _ => Err(bad(
                "a batch call carries its messages in `batch`, a list".into()
            )),
        };
    }
    match obj.get("type").and_then(Value::as_str) {
        None => {
            obj.insert("type".into(), Value::from(call));
        }
        Some(t) if t == call => {}
        Some(t) => {
            return Err(bad(format!(
                "this message's `type` is `{}`: send it to /v1/segment/{call} only as `{call}`",
                t.chars().take(40).collect::<String>()
            )))
        }
    }
    Ok(vec![Value::Object(obj)])
}

/// Translated messages: events for the event pipeline, contacts for `identify`.
async fn ingest(s: &AppState, messages: &[Value]) -> Result<Value, ApiError> {
    let mut items = Vec::with_capacity(messages.len());
    let mut rows = Vec::new();
    let mut extra = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        match translate(i, m) {
            Ok(Translated::Event(e)) => items.push(EventItem::Event(e)),
            Ok(Translated::Contact(row, ignored)) => {
                items.push(EventItem::Elsewhere);
                rows.push((*row, ignored));
            }
            Err(reason) => items.push(EventItem::Refused(reason)),
        }
    }
    extra.extend(identify(s, rows).await?);
    merge_visitors(s, messages, &mut extra).await?;
    crate::standard::create_contacts(s, &mut items).await?;
    store_events(s, items, extra).await
}

/// What a message becomes.
enum Translated {
    /// An event in nurture's own shape.
    Event(Value),
    /// A contact to create or update, and the traits left out.
    Contact(Box<input::ContactRow>, Vec<String>),
}

/// Translates one message.
fn translate(index: usize, m: &Value) -> Result<Translated, String> {
    let obj = m.as_object().ok_or("a Segment message is a JSON object")?;
    match obj.get("type").and_then(Value::as_str) {
        Some("track") => track(obj).map(Translated::Event),
        Some("page") => page(obj).map(Translated::Event),
        Some("screen") => screen(obj).map(Translated::Event),
        Some("identify") => {
            identify_row(index, obj).map(|(r, i)| Translated::Contact(Box::new(r), i))
        }
        Some(other) => Err(format!(
            "Segment `{}` calls are not taken: nurture takes track, identify, page and screen",
            other.chars().take(40).collect::<String>()
        )),
        None => Err("a Segment message needs `type` (track, identify, page or screen)".into()),
    }
}

/// A `track` call's event.
fn track(m: &Map<String, Value>) -> Result<Value, String> {
    let name = text(m, "event").ok_or("a track call needs `event`, the event's name")?;
    let kind = event_type(&name)?;
    event(m, &kind, properties(m)?)
}

/// A `page` call's `page.visited` event.
pub(crate) fn page(m: &Map<String, Value>) -> Result<Value, String> {
    let mut data = properties(m)?;
    let context_page = m
        .get("context")
        .and_then(|c| c.get("page"))
        .and_then(Value::as_object);
    let from_context = |k: &str| context_page.and_then(|p| p.get(k)).cloned();
    let href = data
        .get("url")
        .cloned()
        .or_else(|| from_context("url"))
        .and_then(|u| u.as_str().map(str::to_string));
    let path = data
        .get("path")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| from_context("path").and_then(|p| p.as_str().map(str::to_string)))
        .or_else(|| href.as_deref().and_then(url_path));
    if let Some(href) = href {
        data.insert("href".into(), Value::from(href));
    }
    if let Some(path) = path {
        data.insert("url".into(), Value::from(path));
    }
    for k in ["title", "referrer"] {
        if !data.contains_key(k) {
            if let Some(v) = from_context(k) {
                data.insert(k.into(), v);
            }
        }
    }
    if let Some(name) = text(m, "name") {
        data.insert("name".into(), Value::from(name));
    }
    event(m, "page.visited", data)
}

/// A `screen` call's `screen.viewed` event.
fn screen(m: &Map<String, Value>) -> Result<Value, String> {
    let mut data = properties(m)?;
    if let Some(name) = text(m, "name") {
        data.insert("name".into(), Value::from(name));
    }
    event(m, "screen.viewed", data)
}

/// The event of a message: who (`userId`, else `anonymousId`), its id from `messageId`,
/// its time from `timestamp`.
fn event(m: &Map<String, Value>, kind: &str, data: Map<String, Value>) -> Result<Value, String> {
    let contact = contact_id(m)?;
    let mut e = json!({"type": kind, "contact": contact, "data": data});
    if let Some(email) = email(m) {
        e["email"] = Value::from(email);
    }
    if let Some(id) = text(m, "messageId") {
        e["id"] = Value::from(format!("segment:{id}"));
    }
    if let Some(at) = text(m, "timestamp").or_else(|| text(m, "originalTimestamp")) {
        e["at"] = Value::from(at);
    }
    Ok(e)
}

/// An `identify` call's contact row, and the traits left out.
fn identify_row(
    index: usize,
    m: &Map<String, Value>,
) -> Result<(input::ContactRow, Vec<String>), String> {
    let mut contact = Map::new();
    contact.insert("id".into(), Value::from(contact_id(m)?));
    let mut ignored = Vec::new();
    match m.get("traits") {
        None | Some(Value::Null) => {}
        Some(Value::Object(traits)) => {
            for (k, v) in traits {
                if COMPUTED.contains(&k.as_str()) || k == "id" {
                    ignored.push(k.clone());
                } else {
                    contact.insert(k.clone(), v.clone());
                }
            }
        }
        Some(_) => return Err("`traits` must be a JSON object".into()),
    }
    let tz = m
        .get("context")
        .and_then(|c| c.get("timezone"))
        .and_then(Value::as_str)
        .filter(|tz| tz.parse::<chrono_tz::Tz>().is_ok());
    if let (Some(tz), false) = (tz, contact.contains_key("timezone")) {
        contact.insert("timezone".into(), Value::from(tz));
    }
    input::parse_contact(index, &Value::Object(contact))
        .map(|row| (row, ignored))
        .map_err(|e| e.to_string())
}

/// Creates or updates the contacts of `identify` calls: one result per row.
async fn identify(
    s: &AppState,
    rows: Vec<(input::ContactRow, Vec<String>)>,
) -> Result<Vec<Value>, ApiError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let (rows, ignored): (Vec<_>, Vec<_>) = rows.into_iter().unzip();
    let summary = s
        .engine
        .import_contacts(&rows, Utc::now())
        .await
        .map_err(|e| ApiError::from_engine(e, "no contact of the identify calls was stored"))?;
    s.wake.notify_one();
    Ok(rows
        .iter()
        .zip(ignored)
        .map(|(row, ignored)| {
            let refused = summary.rejected.iter().find(|r| r.at == row.line);
            match refused {
                Some(r) => json!({"index": row.line, "status": "rejected", "code": 422, "reason": r.reason}),
                None => {
                    let mut ok = json!({"index": row.line, "status": "accepted", "contact": row.id});
                    if !ignored.is_empty() {
                        ok["ignored"] = Value::from(ignored);
                    }
                    ok
                }
            }
        })
        .collect())
}

/// Merges the anonymous visitor of each stored `identify` call that carries both
/// `userId` and `anonymousId` into the contact (`anon:<anonymousId>` becomes `userId`:
/// [`nurture_engine::merge`]); the call's result says what moved (`merged`).
async fn merge_visitors(
    s: &AppState,
    messages: &[Value],
    extra: &mut [Value],
) -> Result<(), ApiError> {
    for r in extra.iter_mut().filter(|r| r["status"] == "accepted") {
        let Some(m) = r["index"]
            .as_u64()
            .and_then(|i| messages.get(i as usize))
            .and_then(Value::as_object)
        else {
            continue;
        };
        let (Some(anonymous), Ok(user)) = (text(m, "anonymousId"), contact_id(m)) else {
            continue;
        };
        let from = format!("anon:{anonymous}");
        if user == from {
            continue;
        }
        let merged = s
            .engine
            .merge_anonymous(&from, &user, "segment.identify", Utc::now())
            .await;
        r["merged"] = match merged {
            Ok(m) => json!({"from": from, "moved": m.moved, "before": m.already}),
            Err(nurture_engine::EngineError::Invalid(reason)) => {
                json!({"from": from, "error": reason})
            }
            Err(e) => {
                return Err(ApiError::from_engine(
                    e,
                    "the anonymous visitor was not merged",
                ))
            }
        };
        s.wake.notify_one();
    }
    Ok(())
}

/// `userId` (a string or a number), else `anon:<anonymousId>`.
fn contact_id(m: &Map<String, Value>) -> Result<String, String> {
    let id = |k: &str| match m.get(k) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    if let Some(user) = id("userId") {
        return Ok(user);
    }
    id("anonymousId")
        .map(|a| format!("anon:{a}"))
        .ok_or_else(|| "a Segment message needs `userId` or `anonymousId`".into())
}

/// The address a message carries: `traits.email`, `context.traits.email` or
/// `properties.email`, when it is an address.
fn email(m: &Map<String, Value>) -> Option<String> {
    let at = |path: &[&str]| {
        let mut v = Value::Object(m.clone());
        for k in path {
            v = v.get(*k)?.clone();
        }
        v.as_str().map(|s| s.trim().to_lowercase())
    };
    [
        &["traits", "email"][..],
        &["context", "traits", "email"][..],
        &["properties", "email"][..],
    ]
    .iter()
    .filter_map(|p| at(p))
    .find(|e| input::valid_email(e))
}

/// `properties` (an object; none: empty).
fn properties(m: &Map<String, Value>) -> Result<Map<String, Value>, String> {
    match m.get("properties") {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(p)) => Ok(p.clone()),
        Some(_) => Err("`properties` must be a JSON object".into()),
    }
}

/// A non-empty string field, trimmed.
fn text(m: &Map<String, Value>, k: &str) -> Option<String> {
    m.get(k)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// The path of a URL (`https://a.example/pricing?x=1` -> `/pricing`).
fn url_path(href: &str) -> Option<String> {
    url::Url::parse(href).ok().map(|u| u.path().to_string())
}

/// The nurture event type of a Segment event name (see the module docs).
pub(crate) fn event_type(name: &str) -> Result<String, String> {
    if nurture_core::events::check_event_type(name).is_ok() {
        return Ok(name.to_string());
    }
    let words: Vec<String> = name
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let candidate = match words.as_slice() {
        [] => String::new(),
        [one] => format!("custom.{one}"),
        [object @ .., action] => format!("{}.{action}", object.join("_")),
    };
    let candidate = if candidate.starts_with(|c: char| c.is_ascii_lowercase()) {
        candidate
    } else {
        format!("custom.{candidate}")
    };
    nurture_core::events::check_event_type(&candidate)
        .map(|_| candidate)
        .map_err(|_| {
            format!(
                "the event name {} has no nurture event type: use letters, digits and spaces (e.g. \"Form Submitted\")",
                nurture_core::events::shown(name)
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_event_names_become_dotted_types() {
        assert_eq!(event_type("Form Submitted").unwrap(), "form.submitted");
        assert_eq!(
            event_type("Product List Viewed").unwrap(),
            "product_list.viewed"
        );
        assert_eq!(event_type("Registered").unwrap(), "custom.registered");
        assert_eq!(event_type("page.visited").unwrap(), "page.visited");
        assert_eq!(event_type("2fa Enabled").unwrap(), "custom.2fa.enabled");
        assert!(event_type("Überweisung Gesendet").is_err());
        assert!(event_type("!!!").is_err());
    }

    #[test]
    fn page_paths_come_from_the_url_when_not_given() {
        assert_eq!(
            url_path("https://a.example/pricing?x=1").as_deref(),
            Some("/pricing")
        );
        assert_eq!(url_path("not a url"), None);
    }
}
