//! # nurture-core: the campaign language
//!
//! The language half of nurture, a durable, plugin-extensible runtime for
//! marketing-automation campaigns. No async runtime, database, wasm or network client here:
//! validating a workflow compiles this crate alone.
//!
//! Marketers keep campaigns as files in git (a *project*: `nurture.toml`, `scoring.yaml`,
//! `segments.yaml`, `templates/`, `workflows/*.yaml`). This crate loads such a project,
//! validates it with precise diagnostics, and compiles each workflow into a [`plan::Plan`]:
//! a petgraph DAG of steps that the engine executes.
//!
//! ```no_run
//! let loaded = nurture_core::project::load(std::path::Path::new("workflows"));
//! if loaded.errors() > 0 {
//!     eprintln!("{}", loaded.render());
//! } else {
//!     for plan in &loaded.project.unwrap().plans {
//!         println!("{}", plan.to_mermaid());
//!     }
//! }
//! ```
//!
//! Modules, from the bottom up:
//! - [`yaml`]: a YAML tree that keeps line and column of every node;
//! - [`model`]: the typed file format (serde + JSON Schema);
//! - [`expr`]: CEL conditions and `${...}` interpolation checks;
//! - [`project`]: loading a folder, collecting every diagnostic;
//! - [`plan`]: compilation to a DAG, validation, DOT/Mermaid rendering;
//! - [`diag`]: diagnostics with stable codes (see `docs/errors.md`);
//! - [`versions`]: content hashes, diffs between versions, where a deploy moves runs;
//! - [`lint`]: event names ingestion refuses, contact fields that may be missing;
//! - [`events`]: the event type rule;
//! - [`template`]: email templates (minijinja), rendering and checks;
//! - [`schema`]: JSON Schemas of the project's files, for editors;
//! - [`aging`]: scoring rules whose points decay or expire.

#![warn(missing_docs)]
#![warn(unreachable_pub)]

pub mod aging;
pub mod diag;
pub mod eval;
pub mod event;
pub mod events;
pub mod expr;
pub mod lint;
pub mod model;
pub mod plan;
pub mod project;
pub mod schema;
pub mod template;
pub mod versions;
pub mod yaml;

/// The JSON Schema of a workflow file, as committed in `schema/workflow.schema.json`
/// ([`schema::SchemaFile`] has the other files').
pub fn workflow_schema() -> String {
    schema::SchemaFile::Workflow.json()
}
