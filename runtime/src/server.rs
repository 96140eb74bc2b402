//! The HTTP API and the scheduler loop of `nurture run`.
//!
//! | route | |
//! | --- | --- |
//! | `POST /v1/events` | one event or a list; answers which were accepted and why others were rejected |
//! | `POST /v1/contacts` | one contact or a list (created or updated) |
//! | `GET /v1/runs/{id}` | a run and its journal |
//! | `GET /healthz` | liveness and store reachability (no API key needed) |
//!
//! Every `/v1` route needs the API key, as `Authorization: Bearer KEY` or `X-Api-Key: KEY`.
//! When the store cannot be reached the API answers 503 with `Retry-After`, and nothing is
//! acknowledged that was not stored.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde_json::{json, Value};
use tokio::sync::{watch, Notify};

use crate::deliver::Deliverer;
use crate::engine::{Engine, EngineError};
use crate::input;

#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub api_key: Arc<String>,
    /// Wakes the scheduler when new work arrives.
    pub wake: Arc<Notify>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(health))
        .route("/v1/events", post(post_events))
        .route("/v1/contacts", post(post_contacts))
        .route("/v1/runs/{id}", get(get_run))
        .with_state(state)
}

fn authorized(state: &AppState, headers: &HeaderMap) -> bool {
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()));
    match given {
        // Constant-time comparison.
        Some(g) => {
            let a = g.as_bytes();
            let b = state.api_key.as_bytes();
            a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
        }
        None => false,
    }
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({"error": msg.into()}))).into_response()
}

fn unavailable(e: &EngineError) -> Response {
    let mut r = error(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("store unavailable, nothing was stored; retry: {e}"),
    );
    r.headers_mut()
        .insert("retry-after", axum::http::HeaderValue::from_static("5"));
    r
}

fn items(body: &Value) -> Vec<Value> {
    match body {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    }
}

async fn health(State(s): State<AppState>) -> Response {
    match s.engine.store.next_timer().await {
        Ok(_) => Json(json!({"status": "ok"})).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}")),
    }
}

/// Checks the API key and reads the body (one JSON object or a list, whatever the content
/// type says) as a list of items.
#[allow(clippy::result_large_err)]
fn request_items(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
    what: &str,
) -> Result<Vec<Value>, Response> {
    if !authorized(state, headers) {
        return Err(error(StatusCode::UNAUTHORIZED, "missing or wrong API key"));
    }
    serde_json::from_slice(body)
        .map(|b| items(&b))
        .map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                format!("the body must be a JSON {what} or a list of them: {e}"),
            )
        })
}

async fn post_events(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let body = match request_items(&s, &headers, &body, "event") {
        Ok(items) => items,
        Err(r) => return r,
    };
    let mut results: Vec<Value> = Vec::new();
    let mut valid = Vec::new();
    for (i, v) in body.iter().enumerate() {
        match input::parse_event(i, v) {
            Ok(e) => valid.push(e),
            Err(reason) => {
                results.push(json!({"index": i, "status": "rejected", "reason": reason}))
            }
        }
    }
    match s.engine.ingest(&valid, Utc::now()).await {
        Ok(outcomes) => {
            results.extend(
                outcomes
                    .iter()
                    .map(|o| serde_json::to_value(o).expect("json")),
            );
            results.sort_by_key(|r| r["index"].as_u64());
            let count = |st: &str| results.iter().filter(|r| r["status"] == st).count();
            s.wake.notify_one();
            let accepted = count("accepted");
            let duplicates = count("duplicate");
            let rejected = count("rejected");
            let status = if rejected > 0 && accepted + duplicates == 0 {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                StatusCode::OK
            };
            (
                status,
                Json(json!({"accepted": accepted, "duplicates": duplicates, "rejected": rejected, "results": results})),
            )
                .into_response()
        }
        Err(e) => unavailable(&e),
    }
}

async fn post_contacts(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let body = match request_items(&s, &headers, &body, "contact") {
        Ok(items) => items,
        Err(r) => return r,
    };
    let mut rejected = Vec::new();
    let mut rows = Vec::new();
    for (i, v) in body.iter().enumerate() {
        match input::parse_contact(i, v) {
            Ok(r) => rows.push(r),
            Err(reason) => rejected.push(input::Rejected { at: i, reason }),
        }
    }
    match s.engine.import_contacts(&rows, Utc::now()).await {
        Ok(mut summary) => {
            summary.rejected.extend(rejected);
            summary.rejected.sort_by_key(|r| r.at);
            s.wake.notify_one();
            Json(json!({
                "created": summary.created,
                "updated": summary.updated,
                "rejected": summary.rejected.iter().map(|r| json!({"index": r.at, "reason": r.reason})).collect::<Vec<_>>(),
            }))
            .into_response()
        }
        Err(e) => unavailable(&e),
    }
}

async fn get_run(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if !authorized(&s, &headers) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong API key");
    }
    let store = &s.engine.store;
    match store.run(&id).await {
        Ok(Some(run)) => match store.journal(&id).await {
            Ok(journal) => Json(json!({"run": run, "journal": journal})).into_response(),
            Err(e) => unavailable(&e.into()),
        },
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no run {id}")),
        Err(e) => unavailable(&e.into()),
    }
}

/// The scheduler: applies events, fires timers and schedules, delivers the outbox, and
/// sleeps until the next due instant (or until woken, at most `poll`).
pub async fn scheduler(
    engine: Arc<Engine>,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
    poll: Duration,
) {
    let deliverer = Deliverer::new(engine.store.clone());
    let mut failures: u32 = 0;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let now = Utc::now();
        let result: Result<(), EngineError> = async {
            let effects = engine.tick(now).await?;
            for e in &effects {
                tracing::info!(
                    contact = %e.contact,
                    workflow = e.workflow.as_deref().unwrap_or("-"),
                    step = e.step.as_deref().unwrap_or("-"),
                    effect = e.effect,
                    "{}",
                    serde_json::Value::Object(e.extra.clone())
                );
            }
            deliverer.deliver_due(Utc::now(), 200).await?;
            Ok(())
        }
        .await;
        let mut sleep = poll;
        match result {
            Ok(()) => {
                failures = 0;
                let store = &engine.store;
                let next = [
                    store.next_timer().await.ok().flatten(),
                    store.next_outbox().await.ok().flatten(),
                    engine.next_schedule(now),
                ]
                .into_iter()
                .flatten()
                .min();
                if let Some(next) = next {
                    let until = (next - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                    sleep = sleep.min(until);
                }
            }
            Err(e) => {
                failures += 1;
                sleep = Duration::from_millis(200 * 2u64.pow(failures.min(6)));
                tracing::error!(error = %e, retry_in_ms = sleep.as_millis() as u64, "scheduler step failed");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = wake.notified() => {}
            _ = shutdown.changed() => {}
        }
    }
}
