//! `GET /v1/reports/...`: the campaign reports of [`nurture_engine::report`] as JSON.
//!
//! | route | |
//! | --- | --- |
//! | `GET /v1/reports/workflows` | every workflow's report |
//! | `GET /v1/reports/workflows/{id}` | one workflow: funnel, exits, goal, emails, splits |
//! | `GET /v1/reports/workflows/{id}/emails` | its email steps' sends, engagement and rates |
//! | `GET /v1/reports/workflows/{id}/splits` | its splits: variants, z-tests, winner |
//! | `GET /v1/reports/funnel` | the lead funnel |
//!
//! Query parameters: `version`, `since` and `until` (RFC 3339), `by` (`day`, `week`) and
//! `min_sample`; an unknown or malformed one is a 400 problem naming it.

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use nurture_engine::report::{self, Options};

use crate::openapi as doc;
use crate::problem::{ApiError, ProblemKind};
use crate::AppState;

/// The options of a report request's query string.
fn options(query: Option<&str>) -> Result<Options, ApiError> {
    let mut o = Options::default();
    let bad = |name: &str, why: &str| {
        ApiError::new(
            ProblemKind::BadRequest,
            format!("query parameter `{name}`: {why}"),
        )
    };
    let time = |name: &str, v: &str| {
        chrono::DateTime::parse_from_rfc3339(v)
            .map(|t| t.with_timezone(&chrono::Utc))
            .map_err(|_| bad(name, "not an RFC 3339 time such as 2026-03-01T00:00:00Z"))
    };
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "version" => {
                o.version = Some(
                    v.parse()
                        .map_err(|_| bad("version", "not a version number"))?,
                )
            }
            "since" => o.since = Some(time("since", &v)?),
            "until" => o.until = Some(time("until", &v)?),
            "by" => o.by = Some(v.parse().map_err(|e: String| bad("by", &e))?),
            "min_sample" => {
                o.min_sample = v
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad("min_sample", "not a positive whole number"))?
            }
            other => {
                let shown: String = other.chars().take(40).collect();
                return Err(bad(
                    &shown,
                    "unknown; use version, since, until, by or min_sample",
                ));
            }
        }
    }
    Ok(o)
}

fn unread(e: nurture_store::StoreError) -> ApiError {
    ApiError::from_engine(e.into(), "the report was not read")
}

/// The report of workflow `id`.
async fn one(
    s: &AppState,
    id: &str,
    query: Option<&str>,
) -> Result<report::WorkflowReport, ApiError> {
    let o = options(query)?;
    let plan = s
        .engine
        .project
        .plans
        .iter()
        .find(|p| p.id() == id)
        .ok_or_else(|| crate::no_such("workflow", id))?;
    report::workflow(&*s.engine.store, plan, &o)
        .await
        .map_err(unread)
}

/// `GET /v1/reports/workflows`.
#[utoipa::path(
    get,
    path = "/v1/reports/workflows",
    tag = "reports",
    operation_id = "report_workflows",
    summary = "Every workflow's report",
    description = "Funnel, exits, goal, emails and splits of each workflow.",
    params(doc::ReportQuery),
    responses(
        (status = 200, description = "The reports", body = doc::WorkflowReports),
        (status = 400, description = "A query parameter is unknown or malformed (it is named)", body = doc::Problem, content_type = "application/problem+json")
    )
)]
pub(crate) async fn workflows(
    State(s): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let o = options(q.as_deref())?;
    let mut out = Vec::new();
    for plan in &s.engine.project.plans {
        out.push(
            report::workflow(&*s.engine.store, plan, &o)
                .await
                .map_err(unread)?,
        );
    }
    Ok(Json(json!({ "workflows": out })).into_response())
}

/// `GET /v1/reports/workflows/{id}`.
#[utoipa::path(
    get,
    path = "/v1/reports/workflows/{id}",
    tag = "reports",
    operation_id = "report_workflow",
    summary = "A workflow's report",
    description = "Funnel, exits, goal, emails, splits.",
    params(("id" = String, Path, description = "The workflow's id"), doc::ReportQuery),
    responses(
        (status = 200, description = "The report", body = doc::WorkflowReport),
        (status = 400, description = "A query parameter is unknown or malformed (it is named)", body = doc::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such workflow", body = doc::Problem, content_type = "application/problem+json")
    )
)]
pub(crate) async fn workflow(
    State(s): State<AppState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    Ok(Json(one(&s, &id, q.as_deref()).await?).into_response())
}

/// Part `key` of workflow `id`'s report (with the workflow and version).
async fn part(
    s: &AppState,
    id: &str,
    query: Option<&str>,
    key: &str,
    of: impl FnOnce(report::WorkflowReport) -> serde_json::Value,
) -> Result<Response, ApiError> {
    let r = one(s, id, query).await?;
    let mut body = json!({ "workflow": r.workflow, "version": r.version });
    body[key] = of(r);
    Ok(Json(body).into_response())
}

/// `GET /v1/reports/workflows/{id}/emails`.
#[utoipa::path(
    get,
    path = "/v1/reports/workflows/{id}/emails",
    tag = "reports",
    operation_id = "report_emails",
    summary = "A workflow's emails",
    description = "Its email steps' sends, engagement and rates (`emails`).",
    params(("id" = String, Path, description = "The workflow's id"), doc::ReportQuery),
    responses(
        (status = 200, description = "The emails", body = doc::ReportPart),
        (status = 400, description = "A query parameter is unknown or malformed (it is named)", body = doc::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such workflow", body = doc::Problem, content_type = "application/problem+json")
    )
)]
pub(crate) async fn emails(
    State(s): State<AppState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    part(&s, &id, q.as_deref(), "emails", |r| json!(r.emails)).await
}

/// `GET /v1/reports/workflows/{id}/splits`.
#[utoipa::path(
    get,
    path = "/v1/reports/workflows/{id}/splits",
    tag = "reports",
    operation_id = "report_splits",
    summary = "A workflow's splits",
    description = "Its splits: variants, z-tests, winner (`splits`).",
    params(("id" = String, Path, description = "The workflow's id"), doc::ReportQuery),
    responses(
        (status = 200, description = "The splits", body = doc::ReportPart),
        (status = 400, description = "A query parameter is unknown or malformed (it is named)", body = doc::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such workflow", body = doc::Problem, content_type = "application/problem+json")
    )
)]
pub(crate) async fn splits(
    State(s): State<AppState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    part(&s, &id, q.as_deref(), "splits", |r| json!(r.splits)).await
}

/// `GET /v1/reports/funnel`.
#[utoipa::path(
    get,
    path = "/v1/reports/funnel",
    tag = "reports",
    operation_id = "report_funnel",
    summary = "The lead funnel",
    description = "Lifecycle stages, counts and times between them.",
    params(doc::ReportQuery),
    responses(
        (status = 200, description = "The funnel", body = doc::Funnel),
        (status = 400, description = "A query parameter is unknown or malformed (it is named)", body = doc::Problem, content_type = "application/problem+json")
    )
)]
pub(crate) async fn funnel(
    State(s): State<AppState>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let o = options(q.as_deref())?;
    let f = report::lead_funnel(&*s.engine.store, &o)
        .await
        .map_err(unread)?;
    Ok(Json(f).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_or_unknown_query_parameter_is_named() {
        let o = options(Some(
            "version=2&since=2026-03-01T00:00:00Z&by=week&min_sample=50",
        ))
        .unwrap();
        assert_eq!(o.version, Some(2));
        assert_eq!(o.min_sample, 50);
        for (q, name) in [
            ("version=x", "version"),
            ("since=yesterday", "since"),
            ("by=month", "by"),
            ("min_sample=0", "min_sample"),
            ("drop=table", "drop"),
        ] {
            let e = options(Some(q)).unwrap_err();
            assert_eq!(e.kind(), ProblemKind::BadRequest, "{q}");
            assert!(
                e.detail().contains(&format!("`{name}`")),
                "{q}: {}",
                e.detail()
            );
        }
    }
}
