//! Checks of `set:` steps against what the engine does with a contact: keys it computes
//! cannot be set, and `consent` takes one of its values.

use serde_json::Value;

use crate::diag::{did_you_mean, Code};
use crate::project::Sink;
use crate::yaml::Node;

/// The values of a contact's consent.
pub const CONSENT_VALUES: &[&str] = &["opted_in", "opted_out", "unknown"];

/// Keys of the `contact` that the engine computes, so a `set:` of them would be
/// overwritten and lost; with what to write instead.
const COMPUTED: &[(&str, &str)] = &[
    ("id", "a contact's id never changes"),
    ("score", "change the score with `score: +10` or `score: -5`"),
    (
        "grade",
        "the grade follows the score (`grades` in scoring.yaml)",
    ),
    ("tags", "use `tag: [..]` and `untag: [..]`"),
    (
        "segments",
        "segment membership follows the conditions of segments.yaml",
    ),
    (
        "unsubscribed",
        "a contact unsubscribes itself; a step can `set: { consent: opted_out }`",
    ),
];

/// Validates one `key: value` of a `set:` step (`node` is the `set` mapping): computed
/// keys cannot be set, and `consent` takes one of [`CONSENT_VALUES`] (or a `${...}` text,
/// checked when the step runs).
pub(crate) fn check_set(sink: &mut Sink<'_>, node: &Node, key: &str, value: &Value) {
    if let Some((_, hint)) = COMPUTED.iter().find(|(k, _)| *k == key) {
        let span = node.entry(key).map_or(node.span, |(k, _)| k.span);
        sink.error(
            Code::InvalidValue,
            span,
            format!("`{key}` cannot be set: the engine computes it"),
            Some((*hint).into()),
        );
    }
    if key == "consent" {
        let ok = value
            .as_str()
            .is_some_and(|s| CONSENT_VALUES.contains(&s) || s.contains("${"));
        if !ok {
            let shown = value
                .as_str()
                .map_or_else(|| value.to_string(), str::to_string);
            let hint = match did_you_mean(&shown, CONSENT_VALUES.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("consent is one of {}", CONSENT_VALUES.join(", ")),
            };
            sink.error(
                Code::InvalidValue,
                node.get(key).unwrap_or(node).span,
                format!("unknown consent `{shown}`"),
                Some(hint),
            );
        }
    }
}
