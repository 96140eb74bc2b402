//! `nurture runs cancel` and `nurture runs start`: what operators do by hand, journaled
//! with who and why.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;
use chrono::Utc;

use nurture_engine::manual::ManualError;
use nurture_engine::Engine;

/// Prints a refusal and gives exit status 1; other errors go up.
fn refused(e: ManualError) -> Result<ExitCode> {
    match e {
        ManualError::Engine(e) => Err(e.into()),
        e => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

/// `nurture runs cancel RUN_ID | --contact C --reason R`.
pub(crate) async fn cancel(
    dir: &Path,
    store_flag: Option<String>,
    run_id: Option<String>,
    contact: Option<String>,
    reason: &str,
) -> Result<ExitCode> {
    let (project, store) = crate::commands::open(dir, store_flag).await?;
    let engine = Engine::new(project, store);
    // What the unit enrols afterwards (segment and score triggers) follows the deployed
    // versions and the pauses, as the scheduler's would.
    engine.refresh_versions().await?;
    let by = crate::deploy::deployed_by("runs cancel");
    let now = Utc::now();
    let done = match (run_id, contact) {
        (Some(id), _) => engine.cancel_run(&id, &by, reason, now).await,
        (None, Some(c)) => {
            let id = match crate::outbox::contact_id(&*engine.store, &c).await? {
                Ok(id) => id,
                Err(code) => return Ok(code),
            };
            engine.cancel_contact(&id, &by, reason, now).await
        }
        (None, None) => anyhow::bail!("give a RUN_ID, or --contact"),
    };
    match done {
        Ok(effects) => {
            let n = effects.iter().filter(|e| e.effect == "exit").count();
            println!("cancelled {n} run(s)");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => refused(e),
    }
}

/// `nurture runs start WORKFLOW --contact C`.
pub(crate) async fn start(
    dir: &Path,
    store_flag: Option<String>,
    workflow: &str,
    contact: &str,
    reason: &str,
) -> Result<ExitCode> {
    let (project, store) = crate::commands::open(dir, store_flag).await?;
    let engine = Engine::new(project, store);
    // New runs use the deployed version, as the scheduler's would.
    engine.refresh_versions().await?;
    let id = match crate::outbox::contact_id(&*engine.store, contact).await? {
        Ok(id) => id,
        Err(code) => return Ok(code),
    };
    let by = crate::deploy::deployed_by("runs start");
    match engine
        .start_run(workflow, &id, &by, reason, Utc::now())
        .await
    {
        Ok(effects) => {
            for e in &effects {
                println!("{}", nurture_engine::simulate::effect_line(e));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => refused(e),
    }
}
