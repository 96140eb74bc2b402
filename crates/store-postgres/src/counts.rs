//! Report counts on Postgres ([`nurture_store::counts`]): added in the commit's
//! transaction, to the connection's own shard of each count, read summed.

use async_trait::async_trait;
use sqlx::PgConnection;

use nurture_store::counts::{
    merged, message_row, summed, CountFilter, CountRow, CountView, Scope, Tally,
};
use nurture_store::{QueueSummary, StoreError, Ts};
use sqlx::Row as _;

use crate::PostgresStore;

/// Adds `tallies` in the transaction of `tx`: workflow and contact counts in one
/// statement; per-message ones once per message and metric, for the workflow, version
/// and step of the message's run.
pub(crate) async fn tallies_in(tx: &mut PgConnection, tallies: &[Tally]) -> Result<(), StoreError> {
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
async fn last_email(tx: &mut PgConnection, contact: &str) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT o.key FROM outbox o WHERE o.contact = $1 AND o.kind = 'email' \
           AND o.state = 'delivered' ORDER BY o.due_at DESC, o.key DESC LIMIT 1",
    )
    .bind(contact)
    .fetch_optional(&mut *tx)
    .await?)
}

/// The row `t` adds for message `key`, unless that message's metric was counted before
/// (or the message is not a workflow's).
async fn once(tx: &mut PgConnection, key: &str, t: &Tally) -> Result<Option<CountRow>, StoreError> {
    let first =
        sqlx::query("INSERT INTO report_once (key, metric) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(key)
            .bind(&t.metric)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            == 1;
    if !first {
        return Ok(None);
    }
    let of: Option<(Option<String>, Option<i32>, Option<String>)> = sqlx::query_as(
        "SELECT o.workflow, r.workflow_version, o.step FROM outbox o \
         LEFT JOIN runs r ON r.id = o.run_id WHERE o.key = $1",
    )
    .bind(key)
    .fetch_optional(&mut *tx)
    .await?;
    Ok(match of {
        Some((Some(workflow), version, step)) => {
            Some(message_row(t, workflow, version.map(i64::from), step))
        }
        _ => None,
    })
}

/// Adds `rows` (distinct keys, in key order) to the connection's shard of their counts.
async fn add(tx: &mut PgConnection, rows: &[CountRow]) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO report_counts AS c (workflow, version, metric, hour, shard, n) \
         SELECT w, v, m, h, (pg_backend_pid() % 64)::smallint, n \
         FROM UNNEST($1::text[], $2::int[], $3::text[], $4::timestamptz[], $5::bigint[]) \
           AS u(w, v, m, h, n) \
         ON CONFLICT (workflow, version, metric, hour, shard) DO UPDATE SET n = c.n + excluded.n",
    )
    .bind(rows.iter().map(|r| r.workflow.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.version as i32).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.metric.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.hour).collect::<Vec<Ts>>())
    .bind(rows.iter().map(|r| r.n).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[async_trait]
impl CountView for PostgresStore {
    async fn counts(&self, f: &CountFilter) -> Result<Vec<CountRow>, StoreError> {
        let (hour, by) = if f.whole {
            ("min(hour)", "")
        } else {
            ("hour", ", hour")
        };
        let rows: Vec<(String, i32, String, Ts, i64)> = sqlx::query_as(&format!(
            "SELECT workflow, version, metric, {hour}, sum(n)::bigint FROM report_counts \
             WHERE ($1::text IS NULL OR workflow = $1) AND ($2::int IS NULL OR version = $2) \
               AND ($3::timestamptz IS NULL OR hour >= $3) \
               AND ($4::timestamptz IS NULL OR hour < $4) \
             GROUP BY workflow, version, metric{by} \
             ORDER BY workflow, version, metric{by}"
        ))
        .bind(&f.workflow)
        .bind(f.version.map(|v| v as i32))
        .bind(f.since)
        .bind(f.until)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(workflow, version, metric, hour, n)| CountRow {
                workflow,
                version: version as u32,
                metric,
                hour,
                n,
            })
            .collect())
    }
}

#[async_trait]
impl nurture_store::OpsView for PostgresStore {
    async fn queue_summary(&self, now: Ts) -> Result<QueueSummary, StoreError> {
        let row = sqlx::query(&nurture_store::ops::counts_sql("$1"))
            .bind(now)
            .fetch_one(&self.pool)
            .await?;
        let mut outbox = std::collections::BTreeMap::new();
        for s in nurture_store::ops::OPEN_OUTBOX_STATES {
            outbox.insert(s.as_str().to_string(), row.try_get::<i64, _>(s.as_str())?);
        }
        let oldest: Option<Ts> = row.try_get("oldest_due")?;
        Ok(QueueSummary {
            queued_events: row.try_get("queued_events")?,
            due_timers: row.try_get("due_timers")?,
            oldest_due: oldest.filter(|t| *t <= now),
            outbox,
        })
    }
}
