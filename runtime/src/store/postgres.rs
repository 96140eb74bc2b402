//! The Postgres store, through sqlx: the same contract as SQLite, for more than one
//! machine. Tables live in the `nurture` schema; migrations are embedded and guarded by
//! sqlx's advisory lock, so any number of processes may start at once.
//!
//! Per-contact order: an event is only applied when it is the oldest queued event of its
//! contact (checked in the commit), so workers sharing the queue never apply a contact's
//! events out of order.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};

use super::*;

pub struct PostgresStore {
    pool: PgPool,
}

fn json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("serializable")
}

fn from_json<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, StoreError> {
    serde_json::from_value(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:pass@host/db`), creates the `nurture` schema
    /// and applies the migrations.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let opts = PgConnectOptions::from_str(url)?.options([("search_path", "nurture")]);
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await?;
        sqlx::query("CREATE SCHEMA IF NOT EXISTS nurture")
            .execute(&pool)
            .await
            .or_else(|e| match &e {
                // Two processes creating the schema at once: the other one won.
                sqlx::Error::Database(d) if d.code().as_deref() == Some("23505") => {
                    Ok(Default::default())
                }
                _ => Err(e),
            })?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Database(format!("migration failed: {e}")))?;
        Ok(PostgresStore { pool })
    }

    fn run_from_row(row: &sqlx::postgres::PgRow) -> Result<Run, StoreError> {
        let mut run: Run = from_json(row.try_get("doc")?)?;
        run.rev = row.try_get("rev")?;
        Ok(run)
    }

    fn event_from_row(row: &sqlx::postgres::PgRow) -> Result<StoredEvent, StoreError> {
        Ok(StoredEvent {
            seq: row.try_get("seq")?,
            id: row.try_get("id")?,
            contact: row.try_get("contact")?,
            kind: row.try_get("type")?,
            at: row.try_get("at")?,
            data: row.try_get("data")?,
        })
    }

    fn contact_from_row(row: &sqlx::postgres::PgRow) -> Result<Contact, StoreError> {
        let mut c: Contact = from_json(row.try_get("doc")?)?;
        c.version = row.try_get("version")?;
        Ok(c)
    }
}

async fn insert_contact(tx: &mut sqlx::PgConnection, c: &Contact) -> Result<(), StoreError> {
    let mut stored = c.clone();
    stored.version = 1;
    let r = sqlx::query("INSERT INTO contacts (id, email, doc, version) VALUES ($1, $2, $3, 1) ON CONFLICT DO NOTHING")
        .bind(&c.id)
        .bind(&c.email)
        .bind(json(&stored))
        .execute(&mut *tx)
        .await?;
    if r.rows_affected() != 1 {
        return Err(StoreError::Conflict(format!("contact {}", c.id)));
    }
    Ok(())
}

#[async_trait]
impl Store for PostgresStore {
    async fn contact(&self, id: &str) -> Result<Option<Contact>, StoreError> {
        let row = sqlx::query("SELECT doc, version FROM contacts WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::contact_from_row).transpose()
    }

    async fn contact_by_email(&self, email: &str) -> Result<Option<Contact>, StoreError> {
        let row = sqlx::query("SELECT doc, version FROM contacts WHERE email = $1")
            .bind(email)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::contact_from_row).transpose()
    }

    async fn contact_ids(&self) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT id FROM contacts ORDER BY id")
            .fetch_all(&self.pool)
            .await?)
    }

    async fn insert_events(
        &self,
        new_contacts: &[Contact],
        events: &[NewEvent],
    ) -> Result<Vec<Inserted>, StoreError> {
        let mut tx = self.pool.begin().await?;
        for c in new_contacts {
            let mut stored = c.clone();
            stored.version = 1;
            sqlx::query(
                "INSERT INTO contacts (id, email, doc, version) VALUES ($1, $2, $3, 1) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&c.id)
            .bind(&c.email)
            .bind(json(&stored))
            .execute(&mut *tx)
            .await?;
        }
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            let seq: Option<i64> = sqlx::query_scalar(
                "INSERT INTO events (id, contact, type, at, data) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (id) DO NOTHING RETURNING seq",
            )
            .bind(&e.id)
            .bind(&e.contact)
            .bind(&e.kind)
            .bind(e.at)
            .bind(&e.data)
            .fetch_optional(&mut *tx)
            .await?;
            match seq {
                Some(seq) => {
                    sqlx::query("INSERT INTO inbox (seq, contact, at) VALUES ($1, $2, $3)")
                        .bind(seq)
                        .bind(&e.contact)
                        .bind(e.at)
                        .execute(&mut *tx)
                        .await?;
                    out.push(Inserted::New);
                }
                None => out.push(Inserted::Duplicate),
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn pending_events(&self, limit: i64) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT e.seq, e.id, e.contact, e.type, e.at, e.data FROM inbox i \
             JOIN events e ON e.seq = i.seq ORDER BY i.at, i.seq LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::event_from_row).collect()
    }

    async fn contact_events(
        &self,
        contact: &str,
        since: Ts,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, id, contact, type, at, data FROM events \
             WHERE contact = $1 AND at >= $2 ORDER BY at, seq",
        )
        .bind(contact)
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::event_from_row).collect()
    }

    async fn run(&self, id: &str) -> Result<Option<Run>, StoreError> {
        let row = sqlx::query("SELECT doc, rev FROM runs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::run_from_row).transpose()
    }

    async fn runs_of_contact(&self, contact: &str) -> Result<Vec<Run>, StoreError> {
        let rows =
            sqlx::query("SELECT doc, rev FROM runs WHERE contact = $1 ORDER BY started_at, id")
                .bind(contact)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(Self::run_from_row).collect()
    }

    async fn list_runs(&self, f: &RunFilter) -> Result<Vec<Run>, StoreError> {
        let rows = sqlx::query(
            "SELECT doc, rev FROM runs WHERE ($1::text IS NULL OR workflow = $1) \
             AND ($2::text IS NULL OR contact = $2) AND ($3::text IS NULL OR status = $3) \
             ORDER BY started_at DESC, id LIMIT $4",
        )
        .bind(&f.workflow)
        .bind(&f.contact)
        .bind(f.status.map(RunStatus::as_str))
        .bind(if f.limit > 0 { f.limit } else { i64::MAX })
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::run_from_row).collect()
    }

    async fn journal(&self, run_id: &str) -> Result<Vec<JournalEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT run_id, contact, at, kind, data FROM journal WHERE run_id = $1 ORDER BY id",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(JournalEntry {
                    run_id: r.try_get("run_id")?,
                    contact: r.try_get("contact")?,
                    at: r.try_get("at")?,
                    kind: r.try_get("kind")?,
                    data: r.try_get("data")?,
                })
            })
            .collect()
    }

    /// Claims due timers for a lease ([`super::lease`]): their due time moves past the lease, so other
    /// workers skip them (`SKIP LOCKED` while claiming); if this worker dies, they come
    /// due again when the lease ends. The run's version still fences the commit.
    async fn due_timers(&self, now: Ts, limit: i64) -> Result<Vec<Timer>, StoreError> {
        let rows = sqlx::query(
            "WITH due AS (SELECT run_id, due_at FROM timers WHERE due_at <= $1 \
               ORDER BY due_at, run_id LIMIT $2 FOR UPDATE SKIP LOCKED) \
             UPDATE timers t SET due_at = $1 + $3 * interval '1 second' FROM due \
             WHERE t.run_id = due.run_id RETURNING due.run_id, due.due_at",
        )
        .bind(now)
        .bind(limit)
        .bind(lease().as_secs() as f64)
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<Timer> = rows
            .iter()
            .map(|r| {
                Ok(Timer {
                    run_id: r.try_get("run_id")?,
                    due_at: r.try_get("due_at")?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        out.sort_by(|a, b| (a.due_at, &a.run_id).cmp(&(b.due_at, &b.run_id)));
        Ok(out)
    }

    async fn next_timer(&self) -> Result<Option<Ts>, StoreError> {
        Ok(sqlx::query_scalar("SELECT MIN(due_at) FROM timers")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn counter(&self, name: &str) -> Result<i64, StoreError> {
        let v: Option<i64> = sqlx::query_scalar("SELECT value FROM counters WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(v.unwrap_or(0))
    }

    async fn schedule_last(&self, workflow: &str) -> Result<Option<Ts>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT last_fired FROM schedules WHERE workflow = $1")
                .bind(workflow)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn commit(&self, uow: &UnitOfWork) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for c in &uow.contacts {
            if c.version == 0 {
                insert_contact(&mut tx, c).await?;
            } else {
                let mut stored = c.clone();
                stored.version = c.version + 1;
                let r = sqlx::query(
                    "UPDATE contacts SET email = $1, doc = $2, version = version + 1 WHERE id = $3 AND version = $4",
                )
                .bind(&c.email)
                .bind(json(&stored))
                .bind(&c.id)
                .bind(c.version)
                .execute(&mut *tx)
                .await?;
                if r.rows_affected() != 1 {
                    return Err(StoreError::Conflict(format!("contact {}", c.id)));
                }
            }
        }
        for run in &uow.runs {
            let mut stored = run.clone();
            stored.rev = run.rev + 1;
            let r = if run.rev == 0 {
                sqlx::query(
                    "INSERT INTO runs (id, workflow, workflow_version, contact, status, doc, started_at, rev) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 1) ON CONFLICT (id) DO NOTHING",
                )
                .bind(&run.id)
                .bind(&run.workflow)
                .bind(run.workflow_version as i32)
                .bind(&run.contact)
                .bind(run.status.as_str())
                .bind(json(&stored))
                .bind(run.started_at)
                .execute(&mut *tx)
                .await?
            } else {
                sqlx::query("UPDATE runs SET status = $1, doc = $2, rev = rev + 1 WHERE id = $3 AND rev = $4")
                    .bind(run.status.as_str())
                    .bind(json(&stored))
                    .bind(&run.id)
                    .bind(run.rev)
                    .execute(&mut *tx)
                    .await?
            };
            if r.rows_affected() != 1 {
                return Err(StoreError::Conflict(format!("run {}", run.id)));
            }
        }
        for id in &uow.timers_clear {
            sqlx::query("DELETE FROM timers WHERE run_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        for t in &uow.timers_set {
            sqlx::query(
                "INSERT INTO timers (run_id, due_at) VALUES ($1, $2) \
                 ON CONFLICT (run_id) DO UPDATE SET due_at = excluded.due_at",
            )
            .bind(&t.run_id)
            .bind(t.due_at)
            .execute(&mut *tx)
            .await?;
        }
        for o in &uow.outbox {
            let r = sqlx::query(
                "INSERT INTO outbox (key, run_id, contact, workflow, step, kind, payload, created_at, due_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (key) DO NOTHING",
            )
            .bind(&o.key)
            .bind(&o.run_id)
            .bind(&o.contact)
            .bind(&o.workflow)
            .bind(&o.step)
            .bind(&o.kind)
            .bind(&o.payload)
            .bind(o.created_at)
            .bind(o.due_at)
            .execute(&mut *tx)
            .await?;
            if r.rows_affected() == 1 {
                sqlx::query("INSERT INTO outbox_pending (key, due_at) VALUES ($1, $2)")
                    .bind(&o.key)
                    .bind(o.due_at)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        for j in &uow.journal {
            sqlx::query(
                "INSERT INTO journal (run_id, contact, at, kind, data) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&j.run_id)
            .bind(&j.contact)
            .bind(j.at)
            .bind(&j.kind)
            .bind(&j.data)
            .execute(&mut *tx)
            .await?;
        }
        for seq in &uow.events_done {
            // Only the oldest queued event of a contact may be applied: order per contact.
            let r = sqlx::query(
                "DELETE FROM inbox i WHERE i.seq = $1 AND NOT EXISTS (\
                   SELECT 1 FROM inbox o WHERE o.contact = i.contact AND (o.at, o.seq) < (i.at, i.seq))",
            )
            .bind(seq)
            .execute(&mut *tx)
            .await?;
            if r.rows_affected() != 1 {
                return Err(StoreError::Conflict(format!("event #{seq}")));
            }
        }
        for (name, expected, new) in &uow.counters {
            let r = if *expected == 0 {
                sqlx::query(
                    "INSERT INTO counters (name, value) VALUES ($1, $2) \
                     ON CONFLICT (name) DO UPDATE SET value = $2 WHERE counters.value = 0",
                )
                .bind(name)
                .bind(new)
                .execute(&mut *tx)
                .await?
            } else {
                sqlx::query("UPDATE counters SET value = $1 WHERE name = $2 AND value = $3")
                    .bind(new)
                    .bind(name)
                    .bind(expected)
                    .execute(&mut *tx)
                    .await?
            };
            if r.rows_affected() != 1 {
                return Err(StoreError::Conflict(format!("counter {name}")));
            }
        }
        for (wf, at) in &uow.schedules {
            sqlx::query(
                "INSERT INTO schedules (workflow, last_fired) VALUES ($1, $2) \
                 ON CONFLICT (workflow) DO UPDATE SET last_fired = excluded.last_fired",
            )
            .bind(wf)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Claims due outbox entries for a lease ([`super::lease`]) (see `due_timers`): two workers never
    /// deliver the same entry at once; a crashed worker's entries come back after the lease.
    async fn pending_outbox(&self, now: Ts, limit: i64) -> Result<Vec<OutboxEntry>, StoreError> {
        let rows = sqlx::query(
            "WITH due AS (SELECT key, due_at FROM outbox_pending WHERE due_at <= $1 \
               ORDER BY due_at, key LIMIT $2 FOR UPDATE SKIP LOCKED), \
             claimed AS (UPDATE outbox_pending p SET due_at = $1 + $3 * interval '1 second' \
               FROM due WHERE p.key = due.key RETURNING p.key, due.due_at) \
             SELECT o.key, o.run_id, o.contact, o.workflow, o.step, o.kind, o.payload, \
             o.created_at, c.due_at, o.attempts FROM claimed c JOIN outbox o ON o.key = c.key \
             ORDER BY c.due_at, o.created_at, o.key",
        )
        .bind(now)
        .bind(limit)
        .bind(lease().as_secs() as f64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(OutboxEntry {
                    key: r.try_get("key")?,
                    run_id: r.try_get("run_id")?,
                    contact: r.try_get("contact")?,
                    workflow: r.try_get("workflow")?,
                    step: r.try_get("step")?,
                    kind: r.try_get("kind")?,
                    payload: r.try_get("payload")?,
                    created_at: r.try_get("created_at")?,
                    due_at: r.try_get("due_at")?,
                    attempts: r.try_get("attempts")?,
                })
            })
            .collect()
    }

    async fn next_outbox(&self) -> Result<Option<Ts>, StoreError> {
        Ok(sqlx::query_scalar("SELECT MIN(due_at) FROM outbox_pending")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn complete_outbox(
        &self,
        key: &str,
        outcome: &OutboxOutcome,
        now: Ts,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        // Claim the pending row: a second (stale) completion finds nothing to claim.
        let claimed: Option<String> =
            sqlx::query_scalar("DELETE FROM outbox_pending WHERE key = $1 RETURNING key")
                .bind(key)
                .fetch_optional(&mut *tx)
                .await?;
        if claimed.is_none() {
            let state: Option<String> =
                sqlx::query_scalar("SELECT state FROM outbox WHERE key = $1")
                    .bind(key)
                    .fetch_optional(&mut *tx)
                    .await?;
            return match state {
                Some(s) => Err(StoreError::Conflict(format!("outbox entry {key} is {s}"))),
                None => Err(StoreError::Corrupt(format!("no outbox entry {key}"))),
            };
        }
        match outcome {
            OutboxOutcome::Delivered { record } => {
                sqlx::query(
                    "INSERT INTO deliveries (key, kind, contact, at, record) \
                     SELECT key, kind, contact, $2, $3 FROM outbox WHERE key = $1",
                )
                .bind(key)
                .bind(now)
                .bind(record)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "UPDATE outbox SET state = 'delivered', attempts = attempts + 1 WHERE key = $1",
                )
                .bind(key)
                .execute(&mut *tx)
                .await?;
            }
            OutboxOutcome::Retry { reason, retry_at } => {
                sqlx::query("UPDATE outbox SET attempts = attempts + 1, last_error = $2, due_at = $3 WHERE key = $1")
                    .bind(key)
                    .bind(reason)
                    .bind(retry_at)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("INSERT INTO outbox_pending (key, due_at) VALUES ($1, $2)")
                    .bind(key)
                    .bind(retry_at)
                    .execute(&mut *tx)
                    .await?;
            }
            OutboxOutcome::Failed { reason } => {
                sqlx::query("UPDATE outbox SET state = 'failed', attempts = attempts + 1, last_error = $2 WHERE key = $1")
                    .bind(key)
                    .bind(reason)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn deliveries(&self) -> Result<Vec<Delivery>, StoreError> {
        let rows =
            sqlx::query("SELECT key, kind, contact, at, record FROM deliveries ORDER BY at, key")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok(Delivery {
                    key: r.try_get("key")?,
                    kind: r.try_get("kind")?,
                    contact: r.try_get("contact")?,
                    at: r.try_get("at")?,
                    record: r.try_get("record")?,
                })
            })
            .collect()
    }

    async fn outbox_state(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT state FROM outbox WHERE key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?,
        )
    }
}
