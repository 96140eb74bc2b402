//! `nurture contacts export` and `nurture contacts erase`: a person's access and erasure
//! requests (GDPR Art. 15 and 17), from the command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use chrono::Utc;

use nurture_engine::Engine;

/// `nurture contacts export ID|EMAIL [--output FILE]`: one JSON document.
pub(crate) async fn export(
    dir: &Path,
    store_flag: Option<String>,
    given: &str,
    output: Option<PathBuf>,
) -> Result<ExitCode> {
    let store = crate::commands::open_read(dir, store_flag).await?;
    let Some(doc) = nurture_engine::privacy::export(&*store, given, Utc::now()).await? else {
        eprintln!("no contact {given}");
        return Ok(ExitCode::from(1));
    };
    let by = crate::deploy::deployed_by("contacts export");
    store
        .audit(Utc::now(), &by, "export", &doc.contact.id, None)
        .await?;
    let text = serde_json::to_string_pretty(&doc)?;
    match output {
        Some(path) if path.as_os_str() != "-" => {
            std::fs::write(&path, text + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "exported {} events, {} runs, {} sends of {} to {}",
                doc.events.len(),
                doc.runs.len(),
                doc.sends.len(),
                doc.contact.id,
                path.display()
            );
        }
        _ => println!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `nurture contacts erase ID|EMAIL --yes`: ends its runs, removes its data.
pub(crate) async fn erase(
    dir: &Path,
    store_flag: Option<String>,
    given: &str,
    yes: bool,
    json_out: bool,
) -> Result<ExitCode> {
    if !yes {
        eprintln!(
            "error: erasing {given} cannot be undone; add --yes to erase it \
             (`nurture contacts export {given}` first keeps a copy)"
        );
        return Ok(ExitCode::from(2));
    }
    let (project, store) = crate::commands::open(dir, store_flag).await?;
    let engine = Engine::new(project, store);
    engine.refresh_versions().await?;
    let by = crate::deploy::deployed_by("contacts erase");
    if let Some(c) = nurture_engine::story::find_contact(&*engine.store, given).await? {
        engine
            .store
            .audit(Utc::now(), &by, "erase", &c.id, None)
            .await?;
    }
    let Some(done) = nurture_server::privacy::erase_person(&engine, given, &by).await? else {
        eprintln!("no contact {given}");
        return Ok(ExitCode::from(1));
    };
    if json_out {
        println!("{}", serde_json::to_string_pretty(&done)?);
        return Ok(ExitCode::SUCCESS);
    }
    let r = &done.report.removed;
    println!(
        "erased: {} runs ended; removed {} events, {} runs, {} journal lines, {} outbox \
         entries ({} queued, cancelled), {} deliveries, {} .eml files; the address stays \
         suppressed as a salted hash",
        done.report.runs_ended,
        r.events,
        r.runs,
        r.journal,
        r.outbox,
        r.queued_cancelled,
        r.deliveries,
        done.eml_files
    );
    Ok(ExitCode::SUCCESS)
}
