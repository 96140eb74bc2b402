//! `policies.yaml`: rules over the whole project that `nurture check` proves by
//! simulation. A list; each item has one key, the policy's kind.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::{Duration, TimeOfDay, TIME_ERR};

/// One policy of `policies.yaml`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Policy {
    /// At most `count` messages per contact in any window of `per`, across all workflows.
    MaxMessages(MaxMessages),
    /// Something that must never happen: `{send_to: unsubscribed}` or
    /// `{send_without: consent}`.
    Never(Never),
    /// Messages only go out in this local window of the contact's time zone.
    SendWindow(SendWindow),
    /// Every run reaches an exit, a goal or its end within this long.
    EveryRunEndsWithin(Duration),
    /// Every step of a workflow that the segment's members enter is reached by some member.
    NoStepUnreachableFor(NoStepUnreachableFor),
}

impl Policy {
    /// The policy's kind as written: `max_messages`, `never`...
    pub fn kind(&self) -> &'static str {
        match self {
            Policy::MaxMessages(_) => "max_messages",
            Policy::Never(_) => "never",
            Policy::SendWindow(_) => "send_window",
            Policy::EveryRunEndsWithin(_) => "every_run_ends_within",
            Policy::NoStepUnreachableFor(_) => "no_step_unreachable_for",
        }
    }

    /// The policy in one line, as it could be written in `policies.yaml`.
    pub fn describe(&self) -> String {
        let json = serde_json::to_value(self).unwrap_or_default();
        let body = json.get(self.kind()).cloned().unwrap_or_default();
        format!("{}: {}", self.kind(), flow(&body))
    }
}

/// A JSON value in YAML flow style: `{ per: 7d, count: 3 }`.
fn flow(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}: {}", flow(v))).collect();
            format!("{{ {} }}", parts.join(", "))
        }
        Value::Array(a) => {
            let parts: Vec<String> = a.iter().map(flow).collect();
            format!("[{}]", parts.join(", "))
        }
        Value::String(s) if s.contains(':') => format!("\"{s}\""),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `max_messages: { per: 7d, count: 3, channels: [email, sms] }`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MaxMessages {
    /// The sliding window.
    pub per: Duration,
    /// The most messages a contact may get in any such window.
    pub count: u32,
    /// The channels counted (`email`, or a plugin's channel such as `sms`); default: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<String>,
}

/// `never: { send_to: unsubscribed }` or `never: { send_without: consent }`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Never {
    /// Nobody in this state gets a message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_to: Option<SendTo>,
    /// No message goes out without this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_without: Option<SendWithout>,
}

/// Whom `never: { send_to }` protects.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SendTo {
    /// Contacts who unsubscribed (or complained), or opted out.
    Unsubscribed,
}

/// What `never: { send_without }` requires.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SendWithout {
    /// Explicit consent (`opted_in`) to the channel.
    Consent,
}

/// `send_window: { local: "08:00-20:00" }`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SendWindow {
    /// The local hours in which messages may go out, in the contact's time zone (the
    /// workflow's, else the project's, when the contact has none).
    pub local: LocalWindow,
}

/// `HH:MM-HH:MM`, local time; the end may be earlier than the start (overnight).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalWindow {
    /// The first minute messages may go out.
    pub from: TimeOfDay,
    /// The minute from which they may not.
    pub to: TimeOfDay,
}

impl LocalWindow {
    /// Whether a local time is inside the window.
    pub fn contains(&self, t: chrono::NaiveTime) -> bool {
        let (a, b) = (self.from.0, self.to.0);
        if a <= b {
            a <= t && t < b
        } else {
            t >= a || t < b
        }
    }
}

/// A window that is not `HH:MM-HH:MM`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{TIME_ERR} `{0}`: write a local window as HH:MM-HH:MM, e.g. 08:00-20:00")]
pub struct WindowError(pub String);

impl FromStr for LocalWindow {
    type Err = WindowError;
    fn from_str(s: &str) -> Result<Self, WindowError> {
        let bad = || WindowError(s.to_string());
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let from: TimeOfDay = a.parse().map_err(|_| bad())?;
        let to: TimeOfDay = b.parse().map_err(|_| bad())?;
        if from == to {
            return Err(bad());
        }
        Ok(LocalWindow { from, to })
    }
}

impl fmt::Display for LocalWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{}",
            self.from.0.format("%H:%M"),
            self.to.0.format("%H:%M")
        )
    }
}

impl Serialize for LocalWindow {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for LocalWindow {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let s = match v {
            Value::String(s) => s,
            other => other.to_string(),
        };
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for LocalWindow {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "LocalWindow".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "local hours HH:MM-HH:MM, e.g. 08:00-20:00",
            "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]):[0-5][0-9]$"
        })
    }
}

/// `no_step_unreachable_for: { segment: hot-smb }`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NoStepUnreachableFor {
    /// A segment of `segments.yaml`.
    pub segment: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_and_contain_overnight() {
        let w: LocalWindow = "08:00-20:00".parse().unwrap();
        let t = |s| chrono::NaiveTime::parse_from_str(s, "%H:%M").unwrap();
        assert!(w.contains(t("08:00")) && w.contains(t("19:59")));
        assert!(!w.contains(t("20:00")) && !w.contains(t("07:59")));
        let n: LocalWindow = "22:00-06:00".parse().unwrap();
        assert!(n.contains(t("23:00")) && n.contains(t("05:00")) && !n.contains(t("12:00")));
        assert!("8-20".parse::<LocalWindow>().is_err());
        assert!("08:00-08:00".parse::<LocalWindow>().is_err());
    }

    #[test]
    fn a_policy_describes_itself_as_written() {
        let p: Policy =
            serde_json::from_str(r#"{"max_messages": {"per": "7d", "count": 3}}"#).unwrap();
        assert_eq!(p.describe(), "max_messages: { per: 7d, count: 3 }");
        let p: Policy = serde_json::from_str(r#"{"every_run_ends_within": "90d"}"#).unwrap();
        assert_eq!(p.describe(), "every_run_ends_within: 90d");
    }
}
