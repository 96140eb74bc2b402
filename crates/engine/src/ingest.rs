//! Storing incoming events and imported contacts.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use serde_json::json;

use super::{digest, Engine, EngineError};
use crate::input::{id_for_email, merge, ContactRow, Creation, IncomingEvent, Rejected};
use nurture_store::{Contact, Inserted, NewEvent, Ts};

/// What happened to one incoming event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventOutcome {
    /// Index in the request (API) or line (file).
    pub index: usize,
    /// The event's id, given or derived; `None` for an event rejected before it had one.
    pub id: Option<String>,
    /// `accepted`, `duplicate` (seen before, ignored), `conflict` (its id is another
    /// event's) or `rejected`.
    pub status: &'static str,
    /// The contact it was stored for (created from its `email` when new).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    /// Why it was rejected or conflicts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Summary of a contacts import.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ImportSummary {
    /// Contacts the import created.
    pub created: usize,
    /// Stored contacts it changed.
    pub updated: usize,
    /// Rows not imported, each with its line and reason.
    pub rejected: Vec<Rejected>,
}

impl Engine {
    /// Stores valid events (new contacts by email are created; unknown contact ids are
    /// rejected), all in one transaction. A store failure is an error for the whole batch:
    /// nothing is acknowledged that was not stored. An event id already used for another
    /// contact or type is a `conflict` (nothing stored, no contact created for it); the
    /// same event again is a `duplicate`.
    pub async fn ingest(
        &self,
        events: &[IncomingEvent],
        now: Ts,
    ) -> Result<Vec<EventOutcome>, EngineError> {
        let outcomes = self.ingest_uncounted(events, now).await?;
        for o in &outcomes {
            self.metrics.event(o.status);
        }
        Ok(outcomes)
    }

    async fn ingest_uncounted(
        &self,
        events: &[IncomingEvent],
        now: Ts,
    ) -> Result<Vec<EventOutcome>, EngineError> {
        let mut outcomes: Vec<EventOutcome> = Vec::with_capacity(events.len());
        // Events of merged anonymous contacts go to the contacts they were merged into.
        let named: Vec<String> = events.iter().filter_map(|e| e.contact.clone()).collect();
        let aliases = self.aliases(&named).await?;
        let aliased: Vec<IncomingEvent>;
        let events = if aliases.is_empty() {
            events
        } else {
            aliased = events
                .iter()
                .map(|e| {
                    let mut e = e.clone();
                    if let Some(into) = e.contact.as_ref().and_then(|c| aliases.get(c)) {
                        e.contact = Some(into.clone());
                    }
                    e
                })
                .collect();
            &aliased
        };
        // Resolve every contact id and address of the batch in one store call.
        let ids: Vec<String> = events.iter().filter_map(|e| e.contact.clone()).collect();
        let emails: Vec<String> = events
            .iter()
            .filter(|e| e.contact.is_none())
            .filter_map(|e| e.email.clone())
            .collect();
        let found = self.store.find_contacts(&ids, &emails).await?;
        let known: HashSet<String> = found.iter().map(|(id, _)| id.clone()).collect();
        let by_email: HashMap<String, String> = found
            .into_iter()
            .filter_map(|(id, email)| email.map(|m| (m, id)))
            .collect();
        // Contacts an event by address would create, and the events that would create them.
        let mut creatable: HashMap<String, String> = HashMap::new();
        let mut candidates: Vec<NewEvent> = Vec::new();
        let mut indexes: Vec<usize> = Vec::new();
        for e in events {
            let contact_id = match (&e.contact, &e.email) {
                (Some(id), _) => id.clone(),
                (None, Some(email)) => by_email.get(email).cloned().unwrap_or_else(|| {
                    let id = id_for_email(email);
                    creatable.entry(id.clone()).or_insert_with(|| email.clone());
                    id
                }),
                (None, None) => unreachable!("validated"),
            };
            let at = e.at.unwrap_or(now);
            let id = if e.kind == CONTACT_CREATED {
                created_id(&contact_id)
            } else {
                e.id.clone()
                    .unwrap_or_else(|| derived_event_id(&e.kind, &contact_id, &e.data, e.at, now))
            };
            candidates.push(NewEvent {
                id,
                contact: contact_id,
                kind: e.kind.clone(),
                at,
                data: e.data.clone(),
            });
            indexes.push(e.index);
        }
        let ids: Vec<String> = candidates.iter().map(|e| e.id.clone()).collect();
        let mut owners: HashMap<String, (String, String)> = self
            .store
            .event_owners(&ids)
            .await?
            .into_iter()
            .map(|(id, contact, kind)| (id, (contact, kind)))
            .collect();
        // First the conflicts, so no contact is created for a refused event.
        let mut verdicts: Vec<Option<String>> = Vec::with_capacity(candidates.len());
        for (e, ev) in candidates.iter().zip(events) {
            let owner = owners
                .entry(e.id.clone())
                .or_insert_with(|| (e.contact.clone(), e.kind.clone()));
            verdicts.push((*owner != (e.contact.clone(), e.kind.clone())).then(|| {
                format!(
                    "event id `{}` is already used by another event (another contact or type)",
                    ev.id.as_deref().unwrap_or(&e.id)
                )
            }));
        }
        let mut new_contacts: HashMap<String, Contact> = HashMap::new();
        for (e, verdict) in candidates.iter().zip(&verdicts) {
            if let (None, Some(email)) = (verdict, creatable.get(&e.contact)) {
                new_contacts
                    .entry(e.contact.clone())
                    .or_insert_with(|| Contact {
                        id: e.contact.clone(),
                        email: Some(email.clone()),
                        ..Default::default()
                    });
            }
        }
        let mut to_store: Vec<(usize, NewEvent)> = Vec::new();
        for ((e, verdict), index) in candidates.into_iter().zip(verdicts).zip(indexes) {
            let mut outcome = EventOutcome {
                index,
                id: Some(e.id.clone()),
                status: "accepted",
                contact: Some(e.contact.clone()),
                reason: None,
            };
            if let Some(reason) = verdict {
                outcome.status = "conflict";
                outcome.contact = None;
                outcome.reason = Some(reason);
            } else if !known.contains(&e.contact) && !new_contacts.contains_key(&e.contact) {
                outcome.status = "rejected";
                outcome.contact = None;
                outcome.reason = Some(format!(
                    "unknown contact `{}`: import it first, or send `email` instead of `contact` to create it",
                    e.contact
                ));
            } else {
                to_store.push((outcomes.len(), e));
            }
            outcomes.push(outcome);
        }
        if to_store.is_empty() {
            return Ok(outcomes);
        }
        // Contacts created by email get their contact.created event first.
        let mut batch: Vec<NewEvent> = Vec::new();
        let mut created: Vec<Contact> = new_contacts.into_values().collect();
        created.sort_by(|a, b| a.id.cmp(&b.id));
        for c in &created {
            // An explicit `contact.created` event of the batch is the creation itself.
            let explicit = to_store
                .iter()
                .any(|(_, e)| e.contact == c.id && e.kind == CONTACT_CREATED);
            if explicit {
                continue;
            }
            let first = to_store
                .iter()
                .find(|(_, e)| e.contact == c.id)
                .map_or(now, |(_, e)| e.at);
            batch.push(created_event(c, first, json!({})));
        }
        let offset = batch.len();
        batch.extend(to_store.iter().map(|(_, e)| e.clone()));
        let inserted = self.store.insert_events(&created, &batch).await?;
        for (k, (oi, _)) in to_store.iter().enumerate() {
            if inserted[offset + k] == Inserted::Duplicate {
                outcomes[*oi].status = "duplicate";
            }
        }
        Ok(outcomes)
    }

    /// Imports contacts: new ones are created (with a `contact.created` event), known ones
    /// (by id, else by email) are updated with the given fields.
    pub async fn import_contacts(
        &self,
        rows: &[ContactRow],
        now: Ts,
    ) -> Result<ImportSummary, EngineError> {
        let mut summary = ImportSummary::default();
        for chunk in rows.chunks(500) {
            let mut attempt = 0;
            loop {
                match self.import_chunk(chunk, now).await {
                    Ok(s) => {
                        summary.created += s.created;
                        summary.updated += s.updated;
                        summary.rejected.extend(s.rejected);
                        break;
                    }
                    Err(e) if e.is_retryable() && attempt < 3 => attempt += 1,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(summary)
    }

    async fn import_chunk(
        &self,
        rows: &[ContactRow],
        now: Ts,
    ) -> Result<ImportSummary, EngineError> {
        let mut summary = ImportSummary::default();
        let mut fresh: Vec<Contact> = Vec::new();
        let mut updates: Vec<Contact> = Vec::new();
        // When the input says a contact was created (`created_at`, or a simulated
        // `contact.created` event): only used if this import creates it.
        let mut creations: HashMap<String, Creation> = HashMap::new();
        // The rows of each updated contact, applied in its unit of work.
        let mut update_rows: Vec<(String, Vec<ContactRow>)> = Vec::new();
        for row in rows {
            let existing = match (&row.id, &row.email) {
                (Some(id), _) => self.store.contact(id).await?,
                (None, Some(email)) => self.store.contact_by_email(email).await?,
                (None, None) => None,
            };
            let id = row
                .id
                .clone()
                .or_else(|| existing.as_ref().map(|c| c.id.clone()))
                .unwrap_or_else(|| id_for_email(row.email.as_deref().unwrap_or_default()));
            if let Some(email) = &row.email {
                if let Some(other) = self.store.contact_by_email(email).await? {
                    if other.id != id {
                        summary.rejected.push(Rejected {
                            at: row.line,
                            reason: format!(
                                "email {email} already belongs to contact `{}`",
                                other.id
                            ),
                        });
                        continue;
                    }
                }
                let taken = fresh
                    .iter()
                    .chain(updates.iter())
                    .any(|c| c.id != id && c.email.as_deref() == Some(email));
                if taken {
                    summary.rejected.push(Rejected {
                        at: row.line,
                        reason: format!("email {email} appears twice in this file"),
                    });
                    continue;
                }
            }
            if let Some(created) = &row.created {
                let first = creations
                    .entry(id.clone())
                    .or_insert_with(|| created.clone());
                if created.at < first.at {
                    *first = created.clone();
                }
            }
            if let Some(c) = fresh.iter_mut().find(|c| c.id == id) {
                merge(row, c);
                continue;
            }
            if let Some(c) = updates.iter_mut().find(|c| c.id == id) {
                merge(row, c);
                if let Some((_, rows)) = update_rows.iter_mut().find(|(c, _)| *c == id) {
                    rows.push(row.clone());
                }
                continue;
            }
            match existing {
                Some(mut c) => {
                    merge(row, &mut c);
                    update_rows.push((c.id.clone(), vec![row.clone()]));
                    updates.push(c);
                    summary.updated += 1;
                }
                None => {
                    let mut c = Contact {
                        id,
                        ..Default::default()
                    };
                    merge(row, &mut c);
                    fresh.push(c);
                    summary.created += 1;
                }
            }
        }
        if !update_rows.is_empty() {
            // Segments, scoring and triggers re-evaluated in the commit of the update.
            self.update_contacts(update_rows, now).await?;
        }
        if !fresh.is_empty() {
            let events: Vec<NewEvent> = fresh
                .iter()
                .map(|c| match creations.get(&c.id) {
                    Some(k) => created_event(c, k.at, k.data.clone()),
                    None => created_event(c, now, json!({})),
                })
                .collect();
            self.store.insert_events(&fresh, &events).await?;
        }
        Ok(summary)
    }
}

/// The type of the event that records a contact's creation.
pub const CONTACT_CREATED: &str = "contact.created";

/// The id of a contact's `contact.created` event: one per contact, so an explicit
/// `contact.created` event for a contact that exists is a duplicate, and one that creates
/// the contact (by email) is the creation itself.
pub fn created_id(contact: &str) -> String {
    format!("{CONTACT_CREATED}:{contact}")
}

fn created_event(c: &Contact, at: Ts, data: serde_json::Value) -> NewEvent {
    NewEvent {
        id: created_id(&c.id),
        contact: c.id.clone(),
        kind: CONTACT_CREATED.into(),
        at,
        data,
    }
}

/// The window in which identical events without `id` and `at` count as one: the UTC
/// day (00:00 to 24:00 UTC) they were received in.
pub const DEDUPE_WINDOW: chrono::Duration = chrono::Duration::days(1);

/// The id of an event sent without one, derived from its content: type, contact, data
/// (canonical JSON: keys sorted, so `{"a":1,"b":2}` and `{"b":2,"a":1}` are one) and its
/// `at` when given; without `at`, the [`DEDUPE_WINDOW`] it was `received` in. So the same
/// payload resent (a client's retry) is a duplicate, and an event with an explicit time
/// is the same event whenever it is resent.
pub fn derived_event_id(
    kind: &str,
    contact: &str,
    data: &serde_json::Value,
    at: Option<Ts>,
    received: Ts,
) -> String {
    let when = match at {
        Some(at) => nurture_store::ts(at),
        None => {
            let window = DEDUPE_WINDOW.num_seconds();
            format!("window:{}", received.timestamp().div_euclid(window))
        }
    };
    let data = canonical_json(data);
    format!("auto-{}", digest(&[kind, contact, &when, &data]))
}

/// JSON text with object keys sorted at every level (the crate keeps insertion order).
pub fn canonical_json(v: &serde_json::Value) -> String {
    use serde_json::Value;
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    write(&m[k], out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(v, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Ts {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn derived_ids_ignore_key_order_and_the_receive_time_within_a_utc_day() {
        let a = serde_json::json!({"url": "/pricing", "n": {"x": 1, "y": [1, {"b": 2, "a": 1}]}});
        let b = serde_json::json!({"n": {"y": [1, {"a": 1, "b": 2}], "x": 1}, "url": "/pricing"});
        let morning = t("2026-03-02T00:00:01Z");
        let night = t("2026-03-02T23:59:59Z");
        let id = derived_event_id("page.visited", "c1", &a, None, morning);
        assert_eq!(id, derived_event_id("page.visited", "c1", &b, None, night));
        // The next UTC day, another contact, type or data, or an `at`: another event.
        assert_ne!(
            id,
            derived_event_id("page.visited", "c1", &a, None, t("2026-03-03T00:00:00Z"))
        );
        assert_ne!(
            id,
            derived_event_id("page.visited", "c2", &a, None, morning)
        );
        assert_ne!(id, derived_event_id("page.viewed", "c1", &a, None, morning));
        assert_ne!(
            id,
            derived_event_id("page.visited", "c1", &serde_json::json!({}), None, morning)
        );
        let at = Some(t("2026-03-01T10:00:00Z"));
        assert_eq!(
            derived_event_id("page.visited", "c1", &a, at, morning),
            derived_event_id("page.visited", "c1", &b, at, t("2026-04-01T10:00:00Z")),
            "with `at`, the receive time does not matter"
        );
    }
}
