//! [`nurture_store::RetentionStore`] on SQLite: ended runs by id, their journals replaced
//! by summary lines in one transaction, and `VACUUM` (or an incremental vacuum when the
//! file is in that mode) so that the file shrinks.

use async_trait::async_trait;
use nurture_store::{retention, to_json, ts, JournalEntry, Run, StoreError, Ts};
use sqlx::Row;

use crate::{journal_in, journal_rows, open_statuses_json, SqliteStore, WriteTx};

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

    async fn contacts_with_lines_before(
        &self,
        after: &str,
        before: Ts,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT contact FROM journal WHERE contact > ? AND run_id IS NULL \
             AND at < ? ORDER BY contact LIMIT ?",
        )
        .bind(after)
        .bind(ts(before))
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
             WHERE contact = ? AND run_id IS NULL AND at < ? ORDER BY id",
        )
        .bind(contact)
        .bind(ts(before))
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
        let mut tx = WriteTx::begin(&self.pool).await?;
        // As on Postgres: nothing once the contact is gone (erased meanwhile).
        let stored: Option<i64> = sqlx::query_scalar("SELECT 1 FROM contacts WHERE id = ?")
            .bind(contact)
            .fetch_optional(&mut *tx)
            .await?;
        if stored.is_none() {
            return Ok(0);
        }
        let deleted = sqlx::query(
            "DELETE FROM journal WHERE contact = ? AND run_id IS NULL \
             AND id IN (SELECT value FROM json_each(?))",
        )
        .bind(contact)
        .bind(to_json(ids))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if deleted > 0 {
            let row = nurture_store::pack_journal(std::slice::from_ref(summary));
            let (_, _, at, kind, data) = &row[0];
            sqlx::query(
                "INSERT INTO journal (id, run_id, contact, at, kind, data) VALUES (?, NULL, ?, ?, ?, ?)",
            )
            .bind(ids[0])
            .bind(contact)
            .bind(ts(*at))
            .bind(*kind)
            .bind(data)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    async fn reclaim_space(&self) -> Result<(), StoreError> {
        let mode: i64 = sqlx::query_scalar("PRAGMA auto_vacuum")
            .fetch_one(&self.pool)
            .await?;
        let free: i64 = sqlx::query_scalar("PRAGMA freelist_count")
            .fetch_one(&self.pool)
            .await?;
        let vacuum = match (mode, free) {
            (2, _) => Some("PRAGMA incremental_vacuum"),
            // No free page: a VACUUM would rewrite the whole file to give nothing back.
            (_, 0) => None,
            _ => Some("VACUUM"),
        };
        if let Some(vacuum) = vacuum {
            sqlx::query(vacuum).execute(&self.pool).await?;
        }
        // VACUUM in WAL mode writes the new file through the log: copy it back and empty
        // the log, or the space moves from the database file to the log.
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
