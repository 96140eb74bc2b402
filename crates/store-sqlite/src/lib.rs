//! The embedded default store: one SQLite file in the project folder, through sqlx.
//!
//! WAL mode, `synchronous = FULL` (a committed step survives power loss), migrations
//! embedded in the binary. Writers are serialised by SQLite; `busy_timeout` makes a
//! second process (e.g. `nurture events send` while `nurture run` works) wait its turn.
#![warn(missing_docs)]
#![warn(unreachable_pub)]

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, Sqlite, SqliteConnection, SqlitePool};

use nurture_store::error::Unique;
use nurture_store::*;

mod counts;
mod keys;
mod privacy;
mod reads;
mod retention;
use nurture_store::counts::{message, outcome_metric};

/// How a [`SqliteStore`] runs. The defaults are those documented on each field; the
/// binary sets [`SqliteConfig::lease`] from `NURTURE_LEASE_SECS`.
#[derive(Debug, Clone, PartialEq)]
pub struct SqliteConfig {
    /// Connections to the file (an in-memory database always has one): 4.
    pub pool: u32,
    /// How long a statement waits for another process's lock before failing busy: 30 s.
    pub busy_timeout: Duration,
    /// How long claims lease timers and outbox entries: [`DEFAULT_LEASE`] (60 s).
    pub lease: Duration,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        SqliteConfig {
            pool: 4,
            busy_timeout: Duration::from_secs(30),
            lease: DEFAULT_LEASE,
        }
    }
}

/// The [`Store`] in one SQLite file (or in memory): [`SqliteStore::open`] it.
pub struct SqliteStore {
    pool: SqlitePool,
    /// How long claims lease what they take.
    lease: Duration,
    /// What claims of outbox entries enforce ([`Store::set_send_limits`]).
    limits: std::sync::RwLock<std::sync::Arc<limits::SendLimits>>,
    /// The secret salt of erased addresses' hashes (table `privacy_salt`).
    salt: String,
}

/// Whether an error is SQLite's "database is locked" (or "busy"), by its result code:
/// another process holds a lock it did not wait for.
fn locked(error: &sqlx::Error) -> bool {
    nurture_store::error::is_busy(error)
}

/// Whether a migration failed as the loser of two processes migrating a new file at once
/// does: busy, or SQLite's generic error (`SQLITE_ERROR`, code 1: the table the other
/// process just created "already exists"), after which the retry finds it applied.
fn migration_race(error: &sqlx::migrate::MigrateError) -> bool {
    use sqlx::migrate::MigrateError;
    match error {
        MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _) => {
            locked(e)
                || e.as_database_error()
                    .and_then(|d| d.code())
                    .is_some_and(|c| c == "1")
        }
        _ => false,
    }
}

/// Runs `attempt` until it succeeds, or fails in a way `again` does not accept, or 10
/// retries (50 ms, 100 ms... apart, 2.75 s in all) have failed.
async fn retrying<T, E, F: std::future::Future<Output = Result<T, E>>>(
    mut attempt: impl FnMut() -> F,
    again: impl Fn(&E) -> bool,
) -> Result<T, E> {
    let mut retries = 0;
    loop {
        match attempt().await {
            Err(e) if retries < 10 && again(&e) => {
                retries += 1;
                tokio::time::sleep(Duration::from_millis(50 * retries)).await;
            }
            done => return done,
        }
    }
}

/// A write transaction (`BEGIN IMMEDIATE`) on a pooled connection that always leaves the
/// pool clean.
///
/// sqlx's own transaction guard counts its depth beside SQLite's: when SQLite had already
/// rolled back by itself (a full disk: `SQLITE_FULL` during a statement or the `COMMIT`),
/// the guard's `ROLLBACK` failed, the count stayed at 1, and the connection went back to
/// the pool stuck: every later transaction on it failed with "attempted to call
/// begin_with at non-zero transaction depth", for ever. This guard issues the statements
/// itself; dropped before a successful [`WriteTx::commit`] (any error path), it rolls back
/// on a task, and a connection whose `ROLLBACK` fails is closed instead of pooled (SQLite
/// rolls back whatever is left when it closes).
pub(crate) struct WriteTx {
    conn: Option<PoolConnection<Sqlite>>,
}

impl WriteTx {
    /// Begins a write transaction on a connection of `pool`.
    pub(crate) async fn begin(pool: &SqlitePool) -> Result<Self, StoreError> {
        let mut conn = pool.acquire().await?;
        match sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await {
            Ok(_) => Ok(WriteTx { conn: Some(conn) }),
            Err(e) => {
                // Not in a transaction (BEGIN failed): still, a connection that cannot
                // begin is not trusted again.
                if !locked(&e) {
                    drop(conn.detach());
                }
                Err(e.into())
            }
        }
    }

    /// Commits; on failure the guard stays armed, so dropping it rolls back (or closes).
    pub(crate) async fn commit(mut self) -> Result<(), StoreError> {
        sqlx::query("COMMIT").execute(&mut *self).await?;
        // Committed: the connection goes back to the pool as it is.
        drop(self.conn.take());
        Ok(())
    }
}

impl std::ops::Deref for WriteTx {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        self.conn.as_ref().expect("a live transaction")
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.conn.as_mut().expect("a live transaction")
    }
}

impl Drop for WriteTx {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    if let Err(e) = sqlx::query("ROLLBACK").execute(&mut *conn).await {
                        tracing::debug!(error = %e, "rollback failed; closing the connection");
                        drop(conn.detach());
                    }
                });
            }
            Err(_) => drop(conn.detach()),
        }
    }
}

/// A stored JSON document (`what` it is, for the error).
fn from_json<T: serde::de::DeserializeOwned>(s: &str, what: &'static str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::document(what, e))
}

/// A stored document with its version column (`rev` of a run, `version` of a contact).
#[derive(serde::Deserialize)]
struct Versioned<T> {
    doc: T,
    v: i64,
}

impl SqliteStore {
    /// The one row of `sql` (a `json_group_array`), bound to the ids `?1` and, with
    /// `history`, its since, types and limit (`?2`..`?4`), read as a list of `T`.
    async fn json_rows<T: serde::de::DeserializeOwned>(
        &self,
        sql: &str,
        ids: &str,
        history: Option<&HistoryRead>,
        what: &'static str,
    ) -> Result<Vec<T>, StoreError> {
        let mut q = sqlx::query_scalar::<_, String>(sql).bind(ids);
        if let Some(h) = history {
            q = q.bind(ts(h.since)).bind(h.types_json()).bind(h.limit);
        }
        from_json(&q.fetch_one(&self.pool).await?, what)
    }
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database at `url`
    /// (`sqlite://path/to/file.db` or `sqlite::memory:`), as `config` says.
    pub async fn open(url: &str, config: &SqliteConfig) -> Result<Self, StoreError> {
        if config.pool == 0 {
            return Err(ConfigError::Zero("the SQLite pool").into());
        }
        let memory = url.contains(":memory:");
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(if memory {
                SqliteJournalMode::Memory
            } else {
                SqliteJournalMode::Wal
            })
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(config.busy_timeout)
            .foreign_keys(true)
            // Deleted content is overwritten with zeros: an erased person's bytes leave
            // the file, not only the tables (`privacy`).
            .pragma("secure_delete", "ON");
        // An in-memory database lives in one connection.
        let pool_options = || {
            SqlitePoolOptions::new()
                .max_connections(if memory { 1 } else { config.pool })
                .min_connections(if memory { 1 } else { 0 })
                .idle_timeout(if memory {
                    None
                } else {
                    Some(Duration::from_secs(600))
                })
                .max_lifetime(if memory {
                    None
                } else {
                    Some(Duration::from_secs(3600))
                })
        };
        // Two processes opening a new file at once (`nurture run` and `nurture events
        // send`, started together) can meet in connecting, which sets the journal mode:
        // seen once as "database is locked" with the busy timeout unused. And both may try
        // to migrate; SQLite has no migration lock in sqlx, so the loser retries and then
        // finds the migration applied.
        let pool = retrying(|| pool_options().connect_with(opts.clone()), locked).await?;
        retrying(|| sqlx::migrate!("./migrations").run(&pool), migration_race).await?;
        let salt = sqlx::query_scalar("SELECT salt FROM privacy_salt")
            .fetch_one(&pool)
            .await?;
        Ok(SqliteStore {
            pool,
            lease: config.lease,
            limits: Default::default(),
            salt,
        })
    }

    /// The send limits claims enforce now.
    fn send_limits(&self) -> std::sync::Arc<limits::SendLimits> {
        self.limits.read().expect("limits lock").clone()
    }

    /// [`Store::pending_outbox`], with the entries the send limits deferred instead of
    /// claiming them (`nurture simulate` reports them).
    pub async fn claim_outbox(
        &self,
        now: Ts,
        limit: i64,
    ) -> Result<(Vec<OutboxEntry>, Vec<(OutboxEntry, limits::Deferral)>), StoreError> {
        let mut tx = WriteTx::begin(&self.pool).await?;
        skip_suppressed(&mut tx, now, None).await?;
        let rows = sqlx::query(
            "SELECT key, run_id, contact, workflow, step, kind, payload, created_at, due_at, \
             attempts FROM outbox WHERE state = 'pending' AND due_at <= ? \
             ORDER BY due_at, created_at, key LIMIT ?",
        )
        .bind(ts(now))
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let mut entries: Vec<OutboxEntry> = rows
            .iter()
            .map(|r| {
                Ok(OutboxEntry {
                    key: r.try_get("key")?,
                    run_id: r.try_get("run_id")?,
                    contact: r.try_get("contact")?,
                    workflow: r.try_get("workflow")?,
                    step: r.try_get("step")?,
                    kind: r.try_get::<String, _>("kind")?.into(),
                    payload: from_json::<Value>(r.try_get::<&str, _>("payload")?, "payload")?,
                    created_at: parse_ts(r.try_get::<&str, _>("created_at")?)?,
                    due_at: parse_ts(r.try_get::<&str, _>("due_at")?)?,
                    attempts: r.try_get("attempts")?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        let limits = self.send_limits();
        let deferred = if limits.is_empty() {
            Vec::new()
        } else {
            let all: Vec<&OutboxEntry> = entries.iter().collect();
            limits::enforce_sqlite(&mut tx, &limits, now, &all).await?
        };
        deferrals_in(&mut tx, entries.iter(), &deferred, now).await?;
        let mut later = Vec::with_capacity(deferred.len());
        for d in deferred {
            if let Some(i) = entries.iter().position(|e| e.key == d.key) {
                later.push((entries.remove(i), d));
            }
        }
        let until = ts(nurture_store::lease_end(now, self.lease));
        for e in &entries {
            sqlx::query("UPDATE outbox SET due_at = ? WHERE key = ?")
                .bind(&until)
                .bind(&e.key)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok((entries, later))
    }

    pub(crate) fn run_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Run, StoreError> {
        let mut run: Run = from_json(row.try_get::<&str, _>("doc")?, "run")?;
        run.rev = row.try_get("rev")?;
        Ok(run)
    }

    fn event_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<StoredEvent, StoreError> {
        Ok(StoredEvent {
            seq: row.try_get("seq")?,
            id: row.try_get("id")?,
            contact: row.try_get("contact")?,
            kind: row.try_get("type")?,
            at: parse_ts(row.try_get::<&str, _>("at")?)?,
            data: from_json(row.try_get::<&str, _>("data")?, "event")?,
        })
    }

    fn contact_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Contact, StoreError> {
        let mut c: Contact = from_json(row.try_get::<&str, _>("doc")?, "contact")?;
        c.version = row.try_get("version")?;
        Ok(c)
    }

    /// [`Store::commit`], and with `claim` (now, until) [`Store::commit_claiming`]: the keys
    /// of the outbox entries leased to the caller. One phase per table, in this order.
    async fn commit_in(
        &self,
        uow: &UnitOfWork,
        claim: Option<(Ts, Ts)>,
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = WriteTx::begin(&self.pool).await?;
        kept_in(&mut tx, &uow.contacts_kept).await?;
        contacts_in(&mut tx, &uow.contacts).await?;
        runs_in(&mut tx, &uow.runs).await?;
        timers_in(&mut tx, uow).await?;
        let mut claimed = outbox_in(&mut tx, &uow.outbox, claim).await?;
        journal_in(&mut tx, &uow.journal).await?;
        events_done_in(&mut tx, &uow.events_done).await?;
        counters_in(&mut tx, &uow.counters).await?;
        schedules_in(&mut tx, &uow.schedules).await?;
        segments_in(&mut tx, uow).await?;
        counts::tallies_in(&mut tx, &uow.tallies).await?;
        if let Some((now, _)) = claim {
            self.claimed_checks_in(&mut tx, uow, now, &mut claimed)
                .await?;
        }
        tx.commit().await?;
        Ok(claimed)
    }

    /// A claiming commit's checks of what it claimed, as at a claim: emails to suppressed
    /// addresses are skipped (after the unit's own journal, which queued them), and the
    /// send limits apply.
    async fn claimed_checks_in(
        &self,
        tx: &mut SqliteConnection,
        uow: &UnitOfWork,
        now: Ts,
        claimed: &mut Vec<String>,
    ) -> Result<(), StoreError> {
        let emails = nurture_store::claimed_emails(uow, claimed);
        if !emails.is_empty() {
            let skipped = skip_suppressed(&mut *tx, now, Some(&emails)).await?;
            claimed.retain(|k| !skipped.contains(k));
        }
        let limits = self.send_limits();
        if !limits.is_empty() && !claimed.is_empty() {
            let entries: Vec<&OutboxEntry> = uow
                .outbox
                .iter()
                .filter(|e| claimed.contains(&e.key))
                .collect();
            let deferred = limits::enforce_sqlite(&mut *tx, &limits, now, &entries).await?;
            deferrals_in(&mut *tx, entries.iter().copied(), &deferred, now).await?;
            claimed.retain(|k| !deferred.iter().any(|d| &d.key == k));
        }
        Ok(())
    }
}

/// A commit's contacts: inserts (version 0) and fenced updates; a group commit's updates
/// in two statements ([`contact_updates_in`]).
async fn contacts_in(tx: &mut SqliteConnection, contacts: &[Contact]) -> Result<(), StoreError> {
    let updates: Vec<&Contact> = contacts.iter().filter(|c| c.version > 0).collect();
    if updates.len() > 1 && contact_updates_in(&mut *tx, &updates).await? {
        for c in contacts.iter().filter(|c| c.version == 0) {
            insert_contact(&mut *tx, c).await?;
        }
        return Ok(());
    }
    for c in contacts {
        if c.version == 0 {
            insert_contact(&mut *tx, c).await?;
        } else {
            let mut stored = c.clone();
            stored.version = c.version + 1;
            let r = sqlx::query(
                "UPDATE contacts SET email = ?, doc = ?, version = version + 1 \
                 WHERE id = ? AND version = ?",
            )
            .bind(&c.email)
            .bind(to_json(&stored))
            .bind(&c.id)
            .bind(c.version)
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::unique_as(e, |_| ConflictKind::ContactEmail, &c.id))?;
            if r.rows_affected() != 1 {
                return Err(StoreError::conflict_on(ConflictKind::Contact, &c.id));
            }
        }
    }
    Ok(())
}

/// Several fenced contact updates in two statements: the first stale version found is a
/// conflict; `false` (nothing written) when the update fails otherwise (an address taken),
/// so that the row-by-row path names the contact.
async fn contact_updates_in(
    tx: &mut SqliteConnection,
    cs: &[&Contact],
) -> Result<bool, StoreError> {
    let rows: Vec<Value> = cs
        .iter()
        .map(|c| {
            let mut stored = (*c).clone();
            stored.version = c.version + 1;
            serde_json::json!([c.id, c.email, to_json(&stored), c.version])
        })
        .collect();
    let rows = to_json(&rows);
    let stale: Option<String> = sqlx::query_scalar(
        "SELECT j.value->>0 FROM json_each(?) j LEFT JOIN contacts c          ON c.id = j.value->>0 AND c.version = j.value->>3 WHERE c.id IS NULL LIMIT 1",
    )
    .bind(&rows)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(id) = stale {
        return Err(StoreError::conflict_on(ConflictKind::Contact, &id));
    }
    let r = sqlx::query(
        "UPDATE contacts SET email = j.value->>1, doc = j.value->>2, version = version + 1          FROM json_each(?) j WHERE contacts.id = j.value->>0",
    )
    .bind(&rows)
    .execute(&mut *tx)
    .await;
    Ok(r.is_ok())
}

/// The contacts a commit keeps ([`UnitOfWork::contacts_kept`]): each still stored (in
/// the write transaction: an erasure is wholly before or after it).
async fn kept_in(tx: &mut SqliteConnection, kept: &[String]) -> Result<(), StoreError> {
    if kept.is_empty() {
        return Ok(());
    }
    let gone: Option<String> = sqlx::query_scalar(
        "SELECT j.value FROM json_each(?) j LEFT JOIN contacts c ON c.id = j.value \
         WHERE c.id IS NULL LIMIT 1",
    )
    .bind(to_json(kept))
    .fetch_optional(&mut *tx)
    .await?;
    match gone {
        Some(id) => Err(StoreError::conflict_on(ConflictKind::Contact, &id)),
        None => Ok(()),
    }
}

/// A commit's runs: inserts (rev 0) and fenced updates; a group commit's in a few
/// statements ([`runs_batch_in`]).
async fn runs_in(tx: &mut SqliteConnection, runs: &[Run]) -> Result<(), StoreError> {
    if runs.len() > 1 {
        return runs_batch_in(tx, runs).await;
    }
    for run in runs {
        let mut stored = run.clone();
        stored.rev = run.rev + 1;
        let r = if run.rev == 0 {
            sqlx::query(
                "INSERT INTO runs (id, workflow, workflow_version, contact, status, doc, \
                 started_at, rev) VALUES (?, ?, ?, ?, ?, ?, ?, 1) ON CONFLICT (id) DO NOTHING",
            )
            .bind(&run.id)
            .bind(&run.workflow)
            .bind(run.workflow_version as i64)
            .bind(&run.contact)
            .bind(run.status.as_str())
            .bind(to_json(&stored))
            .bind(ts(run.started_at))
            .execute(&mut *tx)
            .await?
        } else {
            sqlx::query(
                "UPDATE runs SET status = ?, doc = ?, rev = rev + 1 WHERE id = ? AND rev = ?",
            )
            .bind(run.status.as_str())
            .bind(to_json(&stored))
            .bind(&run.id)
            .bind(run.rev)
            .execute(&mut *tx)
            .await?
        };
        if r.rows_affected() != 1 {
            return Err(StoreError::conflict_on(ConflictKind::Run, &run.id));
        }
    }
    Ok(())
}

/// Many runs: a check that names the first one whose insert or fenced update would not
/// apply (a conflict), then one statement for the inserts and one for the updates.
async fn runs_batch_in(tx: &mut SqliteConnection, runs: &[Run]) -> Result<(), StoreError> {
    let row = |r: &Run| {
        let mut stored = r.clone();
        stored.rev = r.rev + 1;
        serde_json::json!([
            r.id,
            r.rev,
            r.status.as_str(),
            to_json(&stored),
            r.workflow,
            r.workflow_version,
            r.contact,
            ts(r.started_at)
        ])
    };
    let rows = to_json(&runs.iter().map(row).collect::<Vec<_>>());
    let stale: Option<String> = sqlx::query_scalar(
        "SELECT j.value->>0 FROM json_each(?) j LEFT JOIN runs r ON r.id = j.value->>0          WHERE CASE WHEN j.value->>1 = 0 THEN r.id IS NOT NULL                     ELSE r.id IS NULL OR r.rev != j.value->>1 END LIMIT 1",
    )
    .bind(&rows)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(id) = stale {
        return Err(StoreError::conflict_on(ConflictKind::Run, &id));
    }
    sqlx::query(
        "INSERT INTO runs (id, workflow, workflow_version, contact, status, doc, started_at, rev)          SELECT value->>0, value->>4, value->>5, value->>6, value->>2, value->>3, value->>7, 1          FROM json_each(?) WHERE value->>1 = 0 ORDER BY key",
    )
    .bind(&rows)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE runs SET status = j.value->>2, doc = j.value->>3, rev = rev + 1          FROM json_each(?) j WHERE j.value->>1 != 0 AND runs.id = j.value->>0",
    )
    .bind(&rows)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A commit's timers: clears, then sets (one timer per run: a set replaces it); a group
/// commit's in two statements.
async fn timers_in(tx: &mut SqliteConnection, uow: &UnitOfWork) -> Result<(), StoreError> {
    if uow.timers_clear.len() + uow.timers_set.len() > 2 {
        return timers_batch_in(tx, uow).await;
    }
    for id in &uow.timers_clear {
        sqlx::query("DELETE FROM timers WHERE run_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    for t in &uow.timers_set {
        sqlx::query(
            "INSERT INTO timers (run_id, due_at) VALUES (?, ?) \
             ON CONFLICT (run_id) DO UPDATE SET due_at = excluded.due_at",
        )
        .bind(&t.run_id)
        .bind(ts(t.due_at))
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

async fn timers_batch_in(tx: &mut SqliteConnection, uow: &UnitOfWork) -> Result<(), StoreError> {
    if !uow.timers_clear.is_empty() {
        sqlx::query("DELETE FROM timers WHERE run_id IN (SELECT value FROM json_each(?))")
            .bind(to_json(&uow.timers_clear))
            .execute(&mut *tx)
            .await?;
    }
    if !uow.timers_set.is_empty() {
        let rows: Vec<Value> = uow
            .timers_set
            .iter()
            .map(|t| serde_json::json!([t.run_id, ts(t.due_at)]))
            .collect();
        sqlx::query(
            "INSERT INTO timers (run_id, due_at) SELECT value->>0, value->>1 FROM json_each(?)              WHERE true ORDER BY key ON CONFLICT (run_id) DO UPDATE SET due_at = excluded.due_at",
        )
        .bind(to_json(&rows))
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// A commit's outbox entries (a new key only: a repeated step adds nothing). With `claim`
/// (now, until), the entries due by `now` are leased to this worker until `until`: their
/// keys are returned.
async fn outbox_in(
    tx: &mut SqliteConnection,
    outbox: &[OutboxEntry],
    claim: Option<(Ts, Ts)>,
) -> Result<Vec<String>, StoreError> {
    let mut claimed = Vec::new();
    for o in outbox {
        let leased = claim.filter(|(now, _)| o.due_at <= *now).map(|c| c.1);
        let r = sqlx::query(
            "INSERT INTO outbox (key, run_id, contact, workflow, step, kind, payload, \
             created_at, due_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(&o.key)
        .bind(&o.run_id)
        .bind(&o.contact)
        .bind(&o.workflow)
        .bind(&o.step)
        .bind(o.kind.as_str())
        .bind(to_json(&o.payload))
        .bind(ts(o.created_at))
        .bind(ts(leased.unwrap_or(o.due_at)))
        .execute(&mut *tx)
        .await?;
        if leased.is_some() && r.rows_affected() == 1 {
            claimed.push(o.key.clone());
        }
    }
    Ok(claimed)
}

/// A commit's journal: one statement for the whole journal of the batch, in order.
pub(crate) async fn journal_in(
    tx: &mut SqliteConnection,
    journal: &[JournalEntry],
) -> Result<(), StoreError> {
    if journal.is_empty() {
        return Ok(());
    }
    let rows: Vec<Value> = pack_journal(journal)
        .into_iter()
        .map(|(run, contact, at, kind, data)| {
            serde_json::json!([run, contact, ts(at), kind, hex(&data)])
        })
        .collect();
    // The encoded data travels as hex inside the one JSON parameter and is stored as a
    // BLOB (`unhex`); rows from before the encoding hold JSON text (`encoding::decode`
    // reads both).
    sqlx::query(
        "INSERT INTO journal (run_id, contact, at, kind, data) \
         SELECT value->>0, value->>1, value->>2, value->>3, unhex(value->>4) \
         FROM json_each(?) ORDER BY key",
    )
    .bind(to_json(&rows))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A commit's applied events, off the queue (fenced: each must still be queued); a group
/// commit's in two statements.
async fn events_done_in(tx: &mut SqliteConnection, done: &[i64]) -> Result<(), StoreError> {
    if done.len() > 1 {
        let seqs = to_json(&done);
        let gone: Option<i64> = sqlx::query_scalar(
            "SELECT j.value FROM json_each(?) j LEFT JOIN inbox i ON i.seq = j.value              WHERE i.seq IS NULL LIMIT 1",
        )
        .bind(&seqs)
        .fetch_optional(&mut *tx)
        .await?;
        let r = sqlx::query("DELETE FROM inbox WHERE seq IN (SELECT value FROM json_each(?))")
            .bind(&seqs)
            .execute(&mut *tx)
            .await?;
        return match gone {
            None if r.rows_affected() == done.len() as u64 => Ok(()),
            // A seq twice in the list, or one no longer queued.
            _ => Err(StoreError::conflict_on(
                ConflictKind::QueuedEvent,
                format!("#{}", gone.unwrap_or(done[0])),
            )),
        };
    }
    for seq in done {
        let r = sqlx::query("DELETE FROM inbox WHERE seq = ?")
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() != 1 {
            return Err(StoreError::conflict_on(
                ConflictKind::QueuedEvent,
                format!("#{seq}"),
            ));
        }
    }
    Ok(())
}

/// A commit's counters: (name, expected value, new value), fenced by the expected value.
async fn counters_in(
    tx: &mut SqliteConnection,
    counters: &[(String, i64, i64)],
) -> Result<(), StoreError> {
    for (name, expected, new) in counters {
        let r = if *expected == 0 {
            sqlx::query(
                "INSERT INTO counters (name, value) VALUES (?1, ?2) \
                 ON CONFLICT (name) DO UPDATE SET value = ?2 WHERE counters.value = 0",
            )
            .bind(name)
            .bind(new)
            .execute(&mut *tx)
            .await?
        } else {
            sqlx::query("UPDATE counters SET value = ? WHERE name = ? AND value = ?")
                .bind(new)
                .bind(name)
                .bind(expected)
                .execute(&mut *tx)
                .await?
        };
        if r.rows_affected() != 1 {
            return Err(StoreError::conflict_on(ConflictKind::Counter, name));
        }
    }
    Ok(())
}

/// A commit's schedule firings: (workflow, last firing).
async fn schedules_in(
    tx: &mut SqliteConnection,
    schedules: &[(String, Ts)],
) -> Result<(), StoreError> {
    for (wf, at) in schedules {
        sqlx::query(
            "INSERT INTO schedules (workflow, last_fired) VALUES (?, ?) \
             ON CONFLICT (workflow) DO UPDATE SET last_fired = excluded.last_fired",
        )
        .bind(wf)
        .bind(ts(*at))
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// What a claim's send limits held back (`deferred` of `entries`): their report counts and
/// a journal line each naming the rule ([`nurture_store::held::deferral_lines`]).
async fn deferrals_in<'a>(
    tx: &mut SqliteConnection,
    entries: impl IntoIterator<Item = &'a OutboxEntry> + Clone,
    deferred: &[limits::Deferral],
    now: Ts,
) -> Result<(), StoreError> {
    if deferred.is_empty() {
        return Ok(());
    }
    let held = nurture_store::counts::deferrals(entries.clone(), deferred, now);
    counts::tallies_in(&mut *tx, &held).await?;
    journal_in(
        tx,
        &nurture_store::held::deferral_lines(entries, deferred, now),
    )
    .await
}

/// Turns the pending `email` entries whose address is on the suppression list into
/// `skipped`, with an `email_skipped` effect in the journal, inside the claiming
/// transaction (an unsubscribe committed before the claim always wins): those due at `now`,
/// or with `keys`, those entries (just claimed). Returns their keys.
async fn skip_suppressed(
    tx: &mut sqlx::SqliteConnection,
    now: Ts,
    keys: Option<&[&str]>,
) -> Result<Vec<String>, StoreError> {
    const SQL: &str =
        "UPDATE outbox SET state = 'skipped', last_error = 'suppressed: ' || s.reason \
         FROM suppressions s WHERE outbox.state = 'pending' AND outbox.kind = 'email' \
         AND s.address = lower(json_extract(outbox.payload, '$.to')) AND ";
    const RETURNING: &str = " RETURNING key, run_id, contact, step, \
         json_extract(payload, '$.template') AS template, last_error";
    let skipped = match keys {
        None => {
            sqlx::query(&format!("{SQL}outbox.due_at <= ?{RETURNING}"))
                .bind(ts(now))
                .fetch_all(&mut *tx)
                .await?
        }
        Some(keys) => {
            sqlx::query(&format!(
                "{SQL}outbox.key IN (SELECT value FROM json_each(?)){RETURNING}"
            ))
            .bind(to_json(&keys))
            .fetch_all(&mut *tx)
            .await?
        }
    };
    let mut out = Vec::with_capacity(skipped.len());
    for r in &skipped {
        let error: String = r.try_get("last_error")?;
        let send = nurture_store::held::SuppressedSend {
            key: r.try_get("key")?,
            run_id: r.try_get("run_id")?,
            contact: r.try_get("contact")?,
            step: r.try_get("step")?,
            template: r.try_get("template")?,
            reason: error
                .strip_prefix("suppressed: ")
                .unwrap_or(&error)
                .to_string(),
        };
        journal_in(tx, &[send.line(now)]).await?;
        counts::tallies_in(tx, &[message(&send.key, "email.skipped.suppressed", now)]).await?;
        out.push(send.key);
    }
    Ok(out)
}

/// The segment timers and memberships of a commit ([`UnitOfWork::segment_timers`],
/// [`UnitOfWork::segment_members`]).
async fn segments_in(tx: &mut sqlx::SqliteConnection, uow: &UnitOfWork) -> Result<(), StoreError> {
    for (contact, due) in &uow.segment_timers {
        let q = match due {
            Some(t) => sqlx::query(
                "INSERT INTO segment_timers (contact, due_at) VALUES (?, ?) \
                 ON CONFLICT (contact) DO UPDATE SET due_at = excluded.due_at",
            )
            .bind(contact)
            .bind(ts(*t)),
            None => sqlx::query("DELETE FROM segment_timers WHERE contact = ?").bind(contact),
        };
        q.execute(&mut *tx).await?;
    }
    for (segment, contact, member) in &uow.segment_members {
        let sql = match member {
            true => "INSERT OR IGNORE INTO segment_members (segment, contact) VALUES (?, ?)",
            false => "DELETE FROM segment_members WHERE segment = ? AND contact = ?",
        };
        sqlx::query(sql)
            .bind(segment)
            .bind(contact)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// [`insert_events_on`] for a batch, in two statements: the events (a stored id is left
/// as it is), then the queue rows of those inserted.
async fn insert_many_events(
    conn: &mut SqliteConnection,
    events: &[NewEvent],
) -> Result<Vec<Inserted>, StoreError> {
    let rows: Vec<Value> = events
        .iter()
        .map(|e| serde_json::json!([e.id, e.contact, e.kind, ts(e.at), to_json(&e.data)]))
        .collect();
    let inserted = sqlx::query(
        "INSERT INTO events (id, contact, type, at, data)          SELECT value->>0, value->>1, value->>2, value->>3, value->>4 FROM json_each(?)          WHERE true ORDER BY key ON CONFLICT (id) DO NOTHING RETURNING seq, id, at",
    )
    .bind(to_json(&rows))
    .fetch_all(&mut *conn)
    .await?;
    let mut queue = Vec::with_capacity(inserted.len());
    let mut new = std::collections::HashSet::new();
    for r in &inserted {
        let seq: i64 = r.try_get("seq")?;
        let at: String = r.try_get("at")?;
        queue.push(serde_json::json!([seq, at]));
        new.insert(r.try_get::<String, _>("id")?);
    }
    if !queue.is_empty() {
        sqlx::query("INSERT INTO inbox (seq, at) SELECT value->>0, value->>1 FROM json_each(?)")
            .bind(to_json(&queue))
            .execute(&mut *conn)
            .await?;
    }
    // The first of two events with one id is the new one.
    Ok(events
        .iter()
        .map(|e| match new.remove(&e.id) {
            true => Inserted::New,
            false => Inserted::Duplicate,
        })
        .collect())
}

/// Stores `events` (idempotent by id) and queues the new ones, on `conn` (inside a write
/// transaction).
async fn insert_events_on<'e>(
    conn: &mut SqliteConnection,
    events: impl Iterator<Item = &'e NewEvent>,
) -> Result<Vec<Inserted>, StoreError> {
    let mut out = Vec::new();
    for e in events {
        let r = sqlx::query(
            "INSERT INTO events (id, contact, type, at, data) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&e.id)
        .bind(&e.contact)
        .bind(&e.kind)
        .bind(ts(e.at))
        .bind(to_json(&e.data))
        .execute(&mut *conn)
        .await?;
        if r.rows_affected() == 1 {
            sqlx::query("INSERT INTO inbox (seq, at) VALUES (?, ?)")
                .bind(r.last_insert_rowid())
                .bind(ts(e.at))
                .execute(&mut *conn)
                .await?;
            out.push(Inserted::New);
        } else {
            out.push(Inserted::Duplicate);
        }
    }
    Ok(out)
}

/// The writes of [`Store::merge_contact`] on `conn` (inside a write transaction, the
/// merge not done before); returns how many events moved.
async fn merge_on(
    conn: &mut SqliteConnection,
    from: &str,
    into: &str,
    at: Ts,
    source: &str,
) -> Result<u64, StoreError> {
    let moved: Vec<(i64, String)> = sqlx::query_as(
        "UPDATE events SET contact = ? WHERE contact = ? AND type != 'contact.created' \
         RETURNING seq, at",
    )
    .bind(into)
    .bind(from)
    .fetch_all(&mut *conn)
    .await?;
    for (seq, at) in &moved {
        sqlx::query("INSERT INTO inbox (seq, at) VALUES (?, ?) ON CONFLICT DO NOTHING")
            .bind(seq)
            .bind(at)
            .execute(&mut *conn)
            .await?;
    }
    for table in ["segment_members", "segment_timers"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE contact = ?"))
            .bind(from)
            .execute(&mut *conn)
            .await?;
    }
    // Its `contact.created`, kept, is no longer queued: the visitor is gone, and applying
    // it would create the visitor again.
    sqlx::query("DELETE FROM inbox WHERE seq IN (SELECT seq FROM events WHERE contact = ?)")
        .bind(from)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM contacts WHERE id = ?")
        .bind(from)
        .execute(&mut *conn)
        .await?;
    let n = moved.len() as u64;
    sqlx::query(
        "INSERT INTO contact_merges (from_id, into_id, at, moved, source) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(from)
    .bind(into)
    .bind(ts(at))
    .bind(n as i64)
    .bind(source)
    .execute(&mut *conn)
    .await?;
    let data = serde_json::json!({"from": from, "moved": n, "source": source});
    sqlx::query(
        "INSERT INTO journal (run_id, contact, at, kind, data) VALUES (NULL, ?, ?, 'merged', ?)",
    )
    .bind(into)
    .bind(ts(at))
    .bind(nurture_store::encoding::encode(&to_json(&data)))
    .execute(&mut *conn)
    .await?;
    Ok(n)
}

/// Records the outcome of a delivery attempt on `conn` (inside a write transaction); a
/// `Conflict`, before any write, for an entry completed elsewhere.
async fn complete_on(
    conn: &mut SqliteConnection,
    key: &str,
    outcome: &OutboxOutcome,
    now: Ts,
) -> Result<(), StoreError> {
    let row = sqlx::query("SELECT kind, contact, state FROM outbox WHERE key = ?")
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("no outbox entry {key}")))?;
    let state: String = row.try_get("state")?;
    if state != "pending" {
        // Someone else completed it: a late (stale) completion changes nothing.
        return Err(StoreError::conflict_on(
            ConflictKind::OutboxEntry,
            format!("{key} is {state}"),
        ));
    }
    match outcome {
        OutboxOutcome::Delivered { record } => {
            sqlx::query(
                "INSERT INTO deliveries (key, kind, contact, at, record) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(key)
            .bind(row.try_get::<String, _>("kind")?)
            .bind(row.try_get::<String, _>("contact")?)
            .bind(ts(now))
            .bind(to_json(record))
            .execute(&mut *conn)
            .await?;
            sqlx::query(
                "UPDATE outbox SET state = 'delivered', attempts = attempts + 1 WHERE key = ?",
            )
            .bind(key)
            .execute(&mut *conn)
            .await?;
        }
        OutboxOutcome::Retry { reason, retry_at } => {
            sqlx::query(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, due_at = ? \
                     WHERE key = ?",
            )
            .bind(reason)
            .bind(ts(*retry_at))
            .bind(key)
            .execute(&mut *conn)
            .await?;
        }
        OutboxOutcome::Failed { reason } | OutboxOutcome::Ambiguous { reason } => {
            let state = if matches!(outcome, OutboxOutcome::Failed { .. }) {
                "failed"
            } else {
                "ambiguous"
            };
            sqlx::query(
                "UPDATE outbox SET state = ?, attempts = attempts + 1, last_error = ? \
                     WHERE key = ?",
            )
            .bind(state)
            .bind(reason)
            .bind(key)
            .execute(&mut *conn)
            .await?;
        }
        OutboxOutcome::Defer { reason, until } => {
            sqlx::query("UPDATE outbox SET last_error = ?, due_at = ? WHERE key = ?")
                .bind(reason)
                .bind(ts(*until))
                .bind(key)
                .execute(&mut *conn)
                .await?;
        }
    }
    // Not sent (sent maybe: ambiguous, still counts): no longer counted by the cap.
    if !matches!(
        outcome,
        OutboxOutcome::Delivered { .. } | OutboxOutcome::Ambiguous { .. }
    ) {
        sqlx::query("DELETE FROM contact_sends WHERE key = ?")
            .bind(key)
            .execute(&mut *conn)
            .await?;
    }
    let is_email = row.try_get::<&str, _>("kind")? == "email";
    if let Some(metric) = outcome_metric(outcome).filter(|_| is_email) {
        counts::tallies_in(conn, &[message(key, metric, now)]).await?;
    }
    Ok(())
}

async fn insert_contact(tx: &mut sqlx::SqliteConnection, c: &Contact) -> Result<(), StoreError> {
    let mut stored = c.clone();
    stored.version = 1;
    let r = sqlx::query("INSERT INTO contacts (id, email, doc, version) VALUES (?, ?, ?, 1)")
        .bind(&c.id)
        .bind(&c.email)
        .bind(to_json(&stored))
        .execute(&mut *tx)
        .await;
    match r {
        Ok(_) => Ok(()),
        // By the result code: the id (primary key) or the address (unique) is taken.
        Err(e) => Err(StoreError::unique_as(
            e,
            |key| match key {
                Unique::PrimaryKey => ConflictKind::Contact,
                Unique::Other => ConflictKind::ContactEmail,
            },
            &c.id,
        )),
    }
}

/// A row of `workflow_versions`, all columns.
fn version_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<WorkflowVersion, StoreError> {
    Ok(WorkflowVersion {
        workflow: row.try_get("workflow")?,
        version: versions::stored_version(row.try_get("version")?)?,
        hash: row.try_get("hash")?,
        source: row.try_get("source")?,
        path: row.try_get("path")?,
        deployed_at: parse_ts(row.try_get::<&str, _>("deployed_at")?)?,
        deployed_by: row.try_get("deployed_by")?,
    })
}

/// The stored statuses of open runs, as a JSON array for `json_each`.
pub(crate) fn open_statuses_json() -> String {
    to_json(&versions::open_statuses())
}

/// The columns of an [`OutboxRow`].
const OUTBOX_ROW: &str = "SELECT key, kind, contact, run_id, workflow, step, state, attempts, \
     last_error, created_at, due_at FROM outbox";

fn outbox_row(r: &sqlx::sqlite::SqliteRow) -> Result<OutboxRow, StoreError> {
    let attempts: i64 = r.try_get("attempts")?;
    let reason: Option<String> = r.try_get("last_error")?;
    let state: &str = r.try_get("state")?;
    Ok(OutboxRow {
        key: r.try_get("key")?,
        kind: r.try_get::<String, _>("kind")?.into(),
        contact: r.try_get("contact")?,
        run_id: r.try_get("run_id")?,
        workflow: r.try_get("workflow")?,
        step: r.try_get("step")?,
        state: OutboxState::of_row(state, attempts, reason.as_deref()),
        reason,
        attempts,
        created_at: parse_ts(r.try_get::<&str, _>("created_at")?)?,
        due_at: parse_ts(r.try_get::<&str, _>("due_at")?)?,
    })
}

#[async_trait]
impl OutboxView for SqliteStore {
    async fn outbox_entries(&self, keys: &[String]) -> Result<Vec<OutboxRow>, StoreError> {
        let sql =
            format!("{OUTBOX_ROW} WHERE key IN (SELECT value FROM json_each(?)) ORDER BY key");
        let rows = sqlx::query(&sql)
            .bind(to_json(keys))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(outbox_row).collect()
    }

    async fn list_outbox(&self, filter: &OutboxFilter) -> Result<Vec<OutboxRow>, StoreError> {
        let state = filter.state.map_or("1 = 1", OutboxState::sql);
        let sql = format!(
            "{OUTBOX_ROW} WHERE {state} AND (?1 IS NULL OR contact = ?1) \
             AND (?2 IS NULL OR workflow = ?2) ORDER BY created_at DESC, key LIMIT ?3"
        );
        let rows = sqlx::query(&sql)
            .bind(&filter.contact)
            .bind(&filter.workflow)
            .bind(filter.limit.clamp(0, outbox::MAX_LIST))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(outbox_row).collect()
    }
}

#[async_trait]
impl ControlStore for SqliteStore {
    async fn set_control(&self, c: &WorkflowControl) -> Result<(), StoreError> {
        controls::check_control(c)?;
        sqlx::query(
            "INSERT INTO workflow_controls (workflow, paused, by_whom, at, reason) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (workflow) DO UPDATE SET \
             paused = excluded.paused, by_whom = excluded.by_whom, at = excluded.at, \
             reason = excluded.reason",
        )
        .bind(&c.workflow)
        .bind(c.paused)
        .bind(&c.by)
        .bind(ts(c.at))
        .bind(&c.reason)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn controls(&self) -> Result<Vec<WorkflowControl>, StoreError> {
        let rows = sqlx::query(
            "SELECT workflow, paused, by_whom, at, reason FROM workflow_controls ORDER BY workflow",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(WorkflowControl {
                    workflow: r.try_get("workflow")?,
                    paused: r.try_get("paused")?,
                    by: r.try_get("by_whom")?,
                    at: parse_ts(r.try_get::<&str, _>("at")?)?,
                    reason: r.try_get("reason")?,
                })
            })
            .collect()
    }
}

/// Deploys are serialised by SQLite's write lock, taken before anything is read
/// (`BEGIN IMMEDIATE`, [`WriteTx`]): a second deploy reads the versions the first stored.
#[async_trait]
impl VersionStore for SqliteStore {
    async fn deploy(
        &self,
        versions: &[WorkflowVersion],
        expected: &[Expected],
    ) -> Result<(), StoreError> {
        versions::check_sizes(versions)?;
        let mut tx = WriteTx::begin(&self.pool).await?;
        for e in expected {
            let latest: Option<i64> =
                sqlx::query_scalar("SELECT MAX(version) FROM workflow_versions WHERE workflow = ?")
                    .bind(&e.workflow)
                    .fetch_one(&mut *tx)
                    .await?;
            if latest.map(versions::stored_version).transpose()? != e.version {
                return Err(versions::version_conflict(&e.workflow));
            }
        }
        for v in versions {
            let stored: Option<String> = sqlx::query_scalar(
                "SELECT hash FROM workflow_versions WHERE workflow = ? AND version = ?",
            )
            .bind(&v.workflow)
            .bind(i64::from(v.version))
            .fetch_optional(&mut *tx)
            .await?;
            match stored {
                Some(h) if h == v.hash => continue,
                Some(_) => return Err(versions::version_conflict(&v.workflow)),
                None => {}
            }
            sqlx::query(
                "INSERT INTO workflow_versions (workflow, version, hash, source, path, \
                 deployed_at, deployed_by) VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&v.workflow)
            .bind(i64::from(v.version))
            .bind(&v.hash)
            .bind(&v.source)
            .bind(&v.path)
            .bind(ts(v.deployed_at))
            .bind(&v.deployed_by)
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                StoreError::unique_as(e, |_| ConflictKind::WorkflowVersion, &v.workflow)
            })?;
        }
        tx.commit().await
    }

    async fn latest_versions(&self) -> Result<Vec<LatestVersion>, StoreError> {
        let rows = sqlx::query(
            "SELECT workflow, MAX(version) AS version, hash FROM workflow_versions \
             GROUP BY workflow ORDER BY workflow",
        )
        .fetch_all(&self.pool)
        .await?;
        // (SQLite takes the bare `hash` from the row holding the MAX.)
        rows.iter()
            .map(|r| {
                Ok(LatestVersion {
                    workflow: r.try_get("workflow")?,
                    version: versions::stored_version(r.try_get("version")?)?,
                    hash: r.try_get("hash")?,
                })
            })
            .collect()
    }

    async fn workflow_version(
        &self,
        workflow: &str,
        version: u32,
    ) -> Result<Option<WorkflowVersion>, StoreError> {
        let row = sqlx::query(
            "SELECT workflow, version, hash, source, path, deployed_at, deployed_by \
             FROM workflow_versions WHERE workflow = ? AND version = ?",
        )
        .bind(workflow)
        .bind(i64::from(version))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(version_from_row).transpose()
    }

    async fn workflow_versions(
        &self,
        workflow: Option<&str>,
    ) -> Result<Vec<WorkflowVersion>, StoreError> {
        let rows = sqlx::query(
            "SELECT workflow, version, hash, source, path, deployed_at, deployed_by \
             FROM workflow_versions WHERE ?1 IS NULL OR workflow = ?1 ORDER BY workflow, version",
        )
        .bind(workflow)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(version_from_row).collect()
    }

    /// Through `runs_workflow` (the runs of the workflow), filtered by status.
    async fn open_runs(&self, workflow: &str) -> Result<Vec<OpenRunCount>, StoreError> {
        let rows = sqlx::query(
            "SELECT workflow_version, json_extract(doc, '$.step') AS step, count(*) AS n \
             FROM runs WHERE workflow = ? AND status IN (SELECT value FROM json_each(?)) \
             GROUP BY 1, 2 ORDER BY 1, 2",
        )
        .bind(workflow)
        .bind(open_statuses_json())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(OpenRunCount {
                    version: versions::stored_version(r.try_get("workflow_version")?)?,
                    step: r.try_get("step")?,
                    runs: r.try_get("n")?,
                })
            })
            .collect()
    }

    async fn open_runs_below(
        &self,
        workflow: &str,
        below: u32,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<OpenRunRef>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, contact FROM runs WHERE workflow = ? AND workflow_version < ? \
             AND status IN (SELECT value FROM json_each(?)) AND id > ? ORDER BY id LIMIT ?",
        )
        .bind(workflow)
        .bind(i64::from(below))
        .bind(open_statuses_json())
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(OpenRunRef {
                    run: r.try_get("id")?,
                    contact: r.try_get("contact")?,
                })
            })
            .collect()
    }
}

#[async_trait]
impl Store for SqliteStore {
    /// A batch in three queries: the ids travel as one JSON array (`json_each`), and each
    /// query answers one row (its rows as a JSON array): a row crosses from SQLite's
    /// thread to the caller's one hand-off at a time, and a batch has hundreds.
    async fn load_units(
        &self,
        contacts: &[String],
        history: Option<&HistoryRead>,
    ) -> Result<Vec<UnitData>, StoreError> {
        use std::collections::HashMap;
        let ids = to_json(&contacts);
        let mut by: HashMap<&str, UnitData> = contacts
            .iter()
            .map(|c| (c.as_str(), UnitData::default()))
            .collect();
        let found: Vec<Versioned<Contact>> = self
            .json_rows(
                "SELECT json_group_array(json_object('doc', json(doc), 'v', version)) \
                 FROM contacts WHERE id IN (SELECT value FROM json_each(?1))",
                &ids,
                None,
                "contact",
            )
            .await?;
        for Versioned { mut doc, v } in found {
            doc.version = v;
            if let Some(u) = by.get_mut(doc.id.as_str()) {
                u.contact = Some(doc);
            }
        }
        let mut runs: Vec<Versioned<Run>> = self
            .json_rows(
                // Per workflow one run (see `UnitData::runs`): the open one first, then
                // the latest. For runs the engine stamps those are the same run; ranking
                // the open one first also covers a database an older build wrote.
                "SELECT json_group_array(json_object('doc', json(doc), 'v', rev)) FROM (\
                   SELECT doc, rev, row_number() OVER (PARTITION BY contact, workflow \
                     ORDER BY status IN ('active', 'waiting') DESC, started_at DESC, \
                     id DESC) AS n \
                   FROM runs WHERE contact IN (SELECT value FROM json_each(?1))) \
                 WHERE n = 1",
                &ids,
                None,
                "run",
            )
            .await?;
        runs.sort_by(|a, b| (a.doc.started_at, &a.doc.id).cmp(&(b.doc.started_at, &b.doc.id)));
        for Versioned { mut doc, v } in runs {
            doc.rev = v;
            if let Some(u) = by.get_mut(doc.contact.as_str()) {
                u.runs.push(doc);
            }
        }
        let Some(h) = history else {
            return Ok(nurture_store::in_order(contacts, by));
        };
        // Per contact, the most recent `limit` events of the types asked for.
        let mut events: Vec<StoredEvent> = self
            .json_rows(
                "SELECT json_group_array(json_object('seq', seq, 'id', id, 'contact', \
                   contact, 'type', type, 'at', at, 'data', json(data))) FROM (\
                   SELECT *, row_number() OVER (PARTITION BY contact \
                     ORDER BY at DESC, seq DESC) AS n FROM events \
                   WHERE contact IN (SELECT value FROM json_each(?1)) AND at >= ?2 \
                     AND (?3 IS NULL OR type IN (SELECT value FROM json_each(?3)))) \
                 WHERE n <= ?4",
                &ids,
                Some(h),
                "event",
            )
            .await?;
        events.sort_by_key(|e| (e.at, e.seq));
        for e in events {
            if let Some(u) = by.get_mut(e.contact.as_str()) {
                u.events.push(e);
            }
        }
        Ok(nurture_store::in_order(contacts, by))
    }

    async fn contact(&self, id: &str) -> Result<Option<Contact>, StoreError> {
        let row = sqlx::query("SELECT doc, version FROM contacts WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::contact_from_row).transpose()
    }

    async fn contact_by_email(&self, email: &str) -> Result<Option<Contact>, StoreError> {
        let row = sqlx::query("SELECT doc, version FROM contacts WHERE email = ?")
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
        let mut tx = WriteTx::begin(&self.pool).await?;
        for c in new_contacts {
            let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM contacts WHERE id = ?")
                .bind(&c.id)
                .fetch_optional(&mut *tx)
                .await?;
            if exists.is_none() {
                insert_contact(&mut tx, c).await?;
            }
        }
        let out = match events.len() {
            0 | 1 => insert_events_on(&mut tx, events.iter()).await?,
            _ => insert_many_events(&mut tx, events).await?,
        };
        tx.commit().await?;
        Ok(out)
    }

    async fn event_owners(
        &self,
        ids: &[String],
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(sqlx::query_as(
            "SELECT id, contact, type FROM events WHERE id IN (SELECT value FROM json_each(?))",
        )
        .bind(to_json(ids))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn merge_contact(
        &self,
        from: &str,
        into: &str,
        at: Ts,
        source: &str,
    ) -> Result<Option<Merged>, StoreError> {
        let mut tx = WriteTx::begin(&self.pool).await?;
        // In the write transaction: an erasure of `into` is before or after it, whole.
        let stored: Option<i64> = sqlx::query_scalar("SELECT 1 FROM contacts WHERE id = ?")
            .bind(into)
            .fetch_optional(&mut *tx)
            .await?;
        if stored.is_none() {
            return Ok(None);
        }
        let before: Option<String> =
            sqlx::query_scalar("SELECT into_id FROM contact_merges WHERE from_id = ?")
                .bind(from)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(into) = before {
            return Ok(Some(Merged {
                into,
                moved: 0,
                already: true,
            }));
        }
        let moved = merge_on(&mut tx, from, into, at, source).await?;
        tx.commit().await?;
        Ok(Some(Merged {
            into: into.to_string(),
            moved,
            already: false,
        }))
    }

    async fn merged_into(&self, ids: &[String]) -> Result<Vec<(String, String)>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(sqlx::query_as(
            "SELECT from_id, into_id FROM contact_merges \
             WHERE from_id IN (SELECT value FROM json_each(?))",
        )
        .bind(to_json(ids))
        .fetch_all(&self.pool)
        .await?)
    }

    async fn pending_events(&self, limit: i64) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(
            // The oldest `limit` queued events: a contact's older events come first, so
            // each contact's events here are a prefix of its queue, in order.
            "SELECT e.seq, e.id, e.contact, e.type, e.at, e.data \
             FROM (SELECT seq FROM inbox ORDER BY at, seq LIMIT ?) i \
             JOIN events e ON e.seq = i.seq ORDER BY e.at, e.seq",
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
             WHERE contact = ? AND at >= ? ORDER BY at, seq",
        )
        .bind(contact)
        .bind(ts(since))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::event_from_row).collect()
    }

    async fn run(&self, id: &str) -> Result<Option<Run>, StoreError> {
        let row = sqlx::query("SELECT doc, rev FROM runs WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Self::run_from_row).transpose()
    }

    async fn runs_of_contact(&self, contact: &str) -> Result<Vec<Run>, StoreError> {
        let rows =
            sqlx::query("SELECT doc, rev FROM runs WHERE contact = ? ORDER BY started_at, id")
                .bind(contact)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(Self::run_from_row).collect()
    }

    async fn list_runs(&self, f: &RunFilter) -> Result<Vec<Run>, StoreError> {
        let rows = sqlx::query(
            "SELECT doc, rev FROM runs WHERE (?1 IS NULL OR workflow = ?1) \
             AND (?2 IS NULL OR contact = ?2) AND (?3 IS NULL OR status = ?3) \
             ORDER BY started_at DESC, id LIMIT ?4",
        )
        .bind(&f.workflow)
        .bind(&f.contact)
        .bind(f.status.map(RunStatus::as_str))
        .bind(if f.limit > 0 { f.limit } else { i64::MAX })
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Self::run_from_row).collect()
    }

    async fn contact_lines(
        &self,
        contact: &str,
        limit: i64,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT run_id, contact, at, kind, data FROM (SELECT id, run_id, contact, at, kind, data \
             FROM journal WHERE contact = ? AND run_id IS NULL ORDER BY id DESC LIMIT ?) j ORDER BY id",
        )
        .bind(contact)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        journal_rows(&rows)
    }

    async fn journal(&self, run_id: &str) -> Result<Vec<JournalEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT run_id, contact, at, kind, data FROM journal WHERE run_id = ? ORDER BY id",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        journal_rows(&rows)
    }

    async fn due_timers(&self, now: Ts, limit: i64) -> Result<Vec<DueTimer>, StoreError> {
        let mut tx = WriteTx::begin(&self.pool).await?;
        let rows = sqlx::query(
            "SELECT t.run_id, t.due_at, r.contact FROM (SELECT run_id, due_at FROM timers \
               WHERE due_at <= ? ORDER BY due_at, run_id LIMIT ?) t \
             LEFT JOIN runs r ON r.id = t.run_id ORDER BY t.due_at, t.run_id",
        )
        .bind(ts(now))
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let timers: Vec<DueTimer> = rows
            .iter()
            .map(|r| {
                Ok(DueTimer {
                    run_id: r.try_get("run_id")?,
                    due_at: parse_ts(r.try_get::<&str, _>("due_at")?)?,
                    contact: r.try_get("contact")?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        let until = ts(nurture_store::lease_end(now, self.lease));
        for t in &timers {
            sqlx::query("UPDATE timers SET due_at = ? WHERE run_id = ?")
                .bind(&until)
                .bind(&t.run_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(timers)
    }

    async fn next_timer(&self) -> Result<Option<Ts>, StoreError> {
        let t: Option<String> = sqlx::query_scalar("SELECT MIN(due_at) FROM timers")
            .fetch_one(&self.pool)
            .await?;
        t.as_deref().map(parse_ts).transpose()
    }

    async fn due_segment_timers(
        &self,
        now: Ts,
        limit: i64,
    ) -> Result<Vec<(String, Ts)>, StoreError> {
        let mut tx = WriteTx::begin(&self.pool).await?;
        let rows = sqlx::query(
            "SELECT contact, due_at FROM segment_timers WHERE due_at <= ? \
             ORDER BY due_at, contact LIMIT ?",
        )
        .bind(ts(now))
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let due = rows
            .iter()
            .map(|r| {
                Ok((
                    r.try_get("contact")?,
                    parse_ts(r.try_get::<&str, _>("due_at")?)?,
                ))
            })
            .collect::<Result<Vec<(String, Ts)>, StoreError>>()?;
        let until = ts(nurture_store::lease_end(now, self.lease));
        for (contact, _) in &due {
            sqlx::query("UPDATE segment_timers SET due_at = ? WHERE contact = ?")
                .bind(&until)
                .bind(contact)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(due)
    }

    async fn next_segment_timer(&self) -> Result<Option<Ts>, StoreError> {
        let t: Option<String> = sqlx::query_scalar("SELECT MIN(due_at) FROM segment_timers")
            .fetch_one(&self.pool)
            .await?;
        t.as_deref().map(parse_ts).transpose()
    }

    async fn segment_timer(&self, contact: &str) -> Result<Option<Ts>, StoreError> {
        let t: Option<String> =
            sqlx::query_scalar("SELECT due_at FROM segment_timers WHERE contact = ?")
                .bind(contact)
                .fetch_optional(&self.pool)
                .await?;
        t.as_deref().map(parse_ts).transpose()
    }

    async fn segment_members(
        &self,
        segment: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT contact FROM segment_members WHERE segment = ? AND contact > ? \
             ORDER BY contact LIMIT ?",
        )
        .bind(segment)
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn counter(&self, name: &str) -> Result<i64, StoreError> {
        let v: Option<i64> = sqlx::query_scalar("SELECT value FROM counters WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(v.unwrap_or(0))
    }

    async fn schedule_last(&self, workflow: &str) -> Result<Option<Ts>, StoreError> {
        let v: Option<String> =
            sqlx::query_scalar("SELECT last_fired FROM schedules WHERE workflow = ?")
                .bind(workflow)
                .fetch_optional(&self.pool)
                .await?;
        v.as_deref().map(parse_ts).transpose()
    }

    async fn probe_write(&self) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO counters (name, value) VALUES (?, 1) \
             ON CONFLICT (name) DO UPDATE SET value = counters.value % 1000000 + 1",
        )
        .bind(HEALTH_ROW)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn commit(&self, uow: &UnitOfWork) -> Result<(), StoreError> {
        self.commit_in(uow, None).await.map(drop)
    }

    async fn commit_claiming(
        &self,
        uow: &UnitOfWork,
        now: Ts,
        until: Ts,
    ) -> Result<Vec<String>, StoreError> {
        self.commit_in(uow, Some((now, until))).await
    }

    fn lease(&self) -> Duration {
        self.lease
    }

    fn set_send_limits(&self, limits: limits::SendLimits) {
        *self.limits.write().expect("limits lock") = std::sync::Arc::new(limits);
    }

    async fn pending_outbox(&self, now: Ts, limit: i64) -> Result<Vec<OutboxEntry>, StoreError> {
        Ok(self.claim_outbox(now, limit).await?.0)
    }

    async fn next_outbox(&self) -> Result<Option<Ts>, StoreError> {
        let t: Option<String> =
            sqlx::query_scalar("SELECT MIN(due_at) FROM outbox WHERE state = 'pending'")
                .fetch_one(&self.pool)
                .await?;
        t.as_deref().map(parse_ts).transpose()
    }

    async fn complete_outbox(
        &self,
        key: &str,
        outcome: &OutboxOutcome,
        now: Ts,
    ) -> Result<(), StoreError> {
        let mut tx = WriteTx::begin(&self.pool).await?;
        complete_on(&mut tx, key, outcome, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn complete_outbox_waking(
        &self,
        items: &[(String, OutboxOutcome)],
        wakes: &[(String, NewEvent)],
        now: Ts,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let mut tx = WriteTx::begin(&self.pool).await?;
        let mut out = Vec::with_capacity(items.len());
        let mut woken = Vec::new();
        for (key, outcome) in items {
            match complete_on(&mut tx, key, outcome, now).await {
                Ok(()) => {
                    woken.extend(wakes.iter().filter(|(k, _)| k == key).map(|(_, e)| e));
                    out.push(Ok(()));
                }
                // Stale: nothing of it was written; the others go on.
                Err(e) if e.conflict().is_some() => out.push(Err(e)),
                Err(e) => return Err(e),
            }
        }
        insert_events_on(&mut tx, woken.into_iter()).await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn suppress(&self, address: &str, reason: &str, now: Ts) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "INSERT INTO suppressions (address, reason, at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(address.trim().to_lowercase())
        .bind(reason)
        .bind(ts(now))
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn suppression(&self, address: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT reason FROM suppressions WHERE address IN (?, ?) LIMIT 1")
                .bind(address.trim().to_lowercase())
                .bind(nurture_store::privacy::suppression_hash(
                    &self.salt, address,
                ))
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn emails_since(&self, contact: &str, since: Ts) -> Result<Vec<Ts>, StoreError> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT at FROM deliveries WHERE contact = ? AND kind = 'email' AND at >= ? ORDER BY at",
        )
        .bind(contact)
        .bind(ts(since))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|t| parse_ts(t)).collect()
    }

    async fn requeue_outbox(&self, key: &str, now: Ts) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "UPDATE outbox SET state = 'pending', due_at = ?, attempts = 0, last_error = NULL \
             WHERE key = ? \
             AND state IN ('ambiguous', 'failed')",
        )
        .bind(ts(now))
        .bind(key)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn deliveries(&self) -> Result<Vec<Delivery>, StoreError> {
        let rows =
            sqlx::query("SELECT key, kind, contact, at, record FROM deliveries ORDER BY at, key")
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(privacy::delivery_from_row).collect()
    }

    async fn outbox_state(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT state FROM outbox WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }
}

/// Journal rows (`run_id, contact, at, kind, data`) as entries.
pub(crate) fn journal_rows(
    rows: &[sqlx::sqlite::SqliteRow],
) -> Result<Vec<JournalEntry>, StoreError> {
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        unpack_journal(
            r.try_get("run_id")?,
            r.try_get("contact")?,
            parse_ts(r.try_get::<&str, _>("at")?)?,
            r.try_get("kind")?,
            nurture_store::encoding::decode(r.try_get::<&[u8], _>("data")?)?,
            &mut out,
        )?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One connection, so the next transaction gets the connection the failed one used
    /// (or its replacement).
    async fn one_connection_pool(dir: &std::path::Path) -> SqlitePool {
        let opts = SqliteConnectOptions::new()
            .filename(dir.join("t.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (k TEXT PRIMARY KEY)")
            .execute(&pool)
            .await
            .unwrap();
        pool
    }

    /// A statement that makes SQLite roll the transaction back by itself (as `SQLITE_FULL`
    /// does) used to leave sqlx's transaction depth at 1 on a pooled connection: every
    /// later transaction failed with "attempted to call begin_with at non-zero
    /// transaction depth". The next transaction must work.
    #[tokio::test]
    async fn failed_transaction_leaves_the_pool_clean() {
        let tmp = tempfile::tempdir().unwrap();
        let pool = one_connection_pool(tmp.path()).await;
        sqlx::query("INSERT INTO t (k) VALUES ('a')")
            .execute(&pool)
            .await
            .unwrap();
        for _ in 0..3 {
            let mut tx = WriteTx::begin(&pool).await.unwrap();
            // `OR ROLLBACK`: SQLite ends the transaction itself on the conflict.
            let failed = sqlx::query("INSERT OR ROLLBACK INTO t (k) VALUES ('a')")
                .execute(&mut *tx)
                .await;
            assert!(failed.is_err());
            drop(tx);
            let mut tx = WriteTx::begin(&pool)
                .await
                .expect("the next transaction begins");
            sqlx::query("INSERT INTO t (k) VALUES ('b') ON CONFLICT DO NOTHING")
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.expect("and commits");
        }
        // A failed statement that leaves the transaction open: rolled back on drop.
        let mut tx = WriteTx::begin(&pool).await.unwrap();
        sqlx::query("INSERT INTO t (k) VALUES ('c')")
            .execute(&mut *tx)
            .await
            .unwrap();
        assert!(sqlx::query("INSERT INTO t (k) VALUES ('a')")
            .execute(&mut *tx)
            .await
            .is_err());
        drop(tx);
        let tx = WriteTx::begin(&pool).await.unwrap();
        tx.commit().await.unwrap();
        let keys: Vec<String> = sqlx::query_scalar("SELECT k FROM t ORDER BY k")
            .fetch_all(&pool)
            .await
            .unwrap();
        assert_eq!(
            keys,
            ["a", "b"],
            "the failed transaction's `c` was rolled back"
        );
    }

    /// The same through the store: a commit that fails (a conflict) and then one that
    /// works, with the store's own pool.
    #[tokio::test]
    async fn store_commits_after_a_failed_commit() {
        let tmp = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", tmp.path().join("s.db").display());
        let store = SqliteStore::open(&url, &SqliteConfig::default())
            .await
            .unwrap();
        let stale = UnitOfWork {
            contacts: vec![Contact {
                id: "ghost".into(),
                version: 7,
                ..Default::default()
            }],
            ..Default::default()
        };
        for _ in 0..8 {
            assert!(matches!(
                store.commit(&stale).await,
                Err(StoreError::Conflict {
                    what: ConflictKind::Contact,
                    ..
                })
            ));
        }
        let fresh = UnitOfWork {
            contacts: vec![Contact {
                id: "c1".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        store.commit(&fresh).await.unwrap();
        store.probe_write().await.unwrap();
        assert!(store.contact("c1").await.unwrap().is_some());
    }
}
