//! The days of quiet hours (`days: [mon..fri]`), see `nurture_engine::channels`.

use chrono::Weekday;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// One entry of quiet hours' `days`: a day (`mon`) or a range of days (`mon..fri`, which
/// may wrap: `fri..mon`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DaySpec {
    /// The first day of the range (the day itself for a single day).
    pub first: Weekday,
    /// The last day, included; before `first` in the week when the range wraps.
    pub last: Weekday,
}

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn day(s: &str) -> Option<Weekday> {
    let i = DAY_NAMES
        .iter()
        .position(|d| d.eq_ignore_ascii_case(s.trim()))?;
    Some(Weekday::try_from(i as u8).expect("0..7"))
}

impl DaySpec {
    /// Whether `d` is one of these days.
    pub fn contains(&self, d: Weekday) -> bool {
        let (a, b, x) = (
            self.first.num_days_from_monday(),
            self.last.num_days_from_monday(),
            d.num_days_from_monday(),
        );
        if a <= b {
            a <= x && x <= b
        } else {
            x >= a || x <= b
        }
    }
}

/// A day that is not one of [`DAY_NAMES`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown day `{0}`: write mon, tue, wed, thu, fri, sat or sun, or a range such as mon..fri"
)]
pub struct DayError(pub String);

impl std::str::FromStr for DaySpec {
    type Err = DayError;
    fn from_str(s: &str) -> Result<Self, DayError> {
        let bad = |what: &str| DayError(what.to_string());
        match s.split_once("..") {
            Some((a, b)) => Ok(DaySpec {
                first: day(a).ok_or_else(|| bad(a.trim()))?,
                last: day(b).ok_or_else(|| bad(b.trim()))?,
            }),
            None => {
                let d = day(s).ok_or_else(|| bad(s.trim()))?;
                Ok(DaySpec { first: d, last: d })
            }
        }
    }
}

impl std::fmt::Display for DaySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = |d: Weekday| DAY_NAMES[d.num_days_from_monday() as usize];
        if self.first == self.last {
            f.write_str(name(self.first))
        } else {
            write!(f, "{}..{}", name(self.first), name(self.last))
        }
    }
}

impl Serialize for DaySpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for DaySpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let s = match v {
            Value::String(s) => s,
            other => other.to_string(),
        };
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for DaySpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "DaySpec".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "a day (mon, tue, wed, thu, fri, sat, sun) or a range of days (mon..fri)",
            "pattern": "^(mon|tue|wed|thu|fri|sat|sun)(\\.\\.(mon|tue|wed|thu|fri|sat|sun))?$"
        })
    }
}
