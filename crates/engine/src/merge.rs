//! Merging an anonymous visitor (`anon:<id>`, website tracking or Segment's
//! `anonymousId`) into the contact it turned out to be.
//!
//! The anonymous contact's open runs end (`exit`, reason `merged`); then, in one store
//! transaction ([`nurture_store::Store::merge_contact`]), its events become the contact's
//! and are queued again, so the engine applies them to the contact as to any of its
//! events: event scoring rules count, segments and profile rules are re-evaluated, goals,
//! `wait_for` and triggers see them. The anonymous contact is deleted and its id becomes
//! an alias: later events for it go to the contact ([`Engine::aliases`]). The contact's
//! journal gets a `merged` line (`{from, moved, source}`). Merging again moves nothing.

use std::collections::HashMap;

use nurture_store::{Merged, RunStatus, Ts};

use super::{Engine, EngineError, Work};

/// The prefix of anonymous contacts' ids.
pub const ANONYMOUS: &str = "anon:";

impl Engine {
    /// Merges the anonymous contact `from` (`anon:<id>`) into the existing contact `into`
    /// (not anonymous); `source` says what identified the visitor (journaled). A contact
    /// `into` that is not stored is refused (`Invalid`): nothing is merged into a contact
    /// that does not exist. An anonymous contact never seen is still recorded as merged,
    /// so its events that arrive later go to `into`.
    pub async fn merge_anonymous(
        &self,
        from: &str,
        into: &str,
        source: &str,
        now: Ts,
    ) -> Result<Merged, EngineError> {
        if !from.starts_with(ANONYMOUS) || from.len() == ANONYMOUS.len() {
            return Err(EngineError::Invalid(format!(
                "only an anonymous contact (`{ANONYMOUS}<id>`) can be merged, not `{from}`"
            )));
        }
        if into.starts_with(ANONYMOUS) || into == from {
            return Err(EngineError::Invalid(format!(
                "an anonymous contact is merged into an identified one, not `{into}`"
            )));
        }
        if self.store.contact(into).await?.is_none() {
            return Err(EngineError::Invalid(format!("no contact `{into}`")));
        }
        let merged_before = !self
            .store
            .merged_into(&[from.to_string()])
            .await?
            .is_empty();
        if !merged_before && self.store.contact(from).await?.is_some() {
            self.with_retry(from, now, |w| {
                w.end_open_runs("merged");
                Ok(())
            })
            .await?;
        }
        let Some(merged) = self.store.merge_contact(from, into, now, source).await? else {
            return Err(EngineError::Invalid(format!("no contact `{into}`")));
        };
        if merged.moved > 0 {
            tracing::info!(
                from,
                into,
                moved = merged.moved,
                source,
                "anonymous contact merged"
            );
        }
        Ok(merged)
    }

    /// The merged anonymous contacts among `ids`, each with the contact it is now.
    pub async fn aliases(&self, ids: &[String]) -> Result<HashMap<String, String>, EngineError> {
        let anonymous: Vec<String> = ids
            .iter()
            .filter(|id| id.starts_with(ANONYMOUS))
            .cloned()
            .collect();
        if anonymous.is_empty() {
            return Ok(HashMap::new());
        }
        Ok(self
            .store
            .merged_into(&anonymous)
            .await?
            .into_iter()
            .collect())
    }
}

impl Work<'_> {
    /// Ends every open run of the contact (`exit` with `reason`).
    fn end_open_runs(&mut self, reason: &str) {
        for i in 0..self.runs.len() {
            if self.runs[i].status.is_open() {
                self.end_run(i, RunStatus::Exited, reason);
            }
        }
    }
}
