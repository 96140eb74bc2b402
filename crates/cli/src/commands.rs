//! The store-backed commands of the binary: run, contacts import, events send, runs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use chrono::Utc;
use serde_json::json;

use nurture_channels::email::Signer;
use nurture_core::project::Project;
use nurture_engine::Engine;
use nurture_store::{RunFilter, RunStatus, Store};

/// The store URL of a project: `--store`, else `store` in nurture.toml, else
/// `sqlite://DIR/nurture.db`. Relative SQLite paths are relative to the project.
pub(crate) fn store_url(dir: &Path, project: Option<&Project>, flag: Option<String>) -> String {
    store_url_from(dir, project.and_then(|p| p.settings.store.clone()), flag)
}

/// [`store_url`] with the configured `store` given.
pub(crate) fn store_url_from(
    dir: &Path,
    configured: Option<String>,
    flag: Option<String>,
) -> String {
    let url = flag
        .or(configured)
        .unwrap_or_else(|| "sqlite://nurture.db".to_string());
    match url.strip_prefix("sqlite://") {
        Some(path) if !path.starts_with('/') => {
            format!("sqlite://{}", dir.join(path).display())
        }
        _ => url,
    }
}

/// The stores' configuration from the environment, the only place it is read: any
/// variable not set keeps its default (docs/operators.md).
/// - `NURTURE_LEASE_SECS`: how long claims lease timers, events and outbox entries (60);
/// - `NURTURE_PG_SCHEMA`: the Postgres schema of the tables (`nurture`);
/// - `NURTURE_PG_POOL`: Postgres connections per process (16);
/// - `NURTURE_PG_LANES`: the database's concurrent group commits, shared by the workers (4).
pub(crate) fn store_config() -> Result<nurture_server::StoreConfig> {
    fn var<T: std::str::FromStr>(name: &str) -> Result<Option<T>>
    where
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        match std::env::var(name) {
            Ok(v) => Ok(Some(
                v.trim()
                    .parse()
                    .with_context(|| format!("invalid {name}={v:?}"))?,
            )),
            Err(_) => Ok(None),
        }
    }
    let mut config = nurture_server::StoreConfig::default();
    if let Some(secs) = var::<u64>("NURTURE_LEASE_SECS")? {
        config.sqlite.lease = Duration::from_secs(secs);
        config.postgres.lease = Duration::from_secs(secs);
    }
    if let Some(schema) = var::<String>("NURTURE_PG_SCHEMA")? {
        config.postgres.schema = schema;
    }
    if let Some(pool) = var::<u32>("NURTURE_PG_POOL")? {
        config.postgres.pool = pool;
    }
    if let Some(lanes) = var::<usize>("NURTURE_PG_LANES")? {
        config.postgres.lanes = lanes;
    }
    Ok(config)
}

pub(crate) async fn open(
    dir: &Path,
    flag: Option<String>,
) -> Result<(Arc<Project>, Arc<dyn Store>)> {
    let project = match super::load_valid(dir) {
        Ok(p) => p,
        Err(_) => return Err(crate::InvalidProject.into()),
    };
    let url = store_url(dir, Some(&project), flag);
    let store = nurture_server::open_store_with(&url, &store_config()?)
        .await
        .with_context(|| format!("cannot open the store {}", nurture_store::redact_url(&url)))?;
    Ok((project, store))
}

/// The store of the project in `dir` for a command that only reads it: works when the
/// project has errors (with a warning), using `nurture.toml`'s `store` if it parses.
pub(crate) async fn open_read(dir: &Path, flag: Option<String>) -> Result<Arc<dyn Store>> {
    let loaded = nurture_core::project::load(dir);
    if loaded.errors() > 0 {
        eprintln!(
            "warning: the project in {} has {} error(s) (`nurture validate` lists them); reading its store anyway",
            dir.display(),
            loaded.errors()
        );
    }
    let configured = nurture_core::project::settings(dir).store;
    let url = store_url_from(dir, configured, flag);
    nurture_server::open_store_with(&url, &store_config()?)
        .await
        .with_context(|| format!("cannot open the store {}", nurture_store::redact_url(&url)))
}

/// The API key: from the environment variable named in nurture.toml (default
/// NURTURE_API_KEY), else generated once and kept in DIR/.nurture/api-key.
pub(crate) fn api_key(dir: &Path, project: &Project) -> Result<(String, String)> {
    let var = project
        .settings
        .api
        .as_ref()
        .and_then(|a| a.key_env.clone())
        .unwrap_or_else(|| "NURTURE_API_KEY".into());
    Ok(nurture_core::project::local_secret(dir, "api-key", &var)?)
}

pub(crate) fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // sqlx warns about a store URL's unknown parameters with their values (which may
        // be secrets): not by default.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("info,sqlx=warn,sqlx_postgres::options=error")
        });
    use std::io::IsTerminal;
    // No colour codes unless stderr is a terminal (a file, a pipe, journald).
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        b.event_format(crate::logs::JsonLines).init();
    } else {
        b.init();
    }
}

/// What a `nurture run` process does.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// API and scheduler (`nurture run`).
    Both,
    /// API only (`nurture serve`).
    Api,
    /// Scheduler only (`nurture worker`).
    Worker,
}

pub(crate) async fn run(
    dir: &Path,
    listen: Option<String>,
    store_flag: Option<String>,
    log_json: bool,
    poll_ms: u64,
    role: Role,
) -> Result<ExitCode> {
    init_logs(log_json);
    let (project, store) = open(dir, store_flag.clone()).await?;
    let url = store_url(dir, Some(&project), store_flag);
    let _lock = match role {
        Role::Api => None,
        _ => scheduler_lock(&url)?,
    };
    let engine = Arc::new(Engine::new(project.clone(), store).holding_for(hold()?));
    let command = match role {
        Role::Both => "run",
        Role::Api => "serve",
        Role::Worker => "worker",
    };
    crate::deploy::deploy_at_start(&engine, command).await?;
    let signer = Arc::new(
        Signer::for_project(dir, project.settings.tracking.as_ref()).context("the tracking key")?,
    );
    // A worker's `listen` is its metrics port (`--metrics-listen`), not the API's.
    let (metrics_listen, listen) = match role {
        Role::Worker => (listen, None),
        _ => (None, listen),
    };
    let listen = listen
        .or_else(|| project.settings.api.as_ref().and_then(|a| a.listen.clone()))
        .unwrap_or_else(|| "127.0.0.1:8025".into());
    let none = || "-".to_string();
    let (api, api_url, metrics_url, key_note) = match (role, &metrics_listen) {
        (Role::Worker, None) => (None, none(), none(), none()),
        (Role::Worker, Some(addr)) => {
            let (mut api, url, key_from) = bind_api(dir, &project, addr, signer.clone()).await?;
            api.metrics_only = true;
            (Some(api), none(), format!("{url}/metrics"), key_from)
        }
        _ => {
            let (api, url, key_from) = bind_api(dir, &project, &listen, signer.clone()).await?;
            let metrics = format!("{url}/metrics");
            (Some(api), url, metrics, key_from)
        }
    };
    // Links in emails point at the API: a worker's own port serves metrics only.
    let api_base = match role {
        Role::Worker => format!("http://{listen}"),
        _ => api_url.clone(),
    };
    let scheduler = match role {
        Role::Api => None,
        _ => Some(scheduler_parts(
            dir, &project, &engine, &signer, &api_base, poll_ms,
        )?),
    };
    let running = nurture_server::compose::start(engine, api, scheduler);
    tracing::info!(
        workflows = project.plans.len(),
        store = %nurture_store::redact_url(&url),
        api = %api_url,
        metrics = %metrics_url,
        api_key = %key_note,
        scheduler = role != Role::Api,
        "nurture is running"
    );
    shutdown_signal().await;
    tracing::info!("stopping: finishing the current unit of work");
    running.stop().await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// How long held work of a paused workflow waits between looks: `NURTURE_HOLD_SECS`
/// (default 30, at least 1).
pub(crate) fn hold() -> Result<chrono::Duration> {
    let secs = match std::env::var("NURTURE_HOLD_SECS") {
        Ok(v) => v
            .trim()
            .parse::<u32>()
            .with_context(|| format!("NURTURE_HOLD_SECS={v:?} is not a number of seconds"))?,
        Err(_) => nurture_engine::HOLD.num_seconds() as u32,
    };
    Ok(chrono::Duration::seconds(i64::from(secs.max(1))))
}

/// Whether `workflow` is one of the project's (when it loads) or was ever deployed.
async fn known_workflow(store: &dyn Store, dir: &Path, workflow: &str) -> Result<bool> {
    let loaded = nurture_core::project::load(dir);
    let in_project = loaded
        .project
        .as_ref()
        .is_some_and(|p| p.plans.iter().any(|pl| pl.id() == workflow));
    let deployed = store
        .latest_versions()
        .await?
        .iter()
        .any(|l| l.workflow == workflow);
    Ok(in_project || deployed)
}

/// One scheduler per SQLite store: an exclusive lock on `DB.scheduler.lock` beside the
/// database, held while the process runs (the OS releases it when the process dies).
/// Two schedulers on one SQLite file would compete for its single writer; several
/// workers need Postgres. `None` for other stores.
pub(crate) fn scheduler_lock(url: &str) -> Result<Option<std::fs::File>> {
    let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return Ok(None);
    };
    let db = rest.split('?').next().unwrap_or(rest);
    if db.is_empty() || db.contains(":memory:") {
        return Ok(None);
    }
    let path = PathBuf::from(format!("{db}.scheduler.lock"));
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open the scheduler lock {}", path.display()))?;
    if let Err(e) = file.try_lock() {
        let mut holder = String::new();
        use std::io::Read as _;
        let _ = file.read_to_string(&mut holder);
        let pid = holder.trim().chars().take(20).collect::<String>();
        anyhow::bail!(
            "another nurture scheduler (pid {}) already runs on the SQLite store {db} ({e}): \
             stop it first; several workers need a Postgres store",
            if pid.is_empty() { "unknown" } else { &pid }
        );
    }
    use std::io::{Seek as _, Write as _};
    file.set_len(0)?;
    file.seek(std::io::SeekFrom::Start(0))?;
    write!(file, "{}", std::process::id())?;
    Ok(Some(file))
}

/// The API of `run` and `serve`: its key and its listener bound to `listen`; with the URL
/// it answers on and where the key came from.
async fn bind_api(
    dir: &Path,
    project: &Project,
    listen: &str,
    signer: Arc<Signer>,
) -> Result<(nurture_server::compose::Api, String, String)> {
    let (key, key_from) = api_key(dir, project)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let url = format!("http://{}", listener.local_addr()?);
    let api = nurture_server::compose::Api {
        listener,
        key: Arc::new(key),
        signer,
        metrics_only: false,
    };
    Ok((api, url, key_from))
}

/// The scheduler of `run` and `worker`: the project's deliverer (email, webhooks, and
/// its plugins, built from source when missing).
pub(crate) fn scheduler_parts(
    dir: &Path,
    project: &Project,
    engine: &Engine,
    signer: &Signer,
    api_base: &str,
    poll_ms: u64,
) -> Result<nurture_server::compose::Scheduler> {
    let mut deliverer =
        nurture_server::compose::deliverer(project, engine.store.clone(), signer, api_base)?;
    if let Some(host) = start_plugins(dir, project, &engine.metrics)? {
        deliverer = deliverer.with_plugins(host);
    }
    Ok(nurture_server::compose::Scheduler {
        deliverer,
        poll: Duration::from_millis(poll_ms),
    })
}

/// Starts the plugin host for a project; builds from source the plugins whose component
/// is missing. A plugin that cannot be loaded is reported and its steps fail with the
/// reason; the others run.
pub(crate) fn start_plugins(
    dir: &Path,
    project: &nurture_core::project::Project,
    metrics: &nurture_engine::metrics::Metrics,
) -> Result<Option<Arc<nurture_channels::plugin::PluginHost>>> {
    use nurture_channels::plugin::{build, Limits, PluginHost};
    if project.plugins.is_empty() {
        return Ok(None);
    }
    for (name, manifest) in &project.plugins {
        let Some(pdir) = project.plugin_dirs.get(name) else {
            continue;
        };
        let announce = || {
            eprintln!(
                "building plugin `{name}` from source (cargo build --target {}) ...",
                build::TARGET
            )
        };
        if let Err(e) = build::build_if_missing(manifest, pdir, &build::target_dir(dir), announce) {
            tracing::error!(plugin = %name, error = %e, "plugin build failed");
        }
    }
    let cache = nurture_channels::plugin::cache_dir(dir);
    let (host, errors) = PluginHost::for_project(project, Limits::default(), &cache)?;
    let host = host.with_metrics(metrics.clone());
    for e in errors {
        tracing::error!(error = %e, "plugin not loaded; its steps will fail");
    }
    for p in host.loaded() {
        let missing: Vec<&String> = p
            .secrets
            .iter()
            .filter(|s| !p.secrets_set.contains(s))
            .collect();
        tracing::info!(plugin = %p.name, version = %p.version, load_ms = format!("{:.1}", p.load_ms), cached = p.from_cache, "plugin loaded");
        if !missing.is_empty() {
            tracing::warn!(plugin = %p.name, ?missing, "plugin secrets not set; its calls will fail until they are");
        }
    }
    Ok(Some(Arc::new(host)))
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

pub(crate) async fn import(
    dir: &Path,
    store_flag: Option<String>,
    (file, format): (&Path, Option<crate::input::InputFormatArg>),
    json_out: bool,
) -> Result<ExitCode> {
    let (project, store) = open(dir, store_flag).await?;
    let (rows, mut rejected) = crate::input::contacts(file, format)?;
    let engine = Engine::new(project, store);
    let bar = if json_out {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(rows.len() as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} importing contacts {bar:40} {pos}/{len} ({per_sec}, eta {eta})",
        )
        .expect("template"),
    );
    let mut created = 0;
    let mut updated = 0;
    for chunk in rows.chunks(1000) {
        let s = engine.import_contacts(chunk, Utc::now()).await?;
        created += s.created;
        updated += s.updated;
        rejected.extend(s.rejected);
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(summary(
        file,
        json!({"created": created, "updated": updated}),
        format!("{created} created, {updated} updated"),
        rejected,
        json_out,
    ))
}

/// Prints a file command's outcome: rejected lines on stderr with `FILE:LINE`, then the
/// counts (or everything as JSON); exit status 1 when anything was rejected.
fn summary(
    file: &Path,
    counts: serde_json::Value,
    human: String,
    mut rejected: Vec<nurture_engine::input::Rejected>,
    json_out: bool,
) -> ExitCode {
    rejected.sort_by_key(|r| r.at);
    if json_out {
        let mut v = counts;
        v["rejected"] = rejected
            .iter()
            .map(|r| json!({"line": r.at, "reason": r.reason}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v).expect("json"));
    } else {
        for r in &rejected {
            eprintln!(
                "{}:{}: rejected: {}",
                crate::input::shown(file),
                r.at,
                r.reason
            );
        }
        println!("{human}, {} rejected", rejected.len());
    }
    if rejected.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

pub(crate) async fn send(
    dir: &Path,
    store_flag: Option<String>,
    file: &Path,
    json_out: bool,
) -> Result<ExitCode> {
    let (project, store) = open(dir, store_flag).await?;
    let (events, mut rejected) = crate::input::events(file)?;
    let engine = Engine::new(project, store);
    let mut accepted = 0;
    let mut duplicates = 0;
    for chunk in events.chunks(1000) {
        for o in engine.ingest(chunk, Utc::now()).await? {
            match o.status {
                "accepted" => accepted += 1,
                "duplicate" => duplicates += 1,
                _ => rejected.push(nurture_engine::input::Rejected {
                    at: o.index,
                    reason: o.reason.unwrap_or_default(),
                }),
            }
        }
    }
    Ok(summary(
        file,
        json!({"accepted": accepted, "duplicates": duplicates}),
        format!("{accepted} accepted, {duplicates} duplicates ignored"),
        rejected,
        json_out,
    ))
}

pub(crate) async fn list_runs(
    dir: &Path,
    store_flag: Option<String>,
    workflow: Option<String>,
    contact: Option<String>,
    status: Option<String>,
    limit: i64,
    json_out: bool,
) -> Result<ExitCode> {
    let store = open_read(dir, store_flag).await?;
    let contact = match contact {
        Some(c) => match crate::outbox::contact_id(&*store, &c).await? {
            Ok(id) => Some(id),
            Err(code) => return Ok(code),
        },
        None => None,
    };
    let status = status
        .map(|s| RunStatus::parse(&s).map_err(|_| anyhow::anyhow!("unknown status {s:?}: use active, waiting, completed, converted, exited or failed")))
        .transpose()?;
    let filter_workflow = workflow.clone();
    let runs = store
        .list_runs(&RunFilter {
            workflow,
            contact,
            status,
            limit,
        })
        .await?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&runs)?);
        return Ok(ExitCode::SUCCESS);
    }
    if runs.is_empty() {
        if let Some(w) = &filter_workflow {
            if !known_workflow(&*store, dir, w).await? {
                eprintln!("no workflow `{w}` in the project or the store; `nurture workflows list` shows them");
                return Ok(ExitCode::from(1));
            }
        }
        println!("no runs");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<28} {:<22} {:<26} {:<10} {:<18} STARTED",
        "RUN", "WORKFLOW", "CONTACT", "STATUS", "STEP"
    );
    for r in runs {
        println!(
            "{:<28} {:<22} {:<26} {:<10} {:<18} {}",
            r.id,
            r.workflow,
            r.contact,
            r.status.as_str(),
            r.step
                .as_deref()
                .or(r.exit_reason.as_deref())
                .unwrap_or("-"),
            nurture_store::ts_out(r.started_at)
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn workers(
    dir: &Path,
    store_flag: Option<String>,
    json_out: bool,
) -> Result<ExitCode> {
    let store = open_read(dir, store_flag).await?;
    let workers = store.workers().await?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&workers)?);
        return Ok(ExitCode::SUCCESS);
    }
    if workers.is_empty() {
        println!("no workers alive (only a Postgres store keeps a registry; on SQLite one process runs everything)");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<40} {:<20} {:>8} {:>5} {:<20} {:<12} NOTE",
        "WORKER", "HOST", "PID", "LANES", "STARTED", "LAST SEEN"
    );
    let now = chrono::Utc::now();
    for w in workers {
        let seen = (now - w.seen_at).num_milliseconds().max(0) as f64 / 1000.0;
        println!(
            "{:<40} {:<20} {:>8} {:>5} {:<20} {:<12} {}",
            w.id,
            w.host,
            w.pid,
            w.lanes,
            nurture_store::ts_out(w.started_at),
            format!("{seen:.1} s ago"),
            w.note.as_deref().unwrap_or("-")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Says that run `id` does not exist, and where the runs are: exit code 1.
pub(crate) fn no_run(id: &str) -> ExitCode {
    eprintln!("no run {id}; `nurture runs list` shows the runs");
    ExitCode::from(1)
}

pub(crate) async fn show_run(
    dir: &Path,
    store_flag: Option<String>,
    id: &str,
    json_out: bool,
) -> Result<ExitCode> {
    let store = open_read(dir, store_flag).await?;
    let Some(run) = store.run(id).await? else {
        return Ok(no_run(id));
    };
    let journal = store.journal(id).await?;
    let keys: Vec<String> = journal
        .iter()
        .filter_map(|j| j.data.get("key").and_then(|k| k.as_str()).map(String::from))
        .collect();
    let outbox = store.outbox_entries(&keys).await?;
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"run": run, "journal": journal, "outbox": outbox})
            )?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("run       {}", run.id);
    println!(
        "workflow  {} (version {})",
        run.workflow, run.workflow_version
    );
    println!("contact   {}", run.contact);
    println!(
        "status    {}{}",
        run.status.as_str(),
        run.exit_reason
            .as_ref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    );
    if let Some(s) = &run.step {
        println!("at step   {s}");
    }
    println!();
    for j in &journal {
        let state = j
            .data
            .get("key")
            .and_then(|k| outbox.iter().find(|o| Some(o.key.as_str()) == k.as_str()))
            .map(|o| format!("  {}", crate::outbox::state_note(o)))
            .unwrap_or_default();
        let line = describe(j.kind.as_str(), &j.data);
        let line = nurture_engine::explain::printable(&line);
        println!("{}  {line}{state}", nurture_store::ts_out(j.at));
    }
    Ok(ExitCode::SUCCESS)
}

/// `nurture runs explain RUN_ID`.
pub(crate) async fn explain_run(
    dir: &Path,
    store_flag: Option<String>,
    id: &str,
    json_out: bool,
) -> Result<ExitCode> {
    let store = open_read(dir, store_flag).await?;
    let Some(story) = nurture_engine::explain::explain_run(&*store, id).await? else {
        return Ok(no_run(id));
    };
    if json_out {
        println!("{}", serde_json::to_string_pretty(&story)?);
    } else {
        print!("{}", story.render());
    }
    Ok(ExitCode::SUCCESS)
}

/// One journal line for people.
fn describe(kind: &str, d: &serde_json::Value) -> String {
    let s = |k: &str| d.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
    match kind {
        "step" => format!("step {} ({})", s("step"), s("kind")),
        "condition" => {
            let err = d
                .get("error")
                .and_then(|e| e.as_str())
                .map(|e| format!(" [error: {e}]"))
                .unwrap_or_default();
            format!(
                "  {} {} -> {} reading {}{err}",
                s("where"),
                s("expr"),
                d["result"],
                d["reads"]
            )
        }
        "effect" => {
            let mut rest = d.clone();
            if let Some(m) = rest.as_object_mut() {
                m.remove("effect");
                m.remove("step");
                // The run's input (the contact as it entered): `runs export` shows it.
                m.remove("input");
            }
            format!("  {} {}", s("effect"), rest)
        }
        "split" => format!(
            "  variant {} (bucket {} of {})",
            s("variant"),
            d["bucket"],
            d["total"]
        ),
        "resume" => format!("  resumed by {}", d["event"]),
        "timeout" => format!("  timed out waiting for {}", s("event")),
        "wake" => format!("  wait over at {}", s("step")),
        "branch_else" => "  no condition held: else".to_string(),
        "quiet_hours_over" => "  quiet hours over".to_string(),
        "error" => format!("  error at {}: {}", s("step"), s("message")),
        "undone" => format!("  taken back (the step failed): {}", d["effects"]),
        "cancelled" => format!("  cancelled by {}: {}", s("by"), s("reason")),
        "summary" => format!(
            "COMPACTED: the journal was replaced by this summary ({} lines, {} steps, effects {})",
            d["lines"], d["steps"], d["effects"]
        ),
        other => format!("{other} {d}"),
    }
}

/// `nurture plugins list`.
pub(crate) fn plugins_list(dir: &Path, json_out: bool) -> Result<ExitCode> {
    use nurture_channels::plugin::{build, secret_var, Limits, PluginConfig, PluginHost};
    let project = match super::load_valid(dir) {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let cache = nurture_channels::plugin::cache_dir(dir);
    let (host, errors) = PluginHost::for_project(&project, Limits::default(), &cache)?;
    let loaded = host.loaded();
    let mut rows = Vec::new();
    for (name, m) in &project.plugins {
        let pdir = project.plugin_dirs.get(name).cloned().unwrap_or_default();
        let summary = loaded.iter().find(|s| &s.name == name);
        let error = errors
            .iter()
            .map(|e| e.to_string())
            .find(|e| e.contains(&format!("`{name}`")));
        let set = PluginConfig::for_project(&project, name).secrets;
        let secrets: Vec<serde_json::Value> = m
            .secrets
            .iter()
            .map(|s| {
                json!({"name": s, "set": set.contains_key(s), "env": secret_var(&project, name, s)})
            })
            .collect();
        rows.push(json!({
            "name": name,
            "version": m.version,
            "api": m.api,
            "description": m.description,
            "folder": pdir.display().to_string(),
            "component": build::component_path(m, &pdir).display().to_string(),
            "status": if summary.is_some() { "loaded" } else { "not loaded" },
            "error": error,
            "load_ms": summary.map(|s| (s.load_ms * 10.0).round() / 10.0),
            "steps": m.steps.iter().map(|(k, v)| json!({"name": format!("{name}/{k}"), "description": v.description})).collect::<Vec<_>>(),
            "hosts": m.hosts,
            "secrets": secrets,
        }));
    }
    if json_out {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    for r in &rows {
        println!(
            "{} {} (interface {}): {}",
            r["name"].as_str().unwrap_or(""),
            r["version"].as_str().unwrap_or(""),
            r["api"].as_str().unwrap_or(""),
            r["description"].as_str().unwrap_or("")
        );
        match r["error"].as_str() {
            Some(e) => println!("  status:  NOT LOADED: {e}"),
            None => println!("  status:  loaded in {} ms", r["load_ms"]),
        }
        for s in r["steps"].as_array().into_iter().flatten() {
            println!(
                "  step:    {:<32} {}",
                s["name"].as_str().unwrap_or(""),
                s["description"].as_str().unwrap_or("")
            );
        }
        let hosts: Vec<&str> = r["hosts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| h.as_str())
            .collect();
        println!(
            "  network: {}",
            if hosts.is_empty() {
                "none".to_string()
            } else {
                format!("https to {}", hosts.join(", "))
            }
        );
        for s in r["secrets"].as_array().into_iter().flatten() {
            println!(
                "  secret:  {:<16} {} (${})",
                s["name"].as_str().unwrap_or(""),
                if s["set"] == true { "set" } else { "NOT SET" },
                s["env"].as_str().unwrap_or("")
            );
        }
        println!("  sandbox: no files, no environment, no sockets; memory 64 MiB, 10 s per call");
    }
    Ok(ExitCode::SUCCESS)
}

/// `nurture plugins build`.
pub(crate) fn plugins_build(dir: &Path) -> Result<ExitCode> {
    use nurture_channels::plugin::build;
    let project = match super::load_valid(dir) {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    build::ensure_target()?;
    let target = build::target_dir(dir);
    let with_source: Vec<_> = project
        .plugins
        .iter()
        .filter_map(|(n, m)| {
            let d = project.plugin_dirs.get(n)?;
            d.join("Cargo.toml").exists().then_some((m, d))
        })
        .collect();
    let bar = indicatif::ProgressBar::new(with_source.len() as u64).with_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
            .expect("progress template"),
    );
    let mut failed = 0;
    for (m, d) in with_source {
        bar.set_message(format!("building {}", m.name));
        let started = std::time::Instant::now();
        match build::build(m, d, &target) {
            Ok(path) => bar.suspend(|| {
                println!(
                    "built {} -> {} ({:.1} s)",
                    m.name,
                    path.display(),
                    started.elapsed().as_secs_f64()
                )
            }),
            Err(e) => {
                failed += 1;
                bar.suspend(|| eprintln!("error: {e}"));
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `nurture plugin new NAME`.
pub(crate) fn plugin_new(
    name: &str,
    dir: Option<PathBuf>,
    sdk_path: Option<PathBuf>,
) -> Result<ExitCode> {
    let valid = !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        bail!("plugin name `{name}`: use lowercase letters, digits and dashes, starting with a letter (e.g. `crm-sync`)");
    }
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        bail!("{} exists and is not empty", dir.display());
    }
    let sdk = match sdk_path {
        Some(p) => {
            std::fs::canonicalize(&p).with_context(|| format!("no SDK at {}", p.display()))?
        }
        None => {
            let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../sdk");
            std::fs::canonicalize(&here).context(
                "this nurture was not built from a checkout; pass --sdk-path to the nurture-plugin-sdk crate",
            )?
        }
    };
    let ident: String = name
        .split('-')
        .map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    let fill = |t: &str| {
        t.replace("{{name}}", name)
            .replace("{{Ident}}", &ident)
            .replace("{{crate}}", &format!("nurture-plugin-{name}"))
            .replace("{{sdk}}", &sdk.display().to_string())
    };
    std::fs::create_dir_all(dir.join("src"))?;
    std::fs::write(
        dir.join("Cargo.toml"),
        fill(include_str!("scaffold/Cargo.toml.in")),
    )?;
    std::fs::write(
        dir.join("plugin.toml"),
        fill(include_str!("scaffold/plugin.toml.in")),
    )?;
    std::fs::write(
        dir.join("src/lib.rs"),
        fill(include_str!("scaffold/lib.rs.in")),
    )?;
    std::fs::write(dir.join(".gitignore"), "/target\n*.wasm\n")?;
    println!("created plugin `{name}` in {}", dir.display());
    println!("next:");
    println!(
        "  cd {} && cargo test                      # run its step natively",
        dir.display()
    );
    println!(
        "  nurture plugins build PROJECT            # once it sits in the project's plugin folder"
    );
    Ok(ExitCode::SUCCESS)
}

/// `nurture email preview`.
pub(crate) async fn email_preview(
    dir: &Path,
    store_flag: Option<String>,
    template: &str,
    contact: &str,
    out: Option<PathBuf>,
) -> Result<ExitCode> {
    let (project, store) = open(dir, store_flag).await?;
    if !project.templates.contains_key(template) {
        let names: Vec<&String> = project
            .templates
            .keys()
            .filter(|n| !n.starts_with('_'))
            .collect();
        bail!(
            "no template `{template}` in {}/templates (there are: {names:?})",
            dir.display()
        );
    }
    let found = match store.contact(contact).await? {
        Some(c) => Some(c),
        None => store.contact_by_email(contact).await?,
    };
    let Some(c) = found else {
        bail!("no contact `{contact}` in the store (import one with `nurture contacts import`)");
    };
    let view = nurture_engine::eval::contact_view(&c, &project.scoring);
    let signer =
        nurture_channels::email::Signer::for_project(dir, project.settings.tracking.as_ref())?;
    let listen = project
        .settings
        .api
        .as_ref()
        .and_then(|a| a.listen.clone())
        .unwrap_or_else(|| "127.0.0.1:8025".into());
    let channel = nurture_channels::email::EmailChannel::for_project(
        &project,
        store,
        signer,
        &format!("http://{listen}"),
    )?;
    let (message, rendered) = channel
        .preview(template, &c.id, &view)
        .map_err(|e| anyhow::anyhow!(e))?;
    match out {
        Some(path) if path.extension().is_some_and(|e| e == "html") => {
            std::fs::write(&path, rendered.html.unwrap_or_default())?;
            eprintln!("wrote {}", path.display());
        }
        Some(path) => {
            std::fs::write(&path, message.formatted())?;
            eprintln!("wrote {}", path.display());
        }
        None => {
            for h in ["From", "To", "Subject", "Message-ID", "List-Unsubscribe"] {
                if let Some(v) = message.headers().get_raw(h) {
                    println!("{h}: {v}");
                }
            }
            if let Some(p) = &rendered.preheader {
                println!("Preheader: {p}");
            }
            println!();
            print!("{}", rendered.text);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `nurture outbox retry`.
pub(crate) async fn outbox_retry(
    dir: &Path,
    store_flag: Option<String>,
    key: &str,
) -> Result<ExitCode> {
    let store = open_read(dir, store_flag).await?;
    if store.requeue_outbox(key, Utc::now()).await? {
        println!("requeued {key}: the scheduler sends it at its next pass");
        Ok(ExitCode::SUCCESS)
    } else {
        let state = store.outbox_state(key).await?;
        eprintln!(
            "{key} is {}: only ambiguous or failed entries can be requeued",
            state.as_deref().unwrap_or("unknown")
        );
        Ok(ExitCode::FAILURE)
    }
}
