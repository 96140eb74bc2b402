//! Website tracking: the script `GET /t/nurture.js` records page visits of anonymous
//! visitors at `POST /t/p`, and a visitor identified later is merged into its contact
//! ([`nurture_engine::merge`]).
//!
//! The script (no build step: `tracking/nurture.js`) keeps a random id in a first-party
//! cookie `nurture_aid` of the site, set only when the site calls `nurture.consent()`
//! (or at once with `data-consent="implied"` on its tag); `nurture.revoke()` deletes it.
//! It also adds the id as a hidden `nurture_anonymous_id` input to the forms that post to
//! this server's `/f/` forms.
//!
//! `POST /t/p` takes no API key (browsers call it from the site's pages), so it takes
//! little: only a page visit of an anonymous contact `anon:<id>` (the body names no
//! contact; an id is 16 to 64 letters, digits, `-` or `_`), only from a page of an
//! origin listed in `[tracking] allowed_origins` (its `Origin` header and the page's URL;
//! anything else is refused and stores nothing), at most [`MAX_BODY`] bytes, and within
//! the client's rate (`[tracking] hits_per_minute`; beyond it a visit is answered and
//! not recorded). A visit becomes the `page.visited` event a Segment `page` call makes
//! ([`crate::segment`]): `data.url` is the path, what scoring rules match.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use crate::problem::{ApiError, ProblemKind};
use crate::{store_events, AppState, EventItem};

/// The tracking script.
const SCRIPT: &str = include_str!("tracking/nurture.js");

/// The largest body `POST /t/p` reads.
pub const MAX_BODY: usize = 4096;

/// `GET /t/nurture.js`.
#[utoipa::path(
    get,
    path = "/t/nurture.js",
    tag = "tracking",
    operation_id = "tracking_script",
    summary = "The website tracking script",
    description = "Records page visits of an anonymous visitor (first-party cookie `nurture_aid`) once the site calls `nurture.consent()`.",
    responses((status = 200, description = "The script", content_type = "application/javascript"))
)]
pub(crate) async fn script() -> Response {
    (
        [
            ("content-type", "application/javascript; charset=utf-8"),
            ("cache-control", "public, max-age=3600"),
            ("x-content-type-options", "nosniff"),
        ],
        SCRIPT,
    )
        .into_response()
}

/// A page visit as the script sends it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Visit {
    /// The visitor's anonymous id (the cookie).
    aid: String,
    /// The page's whole URL.
    url: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    referrer: String,
}

/// `POST /t/p`: a page visit (204), or a problem and nothing stored.
#[utoipa::path(
    post,
    path = "/t/p",
    tag = "tracking",
    operation_id = "tracking_visit",
    summary = "A page visit of an anonymous visitor",
    description = "Sent by the tracking script (`text/plain` JSON: `aid`, `url`, `title`, `referrer`) from an origin in `[tracking] allowed_origins`; stored as a `page.visited` event of `anon:<aid>`.",
    request_body(content = String, content_type = "text/plain", description = "JSON: {aid, url, title?, referrer?}"),
    responses(
        (status = 204, description = "Recorded (or over the client's rate: answered, not recorded)"),
        (status = 400, description = "Not a visit: unknown fields, a bad id or URL", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "The origin is not allowed", body = crate::openapi::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 4 KiB", body = crate::openapi::Problem, content_type = "application/problem+json")
    )
)]
pub(crate) async fn collect(
    State(s): State<AppState>,
    headers: HeaderMap,
    ext: axum::http::Extensions,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let origin = allowed_origin(&s, &headers)?;
    if body.len() > MAX_BODY {
        return Err(ApiError::new(
            ProblemKind::PayloadTooLarge,
            format!("a page visit is at most {MAX_BODY} bytes"),
        ));
    }
    let visit: Visit = serde_json::from_slice(&body).map_err(|_| {
        bad("a page visit is a JSON object with `aid`, `url` and optionally `title`, `referrer`")
    })?;
    check(&visit, &origin)?;
    let client = s.hits.client(crate::peer(&ext), &headers);
    if s.hits.admit(client, std::time::Instant::now()) {
        store(&s, &visit).await?;
    }
    let mut r = StatusCode::NO_CONTENT.into_response();
    cors(&mut r, &origin);
    Ok(r)
}

/// `OPTIONS /t/p`: a CORS preflight, answered for the allowed origins only.
#[utoipa::path(
    options,
    path = "/t/p",
    tag = "tracking",
    operation_id = "tracking_preflight",
    summary = "CORS preflight of a page visit",
    responses((status = 204, description = "CORS headers for an allowed origin, none otherwise"))
)]
pub(crate) async fn preflight(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let origin = allowed_origin(&s, &headers)?;
    let mut r = StatusCode::NO_CONTENT.into_response();
    cors(&mut r, &origin);
    let h = r.headers_mut();
    h.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("POST"),
    );
    h.insert(
        "access-control-allow-headers",
        HeaderValue::from_static("content-type"),
    );
    h.insert("access-control-max-age", HeaderValue::from_static("86400"));
    Ok(r)
}

fn bad(m: &str) -> ApiError {
    ApiError::new(ProblemKind::BadRequest, m.to_string())
}

/// The request's `Origin`, when `[tracking] allowed_origins` lists it (403 otherwise).
fn allowed_origin(s: &AppState, headers: &HeaderMap) -> Result<String, ApiError> {
    let allowed = s
        .engine
        .project
        .settings
        .tracking
        .as_ref()
        .and_then(|t| t.allowed_origins.as_deref())
        .unwrap_or_default();
    let origin = headers
        .get("origin")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let listed = !origin.is_empty()
        && allowed
            .iter()
            .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin));
    if !listed {
        return Err(ApiError::new(
            ProblemKind::Forbidden,
            "this origin may not record page visits: list it in `[tracking] allowed_origins`",
        ));
    }
    Ok(origin.to_string())
}

/// Whether `id` is an anonymous id the script makes: 16 to 64 letters, digits, `-`, `_`.
pub fn valid_anonymous_id(id: &str) -> bool {
    (16..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Refuses a visit with a malformed id, or of a page not on `origin`, or with text too long.
fn check(v: &Visit, origin: &str) -> Result<(), ApiError> {
    if !valid_anonymous_id(&v.aid) {
        return Err(bad(
            "`aid` must be 16 to 64 letters, digits, `-` or `_` (the script's cookie)",
        ));
    }
    if v.url.len() > 2048 || v.referrer.len() > 2048 || v.title.len() > 512 {
        return Err(bad(
            "`url` and `referrer` are at most 2048 bytes, `title` at most 512",
        ));
    }
    let page = url::Url::parse(&v.url).map_err(|_| bad("`url` must be the page's whole URL"))?;
    if !page
        .origin()
        .ascii_serialization()
        .eq_ignore_ascii_case(origin)
    {
        return Err(bad("`url` must be a page of the request's origin"));
    }
    Ok(())
}

/// Stores the visit as a Segment `page` call of `anonymousId` would be.
async fn store(s: &AppState, v: &Visit) -> Result<(), ApiError> {
    let mut properties = json!({"url": v.url, "title": v.title});
    if !v.referrer.is_empty() {
        properties["referrer"] = json!(v.referrer);
    }
    let message = json!({"type": "page", "anonymousId": v.aid, "properties": properties});
    let event =
        crate::segment::page(message.as_object().expect("an object")).map_err(|e| bad(&e))?;
    let mut items = vec![EventItem::Event(event)];
    crate::standard::create_contacts(s, &mut items).await?;
    store_events(s, items, Vec::new()).await?;
    Ok(())
}

/// The CORS headers of an answer to an allowed `origin`.
fn cors(r: &mut Response, origin: &str) {
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(origin) {
        h.insert("access-control-allow-origin", v);
    }
    h.insert("vary", HeaderValue::from_static("Origin"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_ids_are_bounded_and_plain() {
        assert!(valid_anonymous_id("0123456789abcdef0123456789abcdef"));
        assert!(!valid_anonymous_id("short"));
        assert!(!valid_anonymous_id(&"a".repeat(65)));
        assert!(!valid_anonymous_id("alice@example.com-0123"));
        assert!(!valid_anonymous_id("anon:0123456789abcdef"));
    }
}
