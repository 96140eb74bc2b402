//! Which plan each run executes, and which plans new enrolments use.
//!
//! A run is pinned to the version of its workflow it started on (`Run::workflow_version`)
//! and always executes that version's plan. New enrolments use the *current* plan of each
//! workflow: the latest version deployed to the store ([`nurture_store::VersionStore`]),
//! or the project's own when it is newer (a deploy of it is pending) or when nothing is
//! deployed (an engine over a store nobody deployed to behaves as before versions).
//! A worker whose project is older than the deployed version compiles the stored one with
//! its own templates, segments and plugins, and never enrols into its older file; when the
//! stored one does not compile here, it enrols into that workflow not at all and says why
//! ([`Current::refused`]).
//!
//! Plans of older versions are loaded from the store when a unit of work first meets a
//! run of them ([`Plans::ensure`]) and cached for the life of the engine: a step costs a
//! lookup by workflow and version, never a query.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, RwLock};

use nurture_core::plan::Plan;
use nurture_core::project::Project;
use nurture_core::versions::content_hash;
use nurture_store::{Run, Store, WorkflowControl};

use crate::EngineError;

/// The plans new enrolments use: one per workflow, in workflow id order.
#[derive(Debug, Default)]
pub struct Current {
    plans: Vec<Arc<Plan>>,
    /// Workflows this process does not enrol into, with the reason.
    pub refused: BTreeMap<String, String>,
    /// Paused workflows (`enabled: false`, or `nurture workflows pause`), with why: they
    /// enrol nobody, and their runs' timers and sends are held.
    pub paused: BTreeMap<String, String>,
}

impl Current {
    /// The current plans, in workflow id order.
    pub fn plans(&self) -> &[Arc<Plan>] {
        &self.plans
    }

    /// The current plan of workflow `id`.
    pub fn get(&self, id: &str) -> Option<&Arc<Plan>> {
        self.plans
            .binary_search_by(|p| p.id().cmp(id))
            .ok()
            .map(|i| &self.plans[i])
    }
}

/// A plan of a pinned version, as loaded from the store.
#[derive(Debug, Clone)]
enum Pinned {
    Plan(Arc<Plan>),
    /// The store has no such version (runs started before versions were stored): such
    /// runs execute the current plan, as they did then.
    NotStored,
    /// The stored version does not compile with this process's project.
    Broken(String),
}

/// What a refresh changed, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// New enrolments into `workflow` now use `version`.
    Current {
        /// The workflow.
        workflow: String,
        /// Its version now current.
        version: u32,
    },
    /// This process does not enrol into `workflow`: `reason`.
    Refused {
        /// The workflow.
        workflow: String,
        /// Why.
        reason: String,
    },
    /// `workflow` is now paused (`Some(why)`) or running again (`None`).
    Paused {
        /// The workflow.
        workflow: String,
        /// Why it is paused; `None`: resumed.
        reason: Option<String>,
    },
}

/// The plans of one engine: see the module documentation.
#[derive(Debug)]
pub struct Plans {
    current: RwLock<Arc<Current>>,
    pinned: RwLock<HashMap<String, HashMap<u32, Pinned>>>,
    /// The content hash of each of the project's own workflows.
    local_hash: HashMap<String, String>,
}

impl Plans {
    /// The project's own plans as current.
    pub fn new(project: &Project) -> Plans {
        let mut plans: Vec<Arc<Plan>> = project.plans.iter().cloned().map(Arc::new).collect();
        plans.sort_by(|a, b| a.id().cmp(b.id()));
        let local_hash = project
            .plans
            .iter()
            .map(|p| (p.id().to_string(), content_hash(&p.workflow)))
            .collect();
        let paused = paused_in(&plans, &[]);
        Plans {
            current: RwLock::new(Arc::new(Current {
                plans,
                refused: BTreeMap::new(),
                paused,
            })),
            pinned: RwLock::new(HashMap::new()),
            local_hash,
        }
    }

    /// The current plans (a snapshot: a unit of work keeps the one it started with).
    pub fn current(&self) -> Arc<Current> {
        self.current.read().expect("plans lock").clone()
    }

    /// The plan `run` executes: its version's, or the current one when its version was
    /// never stored; `None` when its version does not compile here.
    pub fn of_run(&self, current: &Current, run: &Run) -> Option<Arc<Plan>> {
        let cur = current.get(&run.workflow);
        if let Some(p) = cur.filter(|p| p.workflow.version == run.workflow_version) {
            return Some(p.clone());
        }
        let pinned = self.pinned.read().expect("plans lock");
        match pinned
            .get(&run.workflow)
            .and_then(|m| m.get(&run.workflow_version))
        {
            Some(Pinned::Plan(p)) => Some(p.clone()),
            Some(Pinned::Broken(_)) => None,
            Some(Pinned::NotStored) | None => cur.cloned(),
        }
    }

    /// Loads, for the open runs among `runs`, the plans of their versions not loaded yet.
    pub async fn ensure<'r>(
        &self,
        store: &dyn Store,
        project: &Project,
        runs: impl Iterator<Item = &'r Run>,
    ) -> Result<(), EngineError> {
        let current = self.current();
        let mut missing: Vec<(String, u32)> = Vec::new();
        {
            let pinned = self.pinned.read().expect("plans lock");
            for r in runs.filter(|r| r.status.is_open()) {
                let cur = current.get(&r.workflow).map(|p| p.workflow.version);
                let known = pinned
                    .get(&r.workflow)
                    .is_some_and(|m| m.contains_key(&r.workflow_version));
                let key = (r.workflow.clone(), r.workflow_version);
                if cur != Some(r.workflow_version) && !known && !missing.contains(&key) {
                    missing.push(key);
                }
            }
        }
        for (workflow, version) in missing {
            let loaded = load(store, project, &workflow, version).await?;
            if let Pinned::Broken(why) = &loaded {
                tracing::error!(%workflow, version, reason = %why, "a pinned version does not compile here");
            }
            self.pin(&workflow, version, loaded);
        }
        Ok(())
    }

    fn pin(&self, workflow: &str, version: u32, p: Pinned) {
        self.pinned
            .write()
            .expect("plans lock")
            .entry(workflow.to_string())
            .or_default()
            .insert(version, p);
    }

    /// Reads the latest deployed versions and makes them current where they are newer than
    /// (or differ at the same version from) the project's own; returns what changed.
    pub async fn refresh(
        &self,
        store: &dyn Store,
        project: &Project,
    ) -> Result<Vec<Change>, EngineError> {
        let latest = store.latest_versions().await?;
        let before = self.current();
        let mut plans = Vec::new();
        let mut refused = BTreeMap::new();
        for own in &project.plans {
            let id = own.id();
            let stored = latest.iter().find(|l| l.workflow == id);
            let own_hash = self.local_hash.get(id);
            let use_stored = stored.filter(|s| {
                s.version > own.workflow.version
                    || (s.version == own.workflow.version && Some(&s.hash) != own_hash)
            });
            let Some(s) = use_stored else {
                plans.push(Arc::new(own.clone()));
                continue;
            };
            match self
                .stored_plan(store, project, id, s.version, &before)
                .await?
            {
                Ok(p) => plans.push(p),
                Err(why) => {
                    refused.insert(id.to_string(), why);
                }
            }
        }
        plans.sort_by(|a, b| a.id().cmp(b.id()));
        let paused = paused_in(&plans, &store.controls().await?);
        let mut changes = changes(&before, &plans, &refused);
        changes.extend(pause_changes(&before.paused, &paused));
        if !changes.is_empty() {
            *self.current.write().expect("plans lock") = Arc::new(Current {
                plans,
                refused,
                paused,
            });
        }
        Ok(changes)
    }

    /// The stored `version` of `id` compiled here (from the current plans or the cache
    /// when it is there), or why it cannot be.
    async fn stored_plan(
        &self,
        store: &dyn Store,
        project: &Project,
        id: &str,
        version: u32,
        before: &Current,
    ) -> Result<Result<Arc<Plan>, String>, EngineError> {
        if let Some(p) = before.get(id).filter(|p| p.workflow.version == version) {
            return Ok(Ok(p.clone()));
        }
        let cached = self
            .pinned
            .read()
            .expect("plans lock")
            .get(id)
            .and_then(|m| m.get(&version))
            .cloned();
        let loaded = match cached {
            Some(p) => p,
            None => load(store, project, id, version).await?,
        };
        self.pin(id, version, loaded.clone());
        Ok(match loaded {
            Pinned::Plan(p) => Ok(p),
            Pinned::Broken(why) => Err(format!(
                "deployed version {version} does not compile with this project: {why}"
            )),
            Pinned::NotStored => Err(format!("deployed version {version} is gone")),
        })
    }
}

/// What differs between the current plans `before` and the new ones.
fn changes(
    before: &Current,
    plans: &[Arc<Plan>],
    refused: &BTreeMap<String, String>,
) -> Vec<Change> {
    let mut out = Vec::new();
    for p in plans {
        let was = before.get(p.id()).map(|b| b.workflow.version);
        if was != Some(p.workflow.version) || before.refused.contains_key(p.id()) {
            out.push(Change::Current {
                workflow: p.id().to_string(),
                version: p.workflow.version,
            });
        }
    }
    for (w, why) in refused {
        if before.refused.get(w) != Some(why) {
            out.push(Change::Refused {
                workflow: w.clone(),
                reason: why.clone(),
            });
        }
    }
    out
}

/// The paused workflows among `plans`: `enabled: false` in the file, or paused by an
/// operator (the last control of each workflow).
fn paused_in(plans: &[Arc<Plan>], controls: &[WorkflowControl]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for p in plans.iter().filter(|p| !p.workflow.enabled) {
        let why = format!("`enabled: false` in version {}", p.workflow.version);
        out.insert(p.id().to_string(), why);
    }
    for c in controls.iter().filter(|c| c.paused) {
        let why = format!(
            "paused by {} at {}: {}",
            c.by,
            nurture_store::ts_out(c.at),
            c.reason
        );
        out.insert(c.workflow.clone(), why);
    }
    out
}

/// The workflows paused or resumed between `before` and `now`.
fn pause_changes(before: &BTreeMap<String, String>, now: &BTreeMap<String, String>) -> Vec<Change> {
    let mut out: Vec<Change> = now
        .iter()
        .filter(|(w, why)| before.get(*w) != Some(*why))
        .map(|(w, why)| Change::Paused {
            workflow: w.clone(),
            reason: Some(why.clone()),
        })
        .collect();
    out.extend(
        before
            .keys()
            .filter(|w| !now.contains_key(*w))
            .map(|w| Change::Paused {
                workflow: w.clone(),
                reason: None,
            }),
    );
    out
}

/// Version `version` of `workflow` from the store, compiled against `project`.
async fn load(
    store: &dyn Store,
    project: &Project,
    workflow: &str,
    version: u32,
) -> Result<Pinned, EngineError> {
    let Some(v) = store.workflow_version(workflow, version).await? else {
        return Ok(Pinned::NotStored);
    };
    Ok(match compile_stored(project, &v) {
        Ok(p) => Pinned::Plan(Arc::new(p)),
        Err(why) => Pinned::Broken(why),
    })
}

/// A stored version compiled with `project`'s settings, segments, templates and plugins;
/// the first error's message when it does not compile.
pub fn compile_stored(
    project: &Project,
    v: &nurture_store::WorkflowVersion,
) -> Result<Plan, String> {
    let ctx = nurture_core::plan::Context {
        settings: &project.settings,
        segments: &project.segments,
        templates: &project.templates,
        plugins: &project.plugins,
    };
    let (plan, diags) = nurture_core::project::check_source(&ctx, Path::new(&v.path), &v.source);
    match plan {
        Some(p) if p.id() == v.workflow && p.workflow.version == v.version => Ok(p),
        Some(_) => Err("the stored file names another workflow or version".into()),
        None => Err(diags
            .iter()
            .find(|d| d.severity == nurture_core::diag::Severity::Error)
            .map_or_else(|| "it does not compile".into(), |d| d.message.clone())),
    }
}
