//! One process serving several workspaces: each is a project of its own (its folder, its
//! store, its API keys, its tracking key), served by its own [`AppState`] and router, as
//! if it ran alone. This module only picks the workspace of a request:
//!
//! | request | workspace |
//! | --- | --- |
//! | `/w/{name}/...` | `name`, the rest of the path served as `/...` (the links of its emails and forms) |
//! | `/v1/...`, `/metrics` | the one whose key the request presents (401 when none) |
//! | `/ui/...` | the one of the session cookie, or at login the one of the key typed in |
//! | `/healthz` | every one: 200 only when every store accepts writes |
//! | `/openapi.json` | the document (the same for all) |
//!
//! Everything else is 404: a tracking link, an unsubscribe link or a form has no
//! workspace without its `/w/{name}` prefix. Under `/w/{name}` the workspace's own router
//! checks the key again, so a key of another workspace is 401 there, and the ids of
//! another workspace are 404 everywhere: each workspace's store holds only its own rows
//! (its own SQLite file, or its own Postgres schema alone in the connection's
//! `search_path`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower::ServiceExt as _;

use crate::problem::{ApiError, ProblemKind};
use crate::AppState;

/// A workspace's name: lower-case letters, digits and `-`, starting with a letter or
/// digit, at most 32 characters (it is a path segment and a log field).
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// One workspace served: its name, state and router.
pub struct Workspace {
    name: String,
    state: AppState,
    router: Router,
}

impl Workspace {
    /// The workspace `name` served with `state` (its router is built here).
    pub fn new(name: String, state: AppState) -> Self {
        let router = crate::router(state.clone());
        Workspace {
            name,
            state,
            router,
        }
    }
}

/// The workspaces of a process, and which key belongs to which.
pub struct Workspaces {
    list: Vec<Workspace>,
    /// Hashes of keys seen valid, to their workspace (the workspace still checks the key
    /// at every request, so a revoked key stops at once).
    known: Mutex<HashMap<String, usize>>,
}

/// Keys remembered at most (then forgotten all at once and looked up again).
const MAX_KNOWN_KEYS: usize = 10_000;

/// The longest body read to find the workspace of a dashboard login.
const MAX_LOGIN_BODY: usize = 16 * 1024;

/// How long a dashboard login's body may take to arrive.
const LOGIN_BODY_TIMEOUT: Duration = Duration::from_secs(10);

impl Workspaces {
    /// The workspaces served, in this order (the first one answers a dashboard page
    /// asked for without a session).
    pub fn new(list: Vec<Workspace>) -> Self {
        Workspaces {
            list,
            known: Mutex::new(HashMap::new()),
        }
    }

    fn named(&self, name: &str) -> Option<&Workspace> {
        self.list.iter().find(|w| w.name == name)
    }

    /// The workspace whose key `given` is (the server key or a live stored key).
    async fn of_key(&self, given: &str) -> Result<Option<&Workspace>, ApiError> {
        if given.is_empty() {
            return Ok(None);
        }
        let hash = nurture_store::keys::key_hash(given);
        if let Some(i) = self.known.lock().expect("keys lock").get(&hash) {
            return Ok(self.list.get(*i));
        }
        for (i, w) in self.list.iter().enumerate() {
            let found = crate::auth::principal(&w.state, given)
                .await
                .map_err(|e| ApiError::from_engine(e.into(), "the key was not checked"))?;
            if found.is_some() {
                let mut known = self.known.lock().expect("keys lock");
                if known.len() >= MAX_KNOWN_KEYS {
                    known.clear();
                }
                known.insert(hash, i);
                return Ok(Some(w));
            }
        }
        Ok(None)
    }

    /// The workspace of a dashboard session token.
    fn of_session(&self, token: &str) -> Option<&Workspace> {
        if token.is_empty() {
            return None;
        }
        self.list.iter().find(|w| w.state.ui.is_open(token))
    }
}

/// The router of a process serving `all`.
pub fn router(all: Arc<Workspaces>) -> Router {
    Router::new().fallback(dispatch).with_state(all)
}

/// Picks the workspace of `request` (the table in the module docs) and lets its router
/// answer.
async fn dispatch(State(all): State<Arc<Workspaces>>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    if let Some(rest) = path.strip_prefix("/w/") {
        return prefixed(&all, rest, request).await;
    }
    let chosen = if path.starts_with("/v1/") || path == "/metrics" {
        let given = crate::presented_key(request.headers()).unwrap_or_default();
        match all.of_key(&given).await {
            Ok(Some(w)) => w,
            Ok(None) => return crate::closing(ApiError::unauthorized().into_response()),
            Err(e) => return e.into_response(),
        }
    } else if path == "/ui" || path.starts_with("/ui/") {
        return dashboard(&all, request).await;
    } else if path == "/healthz" {
        return health(&all, request).await;
    } else if path == "/openapi.json" {
        &all.list[0]
    } else {
        return not_here(&path);
    };
    forward(chosen, request).await
}

/// `/w/{name}/...`: the workspace `name`, serving the rest of the path.
async fn prefixed(all: &Workspaces, rest: &str, mut request: Request) -> Response {
    let (name, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let Some(w) = all.named(name) else {
        return ApiError::new(ProblemKind::NotFound, "no such workspace").into_response();
    };
    let query = request
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let Ok(uri) = format!("/{tail}{query}").parse::<Uri>() else {
        return ApiError::new(ProblemKind::BadRequest, "the path is not valid").into_response();
    };
    *request.uri_mut() = uri;
    forward(w, request).await
}

/// A dashboard request: the workspace of its session, or at login of the key typed in;
/// else the first (which shows the login form, or refuses the key and counts the try).
async fn dashboard(all: &Workspaces, request: Request) -> Response {
    let token = crate::ui::session_cookie(request.headers()).to_string();
    if let Some(w) = all.of_session(&token) {
        return forward(w, request).await;
    }
    if request.method() != axum::http::Method::POST || request.uri().path() != "/ui/login" {
        return forward(&all.list[0], request).await;
    }
    let (parts, body) = request.into_parts();
    let read = tokio::time::timeout(
        LOGIN_BODY_TIMEOUT,
        axum::body::to_bytes(body, MAX_LOGIN_BODY),
    )
    .await;
    let bytes = match read {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => {
            let e = ApiError::new(ProblemKind::PayloadTooLarge, "the login form is too large");
            return crate::closing(e.into_response());
        }
        Err(_) => {
            let e = ApiError::new(
                ProblemKind::RequestTimeout,
                "the login form came too slowly",
            );
            return crate::closing(e.into_response());
        }
    };
    let key = url::form_urlencoded::parse(&bytes)
        .find(|(k, _)| k == "key")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let w = match all.of_key(&key).await {
        Ok(found) => found.unwrap_or(&all.list[0]),
        Err(e) => return e.into_response(),
    };
    forward(w, Request::from_parts(parts, axum::body::Body::from(bytes))).await
}

/// `/healthz`: the first workspace whose store does not accept writes answers; else 200.
async fn health(all: &Workspaces, request: Request) -> Response {
    let mut last = None;
    for w in &all.list {
        let mut probe = Request::new(axum::body::Body::empty());
        *probe.uri_mut() = request.uri().clone();
        *probe.headers_mut() = request.headers().clone();
        let r = forward(w, probe).await;
        if r.status() != StatusCode::OK {
            return r;
        }
        last = Some(r);
    }
    last.unwrap_or_else(|| StatusCode::OK.into_response())
}

/// 404 for a path outside the workspace-free routes, saying where links live.
fn not_here(path: &str) -> Response {
    ApiError::new(
        ProblemKind::NotFound,
        format!(
            "no route {}: this server serves several workspaces; their links and forms are under /w/{{workspace}}/",
            path.chars().take(200).collect::<String>()
        ),
    )
    .into_response()
}

/// `w`'s answer to `request`; its log lines name the workspace.
async fn forward(w: &Workspace, request: Request) -> Response {
    use tracing::Instrument as _;
    let span = tracing::info_span!("workspace", name = %w.name);
    match w.router.clone().oneshot(request).instrument(span).await {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_path_segments_of_lower_case_letters_digits_and_dashes() {
        for ok in ["acme", "a", "client-7", "7eleven"] {
            assert!(valid_name(ok), "{ok}");
        }
        let long = "a".repeat(33);
        for bad in [
            "",
            "-x",
            "Acme",
            "a/b",
            "a.b",
            "..",
            "a b",
            "é",
            long.as_str(),
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
