//! The `nurture` command: a thin layer over the library.

#![warn(unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand, ValueEnum};

use nurture_core::project;

mod bench;
mod commands;
mod compact;
mod deploy;
mod init;
mod input;
mod keys;
mod logs;
mod manual;
mod outbox;
mod pipes;
mod privacy;
mod replay;
mod report;
mod scoring;
mod workflows;
mod workspaces;

/// mimalloc instead of the system allocator: the engine builds and drops many small JSON
/// values per step, and glibc's malloc spent a fifth of the process's time on them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

/// The parts of `nurture bench`.
#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum BenchPart {
    /// (a) durable steps/s on SQLite (and Postgres with --postgres), with the ceilings.
    Steps,
    /// (b) events/s over HTTP.
    Http,
    /// (c) event-to-effect latency at a fixed rate.
    Latency,
    /// (d) worker memory over pending waits.
    Pending,
    /// (e) speed-up from more worker processes (with --postgres).
    Workers,
    /// the wasm plugin host's per-call cost.
    Plugin,
    /// (f) journal entries replayed per second (bulk replay in one process).
    Replay,
    /// (g) report latency on a store with many runs.
    Report,
    /// (h) effects/s of the simulator (`nurture check`, `nurture simulate`).
    Simulate,
    /// (h) events/s of `nurture scoring backtest`.
    Backtest,
    /// (i) journal bytes per step on disk, before and after `nurture store compact`.
    Storage,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum OutputFormat {
    /// For people: errors with the source line underlined.
    Human,
    /// For scripts and editors: one JSON document.
    Json,
}

#[derive(clap::Args)]
struct ReportArgs {
    /// The project folder (default: the nearest folder holding nurture.toml, from here up).
    dir: Option<PathBuf>,
    /// Only this workflow, with its steps, edges, emails and splits.
    #[arg(long)]
    workflow: Option<String>,
    /// Only runs of this version of the workflow (default: all versions).
    #[arg(long, requires = "workflow")]
    version: Option<u32>,
    /// From this time: RFC 3339, a date (2026-03-01), or an age (7d, 12h).
    #[arg(long, value_parser = parse_when)]
    since: Option<chrono::DateTime<chrono::Utc>>,
    /// Before this time (same forms as --since).
    #[arg(long, value_parser = parse_when)]
    until: Option<chrono::DateTime<chrono::Utc>>,
    /// Also break the workflow's figures down per day or week.
    #[arg(long, value_parser = ["day", "week"])]
    by: Option<String>,
    /// Contacts each variant of a split needs before a winner is named.
    #[arg(long, default_value_t = nurture_engine::report::DEFAULT_MIN_SAMPLE)]
    min_sample: i64,
    /// Instead: the sends held back (quiet hours, frequency cap, rate limit, consent,
    /// unsubscribed, suppression, no address), summed by the rule that held them, with
    /// the rule's settings and the steps it held. Each is in its run's journal with the
    /// rule and its parameters (`nurture runs show RUN --format json`).
    #[arg(long, conflicts_with = "by")]
    held_back: bool,
    /// Store URL (default: `store` in nurture.toml, else sqlite://DIR/nurture.db).
    #[arg(long)]
    store: Option<String>,
    /// Output: `human` tables, `json` (one document) or `csv` (one row per figure).
    #[arg(long, value_enum, default_value_t = report::ReportFormat::Human)]
    format: report::ReportFormat,
}

/// The files `nurture schema` describes.
#[derive(Clone, Copy, ValueEnum)]
enum SchemaArg {
    /// A workflow file (`workflows/*.yaml`).
    Workflow,
    /// `scoring.yaml`.
    Scoring,
    /// `segments.yaml`.
    Segments,
    /// `policies.yaml`.
    Policies,
    /// `nurture.toml`.
    Settings,
}

impl SchemaArg {
    fn schema(self) -> nurture_core::schema::SchemaFile {
        use nurture_core::schema::SchemaFile;
        match self {
            Self::Workflow => SchemaFile::Workflow,
            Self::Scoring => SchemaFile::Scoring,
            Self::Segments => SchemaFile::Segments,
            Self::Policies => SchemaFile::Policies,
            Self::Settings => SchemaFile::Settings,
        }
    }
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
    /// Create a campaign project: settings, a welcome workflow and its template,
    /// segments, scoring, the workflow schema for editors, and a .gitignore that keeps
    /// the store, the outbox and the keys in .nurture/ out of git.
    ///
    /// Refuses a folder that already holds a project (nothing is overwritten).
    Init {
        /// The folder to create it in (created if missing).
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Check a campaign project: every file, every reference, every expression.
    ///
    /// Reports all problems at once with file:line:column, a reason and a hint.
    /// Exit status: 0 when valid, 1 when there are errors, 2 when nurture itself failed.
    Validate {
        /// The project folder (default: the nearest folder holding nurture.toml, from here up).
        dir: Option<PathBuf>,
        /// Output: `human` for people, `json` (one JSON document) for scripts.
        #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
        format: OutputFormat,
    },
    /// Draw a workflow's compiled graph (steps labelled with their kind, edges with
    /// yes/no/timeout/variant).
    Graph {
        /// A workflow file inside a project's workflows/ folder.
        file: PathBuf,
        /// `dot` (Graphviz), `mermaid` (markdown), or `json` (the compiled plan).
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
    },
    /// Dry-run a campaign: the real engine on a virtual clock, nothing sent.
    ///
    /// Prints one JSON object per effect on stdout, in time order (enter, email,
    /// email_skipped, score, tag, untag, set, assign_owner, notify, webhook, plugin, wait,
    /// exit). The same input gives the same output, byte for byte. A summary goes to
    /// stderr. Runs from the first event to --until, or until nothing is pending.
    Simulate {
        /// The project folder (default: the nearest folder holding nurture.toml, from here up).
        dir: Option<PathBuf>,
        /// Contacts: JSON Lines or CSV (id, email, first_name, timezone, consent, tags...);
        /// `-` reads standard input.
        #[arg(long)]
        contacts: Option<PathBuf>,
        /// The format of --contacts when its extension cannot tell (default: by the
        /// extension; for `-`, JSON Lines when the first line starts with `{`).
        #[arg(long, value_enum)]
        input_format: Option<input::InputFormatArg>,
        /// Events: JSON Lines, one {"type", "contact" or "email", "at", "data"} per line;
        /// `-` reads standard input.
        #[arg(long)]
        events: Option<PathBuf>,
        /// Stop at this time (RFC 3339). Default: when nothing is pending.
        #[arg(long, value_parser = parse_time)]
        until: Option<chrono::DateTime<chrono::Utc>>,
        /// Start at this time instead of the first event's.
        #[arg(long, value_parser = parse_time)]
        start: Option<chrono::DateTime<chrono::Utc>>,
        /// Then print the report of the simulated run (`nurture report` on it): the
        /// funnel, emails and splits a marketer can expect before going live.
        #[arg(long)]
        report: bool,
    },
    /// Prove the project's policies (policies.yaml) by simulation.
    ///
    /// Generates a population from --seed (time zones with and without DST, consent
    /// states, lifecycle stages, events of the project's triggers and `wait_for` steps),
    /// adds the sample files if given, runs the real engine on a virtual clock over
    /// --horizon and holds every policy against what it did. Each policy broken is
    /// reported with a shrunk counterexample and its explain story. Exits 1 when a policy
    /// is broken.
    Check {
        /// The project folder (default: the nearest folder holding nurture.toml, from here up).
        dir: Option<PathBuf>,
        /// Sample contacts to add (JSON Lines or CSV).
        #[arg(long)]
        contacts: Option<PathBuf>,
        /// Sample events to add (JSON Lines).
        #[arg(long)]
        events: Option<PathBuf>,
        /// How long to simulate (at most 3650d).
        #[arg(long, default_value = "120d")]
        horizon: String,
        /// The population's seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// How many contacts to generate (at most 10,000).
        #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u32).range(0..=10_000))]
        population: u32,
        /// The simulated start (RFC 3339).
        #[arg(long, value_parser = parse_time, default_value = "2026-03-02T00:00:00Z")]
        start: chrono::DateTime<chrono::Utc>,
        /// Output format.
        #[arg(long, value_enum, default_value = "human")]
        format: OutputFormat,
    },
    /// Run the campaigns: the scheduler and the HTTP API on the project's store.
    ///
    /// Opens (or creates) the store (default: SQLite file nurture.db in the project),
    /// applies incoming events, fires due waits and schedules, delivers the outbox, and
    /// serves the HTTP API. Stops cleanly on Ctrl-C or SIGTERM.
    Run {
        /// The project folder (default: the nearest folder holding nurture.toml, from here up).
        dir: Option<PathBuf>,
        /// Address for the HTTP API (default: [api].listen in nurture.toml, else 127.0.0.1:8025).
        #[arg(long)]
        listen: Option<String>,
        /// Store URL (default: `store` in nurture.toml, else sqlite://DIR/nurture.db).
        #[arg(long)]
        store: Option<String>,
        /// Serve several workspaces (projects) from one process, as listed in this file
        /// (docs/operators.md, "Workspaces"); instead of DIR and --store.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["dir", "store"])]
        workspaces: Option<PathBuf>,
        /// Log as JSON lines instead of text.
        #[arg(long)]
        log_json: bool,
        /// Longest sleep between scheduler passes, in milliseconds.
        #[arg(long, default_value_t = 1000, hide = true)]
        poll_ms: u64,
    },
    /// The HTTP API only (no step execution): scale ingestion apart from execution.
    ///
    /// Any number of `serve` and `worker` processes can share one Postgres store.
    Serve {
        /// The project folder (default: the nearest folder holding nurture.toml, from here up).
        dir: Option<PathBuf>,
        /// Address for the HTTP API (default: [api].listen in nurture.toml, else 127.0.0.1:8025).
        #[arg(long)]
        listen: Option<String>,
        /// Store URL, e.g. postgres://nurture@db/nurture.
        #[arg(long, alias = "database-url")]
        store: Option<String>,
        /// Serve several workspaces (projects) from one process, as listed in this file
        /// (docs/operators.md, "Workspaces"); instead of DIR and --store.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["dir", "store"])]
        workspaces: Option<PathBuf>,
        /// Log as JSON lines instead of text.
        #[arg(long)]
        log_json: bool,
    },
    /// Execute steps only (no HTTP API; metrics with --metrics-listen): events, timers,
    /// schedules and the outbox.
    ///
    /// Run as many as you need against one Postgres store; a unit of work another worker
    /// committed first is skipped (fenced by row versions), never done twice.
    Worker {
        /// The project folder (default: the nearest folder holding nurture.toml, from here up).
        dir: Option<PathBuf>,
        /// Store URL, e.g. postgres://nurture@db/nurture.
        #[arg(long, alias = "database-url")]
        store: Option<String>,
        /// Serve this worker's Prometheus metrics on ADDR (e.g. 127.0.0.1:9025):
        /// `GET /metrics` with the API key (as on the API; scope `reports:read`) and
        /// `GET /healthz`, nothing else. Its units, steps, commits and deliveries are
        /// counted here, not by `nurture serve`.
        #[arg(long, value_name = "ADDR", conflicts_with = "workspaces")]
        metrics_listen: Option<String>,
        /// Serve several workspaces (projects) from one process, as listed in this file
        /// (docs/operators.md, "Workspaces"); instead of DIR and --store.
        #[arg(long, value_name = "FILE", conflicts_with_all = ["dir", "store"])]
        workspaces: Option<PathBuf>,
        /// Log as JSON lines instead of text.
        #[arg(long)]
        log_json: bool,
        #[arg(long, default_value_t = 1000, hide = true)]
        poll_ms: u64,
    },
    /// List the workers executing steps against the store (Postgres): host, pid, when
    /// started and last seen, and their share of the database's concurrent group commits.
    ///
    /// Each worker refreshes its entry every second; one not seen for 5 s counts as gone.
    /// The database's concurrency (NURTURE_PG_LANES, default 4) is split among the live
    /// workers, so adding workers never piles more transactions onto the database.
    Workers {
        /// The project folder (default: the nearest folder holding nurture.toml, from here up).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Store URL, e.g. postgres://nurture@db/nurture.
        #[arg(long, alias = "database-url")]
        store: Option<String>,
        /// Output: `human` for people, `json` (one JSON document) for scripts.
        #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
        format: OutputFormat,
    },
    /// Publish the project's workflows to the store as new versions.
    ///
    /// Every workflow whose `version` is not deployed yet is stored, all at once or not
    /// at all; running `run`, `serve` and `worker` processes pick the new versions up
    /// within seconds. Open runs of older versions then keep their version, end as
    /// `superseded`, or move to the new one, as each workflow's `on_new_version` says.
    /// Prints, per workflow, the steps added, removed and changed and what happens to
    /// the open runs at each step. Refused (exit 1, nothing stored) when a `version` is
    /// already deployed with other content, when the project is older than what is
    /// deployed, when runs would be stranded at a step the new version lacks, or when
    /// runs stay on a version whose templates the project no longer has.
    Deploy {
        /// The project folder (default: the nearest folder holding nurture.toml, from here up).
        dir: Option<PathBuf>,
        /// Store URL (default: `store` in nurture.toml, else sqlite://DIR/nurture.db).
        #[arg(long, alias = "database-url")]
        store: Option<String>,
        /// Show what the deploy would do and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run: replay the latest N runs of each changed workflow on the new
        /// version and say which would now take another path, and where.
        #[arg(long, value_name = "N", requires = "dry_run")]
        replay: Option<i64>,
        /// Output: `human` for people, `json` (one JSON document) for scripts.
        #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
        format: OutputFormat,
    },
    /// List the deployed versions of the workflows (or of one) with their open runs.
    ///
    /// `*` marks the version new enrolments use; runs stay on the version they started on.
    Versions {
        /// Only this workflow.
        workflow: Option<String>,
        /// The project folder (default: the nearest folder holding nurture.toml, from here up).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Store URL (default: `store` in nurture.toml, else sqlite://DIR/nurture.db).
        #[arg(long, alias = "database-url")]
        store: Option<String>,
        /// Output: `human` for people, `json` (one JSON document) for scripts.
        #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
        format: OutputFormat,
    },
    /// The workflows: deployed version, paused or running, open runs per step; pause
    /// and resume them.
    #[command(subcommand)]
    Workflows(WorkflowsCommand),
    /// Manage contacts in the project's store.
    #[command(subcommand)]
    Contacts(ContactsCommand),
    /// API keys with scopes (stored hashed): create, list, revoke.
    ///
    /// Scopes: events:write (send events, contacts, bounces), contacts:read (read
    /// contacts and runs, export a person), contacts:erase, reports:read (reports and
    /// /metrics), admin (everything, and the dashboard). The server's own key
    /// (NURTURE_API_KEY) has every scope.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The audit log: every export and erasure of a person, who did it, when, from where
    /// (the person as a salted hash).
    Audit {
        /// The newest this many lines.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// The project folder (default: the nearest folder holding nurture.toml, from here up).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Store URL (default: `store` in nurture.toml, else sqlite://DIR/nurture.db).
        #[arg(long)]
        store: Option<String>,
        /// `human` for people, `json` for scripts.
        #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
        format: OutputFormat,
    },
    /// Send events into the project's store (the running scheduler picks them up).
    #[command(subcommand)]
    Events(EventsCommand),
    /// Inspect runs: one contact's walk through one workflow, with its journal.
    #[command(subcommand)]
    Runs(RunsCommand),
    /// Replay many runs of a workflow from their journals (nothing is sent, the store is
    /// only read) and say which would now take another path: identical, diverged
    /// (grouped by the step of the first divergence) or failed. Exit 1 unless all are
    /// identical. `nurture runs replay` replays one run and shows its divergence.
    Replay {
        /// The workflow whose runs to replay.
        #[arg(long)]
        workflow: String,
        /// Only runs pinned to this version.
        #[arg(long)]
        version: Option<u32>,
        /// Only runs started at or after this time (RFC 3339).
        #[arg(long, value_parser = parse_time)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// At most this many runs (the latest).
        #[arg(long, default_value_t = 1000)]
        limit: i64,
        /// Replay on this project's version of the workflow instead of the recorded one:
        /// what these runs would have done under the edited workflow.
        #[arg(long, value_name = "DIR")]
        against: Option<PathBuf>,
        /// The project folder (default: the nearest folder holding nurture.toml, from here up).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Store URL (default: `store` in nurture.toml, else sqlite://DIR/nurture.db).
        #[arg(long)]
        store: Option<String>,
        /// Output: `human` for people, `json` (one JSON document) for scripts.
        #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
        format: OutputFormat,
    },
    /// Measure the engine: durable steps/s against the store's own commit ceiling,
    /// HTTP ingestion and peak memory. Build with --release for meaningful figures.
    Bench(BenchArgs),
    /// Campaign reports: each workflow's funnel on its steps and edges, exits, goal
    /// conversion and median time to goal; its emails' sends, engagement and rates; its
    /// A/B splits with a two-proportion z-test; and the lead funnel (stage changes, time
    /// between stages, and which scoring reasons made MQLs).
    ///
    /// Counts are kept in the same commit as each step, so a report reads a few rows
    /// whatever the store's size. Without --workflow: one line per workflow and the lead
    /// funnel.
    Report(ReportArgs),
    /// Lead scoring: backtest a change of scoring.yaml on the stored event history.
    #[command(subcommand)]
    Scoring(ScoringCommand),
    /// Email: preview a template as a contact would receive it.
    #[command(subcommand)]
    Email(EmailCommand),
    /// The outbox: what was queued, sent, deferred or failed, and why; requeue an entry an
    /// operator has checked (`ambiguous` or `failed`).
    #[command(subcommand)]
    Outbox(OutboxCommand),
    /// The store: bound its journal (`compact`).
    #[command(subcommand)]
    Store(StoreCommand),
    /// The plugins of a project: list them with their permissions, build them from source.
    #[command(subcommand)]
    Plugins(PluginsCommand),
    /// Plugin development: scaffold a new plugin crate.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Print the JSON Schema of workflow files (for editor autocompletion).
    ///
    /// The examples start with `# yaml-language-server:
    /// $schema=../../schema/workflow.schema.json` (the repository's `schema/` folder, two
    /// levels up from `workflows/workflows/`); a project made by `nurture init` has its
    /// own copy, `$schema=../schema/workflow.schema.json`. Or point your editor at the
    /// output of this command: `nurture schema > workflow.schema.json`.
    ///
    /// `nurture schema scoring`, `segments` and `settings` print the schemas of
    /// `scoring.yaml`, `segments.yaml` and `nurture.toml` (for Taplo:
    /// `#:schema ./schema/nurture.schema.json` on the first line).
    Schema {
        /// Which file's schema.
        #[arg(value_enum, default_value_t = SchemaArg::Workflow)]
        file: SchemaArg,
    },
    /// Print the OpenAPI 3.1 document of the HTTP API (JSON).
    ///
    /// The same document a running server serves at `GET /openapi.json` (no API key
    /// needed) and the repository keeps as `schema/openapi.json`; after changing a route,
    /// regenerate that file with `nurture openapi > schema/openapi.json`. Feed it to a
    /// client generator or an API explorer.
    Openapi,
    /// Print a shell completion script: `nurture completions bash >
    /// ~/.local/share/bash-completion/completions/nurture`, `nurture completions zsh >
    /// "${fpath[1]}/_nurture"`, `nurture completions fish >
    /// ~/.config/fish/completions/nurture.fish`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

impl Command {
    /// Whether the command serves connections for long (a closed client connection
    /// must not end it).
    fn serves(&self) -> bool {
        matches!(
            self,
            Self::Run { .. } | Self::Serve { .. } | Self::Worker { .. } | Self::Bench(_)
        )
    }
}

/// The options of `nurture bench`.
#[derive(clap::Args)]
struct BenchArgs {
    /// Contacts walking the 6-step benchmark campaign.
    #[arg(long, default_value_t = 100_000)]
    contacts: usize,
    /// Also measure on this Postgres database (it gets a `nurture` schema).
    #[arg(long)]
    postgres: Option<String>,
    /// Measure steps/s and waiting contacts on SQLite too (`--sqlite false` for Postgres
    /// only).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    sqlite: bool,
    /// Events posted over HTTP.
    #[arg(long, default_value_t = 20_000)]
    http_events: usize,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Plugin folder (built) whose per-call overhead to measure; `none` to skip.
    /// Its `send` step is called with an empty phone number, so it returns before any
    /// network: the figure is the host's own cost.
    #[arg(long, default_value = "plugins/sms")]
    plugin: String,
    /// Plugin calls to time.
    #[arg(long, default_value_t = 5_000)]
    plugin_calls: usize,
    /// (c) Events per second of the latency runs, one or more (comma-separated; 0 to
    /// skip): each rate is run --latency-runs times, the rates alternating.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
    latency_rate: Vec<u32>,
    /// (c) Runs at each rate (each with a fresh store and server): the table says in how
    /// many the p99 stayed under its target (20 ms at 1,000 events/s, 50 ms above).
    #[arg(long, default_value_t = 10)]
    latency_runs: usize,
    /// (c) Seconds of the measured latency run, after a 1-second warm-up at the same
    /// rate (reported apart, not counted).
    #[arg(long, default_value_t = 10)]
    latency_seconds: u32,
    /// (d) Waiting contacts (a run each, waiting on a timer) under a worker process, on
    /// SQLite and, with --postgres, on Postgres (its tables are emptied); 0 to skip.
    #[arg(long, default_value_t = 1_000_000)]
    pending_waits: usize,
    /// (d) Of them, made due at one instant for the worker to fire.
    #[arg(long, default_value_t = 1_000_000)]
    pending_due: usize,
    /// (d) Seconds the worker may take to fire the due waits (its rate is measured over
    /// the time it took, or this long).
    #[arg(long, default_value_t = 120.0)]
    pending_seconds: f64,
    /// (e) Worker counts to compare (with --postgres).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    workers: Vec<usize>,
    /// (e) Contacts per worker-count round.
    #[arg(long, default_value_t = 50_000)]
    worker_contacts: usize,
    /// (e) Rounds per worker count (the figure is their median; each round starts
    /// from empty tables).
    #[arg(long, default_value_t = 3)]
    worker_repeats: usize,
    /// (f) Runs recorded and then replayed (0 to skip).
    #[arg(long, default_value_t = 20_000)]
    replay_runs: usize,
    /// (g) Runs in the store whose report latency is measured (comma-separated; 0 to
    /// skip): SQLite, and Postgres with --postgres (its tables are emptied).
    #[arg(long, value_delimiter = ',', default_value = "1000000,10000000")]
    report_runs: Vec<usize>,
    /// (h) The project the simulator and the backtest run on (its workflows and
    /// scoring rules).
    #[arg(long, default_value = "workflows")]
    speed_project: PathBuf,
    /// (h) Contacts of the simulated population (0 to skip).
    #[arg(long, default_value_t = 4_000)]
    simulate_contacts: usize,
    /// (h) Events of the backtest's generated history (0 to skip).
    #[arg(long, default_value_t = 1_000_000)]
    backtest_events: usize,
    /// (i) Contacts of the population whose journal is measured (0 to skip): a SQLite
    /// file, and Postgres with --postgres (its tables are emptied).
    #[arg(long, default_value_t = 2_000)]
    storage_contacts: usize,
    /// (i) Days the population's campaign runs.
    #[arg(long, default_value_t = 30)]
    storage_days: u32,
    /// (i) Seed of the population (1 by default; another seed gives other contacts and
    /// events, as for training the journal's dictionary: scripts/journal-dict.py).
    #[arg(long, default_value_t = 1)]
    storage_seed: u64,
    /// (i) Keep a copy of the SQLite store, as it is before compaction, in this file (and
    /// after compaction beside it, as NAME.compacted.db).
    #[arg(long)]
    storage_keep: Option<PathBuf>,
    /// Measure only these parts (comma-separated); all of them by default.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<BenchPart>,
}

#[derive(Subcommand)]
enum EmailCommand {
    /// Render TEMPLATE for a contact of the store: headers and text to stdout, or the
    /// whole message to an .eml file, or the HTML part to an .html file.
    Preview {
        /// Template name (a file of templates/ without extension).
        template: String,
        /// Contact id or email address.
        #[arg(long)]
        contact: String,
        /// The project folder (default: the nearest folder holding nurture.toml, from here up).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Store URL (default: `store` in nurture.toml, else sqlite://DIR/nurture.db).
        #[arg(long)]
        store: Option<String>,
        /// Write to this file: `.eml` for the message, `.html` for the HTML part.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum WorkflowsCommand {
    /// Each workflow: its latest deployed version, running or paused (by whom, when,
    /// why), and its open runs per step and version.
    List {
        /// The project folder (default: the nearest folder holding nurture.toml, from here up).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Store URL (default: `store` in nurture.toml, else sqlite://DIR/nurture.db).
        #[arg(long)]
        store: Option<String>,
        /// Output: `human` for people, `json` (one JSON document) for scripts.
        #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
        format: OutputFormat,
    },
    /// Pause a workflow for every process of the store: it enrols nobody, and its runs'
    /// timers and sends are held (they go out, late, after `resume`, with quiet hours
    /// and caps applied then). Recorded with who and why.
    Pause {
        /// The workflow's id.
        workflow: String,
        /// Why: shown by `workflows list` and in the logs.
        #[arg(long)]
        reason: String,
        /// The project folder (default: the nearest folder holding nurture.toml, from here up).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Store URL (default: `store` in nurture.toml, else sqlite://DIR/nurture.db).
        #[arg(long)]
        store: Option<String>,
    },
    /// Resume a paused workflow: enrolments start again and held timers and sends go
    /// out within 30 s.
    Resume {
        /// The workflow's id.
        workflow: String,
        /// Why: recorded with the resume.
        #[arg(long, default_value = "resumed")]
        reason: String,
        /// The project folder (default: the nearest folder holding nurture.toml, from here up).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Store URL (default: `store` in nurture.toml, else sqlite://DIR/nurture.db).
        #[arg(long)]
        store: Option<String>,
    },
}

#[derive(Subcommand)]
enum OutboxCommand {
    /// List outbox entries, newest first: key, channel, state (queued, retrying,
    /// deferred, sent, failed, ambiguous), contact, workflow and step, when due, and why.
    ///
    /// The keys of failed and ambiguous entries are what `nurture outbox retry` takes.
    List {
        /// Only entries in this state: queued, retrying, deferred, sent, failed, ambiguous,
        /// skipped (suppressed address).
        #[arg(long)]
        state: Option<nurture_store::OutboxState>,
        /// Only for this contact: its id or email address.
        #[arg(long)]
        contact: Option<String>,
        /// Only entries queued by this workflow.
        #[arg(long)]
        workflow: Option<String>,
        /// At most this many entries.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// The project folder (default: the nearest folder holding nurture.toml, from here up).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Store URL (default: `store` in nurture.toml, else sqlite://DIR/nurture.db).
        #[arg(long)]
        store: Option<String>,
        /// Output: `human` for people, `json` (one JSON document) for scripts.
        #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
        format: OutputFormat,
    },
    /// Put an `ambiguous` or `failed` entry back in the queue, e.g. after checking the
    /// mail server's log for its Message-ID.
    Retry {
        /// The entry's key (`nurture outbox list --state failed` shows them).
        key: String,
        /// The project folder (default: the nearest folder holding nurture.toml, from here up).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Store URL (default: `store` in nurture.toml, else sqlite://DIR/nurture.db).
        #[arg(long)]
        store: Option<String>,
    },
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Replace the journal of each run that ended longer ago than `[retention] journal`
    /// (nurture.toml) by ONE summary line (status, start and end, steps taken, effects
    /// counted by kind), then shrink a SQLite file (VACUUM). Open runs are never touched;
    /// `runs explain` of a compacted run says so, and such a run cannot be replayed.
    Compact {
        /// Count what would be compacted; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Keep this long instead of `[retention] journal` (e.g. 30d, 12w).
        #[arg(long)]
        older_than: Option<nurture_core::model::Duration>,
        /// The project folder (default: the nearest folder holding nurture.toml, from here up).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Store URL (default: `store` in nurture.toml, else sqlite://DIR/nurture.db).
        #[arg(long)]
        store: Option<String>,
        /// Output: `human` for people, `json` (one JSON document) for scripts.
        #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
        format: OutputFormat,
    },
}

#[derive(Subcommand)]
enum ScoringCommand {
    /// Recompute every contact's score over the stored events under the current rules
    /// and under `--scoring NEW.yaml`: who becomes an MQL (the top grade) under each,
    /// when, and the difference (newly MQL, no longer MQL, earlier, later). Read only.
    Backtest(scoring::BacktestArgs),
}

#[derive(Subcommand)]
enum PluginsCommand {
    /// List the project's plugins: version, interface, steps, the hosts each may call and
    /// the secrets each reads (and whether they are set). Loads every component, so a
    /// broken or stale build shows here.
    List {
        /// The project folder (default: the nearest folder holding nurture.toml, from here up).
        dir: Option<PathBuf>,
        /// Output: `human` for people, `json` (one JSON document) for scripts.
        #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
        format: OutputFormat,
    },
    /// Build every plugin that has sources (a Cargo.toml) to wasm32-wasip2 and put its
    /// component beside its plugin.toml. Adds the Rust target with rustup if missing.
    Build {
        /// The project folder (default: the nearest folder holding nurture.toml, from here up).
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Create a plugin crate: plugin.toml, a step that calls an HTTP API, and unit tests
    /// that run it natively against a scripted host. Then: `cd NAME && cargo test`.
    New {
        /// Plugin name (lowercase letters, digits and dashes).
        name: String,
        /// Folder to create it in (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Path of the nurture-plugin-sdk crate (default: this checkout's `sdk/`).
        #[arg(long)]
        sdk_path: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ContactsCommand {
    /// Import contacts from JSON Lines or CSV: new ones are created, known ones updated.
    ///
    /// Columns/keys: id, email, first_name, last_name, timezone, consent (opted_in,
    /// opted_out, unknown), tags (list or `a;b`), lifecycle, owner, and any other field
    /// (`company.employees` becomes a nested field). Bad rows are listed with their line
    /// and reason; good rows are kept. Exit status 1 when any row was rejected.
    Import {
        /// The contacts: JSON Lines, or CSV with a header row; `-` reads standard input.
        file: PathBuf,
        /// The file's format when its extension cannot tell (default: by the extension;
        /// for `-`, JSON Lines when the first line starts with `{`, else CSV).
        #[arg(long, value_enum)]
        input_format: Option<input::InputFormatArg>,
        /// The project folder (default: the nearest folder holding nurture.toml, from here up).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Store URL (default: `store` in nurture.toml, else sqlite://DIR/nurture.db).
        #[arg(long)]
        store: Option<String>,
        /// Output: `human` for people, `json` (one JSON document) for scripts.
        #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
        format: OutputFormat,
    },
    /// Show a contact: profile, consent, score with the history and reason of each
    /// change, segments and since when, lifecycle history, recent events and its runs.
    /// Works on a project with errors (it only reads the store).
    Show {
        /// The contact's id or email address.
        contact: String,
        /// Everything in one list in time order: events, runs entered and left, score,
        /// segment, lifecycle and consent changes, sends.
        #[arg(long)]
        timeline: bool,
        /// The project folder (default: the nearest folder holding nurture.toml, from here up).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Store URL (default: `store` in nurture.toml, else sqlite://DIR/nurture.db).
        #[arg(long)]
        store: Option<String>,
        /// `human` for people, `json` for scripts.
        #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
        format: OutputFormat,
    },
    /// Export everything stored about a person (GDPR Art. 15): one JSON document with
    /// the profile, consent history with its proof, every event, every run with its
    /// journal, what was sent and how it was engaged with, the score and its reasons,
    /// deliveries to plugins and webhooks. Works on a project with errors.
    Export {
        /// The contact's id or email address.
        contact: String,
        /// Write the document to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// The project folder (default: the nearest folder holding nurture.toml, from here up).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Store URL (default: `store` in nurture.toml, else sqlite://DIR/nurture.db).
        #[arg(long)]
        store: Option<String>,
    },
    /// Erase a person (GDPR Art. 17): end its open runs, cancel its queued sends, remove
    /// its profile, events, runs, journal, outbox entries, deliveries and `.eml` files.
    /// The address stays suppressed as a salted hash, so it is never mailed again, and
    /// report totals stay. Cannot be undone: needs --yes.
    Erase {
        /// The contact's id or email address.
        contact: String,
        /// Yes, erase it (nothing is done without it).
        #[arg(long)]
        yes: bool,
        /// The project folder (default: the nearest folder holding nurture.toml, from here up).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Store URL (default: `store` in nurture.toml, else sqlite://DIR/nurture.db).
        #[arg(long)]
        store: Option<String>,
        /// `human` for people, `json` for scripts.
        #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
        format: OutputFormat,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key; it is printed once (only its hash is stored).
    Create {
        /// A name for people: who or what uses the key.
        name: String,
        /// A scope it has (repeat for more): events:write, contacts:read,
        /// contacts:erase, reports:read, admin.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// The project folder (default: the nearest folder holding nurture.toml, from here up).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Store URL (default: `store` in nurture.toml, else sqlite://DIR/nurture.db).
        #[arg(long)]
        store: Option<String>,
        /// `human` prints the key alone on standard output; `json` prints it with its record.
        #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
        format: OutputFormat,
    },
    /// List the keys (never the keys themselves): id, name, scopes, created, revoked.
    List {
        /// The project folder (default: the nearest folder holding nurture.toml, from here up).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Store URL (default: `store` in nurture.toml, else sqlite://DIR/nurture.db).
        #[arg(long)]
        store: Option<String>,
        /// `human` for people, `json` for scripts.
        #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
        format: OutputFormat,
    },
    /// Revoke a key by its id: it stops working at once, in every process.
    Revoke {
        /// The key's id (`key_...`, from `nurture keys list`).
        id: String,
        /// The project folder (default: the nearest folder holding nurture.toml, from here up).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Store URL (default: `store` in nurture.toml, else sqlite://DIR/nurture.db).
        #[arg(long)]
        store: Option<String>,
    },
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Store events from a JSON Lines file (idempotent: an `id` seen before is ignored).
    ///
    /// Each line: {"id"?, "type", "contact" or "email", "at"?, "data"?}. An event for an
    /// unknown email creates the contact; one for an unknown contact id is rejected. Bad
    /// lines are listed with their reason; good ones are kept. Exit status 1 when any line
    /// was rejected.
    Send {
        /// The events: JSON Lines, one event per line; `-` reads standard input.
        file: PathBuf,
        /// The project folder (default: the nearest folder holding nurture.toml, from here up).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Store URL (default: `store` in nurture.toml, else sqlite://DIR/nurture.db).
        #[arg(long)]
        store: Option<String>,
        /// Output: `human` for people, `json` (one JSON document) for scripts.
        #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
        format: OutputFormat,
    },
}

#[derive(Subcommand)]
enum RunsCommand {
    /// List runs, newest first.
    List {
        /// The project folder (default: the nearest folder holding nurture.toml, from here up).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Store URL (default: `store` in nurture.toml, else sqlite://DIR/nurture.db).
        #[arg(long)]
        store: Option<String>,
        /// Only runs of this workflow (its id).
        #[arg(long)]
        workflow: Option<String>,
        /// Only runs of this contact: its id or email address.
        #[arg(long)]
        contact: Option<String>,
        /// active, waiting, completed, converted, exited or failed.
        #[arg(long)]
        status: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Output: `human` for people, `json` (one JSON document) for scripts.
        #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
        format: OutputFormat,
    },
    /// Cancel a run, or every open run of a contact: it ends `exited`, reason
    /// `cancelled`, with who and why in its journal (`runs show`).
    Cancel {
        /// The run's id (`nurture runs list` shows them); or give --contact.
        #[arg(required_unless_present = "contact")]
        run_id: Option<String>,
        /// Cancel every open run of this contact instead: its id or email address.
        #[arg(long, conflicts_with = "run_id")]
        contact: Option<String>,
        /// Why: kept in the run's journal.
        #[arg(long)]
        reason: String,
        /// The project folder (default: the nearest folder holding nurture.toml, from here up).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Store URL (default: `store` in nurture.toml, else sqlite://DIR/nurture.db).
        #[arg(long)]
        store: Option<String>,
    },
    /// Start a run of WORKFLOW for a contact now, whatever its triggers and re-entry
    /// say (refused while the contact is in it already); journaled with who and why.
    Start {
        /// The workflow's id.
        workflow: String,
        /// The contact: its id or email address.
        #[arg(long)]
        contact: String,
        /// Why: kept in the run's journal.
        #[arg(long, default_value = "started by hand")]
        reason: String,
        /// The project folder (default: the nearest folder holding nurture.toml, from here up).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Store URL (default: `store` in nurture.toml, else sqlite://DIR/nurture.db).
        #[arg(long)]
        store: Option<String>,
    },
    /// Explain a run in plain words, one line per decision: why the contact entered,
    /// each branch with the values it read, how each wait ended (and the events that
    /// came but did not count, and why), each send and what held it back, how it ended.
    /// Works on a project with errors (it only reads the store).
    Explain {
        /// The run's id (`nurture runs list` shows them).
        run_id: String,
        /// The project folder (default: the nearest folder holding nurture.toml, from here up).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Store URL (default: `store` in nurture.toml, else sqlite://DIR/nurture.db).
        #[arg(long)]
        store: Option<String>,
        /// Output: `human` for people, `json` (one JSON document) for scripts.
        #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
        format: OutputFormat,
    },
    /// Re-execute a run from its journal with the engine as it is now, on a private
    /// in-memory store (nothing is sent, the store is only read), and compare entry by
    /// entry: exit 0 with "identical (N entries)", exit 1 with the first divergence
    /// (what was recorded, what the engine does now, and the input it followed).
    Replay {
        /// The run's id (`nurture runs list` shows them); or give --file.
        #[arg(required_unless_present = "file")]
        run_id: Option<String>,
        /// Replay an exported recording (`nurture runs export`) instead of a stored run;
        /// `-` reads standard input.
        #[arg(long, conflicts_with = "run_id")]
        file: Option<PathBuf>,
        /// Replay on this project's version of the workflow instead of the recorded one:
        /// what this run would have done under the edited workflow.
        #[arg(long, value_name = "DIR")]
        against: Option<PathBuf>,
        /// The project folder (default: the nearest folder holding nurture.toml, from here up).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Store URL (default: `store` in nurture.toml, else sqlite://DIR/nurture.db).
        #[arg(long)]
        store: Option<String>,
        /// Output: `human` for people, `json` (one JSON document) for scripts.
        #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
        format: OutputFormat,
    },
    /// Write a run's recording (its journal, workflow version source, contact as it
    /// entered and the events it consumed) to one self-contained JSON file, which
    /// `nurture runs replay --file` replays anywhere: a regression fixture.
    Export {
        /// The run's id (`nurture runs list` shows them).
        run_id: String,
        /// Write here (default: stdout).
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// The project folder (default: the nearest folder holding nurture.toml, from here up).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Store URL (default: `store` in nurture.toml, else sqlite://DIR/nurture.db).
        #[arg(long)]
        store: Option<String>,
    },
    /// Show one run's timeline: steps, conditions with the values they read, effects,
    /// waits, resumes and the exit.
    Show {
        /// The run's id (`nurture runs list` shows them).
        run_id: String,
        /// The project folder (default: the nearest folder holding nurture.toml, from here up).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Store URL (default: `store` in nurture.toml, else sqlite://DIR/nurture.db).
        #[arg(long)]
        store: Option<String>,
        /// Output: `human` for people, `json` (one JSON document) for scripts.
        #[arg(long, value_enum, default_value_t = OutputFormat::Human)]
        format: OutputFormat,
    },
}

/// A command needed a valid project and the project has errors, already printed with
/// their positions: exit status 1, as `nurture validate` gives.
#[derive(Debug)]
struct InvalidProject;

impl std::fmt::Display for InvalidProject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the project has errors")
    }
}

impl std::error::Error for InvalidProject {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !cli.command.serves() {
        pipes::die_quietly_on_closed_pipe();
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) if e.downcast_ref::<InvalidProject>().is_some() => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Init { dir } => init::init(&dir),
        Command::Validate { dir, format } => validate(&project_dir(dir)?, format),
        Command::Graph { file, format } => graph(&file, format),
        Command::Check {
            dir,
            contacts,
            events,
            horizon,
            seed,
            population,
            start,
            format,
        } => {
            let horizon: nurture_core::model::Duration =
                horizon.parse().map_err(anyhow::Error::msg)?;
            if horizon.seconds() > MAX_CHECK_HORIZON_DAYS * 86_400 {
                anyhow::bail!(
                    "--horizon {horizon}: at most {MAX_CHECK_HORIZON_DAYS}d (a simulation that long would not end in useful time)"
                );
            }
            let opts = nurture_engine::check::Options {
                seed,
                contacts: population as usize,
                max_events: 8,
                start,
                horizon: horizon.to_chrono(),
                sample_contacts: Vec::new(),
                sample_events: Vec::new(),
            };
            runtime()?.block_on(check(&project_dir(dir)?, (contacts, events), opts, format))
        }
        Command::Simulate {
            dir,
            contacts,
            input_format,
            events,
            until,
            start,
            report,
        } => runtime()?.block_on(simulate(
            &project_dir(dir)?,
            (contacts, input_format),
            events,
            (start, until),
            report,
        )),
        Command::Report(args) => runtime()?.block_on(run_report(args)),
        Command::Scoring(ScoringCommand::Backtest(args)) => runtime()?.block_on(scoring::run(args)),
        Command::Run {
            dir,
            listen,
            store,
            workspaces,
            log_json,
            poll_ms,
        } => start(
            (dir, workspaces),
            listen,
            store,
            log_json,
            poll_ms,
            commands::Role::Both,
        ),
        Command::Serve {
            dir,
            listen,
            store,
            workspaces,
            log_json,
        } => start(
            (dir, workspaces),
            listen,
            store,
            log_json,
            1000,
            commands::Role::Api,
        ),
        Command::Worker {
            dir,
            store,
            metrics_listen,
            workspaces,
            log_json,
            poll_ms,
        } => start(
            (dir, workspaces),
            metrics_listen,
            store,
            log_json,
            poll_ms,
            commands::Role::Worker,
        ),
        Command::Deploy {
            dir,
            store,
            dry_run,
            replay,
            format,
        } => runtime()?.block_on(deploy::deploy_command(
            &project_dir(dir)?,
            store,
            dry_run,
            replay,
            format == OutputFormat::Json,
        )),
        Command::Replay {
            workflow,
            version,
            since,
            limit,
            against,
            dir,
            store,
            format,
        } => runtime()?.block_on(replay::replay_bulk(
            &project_dir(dir)?,
            store,
            replay::Selection {
                workflow,
                version,
                since,
                limit,
            },
            against,
            format == OutputFormat::Json,
        )),
        Command::Versions {
            workflow,
            dir,
            store,
            format,
        } => runtime()?.block_on(deploy::versions_command(
            &project_dir(dir)?,
            store,
            workflow,
            format == OutputFormat::Json,
        )),
        Command::Workers { dir, store, format } => runtime()?.block_on(commands::workers(
            &project_dir(dir)?,
            store,
            format == OutputFormat::Json,
        )),
        Command::Contacts(ContactsCommand::Import {
            file,
            input_format,
            dir,
            store,
            format,
        }) => runtime()?.block_on(commands::import(
            &project_dir(dir)?,
            store,
            (&file, input_format),
            format == OutputFormat::Json,
        )),
        Command::Contacts(ContactsCommand::Show {
            contact,
            timeline,
            dir,
            store,
            format,
        }) => runtime()?.block_on(outbox::show_contact(
            &project_dir(dir)?,
            store,
            &contact,
            timeline,
            format == OutputFormat::Json,
        )),
        Command::Keys(KeysCommand::Create {
            name,
            scopes,
            dir,
            store,
            format,
        }) => runtime()?.block_on(keys::create(
            &project_dir(dir)?,
            store,
            &name,
            &scopes,
            format == OutputFormat::Json,
        )),
        Command::Keys(KeysCommand::List { dir, store, format }) => runtime()?.block_on(keys::list(
            &project_dir(dir)?,
            store,
            format == OutputFormat::Json,
        )),
        Command::Keys(KeysCommand::Revoke { id, dir, store }) => {
            runtime()?.block_on(keys::revoke(&project_dir(dir)?, store, &id))
        }
        Command::Audit {
            limit,
            dir,
            store,
            format,
        } => runtime()?.block_on(keys::audit(
            &project_dir(dir)?,
            store,
            limit,
            format == OutputFormat::Json,
        )),
        Command::Contacts(ContactsCommand::Export {
            contact,
            output,
            dir,
            store,
        }) => runtime()?.block_on(privacy::export(&project_dir(dir)?, store, &contact, output)),
        Command::Contacts(ContactsCommand::Erase {
            contact,
            yes,
            dir,
            store,
            format,
        }) => runtime()?.block_on(privacy::erase(
            &project_dir(dir)?,
            store,
            &contact,
            yes,
            format == OutputFormat::Json,
        )),
        Command::Events(EventsCommand::Send {
            file,
            dir,
            store,
            format,
        }) => runtime()?.block_on(commands::send(
            &project_dir(dir)?,
            store,
            &file,
            format == OutputFormat::Json,
        )),
        Command::Runs(RunsCommand::List {
            dir,
            store,
            workflow,
            contact,
            status,
            limit,
            format,
        }) => runtime()?.block_on(commands::list_runs(
            &project_dir(dir)?,
            store,
            workflow,
            contact,
            status,
            limit,
            format == OutputFormat::Json,
        )),
        Command::Runs(RunsCommand::Explain {
            run_id,
            dir,
            store,
            format,
        }) => runtime()?.block_on(commands::explain_run(
            &project_dir(dir)?,
            store,
            &run_id,
            format == OutputFormat::Json,
        )),
        Command::Runs(RunsCommand::Replay {
            run_id,
            file,
            against,
            dir,
            store,
            format,
        }) => runtime()?.block_on(replay::replay_run(
            &project_dir(dir)?,
            store,
            run_id.as_deref(),
            file.as_deref(),
            against.as_deref(),
            format == OutputFormat::Json,
        )),
        Command::Runs(RunsCommand::Export {
            run_id,
            output,
            dir,
            store,
        }) => runtime()?.block_on(replay::export_run(
            &project_dir(dir)?,
            store,
            &run_id,
            output.as_deref(),
        )),
        Command::Runs(RunsCommand::Show {
            run_id,
            dir,
            store,
            format,
        }) => runtime()?.block_on(commands::show_run(
            &project_dir(dir)?,
            store,
            &run_id,
            format == OutputFormat::Json,
        )),
        Command::Runs(RunsCommand::Cancel {
            run_id,
            contact,
            reason,
            dir,
            store,
        }) => runtime()?.block_on(manual::cancel(
            &project_dir(dir)?,
            store,
            run_id,
            contact,
            &reason,
        )),
        Command::Runs(RunsCommand::Start {
            workflow,
            contact,
            reason,
            dir,
            store,
        }) => runtime()?.block_on(manual::start(
            &project_dir(dir)?,
            store,
            &workflow,
            &contact,
            &reason,
        )),
        Command::Workflows(WorkflowsCommand::List { dir, store, format }) => runtime()?.block_on(
            workflows::list(&project_dir(dir)?, store, format == OutputFormat::Json),
        ),
        Command::Workflows(WorkflowsCommand::Pause {
            workflow,
            reason,
            dir,
            store,
        }) => runtime()?.block_on(workflows::set_paused(
            &project_dir(dir)?,
            store,
            &workflow,
            true,
            &reason,
        )),
        Command::Workflows(WorkflowsCommand::Resume {
            workflow,
            reason,
            dir,
            store,
        }) => runtime()?.block_on(workflows::set_paused(
            &project_dir(dir)?,
            store,
            &workflow,
            false,
            &reason,
        )),
        Command::Store(StoreCommand::Compact {
            dry_run,
            older_than,
            dir,
            store,
            format,
        }) => runtime()?.block_on(compact::compact(
            &project_dir(dir)?,
            store,
            older_than,
            dry_run,
            format == OutputFormat::Json,
        )),
        Command::Bench(args) => bench(args),
        Command::Email(EmailCommand::Preview {
            template,
            contact,
            dir,
            store,
            out,
        }) => runtime()?.block_on(commands::email_preview(
            &project_dir(dir)?,
            store,
            &template,
            &contact,
            out,
        )),
        Command::Outbox(OutboxCommand::List {
            state,
            contact,
            workflow,
            limit,
            dir,
            store,
            format,
        }) => {
            let filter = nurture_store::OutboxFilter {
                state,
                contact,
                workflow,
                limit,
            };
            runtime()?.block_on(outbox::list(
                &project_dir(dir)?,
                store,
                filter,
                format == OutputFormat::Json,
            ))
        }
        Command::Outbox(OutboxCommand::Retry { key, dir, store }) => {
            runtime()?.block_on(commands::outbox_retry(&project_dir(dir)?, store, &key))
        }
        Command::Plugins(PluginsCommand::List { dir, format }) => {
            commands::plugins_list(&project_dir(dir)?, format == OutputFormat::Json)
        }
        Command::Plugins(PluginsCommand::Build { dir }) => {
            commands::plugins_build(&project_dir(dir)?)
        }
        Command::Plugin(PluginCommand::New {
            name,
            dir,
            sdk_path,
        }) => commands::plugin_new(&name, dir, sdk_path),
        Command::Schema { file } => {
            print!("{}", file.schema().json());
            Ok(ExitCode::SUCCESS)
        }
        Command::Openapi => {
            print!("{}", nurture_server::openapi::json());
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "nurture",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `nurture bench`: each part asked for, then the table (and the JSON).
fn bench(a: BenchArgs) -> Result<ExitCode> {
    // The in-process scheduler of (c) logs what goes wrong when asked to
    // (`RUST_LOG=warn`); by default the table stays alone on the terminal.
    if std::env::var_os("RUST_LOG").is_some() {
        commands::init_logs(false);
    }
    let part = |p: BenchPart| a.only.is_empty() || a.only.contains(&p);
    let rt = runtime()?;
    let config = commands::store_config()?;
    if let Some(url) = &a.postgres {
        rt.block_on(crate::bench::check_bench_database(url, &config))?;
    }
    let mut report = rt.block_on(crate::bench::run(
        &config,
        if part(BenchPart::Steps) {
            a.contacts
        } else {
            0
        },
        a.sqlite,
        a.postgres.clone(),
        if part(BenchPart::Http) {
            a.http_events
        } else {
            0
        },
        true,
    ))?;
    let exe = std::env::current_exe()?;
    let rates: Vec<u32> = a.latency_rate.iter().copied().filter(|r| *r > 0).collect();
    if !rates.is_empty() && a.latency_runs > 0 && part(BenchPart::Latency) {
        eprintln!(
            "measuring event -> effect latency at {rates:?} events/s, {} runs each ...",
            a.latency_runs
        );
        report.latency = rt.block_on(crate::bench::latency_runs(
            a.postgres.as_deref(),
            &config,
            &rates,
            a.latency_seconds,
            a.latency_runs,
        ))?;
    }
    if a.pending_waits > 0 && part(BenchPart::Pending) {
        let setup = crate::bench::pending::Setup {
            config: &config,
            exe: &exe,
            firing_seconds: a.pending_seconds,
        };
        let dir = crate::bench::tempfile_dir()?;
        let sqlite = format!("sqlite://{}", dir.join("pending.db").display());
        let sqlite = a.sqlite.then_some(sqlite);
        for url in sqlite.into_iter().chain(a.postgres.clone()) {
            eprintln!(
                "seeding {} waiting contacts on {} and measuring a worker ...",
                a.pending_waits,
                url.split(':').next().unwrap_or_default()
            );
            let due = a.pending_due.min(a.pending_waits);
            let figures = crate::bench::pending::measure(&url, &setup, a.pending_waits, due);
            report.pending.push(rt.block_on(figures)?);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    if let (Some(url), true) = (&a.postgres, part(BenchPart::Workers)) {
        eprintln!("comparing {:?} workers ...", a.workers);
        report.workers = rt.block_on(crate::bench::worker_speedup(
            url,
            &config,
            a.worker_contacts,
            &a.workers,
            a.worker_repeats,
            &exe,
        ))?;
    }
    if a.plugin != "none" && part(BenchPart::Plugin) {
        report.plugin = bench_plugin(&rt, &a.plugin, a.plugin_calls);
    }
    if a.replay_runs > 0 && part(BenchPart::Replay) {
        eprintln!("recording {} runs and replaying them ...", a.replay_runs);
        report.replay = Some(rt.block_on(crate::bench::replay(a.replay_runs))?);
    }
    if part(BenchPart::Report) {
        for &n in a.report_runs.iter().filter(|n| **n > 0) {
            eprintln!("filling stores with {n} runs and reading reports ...");
            let dir = crate::bench::tempfile_dir()?;
            let sqlite = format!("sqlite://{}", dir.join("report.db").display());
            let urls = std::iter::once(sqlite).chain(a.postgres.clone());
            for url in urls {
                report
                    .reports
                    .push(rt.block_on(crate::bench::report::measure(&url, n, &config))?);
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    if a.simulate_contacts > 0 && part(BenchPart::Simulate) {
        eprintln!("simulating {} contacts ...", a.simulate_contacts);
        report.simulate = Some(rt.block_on(crate::bench::speed::simulate(
            &a.speed_project,
            a.simulate_contacts,
        ))?);
    }
    if a.backtest_events > 0 && part(BenchPart::Backtest) {
        eprintln!("backtesting {} events ...", a.backtest_events);
        report.backtest = Some(crate::bench::speed::backtest(
            &a.speed_project,
            a.backtest_events,
        )?);
    }
    if a.storage_contacts > 0 && part(BenchPart::Storage) {
        eprintln!(
            "running {} contacts for {} days and measuring the journal ...",
            a.storage_contacts, a.storage_days
        );
        let dir = crate::bench::tempfile_dir()?;
        let sqlite = format!("sqlite://{}", dir.join("storage.db").display());
        for url in std::iter::once(sqlite).chain(a.postgres.clone()) {
            report
                .storage
                .push(rt.block_on(crate::bench::storage::measure(
                    &url,
                    &config,
                    &a.speed_project,
                    &crate::bench::storage::Campaign {
                        contacts: a.storage_contacts,
                        days: a.storage_days,
                        seed: a.storage_seed,
                        keep: a.storage_keep.clone(),
                    },
                ))?);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    print!("{}", crate::bench::table(&report));
    if let Some(path) = a.json {
        std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// (b) The plugin part of `nurture bench`: skipped with a note when the plugin cannot be
/// built or loaded.
fn bench_plugin(
    rt: &tokio::runtime::Runtime,
    plugin: &str,
    calls: usize,
) -> Option<crate::bench::PluginFigures> {
    let dir = PathBuf::from(plugin);
    let with = serde_json::json!({"to": "", "body": "bench"});
    let announce = || {
        eprintln!(
            "building plugin {} for the plugin benchmark (cargo build --target {}) ...",
            dir.display(),
            nurture_channels::plugin::build::TARGET
        )
    };
    match rt.block_on(crate::bench::plugin_calls(
        &dir, "send", with, calls, announce,
    )) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("plugin benchmark skipped: {e} (build it with `nurture plugins build`)");
            None
        }
    }
}

/// `nurture report`'s time bounds: RFC 3339, a date (midnight UTC), or an age before now
/// (`7d`, `12h`, `2w`).
fn parse_when(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = parse_time(s) {
        return Ok(t);
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    let (n, unit) = s.split_at(s.len().saturating_sub(1));
    let hours = match unit {
        "h" => 1,
        "d" => 24,
        "w" => 24 * 7,
        _ => 0,
    };
    match n.parse::<i64>() {
        Ok(n) if hours > 0 && (0..100_000).contains(&n) => {
            Ok(chrono::Utc::now() - chrono::TimeDelta::hours(n * hours))
        }
        _ => Err(format!(
            "{s:?} is not a time: give RFC 3339 (2026-03-01T09:00:00Z), a date (2026-03-01) or an age (7d, 12h, 2w)"
        )),
    }
}

fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| format!("{s:?} is not an RFC 3339 time such as 2026-03-01T09:00:00Z"))
}

/// The runtime: one thread per core (tokio's default), which a worker's lanes spread
/// over (it had been fixed at 2 threads, a ceiling on machines with more cores).
fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Loads a project or prints its diagnostics.
/// The project a command works on, found as cargo finds `Cargo.toml`: the nearest of
/// `given` (default: the current folder) and the folders above it that holds
/// `nurture.toml`, said on stderr when it is not `given` itself. Without one anywhere, a
/// given folder is used as it is (its own errors say what is missing); with none given,
/// the current folder when it has a `workflows/` folder, else an error.
/// The longest `nurture check --horizon`, in days.
const MAX_CHECK_HORIZON_DAYS: u64 = 3650;

/// `run`, `serve` and `worker`: of one project (`dir`), or of the workspaces of a file.
fn start(
    (dir, workspaces): (Option<PathBuf>, Option<PathBuf>),
    listen: Option<String>,
    store: Option<String>,
    log_json: bool,
    poll_ms: u64,
    role: commands::Role,
) -> Result<ExitCode> {
    match workspaces {
        Some(file) => runtime()?.block_on(workspaces::run(&file, listen, log_json, poll_ms, role)),
        None => runtime()?.block_on(commands::run(
            &project_dir(dir)?,
            listen,
            store,
            log_json,
            poll_ms,
            role,
        )),
    }
}

fn project_dir(given: Option<PathBuf>) -> Result<PathBuf> {
    let start = given.clone().unwrap_or_else(|| PathBuf::from("."));
    let abs = start
        .canonicalize()
        .with_context(|| format!("{} is not a folder", start.display()))?;
    // A folder of workflows without nurture.toml is a project of its own: not replaced
    // by a project found above it.
    let own = abs.join("workflows").is_dir() && !abs.join("workflows/nurture.toml").is_file();
    if own && !abs.join("nurture.toml").is_file() {
        return Ok(start);
    }
    if let Some(found) = abs.ancestors().find(|d| d.join("nurture.toml").is_file()) {
        if found != abs {
            eprintln!("note: using the project in {}", found.display());
            return Ok(found.to_path_buf());
        }
        return Ok(start);
    }
    // A project needs no nurture.toml: a folder with `workflows/` of workflow files is
    // one, unless that `workflows/` is itself a project (this repository's root).
    let workflows_here =
        abs.join("workflows").is_dir() && !abs.join("workflows/nurture.toml").is_file();
    if given.is_some() || workflows_here {
        return Ok(start);
    }
    let below: Vec<String> = std::fs::read_dir(&abs)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("nurture.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let hint = match below.first() {
        Some(d) => format!(
            "the folder `{d}` here holds one: give it (`--dir {d}`, or `nurture validate {d}/`)"
        ),
        None => "give the project folder, or create a project with `nurture init DIR`".into(),
    };
    bail!(
        "no campaign project found: no nurture.toml in {} or a folder above it; {hint}",
        abs.display()
    )
}

fn load_valid(dir: &Path) -> Result<std::sync::Arc<project::Project>, ExitCode> {
    let loaded = project::load(dir);
    match loaded.project {
        Some(p) if loaded.errors() == 0 => Ok(std::sync::Arc::new(p)),
        _ => {
            eprint!("{}", loaded.render());
            eprintln!(
                "\nthe project in {} has errors; `nurture validate` lists them",
                dir.display()
            );
            Err(ExitCode::from(1))
        }
    }
}

/// `nurture report`.
async fn run_report(a: ReportArgs) -> Result<ExitCode> {
    let dir = project_dir(a.dir)?;
    let (project, store) = commands::open(&dir, a.store).await?;
    let options = nurture_engine::report::Options {
        version: a.version,
        since: a.since,
        until: a.until,
        by: a
            .by
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(anyhow::Error::msg)?,
        min_sample: a.min_sample,
    };
    if a.held_back {
        let r = nurture_engine::report::held::held_back(
            &*store,
            &project,
            a.workflow.as_deref(),
            &options,
        )
        .await?;
        print!("{}", report::render_held_back(&r, a.format)?);
        return Ok(ExitCode::SUCCESS);
    }
    let r = report::collect(&project, &*store, a.workflow.as_deref(), &options).await?;
    print!("{}", report::render(&r, a.format, a.workflow.is_some())?);
    Ok(ExitCode::SUCCESS)
}

async fn check(
    dir: &Path,
    (contacts, events): (Option<PathBuf>, Option<PathBuf>),
    mut opts: nurture_engine::check::Options,
    format: OutputFormat,
) -> Result<ExitCode> {
    let project = match load_valid(dir) {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    if let Some(p) = &contacts {
        opts.sample_contacts = input::contacts(p, None)?.0;
    }
    if let Some(p) = &events {
        opts.sample_events = input::events(p)?.0;
    }
    let report = nurture_engine::check::check(project, &opts).await?;
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Human => print!("{}", report.render()),
    }
    Ok(if report.violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn simulate(
    dir: &Path,
    contacts: (Option<PathBuf>, Option<input::InputFormatArg>),
    events: Option<PathBuf>,
    (start, until): (
        Option<chrono::DateTime<chrono::Utc>>,
        Option<chrono::DateTime<chrono::Utc>>,
    ),
    with_report: bool,
) -> Result<ExitCode> {
    let project = match load_valid(dir) {
        Ok(p) => p,
        Err(code) => return Ok(code),
    };
    let (contacts, contacts_format) = contacts;
    if contacts.as_deref().is_some_and(input::is_stdin)
        && events.as_deref().is_some_and(input::is_stdin)
    {
        bail!("--contacts and --events cannot both read standard input");
    }
    let (rows, mut bad_contacts) = match &contacts {
        Some(p) => input::contacts(p, contacts_format)?,
        None => (Vec::new(), Vec::new()),
    };
    let (evs, bad_events) = match &events {
        Some(p) => input::events(p)?,
        None => (Vec::new(), Vec::new()),
    };
    use std::io::Write;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut failed = 0usize;
    let (summary, store) =
        nurture_engine::simulate::run_keeping(project.clone(), &rows, evs, start, until, |e| {
            failed += usize::from(e.effect == "failed");
            let _ = writeln!(out, "{}", nurture_engine::simulate::effect_line(e));
        })
        .await?;
    if with_report {
        let r = report::collect(&project, &*store, None, &Default::default()).await?;
        let _ = writeln!(
            out,
            "\n{}",
            report::render(&r, report::ReportFormat::Human, false)?
        );
        // Then each workflow's steps, emails and splits.
        let _ = write!(
            out,
            "{}",
            report::render(&r, report::ReportFormat::Human, true)?
        );
    }
    out.flush()?;
    drop(out);
    for r in &bad_events {
        eprintln!(
            "rejected event at {}:{}: {}",
            events.as_ref().map_or(String::new(), |p| input::shown(p)),
            r.at,
            r.reason
        );
    }
    for (i, reason) in &summary.rejected_events {
        eprintln!("rejected event at line {i}: {reason}");
    }
    bad_contacts.extend(summary.rejected_contacts.iter().map(|(at, reason)| {
        nurture_engine::input::Rejected {
            at: *at,
            reason: reason.clone(),
        }
    }));
    for r in &bad_contacts {
        eprintln!(
            "rejected contact at {}:{}: {}",
            contacts.as_ref().map_or(String::new(), |p| input::shown(p)),
            r.at,
            r.reason
        );
    }
    eprintln!(
        "simulated {} contacts and {} events from {} to {}: {} effects",
        summary.contacts,
        summary.events,
        summary.start.map(nurture_store::ts_out).unwrap_or_default(),
        summary.end.map(nurture_store::ts_out).unwrap_or_default(),
        summary.effects
    );
    if failed > 0 {
        eprintln!("{failed} deliveries failed (the `failed` lines say why): a live run would fail them too");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
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
                let warnings = loaded.diagnostics.len() - errors;
                if warnings > 0 {
                    eprint!("{}", loaded.render());
                    eprintln!(
                        "\n{warnings} warning{}: valid, but some contacts or events would fail there",
                        plural(warnings)
                    );
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every argument of every command, at any depth, has a description in `--help`
    /// (clap's own `--help`/`--version` aside).
    #[test]
    fn every_argument_of_every_command_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", cmd.get_name());
            if cmd.get_about().is_none() && !cmd.is_hide_set() {
                missing.push(format!("{path}: the command"));
            }
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if ["help", "version"].contains(&id) || a.is_hide_set() {
                    continue;
                }
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path}: {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "", &mut missing);
        assert!(missing.is_empty(), "no help text:\n{}", missing.join("\n"));
    }
}
