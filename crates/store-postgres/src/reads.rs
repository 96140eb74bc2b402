//! [`nurture_store::ReadView`] on Postgres: pages of contacts and of a contact's events.

use async_trait::async_trait;
use nurture_store::{Contact, StoreError, StoredEvent};

use crate::PostgresStore;

#[async_trait]
impl nurture_store::ReadView for PostgresStore {
    async fn contacts_page(
        &self,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Contact>, StoreError> {
        let rows = sqlx::query(
            "SELECT doc, version FROM contacts WHERE $1::text IS NULL OR id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(limit.clamp(0, nurture_store::reads::MAX_PAGE))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::contact_from_row).collect()
    }

    async fn contact_events_page(
        &self,
        contact: &str,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, id, contact, type, at, data FROM events \
             WHERE contact = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(contact)
        .bind(after_seq)
        .bind(limit.clamp(0, nurture_store::reads::MAX_PAGE))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::event_from_row).collect()
    }
}
