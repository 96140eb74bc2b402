//! [`nurture_store::KeyStore`] on SQLite: API keys (hashed) and the audit log.

use async_trait::async_trait;
use nurture_store::keys::{ApiKey, AuditEntry, Scope};
use nurture_store::{parse_ts, to_json, ts, StoreError, Ts};
use sqlx::Row;

use crate::{from_json, SqliteStore};

fn key_from_row(r: &sqlx::sqlite::SqliteRow) -> Result<ApiKey, StoreError> {
    let revoked: Option<String> = r.try_get("revoked_at")?;
    Ok(ApiKey {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        scopes: from_json::<Vec<Scope>>(r.try_get::<&str, _>("scopes")?, "key scopes")?,
        created_at: parse_ts(r.try_get::<&str, _>("created_at")?)?,
        revoked_at: revoked.as_deref().map(parse_ts).transpose()?,
    })
}

#[async_trait]
impl nurture_store::KeyStore for SqliteStore {
    async fn create_key(&self, key: &ApiKey, hash: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_keys (id, name, hash, scopes, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&key.id)
        .bind(&key.name)
        .bind(hash)
        .bind(to_json(&key.scopes))
        .bind(ts(key.created_at))
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
            "SELECT id, name, scopes, created_at, revoked_at FROM api_keys WHERE hash = ?",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn revoke_key(&self, id: &str, at: Ts) -> Result<bool, StoreError> {
        let r =
            sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
                .bind(ts(at))
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
            "INSERT INTO audit_log (at, by_whom, action, subject, ip) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(ts(at))
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
             ORDER BY id DESC LIMIT ?) ORDER BY id",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    at: parse_ts(r.try_get::<&str, _>("at")?)?,
                    by: r.try_get("by_whom")?,
                    action: r.try_get("action")?,
                    subject: r.try_get("subject")?,
                    ip: r.try_get("ip")?,
                })
            })
            .collect()
    }
}
