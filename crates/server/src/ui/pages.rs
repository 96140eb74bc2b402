//! The dashboard's pages: each reads what it shows from the store (counts, not runs,
//! for the campaign figures) and renders one template.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use chrono::{TimeDelta, Utc};
use minijinja::context;
use serde::{Deserialize, Serialize};

use nurture_core::plan::Plan;
use nurture_engine::report::{self, Options, WorkflowReport};
use nurture_store::counts::GAUGE_HOUR;
use nurture_store::{CountFilter, CountRow, OutboxFilter, OutboxState, Ts};

use super::{render, seg, svg, CsrfForm, UiError, Viewer};
use crate::AppState;

/// Days of enrolments in a campaign's trend.
const TREND_DAYS: i64 = 14;

fn plan<'a>(s: &'a AppState, id: &str) -> Result<&'a Plan, UiError> {
    s.engine
        .project
        .plans
        .iter()
        .find(|p| p.id() == id)
        .ok_or_else(|| UiError::NotFound(format!("There is no campaign {}.", cut(id))))
}

fn cut(s: &str) -> String {
    s.chars().take(200).collect()
}

/// Count rows split into the report's rows and the open-run gauges (step to runs).
fn split_gauges(rows: Vec<CountRow>) -> (Vec<CountRow>, Vec<CountRow>) {
    rows.into_iter()
        .partition(|r| !(r.hour == GAUGE_HOUR && r.metric.starts_with("waiting:")))
}

fn waiting_by_step(gauges: &[CountRow]) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for g in gauges {
        if let Some(step) = g.metric.strip_prefix("waiting:") {
            *out.entry(step.to_string()).or_default() += g.n;
        }
    }
    out
}

/// A campaign's row on the campaigns page.
#[derive(Serialize)]
struct CampaignRow {
    id: String,
    name: String,
    version: Option<u32>,
    paused: bool,
    open_runs: i64,
    entered: i64,
    entered_7d: i64,
    goal_rate: f64,
    conversions: i64,
    trend: String,
}

/// Enrolments per day over the last [`TREND_DAYS`] days, oldest first.
fn trend(workflow: &str, rows: &[CountRow], now: Ts) -> Vec<i64> {
    let today = now.date_naive();
    let mut days = vec![0i64; TREND_DAYS as usize];
    for r in rows
        .iter()
        .filter(|r| r.workflow == workflow && r.metric == "entered")
    {
        let back = (today - r.hour.date_naive()).num_days();
        if (0..TREND_DAYS).contains(&back) {
            days[(TREND_DAYS - 1 - back) as usize] += r.n;
        }
    }
    days
}

/// `GET /ui/`: every campaign.
pub(crate) async fn campaigns(
    State(s): State<AppState>,
    v: Viewer,
) -> Result<Html<String>, UiError> {
    let store = &*s.engine.store;
    let now = Utc::now();
    let whole = CountFilter {
        whole: true,
        ..CountFilter::default()
    };
    let all = store.counts(&whole).await.map_err(UiError::store)?;
    let recent = CountFilter {
        since: Some(now - TimeDelta::days(TREND_DAYS)),
        ..CountFilter::default()
    };
    let recent = store.counts(&recent).await.map_err(UiError::store)?;
    let latest = store.latest_versions().await.map_err(UiError::store)?;
    let controls = store.controls().await.map_err(UiError::store)?;
    let (rows, gauges) = split_gauges(all);
    let mut out = Vec::new();
    for p in &s.engine.project.plans {
        let mine: Vec<CountRow> = rows
            .iter()
            .filter(|r| r.workflow == p.id())
            .cloned()
            .collect();
        let r = report::build(p, &mine, &BTreeMap::new(), &Options::default());
        let days = trend(p.id(), &recent, now);
        out.push(CampaignRow {
            id: p.id().to_string(),
            name: p
                .workflow
                .name
                .clone()
                .unwrap_or_else(|| p.id().to_string()),
            version: latest
                .iter()
                .find(|l| l.workflow == p.id())
                .map(|l| l.version),
            paused: controls.iter().any(|c| c.workflow == p.id() && c.paused),
            open_runs: gauges
                .iter()
                .filter(|g| g.workflow == p.id())
                .map(|g| g.n)
                .sum(),
            entered: r.entered,
            entered_7d: days[(TREND_DAYS - 7) as usize..].iter().sum(),
            goal_rate: r.goal.rate,
            conversions: r.goal.conversions,
            trend: svg::sparkline(
                &days,
                &format!("enrolments per day, last {TREND_DAYS} days"),
            ),
        });
    }
    render(
        "campaigns.html",
        context! { title => "Campaigns", csrf => v.csrf, campaigns => out, nav => "campaigns" },
    )
}

#[derive(Deserialize)]
pub(crate) struct VersionQuery {
    version: Option<String>,
}

fn version_of(q: &VersionQuery) -> Result<Option<u32>, UiError> {
    match q.version.as_deref() {
        None | Some("") => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| UiError::BadRequest("`version` is not a version number.".into())),
    }
}

/// The report of a campaign (of one version when given) and its gauges by version.
async fn campaign_report(
    s: &AppState,
    p: &Plan,
    version: Option<u32>,
) -> Result<(WorkflowReport, Vec<CountRow>), UiError> {
    let filter = CountFilter {
        workflow: Some(p.id().to_string()),
        version,
        since: None,
        until: None,
        whole: true,
    };
    let all = s
        .engine
        .store
        .counts(&filter)
        .await
        .map_err(UiError::store)?;
    let (rows, gauges) = split_gauges(all);
    let o = Options {
        version,
        ..Options::default()
    };
    let r = report::build(p, &rows, &waiting_by_step(&gauges), &o);
    Ok((r, gauges))
}

#[derive(Serialize)]
struct VersionRow {
    version: u32,
    deployed_at: String,
    deployed_by: String,
    open_runs: i64,
}

/// `GET /ui/campaigns/{id}`: the graph with counts, versions, emails and A/B results.
pub(crate) async fn campaign(
    State(s): State<AppState>,
    v: Viewer,
    Path(id): Path<String>,
    Query(q): Query<VersionQuery>,
) -> Result<Html<String>, UiError> {
    let p = plan(&s, &id)?;
    let version = version_of(&q)?;
    let (r, gauges) = campaign_report(&s, p, version).await?;
    let stored = s
        .engine
        .store
        .workflow_versions(Some(p.id()))
        .await
        .map_err(UiError::store)?;
    let versions: Vec<VersionRow> = stored
        .iter()
        .rev()
        .map(|w| VersionRow {
            version: w.version,
            deployed_at: w.deployed_at.to_rfc3339(),
            deployed_by: w.deployed_by.clone(),
            open_runs: gauges
                .iter()
                .filter(|g| g.version == w.version)
                .map(|g| g.n)
                .sum(),
        })
        .collect();
    let exits: Vec<(String, i64)> = r.exits.clone().into_iter().collect();
    render(
        "campaign.html",
        context! {
            title => p.id(), csrf => v.csrf, nav => "campaigns",
            id => p.id(), seg => seg(p.id()), name => p.workflow.name.clone(),
            version => version,
            graph => svg::graph(p, &r), report => &r, exits => exits, versions => versions,
        },
    )
}

/// `GET /ui/campaigns/{id}/graph`: the graph alone (the page refreshes it with htmx).
pub(crate) async fn campaign_graph(
    State(s): State<AppState>,
    _v: Viewer,
    Path(id): Path<String>,
    Query(q): Query<VersionQuery>,
) -> Result<Html<String>, UiError> {
    let p = plan(&s, &id)?;
    let (r, _) = campaign_report(&s, p, version_of(&q)?).await?;
    Ok(Html(svg::graph(p, &r)))
}

#[derive(Serialize)]
struct JournalRow {
    at: String,
    kind: String,
    step: String,
    data: String,
}

/// `GET /ui/runs/{id}`: the run's story and journal.
pub(crate) async fn run(
    State(s): State<AppState>,
    v: Viewer,
    Path(id): Path<String>,
) -> Result<Html<String>, UiError> {
    let store = &*s.engine.store;
    let Some(run) = store.run(&id).await.map_err(UiError::store)? else {
        return Err(UiError::NotFound(format!("There is no run {}.", cut(&id))));
    };
    let journal = store.journal(&id).await.map_err(UiError::store)?;
    let story = nurture_engine::explain::explain_run(store, &id)
        .await
        .map_err(UiError::engine)?;
    let rows: Vec<JournalRow> = journal
        .iter()
        .map(|j| JournalRow {
            at: j.at.to_rfc3339(),
            kind: j.kind.as_str().to_string(),
            step: j.data["step"].as_str().unwrap_or_default().to_string(),
            data: nurture_engine::explain::printable(&cut_json(&j.data)),
        })
        .collect();
    render(
        "run.html",
        context! {
            title => format!("Run {}", cut(&id)), csrf => v.csrf, nav => "",
            run => &run, contact_seg => seg(&run.contact), workflow_seg => seg(&run.workflow),
            lines => story.map(|x| x.lines).unwrap_or_default(), journal => rows,
        },
    )
}

/// A journal line's data as compact JSON, at most 300 characters.
fn cut_json(v: &serde_json::Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 300 {
        format!("{}…", text.chars().take(299).collect::<String>())
    } else {
        text
    }
}

/// `GET /ui/contacts/{id}`.
pub(crate) async fn contact(
    State(s): State<AppState>,
    v: Viewer,
    Path(id): Path<String>,
) -> Result<Html<String>, UiError> {
    let now = Utc::now();
    let store = &*s.engine.store;
    // By id alone: the search resolves addresses, links carry ids.
    let Some(found) = store.contact(&id).await.map_err(UiError::store)? else {
        return Err(UiError::NotFound(format!(
            "There is no contact {}.",
            cut(&id)
        )));
    };
    let story = nurture_engine::story::story_of(store, found, now)
        .await
        .map_err(UiError::store)?;
    let grade = nurture_engine::eval::grade(&s.engine.project.scoring, story.contact.score);
    let mut history = story.score_history.clone();
    history.sort_by_key(|c| c.at);
    let chart = history.first().map(|first| {
        let mut points: Vec<(i64, i64)> = vec![(0, first.score - first.delta)];
        points.extend(
            history
                .iter()
                .map(|c| ((c.at - first.at).num_seconds(), c.score)),
        );
        let last = history.last().map_or(first.at, |c| c.at);
        svg::score_chart(
            &points,
            &first.at.format("%Y-%m-%d").to_string(),
            &last.format("%Y-%m-%d").to_string(),
        )
    });
    let fields: Vec<(String, String)> = story
        .contact
        .fields
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str().map_or_else(|| v.to_string(), str::to_string),
            )
        })
        .collect();
    render(
        "contact.html",
        context! {
            title => story.contact.email.clone().unwrap_or_else(|| story.contact.id.clone()),
            csrf => v.csrf, nav => "",
            c => &story.contact, story => &story, grade => grade, chart => chart, fields => fields,
            history => history.iter().rev().collect::<Vec<_>>(),
        },
    )
}

/// `GET /ui/funnel`: the lead funnel.
pub(crate) async fn funnel(State(s): State<AppState>, v: Viewer) -> Result<Html<String>, UiError> {
    let f = report::lead_funnel(&*s.engine.store, &Options::default())
        .await
        .map_err(UiError::store)?;
    // Every stage of the funnel in order, reached or not, then any other stage used.
    let reached = |stage: &str| {
        f.stages
            .iter()
            .find(|s| s.stage == stage)
            .map_or(0, |s| s.reached)
    };
    let mut rows: Vec<(String, i64)> = report::FUNNEL
        .iter()
        .map(|st| (st.to_string(), reached(st)))
        .collect();
    rows.extend(
        f.stages
            .iter()
            .filter(|s| !report::FUNNEL.contains(&s.stage.as_str()))
            .map(|s| (s.stage.clone(), s.reached)),
    );
    render(
        "funnel.html",
        context! { title => "Lead funnel", csrf => v.csrf, nav => "funnel", f => &f, bars => svg::bars(&rows) },
    )
}

#[derive(Deserialize)]
pub(crate) struct OpsQuery {
    requeued: Option<String>,
}

/// `GET /ui/ops`: queues, timers, the outbox, workers and the project's problems.
pub(crate) async fn ops(
    State(s): State<AppState>,
    v: Viewer,
    Query(q): Query<OpsQuery>,
) -> Result<Html<String>, UiError> {
    let store = &*s.engine.store;
    let now = Utc::now();
    let queues = store.queue_summary(now).await.map_err(UiError::store)?;
    let workers = store.workers().await.map_err(UiError::store)?;
    let ambiguous = store
        .list_outbox(&OutboxFilter {
            state: Some(OutboxState::Ambiguous),
            limit: 50,
            ..OutboxFilter::default()
        })
        .await
        .map_err(UiError::store)?;
    let lag = queues
        .oldest_due
        .map(|t| human((now - t).max(TimeDelta::zero())));
    let problems = problems(&s.engine.project.root);
    // Said only of a key that is queued again: a link cannot make the page claim it.
    let requeued = match q.requeued {
        Some(k)
            if store
                .outbox_state(&k)
                .await
                .map_err(UiError::store)?
                .as_deref()
                == Some("pending") =>
        {
            Some(cut(&k))
        }
        _ => None,
    };
    let workers: Vec<_> = workers
        .iter()
        .map(|w| {
            let quiet = now - w.seen_at;
            context! { w => w, quiet => human(quiet), alive => quiet < TimeDelta::seconds(60) }
        })
        .collect();
    render(
        "ops.html",
        context! {
            title => "Operations", csrf => v.csrf, nav => "ops",
            q => &queues, lag => lag, workers => workers, ambiguous => ambiguous,
            problems => problems, requeued => requeued,
        },
    )
}

/// "3 s", "4 min", "2 h", "5 d".
fn human(d: TimeDelta) -> String {
    let s = d.num_seconds();
    if s < 120 {
        format!("{s} s")
    } else if s < 7200 {
        format!("{} min", s / 60)
    } else if s < 172_800 {
        format!("{} h", s / 3600)
    } else {
        format!("{} d", s / 86_400)
    }
}

/// The project's diagnostics as its files are now (an edit not yet deployed shows).
fn problems(root: &std::path::Path) -> Vec<String> {
    let loaded = nurture_core::project::load(root);
    loaded
        .diagnostics
        .iter()
        .map(|d| {
            let file = d.file.strip_prefix(root).unwrap_or(&d.file).display();
            let hint = d
                .hint
                .as_deref()
                .map(|h| format!(" ({h})"))
                .unwrap_or_default();
            format!(
                "{file}:{}:{}: {:?}: {}{hint}",
                d.span.line, d.span.col, d.severity, d.message
            )
        })
        .collect()
}

#[derive(Deserialize)]
pub(crate) struct RequeueForm {
    #[serde(flatten)]
    form: CsrfForm,
    #[serde(default)]
    key: String,
}

/// `POST /ui/ops/requeue`: puts an ambiguous (or failed) send back in the queue once
/// the operator has checked it was not delivered.
pub(crate) async fn requeue(
    State(s): State<AppState>,
    v: Viewer,
    Form(f): Form<RequeueForm>,
) -> Result<Response, UiError> {
    v.check(&f.form.csrf)?;
    let done = s
        .engine
        .store
        .requeue_outbox(&f.key, Utc::now())
        .await
        .map_err(UiError::store)?;
    if !done {
        return Err(UiError::NotFound(format!(
            "There is no ambiguous or failed send {}.",
            cut(&f.key)
        )));
    }
    tracing::info!(key = %f.key, "requeued from the dashboard");
    s.wake.notify_one();
    Ok(Redirect::to(&format!("/ui/ops?requeued={}", seg(&f.key))).into_response())
}

#[derive(Deserialize)]
pub(crate) struct SearchQuery {
    #[serde(default)]
    q: String,
}

/// One match of a search.
#[derive(Serialize)]
struct Found {
    /// `contacts` or `runs`, as in the page's path.
    what: &'static str,
    id: String,
    label: String,
}

impl Found {
    fn href(&self) -> String {
        format!("/ui/{}/{}", self.what, seg(&self.id))
    }
}

/// `GET /ui/search?q=`: contacts by address (in any case) and by id, and a run by id;
/// one match opens it, several are listed.
pub(crate) async fn search(
    State(s): State<AppState>,
    v: Viewer,
    Query(q): Query<SearchQuery>,
) -> Result<Response, UiError> {
    let store = &*s.engine.store;
    let wanted: String = q.q.trim().chars().take(320).collect();
    let mut found: Vec<Found> = Vec::new();
    if !wanted.is_empty() {
        let mut contacts = Vec::new();
        if wanted.contains('@') {
            let by_mail = store.contact_by_email(&wanted.to_lowercase()).await;
            contacts.extend(by_mail.map_err(UiError::store)?);
        }
        contacts.extend(store.contact(&wanted).await.map_err(UiError::store)?);
        contacts.dedup_by(|a, b| a.id == b.id);
        found.extend(contacts.into_iter().map(|c| Found {
            what: "contacts",
            label: match &c.email {
                Some(e) => format!("{} ({e})", c.id),
                None => c.id.clone(),
            },
            id: c.id,
        }));
        if store.run(&wanted).await.map_err(UiError::store)?.is_some() {
            found.push(Found {
                what: "runs",
                id: wanted.clone(),
                label: wanted.clone(),
            });
        }
    }
    if let [one] = found.as_slice() {
        return Ok(Redirect::to(&one.href()).into_response());
    }
    Ok(render(
        "search.html",
        context! { title => "Search", csrf => v.csrf, nav => "", q => &wanted, search_q => &wanted, found => found },
    )?
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_in_paths_are_percent_encoded() {
        assert_eq!(seg("ann@example.com"), "ann@example.com");
        assert_eq!(seg("a/../b c?"), "a%2F..%2Fb%20c%3F");
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(human(TimeDelta::seconds(5)), "5 s");
        assert_eq!(human(TimeDelta::seconds(600)), "10 min");
        assert_eq!(human(TimeDelta::hours(5)), "5 h");
        assert_eq!(human(TimeDelta::days(3)), "3 d");
    }
}
