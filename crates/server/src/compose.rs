//! The composition root: the one place that turns configuration into running parts
//! (a store, the engine, the delivery channels, the API and scheduler tasks). `nurture run`,
//! `serve`, `worker` and the benchmark all build through here.

use std::sync::Arc;
use std::time::Duration;

use nurture_channels::deliver::Deliverer;
use nurture_channels::egress;
use nurture_channels::email::{EmailChannel, Signer};
use nurture_core::project::Project;
use nurture_engine::Engine;
use nurture_store::{redact_url, ConfigError, Store, StoreError};
pub use nurture_store_postgres::PostgresConfig;
use nurture_store_postgres::PostgresStore;
pub use nurture_store_sqlite::SqliteConfig;
use nurture_store_sqlite::SqliteStore;
use tokio::sync::{watch, Notify};

/// How to open a store of either kind ([`open_store_with`]): the configuration of each, the one
/// the URL names is used. The library reads no environment variables; the binary builds
/// this from `NURTURE_LEASE_SECS`, `NURTURE_PG_POOL`, `NURTURE_PG_LANES` and
/// `NURTURE_PG_SCHEMA` (docs/operators.md).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreConfig {
    /// Used when the URL is `sqlite:...`.
    pub sqlite: SqliteConfig,
    /// Used when the URL is `postgres://...` or `postgresql://...`.
    pub postgres: PostgresConfig,
}

/// Opens the store named by `url` with the default configuration ([`StoreConfig`]'s
/// defaults, documented on [`SqliteConfig`] and [`PostgresConfig`]); see [`open_store_with`].
pub async fn open_store(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    open_store_with(url, &StoreConfig::default()).await
}

/// Opens the store named by `url`: `sqlite://PATH` (created if missing), `sqlite::memory:`,
/// or `postgres://...`, configured by `config`. Errors never show the URL's password or
/// query string ([`redact_url`]).
pub async fn open_store_with(
    url: &str,
    config: &StoreConfig,
) -> Result<Arc<dyn Store>, StoreError> {
    let opened: Result<Arc<dyn Store>, StoreError> = if url.starts_with("sqlite:") {
        SqliteStore::open(url, &config.sqlite)
            .await
            .map(|s| Arc::new(s) as _)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let (url, schema) = schema_of(url);
        let mut postgres = config.postgres.clone();
        if let Some(schema) = schema {
            postgres.schema = schema;
        }
        PostgresStore::open(&url, &postgres)
            .await
            .map(|s| Arc::new(s) as _)
    } else {
        Err(ConfigError::UnsupportedUrl(redact_url(url)).into())
    };
    opened.map_err(|e| e.redacted(url))
}

/// The `schema=NAME` parameter of a Postgres URL, taken out of it (the driver does not
/// know it): so each project of a shared database names its own schema in its `store`.
/// The URL is returned unchanged when it has none.
pub fn schema_of(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_string(), None);
    };
    let mut schema = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|p| match p.strip_prefix("schema=") {
            Some(v) => {
                schema = Some(v.to_string());
                false
            }
            None => true,
        })
        .collect();
    match rest.is_empty() {
        true => (base.to_string(), schema),
        false => (format!("{base}?{}", rest.join("&")), schema),
    }
}

/// Why the parts of a process could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    /// The email channel (sender, SMTP settings, DKIM key).
    #[error("the email channel: {0}")]
    Email(#[from] nurture_channels::email::EmailError),
    /// The HTTP client of webhooks.
    #[error("the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// The plugin host could not start at all (one bad plugin only fails its own steps).
    #[cfg(feature = "plugins")]
    #[error("the plugin host: {0}")]
    Plugins(#[from] nurture_channels::plugin::PluginError),
}

/// The deliverer of a project's outbox: email (SMTP or files) with tracking links that
/// point at `api_base`, webhooks through the project's egress rules, and `plugins` when
/// given.
pub fn deliverer(
    project: &Project,
    store: Arc<dyn Store>,
    signer: &Signer,
    api_base: &str,
) -> Result<Deliverer, ComposeError> {
    let email = EmailChannel::for_project(project, store.clone(), signer.clone(), api_base)?;
    let egress = egress::Settings::from_model(project.settings.egress.as_ref());
    let egress = egress::Egress::new(&egress, nurture_channels::deliver::USER_AGENT)?;
    Ok(Deliverer::new(store)
        .with_email(Arc::new(email))
        .with_egress(Arc::new(egress)))
}

/// The API half of a process: a bound listener, the API key, and the tracking links'
/// signer.
pub struct Api {
    /// Where the API listens (already bound: the caller reports bind errors).
    pub listener: tokio::net::TcpListener,
    /// The key `/v1` requests must present.
    pub key: Arc<String>,
    /// Signs and checks tracking and unsubscribe tokens.
    pub signer: Arc<Signer>,
    /// Serve `/metrics` and `/healthz` alone ([`crate::metrics_router`]): the metrics
    /// port of a `nurture worker`, which has no API.
    pub metrics_only: bool,
}

/// The scheduler half of a process: the deliverer and how often to look for due work
/// when nothing wakes it.
pub struct Scheduler {
    /// Delivers the outbox.
    pub deliverer: Deliverer,
    /// The longest sleep between passes.
    pub poll: Duration,
}

/// The tasks of a running process; [`Running::stop`] ends them after their current unit
/// of work.
pub struct Running {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Asks every task to stop and waits for them.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// One workspace of a process serving several ([`start_workspaces`]).
pub struct WorkspaceParts {
    /// Its name, the `/w/{name}` of its links ([`crate::workspaces::valid_name`]).
    pub name: String,
    /// The engine over its project and store.
    pub engine: Arc<Engine>,
    /// Its server key.
    pub key: Arc<String>,
    /// Its tracking links' signer.
    pub signer: Arc<Signer>,
    /// Its scheduler, when the process executes steps.
    pub scheduler: Option<Scheduler>,
}

/// Starts the workspaces of `nurture run --workspaces` (and `serve`, `worker`): each
/// with its own ingestion task, versions loop and scheduler, so a busy workspace keeps
/// only its own tasks busy; and, when `listener` is given, one API for all of them
/// ([`crate::workspaces`]). A workspace's hosted-form links start with
/// `[email] base_url`, else this listener's `/w/{name}`.
pub fn start_workspaces(
    parts: Vec<WorkspaceParts>,
    listener: Option<tokio::net::TcpListener>,
) -> Running {
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let own = listener
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map(|a| format!("http://{a}"));
    let mut served = Vec::new();
    for p in parts {
        use tracing::Instrument as _;
        // Every log line of a workspace's tasks names it.
        let span = tracing::info_span!("workspace", name = %p.name);
        let wake = Arc::new(Notify::new());
        if listener.is_some() {
            let mut state = crate::AppState::new(p.engine.clone(), p.key, wake.clone(), p.signer);
            let base = own.as_ref().map(|o| format!("{o}/w/{}", p.name));
            state.forms = Arc::new(crate::forms::Forms::new(&p.engine.project, base));
            served.push(crate::workspaces::Workspace::new(p.name, state));
        }
        let versions = crate::versions_loop(p.engine.clone(), stop_rx.clone());
        tasks.push(tokio::spawn(versions.instrument(span.clone())));
        if let Some(s) = p.scheduler {
            let deliverer = s.deliverer.with_metrics(p.engine.metrics.clone());
            let run = crate::scheduler(p.engine, deliverer, wake, stop_rx.clone(), s.poll);
            tasks.push(tokio::spawn(run.instrument(span)));
        }
    }
    if let Some(listener) = listener {
        let app = crate::workspaces::router(Arc::new(crate::workspaces::Workspaces::new(served)));
        tasks.push(tokio::spawn(crate::serve(
            listener,
            app,
            crate::ApiLimits::default(),
            stop_rx,
        )));
    }
    Running { stop, tasks }
}

/// Starts `api` and `scheduler` (either may be absent: `nurture serve`, `nurture worker`)
/// over one engine, sharing the wake-up signal (an API write wakes the scheduler). The
/// one place `run`, `serve`, `worker` and the benchmark start from.
pub fn start(engine: Arc<Engine>, api: Option<Api>, scheduler: Option<Scheduler>) -> Running {
    let wake = Arc::new(Notify::new());
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    if let Some(api) = api {
        let mut state = crate::AppState::new(engine.clone(), api.key, wake.clone(), api.signer);
        // Confirmation links of hosted forms: `[email] base_url`, else this listener.
        let own = api
            .listener
            .local_addr()
            .ok()
            .map(|a| format!("http://{a}"));
        state.forms = Arc::new(crate::forms::Forms::new(&engine.project, own));
        let limits = state.limits;
        let app = match api.metrics_only {
            true => crate::metrics_router(state),
            false => crate::router(state),
        };
        tasks.push(tokio::spawn(crate::serve(
            api.listener,
            app,
            limits,
            stop_rx.clone(),
        )));
    }
    tasks.push(tokio::spawn(crate::versions_loop(
        engine.clone(),
        stop_rx.clone(),
    )));
    if let Some(s) = scheduler {
        let deliverer = s.deliverer.with_metrics(engine.metrics.clone());
        tasks.push(tokio::spawn(crate::scheduler(
            engine, deliverer, wake, stop_rx, s.poll,
        )));
    }
    Running { stop, tasks }
}

#[cfg(test)]
mod tests {
    use super::schema_of;

    #[test]
    fn a_postgres_urls_schema_parameter_is_taken_out_of_it() {
        let cases = [
            ("postgres://h/db", "postgres://h/db", None),
            (
                "postgres://h/db?schema=acme",
                "postgres://h/db",
                Some("acme"),
            ),
            (
                "postgres://h/db?sslmode=require&schema=acme&application_name=n",
                "postgres://h/db?sslmode=require&application_name=n",
                Some("acme"),
            ),
            (
                "postgres://h/db?sslmode=disable",
                "postgres://h/db?sslmode=disable",
                None,
            ),
        ];
        for (url, rest, schema) in cases {
            let (u, s) = schema_of(url);
            assert_eq!((u.as_str(), s.as_deref()), (rest, schema), "{url}");
        }
    }
}
