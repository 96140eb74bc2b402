//! The plugin host: sandboxed wasm components on wasmtime's component model.
//!
//! - One [`wasmtime::Engine`] for every plugin, with the **pooling allocator** and **epoch
//!   interruption**: a background thread bumps the epoch every [`TICK`]; each call's store
//!   yields to tokio at every tick (so a CPU-bound plugin never starves other steps) and
//!   traps once its deadline has passed.
//! - Components are compiled once and **cached on disk**, serialized, under a name made of
//!   the wasm's SHA-256 and the engine's compatibility hash, so a wasmtime upgrade (or a
//!   changed setting) compiles afresh instead of loading a stale artifact.
//! - One `InstancePre` per plugin; a **fresh store per call** with [`StoreLimits`]
//!   (memory, tables, instances), so a call cannot see or leak into another.
//! - WASI is linked because Rust's std for `wasm32-wasip2` imports it, but the context is
//!   empty: no preopened directories, no environment, no arguments, no sockets, no name
//!   lookups. The only way out is the `http` import, checked against the manifest's hosts.
//! - A plugin reads only its own secrets, declared in its manifest and configured by the
//!   operator (`NURTURE_SECRET_<PLUGIN>_<NAME>` by default).
//!
//! A component declares its interface version through the name of its exported
//! interface (`nurture:plugin/step@1.0.0`); any other version is refused at load with a
//! message saying which one it was built for.

pub mod build;

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolConcurrencyLimitError,
    PoolingAllocationConfig, Store, StoreLimits, StoreLimitsBuilder, UpdateDeadline,
};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use nurture_core::project::{PluginManifest, Project};

#[allow(unsafe_code, clippy::all)]
mod bindings {
    wasmtime::component::bindgen!({
        path: "../../sdk/wit/1.0",
        world: "plugin",
        imports: { default: async },
        exports: { default: async },
    });
}

use bindings::nurture::plugin::types as wit;
use bindings::nurture::plugin::{http as wit_http, log as wit_log, secrets as wit_secrets};

/// The interface versions this host implements.
pub const SUPPORTED_INTERFACES: &[&str] = &["1.0.0"];
/// The `User-Agent` of plugins' HTTP requests.
const USER_AGENT: &str = concat!("nurture-plugin-host/", env!("CARGO_PKG_VERSION"));
/// The epoch tick: deadline checks and cooperative yields happen this often.
pub const TICK: Duration = Duration::from_millis(5);
const EXPORT_PREFIX: &str = "nurture:plugin/step@";

/// Errors of the plugin host. Loading errors are fatal for that plugin (fix and restart);
/// a call never returns an error, it returns a [`CallOutcome`].
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The plugin's component file is missing.
    #[error("plugin `{plugin}`: component {path} not found; build it with `nurture plugins build` (or `cargo build --release --target wasm32-wasip2` in its folder)")]
    NotBuilt {
        /// The plugin's name, as its `plugin.toml` gives it.
        plugin: String,
        /// Where the component was looked for.
        path: PathBuf,
    },
    /// The component targets a plugin interface version this host does not run.
    #[error("plugin `{plugin}` was built for plugin interface {found}, but this nurture supports {supported}; rebuild it against a nurture-plugin-sdk for interface {supported}")]
    UnsupportedInterface {
        /// The plugin's name, as its `plugin.toml` gives it.
        plugin: String,
        /// The interface version of the component.
        found: String,
        /// The interface version of this host.
        supported: String,
    },
    /// The component exports no `nurture:plugin/step` interface.
    #[error(
        "plugin `{plugin}` is not a nurture plugin: it exports no `nurture:plugin/step` interface"
    )]
    NotAPlugin {
        /// The plugin's name, as its `plugin.toml` gives it.
        plugin: String,
    },
    /// The component's own manifest disagrees with `plugin.toml`.
    #[error("plugin `{plugin}`: its component disagrees with plugin.toml ({what}); rebuild the component")]
    Stale {
        /// The plugin's name, as its `plugin.toml` gives it.
        plugin: String,
        /// What disagrees.
        what: String,
    },
    /// Reading, compiling or configuring the plugin failed.
    #[error("plugin `{plugin}`: {message}")]
    Load {
        /// The plugin's name, as its `plugin.toml` gives it.
        plugin: String,
        /// What failed.
        message: String,
    },
    /// Calling the component's `manifest` export failed.
    #[error("plugin `{plugin}`: its `manifest` export failed: {source}")]
    Manifest {
        /// The plugin's name, as its `plugin.toml` gives it.
        plugin: String,
        /// How the call failed.
        source: ManifestCallError,
    },
    /// Setting up the plugin host failed otherwise (its folders, its cache); says how.
    #[error("plugin engine: {0}")]
    Engine(String),
    /// wasmtime failed to start the engine.
    #[error("plugin engine: {0:#}")]
    Wasmtime(#[source] wasmtime::Error),
    /// The thread that ticks the epochs (deadlines) did not start.
    #[error("plugin engine: starting its epoch thread: {0}")]
    Thread(#[source] std::io::Error),
    /// The HTTP client plugins call out through could not be built.
    #[error("plugin engine: its HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// Why calling a component's `manifest` export at load failed.
#[derive(Debug, thiserror::Error)]
pub enum ManifestCallError {
    /// The async runtime for the call did not start.
    #[error("starting its runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// Instantiating or calling the component failed (a trap, a missing export).
    #[error("{0:#}")]
    Wasm(#[from] wasmtime::Error),
    /// The thread making the call panicked.
    #[error("the manifest check panicked")]
    Panicked,
}

impl PluginError {
    /// Whether retrying the same operation can help (it cannot: every variant needs a
    /// fix, a rebuild or a restart).
    pub fn is_retryable(&self) -> bool {
        false
    }
}

/// Limits applied to every call.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Linear memory per instance.
    pub memory_bytes: usize,
    /// Table elements per table.
    pub table_elements: usize,
    /// Wall-clock deadline of one call, host HTTP included.
    pub deadline: Duration,
    /// Calls in flight at once (the size of the instance pool).
    pub max_concurrent: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 64 << 20,
            table_elements: 20_000,
            deadline: Duration::from_secs(10),
            max_concurrent: 64,
        }
    }
}

/// Operator settings of one plugin (`[plugins.NAME]` in `nurture.toml`).
#[derive(Debug, Clone, Default)]
pub struct PluginConfig {
    /// Secret values by name.
    pub secrets: BTreeMap<String, String>,
    /// The environment variable each secret is read from (for messages), when it is not
    /// the default [`secret_env_var`].
    pub secret_vars: BTreeMap<String, String>,
    /// Redirects an allowed host to another base URL (staging, local provider servers):
    /// `api.sms-provider.test` -> `http://127.0.0.1:4010`.
    pub routes: BTreeMap<String, String>,
}

impl PluginConfig {
    /// The operator's settings of plugin `name`: its routes from `nurture.toml`, and the
    /// secrets of its manifest that are set in the environment.
    pub fn for_project(project: &Project, name: &str) -> PluginConfig {
        let mut config = PluginConfig::default();
        if let Some(manifest) = project.plugins.get(name) {
            for secret in &manifest.secrets {
                let var = secret_var(project, name, secret);
                if let Ok(v) = std::env::var(&var) {
                    config.secrets.insert(secret.clone(), v);
                }
                config.secret_vars.insert(secret.clone(), var);
            }
        }
        if let Some(s) = project.settings.plugins.get(name) {
            config.routes = s
                .routes
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect();
        }
        config
    }
}

/// The environment variable holding a plugin's secret: `[plugins.NAME] secrets_env`, else
/// [`secret_env_var`].
pub fn secret_var(project: &Project, plugin: &str, secret: &str) -> String {
    project
        .settings
        .plugins
        .get(plugin)
        .and_then(|s| s.secrets_env.get(secret).cloned())
        .unwrap_or_else(|| secret_env_var(plugin, secret))
}

/// Where a project's compiled components are cached.
pub fn cache_dir(project_root: &Path) -> PathBuf {
    project_root.join(".nurture").join("plugin-cache")
}

/// How a call ended, in the engine's terms.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum CallOutcome {
    /// Done: the step succeeded.
    Ok {
        /// What the step returned, kept in the delivery record.
        output: Value,
    },
    /// Temporary: retry no earlier than `after`.
    Retry {
        /// The earliest the next attempt may start.
        after: Duration,
        /// Why, from the plugin or the host.
        reason: String,
    },
    /// Permanent: the step fails.
    Failed {
        /// Why, from the plugin or the host.
        reason: String,
    },
}

/// Why a plugin step was not delivered ([`CallOutcome`] other than `Ok`, as the
/// deliverer's typed error).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StepError {
    /// Temporary (the plugin answered `retry-after`, or its call ran past its deadline):
    /// retried no earlier than `after`.
    #[error("{reason}")]
    Retry {
        /// Why, from the plugin or the host.
        reason: String,
        /// The earliest the next attempt may start.
        after: Duration,
    },
    /// Permanent: the plugin failed the step, or could not run it (not loaded, no such
    /// step, trapped, over its memory limit).
    #[error("{reason}")]
    Failed {
        /// Why, from the plugin or the host.
        reason: String,
    },
}

impl StepError {
    /// Whether another attempt can help.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StepError::Retry { .. })
    }

    /// The earliest the next attempt may start (the plugin's `retry-after`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            StepError::Retry { after, .. } => Some(*after),
            StepError::Failed { .. } => None,
        }
    }
}

/// The plugin channel: a `plugin` outbox entry (`payload.plugin` = `PLUGIN/STEP`, with
/// `with`, `contact`, `event`) runs as one call of that step.
#[async_trait::async_trait]
impl crate::channel::Channel for PluginHost {
    async fn deliver(&self, entry: &nurture_store::OutboxEntry) -> crate::channel::Attempt {
        let p = &entry.payload;
        let full = p["plugin"].as_str().unwrap_or_default();
        let (plugin, step) = full.split_once('/').unwrap_or((full, ""));
        let outcome = self
            .call(StepCall {
                plugin,
                step,
                config: &p["with"],
                contact: &p["contact"],
                event: p.get("event").filter(|e| !e.is_null()),
                idempotency_key: &entry.key,
                attempt: u32::try_from(entry.attempts + 1).unwrap_or(u32::MAX),
            })
            .await;
        match outcome {
            CallOutcome::Ok { output } => crate::channel::Attempt::Delivered {
                record: serde_json::json!({"channel": "plugin", "plugin": full, "output": output}),
            },
            CallOutcome::Retry { after, reason } => StepError::Retry { reason, after }.into(),
            CallOutcome::Failed { reason } => StepError::Failed { reason }.into(),
        }
    }
}

/// One step call.
#[derive(Debug, Clone)]
pub struct StepCall<'a> {
    /// The plugin's name.
    pub plugin: &'a str,
    /// The step of the plugin to run.
    pub step: &'a str,
    /// The step's `with` settings.
    pub config: &'a Value,
    /// The contact as JSON.
    pub contact: &'a Value,
    /// The event that started the run, if any.
    pub event: Option<&'a Value>,
    /// The outbox key, the same for every attempt: the plugin dedupes with it.
    pub idempotency_key: &'a str,
    /// Which attempt this is, from 1.
    pub attempt: u32,
}

struct Loaded {
    manifest: PluginManifest,
    pre: bindings::PluginPre<CallState>,
    /// What every call's store reads (shared, never written by a call).
    shared: Arc<Shared>,
    /// How long the component took to become ready (from cache or compiled).
    load_time: Duration,
    from_cache: bool,
}

/// A plugin's name, manifest rules and operator settings, as its calls see them.
struct Shared {
    plugin: String,
    hosts: Vec<String>,
    declared_secrets: Vec<String>,
    config: PluginConfig,
}

/// Per-call store data: all of it made for this call and dropped with it, except the
/// read-only [`Shared`] settings and the egress rules.
struct CallState {
    /// Made at the call's first WASI import (many calls make none): empty but for stderr.
    wasi: Option<WasiCtx>,
    stderr: MemoryOutputPipe,
    table: ResourceTable,
    limits: StoreLimits,
    shared: Arc<Shared>,
    egress: Arc<crate::egress::Egress>,
    deadline: Instant,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let stderr = &self.stderr;
        let ctx = self
            .wasi
            .get_or_insert_with(|| sandbox_wasi(stderr.clone()));
        WasiCtxView {
            ctx,
            table: &mut self.table,
        }
    }
}

impl wit::Host for CallState {}

impl wit_secrets::Host for CallState {
    async fn get(&mut self, name: String) -> Result<String, String> {
        if !self.shared.declared_secrets.contains(&name) {
            tracing::warn!(plugin = %self.shared.plugin, secret = %name, "plugin asked for an undeclared secret");
            return Err(format!(
                "secret `{name}` is not declared in plugin `{}`'s manifest",
                self.shared.plugin
            ));
        }
        self.shared
            .config
            .secrets
            .get(&name)
            .cloned()
            .ok_or_else(|| {
                format!(
                    "secret `{name}` of plugin `{}` is not set (environment variable {})",
                    self.shared.plugin,
                    self.shared
                        .config
                        .secret_vars
                        .get(&name)
                        .cloned()
                        .unwrap_or_else(|| secret_env_var(&self.shared.plugin, &name))
                )
            })
    }
}

impl wit_log::Host for CallState {
    async fn log(&mut self, level: wit_log::Level, message: String) {
        let plugin = self.shared.plugin.as_str();
        match level {
            wit_log::Level::Trace => tracing::trace!(plugin, "{message}"),
            wit_log::Level::Debug => tracing::debug!(plugin, "{message}"),
            wit_log::Level::Info => tracing::info!(plugin, "{message}"),
            wit_log::Level::Warn => tracing::warn!(plugin, "{message}"),
            wit_log::Level::Error => tracing::error!(plugin, "{message}"),
        }
    }
}

impl CallState {
    /// Where a plugin's request goes: `raw` parsed once, its host checked against the
    /// manifest; then either the operator's route for that host (sent as configured) or
    /// the URL itself, checked by the egress rules. The URL returned is the one sent.
    fn destination(&self, raw: &str) -> Result<(url::Url, bool), wit_http::Error> {
        let shown = crate::egress::redact_url(raw);
        let url = url::Url::parse(raw)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| wit_http::Error::Denied(format!("not an http(s) URL: {shown}")))?;
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        if !self
            .shared
            .hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(&host))
        {
            tracing::warn!(plugin = %self.shared.plugin, %host, "plugin called a host not in its manifest");
            return Err(wit_http::Error::Denied(format!(
                "host `{host}` is not in plugin `{}`'s manifest (allowed: {})",
                self.shared.plugin,
                if self.shared.hosts.is_empty() {
                    "none".to_string()
                } else {
                    self.shared.hosts.join(", ")
                }
            )));
        }
        // A route sends an allowed host to another base URL (staging, tests): the
        // operator's choice, so not subject to the address rules.
        if let Some(base) = self.shared.config.routes.get(&host) {
            let tail = &url[url::Position::BeforePath..];
            let routed = format!("{}{tail}", base.trim_end_matches('/'));
            let routed = url::Url::parse(&routed).map_err(|_| {
                wit_http::Error::Denied(format!("the route of `{host}` is not a URL"))
            })?;
            return Ok((routed, true));
        }
        self.egress.parse(url.as_str()).map_err(|e| {
            tracing::warn!(plugin = %self.shared.plugin, url = %shown, error = %e, "plugin request refused");
            wit_http::Error::Denied(format!("request to {shown} refused: {e}"))
        })?;
        Ok((url, false))
    }
}

impl wit_http::Host for CallState {
    async fn send(
        &mut self,
        req: wit_http::Request,
    ) -> Result<wit_http::Response, wit_http::Error> {
        let (url, routed) = self.destination(&req.url)?;
        let shown = crate::egress::redact_url(url.as_str());
        let method = reqwest::Method::from_bytes(req.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| wit_http::Error::Denied(format!("bad method {}", req.method)))?;
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        let client = if routed {
            self.egress.trusted()
        } else {
            self.egress.client(false)
        };
        let mut builder = client
            .request(method, url)
            .timeout(remaining.max(Duration::from_millis(1)));
        for (k, v) in &req.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        let resp = builder.body(req.body).send().await.map_err(|e| {
            let refused = crate::egress::refusal_of(&e);
            let text = crate::egress::describe(e);
            match refused {
                Some(r) => wit_http::Error::Denied(format!("request to {shown} refused: {r}")),
                None => wit_http::Error::Failed(format!("request to {shown} failed: {text}")),
            }
        })?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let body = resp
            .bytes()
            .await
            .map_err(|e| {
                wit_http::Error::Failed(format!(
                    "reading the answer of {shown}: {}",
                    crate::egress::describe(e)
                ))
            })?
            .to_vec();
        Ok(wit_http::Response {
            status,
            headers,
            body,
        })
    }
}

/// The environment variable a plugin secret is read from by default.
pub fn secret_env_var(plugin: &str, name: &str) -> String {
    format!("NURTURE_SECRET_{plugin}_{name}")
        .to_ascii_uppercase()
        .replace(['-', '.'], "_")
}

/// What `nurture plugins list` shows about a loaded plugin.
#[derive(Debug, Clone, Serialize)]
pub struct PluginSummary {
    /// Its name.
    pub name: String,
    /// Its version, from its manifest.
    pub version: String,
    /// The plugin interface version it was built for.
    pub api: String,
    /// The steps it offers.
    pub steps: Vec<String>,
    /// The hosts it may call.
    pub hosts: Vec<String>,
    /// The secrets it declares.
    pub secrets: Vec<String>,
    /// The declared secrets set in the environment.
    pub secrets_set: Vec<String>,
    /// Milliseconds it took to load.
    pub load_ms: f64,
    /// Whether its compiled code came from the cache.
    pub from_cache: bool,
}

/// The host: load plugins once, then [`PluginHost::call`] steps concurrently.
pub struct PluginHost {
    engine: Engine,
    plugins: HashMap<String, Loaded>,
    /// Plugins that failed to load, with the reason their steps fail.
    unavailable: HashMap<String, String>,
    limits: Limits,
    /// Every call's store limits, made from `limits` once.
    store_limits: StoreLimits,
    egress: Arc<crate::egress::Egress>,
    stop: Arc<AtomicBool>,
    /// Where calls and traps are counted ([`PluginHost::with_metrics`]).
    metrics: nurture_engine::metrics::Metrics,
}

impl Drop for PluginHost {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Of each linear memory and table, this much may be kept resident between calls: the
/// pages a call wrote are reset in place (`memset`) when it ends, instead of being handed
/// back to the kernel and faulted in again by the next call. Only where the kernel says
/// which pages were written (`PAGEMAP_SCAN`, Linux 6.7+); elsewhere every page goes
/// back (`madvise`), as without this setting.
pub const KEEP_RESIDENT_BYTES: usize = 4 << 20;

/// Whether pool slots are reset in place after a call ([`KEEP_RESIDENT_BYTES`]): the
/// kernel supports `PAGEMAP_SCAN`.
pub fn resets_in_place() -> bool {
    PoolingAllocationConfig::is_pagemap_scan_available()
}

/// The instance pool: room for [`Limits::max_concurrent`] calls in flight, each one
/// component instance with at most 16 core instances, 4 memories and 8 tables, so that
/// the number of calls is the only limit a call can run into. The next call finds no
/// slot and is retried ([`CallOutcome::Retry`]).
fn pool_config(limits: &Limits) -> PoolingAllocationConfig {
    const CORE_INSTANCES: u32 = 16;
    const MEMORIES: u32 = 4;
    const TABLES: u32 = 8;
    let n = limits.max_concurrent.max(1);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(n);
    pool.total_core_instances(n * CORE_INSTANCES);
    pool.total_memories(n * MEMORIES);
    pool.total_tables(n * TABLES);
    pool.total_stacks(n);
    pool.max_core_instances_per_component(CORE_INSTANCES);
    pool.max_memories_per_component(MEMORIES);
    pool.max_tables_per_component(TABLES);
    pool.max_memory_size(limits.memory_bytes);
    pool.table_elements(limits.table_elements);
    pool.max_unused_warm_slots(n);
    if resets_in_place() {
        pool.pagemap_scan(Enabled::Yes);
        pool.linear_memory_keep_resident(KEEP_RESIDENT_BYTES.min(limits.memory_bytes));
        pool.table_keep_resident(KEEP_RESIDENT_BYTES);
    }
    pool
}

impl PluginHost {
    /// An engine with the pooling allocator and epoch interruption, and its ticker.
    pub fn new(limits: Limits) -> Result<PluginHost, PluginError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        // Bounds-checked memories no larger than the limit: a small virtual reservation
        // per pool slot.
        config.memory_reservation(limits.memory_bytes as u64);
        config.memory_guard_size(64 << 10);
        config.max_wasm_stack(1 << 20);
        // Copy-on-write images of the initial memory even for large data sections: an
        // instance maps its heap instead of copying it.
        config.memory_guaranteed_dense_image_size(limits.memory_bytes as u64);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool_config(&limits)));
        let engine = Engine::new(&config).map_err(PluginError::Wasmtime)?;
        let stop = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("nurture-plugin-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(PluginError::Thread)?;
        }
        let egress = Arc::new(
            crate::egress::Egress::new(&crate::egress::Settings::default(), USER_AGENT)
                .map_err(PluginError::Client)?,
        );
        Ok(PluginHost {
            engine,
            plugins: HashMap::new(),
            unavailable: HashMap::new(),
            store_limits: store_limits(&limits),
            limits,
            egress,
            stop,
            metrics: nurture_engine::metrics::Metrics::new(),
        })
    }

    /// Counts calls' latency and traps in `metrics` (the process's).
    pub fn with_metrics(mut self, metrics: nurture_engine::metrics::Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Sends plugins' HTTP through these egress rules (default: nothing private is
    /// allowed; [`PluginHost::for_project`] applies the project's `[egress]`). Routes in
    /// [`PluginConfig`] are the operator's and not checked.
    pub fn set_egress(&mut self, egress: Arc<crate::egress::Egress>) {
        self.egress = egress;
    }

    /// Loads every plugin of a project whose component exists, with settings from
    /// `nurture.toml` and secrets from the environment. Returns the host and the plugins
    /// that could not be loaded (each with its reason); their steps fail until fixed.
    pub fn for_project(
        project: &Project,
        limits: Limits,
        cache_dir: &Path,
    ) -> Result<(PluginHost, Vec<PluginError>), PluginError> {
        let mut host = PluginHost::new(limits)?;
        let settings = crate::egress::Settings::from_model(project.settings.egress.as_ref());
        host.set_egress(Arc::new(
            crate::egress::Egress::new(&settings, USER_AGENT).map_err(PluginError::Client)?,
        ));
        let mut errors = Vec::new();
        for (name, manifest) in &project.plugins {
            let config = PluginConfig::for_project(project, name);
            let Some(dir) = project.plugin_dirs.get(name) else {
                continue;
            };
            if let Err(e) = host.load(manifest.clone(), dir, config, cache_dir) {
                host.unavailable.insert(name.clone(), e.to_string());
                errors.push(e);
            }
        }
        Ok((host, errors))
    }

    /// Loads one plugin from its folder (`plugin.toml` already parsed as `manifest`).
    pub fn load(
        &mut self,
        manifest: PluginManifest,
        dir: &Path,
        config: PluginConfig,
        cache_dir: &Path,
    ) -> Result<(), PluginError> {
        let name = manifest.name.clone();
        let load_err = |message: String| PluginError::Load {
            plugin: name.clone(),
            message,
        };
        let supported = SUPPORTED_INTERFACES
            .iter()
            .map(|v| v.trim_end_matches(".0"))
            .any(|v| v == manifest.api || format!("{v}.0") == manifest.api);
        let started = Instant::now();
        let path = build::component_path(&manifest, dir);
        let bytes = std::fs::read(&path).map_err(|_| PluginError::NotBuilt {
            plugin: name.clone(),
            path: path.clone(),
        })?;
        let (component, from_cache) = self
            .compile_cached(&bytes, cache_dir)
            .map_err(|e| load_err(format!("{} is not a valid component: {e}", path.display())))?;
        // The interface version, from the exported interface's name.
        let ty = component.component_type();
        let exported: Vec<String> = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        let Some(version) = exported
            .iter()
            .find_map(|n| n.strip_prefix(EXPORT_PREFIX))
            .map(str::to_string)
        else {
            return Err(PluginError::NotAPlugin { plugin: name });
        };
        if !SUPPORTED_INTERFACES.contains(&version.as_str()) {
            return Err(PluginError::UnsupportedInterface {
                plugin: name,
                found: version,
                supported: SUPPORTED_INTERFACES.join(", "),
            });
        }
        if !supported {
            return Err(PluginError::UnsupportedInterface {
                plugin: name,
                found: format!("{} (plugin.toml `api`)", manifest.api),
                supported: SUPPORTED_INTERFACES.join(", "),
            });
        }
        let mut linker: Linker<CallState> = Linker::new(&self.engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| load_err(format!("linking WASI: {e:#}")))?;
        bindings::Plugin::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| load_err(format!("linking the plugin interface: {e:#}")))?;
        let pre = linker.instantiate_pre(&component).map_err(|e| {
            load_err(format!(
                "the component imports something nurture does not provide: {e:#}"
            ))
        })?;
        let pre = bindings::PluginPre::new(pre).map_err(|e| load_err(format!("{e:#}")))?;
        let load_time = started.elapsed();
        let shared = Arc::new(Shared {
            plugin: manifest.name.clone(),
            hosts: manifest.hosts.clone(),
            declared_secrets: manifest.secrets.clone(),
            config,
        });
        let loaded = Loaded {
            manifest,
            pre,
            shared,
            load_time,
            from_cache,
        };
        self.check_manifest(&loaded)?;
        self.plugins.insert(name, loaded);
        Ok(())
    }

    /// The component's own manifest must agree with plugin.toml (a stale build does not).
    fn check_manifest(&self, loaded: &Loaded) -> Result<(), PluginError> {
        // Loading is synchronous; the call runs on a scoped thread with its own small
        // runtime so it works from any context (inside tokio or not).
        let got = std::thread::scope(|scope| {
            scope
                .spawn(|| -> Result<_, ManifestCallError> {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(ManifestCallError::Runtime)?;
                    rt.block_on(async {
                        let mut store = self.store_for(loaded, MemoryOutputPipe::new(4096));
                        let plugin = loaded.pre.instantiate_async(&mut store).await?;
                        Ok::<_, ManifestCallError>(
                            plugin
                                .nurture_plugin_step()
                                .call_manifest(&mut store)
                                .await?,
                        )
                    })
                })
                .join()
                .unwrap_or(Err(ManifestCallError::Panicked))
        });
        let m = &loaded.manifest;
        let got = got.map_err(|source| PluginError::Manifest {
            plugin: m.name.clone(),
            source,
        })?;
        let stale = |what: String| PluginError::Stale {
            plugin: m.name.clone(),
            what,
        };
        if got.name != m.name || got.version != m.version {
            return Err(stale(format!(
                "component is {} {}, plugin.toml says {} {}",
                got.name, got.version, m.name, m.version
            )));
        }
        let steps: Vec<&str> = got.steps.iter().map(|s| s.name.as_str()).collect();
        let want: Vec<&str> = m.steps.keys().map(String::as_str).collect();
        if steps != want {
            return Err(stale(format!(
                "steps: component offers {steps:?}, plugin.toml {want:?}"
            )));
        }
        if got.hosts != m.hosts || got.secrets != m.secrets {
            return Err(stale("hosts or secrets differ".into()));
        }
        Ok(())
    }

    /// Compiles a component, or loads it from the on-disk cache.
    fn compile_cached(
        &self,
        bytes: &[u8],
        cache_dir: &Path,
    ) -> Result<(Component, bool), wasmtime::Error> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        let digest = Sha256::digest(bytes);
        let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        let file = cache_dir.join(format!("{hex}-{:016x}.cwasm", hasher.finish()));
        if file.is_file() {
            if let Ok(c) = deserialize_cached(&self.engine, &file) {
                return Ok((c, true));
            }
        }
        let component = Component::new(&self.engine, bytes)?;
        if std::fs::create_dir_all(cache_dir).is_ok() {
            if let Ok(serialized) = component.serialize() {
                let tmp = file.with_extension(format!("tmp{}", std::process::id()));
                if std::fs::write(&tmp, serialized).is_ok() {
                    let _ = std::fs::rename(&tmp, &file);
                }
            }
        }
        Ok((component, false))
    }

    fn store_for(&self, loaded: &Loaded, stderr: MemoryOutputPipe) -> Store<CallState> {
        let state = CallState {
            wasi: None,
            stderr,
            table: ResourceTable::new(),
            limits: self.store_limits.clone(),
            shared: loaded.shared.clone(),
            egress: self.egress.clone(),
            deadline: Instant::now() + self.limits.deadline,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |ctx| {
            if Instant::now() >= ctx.data().deadline {
                Err(wasmtime::Error::msg(DEADLINE_MESSAGE))
            } else {
                // Let other tasks on this thread run, then check again next tick.
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store
    }

    /// Names of the loaded plugins.
    pub fn loaded(&self) -> Vec<PluginSummary> {
        let mut out: Vec<PluginSummary> = self
            .plugins
            .values()
            .map(|l| PluginSummary {
                name: l.manifest.name.clone(),
                version: l.manifest.version.clone(),
                api: l.manifest.api.clone(),
                steps: l.manifest.steps.keys().cloned().collect(),
                hosts: l.manifest.hosts.clone(),
                secrets: l.manifest.secrets.clone(),
                secrets_set: l.shared.config.secrets.keys().cloned().collect(),
                load_ms: l.load_time.as_secs_f64() * 1000.0,
                from_cache: l.from_cache,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Whether `plugin` loaded (its steps can run).
    pub fn is_loaded(&self, plugin: &str) -> bool {
        self.plugins.contains_key(plugin)
    }

    /// Runs one step in a fresh instance. Never fails the caller: traps, deadlines and
    /// limit breaches become outcomes.
    pub async fn call(&self, call: StepCall<'_>) -> CallOutcome {
        let Some(loaded) = self.plugins.get(call.plugin) else {
            return CallOutcome::Failed {
                reason: match self.unavailable.get(call.plugin) {
                    Some(why) => format!("plugin `{}` is not loaded: {why}", call.plugin),
                    None => format!("plugin `{}` is not loaded", call.plugin),
                },
            };
        };
        if !loaded.manifest.steps.contains_key(call.step) {
            return CallOutcome::Failed {
                reason: format!("plugin `{}` has no step `{}`", call.plugin, call.step),
            };
        }
        let stderr = MemoryOutputPipe::new(4096);
        let mut store = self.store_for(loaded, stderr.clone());
        let wit_call = wit::Call {
            step: call.step.to_string(),
            config: call.config.to_string(),
            contact: call.contact.to_string(),
            event: call.event.map(|e| e.to_string()),
            idempotency_key: call.idempotency_key.to_string(),
            attempt: call.attempt,
        };
        let started = std::time::Instant::now();
        let result = async {
            let plugin = loaded.pre.instantiate_async(&mut store).await?;
            plugin
                .nurture_plugin_step()
                .call_run(&mut store, &wit_call)
                .await
        }
        .await;
        let label = nurture_engine::metrics::PluginLabel {
            plugin: call.plugin.to_string(),
        };
        self.metrics
            .plugin_call_seconds
            .get_or_create(&label)
            .observe(started.elapsed().as_secs_f64());
        let busy = result.as_ref().err().and_then(pool_exhausted);
        if result.is_err() && busy.is_none() {
            self.metrics.plugin_traps.get_or_create(&label).inc();
        }
        if let Some(what) = busy {
            let reason = format!(
                "plugin `{}` not started: all {} call slots of the plugin host are busy (no free {what}); retried later",
                call.plugin, self.limits.max_concurrent
            );
            tracing::warn!(plugin = call.plugin, step = call.step, %reason, "plugin call not started");
            return CallOutcome::Retry {
                after: Duration::ZERO,
                reason,
            };
        }
        match result {
            Ok(wit::Outcome::Ok(output)) => CallOutcome::Ok {
                output: serde_json::from_str(&output).unwrap_or(Value::String(output)),
            },
            Ok(wit::Outcome::RetryAfter(r)) => CallOutcome::Retry {
                after: Duration::from_secs(r.seconds.into()),
                reason: r.reason,
            },
            Ok(wit::Outcome::Failed(reason)) => CallOutcome::Failed { reason },
            Err(e) => {
                let text = format!("{e:#}");
                let panic_message = panic_message(&String::from_utf8_lossy(&stderr.contents()));
                let reason = if text.contains(DEADLINE_MESSAGE) {
                    format!(
                        "plugin `{}` exceeded its {} ms deadline and was stopped",
                        call.plugin,
                        self.limits.deadline.as_millis()
                    )
                } else if text.contains("forcing trap when growing memory") {
                    format!(
                        "plugin `{}` exceeded its memory limit of {} MiB",
                        call.plugin,
                        self.limits.memory_bytes >> 20
                    )
                } else if let Some(p) = panic_message {
                    format!("plugin `{}` panicked: {p}", call.plugin)
                } else {
                    let first = text.lines().next().unwrap_or("").to_string();
                    format!("plugin `{}` trapped: {first}", call.plugin)
                };
                tracing::warn!(plugin = call.plugin, step = call.step, %reason, "plugin call failed");
                if text.contains(DEADLINE_MESSAGE) {
                    // Maybe a slow provider: the engine's backoff decides when to retry.
                    CallOutcome::Retry {
                        after: Duration::ZERO,
                        reason,
                    }
                } else {
                    CallOutcome::Failed { reason }
                }
            }
        }
    }
}

/// The WASI context of a call: no preopened directories, no environment, no arguments,
/// no sockets, no name lookups; stderr goes to `stderr` (read for panic messages).
fn sandbox_wasi(stderr: MemoryOutputPipe) -> WasiCtx {
    WasiCtxBuilder::new()
        .stderr(stderr)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build()
}

/// The limits of every call's store: memory and table sizes, and how many instances,
/// tables and memories a component may make.
fn store_limits(limits: &Limits) -> StoreLimits {
    StoreLimitsBuilder::new()
        .memory_size(limits.memory_bytes)
        .table_elements(limits.table_elements)
        .instances(16)
        .tables(16)
        .memories(4)
        .trap_on_grow_failure(true)
        .build()
}

/// What the instance pool ran out of, when that is why a call could not start (all
/// [`Limits::max_concurrent`] slots busy): "component instances", "memories"...
fn pool_exhausted(e: &wasmtime::Error) -> Option<String> {
    e.downcast_ref::<PoolConcurrencyLimitError>().map(|p| {
        let text = p.to_string();
        // "maximum concurrent limit of N for KIND reached"
        text.split(" for ")
            .nth(1)
            .map(|k| k.trim_end_matches(" reached"))
            .map(|k| {
                let memories = k.starts_with("memory stripe");
                if memories { "memories" } else { k }.to_string()
            })
            .unwrap_or(text)
    })
}

/// The panic message from a guest's stderr: `thread '..' panicked at FILE:L:C:` then
/// the message, as `MESSAGE (at FILE:L:C)`.
fn panic_message(stderr: &str) -> Option<String> {
    let mut lines = stderr.lines();
    let head = lines.find(|l| l.contains(" panicked at "))?;
    let at = head
        .split(" panicked at ")
        .nth(1)
        .unwrap_or("")
        .trim_end_matches(':');
    let message = lines.next().unwrap_or("").trim();
    Some(format!("{message} (at {at})"))
}

const DEADLINE_MESSAGE: &str = "nurture: plugin call deadline exceeded";

/// Loads a compiled component from our cache.
#[allow(unsafe_code)]
fn deserialize_cached(engine: &Engine, file: &Path) -> Result<Component, wasmtime::Error> {
    // SAFETY: the file is one this host wrote with `Component::serialize` into the
    // project's private cache folder, named by the wasm's hash and the engine's
    // compatibility hash; wasmtime also checks its header against this engine. Whoever
    // can write that folder can already replace the nurture binary's inputs.
    unsafe { Component::deserialize_file(engine, file) }
}
