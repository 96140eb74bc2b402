//! The typed kinds of outbox entries and journal entries.
//!
//! Both are stored as text (the `kind` columns of `outbox`, `deliveries` and `journal`),
//! with exactly the strings of [`OutboxKind::as_str`] and [`JournalKind::as_str`]: no
//! migration. A string this version does not know (a row written by a newer version, or
//! by hand) reads back as an explicit `Unknown(text)`, never as a known kind: the
//! deliverer fails such an outbox entry with a reason that names the kind, and the
//! journal shows such a line as it is.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A stored kind string this version does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} kind `{kind}`")]
pub struct UnknownKind {
    /// `outbox` or `journal`.
    pub what: &'static str,
    /// The stored text.
    pub kind: String,
}

/// Declares a kind enum with its stored strings: `as_str`, a strict `FromStr` (unknown
/// text is an [`UnknownKind`] error), a lenient `From<String>`/`From<&str>` for rows
/// read back (unknown text becomes `Unknown`), `Display`, serde as the same string, and
/// comparison with `&str`.
macro_rules! kinds {
    ($(#[$doc:meta])* $name:ident, $what:literal, { $($(#[$vdoc:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
            /// A stored kind this version does not know (kept as it was read).
            Unknown(String),
        }

        impl $name {
            /// Every known kind.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The kind as stored.
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $text,)+
                    $name::Unknown(s) => s.as_str(),
                }
            }

            /// Whether this version knows the kind.
            pub fn is_known(&self) -> bool {
                !matches!(self, $name::Unknown(_))
            }

            fn known(s: &str) -> Option<$name> {
                match s {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownKind;
            fn from_str(s: &str) -> Result<Self, UnknownKind> {
                $name::known(s).ok_or_else(|| UnknownKind {
                    what: $what,
                    kind: s.to_string(),
                })
            }
        }

        impl From<&str> for $name {
            /// A kind as read back from a row: unknown text becomes `Unknown`.
            fn from(s: &str) -> Self {
                $name::known(s).unwrap_or_else(|| $name::Unknown(s.to_string()))
            }
        }

        impl From<String> for $name {
            /// A kind as read back from a row: unknown text becomes `Unknown`.
            fn from(s: String) -> Self {
                $name::known(&s).unwrap_or($name::Unknown(s))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d).map($name::from)
            }
        }
    };
}

kinds!(
    /// What an outbox entry is, and so which channel delivers it.
    OutboxKind, "outbox", {
        /// A marketing email (`email` step): unsubscribe link, tracking, suppression.
        Email => "email",
        /// A notification to a contact's owner (`notify` action): transactional email.
        Notify => "notify",
        /// An HTTP call (`webhook` step).
        Webhook => "webhook",
        /// A step of a wasm plugin (`plugin` step; the plugin is in the payload).
        Plugin => "plugin",
    }
);

kinds!(
    /// What a journal line records.
    JournalKind, "journal", {
        /// A step began (`{step, kind}`).
        Step => "step",
        /// A condition was evaluated (`{where, expr, reads, result, error}`).
        Condition => "condition",
        /// An effect (`{effect, step, ..}`: tag, score, email, webhook, enter, exit...).
        Effect => "effect",
        /// A split chose a variant (`{step, variant, bucket, total}`).
        Split => "split",
        /// An event resumed a waiting run (`{step, event}`).
        Resume => "resume",
        /// A `wait_for` timed out (`{step, event}`).
        Timeout => "timeout",
        /// A wait ended at its timer (`{step}`).
        Wake => "wake",
        /// No branch condition held (`{step}`).
        BranchElse => "branch_else",
        /// Quiet hours ended (`{step}`).
        QuietHoursOver => "quiet_hours_over",
        /// A step failed (`{step, message}`).
        Error => "error",
        /// The contact's consent changed (`{from, to, cause}`).
        Consent => "consent",
        /// A run was interrupted (by a contact change).
        Interrupted => "interrupted",
        /// A wait was skipped (its time had passed: `{step, until}`).
        WaitSkipped => "wait_skipped",
        /// An awaited outcome arrived (`{step, why, outcome}`).
        Outcome => "outcome",
        /// An outcome arrived that no run waits for (`{key, reason}`).
        OutcomeIgnored => "outcome_ignored",
        /// The contact's segment timer was set (`{due}`).
        SegmentTimer => "segment_timer",
        /// A step's action failed, and what the step had done was taken back
        /// (`{step, effects}`).
        Undone => "undone",
        /// An operator cancelled the run (`{by, reason}`).
        Cancelled => "cancelled",
        /// The event a waiting run awaited came while its workflow was paused: the run
        /// keeps it and goes on once resumed (`{step, event, why}`).
        EventHeld => "event_held",
        /// The contact entered or left a segment (`{segment, entered}`; no run).
        Segment => "segment",
        /// An import changed the contact (`{changes: {field: {from, to}}, cause}`; no run).
        ContactUpdated => "contact_updated",
        /// An anonymous visitor's history was merged into the contact (`{from, moved,
        /// source}`; no run).
        Merged => "merged",
        /// What a compacted run's journal was replaced by (`nurture store compact`):
        /// `{workflow, version, status, started_at, ended_at, lines, steps, effects}`.
        Summary => "summary",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_stored_strings() {
        for k in OutboxKind::ALL {
            assert_eq!(k.as_str().parse::<OutboxKind>().as_ref(), Ok(k));
            assert_eq!(OutboxKind::from(k.as_str()), *k);
            let json = serde_json::to_string(k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
            assert_eq!(serde_json::from_str::<OutboxKind>(&json).unwrap(), *k);
        }
        for k in JournalKind::ALL {
            assert_eq!(k.as_str().parse::<JournalKind>().as_ref(), Ok(k));
            assert_eq!(JournalKind::from(k.as_str().to_string()), *k);
        }
        assert_eq!(
            "sms".parse::<OutboxKind>(),
            Err(UnknownKind {
                what: "outbox",
                kind: "sms".into()
            })
        );
        let unknown = OutboxKind::from("sms");
        assert_eq!(unknown, OutboxKind::Unknown("sms".into()));
        assert_eq!(unknown.as_str(), "sms");
        assert!(!unknown.is_known());
        assert_eq!(
            serde_json::from_str::<JournalKind>("\"later\"").unwrap(),
            JournalKind::Unknown("later".into())
        );
    }
}
