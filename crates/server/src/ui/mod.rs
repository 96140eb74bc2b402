//! The dashboard: server-rendered pages under `/ui` on the API's port.
//!
//! | page | |
//! | --- | --- |
//! | `/ui/` | campaigns: latest version, open runs, entered in 7 days, goal rate, trend |
//! | `/ui/campaigns/{id}` | the workflow graph with live counts, versions, emails, A/B results |
//! | `/ui/runs/{id}` | a run: its explain story and journal |
//! | `/ui/contacts/{id}` | a contact: profile, consent, score chart, segments, lifecycle, events, runs |
//! | `/ui/funnel` | the lead funnel |
//! | `/ui/ops` | queues, timers and their lag, outbox by state (requeue ambiguous), workers, problems |
//! | `/ui/search?q=` | a contact by address or id, or a run by id |
//!
//! Login takes the API key and gives a session cookie (`HttpOnly`, `SameSite=Strict`,
//! `Secure` when `[email] base_url` is https); sessions live in the server's memory for
//! 12 hours. Every form that changes something carries the session's CSRF token (the
//! login form a token of its own, double-submitted as a cookie). Pages are HTML
//! rendered with minijinja (escaped by default), graphs and charts are SVG drawn here,
//! and the assets (CSS, htmx, a small script) are embedded in the binary. Pages read
//! without JavaScript; htmx only refreshes the live counts. Every answer has a strict
//! Content-Security-Policy, `no-store` caching and `X-Frame-Options: DENY`.

mod pages;
mod svg;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

use crate::AppState;

/// How long a session lasts after login.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; the oldest goes first beyond it.
const MAX_SESSIONS: usize = 10_000;
/// The session cookie's name.
const SESSION_COOKIE: &str = "nurture_session";
/// The login form's double-submitted token.
const LOGIN_COOKIE: &str = "nurture_login";
/// Wrong keys a client may try per [`FAILURE_WINDOW`]; then every login of that client
/// is refused (429) until the window has passed.
const MAX_FAILURES: u32 = 10;
const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);

/// The dashboard's routes (merged into the API's router).
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(pages::campaigns))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/campaigns/{id}", get(pages::campaign))
        .route("/ui/campaigns/{id}/graph", get(pages::campaign_graph))
        .route("/ui/runs/{id}", get(pages::run))
        .route("/ui/contacts/{id}", get(pages::contact))
        .route("/ui/funnel", get(pages::funnel))
        .route("/ui/ops", get(pages::ops))
        .route("/ui/ops/requeue", post(pages::requeue))
        .route("/ui/search", get(pages::search))
        .route("/ui/assets/{name}", get(asset))
}

/// The logged-in sessions: token to its CSRF token and expiry.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    /// Failed logins per client (unknown clients share one entry): count, window start.
    failures: Mutex<HashMap<Option<std::net::IpAddr>, (u32, Instant)>>,
}

struct Session {
    csrf: String,
    expires: Instant,
}

impl Sessions {
    /// A new session; returns its cookie token.
    fn open(&self) -> String {
        let token = random_token();
        let mut map = self.map.lock().expect("sessions lock");
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(
            token.clone(),
            Session {
                csrf: random_token(),
                expires: now + SESSION_TTL,
            },
        );
        token
    }

    /// The CSRF token of a live session.
    fn csrf(&self, token: &str) -> Option<String> {
        let map = self.map.lock().expect("sessions lock");
        map.get(token)
            .filter(|s| s.expires > Instant::now())
            .map(|s| s.csrf.clone())
    }

    /// Whether `token` is a live session's.
    pub(crate) fn is_open(&self, token: &str) -> bool {
        self.csrf(token).is_some()
    }

    fn close(&self, token: &str) {
        self.map.lock().expect("sessions lock").remove(token);
    }

    /// Whether `client` has used up its wrong keys: the time left until it may try again.
    fn locked_out(&self, client: Option<std::net::IpAddr>) -> Option<Duration> {
        let client = client.map(per_network);
        let map = self.failures.lock().expect("failures lock");
        let (n, since) = map.get(&client)?;
        let left = FAILURE_WINDOW.checked_sub(since.elapsed())?;
        (*n >= MAX_FAILURES).then_some(left)
    }

    /// Counts a wrong key of `client`.
    fn failed(&self, client: Option<std::net::IpAddr>) {
        let client = client.map(per_network);
        let mut map = self.failures.lock().expect("failures lock");
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
        }
        // Still full (many addresses within the window): the oldest entry goes.
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, (_, since))| *since)
                .map(|(k, _)| *k)
            {
                map.remove(&oldest);
            }
        }
        let entry = map.entry(client).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= FAILURE_WINDOW {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }
}

/// An IPv6 address's /64 (one subscriber's whole network), an IPv4 address as it is.
fn per_network(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => {
            let mut seg = v6.segments();
            seg[4..].fill(0);
            std::net::IpAddr::V6(seg.into())
        }
        v4 => v4,
    }
}

/// 32 random bytes from the system, as hex.
fn random_token() -> String {
    crate::auth::random_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The session token a request presents (empty when none).
pub(crate) fn session_cookie(headers: &HeaderMap) -> &str {
    cookie(headers, SESSION_COOKIE).unwrap_or_default()
}

/// The value of cookie `name` in the request.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A logged-in viewer: the session's token and CSRF token. Pages take it as an
/// argument; without a live session the browser is sent to the login page.
pub(crate) struct Viewer {
    token: String,
    pub(crate) csrf: String,
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        s: &AppState,
    ) -> Result<Self, Response> {
        let token = cookie(&parts.headers, SESSION_COOKIE).unwrap_or_default();
        match s.ui.csrf(token) {
            Some(csrf) if !token.is_empty() => Ok(Viewer {
                token: token.to_string(),
                csrf,
            }),
            // htmx's refresh of a fragment: not the login page inside the fragment, but
            // a redirect of the whole page.
            _ if parts.headers.contains_key("hx-request") => {
                Err((StatusCode::UNAUTHORIZED, [("hx-redirect", "/ui/login")]).into_response())
            }
            // A page asked for by a link (mail, a colleague): back to it after login.
            _ if parts.method == axum::http::Method::GET => {
                let asked = parts.uri.path_and_query().map_or("/ui/", |p| p.as_str());
                let next = safe_next(asked).unwrap_or("/ui/");
                let mut to = String::from("/ui/login");
                if next != "/ui/" {
                    to.push_str("?next=");
                    to.push_str(&seg(next));
                }
                Err(Redirect::to(&to).into_response())
            }
            _ => Err(Redirect::to("/ui/login").into_response()),
        }
    }
}

impl Viewer {
    /// Refuses a form whose CSRF token is not the session's (403).
    pub(crate) fn check(&self, given: &str) -> Result<(), UiError> {
        if !given.is_empty() && crate::keys_match(given, &self.csrf) {
            Ok(())
        } else {
            Err(UiError::Forbidden)
        }
    }
}

/// Whether cookies get `Secure`: the public address is https.
fn secure(s: &AppState) -> bool {
    let base = s.engine.project.settings.email.as_ref();
    base.and_then(|e| e.base_url.as_deref())
        .is_some_and(|u| u.starts_with("https://"))
}

fn set_cookie(s: &AppState, name: &str, value: &str, max_age: u64) -> HeaderValue {
    let secure = if secure(s) { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .expect("cookie of hex and ascii")
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    key: String,
    #[serde(default)]
    csrf: String,
    /// The dashboard page to open after login.
    #[serde(default)]
    next: String,
}

#[derive(Deserialize)]
struct NextQuery {
    #[serde(default)]
    next: String,
}

/// `next` when it is a dashboard page of this server (a path under `/ui/`, never
/// another site): what login may redirect to.
fn safe_next(next: &str) -> Option<&str> {
    let ok = next.starts_with("/ui/")
        && next.len() <= 2000
        && !next.contains("//")
        && !next.contains('\\')
        && !next.chars().any(char::is_control);
    ok.then_some(next)
}

/// `GET /ui/login`: the form, with a fresh token in it and in a cookie.
async fn login_page(
    State(s): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<NextQuery>,
) -> Result<Response, UiError> {
    login_form(&s, StatusCode::OK, None, &q.next)
}

fn login_form(
    s: &AppState,
    status: StatusCode,
    problem: Option<&str>,
    next: &str,
) -> Result<Response, UiError> {
    let token = random_token();
    let html = render(
        "login.html",
        minijinja::context! {
            login_csrf => &token, problem => problem, title => "Log in", next => safe_next(next),
        },
    )?;
    let mut r = (status, html).into_response();
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(s, LOGIN_COOKIE, &token, 3600),
    );
    Ok(r)
}

/// `POST /ui/login`: the API key gives a session.
async fn login(
    State(s): State<AppState>,
    headers: HeaderMap,
    ext: axum::http::Extensions,
    Form(f): Form<LoginForm>,
) -> Result<Response, UiError> {
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || f.csrf.is_empty() || !crate::keys_match(&f.csrf, expected) {
        return Err(UiError::Forbidden);
    }
    let client = s.hits.client(crate::peer(&ext), &headers);
    if let Some(left) = s.ui.locked_out(client) {
        return Err(UiError::TooManyTries(left.as_secs() / 60 + 1));
    }
    let who = crate::auth::principal(&s, &f.key)
        .await
        .map_err(UiError::store)?;
    if !who.is_some_and(|p| p.allows(nurture_store::keys::Scope::Admin)) {
        s.ui.failed(client);
        tracing::info!(client = ?client, "dashboard login refused: wrong API key");
        return login_form(
            &s,
            StatusCode::UNAUTHORIZED,
            Some("That key is not the API key of this server, nor a key with the scope admin."),
            &f.next,
        );
    }
    let token = s.ui.open();
    let mut r = Redirect::to(safe_next(&f.next).unwrap_or("/ui/")).into_response();
    let h = r.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(&s, SESSION_COOKIE, &token, SESSION_TTL.as_secs()),
    );
    h.append(header::SET_COOKIE, set_cookie(&s, LOGIN_COOKIE, "", 0));
    Ok(r)
}

#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    pub(crate) csrf: String,
}

/// `POST /ui/logout`: ends the session.
async fn logout(
    State(s): State<AppState>,
    viewer: Viewer,
    Form(f): Form<CsrfForm>,
) -> Result<Response, UiError> {
    viewer.check(&f.csrf)?;
    s.ui.close(&viewer.token);
    let mut r = Redirect::to("/ui/login").into_response();
    r.headers_mut()
        .append(header::SET_COOKIE, set_cookie(&s, SESSION_COOKIE, "", 0));
    Ok(r)
}

/// The embedded assets.
async fn asset(Path(name): Path<String>) -> Response {
    let (body, kind): (&'static [u8], &str) = match name.as_str() {
        "ui.css" => (include_bytes!("assets/ui.css"), "text/css; charset=utf-8"),
        "ui.js" => (
            include_bytes!("assets/ui.js"),
            "text/javascript; charset=utf-8",
        ),
        "htmx.min.js" => (
            include_bytes!("assets/htmx.min.js"),
            "text/javascript; charset=utf-8",
        ),
        _ => return UiError::NotFound("no such asset".into()).into_response(),
    };
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(kind).expect("ascii"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    r
}

/// The security headers of every dashboard answer (the API's 404, 405 and 413 for `/ui`
/// paths too); pages are not cached.
pub(crate) async fn headers(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path();
    if path != "/ui" && !path.starts_with("/ui/") {
        return next.run(request).await;
    }
    let mut r = next.run(request).await;
    let h = r.headers_mut();
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

/// A page that could not be shown, as an HTML page: never the store's text.
#[derive(Debug)]
pub(crate) enum UiError {
    /// 404 with what was not found.
    NotFound(String),
    /// 403: a form without the right CSRF token.
    Forbidden,
    /// 400 with why.
    BadRequest(String),
    /// 429: too many wrong keys from this client; minutes to wait.
    TooManyTries(u64),
    /// 503 or 500 from the store, logged with a correlation id.
    Store { retry: bool, id: String },
}

impl UiError {
    pub(crate) fn store(e: nurture_store::StoreError) -> UiError {
        UiError::engine(e.into())
    }

    pub(crate) fn engine(e: nurture_engine::EngineError) -> UiError {
        let id = crate::problem::correlation_id();
        tracing::warn!(correlation_id = %id, error = %e, "dashboard page failed");
        UiError::Store {
            retry: e.is_retryable(),
            id,
        }
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let (status, text) = match self {
            UiError::NotFound(what) => (StatusCode::NOT_FOUND, what),
            UiError::Forbidden => (
                StatusCode::FORBIDDEN,
                "This form has expired or did not come from this dashboard: reload the page and try again.".into(),
            ),
            UiError::BadRequest(why) => (StatusCode::BAD_REQUEST, why),
            UiError::TooManyTries(minutes) => (
                StatusCode::TOO_MANY_REQUESTS,
                format!("Too many wrong keys from this address: try again in {minutes} min."),
            ),
            UiError::Store { retry: true, id } => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("The store is unavailable or busy; try again in a moment (correlation id {id})."),
            ),
            UiError::Store { retry: false, id } => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("The page could not be read; the server log has the details (correlation id {id})."),
            ),
        };
        let page = render(
            "error.html",
            minijinja::context! { title => status.canonical_reason(), text => text },
        )
        .map(|h| h.0)
        .unwrap_or_else(|_| "error".into());
        (status, Html(page)).into_response()
    }
}

/// The template environment: every page, escaped as HTML, with the filters pages use.
fn env() -> &'static minijinja::Environment<'static> {
    static ENV: OnceLock<minijinja::Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = minijinja::Environment::new();
        for (name, src) in TEMPLATES {
            env.add_template(name, src)
                .expect("the dashboard's templates parse");
        }
        env.add_filter("num", num);
        env.add_filter("pct", pct);
        env.add_filter("capped", |n: i64| {
            if n > nurture_store::ops::COUNT_CAP {
                format!("more than {}", num(nurture_store::ops::COUNT_CAP))
            } else {
                num(n)
            }
        });
        env.add_filter("when", when);
        env.add_filter("seg", |s: String| seg(&s));
        env
    })
}

const TEMPLATES: [(&str, &str); 10] = [
    ("base.html", include_str!("templates/base.html")),
    ("login.html", include_str!("templates/login.html")),
    ("error.html", include_str!("templates/error.html")),
    ("campaigns.html", include_str!("templates/campaigns.html")),
    ("campaign.html", include_str!("templates/campaign.html")),
    ("run.html", include_str!("templates/run.html")),
    ("contact.html", include_str!("templates/contact.html")),
    ("funnel.html", include_str!("templates/funnel.html")),
    ("ops.html", include_str!("templates/ops.html")),
    ("search.html", include_str!("templates/search.html")),
];

/// Renders template `name` with `ctx`.
pub(crate) fn render(name: &str, ctx: minijinja::Value) -> Result<Html<String>, UiError> {
    env()
        .get_template(name)
        .and_then(|t| t.render(ctx))
        .map(Html)
        .map_err(|e| {
            let id = crate::problem::correlation_id();
            tracing::error!(correlation_id = %id, error = %e, template = name, "dashboard template failed");
            UiError::Store { retry: false, id }
        })
}

/// A path segment, percent-encoded (for links and redirects to ids).
pub(crate) fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'@' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// 12345 as "12,345".
fn num(v: i64) -> String {
    let digits = v.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// 0.375 as "37.5%".
fn pct(v: f64) -> String {
    format!("{:.1}%", v * 100.0)
}

/// An RFC 3339 time as "2026-12-03 18:45 UTC".
fn when(v: String) -> String {
    chrono::DateTime::parse_from_rfc3339(&v)
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .format("%Y-%m-%d %H:%M UTC")
                .to_string()
        })
        .unwrap_or(v)
}

/// Sessions shared by the router's handlers.
pub(crate) fn sessions() -> Arc<Sessions> {
    Arc::new(Sessions::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(num(0), "0");
        assert_eq!(num(999), "999");
        assert_eq!(num(1000), "1,000");
        assert_eq!(num(-1234567), "-1,234,567");
        assert_eq!(pct(0.375), "37.5%");
    }

    #[test]
    fn a_forged_or_expired_session_has_no_csrf() {
        let s = Sessions::default();
        let t = s.open();
        assert!(s.csrf(&t).is_some());
        assert!(s.csrf("0".repeat(64).as_str()).is_none());
        s.close(&t);
        assert!(s.csrf(&t).is_none());
    }

    #[test]
    fn a_client_is_locked_out_after_its_wrong_keys_and_others_are_not() {
        let s = Sessions::default();
        let a = Some(std::net::IpAddr::from([10, 0, 0, 1]));
        let b = Some(std::net::IpAddr::from([10, 0, 0, 2]));
        for _ in 0..MAX_FAILURES - 1 {
            s.failed(a);
        }
        assert!(s.locked_out(a).is_none());
        s.failed(a);
        assert!(s.locked_out(a).is_some_and(|d| d <= FAILURE_WINDOW));
        assert!(s.locked_out(b).is_none());
        // An IPv6 client is its /64: other addresses of it are locked out too.
        let v6 = |last: u16| Some(std::net::IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, last]));
        for i in 0..MAX_FAILURES {
            s.failed(v6(i as u16));
        }
        assert!(s.locked_out(v6(999)).is_some());
        assert!(s
            .locked_out(Some(std::net::IpAddr::from([
                0x2001, 0xdb8, 0, 2, 0, 0, 0, 1
            ])))
            .is_none());
    }

    #[test]
    fn login_goes_back_only_to_a_dashboard_page() {
        assert_eq!(
            safe_next("/ui/contacts/ana?x=1"),
            Some("/ui/contacts/ana?x=1")
        );
        for bad in [
            "",
            "/",
            "https://evil.test/ui/",
            "//evil.test/ui/",
            "/ui//evil.test",
            "/ui/\\evil",
            "/uix",
            "/ui/a\r\nSet-Cookie: x",
            "/v1/contacts",
        ] {
            assert_eq!(safe_next(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("xnurture_session=a; nurture_session=b"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("b"));
        assert_eq!(cookie(&h, LOGIN_COOKIE), None);
    }
}
