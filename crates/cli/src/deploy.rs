//! `nurture deploy`, `nurture versions`, and the deploy that `run`, `serve` and `worker`
//! make at start.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use chrono::Utc;

use nurture_engine::deploy::{self, DeployError, Deployed};
use nurture_engine::Engine;
use nurture_store::Store;

/// Who deploys: the command, the user and the host.
pub(crate) fn deployed_by(command: &str) -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let host = nurture_server::host_name();
    format!(
        "nurture {command} ({user}@{host}, pid {})",
        std::process::id()
    )
}

/// `nurture deploy`: plans, prints, and unless `dry_run` deploys.
pub(crate) async fn deploy_command(
    dir: &Path,
    store_flag: Option<String>,
    dry_run: bool,
    replay: Option<i64>,
    json_out: bool,
) -> Result<ExitCode> {
    let (project, store) = crate::commands::open(dir, store_flag).await?;
    let engine = Engine::new(project.clone(), store);
    let now = Utc::now();
    let plan = deploy::plan(&*engine.store, &project, &deployed_by("deploy"), now).await?;
    let replays = match replay {
        Some(n) => replay_changes(&engine, &plan, n, json_out).await?,
        None => Vec::new(),
    };
    let refused = !plan.ok() || !plan.behind.is_empty();
    let done = if dry_run || refused {
        None
    } else {
        match deploy::apply(&engine, &plan, now).await {
            Ok(d) => Some(d),
            Err(e @ DeployError::Conflict(_)) => {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(1));
            }
            Err(e) => return Err(e).context("deploy failed"),
        }
    };
    if json_out {
        let v = serde_json::json!({
            "plan": plan,
            "dry_run": dry_run,
            "deployed": done.is_some(),
            "result": done,
            "replay": replays,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{plan}");
        for r in &replays {
            print!("{}", r.render());
        }
        match &done {
            Some(d) => println!("{}", summary(d)),
            None if dry_run => println!("dry run: nothing was changed"),
            None => println!("nothing was deployed"),
        }
    }
    Ok(if refused {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `deploy --dry-run --replay N`: the latest `n` runs of each workflow the deploy
/// changes, replayed on its new version (the project being deployed).
async fn replay_changes(
    engine: &Engine,
    plan: &deploy::DeployPlan,
    n: i64,
    json_out: bool,
) -> Result<Vec<crate::replay::Summary>> {
    let target = nurture_engine::replay::Target {
        project: &engine.project,
        against: Some(&engine.project),
    };
    let mut out = Vec::new();
    for c in plan.changes.iter().filter(|c| c.from.is_some()) {
        let sel = crate::replay::Selection {
            workflow: c.workflow.clone(),
            version: None,
            since: None,
            limit: n,
        };
        let bar = crate::replay::bar(json_out);
        out.push(crate::replay::replay_selection(&*engine.store, &target, &sel, &bar).await?);
    }
    Ok(out)
}

fn summary(d: &Deployed) -> String {
    let versions: Vec<String> = d
        .versions
        .iter()
        .map(|(w, v)| format!("{w} v{v}"))
        .collect();
    format!(
        "deployed: {}; {} run(s) migrated, {} superseded",
        if versions.is_empty() {
            "nothing new".into()
        } else {
            versions.join(", ")
        },
        d.migrated,
        d.superseded
    )
}

/// The deploy `run`, `serve` and `worker` make at start: what their project has that the
/// store has not. Refuses (an error, so the process does not start) when the deploy would
/// be refused; a project older than what is deployed only gets a log line (the process
/// runs the deployed versions). A deploy racing another is planned again.
pub(crate) async fn deploy_at_start(engine: &Arc<Engine>, command: &str) -> Result<()> {
    for attempt in 0.. {
        let now = Utc::now();
        let plan =
            deploy::plan(&*engine.store, &engine.project, &deployed_by(command), now).await?;
        for b in &plan.behind {
            tracing::warn!("{b}; running the deployed version");
        }
        if !plan.ok() {
            eprint!("{plan}");
            anyhow::bail!("refusing to start: the project cannot be deployed as it is (see above; `nurture deploy --dry-run` shows the same)");
        }
        for c in &plan.changes {
            tracing::info!(workflow = %c.workflow, from = ?c.from, to = c.to, policy = c.policy, "deploying");
        }
        match deploy::apply(engine, &plan, now).await {
            Ok(d) => {
                if !d.versions.is_empty() || d.migrated + d.superseded > 0 {
                    tracing::info!("{}", summary(&d));
                }
                return Ok(());
            }
            Err(DeployError::Conflict(w)) if attempt < 3 => {
                tracing::info!(workflow = %w, "another process deployed meanwhile; planning again");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// `nurture versions [WORKFLOW]`: the deployed versions with their open runs.
pub(crate) async fn versions_command(
    dir: &Path,
    store_flag: Option<String>,
    workflow: Option<String>,
    json_out: bool,
) -> Result<ExitCode> {
    let store = crate::commands::open_read(dir, store_flag).await?;
    let rows = version_rows(&*store, workflow.as_deref()).await?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("no versions deployed (`nurture deploy` or `nurture run` deploys the project)");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<28} {:>7} {:>9}  {:<20} {:<12} DEPLOYED BY",
        "WORKFLOW", "VERSION", "OPEN RUNS", "DEPLOYED", "HASH"
    );
    for r in rows {
        println!(
            "{:<28} {:>7} {:>9}  {:<20} {:<12} {}",
            r.workflow,
            format!("{}{}", r.version, if r.latest { "*" } else { "" }),
            r.open_runs,
            nurture_store::ts_out(r.deployed_at),
            &r.hash[..r.hash.len().min(12)],
            r.deployed_by
        );
    }
    println!("* the version new enrolments use");
    Ok(ExitCode::SUCCESS)
}

/// One line of `nurture versions`.
#[derive(serde::Serialize)]
struct VersionRow {
    workflow: String,
    version: u32,
    latest: bool,
    open_runs: i64,
    hash: String,
    deployed_at: nurture_store::Ts,
    deployed_by: String,
}

async fn version_rows(store: &dyn Store, workflow: Option<&str>) -> Result<Vec<VersionRow>> {
    let versions = store.workflow_versions(workflow).await?;
    let latest = store.latest_versions().await?;
    let mut out = Vec::new();
    let mut counts: std::collections::HashMap<String, Vec<nurture_store::OpenRunCount>> =
        std::collections::HashMap::new();
    for v in versions {
        if !counts.contains_key(&v.workflow) {
            counts.insert(v.workflow.clone(), store.open_runs(&v.workflow).await?);
        }
        let open_runs = counts[&v.workflow]
            .iter()
            .filter(|c| c.version == v.version)
            .map(|c| c.runs)
            .sum();
        out.push(VersionRow {
            latest: latest
                .iter()
                .any(|l| l.workflow == v.workflow && l.version == v.version),
            workflow: v.workflow,
            version: v.version,
            open_runs,
            hash: v.hash,
            deployed_at: v.deployed_at,
            deployed_by: v.deployed_by,
        });
    }
    Ok(out)
}
