//! Deploying a project's workflows to the store: what a deploy would change (its plan,
//! printed by `nurture deploy --dry-run`), and doing it.
//!
//! A deploy stores, in one fenced transaction, every workflow of the project whose
//! version is not deployed yet ([`nurture_store::VersionStore::deploy`]); then it applies
//! each new version's `on_new_version` to the open runs of older versions
//! ([`Engine::migrate_runs`]). It is refused, storing nothing, when a workflow's
//! `version` is already deployed with other content, when the project is older than what
//! is deployed, when a migration would strand runs (waiting at a step the new version
//! does not have, with no mapping), or when a version that open runs stay on no longer
//! compiles with the project (a template they use was removed).

use std::collections::BTreeMap;

use serde::Serialize;

use nurture_core::model::{OnNewVersion, Workflow};
use nurture_core::project::Project;
use nurture_core::versions::{content_hash, diff, fate, Fate, WorkflowDiff};
use nurture_store::{Expected, LatestVersion, Store, StoreError, Ts, WorkflowVersion};

use crate::{Effect, Engine, EngineError};

/// Open runs of one version at one step, and what the deploy does with them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunsAt {
    /// The version they are pinned to.
    pub version: u32,
    /// The step they wait at.
    pub step: Option<String>,
    /// How many.
    pub runs: i64,
    /// Where they go.
    #[serde(flatten)]
    pub fate: Fate,
}

/// One workflow a deploy stores a new version of.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkflowChange {
    /// The workflow.
    pub workflow: String,
    /// Its latest deployed version, if any.
    pub from: Option<u32>,
    /// The version deployed.
    pub to: u32,
    /// Its `on_new_version`: `keep`, `exit` or `migrate`.
    pub policy: &'static str,
    /// What differs from the deployed version (`None`: first deploy).
    pub diff: Option<WorkflowDiff>,
    /// The open runs of older versions, per version and step.
    pub runs: Vec<RunsAt>,
}

/// Why a deploy is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Problem {
    /// The file's version is deployed with other content.
    #[error("workflow `{workflow}`: version {version} is already deployed with other content; bump `version:` to {next}")]
    SameVersion {
        /// The workflow.
        workflow: String,
        /// Its version.
        version: u32,
        /// The version to bump to.
        next: u32,
    },
    /// The project is older than what is deployed.
    #[error("workflow `{workflow}`: this project has version {local} but version {deployed} is deployed; update the project (git pull) before deploying")]
    Behind {
        /// The workflow.
        workflow: String,
        /// The project's version.
        local: u32,
        /// The deployed version.
        deployed: u32,
    },
    /// Runs would be stranded.
    #[error("workflow `{workflow}`: {runs} open run(s) of version {version} wait at `{step}`, which version {to} does not have; map it with `on_new_version: {{ migrate: {{ {step}: NEW_STEP }} }}`, or use `keep` or `exit`")]
    Stranded {
        /// The workflow.
        workflow: String,
        /// The version the runs are on.
        version: u32,
        /// The step they wait at.
        step: String,
        /// How many.
        runs: i64,
        /// The new version.
        to: u32,
    },
    /// A version that open runs stay on does not compile with the project.
    #[error("workflow `{workflow}`: {runs} open run(s) stay on version {version}, which no longer compiles with this project: {reason}; restore what it uses, or deploy with `on_new_version: exit` or `migrate`")]
    StillUsed {
        /// The workflow.
        workflow: String,
        /// The version the runs stay on.
        version: u32,
        /// How many runs.
        runs: i64,
        /// The compile error.
        reason: String,
    },
}

/// What a deploy would do: computed from the store, changing nothing.
#[derive(Debug, Clone, Serialize)]
pub struct DeployPlan {
    /// Workflows with a new version to store.
    pub changes: Vec<WorkflowChange>,
    /// Workflows whose deployed version is newer than the project's (a worker then runs
    /// the deployed one).
    pub behind: Vec<Problem>,
    /// Why the deploy is refused, if it is.
    pub problems: Vec<Problem>,
    #[serde(skip)]
    versions: Vec<WorkflowVersion>,
    #[serde(skip)]
    expected: Vec<Expected>,
}

impl DeployPlan {
    /// Whether the deploy may go ahead.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// Open runs the deploy would strand.
    pub fn stranded(&self) -> i64 {
        self.changes
            .iter()
            .flat_map(|c| &c.runs)
            .filter(|r| r.fate == Fate::Stranded)
            .map(|r| r.runs)
            .sum()
    }
}

/// Errors of a deploy.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The plan has problems: nothing was stored.
    #[error("deploy refused: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Refused(Vec<Problem>),
    /// Another deploy changed the store after this one was planned: nothing was stored.
    #[error("another deploy changed workflow `{0}` meanwhile; nothing was deployed: check with `nurture deploy --dry-run` and deploy again")]
    Conflict(String),
    /// The store or the engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl From<StoreError> for DeployError {
    fn from(e: StoreError) -> Self {
        DeployError::Engine(e.into())
    }
}

/// What a deploy did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Deployed {
    /// The versions stored: workflow and version.
    pub versions: Vec<(String, u32)>,
    /// Runs moved to a new version.
    pub migrated: usize,
    /// Runs ended as superseded.
    pub superseded: usize,
    /// Everything the migrations did.
    #[serde(skip)]
    pub effects: Vec<Effect>,
}

/// What deploying `project` to `store` would do, by `deployed_by` at `now`.
pub async fn plan(
    store: &dyn Store,
    project: &Project,
    deployed_by: &str,
    now: Ts,
) -> Result<DeployPlan, DeployError> {
    let latest = store.latest_versions().await?;
    let mut p = DeployPlan {
        changes: Vec::new(),
        behind: Vec::new(),
        problems: Vec::new(),
        versions: Vec::new(),
        expected: Vec::new(),
    };
    for own in &project.plans {
        let w = &own.workflow;
        let stored = latest.iter().find(|l| l.workflow == w.workflow);
        let hash = content_hash(w);
        match stored {
            Some(s) if s.version == w.version && s.hash == hash => continue,
            Some(s) if s.version == w.version => p.problems.push(Problem::SameVersion {
                workflow: w.workflow.clone(),
                version: w.version,
                next: w.version + 1,
            }),
            Some(s) if s.version > w.version => p.behind.push(Problem::Behind {
                workflow: w.workflow.clone(),
                local: w.version,
                deployed: s.version,
            }),
            _ => {
                let change = change(store, w, stored).await?;
                p.problems.extend(stranded(&change));
                p.changes.push(change);
                p.expected.push(Expected {
                    workflow: w.workflow.clone(),
                    version: stored.map(|s| s.version),
                });
                p.versions.push(WorkflowVersion {
                    workflow: w.workflow.clone(),
                    version: w.version,
                    hash,
                    source: project
                        .workflow_sources
                        .get(&w.workflow)
                        .cloned()
                        .unwrap_or_default(),
                    path: relative(project, &own.file),
                    deployed_at: now,
                    deployed_by: deployed_by.to_string(),
                });
            }
        }
    }
    p.problems
        .extend(still_used(store, project, &latest, &p.changes).await?);
    Ok(p)
}

/// The change deploying `w` makes over the stored latest version `stored`.
async fn change(
    store: &dyn Store,
    w: &Workflow,
    stored: Option<&LatestVersion>,
) -> Result<WorkflowChange, DeployError> {
    let old = match stored {
        Some(s) => store
            .workflow_version(&w.workflow, s.version)
            .await?
            .and_then(|v| parse_stored(&v)),
        None => None,
    };
    let runs = store
        .open_runs(&w.workflow)
        .await?
        .into_iter()
        .filter(|r| r.version < w.version)
        .map(|r| RunsAt {
            fate: fate(&w.on_new_version, r.step.as_deref(), w),
            version: r.version,
            step: r.step,
            runs: r.runs,
        })
        .collect();
    Ok(WorkflowChange {
        workflow: w.workflow.clone(),
        from: stored.map(|s| s.version),
        to: w.version,
        policy: policy_name(&w.on_new_version),
        diff: old.map(|o| diff(&o, w)),
        runs,
    })
}

fn stranded(c: &WorkflowChange) -> impl Iterator<Item = Problem> + '_ {
    c.runs
        .iter()
        .filter(|r| r.fate == Fate::Stranded)
        .map(|r| Problem::Stranded {
            workflow: c.workflow.clone(),
            version: r.version,
            step: r.step.clone().unwrap_or_else(|| "(none)".into()),
            runs: r.runs,
            to: c.to,
        })
}

/// Versions that open runs stay on after the deploy and that no longer compile with the
/// project (templates, segments or plugins they use are gone).
async fn still_used(
    store: &dyn Store,
    project: &Project,
    latest: &[LatestVersion],
    changes: &[WorkflowChange],
) -> Result<Vec<Problem>, DeployError> {
    let mut out = Vec::new();
    for l in latest {
        // A changed workflow's open runs were read by `change`, each with its fate; every
        // open run of another workflow stays.
        let mut staying: BTreeMap<u32, i64> = BTreeMap::new();
        match changes.iter().find(|c| c.workflow == l.workflow) {
            Some(c) => c
                .runs
                .iter()
                .filter(|r| r.fate == Fate::Stay)
                .for_each(|r| *staying.entry(r.version).or_default() += r.runs),
            None => store
                .open_runs(&l.workflow)
                .await?
                .iter()
                .for_each(|r| *staying.entry(r.version).or_default() += r.runs),
        }
        for (version, runs) in staying {
            let Some(v) = store.workflow_version(&l.workflow, version).await? else {
                continue;
            };
            if let Err(reason) = crate::versions::compile_stored(project, &v) {
                out.push(Problem::StillUsed {
                    workflow: l.workflow.clone(),
                    version,
                    runs,
                    reason,
                });
            }
        }
    }
    Ok(out)
}

/// Stores the plan's versions, makes them current in `engine`, and migrates open runs
/// as each workflow's current `on_new_version` says (also finishing the migrations of an
/// earlier deploy that stopped half-way).
pub async fn apply(engine: &Engine, plan: &DeployPlan, now: Ts) -> Result<Deployed, DeployError> {
    if !plan.ok() {
        return Err(DeployError::Refused(plan.problems.clone()));
    }
    if !plan.versions.is_empty() {
        match engine.store.deploy(&plan.versions, &plan.expected).await {
            Err(StoreError::Conflict {
                what: nurture_store::ConflictKind::WorkflowVersion,
                detail,
                ..
            }) => return Err(DeployError::Conflict(detail)),
            r => r?,
        }
    }
    engine.refresh_versions().await?;
    let mut done = Deployed {
        versions: plan
            .versions
            .iter()
            .map(|v| (v.workflow.clone(), v.version))
            .collect(),
        ..Default::default()
    };
    let current = engine.plans.current();
    for p in current.plans() {
        let effects = engine.migrate_runs(p.id(), now).await?;
        done.migrated += effects.iter().filter(|e| e.effect == "migrated").count();
        done.superseded += effects
            .iter()
            .filter(|e| {
                e.effect == "exit" && e.extra.get("reason").is_some_and(|r| r == "superseded")
            })
            .count();
        done.effects.extend(effects);
    }
    Ok(done)
}

/// The policy's name.
pub fn policy_name(p: &OnNewVersion) -> &'static str {
    match p {
        OnNewVersion::Keep => "keep",
        OnNewVersion::Exit => "exit",
        OnNewVersion::Migrate(_) => "migrate",
    }
}

/// The workflow of a stored version, parsed (not compiled: it may refer to things the
/// project no longer has).
pub fn parse_stored(v: &WorkflowVersion) -> Option<Workflow> {
    let root = nurture_core::yaml::parse(&v.source).ok()?;
    let mut diags = Vec::new();
    nurture_core::project::parse_workflow(std::path::Path::new(&v.path), &root, &mut diags)
}

fn relative(project: &Project, file: &std::path::Path) -> String {
    file.strip_prefix(&project.root)
        .unwrap_or(file)
        .display()
        .to_string()
}

/// The plan as people read it (`nurture deploy`, `--dry-run`).
impl std::fmt::Display for DeployPlan {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.changes.is_empty() {
            out.write_str("nothing to deploy: every workflow's version is deployed\n")?;
        }
        for c in &self.changes {
            write_change(out, c)?;
        }
        for b in &self.behind {
            writeln!(out, "note: {b}")?;
        }
        for p in &self.problems {
            writeln!(out, "refused: {p}")?;
        }
        writeln!(
            out,
            "{} workflow(s) to deploy, {} open run(s) stranded{}",
            self.changes.len(),
            self.stranded(),
            if self.ok() {
                ""
            } else {
                "; the deploy is refused"
            }
        )
    }
}

fn write_change(out: &mut std::fmt::Formatter<'_>, c: &WorkflowChange) -> std::fmt::Result {
    let from = c
        .from
        .map_or("not deployed".into(), |v| format!("version {v}"));
    writeln!(
        out,
        "workflow {}: {from} -> version {} (on_new_version: {})",
        c.workflow, c.to, c.policy
    )?;
    if let Some(d) = &c.diff {
        for (what, ids) in [
            ("steps added", &d.added),
            ("steps removed", &d.removed),
            ("steps changed", &d.changed),
            ("settings changed", &d.settings),
        ] {
            if !ids.is_empty() {
                writeln!(out, "  {what}: {}", ids.join(", "))?;
            }
        }
        if d.is_empty() {
            out.write_str("  no change but the version\n")?;
        }
    }
    if c.runs.is_empty() {
        out.write_str("  open runs of older versions: none\n")?;
    }
    for r in &c.runs {
        let at = r.step.as_deref().unwrap_or("(no step)");
        let what = match &r.fate {
            Fate::Stay => format!("stay on version {}", r.version),
            Fate::Exit => "exit (superseded)".to_string(),
            Fate::Move(s) if s == at => format!("move to version {}, same step", c.to),
            Fate::Move(s) => format!("move to `{s}` of version {}", c.to),
            Fate::Stranded => "STRANDED: no such step and no mapping".into(),
        };
        writeln!(
            out,
            "  {} run(s) at `{at}` (version {}): {what}",
            r.runs, r.version
        )?;
    }
    Ok(())
}
