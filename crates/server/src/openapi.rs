//! The OpenAPI 3.1 document of the HTTP API, generated from the code (`utoipa`): each
//! handler's `#[utoipa::path]` says its method, path, parameters and answers, and
//! [`crate::api_routes`] registers the routes *from* those annotations, so the router
//! and the document cannot disagree. Served at `GET /openapi.json`, printed by
//! `nurture openapi`, and committed as `schema/openapi.json` (a test fails when it is
//! stale).
//!
//! The types below are the documented shapes of requests and answers: most answers are
//! built from the store's and engine's own types, which these mirror (the tests compare
//! real answers with them). Every `/v1` route (and `/metrics`) gets the API key's
//! security requirement and its shared problems (401, 403, 408, 413, 500, 503) from
//! [`Shared`], not from each annotation. The dashboard (`/ui`) is not part of the API and
//! not documented here.

// Documentation types: the shapes of the JSON the handlers build, never constructed.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, ResponseBuilder, SecurityRequirement};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

use crate::problem::{ItemProblem, PROBLEM_JSON};

/// The document's fixed parts: title, version, tags, security schemes and the shared
/// schemas; the paths come from the routes ([`document`]).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "nurture HTTP API",
        description = "Events in, contacts, runs and reports out. Every `/v1` route and `/metrics` need the API key (Bearer, `X-Api-Key`, or Basic as Segment sends its write key). Errors are RFC 9457 problem details (`application/problem+json`). The dashboard (`/ui`) is not part of this API.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    components(schemas(Problem, ItemProblem, SegmentCall, Provider)),
    modifiers(&Shared),
    tags(
        (name = "events", description = "Events in: nurture's JSON, CloudEvents, Segment"),
        (name = "contacts", description = "Contacts: import, list, read, their events"),
        (name = "runs", description = "Runs of workflows: list, read, explain, start, cancel"),
        (name = "workflows", description = "Pausing and resuming workflows"),
        (name = "bounces", description = "Bounce and complaint notifications"),
        (name = "reports", description = "Campaign reports"),
        (name = "operations", description = "Health, metrics and this document"),
        (name = "tracking", description = "Links in sent email: open pixel, clicks, unsubscribe (no API key: the token is the credential); the website tracking script and its page visits (no API key: allowed origins)"),
        (name = "forms", description = "Hosted forms and their double opt-in confirmation (no API key: browsers post them)"),
    )
)]
pub struct ApiDoc;

/// The whole document: [`ApiDoc`] and the paths of [`crate::api_routes`].
pub fn document() -> utoipa::openapi::OpenApi {
    let (_, paths) = crate::api_routes().split_for_parts();
    let mut doc = ApiDoc::openapi();
    doc.merge(paths);
    // The shared parts again, now that the paths are there.
    Shared.modify(&mut doc);
    doc
}

/// The document as pretty JSON, ending with a newline (the committed file's form).
pub fn json() -> String {
    let mut s = serde_json::to_string_pretty(&document()).expect("the document serializes");
    s.push('\n');
    s
}

/// Every operation of the document: (method in capitals, path), sorted.
pub fn operations() -> Vec<(String, String)> {
    let doc = document();
    let mut ops = Vec::new();
    for (path, item) in &doc.paths.paths {
        let v = serde_json::to_value(item).expect("a path item serializes");
        for m in [
            "get", "put", "post", "delete", "options", "head", "patch", "trace",
        ] {
            if v.get(m).is_some() {
                ops.push((m.to_uppercase(), path.clone()));
            }
        }
    }
    ops.sort();
    ops
}

/// `GET /openapi.json`: this document (no API key: it holds no data).
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    operation_id = "openapi",
    summary = "This OpenAPI document",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json", body = Object))
)]
pub(crate) async fn serve() -> Response {
    static DOC: OnceLock<String> = OnceLock::new();
    let body = DOC.get_or_init(json).clone();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Adds the API key's security requirement and the problems every `/v1` route can
/// answer (401, 403, 408, 413, 500, 503) to each `/v1` operation and `/metrics`; defines the
/// security schemes.
pub struct Shared;

/// Operations behind the API key.
fn needs_key(path: &str) -> bool {
    path.starts_with("/v1/") || path == "/metrics"
}

impl Modify for Shared {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "`Authorization: Bearer KEY` (the scheme name in any case)",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "apiKey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Api-Key",
                "`X-Api-Key: KEY`",
            ))),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some("The key as the user name with an empty password (as Segment sends its write key), or as the password with any user name (webhook URLs `https://user:KEY@host/...`)"))
                    .build(),
            ),
        );
        let key = || {
            ["bearer", "apiKey", "basic"]
                .map(|s| SecurityRequirement::new(s, Vec::<String>::new()))
                .to_vec()
        };
        for (path, item) in doc.paths.paths.iter_mut() {
            if !needs_key(path) {
                continue;
            }
            let ops = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in ops.into_iter().flatten() {
                op.security = Some(key());
                for (status, why) in SHARED_PROBLEMS {
                    op.responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| RefOr::T(problem(why)));
                }
            }
        }
    }
}

/// The problems any `/v1` route can answer, whatever it does.
const SHARED_PROBLEMS: [(u16, &str); 6] = [
    (
        401,
        "The API key is missing or wrong (with `WWW-Authenticate`)",
    ),
    (
        403,
        "The key lacks the scope this route needs (`detail` names it)",
    ),
    (408, "The request body did not arrive within `body_timeout`"),
    (413, "The request body is larger than `max_body_bytes`"),
    (
        500,
        "A failure a retry cannot mend; `correlation_id` names it in the server log",
    ),
    (
        503,
        "The store is unreachable or busy and nothing was done: retry after `Retry-After` seconds",
    ),
];

/// A problem response described by `why`.
fn problem(why: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(why)
        .content(
            PROBLEM_JSON,
            utoipa::openapi::ContentBuilder::new()
                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                    "Problem",
                ))))
                .build(),
        )
        .build()
}

/// An RFC 9457 problem (`application/problem+json`). A batch of which nothing was stored
/// also carries the batch's usual answer (counts, `results`) as extension members.
#[derive(Serialize, ToSchema)]
pub struct Problem {
    /// `urn:nurture:problem:<kind>`, e.g. `urn:nurture:problem:not-found`.
    #[serde(rename = "type")]
    #[schema(example = "urn:nurture:problem:not-found")]
    kind: String,
    /// The same for every problem of the kind.
    title: String,
    /// The HTTP status.
    status: u16,
    /// What happened, for people (never internal or database text).
    detail: String,
    /// `urn:nurture:<correlation_id>` for a 500 or 503.
    instance: Option<String>,
    /// The id logged with a 500's or 503's error (`err-<hex>`).
    correlation_id: Option<String>,
    /// The items of a batch that were not stored, each with its own status and reason.
    errors: Option<Vec<ItemProblem>>,
}

/// `GET /healthz`'s answer.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    #[schema(example = "ok")]
    status: String,
}

/// An event in nurture's JSON shape.
#[derive(Serialize, ToSchema)]
pub struct EventIn {
    /// Its id (idempotency key); derived from the content when absent.
    id: Option<String>,
    /// Its type, a dotted lowercase name such as `page.visited`.
    #[serde(rename = "type")]
    #[schema(example = "page.visited")]
    kind: String,
    /// The contact's id (created when not known); `contact` or `email` is needed.
    contact: Option<String>,
    /// The contact's address.
    #[schema(format = Email)]
    email: Option<String>,
    /// When it happened (RFC 3339); now when absent.
    #[schema(format = DateTime)]
    at: Option<String>,
    /// Its payload (at most `max_event_data_bytes`).
    data: Option<BTreeMap<String, Value>>,
}

/// One event, or a list of them.
#[derive(Serialize, ToSchema)]
#[allow(clippy::large_enum_variant)]
#[serde(untagged)]
pub enum EventsIn {
    /// One event.
    One(EventIn),
    /// A list of events.
    Many(Vec<EventIn>),
}

/// What happened to one item of a batch.
#[derive(Serialize, ToSchema)]
pub struct ItemResult {
    /// Its index in the request.
    index: usize,
    /// `accepted`, `duplicate`, `conflict`, `rejected` (and for bounces `failed`, `ignored`).
    #[schema(example = "accepted")]
    status: String,
    /// The event's id, given or derived.
    id: Option<String>,
    /// The contact it was stored for.
    contact: Option<String>,
    /// The status its problem would have alone (413, 409, 422).
    code: Option<u16>,
    /// Why it was refused.
    reason: Option<String>,
}

/// The answer to a batch of events (nurture's JSON, CloudEvents or Segment), per item.
#[derive(Serialize, ToSchema)]
pub struct EventsAnswer {
    /// Events stored.
    accepted: usize,
    /// Events seen before (same id, same content): not stored again.
    duplicates: usize,
    /// Events refused (see `results`).
    rejected: usize,
    /// Events whose id is another event's.
    conflicts: usize,
    /// One result per item, by index.
    results: Vec<ItemResult>,
}

/// A contact to create or update: `id` or `email`, and any other fields.
#[derive(Serialize, ToSchema)]
pub struct ContactIn {
    /// Its id.
    id: Option<String>,
    /// Its address.
    #[schema(format = Email)]
    email: Option<String>,
    /// `opted_in`, `opted_out` or `unknown`.
    consent: Option<String>,
    /// IANA time zone, e.g. `Europe/Sofia`.
    timezone: Option<String>,
    /// Lifecycle stage.
    lifecycle: Option<String>,
    /// Sales owner.
    owner: Option<String>,
    /// Tags.
    tags: Option<Vec<String>>,
    /// When it was created (RFC 3339).
    #[schema(format = DateTime)]
    created_at: Option<String>,
}

/// One contact, or a list of them.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum ContactsIn {
    /// One contact.
    One(ContactIn),
    /// A list of contacts.
    Many(Vec<ContactIn>),
}

/// A refused item of a contact import.
#[derive(Serialize, ToSchema)]
pub struct Refused {
    /// Its index in the request.
    index: usize,
    /// Why.
    reason: String,
}

/// The answer to a contact import.
#[derive(Serialize, ToSchema)]
pub struct ContactsAnswer {
    /// Contacts created.
    created: usize,
    /// Contacts updated.
    updated: usize,
    /// Items refused.
    rejected: Vec<Refused>,
    /// Items not confirmed stored after a store failure (resending them is safe).
    failed: Option<Vec<ItemProblem>>,
}

/// Consent to marketing email.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Consent {
    /// Opted in.
    OptedIn,
    /// Opted out.
    OptedOut,
    /// Not stated.
    Unknown,
}

/// A contact as stored.
#[derive(Serialize, ToSchema)]
pub struct Contact {
    /// Its id.
    id: String,
    /// Its address.
    email: Option<String>,
    /// Other fields (first_name, company...).
    fields: BTreeMap<String, Value>,
    /// Tags.
    tags: Vec<String>,
    /// Lead score.
    score: i64,
    /// Consent to marketing email.
    consent: Consent,
    /// Lifecycle stage.
    lifecycle: Option<String>,
    /// When its lifecycle stage last changed.
    #[schema(format = DateTime)]
    #[serde(skip_serializing_if = "Option::is_none")]
    lifecycle_since: Option<String>,
    /// Points per reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    points: Option<BTreeMap<String, i64>>,
    /// Sales owner.
    owner: Option<String>,
    /// IANA time zone.
    timezone: Option<String>,
    /// Unsubscribed from marketing email.
    unsubscribed: bool,
    /// Address suppressed (hard bounce, complaint).
    suppressed: bool,
    /// Segments it is in.
    segments: Vec<String>,
    /// Indexes of the profile scoring rules counted in its score.
    profile_rules: Vec<usize>,
    /// When its segments may next change by the clock alone.
    #[schema(format = DateTime)]
    #[serde(skip_serializing_if = "Option::is_none")]
    segment_due: Option<String>,
    /// Row version.
    version: i64,
}

/// A page of contacts, by id.
#[derive(Serialize, ToSchema)]
pub struct ContactsPage {
    /// The contacts.
    contacts: Vec<Contact>,
    /// The `after` of the next page; null on the last page.
    next: Option<String>,
}

/// An event as stored.
#[derive(Serialize, ToSchema)]
pub struct StoredEvent {
    /// Insertion order.
    seq: i64,
    /// Its id.
    id: String,
    /// The contact's id.
    contact: String,
    /// Its type.
    #[serde(rename = "type")]
    kind: String,
    /// When it happened.
    #[schema(format = DateTime)]
    at: String,
    /// Its payload.
    data: Value,
}

/// A page of a contact's events, as stored.
#[derive(Serialize, ToSchema)]
pub struct ContactEventsPage {
    /// The contact's id.
    contact: String,
    /// The events.
    events: Vec<StoredEvent>,
    /// The `after` of the next page (a `seq`); null on the last page.
    next: Option<i64>,
}

/// A contact's story: the contact, its grade, score history, lifecycle and consent
/// histories, segments, recent events (90 days, newest 100), runs and timeline.
#[derive(Serialize, ToSchema)]
pub struct ContactStory {
    /// The contact.
    contact: Contact,
    /// Its grade by the project's scoring, if it has grades.
    grade: Option<String>,
    /// Its score changes, oldest first.
    score_history: Vec<Value>,
    /// Its lifecycle changes.
    lifecycle_history: Vec<Value>,
    /// Its consent changes.
    consent_history: Vec<Value>,
    /// Its segments now.
    segments: Vec<Value>,
    /// Its recent events, oldest first.
    recent_events: Vec<StoredEvent>,
    /// Its runs, oldest first.
    runs: Vec<Run>,
    /// Everything in time order.
    timeline: Vec<Value>,
}

/// Where a run is: open (`active`, `waiting`) or how it ended.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Executing.
    Active,
    /// Waiting for a timer or an event.
    Waiting,
    /// Ended at `end`.
    Completed,
    /// Reached the goal.
    Converted,
    /// Left by `exit_if` or by hand.
    Exited,
    /// Ended by an error.
    Failed,
}

/// One contact's walk through one workflow.
#[derive(Serialize, ToSchema)]
pub struct Run {
    /// Its id.
    id: String,
    /// The workflow.
    workflow: String,
    /// The workflow's version it started on.
    workflow_version: u32,
    /// The contact's id.
    contact: String,
    /// Its status.
    status: RunStatus,
    /// The step it is at.
    step: Option<String>,
    /// What it waits for (`kind`: timer, event, quiet_hours, event_held, outcome).
    wait: Option<BTreeMap<String, Value>>,
    /// The event that enrolled the contact.
    trigger_event: Option<Value>,
    /// The event in scope for conditions.
    event: Option<Value>,
    /// The last awaited webhook or plugin outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<Value>,
    /// When it started.
    #[schema(format = DateTime)]
    started_at: String,
    /// When it last changed.
    #[schema(format = DateTime)]
    updated_at: String,
    /// When it ended.
    #[schema(format = DateTime)]
    ended_at: Option<String>,
    /// Why it ended.
    exit_reason: Option<String>,
    /// The variant taken at each split.
    #[serde(skip_serializing_if = "Option::is_none")]
    variants: Option<BTreeMap<String, String>>,
    /// Row version.
    rev: i64,
}

/// Runs, newest first.
#[derive(Serialize, ToSchema)]
pub struct RunsPage {
    /// The runs.
    runs: Vec<Run>,
}

/// A line of a run's journal.
#[derive(Serialize, ToSchema)]
pub struct JournalEntry {
    /// The run that wrote it.
    run_id: Option<String>,
    /// The contact.
    contact: String,
    /// When.
    #[schema(format = DateTime)]
    at: String,
    /// What it records.
    kind: String,
    /// Its details, shaped by the kind.
    data: Value,
}

/// A run and its journal.
#[derive(Serialize, ToSchema)]
pub struct RunWithJournal {
    /// The run.
    run: Run,
    /// Its journal, oldest first.
    journal: Vec<JournalEntry>,
}

/// A run's story, one line per decision.
#[derive(Serialize, ToSchema)]
pub struct Explanation {
    /// The run's id.
    run: String,
    /// Its workflow.
    workflow: String,
    /// The version it ran on.
    version: u32,
    /// Its contact.
    contact: String,
    /// Its status (and exit reason).
    status: String,
    /// One line per decision, in time order.
    lines: Vec<Value>,
}

/// A manual action: why (journaled, at most 500 characters kept).
#[derive(Serialize, ToSchema)]
pub struct Reason {
    /// Why.
    reason: String,
}

/// Starting a run by hand.
#[derive(Serialize, ToSchema)]
pub struct StartRun {
    /// The workflow to start.
    workflow: String,
    /// The contact's id.
    contact: String,
    /// Why (journaled).
    reason: String,
}

/// The run started by hand.
#[derive(Serialize, ToSchema)]
pub struct Started {
    /// The run (null if it ended at once and is not found).
    run: Option<Run>,
}

/// A cancelled run.
#[derive(Serialize, ToSchema)]
pub struct Cancelled {
    /// The run's id.
    run: String,
    /// `exited`.
    status: String,
    /// `cancelled`.
    reason: String,
}

/// A workflow's state after a pause or resume.
#[derive(Serialize, ToSchema)]
pub struct WorkflowState {
    /// The workflow's id.
    workflow: String,
    /// Whether it is paused now.
    paused: bool,
}

/// A bounce or complaint notification in nurture's format.
#[derive(Serialize, ToSchema)]
pub struct BounceIn {
    /// The address.
    #[schema(format = Email)]
    email: String,
    /// `bounce` (default) or `complaint`.
    #[serde(rename = "type")]
    kind: Option<String>,
    /// A permanent bounce (or a complaint) suppresses the address.
    permanent: Option<bool>,
    /// Why.
    reason: Option<String>,
    /// Its id (idempotency key).
    id: Option<String>,
}

/// One notification, or a list of them.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum BouncesIn {
    /// One.
    One(BounceIn),
    /// A list.
    Many(Vec<BounceIn>),
}

/// The answer to bounce notifications, per item.
#[derive(Serialize, ToSchema)]
pub struct BouncesAnswer {
    /// Notifications recorded.
    accepted: usize,
    /// Refused.
    rejected: usize,
    /// Ids used by other events.
    conflicts: usize,
    /// Not stored (store failure).
    failed: usize,
    /// Not about bounces or complaints (e.g. deliveries).
    ignored: usize,
    /// One result per item.
    results: Vec<ItemResult>,
}

/// Every workflow's report.
#[derive(Serialize, ToSchema)]
pub struct WorkflowReports {
    /// One report per workflow.
    workflows: Vec<WorkflowReport>,
}

/// A workflow's report: funnel, exits, goal, emails, splits.
#[derive(Serialize, ToSchema)]
pub struct WorkflowReport {
    /// The workflow's id.
    workflow: String,
    /// The version reported (all versions when absent).
    version: Option<u32>,
}

/// A part of a workflow's report (`emails` or `splits`).
#[derive(Serialize, ToSchema)]
pub struct ReportPart {
    /// The workflow's id.
    workflow: String,
    /// The version reported.
    version: Option<u32>,
}

/// The lead funnel: lifecycle stages, counts and times between them.
#[derive(Serialize, ToSchema)]
pub struct Funnel {}

/// The query of a page of contacts or of a contact's events.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// Continue after this: a contact's id (contacts) or an event's `seq` (events): the
    /// `next` of the page before.
    after: Option<String>,
    /// The page's size, 1 to 1,000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// The query of `GET /v1/runs`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    /// Only runs of this workflow.
    workflow: Option<String>,
    /// Only runs of this contact (its id).
    contact: Option<String>,
    /// Only runs in this status.
    #[param(inline)]
    status: Option<RunStatus>,
    /// At most this many, 1 to 1,000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// The query of a report.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// Only this version of the workflow.
    version: Option<u32>,
    /// From this time (RFC 3339).
    #[param(format = DateTime)]
    since: Option<String>,
    /// Until this time (RFC 3339).
    #[param(format = DateTime)]
    until: Option<String>,
    /// Series by `day` or `week`.
    by: Option<String>,
    /// The smallest sample for a split's winner (a positive whole number).
    #[param(minimum = 1)]
    min_sample: Option<u64>,
}

/// The error of a tracked link (its clients are mail readers, not API clients).
#[derive(Serialize, ToSchema)]
pub struct TrackingError {
    /// What is wrong with the link.
    error: String,
}

/// A call of Segment's spec.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SegmentCall {
    /// An event.
    Track,
    /// The contact's traits.
    Identify,
    /// A page view (`page.visited`).
    Page,
    /// A screen view (`screen.viewed`).
    Screen,
    /// Any of the above, in `batch`.
    Batch,
}

/// An email provider whose bounce webhooks nurture reads.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Amazon SES, through SNS.
    Ses,
    /// SendGrid's Event Webhook.
    Sendgrid,
    /// Postmark's bounce and spam-complaint webhooks.
    Postmark,
    /// Mailgun's webhooks (HMAC-signed).
    Mailgun,
}
