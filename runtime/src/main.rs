//! The `nurture` command: a thin layer over the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand, ValueEnum};

use nurture::project;

#[derive(Parser)]
#[command(
    name = "nurture",
    version,
    about = "Durable runtime for marketing-automation campaigns kept as files in git",
    long_about = "nurture loads a campaign project (nurture.toml, scoring.yaml, segments.yaml, \
templates/, workflows/*.yaml), validates it, and runs its workflows durably.\n\n\
Start with `nurture validate workflows/` on the example project in this repository.",
    after_help = "Docs: README.md, docs/marketers.md (file format), docs/errors.md (error codes)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum OutputFormat {
    /// For people: errors with the source line underlined.
    Human,
    /// For scripts and editors: one JSON document.
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum GraphFormat {
    /// Graphviz: `nurture graph FILE | dot -Tsvg > flow.svg`.
    Dot,
    /// Mermaid flowchart, renders in GitHub and GitLab markdown.
    Mermaid,
    /// The compiled plan as JSON (nodes and labelled edges).
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Check a campaign project: every file, every reference, every expression.
    ///
    /// Reports all problems at once with file:line:column, a reason and a hint.
    /// Exit status: 0 when valid, 1 when there are errors, 2 when nurture itself failed.
    Validate {
        /// The project folder (holds workflows/, templates/, nurture.toml...).
        #[arg(default_value = ".")]
        dir: PathBuf,
        #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
        format: OutputFormat,
    },
    /// Draw a workflow's compiled graph (steps labelled with their kind, edges with
    /// yes/no/timeout/variant).
    Graph {
        /// A workflow file inside a project's workflows/ folder.
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
    },
    /// Print the JSON Schema of workflow files (for editor autocompletion).
    ///
    /// Put `# yaml-language-server: $schema=../schema/workflow.schema.json` at the top of a
    /// workflow file, or point your editor at the output of this command.
    Schema,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Validate { dir, format } => validate(&dir, format),
        Command::Graph { file, format } => graph(&file, format),
        Command::Schema => {
            print!("{}", nurture::workflow_schema());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn validate(dir: &Path, format: OutputFormat) -> Result<ExitCode> {
    if !dir.is_dir() {
        bail!("{} is not a folder", dir.display());
    }
    let loaded = project::load(dir);
    let errors = loaded.errors();
    match format {
        OutputFormat::Json => {
            let out = serde_json::json!({
                "ok": errors == 0,
                "errors": errors,
                "diagnostics": loaded.diagnostics.iter().map(|d| d.to_json()).collect::<Vec<_>>(),
                "workflows": loaded.project.as_ref().map(|p| p.plans.iter().map(|pl| serde_json::json!({
                    "id": pl.id(),
                    "file": pl.file.display().to_string(),
                    "steps": pl.workflow.steps.len(),
                })).collect::<Vec<_>>()),
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        OutputFormat::Human => {
            if errors > 0 {
                eprint!("{}", loaded.render());
                eprintln!(
                    "\n{errors} error{} in {}; nothing was deployed",
                    if errors == 1 { "" } else { "s" },
                    dir.display()
                );
            } else if let Some(p) = &loaded.project {
                let steps: usize = p.plans.iter().map(|pl| pl.workflow.steps.len()).sum();
                println!(
                    "ok: {} workflow{} ({steps} steps), {} template{}, {} segment{}, {} scoring rule{}, {} plugin{}",
                    p.plans.len(),
                    plural(p.plans.len()),
                    p.templates.len(),
                    plural(p.templates.len()),
                    p.segments.len(),
                    plural(p.segments.len()),
                    p.scoring.rules.len(),
                    plural(p.scoring.rules.len()),
                    p.plugins.len(),
                    plural(p.plugins.len()),
                );
                for pl in &p.plans {
                    println!("  {:<28} {}", pl.id(), pl.file.display());
                }
            }
        }
    }
    Ok(if errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The project folder of a workflow file: the parent of its `workflows/` folder.
fn project_of(file: &Path) -> Result<PathBuf> {
    let file = file
        .canonicalize()
        .with_context(|| format!("cannot open {}", file.display()))?;
    let dir = file.parent().context("workflow file has no folder")?;
    if dir.file_name().and_then(|n| n.to_str()) != Some("workflows") {
        bail!(
            "{} is not inside a project's workflows/ folder",
            file.display()
        );
    }
    Ok(dir.parent().context("no project folder")?.to_path_buf())
}

fn graph(file: &Path, format: GraphFormat) -> Result<ExitCode> {
    let root = project_of(file)?;
    let loaded = project::load(&root);
    let wanted = file.canonicalize()?;
    let Some(project) = &loaded.project else {
        eprint!("{}", loaded.render());
        eprintln!("\nthe project has errors; fix them to draw the graph");
        return Ok(ExitCode::from(1));
    };
    let plan = project
        .plans
        .iter()
        .find(|p| p.file.canonicalize().ok().as_deref() == Some(wanted.as_path()))
        .context("this file defines no workflow")?;
    match format {
        GraphFormat::Dot => print!("{}", plan.to_dot()),
        GraphFormat::Mermaid => print!("{}", plan.to_mermaid()),
        GraphFormat::Json => println!("{}", serde_json::to_string_pretty(&plan.view())?),
    }
    Ok(ExitCode::SUCCESS)
}
