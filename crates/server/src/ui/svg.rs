//! SVG drawn on the server: the workflow graph with live counts (the funnel on the DAG),
//! a sparkline of enrolments, a score history chart and horizontal bars. Every text
//! placed in the SVG is escaped here; the templates insert the result as it is.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use nurture_core::plan::{Plan, PlanNode, PlanView};
use nurture_engine::report::WorkflowReport;
use petgraph::visit::EdgeRef;

/// The trigger's node: a name no step can have (a step may be called `trigger`).
pub(crate) const TRIGGER: &str = "(trigger)";

const NODE_W: i64 = 200;
const NODE_H: i64 = 58;
const GAP_X: i64 = 36;
const GAP_Y: i64 = 78;

/// Escapes text for SVG (XML) content and attributes; control characters, which XML
/// does not allow, are left out.
pub(crate) fn esc(s: &str) -> String {
    let printable: String = s.chars().filter(|c| !c.is_control()).collect();
    nurture_core::template::escape_html(&printable)
}

fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

/// One edge as drawn: from, to, label and the runs that took it (None: not counted).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DrawnEdge {
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) label: String,
    pub(crate) runs: Option<i64>,
}

/// The edges of the graph with their counts: the trigger's (runs that entered), the
/// counted ones of the report (branch arms, variants, events, timeouts), the plan's
/// edges no run took yet (0), and for a plain `next` edge the runs that reached its
/// target when that target has no other way in.
pub(crate) fn edges(plan: &Plan, report: &WorkflowReport) -> Vec<DrawnEdge> {
    let entry = plan.workflow.steps[0].id.clone();
    let mut out = vec![DrawnEdge {
        from: TRIGGER.into(),
        to: entry,
        label: String::new(),
        runs: Some(report.entered),
    }];
    let passed: BTreeMap<&str, i64> = report
        .steps
        .iter()
        .map(|s| (s.step.as_str(), s.passed))
        .collect();
    let mut incoming: BTreeMap<String, usize> = BTreeMap::new();
    for e in plan.graph.edge_references() {
        *incoming.entry(name(plan, e.target())).or_default() += 1;
    }
    for step in &plan.workflow.steps {
        let counted = report.steps.iter().find(|s| s.step == step.id);
        let counted = counted.map(|s| s.edges.as_slice()).unwrap_or_default();
        for e in counted {
            out.push(DrawnEdge {
                from: step.id.clone(),
                to: e.to.clone().unwrap_or_else(|| "end".into()),
                label: e.label.clone(),
                runs: Some(e.runs),
            });
        }
        for (edge, target) in plan.successors(&step.id) {
            let to = target.unwrap_or("end").to_string();
            if counted
                .iter()
                .any(|c| c.to.as_deref().unwrap_or("end") == to)
            {
                continue;
            }
            let plain = matches!(edge, nurture_core::plan::Edge::Next);
            let runs = if !plain {
                Some(0)
            } else if incoming.get(&to) == Some(&1) {
                Some(if to == "end" {
                    report.exits.get("end").copied().unwrap_or(0)
                } else {
                    passed.get(to.as_str()).copied().unwrap_or(0)
                })
            } else {
                None
            };
            out.push(DrawnEdge {
                from: step.id.clone(),
                to,
                label: edge.label(),
                runs,
            });
        }
    }
    out
}

fn name(plan: &Plan, n: petgraph::graph::NodeIndex) -> String {
    match plan.graph[n] {
        PlanNode::Step(i) => plan.workflow.steps[i].id.clone(),
        PlanNode::End => "end".into(),
    }
}

/// Each node's layer: the longest path to it from the entry (the trigger is layer 0).
fn layers(plan: &Plan) -> BTreeMap<String, usize> {
    let mut layer: BTreeMap<String, usize> = BTreeMap::new();
    layer.insert(TRIGGER.into(), 0);
    let order = petgraph::algo::toposort(&plan.graph, None).unwrap_or_default();
    for n in &order {
        let here = name(plan, *n);
        let l = *layer.entry(here.clone()).or_insert(1);
        for e in plan.graph.edges(*n) {
            let to = name(plan, e.target());
            let slot = layer.entry(to).or_insert(0);
            *slot = (*slot).max(l + 1);
        }
    }
    layer.entry(plan.workflow.steps[0].id.clone()).or_insert(1);
    layer
}

/// The workflow graph: a box per step with its kind, the runs that passed it and those
/// waiting there, and each edge with its label and count. Nodes carry `data-step`,
/// `data-passed` and `data-waiting`; edges `data-from`, `data-to`, `data-label` and
/// `data-runs` (absent when not counted).
pub(crate) fn graph(plan: &Plan, report: &WorkflowReport) -> String {
    let layer = layers(plan);
    let mut rows: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    let mut order: Vec<String> = vec![TRIGGER.into()];
    order.extend(plan.workflow.steps.iter().map(|s| s.id.clone()));
    order.push("end".into());
    for id in &order {
        if let Some(l) = layer.get(id) {
            rows.entry(*l).or_default().push(id.clone());
        }
    }
    let widest = rows.values().map(Vec::len).max().unwrap_or(1) as i64;
    let width = widest * (NODE_W + GAP_X) + GAP_X;
    let height = rows.len() as i64 * (NODE_H + GAP_Y) + GAP_Y / 2;
    let mut at: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for (row, (_, ids)) in rows.iter().enumerate() {
        let used = ids.len() as i64 * (NODE_W + GAP_X) - GAP_X;
        let left = (width - used) / 2;
        for (i, id) in ids.iter().enumerate() {
            let x = left + i as i64 * (NODE_W + GAP_X);
            let y = GAP_Y / 3 + row as i64 * (NODE_H + GAP_Y);
            at.insert(id.clone(), (x, y));
        }
    }
    let mut svg = format!(
        "<svg class=\"graph\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" \
         role=\"img\" aria-label=\"{} workflow graph with counts\" xmlns=\"http://www.w3.org/2000/svg\">\
         <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" \
         markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M0 0L10 5L0 10z\"/></marker></defs>",
        esc(plan.id())
    );
    let drawn = edges(plan, report);
    let mut fan: BTreeMap<(String, String), usize> = BTreeMap::new();
    for e in &drawn {
        let (Some(&(x1, y1)), Some(&(x2, y2))) = (at.get(&e.from), at.get(&e.to)) else {
            continue;
        };
        let k = fan.entry((e.from.clone(), e.to.clone())).or_default();
        let shift = *k as i64 * 26;
        *k += 1;
        edge(
            &mut svg,
            e,
            (x1 + NODE_W / 2, y1 + NODE_H),
            (x2 + NODE_W / 2, y2),
            shift,
        );
    }
    // (Built once: each node reads its kind and detail from it.)
    let view = plan.view();
    for id in &order {
        let Some(&(x, y)) = at.get(id) else { continue };
        node(&mut svg, &view, report, id, x, y);
    }
    svg.push_str("</svg>");
    svg
}

fn edge(svg: &mut String, e: &DrawnEdge, from: (i64, i64), to: (i64, i64), shift: i64) {
    let (x1, y1) = from;
    let (x2, y2) = (to.0 + shift, to.1);
    let mid = (y1 + y2) / 2;
    let runs = e
        .runs
        .map(|n| format!(" data-runs=\"{n}\""))
        .unwrap_or_default();
    let _ = write!(
        svg,
        "<g class=\"edge{}\" data-from=\"{}\" data-to=\"{}\" data-label=\"{}\"{runs}>\
         <path d=\"M{x1} {y1} C{x1} {mid} {x2} {mid} {x2} {y2}\" marker-end=\"url(#arrow)\"/>",
        if e.runs == Some(0) { " idle" } else { "" },
        esc(&e.from),
        esc(&e.to),
        esc(&e.label)
    );
    let mut text = cut(&e.label, 18);
    if let Some(n) = e.runs {
        if !text.is_empty() {
            text.push_str(" · ");
        }
        text.push_str(&super::num(n));
    }
    if !text.is_empty() {
        // Three quarters along the curve, on the side it bends to: the labels of edges
        // leaving one step apart stay apart.
        let lx = (x1 as f64 * 0.15625 + x2 as f64 * 0.84375) as i64;
        let ly = (y1 as f64 * 0.015625 + mid as f64 * 0.5625 + y2 as f64 * 0.421875) as i64;
        let (dx, anchor) = if x2 < x1 { (-6, "end") } else { (6, "start") };
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{ly}\" text-anchor=\"{anchor}\">{}</text>",
            lx + dx,
            esc(&text)
        );
    }
    svg.push_str("</g>");
}

fn node(svg: &mut String, view: &PlanView, report: &WorkflowReport, id: &str, x: i64, y: i64) {
    let (kind, detail, passed, waiting) = match id {
        TRIGGER => (
            "trigger".to_string(),
            view.triggers.join("; "),
            report.entered,
            0,
        ),
        "end" => (
            "end".to_string(),
            String::new(),
            report.exits.values().sum(),
            0,
        ),
        _ => {
            let v = view.nodes.iter().find(|n| n.id == id);
            let s = report.steps.iter().find(|s| s.step == id);
            (
                v.map(|v| v.kind.to_string()).unwrap_or_default(),
                v.map(|v| v.detail.clone()).unwrap_or_default(),
                s.map_or(0, |s| s.passed),
                s.map_or(0, |s| s.waiting),
            )
        }
    };
    let counts = if waiting > 0 {
        format!(
            "{} passed · {} waiting",
            super::num(passed),
            super::num(waiting)
        )
    } else {
        format!("{} passed", super::num(passed))
    };
    let _ = write!(
        svg,
        "<g class=\"node {}\" data-step=\"{}\" data-passed=\"{passed}\" data-waiting=\"{waiting}\">\
         <title>{}</title><rect x=\"{x}\" y=\"{y}\" width=\"{NODE_W}\" height=\"{NODE_H}\" rx=\"8\"/>\
         <text class=\"id\" x=\"{}\" y=\"{}\">{}</text><text x=\"{}\" y=\"{}\">{}</text>\
         <text class=\"count\" x=\"{}\" y=\"{}\">{}</text></g>",
        esc(&kind),
        esc(id),
        esc(&format!("{id} ({kind}) {detail}")),
        x + 10,
        y + 18,
        esc(&cut(id, 26)),
        x + 10,
        y + 34,
        esc(&cut(&format!("{kind}: {detail}"), 30)),
        x + 10,
        y + 50,
        esc(&counts),
    );
}

/// A sparkline of `values` (oldest first), with the total in its label.
pub(crate) fn sparkline(values: &[i64], label: &str) -> String {
    let (w, h) = (120i64, 28i64);
    let max = values.iter().copied().max().unwrap_or(0).max(1);
    let step = if values.len() > 1 {
        w as f64 / (values.len() - 1) as f64
    } else {
        0.0
    };
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let x = i as f64 * step;
            let y = (h - 2) as f64 - (*v as f64 / max as f64) * (h - 4) as f64;
            format!("{x:.1},{y:.1}")
        })
        .collect();
    format!(
        "<svg class=\"spark\" viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" \
         aria-label=\"{}\" xmlns=\"http://www.w3.org/2000/svg\"><polyline points=\"{}\"/></svg>",
        esc(label),
        points.join(" ")
    )
}

/// A step chart of a score over time: `(seconds since the first point, score)`, with
/// the first and last dates and the lowest and highest score as axis labels.
pub(crate) fn score_chart(points: &[(i64, i64)], first: &str, last: &str) -> String {
    let (w, h, pad) = (640i64, 180i64, 36i64);
    // Changes at one instant (an import, a burst of events) are spread evenly.
    let even: Vec<(i64, i64)>;
    let points = if points.last().map_or(0, |p| p.0) == 0 {
        even = points
            .iter()
            .enumerate()
            .map(|(i, p)| (i as i64, p.1))
            .collect();
        &even[..]
    } else {
        points
    };
    let span = points.last().map_or(1, |p| p.0).max(1);
    let lo = points.iter().map(|p| p.1).min().unwrap_or(0).min(0);
    let hi = points.iter().map(|p| p.1).max().unwrap_or(0).max(lo + 1);
    let x = |t: i64| pad + (t * (w - 2 * pad)) / span;
    let y = |s: i64| h - pad - ((s - lo) * (h - 2 * pad)) / (hi - lo);
    let mut path = String::new();
    for (i, (t, s)) in points.iter().enumerate() {
        if i == 0 {
            let _ = write!(path, "M{} {}", x(*t), y(*s));
        } else {
            let _ = write!(path, " H{} V{}", x(*t), y(*s));
        }
    }
    let dots: String = points
        .iter()
        .map(|(t, s)| format!("<circle cx=\"{}\" cy=\"{}\" r=\"3\"/>", x(*t), y(*s)))
        .collect();
    format!(
        "<svg class=\"chart\" viewBox=\"0 0 {w} {h}\" width=\"100%\" role=\"img\" \
         aria-label=\"score history from {lo} to {hi}\" xmlns=\"http://www.w3.org/2000/svg\">\
         <line class=\"axis\" x1=\"{pad}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\"/>\
         <line class=\"axis\" x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{b}\"/>\
         <text x=\"4\" y=\"{yt}\">{hi}</text><text x=\"4\" y=\"{b}\">{lo}</text>\
         <text x=\"{pad}\" y=\"{yd}\">{}</text><text x=\"{r}\" y=\"{yd}\" text-anchor=\"end\">{}</text>\
         <path class=\"line\" d=\"{path}\"/>{dots}</svg>",
        esc(first),
        esc(last),
        b = h - pad,
        r = w - pad,
        yt = pad + 4,
        yd = h - 8,
    )
}

/// Horizontal bars: `(label, value)` with the value written at the end of each bar.
pub(crate) fn bars(rows: &[(String, i64)]) -> String {
    let (w, row_h, label_w) = (640i64, 30i64, 150i64);
    let max = rows.iter().map(|r| r.1).max().unwrap_or(0).max(1);
    let h = rows.len() as i64 * row_h + 4;
    let mut svg = format!(
        "<svg class=\"bars\" viewBox=\"0 0 {w} {h}\" width=\"100%\" role=\"img\" \
         aria-label=\"contacts per stage\" xmlns=\"http://www.w3.org/2000/svg\">"
    );
    for (i, (label, v)) in rows.iter().enumerate() {
        let y = i as i64 * row_h + 4;
        let bw = ((w - label_w - 90) * v / max).max(1);
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{}\">{}</text><rect x=\"{label_w}\" y=\"{y}\" width=\"{bw}\" height=\"{}\" rx=\"3\"/>\
             <text x=\"{}\" y=\"{}\">{}</text>",
            y + 17,
            esc(&cut(label, 20)),
            row_h - 8,
            label_w + bw + 6,
            y + 17,
            super::num(*v)
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_in_svg_is_escaped() {
        assert_eq!(esc("<script>&\"'"), "&lt;script&gt;&amp;&quot;&#39;");
        let s = sparkline(&[1, 2], "<b>");
        assert!(s.contains("aria-label=\"&lt;b&gt;\""), "{s}");
    }

    #[test]
    fn a_flat_or_empty_series_still_draws() {
        assert!(sparkline(&[], "none").contains("<polyline points=\"\""));
        assert!(sparkline(&[0, 0, 0], "zeros").contains("0.0,26.0"));
        assert!(score_chart(&[(0, 5)], "a", "b").contains("<circle"));
        assert!(bars(&[("lead".into(), 0)]).contains("width=\"1\""));
    }
}
