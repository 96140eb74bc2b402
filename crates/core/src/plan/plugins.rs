//! Checks of `plugin:` steps: the plugin and its step are installed, and `with:` fits
//! the step's configuration schema.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::Compiler;
use crate::diag::{did_you_mean, Code};
use crate::project::PluginStep;
use crate::yaml::{Node, Span};

impl<'a> Compiler<'a, '_> {
    /// Checks `plugin: name` (at `value`) and its `with` (under `node`).
    pub(super) fn plugin(
        &mut self,
        node: &Node,
        value: &Node,
        name: &str,
        with: Option<&BTreeMap<String, Value>>,
    ) {
        let Some(ps) = self.plugin_step(value, name) else {
            return;
        };
        let empty = BTreeMap::new();
        let with = with.unwrap_or(&empty);
        let with_node = node.get("with").unwrap_or(node);
        for v in with.values() {
            self.interpolated(with_node, v);
        }
        let Some(schema) = &ps.config else { return };
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
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (k, v) in with {
                self.plugin_setting(with_node, name, props, k, v);
            }
        }
    }

    /// The installed step `PLUGIN/STEP` that `name` names; errors when there is none.
    fn plugin_step(&mut self, value: &Node, name: &str) -> Option<&'a PluginStep> {
        let Some((plugin, step)) = name.split_once('/') else {
            self.sink.error(
                Code::UnknownPlugin,
                value.span,
                format!("plugin step `{name}` must be written PLUGIN/STEP"),
                Some("e.g. `plugin: ticketing/create-task`".into()),
            );
            return None;
        };
        let plugins = self.ctx.plugins;
        let Some(m) = plugins.get(plugin) else {
            let hint = match did_you_mean(plugin, plugins.keys().map(String::as_str)) {
                Some(s) => format!("did you mean `{s}`?"),
                None if plugins.is_empty() && self.ctx.settings.plugin_dirs.is_empty() => {
                    "no plugins are installed: put plugin folders in `plugins/`, or set `plugin_dirs` in nurture.toml".into()
                }
                None if plugins.is_empty() => format!(
                    "no plugins found in `plugin_dirs = {:?}` (nurture.toml; relative to the project folder): that folder is missing or holds no plugin; copy the plugins there or fix `plugin_dirs`",
                    self.ctx.settings.plugin_dirs
                ),
                None => format!(
                    "installed plugins: {}",
                    plugins.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            };
            self.sink.error(
                Code::UnknownPlugin,
                value.span,
                format!("no plugin `{plugin}` is installed"),
                Some(hint),
            );
            return None;
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
            return None;
        };
        Some(ps)
    }

    /// One `with:` setting `k: v` against the schema's `properties`.
    fn plugin_setting(
        &mut self,
        with_node: &Node,
        name: &str,
        props: &Map<String, Value>,
        k: &str,
        v: &Value,
    ) {
        let knode: Span = with_node.entry(k).map_or(with_node.span, |(kn, _)| kn.span);
        let Some(p) = props.get(k) else {
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
            return;
        };
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
