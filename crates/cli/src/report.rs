//! `nurture report` (and `nurture simulate --report`): the campaign reports of
//! `nurture_engine::report` as tables for people, JSON or CSV for scripts.

use std::fmt::Write as _;

use anyhow::{bail, Result};
use serde::Serialize;

use nurture_core::project::Project;
use nurture_engine::report::held::HeldBackReport;
use nurture_engine::report::{self, LeadFunnel, Options, WorkflowReport};
use nurture_store::Store;

/// How `nurture report` prints.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ReportFormat {
    /// Tables for people.
    Human,
    /// One JSON document.
    Json,
    /// One row per figure: section,workflow,item,metric,value.
    Csv,
}

/// Everything one `nurture report` prints.
#[derive(Serialize)]
pub(crate) struct Reports {
    /// The workflows reported (one, or all of the project's).
    pub workflows: Vec<WorkflowReport>,
    /// The lead funnel (when no single workflow was asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lead_funnel: Option<LeadFunnel>,
}

/// The reports of `workflow` (or of every workflow, with the lead funnel).
pub(crate) async fn collect(
    project: &Project,
    store: &dyn Store,
    workflow: Option<&str>,
    o: &Options,
) -> Result<Reports> {
    let plans: Vec<_> = match workflow {
        Some(w) => match project.plans.iter().find(|p| p.id() == w) {
            Some(p) => vec![p],
            None => {
                let ids: Vec<&str> = project.plans.iter().map(|p| p.id()).collect();
                bail!(
                    "no workflow `{w}` in this project; it has: {}",
                    ids.join(", ")
                )
            }
        },
        None => project.plans.iter().collect(),
    };
    let mut workflows = Vec::with_capacity(plans.len());
    for p in plans {
        workflows.push(report::workflow(store, p, o).await?);
    }
    let lead_funnel = match workflow {
        Some(_) => None,
        None => Some(report::lead_funnel(store, o).await?),
    };
    Ok(Reports {
        workflows,
        lead_funnel,
    })
}

/// `r` as `format` asks.
pub(crate) fn render(r: &Reports, format: ReportFormat, detailed: bool) -> Result<String> {
    Ok(match format {
        ReportFormat::Json => serde_json::to_string_pretty(r)? + "\n",
        ReportFormat::Csv => csv(r),
        ReportFormat::Human if detailed => r.workflows.iter().map(human).collect(),
        ReportFormat::Human => summary(r),
    })
}

/// The held-back report as `format` asks.
pub(crate) fn render_held_back(r: &HeldBackReport, format: ReportFormat) -> Result<String> {
    Ok(match format {
        ReportFormat::Json => serde_json::to_string_pretty(r)? + "\n",
        ReportFormat::Csv => held_csv(r),
        ReportFormat::Human => held_human(r),
    })
}

fn held_human(r: &HeldBackReport) -> String {
    let mut out = format!("sends held back: {}\n", r.total);
    if r.rules.is_empty() {
        return out;
    }
    let _ = writeln!(out, "\n{:<16} {:>7}  settings", "rule", "held");
    for rule in &r.rules {
        let settings: Vec<String> = rule
            .settings
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(
            out,
            "{:<16} {:>7}  {}",
            rule.rule,
            rule.held,
            settings.join(", ")
        );
        for at in &rule.steps {
            let place = format!("{}/{}", at.workflow, at.step);
            let _ = writeln!(
                out,
                "  {place:<30} {:>7}  {} {} {}",
                at.n, at.channel, at.outcome, at.reason
            );
        }
    }
    out
}

fn held_csv(r: &HeldBackReport) -> String {
    let mut out = String::from("rule,workflow,step,channel,outcome,reason,n\n");
    for rule in &r.rules {
        for at in &rule.steps {
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{}",
                rule.rule, at.workflow, at.step, at.channel, at.outcome, at.reason, at.n
            );
        }
    }
    out
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// Minutes as `2d 3h 4m` (the largest two units).
fn duration(mins: i64) -> String {
    let (d, h, m) = (mins / 1440, mins % 1440 / 60, mins % 60);
    match (d, h) {
        (0, 0) => format!("{m}m"),
        (0, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// One line per workflow, then the lead funnel.
fn summary(r: &Reports) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<28} {:>8} {:>8} {:>8} {:>7}  median to goal",
        "workflow", "entered", "waiting", "goals", "rate"
    );
    for w in &r.workflows {
        let waiting: i64 = w.steps.iter().map(|s| s.waiting).sum();
        let median = w.goal.median_minutes.map_or("-".into(), duration);
        let _ = writeln!(
            out,
            "{:<28} {:>8} {:>8} {:>8} {:>7}  {median}",
            w.workflow,
            w.entered,
            waiting,
            w.goal.conversions,
            pct(w.goal.rate)
        );
    }
    if let Some(f) = &r.lead_funnel {
        out.push('\n');
        out.push_str(&funnel(f));
    }
    out.push_str("\n`nurture report --workflow ID` shows a workflow's steps, emails and splits.\n");
    out
}

fn funnel(f: &LeadFunnel) -> String {
    let mut out = String::from("lead funnel\n");
    if f.stages.is_empty() {
        out.push_str("  no lifecycle stage changes in this period\n");
        return out;
    }
    for s in &f.stages {
        let _ = writeln!(out, "  {:<10} {:>8} reached", s.stage, s.reached);
    }
    for c in f.conversions.iter().filter(|c| c.rate > 0.0) {
        let _ = writeln!(out, "  {} -> {}: {}", c.from, c.to, pct(c.rate));
    }
    for t in &f.transitions {
        let time = t.median_minutes.map_or(String::new(), |m| {
            format!(", median {} in {}", duration(m), t.from)
        });
        let _ = writeln!(out, "  {} -> {}: {}{time}", t.from, t.to, t.contacts);
    }
    if !f.mql_points.is_empty() {
        out.push_str("  what made MQLs (points):\n");
        for (reason, points) in &f.mql_points {
            let _ = writeln!(out, "    {points:>6}  {reason}");
        }
    }
    out
}

/// A workflow's whole report.
fn human(w: &WorkflowReport) -> String {
    let mut out = String::new();
    let version = w
        .version
        .map_or("all versions".into(), |v| format!("version {v}"));
    let median = w.goal.median_minutes.map_or(String::new(), |m| {
        format!(", median time to goal {}", duration(m))
    });
    let _ = writeln!(out, "{} ({version})", w.workflow);
    let _ = writeln!(
        out,
        "entered {}, goal {} ({}){median}\n",
        w.entered,
        w.goal.conversions,
        pct(w.goal.rate)
    );
    let _ = writeln!(
        out,
        "{:<20} {:<12} {:>7} {:>7}  out",
        "step", "kind", "passed", "waiting"
    );
    for s in &w.steps {
        let edges: Vec<String> = s
            .edges
            .iter()
            .map(|e| {
                // A branch's arms by position: `if #0` reads better than `0`.
                let label = match e.label.parse::<usize>() {
                    Ok(n) => format!("if #{n}"),
                    Err(_) => e.label.clone(),
                };
                match &e.to {
                    Some(to) => format!("{label}: {} -> {to}", e.runs),
                    None => format!("{label}: {}", e.runs),
                }
            })
            .collect();
        let _ = writeln!(
            out,
            "{:<20} {:<12} {:>7} {:>7}  {}",
            s.step,
            s.kind,
            s.passed,
            s.waiting,
            edges.join(", ")
        );
    }
    let exits: Vec<String> = w.exits.iter().map(|(r, n)| format!("{r} {n}")).collect();
    let _ = writeln!(
        out,
        "exits: {}",
        if exits.is_empty() {
            "none".into()
        } else {
            exits.join(", ")
        }
    );
    emails(&mut out, w);
    splits(&mut out, w);
    periods(&mut out, w);
    out.push('\n');
    out
}

fn emails(out: &mut String, w: &WorkflowReport) {
    if w.emails.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n{:<16} {:>6} {:>6} {:>7} {:>7} {:>7} {:>7} {:>7}  held back",
        "email", "queued", "sent", "open", "click", "CTO", "unsub", "bounce"
    );
    for e in &w.emails {
        let mut held: Vec<String> = e
            .deferred
            .iter()
            .map(|(r, n)| format!("deferred {r} {n}"))
            .collect();
        held.extend(e.skipped.iter().map(|(r, n)| format!("skipped {r} {n}")));
        let _ = writeln!(
            out,
            "{:<16} {:>6} {:>6} {:>7} {:>7} {:>7} {:>7} {:>7}  {}",
            e.step,
            e.queued,
            e.sent,
            pct(e.rates.open),
            pct(e.rates.click),
            pct(e.rates.click_to_open),
            pct(e.rates.unsubscribe),
            pct(e.rates.bounce),
            held.join(", ")
        );
        let _ = writeln!(
            out,
            "{:<16} opens {} (bots {}), clicks {} (bots {}), unsubscribes {}, bounces {} hard {} soft, complaints {}, failed {}",
            "",
            e.opens,
            e.opens_bot,
            e.clicks,
            e.clicks_bot,
            e.unsubscribes,
            e.bounced_hard,
            e.bounced_soft,
            e.complaints,
            e.failed
        );
    }
}

fn splits(out: &mut String, w: &WorkflowReport) {
    for s in &w.splits {
        let _ = writeln!(
            out,
            "\nsplit {}\n{:<16} {:>8} {:>6} {:>7} {:>6} {:>6}",
            s.step, "variant", "entered", "goals", "rate", "opens", "clicks"
        );
        for v in &s.variants {
            let _ = writeln!(
                out,
                "{:<16} {:>8} {:>6} {:>7} {:>6} {:>6}",
                v.name,
                v.entered,
                v.conversions,
                pct(v.rate),
                v.opens,
                v.clicks
            );
        }
        for c in &s.comparisons {
            match &c.test {
                Some(t) => {
                    let _ = writeln!(
                        out,
                        "{} vs {}: {:+.1} points (95% CI {:+.1} .. {:+.1}), p = {:.4}",
                        c.variant,
                        c.control,
                        t.difference * 100.0,
                        t.ci_low * 100.0,
                        t.ci_high * 100.0,
                        t.p_value
                    );
                }
                None => {
                    let _ = writeln!(out, "{} vs {}: no test yet", c.variant, c.control);
                }
            }
        }
        let _ = writeln!(out, "verdict: {}", s.verdict);
    }
}

fn periods(out: &mut String, w: &WorkflowReport) {
    if w.periods.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\n{:<12} {:>8} {:>6} {:>6} {:>6} {:>6}",
        "period", "entered", "goals", "sent", "opens", "clicks"
    );
    for p in &w.periods {
        let _ = writeln!(
            out,
            "{:<12} {:>8} {:>6} {:>6} {:>6} {:>6}",
            p.start.format("%Y-%m-%d"),
            p.entered,
            p.conversions,
            p.sent,
            p.opens,
            p.clicks
        );
    }
}

/// A CSV field, quoted when it must be.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Every figure as a row: section,workflow,item,metric,value.
fn csv(r: &Reports) -> String {
    let mut rows: Vec<[String; 5]> = Vec::new();
    let mut row = |a: &str, b: &str, c: &str, d: &str, e: String| {
        rows.push([a.into(), b.into(), c.into(), d.into(), e]);
    };
    for w in &r.workflows {
        let wf = w.workflow.as_str();
        row("workflow", wf, "", "entered", w.entered.to_string());
        row(
            "workflow",
            wf,
            "",
            "goal_conversions",
            w.goal.conversions.to_string(),
        );
        row("workflow", wf, "", "goal_rate", w.goal.rate.to_string());
        if let Some(m) = w.goal.median_minutes {
            row("workflow", wf, "", "goal_median_minutes", m.to_string());
        }
        for (reason, n) in &w.exits {
            row("exit", wf, reason, "runs", n.to_string());
        }
        for s in &w.steps {
            row("step", wf, &s.step, "passed", s.passed.to_string());
            row("step", wf, &s.step, "waiting", s.waiting.to_string());
            for e in &s.edges {
                row("edge", wf, &s.step, &e.label, e.runs.to_string());
            }
        }
        for e in &w.emails {
            let v = serde_json::to_value(e).unwrap_or_default();
            for (k, x) in v.as_object().into_iter().flatten() {
                match x {
                    serde_json::Value::Number(n) => row("email", wf, &e.step, k, n.to_string()),
                    serde_json::Value::Object(m) => {
                        for (sub, n) in m {
                            row("email", wf, &e.step, &format!("{k}.{sub}"), n.to_string());
                        }
                    }
                    _ => {}
                }
            }
        }
        for s in &w.splits {
            for v in &s.variants {
                let item = format!("{}:{}", s.step, v.name);
                row("split", wf, &item, "entered", v.entered.to_string());
                row("split", wf, &item, "conversions", v.conversions.to_string());
                row("split", wf, &item, "rate", v.rate.to_string());
            }
            for c in &s.comparisons {
                if let Some(t) = &c.test {
                    let item = format!("{}:{}", s.step, c.variant);
                    row("split", wf, &item, "difference", t.difference.to_string());
                    row("split", wf, &item, "p_value", t.p_value.to_string());
                }
            }
            row(
                "split",
                wf,
                &s.step,
                "winner",
                s.winner.clone().unwrap_or_default(),
            );
        }
    }
    if let Some(f) = &r.lead_funnel {
        for s in &f.stages {
            row("stage", "", &s.stage, "reached", s.reached.to_string());
        }
        for t in &f.transitions {
            let item = format!("{}>{}", t.from, t.to);
            row("transition", "", &item, "contacts", t.contacts.to_string());
            if let Some(m) = t.median_minutes {
                row("transition", "", &item, "median_minutes", m.to_string());
            }
        }
        for (reason, points) in &f.mql_points {
            row("mql_points", "", reason, "points", points.to_string());
        }
    }
    let mut out = String::from("section,workflow,item,metric,value\n");
    for r in rows {
        let line: Vec<String> = r.iter().map(|f| field(f)).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
}
