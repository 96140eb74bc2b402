//! A person's rights (GDPR Art. 15 and 17): everything stored about a contact in one
//! document ([`export`]: `nurture contacts export`, `GET /v1/contacts/{id}/export`), and
//! its erasure ([`Engine::erase`]: `nurture contacts erase`, `DELETE /v1/contacts/{id}`).
//!
//! An export is complete, not bounded like the contact's story: every event (read in
//! pages), every run with its whole journal, every journal line about the contact, every
//! outbox entry (what was sent or queued, and what became of it) and every delivery
//! record. An erasure ends the contact's open runs first (reason `erased`, counted in
//! reports like any exit), then removes its rows in one transaction of the store
//! ([`nurture_store::privacy`]).

use serde::Serialize;
use serde_json::{json, Value};

use crate::story::{build, find_contact, Change, Membership, ScoreChange};
use crate::{Engine, EngineError};
use nurture_store::{
    Contact, Delivery, EraseError, Erased, Erasure, JournalEntry, OutboxFilter, OutboxRow, Run,
    Store, StoreError, StoredEvent, Ts,
};

/// The format of an export document (its `format` key).
pub const EXPORT_FORMAT: &str = "nurture.person-export/1";
/// Erasure attempts when a run of the contact opens between ending them and erasing.
const ERASE_TRIES: usize = 3;

/// A run with its whole journal.
#[derive(Debug, Clone, Serialize)]
pub struct RunExport {
    /// The run as stored.
    #[serde(flatten)]
    pub run: Run,
    /// Every journal line of it, in order.
    pub journal: Vec<JournalEntry>,
}

/// An anonymous visitor merged into the person: what it did before they gave an address
/// (its events became the person's at the merge and are among theirs).
#[derive(Debug, Clone, Serialize)]
pub struct VisitorExport {
    /// Its id (`anon:...`).
    pub id: String,
    /// Its runs (ended at the merge), each with its journal.
    pub runs: Vec<RunExport>,
    /// Its own journal lines (scoring rules, segments).
    pub contact_journal: Vec<JournalEntry>,
    /// What was queued for it.
    pub sends: Vec<OutboxRow>,
    /// What the channels reported.
    pub deliveries: Vec<Delivery>,
}

/// A change of consent with its proof: when, from what to what, what caused it and what
/// was recorded with it (the form, the address it came from, the link followed).
#[derive(Debug, Clone, Serialize)]
pub struct ConsentProof {
    /// When.
    pub at: Ts,
    /// The value before, when known.
    pub from: Option<Value>,
    /// The value after.
    pub to: Value,
    /// What changed it: `workflow W step S`, `import`, `form F`...
    pub cause: String,
    /// What the journal recorded with it (e.g. `ip`, `form`), when anything.
    pub proof: Value,
}

/// Everything stored about one person.
#[derive(Debug, Clone, Serialize)]
pub struct PersonExport {
    /// [`EXPORT_FORMAT`].
    pub format: &'static str,
    /// When it was made.
    pub exported_at: Ts,
    /// The profile: fields, tags, consent, score and its points per reason, segments.
    pub contact: Contact,
    /// Every change of consent, with its proof.
    pub consent_history: Vec<ConsentProof>,
    /// Every change of the score, with its reason.
    pub score_history: Vec<ScoreChange>,
    /// Lifecycle changes.
    pub lifecycle_history: Vec<Change>,
    /// The segments it is in, since when.
    pub segments: Vec<Membership>,
    /// Every event, in the order stored (opens and clicks of emails among them).
    pub events: Vec<StoredEvent>,
    /// Every run, with its journal.
    pub runs: Vec<RunExport>,
    /// Journal lines about the contact alone (scoring rules, segments, imports).
    pub contact_journal: Vec<JournalEntry>,
    /// Everything queued for it: emails, webhooks, plugin calls, notifications; with
    /// what became of each.
    pub sends: Vec<OutboxRow>,
    /// What each channel reported on delivery.
    pub deliveries: Vec<Delivery>,
    /// Emails opened and links clicked, counted from its events.
    pub engagement: Value,
    /// Whether its address is on the suppression list, and why.
    pub suppression: Option<String>,
    /// The anonymous visitors merged into it.
    pub merged_visitors: Vec<VisitorExport>,
}

/// The export of the contact `given` (an id, or an address: [`find_contact`]); `None`
/// when there is no such contact.
pub async fn export(
    store: &dyn Store,
    given: &str,
    now: Ts,
) -> Result<Option<PersonExport>, StoreError> {
    let Some(contact) = find_contact(store, given).await? else {
        return Ok(None);
    };
    let id = contact.id.clone();
    let runs = store.runs_of_contact(&id).await?;
    let mut lines = store.contact_lines(&id, i64::MAX).await?;
    let contact_journal = lines.clone();
    let run_exports = with_journals(store, runs.clone()).await?;
    lines.extend(run_exports.iter().flat_map(|r| r.journal.iter().cloned()));
    lines.sort_by_key(|j| j.at);
    let events = all_events(store, &id).await?;
    // The histories from everything read above, not the story's bounded reads again.
    let story = build(contact.clone(), runs, &lines, events.clone());
    let sends = sends_of(store, &id).await?;
    let suppression = match &contact.email {
        Some(a) => store.suppression(a).await?,
        None => None,
    };
    Ok(Some(PersonExport {
        format: EXPORT_FORMAT,
        exported_at: now,
        consent_history: consent_proofs(&lines, &run_exports),
        score_history: story.score_history,
        lifecycle_history: story.lifecycle_history,
        segments: story.segments,
        engagement: engagement(&events),
        events,
        runs: run_exports,
        contact_journal,
        sends,
        deliveries: store.deliveries_of(&id).await?,
        suppression,
        merged_visitors: visitors(store, &id).await?,
        contact,
    }))
}

/// The anonymous visitors merged into `contact`, each with what it did.
async fn visitors(store: &dyn Store, contact: &str) -> Result<Vec<VisitorExport>, StoreError> {
    let mut out = Vec::new();
    for id in store.merged_visitors(contact).await? {
        out.push(VisitorExport {
            runs: with_journals(store, store.runs_of_contact(&id).await?).await?,
            contact_journal: store.contact_lines(&id, i64::MAX).await?,
            sends: sends_of(store, &id).await?,
            deliveries: store.deliveries_of(&id).await?,
            id,
        });
    }
    Ok(out)
}

/// Each of `runs` with its whole journal.
async fn with_journals(store: &dyn Store, runs: Vec<Run>) -> Result<Vec<RunExport>, StoreError> {
    let mut out = Vec::with_capacity(runs.len());
    for run in runs {
        let journal = store.journal(&run.id).await?;
        out.push(RunExport { run, journal });
    }
    Ok(out)
}

/// Everything queued for `contact` (up to the outbox's listing bound).
async fn sends_of(store: &dyn Store, contact: &str) -> Result<Vec<OutboxRow>, StoreError> {
    store
        .list_outbox(&OutboxFilter {
            contact: Some(contact.to_string()),
            limit: nurture_store::outbox::MAX_LIST,
            ..Default::default()
        })
        .await
}

/// Every event of `contact`, page by page.
async fn all_events(store: &dyn Store, contact: &str) -> Result<Vec<StoredEvent>, StoreError> {
    let mut out: Vec<StoredEvent> = Vec::new();
    loop {
        let after = out.last().map_or(0, |e| e.seq);
        let page = store
            .contact_events_page(contact, after, nurture_store::reads::MAX_PAGE)
            .await?;
        let done = (page.len() as i64) < nurture_store::reads::MAX_PAGE;
        out.extend(page);
        if done {
            return Ok(out);
        }
    }
}

/// The consent changes among `lines`, with what was journaled beside them.
fn consent_proofs(lines: &[JournalEntry], runs: &[RunExport]) -> Vec<ConsentProof> {
    let cause = |j: &JournalEntry| match &j.run_id {
        Some(id) => runs
            .iter()
            .find(|r| &r.run.id == id)
            .map_or("a run".to_string(), |r| {
                let step = j.data["step"].as_str().unwrap_or("-");
                format!("workflow {} step {step}", r.run.workflow)
            }),
        None => j.data["source"]
            .as_str()
            .unwrap_or("the contact")
            .to_string(),
    };
    let proof = |d: &Value| {
        let mut p = d.clone();
        if let Some(o) = p.as_object_mut() {
            o.remove("from");
            o.remove("to");
        }
        p
    };
    let mut out = Vec::new();
    for j in lines {
        match j.kind.as_str() {
            "consent" => out.push(ConsentProof {
                at: j.at,
                from: j.data.get("from").cloned(),
                to: j.data["to"].clone(),
                cause: cause(j),
                proof: proof(&j.data),
            }),
            "contact_updated" => {
                if let Some(c) = j.data["changes"].get("consent") {
                    out.push(ConsentProof {
                        at: j.at,
                        from: c.get("from").cloned(),
                        to: c["to"].clone(),
                        cause: "import".into(),
                        proof: json!({}),
                    });
                }
            }
            _ => {}
        }
    }
    out
}

/// Opens and clicks per email (outbox key), from the events.
fn engagement(events: &[StoredEvent]) -> Value {
    let mut per: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    for e in events {
        let (opened, clicked) = match e.kind.as_str() {
            "email.opened" => (1, 0),
            "email.clicked" => (0, 1),
            _ => continue,
        };
        let key = e.data["key"].as_str().unwrap_or("-").to_string();
        let n = per.entry(key).or_default();
        n.0 += opened;
        n.1 += clicked;
    }
    let emails: Vec<Value> = per
        .into_iter()
        .map(|(key, (opens, clicks))| json!({"key": key, "opens": opens, "clicks": clicks}))
        .collect();
    json!({ "emails": emails })
}

/// What an erasure did.
#[derive(Debug, Clone, Serialize)]
pub struct ErasureReport {
    /// The runs that were open and ended (reason `erased`).
    pub runs_ended: usize,
    /// The rows removed, per kind.
    pub removed: Erased,
    /// The outbox keys of the erased entries (to remove their `.eml` files).
    #[serde(skip)]
    pub outbox_keys: Vec<String>,
}

impl Engine {
    /// Erases the contact `given` (an id or an address): its open runs end (reason
    /// `erased`), then every row about it goes in one store transaction; `by` is recorded
    /// (without the data). `None` when there is no such contact.
    pub async fn erase(
        &self,
        given: &str,
        by: &str,
        now: Ts,
    ) -> Result<Option<ErasureReport>, EngineError> {
        let Some(contact) = find_contact(&*self.store, given).await? else {
            return Ok(None);
        };
        let id = contact.id;
        let keys: Vec<String> = sends_of(&*self.store, &id)
            .await?
            .into_iter()
            .map(|r| r.key)
            .collect();
        let mut runs_ended = 0;
        for _ in 0..ERASE_TRIES {
            let open = self.open_runs_of(&id).await?;
            runs_ended += open;
            if open > 0 {
                self.cancel_contact(&id, by, "erased", now)
                    .await
                    .map_err(|e| EngineError::Invalid(e.to_string()))?;
            }
            let erasure = Erasure {
                contact: id.clone(),
                by: by.to_string(),
                at: now,
            };
            match self.store.erase_contact(&erasure).await {
                Ok(Some(removed)) => {
                    return Ok(Some(ErasureReport {
                        runs_ended,
                        removed,
                        outbox_keys: keys,
                    }))
                }
                Ok(None) => return Ok(None),
                // A run opened meanwhile (an event arrived): end it and try again.
                Err(EraseError::OpenRuns(_)) => continue,
                Err(EraseError::Store(e)) => return Err(e.into()),
            }
        }
        Err(EngineError::Invalid(format!(
            "contact `{id}` kept opening runs; erasure not done, try again"
        )))
    }

    async fn open_runs_of(&self, contact: &str) -> Result<usize, StoreError> {
        let runs = self.store.runs_of_contact(contact).await?;
        Ok(runs.iter().filter(|r| r.status.is_open()).count())
    }
}
