//! [`nurture_store::PrivacyStore`] on Postgres: a contact's deliveries, and its erasure
//! in one transaction (see `nurture_store::privacy`). The contact's row is locked first,
//! so a concurrent unit of work of the contact waits, then finds it gone (its fenced
//! commit conflicts).

use async_trait::async_trait;
use nurture_store::privacy::{subject_hash, suppression_hash};
use nurture_store::{versions, Delivery, EraseError, Erased, Erasure, StoreError};
use sqlx::{Postgres, Row, Transaction};

use crate::{from_json, PostgresStore};

/// A `deliveries` row.
pub(crate) fn delivery_from_row(r: &sqlx::postgres::PgRow) -> Result<Delivery, StoreError> {
    Ok(Delivery {
        key: r.try_get("key")?,
        kind: r.try_get::<String, _>("kind")?.into(),
        contact: r.try_get("contact")?,
        at: r.try_get("at")?,
        record: from_json(r, "record")?,
    })
}

/// The anonymous visitors merged into a contact.
const VISITORS: &str = "SELECT from_id FROM contact_merges WHERE into_id = $1 ORDER BY from_id";

#[async_trait]
impl nurture_store::PrivacyStore for PostgresStore {
    async fn deliveries_of(&self, contact: &str) -> Result<Vec<Delivery>, StoreError> {
        let rows = sqlx::query(
            "SELECT key, kind, contact, at, record FROM deliveries WHERE contact = $1 ORDER BY at, key",
        )
        .bind(contact)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(delivery_from_row).collect()
    }

    async fn erase_contact(&self, e: &Erasure) -> Result<Option<Erased>, EraseError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
        let email: Option<Option<String>> =
            sqlx::query_scalar("SELECT email FROM contacts WHERE id = $1 FOR UPDATE")
                .bind(&e.contact)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::from)?;
        let Some(email) = email else {
            return Ok(None);
        };
        let open: i64 =
            sqlx::query_scalar("SELECT count(*) FROM runs WHERE contact = $1 AND status = ANY($2)")
                .bind(&e.contact)
                .bind(versions::open_statuses())
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
        sqlx::query("INSERT INTO erasures (subject, by_whom, at, removed) VALUES ($1, $2, $3, $4)")
            .bind(subject_hash(&self.salt, &e.contact))
            .bind(&e.by)
            .bind(e.at)
            .bind(sqlx::types::Json(&out))
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from)?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok(Some(out))
    }

    async fn is_erased(&self, contact: &str) -> Result<bool, StoreError> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1::bigint FROM erasures WHERE subject = $1 LIMIT 1")
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
async fn delete_rows(
    tx: &mut Transaction<'_, Postgres>,
    contact: &str,
) -> Result<Erased, StoreError> {
    let mut out = Erased::default();
    let del = |sql: &'static str| sqlx::query(sql).bind(contact.to_string());
    del("DELETE FROM inbox WHERE contact = $1")
        .execute(&mut **tx)
        .await?;
    out.events = del("DELETE FROM events WHERE contact = $1")
        .execute(&mut **tx)
        .await?
        .rows_affected();
    del("DELETE FROM timers WHERE run_id IN (SELECT id FROM runs WHERE contact = $1)")
        .execute(&mut **tx)
        .await?;
    // The runs first, in a statement of their own: retention locks a run before it
    // replaces the run's lines by a summary, so this waits for a compaction of them to
    // commit, and the next statements see its summary (the same order as retention's:
    // no deadlock).
    let runs: Vec<String> = del("DELETE FROM runs WHERE contact = $1 RETURNING id")
        .fetch_all(&mut **tx)
        .await?
        .iter()
        .map(|r| r.try_get("id"))
        .collect::<Result<_, _>>()?;
    out.runs = runs.len() as u64;
    // By the indexes: the lines of those runs, then the contact's own (a delete by
    // `contact` alone would read every partition whole).
    out.journal = sqlx::query("DELETE FROM journal WHERE run_id = ANY($1)")
        .bind(&runs)
        .execute(&mut **tx)
        .await?
        .rows_affected();
    out.journal += del("DELETE FROM journal WHERE contact = $1 AND run_id IS NULL")
        .execute(&mut **tx)
        .await?
        .rows_affected();
    out.queued_cancelled = del("WITH gone AS (DELETE FROM outbox_pending p USING outbox o \
         WHERE o.key = p.key AND o.contact = $1 RETURNING p.key) SELECT count(*) FROM gone")
    .fetch_one(&mut **tx)
    .await?
    .try_get::<i64, _>(0)? as u64;
    out.outbox = del("DELETE FROM outbox WHERE contact = $1")
        .execute(&mut **tx)
        .await?
        .rows_affected();
    out.deliveries = del("DELETE FROM deliveries WHERE contact = $1")
        .execute(&mut **tx)
        .await?
        .rows_affected();
    for sql in [
        "DELETE FROM contact_sends WHERE contact = $1",
        "DELETE FROM segment_timers WHERE contact = $1",
        "DELETE FROM segment_members WHERE contact = $1",
        "DELETE FROM contact_merges WHERE into_id = $1",
        "DELETE FROM contacts WHERE id = $1",
    ] {
        del(sql).execute(&mut **tx).await?;
    }
    Ok(out)
}

/// Replaces the plain suppression of `address` (if any) by its salted hash, and adds the
/// hash when there was none: the person is never mailed again.
async fn suppress_hashed(
    tx: &mut Transaction<'_, Postgres>,
    salt: &str,
    address: &str,
    e: &Erasure,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM suppressions WHERE address = $1")
        .bind(address.trim().to_lowercase())
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "INSERT INTO suppressions (address, reason, at) VALUES ($1, 'erased', $2) ON CONFLICT DO NOTHING",
    )
    .bind(suppression_hash(salt, address))
    .bind(e.at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
