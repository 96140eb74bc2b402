//! The store-backed commands of the binary: run, contacts import, events send, runs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use chrono::Utc;
use serde_json::json;

use nurture::engine::Engine;
use nurture::project::Project;
use nurture::store::{self, RunFilter, RunStatus, Store};

/// The store URL of a project: `--store`, else `store` in nurture.toml, else
/// `sqlite://DIR/nurture.db`. Relative SQLite paths are relative to the project.
pub fn store_url(dir: &Path, project: Option<&Project>, flag: Option<String>) -> String {
    let url = flag
        .or_else(|| project.and_then(|p| p.settings.store.clone()))
        .unwrap_or_else(|| "sqlite://nurture.db".to_string());
    match url.strip_prefix("sqlite://") {
        Some(path) if !path.starts_with('/') => {
            format!("sqlite://{}", dir.join(path).display())
        }
        _ => url,
    }
}

async fn open(dir: &Path, flag: Option<String>) -> Result<(Arc<Project>, Arc<dyn Store>)> {
    let project = match super::load_valid(dir) {
        Ok(p) => p,
        Err(_) => bail!("the project in {} is not valid", dir.display()),
    };
    let url = store_url(dir, Some(&project), flag);
    let store = store::open(&url)
        .await
        .with_context(|| format!("cannot open the store {url}"))?;
    Ok((project, store))
}

/// The API key: from the environment variable named in nurture.toml (default
/// NURTURE_API_KEY), else generated once and kept in DIR/.nurture/api-key.
fn api_key(dir: &Path, project: &Project) -> Result<(String, String)> {
    let var = project
        .settings
        .api
        .as_ref()
        .and_then(|a| a.key_env.clone())
        .unwrap_or_else(|| "NURTURE_API_KEY".into());
    if let Ok(k) = std::env::var(&var) {
        if !k.is_empty() {
            return Ok((k, format!("from ${var}")));
        }
    }
    let path: PathBuf = dir.join(".nurture").join("api-key");
    if let Ok(k) = std::fs::read_to_string(&path) {
        return Ok((k.trim().to_string(), format!("from {}", path.display())));
    }
    std::fs::create_dir_all(path.parent().expect("parent"))?;
    let mut seed = [0u8; 32];
    getrandom(&mut seed);
    let key: String = seed.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&path, &key)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok((
        key,
        format!(
            "generated into {} (set ${var} to choose one)",
            path.display()
        ),
    ))
}

/// Random bytes from the OS.
fn getrandom(buf: &mut [u8]) {
    use std::io::Read;
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        if f.read_exact(buf).is_ok() {
            return;
        }
    }
    // Fallback: hash of time and pid (never used on Linux).
    let seed = nurture::engine::digest(&[
        &format!("{:?}", std::time::SystemTime::now()),
        &std::process::id().to_string(),
    ]);
    for (i, b) in buf.iter_mut().enumerate() {
        *b = seed.as_bytes()[i % seed.len()];
    }
}

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

/// What a `nurture run` process does.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// API and scheduler (`nurture run`).
    Both,
    /// API only (`nurture serve`).
    Api,
    /// Scheduler only (`nurture worker`).
    Worker,
}

pub async fn run(
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
    let engine = Arc::new(Engine::new(project.clone(), store));
    let wake = Arc::new(tokio::sync::Notify::new());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    let mut api = String::from("-");
    let mut key_note = String::from("-");
    if role != Role::Worker {
        let (key, key_from) = api_key(dir, &project)?;
        key_note = key_from;
        let addr = listen
            .or_else(|| project.settings.api.as_ref().and_then(|a| a.listen.clone()))
            .unwrap_or_else(|| "127.0.0.1:8025".into());
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        api = format!("http://{}", listener.local_addr()?);
        let app = nurture::server::router(nurture::server::AppState {
            engine: engine.clone(),
            api_key: Arc::new(key),
            wake: wake.clone(),
        });
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.changed().await;
                })
                .await;
        }));
    }
    if role != Role::Api {
        tasks.push(tokio::spawn(nurture::server::scheduler(
            engine,
            wake,
            stop_rx.clone(),
            Duration::from_millis(poll_ms),
        )));
    }
    tracing::info!(
        workflows = project.plans.len(),
        store = %url,
        api = %api,
        api_key = %key_note,
        scheduler = role != Role::Api,
        "nurture is running"
    );
    shutdown_signal().await;
    tracing::info!("stopping: finishing the current unit of work");
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
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

pub async fn import(
    dir: &Path,
    store_flag: Option<String>,
    file: &Path,
    json_out: bool,
) -> Result<ExitCode> {
    let (project, store) = open(dir, store_flag).await?;
    let (rows, mut rejected) = nurture::input::read_contacts(file)
        .with_context(|| format!("cannot read {}", file.display()))?;
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
    mut rejected: Vec<nurture::input::Rejected>,
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
            eprintln!("{}:{}: rejected: {}", file.display(), r.at, r.reason);
        }
        println!("{human}, {} rejected", rejected.len());
    }
    if rejected.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

pub async fn send(
    dir: &Path,
    store_flag: Option<String>,
    file: &Path,
    json_out: bool,
) -> Result<ExitCode> {
    let (project, store) = open(dir, store_flag).await?;
    let (events, mut rejected) = nurture::input::read_events(file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let engine = Engine::new(project, store);
    let mut accepted = 0;
    let mut duplicates = 0;
    for chunk in events.chunks(1000) {
        for o in engine.ingest(chunk, Utc::now()).await? {
            match o.status {
                "accepted" => accepted += 1,
                "duplicate" => duplicates += 1,
                _ => rejected.push(nurture::input::Rejected {
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

pub async fn list_runs(
    dir: &Path,
    store_flag: Option<String>,
    workflow: Option<String>,
    contact: Option<String>,
    status: Option<String>,
    limit: i64,
    json_out: bool,
) -> Result<ExitCode> {
    let (_, store) = open(dir, store_flag).await?;
    let status = status
        .map(|s| RunStatus::parse(&s).map_err(|_| anyhow::anyhow!("unknown status {s:?}: use active, waiting, completed, converted, exited or failed")))
        .transpose()?;
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
        println!("no runs");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<28} {:<22} {:<16} {:<10} {:<18} STARTED",
        "RUN", "WORKFLOW", "CONTACT", "STATUS", "STEP"
    );
    for r in runs {
        println!(
            "{:<28} {:<22} {:<16} {:<10} {:<18} {}",
            r.id,
            r.workflow,
            r.contact,
            r.status.as_str(),
            r.step
                .as_deref()
                .or(r.exit_reason.as_deref())
                .unwrap_or("-"),
            store::ts_out(r.started_at)
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn show_run(
    dir: &Path,
    store_flag: Option<String>,
    id: &str,
    json_out: bool,
) -> Result<ExitCode> {
    let (_, store) = open(dir, store_flag).await?;
    let Some(run) = store.run(id).await? else {
        eprintln!("no run {id}; `nurture runs list` shows the runs");
        return Ok(ExitCode::from(1));
    };
    let journal = store.journal(id).await?;
    if json_out {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"run": run, "journal": journal}))?
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
        println!("{}  {}", store::ts_out(j.at), describe(&j.kind, &j.data));
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
        other => format!("{other} {d}"),
    }
}
