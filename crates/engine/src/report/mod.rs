//! Campaign reports, read from the counts each commit keeps ([`nurture_store::counts`]):
//! a workflow's funnel on its steps and edges, its exits and goal conversion, its emails'
//! engagement, its A/B splits with significance, and the lead funnel of lifecycle stages.
//! Nothing here scans runs or the journal: a report reads the hourly count rows of its
//! period, and the gauge of open runs per step (who is waiting now).

pub mod held;
pub mod stats;

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Datelike, DurationRound, TimeDelta};
use serde::Serialize;

use nurture_core::model::StepKind;
use nurture_core::plan::{Edge, Plan, PlanNode};
use nurture_store::counts::{CountFilter, CountRow, GAUGE_HOUR};
use nurture_store::{Store, StoreError, Ts};

use stats::{Arm, Comparison};

/// What a report covers.
#[derive(Debug, Clone)]
pub struct Options {
    /// Only this version (all versions when `None`).
    pub version: Option<u32>,
    /// Counts from this time on (by hour).
    pub since: Option<Ts>,
    /// Counts before this time (by hour).
    pub until: Option<Ts>,
    /// Also per day or week.
    pub by: Option<Period>,
    /// Contacts each variant needs before a split can name a winner.
    pub min_sample: i64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            version: None,
            since: None,
            until: None,
            by: None,
            min_sample: DEFAULT_MIN_SAMPLE,
        }
    }
}

/// The default minimum of contacts per variant before a winner is named.
pub const DEFAULT_MIN_SAMPLE: i64 = 100;

/// A period of the `by` breakdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// Calendar days (UTC).
    Day,
    /// ISO weeks (from Monday, UTC).
    Week,
}

impl std::str::FromStr for Period {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "day" => Ok(Period::Day),
            "week" => Ok(Period::Week),
            _ => Err(format!("`{s}` is not a period: use day or week")),
        }
    }
}

impl Period {
    /// The start of the period `t` is in.
    pub fn start(self, t: Ts) -> Ts {
        let day = t.duration_trunc(TimeDelta::days(1)).unwrap_or(t);
        match self {
            Period::Day => day,
            Period::Week => day - TimeDelta::days(day.weekday().num_days_from_monday() as i64),
        }
    }
}

/// One workflow's report.
#[derive(Debug, Clone, Serialize)]
pub struct WorkflowReport {
    /// The workflow.
    pub workflow: String,
    /// The version reported, or all (`None`).
    pub version: Option<u32>,
    /// Contacts that entered.
    pub entered: i64,
    /// The funnel: each step with the runs that began it, wait there now, and the edges
    /// they left by.
    pub steps: Vec<StepReport>,
    /// Runs ended, by reason (`end`, `goal`, `exit_if`, `superseded`, `error`...).
    pub exits: BTreeMap<String, i64>,
    /// Goal conversions.
    pub goal: GoalReport,
    /// Each email step's sends and engagement.
    pub emails: Vec<EmailReport>,
    /// Each split's variants and their comparison.
    pub splits: Vec<SplitReport>,
    /// Per day or week, when asked for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub periods: Vec<PeriodReport>,
}

/// One step of the funnel.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// The step's id.
    pub step: String,
    /// Its kind (`send_email`, `wait_for`...), `?` for a step no longer in the workflow.
    pub kind: String,
    /// Runs that began it.
    pub passed: i64,
    /// Open runs at it now (every version when the report is for all).
    pub waiting: i64,
    /// The edges out of it that runs took.
    pub edges: Vec<EdgeReport>,
}

/// An edge out of a step.
#[derive(Debug, Clone, Serialize)]
pub struct EdgeReport {
    /// `0`, `1`.. (a branch's arms), `else`, a split's variant, `event`, `timeout`.
    pub label: String,
    /// The step it leads to (`end` for the end), if the workflow still has the edge.
    pub to: Option<String>,
    /// Runs that took it.
    pub runs: i64,
}

/// Goal conversions.
#[derive(Debug, Clone, Serialize)]
pub struct GoalReport {
    /// Runs that reached the goal.
    pub conversions: i64,
    /// Of the contacts that entered (0 when none did).
    pub rate: f64,
    /// Median minutes from entering to the goal.
    pub median_minutes: Option<i64>,
}

/// One email step.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EmailReport {
    /// The step.
    pub step: String,
    /// Its template.
    pub template: String,
    /// Queued by the step.
    pub queued: i64,
    /// Delivered to the mail server.
    pub sent: i64,
    /// Failed for good.
    pub failed: i64,
    /// Held back at least once, by rule (`quiet_hours`, `frequency_cap`, `rate_limit`).
    pub deferred: BTreeMap<String, i64>,
    /// Not sent, by rule (`unsubscribed`, `no_consent`, `suppressed`...).
    pub skipped: BTreeMap<String, i64>,
    /// Hard bounces.
    pub bounced_hard: i64,
    /// Soft bounces.
    pub bounced_soft: i64,
    /// Spam complaints.
    pub complaints: i64,
    /// People who opened (unique per message; bot-flagged opens apart).
    pub opens: i64,
    /// Opens flagged as a scanner's or prefetcher's.
    pub opens_bot: i64,
    /// People who clicked (unique per message).
    pub clicks: i64,
    /// Clicks flagged as a scanner's.
    pub clicks_bot: i64,
    /// Unsubscribes from this email.
    pub unsubscribes: i64,
    /// The rates (of sent; click-to-open of opens).
    pub rates: EmailRates,
}

/// The rates of an email step.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EmailRates {
    /// Unique opens / sent.
    pub open: f64,
    /// Unique clicks / sent.
    pub click: f64,
    /// Unique clicks / unique opens.
    pub click_to_open: f64,
    /// Unsubscribes / sent.
    pub unsubscribe: f64,
    /// Bounces (hard and soft) / sent.
    pub bounce: f64,
}

/// One split step.
#[derive(Debug, Clone, Serialize)]
pub struct SplitReport {
    /// The step.
    pub step: String,
    /// Its variants, in the workflow's order.
    pub variants: Vec<VariantReport>,
    /// Each variant after the first against the first.
    pub comparisons: Vec<VariantComparison>,
    /// The winner, once significant with enough contacts.
    pub winner: Option<String>,
    /// In words: the winner, or why there is none yet.
    pub verdict: String,
}

/// One variant.
#[derive(Debug, Clone, Serialize)]
pub struct VariantReport {
    /// Its name.
    pub name: String,
    /// Contacts that entered it.
    pub entered: i64,
    /// Of them, those that reached the goal.
    pub conversions: i64,
    /// conversions / entered.
    pub rate: f64,
    /// Unique opens of the emails only this variant sends.
    pub opens: i64,
    /// Unique clicks of those emails.
    pub clicks: i64,
}

impl VariantReport {
    /// Its contacts and conversions, for a test.
    fn arm(&self) -> Arm {
        Arm {
            n: self.entered,
            k: self.conversions,
        }
    }
}

/// A variant against the first.
#[derive(Debug, Clone, Serialize)]
pub struct VariantComparison {
    /// The first variant.
    pub control: String,
    /// The variant compared.
    pub variant: String,
    /// The test; `None` when it cannot say anything yet.
    pub test: Option<Comparison>,
}

/// One day or week.
#[derive(Debug, Clone, Serialize)]
pub struct PeriodReport {
    /// Its start.
    pub start: Ts,
    /// Contacts that entered.
    pub entered: i64,
    /// Goal conversions.
    pub conversions: i64,
    /// Emails sent.
    pub sent: i64,
    /// Unique opens.
    pub opens: i64,
    /// Unique clicks.
    pub clicks: i64,
}

/// The report of `plan`'s workflow over `o`'s period.
pub async fn workflow(
    store: &dyn Store,
    plan: &Plan,
    o: &Options,
) -> Result<WorkflowReport, StoreError> {
    let filter = CountFilter {
        workflow: Some(plan.id().to_string()),
        version: o.version,
        since: o.since,
        until: o.until,
        whole: o.by.is_none(),
    };
    let rows = store.counts(&filter).await?;
    let gauges = CountFilter {
        since: None,
        until: Some(GAUGE_HOUR + TimeDelta::hours(1)),
        whole: true,
        ..filter
    };
    let mut waiting_at: BTreeMap<String, i64> = BTreeMap::new();
    for r in store.counts(&gauges).await? {
        if let Some(step) = r.metric.strip_prefix("waiting:") {
            *waiting_at.entry(step.to_string()).or_default() += r.n;
        }
    }
    Ok(build(plan, &rows, &waiting_at, o))
}

/// The report from its count rows (see [`workflow`]).
pub fn build(
    plan: &Plan,
    rows: &[CountRow],
    waiting: &BTreeMap<String, i64>,
    o: &Options,
) -> WorkflowReport {
    let m = Metrics::of(rows);
    let entered = m.get("entered");
    let conversions = m.get("exit:goal");
    let emails = emails(plan, &m);
    WorkflowReport {
        workflow: plan.id().to_string(),
        version: o.version,
        entered,
        steps: steps(plan, &m, waiting),
        exits: m.with_prefix("exit:"),
        goal: GoalReport {
            conversions,
            rate: ratio(conversions, entered),
            median_minutes: median(&m.with_prefix("goal_min:")),
        },
        splits: splits(plan, &m, &emails, o.min_sample),
        emails,
        periods: o.by.map(|p| periods(rows, p)).unwrap_or_default(),
    }
}

/// The counts of a report, summed over its hours.
struct Metrics(BTreeMap<String, i64>);

impl Metrics {
    fn of(rows: &[CountRow]) -> Metrics {
        let mut sums = BTreeMap::new();
        for r in rows {
            *sums.entry(r.metric.clone()).or_default() += r.n;
        }
        Metrics(sums)
    }

    fn get(&self, metric: &str) -> i64 {
        self.0.get(metric).copied().unwrap_or(0)
    }

    /// The metrics starting with `prefix`, by the rest of their name.
    fn with_prefix(&self, prefix: &str) -> BTreeMap<String, i64> {
        self.0
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k[prefix.len()..].to_string(), *v))
            .collect()
    }
}

fn ratio(a: i64, b: i64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// The median of a histogram keyed by value (as text): the middle value, or the mean of
/// the two middle ones (rounded down) for an even count.
fn median(hist: &BTreeMap<String, i64>) -> Option<i64> {
    let mut values: Vec<(i64, i64)> = hist
        .iter()
        .filter_map(|(k, n)| Some((k.parse().ok()?, *n)))
        .filter(|(_, n)| *n > 0)
        .collect();
    values.sort();
    let total: i64 = values.iter().map(|(_, n)| n).sum();
    if total == 0 {
        return None;
    }
    // The value at 0-based rank `r`.
    let at = |r: i64| {
        let mut seen = 0;
        values.iter().find_map(|(v, n)| {
            seen += n;
            (seen > r).then_some(*v)
        })
    };
    Some((at((total - 1) / 2)? + at(total / 2)?).div_euclid(2))
}

/// The steps in workflow order, then any step counted that the workflow no longer has.
fn steps(plan: &Plan, m: &Metrics, waiting: &BTreeMap<String, i64>) -> Vec<StepReport> {
    let passed = m.with_prefix("step:");
    let mut ids: Vec<(String, String)> = plan
        .workflow
        .steps
        .iter()
        .map(|s| (s.id.clone(), s.kind.key().to_string()))
        .collect();
    let known: BTreeSet<String> = ids.iter().map(|(id, _)| id.clone()).collect();
    ids.extend(
        passed
            .keys()
            .filter(|s| !known.contains(*s))
            .map(|s| (s.clone(), "?".to_string())),
    );
    ids.into_iter()
        .map(|(step, kind)| StepReport {
            passed: passed.get(&step).copied().unwrap_or(0),
            waiting: waiting.get(&step).copied().unwrap_or(0),
            edges: edges(plan, m, &step),
            step,
            kind,
        })
        .collect()
}

/// The edges out of `step` that runs took, with where each leads now.
fn edges(plan: &Plan, m: &Metrics, step: &str) -> Vec<EdgeReport> {
    m.with_prefix(&format!("edge:{step}:"))
        .into_iter()
        .map(|(label, runs)| EdgeReport {
            to: target(plan, step, &label),
            label,
            runs,
        })
        .collect()
}

/// Where the edge `label` out of `step` leads in `plan`.
fn target(plan: &Plan, step: &str, label: &str) -> Option<String> {
    use petgraph::visit::EdgeRef;
    let node = *plan.index.get(step)?;
    let edge = plan.graph.edges(node).find(|e| match e.weight() {
        Edge::Yes { index, .. } => index.to_string() == label,
        Edge::Else => label == "else",
        Edge::Event => label == "event",
        Edge::Timeout => label == "timeout",
        Edge::Variant { name, .. } => name == label,
        Edge::Next => false,
    })?;
    Some(match plan.graph[edge.target()] {
        PlanNode::Step(i) => plan.workflow.steps[i].id.clone(),
        PlanNode::End => "end".to_string(),
    })
}

/// Each `send_email` step's counts and rates.
fn emails(plan: &Plan, m: &Metrics) -> Vec<EmailReport> {
    plan.workflow
        .steps
        .iter()
        .filter_map(|s| match &s.kind {
            StepKind::SendEmail(e) => Some(email(&s.id, e.template(), m)),
            _ => None,
        })
        .collect()
}

fn email(step: &str, template: &str, m: &Metrics) -> EmailReport {
    let at = |metric: &str| m.get(&format!("{metric}:{step}"));
    let by_rule = |prefix: &str| -> BTreeMap<String, i64> {
        m.0.iter()
            .filter_map(|(k, n)| {
                let rule = k.strip_prefix(prefix)?.strip_suffix(&format!(":{step}"))?;
                Some((rule.to_string(), *n))
            })
            .collect()
    };
    let mut deferred = by_rule("email.deferred.");
    if let Some(n) = m.0.get(&format!("deferred.quiet_hours:{step}")) {
        deferred.insert("quiet_hours".into(), *n);
    }
    let mut r = EmailReport {
        step: step.to_string(),
        template: template.to_string(),
        queued: at("email.queued"),
        sent: at("email.sent"),
        failed: at("email.failed"),
        deferred,
        skipped: by_rule("email.skipped."),
        bounced_hard: at("email.bounced_hard"),
        bounced_soft: at("email.bounced_soft"),
        complaints: at("email.complained"),
        opens: at("email.opened"),
        opens_bot: at("email.opened_bot"),
        clicks: at("email.clicked"),
        clicks_bot: at("email.clicked_bot"),
        unsubscribes: at("email.unsubscribed"),
        rates: EmailRates::default(),
    };
    r.rates = EmailRates {
        open: ratio(r.opens, r.sent),
        click: ratio(r.clicks, r.sent),
        click_to_open: ratio(r.clicks, r.opens),
        unsubscribe: ratio(r.unsubscribes, r.sent),
        bounce: ratio(r.bounced_hard + r.bounced_soft, r.sent),
    };
    r
}

/// Each split step's variants, compared with the first.
fn splits(plan: &Plan, m: &Metrics, emails: &[EmailReport], min_sample: i64) -> Vec<SplitReport> {
    plan.workflow
        .steps
        .iter()
        .filter(|s| matches!(s.kind, StepKind::Split(_)))
        .map(|s| split(plan, &s.id, m, emails, min_sample))
        .collect()
}

fn split(plan: &Plan, step: &str, m: &Metrics, emails: &[EmailReport], min: i64) -> SplitReport {
    let own = variant_emails(plan, step);
    let variants: Vec<VariantReport> = own
        .iter()
        .map(|(name, steps)| {
            let entered = m.get(&format!("edge:{step}:{name}"));
            let conversions = m.get(&format!("goal:{step}:{name}"));
            let mine = emails.iter().filter(|e| steps.contains(&e.step));
            let (opens, clicks) = mine.fold((0, 0), |(o, c), e| (o + e.opens, c + e.clicks));
            VariantReport {
                name: name.clone(),
                entered,
                conversions,
                rate: ratio(conversions, entered),
                opens,
                clicks,
            }
        })
        .collect();
    let comparisons: Vec<VariantComparison> = variants
        .iter()
        .skip(1)
        .map(|v| VariantComparison {
            control: variants[0].name.clone(),
            variant: v.name.clone(),
            test: stats::compare(variants[0].arm(), v.arm()),
        })
        .collect();
    let (winner, verdict) = verdict(&variants, min);
    SplitReport {
        step: step.to_string(),
        variants,
        comparisons,
        winner,
        verdict,
    }
}

/// The winner: the best variant, once each variant has `min` contacts and the best beats
/// every other at p < 0.05; otherwise why not, and about how many more contacts it takes.
fn verdict(variants: &[VariantReport], min: i64) -> (Option<String>, String) {
    let Some(best) = variants
        .iter()
        .max_by(|a, b| a.rate.total_cmp(&b.rate))
        .filter(|_| variants.len() >= 2)
    else {
        return (None, "fewer than two variants".into());
    };
    let tests: Vec<Option<Comparison>> = variants
        .iter()
        .filter(|v| v.name != best.name)
        .map(|v| stats::compare(v.arm(), best.arm()))
        .collect();
    let short = variants
        .iter()
        .map(|v| (min - v.entered).max(0))
        .sum::<i64>();
    let significant = tests
        .iter()
        .all(|t| t.is_some_and(|t| t.p_value < 0.05 && t.difference > 0.0));
    if significant && short == 0 {
        let p = tests
            .iter()
            .flatten()
            .map(|t| t.p_value)
            .fold(0.0, f64::max);
        return (
            Some(best.name.clone()),
            format!("{} wins (p = {p:.4})", best.name),
        );
    }
    let needed = tests
        .iter()
        .flatten()
        .filter_map(|t| t.needed_per_variant)
        .max()
        .map(|n| n.max(min));
    let more = match needed {
        Some(n) if !significant => variants.iter().map(|v| (n - v.entered).max(0)).sum(),
        _ => short,
    };
    let text = match (significant, needed) {
        (true, _) => format!(
            "significant, but below the minimum of {min} contacts per variant: about {more} more contacts needed"
        ),
        (false, None) => "not yet significant: no difference in conversion so far".into(),
        (false, Some(_)) => format!("not yet significant, about {more} more contacts needed"),
    };
    (None, text)
}

/// Per variant of split `step`, the email steps only that variant reaches (the steps
/// reachable from its edge and from no other variant's).
fn variant_emails(plan: &Plan, step: &str) -> Vec<(String, BTreeSet<String>)> {
    use petgraph::visit::{Dfs, EdgeRef};
    let Some(node) = plan.index.get(step) else {
        return Vec::new();
    };
    let mut arms: Vec<(usize, String, BTreeSet<String>)> = plan
        .graph
        .edges(*node)
        .filter_map(|e| match e.weight() {
            Edge::Variant { index, name, .. } => {
                let mut seen = BTreeSet::new();
                let mut dfs = Dfs::new(&plan.graph, e.target());
                while let Some(n) = dfs.next(&plan.graph) {
                    if let PlanNode::Step(i) = plan.graph[n] {
                        seen.insert(plan.workflow.steps[i].id.clone());
                    }
                }
                Some((*index, name.clone(), seen))
            }
            _ => None,
        })
        .collect();
    arms.sort_by_key(|(i, _, _)| *i);
    let all: Vec<BTreeSet<String>> = arms.iter().map(|(_, _, s)| s.clone()).collect();
    arms.into_iter()
        .enumerate()
        .map(|(j, (_, name, seen))| {
            let own = seen
                .into_iter()
                .filter(|s| {
                    all.iter()
                        .enumerate()
                        .all(|(k, o)| k == j || !o.contains(s))
                })
                .collect();
            (name, own)
        })
        .collect()
}

/// The counts per day or week.
fn periods(rows: &[CountRow], by: Period) -> Vec<PeriodReport> {
    let mut out: BTreeMap<Ts, PeriodReport> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.hour != GAUGE_HOUR) {
        let start = by.start(r.hour);
        let p = out.entry(start).or_insert(PeriodReport {
            start,
            entered: 0,
            conversions: 0,
            sent: 0,
            opens: 0,
            clicks: 0,
        });
        let m = r.metric.as_str();
        match m.split_once(':').map_or(m, |(head, _)| head) {
            "entered" => p.entered += r.n,
            "exit" if m == "exit:goal" => p.conversions += r.n,
            "email.sent" => p.sent += r.n,
            "email.opened" => p.opens += r.n,
            "email.clicked" => p.clicks += r.n,
            _ => {}
        }
    }
    out.into_values().collect()
}

/// The lead funnel over a period.
#[derive(Debug, Clone, Serialize)]
pub struct LeadFunnel {
    /// Contacts that reached each stage (in the funnel's order, then any other).
    pub stages: Vec<StageCount>,
    /// Each change of stage seen, with how long contacts had been in the first.
    pub transitions: Vec<Transition>,
    /// Conversion between consecutive stages of the funnel.
    pub conversions: Vec<StageConversion>,
    /// For contacts who became MQL, the points each reason gave their score, most first.
    pub mql_points: Vec<(String, i64)>,
}

/// Contacts that reached a stage.
#[derive(Debug, Clone, Serialize)]
pub struct StageCount {
    /// The stage.
    pub stage: String,
    /// Contacts that entered it in the period.
    pub reached: i64,
}

/// One change of stage.
#[derive(Debug, Clone, Serialize)]
pub struct Transition {
    /// The stage before (`-` for none).
    pub from: String,
    /// The stage after.
    pub to: String,
    /// How many times.
    pub contacts: i64,
    /// Median minutes spent in `from` (known when a workflow set it).
    pub median_minutes: Option<i64>,
}

/// Conversion from one stage to the next.
#[derive(Debug, Clone, Serialize)]
pub struct StageConversion {
    /// The earlier stage.
    pub from: String,
    /// The next stage.
    pub to: String,
    /// Contacts that reached `to` / contacts that reached `from`.
    pub rate: f64,
}

/// The funnel's stages, in order.
pub const FUNNEL: [&str; 5] = ["lead", "mql", "sal", "sql", "customer"];

/// The lead funnel over `o`'s period.
pub async fn lead_funnel(store: &dyn Store, o: &Options) -> Result<LeadFunnel, StoreError> {
    let filter = CountFilter {
        workflow: Some(String::new()),
        version: None,
        since: o.since,
        until: o.until,
        whole: true,
    };
    Ok(funnel(&store.counts(&filter).await?))
}

/// The lead funnel from its count rows.
pub fn funnel(rows: &[CountRow]) -> LeadFunnel {
    let m = Metrics::of(rows);
    let changes = m.with_prefix("lifecycle:");
    let mut reached: BTreeMap<String, i64> = BTreeMap::new();
    let mut transitions = Vec::new();
    for (change, n) in &changes {
        let Some((from, to)) = change.split_once('>') else {
            continue;
        };
        *reached.entry(to.to_string()).or_default() += n;
        transitions.push(Transition {
            from: from.to_string(),
            to: to.to_string(),
            contacts: *n,
            median_minutes: median(&m.with_prefix(&format!("lifecycle_min:{change}:"))),
        });
    }
    let order = |s: &str| FUNNEL.iter().position(|f| *f == s).unwrap_or(FUNNEL.len());
    let mut stages: Vec<StageCount> = reached
        .into_iter()
        .map(|(stage, reached)| StageCount { stage, reached })
        .collect();
    stages.sort_by_key(|s| (order(&s.stage), s.stage.clone()));
    let count = |s: &str| {
        stages
            .iter()
            .find(|c| c.stage == s)
            .map_or(0, |c| c.reached)
    };
    let conversions = FUNNEL
        .windows(2)
        .map(|w| StageConversion {
            from: w[0].to_string(),
            to: w[1].to_string(),
            rate: ratio(count(w[1]), count(w[0])),
        })
        .collect();
    let mut mql_points: Vec<(String, i64)> = m.with_prefix("mql_points:").into_iter().collect();
    mql_points.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    LeadFunnel {
        stages,
        transitions,
        conversions,
        mql_points,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(pairs: &[(i64, i64)]) -> BTreeMap<String, i64> {
        pairs.iter().map(|(v, n)| (v.to_string(), *n)).collect()
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(&hist(&[])), None);
        assert_eq!(median(&hist(&[(5, 1)])), Some(5));
        assert_eq!(median(&hist(&[(120, 15), (240, 5), (360, 10)])), Some(180));
        assert_eq!(median(&hist(&[(120, 16), (240, 5), (360, 10)])), Some(120));
        // Keys are text: 1440 sorts after 360 as a number, not as text.
        assert_eq!(median(&hist(&[(1440, 2), (360, 1)])), Some(1440));
    }
}
