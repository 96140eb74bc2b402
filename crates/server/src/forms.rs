//! Hosted forms: `POST /f/{form}` for the forms of `[forms.NAME]` in nurture.toml.
//!
//! Browsers post without the API key, so the route is hardened: the body is at most
//! 16 KiB (the server's limit for every route outside `/v1`), at most [`MAX_FIELDS`]
//! fields of [`MAX_VALUE`] characters, the address must be one, each client address has
//! `[api] form_posts_per_minute` posts a minute (429 with `Retry-After` beyond; the
//! address from `X-Forwarded-For` only when `[tracking] forwarded_for` says a proxy sets
//! it), a filled honeypot field is answered as accepted and nothing is stored, and
//! `allowed_origins` refuses posts from other sites. Submitted values are never written
//! back into HTML.
//!
//! An accepted post creates or updates the contact (by address; the form's `fields`
//! become contact fields, others are ignored) and stores a `form.submitted` event
//! `{form, ...fields}`, so workflows triggered by `form.submitted` with
//! `event.data.form == "NAME"` start. The answer: JSON when the body was JSON or the
//! client accepts `application/json`, else 303 to `redirect` (or a short thank-you page).
//!
//! Double opt-in (`double_opt_in = true`): the contact's consent is left as it is and a
//! confirmation email (`confirm_template`, a transactional `notify` outbox entry, at most
//! one per contact, form and day) links `/f/{form}/confirm/{token}`, a token signed like
//! the unsubscribe links (purpose `confirm`, with an expiry). Its GET shows a button
//! (mail scanners fetch links: a GET changes nothing); the POST sets the consent to
//! `opted_in`, journaled with the time, the client's address and the form (the proof of
//! consent), and stores a `form.confirmed` event.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use serde_json::{json, Map, Value};

use crate::problem::{ApiError, ProblemKind};
use crate::{peer, AppState, EventItem};
use nurture_channels::email::hits::HitGate;
use nurture_channels::email::track::{Purpose, TokenError};
use nurture_core::model::{FormSettings, TrackingSettings};
use nurture_engine::input;
use nurture_store::Consent;

/// Fields a post may carry, at most (the form's own, the honeypot, anything else).
pub const MAX_FIELDS: usize = 50;
/// Characters of one value, at most.
pub const MAX_VALUE: usize = 2000;
/// Bytes of one field name, at most.
const MAX_NAME: usize = 64;
/// Posts per client address per minute, unless `[api] form_posts_per_minute`.
pub const DEFAULT_POSTS_PER_MINUTE: u32 = 10;
/// The honeypot field, unless the form names another.
pub const DEFAULT_HONEYPOT: &str = "website";
/// The hidden field carrying the tracking snippet's anonymous id.
pub const ANONYMOUS_FIELD: &str = "nurture_anonymous_id";
/// How long a confirmation link works, unless the form's `confirm_ttl`.
const DEFAULT_CONFIRM_TTL: i64 = 7 * 86_400;

/// What the form routes share: the per-client rate of posts and the public base URL of
/// confirmation links.
pub struct Forms {
    gate: HitGate,
    per_minute: u32,
    base_url: Option<String>,
}

impl Forms {
    /// The limits of `project`; links start with `[email] base_url`, else `fallback`
    /// (the API's own address).
    pub fn new(project: &nurture_core::project::Project, fallback: Option<String>) -> Forms {
        let settings = &project.settings;
        let per_minute = settings
            .api
            .as_ref()
            .and_then(|a| a.form_posts_per_minute)
            .unwrap_or(DEFAULT_POSTS_PER_MINUTE)
            .max(1);
        let tracking = TrackingSettings {
            hits_per_minute: Some(per_minute),
            forwarded_for: settings.tracking.as_ref().and_then(|t| t.forwarded_for),
            ..Default::default()
        };
        let base_url = settings
            .email
            .as_ref()
            .and_then(|e| e.base_url.clone())
            .or(fallback)
            .map(|b| b.trim_end_matches('/').to_string());
        Forms {
            gate: HitGate::new(Some(&tracking)),
            per_minute,
            base_url,
        }
    }
}

/// `POST /f/{form}`.
#[utoipa::path(
    post,
    path = "/f/{form}",
    tag = "forms",
    operation_id = "form_post",
    summary = "A hosted form's submission",
    description = "No API key. Creates or updates the contact by `email` and stores `form.submitted`; urlencoded or JSON. Answers 303 to the form's `redirect`, JSON for JSON, else a thank-you page. A filled honeypot is answered as accepted and stores nothing.",
    params(("form" = String, Path, description = "The form's name (`[forms.NAME]`)")),
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "`email`, the form's `fields`, optionally `nurture_anonymous_id`"),
    responses(
        (status = 200, description = "Accepted (JSON or a page)"),
        (status = 303, description = "Accepted: to the form's `redirect`"),
        (status = 400, description = "No valid email, too many or too long fields", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "The origin is not allowed", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such form", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 16 KiB", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many posts from this client (`Retry-After`)", body = crate::openapi::Problem, content_type = "application/problem+json")
    )
)]
pub(crate) async fn post(
    State(s): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    ext: axum::http::Extensions,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let client = s.forms.gate.client(peer(&ext), &headers);
    if !s.forms.gate.admit(client, Instant::now()) {
        return Err(rate_limited(s.forms.per_minute));
    }
    let form = find(&s, &name)?;
    check_origin(form, &headers)?;
    let json_body = is_json(&headers);
    let mut fields = if json_body {
        json_fields(&body)?
    } else {
        urlencoded_fields(&headers, &body)?
    };
    let wants_json = json_body || accepts_json(&headers);
    let honeypot = form.honeypot.as_deref().unwrap_or(DEFAULT_HONEYPOT);
    if fields.get(honeypot).is_some_and(|v| !v.trim().is_empty()) {
        // A robot: answered as if accepted, nothing stored.
        tracing::debug!(form = %name, "hosted form: honeypot filled, nothing stored");
        return Ok(answer(form, &name, wants_json));
    }
    let anonymous_id = fields
        .remove(ANONYMOUS_FIELD)
        .filter(|a| !a.trim().is_empty());
    let email = fields
        .remove("email")
        .map(|e| e.trim().to_lowercase())
        .filter(|e| input::valid_email(e))
        .ok_or_else(|| {
            ApiError::new(
                ProblemKind::Unprocessable,
                "the form needs `email`, an email address",
            )
        })?;
    let kept: Map<String, Value> = form
        .fields
        .iter()
        .filter_map(|f| {
            let v = fields.get(f)?.trim();
            (!v.is_empty()).then(|| (f.clone(), Value::from(v)))
        })
        .collect();
    let contact = upsert_contact(&s, &email, &kept).await?;
    submitted_event(&s, &name, &contact, &email, kept).await?;
    anonymous_visitor_identified(&s, &contact, anonymous_id).await;
    if form.double_opt_in == Some(true) {
        send_confirmation(&s, form, &name, &contact, &email).await?;
    }
    Ok(answer(form, &name, wants_json))
}

/// The form `name` of the project, else 404.
fn find<'a>(s: &'a AppState, name: &str) -> Result<&'a FormSettings, ApiError> {
    s.engine
        .project
        .settings
        .forms
        .get(name)
        .ok_or_else(|| crate::no_such("form", name))
}

/// 429 with `Retry-After`: the seconds one post takes to come back.
fn rate_limited(per_minute: u32) -> ApiError {
    let wait = 60u64.div_ceil(u64::from(per_minute)).max(1);
    ApiError::new(
        ProblemKind::TooManyRequests,
        format!("at most {per_minute} form posts a minute from one address: retry later"),
    )
    .header(axum::http::header::RETRY_AFTER, HeaderValue::from(wait))
}

/// With `allowed_origins`, the post's `Origin` must be one of them (403 otherwise).
fn check_origin(form: &FormSettings, headers: &HeaderMap) -> Result<(), ApiError> {
    if form.allowed_origins.is_empty() {
        return Ok(());
    }
    let origin = headers.get("origin").and_then(|v| v.to_str().ok());
    match origin {
        Some(o)
            if form
                .allowed_origins
                .iter()
                .any(|a| a.eq_ignore_ascii_case(o)) =>
        {
            Ok(())
        }
        _ => Err(ApiError::new(
            ProblemKind::Forbidden,
            "this form takes posts only from the sites in its `allowed_origins`",
        )),
    }
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn is_json(headers: &HeaderMap) -> bool {
    let ct = content_type(headers);
    ct == "application/json" || ct.ends_with("+json")
}

fn accepts_json(headers: &HeaderMap) -> bool {
    headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/json"))
}

/// A field as posted, bounded ([`MAX_FIELDS`], [`MAX_NAME`], [`MAX_VALUE`]); a name
/// posted twice keeps its last value.
fn bounded(pairs: Vec<(String, String)>) -> Result<BTreeMap<String, String>, ApiError> {
    let bad = |m: String| ApiError::new(ProblemKind::Unprocessable, m);
    if pairs.len() > MAX_FIELDS {
        return Err(bad(format!("a form post has at most {MAX_FIELDS} fields")));
    }
    let mut out = BTreeMap::new();
    for (k, v) in pairs {
        if k.is_empty() || k.len() > MAX_NAME || k.chars().any(char::is_control) {
            return Err(bad(format!(
                "field names are 1 to {MAX_NAME} bytes, printable"
            )));
        }
        if v.chars().count() > MAX_VALUE {
            return Err(bad(format!(
                "field `{k}` is longer than {MAX_VALUE} characters"
            )));
        }
        if v.chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err(bad(format!("field `{k}` holds control characters")));
        }
        out.insert(k, v);
    }
    Ok(out)
}

/// `application/x-www-form-urlencoded` (also when no type is given).
fn urlencoded_fields(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<BTreeMap<String, String>, ApiError> {
    let ct = content_type(headers);
    if !(ct.is_empty() || ct == "application/x-www-form-urlencoded") {
        return Err(ApiError::new(
            ProblemKind::BadRequest,
            "post the form as application/x-www-form-urlencoded or application/json",
        ));
    }
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(body)
        .take(MAX_FIELDS + 1)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    bounded(pairs)
}

/// A JSON object of strings, numbers and booleans.
fn json_fields(body: &[u8]) -> Result<BTreeMap<String, String>, ApiError> {
    let bad = |m: &str| ApiError::new(ProblemKind::BadRequest, m.to_string());
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| bad("the body must be a JSON object of the form's fields"))?;
    let Value::Object(obj) = v else {
        return Err(bad("the body must be a JSON object of the form's fields"));
    };
    if obj.len() > MAX_FIELDS {
        return Err(ApiError::new(
            ProblemKind::Unprocessable,
            format!("a form post has at most {MAX_FIELDS} fields"),
        ));
    }
    let mut pairs = Vec::with_capacity(obj.len());
    for (k, v) in obj {
        let text = match v {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => continue,
            _ => {
                return Err(ApiError::new(
                    ProblemKind::Unprocessable,
                    "form fields are strings, numbers or booleans",
                ))
            }
        };
        pairs.push((k, text));
    }
    bounded(pairs)
}

/// Creates or updates the contact of `email` with `fields`; its id.
async fn upsert_contact(
    s: &AppState,
    email: &str,
    fields: &Map<String, Value>,
) -> Result<String, ApiError> {
    let mut c = fields.clone();
    c.insert("email".into(), Value::from(email));
    let row = input::parse_contact(0, &Value::Object(c))
        .map_err(|e| ApiError::new(ProblemKind::Unprocessable, e.to_string()))?;
    let summary = s
        .engine
        .import_contacts(&[row], Utc::now())
        .await
        .map_err(|e| ApiError::from_engine(e, "the form was not stored"))?;
    if let Some(r) = summary.rejected.first() {
        return Err(ApiError::new(ProblemKind::Unprocessable, r.reason.clone()));
    }
    s.wake.notify_one();
    let contact = s
        .engine
        .store
        .contact_by_email(email)
        .await
        .map_err(|e| ApiError::from_engine(e.into(), "the form was not stored"))?;
    contact
        .map(|c| c.id)
        .ok_or_else(|| ApiError::new(ProblemKind::Internal, "the form's contact was not found"))
}

/// Stores the `form.submitted` event `{form, ...fields}`.
async fn submitted_event(
    s: &AppState,
    name: &str,
    contact: &str,
    email: &str,
    fields: Map<String, Value>,
) -> Result<(), ApiError> {
    let mut data = fields;
    data.insert("form".into(), Value::from(name));
    let event = json!({"type": "form.submitted", "contact": contact, "email": email, "data": data});
    crate::store_events(s, vec![EventItem::Event(event)], Vec::new()).await?;
    Ok(())
}

/// The hidden `nurture_anonymous_id` field of a post (the tracking script's visitor
/// id), after its contact `contact` was created or updated: the visitor `anon:<id>` is
/// merged into it ([`nurture_engine::Engine::merge_anonymous`]: its page visits become
/// the contact's, scored and segmented, journaled). A malformed id is ignored; a merge
/// that fails is logged and does not fail the form (the submission is stored).
async fn anonymous_visitor_identified(s: &AppState, contact: &str, anonymous_id: Option<String>) {
    let Some(id) = anonymous_id.filter(|id| crate::tracking::valid_anonymous_id(id)) else {
        return;
    };
    let from = format!("anon:{id}");
    match s
        .engine
        .merge_anonymous(&from, contact, "form", chrono::Utc::now())
        .await
    {
        Ok(m) => {
            tracing::debug!(%contact, moved = m.moved, "form post merged its anonymous visitor");
            s.wake.notify_one();
        }
        Err(e) => tracing::warn!(%contact, error = %e, "anonymous visitor not merged"),
    }
}

/// Queues the confirmation email of a double opt-in form, unless the contact's consent
/// is already `opted_in`: at most one per contact, form and UTC day (its outbox key).
async fn send_confirmation(
    s: &AppState,
    form: &FormSettings,
    name: &str,
    contact: &str,
    email: &str,
) -> Result<(), ApiError> {
    let unread = |e: nurture_store::StoreError| {
        ApiError::from_engine(
            e.into(),
            "the form was stored, the confirmation email not sent",
        )
    };
    let stored = s.engine.store.contact(contact).await.map_err(unread)?;
    if stored
        .as_ref()
        .is_some_and(|c| c.consent == Consent::OptedIn)
    {
        return Ok(());
    }
    let (Some(base), Some(template)) = (&s.forms.base_url, &form.confirm_template) else {
        tracing::error!(form = %name, "double opt-in without a base URL or template: no confirmation sent");
        return Err(ApiError::new(
            ProblemKind::Internal,
            "the form was stored, the confirmation email not sent",
        ));
    };
    let now = Utc::now();
    let ttl = form.confirm_ttl.map_or(DEFAULT_CONFIRM_TTL, |d| {
        d.seconds().min(366 * 86_400) as i64
    });
    let token = s.signer.sign_for(
        Purpose::Confirm,
        &json!({"c": contact, "a": email, "f": name, "e": now.timestamp() + ttl}),
    );
    let url = format!("{base}/f/{name}/confirm/{token}");
    let day = now.timestamp().div_euclid(86_400).to_string();
    let key = format!("optin:{}", nurture_engine::digest(&[name, contact, &day]));
    let view = stored.map(|c| json!({"id": c.id, "email": c.email, "fields": c.fields}));
    let mut contact_view = json!({"id": contact, "email": email});
    if let Some(Value::Object(f)) = view.as_ref().and_then(|v| v.get("fields")).cloned() {
        for (k, v) in f {
            contact_view
                .as_object_mut()
                .expect("object")
                .entry(k)
                .or_insert(v);
        }
    }
    let payload =
        json!({"to": email, "template": template, "contact": contact_view, "confirm_url": url});
    s.engine
        .queue_transactional(contact, &key, payload, now)
        .await
        .map_err(|e| {
            ApiError::from_engine(e, "the form was stored, the confirmation email not sent")
        })?;
    s.wake.notify_one();
    Ok(())
}

/// The answer to an accepted post (or a robot's): JSON, a 303 to `redirect`, or a page.
fn answer(form: &FormSettings, name: &str, wants_json: bool) -> Response {
    let confirm = form.double_opt_in == Some(true);
    if wants_json {
        return Json(json!({"status": "accepted", "form": name, "confirmation_sent": confirm}))
            .into_response();
    }
    if let Some(to) = &form.redirect {
        if let Ok(loc) = HeaderValue::from_str(to) {
            return (StatusCode::SEE_OTHER, [(axum::http::header::LOCATION, loc)]).into_response();
        }
    }
    let text = if confirm {
        "Thank you. Please confirm your address: we have sent you an email with a link."
    } else {
        "Thank you. Your form was received."
    };
    page(StatusCode::OK, "Thank you", &format!("<p>{text}</p>"))
}

/// A small HTML page; `body` is nurture's own text (no submitted value is ever in it).
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    (
        status,
        [
            ("content-type", "text/html; charset=utf-8"),
            ("cache-control", "no-store"),
            ("x-content-type-options", "nosniff"),
            ("content-security-policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"),
        ],
        format!("<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"robots\" content=\"noindex\"><title>{title}</title></head><body style=\"font-family:sans-serif;max-width:480px;margin:3em auto\">{body}</body></html>"),
    )
        .into_response()
}

/// Why a confirmation link is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refused {
    /// Forged, altered, for another form or purpose, or the form is gone (404).
    Invalid,
    /// Past its expiry (410).
    Expired,
}

impl Refused {
    fn page(self) -> Response {
        match self {
            Refused::Invalid => page(
                StatusCode::NOT_FOUND,
                "Link not valid",
                "<p>This confirmation link is not valid.</p>",
            ),
            Refused::Expired => page(
                StatusCode::GONE,
                "Link expired",
                "<p>This confirmation link has expired. Please fill in the form again.</p>",
            ),
        }
    }
}

/// The claims of a confirmation token for form `name`, or why it is refused.
fn confirm_claims(s: &AppState, name: &str, token: &str) -> Result<Value, Refused> {
    if find(s, name).is_err() {
        return Err(Refused::Invalid);
    }
    match s
        .signer
        .check(token, Purpose::Confirm, Utc::now().timestamp())
    {
        Ok(c) if c["f"] == name => Ok(c),
        Err(TokenError::Expired) => Err(Refused::Expired),
        _ => Err(Refused::Invalid),
    }
}

/// `GET /f/{form}/confirm/{token}`: changes nothing (mail scanners fetch links); a
/// button posts the confirmation.
#[utoipa::path(
    get,
    path = "/f/{form}/confirm/{token}",
    tag = "forms",
    operation_id = "form_confirm_page",
    summary = "The double opt-in confirmation page",
    description = "Changes nothing: shows a button that posts the confirmation.",
    params(
        ("form" = String, Path, description = "The form's name"),
        ("token" = String, Path, description = "The signed confirmation token")
    ),
    responses(
        (status = 200, description = "The page with the button", content_type = "text/html"),
        (status = 404, description = "Not a valid link", content_type = "text/html"),
        (status = 410, description = "The link has expired", content_type = "text/html")
    )
)]
pub(crate) async fn confirm_page(
    State(s): State<AppState>,
    Path((name, token)): Path<(String, String)>,
) -> Response {
    match confirm_claims(&s, &name, &token) {
        Ok(_) => page(
            StatusCode::OK,
            "Confirm your subscription",
            "<p>Please confirm that you want to receive our email.</p><form method=\"post\"><button type=\"submit\">Confirm</button></form>",
        ),
        Err(r) => r.page(),
    }
}

/// `POST /f/{form}/confirm/{token}`: the contact's consent becomes `opted_in`,
/// journaled with the time, the client's address and the form; a `form.confirmed` event
/// is stored (once per contact and form).
#[utoipa::path(
    post,
    path = "/f/{form}/confirm/{token}",
    tag = "forms",
    operation_id = "form_confirm",
    summary = "Confirm a double opt-in",
    description = "Sets the contact's consent to `opted_in`, journaled with the time, the client's address and the form.",
    params(
        ("form" = String, Path, description = "The form's name"),
        ("token" = String, Path, description = "The signed confirmation token")
    ),
    responses(
        (status = 200, description = "Confirmed", content_type = "text/html"),
        (status = 404, description = "Not a valid link", content_type = "text/html"),
        (status = 410, description = "The link has expired", content_type = "text/html")
    )
)]
pub(crate) async fn confirm(
    State(s): State<AppState>,
    Path((name, token)): Path<(String, String)>,
    headers: HeaderMap,
    ext: axum::http::Extensions,
) -> Response {
    let claims = match confirm_claims(&s, &name, &token) {
        Ok(c) => c,
        Err(r) => return r.page(),
    };
    let contact = claims["c"].as_str().unwrap_or_default().to_string();
    let address = claims["a"].as_str().unwrap_or_default().to_string();
    // The link proves the address: a contact whose address changed since is not confirmed.
    match s.engine.store.contact(&contact).await {
        Ok(Some(c)) if c.email.as_deref() == Some(address.as_str()) => {}
        Ok(_) => return Refused::Invalid.page(),
        Err(e) => return failed(ApiError::from_engine(e.into(), "not confirmed")),
    }
    let ip: Option<IpAddr> = s.forms.gate.client(peer(&ext), &headers);
    let cause = json!({
        "form": name,
        "via": "double_opt_in",
        "address": address,
        "ip": ip.map(|i| i.to_string()),
        "at": Utc::now().to_rfc3339(),
        "user_agent": headers.get("user-agent").and_then(|v| v.to_str().ok()).map(|u| u.chars().take(200).collect::<String>()),
    });
    if let Err(e) = s
        .engine
        .set_consent_because(&contact, Consent::OptedIn, cause, Utc::now())
        .await
    {
        return failed(ApiError::from_engine(e, "not confirmed"));
    }
    let id = format!(
        "form.confirmed:{}",
        nurture_engine::digest(&[&name, &contact])
    );
    if let Err(e) = crate::record(
        &s,
        "form.confirmed",
        Some(contact),
        None,
        Some(id),
        json!({"form": name}),
    )
    .await
    {
        tracing::warn!(error = %e, "the consent was recorded, its form.confirmed event not");
    }
    s.wake.notify_one();
    page(
        StatusCode::OK,
        "Subscription confirmed",
        "<p>Thank you: your subscription is confirmed.</p>",
    )
}

/// The page of a confirmation the store failed to record.
fn failed(err: ApiError) -> Response {
    let mut r = page(
        err.status(),
        "Not confirmed",
        "<p>We could not confirm your subscription just now. Please try again in a minute.</p>",
    );
    if err.kind() == ProblemKind::Unavailable {
        r.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            HeaderValue::from(crate::problem::RETRY_AFTER_SECS),
        );
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posts_are_bounded() {
        let many: Vec<(String, String)> = (0..=MAX_FIELDS)
            .map(|i| (format!("f{i}"), "x".into()))
            .collect();
        assert!(bounded(many).is_err());
        assert!(bounded(vec![("a".into(), "x".repeat(MAX_VALUE + 1))]).is_err());
        assert!(bounded(vec![("a".into(), "nul\u{0}".into())]).is_err());
        assert!(bounded(vec![("".into(), "x".into())]).is_err());
        let ok = bounded(vec![("a".into(), "1".into()), ("a".into(), "2".into())]).unwrap();
        assert_eq!(ok["a"], "2");
    }

    #[test]
    fn retry_after_is_the_time_one_post_takes_to_come_back() {
        let e = rate_limited(10);
        assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(e.into_response().headers()["retry-after"], "6");
    }
}
