//! HTTP errors of the API as RFC 9457 problem details (`application/problem+json`).
//!
//! Every error of a `/v1` route and of `/healthz` is an [`ApiError`]: a [`ProblemKind`]
//! (which fixes the status, the `type` and the `title`), a `detail` for people, and for
//! batches an `errors` list of per-item problems ([`ItemProblem`]: index, status, reason).
//!
//! A failure of the store answers by whether a retry can help
//! ([`EngineError::is_retryable`]): 503 with `Retry-After` when it can (the store is
//! unreachable or busy), else 500. Neither carries the database's text: each carries a
//! correlation id (`err-<hex>`), logged with the full error, so an operator can find it.
//!
//! (Belongs to the server crate.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value};

use nurture_engine::EngineError;

/// The media type of a problem ([RFC 9457](https://www.rfc-editor.org/rfc/rfc9457)).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Seconds a client is asked to wait before retrying a 503 (`Retry-After`).
pub const RETRY_AFTER_SECS: u64 = 5;

/// What went wrong, as a client needs to know it: each kind has one status, `type` and
/// `title` (see `docs/operators.md`, "API errors").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// 400: the body is not JSON, or not an object or a list of them.
    BadRequest,
    /// 401: the API key is missing or wrong (with `WWW-Authenticate`).
    Unauthorized,
    /// 403: a provider's webhook whose signature, signing certificate, topic or
    /// timestamp is not trusted.
    Forbidden,
    /// 404: no such route, or no such resource (a run).
    NotFound,
    /// 405: the route exists, not with this method (with `Allow`).
    MethodNotAllowed,
    /// 408: the request body did not arrive in time.
    RequestTimeout,
    /// 409: the items conflict with what is stored (an event id used by another event).
    Conflict,
    /// 413: the body, or every item's `data`, is over its limit.
    PayloadTooLarge,
    /// 422: well-formed items that are not valid.
    Unprocessable,
    /// 429: a client over its rate (hosted forms), with `Retry-After`.
    TooManyRequests,
    /// 500: a failure a retry cannot mend; details only in the server log.
    Internal,
    /// 503: the store is unreachable or busy; retry after `Retry-After`.
    Unavailable,
}

impl ProblemKind {
    /// The HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            ProblemKind::BadRequest => StatusCode::BAD_REQUEST,
            ProblemKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ProblemKind::Forbidden => StatusCode::FORBIDDEN,
            ProblemKind::NotFound => StatusCode::NOT_FOUND,
            ProblemKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ProblemKind::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ProblemKind::Conflict => StatusCode::CONFLICT,
            ProblemKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProblemKind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            ProblemKind::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ProblemKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ProblemKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The last part of the problem's `type` (`urn:nurture:problem:<slug>`).
    pub fn slug(self) -> &'static str {
        match self {
            ProblemKind::BadRequest => "bad-request",
            ProblemKind::Unauthorized => "unauthorized",
            ProblemKind::Forbidden => "forbidden",
            ProblemKind::NotFound => "not-found",
            ProblemKind::MethodNotAllowed => "method-not-allowed",
            ProblemKind::RequestTimeout => "body-timeout",
            ProblemKind::Conflict => "conflict",
            ProblemKind::PayloadTooLarge => "too-large",
            ProblemKind::Unprocessable => "invalid-items",
            ProblemKind::TooManyRequests => "rate-limited",
            ProblemKind::Internal => "internal",
            ProblemKind::Unavailable => "store-unavailable",
        }
    }

    /// A short summary, the same for every occurrence of the kind.
    pub fn title(self) -> &'static str {
        match self {
            ProblemKind::BadRequest => "The request is malformed",
            ProblemKind::Unauthorized => "Missing or wrong API key",
            ProblemKind::Forbidden => "The webhook's signature or origin is not trusted",
            ProblemKind::NotFound => "Not found",
            ProblemKind::MethodNotAllowed => "Method not allowed",
            ProblemKind::RequestTimeout => "The request body came too slowly",
            ProblemKind::Conflict => "Conflict with stored data",
            ProblemKind::PayloadTooLarge => "Too large",
            ProblemKind::Unprocessable => "Invalid items",
            ProblemKind::TooManyRequests => "Too many requests from this client",
            ProblemKind::Internal => "Internal error",
            ProblemKind::Unavailable => "The store is unavailable",
        }
    }

    /// The kind of a per-item code (413, 409, anything else 422).
    pub fn of_item_code(code: u16) -> ProblemKind {
        match code {
            409 => ProblemKind::Conflict,
            413 => ProblemKind::PayloadTooLarge,
            _ => ProblemKind::Unprocessable,
        }
    }
}

/// One item of a batch that was not stored: its index in the request, its status (the
/// code its problem would have alone) and why.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ItemProblem {
    /// Its index in the request.
    pub index: usize,
    /// The HTTP status its problem would have alone.
    pub status: u16,
    /// Why it was not stored.
    pub reason: String,
}

/// An error answer of the API, as `application/problem+json` (boxed: handlers return it
/// in their `Err`).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ApiError(Box<Problem>);

/// What an [`ApiError`] holds.
#[derive(Debug, thiserror::Error)]
#[error("{} ({}): {detail}", .kind.title(), .kind.status())]
struct Problem {
    kind: ProblemKind,
    detail: String,
    errors: Vec<ItemProblem>,
    extensions: Map<String, Value>,
    headers: Vec<(HeaderName, HeaderValue)>,
    correlation_id: Option<String>,
    /// The failure behind a 500 or 503 (logged, never sent).
    #[source]
    source: Option<EngineError>,
}

impl ApiError {
    /// A problem of `kind`; `detail` is for the client (never internal text).
    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        ApiError(Box::new(Problem {
            kind,
            detail: detail.into(),
            errors: Vec::new(),
            extensions: Map::new(),
            headers: Vec::new(),
            correlation_id: None,
            source: None,
        }))
    }

    /// 401 with `WWW-Authenticate: Bearer realm="nurture"`.
    pub fn unauthorized() -> Self {
        ApiError::new(
            ProblemKind::Unauthorized,
            "send the API key as `Authorization: Bearer KEY` or `X-Api-Key: KEY`",
        )
        .header(
            axum::http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"nurture\""),
        )
    }

    /// A failure of the store or the engine: 503 with `Retry-After` when a retry can help
    /// ([`EngineError::is_retryable`]), else 500. `detail` says what the client should
    /// know of the request's fate (e.g. "nothing was stored"). Logged here with its
    /// correlation id and the full error.
    pub fn from_engine(e: EngineError, detail: &str) -> Self {
        let id = correlation_id();
        let chain = error_chain(&e);
        let mut err = if e.is_retryable() {
            tracing::warn!(correlation_id = %id, error = %chain, "store unavailable");
            ApiError::new(
                ProblemKind::Unavailable,
                format!(
                    "{detail}; the store is unavailable or busy: retry after {RETRY_AFTER_SECS} s"
                ),
            )
            .header(
                axum::http::header::RETRY_AFTER,
                HeaderValue::from(RETRY_AFTER_SECS),
            )
        } else {
            tracing::error!(correlation_id = %id, error = %chain, "internal error");
            ApiError::new(
                ProblemKind::Internal,
                format!("{detail}; an internal error occurred: quote {id} when reporting it"),
            )
        };
        err.0.correlation_id = Some(id);
        err.0.source = Some(e);
        err
    }

    /// Adds a response header.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.0.headers.push((name, value));
        self
    }

    /// Sets the per-item problems of a batch.
    pub fn with_errors(mut self, errors: Vec<ItemProblem>) -> Self {
        self.0.errors = errors;
        self
    }

    /// Adds an extension member (e.g. a batch's counts and per-item results).
    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.0.extensions.insert(key.to_string(), value);
        self
    }

    /// The kind of problem.
    pub fn kind(&self) -> ProblemKind {
        self.0.kind
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.0.kind.status()
    }

    /// The text for the client.
    pub fn detail(&self) -> &str {
        &self.0.detail
    }

    /// The id logged with a 500's or 503's error.
    pub fn correlation_id(&self) -> Option<&str> {
        self.0.correlation_id.as_deref()
    }

    /// This problem as the problem of item `index` of a batch.
    pub fn item(&self, index: usize) -> ItemProblem {
        ItemProblem {
            index,
            status: self.status().as_u16(),
            reason: self.0.detail.clone(),
        }
    }

    /// The problem document.
    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert(
            "type".into(),
            Value::from(format!("urn:nurture:problem:{}", self.0.kind.slug())),
        );
        body.insert("title".into(), Value::from(self.0.kind.title()));
        body.insert("status".into(), Value::from(self.status().as_u16()));
        body.insert("detail".into(), Value::from(self.0.detail.clone()));
        if let Some(id) = &self.0.correlation_id {
            body.insert("instance".into(), Value::from(format!("urn:nurture:{id}")));
            body.insert("correlation_id".into(), Value::from(id.clone()));
        }
        if !self.0.errors.is_empty() {
            body.insert(
                "errors".into(),
                serde_json::to_value(&self.0.errors).expect("item problems serialize"),
            );
        }
        for (k, v) in &self.0.extensions {
            body.entry(k.clone()).or_insert_with(|| v.clone());
        }
        Value::Object(body)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body().to_string();
        let mut r = (
            self.status(),
            [(axum::http::header::CONTENT_TYPE, PROBLEM_JSON)],
            body,
        )
            .into_response();
        for (k, v) in self.0.headers {
            r.headers_mut().insert(k, v);
        }
        r
    }
}

/// A new correlation id, `err-` and 16 hex digits: unique within the process (a counter),
/// and unlikely to repeat across restarts (seeded from the clock and the process id).
pub fn correlation_id() -> String {
    static SEED: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        nanos ^ (u64::from(std::process::id()) << 40)
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!(
        "err-{:016x}",
        seed.wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    )
}

/// An error with its sources, `a: b: c`, for the log.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !s.ends_with(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        next = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use nurture_store::StoreError;

    #[test]
    fn a_retryable_store_error_is_503_with_retry_after_and_no_database_text() {
        let e = ApiError::from_engine(
            EngineError::Store(StoreError::Redacted {
                message: "pool timed out at 10.0.0.7".into(),
                retryable: true,
                unavailable: true,
            }),
            "nothing was stored",
        );
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = e.body().to_string();
        assert!(!body.contains("10.0.0.7"), "{body}");
        let r = e.into_response();
        assert_eq!(r.headers()["retry-after"], "5");
        assert_eq!(r.headers()["content-type"], PROBLEM_JSON);
    }

    #[test]
    fn any_other_store_error_is_500_with_a_correlation_id_and_no_database_text() {
        let e = ApiError::from_engine(
            EngineError::Store(StoreError::Redacted {
                message: "no such table: events".into(),
                retryable: false,
                unavailable: false,
            }),
            "nothing was stored",
        );
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let id = e.correlation_id().unwrap().to_string();
        let body = e.body();
        assert_eq!(body["correlation_id"], id.as_str());
        assert!(body["detail"].as_str().unwrap().contains(&id));
        assert!(!body.to_string().contains("no such table"), "{body}");
        assert!(e.into_response().headers().get("retry-after").is_none());
        assert_ne!(correlation_id(), correlation_id());
    }
}
