//! [`nurture_store::RetentionStore`] on Postgres: ended runs by id, and their journals
//! replaced by summary lines in one transaction. The space of the deleted rows is reused
//! by later rows after autovacuum; the files do not shrink (monthly partitions dropped by
//! retention are the later way to give it back).

use async_trait::async_trait;
use nurture_store::{retention, versions, JournalEntry, Run, StoreError};

use crate::{journal_in, PostgresStore};

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
        // Locks the runs: a run stored as ended stays so until the commit.
        let ended: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM runs WHERE id = ANY($1) AND NOT (status = ANY($2)) FOR SHARE",
        )
        .bind(retention::runs_of(summaries))
        .bind(versions::open_statuses())
        .fetch_all(&mut *tx)
        .await?;
        let deleted = sqlx::query("DELETE FROM journal WHERE run_id = ANY($1)")
            .bind(&ended)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        journal_in(&mut tx, &retention::of_ended(summaries, &ended)).await?;
        tx.commit().await?;
        Ok(deleted)
    }

    async fn reclaim_space(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
