//! `nurture runs replay`, `nurture runs export`, `nurture replay` (bulk), and the replay
//! of `deploy --dry-run --replay N`: see `nurture_engine::replay`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context as _, Result};
use futures::StreamExt;
use serde::Serialize;

use nurture_core::project::Project;
use nurture_engine::replay::{self, Recording, ReplayError, Report, Target, Verdict};
use nurture_store::{RunFilter, Store, Ts};

/// The largest recording `runs replay --file` reads (64 MiB): a run's journal, its
/// workflow source (at most 1 MiB when deployed) and its events.
const MAX_FILE: u64 = 64 << 20;

/// The project in `dir` for a replay `--against` (must be valid).
fn against_project(dir: Option<&Path>) -> Result<Option<Project>> {
    let Some(dir) = dir else { return Ok(None) };
    match crate::load_valid(dir) {
        Ok(p) => Ok(Some((*p).clone())),
        Err(_) => Err(crate::InvalidProject.into()),
    }
}

/// `nurture runs replay RUN_ID` (or `--file F`, an exported recording).
pub(crate) async fn replay_run(
    dir: &Path,
    store_flag: Option<String>,
    id: Option<&str>,
    file: Option<&Path>,
    against: Option<&Path>,
    json_out: bool,
) -> Result<ExitCode> {
    let (project, recording) = match file {
        Some(f) => {
            let project = crate::load_valid(dir).map_err(|_| crate::InvalidProject)?;
            let Some(text) = crate::input::read_limited(f, MAX_FILE)? else {
                eprintln!(
                    "error: {} is over {MAX_FILE} bytes: a recording is at most that",
                    crate::input::shown(f)
                );
                return Ok(ExitCode::from(1));
            };
            match Recording::from_json(&text) {
                Ok(r) => (project, r),
                Err(e) => {
                    eprintln!("error: {}: {e}", crate::input::shown(f));
                    return Ok(ExitCode::from(1));
                }
            }
        }
        None => {
            let id = id.context("give a run id or --file")?;
            let (project, store) = crate::commands::open(dir, store_flag).await?;
            match load(&*store, &project, id).await {
                Ok(r) => (project, r),
                Err(code) => return Ok(code),
            }
        }
    };
    let against = against_project(against)?;
    let target = Target {
        project: &project,
        against: against.as_ref(),
    };
    let reports = replay::replay(&target, std::slice::from_ref(&recording), |_| {}).await?;
    let report = &reports[0];
    if json_out {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        println!("{}", report.render());
    }
    Ok(exit(report.identical()))
}

/// Run `id`'s recording; or, said on stderr, why there is none (exit 1): no such run, or
/// one that cannot be replayed or read.
async fn load(store: &dyn Store, project: &Project, id: &str) -> Result<Recording, ExitCode> {
    match Recording::load(store, project, id).await {
        Ok(r) => Ok(r),
        Err(ReplayError::NotFound(_)) => Err(crate::commands::no_run(id)),
        Err(e) => {
            eprintln!("error: {e}");
            Err(ExitCode::from(1))
        }
    }
}

fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `nurture runs export RUN_ID`: the run's recording as one JSON file (or stdout).
pub(crate) async fn export_run(
    dir: &Path,
    store_flag: Option<String>,
    id: &str,
    out: Option<&Path>,
) -> Result<ExitCode> {
    let (project, store) = crate::commands::open(dir, store_flag).await?;
    let recording = match load(&*store, &project, id).await {
        Ok(r) => r,
        Err(code) => return Ok(code),
    };
    let text = serde_json::to_string_pretty(&recording)? + "\n";
    match out {
        Some(path) => {
            std::fs::write(path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!(
                "wrote {} ({} journal entries, {} events)",
                path.display(),
                recording.journal.len(),
                recording.events.len()
            );
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Which runs a bulk replay takes.
pub(crate) struct Selection {
    /// The workflow.
    pub workflow: String,
    /// Only runs pinned to this version.
    pub version: Option<u32>,
    /// Only runs started at or after this.
    pub since: Option<Ts>,
    /// At most this many (the latest).
    pub limit: i64,
}

/// What a bulk replay found.
#[derive(Debug, Serialize)]
pub(crate) struct Summary {
    pub workflow: String,
    pub runs: usize,
    pub entries: usize,
    pub seconds: f64,
    pub entries_per_second: f64,
    pub identical: usize,
    pub diverged: usize,
    pub failed: usize,
    /// Diverged runs per step of first divergence (`-` when not at a step).
    pub diverged_at: BTreeMap<String, usize>,
    /// Failed runs per reason.
    pub failed_because: BTreeMap<String, usize>,
    pub reports: Vec<Report>,
}

impl Summary {
    fn of(workflow: &str, reports: Vec<Report>, entries: usize, seconds: f64) -> Summary {
        let mut s = Summary {
            workflow: workflow.to_string(),
            runs: reports.len(),
            entries,
            seconds,
            entries_per_second: entries as f64 / seconds.max(1e-9),
            identical: 0,
            diverged: 0,
            failed: 0,
            diverged_at: BTreeMap::new(),
            failed_because: BTreeMap::new(),
            reports: Vec::new(),
        };
        for r in &reports {
            match &r.verdict {
                Verdict::Identical { .. } => s.identical += 1,
                Verdict::Diverged { step, .. } => {
                    s.diverged += 1;
                    let at = step.clone().unwrap_or_else(|| "-".into());
                    *s.diverged_at.entry(at).or_default() += 1;
                }
                Verdict::Failed { reason } => {
                    s.failed += 1;
                    *s.failed_because.entry(reason.clone()).or_default() += 1;
                }
            }
        }
        s.reports = reports.into_iter().filter(|r| !r.identical()).collect();
        s
    }

    /// Whether every run replayed identical.
    pub(crate) fn ok(&self) -> bool {
        self.diverged == 0 && self.failed == 0
    }

    /// The summary for people: counts, where runs diverged, and the first few.
    pub(crate) fn render(&self) -> String {
        let p = nurture_engine::explain::printable;
        let mut out = format!(
            "replayed {} run(s) of {} ({} journal entries) in {:.2} s ({:.0} entries/s)\n  identical {}\n  diverged  {}\n  failed    {}\n",
            self.runs,
            self.workflow,
            self.entries,
            self.seconds,
            self.entries_per_second,
            self.identical,
            self.diverged,
            self.failed
        );
        for (step, n) in &self.diverged_at {
            out += &format!("  diverged first at {}: {n}\n", p(step));
        }
        for (why, n) in &self.failed_because {
            out += &format!("  failed ({n}): {}\n", p(why));
        }
        for r in self.reports.iter().take(5) {
            out += &r.render();
            out += "\n";
        }
        if self.reports.len() > 5 {
            out += &format!(
                "... and {} more (--format json lists them all)\n",
                self.reports.len() - 5
            );
        }
        out
    }
}

/// Loads the selected runs' recordings and replays them; the bar (if any) shows both.
pub(crate) async fn replay_selection(
    store: &dyn Store,
    target: &Target<'_>,
    sel: &Selection,
    bar: &indicatif::ProgressBar,
) -> Result<Summary> {
    let filter = RunFilter {
        workflow: Some(sel.workflow.clone()),
        limit: sel.limit.max(0),
        ..Default::default()
    };
    let runs: Vec<_> = store
        .list_runs(&filter)
        .await?
        .into_iter()
        .filter(|r| sel.version.is_none_or(|v| r.workflow_version == v))
        .filter(|r| sel.since.is_none_or(|t| r.started_at >= t))
        .collect();
    bar.set_length(runs.len() as u64 * 2);
    bar.set_message("loading");
    let mut recordings = Vec::with_capacity(runs.len());
    let mut failed = Vec::new();
    // Several at once: each is four small reads.
    let mut loads = futures::stream::iter(&runs)
        .map(|run| async move { (run, Recording::load(store, target.project, &run.id).await) })
        .buffered(16);
    while let Some((run, loaded)) = loads.next().await {
        match loaded {
            Ok(r) => recordings.push(r),
            Err(e @ (ReplayError::NoInput(_) | ReplayError::NoVersion { .. })) => {
                failed.push(Report::of(
                    run,
                    Verdict::Failed {
                        reason: e.to_string(),
                    },
                ))
            }
            Err(e) => return Err(e.into()),
        }
        bar.inc(1);
    }
    bar.set_message("replaying");
    let entries: usize = recordings.iter().map(|r| r.journal.len()).sum();
    let started = Instant::now();
    let base = bar.position();
    let mut reports =
        replay::replay(target, &recordings, |n| bar.set_position(base + n as u64)).await?;
    let seconds = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    reports.extend(failed);
    Ok(Summary::of(&sel.workflow, reports, entries, seconds))
}

/// A progress bar on stderr for people (hidden for JSON and when stderr is no terminal).
pub(crate) fn bar(json_out: bool) -> indicatif::ProgressBar {
    if json_out {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:9} {bar:40} {pos}/{len} ({per_sec}, eta {eta})",
        )
        .expect("template"),
    );
    bar
}

/// `nurture replay --workflow W`.
pub(crate) async fn replay_bulk(
    dir: &Path,
    store_flag: Option<String>,
    sel: Selection,
    against: Option<PathBuf>,
    json_out: bool,
) -> Result<ExitCode> {
    let (project, store) = crate::commands::open(dir, store_flag).await?;
    let against = against_project(against.as_deref())?;
    let target = Target {
        project: &project,
        against: against.as_ref(),
    };
    let summary = replay_selection(&*store, &target, &sel, &bar(json_out)).await?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", summary.render());
    }
    Ok(exit(summary.ok()))
}
