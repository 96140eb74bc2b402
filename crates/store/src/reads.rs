//! What API clients page through: contacts in id order, a contact's events in the order
//! they were stored. Every page is bounded by its `limit`; the next page starts after
//! the last item of this one (a cursor, not an offset: pages stay cheap however deep).

use async_trait::async_trait;

use crate::{Contact, StoreError, StoredEvent};

/// The largest page a caller may ask for.
pub const MAX_PAGE: i64 = 1000;

/// Pages of contacts and events. Every [`crate::Store`] implements it.
#[async_trait]
pub trait ReadView: Send + Sync {
    /// At most `limit` contacts whose id sorts after `after` (all when `None`), by id.
    async fn contacts_page(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Contact>, StoreError>;
    /// At most `limit` events of `contact` stored after the event numbered `after_seq`
    /// (its `seq`), in the order they were stored.
    async fn contact_events_page(
        &self,
        contact: &str,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError>;
}
