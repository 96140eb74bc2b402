//! The plan graph: one node per step (ids checked), then the edges of each step
//! (`next`, branch and split arms, `wait_for` outcomes), each target resolved.

use std::collections::BTreeMap;

use petgraph::graph::{DiGraph, NodeIndex};

use super::{at, Compiler, Edge, PlanNode};
use crate::diag::{did_you_mean, Code};
use crate::model::{BranchArm, SplitArm, Step, StepKind, WaitFor, WaitUntil, Workflow};
use crate::yaml::Node;

/// The graph being built, with what resolving a step id needs.
pub(super) struct Wiring<'w> {
    pub(super) graph: DiGraph<PlanNode, Edge>,
    pub(super) index: BTreeMap<String, NodeIndex>,
    pub(super) end: NodeIndex,
    ids: Vec<&'w str>,
    steps: usize,
}

impl<'w> Wiring<'w> {
    /// One node per step of `w` (checking ids: reserved, spaces, duplicates), then `end`.
    pub(super) fn nodes(c: &mut Compiler<'_, '_>, w: &'w Workflow) -> Self {
        let mut graph: DiGraph<PlanNode, Edge> = DiGraph::new();
        let mut index: BTreeMap<String, NodeIndex> = BTreeMap::new();
        for (i, s) in w.steps.iter().enumerate() {
            let n = graph.add_node(PlanNode::Step(i));
            let id_node = at(c.root, &["steps", &i.to_string(), "id"]);
            step_id(c, id_node, &s.id);
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
        Wiring {
            graph,
            index,
            end,
            ids: w.steps.iter().map(|s| s.id.as_str()).collect(),
            steps: w.steps.len(),
        }
    }

    /// The node of step `target` (or `end`); an error at `node` when there is none.
    fn resolve(&self, c: &mut Compiler<'_, '_>, target: &str, node: &Node) -> Option<NodeIndex> {
        if target == "end" {
            return Some(self.end);
        }
        if let Some(&n) = self.index.get(target) {
            return Some(n);
        }
        let hint = match did_you_mean(target, self.ids.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!("steps here: {}; or `end`", self.ids.join(", ")),
        };
        c.sink.error(
            Code::UnknownStep,
            node.span,
            format!("no step `{target}` in this workflow"),
            Some(hint),
        );
        None
    }

    /// Where step `i` (`s`, at `snode`) goes next: its `next`, else the following step.
    fn default_next(
        &self,
        c: &mut Compiler<'_, '_>,
        i: usize,
        s: &Step,
        snode: &Node,
    ) -> Option<NodeIndex> {
        match &s.next {
            Some(t) => self.resolve(c, t, snode.get("next").unwrap_or(snode)),
            None => Some(if i + 1 < self.steps {
                NodeIndex::new(i + 1)
            } else {
                self.end
            }),
        }
    }

    fn edge(&mut self, from: usize, to: Option<NodeIndex>, edge: Edge) {
        if let Some(to) = to {
            self.graph.add_edge(NodeIndex::new(from), to, edge);
        }
    }

    /// Checks step `i` (`s`) and adds its edges.
    pub(super) fn step(&mut self, c: &mut Compiler<'_, '_>, i: usize, s: &Step) {
        let si = i.to_string();
        let snode = at(c.root, &["steps", &si]);
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
            StepKind::Branch(arms) => self.branch(c, i, s, snode, arms),
            StepKind::Split(arms) => self.split(c, i, s, snode, arms),
            StepKind::WaitFor(wf) => self.wait_for(c, i, s, snode, wf),
            StepKind::WaitUntil(wu) => {
                wait_until(c, snode, wu);
                let to = self.default_next(c, i, s, snode);
                self.edge(i, to, Edge::Next);
            }
            other => {
                c.action(&["steps", &si], other, s.with.as_ref());
                let to = self.default_next(c, i, s, snode);
                self.edge(i, to, Edge::Next);
            }
        }
    }

    fn branch(
        &mut self,
        c: &mut Compiler<'_, '_>,
        i: usize,
        s: &Step,
        snode: &Node,
        arms: &[BranchArm],
    ) {
        no_next(c, s, snode, "branch", " and put the target in an arm");
        let bnode = snode.get("branch").unwrap_or(snode);
        let mut has_else = false;
        for (j, arm) in arms.iter().enumerate() {
            let anode = bnode.locate([j.to_string()]);
            self.branch_arm(c, i, j, arm, anode, &mut has_else);
        }
        if !has_else {
            c.sink.error(
                Code::BranchWithoutElse,
                snode.entry("branch").map_or(snode.span, |(k, _)| k.span),
                format!("branch `{}` has no `else` arm", s.id),
                Some("add `- else: STEP` (or `- else: end`) so every contact has a path".into()),
            );
        }
    }

    /// Arm `j` of the branch of step `i`; `has_else` is whether an `else` came before.
    fn branch_arm(
        &mut self,
        c: &mut Compiler<'_, '_>,
        i: usize,
        j: usize,
        arm: &BranchArm,
        anode: &Node,
        has_else: &mut bool,
    ) {
        match (&arm.condition, &arm.next, &arm.otherwise) {
            (Some(cond), Some(t), None) => {
                c.expr(anode.get("if").unwrap_or(anode), &cond.0);
                if *has_else {
                    c.sink.error(
                        Code::BranchWithoutElse,
                        anode.span,
                        "this arm comes after `else` and can never be taken",
                        Some("move the `else` arm to the end".into()),
                    );
                }
                let to = self.resolve(c, t, anode.get("next").unwrap_or(anode));
                let edge = Edge::Yes {
                    index: j,
                    condition: cond.0.clone(),
                };
                self.edge(i, to, edge);
            }
            (None, None, Some(t)) => {
                if *has_else {
                    c.sink.error(
                        Code::BranchWithoutElse,
                        anode.span,
                        "a branch has one `else` arm",
                        Some("remove the extra `else`".into()),
                    );
                }
                *has_else = true;
                let to = self.resolve(c, t, anode.get("else").unwrap_or(anode));
                self.edge(i, to, Edge::Else);
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

    fn split(
        &mut self,
        c: &mut Compiler<'_, '_>,
        i: usize,
        s: &Step,
        snode: &Node,
        arms: &[SplitArm],
    ) {
        no_next(c, s, snode, "split", "");
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
            let to = self.resolve(c, &arm.next, anode.get("next").unwrap_or(anode));
            let edge = Edge::Variant {
                index: j,
                name: arm.name.clone().unwrap_or_else(|| arm.next.clone()),
                weight: arm.weight,
            };
            self.edge(i, to, edge);
        }
    }

    fn wait_for(
        &mut self,
        c: &mut Compiler<'_, '_>,
        i: usize,
        s: &Step,
        snode: &Node,
        wf: &WaitFor,
    ) {
        let si = i.to_string();
        c.event_type(at(c.root, &["steps", &si, "wait_for", "event"]), &wf.event);
        if let Some(cond) = &wf.condition {
            c.expr(at(c.root, &["steps", &si, "wait_for", "if"]), &cond.0);
        }
        let to = self.default_next(c, i, s, snode);
        self.edge(i, to, Edge::Event);
        let timeout_to = match &s.on_timeout {
            Some(t) => self.resolve(c, t, snode.get("on_timeout").unwrap_or(snode)),
            None => self.default_next(c, i, s, snode),
        };
        self.edge(i, timeout_to, Edge::Timeout);
    }
}

/// A `next` on a step whose arms choose its successor (a `kind` of `branch` or `split`).
fn no_next(c: &mut Compiler<'_, '_>, s: &Step, snode: &Node, kind: &str, more: &str) {
    if s.next.is_some() {
        c.sink.error(
            Code::UnknownKey,
            snode.entry("next").map_or(snode.span, |(k, _)| k.span),
            format!("a {kind} chooses its successor in its arms; `next` has no effect here"),
            Some(format!("remove `next`{more}")),
        );
    }
}

/// The id of a step: `end` is reserved, and it has no spaces.
fn step_id(c: &mut Compiler<'_, '_>, id_node: &Node, id: &str) {
    if id == "end" {
        c.sink.error(
            Code::BadId,
            id_node.span,
            "`end` is reserved: `next: end` stops a run",
            Some("rename this step".into()),
        );
    } else if id.chars().any(char::is_whitespace) {
        c.sink.error(
            Code::BadId,
            id_node.span,
            format!("step id `{id}` contains spaces"),
            Some(format!(
                "e.g. `id: {}`",
                id.replace(char::is_whitespace, "-")
            )),
        );
    }
}

/// A `wait_until` has `time` (with an optional `weekday`) or `date`, not both kinds.
fn wait_until(c: &mut Compiler<'_, '_>, snode: &Node, wu: &WaitUntil) {
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
}
