//! Scoring that ages: the value at a time of points given at another, under a rule's
//! `decay: { half_life }` and `expires`. Pure arithmetic on event times, so a score read
//! at the same instant from the same points is the same number every time (replay,
//! backtest, the running engine); no batch job lowers stored scores.

use crate::event::Ts;
use crate::model::{ScoreRule, Scoring};

/// How a rule's points age: half-life and lifetime in seconds (none: they do not).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Aging {
    /// Seconds after which the points count half.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub half_life: Option<u64>,
    /// Seconds after which the points count nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
}

impl Aging {
    /// The aging of a scoring rule.
    pub fn of(rule: &ScoreRule) -> Self {
        Aging {
            half_life: rule.decay.map(|d| d.half_life.seconds()),
            expires: rule.expires.map(|d| d.seconds()),
        }
    }

    /// Whether the points change with time at all.
    pub fn ages(self) -> bool {
        self.half_life.is_some() || self.expires.is_some()
    }

    /// The value at `now` of `points` given at `at`: `points × 0.5^(age / half_life)`
    /// while `age < expires`, then 0. An event dated after `now` counts in full.
    pub fn value(self, points: f64, at: Ts, now: Ts) -> f64 {
        let age = (now - at).num_seconds().max(0) as u64;
        if self.expires.is_some_and(|e| age >= e) {
            return 0.0;
        }
        match self.half_life {
            Some(h) => points * 0.5f64.powf(age as f64 / h as f64),
            None => points,
        }
    }
}

/// Whether any rule of `scoring` ages.
pub fn any_ages(scoring: &Scoring) -> bool {
    scoring.rules.iter().any(|r| Aging::of(r).ages())
}

/// A score as JSON: an integer when it is one, else rounded to 1/1000 (journal lines,
/// the `contact` variable), so a score without aging reads as before.
pub fn score_json(score: f64) -> serde_json::Value {
    let r = (score * 1000.0).round() / 1000.0;
    if r.fract() == 0.0 && r.abs() < 9.0e15 {
        serde_json::Value::from(r as i64)
    } else {
        serde_json::Value::from(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone, Utc};

    #[test]
    fn half_life_halves_and_expiry_zeroes() {
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let d = Aging {
            half_life: Some(30 * 86_400),
            expires: None,
        };
        assert_eq!(d.value(10.0, t0, t0), 10.0);
        assert_eq!(d.value(10.0, t0, t0 + Duration::days(30)), 5.0);
        assert_eq!(d.value(10.0, t0, t0 + Duration::days(60)), 2.5);
        let e = Aging {
            half_life: None,
            expires: Some(90 * 86_400),
        };
        assert_eq!(e.value(10.0, t0, t0 + Duration::days(89)), 10.0);
        assert_eq!(e.value(10.0, t0, t0 + Duration::days(90)), 0.0);
        assert_eq!(score_json(2.5), serde_json::json!(2.5));
        assert_eq!(score_json(5.0), serde_json::json!(5));
    }
}
