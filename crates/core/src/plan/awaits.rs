//! Checks of the `await`, `save` and `timeout` keys of steps (see
//! `nurture_engine::outcome`).

use std::path::Path;

use super::{at, Compiler};
use crate::diag::{Code, Diagnostic, Severity};
use crate::model::{Step, StepKind, Workflow};
use crate::yaml::Node;

/// Contact keys a `save:` cannot write: the engine computes them.
const RESERVED: &[&str] = &[
    "id",
    "score",
    "grade",
    "tags",
    "segments",
    "consent",
    "unsubscribed",
];

impl Compiler<'_, '_> {
    /// The `await`, `save` and `timeout` keys of step `s` (its node `snode`): only on a
    /// `webhook` or `plugin` step; `save` and `timeout` only with `await: true`; each
    /// `save` expression compiles and names a field a step may set.
    pub(super) fn awaits(&mut self, s: &Step, snode: &Node) {
        let used: Vec<&str> = ["await", "save", "timeout"]
            .into_iter()
            .filter(|k| snode.get(k).is_some())
            .collect();
        if used.is_empty() {
            return;
        }
        let key_span = |k: &str| snode.entry(k).map_or(snode.span, |(n, _)| n.span);
        if !matches!(s.kind, StepKind::Webhook(_) | StepKind::Plugin(_)) {
            for k in used {
                self.sink.error(
                    Code::UnknownKey,
                    key_span(k),
                    format!(
                        "`{k}` belongs to a `webhook` or `plugin` step, not `{}`",
                        s.kind.key()
                    ),
                    Some("remove it; only a webhook or plugin step has an outcome to await".into()),
                );
            }
            return;
        }
        if !s.await_outcome {
            for k in used.into_iter().filter(|k| *k != "await") {
                self.sink.error(
                    Code::MissingKey,
                    key_span(k),
                    format!("`{k}` needs `await: true` on this step"),
                    Some(format!(
                        "add `await: true` so the run waits for the outcome (without it the call is fire-and-forget and `{k}` has nothing to act on)"
                    )),
                );
            }
        }
        let Some(save) = snode.get("save") else {
            return;
        };
        for (field, expr) in &s.save {
            let node = save.get(field).unwrap_or(save);
            if RESERVED.contains(&field.as_str()) || field.is_empty() {
                self.sink.error(
                    Code::InvalidValue,
                    save.entry(field).map_or(node.span, |(k, _)| k.span),
                    format!("`save` cannot set `{field}`: the engine computes it"),
                    Some("save into a field of your own, e.g. `crm_id: response.id`".into()),
                );
                continue;
            }
            self.expr(node, &expr.0);
        }
    }
}

/// Whether an expression text reads the variable `var` (`var.` or `var[`, not part of
/// a longer name).
fn reads(text: &str, var: &str) -> bool {
    text.match_indices(var).any(|(i, _)| {
        let before = text[..i].chars().next_back();
        let after = text[i + var.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            && matches!(after, Some('.') | Some('['))
    })
}

/// Warnings for steps that read `outcome` or `response` in a workflow where no step
/// awaits an outcome before them (in file order): there the values are always `null`.
pub(super) fn warnings(w: &Workflow, root: &Node, file: &Path) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut awaited = false;
    for (i, s) in w.steps.iter().enumerate() {
        // The step's own `save` reads its own outcome.
        let mut own = s.clone();
        own.save.clear();
        let text = serde_json::to_string(&own).unwrap_or_default();
        if !awaited {
            if let Some(var) = ["outcome", "response"]
                .into_iter()
                .find(|v| reads(&text, v))
            {
                let node = at(root, &["steps", &i.to_string()]);
                out.push(Diagnostic {
                    code: Code::UnknownName,
                    severity: Severity::Warning,
                    file: file.to_path_buf(),
                    span: node.span,
                    message: format!(
                        "step `{}` reads `{var}`, but no step before it awaits an outcome: it is always null here",
                        s.id
                    ),
                    hint: Some(
                        "add `await: true` to the webhook or plugin step whose answer you mean"
                            .into(),
                    ),
                });
            }
        }
        awaited |= s.await_outcome && matches!(s.kind, StepKind::Webhook(_) | StepKind::Plugin(_));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_finds_the_variable_not_longer_names() {
        assert!(super::reads("outcome.ok", "outcome"));
        assert!(super::reads("x && response[\"id\"]", "response"));
        assert!(!super::reads("contact.outcome.ok", "outcome"));
        assert!(!super::reads("my_outcome.ok", "outcome"));
        assert!(!super::reads("outcomes.ok", "outcome"));
    }
}
