//! `nurture scoring backtest`: every contact's lead score recomputed over its stored
//! events under two sets of scoring rules, and when each makes it an MQL.
//!
//! A pure function of (events, rules): no store, no runtime, no journal. The MQL mark is
//! the scoring model's top grade (the grade with the highest threshold in `grades`, `hot`
//! in the example project); a contact becomes an MQL at the first instant in
//! `[from, to]` its score reaches that threshold. Events before `from` count towards the
//! score (history), events after `to` do not count. The score is read as the engine reads
//! it ([`nurture_core::aging`]): at `from`, then after each scored event, at the event's
//! time. Deliberate simplifications, documented in docs/marketers.md:
//! - `profile` rules are evaluated once, on the contact as it is stored now, and count
//!   from the start;
//! - an event rule's `if` sees the contact as it is stored now (its score and grade
//!   included), not as it was then;
//! - `score` actions of workflows are not replayed (they are campaign effects, not
//!   scoring rules);
//! - a score that rises by itself (negative points decaying or expiring) is only read
//!   at the next scored event.

use std::collections::HashMap;
use std::sync::Arc;

use nurture_core::aging::Aging;
use nurture_core::eval::{self as ceval, Scope};
use nurture_core::model::Scoring;
use nurture_store::{StoredEvent, Ts};
use serde::Serialize;
use serde_json::Value;

/// Why a backtest cannot run.
#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    /// The rules have no grade to call MQL.
    #[error("the scoring rules have no `grades`: a backtest needs a top grade to call MQL (e.g. `grades: {{ hot: 100, warm: 40 }}`)")]
    NoGrades,
    /// A rule's condition does not compile.
    #[error("a scoring condition does not compile: {0}")]
    Condition(String),
}

/// One rule, compiled.
struct Rule {
    points: i64,
    aging: Aging,
    condition: Option<(String, Arc<cel::Program>)>,
}

/// Scoring rules made ready for a backtest: event rules by event type, profile rules
/// compiled, the MQL grade and its threshold.
pub struct Rules {
    by_kind: HashMap<String, Vec<Rule>>,
    profile: Vec<(i64, Arc<cel::Program>)>,
    /// The top grade's name.
    pub mql_grade: String,
    /// The top grade's threshold.
    pub mql_score: i64,
}

fn compile(src: &str) -> Result<Arc<cel::Program>, BacktestError> {
    nurture_core::expr::compile(src)
        .map(Arc::new)
        .map_err(|e| BacktestError::Condition(format!("`{src}`: {}", e.message)))
}

impl Rules {
    /// Compiles `scoring`.
    pub fn new(scoring: &Scoring) -> Result<Self, BacktestError> {
        let (grade, min) = scoring
            .grades
            .iter()
            .max_by_key(|(_, min)| **min)
            .ok_or(BacktestError::NoGrades)?;
        let mut by_kind: HashMap<String, Vec<Rule>> = HashMap::new();
        let mut profile = Vec::new();
        for r in &scoring.rules {
            if let Some(kind) = &r.event {
                let condition = match &r.condition {
                    Some(c) => Some((c.0.clone(), compile(&c.0)?)),
                    None => None,
                };
                by_kind.entry(kind.clone()).or_default().push(Rule {
                    points: r.points,
                    aging: Aging::of(r),
                    condition,
                });
            } else if let Some(p) = &r.profile {
                profile.push((r.points, compile(&p.0)?));
            }
        }
        Ok(Rules {
            by_kind,
            profile,
            mql_grade: grade.clone(),
            mql_score: *min,
        })
    }
}

/// A running score: points that do not age, decay-only points merged per half-life,
/// expiring points one by one (dropped once expired).
#[derive(Default)]
struct Score {
    fixed: f64,
    decaying: Vec<(u64, Ts, f64)>,
    expiring: Vec<(Aging, Ts, f64)>,
}

impl Score {
    fn add(&mut self, points: i64, aging: Aging, at: Ts) {
        let p = points as f64;
        match (aging.half_life, aging.expires) {
            (None, None) => self.fixed += p,
            (Some(h), None) => match self.decaying.iter_mut().find(|d| d.0 == h) {
                Some(d) => {
                    let later = d.1.max(at);
                    d.2 = aging.value(d.2, d.1, later) + aging.value(p, at, later);
                    d.1 = later;
                }
                None => self.decaying.push((h, at, p)),
            },
            (_, Some(_)) => {
                self.expiring
                    .retain(|(a, t, _)| a.value(1.0, *t, at) != 0.0);
                self.expiring.push((aging, at, p));
            }
        }
    }

    fn at(&self, now: Ts) -> f64 {
        let decaying: f64 = self
            .decaying
            .iter()
            .map(|(h, t, p)| {
                Aging {
                    half_life: Some(*h),
                    expires: None,
                }
                .value(*p, *t, now)
            })
            .sum();
        let expiring: f64 = self
            .expiring
            .iter()
            .map(|(a, t, p)| a.value(*p, *t, now))
            .sum();
        self.fixed + decaying + expiring
    }
}

/// A contact's stored state and events, as a backtest reads them.
pub struct History<'a> {
    /// The contact's id.
    pub contact: &'a str,
    /// The `contact` variable of conditions (`eval::contact_view`), as stored now.
    pub view: &'a Value,
    /// Its events, in any order.
    pub events: &'a [StoredEvent],
}

/// When a contact becomes an MQL under one set of rules, and its score at `to`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Outcome {
    /// The first instant in `[from, to]` its score reaches the MQL threshold.
    pub mql_at: Option<Ts>,
    /// Its score at `to`.
    pub score: f64,
}

/// Scores one contact's history under `rules` over `[from, to]`. Also returns how many
/// of its events were read (those at or before `to`).
pub fn score_history(rules: &Rules, h: &History<'_>, from: Ts, to: Ts) -> (Outcome, usize) {
    let order = in_order(h, to);
    let mut memo = Memo::default();
    score_in_order(rules, &order, bound(h, to).as_ref(), (from, to), &mut memo)
}

/// Results of event conditions already evaluated for one contact: (the event's place in
/// its history, the condition's source) to whether it held. The scope is the same for
/// both sets of rules, so a condition the new rules keep (most what-ifs change points
/// and thresholds) is evaluated once per event, not twice.
type Memo<'r> = HashMap<(usize, &'r str), bool>;

/// The events of `h` a backtest up to `to` reads, in the order it reads them.
fn in_order<'h>(h: &'h History<'_>, to: Ts) -> Vec<&'h StoredEvent> {
    let mut order: Vec<&StoredEvent> = h.events.iter().filter(|e| e.at <= to).collect();
    order.sort_by_key(|e| (e.at, e.seq));
    order
}

/// The scope of `h`'s conditions (its contact, at `to`, no history), made ready once for
/// all of its events and both sets of rules; `None` when the contact does not convert
/// (every condition is then false, as an evaluation error is).
fn bound(h: &History<'_>, to: Ts) -> Option<ceval::Bound> {
    let scope = Scope {
        contact: h.view,
        event: None,
        now: to,
        history: Arc::new(Vec::new()),
        outcome: None,
    };
    ceval::Bound::new(&scope).ok()
}

/// [`score_history`] over events already in order.
fn score_in_order<'r>(
    rules: &'r Rules,
    order: &[&StoredEvent],
    bound: Option<&ceval::Bound>,
    (from, to): (Ts, Ts),
    memo: &mut Memo<'r>,
) -> (Outcome, usize) {
    let mut score = Score::default();
    for (points, program) in &rules.profile {
        if bound.is_some_and(|b| b.eval_bool(program).unwrap_or(false)) {
            score.fixed += *points as f64;
        }
    }
    let threshold = rules.mql_score as f64;
    let mut mql_at = None;
    let mut checked_from = false;
    for (i, e) in order.iter().enumerate() {
        if !checked_from && e.at >= from {
            checked_from = true;
            if score.at(from) >= threshold {
                mql_at = Some(from);
            }
        }
        let Some(list) = rules.by_kind.get(&e.kind) else {
            continue;
        };
        if e.data.get("bot") == Some(&Value::Bool(true)) {
            continue;
        }
        let mut scope = None;
        for r in list {
            if let Some((source, program)) = &r.condition {
                let held = *memo.entry((i, source.as_str())).or_insert_with(|| {
                    let Some(b) = bound else { return false };
                    let scope = scope.get_or_insert_with(|| b.with_event(e));
                    scope.eval_bool(program).unwrap_or(false)
                });
                if !held {
                    continue;
                }
            }
            score.add(r.points, r.aging, e.at);
        }
        if mql_at.is_none() && e.at >= from && score.at(e.at) >= threshold {
            mql_at = Some(e.at);
        }
    }
    if !checked_from && mql_at.is_none() && score.at(from) >= threshold {
        mql_at = Some(from);
    }
    let out = Outcome {
        mql_at,
        score: score.at(to),
    };
    (out, order.len())
}

/// How a contact's MQL moment changes from the current rules to the new ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// An MQL under the new rules only.
    NewlyMql,
    /// An MQL under the current rules only.
    NoLongerMql,
    /// An MQL under both, sooner under the new rules.
    Earlier,
    /// An MQL under both, later under the new rules.
    Later,
    /// An MQL under both, at the same time.
    Same,
    /// An MQL under neither.
    Neither,
}

impl Change {
    /// The change from `current` to `new`.
    pub fn of(current: Option<Ts>, new: Option<Ts>) -> Self {
        match (current, new) {
            (None, Some(_)) => Change::NewlyMql,
            (Some(_), None) => Change::NoLongerMql,
            (Some(a), Some(b)) if b < a => Change::Earlier,
            (Some(a), Some(b)) if b > a => Change::Later,
            (Some(_), Some(_)) => Change::Same,
            (None, None) => Change::Neither,
        }
    }
}

/// One contact's line of a backtest.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The contact's id.
    pub contact: String,
    /// Under the current rules.
    pub current: Outcome,
    /// Under the new rules.
    pub new: Outcome,
    /// The difference.
    pub change: Change,
}

/// A whole backtest.
#[derive(Debug, Clone, Serialize)]
pub struct Backtest {
    /// Every contact that is an MQL under either set of rules, by contact id.
    pub rows: Vec<Row>,
    /// Contacts read.
    pub contacts: usize,
    /// Events read (each counted once, though scored twice).
    pub events: usize,
}

/// Backtests `current` against `new` over `histories`; only contacts that are an MQL under
/// either set of rules get a row.
pub fn backtest(
    current: &Rules,
    new: &Rules,
    histories: &[History<'_>],
    from: Ts,
    to: Ts,
) -> Backtest {
    // Contacts are independent: split over the cores, each part in order.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let part = histories.len().div_ceil(threads.max(1)).max(1);
    let parts: Vec<(Vec<Row>, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = histories
            .chunks(part)
            .map(|chunk| s.spawn(move || backtest_part(current, new, chunk, from, to)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    let events = parts.iter().map(|(_, n)| n).sum();
    let mut rows: Vec<Row> = parts.into_iter().flat_map(|(r, _)| r).collect();
    rows.sort_by(|x, y| x.contact.cmp(&y.contact));
    Backtest {
        rows,
        contacts: histories.len(),
        events,
    }
}

/// [`backtest`]'s rows and events read for some of the histories.
fn backtest_part(
    current: &Rules,
    new: &Rules,
    histories: &[History<'_>],
    from: Ts,
    to: Ts,
) -> (Vec<Row>, usize) {
    let mut rows = Vec::new();
    let mut events = 0;
    for h in histories {
        let order = in_order(h, to);
        let bound = bound(h, to);
        let mut memo = Memo::default();
        let (a, n) = score_in_order(current, &order, bound.as_ref(), (from, to), &mut memo);
        let (b, _) = score_in_order(new, &order, bound.as_ref(), (from, to), &mut memo);
        events += n;
        let change = Change::of(a.mql_at, b.mql_at);
        if change != Change::Neither {
            rows.push(Row {
                contact: h.contact.to_string(),
                current: a,
                new: b,
                change,
            });
        }
    }
    (rows, events)
}
