//! Event types: the one rule ingestion applies to their names, shared by the checks of
//! workflows ([`crate::lint::event_type`]) and by ingestion (`nurture_engine::input`).

/// An event type that is not a dotted lowercase name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`type` {} is not a dotted lowercase name such as \"page.visited\"", shown(.0))]
pub struct EventTypeError(pub String);

/// Checks an event type with the one rule ingestion applies: a dotted lowercase name
/// such as `page.visited` (two or more parts of `a-z`, `0-9`, `_` and `-`, the first
/// starting with a letter). `nurture validate` applies it to the event names of
/// triggers, goals, `wait_for` and scoring rules, so none can wait for an event that is
/// never accepted.
pub fn check_event_type(kind: &str) -> Result<(), EventTypeError> {
    if valid_event_type(kind) {
        return Ok(());
    }
    Err(EventTypeError(kind.to_string()))
}

/// A name that [`check_event_type`] accepts, close to `kind`: lowercased, other
/// characters as `_`, and a `custom.` prefix when it has a single part.
pub fn suggest_event_type(kind: &str) -> Option<String> {
    let lower: String = kind
        .trim()
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let parts: Vec<&str> = lower.split('.').filter(|p| !p.is_empty()).collect();
    let joined = parts.join(".");
    let candidate = if parts.len() < 2 || !joined.starts_with(|c: char| c.is_ascii_lowercase()) {
        format!("custom.{joined}")
    } else {
        joined
    };
    valid_event_type(&candidate).then_some(candidate)
}

fn valid_event_type(s: &str) -> bool {
    let mut parts = s.split('.');
    let first_ok = parts
        .next()
        .is_some_and(|p| !p.is_empty() && p.starts_with(|c: char| c.is_ascii_lowercase()));
    let rest: Vec<&str> = parts.collect();
    first_ok
        && !rest.is_empty()
        && s.split('.').all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        })
}

/// A value quoted for an error message: at most 80 characters, escaped.
pub fn shown(s: &str) -> String {
    let short: String = s.chars().take(80).collect();
    if short.len() < s.len() {
        format!("{short:?}...")
    } else {
        format!("{short:?}")
    }
}
