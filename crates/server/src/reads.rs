//! The API's lists: contacts, a contact's events, runs. Pages are bounded (`limit`,
//! default 100, at most 1,000) and continue from a cursor (`after`, the `next` of the
//! page before), never from an offset.
//!
//! | route | query | answer |
//! | --- | --- | --- |
//! | `GET /v1/contacts` | `after` (a contact id), `limit` | `{"contacts": [...], "next": id or null}`, by id |
//! | `GET /v1/contacts/{id}/events` | `after` (an event's `seq`), `limit` | `{"events": [...], "next": seq or null}`, as stored |
//! | `GET /v1/runs` | `workflow`, `contact`, `status`, `limit` | `{"runs": [...]}`, newest first |

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::openapi as doc;
use crate::problem::{ApiError, ProblemKind};
use crate::{no_such, AppState};

/// A page's size when `limit` is not given.
const DEFAULT_LIMIT: i64 = 100;

/// `GET /v1/contacts`.
#[utoipa::path(
    get,
    path = "/v1/contacts",
    tag = "contacts",
    operation_id = "list_contacts",
    summary = "List contacts",
    description = "By id, in pages: `next` is the `after` of the next page.",
    params(doc::Page),
    responses(
        (status = 200, description = "A page of contacts", body = doc::ContactsPage),
        (status = 400, description = "An unknown query parameter, or `limit` out of range", body = doc::Problem, content_type = "application/problem+json")
    )
)]
pub(crate) async fn contacts(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    only(&q, &["after", "limit"])?;
    let limit = limit(&q)?;
    let page = s
        .engine
        .store
        .contacts_page(q.get("after").map(String::as_str), limit)
        .await
        .map_err(|e| ApiError::from_engine(e.into(), "the contacts were not read"))?;
    let next = (page.len() as i64 == limit)
        .then(|| page.last().map(|c| c.id.clone()))
        .flatten();
    Ok(Json(json!({"contacts": page, "next": next})).into_response())
}

/// `GET /v1/contacts/{id}/events` (the contact by id, else by address).
#[utoipa::path(
    get,
    path = "/v1/contacts/{id}/events",
    tag = "contacts",
    operation_id = "list_contact_events",
    summary = "A contact's events",
    description = "As stored, in pages: `next` (a `seq`) is the `after` of the next page.",
    params(("id" = String, Path, description = "The contact's id, or its email address"), doc::Page),
    responses(
        (status = 200, description = "A page of events", body = doc::ContactEventsPage),
        (status = 400, description = "An unknown query parameter, `after` not a number, or `limit` out of range", body = doc::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such contact", body = doc::Problem, content_type = "application/problem+json")
    )
)]
pub(crate) async fn contact_events(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    only(&q, &["after", "limit"])?;
    let limit = limit(&q)?;
    let after = match q.get("after") {
        None => 0,
        Some(a) => a.parse::<i64>().map_err(|_| {
            bad("`after` is the `seq` of the last event of the page before (a number)")
        })?,
    };
    let unread = |e: nurture_store::StoreError| {
        ApiError::from_engine(e.into(), "the contact's events were not read")
    };
    let store = &*s.engine.store;
    let Some(contact) = nurture_engine::story::find_contact(store, &id)
        .await
        .map_err(unread)?
    else {
        return Err(no_such("contact", &id));
    };
    let page = store
        .contact_events_page(&contact.id, after, limit)
        .await
        .map_err(unread)?;
    let next = (page.len() as i64 == limit)
        .then(|| page.last().map(|e| e.seq))
        .flatten();
    Ok(Json(json!({"contact": contact.id, "events": page, "next": next})).into_response())
}

/// `GET /v1/runs`.
#[utoipa::path(
    get,
    path = "/v1/runs",
    tag = "runs",
    operation_id = "list_runs",
    summary = "List runs",
    description = "Newest first, filtered by workflow, contact and status.",
    params(doc::RunsQuery),
    responses(
        (status = 200, description = "The runs", body = doc::RunsPage),
        (status = 400, description = "An unknown query parameter, a bad `status`, or `limit` out of range", body = doc::Problem, content_type = "application/problem+json")
    )
)]
pub(crate) async fn runs(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    only(&q, &["workflow", "contact", "status", "limit"])?;
    let status = match q.get("status") {
        None => None,
        Some(st) => Some(
            serde_json::from_value::<nurture_store::RunStatus>(Value::from(st.as_str())).map_err(
                |_| bad("`status` is one of active, waiting, completed, converted, exited, failed"),
            )?,
        ),
    };
    let filter = nurture_store::RunFilter {
        workflow: q.get("workflow").cloned(),
        contact: q.get("contact").cloned(),
        status,
        limit: limit(&q)?,
    };
    let runs = s
        .engine
        .store
        .list_runs(&filter)
        .await
        .map_err(|e| ApiError::from_engine(e.into(), "the runs were not read"))?;
    Ok(Json(json!({"runs": runs})).into_response())
}

/// 400 when the query holds a parameter not in `known`.
fn only(q: &HashMap<String, String>, known: &[&str]) -> Result<(), ApiError> {
    match q.keys().find(|k| !known.contains(&k.as_str())) {
        None => Ok(()),
        Some(k) => Err(bad(&format!(
            "unknown query parameter {}: this route takes {}",
            nurture_core::events::shown(k),
            known.join(", ")
        ))),
    }
}

/// `limit`: 1 to [`nurture_store::reads::MAX_PAGE`], default [`DEFAULT_LIMIT`].
fn limit(q: &HashMap<String, String>) -> Result<i64, ApiError> {
    let max = nurture_store::reads::MAX_PAGE;
    match q.get("limit") {
        None => Ok(DEFAULT_LIMIT),
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| bad(&format!("`limit` is a number from 1 to {max}"))),
    }
}

fn bad(detail: &str) -> ApiError {
    ApiError::new(ProblemKind::BadRequest, detail.to_string())
}
