//! The CEL evaluator of the campaign language ([`nurture_core::eval`]), and the
//! `contact` variable built from a stored contact.

pub use nurture_core::eval::*;

use nurture_core::model::Scoring;
use nurture_store::Contact;
use serde_json::{Map, Value};

/// The `contact` variable of conditions and templates, read now (wall clock): see
/// [`contact_view_at`].
pub fn contact_view(c: &Contact, scoring: &Scoring) -> Value {
    contact_view_at(c, scoring, chrono::Utc::now())
}

/// The `contact` variable as of `now`: `score` and `grade` count aging points as they
/// are worth at `now` ([`Contact::score_at`]).
pub fn contact_view_at(c: &Contact, scoring: &Scoring, now: nurture_store::Ts) -> Value {
    let score = c.score_at(now);
    let mut m: Map<String, Value> = c.fields.clone();
    m.insert("id".into(), Value::from(c.id.clone()));
    m.insert(
        "email".into(),
        c.email.clone().map_or(Value::Null, Value::from),
    );
    m.insert(
        "tags".into(),
        Value::Array(c.tags.iter().cloned().map(Value::from).collect()),
    );
    m.insert("score".into(), nurture_core::aging::score_json(score));
    m.insert("grade".into(), Value::from(grade_of(scoring, score)));
    m.insert(
        "lifecycle".into(),
        c.lifecycle.clone().map_or(Value::Null, Value::from),
    );
    m.insert(
        "owner".into(),
        c.owner.clone().map_or(Value::Null, Value::from),
    );
    m.insert("consent".into(), Value::from(c.consent.as_str()));
    m.insert(
        "timezone".into(),
        c.timezone.clone().map_or(Value::Null, Value::from),
    );
    m.insert(
        "segments".into(),
        Value::Array(c.segments.iter().cloned().map(Value::from).collect()),
    );
    m.insert("unsubscribed".into(), Value::from(c.unsubscribed));
    Value::Object(m)
}
