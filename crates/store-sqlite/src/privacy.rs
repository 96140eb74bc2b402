//! [`nurture_store::PrivacyStore`] on SQLite: a contact's deliveries, and its erasure in
//! one transaction (see `nurture_store::privacy`). Deleted content is zeroed
//! (`secure_delete`, set on every connection) and the write-ahead log truncated after an
//! erasure, so the person's bytes leave the files.

use async_trait::async_trait;
use nurture_store::privacy::{subject_hash, suppression_hash};
use nurture_store::{ts, Delivery, EraseError, Erased, Erasure, StoreError};
use sqlx::Row;

use crate::{from_json, SqliteStore, WriteTx};
use nurture_store::parse_ts;

/// A `deliveries` row.
pub(crate) fn delivery_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<Delivery, StoreError> {
    Ok(Delivery {
        key: r.try_get("key")?,
        kind: r.try_get::<String, _>("kind")?.into(),
        contact: r.try_get("contact")?,
        at: parse_ts(r.try_get::<&str, _>("at")?)?,
        record: from_json(r.try_get::<&str, _>("record")?, "delivery")?,
    })
}

/// The anonymous visitors merged into a contact.
const VISITORS: &str = "SELECT from_id FROM contact_merges WHERE into_id = ? ORDER BY from_id";

#[async_trait]
impl nurture_store::PrivacyStore for SqliteStore {
    async fn deliveries_of(&self, contact: &str) -> Result<Vec<Delivery>, StoreError> {
        let rows = sqlx::query(
            "SELECT key, kind, contact, at, record FROM deliveries WHERE contact = ? ORDER BY at, key",
        )
        .bind(contact)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(delivery_from_row).collect()
    }

    async fn erase_contact(&self, e: &Erasure) -> Result<Option<Erased>, EraseError> {
        let mut tx = WriteTx::begin(&self.pool).await?;
        let email: Option<Option<String>> =
            sqlx::query_scalar("SELECT email FROM contacts WHERE id = ?")
                .bind(&e.contact)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::from)?;
        let Some(email) = email else {
            return Ok(None);
        };
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM runs WHERE contact = ? AND status IN (SELECT value FROM json_each(?))",
        )
        .bind(&e.contact)
        .bind(crate::open_statuses_json())
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::from)?;
        if open > 0 {
            return Err(EraseError::OpenRuns(e.contact.clone()));
        }
        // The anonymous visitors merged into the contact were the person too: their
        // runs (ended at the merge), journal and sends go with it.
        let visitors: Vec<String> = sqlx::query_scalar(VISITORS)
            .bind(&e.contact)
            .fetch_all(&mut *tx)
            .await
            .map_err(StoreError::from)?;
        let mut out = delete_rows(&mut tx, &e.contact).await?;
        for visitor in &visitors {
            out.add(&delete_rows(&mut tx, visitor).await?);
        }
        if let Some(address) = email {
            suppress_hashed(&mut tx, &self.salt, &address, e).await?;
            out.suppressed = true;
        }
        sqlx::query("INSERT INTO erasures (subject, by_whom, at, removed) VALUES (?, ?, ?, ?)")
            .bind(subject_hash(&self.salt, &e.contact))
            .bind(&e.by)
            .bind(ts(e.at))
            .bind(nurture_store::to_json(&out))
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from)?;
        tx.commit().await?;
        // The old pages are in the write-ahead log until a checkpoint: copy them back and
        // empty the log (a reader still open may keep some; the next checkpoint takes them).
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await
            .map_err(StoreError::from)?;
        Ok(Some(out))
    }

    async fn is_erased(&self, contact: &str) -> Result<bool, StoreError> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM erasures WHERE subject = ? LIMIT 1")
                .bind(subject_hash(&self.salt, contact))
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }

    async fn merged_visitors(&self, contact: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(VISITORS)
            .bind(contact)
            .fetch_all(&self.pool)
            .await?)
    }
}

/// Deletes the contact's rows from every table that names it; rows per kind.
async fn delete_rows(tx: &mut WriteTx, contact: &str) -> Result<Erased, StoreError> {
    let mut out = Erased::default();
    let del = |sql: &'static str| sqlx::query(sql).bind(contact.to_string());
    del("DELETE FROM inbox WHERE seq IN (SELECT seq FROM events WHERE contact = ?)")
        .execute(&mut **tx)
        .await?;
    out.events = del("DELETE FROM events WHERE contact = ?")
        .execute(&mut **tx)
        .await?
        .rows_affected();
    del("DELETE FROM timers WHERE run_id IN (SELECT id FROM runs WHERE contact = ?)")
        .execute(&mut **tx)
        .await?;
    out.runs = del("DELETE FROM runs WHERE contact = ?")
        .execute(&mut **tx)
        .await?
        .rows_affected();
    out.journal = del("DELETE FROM journal WHERE contact = ?")
        .execute(&mut **tx)
        .await?
        .rows_affected();
    out.queued_cancelled =
        del("SELECT count(*) FROM outbox WHERE contact = ? AND state = 'pending'")
            .fetch_one(&mut **tx)
            .await?
            .try_get::<i64, _>(0)? as u64;
    out.outbox = del("DELETE FROM outbox WHERE contact = ?")
        .execute(&mut **tx)
        .await?
        .rows_affected();
    out.deliveries = del("DELETE FROM deliveries WHERE contact = ?")
        .execute(&mut **tx)
        .await?
        .rows_affected();
    for sql in [
        "DELETE FROM contact_sends WHERE contact = ?",
        "DELETE FROM segment_timers WHERE contact = ?",
        "DELETE FROM segment_members WHERE contact = ?",
        "DELETE FROM contact_merges WHERE into_id = ?",
        "DELETE FROM contacts WHERE id = ?",
    ] {
        del(sql).execute(&mut **tx).await?;
    }
    Ok(out)
}

/// Replaces the plain suppression of `address` (if any) by its salted hash, and adds the
/// hash when there was none: the person is never mailed again.
async fn suppress_hashed(
    tx: &mut WriteTx,
    salt: &str,
    address: &str,
    e: &Erasure,
) -> Result<(), StoreError> {
    let plain = address.trim().to_lowercase();
    sqlx::query("DELETE FROM suppressions WHERE address = ?")
        .bind(&plain)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "INSERT INTO suppressions (address, reason, at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
    )
    .bind(suppression_hash(salt, address))
    .bind("erased")
    .bind(ts(e.at))
    .execute(&mut **tx)
    .await?;
    Ok(())
}
