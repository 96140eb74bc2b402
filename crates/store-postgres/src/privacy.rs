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
        // Every run of the person locked at once, in id order as retention locks runs:
        // an erasure and a compaction wait for each other, never in a cycle.
        let subjects: Vec<&str> = std::iter::once(e.contact.as_str())
            .chain(visitors.iter().map(String::as_str))
            .collect();
        sqlx::query("SELECT id FROM runs WHERE contact = ANY($1) ORDER BY id FOR UPDATE")
            .bind(&subjects)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from)?;
        let mut out = delete_rows(&mut tx, &e.contact, true).await?;
        for visitor in &visitors {
            // A visitor's run left open (begun between ending its runs and the merge)
            // goes with it: only the contact's own are cancelled by the engine first.
            out.add(&delete_rows(&mut tx, visitor, false).await?);
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

/// Deletes the contact's rows from every table that names it; rows per kind. Rows other
/// writers lock first go first, each in a statement of its own, so that what such a
/// writer committed while the erasure waited for it is seen by the next statements: the
/// pending sends (a claim skipping one, or an outcome, writes a journal line, an event
/// and its inbox row after locking it), then the runs (retention locks them before it
/// writes a summary line). A run that opened meanwhile refuses the erasure.
async fn delete_rows(
    tx: &mut Transaction<'_, Postgres>,
    contact: &str,
    refuse_open: bool,
) -> Result<Erased, EraseError> {
    let queued_cancelled = delete(
        tx,
        "DELETE FROM outbox_pending p USING outbox o WHERE o.key = p.key AND o.contact = $1",
        contact,
    )
    .await?;
    let mut out = Erased {
        queued_cancelled,
        ..Erased::default()
    };
    let sends: Vec<String> =
        sqlx::query_scalar("DELETE FROM outbox WHERE contact = $1 RETURNING key")
            .bind(contact)
            .fetch_all(&mut **tx)
            .await
            .map_err(StoreError::from)?;
    out.outbox = sends.len() as u64;
    // A send requeued (its pending row deleted and written again) while the first delete
    // waited for it: that statement no longer saw the new row; this one does.
    out.queued_cancelled +=
        delete(tx, "DELETE FROM outbox_pending WHERE key = ANY($1)", &sends).await?;
    out.deliveries = delete(tx, "DELETE FROM deliveries WHERE contact = $1", contact).await?;
    delete(tx, "DELETE FROM inbox WHERE contact = $1", contact).await?;
    out.events = delete(tx, "DELETE FROM events WHERE contact = $1", contact).await?;
    let runs: Vec<(String, bool)> =
        sqlx::query_as("DELETE FROM runs WHERE contact = $1 RETURNING id, status = ANY($2)")
            .bind(contact)
            .bind(versions::open_statuses())
            .fetch_all(&mut **tx)
            .await
            .map_err(StoreError::from)?;
    if refuse_open && runs.iter().any(|r| r.1) {
        return Err(EraseError::OpenRuns(contact.to_string()));
    }
    out.runs = runs.len() as u64;
    let ids: Vec<String> = runs.into_iter().map(|r| r.0).collect();
    // By the indexes: the timers and lines of those runs, then the contact's own lines (a
    // delete by `contact` alone would read every partition whole).
    delete(tx, "DELETE FROM timers WHERE run_id = ANY($1)", &ids).await?;
    out.journal = delete(tx, "DELETE FROM journal WHERE run_id = ANY($1)", &ids).await?;
    out.journal += delete(
        tx,
        "DELETE FROM journal WHERE contact = $1 AND run_id IS NULL",
        contact,
    )
    .await?;
    for sql in [
        "DELETE FROM contact_sends WHERE contact = $1",
        "DELETE FROM segment_timers WHERE contact = $1",
        "DELETE FROM segment_members WHERE contact = $1",
        "DELETE FROM contact_merges WHERE into_id = $1",
        "DELETE FROM contacts WHERE id = $1",
    ] {
        delete(tx, sql, contact).await?;
    }
    Ok(out)
}

/// Runs the delete `sql` with `$1` = `arg` (a contact, or ids of runs or sends): the rows
/// it deleted.
async fn delete<'a, A>(
    tx: &mut Transaction<'_, Postgres>,
    sql: &'a str,
    arg: A,
) -> Result<u64, StoreError>
where
    A: 'a + Send + sqlx::Encode<'a, Postgres> + sqlx::Type<Postgres>,
{
    Ok(sqlx::query(sql)
        .bind(arg)
        .execute(&mut **tx)
        .await?
        .rows_affected())
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
