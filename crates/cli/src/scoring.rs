//! `nurture scoring backtest`: see `nurture_engine::backtest`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, Result};
use nurture_engine::backtest::{self, Backtest, History, Rules};
use nurture_store::{ts_out, Ts};

/// The arguments of `nurture scoring backtest`.
#[derive(clap::Args)]
pub(crate) struct BacktestArgs {
    /// The project folder (default: the nearest folder holding nurture.toml, from here up).
    pub(crate) dir: Option<PathBuf>,
    /// The new rules to compare with the project's scoring.yaml (default: the same).
    #[arg(long)]
    pub(crate) scoring: Option<PathBuf>,
    /// From this time: RFC 3339 or a date (2026-03-01).
    #[arg(long, value_parser = crate::parse_when)]
    pub(crate) from: Ts,
    /// Up to this time (same forms).
    #[arg(long, value_parser = crate::parse_when)]
    pub(crate) to: Ts,
    /// Store URL (default: `store` in nurture.toml, else sqlite://DIR/nurture.db).
    #[arg(long)]
    pub(crate) store: Option<String>,
    /// Output: `human`, `json` (one document, with `events` and `seconds`) or `csv`.
    #[arg(long, value_enum, default_value_t = crate::report::ReportFormat::Human)]
    pub(crate) format: crate::report::ReportFormat,
}

/// The new rules: a scoring.yaml validated like the project's own, in a scratch project.
fn new_rules(path: &std::path::Path) -> Result<nurture_core::model::Scoring> {
    let text = crate::input::read_limited(path, 1 << 20)?
        .with_context(|| format!("{} is over 1 MiB", path.display()))?;
    let dir = crate::bench::tempfile_dir()?;
    std::fs::write(dir.join("scoring.yaml"), text)?;
    let loaded = nurture_core::project::load(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    if loaded.errors() > 0 {
        anyhow::bail!("{}: {}", path.display(), loaded.render());
    }
    Ok(loaded.project.context("no project")?.scoring.clone())
}

pub(crate) async fn run(a: BacktestArgs) -> Result<ExitCode> {
    let dir = crate::project_dir(a.dir)?;
    let (project, store) = crate::commands::open(&dir, a.store).await?;
    let new = match &a.scoring {
        Some(p) => new_rules(p)?,
        None => project.scoring.clone(),
    };
    let current = Rules::new(&project.scoring)?;
    let new = Rules::new(&new)?;
    let epoch = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
    let mut loaded = Vec::new();
    for id in store.contact_ids().await? {
        let Some(c) = store.contact(&id).await? else {
            continue;
        };
        let view = nurture_engine::eval::contact_view_at(&c, &project.scoring, a.to);
        let events = store.contact_events(&id, epoch).await?;
        loaded.push((id, view, events));
    }
    let histories: Vec<History<'_>> = loaded
        .iter()
        .map(|(id, view, events)| History {
            contact: id,
            view,
            events,
        })
        .collect();
    let started = Instant::now();
    let result = backtest::backtest(&current, &new, &histories, a.from, a.to);
    let seconds = started.elapsed().as_secs_f64();
    print!("{}", render(&result, &current, seconds, a.format)?);
    Ok(ExitCode::SUCCESS)
}

fn when(t: Option<Ts>) -> String {
    t.map_or_else(String::new, ts_out)
}

fn change(c: backtest::Change) -> String {
    serde_json::to_value(c)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn render(
    b: &Backtest,
    rules: &Rules,
    seconds: f64,
    format: crate::report::ReportFormat,
) -> Result<String> {
    use crate::report::ReportFormat as F;
    Ok(match format {
        F::Json => {
            let mut v = serde_json::to_value(b)?;
            v["mql_grade"] = rules.mql_grade.clone().into();
            v["mql_score"] = rules.mql_score.into();
            v["seconds"] = seconds.into();
            serde_json::to_string_pretty(&v)? + "\n"
        }
        F::Csv => {
            let mut out =
                String::from("contact,current_mql_at,new_mql_at,change,current_score,new_score\n");
            for r in &b.rows {
                out += &format!(
                    "{},{},{},{},{},{}\n",
                    csv_field(&r.contact),
                    when(r.current.mql_at),
                    when(r.new.mql_at),
                    change(r.change),
                    nurture_core::aging::score_json(r.current.score),
                    nurture_core::aging::score_json(r.new.score)
                );
            }
            out
        }
        F::Human => {
            let p = nurture_engine::explain::printable;
            let mut out = format!(
                "MQL = grade `{}` (score >= {}); {} contacts, {} events in {:.3}s\n",
                p(&rules.mql_grade),
                rules.mql_score,
                b.contacts,
                b.events,
                seconds
            );
            for r in &b.rows {
                out += &format!(
                    "  {:<24} {:<14} current {:<20} new {}\n",
                    p(&r.contact),
                    change(r.change),
                    when(r.current.mql_at),
                    when(r.new.mql_at)
                );
            }
            out
        }
    })
}

/// A CSV field, quoted when it must be, and neutered when a spreadsheet would run it.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}
