//! (h) How fast `nurture check`/`simulate` and `nurture scoring backtest` run: effects per
//! second of the simulator over `nurture check`'s generated population on a project, and
//! events per second of a backtest over a generated history. Neither needs a database.

use std::sync::Arc;
use std::time::Instant;

use chrono::TimeZone;
use serde::Serialize;
use serde_json::json;

use nurture_engine::backtest::{self, History, Rules};
use nurture_engine::check::population;
use nurture_engine::EngineError;
use nurture_store::StoredEvent;

/// (h) The simulator's speed.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SimulateFigures {
    /// The project simulated.
    pub(crate) project: String,
    pub(crate) contacts: usize,
    pub(crate) events: usize,
    pub(crate) effects: usize,
    pub(crate) seconds: f64,
    pub(crate) effects_per_sec: f64,
}

/// (h) The backtest's speed.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct BacktestFigures {
    pub(crate) contacts: usize,
    pub(crate) events: usize,
    pub(crate) seconds: f64,
    pub(crate) events_per_sec: f64,
}

/// Simulates `contacts` generated contacts (up to 8 events each, over 30 days, seed 1:
/// `nurture check`'s population) through the project in `dir`.
pub(crate) async fn simulate(
    dir: &std::path::Path,
    contacts: usize,
) -> Result<SimulateFigures, EngineError> {
    let project = load(dir)?;
    let spec = population_spec(contacts, 30);
    let start = spec.start;
    let (rows, events) = population::generate(&project, &spec);
    let n_events = events.len();
    let until = start + spec.horizon;
    let started = Instant::now();
    let summary =
        nurture_engine::simulate::run(project, &rows, events, Some(start), Some(until), |_| {})
            .await?;
    let seconds = started.elapsed().as_secs_f64();
    Ok(SimulateFigures {
        project: dir.display().to_string(),
        contacts: rows.len(),
        events: n_events,
        effects: summary.effects,
        seconds,
        effects_per_sec: summary.effects as f64 / seconds.max(1e-9),
    })
}

/// `nurture check`'s population (seed 1, up to 8 events a contact) of `contacts`,
/// starting Monday 2 March 2026, 09:00 UTC, over `days`.
pub(crate) fn population_spec(contacts: usize, days: u32) -> population::Spec {
    population::Spec {
        seed: 1,
        contacts,
        max_events: 8,
        start: chrono::Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap(),
        horizon: chrono::Duration::days(i64::from(days)),
    }
}

/// Backtests the scoring rules of the project in `dir` against themselves over `events`
/// generated events (10 per contact, over 90 days, of the types its rules score).
pub(crate) fn backtest(
    dir: &std::path::Path,
    events: usize,
) -> Result<BacktestFigures, EngineError> {
    let project = load(dir)?;
    let rules = Rules::new(&project.scoring).map_err(|e| EngineError::Invalid(e.to_string()))?;
    let from = chrono::Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
    let to = from + chrono::Duration::days(60);
    let kinds: Vec<String> = project
        .scoring
        .rules
        .iter()
        .filter_map(|r| r.event.clone())
        .chain(["page.visited".to_string(), "other.event".to_string()])
        .collect();
    let per = 10;
    let contacts = events.div_ceil(per);
    let views: Vec<(String, serde_json::Value)> = (0..contacts)
        .map(|i| {
            let id = format!("c{i}");
            let view = json!({"id": id, "title": if i % 7 == 0 { "VP Sales" } else { "Engineer" }, "country": "BG", "score": 0, "tags": []});
            (id, view)
        })
        .collect();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let histories_events: Vec<Vec<StoredEvent>> = views
        .iter()
        .enumerate()
        .map(|(i, (id, _))| {
            (0..per)
                .map(|j| {
                    let kind = kinds[(next() % kinds.len() as u64) as usize].clone();
                    let secs = (next() % (90 * 86_400)) as i64;
                    let url = if next() % 4 == 0 { "/pricing" } else { "/blog" };
                    StoredEvent {
                        seq: (i * per + j) as i64,
                        id: format!("e{i}-{j}"),
                        contact: id.clone(),
                        kind,
                        at: from - chrono::Duration::days(30) + chrono::Duration::seconds(secs),
                        data: json!({"url": url}),
                    }
                })
                .collect()
        })
        .collect();
    let histories: Vec<History<'_>> = views
        .iter()
        .zip(&histories_events)
        .map(|((id, view), events)| History {
            contact: id,
            view,
            events,
        })
        .collect();
    let started = Instant::now();
    let result = backtest::backtest(&rules, &rules, &histories, from, to);
    let seconds = started.elapsed().as_secs_f64();
    Ok(BacktestFigures {
        contacts,
        events: result.events,
        seconds,
        events_per_sec: result.events as f64 / seconds.max(1e-9),
    })
}

pub(crate) fn load(
    dir: &std::path::Path,
) -> Result<Arc<nurture_core::project::Project>, EngineError> {
    let loaded = nurture_core::project::load(dir);
    match loaded.project {
        Some(p) if loaded.errors() == 0 => Ok(Arc::new(p)),
        _ => Err(EngineError::Invalid(format!(
            "the project in {} has errors:\n{}",
            dir.display(),
            loaded.render()
        ))),
    }
}

/// The (h) lines of the table.
pub(crate) fn table(s: Option<&SimulateFigures>, b: Option<&BacktestFigures>) -> String {
    let mut out = String::new();
    if let Some(s) = s {
        out.push_str(&format!(
            "\nsimulate ({}, `nurture check` population, 30 days): {} contacts, {} events, {} effects in {:.2} s: {:.0} effects/s\n",
            s.project, s.contacts, s.events, s.effects, s.seconds, s.effects_per_sec
        ));
    }
    if let Some(b) = b {
        out.push_str(&format!(
            "\nscoring backtest (current vs new rules, {} contacts): {} events in {:.2} s: {:.0} events/s\n",
            b.contacts, b.events, b.seconds, b.events_per_sec
        ));
    }
    out
}
