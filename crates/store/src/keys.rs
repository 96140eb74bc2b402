//! API keys with scopes, stored hashed (table `api_keys`), and the audit log of what keys
//! did with people's data (table `audit_log`: every export and erasure).
//!
//! A key is shown once, when it is created (`nurture keys create`): `nk_` and 43
//! characters of base64url (32 random bytes). The store keeps its SHA-256 only, so a
//! copy of the database gives no key; a key is looked up by that hash at every request,
//! so a revoked key stops working at once, in every process.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{StoreError, Ts};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Scope {
    /// Send events, contacts, bounces (`POST /v1/events`, `/v1/contacts`, `/v1/segment`..).
    #[serde(rename = "events:write")]
    EventsWrite,
    /// Read contacts, their events and runs; export a person (audited).
    #[serde(rename = "contacts:read")]
    ContactsRead,
    /// Erase a person (audited).
    #[serde(rename = "contacts:erase")]
    ContactsErase,
    /// Read reports and metrics.
    #[serde(rename = "reports:read")]
    ReportsRead,
    /// Everything: operations (runs, pauses), the dashboard's operations, and all above.
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Scope; 5] = [
        Scope::EventsWrite,
        Scope::ContactsRead,
        Scope::ContactsErase,
        Scope::ReportsRead,
        Scope::Admin,
    ];

    /// Its name, as written in commands and stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::EventsWrite => "events:write",
            Scope::ContactsRead => "contacts:read",
            Scope::ContactsErase => "contacts:erase",
            Scope::ReportsRead => "reports:read",
            Scope::Admin => "admin",
        }
    }

    /// The scope named `s`.
    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// A stored key (without the key itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    /// Its id (`key_` and 12 hex digits): what `nurture keys revoke` takes.
    pub id: String,
    /// A name for people (who or what uses it).
    pub name: String,
    /// What it may do.
    pub scopes: Vec<Scope>,
    /// When it was created.
    pub created_at: Ts,
    /// When it was revoked, if it was.
    pub revoked_at: Option<Ts>,
}

impl ApiKey {
    /// Whether it may do what `needed` allows (`admin` may do everything).
    pub fn allows(&self, needed: Scope) -> bool {
        self.revoked_at.is_none()
            && self
                .scopes
                .iter()
                .any(|s| *s == needed || *s == Scope::Admin)
    }
}

/// The stored hash of a key's secret.
pub fn key_hash(secret: &str) -> String {
    crate::hex(&Sha256::digest(secret.as_bytes()))
}

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When.
    pub at: Ts,
    /// Who: the key's name and id, or the command line's user.
    pub by: String,
    /// What: `export` or `erase`.
    pub action: String,
    /// About whom: a salted hash of the contact's id (the same for an export and a later
    /// erasure of one person), never the id itself.
    pub subject: String,
    /// The client's address, when known.
    pub ip: Option<String>,
}

/// The keys and the audit log. Every [`crate::Store`] implements it.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Stores a new key with the hash of its secret.
    async fn create_key(&self, key: &ApiKey, hash: &str) -> Result<(), StoreError>;
    /// Every key, revoked ones too, oldest first.
    async fn keys(&self) -> Result<Vec<ApiKey>, StoreError>;
    /// The key whose secret hashes to `hash`, if one does (revoked ones too).
    async fn key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>, StoreError>;
    /// Revokes key `id` at `at`; whether it was a live key.
    async fn revoke_key(&self, id: &str, at: Ts) -> Result<bool, StoreError>;
    /// Appends to the audit log; `subject` is hashed with the store's salt first.
    async fn audit(
        &self,
        at: Ts,
        by: &str,
        action: &str,
        contact: &str,
        ip: Option<&str>,
    ) -> Result<(), StoreError>;
    /// The newest `limit` audit lines, oldest first.
    async fn audit_log(&self, limit: i64) -> Result<Vec<AuditEntry>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_allows_everything_and_a_revoked_key_nothing() {
        let mut k = ApiKey {
            id: "key_1".into(),
            name: "crm".into(),
            scopes: vec![Scope::EventsWrite],
            created_at: chrono::Utc::now(),
            revoked_at: None,
        };
        assert!(k.allows(Scope::EventsWrite) && !k.allows(Scope::ContactsErase));
        k.scopes = vec![Scope::Admin];
        assert!(Scope::ALL.iter().all(|s| k.allows(*s)));
        k.revoked_at = Some(chrono::Utc::now());
        assert!(!k.allows(Scope::EventsWrite));
        assert_eq!(Scope::parse("contacts:erase"), Some(Scope::ContactsErase));
    }
}
