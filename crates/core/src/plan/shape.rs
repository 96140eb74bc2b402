//! Checks of the shape of the plan graph: no cycles, every step reachable.

use std::collections::{HashMap, HashSet, VecDeque};

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::Bfs;

use super::edges::Wiring;
use super::{at, find_scalar, Compiler, Edge, PlanNode};
use crate::diag::Code;
use crate::model::Workflow;

impl Compiler<'_, '_> {
    /// Reports each strongly connected component of `graph` once, with its path.
    pub(super) fn cycles(&mut self, graph: &DiGraph<PlanNode, Edge>, w: &Workflow) {
        for scc in petgraph::algo::tarjan_scc(graph) {
            let cyclic = scc.len() > 1 || graph.contains_edge(scc[0], scc[0]);
            if !cyclic {
                continue;
            }
            let members: HashSet<NodeIndex> = scc.iter().copied().collect();
            let start = *scc.iter().min().expect("non-empty");
            let path = cycle_path(graph, start, &members);
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
            let lnode = at(self.root, &["steps", &li.to_string()]);
            let target = names[0];
            let span = find_scalar(lnode, target).map_or(lnode.span, |n| n.span);
            self.sink.error(
                Code::Cycle,
                span,
                format!("steps form a cycle: {}", names.join(" -> ")),
                Some(
                    "a workflow is a DAG; to repeat a touchpoint use `reentry` or a new step"
                        .into(),
                ),
            );
        }
    }

    /// Reports the steps of `w` that no path from the first step reaches.
    pub(super) fn unreachable(&mut self, g: &Wiring<'_>, w: &Workflow) {
        let mut reached = HashSet::new();
        let mut bfs = Bfs::new(&g.graph, NodeIndex::new(0));
        while let Some(n) = bfs.next(&g.graph) {
            reached.insert(n);
        }
        for (i, s) in w.steps.iter().enumerate() {
            let n = NodeIndex::new(i);
            if !reached.contains(&n) && g.index.get(&s.id) == Some(&n) {
                self.sink.error(
                    Code::Unreachable,
                    at(self.root, &["steps", &i.to_string(), "id"]).span,
                    format!("step `{}` is never reached", s.id),
                    Some(format!(
                        "no path from the first step leads here; point a `next:` at `{}` or remove it",
                        s.id
                    )),
                );
            }
        }
    }
}

/// The shortest path from `start` back to itself inside the component `members`.
fn cycle_path(
    graph: &DiGraph<PlanNode, Edge>,
    start: NodeIndex,
    members: &HashSet<NodeIndex>,
) -> Vec<NodeIndex> {
    // Shortest path from start back to start inside the component (BFS by parents).
    let mut parent: HashMap<NodeIndex, NodeIndex> = HashMap::new();
    let mut queue = VecDeque::from([start]);
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
