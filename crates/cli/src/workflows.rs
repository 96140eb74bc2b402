//! `nurture workflows list|pause|resume`: each workflow's deployed version, whether it is
//! paused (and by whom and why), and its open runs per step.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use chrono::Utc;
use serde::Serialize;

use nurture_engine::Engine;
use nurture_store::Store;

/// One line of `nurture workflows list`.
#[derive(Serialize)]
struct Row {
    workflow: String,
    /// The latest deployed version, if any.
    version: Option<u32>,
    /// Why it is paused, if it is.
    paused: Option<String>,
    open_runs: i64,
    /// Open runs per step: `(version, step, runs)`.
    steps: Vec<(u32, Option<String>, i64)>,
}

async fn rows(store: &dyn Store, dir: &Path) -> Result<Vec<Row>> {
    let latest = store.latest_versions().await?;
    let controls = store.controls().await?;
    let mut ids: BTreeSet<String> = latest.iter().map(|l| l.workflow.clone()).collect();
    let loaded = nurture_core::project::load(dir);
    let own = loaded
        .project
        .as_ref()
        .map(|p| p.plans.as_slice())
        .unwrap_or_default();
    ids.extend(own.iter().map(|p| p.id().to_string()));
    let mut out = Vec::new();
    for w in ids {
        let counts = store.open_runs(&w).await?;
        let control = controls.iter().find(|c| c.workflow == w && c.paused);
        let file_off = own.iter().any(|p| p.id() == w && !p.workflow.enabled);
        let paused = match (control, file_off) {
            (Some(c), _) => Some(format!(
                "by {} at {}: {}",
                c.by,
                nurture_store::ts_out(c.at),
                c.reason
            )),
            (None, true) => Some("`enabled: false` in the file".into()),
            (None, false) => None,
        };
        out.push(Row {
            version: latest.iter().find(|l| l.workflow == w).map(|l| l.version),
            open_runs: counts.iter().map(|c| c.runs).sum(),
            steps: counts
                .into_iter()
                .map(|c| (c.version, c.step, c.runs))
                .collect(),
            workflow: w,
            paused,
        });
    }
    Ok(out)
}

/// `nurture workflows list`.
pub(crate) async fn list(
    dir: &Path,
    store_flag: Option<String>,
    json_out: bool,
) -> Result<ExitCode> {
    let store = crate::commands::open_read(dir, store_flag).await?;
    let rows = rows(&*store, dir).await?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<28} {:>7} {:<8} {:>9}  OPEN RUNS PER STEP",
        "WORKFLOW", "VERSION", "STATE", "OPEN RUNS"
    );
    for r in &rows {
        let steps: Vec<String> = r
            .steps
            .iter()
            .map(|(v, s, n)| format!("{}@v{v}: {n}", s.as_deref().unwrap_or("-")))
            .collect();
        println!(
            "{:<28} {:>7} {:<8} {:>9}  {}",
            r.workflow,
            r.version.map_or("-".into(), |v| v.to_string()),
            if r.paused.is_some() {
                "paused"
            } else {
                "running"
            },
            r.open_runs,
            steps.join(", ")
        );
        if let Some(why) = &r.paused {
            println!("{:<28} paused {why}", "");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `nurture workflows pause|resume W --reason R`.
pub(crate) async fn set_paused(
    dir: &Path,
    store_flag: Option<String>,
    workflow: &str,
    paused: bool,
    reason: &str,
) -> Result<ExitCode> {
    let (project, store) = crate::commands::open(dir, store_flag).await?;
    let engine = Engine::new(project, store);
    engine.refresh_versions().await?;
    let command = if paused {
        "workflows pause"
    } else {
        "workflows resume"
    };
    let by = crate::deploy::deployed_by(command);
    match engine
        .set_paused(workflow, paused, &by, reason, Utc::now())
        .await
    {
        Ok(_) if paused => {
            println!("paused {workflow}: no enrolments; its runs' timers and sends are held (running processes see it within 2 s)");
            Ok(ExitCode::SUCCESS)
        }
        Ok(_) => {
            let still = engine.is_paused(workflow);
            println!(
                "resumed {workflow}: held timers and sends go out within the schedulers' \
                 hold ({} s unless NURTURE_HOLD_SECS says otherwise)",
                nurture_engine::HOLD.num_seconds()
            );
            if still {
                println!("note: {workflow} stays paused: its file says `enabled: false`");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(nurture_engine::EngineError::Invalid(why)) => {
            eprintln!("error: {why}");
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}
