//! Loading a campaign project folder: every file parsed, every error collected.
//!
//! ```text
//! my-campaigns/
//!   nurture.toml        settings (optional)
//!   scoring.yaml        lead-scoring rules and grades (optional)
//!   segments.yaml       dynamic segments (optional)
//!   policies.yaml       rules `nurture check` proves by simulation (optional)
//!   templates/          NAME.html / NAME.txt with front matter
//!   workflows/*.yaml    one workflow per file
//! ```
//!
//! [`load`] never stops at the first problem: it returns every diagnostic of the project,
//! sorted by file and position, and a [`Project`] only when there are no errors.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::diag::{self, did_you_mean, Code, Diagnostic, Severity};
use crate::model::{
    self, Action, Policy, Scoring, Segment, Settings, Step, StepKind, Trigger, Workflow,
};
use crate::plan::{self, Plan};
use crate::yaml::{self, Node, Span};

/// A loaded, validated project.
#[derive(Debug, Clone)]
pub struct Project {
    /// The project folder.
    pub root: PathBuf,
    /// `nurture.toml`, or the defaults when there is none.
    pub settings: Settings,
    /// `scoring.yaml`, or no rules when there is none.
    pub scoring: Scoring,
    /// `segments.yaml`, in file order.
    pub segments: Vec<Segment>,
    /// `policies.yaml`, in file order (none when there is no such file).
    pub policies: Vec<Policy>,
    /// The templates of `templates/`, by name.
    pub templates: BTreeMap<String, Template>,
    /// The installed plugins' manifests, by plugin name.
    pub plugins: BTreeMap<String, PluginManifest>,
    /// The folder of each plugin (where its `plugin.toml` and component are).
    pub plugin_dirs: BTreeMap<String, PathBuf>,
    /// One compiled plan per workflow file.
    pub plans: Vec<Plan>,
    /// The text of each workflow's file, by workflow id (what a deploy stores).
    pub workflow_sources: BTreeMap<String, String>,
}

/// The result of loading: the project when valid, and every diagnostic either way.
#[derive(Debug)]
pub struct Loaded {
    /// The project, only when no diagnostic is an error.
    pub project: Option<Project>,
    /// Every diagnostic found, sorted by file and position.
    pub diagnostics: Vec<Diagnostic>,
    /// The text of every file read, for rendering diagnostics.
    pub sources: HashMap<PathBuf, String>,
}

impl Loaded {
    /// How many diagnostics are errors.
    pub fn errors(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    /// All diagnostics rendered for a terminal.
    pub fn render(&self) -> String {
        self.diagnostics
            .iter()
            .map(|d| d.render(self.sources.get(&d.file).map(String::as_str)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// An email template from `templates/`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Template {
    /// The file name without extension: `welcome` for `welcome.html` and `welcome.txt`.
    pub name: String,
    /// Subject from the front matter (a template itself).
    pub subject: Option<String>,
    /// Preview text from the front matter (a template itself).
    pub preheader: Option<String>,
    /// From address from the front matter, overriding `[sender]`.
    pub from: Option<String>,
    /// Body of `NAME.html`, after its front matter.
    pub html: Option<String>,
    /// Body of `NAME.txt`, after its front matter.
    pub text: Option<String>,
    /// The line of `NAME.html` its body starts on (1 without front matter), so errors
    /// and warnings in the body give lines of the file.
    pub html_line: usize,
    /// The same for `NAME.txt`.
    pub text_line: usize,
}

/// A plugin's `plugin.toml`: who it is, what steps it offers and what it may touch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PluginManifest {
    /// Plugin name, as steps write it before the `/` (`sms/send`).
    pub name: String,
    /// The plugin's own release version, independent of `api`.
    pub version: String,
    /// The plugin interface version it was built against, e.g. `1.0`.
    pub api: String,
    /// One line saying what the plugin does.
    #[serde(default)]
    pub description: Option<String>,
    /// Hosts the plugin may call over HTTP; empty means none.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Names of the secrets it needs (values come from the operator, never the file).
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Path of the compiled component, relative to the manifest.
    #[serde(default)]
    pub component: Option<String>,
    /// The channel through which its steps contact the person (`sms`, `whatsapp`...), if
    /// they do: such steps obey quiet hours, consent to that channel and its frequency cap
    /// and rate limit (see `engine::channels`). A short lowercase name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// The steps it offers, by step name.
    #[serde(default)]
    pub steps: BTreeMap<String, PluginStep>,
}

/// One step a plugin offers, as declared in its manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PluginStep {
    /// One line saying what the step does.
    #[serde(default)]
    pub description: Option<String>,
    /// JSON Schema (object with `properties` and `required`) of the step's `with:`.
    #[serde(default)]
    pub config: Option<Value>,
}

/// One parsed workflow file, before compilation.
#[derive(Debug, Clone)]
pub struct WorkflowFile {
    /// The file it was read from.
    pub path: PathBuf,
    /// Some steps failed to parse and are placeholders: compile only to find more errors.
    pub partial: bool,
    /// The file's YAML tree, to point diagnostics at.
    pub root: Node,
    /// The workflow as parsed.
    pub workflow: Workflow,
}

/// Keys allowed at the top of a workflow file.
pub const WORKFLOW_KEYS: &[&str] = &[
    "workflow",
    "name",
    "version",
    "timezone",
    "quiet_hours",
    "trigger",
    "reentry",
    "goal",
    "exit_if",
    "consent",
    "on_new_version",
    "enabled",
    "steps",
];

const STEP_EXTRA_KEYS: &[&str] = &[
    "id",
    "next",
    "on_timeout",
    "with",
    "await",
    "save",
    "timeout",
];
const TRIGGER_KEYS: &[&str] = &["event", "segment", "score", "schedule"];

/// Collects diagnostics for one file.
pub(crate) struct Sink<'a> {
    pub file: &'a Path,
    pub diags: &'a mut Vec<Diagnostic>,
}

impl Sink<'_> {
    pub(crate) fn error(
        &mut self,
        code: Code,
        span: Span,
        msg: impl Into<String>,
        hint: Option<String>,
    ) {
        self.diags
            .push(Diagnostic::error(code, self.file, span, msg).with_opt_hint(hint));
    }

    /// Deserializes `json` (built from `base` or a part of it) and maps a failure back to
    /// the node it concerns.
    pub(crate) fn typed<T: DeserializeOwned>(&mut self, base: &Node, json: Value) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(json) {
            Ok(v) => Some(v),
            Err(err) => {
                let path: Vec<String> = err
                    .path()
                    .iter()
                    .filter_map(|seg| match seg {
                        serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                        serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                        serde_path_to_error::Segment::Enum { variant } => Some(variant.clone()),
                        serde_path_to_error::Segment::Unknown => None,
                    })
                    .collect();
                let msg = err.inner().to_string();
                self.serde_error(base, &path, &msg);
                None
            }
        }
    }

    fn serde_error(&mut self, base: &Node, path: &[String], msg: &str) {
        let node = base.locate(path);
        if let Some(field) = between(msg, "unknown field `", "`") {
            let expected = backticked(msg.split_once("expected").map_or("", |x| x.1));
            // The path may stop at the map or reach the key's value.
            let key_span = node
                .entry(field)
                .map(|(k, _)| k.span)
                .or_else(|| {
                    let parent = base.locate(&path[..path.len().saturating_sub(1)]);
                    parent.entry(field).map(|(k, _)| k.span)
                })
                .unwrap_or(node.span);
            let hint = match did_you_mean(field, expected.iter().map(String::as_str)) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("allowed here: {}", expected.join(", ")),
            };
            self.error(
                Code::UnknownKey,
                key_span,
                format!("unknown key `{field}`"),
                Some(hint),
            );
        } else if let Some(field) = between(msg, "missing field `", "`") {
            self.error(
                Code::MissingKey,
                node.span,
                format!("missing required key `{field}`"),
                Some(format!("add `{field}:` here")),
            );
        } else if let Some(variant) = between(msg, "unknown variant `", "`") {
            let expected = backticked(msg.split_once("expected").map_or("", |x| x.1));
            let hint = match did_you_mean(variant, expected.iter().map(String::as_str)) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("use one of: {}", expected.join(", ")),
            };
            self.error(
                Code::InvalidValue,
                node.span,
                format!("unknown value `{variant}`"),
                Some(hint),
            );
        } else if msg.starts_with(model::DURATION_ERR) {
            let (m, h) = split_hint(msg);
            self.error(Code::BadDuration, node.span, m, h);
        } else if msg.starts_with(model::TIME_ERR) {
            let (m, h) = split_hint(msg);
            self.error(Code::BadTime, node.span, m, h);
        } else {
            let friendly = msg
                .replace("expected i64", "expected a whole number")
                .replace("expected u32", "expected a positive whole number")
                .replace("expected a string", "expected text");
            let (m, h) = split_hint(&friendly);
            self.error(Code::InvalidValue, node.span, m, h);
        }
    }
}

/// "message: hint" -> ("message", Some("hint")) for our own custom messages.
fn split_hint(msg: &str) -> (String, Option<String>) {
    match msg.split_once("`: ") {
        Some((m, h)) => (format!("{m}`"), Some(h.to_string())),
        None => (msg.to_string(), None),
    }
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let i = s.find(start)? + start.len();
    let j = s[i..].find(end)?;
    Some(&s[i..i + j])
}

fn backticked(s: &str) -> Vec<String> {
    s.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, x)| x.to_string())
        .collect()
}

/// Reports keys of a mapping node that are not in `allowed`.
pub(crate) fn check_keys(sink: &mut Sink<'_>, node: &Node, allowed: &[&str], place: &str) {
    let Some(entries) = node.as_map() else { return };
    for (k, _) in entries {
        let Some(key) = k.as_str() else { continue };
        if !allowed.contains(&key) {
            let hint = match did_you_mean(key, allowed.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("{place} allows: {}", allowed.join(", ")),
            };
            sink.error(
                Code::UnknownKey,
                k.span,
                format!("unknown key `{key}` in {place}"),
                Some(hint),
            );
        }
    }
}

/// The largest campaign file read, in bytes.
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// Why a campaign file was not read. The message names the file, never its content.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The path resolves outside the project folder.
    #[error("`{0}` leads outside the project folder (a link?); nurture does not follow it")]
    Outside(String),
    /// The path is a folder, a device or something else that is not a regular file.
    #[error("`{0}` is not a regular file")]
    NotAFile(String),
    /// The file is larger than [`MAX_FILE_BYTES`] (its size in bytes).
    #[error("`{0}` is {1} bytes, more than the 4 MiB a campaign file may have")]
    TooLarge(String, u64),
    /// The file could not be opened or read.
    #[error("cannot read file: {0}")]
    Io(#[from] std::io::Error),
}

impl ReadError {
    /// How to fix it.
    pub fn hint(&self) -> &'static str {
        match self {
            ReadError::Outside(_) => {
                "copy the file into the project folder instead of linking to it"
            }
            ReadError::NotAFile(_) => "campaign files are plain files",
            ReadError::TooLarge(..) => "split the file, or move data out of it",
            ReadError::Io(_) => "check that the file exists and is readable",
        }
    }

    fn diagnostic(&self, path: &Path) -> Diagnostic {
        let start = Span {
            line: 1,
            col: 1,
            len: 1,
        };
        Diagnostic::error(Code::Syntax, path, start, self.to_string()).with_hint(self.hint())
    }
}

/// Reads the campaign file `path`, which must resolve (links followed) to a regular file
/// inside `base` of at most [`MAX_FILE_BYTES`]: a link out of the project (to
/// `/proc/self/environ`, say) is refused without reading it.
pub fn read_campaign_file(base: &Path, path: &Path) -> Result<String, ReadError> {
    use std::io::Read as _;
    let name = path.display().to_string();
    let real = path.canonicalize()?;
    if !real.starts_with(base.canonicalize()?) {
        return Err(ReadError::Outside(name));
    }
    let meta = std::fs::metadata(&real)?;
    if !meta.is_file() {
        return Err(ReadError::NotAFile(name));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(ReadError::TooLarge(name, meta.len()));
    }
    let mut text = String::new();
    std::fs::File::open(&real)?
        .take(MAX_FILE_BYTES)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// The diagnostic of YAML that does not parse.
fn yaml_error(path: &Path, e: yaml::SyntaxError) -> Diagnostic {
    Diagnostic::error(
        Code::Syntax,
        path,
        e.span,
        format!("invalid YAML: {}", e.message),
    )
    .with_hint(
        e.hint
            .unwrap_or_else(|| "check the indentation and quoting around this position".into()),
    )
}

fn read_yaml(root: &Path, path: &Path, loaded: &mut Loaded) -> Option<Node> {
    let text = match read_campaign_file(root, path) {
        Ok(t) => t,
        Err(e) => {
            loaded.diagnostics.push(e.diagnostic(path));
            return None;
        }
    };
    let parsed = yaml::parse(&text);
    loaded.sources.insert(path.to_path_buf(), text);
    match parsed {
        Ok(n) => Some(n),
        Err(e) => {
            loaded.diagnostics.push(yaml_error(path, e));
            None
        }
    }
}

/// Parses one workflow file's YAML tree into the model, reporting every problem found.
///
/// Steps that fail to parse become placeholders (so that the rest of the graph can still be
/// checked); the caller knows from the new diagnostics that the result is partial.
pub fn parse_workflow(path: &Path, root: &Node, diags: &mut Vec<Diagnostic>) -> Option<Workflow> {
    let mut sink = Sink { file: path, diags };
    let before = sink.diags.len();
    if root.as_map().is_none() {
        sink.error(
            Code::InvalidValue,
            root.span,
            "a workflow file must be a mapping with `workflow`, `trigger` and `steps`",
            Some("start from an example in workflows/ or run `nurture schema`".into()),
        );
        return None;
    }
    check_keys(&mut sink, root, WORKFLOW_KEYS, "a workflow");

    // Header fields: everything but triggers and steps, which are parsed one by one below
    // so that one bad step does not hide the errors of the others.
    let mut header = serde_json::Map::new();
    for (k, v) in root.as_map().unwrap_or_default() {
        if let Some(key) = k.as_str() {
            if WORKFLOW_KEYS.contains(&key) && key != "trigger" && key != "steps" {
                header.insert(key.to_string(), v.to_json());
            }
        }
    }
    header.insert("trigger".into(), serde_json::json!({"event": "-"}));
    header.insert("steps".into(), Value::Array(Vec::new()));
    let mut workflow: Option<Workflow> = sink.typed(root, Value::Object(header));

    let mut triggers = Vec::new();
    match root.get("trigger") {
        None => sink.error(
            Code::MissingKey,
            root.span,
            "missing required key `trigger`",
            Some("add e.g. `trigger: { event: form.submitted }`".into()),
        ),
        Some(t) => match t.as_seq() {
            Some(items) => {
                for item in items {
                    if let Some(tr) = parse_trigger(&mut sink, item) {
                        triggers.push(tr);
                    }
                }
            }
            None => {
                if let Some(tr) = parse_trigger(&mut sink, t) {
                    triggers.push(tr);
                }
            }
        },
    }

    let header_failed = workflow.is_none() || sink.diags.len() > before;
    let mut steps = Vec::new();
    match root.get("steps") {
        None => sink.error(
            Code::MissingKey,
            root.span,
            "missing required key `steps`",
            Some("add `steps:` with at least one step".into()),
        ),
        Some(s) => match s.as_seq() {
            Some(items) if !items.is_empty() => {
                for (i, item) in items.iter().enumerate() {
                    match parse_step(&mut sink, item) {
                        Some(step) => steps.push(step),
                        // Keep a placeholder so that the graph can still be checked and
                        // references to this step do not look broken.
                        None => steps.push(Step {
                            id: item
                                .get("id")
                                .and_then(Node::as_str)
                                .map_or_else(|| format!("#{}", i + 1), str::to_string),
                            kind: StepKind::Actions(Vec::new()),
                            with: None,
                            next: item.get("next").and_then(Node::as_str).map(str::to_string),
                            on_timeout: None,
                            await_outcome: false,
                            save: BTreeMap::new(),
                            timeout: None,
                        }),
                    }
                }
            }
            _ => sink.error(
                Code::InvalidValue,
                s.span,
                "`steps` must be a non-empty list",
                Some("add `- id: first` with a step kind such as `send_email: TEMPLATE`".into()),
            ),
        },
    }

    if header_failed || steps.is_empty() {
        return None;
    }
    if let Some(w) = workflow.as_mut() {
        w.trigger = if triggers.len() == 1 && root.get("trigger").and_then(Node::as_seq).is_none() {
            model::OneOrMany::One(triggers.remove(0))
        } else {
            model::OneOrMany::Many(triggers)
        };
        w.steps = steps;
    }
    workflow
}

fn parse_trigger(sink: &mut Sink<'_>, node: &Node) -> Option<Trigger> {
    if node.as_map().is_none() {
        sink.error(
            Code::InvalidValue,
            node.span,
            "a trigger must be a mapping",
            Some("e.g. `{ event: form.submitted }`, `{ segment: hot-smb }`, `{ score: { reaches: 50 } }` or `{ schedule: \"0 9 * * MON\", audience: SEGMENT }`".into()),
        );
        return None;
    }
    let kinds: Vec<&str> = TRIGGER_KEYS
        .iter()
        .copied()
        .filter(|k| node.get(k).is_some())
        .collect();
    let json = node.to_json();
    match kinds.as_slice() {
        ["event"] => sink.typed(node, json).map(Trigger::Event),
        ["segment"] => sink.typed(node, json).map(Trigger::Segment),
        ["score"] => sink.typed(node, json).map(Trigger::Score),
        ["schedule"] => sink.typed(node, json).map(Trigger::Schedule),
        [] => {
            check_keys(
                sink,
                node,
                &["event", "segment", "score", "schedule", "if", "audience"],
                "a trigger",
            );
            sink.error(
                Code::MissingKey,
                node.span,
                "a trigger needs one of `event`, `segment`, `score` or `schedule`",
                None,
            );
            None
        }
        more => {
            sink.error(
                Code::InvalidValue,
                node.span,
                format!(
                    "a trigger has one kind, this one has {}",
                    more.join(" and ")
                ),
                Some("write a list under `trigger:` for several triggers".into()),
            );
            None
        }
    }
}

/// The kind keys present in a step or action mapping.
fn kind_keys(node: &Node) -> Vec<&Node> {
    node.as_map()
        .unwrap_or_default()
        .iter()
        .filter(|(k, _)| k.as_str().is_some_and(|s| StepKind::KEYS.contains(&s)))
        .map(|(k, _)| k)
        .collect()
}

fn parse_kind(sink: &mut Sink<'_>, node: &Node, owner: &str) -> Option<StepKind> {
    let keys = kind_keys(node);
    let key = match keys.as_slice() {
        [k] => *k,
        [] => {
            // A misspelt kind key was already reported as an unknown key with a suggestion.
            let typo = node.as_map().unwrap_or_default().iter().any(|(k, _)| {
                k.as_str()
                    .is_some_and(|s| did_you_mean(s, StepKind::KEYS.iter().copied()).is_some())
            });
            if typo {
                return None;
            }
            sink.error(
                Code::StepKind,
                node.span,
                format!("{owner} has no kind"),
                Some(format!("add one of: {}", StepKind::KEYS.join(", "))),
            );
            return None;
        }
        [_, second, ..] => {
            let names: Vec<&str> = keys.iter().filter_map(|k| k.as_str()).collect();
            sink.error(
                Code::StepKind,
                second.span,
                format!("{owner} has more than one kind: {}", names.join(", ")),
                Some("give each its own step, or list them under `actions:`".into()),
            );
            return None;
        }
    };
    let name = key.as_str().unwrap_or_default();
    let value = node.get(name).expect("key present");
    if name == "actions" {
        let Some(items) = value.as_seq() else {
            sink.error(
                Code::InvalidValue,
                value.span,
                "`actions` must be a list",
                Some("e.g. `actions: [ {tag: [hot]}, {score: +10} ]`".into()),
            );
            return None;
        };
        let mut actions = Vec::new();
        let mut ok = true;
        for item in items {
            match parse_action(sink, item) {
                Some(a) => actions.push(a),
                None => ok = false,
            }
        }
        return ok.then_some(StepKind::Actions(actions));
    }
    let mut single = serde_json::Map::new();
    single.insert(name.to_string(), value.to_json());
    sink.typed(node, Value::Object(single))
}

fn parse_action(sink: &mut Sink<'_>, node: &Node) -> Option<Action> {
    if node.as_map().is_none() {
        sink.error(
            Code::InvalidValue,
            node.span,
            "an action must be a mapping such as `{tag: [hot]}`",
            None,
        );
        return None;
    }
    let mut allowed: Vec<&str> = StepKind::KEYS.to_vec();
    allowed.push("with");
    let before = sink.diags.len();
    check_keys(sink, node, &allowed, "an action");
    let kind = parse_kind(sink, node, "this action")?;
    if !kind.is_action() {
        let key_span = node.entry(kind.key()).map_or(node.span, |(k, _)| k.span);
        sink.error(
            Code::NotAnAction,
            key_span,
            format!("`{}` cannot stand inside `actions`", kind.key()),
            Some(format!(
                "make `{}` a step of its own before or after this one",
                kind.key()
            )),
        );
        return None;
    }
    let with = with_of(sink, node);
    (sink.diags.len() == before).then_some(Action { kind, with })
}

fn with_of(sink: &mut Sink<'_>, node: &Node) -> Option<BTreeMap<String, Value>> {
    let w = node.get("with")?;
    let json = serde_json::json!({ "with": w.to_json() });
    #[derive(Deserialize)]
    struct W {
        with: BTreeMap<String, Value>,
    }
    sink.typed::<W>(node, json).map(|w| w.with)
}

/// A step's `await`, `save` and `timeout` (see [`Step`]).
#[derive(Deserialize, Default)]
struct Awaits {
    #[serde(rename = "await", default)]
    await_outcome: bool,
    #[serde(default)]
    save: BTreeMap<String, crate::model::Expr>,
    #[serde(default)]
    timeout: Option<crate::model::Duration>,
}

fn awaits_of(sink: &mut Sink<'_>, node: &Node) -> Option<Awaits> {
    let mut json = serde_json::Map::new();
    for key in ["await", "save", "timeout"] {
        if let Some(v) = node.get(key) {
            json.insert(key.to_string(), v.to_json());
        }
    }
    if json.is_empty() {
        return None;
    }
    sink.typed::<Awaits>(node, Value::Object(json))
}

fn parse_step(sink: &mut Sink<'_>, node: &Node) -> Option<Step> {
    if node.as_map().is_none() {
        sink.error(
            Code::InvalidValue,
            node.span,
            "a step must be a mapping with an `id` and a kind",
            Some("e.g. `- id: deliver` then `  send_email: ebook-delivery`".into()),
        );
        return None;
    }
    let before = sink.diags.len();
    let mut allowed: Vec<&str> = STEP_EXTRA_KEYS.to_vec();
    allowed.extend_from_slice(StepKind::KEYS);
    check_keys(sink, node, &allowed, "a step");
    let id = match node.get("id") {
        Some(n) => match n.as_str() {
            Some(s) if !s.is_empty() => s.to_string(),
            _ => {
                sink.error(Code::InvalidValue, n.span, "a step id must be text", None);
                String::new()
            }
        },
        None => {
            sink.error(
                Code::MissingKey,
                node.span,
                "missing required key `id` in a step",
                Some("add `id: a-name` so that other steps can point here".into()),
            );
            String::new()
        }
    };
    let owner = if id.is_empty() {
        "this step".to_string()
    } else {
        format!("step `{id}`")
    };
    let kind = parse_kind(sink, node, &owner);
    let text = |sink: &mut Sink<'_>, key: &str| -> Option<String> {
        let n = node.get(key)?;
        match n.as_str() {
            Some(s) if n.as_map().is_none() => Some(s.to_string()),
            _ => {
                sink.error(
                    Code::InvalidValue,
                    n.span,
                    format!("`{key}` must be a step id"),
                    None,
                );
                None
            }
        }
    };
    let next = text(sink, "next");
    let on_timeout = text(sink, "on_timeout");
    let with = with_of(sink, node);
    let awaits = awaits_of(sink, node);
    if sink.diags.len() > before {
        return None;
    }
    let awaits = awaits.unwrap_or_default();
    Some(Step {
        id,
        kind: kind?,
        with,
        next,
        on_timeout,
        await_outcome: awaits.await_outcome,
        save: awaits.save,
        timeout: awaits.timeout,
    })
}

fn parse_templates(root: &Path, dir: &Path, loaded: &mut Loaded) -> BTreeMap<String, Template> {
    let mut out: BTreeMap<String, Template> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        let (Some(stem), Some(ext)) = (
            path.file_stem().and_then(|s| s.to_str()),
            path.extension().and_then(|s| s.to_str()),
        ) else {
            continue;
        };
        if ext != "html" && ext != "txt" {
            continue;
        }
        let text = match read_campaign_file(root, &path) {
            Ok(t) => t,
            Err(e) => {
                loaded.diagnostics.push(e.diagnostic(&path));
                continue;
            }
        };
        let (front, body) = split_front_matter(&text);
        let t = out.entry(stem.to_string()).or_insert_with(|| Template {
            name: stem.to_string(),
            subject: None,
            preheader: None,
            from: None,
            html: None,
            text: None,
            html_line: 1,
            text_line: 1,
        });
        let body_line = 1 + text[..text.len() - body.len()].matches('\n').count();
        if let Some(front) = front {
            match yaml::parse(front) {
                Ok(node) => {
                    let mut diags = Vec::new();
                    let mut sink = Sink {
                        file: &path,
                        diags: &mut diags,
                    };
                    // Offset positions: front matter starts on line 2.
                    let node = shift(node, 1);
                    check_keys(
                        &mut sink,
                        &node,
                        &["subject", "preheader", "from"],
                        "front matter",
                    );
                    let field = |k: &str| node.get(k).and_then(|n| n.as_str()).map(str::to_string);
                    t.subject = field("subject").or(t.subject.take());
                    t.preheader = field("preheader").or(t.preheader.take());
                    t.from = field("from").or(t.from.take());
                    loaded.diagnostics.extend(diags);
                }
                Err(e) => loaded.diagnostics.push(Diagnostic::error(
                    Code::Syntax,
                    &path,
                    Span {
                        line: e.span.line + 1,
                        ..e.span
                    },
                    format!("invalid front matter: {}", e.message),
                )),
            }
        }
        if ext == "html" {
            t.html = Some(body.to_string());
            t.html_line = body_line;
        } else {
            t.text = Some(body.to_string());
            t.text_line = body_line;
        }
        loaded.sources.insert(path.clone(), text.clone());
    }
    // A template meant to be sent needs a subject; partials and layouts start with `_`.
    for t in out.values() {
        if t.subject.is_none() && !t.name.starts_with('_') {
            let file = dir.join(format!(
                "{}.{}",
                t.name,
                if t.html.is_some() { "html" } else { "txt" }
            ));
            loaded.diagnostics.push(
                Diagnostic::error(
                    Code::MissingKey,
                    &file,
                    Span {
                        line: 1,
                        col: 1,
                        len: 1,
                    },
                    format!("template `{}` has no subject", t.name),
                )
                .with_hint("start the file with front matter: `---`, `subject: ...`, `---`"),
            );
        }
    }
    out
}

fn shift(mut node: Node, lines: usize) -> Node {
    node.span.line += lines;
    node.kind = match node.kind {
        yaml::NodeKind::Seq(items) => {
            yaml::NodeKind::Seq(items.into_iter().map(|n| shift(n, lines)).collect())
        }
        yaml::NodeKind::Map(entries) => yaml::NodeKind::Map(
            entries
                .into_iter()
                .map(|(k, v)| (shift(k, lines), shift(v, lines)))
                .collect(),
        ),
        s => s,
    };
    node
}

/// Splits `---\nfront\n---\nbody` into (front matter, body).
pub fn split_front_matter(text: &str) -> (Option<&str>, &str) {
    let Some(rest) = text
        .strip_prefix("---\n")
        .or_else(|| text.strip_prefix("---\r\n"))
    else {
        return (None, text);
    };
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        if line.trim_end() == "---" {
            return (Some(&rest[..offset]), &rest[offset + line.len()..]);
        }
        offset += line.len();
    }
    (None, text)
}

/// The settings of the project in `root` alone (`nurture.toml`, or the defaults when it
/// is missing or invalid), for commands that only read the store of a project that may
/// have errors elsewhere.
pub fn settings(root: &Path) -> Settings {
    let mut loaded = Loaded {
        project: None,
        diagnostics: Vec::new(),
        sources: HashMap::new(),
    };
    load_settings(root, &mut loaded)
}

fn load_settings(root: &Path, loaded: &mut Loaded) -> Settings {
    let path = root.join("nurture.toml");
    if std::fs::symlink_metadata(&path).is_err() {
        return Settings::default();
    }
    let text = match read_campaign_file(root, &path) {
        Ok(t) => t,
        Err(e) => {
            loaded.diagnostics.push(e.diagnostic(&path));
            return Settings::default();
        }
    };
    let result = toml::from_str::<Settings>(&text);
    let settings = match result {
        Ok(s) => s,
        Err(e) => {
            let span = e
                .span()
                .map(|r| span_of_offset(&text, r.start, r.len()))
                .unwrap_or_default();
            let msg = e.message().to_string();
            let hint = between(&msg, "unknown field `", "`").and_then(|f| {
                let expected = backticked(msg.split_once("expected").map_or("", |x| x.1));
                did_you_mean(f, expected.iter().map(String::as_str))
                    .map(|s| format!("did you mean `{s}`?"))
            });
            loaded.diagnostics.push(
                Diagnostic::error(
                    Code::InvalidValue,
                    &path,
                    span,
                    format!("invalid nurture.toml: {}", msg.trim()),
                )
                .with_opt_hint(hint),
            );
            Settings::default()
        }
    };
    loaded.sources.insert(path, text);
    settings
}

/// Form field names that are not free contact fields: nurture sets them itself, or they
/// are the contact's address, id or consent (which only a confirmation sets).
pub const FORM_RESERVED_FIELDS: &[&str] = &[
    "id",
    "email",
    "consent",
    "tags",
    "lifecycle",
    "owner",
    "created_at",
    "score",
    "grade",
    "segments",
    "unsubscribed",
    "suppressed",
    "form",
    "nurture_anonymous_id",
];

/// `[forms.NAME]`: names, fields, redirect and the confirmation template, each error at
/// the line of its form's table.
fn check_forms(
    root: &Path,
    settings: &Settings,
    templates: &BTreeMap<String, Template>,
    loaded: &mut Loaded,
) {
    let path = root.join("nurture.toml");
    let text = loaded.sources.get(&path).cloned().unwrap_or_default();
    for (name, form) in &settings.forms {
        let span = form_span(&text, name);
        let mut bad = |msg: String| {
            loaded.diagnostics.push(Diagnostic::error(
                Code::InvalidValue,
                &path,
                span,
                format!("[forms.{name}]: {msg}"),
            ))
        };
        let id_like = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !id_like(name) {
            bad("a form's name is 1 to 64 letters, digits, `_` and `-` (it is in the URL)".into());
        }
        for f in &form.fields {
            if !id_like(f) {
                bad(format!("field `{f}`: 1 to 64 letters, digits, `_` and `-`"));
            } else if FORM_RESERVED_FIELDS.contains(&f.as_str()) {
                bad(format!(
                    "field `{f}` is not a free contact field (`email` is always taken)"
                ));
            }
        }
        let honeypot = form.honeypot.as_deref().unwrap_or("website");
        if !id_like(honeypot) || form.fields.iter().any(|f| f == honeypot) {
            bad(format!(
                "honeypot `{honeypot}` must be a field name that is not in `fields`"
            ));
        }
        if let Some(r) = &form.redirect {
            let path_ok = r.starts_with('/') && !r.starts_with("//") && !r.contains('\\');
            if !path_ok && !r.starts_with("https://") {
                bad(format!(
                    "redirect `{r}`: an https:// URL or a path such as /thanks"
                ));
            }
        }
        for o in &form.allowed_origins {
            if let Some(why) = origin_problem(o) {
                bad(format!(
                    "allowed origin `{o}`: {why}; scheme and host, e.g. https://www.acme.test"
                ));
            }
        }
        match (&form.double_opt_in, &form.confirm_template) {
            (Some(true), None) => {
                bad("double_opt_in needs `confirm_template`, the confirmation email".into())
            }
            (_, Some(t)) if !templates.contains_key(t) => {
                bad(format!("confirm_template `{t}` is not in templates/"))
            }
            _ => {}
        }
    }
}

/// What keeps `o` from being a web origin as a browser sends it in `Origin`
/// (`http(s)://host[:port]`, nothing after): such an entry would never match a request.
pub fn origin_problem(o: &str) -> Option<&'static str> {
    let lower = o.to_ascii_lowercase();
    let (rest, default_port) = match (
        lower.strip_prefix("https://"),
        lower.strip_prefix("http://"),
    ) {
        (Some(r), _) => (r, "443"),
        (_, Some(r)) => (r, "80"),
        _ => return Some("an origin starts with https:// or http://"),
    };
    if !rest.is_ascii() {
        return Some(
            "an international host is written as the browser sends it, in punycode (xn--...)",
        );
    }
    if rest
        .split(['/', '?', '#'])
        .next()
        .is_some_and(|a| a.contains('@'))
    {
        return Some("an origin has no user or password");
    }
    let path = "an origin has no path, query or space after the host";
    let (host, port) = match rest.strip_prefix('[') {
        // An IPv6 address: `[::1]:8080`.
        Some(v6) => match v6.split_once(']') {
            Some((addr, "")) => (addr, None),
            Some((addr, after)) => match after.strip_prefix(':') {
                Some(p) => (addr, Some(p)),
                None => return Some(path),
            },
            None => return Some("an IPv6 host ends with ]"),
        },
        None => match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        },
    };
    let v6 = rest.starts_with('[');
    let labels = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || !v6 && labels.split('.').any(str::is_empty) {
        return Some("the host is missing or has an empty label");
    }
    let host_ok = host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_' || (v6 && c == ':'));
    if !host_ok {
        return Some(path);
    }
    match port {
        Some(p) if p.contains(['/', '?', '#', ' ']) => Some(path),
        Some(p)
            if p.bytes().any(|b| !b.is_ascii_digit())
                || p.starts_with('0')
                || p.parse::<u16>().is_err() =>
        {
            Some("the port is 1 to 65535, without a leading 0")
        }
        Some(p) if p == default_port => {
            Some("a browser leaves the scheme's default port out (443, 80)")
        }
        _ => None,
    }
}

/// `[tracking] allowed_origins`: each a web origin (a trailing `/` is tolerated, as the
/// API does).
fn check_tracking(root: &Path, settings: &Settings, loaded: &mut Loaded) {
    let Some(origins) = settings
        .tracking
        .as_ref()
        .and_then(|t| t.allowed_origins.as_ref())
    else {
        return;
    };
    let path = root.join("nurture.toml");
    let text = loaded.sources.get(&path).cloned().unwrap_or_default();
    let section = text.find("[tracking]").unwrap_or(0);
    for o in origins {
        if let Some(why) = origin_problem(o.trim_end_matches('/')) {
            let at = text[section..]
                .find(&format!("\"{o}\""))
                .map_or(section, |i| section + i);
            loaded.diagnostics.push(Diagnostic::error(
                Code::InvalidValue,
                &path,
                span_of_offset(&text, at, o.len().max(1)),
                format!("[tracking] allowed origin `{o}`: {why}; scheme and host, e.g. https://www.acme.test"),
            ));
        }
    }
}

/// Where `[forms.NAME]` is written (the file's start when it cannot be found).
fn form_span(text: &str, name: &str) -> Span {
    let header = format!("[forms.{name}]");
    match text.find(&header) {
        Some(at) => span_of_offset(text, at, header.len()),
        None => span_of_offset(text, 0, 1),
    }
}

/// Line and column (1-based) of a byte offset.
pub fn span_of_offset(text: &str, offset: usize, len: usize) -> Span {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Span {
        line,
        col,
        len: len.max(1),
    }
}

fn load_plugins(
    root: &Path,
    settings: &Settings,
    loaded: &mut Loaded,
) -> BTreeMap<String, (PluginManifest, PathBuf)> {
    let mut out = BTreeMap::new();
    let dirs: Vec<PathBuf> = if settings.plugin_dirs.is_empty() {
        vec![root.join("plugins")]
    } else {
        settings.plugin_dirs.iter().map(|d| root.join(d)).collect()
    };
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut manifests: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("plugin.toml"))
            .filter(|p| p.is_file())
            .collect();
        manifests.sort();
        for path in manifests {
            let text = match read_campaign_file(&dir, &path) {
                Ok(t) => t,
                Err(e) => {
                    loaded.diagnostics.push(e.diagnostic(&path));
                    continue;
                }
            };
            match toml::from_str::<PluginManifest>(&text) {
                Ok(m)
                    if m.channel
                        .as_deref()
                        .is_some_and(|c| !crate::model::valid_channel(c)) =>
                {
                    loaded.diagnostics.push(bad_channel(
                        &path,
                        &text,
                        m.channel.as_deref().unwrap_or_default(),
                    ));
                }
                Ok(m) => {
                    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
                    out.entry(m.name.clone()).or_insert((m, dir));
                }
                Err(e) => {
                    let span = e
                        .span()
                        .map(|r| span_of_offset(&text, r.start, r.len()))
                        .unwrap_or_default();
                    loaded.diagnostics.push(Diagnostic::error(
                        Code::InvalidValue,
                        &path,
                        span,
                        format!("invalid plugin manifest: {}", e.message().trim()),
                    ));
                }
            }
            loaded.sources.insert(path, text);
        }
    }
    out
}

/// The diagnostic of a plugin manifest's invalid `channel`, at its value.
fn bad_channel(path: &Path, text: &str, channel: &str) -> Diagnostic {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let value = line
            .trim_start()
            .strip_prefix("channel")
            .and_then(|rest| rest.trim_start().strip_prefix('='));
        if let Some(v) = value {
            offset += line.len() - v.trim_start().len();
            break;
        }
        offset += line.len();
    }
    let len = text[offset.min(text.len())..]
        .find(['\n', '#'])
        .unwrap_or(text.len() - offset.min(text.len()))
        .max(1);
    Diagnostic::error(
        Code::InvalidValue,
        path,
        span_of_offset(text, offset, len),
        format!("invalid plugin channel `{channel}`"),
    )
    .with_hint(
        "a channel is a short lowercase name (a letter, then letters, digits or `_`, at most 32), such as `sms`; email is built in",
    )
}

/// Secrets shorter than this (in characters) are refused: a generated one has 64 hex
/// characters (32 random bytes).
pub const MIN_SECRET_LEN: usize = 32;

/// Why a secret of the running project cannot be used. No variant holds the secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The variable `var` is set to an empty or blank value.
    #[error("${var} is set but empty: set it to a key of at least {MIN_SECRET_LEN} characters (e.g. `openssl rand -hex 32`), or unset it")]
    EmptyVar {
        /// The environment variable's name.
        var: String,
    },
    /// The key is shorter than [`MIN_SECRET_LEN`].
    #[error("the key {from} is too short ({len} characters, at least {MIN_SECRET_LEN} are needed): {fix}")]
    Short {
        /// Where it came from (`from $VAR` or `from PATH`).
        from: String,
        /// Its length in characters.
        len: usize,
        /// What to do about it.
        fix: String,
    },
    /// The key file could not be read or created.
    #[error("the key file {path}: {reason}")]
    Io {
        /// The key file.
        path: String,
        /// The I/O error.
        reason: std::io::Error,
    },
}

/// A secret of the running project: from the environment variable `var` when set, else
/// from `DIR/.nurture/NAME`, generated there (32 random bytes, hex, mode 0600, written
/// atomically) on first use. Returns the value and where it came from, for the start-up
/// log. An empty or short key (under [`MIN_SECRET_LEN`] characters) is an error, never
/// trusted: a file left empty by a full disk must not become the key.
pub fn local_secret(dir: &Path, name: &str, var: &str) -> Result<(String, String), SecretError> {
    if let Some(k) = std::env::var_os(var) {
        let k = k.to_string_lossy().to_string();
        if k.trim().is_empty() {
            return Err(SecretError::EmptyVar { var: var.into() });
        }
        let from = format!("from ${var}");
        long_enough(&k, &from, format!("set ${var} to a longer key"))?;
        return Ok((k, from));
    }
    let path = dir.join(".nurture").join(name);
    let io = |reason| SecretError::Io {
        path: path.display().to_string(),
        reason,
    };
    match std::fs::read_to_string(&path) {
        Ok(k) => {
            return Ok((
                existing_secret(&path, k, var)?,
                format!("from {}", path.display()),
            ))
        }
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
        Err(_) => {}
    }
    let key = match create_secret(&path).map_err(io)? {
        Created::New(key) => key,
        // Another process created it first: use theirs, so both share one key.
        Created::Raced(k) => {
            return Ok((
                existing_secret(&path, k, var)?,
                format!("from {}", path.display()),
            ))
        }
    };
    Ok((
        key,
        format!(
            "generated into {} (set ${var} to choose one)",
            path.display()
        ),
    ))
}

fn long_enough(key: &str, from: &str, fix: String) -> Result<(), SecretError> {
    if key.chars().count() < MIN_SECRET_LEN {
        return Err(SecretError::Short {
            from: from.to_string(),
            len: key.chars().count(),
            fix,
        });
    }
    Ok(())
}

/// A key read from its file: long enough, and the file readable by its owner only.
fn existing_secret(path: &Path, text: String, var: &str) -> Result<String, SecretError> {
    let key = text.trim().to_string();
    let from = format!("in {}", path.display());
    let fix = format!(
        "delete the file to have a new key generated (links signed with the old one stop working), or set ${var}"
    );
    long_enough(&key, &from, fix)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map(|m| m.permissions().mode());
        if mode.is_ok_and(|m| m & 0o077 != 0) {
            tracing::warn!(file = %path.display(), "key file readable by others: setting its mode to 600");
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
                |reason| SecretError::Io {
                    path: path.display().to_string(),
                    reason,
                },
            )?;
        }
    }
    Ok(key)
}

enum Created {
    New(String),
    /// The file appeared meanwhile; its content.
    Raced(String),
}

/// Writes a new random key to `path` atomically: a temporary file in the same folder
/// (mode 0600 from its creation), written and synced, then linked into place (never over
/// an existing file) and the folder synced. A full disk leaves no key file behind.
fn create_secret(path: &Path) -> std::io::Result<Created> {
    use std::io::{Read, Write};
    let folder = path.parent().expect("a key file has a folder");
    std::fs::create_dir_all(folder)?;
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut seed)?;
    let key: String = seed.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = folder.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .map_or("key".into(), |n| n.to_string_lossy()),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    let written = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(&tmp)?;
        f.write_all(key.as_bytes())?;
        f.sync_all()?;
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            // A file system without hard links: rename (may replace a racing writer's).
            Err(_) => std::fs::rename(&tmp, path).map(|()| true),
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    if !written? {
        return Ok(Created::Raced(std::fs::read_to_string(path)?));
    }
    std::fs::File::open(folder)?.sync_all()?;
    Ok(Created::New(key))
}

/// Compiles every template as the email channel will, and reports syntax errors and
/// unknown variables at their line in the file.
fn check_templates(dir: &Path, templates: &BTreeMap<String, Template>, loaded: &mut Loaded) {
    let (_, problems) = crate::template::Renderer::new(templates);
    let warnings = crate::template::maybe_missing(templates);
    let problems = problems
        .into_iter()
        .map(|p| (p, false))
        .chain(warnings.into_iter().map(|p| (p, true)));
    for (p, warning) in problems {
        let (name, part) = p.source.rsplit_once('.').unwrap_or((&p.source, "html"));
        let file_ext = match part {
            "txt" => "txt",
            "html" => "html",
            // Front matter: in whichever file has it.
            _ if dir.join(format!("{name}.html")).exists() => "html",
            _ => "txt",
        };
        let path = dir.join(format!("{name}.{file_ext}"));
        let text = loaded.sources.get(&path).cloned().unwrap_or_default();
        let line = if part == "subject" || part == "preheader" {
            text.lines()
                .position(|l| l.trim_start().starts_with(&format!("{part}:")))
                .map_or(1, |i| i + 1)
        } else {
            let (_, body) = split_front_matter(&text);
            let offset = text[..text.len() - body.len()].lines().count();
            offset + p.line.unwrap_or(1)
        };
        let col = text
            .lines()
            .nth(line - 1)
            .and_then(|l| p.message.split('`').nth(1).and_then(|var| l.find(var)))
            .map_or(1, |c| c + 1);
        let span = Span {
            line,
            col,
            len: p.message.split('`').nth(1).map_or(1, str::len),
        };
        let message = format!("template `{name}` ({part}): {}", p.message);
        loaded.diagnostics.push(if warning {
            let field = p.message.split('`').nth(1).unwrap_or_default();
            let field = field.trim_start_matches("contact.").split('.').next();
            Diagnostic::warning(Code::MaybeMissing, &path, span, message)
                .with_hint(crate::lint::template_hint(field.unwrap_or_default()))
        } else {
            Diagnostic::error(Code::BadTemplate, &path, span, message)
            .with_hint("templates use minijinja (Jinja2 syntax); see docs/marketers.md, \"Email templates\"")
        });
    }
}

/// Reads an optional YAML file of the project; `None` when absent or unparsable.
fn read_optional_yaml(root: &Path, name: &str, loaded: &mut Loaded) -> Option<(PathBuf, Node)> {
    let path = root.join(name);
    std::fs::symlink_metadata(&path).ok()?;
    let node = read_yaml(root, &path, loaded)?;
    Some((path, node))
}

fn load_segments(root: &Path, loaded: &mut Loaded) -> (Vec<Segment>, Option<Node>) {
    let Some((path, node)) = read_optional_yaml(root, "segments.yaml", loaded) else {
        return (Vec::new(), None);
    };
    let mut sink = Sink {
        file: &path,
        diags: &mut loaded.diagnostics,
    };
    let mut out: Vec<Segment> = Vec::new();
    let Some(items) = node.as_seq() else {
        sink.error(
            Code::InvalidValue,
            node.span,
            "segments.yaml must be a list of `- id: ...` / `if: ...` entries",
            None,
        );
        return (out, Some(node));
    };
    for item in items {
        if let Some(seg) = sink.typed::<Segment>(item, item.to_json()) {
            if out.iter().any(|s| s.id == seg.id) {
                sink.error(
                    Code::DuplicateId,
                    item.get("id").map_or(item.span, |n| n.span),
                    format!("segment `{}` is defined twice", seg.id),
                    Some("segment ids must be unique; rename or merge one".into()),
                );
            }
            out.push(seg);
        }
    }
    (out, Some(node))
}

/// `policies.yaml`: a list of one-key maps, each key a policy kind; a `never` states
/// exactly one rule and `no_step_unreachable_for` names a segment of the project.
fn load_policies(root: &Path, segments: &[Segment], loaded: &mut Loaded) -> Vec<Policy> {
    let Some((path, node)) = read_optional_yaml(root, "policies.yaml", loaded) else {
        return Vec::new();
    };
    let mut sink = Sink {
        file: &path,
        diags: &mut loaded.diagnostics,
    };
    let Some(items) = node.as_seq() else {
        sink.error(
            Code::InvalidValue,
            node.span,
            "policies.yaml must be a list of `- KIND: ...` entries",
            Some("e.g. `- max_messages: { per: 7d, count: 3 }`".into()),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for item in items {
        if item.as_map().is_some_and(|m| m.len() != 1) {
            sink.error(
                Code::InvalidValue,
                item.span,
                "a policy is one key naming its kind",
                Some("write each policy as its own `- KIND: ...` item".into()),
            );
            continue;
        }
        let Some(policy) = sink.typed::<Policy>(item, item.to_json()) else {
            continue;
        };
        check_policy(&mut sink, item, &policy, segments);
        out.push(policy);
    }
    out
}

fn check_policy(sink: &mut Sink<'_>, item: &Node, policy: &Policy, segments: &[Segment]) {
    let body = item.get(policy.kind()).unwrap_or(item);
    match policy {
        Policy::Never(n) if n.send_to.is_some() == n.send_without.is_some() => sink.error(
            Code::InvalidValue,
            body.span,
            "`never` states exactly one rule",
            Some("write `never: { send_to: unsubscribed }` or `never: { send_without: consent }`, each its own item".into()),
        ),
        Policy::MaxMessages(m) if m.count == 0 => sink.error(
            Code::InvalidValue,
            body.get("count").unwrap_or(body).span,
            "`count` must be at least 1",
            Some("to send nothing, disable the workflows instead".into()),
        ),
        Policy::NoStepUnreachableFor(n) if !segments.iter().any(|s| s.id == n.segment) => {
            let hint = match did_you_mean(&n.segment, segments.iter().map(|s| s.id.as_str())) {
                Some(s) => format!("did you mean `{s}`?"),
                None => "define it in segments.yaml".into(),
            };
            sink.error(
                Code::UnknownSegment,
                body.get("segment").unwrap_or(body).span,
                format!("unknown segment `{}`", n.segment),
                Some(hint),
            );
        }
        _ => {}
    }
}

fn load_scoring(root: &Path, loaded: &mut Loaded) -> (Scoring, Option<Node>) {
    let Some((path, node)) = read_optional_yaml(root, "scoring.yaml", loaded) else {
        return (Scoring::default(), None);
    };
    let mut sink = Sink {
        file: &path,
        diags: &mut loaded.diagnostics,
    };
    let scoring = sink
        .typed::<Scoring>(&node, node.to_json())
        .unwrap_or_default();
    for (i, rule) in scoring.rules.iter().enumerate() {
        let rn = node.locate(["rules".to_string(), i.to_string()]);
        match (&rule.event, &rule.profile) {
            (Some(_), None) | (None, Some(_)) => {}
            _ => sink.error(
                Code::InvalidValue,
                rn.span,
                "a scoring rule has either `event` (points each time) or `profile` (points once)",
                None,
            ),
        }
        if rule.profile.is_some() {
            for (key, set) in [
                ("decay", rule.decay.is_some()),
                ("expires", rule.expires.is_some()),
            ] {
                if set {
                    sink.error(
                        Code::InvalidValue,
                        rn.get(key).map_or(rn.span, |n| n.span),
                        format!("`{key}` goes with `event` rules; a `profile` rule counts while it holds"),
                        Some("age the points of events: `{ event: email.opened, points: 10, decay: { half_life: 30d } }`".into()),
                    );
                }
            }
        }
        if rule.profile.is_some() && rule.condition.is_some() {
            sink.error(
                Code::UnknownKey,
                rn.get("if").map_or(rn.span, |n| n.span),
                "`if` goes with `event` rules; a `profile` rule is its own condition",
                None,
            );
        }
    }
    (scoring, Some(node))
}

/// Loads and validates the project in `root`, collecting every diagnostic.
pub fn load(root: &Path) -> Loaded {
    let mut loaded = Loaded {
        project: None,
        diagnostics: Vec::new(),
        sources: HashMap::new(),
    };
    let settings = load_settings(root, &mut loaded);
    let (scoring, scoring_node) = load_scoring(root, &mut loaded);
    let (segments, segments_node) = load_segments(root, &mut loaded);
    let policies = load_policies(root, &segments, &mut loaded);
    let templates = parse_templates(root, &root.join("templates"), &mut loaded);
    check_templates(&root.join("templates"), &templates, &mut loaded);
    check_forms(root, &settings, &templates, &mut loaded);
    check_tracking(root, &settings, &mut loaded);
    let found = load_plugins(root, &settings, &mut loaded);
    let plugin_dirs: BTreeMap<String, PathBuf> = found
        .iter()
        .map(|(n, (_, d))| (n.clone(), d.clone()))
        .collect();
    let plugins: BTreeMap<String, PluginManifest> =
        found.into_iter().map(|(n, (m, _))| (n, m)).collect();

    let mut files = Vec::new();
    let wf_dir = root.join("workflows");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&wf_dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
                .collect()
        })
        .unwrap_or_default();
    paths.sort();
    for path in paths {
        let Some(root_node) = read_yaml(root, &path, &mut loaded) else {
            continue;
        };
        let before = loaded.diagnostics.len();
        if let Some(w) = parse_workflow(&path, &root_node, &mut loaded.diagnostics) {
            files.push(WorkflowFile {
                partial: loaded.diagnostics.len() > before,
                path,
                root: root_node,
                workflow: w,
            });
        }
    }

    let ctx = plan::Context {
        settings: &settings,
        segments: &segments,
        templates: &templates,
        plugins: &plugins,
    };
    plan::check_scoring(
        &ctx,
        root,
        &scoring,
        scoring_node.as_ref(),
        &mut loaded.diagnostics,
    );
    plan::check_segments(&ctx, root, segments_node.as_ref(), &mut loaded.diagnostics);
    let mut plans = Vec::new();
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    for f in &files {
        if let Some(prev) = seen.get(&f.workflow.workflow) {
            let span = f.root.get("workflow").map_or(f.root.span, |n| n.span);
            loaded.diagnostics.push(
                Diagnostic::error(
                    Code::DuplicateId,
                    &f.path,
                    span,
                    format!("workflow id `{}` is already used", f.workflow.workflow),
                )
                .with_hint(format!(
                    "{} has the same id; ids must be unique",
                    prev.strip_prefix(root).unwrap_or(prev).display()
                )),
            );
            continue;
        }
        seen.insert(f.workflow.workflow.clone(), f.path.clone());
        if let Some(p) = plan::compile(&ctx, f, &mut loaded.diagnostics) {
            plans.push(p);
        }
    }
    if loaded.sources.is_empty() && !wf_dir.is_dir() {
        loaded.diagnostics.push(
            Diagnostic::error(
                Code::Syntax,
                root,
                Span::default(),
                "no campaign project here: there is no `workflows/` folder",
            )
            .with_hint("point at a project folder, e.g. `nurture validate workflows/`"),
        );
    }
    diag::sort(&mut loaded.diagnostics);
    if loaded.errors() == 0 {
        let workflow_sources = plans
            .iter()
            .filter_map(|p| Some((p.id().to_string(), loaded.sources.get(&p.file)?.clone())))
            .collect();
        loaded.project = Some(Project {
            workflow_sources,
            root: root.to_path_buf(),
            settings,
            scoring,
            segments,
            policies,
            templates,
            plugins,
            plugin_dirs,
            plans,
        });
    }
    loaded
}

/// Parses and compiles one workflow's text against `ctx` without touching the disk.
/// Used by the fuzz target and by editors' language servers.
pub fn check_source(
    ctx: &plan::Context<'_>,
    path: &Path,
    text: &str,
) -> (Option<Plan>, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let root = match yaml::parse(text) {
        Ok(n) => n,
        Err(e) => {
            diags.push(yaml_error(path, e));
            return (None, diags);
        }
    };
    let before = diags.len();
    let Some(workflow) = parse_workflow(path, &root, &mut diags) else {
        return (None, diags);
    };
    let file = WorkflowFile {
        path: path.to_path_buf(),
        partial: diags.len() > before,
        root,
        workflow,
    };
    let plan = plan::compile(ctx, &file, &mut diags);
    diag::sort(&mut diags);
    (plan, diags)
}
