//! Steps that contact the person: marketing email, and plugin steps of a plugin that
//! declares a `channel` in its manifest (`channel = "sms"`). All of them obey the
//! workflow's quiet hours (deferred to their end, never dropped), consent, and the
//! frequency cap and rate limit of their channel (enforced by the store when the outbox
//! entry is claimed: [`nurture_store::limits`]).
//!
//! Consent per channel: email has the contact's `consent` (and `unsubscribed`,
//! `suppressed`); a plugin channel `NAME` has the contact attribute `consent_NAME`
//! (`opted_in`, `opted_out` or `unknown`), set like any attribute (import, API, a `set:`
//! step) and turned to `opted_out` by a `NAME.unsubscribed` event (an SMS "STOP" reply
//! posted as `sms.unsubscribed`). Plugin channels need an explicit opt-in, whatever the
//! workflow's `consent` policy: texts and messengers require prior consent.

use chrono::{Datelike, NaiveTime};
use chrono_tz::Tz;
use serde_json::{json, Value};

use super::{time, Flow, Work};
pub use nurture_core::model::DaySpec;
use nurture_core::plan::Plan;
use nurture_store::{Ts, Wait};

/// When quiet hours `[from, to)` (local, possibly overnight) of `days` (each day's period
/// starting on that day; `None`: every day) are in force at `now`, the instant they end
/// (following periods that start as one ends: a quiet weekend ends on Monday); `None`
/// outside them. `from == to` is the whole day with `days`, never without (as before days
/// existed).
pub fn quiet_until(
    now: Ts,
    tz: Tz,
    from: NaiveTime,
    to: NaiveTime,
    days: Option<&[DaySpec]>,
) -> Option<Ts> {
    if from == to && days.is_none() {
        return None;
    }
    let mut until = None;
    let mut at = now;
    // A week of back-to-back periods at most.
    for _ in 0..8 {
        match period_end(at, tz, from, to, days) {
            Some(end) if end > at => {
                until = Some(end);
                at = end;
            }
            _ => break,
        }
    }
    until
}

/// The end of the quiet period that `now` is in, if any.
fn period_end(
    now: Ts,
    tz: Tz,
    from: NaiveTime,
    to: NaiveTime,
    days: Option<&[DaySpec]>,
) -> Option<Ts> {
    let local = now.with_timezone(&tz).naive_local();
    let len = if to > from {
        to - from
    } else {
        chrono::Duration::days(1) - (from - to)
    };
    for back in 0..2 {
        let date = local.date() - chrono::Duration::days(back);
        if days.is_some_and(|ds| !ds.iter().any(|d| d.contains(date.weekday()))) {
            continue;
        }
        let start = date.and_time(from);
        let end = start + len;
        if local >= start && local < end {
            return Some(time::resolve_local(tz, end));
        }
    }
    None
}

impl<'e> Work<'e> {
    /// Quiet hours of the workflow for a step of run `i` that contacts the person: when in
    /// force (and the step is not the one run again at their end, `quiet_ok`), the run
    /// waits until they end and the step runs again then.
    pub(super) fn quiet_hours(
        &mut self,
        i: usize,
        plan: &Plan,
        step: &str,
        quiet_ok: bool,
    ) -> Option<Flow> {
        let q = plan.workflow.quiet_hours.as_ref().filter(|_| !quiet_ok)?;
        let tz = self.tz(plan);
        let until = quiet_until(self.now, tz, q.from.0, q.to.0, q.days.as_deref())?;
        self.set_timer(i, until, Wait::QuietHours);
        let mut params = serde_json::to_value(q).unwrap_or_default();
        params["timezone"] = Value::from(tz.name());
        self.effect_recording(
            Some(i),
            Some(step),
            "wait",
            json!({"until": nurture_store::ts_out(until), "reason": "quiet_hours", "timezone": tz.name()}),
            held("quiet_hours", params),
        );
        Some(Flow::Wait)
    }

    /// The channel of plugin step `name` (`plugin/step`), if its plugin declares one.
    pub(super) fn plugin_channel(&self, name: &str) -> Option<String> {
        let plugin = name.split_once('/').map_or(name, |(p, _)| p);
        self.engine.project.plugins.get(plugin)?.channel.clone()
    }

    /// Why the person must not be contacted on plugin channel `channel`, if so.
    pub(super) fn channel_refusal(&self, channel: &str) -> Option<&'static str> {
        match self
            .contact
            .fields
            .get(&consent_key(channel))
            .and_then(Value::as_str)
        {
            Some("opted_in") => None,
            Some("opted_out") => Some("opted_out"),
            _ => Some("no_consent"),
        }
    }

    /// A `CHANNEL.unsubscribed` event of a plugin channel opts the contact out of it.
    pub(super) fn channel_event(&mut self, kind: &str) {
        let Some(channel) = kind.strip_suffix(".unsubscribed") else {
            return;
        };
        let declared = self
            .engine
            .project
            .plugins
            .values()
            .any(|m| m.channel.as_deref() == Some(channel));
        if declared {
            self.contact
                .fields
                .insert(consent_key(channel), Value::from("opted_out"));
            self.contact_changed = true;
        }
    }
}

/// The `rule` and `params` of the journal line of a send held back
/// ([`nurture_store::held`]): in the journal only, not in the effect `simulate` prints.
pub(super) fn held(rule: &str, params: Value) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("rule".into(), Value::from(rule));
    m.insert("params".into(), params);
    m
}

/// The contact attribute holding consent to plugin channel `channel`.
pub fn consent_key(channel: &str) -> String {
    format!("consent_{channel}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc, Weekday};

    fn utc(s: &str) -> Ts {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }
    fn hm(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    #[test]
    fn day_specs_parse_and_wrap() {
        let r: DaySpec = "mon..fri".parse().unwrap();
        assert!(r.contains(Weekday::Wed) && !r.contains(Weekday::Sat));
        let w: DaySpec = "fri..mon".parse().unwrap();
        assert!(w.contains(Weekday::Sun) && !w.contains(Weekday::Wed));
        assert_eq!(r.to_string(), "mon..fri");
        assert!("mun"
            .parse::<DaySpec>()
            .unwrap_err()
            .to_string()
            .contains("unknown day `mun`"));
        assert!("mon..fry".parse::<DaySpec>().is_err());
    }

    #[test]
    fn weekday_quiet_hours() {
        let tz = chrono_tz::UTC;
        let weekdays = ["mon..fri".parse().unwrap()];
        // Friday 2026-03-06 22:00: quiet until Saturday 08:00 (Friday's period).
        assert_eq!(
            quiet_until(
                utc("2026-03-06T22:00:00Z"),
                tz,
                hm(21, 0),
                hm(8, 0),
                Some(&weekdays)
            ),
            Some(utc("2026-03-07T08:00:00Z"))
        );
        // Saturday 22:00: no period starts on Saturday.
        assert_eq!(
            quiet_until(
                utc("2026-03-07T22:00:00Z"),
                tz,
                hm(21, 0),
                hm(8, 0),
                Some(&weekdays)
            ),
            None
        );
        // A whole quiet weekend ends on Monday at midnight.
        let weekend = ["sat..sun".parse().unwrap()];
        assert_eq!(
            quiet_until(
                utc("2026-03-07T10:00:00Z"),
                tz,
                hm(0, 0),
                hm(0, 0),
                Some(&weekend)
            ),
            Some(utc("2026-03-09T00:00:00Z"))
        );
        // Without days, as before.
        assert_eq!(
            quiet_until(utc("2026-03-07T22:00:00Z"), tz, hm(21, 0), hm(8, 0), None),
            Some(utc("2026-03-08T08:00:00Z"))
        );
    }
}
