//! Sends held back, and the rule that held each back.
//!
//! Every send that is held back has a journal line naming its `rule` and the rule's
//! `params`:
//!
//! | rule | written by | line | params |
//! | --- | --- | --- | --- |
//! | `quiet_hours` | the engine, at the step | `wait` (`reason: quiet_hours`) | `from`, `to`, `days`, `timezone` |
//! | `consent` | the engine, at the step | `email_skipped` / `plugin_skipped` | `channel`, `required`, `state` |
//! | `unsubscribed` | the engine, at the step | `email_skipped` | `channel` |
//! | `suppression` | the engine at the step, or the store at the claim | `email_skipped` | `channel`, `reason` at the claim |
//! | `no_address` | the engine, at the step | `email_skipped` | `channel` |
//! | `frequency_cap` | the store, at the claim | `deferred` | `channel`, `max`, `per` |
//! | `rate_limit` | the store, at the claim | `deferred` | `channel`, `per_second` |
//!
//! The report counts hold the sums (see [`crate::counts`]): `nurture report --held-back`
//! reads them, never the journal.

use serde_json::{json, Value};

use crate::limits::Deferral;
use crate::{JournalEntry, JournalKind, OutboxEntry, Ts};

/// The rule behind the `reason` of an `email_skipped` or `plugin_skipped` line (or of a
/// report count `email.skipped.REASON`).
pub fn rule_of_skip(reason: &str) -> &'static str {
    match reason {
        "opted_out" | "no_consent" => "consent",
        "unsubscribed" => "unsubscribed",
        "no_email" => "no_address",
        r if r.starts_with("suppressed") => "suppression",
        _ => "other",
    }
}

/// The journal lines of a claim's deferrals `deferred` of `entries`: one `deferred`
/// effect per deferral, naming the rule (`frequency_cap`, `rate_limit`) and its
/// parameters, until when and why, marked `at_send` (a store wrote it, not a step).
pub fn deferral_lines<'a>(
    entries: impl IntoIterator<Item = &'a OutboxEntry>,
    deferred: &[Deferral],
    now: Ts,
) -> Vec<JournalEntry> {
    let entries: Vec<&OutboxEntry> = entries.into_iter().collect();
    deferred
        .iter()
        .filter_map(|d| {
            let e = entries.iter().find(|e| e.key == d.key)?;
            Some(JournalEntry {
                run_id: e.run_id.clone(),
                contact: e.contact.clone(),
                at: now,
                kind: JournalKind::Effect,
                data: json!({
                    "effect": "deferred",
                    "step": e.step,
                    "kind": e.kind.as_str(),
                    "rule": d.cause,
                    "params": d.params,
                    "until": crate::ts_out(d.until),
                    "reason": d.reason,
                    "key": e.key,
                    "at_send": true,
                }),
            })
        })
        .collect()
}

/// The `rule` and `params` of the line of an email a store skips at the claim because
/// its address is suppressed for `reason`.
pub fn suppression_params(reason: &str) -> Value {
    json!({"channel": "email", "reason": reason})
}

/// An email a store skips at the claim because its address is suppressed.
#[derive(Debug, Clone)]
pub struct SuppressedSend {
    /// The outbox entry's key.
    pub key: String,
    /// The run that queued it, if a run did.
    pub run_id: Option<String>,
    /// Whom it was for.
    pub contact: String,
    /// The step that queued it.
    pub step: Option<String>,
    /// The email's template.
    pub template: Option<String>,
    /// The suppression's reason (`complaint`, `bounce`, ...).
    pub reason: String,
}

impl SuppressedSend {
    /// The outbox entry's `last_error`.
    pub fn last_error(&self) -> String {
        format!("suppressed: {}", self.reason)
    }

    /// Its `email_skipped` line at `at`: rule `suppression`, marked `at_send`.
    pub fn line(&self, at: Ts) -> JournalEntry {
        JournalEntry {
            run_id: self.run_id.clone(),
            contact: self.contact.clone(),
            at,
            kind: JournalKind::Effect,
            data: json!({
                "effect": "email_skipped",
                "step": self.step,
                "template": self.template,
                "reason": self.last_error(),
                "rule": "suppression",
                "params": suppression_params(&self.reason),
                "key": self.key,
                "at_send": true,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_reasons_map_to_their_rules() {
        assert_eq!(rule_of_skip("no_consent"), "consent");
        assert_eq!(rule_of_skip("opted_out"), "consent");
        assert_eq!(rule_of_skip("unsubscribed"), "unsubscribed");
        assert_eq!(rule_of_skip("suppressed"), "suppression");
        assert_eq!(rule_of_skip("suppressed: bounce: SMTP 550"), "suppression");
        assert_eq!(rule_of_skip("no_email"), "no_address");
        assert_eq!(rule_of_skip("anything else"), "other");
    }
}
