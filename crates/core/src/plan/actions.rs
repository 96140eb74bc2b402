//! Checks of the actions of steps: the templates, teams, URLs, plugins and contact
//! fields they refer to, and the expressions inside their values.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{at, Compiler};
use crate::diag::{did_you_mean, Code};
use crate::model::{AssignOwner, EmailRef, Notify, StepKind, Webhook};
use crate::yaml::Node;

impl Compiler<'_, '_> {
    /// Checks one action (or single-action step) at `path` under the root.
    pub(super) fn action(
        &mut self,
        path: &[&str],
        kind: &StepKind,
        with: Option<&BTreeMap<String, Value>>,
    ) {
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
            StepKind::SendEmail(e) => self.send_email(value, e),
            StepKind::Notify(n) => self.notify(value, n),
            StepKind::Set(fields) => self.set(value, fields),
            StepKind::AssignOwner(a) => self.assign_owner(value, a),
            StepKind::Webhook(w) => self.webhook(value, w),
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

    fn send_email(&mut self, value: &Node, e: &EmailRef) {
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

    fn notify(&mut self, value: &Node, n: &Notify) {
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

    fn set(&mut self, value: &Node, fields: &BTreeMap<String, Value>) {
        for (k, v) in fields {
            let vnode = value.get(k).unwrap_or(value);
            self.interpolated(vnode, v);
            super::contact::check_set(&mut self.sink, value, k, v);
            if k == "lifecycle" {
                self.lifecycle(vnode, v);
            }
        }
    }

    /// A `set: {lifecycle: ...}` names one of the stages.
    fn lifecycle(&mut self, vnode: &Node, v: &Value) {
        use crate::model::LIFECYCLE_STAGES as STAGES;
        if v.as_str().is_some_and(|s| STAGES.contains(&s)) {
            return;
        }
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

    fn assign_owner(&mut self, value: &Node, a: &AssignOwner) {
        if self.ctx.settings.teams.contains_key(&a.team) {
            return;
        }
        let hint = match did_you_mean(&a.team, self.ctx.settings.teams.keys().map(String::as_str)) {
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

    fn webhook(&mut self, value: &Node, w: &Webhook) {
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
}
