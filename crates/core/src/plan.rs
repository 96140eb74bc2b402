//! Compilation of a workflow into a [`Plan`]: a petgraph DAG of steps the engine executes.
//!
//! Compilation is also validation. It resolves every successor (`next`, `on_timeout`,
//! branch and split arms), rejects cycles (printing the cycle), unreachable steps, branches
//! without `else`, bad split weights, CEL expressions that do not compile, and references
//! to templates, segments, plugins and teams that do not exist.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod actions;
mod awaits;
pub mod contact;
mod edges;
mod header;
mod plugins;
mod shape;

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use serde::Serialize;
use serde_json::Value;

use crate::diag::{did_you_mean, Code, Diagnostic};
use crate::expr;
use crate::model::{Scoring, Segment, Settings, Step, StepKind, Trigger, Workflow};
use crate::project::{PluginManifest, Sink, Template, WorkflowFile};
use crate::yaml::{Node, Span};
use edges::Wiring;

/// What the compiler may refer to outside the workflow file.
pub struct Context<'a> {
    /// Project settings: teams, time zone, plugin channels.
    pub settings: &'a Settings,
    /// The segments of `segments.yaml`, for segment triggers and audiences.
    pub segments: &'a [Segment],
    /// The templates, for `send_email` and `notify`.
    pub templates: &'a BTreeMap<String, Template>,
    /// The installed plugins, for `plugin:` steps and their `with:`.
    pub plugins: &'a BTreeMap<String, PluginManifest>,
}

/// A node of the plan graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PlanNode {
    /// Index into `Plan::workflow.steps`.
    Step(usize),
    /// The run ends.
    End,
}

/// Why the engine follows an edge.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "on")]
pub enum Edge {
    /// After the step completes.
    Next,
    /// A `wait_for` saw its event.
    Event,
    /// A `wait_for` timed out.
    Timeout,
    /// Branch arm `index` was the first true condition.
    Yes {
        /// 0-based position of the arm in the `branch` list.
        index: usize,
        /// The arm's CEL condition, as written.
        condition: String,
    },
    /// No branch condition held.
    Else,
    /// Split variant.
    Variant {
        /// 0-based position of the arm in the `split` list.
        index: usize,
        /// The variant's name: its `name`, else the `next` step id.
        name: String,
        /// Its relative weight.
        weight: i64,
    },
}

impl Edge {
    /// Short text for diagrams: empty for `next`, `yes: COND`, `variant NAME (WEIGHT)`...
    pub fn label(&self) -> String {
        match self {
            Edge::Next => String::new(),
            Edge::Event => "event".into(),
            Edge::Timeout => "timeout".into(),
            Edge::Yes { condition, .. } => format!("yes: {condition}"),
            Edge::Else => "no".into(),
            Edge::Variant { name, weight, .. } => format!("variant {name} ({weight})"),
        }
    }
}

/// A compiled workflow.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The workflow file it was compiled from.
    pub file: PathBuf,
    /// The workflow as parsed.
    pub workflow: Workflow,
    /// The steps and the end node, joined by the edges the engine may follow.
    pub graph: DiGraph<PlanNode, Edge>,
    /// The first step's node, where every run starts.
    pub entry: NodeIndex,
    /// The node that ends the run (`next: end`, or after the last step).
    pub end: NodeIndex,
    /// Step id to its node.
    pub index: BTreeMap<String, NodeIndex>,
    /// Every CEL expression of the workflow, compiled, keyed by its source.
    pub programs: HashMap<String, Arc<cel::Program>>,
}

impl Plan {
    /// The workflow's id.
    pub fn id(&self) -> &str {
        &self.workflow.workflow
    }

    /// The step with this id.
    pub fn step(&self, id: &str) -> Option<&Step> {
        match self.graph[*self.index.get(id)?] {
            PlanNode::Step(i) => self.workflow.steps.get(i),
            PlanNode::End => None,
        }
    }

    /// The successors of a step with the edge that leads there.
    pub fn successors(&self, id: &str) -> Vec<(&Edge, Option<&str>)> {
        let Some(&n) = self.index.get(id) else {
            return Vec::new();
        };
        let mut out: Vec<_> = self
            .graph
            .edges_directed(n, Direction::Outgoing)
            .map(|e| (e.id(), e.weight(), self.node_name(e.target())))
            .collect();
        out.sort_by_key(|(id, _, _)| *id);
        out.into_iter().map(|(_, e, t)| (e, t)).collect()
    }

    fn node_name(&self, n: NodeIndex) -> Option<&str> {
        match self.graph[n] {
            PlanNode::Step(i) => Some(self.workflow.steps[i].id.as_str()),
            PlanNode::End => None,
        }
    }

    /// A stable, serializable description used in snapshots and `nurture graph --format json`.
    pub fn view(&self) -> PlanView {
        let nodes = self
            .workflow
            .steps
            .iter()
            .map(|s| NodeView {
                id: s.id.clone(),
                kind: s.kind.key(),
                detail: detail(&s.kind),
            })
            .collect();
        let mut edges: Vec<EdgeView> = self
            .graph
            .edge_references()
            .map(|e| EdgeView {
                from: self.node_name(e.source()).unwrap_or("end").to_string(),
                to: self.node_name(e.target()).unwrap_or("end").to_string(),
                label: e.weight().label(),
            })
            .collect();
        // Stable order: by source step, then in the order the edges were declared.
        edges.sort_by_key(|e| {
            self.workflow
                .steps
                .iter()
                .position(|s| s.id == e.from)
                .unwrap_or(usize::MAX)
        });
        PlanView {
            workflow: self.workflow.workflow.clone(),
            version: self.workflow.version,
            entry: self.workflow.steps[0].id.clone(),
            triggers: self
                .workflow
                .trigger
                .as_slice()
                .iter()
                .map(trigger_detail)
                .collect(),
            nodes,
            edges,
        }
    }

    /// Graphviz DOT.
    pub fn to_dot(&self) -> String {
        let v = self.view();
        let mut out = format!("digraph \"{}\" {{\n  rankdir=TB;\n  node [shape=box, style=rounded, fontname=\"Helvetica\"];\n", esc(&v.workflow));
        out.push_str(&format!(
            "  \"__trigger\" [label=\"{}\", shape=oval];\n",
            v.triggers
                .iter()
                .map(|t| esc(t))
                .collect::<Vec<_>>()
                .join("\\n")
        ));
        for n in &v.nodes {
            let shape = match n.kind {
                "branch" | "split" => "diamond",
                "wait" | "wait_until" | "wait_for" => "parallelogram",
                _ => "box",
            };
            out.push_str(&format!(
                "  \"{}\" [label=\"{}\\n{}: {}\", shape={shape}];\n",
                esc(&n.id),
                esc(&n.id),
                n.kind,
                esc(&n.detail)
            ));
        }
        out.push_str("  \"end\" [label=\"end\", shape=doublecircle];\n");
        out.push_str(&format!("  \"__trigger\" -> \"{}\";\n", esc(&v.entry)));
        for e in &v.edges {
            if e.label.is_empty() {
                out.push_str(&format!("  \"{}\" -> \"{}\";\n", esc(&e.from), esc(&e.to)));
            } else {
                out.push_str(&format!(
                    "  \"{}\" -> \"{}\" [label=\"{}\"];\n",
                    esc(&e.from),
                    esc(&e.to),
                    esc(&e.label)
                ));
            }
        }
        out.push_str("}\n");
        out
    }

    /// Mermaid flowchart.
    pub fn to_mermaid(&self) -> String {
        let v = self.view();
        let mid = |id: &str| {
            format!(
                "s_{}",
                id.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
            )
        };
        let text = |s: &str| s.replace('"', "#quot;").replace('|', "#124;");
        let mut out = String::from("flowchart TD\n");
        out.push_str(&format!(
            "  trigger([\"{}\"])\n",
            text(&v.triggers.join("<br/>"))
        ));
        for n in &v.nodes {
            let label = text(&format!("{}<br/>{}: {}", n.id, n.kind, n.detail));
            let shape = match n.kind {
                "branch" | "split" => format!("{{\"{label}\"}}"),
                "wait" | "wait_until" | "wait_for" => format!("[/\"{label}\"/]"),
                _ => format!("[\"{label}\"]"),
            };
            out.push_str(&format!("  {}{shape}\n", mid(&n.id)));
        }
        out.push_str("  end_((\"end\"))\n");
        out.push_str(&format!("  trigger --> {}\n", mid(&v.entry)));
        for e in &v.edges {
            let to = if e.to == "end" {
                "end_".to_string()
            } else {
                mid(&e.to)
            };
            if e.label.is_empty() {
                out.push_str(&format!("  {} --> {to}\n", mid(&e.from)));
            } else {
                out.push_str(&format!(
                    "  {} -->|\"{}\"| {to}\n",
                    mid(&e.from),
                    text(&e.label)
                ));
            }
        }
        out
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A plan as data: `nurture graph --format json` and snapshot tests.
#[derive(Debug, Serialize)]
pub struct PlanView {
    /// The workflow's id.
    pub workflow: String,
    /// The workflow's version.
    pub version: u32,
    /// The id of the first step.
    pub entry: String,
    /// One line per trigger, e.g. `event form.submitted`.
    pub triggers: Vec<String>,
    /// The steps, in file order.
    pub nodes: Vec<NodeView>,
    /// The edges, by source step in file order.
    pub edges: Vec<EdgeView>,
}

/// A step of a [`PlanView`].
#[derive(Debug, Serialize)]
pub struct NodeView {
    /// The step's id.
    pub id: String,
    /// The step's kind key, e.g. `wait_for`.
    pub kind: &'static str,
    /// Its main argument in short: template, duration, event...
    pub detail: String,
}

/// An edge of a [`PlanView`].
#[derive(Debug, Serialize)]
pub struct EdgeView {
    /// Source step id (`end` for the end node).
    pub from: String,
    /// Target step id, or `end`.
    pub to: String,
    /// [`Edge::label`] of the edge.
    pub label: String,
}

fn trigger_detail(t: &Trigger) -> String {
    match t {
        Trigger::Event(e) => match &e.condition {
            Some(c) => format!("event {} if {}", e.event, c.0),
            None => format!("event {}", e.event),
        },
        Trigger::Segment(s) => format!("segment {}", s.segment),
        Trigger::Score(s) => format!("score reaches {}", s.score.reaches),
        Trigger::Schedule(s) => format!("schedule \"{}\" audience {}", s.schedule, s.audience),
    }
}

fn detail(kind: &StepKind) -> String {
    match kind {
        StepKind::SendEmail(e) => e.template().to_string(),
        StepKind::Wait(d) => d.to_string(),
        StepKind::WaitUntil(w) => {
            let mut parts = Vec::new();
            if let Some(wd) = w.weekday {
                parts.push(format!("{wd:?}").to_lowercase());
            }
            if let Some(t) = w.time {
                parts.push(t.0.format("%H:%M").to_string());
            }
            if let Some(d) = &w.date {
                parts.push(d.0.clone());
            }
            parts.join(" ")
        }
        StepKind::WaitFor(w) => format!("{} (timeout {})", w.event, w.timeout),
        StepKind::Branch(arms) => format!("{} arms", arms.len()),
        StepKind::Split(arms) => arms
            .iter()
            .map(|a| a.weight.to_string())
            .collect::<Vec<_>>()
            .join("/"),
        StepKind::Score(p) => format!("{p:+}"),
        StepKind::Tag(t) | StepKind::Untag(t) => t.as_slice().join(", "),
        StepKind::Set(m) => m.keys().cloned().collect::<Vec<_>>().join(", "),
        StepKind::AssignOwner(a) => format!("team {}", a.team),
        StepKind::Notify(n) => format!("{} to {}", n.template, n.to),
        StepKind::Webhook(w) => format!("{} {}", w.method, w.url),
        StepKind::Plugin(p) => p.clone(),
        StepKind::Actions(a) => a
            .iter()
            .map(|a| a.kind.key())
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// The node of `path` under the workflow root, e.g. `["steps","3","branch","0","if"]`.
fn at<'n>(root: &'n Node, path: &[&str]) -> &'n Node {
    root.locate(path.iter().copied())
}

struct Compiler<'a, 'd> {
    ctx: &'a Context<'a>,
    root: &'a Node,
    sink: Sink<'d>,
    programs: HashMap<String, Arc<cel::Program>>,
}

impl Compiler<'_, '_> {
    fn expr(&mut self, node: &Node, source: &str) {
        if self.programs.contains_key(source) {
            return;
        }
        match expr::compile(source) {
            Ok(p) => {
                self.programs.insert(source.to_string(), Arc::new(p));
            }
            Err(e) => self.expr_error(node, 0, e),
        }
    }

    fn expr_error(&mut self, node: &Node, offset: usize, e: expr::ExprError) {
        let quoted = matches!(
            node.kind,
            crate::yaml::NodeKind::Scalar { quoted: true, .. }
        );
        let span = Span {
            line: node.span.line + e.line.saturating_sub(1),
            col: if e.line <= 1 {
                node.span.col + usize::from(quoted) + offset + e.col
            } else {
                e.col + 1
            },
            len: 1,
        };
        let code = if e.unknown_name {
            Code::UnknownName
        } else {
            Code::BadExpression
        };
        self.sink.error(code, span, e.message, e.hint);
    }

    /// N0014 for an event type that ingestion refuses.
    fn event_type(&mut self, node: &Node, name: &str) {
        if let Some(d) = crate::lint::event_type(self.sink.file, node.span, name) {
            self.sink.diags.push(d);
        }
    }

    /// Checks the `${...}` expressions inside every string of a value.
    fn interpolated(&mut self, node: &Node, value: &Value) {
        match value {
            Value::String(s) => {
                for (offset, src) in expr::interpolations(s) {
                    let n = if node.as_str() == Some(s.as_str()) {
                        node
                    } else {
                        find_scalar(node, s).unwrap_or(node)
                    };
                    let off = if n.as_str() == Some(s.as_str()) {
                        offset
                    } else {
                        0
                    };
                    match expr::compile(src) {
                        Ok(p) => {
                            self.programs.insert(src.to_string(), Arc::new(p));
                            let uses = crate::lint::expression_fields(src);
                            self.maybe_missing(n, off, uses, crate::lint::expression_hint);
                        }
                        Err(e) => self.expr_error(n, off, e),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| self.interpolated(node, v)),
            Value::Object(m) => m.values().for_each(|v| self.interpolated(node, v)),
            _ => {}
        }
    }

    /// N0038 warnings for contact fields that may be missing ([`crate::lint`]), found in
    /// a text at byte `offset` of `node`'s text.
    fn maybe_missing(
        &mut self,
        node: &Node,
        offset: usize,
        uses: Vec<crate::lint::FieldUse>,
        hint: fn(&str) -> String,
    ) {
        let quoted = matches!(
            node.kind,
            crate::yaml::NodeKind::Scalar { quoted: true, .. }
        );
        for f in uses {
            let span = Span {
                line: node.span.line + f.line - 1,
                col: if f.line == 1 {
                    node.span.col + usize::from(quoted) + offset + f.col - 1
                } else {
                    f.col
                },
                len: f.path.len(),
            };
            self.sink.diags.push(
                Diagnostic::warning(
                    Code::MaybeMissing,
                    self.sink.file,
                    span,
                    crate::lint::message(&f.path, "this step"),
                )
                .with_hint(hint(&f.field)),
            );
        }
    }

    fn template(&mut self, node: &Node, name: &str) {
        if !self.ctx.templates.contains_key(name) {
            let hint = match did_you_mean(name, self.ctx.templates.keys().map(String::as_str)) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("create templates/{name}.html (with a `subject:` front matter)"),
            };
            self.sink.error(
                Code::UnknownTemplate,
                node.span,
                format!("no template `{name}` in templates/"),
                Some(hint),
            );
        }
    }

    fn segment(&mut self, node: &Node, name: &str) {
        if !self.ctx.segments.iter().any(|s| s.id == name) {
            let hint = match did_you_mean(name, self.ctx.segments.iter().map(|s| s.id.as_str())) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("define it in segments.yaml: `- id: {name}` with an `if:`"),
            };
            self.sink.error(
                Code::UnknownSegment,
                node.span,
                format!("no segment `{name}` in segments.yaml"),
                Some(hint),
            );
        }
    }

    fn timezone(&mut self, node: &Node, tz: &str) {
        if tz.parse::<chrono_tz::Tz>().is_err() {
            self.sink.error(
                Code::BadTime,
                node.span,
                format!("unknown time zone `{tz}`"),
                Some("use an IANA name such as Europe/Sofia, America/New_York or UTC".into()),
            );
        }
    }
}

fn find_scalar<'n>(node: &'n Node, text: &str) -> Option<&'n Node> {
    match &node.kind {
        crate::yaml::NodeKind::Scalar { text: t, .. } if t == text => Some(node),
        crate::yaml::NodeKind::Scalar { .. } => None,
        crate::yaml::NodeKind::Seq(items) => items.iter().find_map(|n| find_scalar(n, text)),
        crate::yaml::NodeKind::Map(entries) => {
            entries.iter().find_map(|(_, v)| find_scalar(v, text))
        }
    }
}

fn is_valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Compiles one parsed workflow file; `None` when it has errors (reported in `diags`).
pub fn compile(
    ctx: &Context<'_>,
    file: &WorkflowFile,
    diags: &mut Vec<Diagnostic>,
) -> Option<Plan> {
    let before = diags.len();
    let w = &file.workflow;
    let root = &file.root;
    let mut c = Compiler {
        ctx,
        root,
        sink: Sink {
            file: &file.path,
            diags,
        },
        programs: HashMap::new(),
    };
    c.header(w);
    let mut g = Wiring::nodes(&mut c, w);
    for (i, s) in w.steps.iter().enumerate() {
        g.step(&mut c, i, s);
    }
    c.cycles(&g.graph, w);
    // Reachability from the entry. Skipped when edges are missing (placeholder steps of
    // a partial file, unknown targets): every step behind them would look unreachable.
    let broken_edges = c.sink.diags[before..]
        .iter()
        .any(|d| d.code == Code::UnknownStep);
    if !w.steps.is_empty() && !file.partial && !broken_edges {
        c.unreachable(&g, w);
    }
    let failed = c.sink.diags[before..]
        .iter()
        .any(|d| d.severity == crate::diag::Severity::Error)
        || file.partial;
    c.sink.diags.extend(awaits::warnings(w, root, &file.path));
    let programs = c.programs;
    if failed {
        return None;
    }
    Some(Plan {
        file: file.path.clone(),
        workflow: w.clone(),
        graph: g.graph,
        entry: NodeIndex::new(0),
        end: g.end,
        index: g.index,
        programs,
    })
}

/// Parses a cron schedule; 5-field expressions get a leading seconds field.
pub fn parse_cron(s: &str) -> Result<cron::Schedule, cron::error::Error> {
    let fields = s.split_whitespace().count();
    let full = if fields == 5 {
        format!("0 {s}")
    } else {
        s.to_string()
    };
    full.parse::<cron::Schedule>()
}

/// Checks the expressions of `scoring.yaml`.
pub fn check_scoring(
    _ctx: &Context<'_>,
    root: &Path,
    scoring: &Scoring,
    node: Option<&Node>,
    diags: &mut Vec<Diagnostic>,
) {
    let Some(node) = node else { return };
    let path = root.join("scoring.yaml");
    let mut c = Compiler {
        ctx: _ctx,
        root: node,
        sink: Sink { file: &path, diags },
        programs: HashMap::new(),
    };
    for (i, r) in scoring.rules.iter().enumerate() {
        let rn = node.locate(["rules".to_string(), i.to_string()]);
        if let Some(ev) = &r.event {
            c.event_type(rn.get("event").unwrap_or(rn), ev);
        }
        if let Some(e) = &r.condition {
            c.expr(rn.get("if").unwrap_or(rn), &e.0);
        }
        if let Some(e) = &r.profile {
            c.expr(rn.get("profile").unwrap_or(rn), &e.0);
        }
    }
}

/// Checks the expressions of `segments.yaml`.
pub fn check_segments(
    ctx: &Context<'_>,
    root: &Path,
    node: Option<&Node>,
    diags: &mut Vec<Diagnostic>,
) {
    let Some(node) = node else { return };
    let path = root.join("segments.yaml");
    let mut c = Compiler {
        ctx,
        root: node,
        sink: Sink { file: &path, diags },
        programs: HashMap::new(),
    };
    for (i, s) in ctx.segments.iter().enumerate() {
        let sn = node.locate([i.to_string()]);
        c.expr(sn.get("if").unwrap_or(sn), &s.condition.0);
        if !is_valid_id(&s.id) {
            c.sink.error(
                Code::BadId,
                sn.get("id").unwrap_or(sn).span,
                format!("segment id `{}` must use only a-z, 0-9 and -", s.id),
                None,
            );
        }
    }
}

/// The default time zone of a workflow: its own, else the project's, else UTC.
pub fn workflow_tz(w: &Workflow, settings: &Settings) -> chrono_tz::Tz {
    w.timezone
        .as_deref()
        .or(settings.timezone.as_deref())
        .and_then(|t| t.parse().ok())
        .unwrap_or(chrono_tz::UTC)
}
