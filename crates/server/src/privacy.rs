//! A person's rights over HTTP: `GET /v1/contacts/{id}/export` (everything stored about
//! the contact, [`nurture_engine::privacy::export`]) and `DELETE /v1/contacts/{id}` (its
//! erasure, [`erase_person`]). `{id}` is the contact's id or its email address.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::Utc;
use serde::Serialize;

use crate::auth::Principal;
use crate::problem::ApiError;
use crate::{no_such, AppState};
use nurture_engine::privacy::ErasureReport;
use nurture_engine::{Engine, EngineError};

/// What an erasure did, as answered and printed.
#[derive(Debug, Serialize)]
pub struct ErasureDone {
    /// The engine's and the store's part.
    #[serde(flatten)]
    pub report: ErasureReport,
    /// `.eml` files removed from the project's outbox folder (no SMTP configured).
    pub eml_files: usize,
}

/// Erases the contact `given` (an id or an address) as [`Engine::erase`] does, then the
/// `.eml` files of its emails when the project writes files instead of using SMTP.
/// `None` when there is no such contact.
pub async fn erase_person(
    engine: &Engine,
    given: &str,
    by: &str,
) -> Result<Option<ErasureDone>, EngineError> {
    let Some(report) = engine.erase(given, by, Utc::now()).await? else {
        return Ok(None);
    };
    let eml_files = match engine.project.settings.smtp {
        Some(_) => 0,
        None => {
            let dir = nurture_channels::email::eml_dir(&engine.project);
            nurture_channels::email::remove_eml(&dir, &report.outbox_keys).map_err(|e| {
                EngineError::Invalid(format!("the .eml files were not all removed: {e}"))
            })?
        }
    };
    tracing::info!(
        by,
        runs_ended = report.runs_ended,
        eml_files,
        "a contact was erased"
    );
    Ok(Some(ErasureDone { report, eml_files }))
}

/// `GET /v1/contacts/{id}/export`, written to the audit log.
#[utoipa::path(
    get,
    path = "/v1/contacts/{id}/export",
    tag = "contacts",
    operation_id = "export_contact",
    summary = "Everything stored about a person (GDPR Art. 15)",
    description = "One JSON document (`format: nurture.person-export/1`): profile, consent history with proof, every event, every run with its journal, sends, deliveries, engagement, suppression, and the anonymous visitors merged into the contact with their runs. Scope `contacts:read`; written to the audit log.",
    params(("id" = String, Path, description = "The contact's id, or its email address")),
    responses(
        (status = 200, description = "The export", body = Object),
        (status = 404, description = "No such contact", body = crate::openapi::Problem, content_type = "application/problem+json")
    )
)]
pub(crate) async fn export(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ext: axum::http::Extensions,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let now = Utc::now();
    let doc = nurture_engine::privacy::export(&*s.engine.store, &id, now)
        .await
        .map_err(|e| ApiError::from_engine(e.into(), "the contact was not exported"))?;
    let Some(doc) = doc else {
        return Err(no_such("contact", &id));
    };
    audit(&s, &who, &ext, "export", &doc.contact.id).await?;
    Ok(Json(doc).into_response())
}

/// `DELETE /v1/contacts/{id}`, written to the audit log.
#[utoipa::path(
    delete,
    path = "/v1/contacts/{id}",
    tag = "contacts",
    operation_id = "erase_contact",
    summary = "Erase a person (GDPR Art. 17)",
    description = "Ends the contact's open runs, then deletes its profile, events, runs, journal, outbox entries (queued sends cancelled), deliveries and `.eml` files in one transaction; the address stays suppressed as a salted hash. Scope `contacts:erase`; written to the audit log.",
    params(("id" = String, Path, description = "The contact's id, or its email address")),
    responses(
        (status = 200, description = "Erased: runs ended and rows removed per kind", body = Object),
        (status = 404, description = "No such contact", body = crate::openapi::Problem, content_type = "application/problem+json")
    )
)]
pub(crate) async fn erase(
    State(s): State<AppState>,
    Extension(who): Extension<Principal>,
    ext: axum::http::Extensions,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let contact = nurture_engine::story::find_contact(&*s.engine.store, &id)
        .await
        .map_err(|e| ApiError::from_engine(e.into(), "the contact was not erased"))?;
    let Some(contact) = contact else {
        return Err(no_such("contact", &id));
    };
    audit(&s, &who, &ext, "erase", &contact.id).await?;
    let done = erase_person(&s.engine, &contact.id, &who.name)
        .await
        .map_err(|e| ApiError::from_engine(e, "the contact was not erased"))?;
    match done {
        Some(d) => Ok(Json(d).into_response()),
        None => Err(no_such("contact", &id)),
    }
}

/// Writes the use of `action` on `contact` by `who` to the audit log, before it is done
/// (an export that fails after it is still recorded as attempted).
async fn audit(
    s: &AppState,
    who: &Principal,
    ext: &axum::http::Extensions,
    action: &str,
    contact: &str,
) -> Result<(), ApiError> {
    let ip = crate::peer(ext).map(|a| a.to_string());
    s.engine
        .store
        .audit(Utc::now(), &who.name, action, contact, ip.as_deref())
        .await
        .map_err(|e| ApiError::from_engine(e.into(), "the audit log was not written"))
}
