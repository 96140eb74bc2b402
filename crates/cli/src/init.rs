//! `nurture init [DIR]`: a new campaign project that validates as it is.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};

const SETTINGS: &str = r#"#:schema ./schema/nurture.schema.json
# Settings of this campaign project. Every key is optional: docs/operators.md.
# store = "sqlite://nurture.db"        # default: a SQLite file in this folder
timezone = "UTC"                       # default for workflows that set none
# plugin_dirs = ["plugins"]            # where plugin folders are (default: plugins/)

[sender]
from = "Your Team <hello@example.com>"

# [smtp]                                # without it, emails are written to outbox/*.eml
# url = "smtp://user@smtp.example.com:587"
"#;

const WORKFLOW: &str = r#"# yaml-language-server: $schema=../schema/workflow.schema.json
# A welcome series: an email when someone signs up, a tip three days later unless they
# became a customer meanwhile. Check it with `nurture validate`, try it with
# `nurture simulate`, run it with `nurture run`.
workflow: welcome
name: Welcome series
version: 1
trigger:
  event: form.submitted
exit_if: contact.lifecycle == "customer"

steps:
  - id: hello
    send_email: welcome
  - id: pause
    wait: 3d
  - id: tip
    send_email:
      template: welcome
      subject: "A tip to get started"
"#;

const TEMPLATE: &str = r#"---
subject: "Welcome aboard"
preheader: "Glad to have you"
---
<p>Hi {{ contact.first_name | default("there") }},</p>
<p>Thanks for signing up. Reply to this email if we can help.</p>
<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>
"#;

const SEGMENTS: &str = r#"# yaml-language-server: $schema=schema/segments.schema.json
# Dynamic segments: re-evaluated whenever a contact changes. docs/marketers.md
- id: engaged
  name: Opened an email in the past month
  if: activity("email.opened", "30d") > 0
"#;

const SCORING: &str = r#"# yaml-language-server: $schema=schema/scoring.schema.json
# Lead scoring: every matching rule adds its points. docs/marketers.md
rules:
  - { event: email.opened, points: 10 }
  - { event: form.submitted, points: 20 }
grades: { hot: 100, warm: 40 }
"#;

const GITIGNORE: &str = r#"# The store, the emails written without SMTP, and .nurture/ (the API and tracking keys).
nurture.db*
outbox/
.nurture/
"#;

/// The files of a new project: path and content.
fn files() -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = [
        ("nurture.toml", SETTINGS),
        ("workflows/welcome.yaml", WORKFLOW),
        ("templates/welcome.html", TEMPLATE),
        ("segments.yaml", SEGMENTS),
        ("scoring.yaml", SCORING),
        (".gitignore", GITIGNORE),
    ]
    .into_iter()
    .map(|(p, t)| (p.to_string(), t.to_string()))
    .collect();
    for schema in nurture_core::schema::SchemaFile::ALL {
        files.push((format!("schema/{}", schema.file_name()), schema.json()));
    }
    files
}

/// `nurture init DIR`: writes a new project; refuses to touch a folder that has one.
pub(crate) fn init(dir: &Path) -> Result<ExitCode> {
    if dir.join("nurture.toml").exists() {
        bail!(
            "{} already holds a project (nurture.toml); nothing was written",
            dir.display()
        );
    }
    let files = files();
    if let Some((p, _)) = files.iter().find(|(p, _)| dir.join(p).exists()) {
        bail!("{} exists; nothing was written", dir.join(p).display());
    }
    for (path, text) in &files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let shown = dir.display();
    println!("created a campaign project in {shown}:");
    for (path, _) in &files {
        println!("  {path}");
    }
    println!("next: `nurture validate {shown}`, then `nurture run {shown}`");
    Ok(ExitCode::SUCCESS)
}
