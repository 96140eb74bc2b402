//! [`nurture_store::KeyStore`] on Postgres: API keys (hashed) and the audit log.

use async_trait::async_trait;
use nurture_store::keys::{ApiKey, AuditEntry, Scope};
use nurture_store::{StoreError, Ts};
use sqlx::Row;

use crate::PostgresStore;

fn key_from_row(r: &sqlx::postgres::PgRow) -> Result<ApiKey, StoreError> {
    let scopes: String = r.try_get("scopes")?;
    Ok(ApiKey {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        scopes: serde_json::from_str::<Vec<Scope>>(&scopes)
            .map_err(|e| StoreError::Corrupt(format!("key scopes: {e}")))?,
        created_at: r.try_get("created_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

#[async_trait]
impl nurture_store::KeyStore for PostgresStore {
    async fn create_key(&self, key: &ApiKey, hash: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_keys (id, name, hash, scopes, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&key.id)
        .bind(&key.name)
        .bind(hash)
        .bind(nurture_store::to_json(&key.scopes))
        .bind(key.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, scopes, created_at, revoked_at FROM api_keys ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    async fn key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>, StoreError> {
        let row = sqlx::query(
            "SELECT id, name, scopes, created_at, revoked_at FROM api_keys WHERE hash = $1",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn revoke_key(&self, id: &str, at: Ts) -> Result<bool, StoreError> {
        let r =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(at)
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn audit(
        &self,
        at: Ts,
        by: &str,
        action: &str,
        contact: &str,
        ip: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_log (at, by_whom, action, subject, ip) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(at)
        .bind(by)
        .bind(action)
        .bind(nurture_store::privacy::subject_hash(&self.salt, contact))
        .bind(ip)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn audit_log(&self, limit: i64) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT at, by_whom, action, subject, ip FROM (SELECT * FROM audit_log \
             ORDER BY id DESC LIMIT $1) a ORDER BY id",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    at: r.try_get("at")?,
                    by: r.try_get("by_whom")?,
                    action: r.try_get("action")?,
                    subject: r.try_get("subject")?,
                    ip: r.try_get("ip")?,
                })
            })
            .collect()
    }
}
