//! (c)'s stages: where each event's time went between its send and its webhook, from
//! the rows a Postgres run leaves (read before its schema is dropped).
//!
//! Three stages, from instants on one wall clock (the bench and the engine are one
//! process):
//! - **api**: from when the event was due to the start of the ingestion batch that stored
//!   it (`events.at`): the client's request, the API's parsing, the wait for the
//!   ingestion task;
//! - **stored**: from there to the start of the engine pass that applied it
//!   (`runs.started_at`): the ingestion's commit, the wake-up, the engine's previous pass;
//! - **effect**: from there to the receiver's arrival: the engine's commit, the hand-off
//!   and the webhook's request.

use std::time::Instant;

use serde::Serialize;

use nurture_engine::EngineError;
use nurture_store::Ts;

use super::median_of;

/// Milliseconds in each stage.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct StageMs {
    pub(crate) api: f64,
    pub(crate) stored: f64,
    pub(crate) effect: f64,
}

/// One run's stages: the median event's, and the mean of the slowest 1 % (end to end).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Stages {
    pub(crate) events: usize,
    pub(crate) median: StageMs,
    pub(crate) slowest_1pct: StageMs,
}

/// What the run measured on its own clock: when it started (instant and wall clock),
/// each event's due instant, each effect's arrival by event number, and the warm-up's
/// count (not measured).
pub(crate) struct Clock<'a> {
    pub(crate) started: Instant,
    pub(crate) wall: Ts,
    pub(crate) due: &'a [Instant],
    pub(crate) arrivals: &'a [(usize, Instant)],
    pub(crate) warm: usize,
}

impl Clock<'_> {
    fn wall_of(&self, at: Instant) -> Ts {
        let since = at.saturating_duration_since(self.started);
        self.wall + chrono::Duration::from_std(since).unwrap_or_default()
    }
}

/// Reads the stored and applied instants of the run's events (ids `{prefix}{n}`) from
/// `schema` and measures the stages of every measured event that arrived.
pub(crate) async fn measure(
    pool: &sqlx::PgPool,
    schema: &str,
    prefix: &str,
    clock: &Clock<'_>,
) -> Result<Stages, EngineError> {
    let rows: Vec<(i64, Ts, Ts)> = sqlx::query_as(&format!(
        "SELECT (o.payload->'body'->>'n')::bigint, e.at, r.started_at \
         FROM \"{schema}\".outbox o \
         JOIN \"{schema}\".runs r ON r.id = o.run_id \
         JOIN \"{schema}\".events e ON e.id = $1 || (o.payload->'body'->>'n') \
         WHERE o.kind = 'webhook'"
    ))
    .bind(prefix)
    .fetch_all(pool)
    .await
    .map_err(|e| EngineError::Store(e.into()))?;
    let mut stored = vec![None; clock.due.len()];
    for (n, at, applied) in rows {
        if let Some(slot) = stored.get_mut(n as usize) {
            *slot = Some((at, applied));
        }
    }
    let mut each: Vec<(f64, StageMs)> = Vec::new();
    for &(n, arrived) in clock.arrivals {
        let (Some(&due), Some(Some((at, applied)))) = (clock.due.get(n), stored.get(n)) else {
            continue;
        };
        if n < clock.warm {
            continue;
        }
        let (due, arrived) = (clock.wall_of(due), clock.wall_of(arrived));
        let ms = |a: Ts, b: Ts| (b - a).num_microseconds().unwrap_or(0) as f64 / 1000.0;
        let stage = StageMs {
            api: ms(due, *at),
            stored: ms(*at, *applied),
            effect: ms(*applied, arrived),
        };
        each.push((ms(due, arrived), stage));
    }
    Ok(summarise(each))
}

/// The median of each stage, and each stage's mean over the slowest 1 % of the events.
fn summarise(mut each: Vec<(f64, StageMs)>) -> Stages {
    let events = each.len();
    if events == 0 {
        return Stages::default();
    }
    let median = StageMs {
        api: median_of(&each, |(_, s)| s.api),
        stored: median_of(&each, |(_, s)| s.stored),
        effect: median_of(&each, |(_, s)| s.effect),
    };
    each.sort_by(|a, b| b.0.total_cmp(&a.0));
    let tail = &each[..events.div_ceil(100)];
    let mean =
        |f: fn(&StageMs) -> f64| tail.iter().map(|(_, s)| f(s)).sum::<f64>() / tail.len() as f64;
    Stages {
        events,
        median,
        slowest_1pct: StageMs {
            api: mean(|s| s.api),
            stored: mean(|s| s.stored),
            effect: mean(|s| s.effect),
        },
    }
}

/// The table's line for `runs`' stages (medians over the runs that have them).
pub(crate) fn line(runs: &[Option<Stages>]) -> Option<String> {
    let got: Vec<&Stages> = runs.iter().flatten().filter(|s| s.events > 0).collect();
    if got.is_empty() {
        return None;
    }
    let med = |f: fn(&Stages) -> f64| median_of(&got, |s| f(s));
    Some(format!(
        "    where the time went (medians of {} runs; api = send to stored, stored = to the engine's pass, effect = to the webhook received): median event {:.1} / {:.1} / {:.1} ms; slowest 1 % {:.1} / {:.1} / {:.1} ms\n",
        got.len(),
        med(|s| s.median.api),
        med(|s| s.median.stored),
        med(|s| s.median.effect),
        med(|s| s.slowest_1pct.api),
        med(|s| s.slowest_1pct.stored),
        med(|s| s.slowest_1pct.effect),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(api: f64, stored: f64, effect: f64) -> (f64, StageMs) {
        (
            api + stored + effect,
            StageMs {
                api,
                stored,
                effect,
            },
        )
    }

    #[test]
    fn the_slowest_one_percent_is_averaged_by_stage() {
        let mut each: Vec<_> = (0..198).map(|_| s(1.0, 2.0, 3.0)).collect();
        each.push(s(1.0, 40.0, 3.0));
        each.push(s(1.0, 2.0, 60.0));
        let st = summarise(each);
        assert_eq!(st.events, 200);
        assert_eq!(
            (st.median.api, st.median.stored, st.median.effect),
            (1.0, 2.0, 3.0)
        );
        let t = st.slowest_1pct;
        assert_eq!((t.api, t.stored, t.effect), (1.0, 21.0, 31.5));
    }
}
