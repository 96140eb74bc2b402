//! Contacts and events from files and the HTTP API: parsing and validation.
//!
//! A bad row is rejected with its line number and a reason; the good rows of the same file
//! or request are kept.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{Map, Value};

pub use nurture_core::events::{check_event_type, suggest_event_type};
use nurture_core::events::{shown, EventTypeError};
use nurture_store::{Consent, Contact, Ts};

/// Why an event or a contact is refused. Its text is the item's `reason` (in API
/// answers, as a rejected line of a file), so it says what to send instead.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InputError {
    /// A fixed complaint about the item's shape, e.g. "missing `type`".
    #[error("{0}")]
    Shape(&'static str),
    /// An event key that is not one of `id`, `type`, `contact`, `email`, `at`, `data`.
    #[error("unknown field `{field}`{hint}")]
    UnknownField {
        /// The key as sent.
        field: String,
        /// A `; did you mean ...?` suggestion, or empty.
        hint: String,
    },
    /// The named event field is blank or not a string.
    #[error("`{0}` must be a non-empty string")]
    EmptyText(String),
    /// The named contact field must be a string (or null) and is not.
    #[error("`{0}` must be a string")]
    NotText(String),
    /// The named id is longer than [`MAX_ID_LEN`] bytes.
    #[error("`{0}` is longer than {MAX_ID_LEN} bytes")]
    IdTooLong(String),
    /// The named id has control characters, or blanks other than inner spaces.
    #[error("`{0}` must be printable: no control characters, tabs, line breaks or null bytes")]
    IdNotPrintable(String),
    /// `email` is not an address ([`valid_email`]).
    #[error("`email` {} is not an email address", shown(.0))]
    Email(String),
    /// `type` is not a well-formed event type.
    #[error(transparent)]
    EventType(#[from] EventTypeError),
    /// A time (field `what`) that is not RFC 3339.
    #[error("`{what}` {} is not an RFC 3339 time such as 2026-03-01T09:00:00Z", shown(.text))]
    Time {
        /// The field: `at` or `created_at`.
        what: &'static str,
        /// The text as sent.
        text: String,
        /// The parser's complaint.
        #[source]
        source: chrono::ParseError,
    },
    /// `at` is further in the past than the API accepts (the limit, in days).
    #[error("`at` is more than {0} days in the past")]
    TooOld(i64),
    /// `at` is further in the future than the API accepts (the limit, in hours).
    #[error("`at` is more than {0} hours in the future")]
    TooNew(i64),
    /// `data` is over [`EventRules::max_data`].
    #[error("`data` is {size} bytes of JSON, more than the {max} allowed")]
    DataTooLarge {
        /// Bytes of JSON sent.
        size: usize,
        /// Bytes allowed.
        max: usize,
    },
    /// `lifecycle` is not a lifecycle stage (its first 40 characters).
    #[error("`lifecycle` {0:?} is not a lifecycle stage ({stages})", stages = nurture_core::model::LIFECYCLE_STAGES.join(", "))]
    Lifecycle(String),
    /// `consent` is not `opted_in`, `opted_out` or `unknown`.
    #[error("`consent` {0:?} must be opted_in, opted_out or unknown")]
    Consent(String),
    /// A field nurture computes (`score`, `grade`, `segments`, `unsubscribed`, `suppressed`).
    #[error("`{0}` is computed by nurture and cannot be imported")]
    Computed(String),
    /// `timezone` is not an IANA time zone.
    #[error("`timezone` {0:?} is not an IANA time zone such as Europe/Sofia")]
    Timezone(String),
}

impl serde::Serialize for InputError {
    /// As its text: the `reason` of a rejected item.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A rejected row or event.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Rejected {
    /// 1-based line (files) or 0-based index (API batches).
    pub at: usize,
    /// Why, in words that say what to send instead.
    pub reason: String,
}

/// A contact row to import: what the file said, before merging with the store.
#[derive(Debug, Clone, PartialEq)]
pub struct ContactRow {
    /// Its line in the file (1-based), or its index in an API batch.
    pub line: usize,
    /// The contact's id; `None`: the id derives from `email` ([`id_for_email`]).
    pub id: Option<String>,
    /// Its email address, lowercased.
    pub email: Option<String>,
    /// Other columns, dotted names nested (`company.employees`).
    pub fields: Map<String, Value>,
    /// Tags to add to those stored; `None`: none given.
    pub tags: Option<BTreeSet<String>>,
    /// The consent to set; `None`: keep the stored one.
    pub consent: Option<Consent>,
    /// An IANA time zone to set.
    pub timezone: Option<String>,
    /// A lifecycle stage to set.
    pub lifecycle: Option<String>,
    /// An owner to set.
    pub owner: Option<String>,
    /// When the contact was created (`created_at`): the time of its `contact.created`
    /// event when this row creates it; ignored for a contact that exists.
    pub created: Option<Creation>,
}

/// A contact's creation as the input states it: its `contact.created` event's time and
/// data (`created_at` gives the time; a simulated `contact.created` event both).
#[derive(Debug, Clone, PartialEq)]
pub struct Creation {
    /// When the contact is created.
    pub at: Ts,
    /// The `data` of its `contact.created` event.
    pub data: Value,
}

/// A validated incoming event.
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingEvent {
    /// Its line in the file (1-based), or its index in an API batch.
    pub index: usize,
    /// The id given; `None`: ingestion derives one from the content.
    pub id: Option<String>,
    /// Its type, e.g. `form.submitted`.
    pub kind: String,
    /// The contact id given.
    pub contact: Option<String>,
    /// The email address given (lowercased), to find or create the contact by.
    pub email: Option<String>,
    /// When it happened; `None`: when it is stored (or the simulation's start).
    pub at: Option<Ts>,
    /// Its `data`, always an object (`{}` when not given).
    pub data: Value,
}

const EVENT_KEYS: &[&str] = &["id", "type", "contact", "email", "at", "data"];

/// Longest id (contact or event) accepted, in bytes.
pub const MAX_ID_LEN: usize = 200;
/// Longest email address accepted, in bytes (RFC 5321's path limit).
const MAX_EMAIL_LEN: usize = 254;
/// Default cap on an event's `data`, in bytes of JSON.
pub const MAX_EVENT_DATA: usize = 64 * 1024;

/// What an incoming event may carry: the size of its `data` and, for the API, how far
/// its `at` may be from now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EventRules {
    /// Largest `data`, in bytes of JSON.
    pub max_data: usize,
    /// `at` no earlier than `now - past` and no later than `now + ahead` (`None`: any
    /// time, as for files replayed with `nurture events send`).
    pub window: Option<(chrono::Duration, chrono::Duration)>,
}

impl Default for EventRules {
    /// A 64 KiB `data`, any time.
    fn default() -> Self {
        EventRules {
            max_data: MAX_EVENT_DATA,
            window: None,
        }
    }
}

/// Whether `s` is an email address: an RFC 5322 local part and a domain name (the
/// checks lettre's address parser applies, from the `email_address` crate), with a dotted domain, no blanks or control characters,
/// at most 254 bytes. `a@b.c@d.e` and addresses with null bytes are refused.
pub fn valid_email(s: &str) -> bool {
    let Some((_, domain)) = s.rsplit_once('@') else {
        return false;
    };
    s.len() <= MAX_EMAIL_LEN
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && valid_parts(s)
}

/// The local part and the domain (a name or a bracketed IP literal) of `s`.
fn valid_parts(s: &str) -> bool {
    use email_address::EmailAddress;
    let Some((user, domain)) = s.rsplit_once('@') else {
        return false;
    };
    let ip = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']'));
    EmailAddress::is_valid_local_part(user)
        && (EmailAddress::is_valid_domain(domain)
            || ip.is_some_and(|d| d.parse::<std::net::IpAddr>().is_ok()))
}

/// Checks a contact or event id: at most [`MAX_ID_LEN`] bytes, no control characters (null
/// bytes included), no blanks but inner spaces.
pub fn check_id(what: &str, id: &str) -> Result<(), InputError> {
    if id.len() > MAX_ID_LEN {
        return Err(InputError::IdTooLong(what.to_string()));
    }
    if id
        .chars()
        .any(|c| c.is_control() || (c.is_whitespace() && c != ' '))
    {
        return Err(InputError::IdNotPrintable(what.to_string()));
    }
    Ok(())
}

/// Checks a lifecycle value against the stages ([`nurture_core::model::LIFECYCLE_STAGES`]).
fn check_lifecycle(stage: &str) -> Result<(), InputError> {
    use nurture_core::model::LIFECYCLE_STAGES;
    if LIFECYCLE_STAGES.contains(&stage) {
        return Ok(());
    }
    Err(InputError::Lifecycle(stage.chars().take(40).collect()))
}

/// Checks an event time against the rules' window around `now`.
fn check_at(at: Ts, rules: &EventRules, now: Ts) -> Result<(), InputError> {
    let Some((past, ahead)) = rules.window else {
        return Ok(());
    };
    if at < now - past {
        return Err(InputError::TooOld(past.num_days()));
    }
    if at > now + ahead {
        return Err(InputError::TooNew(ahead.num_hours()));
    }
    Ok(())
}

/// Checks the size of an event's `data` (its JSON text) against `max` bytes.
fn check_data(data: &Value, max: usize) -> Result<(), InputError> {
    if max == usize::MAX {
        return Ok(());
    }
    let size = serde_json::to_vec(data).map_or(usize::MAX, |v| v.len());
    if size > max {
        return Err(InputError::DataTooLarge { size, max });
    }
    Ok(())
}

/// Whether the event object `v` carries a `data` larger than `max` bytes of JSON: the
/// reason, for an answer of its own (413).
pub fn oversized_data(v: &Value, max: usize) -> Option<InputError> {
    check_data(v.get("data")?, max).err()
}

/// Validates one event object with the default rules ([`EventRules::default`]).
pub fn parse_event(index: usize, v: &Value) -> Result<IncomingEvent, InputError> {
    parse_event_with(index, v, &EventRules::default(), chrono::Utc::now())
}

/// Validates one event object: its fields, ids, address, time (against `rules` around
/// `now`) and the size of its `data`.
pub fn parse_event_with(
    index: usize,
    v: &Value,
    rules: &EventRules,
    now: Ts,
) -> Result<IncomingEvent, InputError> {
    let obj = v.as_object().ok_or(InputError::Shape(
        "an event is a JSON object with `type` and `contact` (or `email`)",
    ))?;
    for k in obj.keys() {
        if !EVENT_KEYS.contains(&k.as_str()) {
            let hint = nurture_core::diag::did_you_mean(k, EVENT_KEYS.iter().copied())
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default();
            return Err(InputError::UnknownField {
                field: k.clone(),
                hint,
            });
        }
    }
    let text = |k: &str| -> Result<Option<String>, InputError> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
            Some(_) => Err(InputError::EmptyText(k.to_string())),
        }
    };
    let kind = text("type")?.ok_or(InputError::Shape("missing `type`, e.g. \"form.submitted\""))?;
    check_event_type(&kind)?;
    let contact = text("contact")?;
    let email = text("email")?.map(|e| e.to_lowercase());
    if contact.is_none() && email.is_none() {
        return Err(InputError::Shape(
            "missing `contact` (a contact id) or `email`",
        ));
    }
    if let Some(c) = &contact {
        check_id("contact", c)?;
    }
    let id = text("id")?;
    if let Some(i) = &id {
        check_id("id", i)?;
    }
    if let Some(e) = &email {
        if !valid_email(e) {
            return Err(InputError::Email(e.clone()));
        }
    }
    let at = match text("at")? {
        None => None,
        Some(s) => Some(parse_time("at", &s)?),
    };
    if let Some(at) = at {
        check_at(at, rules, now)?;
    }
    let data = match obj.get("data") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(Value::Object(m)) => Value::Object(m.clone()),
        Some(_) => return Err(InputError::Shape("`data` must be a JSON object")),
    };
    check_data(&data, rules.max_data)?;
    Ok(IncomingEvent {
        index,
        id,
        kind,
        contact,
        email,
        at,
        data,
    })
}

/// Parses the RFC 3339 time of the field `what` (an event's `at`, a contact's
/// `created_at`).
fn parse_time(what: &'static str, s: &str) -> Result<Ts, InputError> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|source| InputError::Time {
            what,
            text: s.to_string(),
            source,
        })
}

/// Reads a JSON Lines file of events: (valid events, rejected lines).
pub fn read_events(path: &Path) -> std::io::Result<(Vec<IncomingEvent>, Vec<Rejected>)> {
    Ok(parse_events(&std::fs::read_to_string(path)?))
}

/// Parses JSON Lines events (a file's or stdin's text): (valid events, rejected lines).
pub fn parse_events(text: &str) -> (Vec<IncomingEvent>, Vec<Rejected>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Err(e) => bad.push(Rejected {
                at: line_no,
                reason: format!("not JSON: {e}"),
            }),
            Ok(v) => match parse_event(line_no, &v) {
                Ok(e) => ok.push(e),
                Err(e) => bad.push(Rejected {
                    at: line_no,
                    reason: e.to_string(),
                }),
            },
        }
    }
    (ok, bad)
}

fn insert_path(m: &mut Map<String, Value>, path: &str, v: Value) {
    match path.split_once('.') {
        None => {
            m.insert(path.to_string(), v);
        }
        Some((head, rest)) => {
            let child = m
                .entry(head.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !child.is_object() {
                *child = Value::Object(Map::new());
            }
            if let Value::Object(cm) = child {
                insert_path(cm, rest, v);
            }
        }
    }
}

/// A CSV cell as JSON: numbers and booleans are typed, so `company.employees < 100` works.
fn typed_cell(s: &str) -> Value {
    let t = s.trim();
    if let Ok(i) = t.parse::<i64>() {
        return Value::from(i);
    }
    if let Ok(f) = t.parse::<f64>() {
        if t.contains('.') {
            return Value::from(f);
        }
    }
    match t {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => Value::String(t.to_string()),
    }
}

/// Validates one contact object.
pub fn parse_contact(line: usize, v: &Value) -> Result<ContactRow, InputError> {
    let obj = v
        .as_object()
        .ok_or(InputError::Shape("a contact is a JSON object"))?;
    let mut row = ContactRow {
        line,
        id: None,
        email: None,
        fields: Map::new(),
        tags: None,
        consent: None,
        timezone: None,
        lifecycle: None,
        owner: None,
        created: None,
    };
    for (k, v) in obj {
        let s = || -> Result<Option<String>, InputError> {
            match v {
                Value::Null => Ok(None),
                Value::String(s) if s.trim().is_empty() => Ok(None),
                Value::String(s) => Ok(Some(s.trim().to_string())),
                Value::Number(n) if k == "id" => Ok(Some(n.to_string())),
                _ => Err(InputError::NotText(k.clone())),
            }
        };
        match k.as_str() {
            "id" => row.id = s()?,
            "email" => row.email = s()?.map(|e| e.to_lowercase()),
            "timezone" => row.timezone = s()?,
            "lifecycle" => row.lifecycle = s()?,
            "owner" => row.owner = s()?,
            "created_at" => {
                row.created = match s()? {
                    None => None,
                    Some(t) => Some(Creation {
                        at: parse_time("created_at", &t)?,
                        data: Value::Object(Map::new()),
                    }),
                }
            }
            "consent" => {
                row.consent = match s()?.as_deref() {
                    None => None,
                    Some("opted_in") => Some(Consent::OptedIn),
                    Some("opted_out") => Some(Consent::OptedOut),
                    Some("unknown") => Some(Consent::Unknown),
                    Some(other) => return Err(InputError::Consent(other.to_string())),
                }
            }
            "tags" => {
                let tags: BTreeSet<String> = match v {
                    Value::Null => BTreeSet::new(),
                    Value::String(s) => s
                        .split([';', ','])
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(str::to_string)
                        .collect(),
                    Value::Array(items) => items
                        .iter()
                        .map(|t| {
                            t.as_str()
                                .map(str::to_string)
                                .ok_or(InputError::Shape("`tags` must be strings"))
                        })
                        .collect::<Result<_, _>>()?,
                    _ => {
                        return Err(InputError::Shape(
                            "`tags` must be a list or a ;-separated string",
                        ))
                    }
                };
                row.tags = Some(tags);
            }
            "score" | "grade" | "segments" | "unsubscribed" | "suppressed" => {
                return Err(InputError::Computed(k.clone()))
            }
            _ => insert_path(&mut row.fields, k, v.clone()),
        }
    }
    if row.id.is_none() && row.email.is_none() {
        return Err(InputError::Shape("a contact needs an `id` or an `email`"));
    }
    if let Some(id) = &row.id {
        check_id("id", id)?;
    }
    if let Some(e) = &row.email {
        if !valid_email(e) {
            return Err(InputError::Email(e.clone()));
        }
    }
    if let Some(l) = &row.lifecycle {
        check_lifecycle(l)?;
    }
    if let Some(tz) = &row.timezone {
        if tz.parse::<chrono_tz::Tz>().is_err() {
            return Err(InputError::Timezone(tz.clone()));
        }
    }
    Ok(row)
}

/// The two formats a contacts file comes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputFormat {
    /// CSV with a header row.
    Csv,
    /// JSON Lines: one object per line.
    Jsonl,
}

impl InputFormat {
    /// By the file's extension: `.csv` is CSV, anything else JSON Lines.
    pub fn of_path(path: &Path) -> Self {
        let csv = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        if csv {
            Self::Csv
        } else {
            Self::Jsonl
        }
    }

    /// By the content, when there is no name to tell (stdin): JSON Lines when the first
    /// line that is not blank or a `#` comment starts with `{`, otherwise CSV.
    pub fn sniff(text: &str) -> Self {
        let first = text
            .lines()
            .map(str::trim_start)
            .find(|l| !l.is_empty() && !l.starts_with('#'));
        match first {
            Some(l) if !l.starts_with('{') => Self::Csv,
            _ => Self::Jsonl,
        }
    }
}

/// Reads contacts from JSON Lines (`.jsonl`, `.ndjson`, `.json`) or CSV (`.csv`, with a
/// header; dotted columns such as `company.employees` become nested fields).
pub fn read_contacts(path: &Path) -> std::io::Result<(Vec<ContactRow>, Vec<Rejected>)> {
    let text = std::fs::read_to_string(path)?;
    Ok(parse_contacts(&text, InputFormat::of_path(path)))
}

/// Parses contacts (a file's or stdin's text) in `format`: (valid rows, rejected lines).
pub fn parse_contacts(text: &str, format: InputFormat) -> (Vec<ContactRow>, Vec<Rejected>) {
    match format {
        InputFormat::Csv => contacts_csv(text),
        InputFormat::Jsonl => contacts_jsonl(text),
    }
}

fn contacts_csv(text: &str) -> (Vec<ContactRow>, Vec<Rejected>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    let mut rdr = csv::ReaderBuilder::new()
        .flexible(false)
        .trim(csv::Trim::All)
        .from_reader(text.as_bytes());
    let headers = match rdr.headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            bad.push(Rejected {
                at: 1,
                reason: format!("bad CSV header: {e}"),
            });
            return (ok, bad);
        }
    };
    for (i, rec) in rdr.records().enumerate() {
        let line = i + 2;
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                bad.push(Rejected {
                    at: line,
                    reason: format!("bad CSV row: {e}"),
                });
                continue;
            }
        };
        let mut obj = Map::new();
        for (h, cell) in headers.iter().zip(rec.iter()) {
            if cell.is_empty() {
                continue;
            }
            let v = match h {
                "id" | "email" | "first_name" | "last_name" | "timezone" | "consent" | "tags"
                | "lifecycle" | "owner" | "phone" | "created_at" => Value::from(cell),
                _ => typed_cell(cell),
            };
            obj.insert(h.to_string(), v);
        }
        match parse_contact(line, &Value::Object(obj)) {
            Ok(r) => ok.push(r),
            Err(e) => bad.push(Rejected {
                at: line,
                reason: e.to_string(),
            }),
        }
    }
    (ok, bad)
}

fn contacts_jsonl(text: &str) -> (Vec<ContactRow>, Vec<Rejected>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for (i, l) in text.lines().enumerate() {
        let line = i + 1;
        if l.trim().is_empty() || l.trim_start().starts_with('#') {
            continue;
        }
        match serde_json::from_str::<Value>(l) {
            Err(e) => bad.push(Rejected {
                at: line,
                reason: format!("not JSON: {e}"),
            }),
            Ok(v) => match parse_contact(line, &v) {
                Ok(r) => ok.push(r),
                Err(e) => bad.push(Rejected {
                    at: line,
                    reason: e.to_string(),
                }),
            },
        }
    }
    (ok, bad)
}

/// Merges a row into a contact (new or stored): given fields win, others are kept.
pub fn merge(row: &ContactRow, into: &mut Contact) {
    if let Some(e) = &row.email {
        into.email = Some(e.clone());
    }
    for (k, v) in &row.fields {
        into.fields.insert(k.clone(), v.clone());
    }
    if let Some(t) = &row.tags {
        into.tags.extend(t.iter().cloned());
    }
    if let Some(c) = row.consent {
        into.consent = c;
    }
    if let Some(tz) = &row.timezone {
        into.timezone = Some(tz.clone());
    }
    if let Some(l) = &row.lifecycle {
        into.lifecycle = Some(l.clone());
    }
    if let Some(o) = &row.owner {
        into.owner = Some(o.clone());
    }
}

/// The id of a contact created from an email address alone.
pub fn id_for_email(email: &str) -> String {
    format!("c-{}", crate::ids::digest(&[&email.to_lowercase()]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_are_validated_with_reasons() {
        let ok = parse_event(
            0,
            &json!({"type": "page.visited", "contact": "c-1", "data": {"url": "/pricing"}}),
        );
        assert!(ok.is_ok());
        let cases = [
            (json!({"contact": "c"}), "missing `type`"),
            (
                json!({"type": "Page Visited", "contact": "c"}),
                "dotted lowercase",
            ),
            (json!({"type": "page.visited"}), "missing `contact`"),
            (
                json!({"type": "page.visited", "email": "nope"}),
                "not an email",
            ),
            (
                json!({"type": "page.visited", "contact": "c", "at": "yesterday"}),
                "RFC 3339",
            ),
            (
                json!({"type": "page.visited", "contact": "c", "data": [1]}),
                "JSON object",
            ),
            (
                json!({"tpye": "page.visited", "contact": "c"}),
                "did you mean `type`",
            ),
        ];
        for (v, want) in cases {
            let e = parse_event(0, &v).unwrap_err().to_string();
            assert!(e.contains(want), "{v}: {e}");
        }
    }

    #[test]
    fn contacts_nest_dotted_fields_and_reject_bad_rows() {
        let r = parse_contact(
            1,
            &json!({"id": "c1", "company.employees": 40, "tags": "a; b"}),
        )
        .unwrap();
        assert_eq!(r.fields["company"]["employees"], 40);
        assert_eq!(r.tags.unwrap().len(), 2);
        assert!(parse_contact(2, &json!({"first_name": "x"}))
            .unwrap_err()
            .to_string()
            .contains("`id` or an `email`"));
        assert!(parse_contact(3, &json!({"id": "c", "consent": "yes"}))
            .unwrap_err()
            .to_string()
            .contains("opted_in"));
        assert!(
            parse_contact(4, &json!({"id": "c", "timezone": "Mars/Base"}))
                .unwrap_err()
                .to_string()
                .contains("IANA")
        );
        assert!(parse_contact(5, &json!({"id": "c", "score": 5}))
            .unwrap_err()
            .to_string()
            .contains("computed"));
    }
}

#[cfg(test)]
mod error_tests {
    use super::*;
    use serde_json::json;

    /// A bad time keeps chrono's parse error as its source; its text stays the reason.
    #[test]
    fn a_bad_time_keeps_its_parse_error_as_source() {
        let e = parse_event(0, &json!({"type": "a.b", "contact": "c", "at": "soon"})).unwrap_err();
        assert!(matches!(e, InputError::Time { what: "at", .. }), "{e:?}");
        assert!(std::error::Error::source(&e).is_some());
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!("`at` \"soon\" is not an RFC 3339 time such as 2026-03-01T09:00:00Z")
        );
    }
}
