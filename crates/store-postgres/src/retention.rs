//! [`nurture_store::RetentionStore`] on Postgres: ended runs by id, and their journals
//! replaced by summary lines in one transaction, which notes the journal's partitions it
//! deleted from (`journal_reclaim`); [`reclaim_space`](nurture_store::RetentionStore::reclaim_space)
//! rewrites those of ended months (`partitions`): their old files are dropped whole.

use async_trait::async_trait;
use nurture_store::{retention, versions, JournalEntry, Run, StoreError, Ts};
use sqlx::Row;

use crate::{journal_in, journal_rows, partitions, PostgresStore};

#[async_trait]
impl nurture_store::RetentionStore for PostgresStore {
    async fn ended_runs(&self, after: &str, limit: i64) -> Result<Vec<Run>, StoreError> {
        let rows = sqlx::query(
            "SELECT doc, rev FROM runs WHERE id > $1 AND NOT (status = ANY($2)) \
             ORDER BY id LIMIT $3",
        )
        .bind(after)
        .bind(versions::open_statuses())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::run_from_row).collect()
    }

    async fn replace_journals(&self, summaries: &[JournalEntry]) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Locks the runs, in id order as an erasure does: a run stored as ended stays so
        // until the commit.
        let ended: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM runs WHERE id = ANY($1) AND NOT (status = ANY($2)) \
             ORDER BY id FOR SHARE",
        )
        .bind(retention::runs_of(summaries))
        .bind(versions::open_statuses())
        .fetch_all(&mut *tx)
        .await?;
        let (deleted, from): (i64, Vec<String>) =
            sqlx::query_as(&counted("DELETE FROM journal WHERE run_id = ANY($1)"))
                .bind(&ended)
                .fetch_one(&mut *tx)
                .await?;
        partitions::note(&mut tx, &from).await?;
        journal_in(&mut tx, &retention::of_ended(summaries, &ended)).await?;
        tx.commit().await?;
        Ok(deleted as u64)
    }

    async fn contacts_with_lines_before(
        &self,
        after: &str,
        before: Ts,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT contact FROM journal WHERE contact > $1 AND run_id IS NULL \
             AND at < $2 ORDER BY contact LIMIT $3",
        )
        .bind(after)
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn contact_rows_before(
        &self,
        contact: &str,
        before: Ts,
    ) -> Result<Vec<(i64, Vec<JournalEntry>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, run_id, contact, at, kind, data FROM journal \
             WHERE contact = $1 AND run_id IS NULL AND at < $2 ORDER BY id",
        )
        .bind(contact)
        .bind(before)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, journal_rows(std::slice::from_ref(r))?)))
            .collect()
    }

    async fn replace_contact_rows(
        &self,
        contact: &str,
        ids: &[i64],
        summary: &JournalEntry,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        // Erasure locks the contact's row first: holding it here orders the two.
        let stored: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM contacts WHERE id = $1 FOR SHARE")
                .bind(contact)
                .fetch_optional(&mut *tx)
                .await?;
        if stored.is_none() {
            return Ok(0);
        }
        let (deleted, from): (i64, Vec<String>) = sqlx::query_as(&counted(
            "DELETE FROM journal WHERE contact = $1 AND run_id IS NULL AND id = ANY($2)",
        ))
        .bind(contact)
        .bind(ids)
        .fetch_one(&mut *tx)
        .await?;
        if deleted > 0 {
            let row = nurture_store::pack_journal(std::slice::from_ref(summary));
            let (_, _, at, kind, data) = &row[0];
            sqlx::query(
                "INSERT INTO journal (id, run_id, contact, at, kind, data) \
                 VALUES ($1, NULL, $2, $3, $4, $5)",
            )
            .bind(ids[0])
            .bind(contact)
            .bind(*at)
            .bind(*kind)
            .bind(data)
            .execute(&mut *tx)
            .await?;
        }
        partitions::note(&mut tx, &from).await?;
        tx.commit().await?;
        Ok(deleted as u64)
    }

    /// Moves the months found in the default partition into their own, then rewrites
    /// every noted partition of an ended month. One whose locks are busy (its month still
    /// written into, a long reader) is left noted for the next call.
    async fn reclaim_space(&self) -> Result<(), StoreError> {
        let now = chrono::Utc::now();
        // Months it could not create now (a lock busy) are tried at the next heartbeat.
        partitions::ensure_months(&self.pool, now).await?;
        for month in partitions::months_in_default(&self.pool).await? {
            let moved = partitions::create_month(&self.pool, month, true).await;
            later_if_busy(moved.map(|_| ()), "journal_default")?;
        }
        for name in partitions::reclaimable(&self.pool, now).await? {
            later_if_busy(partitions::rewrite(&self.pool, &name).await, &name)?;
        }
        Ok(())
    }
}

/// `done`, except that a partition whose locks were busy is only logged: a later
/// compaction does it.
fn later_if_busy(done: Result<(), StoreError>, partition: &str) -> Result<(), StoreError> {
    match done {
        Err(e) if partitions::lost_a_lock(&e) => {
            tracing::warn!(partition, error = %e, "journal partition busy: a later compaction reclaims its space");
            Ok(())
        }
        other => other,
    }
}

/// `delete` wrapped to count the rows it deletes and name the partitions they were in.
fn counted(delete: &str) -> String {
    format!(
        "WITH d AS ({delete} RETURNING tableoid) SELECT count(*), \
         coalesce(array_agg(DISTINCT tableoid::regclass::text), '{{}}') FROM d"
    )
}
