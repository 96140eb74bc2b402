//! What a person's data protection rights need from the store (GDPR Art. 15 and 17):
//! everything about one contact, and erasing it.
//!
//! An erasure deletes the contact's rows from every table that holds personal data
//! (contacts, events and their queue, runs and timers, journal lines, the outbox — which
//! cancels its queued sends in the same transaction —, deliveries, sends counted for caps,
//! segment rows) and replaces a plain suppression of the address by a salted hash of it
//! ([`suppression_hash`]), so the person is never mailed again without the address being
//! kept. Report counts are aggregates without personal data and stay. What is left is
//! one row in `erasures`: when, by whom, and the hash of the contact's id.
//!
//! SQLite overwrites deleted content (`secure_delete`) and truncates its write-ahead log
//! after an erasure, so the bytes are gone from the files, not only from the tables.

use async_trait::async_trait;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{hex, Delivery, StoreError, Ts};

/// Who asked for an erasure, and when.
#[derive(Debug, Clone)]
pub struct Erasure {
    /// The contact's id.
    pub contact: String,
    /// Who erased it (an API key's name, `cli`).
    pub by: String,
    /// When.
    pub at: Ts,
}

/// What an erasure removed, in rows per kind.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Erased {
    /// Events (with their queue rows).
    pub events: u64,
    /// Runs (with their timers).
    pub runs: u64,
    /// Journal lines.
    pub journal: u64,
    /// Outbox entries; the ones still queued are cancelled by it.
    pub outbox: u64,
    /// Of those, queued and not yet delivered.
    pub queued_cancelled: u64,
    /// Delivery records.
    pub deliveries: u64,
    /// Whether the address now has a hashed suppression.
    pub suppressed: bool,
}

impl Erased {
    /// Adds the rows `other` removed (the anonymous visitors merged into the contact).
    pub fn add(&mut self, other: &Erased) {
        self.events += other.events;
        self.runs += other.runs;
        self.journal += other.journal;
        self.outbox += other.outbox;
        self.queued_cancelled += other.queued_cancelled;
        self.deliveries += other.deliveries;
    }
}

/// An erasure that was refused.
#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    /// A run of the contact is still open: end it first (the engine cancels them).
    #[error("contact `{0}` still has open runs; cancel them first")]
    OpenRuns(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The suppression key of an erased address: `erased:` and the hex SHA-256 of the
/// store's salt and the lower-cased address.
pub fn suppression_hash(salt: &str, address: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update([0u8]);
    h.update(address.trim().to_lowercase().as_bytes());
    format!("erased:{}", hex(&h.finalize()))
}

/// The hash of an erased contact's id kept in `erasures` (to tell a repeated request).
pub fn subject_hash(salt: &str, contact: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update([1u8]);
    h.update(contact.as_bytes());
    hex(&h.finalize())
}

/// Reads and the erasure a person's rights need. Every [`crate::Store`] implements it.
#[async_trait]
pub trait PrivacyStore: Send + Sync {
    /// Every delivery record of `contact`, oldest first.
    async fn deliveries_of(&self, contact: &str) -> Result<Vec<Delivery>, StoreError>;

    /// Erases the contact `e.contact` in one transaction (see the module doc); `None`
    /// when there is no such contact. Refused while any of its runs is open.
    async fn erase_contact(&self, e: &Erasure) -> Result<Option<Erased>, EraseError>;

    /// Whether a contact with id `contact` was erased (its tracking tokens record nothing).
    async fn is_erased(&self, contact: &str) -> Result<bool, StoreError>;

    /// The anonymous visitors merged into `contact` (their ids, sorted): the same person,
    /// exported and erased with it.
    async fn merged_visitors(&self, contact: &str) -> Result<Vec<String>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_suppression_hash_ignores_case_and_depends_on_the_salt() {
        let a = suppression_hash("s1", "Ana.Petrova@Acme.test ");
        assert_eq!(a, suppression_hash("s1", "ana.petrova@acme.test"));
        assert_ne!(a, suppression_hash("s2", "ana.petrova@acme.test"));
        assert!(a.starts_with("erased:") && !a.contains("ana"));
    }
}
