//! [`nurture_store::RetentionStore`] on SQLite: ended runs by id, their journals replaced
//! by summary lines in one transaction, and `VACUUM` (or an incremental vacuum when the
//! file is in that mode) so that the file shrinks.

use async_trait::async_trait;
use nurture_store::{retention, to_json, JournalEntry, Run, StoreError};

use crate::{journal_in, open_statuses_json, SqliteStore, WriteTx};

#[async_trait]
impl nurture_store::RetentionStore for SqliteStore {
    async fn ended_runs(&self, after: &str, limit: i64) -> Result<Vec<Run>, StoreError> {
        let rows = sqlx::query(
            "SELECT doc, rev FROM runs WHERE id > ? \
             AND status NOT IN (SELECT value FROM json_each(?)) ORDER BY id LIMIT ?",
        )
        .bind(after)
        .bind(open_statuses_json())
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::run_from_row).collect()
    }

    async fn replace_journals(&self, summaries: &[JournalEntry]) -> Result<u64, StoreError> {
        let runs = to_json(&retention::runs_of(summaries));
        let mut tx = WriteTx::begin(&self.pool).await?;
        let ended: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM runs WHERE id IN (SELECT value FROM json_each(?)) \
             AND status NOT IN (SELECT value FROM json_each(?))",
        )
        .bind(&runs)
        .bind(open_statuses_json())
        .fetch_all(&mut *tx)
        .await?;
        let deleted =
            sqlx::query("DELETE FROM journal WHERE run_id IN (SELECT value FROM json_each(?))")
                .bind(to_json(&ended))
                .execute(&mut *tx)
                .await?
                .rows_affected();
        journal_in(&mut tx, &retention::of_ended(summaries, &ended)).await?;
        tx.commit().await?;
        Ok(deleted)
    }

    async fn reclaim_space(&self) -> Result<(), StoreError> {
        let mode: i64 = sqlx::query_scalar("PRAGMA auto_vacuum")
            .fetch_one(&self.pool)
            .await?;
        let vacuum = if mode == 2 {
            "PRAGMA incremental_vacuum"
        } else {
            "VACUUM"
        };
        sqlx::query(vacuum).execute(&self.pool).await?;
        // VACUUM in WAL mode writes the new file through the log: copy it back and empty
        // the log, or the space moves from the database file to the log.
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
