//! Segments that follow time: a per-contact segment timer, and contact updates that
//! re-evaluate segments and scoring.
//!
//! A condition *depends on time* when it calls `activity(...)` or reads `now` (segments,
//! and `profile` scoring rules, which are re-evaluated with them). For a contact, the
//! engine computes after every unit of work the next instant at which such a condition
//! can change value by the clock alone ([`Clock::next_change`]) and keeps it as the
//! contact's one segment timer row ([`nurture_store::Store::due_segment_timers`]); the unit
//! that fires it re-evaluates the contact (entering and leaving segments, segment
//! triggers) and sets the next one. Nothing is kept in memory per waiting contact, and a
//! project without time-dependent conditions never claims these timers at all.
//!
//! The next-change instant is the earliest, strictly after now, of these candidates:
//! - for every `activity(TYPE, WINDOW, ...)` call with literal `TYPE` and `WINDOW`: each
//!   event of that type in the contact's history, at `event.at + WINDOW` (when it leaves
//!   the window), and the earliest event stored with a time still in the future (when it
//!   enters). A silence threshold (`activity(...) == 0`) is the last event's exit;
//! - for a condition that reads `now`: every timestamp `T` it can compare with (string
//!   literals that are RFC 3339 times or `YYYY-MM-DD` dates, and such values of the
//!   `contact.*` paths it reads), at `T`, `T + D` and `T - D` for every duration literal
//!   `D` in it (`duration("720h")`, `"30d"`); calendar accessors on `now`
//!   (`now.getHours()`, `getDayOfWeek()`...) add the next whole hour, `getMinutes()` /
//!   `getSeconds()` the next whole minute.
//!
//! This is a conservative bound: at the instant the condition is re-evaluated, and the
//! next instant computed again. Windows or types given by an expression, and arithmetic on
//! `now` with values computed at run time, are not followed (the contact is then
//! re-evaluated whenever it changes, as before).

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::DurationRound;
use serde_json::{json, Value};

use super::{eval, Effect, Engine, EngineError, Work};
use crate::input::ContactRow;
use nurture_core::project::Project;
use nurture_store::{StoredEvent, Ts};

/// The time-dependent conditions of a project (see the module documentation).
#[derive(Debug, Default)]
pub struct Clock {
    conditions: Vec<Timed>,
}

#[derive(Debug)]
struct Timed {
    source: String,
    /// `activity` calls: (type, window).
    windows: Vec<(String, chrono::Duration)>,
    /// Whether it reads `now`.
    now: bool,
    /// Timestamps and durations written in it.
    times: Vec<Ts>,
    durations: Vec<chrono::Duration>,
    /// The granularity of calendar accessors called (on `now` or anything).
    calendar: Option<chrono::Duration>,
}

/// The identifiers (with whether a `.` precedes them) and string literals of a CEL source.
fn tokens(src: &str) -> (Vec<(String, bool)>, Vec<String>) {
    let chars: Vec<char> = src.chars().collect();
    let (mut idents, mut strings) = (Vec::new(), Vec::new());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' {
            let mut s = String::new();
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    i += 1;
                }
                s.push(chars[i]);
                i += 1;
            }
            strings.push(s);
            i += 1;
        } else if c.is_alphabetic() || c == '_' {
            let dot = chars[..i].iter().rev().find(|c| !c.is_whitespace()) == Some(&'.');
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            idents.push((chars[start..i].iter().collect(), dot));
        } else {
            i += 1;
        }
    }
    (idents, strings)
}

/// A CEL duration literal (`"720h"`, `"1h30m"`, `"90s"`) or a nurture one (`"3d"`).
fn duration(s: &str) -> Option<chrono::Duration> {
    if let Ok(d) = s.parse::<nurture_core::model::Duration>() {
        return Some(d.to_chrono());
    }
    let (mut total, mut rest) = (chrono::Duration::zero(), s.trim());
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let value: i64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..u] {
            "h" => chrono::Duration::try_hours(value)?,
            "m" => chrono::Duration::try_minutes(value)?,
            "s" => chrono::Duration::try_seconds(value)?,
            "ms" => chrono::Duration::try_milliseconds(value)?,
            _ => return None,
        };
        total = total.checked_add(&unit)?;
        rest = &rest[u..];
    }
    Some(total)
}

/// A timestamp (RFC 3339) or a date (`YYYY-MM-DD`, midnight UTC).
fn instant(s: &str) -> Option<Ts> {
    crate::time::parse_date_or_time(s, chrono_tz::UTC)
}

impl Timed {
    fn new(source: &str) -> Option<Timed> {
        let (idents, strings) = tokens(source);
        let now = idents.iter().any(|(i, dot)| i == "now" && !dot);
        let mut windows = Vec::new();
        for (at, _) in source.match_indices("activity(") {
            let args = super::literal(&source[at + "activity(".len()..]);
            let window = args
                .and_then(|(_, rest)| rest.trim_start().strip_prefix(','))
                .and_then(super::literal)
                .and_then(|(w, _)| w.parse::<nurture_core::model::Duration>().ok());
            if let (Some((kind, _)), Some(w)) = (args, window) {
                windows.push((kind.to_string(), w.to_chrono()));
            }
        }
        let has_activity = source.contains("activity(");
        if !now && !has_activity {
            return None;
        }
        let calendar = idents
            .iter()
            .filter(|(_, dot)| *dot)
            .filter_map(|(i, _)| match i.as_str() {
                "getMinutes" | "getSeconds" | "getMilliseconds" => {
                    Some(chrono::Duration::minutes(1))
                }
                "getHours" | "getDayOfWeek" | "getDayOfMonth" | "getDate" | "getDayOfYear"
                | "getMonth" | "getFullYear" => Some(chrono::Duration::hours(1)),
                _ => None,
            })
            .min()
            .filter(|_| now);
        Some(Timed {
            source: source.to_string(),
            windows,
            now,
            times: strings.iter().filter_map(|s| instant(s)).collect(),
            durations: strings.iter().filter_map(|s| duration(s)).collect(),
            calendar,
        })
    }
}

impl Clock {
    /// The time-dependent conditions of the project's segments and profile scoring rules;
    /// `None` when there are none (no segment timers at all).
    pub fn new(project: &Project) -> Option<Clock> {
        let sources = project
            .segments
            .iter()
            .map(|s| s.condition.0.as_str())
            .chain(
                project
                    .scoring
                    .rules
                    .iter()
                    .filter_map(|r| r.profile.as_ref().map(|p| p.0.as_str())),
            );
        let conditions: Vec<Timed> = sources.filter_map(Timed::new).collect();
        (!conditions.is_empty()).then_some(Clock { conditions })
    }

    /// The next instant strictly after `now` at which one of the conditions may change
    /// value for this contact by the clock alone (see the module documentation).
    pub fn next_change(
        &self,
        contact: &Value,
        history: &Arc<Vec<StoredEvent>>,
        later_event: Option<Ts>,
        now: Ts,
    ) -> Option<Ts> {
        let mut best: Option<Ts> = None;
        let mut offer = |t: Option<Ts>| {
            if let Some(t) = t.filter(|t| *t > now) {
                best = Some(best.map_or(t, |b| b.min(t)));
            }
        };
        for c in &self.conditions {
            for (kind, window) in &c.windows {
                history
                    .iter()
                    .filter(|e| e.kind == *kind)
                    .for_each(|e| offer(e.at.checked_add_signed(*window)));
            }
            if !c.windows.is_empty() {
                offer(later_event);
            }
            if !c.now {
                continue;
            }
            let scope = eval::Scope {
                contact,
                event: None,
                now,
                history: history.clone(),
                outcome: None,
            };
            let mut times = c.times.clone();
            times.extend(
                eval::reads(&c.source, &scope)
                    .values()
                    .filter_map(Value::as_str)
                    .filter_map(instant),
            );
            for t in times {
                offer(Some(t));
                for d in &c.durations {
                    offer(t.checked_add_signed(*d));
                    offer(t.checked_sub_signed(*d));
                }
            }
            if let Some(step) = c.calendar {
                offer(
                    now.duration_trunc(step)
                        .ok()
                        .and_then(|t| t.checked_add_signed(step)),
                );
            }
        }
        best
    }
}

impl Engine {
    /// Fires the segment timers due at `now` (none unless the project has time-dependent
    /// conditions): each contact's unit re-evaluates its segments and scoring, enrols on
    /// segments entered, and sets its next timer. Returns how many and their effects.
    pub async fn fire_segment_timers(
        &self,
        now: Ts,
        limit: i64,
    ) -> Result<(usize, Vec<Effect>), EngineError> {
        if self.clock.is_none() {
            return Ok((0, Vec::new()));
        }
        let due = self.store.due_segment_timers(now, limit).await?;
        let units: Vec<(String, Vec<Ts>)> = due.into_iter().map(|(c, t)| (c, vec![t])).collect();
        self.run_units(units, now, |w, due: &Vec<Ts>| {
            w.segment_fired = true;
            let due: Vec<String> = due.iter().map(|t| nurture_store::ts_out(*t)).collect();
            w.journal(None, "segment_timer", json!({ "due": due }));
            Ok(())
        })
        .await
    }

    /// When the next segment timer is due (`None` without time-dependent conditions).
    pub async fn next_segment_timer(&self) -> Result<Option<Ts>, EngineError> {
        match self.clock {
            Some(_) => Ok(self.store.next_segment_timer().await?),
            None => Ok(None),
        }
    }

    /// The stored members of `segment` (a schedule's audience), read from the store's
    /// membership index page by page: no evaluation of every contact.
    pub(super) async fn audience(&self, segment: &str) -> Result<Vec<String>, EngineError> {
        const PAGE: i64 = 1000;
        let mut out: Vec<String> = Vec::new();
        loop {
            let after = out.last().map(String::as_str);
            let page = self.store.segment_members(segment, after, PAGE).await?;
            let full = page.len() as i64 == PAGE;
            out.extend(page);
            if !full {
                return Ok(out);
            }
        }
    }

    /// Updates stored contacts with imported rows (API, CSV), each in a unit of work: its
    /// segments, scoring and triggers are re-evaluated and committed with the update (one
    /// group commit for the batch).
    pub(super) async fn update_contacts(
        &self,
        rows: Vec<(String, Vec<ContactRow>)>,
        now: Ts,
    ) -> Result<usize, EngineError> {
        let (n, _) = self
            .run_units(rows, now, |w, rows: &Vec<ContactRow>| {
                let before = w.contact.clone();
                for r in rows {
                    crate::input::merge(r, &mut w.contact);
                }
                w.contact_changed = true;
                let changes = changes(&before, &w.contact);
                if !changes.is_empty() {
                    w.journal(
                        None,
                        "contact_updated",
                        json!({"changes": changes, "cause": "import"}),
                    );
                }
                Ok(())
            })
            .await?;
        Ok(n)
    }
}

impl Work<'_> {
    /// At the end of a unit: the contact's segment timer and stored membership, written
    /// when they changed (or when this unit fired the timer, whose row it replaces).
    pub(super) fn segment_bookkeeping(&mut self) {
        let now_in = &self.contact.segments;
        if *now_in != self.loaded_segments {
            let id = &self.contact.id;
            let mut changes = Vec::new();
            for s in now_in.difference(&self.loaded_segments) {
                self.uow.segment_members.push((s.clone(), id.clone(), true));
                changes.push(json!({"segment": s, "entered": true}));
            }
            for s in self.loaded_segments.difference(now_in) {
                self.uow
                    .segment_members
                    .push((s.clone(), id.clone(), false));
                changes.push(json!({"segment": s, "entered": false}));
            }
            self.loaded_segments = now_in.clone();
            for c in changes {
                self.journal(None, "segment", c);
            }
        }
        let due = match &self.engine.clock {
            None if self.contact.segment_due.is_none() && !self.segment_fired => return,
            None => None,
            Some(clock) => {
                let view = self.contact_view();
                clock.next_change(&view, &self.history, self.later_event, self.now)
            }
        };
        if due != self.contact.segment_due {
            self.contact.segment_due = due;
            self.contact_changed = true;
        } else if !self.segment_fired {
            return;
        }
        self.uow.segment_timers.push((self.contact.id.clone(), due));
    }
}

/// What an import changed: `{name: {from, to}}` for the contact's own attributes (email,
/// lifecycle, owner, timezone, consent, tags) and each field.
fn changes(
    a: &nurture_store::Contact,
    b: &nurture_store::Contact,
) -> serde_json::Map<String, serde_json::Value> {
    let mut out = serde_json::Map::new();
    let mut note = |name: &str, from: serde_json::Value, to: serde_json::Value| {
        if from != to {
            out.insert(name.to_string(), json!({"from": from, "to": to}));
        }
    };
    note("email", json!(a.email), json!(b.email));
    note("lifecycle", json!(a.lifecycle), json!(b.lifecycle));
    note("owner", json!(a.owner), json!(b.owner));
    note("timezone", json!(a.timezone), json!(b.timezone));
    note("consent", json!(a.consent), json!(b.consent));
    note("tags", json!(a.tags), json!(b.tags));
    let keys: BTreeSet<&String> = a.fields.keys().chain(b.fields.keys()).collect();
    for k in keys {
        note(k, json!(a.fields.get(k)), json!(b.fields.get(k)));
    }
    out
}

/// The segments a contact was loaded with (to write membership changes).
pub(super) fn loaded(contact: &nurture_store::Contact) -> BTreeSet<String> {
    contact.segments.clone()
}

/// The earliest of the loaded events stored with a time after `now`.
pub(super) fn later_event(events: &[StoredEvent], now: Ts) -> Option<Ts> {
    events.iter().map(|e| e.at).filter(|t| *t > now).min()
}
