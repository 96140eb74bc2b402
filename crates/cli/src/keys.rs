//! `nurture keys create|list|revoke` (API keys with scopes, stored hashed) and
//! `nurture audit` (who exported or erased a person, and when).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Result};
use chrono::Utc;

use nurture_store::keys::Scope;

/// `nurture keys create NAME --scope S...`: prints the key once.
pub(crate) async fn create(
    dir: &Path,
    store_flag: Option<String>,
    name: &str,
    scopes: &[String],
    json_out: bool,
) -> Result<ExitCode> {
    let mut parsed = Vec::new();
    for s in scopes {
        match Scope::parse(s) {
            Some(x) => parsed.push(x),
            None => bail!(
                "unknown scope `{s}`: use {}",
                Scope::ALL.map(Scope::as_str).join(", ")
            ),
        }
    }
    if parsed.is_empty() {
        bail!("give at least one --scope");
    }
    if name.trim().is_empty() || name.len() > 200 {
        bail!("give the key a name of 1 to 200 characters");
    }
    let store = crate::commands::open_read(dir, store_flag).await?;
    let (key, secret) = nurture_server::auth::create_key(&*store, name, parsed).await?;
    if json_out {
        let v = serde_json::json!({"key": key, "secret": secret});
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{secret}");
        eprintln!(
            "created {} `{}` with {}; the key above is shown this once",
            key.id,
            key.name,
            scope_list(&key.scopes)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn scope_list(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `nurture keys list`.
pub(crate) async fn list(
    dir: &Path,
    store_flag: Option<String>,
    json_out: bool,
) -> Result<ExitCode> {
    let store = crate::commands::open_read(dir, store_flag).await?;
    let keys = store.keys().await?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&keys)?);
        return Ok(ExitCode::SUCCESS);
    }
    for k in &keys {
        let state = match k.revoked_at {
            Some(t) => format!("revoked {}", nurture_store::ts_out(t)),
            None => "live".to_string(),
        };
        println!(
            "{}  {:<20} {:<40} created {}  {state}",
            k.id,
            k.name,
            scope_list(&k.scopes),
            nurture_store::ts_out(k.created_at)
        );
    }
    if keys.is_empty() {
        println!("no keys; `nurture keys create NAME --scope ...` makes one");
    }
    Ok(ExitCode::SUCCESS)
}

/// `nurture keys revoke ID`: works at once, in every process.
pub(crate) async fn revoke(dir: &Path, store_flag: Option<String>, id: &str) -> Result<ExitCode> {
    let store = crate::commands::open_read(dir, store_flag).await?;
    if store.revoke_key(id, Utc::now()).await? {
        println!("revoked {id}");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("no live key {id}; `nurture keys list` shows them");
        Ok(ExitCode::from(1))
    }
}

/// `nurture audit [--limit N]`.
pub(crate) async fn audit(
    dir: &Path,
    store_flag: Option<String>,
    limit: i64,
    json_out: bool,
) -> Result<ExitCode> {
    let store = crate::commands::open_read(dir, store_flag).await?;
    let log = store.audit_log(limit).await?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&log)?);
        return Ok(ExitCode::SUCCESS);
    }
    for a in &log {
        println!(
            "{}  {:<7} by {}  subject {}  from {}",
            nurture_store::ts_out(a.at),
            a.action,
            a.by,
            &a.subject[..16.min(a.subject.len())],
            a.ip.as_deref().unwrap_or("-")
        );
    }
    Ok(ExitCode::SUCCESS)
}
