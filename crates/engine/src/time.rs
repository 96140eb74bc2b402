//! Local-time arithmetic for `wait_until` and quiet hours: per contact time zone, DST-safe.

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use nurture_store::Ts;

/// The instant of a local date-time. In a DST gap (02:30 that does not exist) the first
/// valid instant after it; in a DST overlap (01:30 twice) the earlier one.
pub fn resolve_local(tz: Tz, local: NaiveDateTime) -> Ts {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(a, _) => a.with_timezone(&Utc),
        LocalResult::None => {
            let mut probe = local;
            for _ in 0..(4 * 60) {
                probe += Duration::minutes(1);
                if let Some(t) = tz.from_local_datetime(&probe).earliest() {
                    return t.with_timezone(&Utc);
                }
            }
            // No zone has a gap this long; fall back to reading it as UTC.
            Utc.from_utc_datetime(&local)
        }
    }
}

/// The next instant strictly after `now` whose local time in `tz` is `time` (on `weekday`
/// if given).
pub fn next_local(now: Ts, tz: Tz, time: NaiveTime, weekday: Option<chrono::Weekday>) -> Ts {
    let local_today = now.with_timezone(&tz).date_naive();
    for d in 0..15 {
        let date = local_today + Duration::days(d);
        if weekday.is_some_and(|w| date.weekday() != w) {
            continue;
        }
        let t = resolve_local(tz, date.and_time(time));
        if t > now {
            return t;
        }
    }
    now + Duration::days(7)
}

/// When quiet hours `[from, to)` (local, possibly overnight) are in force at `now`, the
/// instant they end; `None` outside them.
pub fn quiet_until(now: Ts, tz: Tz, from: NaiveTime, to: NaiveTime) -> Option<Ts> {
    let local = now.with_timezone(&tz).time();
    let inside = if from <= to {
        local >= from && local < to
    } else {
        local >= from || local < to
    };
    inside.then(|| next_local(now, tz, to, None))
}

/// A date (`2026-03-01`, local midnight) or a timestamp (RFC 3339).
pub fn parse_date_or_time(s: &str, tz: Tz) -> Option<Ts> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .map(|d| resolve_local(tz, d.and_time(NaiveTime::MIN)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> Ts {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }
    fn hm(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    #[test]
    fn next_monday_nine_in_sofia() {
        // Wednesday 2026-03-04 12:00 UTC; Sofia is UTC+2 in winter.
        let t = next_local(
            utc("2026-03-04T12:00:00Z"),
            chrono_tz::Europe::Sofia,
            hm(9, 0),
            Some(chrono::Weekday::Mon),
        );
        assert_eq!(t, utc("2026-03-09T07:00:00Z"));
    }

    #[test]
    fn next_local_time_across_spring_forward() {
        // Sofia moves to UTC+3 on Sunday 2026-03-29 at 03:00 local.
        let sat = utc("2026-03-28T10:00:00Z");
        let t = next_local(sat, chrono_tz::Europe::Sofia, hm(9, 0), None);
        assert_eq!(t, utc("2026-03-29T06:00:00Z"), "09:00 EEST is 06:00 UTC");
        // 03:30 does not exist that night: the first valid instant after the gap.
        let t = next_local(sat, chrono_tz::Europe::Sofia, hm(3, 30), None);
        assert_eq!(t, utc("2026-03-29T01:00:00Z"), "04:00 EEST");
    }

    #[test]
    fn quiet_hours_overnight() {
        let tz = chrono_tz::Europe::Sofia;
        // 22:30 local (20:30 UTC, winter): quiet until 08:00 local next day.
        let until = quiet_until(utc("2026-01-10T20:30:00Z"), tz, hm(21, 0), hm(8, 0));
        assert_eq!(until, Some(utc("2026-01-11T06:00:00Z")));
        // 07:59 local is still quiet; 08:00 is not.
        assert!(quiet_until(utc("2026-01-11T05:59:00Z"), tz, hm(21, 0), hm(8, 0)).is_some());
        assert!(quiet_until(utc("2026-01-11T06:00:00Z"), tz, hm(21, 0), hm(8, 0)).is_none());
    }
}
