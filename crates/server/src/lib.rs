//! The HTTP API and the scheduler loop of `nurture run`.
//!
//! | route | |
//! | --- | --- |
//! | `POST /v1/events` | one event or a list; answers which were accepted and why others were rejected; CloudEvents too ([`cloudevents`]) |
//! | `POST /v1/contacts` | one contact or a list (created or updated) |
//! | `GET /v1/runs/{id}` | a run and its journal |
//! | `GET /v1/contacts`, `GET /v1/contacts/{id}/events`, `GET /v1/runs` | lists, in pages ([`reads`]) |
//! | `POST /v1/segment/{call}` | Segment's track, identify, page, screen and batch ([`segment`]) |
//! | `GET /v1/contacts/{id}` | a contact (by id or address): grade, score history, segments, lifecycle and consent histories, recent events, runs, timeline |
//! | `GET /v1/runs/{id}/explain` | the run's story, one line per decision (JSON) |
//! | `GET /v1/reports/...` | campaign reports: workflows, emails, splits, lead funnel ([`reports`]) |
//! | `POST /v1/bounces` | bounce and complaint notifications in nurture's format |
//! | `POST /v1/bounces/{ses,sendgrid,postmark,mailgun}` | the email providers' bounce and complaint webhooks, signatures checked ([`providers`]) |
//! | `GET /openapi.json` | the OpenAPI 3.1 document of this API ([`openapi`]; no API key needed) |
//! | `GET /healthz` | liveness and store reachability (no API key needed) |
//! | `GET /metrics` | Prometheus metrics, with the API key ([`metrics`]) |
//! | `GET /t/nurture.js`, `POST /t/p` | website tracking: the script, and the page visits of anonymous visitors ([`tracking`]) |
//! | `GET /t/o/{token}` | open pixel: an `email.opened` event, answers a 1x1 GIF |
//! | `GET /t/c/{token}` | click: an `email.clicked` event, redirects to the signed URL |
//! | `GET /u/{token}` | the unsubscribe page: changes nothing, shows a button |
//! | `POST /u/{token}` | RFC 8058 one-click unsubscribe: no cookie, no redirect, idempotent |
//! | `POST /f/{form}` | a hosted form's post (no API key): contact and `form.submitted` event ([`forms`]) |
//! | `GET`, `POST /f/{form}/confirm/{token}` | a double opt-in confirmation link: a button, then the consent ([`forms`]) |
//!
//! Every `/v1` route needs the API key, as `Authorization: Bearer KEY` (the scheme name in
//! any case) or `X-Api-Key: KEY`, compared in constant time.
//! Errors of the `/v1` routes and `/healthz` are RFC 9457 problem details
//! (`application/problem+json`, [`crate::problem`]); the tracking and unsubscribe routes
//! keep their pixel, redirects and HTML pages. A batch (events, contacts, bounces) is
//! answered per item, and nothing is acknowledged that was not stored: 503 with
//! `Retry-After` only when the store is unreachable or busy and nothing was stored, 500
//! (with a correlation id, never the database's text) for failures a retry cannot mend.
//!
//! Tracking tokens are checked for their purpose and expiry ([`nurture_channels::email::track`]);
//! each token's open or click is stored once (its event id derives from the token), and
//! hits are limited per client and per token ([`nurture_channels::email::hits`]).

#![warn(missing_docs)]
#![warn(unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use chrono::Utc;
use serde_json::{json, Value};
use tokio::sync::{watch, Notify};

pub mod auth;
pub mod cloudevents;
pub mod compose;
pub mod forms;
pub mod metrics;
pub mod openapi;
pub mod privacy;
pub mod problem;
pub mod providers;
mod reads;
pub mod reports;
pub mod segment;
mod standard;
pub mod tracking;
pub mod ui;
pub mod workspaces;
pub use compose::{open_store, open_store_with, PostgresConfig, SqliteConfig, StoreConfig};

use crate::openapi as doc;
use nurture_channels::deliver::Deliverer;
use nurture_channels::email::track::{Purpose, TokenError};
use nurture_engine::input;
use nurture_engine::{Engine, EngineError};
use problem::{ApiError, ItemProblem, ProblemKind};

/// Group commit for the API: the events of concurrent requests are stored together in
/// one transaction (one disk sync) while the previous batch commits. Under load this is
/// what keeps an acknowledgement at a few milliseconds; alone, a request is stored at
/// once. Every request still gets its own per-event answers, and none is acknowledged
/// before its events are stored.
#[derive(Clone)]
pub struct Ingestor {
    jobs: tokio::sync::mpsc::Sender<IngestJob>,
}

type IngestReply = Result<Vec<nurture_engine::ingest::EventOutcome>, EngineError>;

struct IngestJob {
    events: Vec<input::IncomingEvent>,
    reply: tokio::sync::oneshot::Sender<IngestReply>,
}

/// Events stored per group commit, at most.
const INGEST_BATCH: usize = 2000;

impl Ingestor {
    /// Starts the batching task (on the current tokio runtime); it wakes `wake` after
    /// each batch is stored.
    pub fn start(engine: Arc<Engine>, wake: Arc<Notify>) -> Self {
        let (jobs, mut rx) = tokio::sync::mpsc::channel::<IngestJob>(4096);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                let mut n = batch[0].events.len();
                while n < INGEST_BATCH {
                    match rx.try_recv() {
                        Ok(j) => {
                            n += j.events.len();
                            batch.push(j);
                        }
                        Err(_) => break,
                    }
                }
                let all: Vec<input::IncomingEvent> = batch
                    .iter()
                    .flat_map(|j| j.events.iter().cloned())
                    .collect();
                match engine.ingest(&all, Utc::now()).await {
                    Ok(outcomes) => {
                        let mut rest = outcomes.into_iter();
                        for j in batch {
                            let mine: Vec<_> = rest.by_ref().take(j.events.len()).collect();
                            let _ = j.reply.send(Ok(mine));
                        }
                    }
                    Err(e) if batch.len() == 1 => {
                        let _ = batch.remove(0).reply.send(Err(e));
                    }
                    // One request's events may be what the database refused: each request
                    // alone, so the others are stored. (Not when the database is down or
                    // busy: every request then gets its 503 at once, not one timeout each.)
                    Err(e) if !e.is_retryable() => {
                        for j in batch {
                            let r = engine.ingest(&j.events, Utc::now()).await;
                            let _ = j.reply.send(r);
                        }
                    }
                    Err(e) => {
                        for j in batch {
                            let _ = j.reply.send(Err(e.clone()));
                        }
                    }
                }
                wake.notify_one();
            }
        });
        Ingestor { jobs }
    }

    /// Stores `events` (with the events of concurrent calls); one outcome per event, in
    /// order.
    pub async fn ingest(&self, events: Vec<input::IncomingEvent>) -> IngestReply {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        let gone = || EngineError::Invalid("the ingestion task stopped".into());
        self.jobs
            .send(IngestJob { events, reply })
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// The API's limits on clients: time to send headers and body, open connections, body
/// and event sizes, event times (`[api]` in nurture.toml).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ApiLimits {
    /// A connection that has not sent a request's headers within this is closed
    /// (`header_timeout`, default 10 s).
    pub header_timeout: Duration,
    /// A request whose body has not arrived within this is answered 408
    /// (`body_timeout`, default 30 s).
    pub body_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog (`max_connections`,
    /// default 1024).
    pub max_connections: usize,
    /// Largest request body in bytes; larger is answered 413 (`max_body_bytes`, default
    /// 8 MiB).
    pub max_body: usize,
    /// What an event may carry (`max_event_data_bytes`, default 64 KiB; `event_max_age`,
    /// default 365d; `event_max_ahead`, default 1d).
    pub events: input::EventRules,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits::from_settings(None)
    }
}

impl ApiLimits {
    /// The limits set in `[api]`, defaults for the others.
    pub fn from_settings(api: Option<&nurture_core::model::Api>) -> Self {
        let secs = |d: Option<nurture_core::model::Duration>, default: u64| {
            Duration::from_secs(d.map_or(default, |d| d.seconds()))
        };
        // (At most 100 years: any window is then representable around now.)
        let days = |d: Option<nurture_core::model::Duration>, default: u64| {
            let secs = d.map_or(default * 86_400, |d| d.seconds());
            chrono::Duration::seconds(secs.min(100 * 365 * 86_400) as i64)
        };
        ApiLimits {
            header_timeout: secs(api.and_then(|a| a.header_timeout), 10),
            body_timeout: secs(api.and_then(|a| a.body_timeout), 30),
            max_connections: api.and_then(|a| a.max_connections).unwrap_or(1024).max(1),
            max_body: api.and_then(|a| a.max_body_bytes).unwrap_or(8 << 20),
            events: input::EventRules {
                max_data: api
                    .and_then(|a| a.max_event_data_bytes)
                    .unwrap_or(input::MAX_EVENT_DATA),
                window: Some((
                    days(api.and_then(|a| a.event_max_age), 365),
                    days(api.and_then(|a| a.event_max_ahead), 1),
                )),
            },
        }
    }
}

/// What every route handler shares: the engine, the ingestion task, the API key, the
/// token signer and the limits.
#[derive(Clone)]
pub struct AppState {
    /// The engine of the project served.
    pub engine: Arc<Engine>,
    /// Stores incoming events in group commits.
    pub ingest: Ingestor,
    /// The key every `/v1` route needs.
    pub api_key: Arc<String>,
    /// Wakes the scheduler when new work arrives.
    pub wake: Arc<Notify>,
    /// Verifies tracking and unsubscribe tokens.
    pub signer: Arc<nurture_channels::email::Signer>,
    /// Limits on clients, from the project's `[api]`.
    pub limits: ApiLimits,
    /// Limits on recorded opens and clicks, per client and per token.
    pub hits: Arc<nurture_channels::email::hits::HitGate>,
    /// The dashboard's logged-in sessions.
    pub ui: Arc<ui::Sessions>,
    /// What the providers' bounce webhooks must prove (`[email.webhooks]`).
    pub webhooks: Arc<providers::Webhooks>,
    /// The hosted forms' limits and link base (`[forms.NAME]`, [`forms`]).
    pub forms: Arc<forms::Forms>,
}

impl AppState {
    /// The state of the API; starts its [`Ingestor`] (on the current tokio runtime).
    pub fn new(
        engine: Arc<Engine>,
        api_key: Arc<String>,
        wake: Arc<Notify>,
        signer: Arc<nurture_channels::email::Signer>,
    ) -> Self {
        AppState {
            ingest: Ingestor::start(engine.clone(), wake.clone()),
            limits: ApiLimits::from_settings(engine.project.settings.api.as_ref()),
            hits: Arc::new(nurture_channels::email::hits::HitGate::new(
                engine.project.settings.tracking.as_ref(),
            )),
            ui: ui::sessions(),
            webhooks: Arc::new(providers::Webhooks::new(&engine.project)),
            forms: Arc::new(forms::Forms::new(&engine.project, None)),
            engine,
            api_key,
            wake,
            signer,
        }
    }
}

/// The documented routes of the API: each handler's `#[utoipa::path]` gives its method
/// and path, so this list is both the router's and the OpenAPI document's
/// ([`openapi`]). **A new route is added here** (with its annotation); the dashboard's
/// routes (`/ui`, not part of the API) are merged in [`router`].
pub fn api_routes() -> utoipa_axum::router::OpenApiRouter<AppState> {
    use utoipa_axum::routes;
    utoipa_axum::router::OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(openapi::serve))
        .routes(routes!(metrics::scrape))
        .routes(routes!(post_events))
        .routes(routes!(post_contacts, reads::contacts))
        .routes(routes!(get_contact, privacy::erase))
        .routes(routes!(privacy::export))
        .routes(routes!(reads::contact_events))
        .routes(routes!(post_run, reads::runs))
        .routes(routes!(get_run))
        .routes(routes!(explain_run))
        .routes(routes!(cancel_run))
        .routes(routes!(pause_workflow))
        .routes(routes!(resume_workflow))
        .routes(routes!(post_bounces))
        .routes(routes!(providers::post))
        .routes(routes!(segment::post))
        .routes(routes!(reports::workflows))
        .routes(routes!(reports::workflow))
        .routes(routes!(reports::emails))
        .routes(routes!(reports::splits))
        .routes(routes!(reports::funnel))
        .routes(routes!(tracking::script))
        .routes(routes!(tracking::collect, tracking::preflight))
        .routes(routes!(track_open))
        .routes(routes!(track_click))
        .routes(routes!(unsubscribe_page, unsubscribe))
        .routes(routes!(forms::post))
        .routes(routes!(forms::confirm_page, forms::confirm))
}

/// The API's routes (the table in the crate docs) over `state`: the API key is checked
/// before a `/v1` body is read, and bodies are limited in size and time (`[api]`).
pub fn router(state: AppState) -> Router {
    let (api, _) = api_routes().split_for_parts();
    guarded(api.merge(ui::routes()), state)
        // Outermost: the dashboard's headers on every `/ui` answer, errors included.
        .layer(axum::middleware::from_fn(ui::headers))
        // `read_body` enforces `max_body` (axum's own default is 2 MB).
        .layer(axum::extract::DefaultBodyLimit::disable())
}

/// The routes of a `nurture worker`'s metrics port (`--metrics-listen`): `GET /metrics`
/// with the API key and its scope `reports:read`, as on the API, and `GET /healthz`;
/// every other path is 404, so the port offers no way into the API.
pub fn metrics_router(state: AppState) -> Router {
    use utoipa_axum::routes;
    // Two of the documented operations, registered from their annotations as in
    // [`api_routes`].
    let (routes, _) = utoipa_axum::router::OpenApiRouter::new()
        .routes(routes!(metrics::scrape))
        .routes(routes!(health))
        .split_for_parts();
    guarded(routes, state).layer(axum::extract::DefaultBodyLimit::disable())
}

/// `routes` over `state` with what every port of the server answers with: 405 and 404
/// as problem+json, the API key checked before a body is read, bodies bounded in size
/// and time (`[api]`).
fn guarded(routes: Router<AppState>, state: AppState) -> Router {
    let limits = state.limits;
    routes
        // (After the routes: it applies to the routes registered before it.)
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .with_state(state.clone())
        .layer(axum::middleware::from_fn_with_state(limits, read_body))
        // Outside `read_body`: a client without the key is turned away before its body
        // is read, so only authenticated clients can make the server hold bodies.
        .layer(axum::middleware::from_fn_with_state(state, key_first))
}

/// Answers 401 to a `/v1` request without the right API key, before its body is read.
async fn key_first(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path();
    if !(path.starts_with("/v1/") || path == "/metrics") {
        return next.run(request).await;
    }
    let given = presented_key(request.headers()).unwrap_or_default();
    let who = match auth::principal(&state, &given).await {
        Ok(Some(p)) => p,
        Ok(None) => return closing(ApiError::unauthorized().into_response()),
        Err(e) => {
            return ApiError::from_engine(e.into(), "the key was not checked").into_response()
        }
    };
    let scope = auth::needed_scope(request.method(), path);
    if !who.allows(scope) {
        let detail = format!("this key lacks the scope `{}`", scope.as_str());
        return ApiError::new(ProblemKind::Forbidden, detail).into_response();
    }
    let mut request = request;
    request.extensions_mut().insert(who);
    next.run(request).await
}

/// 404 for a path no route serves.
async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        ProblemKind::NotFound,
        format!(
            "no route {}",
            uri.path().chars().take(200).collect::<String>()
        ),
    )
}

/// 405 for a route without this method (axum adds the `Allow` header).
async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::new(
        ProblemKind::MethodNotAllowed,
        format!("this route does not answer {method}: see the `Allow` header"),
    )
}

/// The largest body of a route outside `/v1` (forms, one-click unsubscribe).
const SMALL_BODY: usize = 16 * 1024;

/// Reads the whole request body before the handler runs: at most `max_body` bytes (413
/// beyond, as soon as the excess is seen) within `body_timeout` (408 after: a client
/// trickling its body cannot hold a connection and a task for ever).
async fn read_body(
    State(limits): State<ApiLimits>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use futures::StreamExt as _;
    let (parts, body) = request.into_parts();
    let declared = parts
        .headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // Only the API's routes (behind the key) take large bodies; the others (dashboard
    // forms, one-click unsubscribe, unknown paths) at most SMALL_BODY, so a client
    // without the key cannot make the server hold megabytes per connection.
    let max = if parts.uri.path().starts_with("/v1/") {
        limits.max_body
    } else {
        limits.max_body.min(SMALL_BODY)
    };
    let too_large = || {
        closing(
            ApiError::new(
                ProblemKind::PayloadTooLarge,
                format!("the request body is larger than {max} bytes (`max_body_bytes` in `[api]` for `/v1` routes)"),
            )
            .with("max_body_bytes", Value::from(max))
            .into_response(),
        )
    };
    if declared.is_some_and(|n| n > max as u64) {
        return too_large();
    }
    let read = async {
        let mut stream = body.into_data_stream();
        let mut buf = Vec::with_capacity(declared.unwrap_or(0) as usize);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| {
                ApiError::new(
                    ProblemKind::BadRequest,
                    "the request body could not be read",
                )
                .into_response()
            })?;
            if buf.len() + chunk.len() > max {
                return Err(too_large());
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf)
    };
    match tokio::time::timeout(limits.body_timeout, read).await {
        Ok(Ok(buf)) => {
            let request = axum::extract::Request::from_parts(parts, axum::body::Body::from(buf));
            next.run(request).await
        }
        Ok(Err(r)) => r,
        Err(_) => closing(
            ApiError::new(
                ProblemKind::RequestTimeout,
                format!(
                    "the request body did not arrive within {} s (`body_timeout` in `[api]`)",
                    limits.body_timeout.as_secs()
                ),
            )
            .into_response(),
        ),
    }
}

/// `r`, closing the connection after it (the rest of the body is not read).
pub(crate) fn closing(mut r: Response) -> Response {
    r.headers_mut()
        .insert("connection", axum::http::HeaderValue::from_static("close"));
    r
}

/// Serves `app` on `listener` until `stop` turns true, then lets the requests under way
/// finish (at most 30 s).
///
/// Unlike `axum::serve`: a connection that does not send a request's headers within
/// `header_timeout` is closed (idle keep-alive connections too); at most
/// `max_connections` are served at once (the others wait in the kernel's backlog); and
/// when accepting fails (out of file descriptors: `EMFILE`, `ENFILE`) the loop waits a
/// moment and goes on, logging at most every 10 s.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: ApiLimits,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let (closing, _) = watch::channel(false);
    let mut accept_errors = AcceptErrors::default();
    while !*stop.borrow() {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = stop.changed() => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => r,
            _ = stop.changed() => break,
        };
        match stream {
            Ok((stream, _)) => {
                let conn = serve_connection(stream, app.clone(), limits, closing.subscribe());
                tokio::spawn(async move {
                    conn.await;
                    drop(permit);
                });
            }
            Err(e) => accept_errors.failed(&e).await,
        }
    }
    let _ = closing.send(true);
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(Duration::from_secs(30), permits.acquire_many(all)).await;
}

/// One connection: HTTP/1 with the header read timeout; shut down gracefully when
/// `closing` turns true.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    app: Router,
    limits: ApiLimits,
    mut closing: watch::Receiver<bool>,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    // The peer address feeds the tracking routes' per-client limit ([`peer`]).
    let peer = stream.peer_addr().ok().map(axum::extract::ConnectInfo);
    let app = tower::ServiceExt::map_request(
        app,
        move |mut r: axum::http::Request<hyper::body::Incoming>| {
            if let Some(p) = peer {
                r.extensions_mut().insert(p);
            }
            r
        },
    );
    let service = hyper_util::service::TowerToHyperService::new(app);
    let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::pin!(conn);
    let ended = tokio::select! {
        r = conn.as_mut() => r,
        _ = closing.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, "connection ended");
    }
}

/// Failed accepts: counted, logged at most every 10 s, and paced.
#[derive(Default)]
struct AcceptErrors {
    last_log: Option<std::time::Instant>,
    unlogged: u64,
}

impl AcceptErrors {
    const LOG_EVERY: Duration = Duration::from_secs(10);

    /// Records a failed accept; waits 100 ms when the process or the system is out of
    /// descriptors or memory (accepting again at once would spin), else not at all.
    async fn failed(&mut self, e: &std::io::Error) {
        self.unlogged += 1;
        if self.last_log.is_none_or(|t| t.elapsed() >= Self::LOG_EVERY) {
            tracing::warn!(error = %e, failures = self.unlogged, "cannot accept connections");
            self.last_log = Some(std::time::Instant::now());
            self.unlogged = 0;
        }
        let exhausted = matches!(e.raw_os_error(), Some(23 | 24 | 12 | 105))
            || e.kind() == std::io::ErrorKind::OutOfMemory;
        if exhausted {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The key a request presents: `Authorization: Bearer KEY` (scheme in any case), else
/// `Authorization: Basic` (the key as the user name with an empty password, as Segment
/// sends its write key, or as the password with any user name, as webhook URLs
/// `https://user:KEY@host/...` send it), else `X-Api-Key: KEY`.
pub(crate) fn presented_key(headers: &HeaderMap) -> Option<String> {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '));
    let from_auth = match auth {
        Some((scheme, key)) if scheme.eq_ignore_ascii_case("bearer") => {
            Some(key.trim().to_string())
        }
        Some((scheme, creds)) if scheme.eq_ignore_ascii_case("basic") => basic_key(creds.trim()),
        _ => None,
    };
    from_auth.or_else(|| {
        headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    })
}

/// The key in Basic credentials (`base64(user:password)`): the password when there is
/// one, else the user name.
fn basic_key(creds: &str) -> Option<String> {
    use base64::Engine as _;
    if creds.len() > 1024 {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(creds)
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, password) = text.split_once(':').unwrap_or((&text, ""));
    Some(if password.is_empty() { user } else { password }.to_string())
}

/// Constant time, whatever the lengths: compares the HMAC tags of both keys (the same
/// fixed-length tag only for the same key) with `verify_slice`.
pub(crate) fn keys_match(given: &str, key: &str) -> bool {
    use hmac::{Hmac, Mac};
    let tag = |k: &str| {
        let mut m = Hmac::<sha2::Sha256>::new_from_slice(b"nurture api key").expect("any length");
        m.update(k.as_bytes());
        m
    };
    tag(given)
        .verify_slice(&tag(key).finalize().into_bytes())
        .is_ok()
}

/// A JSON error of the tracking routes (not API routes: their clients are mail readers).
fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({"error": msg.into()}))).into_response()
}

/// How long `/healthz` waits for the store to accept its write.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// Healthy when the store accepts a write within [`HEALTH_TIMEOUT`] (a store that can be
/// read but not written, e.g. on a full disk, is not healthy): else 503, without the
/// store's own text (it is logged).
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    operation_id = "health",
    summary = "Liveness and store reachability",
    description = "Healthy when the store accepts a write within 2 s. No API key needed.",
    responses(
        (status = 200, description = "The store accepts writes", body = doc::Health),
        (status = 503, description = "The store does not accept writes (with `Retry-After`)", body = doc::Problem, content_type = "application/problem+json")
    )
)]
async fn health(State(s): State<AppState>) -> Response {
    let down = |detail: &str| {
        ApiError::new(ProblemKind::Unavailable, detail)
            .header(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(crate::problem::RETRY_AFTER_SECS),
            )
            .into_response()
    };
    match tokio::time::timeout(HEALTH_TIMEOUT, s.engine.store.probe_write()).await {
        Ok(Ok(())) => Json(json!({"status": "ok"})).into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health check: the store refused a write");
            down("the store does not accept writes")
        }
        Err(_) => down("the store did not accept a write within 2 s"),
    }
}

/// Reads the body (one JSON object or a list, whatever the content type says) as a list
/// of items: 400 when it is not JSON, or neither an object nor a list. The API key was
/// checked before the body was read ([`key_first`]).
fn request_items(body: &[u8], what: &str) -> Result<Vec<Value>, ApiError> {
    let shape = || format!("the body must be a JSON {what} (an object) or a list of them");
    match serde_json::from_slice(body) {
        Ok(Value::Array(items)) => Ok(items),
        Ok(item @ Value::Object(_)) => Ok(vec![item]),
        Ok(_) => Err(ApiError::new(ProblemKind::BadRequest, shape())),
        Err(e) => Err(ApiError::new(
            ProblemKind::BadRequest,
            format!("{}: {e}", shape()),
        )),
    }
}

/// The problems of a batch's refused items, from their results (`code`, else 422).
fn refused_items(results: &[Value]) -> Vec<ItemProblem> {
    results
        .iter()
        .filter(|r| r["status"] == "rejected" || r["status"] == "conflict")
        .map(|r| ItemProblem {
            index: r["index"].as_u64().unwrap_or(0) as usize,
            status: r["code"].as_u64().map_or(422, |c| c as u16),
            reason: r["reason"].as_str().unwrap_or_default().to_string(),
        })
        .collect()
}

/// The answer to a batch of which nothing was stored because every item was refused: the
/// items' common status (413, 409 or 422; 422 when they differ), each in `errors`, and the
/// batch's usual answer (`summary`) as extension members.
fn refused_batch(what: &str, refused: Vec<ItemProblem>, summary: Value) -> ApiError {
    let status = match refused.first().map(|p| p.status) {
        Some(c) if refused.iter().all(|p| p.status == c) => c,
        _ => 422,
    };
    let mut err = ApiError::new(
        ProblemKind::of_item_code(status),
        format!("no {what} was stored: every item was refused (see `errors`)"),
    )
    .with_errors(refused);
    if let Value::Object(members) = summary {
        for (k, v) in members {
            err = err.with(&k, v);
        }
    }
    err
}

/// The answer to a batch of which nothing was stored because the store failed: 503 or
/// 500 ([`ApiError::from_engine`]), with the refused items and each item that was to be
/// stored (`pending`) in `errors`.
fn failed_batch(
    e: EngineError,
    what: &str,
    mut refused: Vec<ItemProblem>,
    pending: impl IntoIterator<Item = usize>,
) -> ApiError {
    let err = ApiError::from_engine(e, &format!("no {what} was stored"));
    refused.extend(pending.into_iter().map(|i| err.item(i)));
    refused.sort_by_key(|p| p.index);
    err.with_errors(refused)
}

/// Events: nurture's own JSON (one object or a list), or CloudEvents when the content
/// type says so (`application/cloudevents+json`, `application/cloudevents-batch+json`)
/// or `ce-` headers carry them (binary mode, [`cloudevents`]).
#[utoipa::path(
    post,
    path = "/v1/events",
    tag = "events",
    operation_id = "post_events",
    summary = "Send events",
    description = "One event or a list, in nurture's JSON; or CloudEvents 1.0: structured (`application/cloudevents+json`), batched (`application/cloudevents-batch+json`) or binary (`ce-` headers, the body is `data`). Answered per item; nothing is acknowledged that was not stored.",
    request_body(description = "One event or a list; or CloudEvents", content((doc::EventsIn = "application/json"), (Object = "application/cloudevents+json"), (Vec<Object> = "application/cloudevents-batch+json"))),
    responses(
        (status = 200, description = "Stored, at least in part: one result per item", body = doc::EventsAnswer),
        (status = 400, description = "The body is not JSON, or neither an object nor a list", body = doc::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Every event conflicts with a stored one (each in `errors`): nothing was stored", body = doc::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Every event's `data` is over `max_event_data_bytes` (each in `errors`): nothing was stored", body = doc::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Every event was refused (each in `errors`, the batch's answer as extension members): nothing was stored", body = doc::Problem, content_type = "application/problem+json")
    )
)]
async fn post_events(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    if let Some(mode) = cloudevents::mode(&headers) {
        let items = cloudevents::items(mode, &headers, &body)?;
        return cloudevents::ingest(&s, items).await;
    }
    let items = request_items(&body, "event")?;
    let items = items.into_iter().map(EventItem::Event).collect();
    let answer = store_events(&s, items, Vec::new()).await?;
    Ok(Json(answer).into_response())
}

/// One item of an event batch, as a translation from another format leaves it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum EventItem {
    /// An event in nurture's own JSON shape (`id`, `type`, `contact`, `email`, `at`, `data`).
    Event(Value),
    /// Refused by the translation, with its reason.
    Refused(String),
    /// Not an event (a Segment `identify`): its result is among the `extra` results.
    Elsewhere,
}

/// Stores a batch of events and answers per item, with the summary counts; `extra`
/// holds the results of the batch's other items (each with its `index` and `status`).
/// A problem when nothing was stored.
pub(crate) async fn store_events(
    s: &AppState,
    items: Vec<EventItem>,
    extra: Vec<Value>,
) -> Result<Value, ApiError> {
    let (mut results, valid) = parse_events(&items, &s.limits.events);
    results.extend(extra);
    let pending: Vec<usize> = valid.iter().map(|e| e.index).collect();
    let outcomes = match s.ingest.ingest(valid).await {
        Ok(outcomes) => outcomes,
        Err(e) => return Err(failed_batch(e, "event", refused_items(&results), pending)),
    };
    results.extend(outcomes.iter().map(|o| {
        let mut v = serde_json::to_value(o).expect("json");
        if o.status == "conflict" {
            v["code"] = Value::from(409);
        }
        v
    }));
    results.sort_by_key(|r| r["index"].as_u64());
    let count = |st: &str| results.iter().filter(|r| r["status"] == st).count();
    let (accepted, duplicates) = (count("accepted"), count("duplicate"));
    let (rejected, conflicts) = (count("rejected"), count("conflict"));
    let refused = refused_items(&results);
    let summary = json!({"accepted": accepted, "duplicates": duplicates, "rejected": rejected, "conflicts": conflicts, "results": results});
    if accepted + duplicates == 0 && !refused.is_empty() {
        return Err(refused_batch("event", refused, summary));
    }
    Ok(summary)
}

/// Validates a request's events: the rejected ones' results (with the code of each:
/// 413 for an oversized `data`, 422 otherwise), and the valid events.
fn parse_events(
    items: &[EventItem],
    rules: &input::EventRules,
) -> (Vec<Value>, Vec<input::IncomingEvent>) {
    let now = Utc::now();
    // `data` is measured here, once, for its own code.
    let rest = input::EventRules {
        max_data: usize::MAX,
        ..*rules
    };
    let mut results = Vec::new();
    let mut valid = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let parsed = match item {
            EventItem::Elsewhere => continue,
            EventItem::Refused(reason) => Err((422, reason.clone())),
            EventItem::Event(v) => match input::oversized_data(v, rules.max_data) {
                Some(reason) => Err((413, reason.to_string())),
                None => input::parse_event_with(i, v, &rest, now).map_err(|r| (422, r.to_string())),
            },
        };
        match parsed {
            Ok(e) => valid.push(e),
            Err((code, reason)) => results
                .push(json!({"index": i, "status": "rejected", "code": code, "reason": reason})),
        }
    }
    (results, valid)
}

/// Contacts imported per call of [`Engine::import_contacts`] by `/v1/contacts`: what
/// precedes a failed chunk is known to be stored.
const CONTACTS_CHUNK: usize = 500;

/// Contacts, chunk by chunk ([`CONTACTS_CHUNK`]). When the store fails, the answer says
/// which items were stored (the chunks before) and which were not confirmed (`failed`:
/// resending them is safe, importing a contact again changes nothing more).
#[utoipa::path(
    post,
    path = "/v1/contacts",
    tag = "contacts",
    operation_id = "post_contacts",
    summary = "Create or update contacts",
    description = "One contact or a list, by `id` or `email`; other members are fields. Stored in chunks of 500: after a store failure, `failed` lists the items not confirmed stored (resending them is safe).",
    request_body(content = doc::ContactsIn, description = "One contact or a list"),
    responses(
        (status = 200, description = "Stored, at least in part", body = doc::ContactsAnswer),
        (status = 400, description = "The body is not JSON, or neither an object nor a list", body = doc::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Every contact was refused (each in `errors`): nothing was stored", body = doc::Problem, content_type = "application/problem+json")
    )
)]
async fn post_contacts(
    State(s): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let body = request_items(&body, "contact")?;
    let mut summary = nurture_engine::ingest::ImportSummary::default();
    let mut rows = Vec::new();
    for (i, v) in body.iter().enumerate() {
        match input::parse_contact(i, v) {
            Ok(r) => rows.push(r),
            Err(e) => summary.rejected.push(input::Rejected {
                at: i,
                reason: e.to_string(),
            }),
        }
    }
    let mut failed: Option<(ApiError, Vec<usize>)> = None;
    for (k, chunk) in rows.chunks(CONTACTS_CHUNK).enumerate() {
        match s.engine.import_contacts(chunk, Utc::now()).await {
            Ok(part) => {
                summary.created += part.created;
                summary.updated += part.updated;
                summary.rejected.extend(part.rejected);
            }
            Err(e) => {
                let detail = "not confirmed stored (resending it is safe)";
                let unconfirmed = rows[k * CONTACTS_CHUNK..].iter().map(|r| r.line);
                failed = Some((ApiError::from_engine(e, detail), unconfirmed.collect()));
                break;
            }
        }
    }
    s.wake.notify_one();
    summary.rejected.sort_by_key(|r| r.at);
    let refused: Vec<ItemProblem> = summary
        .rejected
        .iter()
        .map(|r| ItemProblem {
            index: r.at,
            status: 422,
            reason: r.reason.clone(),
        })
        .collect();
    let stored = summary.created + summary.updated;
    let mut answer = json!({
        "created": summary.created,
        "updated": summary.updated,
        "rejected": summary.rejected.iter().map(|r| json!({"index": r.at, "reason": r.reason})).collect::<Vec<_>>(),
    });
    match failed {
        // The first chunk failed: none was confirmed.
        Some((err, unconfirmed)) if stored == 0 => {
            let mut errors = refused;
            errors.extend(unconfirmed.iter().map(|&i| err.item(i)));
            errors.sort_by_key(|p| p.index);
            Err(err.with_errors(errors))
        }
        Some((err, unconfirmed)) => {
            answer["failed"] =
                serde_json::to_value(unconfirmed.iter().map(|&i| err.item(i)).collect::<Vec<_>>())
                    .expect("json");
            Ok(Json(answer).into_response())
        }
        // Every item refused: nothing was stored.
        None if stored == 0 && !refused.is_empty() => {
            Err(refused_batch("contact", refused, answer))
        }
        None => Ok(Json(answer).into_response()),
    }
}

#[utoipa::path(
    get,
    path = "/v1/runs/{id}",
    tag = "runs",
    operation_id = "get_run",
    summary = "A run and its journal",
    description = "The run and every line of its journal, oldest first.",
    params(("id" = String, Path, description = "The run's id")),
    responses(
        (status = 200, description = "The run", body = doc::RunWithJournal),
        (status = 404, description = "No such run", body = doc::Problem, content_type = "application/problem+json")
    )
)]
async fn get_run(State(s): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let store = &s.engine.store;
    let unread =
        |e: nurture_store::StoreError| ApiError::from_engine(e.into(), "the run was not read");
    let Some(run) = store.run(&id).await.map_err(unread)? else {
        return Err(no_such("run", &id));
    };
    let journal = store.journal(&id).await.map_err(unread)?;
    Ok(Json(json!({"run": run, "journal": journal})).into_response())
}

/// A 404 problem for the `what` of id `id` (shown cut to 200 characters).
pub(crate) fn no_such(what: &str, id: &str) -> ApiError {
    let shown: String = id.chars().take(200).collect();
    ApiError::new(ProblemKind::NotFound, format!("no {what} {shown}"))
}

/// `GET /v1/contacts/{id}` (an id, or an email address): the contact, its grade, its
/// runs, and its events of the last 90 days (the newest 100).
#[utoipa::path(
    get,
    path = "/v1/contacts/{id}",
    tag = "contacts",
    operation_id = "get_contact",
    summary = "A contact and its story",
    description = "The contact (by id, else by address): grade, score history, lifecycle and consent histories, segments, its events of the last 90 days (the newest 100), runs and timeline.",
    params(("id" = String, Path, description = "The contact's id, or its email address")),
    responses(
        (status = 200, description = "The contact", body = doc::ContactStory),
        (status = 404, description = "No such contact", body = doc::Problem, content_type = "application/problem+json")
    )
)]
async fn get_contact(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let story = nurture_engine::story::contact_story(&*s.engine.store, &id, chrono::Utc::now())
        .await
        .map_err(|e| ApiError::from_engine(e.into(), "the contact was not read"))?;
    let Some(story) = story else {
        return Err(no_such("contact", &id));
    };
    let grade = nurture_engine::eval::grade(&s.engine.project.scoring, story.contact.score);
    let mut v = json!(story);
    v["grade"] = json!(grade);
    Ok(Json(v).into_response())
}

/// `GET /v1/runs/{id}/explain`: the run's story ([`nurture_engine::explain`]).
#[utoipa::path(
    get,
    path = "/v1/runs/{id}/explain",
    tag = "runs",
    operation_id = "explain_run",
    summary = "A run's story",
    description = "One line per decision, in time order.",
    params(("id" = String, Path, description = "The run's id")),
    responses(
        (status = 200, description = "The run's story", body = doc::Explanation),
        (status = 404, description = "No such run", body = doc::Problem, content_type = "application/problem+json")
    )
)]
async fn explain_run(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let story = nurture_engine::explain::explain_run(&*s.engine.store, &id)
        .await
        .map_err(|e| ApiError::from_engine(e, "the run was not read"))?;
    match story {
        Some(x) => Ok(Json(x).into_response()),
        None => Err(no_such("run", &id)),
    }
}

/// The body of `POST /v1/runs/{id}/cancel` and `POST /v1/runs`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ByHand {
    /// `POST /v1/runs`: the workflow to start.
    workflow: Option<String>,
    /// `POST /v1/runs`: the contact id.
    contact: Option<String>,
    /// Why (journaled).
    reason: String,
}

/// The most characters of a reason kept in the journal.
const MAX_REASON: usize = 500;

fn by_hand(body: &[u8]) -> Result<ByHand, ApiError> {
    let mut b: ByHand = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ProblemKind::BadRequest,
            format!(
                "expected {{\"reason\": ...}}: {}",
                e.to_string().chars().take(200).collect::<String>()
            ),
        )
    })?;
    if b.reason.trim().is_empty() {
        return Err(ApiError::new(ProblemKind::Unprocessable, "give a `reason`"));
    }
    b.reason = b.reason.chars().take(MAX_REASON).collect();
    Ok(b)
}

/// A manual action's refusal as a problem: 404 for what does not exist, 409 for a state
/// that forbids it.
fn manual_problem(e: nurture_engine::manual::ManualError) -> ApiError {
    use nurture_engine::manual::ManualError as M;
    let shown = |s: String| s.chars().take(300).collect::<String>();
    match e {
        M::NoRun(_) | M::NoContact(_) | M::NoWorkflow(_) => {
            ApiError::new(ProblemKind::NotFound, shown(e.to_string()))
        }
        M::Ended(..) | M::AlreadyIn(_) | M::Paused(_) => {
            ApiError::new(ProblemKind::Conflict, shown(e.to_string()))
        }
        M::Engine(e) => ApiError::from_engine(e, "nothing was changed"),
    }
}

/// `POST /v1/runs/{id}/cancel` `{"reason"}`: ends an open run as `cancelled`.
#[utoipa::path(
    post,
    path = "/v1/runs/{id}/cancel",
    tag = "runs",
    operation_id = "cancel_run",
    summary = "Cancel a run",
    description = "Ends an open run as `exited` (`cancelled`); journaled with the reason.",
    params(("id" = String, Path, description = "The run's id")),
    request_body = doc::Reason,
    responses(
        (status = 200, description = "Cancelled", body = doc::Cancelled),
        (status = 400, description = "The body is not `{\"reason\": ...}`", body = doc::Problem, content_type = "application/problem+json"),
        (status = 422, description = "No `reason` given", body = doc::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such run", body = doc::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The run has ended already", body = doc::Problem, content_type = "application/problem+json")
    )
)]
async fn cancel_run(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let b = by_hand(&body)?;
    s.engine
        .cancel_run(&id, "api", &b.reason, Utc::now())
        .await
        .map_err(manual_problem)?;
    Ok(Json(json!({"run": id, "status": "exited", "reason": "cancelled"})).into_response())
}

/// `POST /v1/workflows/{id}/pause` `{"reason"}`.
#[utoipa::path(
    post,
    path = "/v1/workflows/{id}/pause",
    tag = "workflows",
    operation_id = "pause_workflow",
    summary = "Pause a workflow",
    description = "No enrolments; timers and sends are held until it is resumed.",
    params(("id" = String, Path, description = "The workflow's id")),
    request_body = doc::Reason,
    responses(
        (status = 200, description = "The workflow's state", body = doc::WorkflowState),
        (status = 400, description = "The body is not `{\"reason\": ...}`", body = doc::Problem, content_type = "application/problem+json"),
        (status = 422, description = "No `reason` given", body = doc::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such workflow", body = doc::Problem, content_type = "application/problem+json")
    )
)]
async fn pause_workflow(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    set_paused(&s, &id, true, &body).await
}

/// `POST /v1/workflows/{id}/resume` `{"reason"}`.
#[utoipa::path(
    post,
    path = "/v1/workflows/{id}/resume",
    tag = "workflows",
    operation_id = "resume_workflow",
    summary = "Resume a workflow",
    description = "Held timers and sends go out now.",
    params(("id" = String, Path, description = "The workflow's id")),
    request_body = doc::Reason,
    responses(
        (status = 200, description = "The workflow's state", body = doc::WorkflowState),
        (status = 400, description = "The body is not `{\"reason\": ...}`", body = doc::Problem, content_type = "application/problem+json"),
        (status = 422, description = "No `reason` given", body = doc::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such workflow", body = doc::Problem, content_type = "application/problem+json")
    )
)]
async fn resume_workflow(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    set_paused(&s, &id, false, &body).await
}

/// Pauses or resumes workflow `id` (404 for an unknown one); answers its state.
async fn set_paused(
    s: &AppState,
    id: &str,
    paused: bool,
    body: &[u8],
) -> Result<Response, ApiError> {
    let b = by_hand(body)?;
    match s
        .engine
        .set_paused(id, paused, "api", &b.reason, Utc::now())
        .await
    {
        Ok(_) => {
            Ok(Json(json!({"workflow": id, "paused": s.engine.is_paused(id)})).into_response())
        }
        Err(nurture_engine::EngineError::Invalid(why)) => Err(ApiError::new(
            ProblemKind::NotFound,
            why.chars().take(300).collect::<String>(),
        )),
        Err(e) => Err(ApiError::from_engine(e, "nothing was changed")),
    }
}

/// `POST /v1/runs` `{"workflow", "contact", "reason"}`: starts a run by hand.
#[utoipa::path(
    post,
    path = "/v1/runs",
    tag = "runs",
    operation_id = "post_run",
    summary = "Start a run by hand",
    description = "Enrols the contact in the workflow; journaled with the reason.",
    request_body = doc::StartRun,
    responses(
        (status = 201, description = "Started", body = doc::Started),
        (status = 400, description = "The body is not `{\"workflow\", \"contact\", \"reason\"}`", body = doc::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such workflow or contact", body = doc::Problem, content_type = "application/problem+json"),
        (status = 409, description = "The contact is in the workflow already, or the workflow is paused", body = doc::Problem, content_type = "application/problem+json"),
        (status = 422, description = "No `reason`, `workflow` or `contact` given", body = doc::Problem, content_type = "application/problem+json")
    )
)]
async fn post_run(
    State(s): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let b = by_hand(&body)?;
    let (Some(workflow), Some(contact)) = (&b.workflow, &b.contact) else {
        return Err(ApiError::new(
            ProblemKind::Unprocessable,
            "give `workflow` and `contact` (an id)",
        ));
    };
    s.engine
        .start_run(workflow, contact, "api", &b.reason, Utc::now())
        .await
        .map_err(manual_problem)?;
    let runs = s
        .engine
        .store
        .runs_of_contact(contact)
        .await
        .map_err(|e| ApiError::from_engine(e.into(), "the run was started"))?;
    let run = runs
        .into_iter()
        .filter(|r| &r.workflow == workflow)
        .max_by_key(|r| r.started_at);
    Ok((StatusCode::CREATED, Json(json!({"run": run}))).into_response())
}

/// Rounds per pass of the engine loop ([`Engine::tick_some`]): the first round is one
/// lane (under a light load the pass ends there, and the outbox loop hears about new
/// entries at once); a backlog gets all lanes for the other rounds. Short passes also let
/// a shutdown request be seen quickly.
const TICK_ROUNDS: usize = 4;

/// The scheduler: three loops running side by side, and this worker's heartbeat.
///
/// - The **engine loop** applies events, fires timers and schedules, then sleeps until the
///   next due instant, a wake-up (an event was stored), or at most `poll`.
/// - The **hand-off loop** delivers the outbox entries the engine's commits claimed for
///   this process ([`Engine::hand_off`]) as soon as each commit lands: no claim of their
///   own, no waiting for a delivery pass to come round.
/// - The **outbox loop** delivers whatever else is due (retries, deferrals, entries of
///   workers that died, entries queued while the hand-off was full), claiming them; it is
///   woken by every commit that queued entries it did not hand over
///   ([`Engine::outbox_queued`]). Slow webhooks never hold up event processing, and a
///   backlog of events never holds up delivery.
/// - The **heartbeat** keeps this worker registered, which sizes its share of the
///   database's lanes ([`nurture_store::Store::heartbeat`]).
///
/// At shutdown the engine loop ends its pass and stops the hand-off; what was handed over
/// is still delivered and recorded before this returns.
pub async fn scheduler(
    engine: Arc<Engine>,
    deliverer: Deliverer,
    wake: Arc<Notify>,
    shutdown: watch::Receiver<bool>,
    poll: Duration,
) {
    // Registered before the first step, so a worker joining others starts with its share
    // of the database's lanes rather than the whole budget.
    let me = worker_identity();
    let alive = heartbeat(&engine, &me, 0).await;
    let deliverer = Arc::new(deliverer.waking(wake.clone()).holding(engine.clone()));
    let handed = engine.hand_off();
    let engine_shutdown = shutdown.clone();
    tokio::join!(
        async {
            engine_loop(engine.clone(), wake, engine_shutdown, poll).await;
            // No more commits: the hand-off loop drains what it was sent, then ends.
            engine.end_hand_off();
        },
        hand_off_loop(deliverer.clone(), handed),
        outbox_loop(
            engine.clone(),
            deliverer,
            engine.outbox_queued.clone(),
            shutdown.clone(),
            poll
        ),
        heartbeat_loop(engine.clone(), me, alive, shutdown),
    );
}

/// How often a process looks for newly deployed workflow versions.
pub const VERSIONS_POLL: Duration = Duration::from_secs(2);

/// Keeps the engine's current plans in step with the deployed versions (see
/// [`nurture_engine::versions`]) until shutdown: a `nurture deploy` reaches running
/// processes within [`VERSIONS_POLL`], without a restart. Each change is logged; a
/// deployed version this process cannot compile is a warning (and the worker's note in
/// `nurture workers`, see [`heartbeat_loop`]).
pub async fn versions_loop(engine: Arc<Engine>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(VERSIONS_POLL) => {}
            r = shutdown.changed() => if r.is_err() { break; },
        }
        if *shutdown.borrow() {
            break;
        }
        match engine.refresh_versions().await {
            Ok(changes) => log_version_changes(&changes),
            Err(e) => tracing::warn!(error = %e, "could not read the deployed versions"),
        }
    }
}

fn log_version_changes(changes: &[nurture_engine::versions::Change]) {
    use nurture_engine::versions::Change;
    for c in changes {
        match c {
            Change::Current { workflow, version } => {
                tracing::info!(%workflow, version, "new enrolments now use this version")
            }
            Change::Refused { workflow, reason } => {
                tracing::warn!(%workflow, %reason, "not enrolling into this workflow")
            }
            Change::Paused {
                workflow,
                reason: Some(reason),
            } => tracing::warn!(%workflow, %reason, "paused: no enrolments, timers and sends held"),
            Change::Paused {
                workflow,
                reason: None,
            } => tracing::info!(%workflow, "resumed: held timers and sends go out now"),
        }
    }
}

/// This worker's note: the workflows it does not enrol into, and why.
fn refused_note(engine: &Engine) -> Option<String> {
    let current = engine.plans.current();
    let parts: Vec<String> = current
        .refused
        .iter()
        .map(|(w, why)| format!("not enrolling into {w}: {why}"))
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// This machine's host name (`localhost` when it cannot be read): how workers and
/// deploys say where they ran.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn worker_identity() -> (String, String, u32) {
    let host = host_name();
    let pid = std::process::id();
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    (format!("{host}-{pid}-{nonce:08x}"), host, pid)
}

/// Keeps this worker registered (see [`heartbeat`]) until shutdown, then retires it.
async fn heartbeat_loop(
    engine: Arc<Engine>,
    me: (String, String, u32),
    mut alive: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    // Workers started together registered within moments of each other: a second look
    // soon after the first corrects a share taken before the others arrived.
    let mut every = Duration::from_millis(250);
    let mut note: Option<String> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            r = shutdown.changed() => if r.is_err() { break; },
        }
        if *shutdown.borrow() {
            break;
        }
        alive = heartbeat(&engine, &me, alive).await;
        let now = refused_note(&engine);
        if now != note {
            match engine.store.set_worker_note(&me.0, now.as_deref()).await {
                Ok(()) => note = now,
                Err(e) => tracing::warn!(error = %e, "could not record this worker's note"),
            }
        }
        every = nurture_store::HEARTBEAT;
    }
    if let Err(e) = engine.store.retire(&me.0).await {
        tracing::warn!(error = %e, "could not retire this worker (it ages out)");
    }
}

/// Refreshes this worker's registration ([`nurture_store::Store::heartbeat`]), which sizes
/// its share of the database's concurrency; returns how many workers are alive (`alive`,
/// the previous answer, when the store cannot be reached).
async fn heartbeat(engine: &Engine, me: &(String, String, u32), alive: usize) -> usize {
    match engine.store.heartbeat(&me.0, &me.1, me.2).await {
        Ok(n) => {
            if n != alive {
                tracing::info!(
                    worker = %me.0,
                    workers = n,
                    lanes = engine.store.parallelism(),
                    "workers alive"
                );
            }
            n
        }
        Err(e) => {
            tracing::warn!(error = %e, "worker heartbeat failed");
            alive
        }
    }
}

/// Waits `sleep`, or until woken or asked to stop.
async fn pause(sleep: Duration, wake: &Notify, shutdown: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(sleep) => {}
        _ = wake.notified() => {}
        _ = shutdown.changed() => {}
    }
}

/// How long to sleep: until `next` is due, at most `poll`.
fn until_next(next: Option<nurture_store::Ts>, poll: Duration) -> Duration {
    next.map_or(poll, |n| {
        poll.min((n - Utc::now()).to_std().unwrap_or(Duration::ZERO))
    })
}

/// Counts a failed pass and logs it; returns the backoff: 400 ms doubling up to 12.8 s.
fn failed(failures: &mut u32, e: &dyn std::fmt::Display, what: &str) -> Duration {
    *failures += 1;
    let sleep = Duration::from_millis(200 * 2u64.pow((*failures).min(6)));
    tracing::error!(error = %e, retry_in_ms = sleep.as_millis() as u64, "{what}");
    sleep
}

/// Logs an effect: a failed run at WARN (with why), the rest at INFO.
fn log_effect(e: &nurture_engine::Effect) {
    let workflow = e.workflow.as_deref().unwrap_or("-");
    let step = e.step.as_deref().unwrap_or("-");
    let data = serde_json::Value::Object(e.extra.clone());
    // `data` is JSON text: `--log-json` embeds it as a JSON object.
    if e.effect == "exit" && e.extra.get("reason").and_then(|r| r.as_str()) == Some("error") {
        tracing::warn!(contact = %e.contact, workflow, step, effect = e.effect, data = %data, "run failed");
    } else {
        tracing::info!(contact = %e.contact, workflow, step, effect = e.effect, data = %data, "{}", e.effect);
    }
}

async fn engine_loop(
    engine: Arc<Engine>,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
    poll: Duration,
) {
    let mut failures: u32 = 0;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let now = Utc::now();
        let sleep = match engine.tick_some(now, TICK_ROUNDS).await {
            Ok((effects, more)) => {
                failures = 0;
                effects.iter().for_each(log_effect);
                // (Each commit that queued deliveries handed them over or woke the outbox.)
                if more {
                    continue;
                }
                let next = [
                    engine.store.next_timer().await.ok().flatten(),
                    engine.next_segment_timer().await.ok().flatten(),
                    engine.next_schedule(now),
                ]
                .into_iter()
                .flatten()
                .min();
                until_next(next, poll)
            }
            Err(e) => failed(&mut failures, &e, "scheduler step failed"),
        };
        pause(sleep, &wake, &mut shutdown).await;
    }
}

/// Entries claimed per pass of the outbox loop.
const OUTBOX_BATCH: i64 = 256;

/// Hand-off batches delivered at once: the next batch's deliveries start while the
/// previous batch's outcomes are being committed.
const HAND_OFF_PARALLEL: usize = 4;

/// Delivers what the engine hands over ([`Engine::hand_off`]) until the engine ends the
/// hand-off, then waits for the deliveries under way.
///
/// Each batch (what arrived together, up to [`OUTBOX_BATCH`] entries) is delivered by its
/// own task, up to [`HAND_OFF_PARALLEL`] at once; a batch holding a contact that a running
/// task holds waits for it, so a contact's entries still go one after another, each
/// recorded before the next is attempted (order and frequency caps stay exact).
async fn hand_off_loop(deliverer: Arc<Deliverer>, mut handed: nurture_engine::HandedOff) {
    use std::collections::{HashMap, HashSet};
    let mut running = tokio::task::JoinSet::new();
    let mut busy: HashMap<tokio::task::Id, HashSet<String>> = HashMap::new();
    let reaped = |r: Result<(tokio::task::Id, ()), tokio::task::JoinError>,
                  busy: &mut HashMap<tokio::task::Id, HashSet<String>>| {
        let id = match r {
            Ok((id, ())) => id,
            Err(e) => {
                tracing::error!(error = %e, "a hand-off delivery task failed");
                e.id()
            }
        };
        busy.remove(&id);
    };
    loop {
        let batch = tokio::select! {
            b = handed.rx.recv() => b,
            Some(r) = running.join_next_with_id() => {
                reaped(r, &mut busy);
                continue;
            }
        };
        let Some((mut claimed_at, mut batch)) = batch else {
            break;
        };
        while batch.len() < OUTBOX_BATCH as usize {
            match handed.rx.try_recv() {
                Ok((at, more)) => {
                    claimed_at = claimed_at.min(at);
                    batch.extend(more);
                }
                Err(_) => break,
            }
        }
        let contacts: HashSet<String> = batch.iter().map(|e| e.contact.clone()).collect();
        while running.len() >= HAND_OFF_PARALLEL
            || busy.values().any(|held| !held.is_disjoint(&contacts))
        {
            match running.join_next_with_id().await {
                Some(r) => reaped(r, &mut busy),
                None => break,
            }
        }
        let (d, held, n) = (deliverer.clone(), handed.held.clone(), batch.len());
        let task = running.spawn(async move {
            if let Err(e) = d.deliver(batch, claimed_at).await {
                // Not recorded: the entries stay leased to this worker until the lease
                // runs out, then they are delivered again (same idempotency keys).
                tracing::error!(error = %e, entries = n, "handed-over deliveries not recorded");
            }
            held.fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
        });
        busy.insert(task.id(), contacts);
    }
    while let Some(r) = running.join_next_with_id().await {
        reaped(r, &mut busy);
    }
}

async fn outbox_loop(
    engine: Arc<Engine>,
    deliverer: Arc<Deliverer>,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
    poll: Duration,
) {
    let mut failures: u32 = 0;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let sleep = match deliverer.deliver_due(Utc::now(), OUTBOX_BATCH).await {
            Ok(n) if n > 0 => {
                failures = 0;
                continue;
            }
            Ok(_) => {
                failures = 0;
                until_next(engine.store.next_outbox().await.ok().flatten(), poll)
            }
            Err(e) => failed(&mut failures, &e, "outbox delivery failed"),
        };
        pause(sleep, &wake, &mut shutdown).await;
    }
}

/// Stores one event produced by the API itself (tracking, unsubscribe, bounces); without
/// an `id`, ingestion derives it from the content, as for any event.
async fn record(
    s: &AppState,
    kind: &str,
    contact: Option<String>,
    email: Option<String>,
    id: Option<String>,
    data: Value,
) -> Result<(), EngineError> {
    let event = input::IncomingEvent {
        index: 0,
        id,
        kind: kind.to_string(),
        contact,
        email,
        at: None,
        data,
    };
    s.ingest.ingest(vec![event]).await?;
    Ok(())
}

fn claims_data(c: &Value) -> Value {
    json!({"key": c["k"], "workflow": c["w"], "step": c["s"]})
}

const PIXEL_GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// The event id of a tracking hit: one per token (and per bot flag, so a scanner's fetch
/// does not hide the person's), so a replayed open or click is a duplicate, scored once.
fn hit_id(kind: &str, claims: &Value, bot: bool) -> String {
    let digest = nurture_engine::digest(&[kind, &claims.to_string()]);
    format!("{kind}:{digest}{}", if bot { ":bot" } else { "" })
}

/// The connection's peer address (absent when the server was not started with it).
pub(crate) fn peer(ext: &axum::http::Extensions) -> Option<std::net::IpAddr> {
    ext.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
}

/// A tracking hit: its event, with the bot flag when it looks automated. Not recorded
/// beyond the client's rate, nor again for a token recorded within the hour
/// ([`nurture_channels::email::hits`]); the store keeps one event per token anyway ([`hit_id`]).
async fn track(
    s: &AppState,
    headers: &HeaderMap,
    peer: Option<std::net::IpAddr>,
    claims: &Value,
    kind: &str,
) -> Result<(), EngineError> {
    let ua = headers.get("user-agent").and_then(|v| v.to_str().ok());
    let since = claims["t"].as_i64().map(|t| Utc::now().timestamp() - t);
    let mut data = claims_data(claims);
    if kind == "email.clicked" {
        data["url"] = claims["u"].clone();
    }
    let bot = nurture_channels::email::track::bot_reason(ua, since, kind == "email.clicked");
    let id = hit_id(kind, claims, bot.is_some());
    if let Some(reason) = bot {
        data["bot"] = Value::Bool(true);
        data["bot_reason"] = Value::from(reason);
    }
    let now = std::time::Instant::now();
    if !s.hits.admit(s.hits.client(peer, headers), now) {
        tracing::debug!(kind, "tracking hit over the client's rate: not recorded");
        return Ok(());
    }
    if !s.hits.first_in_window(&id, now) {
        return Ok(());
    }
    // A token of an erased person's email records nothing: no data about them comes back.
    if let Some(c) = claims["c"].as_str() {
        if s.engine.store.is_erased(c).await? {
            tracing::debug!(kind, "tracking hit of an erased contact: not recorded");
            return Ok(());
        }
    }
    let contact = claims["c"].as_str().map(str::to_string);
    let stored = record(s, kind, contact, None, Some(id.clone()), data).await;
    if stored.is_err() {
        s.hits.forget(&id);
    }
    stored
}

#[utoipa::path(
    get,
    path = "/t/o/{token}",
    tag = "tracking",
    operation_id = "track_open",
    summary = "Open pixel",
    description = "Records an `email.opened` event (once per token) and always answers a 1x1 GIF, even for a bad token.",
    params(("token" = String, Path, description = "The signed open token")),
    responses(
        (status = 200, description = "A 1x1 GIF", content_type = "image/gif")
    )
)]
async fn track_open(
    State(s): State<AppState>,
    headers: HeaderMap,
    ext: axum::http::Extensions,
    Path(token): Path<String>,
) -> Response {
    let now = Utc::now().timestamp();
    if let Ok(claims) = s.signer.check(&token, Purpose::Open, now) {
        if let Err(e) = track(&s, &headers, peer(&ext), &claims, "email.opened").await {
            tracing::warn!(error = %e, "open not recorded");
        }
    }
    // Always the pixel: a bad token must not break the email's rendering.
    (
        [
            ("content-type", "image/gif"),
            ("cache-control", "no-store, max-age=0"),
        ],
        PIXEL_GIF,
    )
        .into_response()
}

#[utoipa::path(
    get,
    path = "/t/c/{token}",
    tag = "tracking",
    operation_id = "track_click",
    summary = "Tracked link",
    description = "Records an `email.clicked` event and redirects to the signed URL.",
    params(("token" = String, Path, description = "The signed click token")),
    responses(
        (status = 302, description = "To the link's URL (`Location`)"),
        (status = 404, description = "Unknown link", body = inline(doc::TrackingError)),
        (status = 410, description = "The link has expired", body = inline(doc::TrackingError))
    )
)]
async fn track_click(
    State(s): State<AppState>,
    headers: HeaderMap,
    ext: axum::http::Extensions,
    Path(token): Path<String>,
) -> Response {
    let claims = match s
        .signer
        .check(&token, Purpose::Click, Utc::now().timestamp())
    {
        Ok(c) => c,
        Err(TokenError::Expired) => return error(StatusCode::GONE, "this link has expired"),
        Err(_) => return error(StatusCode::NOT_FOUND, "unknown link"),
    };
    let url = claims["u"].as_str().unwrap_or_default().to_string();
    if let Err(e) = track(&s, &headers, peer(&ext), &claims, "email.clicked").await {
        tracing::warn!(error = %e, "click not recorded");
    }
    (
        StatusCode::FOUND,
        [("location", url.as_str()), ("cache-control", "no-store")],
    )
        .into_response()
}

/// The claims of an unsubscribe token (never expires: RFC 8058).
fn unsubscribe_claims(s: &AppState, token: &str) -> Option<Value> {
    s.signer
        .check(token, Purpose::Unsubscribe, Utc::now().timestamp())
        .ok()
}

fn page(status: StatusCode, body: String) -> Response {
    (
        status,
        [("content-type", "text/html; charset=utf-8"), ("cache-control", "no-store")],
        format!("<!doctype html><html><head><meta name=\"robots\" content=\"noindex\"><title>Unsubscribe</title></head><body style=\"font-family:sans-serif;max-width:480px;margin:3em auto\">{body}</body></html>"),
    )
        .into_response()
}

/// The page of an unsubscription the store failed to record: try again later (503, with
/// `Retry-After`), or the correlation id of the logged error (500).
fn failure_page(err: ApiError) -> Response {
    let retry = err.kind() == ProblemKind::Unavailable;
    let body = if retry {
        "<p>We could not unsubscribe you just now. Please try again in a minute.</p>".to_string()
    } else {
        format!(
            "<p>Something went wrong: you are not unsubscribed yet. Please try again later (reference {}).</p>",
            err.correlation_id().unwrap_or("-")
        )
    };
    let mut r = page(err.status(), body);
    if retry {
        r.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from(crate::problem::RETRY_AFTER_SECS),
        );
    }
    r
}

/// GET changes nothing (link scanners prefetch it): it shows a button that POSTs.
#[utoipa::path(
    get,
    path = "/u/{token}",
    tag = "tracking",
    operation_id = "unsubscribe_page",
    summary = "The unsubscribe page",
    description = "Changes nothing (link scanners prefetch it): shows a button that POSTs.",
    params(("token" = String, Path, description = "The signed unsubscribe token")),
    responses(
        (status = 200, description = "The page", content_type = "text/html", body = String),
        (status = 404, description = "The link is not valid", content_type = "text/html", body = String)
    )
)]
async fn unsubscribe_page(State(s): State<AppState>, Path(token): Path<String>) -> Response {
    match unsubscribe_claims(&s, &token) {
        Some(c) => page(
            StatusCode::OK,
            format!(
                "<p>Stop receiving marketing email at <b>{}</b>?</p><form method=\"post\"><button type=\"submit\">Unsubscribe</button></form>",
                c["a"].as_str().unwrap_or("").replace('<', "&lt;")
            ),
        ),
        None => page(StatusCode::NOT_FOUND, "<p>This unsubscribe link is not valid.</p>".into()),
    }
}

/// RFC 8058 one-click: the token is the only credential (no cookie), the answer is the
/// result itself (no redirect), and repeating it changes nothing more.
#[utoipa::path(
    post,
    path = "/u/{token}",
    tag = "tracking",
    operation_id = "unsubscribe",
    summary = "One-click unsubscribe (RFC 8058)",
    description = "The token is the only credential; idempotent; the answer is the result itself.",
    params(("token" = String, Path, description = "The signed unsubscribe token")),
    responses(
        (status = 200, description = "Unsubscribed", content_type = "text/html", body = String),
        (status = 404, description = "The link is not valid", content_type = "text/html", body = String),
        (status = 500, description = "Not recorded (the page quotes a reference)", content_type = "text/html", body = String),
        (status = 503, description = "Not recorded: try again (with `Retry-After`)", content_type = "text/html", body = String)
    )
)]
async fn unsubscribe(State(s): State<AppState>, Path(token): Path<String>) -> Response {
    let Some(c) = unsubscribe_claims(&s, &token) else {
        return page(
            StatusCode::NOT_FOUND,
            "<p>This unsubscribe link is not valid.</p>".into(),
        );
    };
    let address = c["a"].as_str().unwrap_or("").to_string();
    match s
        .engine
        .store
        .suppress(&address, "unsubscribed", Utc::now())
        .await
    {
        Ok(_) => {}
        Err(e) => return failure_page(ApiError::from_engine(e.into(), "not unsubscribed")),
    }
    // One event per address: a repeated POST is a duplicate, not a second unsubscribe.
    let id = format!("email.unsubscribed:{address}");
    if let Err(e) = record(
        &s,
        "email.unsubscribed",
        c["c"].as_str().map(str::to_string),
        None,
        Some(id),
        claims_data(&c),
    )
    .await
    {
        return failure_page(ApiError::from_engine(
            e,
            "the unsubscription was not recorded",
        ));
    }
    page(
        StatusCode::OK,
        format!(
            "<p><b>{}</b> is unsubscribed. You will not receive marketing email from us again.</p>",
            address.replace('<', "&lt;")
        ),
    )
}

/// The longest `reason` a bounce may carry, in bytes.
pub(crate) const MAX_BOUNCE_REASON: usize = 2000;

/// One valid bounce or complaint notification.
pub(crate) struct Bounce {
    index: usize,
    email: String,
    kind: &'static str,
    permanent: bool,
    reason: String,
    id: Option<String>,
    /// The provider whose webhook sent it (`ses`, `sendgrid`...), none for our format.
    provider: Option<&'static str>,
}

/// What one item of a bounce request became.
pub(crate) enum BounceItem {
    /// A bounce or complaint to store.
    Bounce(Bounce),
    /// Not valid: not stored (422), with the reason.
    Refused(String),
    /// Valid but not a bounce or complaint (a provider's delivery or open event): nothing
    /// to store, with the reason.
    Ignored(String),
}

impl Bounce {
    /// A bounce (`kind` `bounce` or `complaint`, a complaint is always permanent) of
    /// item `index`, checked: the address, the reason (at most [`MAX_BOUNCE_REASON`]
    /// bytes, printable) and the id.
    pub(crate) fn new(
        index: usize,
        email: &str,
        kind: &'static str,
        permanent: bool,
        reason: String,
        id: Option<String>,
    ) -> Result<Bounce, String> {
        if !input::valid_email(email) {
            return Err("`email` must be an email address".into());
        }
        if reason.len() > MAX_BOUNCE_REASON {
            return Err(format!("`reason` is longer than {MAX_BOUNCE_REASON} bytes"));
        }
        if reason
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err("`reason` must be printable: no control characters or null bytes".into());
        }
        if let Some(id) = &id {
            input::check_id("id", id).map_err(|e| e.to_string())?;
        }
        Ok(Bounce {
            index,
            email: email.to_lowercase(),
            kind,
            permanent: kind == "complaint" || permanent,
            reason,
            id,
            provider: None,
        })
    }

    /// This bounce, as sent by `provider`'s webhook.
    pub(crate) fn with_provider(mut self, provider: &'static str) -> Bounce {
        self.provider = Some(provider);
        self
    }
}

/// Validates one bounce notification of nurture's own format.
fn parse_bounce(index: usize, b: &Value) -> BounceItem {
    if !b.is_object() {
        return BounceItem::Refused("a bounce is a JSON object".into());
    }
    if let Some(route) = providers::looks_like(b) {
        return BounceItem::Refused(format!(
            "this is a provider's webhook payload, not nurture's bounce format: send it to {route}"
        ));
    }
    let Some(email) = b["email"].as_str() else {
        return BounceItem::Refused("`email` must be an email address".into());
    };
    let kind = match b["type"].as_str() {
        None | Some("bounce") => "bounce",
        Some("complaint") => "complaint",
        Some(_) => return BounceItem::Refused("`type` must be bounce or complaint".into()),
    };
    let permanent = b["permanent"].as_bool().unwrap_or(false);
    let reason = b["reason"].as_str().unwrap_or(kind).to_string();
    let id = b["id"].as_str().map(str::to_string);
    match Bounce::new(index, email, kind, permanent, reason, id) {
        Ok(b) => BounceItem::Bounce(b),
        Err(e) => BounceItem::Refused(e),
    }
}

/// Bounce and complaint notifications (your MTA's bounce processor, or anything that
/// speaks nurture's format): `{"email", "type": "bounce"|"complaint", "permanent": bool,
/// "reason", "id"}`. Providers' own formats have their routes ([`providers`]).
/// Permanent bounces and complaints suppress the address; temporary bounces are only
/// recorded. The answer is [`store_bounces`]'.
#[utoipa::path(
    post,
    path = "/v1/bounces",
    tag = "bounces",
    operation_id = "post_bounces",
    summary = "Bounces and complaints in nurture's format",
    description = "Permanent bounces and complaints suppress the address; temporary bounces are only recorded. Providers' own formats have their routes (`/v1/bounces/{provider}`).",
    request_body(content = doc::BouncesIn, description = "One notification or a list"),
    responses(
        (status = 200, description = "Recorded, at least in part: one result per item", body = doc::BouncesAnswer),
        (status = 400, description = "The body is not JSON, or neither an object nor a list", body = doc::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Every notification conflicts with a stored event: nothing was stored", body = doc::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Every notification was refused (each in `errors`): nothing was stored", body = doc::Problem, content_type = "application/problem+json")
    )
)]
async fn post_bounces(
    State(s): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let items = request_items(&body, "bounce")?;
    let items = items
        .iter()
        .enumerate()
        .map(|(i, b)| parse_bounce(i, b))
        .collect();
    store_bounces(&s, items).await
}

/// The event of a bounce.
fn bounce_event(b: &Bounce) -> input::IncomingEvent {
    let mut data = json!({"permanent": b.permanent, "reason": b.reason});
    if let Some(p) = b.provider {
        data["provider"] = Value::from(p);
    }
    input::IncomingEvent {
        index: b.index,
        id: b.id.clone(),
        kind: if b.kind == "complaint" {
            "email.complained"
        } else {
            "email.bounced"
        }
        .to_string(),
        contact: None,
        email: Some(b.email.clone()),
        at: None,
        data,
    }
}

/// Stores the bounces of a request (item `i` of `items` is the request's item `i`).
///
/// The valid ones' events are stored together (all or none), then the addresses of
/// permanent bounces and complaints suppressed. The answer is per item: `accepted`
/// (stored; a resent notification is one event), `ignored` (nothing to store, with
/// `reason`), `rejected` or `conflict` (not stored, with `code` and `reason`), or `failed`
/// (recorded but not suppressed: resend it). When nothing was stored and some item was
/// refused the answer is a problem with every refused item in `errors`.
pub(crate) async fn store_bounces(
    s: &AppState,
    items: Vec<BounceItem>,
) -> Result<Response, ApiError> {
    let mut results: Vec<Value> = Vec::new();
    let mut valid: Vec<Bounce> = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        match item {
            BounceItem::Bounce(mut b) => {
                b.index = i;
                valid.push(b);
            }
            BounceItem::Refused(reason) => results
                .push(json!({"index": i, "status": "rejected", "code": 422, "reason": reason})),
            BounceItem::Ignored(reason) => {
                results.push(json!({"index": i, "status": "ignored", "reason": reason}))
            }
        }
    }
    // The provider's id when it gives one; otherwise ingestion derives it from the
    // content within the receive window (`engine::ingest::derived_event_id`), so a
    // resent notification is one event.
    let events: Vec<input::IncomingEvent> = valid.iter().map(bounce_event).collect();
    let outcomes = match s.ingest.ingest(events).await {
        Ok(outcomes) => outcomes,
        Err(e) => {
            let pending = valid.iter().map(|b| b.index);
            return Err(failed_batch(e, "bounce", refused_items(&results), pending));
        }
    };
    let mut suppress_failed: Option<ApiError> = None;
    for (b, o) in valid.iter().zip(&outcomes) {
        if o.status != "accepted" && o.status != "duplicate" {
            let code = if o.status == "conflict" { 409 } else { 422 };
            results.push(
                json!({"index": b.index, "status": o.status, "code": code, "reason": o.reason}),
            );
            continue;
        }
        if b.permanent && suppress_failed.is_none() {
            let why = format!("{}: {}", b.kind, b.reason);
            if let Err(e) = s.engine.store.suppress(&b.email, &why, Utc::now()).await {
                suppress_failed = Some(ApiError::from_engine(
                    e.into(),
                    "the bounce was recorded but its address is not suppressed: resend this item",
                ));
            }
        }
        match &suppress_failed {
            Some(err) if b.permanent => {
                let p = err.item(b.index);
                results.push(json!({"index": b.index, "status": "failed", "code": p.status, "reason": p.reason}));
            }
            _ => {
                let mut r =
                    json!({"index": b.index, "status": "accepted", "suppressed": b.permanent});
                if o.status == "duplicate" {
                    r["duplicate"] = Value::Bool(true);
                }
                results.push(r);
            }
        }
    }
    results.sort_by_key(|r| r["index"].as_u64());
    let count = |st: &str| results.iter().filter(|r| r["status"] == st).count();
    let (accepted, failed) = (count("accepted"), count("failed"));
    let refused = refused_items(&results);
    let summary = json!({
        "accepted": accepted,
        "rejected": count("rejected"),
        "conflicts": count("conflict"),
        "failed": failed,
        "ignored": count("ignored"),
        "results": results,
    });
    if accepted + failed == 0 && !refused.is_empty() {
        return Err(refused_batch("bounce", refused, summary));
    }
    Ok(Json(summary).into_response())
}
