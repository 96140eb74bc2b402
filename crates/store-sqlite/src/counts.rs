//! Report counts on SQLite ([`nurture_store::counts`]): added in the commit's transaction,
//! read by workflow, version and hour.

use async_trait::async_trait;
use sqlx::SqliteConnection;

use nurture_store::counts::{
    merged, message_row, summed, CountFilter, CountRow, CountView, Scope, Tally,
};
use nurture_store::{parse_ts, to_json, ts, QueueSummary, StoreError, Ts};
use sqlx::Row as _;

use crate::SqliteStore;

/// Adds `tallies` in the transaction of `tx`: workflow and contact counts in one
/// statement; per-message ones once per message and metric, for the workflow, version
/// and step of the message's run.
pub(crate) async fn tallies_in(
    tx: &mut SqliteConnection,
    tallies: &[Tally],
) -> Result<(), StoreError> {
    if tallies.is_empty() {
        return Ok(());
    }
    let (mut rows, messages) = summed(tallies);
    for t in messages {
        let key = match &t.scope {
            Scope::Message(key) => Some(key.clone()),
            Scope::LastEmail(contact) => last_email(tx, contact).await?,
            _ => None,
        };
        if let Some(key) = key {
            rows.extend(once(tx, &key, t).await?);
        }
    }
    add(tx, &merged(rows)).await
}

/// The key of the email most recently delivered to `contact`.
async fn last_email(
    tx: &mut SqliteConnection,
    contact: &str,
) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT key FROM outbox WHERE contact = ? AND kind = 'email' AND state = 'delivered' \
         ORDER BY due_at DESC, key DESC LIMIT 1",
    )
    .bind(contact)
    .fetch_optional(&mut *tx)
    .await?)
}

/// The row `t` adds for message `key`, unless that message's metric was counted before
/// (or the message is not a workflow's).
async fn once(
    tx: &mut SqliteConnection,
    key: &str,
    t: &Tally,
) -> Result<Option<CountRow>, StoreError> {
    let first =
        sqlx::query("INSERT INTO report_once (key, metric) VALUES (?, ?) ON CONFLICT DO NOTHING")
            .bind(key)
            .bind(&t.metric)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
    if !first {
        return Ok(None);
    }
    let of: Option<(Option<String>, Option<i64>, Option<String>)> = sqlx::query_as(
        "SELECT o.workflow, r.workflow_version, o.step FROM outbox o \
         LEFT JOIN runs r ON r.id = o.run_id WHERE o.key = ?",
    )
    .bind(key)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(match of {
        Some((Some(workflow), version, step)) => Some(message_row(t, workflow, version, step)),
        _ => None,
    })
}

/// Adds `rows` to their hours' counts.
async fn add(tx: &mut SqliteConnection, rows: &[CountRow]) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let json: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| serde_json::json!([r.workflow, r.version, r.metric, ts(r.hour), r.n]))
        .collect();
    sqlx::query(
        "INSERT INTO report_counts (workflow, version, metric, hour, n) \
         SELECT value->>0, value->>1, value->>2, value->>3, value->>4 FROM json_each(?) \
         WHERE true \
         ON CONFLICT (workflow, version, metric, hour) DO UPDATE SET n = n + excluded.n",
    )
    .bind(to_json(&json))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[async_trait]
impl CountView for SqliteStore {
    async fn counts(&self, f: &CountFilter) -> Result<Vec<CountRow>, StoreError> {
        let rows = if f.whole {
            "(SELECT workflow, version, metric, min(hour) AS hour, sum(n) AS n FROM report_counts \
             WHERE (?1 IS NULL OR workflow = ?1) AND (?2 IS NULL OR version = ?2) \
             AND (?3 IS NULL OR hour >= ?3) AND (?4 IS NULL OR hour < ?4) \
             GROUP BY workflow, version, metric)"
        } else {
            "(SELECT * FROM report_counts WHERE (?1 IS NULL OR workflow = ?1) \
             AND (?2 IS NULL OR version = ?2) AND (?3 IS NULL OR hour >= ?3) \
             AND (?4 IS NULL OR hour < ?4))"
        };
        let json: String = sqlx::query_scalar(&format!(
            "SELECT json_group_array(json_array(workflow, version, metric, hour, n)) FROM {rows}"
        ))
        .bind(&f.workflow)
        .bind(f.version.map(i64::from))
        .bind(f.since.map(ts))
        .bind(f.until.map(ts))
        .fetch_one(&self.pool)
        .await?;
        type Raw = (String, u32, String, String, i64);
        let raw: Vec<Raw> =
            serde_json::from_str(&json).map_err(|e| StoreError::document("report count", e))?;
        let mut rows = raw
            .into_iter()
            .map(|(workflow, version, metric, hour, n)| {
                Ok(CountRow {
                    workflow,
                    version,
                    metric,
                    hour: parse_ts(&hour)?,
                    n,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        rows.sort_by(|a, b| {
            (&a.workflow, a.version, &a.metric, a.hour).cmp(&(
                &b.workflow,
                b.version,
                &b.metric,
                b.hour,
            ))
        });
        Ok(rows)
    }
}

#[async_trait]
impl nurture_store::OpsView for SqliteStore {
    async fn queue_summary(&self, now: Ts) -> Result<QueueSummary, StoreError> {
        let row = sqlx::query(&nurture_store::ops::counts_sql("?1"))
            .bind(ts(now))
            .fetch_one(&self.pool)
            .await?;
        let mut outbox = std::collections::BTreeMap::new();
        for s in nurture_store::ops::OPEN_OUTBOX_STATES {
            outbox.insert(s.as_str().to_string(), row.try_get::<i64, _>(s.as_str())?);
        }
        let oldest: Option<String> = row.try_get("oldest_due")?;
        let oldest = oldest.as_deref().map(parse_ts).transpose()?;
        Ok(QueueSummary {
            queued_events: row.try_get("queued_events")?,
            due_timers: row.try_get("due_timers")?,
            oldest_due: oldest.filter(|t| *t <= now),
            outbox,
        })
    }
}
