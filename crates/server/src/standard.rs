//! What the standard formats ([`crate::segment`], [`crate::cloudevents`]) share: their
//! events name contacts by the sender's own ids, and a contact not yet known is created
//! (nurture's own `/v1/events` refuses unknown ids instead: there, an unknown id is
//! more often a typo than a new person).

use std::collections::{BTreeMap, HashSet};

use chrono::Utc;
use serde_json::{json, Value};

use crate::problem::ApiError;
use crate::{AppState, EventItem};
use nurture_engine::input;

/// Creates the contacts that `items` name by id and the store does not hold yet (with
/// the address an event carries, if any). An event whose contact cannot be created is
/// refused with the reason.
pub(crate) async fn create_contacts(s: &AppState, items: &mut [EventItem]) -> Result<(), ApiError> {
    resolve_aliases(s, items).await?;
    let named = named_contacts(items);
    if named.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = named.keys().cloned().collect();
    let unread = |e: nurture_store::StoreError| {
        ApiError::from_engine(e.into(), "no event was stored: the contacts were not read")
    };
    let known: HashSet<String> = s
        .engine
        .store
        .find_contacts(&ids, &[])
        .await
        .map_err(unread)?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let mut rows = Vec::new();
    for (k, (id, email)) in named
        .iter()
        .filter(|(id, _)| !known.contains(*id))
        .enumerate()
    {
        let mut c = json!({"id": id});
        if let Some(e) = email {
            c["email"] = Value::from(e.clone());
        }
        // (An id that is not valid is refused with the event itself.)
        if let Ok(row) = input::parse_contact(k, &c) {
            rows.push(row);
        }
    }
    if rows.is_empty() {
        return Ok(());
    }
    let summary = s
        .engine
        .import_contacts(&rows, Utc::now())
        .await
        .map_err(|e| {
            ApiError::from_engine(e, "no event was stored: the contacts were not created")
        })?;
    for r in &summary.rejected {
        let Some(id) = rows.get(r.at).and_then(|row| row.id.clone()) else {
            continue;
        };
        refuse_events_of(items, &id, &r.reason);
    }
    Ok(())
}

/// The contact ids the events name, each with the first address given with it.
fn named_contacts(items: &[EventItem]) -> BTreeMap<String, Option<String>> {
    let mut named: BTreeMap<String, Option<String>> = BTreeMap::new();
    for item in items {
        let EventItem::Event(e) = item else { continue };
        let Some(id) = e["contact"].as_str() else {
            continue;
        };
        let email = e["email"].as_str().map(str::to_string);
        let slot = named.entry(id.to_string()).or_default();
        if slot.is_none() {
            *slot = email;
        }
    }
    named
}

/// Refuses the events of contact `id`: it could not be created.
fn refuse_events_of(items: &mut [EventItem], id: &str, reason: &str) {
    for item in items.iter_mut() {
        if matches!(item, EventItem::Event(e) if e["contact"] == id) {
            *item =
                EventItem::Refused(format!("the contact `{id}` could not be created: {reason}"));
        }
    }
}

/// Events of merged anonymous contacts name the contacts they were merged into (a merged
/// `anon:` contact is not created again).
async fn resolve_aliases(s: &AppState, items: &mut [EventItem]) -> Result<(), ApiError> {
    let ids: Vec<String> = named_contacts(items).into_keys().collect();
    let aliases =
        s.engine.aliases(&ids).await.map_err(|e| {
            ApiError::from_engine(e, "no event was stored: the contacts were not read")
        })?;
    for item in items.iter_mut() {
        let EventItem::Event(e) = item else { continue };
        if let Some(into) = e["contact"].as_str().and_then(|c| aliases.get(c)) {
            e["contact"] = Value::from(into.clone());
        }
    }
    Ok(())
}
