//! Compilation of a workflow into a [`Plan`]: a petgraph DAG of steps the engine executes.
//!
//! Compilation is also validation. It resolves every successor (`next`, `on_timeout`,
//! branch and split arms), rejects cycles (printing the cycle), unreachable steps, branches
//! without `else`, bad split weights, CEL expressions that do not compile, and references
//! to templates, segments, plugins and teams that do not exist.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod awaits;

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::{Bfs, EdgeRef};
use petgraph::Direction;
use serde::Serialize;
use serde_json::Value;

use crate::diag::{did_you_mean, Code, Diagnostic};
use crate::expr;
use crate::model::{Scoring, Segment, Settings, Step, StepKind, Trigger, Workflow};
use crate::project::{PluginManifest, Sink, Template, WorkflowFile};
use crate::yaml::{Node, Span};

/// What the compiler may refer to outside the workflow file.
pub struct Context<'a> {
    pub settings: &'a Settings,
    pub segments: &'a [Segment],
    pub templates: &'a BTreeMap<String, Template>,
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
    Yes { index: usize, condition: String },
    /// No branch condition held.
    Else,
    /// Split variant.
    Variant {
        index: usize,
        name: String,
        weight: i64,
    },
}

impl Edge {
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
    pub file: PathBuf,
    pub workflow: Workflow,
    pub graph: DiGraph<PlanNode, Edge>,
    pub entry: NodeIndex,
    pub end: NodeIndex,
    pub index: BTreeMap<String, NodeIndex>,
    /// Every CEL expression of the workflow, compiled, keyed by its source.
    pub programs: HashMap<String, Arc<cel::Program>>,
}

impl Plan {
    pub fn id(&self) -> &str {
        &self.workflow.workflow
    }

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

#[derive(Debug, Serialize)]
pub struct PlanView {
    pub workflow: String,
    pub version: u32,
    pub entry: String,
    pub triggers: Vec<String>,
    pub nodes: Vec<NodeView>,
    pub edges: Vec<EdgeView>,
}

#[derive(Debug, Serialize)]
pub struct NodeView {
    pub id: String,
    pub kind: &'static str,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct EdgeView {
    pub from: String,
    pub to: String,
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

    /// Checks one action (or single-action step) at `path` under the root.
    fn action(&mut self, path: &[&str], kind: &StepKind, with: Option<&BTreeMap<String, Value>>) {
        let node = at(self.root, path);
        let value = node.get(kind.key()).unwrap_or(node);
        if with.is_some() && !matches!(kind, StepKind::Plugin(_)) {
            let span = node.entry("with").map_or(node.span, |(k, _)| k.span);
            self.sink.error(
                Code::UnknownKey,
                span,
                "`with` configures a `plugin:` step only",
                Some("remove `with`, or make this a `plugin:` step".into()),
            );
        }
        match kind {
            StepKind::SendEmail(e) => {
                let tnode = value.get("template").unwrap_or(value);
                self.template(tnode, e.template());
                if let Some(s) = e.subject() {
                    let snode = value.get("subject").unwrap_or(value);
                    self.interpolated(snode, &Value::String(s.into()));
                    // The subject is then rendered by minijinja too.
                    let uses = crate::lint::template_fields(s);
                    self.maybe_missing(snode, 0, uses, crate::lint::template_hint);
                }
            }
            StepKind::Notify(n) => {
                self.template(value.get("template").unwrap_or(value), &n.template);
                if n.to != "owner" && !n.to.contains('@') {
                    self.sink.error(
                        Code::InvalidValue,
                        value.get("to").unwrap_or(value).span,
                        format!("`to: {}` is neither `owner` nor an email address", n.to),
                        Some("write `to: owner` for the contact's sales owner".into()),
                    );
                }
            }
            StepKind::Set(fields) => {
                for (k, v) in fields {
                    let vnode = value.get(k).unwrap_or(value);
                    self.interpolated(vnode, v);
                    crate::engine::contact::check_set(&mut self.sink, value, k, v);
                    if k == "lifecycle" {
                        use crate::model::LIFECYCLE_STAGES as STAGES;
                        let ok = v.as_str().is_some_and(|s| STAGES.contains(&s));
                        if !ok {
                            let shown = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                            let hint = match did_you_mean(&shown, STAGES.iter().copied()) {
                                Some(s) => format!("did you mean `{s}`?"),
                                None => format!("lifecycle stages: {}", STAGES.join(", ")),
                            };
                            self.sink.error(
                                Code::InvalidValue,
                                vnode.span,
                                format!("unknown lifecycle stage `{shown}`"),
                                Some(hint),
                            );
                        }
                    }
                }
            }
            StepKind::AssignOwner(a) => {
                if !self.ctx.settings.teams.contains_key(&a.team) {
                    let hint = match did_you_mean(
                        &a.team,
                        self.ctx.settings.teams.keys().map(String::as_str),
                    ) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => format!(
                            "define it in nurture.toml: `[teams.{}]` with `members = [\"rep@example.com\"]`",
                            a.team
                        ),
                    };
                    self.sink.error(
                        Code::UnknownTeam,
                        value.get("team").unwrap_or(value).span,
                        format!("no team `{}` in nurture.toml", a.team),
                        Some(hint),
                    );
                }
            }
            StepKind::Webhook(w) => {
                if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                    self.sink.error(
                        Code::InvalidValue,
                        value.get("url").unwrap_or(value).span,
                        format!("webhook url `{}` is not http(s)", w.url),
                        Some("write a full URL such as https://crm.example.com/hooks/lead".into()),
                    );
                }
                let url = Value::String(w.url.clone());
                self.interpolated(value.get("url").unwrap_or(value), &url);
                if let Some(b) = &w.body {
                    self.interpolated(value.get("body").unwrap_or(value), b);
                }
                let m = w.method.to_ascii_uppercase();
                if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&m.as_str()) {
                    self.sink.error(
                        Code::InvalidValue,
                        value.get("method").unwrap_or(value).span,
                        format!("unsupported HTTP method `{}`", w.method),
                        Some("use GET, POST, PUT, PATCH or DELETE".into()),
                    );
                }
            }
            StepKind::Plugin(name) => self.plugin(node, value, name, with),
            StepKind::Actions(actions) => {
                for (i, a) in actions.iter().enumerate() {
                    let idx = i.to_string();
                    let mut p: Vec<&str> = path.to_vec();
                    p.push("actions");
                    p.push(&idx);
                    self.action(&p, &a.kind, a.with.as_ref());
                }
            }
            StepKind::Score(_) | StepKind::Tag(_) | StepKind::Untag(_) => {}
            StepKind::Wait(_)
            | StepKind::WaitUntil(_)
            | StepKind::WaitFor(_)
            | StepKind::Branch(_)
            | StepKind::Split(_) => {}
        }
    }

    fn plugin(
        &mut self,
        node: &Node,
        value: &Node,
        name: &str,
        with: Option<&BTreeMap<String, Value>>,
    ) {
        let Some((plugin, step)) = name.split_once('/') else {
            self.sink.error(
                Code::UnknownPlugin,
                value.span,
                format!("plugin step `{name}` must be written PLUGIN/STEP"),
                Some("e.g. `plugin: ticketing/create-task`".into()),
            );
            return;
        };
        let Some(m) = self.ctx.plugins.get(plugin) else {
            let hint = match did_you_mean(plugin, self.ctx.plugins.keys().map(String::as_str)) {
                Some(s) => format!("did you mean `{s}`?"),
                None if self.ctx.plugins.is_empty() => {
                    "no plugins are installed; set `plugin_dirs` in nurture.toml".into()
                }
                None => format!(
                    "installed plugins: {}",
                    self.ctx
                        .plugins
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            self.sink.error(
                Code::UnknownPlugin,
                value.span,
                format!("no plugin `{plugin}` is installed"),
                Some(hint),
            );
            return;
        };
        let Some(ps) = m.steps.get(step) else {
            let hint = match did_you_mean(step, m.steps.keys().map(String::as_str)) {
                Some(s) => format!("did you mean `{plugin}/{s}`?"),
                None => format!(
                    "`{plugin}` offers: {}",
                    m.steps.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            };
            self.sink.error(
                Code::UnknownPlugin,
                value.span,
                format!("plugin `{plugin}` has no step `{step}`"),
                Some(hint),
            );
            return;
        };
        let empty = BTreeMap::new();
        let with = with.unwrap_or(&empty);
        let with_node = node.get("with").unwrap_or(node);
        for v in with.values() {
            self.interpolated(with_node, v);
        }
        let Some(schema) = &ps.config else { return };
        let props = schema.get("properties").and_then(Value::as_object);
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for r in required.iter().filter_map(Value::as_str) {
                if !with.contains_key(r) {
                    self.sink.error(
                        Code::BadPluginConfig,
                        with_node.span,
                        format!("`{name}` needs `{r}` in `with:`"),
                        Some(format!("add `{r}: ...` under `with:`")),
                    );
                }
            }
        }
        if let Some(props) = props {
            for (k, v) in with {
                let knode = with_node.entry(k).map_or(with_node.span, |(kn, _)| kn.span);
                match props.get(k) {
                    None => {
                        let hint = match did_you_mean(k, props.keys().map(String::as_str)) {
                            Some(s) => format!("did you mean `{s}`?"),
                            None => format!(
                                "`{name}` accepts: {}",
                                props.keys().cloned().collect::<Vec<_>>().join(", ")
                            ),
                        };
                        self.sink.error(
                            Code::BadPluginConfig,
                            knode,
                            format!("`{name}` has no setting `{k}`"),
                            Some(hint),
                        );
                    }
                    Some(p) => {
                        let want = p.get("type").and_then(Value::as_str).unwrap_or("any");
                        let ok = match want {
                            "string" => v.is_string(),
                            "integer" => v.is_i64() || v.is_u64(),
                            "number" => v.is_number(),
                            "boolean" => v.is_boolean(),
                            "array" => v.is_array(),
                            "object" => v.is_object(),
                            _ => true,
                        };
                        if !ok {
                            let vnode = with_node.get(k).map_or(knode, |n| n.span);
                            self.sink.error(
                                Code::BadPluginConfig,
                                vnode,
                                format!("`{k}` of `{name}` must be a {want}"),
                                None,
                            );
                        }
                    }
                }
            }
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

    if !is_valid_id(&w.workflow) {
        c.sink.error(
            Code::BadId,
            root.get("workflow").map_or(root.span, |n| n.span),
            format!("workflow id `{}` must use only a-z, 0-9 and -", w.workflow),
            Some(format!(
                "e.g. `workflow: {}`",
                w.workflow
                    .to_lowercase()
                    .replace(|ch: char| !ch.is_ascii_alphanumeric(), "-")
            )),
        );
    }
    if let Some(tz) = &w.timezone {
        c.timezone(root.get("timezone").unwrap_or(root), tz);
    }

    // Triggers.
    let tnode = root.get("trigger").unwrap_or(root);
    for (i, t) in w.trigger.as_slice().iter().enumerate() {
        let node = if tnode.as_seq().is_some() {
            tnode.locate([i.to_string()])
        } else {
            tnode
        };
        match t {
            Trigger::Event(e) => {
                c.event_type(node.get("event").unwrap_or(node), &e.event);
                if let Some(cond) = &e.condition {
                    c.expr(node.get("if").unwrap_or(node), &cond.0);
                }
            }
            Trigger::Segment(s) => c.segment(node.get("segment").unwrap_or(node), &s.segment),
            Trigger::Score(_) => {}
            Trigger::Schedule(s) => {
                if let Err(e) = parse_cron(&s.schedule) {
                    c.sink.error(
                        Code::BadTime,
                        node.get("schedule").unwrap_or(node).span,
                        format!("invalid cron schedule `{}`: {e}", s.schedule),
                        Some("five fields: minute hour day-of-month month weekday, e.g. \"0 9 * * MON\"".into()),
                    );
                }
                c.segment(node.get("audience").unwrap_or(node), &s.audience);
            }
        }
    }
    if let Some(g) = &w.goal {
        if let Some(event) = &g.event {
            c.event_type(at(root, &["goal", "event"]), event);
        }
        if let Some(cond) = &g.condition {
            let n = at(root, &["goal", "if"]);
            c.expr(n, &cond.0);
        }
        if g.event.is_none() && g.condition.is_none() {
            c.sink.error(
                Code::MissingKey,
                at(root, &["goal"]).span,
                "a goal needs `event`, `if`, or both",
                Some("`goal: { event: demo.requested }` or `goal: { if: 'contact.lifecycle == \"customer\"' }`".into()),
            );
        }
    }
    if let Some(x) = &w.exit_if {
        c.expr(at(root, &["exit_if"]), &x.0);
    }

    // Nodes.
    let mut graph: DiGraph<PlanNode, Edge> = DiGraph::new();
    let mut index: BTreeMap<String, NodeIndex> = BTreeMap::new();
    for (i, s) in w.steps.iter().enumerate() {
        let n = graph.add_node(PlanNode::Step(i));
        let id_node = at(root, &["steps", &i.to_string(), "id"]);
        if s.id == "end" {
            c.sink.error(
                Code::BadId,
                id_node.span,
                "`end` is reserved: `next: end` stops a run",
                Some("rename this step".into()),
            );
        } else if s.id.chars().any(char::is_whitespace) {
            c.sink.error(
                Code::BadId,
                id_node.span,
                format!("step id `{}` contains spaces", s.id),
                Some(format!(
                    "e.g. `id: {}`",
                    s.id.replace(char::is_whitespace, "-")
                )),
            );
        }
        if index.contains_key(&s.id) {
            c.sink.error(
                Code::DuplicateStep,
                id_node.span,
                format!("step id `{}` is used twice", s.id),
                Some("step ids must be unique within a workflow; rename one".into()),
            );
        } else {
            index.insert(s.id.clone(), n);
        }
    }
    let end = graph.add_node(PlanNode::End);

    // Edges.
    let ids: Vec<&str> = w.steps.iter().map(|s| s.id.as_str()).collect();
    for (i, s) in w.steps.iter().enumerate() {
        let si = i.to_string();
        let snode = at(root, &["steps", &si]);
        let from = NodeIndex::new(i);
        let mut resolve =
            |c: &mut Compiler<'_, '_>, target: &str, node: &Node| -> Option<NodeIndex> {
                if target == "end" {
                    return Some(end);
                }
                match index.get(target) {
                    Some(&n) => Some(n),
                    None => {
                        let hint = match did_you_mean(target, ids.iter().copied()) {
                            Some(s) => format!("did you mean `{s}`?"),
                            None => format!("steps here: {}; or `end`", ids.join(", ")),
                        };
                        c.sink.error(
                            Code::UnknownStep,
                            node.span,
                            format!("no step `{target}` in this workflow"),
                            Some(hint),
                        );
                        None
                    }
                }
            };
        let default_next =
            |c: &mut Compiler<'_, '_>,
             resolve: &mut dyn FnMut(&mut Compiler<'_, '_>, &str, &Node) -> Option<NodeIndex>|
             -> Option<NodeIndex> {
                match &s.next {
                    Some(t) => resolve(c, t, snode.get("next").unwrap_or(snode)),
                    None => Some(if i + 1 < w.steps.len() {
                        NodeIndex::new(i + 1)
                    } else {
                        end
                    }),
                }
            };
        if s.on_timeout.is_some() && !matches!(s.kind, StepKind::WaitFor(_)) {
            c.sink.error(
                Code::UnknownKey,
                snode
                    .entry("on_timeout")
                    .map_or(snode.span, |(k, _)| k.span),
                "`on_timeout` belongs to a `wait_for` step",
                Some("remove it, or make this step a `wait_for`".into()),
            );
        }
        c.awaits(s, snode);
        match &s.kind {
            StepKind::Branch(arms) => {
                if s.next.is_some() {
                    c.sink.error(
                        Code::UnknownKey,
                        snode.entry("next").map_or(snode.span, |(k, _)| k.span),
                        "a branch chooses its successor in its arms; `next` has no effect here",
                        Some("remove `next` and put the target in an arm".into()),
                    );
                }
                let bnode = snode.get("branch").unwrap_or(snode);
                let mut has_else = false;
                for (j, arm) in arms.iter().enumerate() {
                    let anode = bnode.locate([j.to_string()]);
                    match (&arm.condition, &arm.next, &arm.otherwise) {
                        (Some(cond), Some(t), None) => {
                            c.expr(anode.get("if").unwrap_or(anode), &cond.0);
                            if has_else {
                                c.sink.error(
                                    Code::BranchWithoutElse,
                                    anode.span,
                                    "this arm comes after `else` and can never be taken",
                                    Some("move the `else` arm to the end".into()),
                                );
                            }
                            if let Some(to) = resolve(&mut c, t, anode.get("next").unwrap_or(anode))
                            {
                                graph.add_edge(
                                    from,
                                    to,
                                    Edge::Yes {
                                        index: j,
                                        condition: cond.0.clone(),
                                    },
                                );
                            }
                        }
                        (None, None, Some(t)) => {
                            if has_else {
                                c.sink.error(
                                    Code::BranchWithoutElse,
                                    anode.span,
                                    "a branch has one `else` arm",
                                    Some("remove the extra `else`".into()),
                                );
                            }
                            has_else = true;
                            if let Some(to) = resolve(&mut c, t, anode.get("else").unwrap_or(anode))
                            {
                                graph.add_edge(from, to, Edge::Else);
                            }
                        }
                        (Some(_), None, None) => c.sink.error(
                            Code::MissingKey,
                            anode.span,
                            "a branch arm with `if` needs `next`",
                            Some("add `next: STEP` to this arm".into()),
                        ),
                        _ => c.sink.error(
                            Code::InvalidValue,
                            anode.span,
                            "a branch arm is `{if: CONDITION, next: STEP}` or `{else: STEP}`",
                            None,
                        ),
                    }
                }
                if !has_else {
                    c.sink.error(
                        Code::BranchWithoutElse,
                        snode.entry("branch").map_or(snode.span, |(k, _)| k.span),
                        format!("branch `{}` has no `else` arm", s.id),
                        Some(
                            "add `- else: STEP` (or `- else: end`) so every contact has a path"
                                .into(),
                        ),
                    );
                }
            }
            StepKind::Split(arms) => {
                if s.next.is_some() {
                    c.sink.error(
                        Code::UnknownKey,
                        snode.entry("next").map_or(snode.span, |(k, _)| k.span),
                        "a split chooses its successor in its arms; `next` has no effect here",
                        Some("remove `next`".into()),
                    );
                }
                let spnode = snode.get("split").unwrap_or(snode);
                if arms.len() < 2 {
                    c.sink.error(
                        Code::BadSplit,
                        spnode.span,
                        "a split needs at least two arms",
                        Some("add another `- {weight: 50, next: STEP}` arm".into()),
                    );
                }
                for (j, arm) in arms.iter().enumerate() {
                    let anode = spnode.locate([j.to_string()]);
                    if arm.weight <= 0 {
                        c.sink.error(
                            Code::BadSplit,
                            anode.get("weight").unwrap_or(anode).span,
                            format!("split weight {} is not positive", arm.weight),
                            Some("weights are relative shares such as 50/50 or 80/20".into()),
                        );
                    }
                    if let Some(to) = resolve(&mut c, &arm.next, anode.get("next").unwrap_or(anode))
                    {
                        graph.add_edge(
                            from,
                            to,
                            Edge::Variant {
                                index: j,
                                name: arm.name.clone().unwrap_or_else(|| arm.next.clone()),
                                weight: arm.weight,
                            },
                        );
                    }
                }
            }
            StepKind::WaitFor(wf) => {
                c.event_type(at(root, &["steps", &si, "wait_for", "event"]), &wf.event);
                if let Some(cond) = &wf.condition {
                    c.expr(at(root, &["steps", &si, "wait_for", "if"]), &cond.0);
                }
                if let Some(to) = default_next(&mut c, &mut resolve) {
                    graph.add_edge(from, to, Edge::Event);
                }
                let timeout_to = match &s.on_timeout {
                    Some(t) => resolve(&mut c, t, snode.get("on_timeout").unwrap_or(snode)),
                    None => default_next(&mut c, &mut resolve),
                };
                if let Some(to) = timeout_to {
                    graph.add_edge(from, to, Edge::Timeout);
                }
            }
            StepKind::WaitUntil(wu) => {
                let wnode = snode.get("wait_until").unwrap_or(snode);
                match (&wu.time, &wu.date) {
                    (None, None) => c.sink.error(
                        Code::MissingKey,
                        wnode.span,
                        "`wait_until` needs `time` (optionally with `weekday`) or `date`",
                        Some("e.g. `wait_until: { time: \"09:00\", weekday: mon }`".into()),
                    ),
                    (_, Some(d)) => {
                        if wu.weekday.is_some() {
                            c.sink.error(
                                Code::InvalidValue,
                                wnode.span,
                                "`weekday` cannot be combined with `date`",
                                None,
                            );
                        }
                        c.expr(wnode.get("date").unwrap_or(wnode), &d.0)
                    }
                    _ => {}
                }
                if let Some(to) = default_next(&mut c, &mut resolve) {
                    graph.add_edge(from, to, Edge::Next);
                }
            }
            other => {
                c.action(&["steps", &si], other, s.with.as_ref());
                if let Some(to) = default_next(&mut c, &mut resolve) {
                    graph.add_edge(from, to, Edge::Next);
                }
            }
        }
    }

    // Cycles: report each strongly connected component once, with its path.
    for scc in petgraph::algo::tarjan_scc(&graph) {
        let cyclic = scc.len() > 1 || graph.contains_edge(scc[0], scc[0]);
        if !cyclic {
            continue;
        }
        let members: HashSet<NodeIndex> = scc.iter().copied().collect();
        let start = *scc.iter().min().expect("non-empty");
        let path = cycle_path(&graph, start, &members);
        let names: Vec<&str> = path
            .iter()
            .map(|n| match graph[*n] {
                PlanNode::Step(i) => w.steps[i].id.as_str(),
                PlanNode::End => "end",
            })
            .collect();
        // Point at the edge that closes the cycle: the last step's successor key.
        let last = *path.iter().rev().nth(1).unwrap_or(&start);
        let PlanNode::Step(li) = graph[last] else {
            continue;
        };
        let lnode = at(root, &["steps", &li.to_string()]);
        let target = names[0];
        let span = find_scalar(lnode, target).map_or(lnode.span, |n| n.span);
        c.sink.error(
            Code::Cycle,
            span,
            format!("steps form a cycle: {}", names.join(" -> ")),
            Some("a workflow is a DAG; to repeat a touchpoint use `reentry` or a new step".into()),
        );
    }

    // Reachability from the entry. Skipped when edges are missing (placeholder steps of
    // a partial file, unknown targets): every step behind them would look unreachable.
    let broken_edges = c.sink.diags[before..]
        .iter()
        .any(|d| d.code == Code::UnknownStep);
    if !w.steps.is_empty() && !file.partial && !broken_edges {
        let mut reached = HashSet::new();
        let mut bfs = Bfs::new(&graph, NodeIndex::new(0));
        while let Some(n) = bfs.next(&graph) {
            reached.insert(n);
        }
        for (i, s) in w.steps.iter().enumerate() {
            let n = NodeIndex::new(i);
            if !reached.contains(&n) && index.get(&s.id) == Some(&n) {
                c.sink.error(
                    Code::Unreachable,
                    at(root, &["steps", &i.to_string(), "id"]).span,
                    format!("step `{}` is never reached", s.id),
                    Some(format!(
                        "no path from the first step leads here; point a `next:` at `{}` or remove it",
                        s.id
                    )),
                );
            }
        }
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
        graph,
        entry: NodeIndex::new(0),
        end,
        index,
        programs,
    })
}

fn cycle_path(
    graph: &DiGraph<PlanNode, Edge>,
    start: NodeIndex,
    members: &HashSet<NodeIndex>,
) -> Vec<NodeIndex> {
    // Shortest path from start back to start inside the component (BFS by parents).
    let mut parent: HashMap<NodeIndex, NodeIndex> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    let mut visited = HashSet::from([start]);
    while let Some(n) = queue.pop_front() {
        let mut succ: Vec<NodeIndex> = graph.neighbors(n).collect();
        succ.sort();
        for m in succ {
            if !members.contains(&m) {
                continue;
            }
            if m == start {
                let mut path = vec![start];
                let mut cur = n;
                while cur != start {
                    path.push(cur);
                    cur = parent[&cur];
                }
                path.push(start);
                let l = path.len();
                path[1..l - 1].reverse();
                return path;
            }
            if visited.insert(m) {
                parent.insert(m, n);
                queue.push_back(m);
            }
        }
    }
    vec![start, start]
}

/// Parses a cron schedule; 5-field expressions get a leading seconds field.
pub fn parse_cron(s: &str) -> Result<cron::Schedule, String> {
    let fields = s.split_whitespace().count();
    let full = if fields == 5 {
        format!("0 {s}")
    } else {
        s.to_string()
    };
    full.parse::<cron::Schedule>().map_err(|e| e.to_string())
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
