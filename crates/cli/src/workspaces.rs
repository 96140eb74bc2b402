//! `nurture run|serve|worker --workspaces FILE`: one process for several projects, each a
//! workspace with its own folder, store, API keys and tracking key
//! ([`nurture_server::workspaces`]).
//!
//! ```toml
//! # workspaces.toml
//! listen = "0.0.0.0:8025"          # optional: else --listen, else 127.0.0.1:8025
//! [workspaces.acme]
//! project = "clients/acme"         # its folder, relative to this file
//! [workspaces.globex]
//! project = "clients/globex"
//! ```
//!
//! Each project's `store` in its nurture.toml says where its rows live: its own SQLite
//! file, or its own schema of a shared Postgres database (`postgres://.../db?schema=acme`).
//! Two workspaces on one store, with one API key or one tracking key, are refused before
//! anything starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use serde::Deserialize;

use nurture_channels::email::Signer;
use nurture_engine::Engine;
use nurture_server::compose::WorkspaceParts;

use crate::commands::Role;

/// The workspaces file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkspacesFile {
    listen: Option<String>,
    #[serde(default)]
    workspaces: BTreeMap<String, Entry>,
}

/// One workspace of the file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    project: PathBuf,
}

/// The largest workspaces file read.
const MAX_FILE: u64 = 1 << 20;

/// The `listen` of a workspaces file, and its workspaces: name and project folder.
type Listed = (Option<String>, Vec<(String, PathBuf)>);

/// The workspaces of `file`: name and project folder, checked (names, folders).
fn read(file: &Path) -> Result<Listed> {
    let meta =
        std::fs::metadata(file).with_context(|| format!("cannot read {}", file.display()))?;
    if meta.len() > MAX_FILE {
        bail!("{} is larger than {MAX_FILE} bytes", file.display());
    }
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let parsed: WorkspacesFile =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    if parsed.workspaces.is_empty() {
        bail!(
            "{}: no workspace: add one as [workspaces.NAME] with project = \"FOLDER\"",
            file.display()
        );
    }
    let base = file.parent().unwrap_or(Path::new("."));
    let mut list = Vec::new();
    for (name, entry) in parsed.workspaces {
        if !nurture_server::workspaces::valid_name(&name) {
            bail!(
                "{}: workspace {name:?}: a name is lower-case letters, digits and `-` (at most 32), as it is part of URLs (/w/NAME/)",
                file.display()
            );
        }
        let dir = base.join(&entry.project);
        if !dir.join("nurture.toml").is_file() {
            bail!(
                "{}: workspace {name}: {} holds no nurture.toml (`nurture init` makes one)",
                file.display(),
                dir.display()
            );
        }
        list.push((name, dir));
    }
    Ok((parsed.listen, list))
}

/// Where a store's rows live, to find two workspaces on one store: the SQLite file, or
/// the Postgres database and schema.
fn store_identity(url: &str) -> String {
    if let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        let path = PathBuf::from(rest.split('?').next().unwrap_or(rest));
        let full = match (path.parent(), path.file_name()) {
            (Some(p), Some(f)) => p.canonicalize().map(|p| p.join(f)).unwrap_or(path),
            _ => path,
        };
        return format!("sqlite:{}", full.display());
    }
    let (base, schema) = nurture_server::compose::schema_of(url);
    let schema = schema
        .or_else(|| std::env::var("NURTURE_PG_SCHEMA").ok())
        .unwrap_or_else(|| "nurture".into());
    format!("{base} schema {schema}")
}

/// A workspace opened: its parts, and what its log line says.
struct Opened {
    parts: WorkspaceParts,
    store: String,
    key_from: String,
    _lock: Option<std::fs::File>,
}

/// Opens the workspace `name` of folder `dir`: store, engine (deployed), keys, and its
/// scheduler unless `role` is the API only; its links start with `api_base/w/NAME` unless
/// its `[email] base_url` says otherwise.
async fn open(name: &str, dir: &Path, role: Role, api_base: &str, poll_ms: u64) -> Result<Opened> {
    let (project, store) = crate::commands::open(dir, None).await?;
    let url = crate::commands::store_url(dir, Some(&project), None);
    let lock = match role {
        Role::Api => None,
        _ => crate::commands::scheduler_lock(&url)?,
    };
    let engine =
        Arc::new(Engine::new(project.clone(), store).holding_for(crate::commands::hold()?));
    crate::deploy::deploy_at_start(&engine, "run --workspaces").await?;
    let signer = Arc::new(
        Signer::for_project(dir, project.settings.tracking.as_ref()).context("the tracking key")?,
    );
    let (key, key_from) = crate::commands::api_key(dir, &project)?;
    let scheduler = match role {
        Role::Api => None,
        _ => Some(crate::commands::scheduler_parts(
            dir,
            &project,
            &engine,
            &signer,
            &format!("{api_base}/w/{name}"),
            poll_ms,
        )?),
    };
    Ok(Opened {
        parts: WorkspaceParts {
            name: name.to_string(),
            engine,
            key: Arc::new(key),
            signer,
            scheduler,
        },
        store: url,
        key_from,
        _lock: lock,
    })
}

/// Refuses two workspaces on one store, before any is opened.
fn stores_apart(list: &[(String, PathBuf)]) -> Result<()> {
    let urls: Vec<String> = list
        .iter()
        .map(|(_, dir)| {
            let configured = nurture_core::project::settings(dir).store;
            crate::commands::store_url_from(dir, configured, None)
        })
        .collect();
    for (i, a) in urls.iter().enumerate() {
        for (j, b) in urls.iter().enumerate().skip(i + 1) {
            if store_identity(a) == store_identity(b) {
                bail!(
                    "workspaces {} and {} use the same store ({}): give each its own SQLite file, or its own Postgres schema (`?schema=NAME` in `store`)",
                    list[i].0,
                    list[j].0,
                    nurture_store::redact_url(a)
                );
            }
        }
    }
    Ok(())
}

/// Refuses two workspaces with one server key or one tracking key.
fn check_apart(opened: &[Opened]) -> Result<()> {
    for (i, a) in opened.iter().enumerate() {
        for b in &opened[i + 1..] {
            let (an, bn) = (&a.parts.name, &b.parts.name);
            // (The same key signs the same claims alike: HMAC.)
            let probe = serde_json::json!({"probe": 1});
            if a.parts.signer.sign(&probe) == b.parts.signer.sign(&probe) {
                bail!(
                    "workspaces {an} and {bn} have the same tracking key: the links of one would be valid in the other; unset NURTURE_TRACKING_KEY so each keeps its own in its folder's .nurture/tracking-key"
                );
            }
            if a.parts.key == b.parts.key {
                bail!(
                    "workspaces {an} and {bn} have the same API key ({} and {}): a key must open one workspace only; set `key_env` in each project's [api] to a variable of its own",
                    a.key_from,
                    b.key_from
                );
            }
        }
    }
    Ok(())
}

/// `nurture run|serve|worker --workspaces FILE`.
pub(crate) async fn run(
    file: &Path,
    listen: Option<String>,
    log_json: bool,
    poll_ms: u64,
    role: Role,
) -> Result<ExitCode> {
    crate::commands::init_logs(log_json);
    let (from_file, list) = read(file)?;
    let listen = listen
        .or(from_file)
        .unwrap_or_else(|| "127.0.0.1:8025".into());
    let listener = match role {
        Role::Worker => None,
        _ => Some(
            tokio::net::TcpListener::bind(&listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?,
        ),
    };
    let api_base = match &listener {
        Some(l) => format!("http://{}", l.local_addr()?),
        None => format!("http://{listen}"),
    };
    stores_apart(&list)?;
    let mut opened = Vec::new();
    for (name, dir) in &list {
        let o = open(name, dir, role, &api_base, poll_ms)
            .await
            .with_context(|| format!("workspace {name} ({})", dir.display()))?;
        opened.push(o);
    }
    check_apart(&opened)?;
    let mut parts = Vec::new();
    let mut locks = Vec::new();
    for o in opened {
        tracing::info!(
            workspace = %o.parts.name,
            workflows = o.parts.engine.project.plans.len(),
            store = %nurture_store::redact_url(&o.store),
            api_key = %o.key_from,
            "workspace ready"
        );
        parts.push(o.parts);
        locks.push(o._lock);
    }
    let count = parts.len();
    let running = nurture_server::compose::start_workspaces(parts, listener);
    tracing::info!(
        workspaces = count,
        api = %if role == Role::Worker { "-".to_string() } else { api_base },
        scheduler = role != Role::Api,
        "nurture is running"
    );
    crate::commands::shutdown_signal().await;
    tracing::info!("stopping: finishing the current unit of work");
    running.stop().await;
    drop(locks);
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_store_is_known_under_its_spellings() {
        let a = store_identity("postgres://u@h/db?schema=acme");
        assert_eq!(a, store_identity("postgres://u@h/db?schema=acme"));
        assert_ne!(a, store_identity("postgres://u@h/db?schema=globex"));
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("x")).unwrap();
        let d = tmp.path().display();
        assert_eq!(
            store_identity(&format!("sqlite://{d}/x/../n.db")),
            store_identity(&format!("sqlite://{d}/n.db"))
        );
    }
}
