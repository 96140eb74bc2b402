//! The Postgres store, through sqlx: the same contract as SQLite, for more than one
//! machine. Tables live in one schema (`nurture` unless [`PostgresConfig::schema`] says
//! otherwise); migrations are embedded and guarded by sqlx's advisory lock, so any number
//! of processes may start at once.
//!
//! Per-contact order: an event is only applied when it is the oldest queued event of its
//! contact (checked in the commit), so workers sharing the queue never apply a contact's
//! events out of order.
#![warn(missing_docs)]
#![warn(unreachable_pub)]

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};

use nurture_store::*;

mod counts;
mod keys;
mod partitions;
mod privacy;
mod reads;
mod retention;

/// Group commits the engine runs at once against one Postgres database, shared among the
/// workers alive (each gets `PARALLELISM / workers`, at least 1): the default of
/// [`PostgresConfig::lanes`] (the binary's `NURTURE_PG_LANES`). Measured on 2 cores: 4 lanes in one process, or 2 in each of two, or 1 in
/// each of four, all reach the same steps/s; 4 in each of four lost a fifth of it to
/// transactions contending for the same CPUs and rows.
const PARALLELISM: usize = 4;

/// Queued events of one contact claimed together (applied in one unit of work).
const EVENTS_PER_CONTACT: i64 = 16;

/// Every how many claims of queued events one scans the inbox from its head (see
/// [`PostgresStore::inbox_from`]); the others start where the last full claim ended.
const INBOX_HEAD_EVERY: usize = 8;

/// How a [`PostgresStore`] runs. The defaults are those documented on each field; the
/// binary reads them from `NURTURE_PG_SCHEMA`, `NURTURE_PG_POOL`, `NURTURE_PG_LANES` and
/// `NURTURE_LEASE_SECS` (docs/operators.md).
#[derive(Debug, Clone, PartialEq)]
pub struct PostgresConfig {
    /// The schema the tables (and sqlx's migration table) live in, created if missing:
    /// `nurture`. Only `[a-z_][a-z0-9_]*` (at most 63 bytes, not `pg_...`) is accepted.
    pub schema: String,
    /// Connections per process: 16. The engine's lanes, concurrent deliveries and API
    /// requests share them (mind Postgres' `max_connections` across all processes: 100 by
    /// default).
    pub pool: u32,
    /// The database's budget of concurrent group commits, shared among the workers alive:
    /// 4 (see `PARALLELISM`).
    pub lanes: usize,
    /// How long claims lease timers, queued events and outbox entries: [`DEFAULT_LEASE`]
    /// (60 s).
    pub lease: Duration,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            schema: "nurture".into(),
            pool: 16,
            lanes: PARALLELISM,
            lease: DEFAULT_LEASE,
        }
    }
}

impl PostgresConfig {
    /// The schema name, checked: `[a-z_][a-z0-9_]*`, at most 63 bytes (Postgres' limit on
    /// names), not `pg_...` (reserved for the system), else
    /// [`ConfigError::SchemaName`]. Such a name needs no quoting; it is quoted anyway.
    pub fn schema_name(&self) -> Result<&str, ConfigError> {
        let s = self.schema.as_str();
        let mut chars = s.chars();
        let valid = matches!(chars.next(), Some('a'..='z' | '_'))
            && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
            && s.len() <= 63
            && !s.starts_with("pg_");
        if valid {
            Ok(s)
        } else {
            Err(ConfigError::SchemaName(self.schema.clone()))
        }
    }

    fn check(&self) -> Result<(), ConfigError> {
        self.schema_name()?;
        if self.pool == 0 {
            return Err(ConfigError::Zero("the Postgres pool"));
        }
        if self.lanes == 0 {
            return Err(ConfigError::Zero("the Postgres lanes"));
        }
        Ok(())
    }
}

/// The [`Store`] in a Postgres database that any number of workers share:
/// [`PostgresStore::open`] it.
pub struct PostgresStore {
    pool: PgPool,
    /// How long claims lease what they take.
    lease: Duration,
    /// The database's lane budget, and this process's share of it.
    budget: usize,
    lanes: std::sync::atomic::AtomicUsize,
    /// Where this process's last claim of queued events that filled its batch ended: the
    /// (time, seq) of its last head. The rows before it are claimed and leased, or wait
    /// for an older event of their contact, so the next claim starts after it instead of
    /// stepping over them again (with a backlog, a claim of 256 heads read 2,000 rows,
    /// three quarters of them leased to the claims in flight). Rows the cursor passes by
    /// (a lease run out, an event stored with an older time, a contact's next event once
    /// its older ones are applied) are found by the claims that scan from the head: every
    /// [`INBOX_HEAD_EVERY`]th one, and the one after a claim that did not fill its batch.
    inbox_from: std::sync::Mutex<Option<(Ts, i64)>>,
    inbox_claims: std::sync::atomic::AtomicUsize,
    /// What claims of outbox entries enforce ([`Store::set_send_limits`]).
    limits: std::sync::RwLock<std::sync::Arc<limits::SendLimits>>,
    /// The secret salt of erased addresses' hashes (table `privacy_salt`).
    salt: String,
    /// The month whose partitions (and the next ones) were last made sure of; a
    /// heartbeat in a later month creates the next ones.
    months_at: std::sync::Mutex<Option<Ts>>,
}

/// A stored `json` document, deserialized straight into the struct (a document that does
/// not decode is a [`sqlx::Error::ColumnDecode`], kept as the source).
fn from_json<T: serde::de::DeserializeOwned>(
    row: &sqlx::postgres::PgRow,
    column: &str,
) -> Result<T, StoreError> {
    Ok(row.try_get::<sqlx::types::Json<T>, _>(column)?.0)
}

impl PostgresStore {
    /// How the store connects to `url`: its schema ([`PostgresConfig::schema`]) alone in
    /// the `search_path`, and the planner told what its statements are.
    ///
    /// Every statement of this store reads or writes a bounded batch of rows by key, so
    /// index lookups in nested loops are always the right plan. Statistics lag behind
    /// fast-growing queue tables, and with them the planner picked:
    /// - hash joins over whole tables (a scan of every timer to claim 256 of them);
    /// - JIT compilation (milliseconds per statement);
    /// - sequential scans, cached: a prepared statement's generic plan, made while a table
    ///   was nearly empty, kept scanning the whole table as it grew (in the benchmark's
    ///   (c), a delivery's outcome read the whole outbox, 2 ms a batch, until autovacuum
    ///   analyzed it).
    ///
    /// All three are off for this store's connections. A statement with no index to use
    /// still scans.
    pub fn session_options(
        url: &str,
        config: &PostgresConfig,
    ) -> Result<PgConnectOptions, StoreError> {
        let search_path = format!("\"{}\"", config.schema_name()?);
        Ok(PgConnectOptions::from_str(url)?.options([
            ("search_path", search_path.as_str()),
            ("jit", "off"),
            ("enable_hashjoin", "off"),
            ("enable_mergejoin", "off"),
            ("enable_seqscan", "off"),
        ]))
    }

    /// Connects to `url` (`postgres://user:pass@host/db`), creates the configured schema
    /// and applies the migrations in it.
    pub async fn open(url: &str, config: &PostgresConfig) -> Result<Self, StoreError> {
        config.check()?;
        let opts = Self::session_options(url, config)?;
        let pool = PgPoolOptions::new()
            .max_connections(config.pool)
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(opts)
            .await?;
        let schema = config.schema_name()?;
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
            .execute(&pool)
            .await
            .or_else(|e| match &e {
                // Two processes creating the schema at once: the other one won.
                sqlx::Error::Database(d) if d.code().as_deref() == Some("23505") => {
                    Ok(Default::default())
                }
                _ => Err(e),
            })?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        let salt = sqlx::query_scalar("SELECT salt FROM privacy_salt")
            .fetch_one(&pool)
            .await?;
        let now = chrono::Utc::now();
        let months = partitions::ensure_months(&pool, now).await?;
        let budget = config.lanes;
        Ok(PostgresStore {
            pool,
            lease: config.lease,
            budget,
            lanes: budget.into(),
            inbox_from: std::sync::Mutex::new(None),
            inbox_claims: 0.into(),
            limits: Default::default(),
            salt,
            months_at: std::sync::Mutex::new(months.then(|| partitions::month_of(now).0)),
        })
    }

    /// Creates the journal's next monthly partitions once a month (from the heartbeat: a
    /// worker running for months keeps writing into partitions of their own); tried again
    /// at the next heartbeat while another process is changing partitions.
    async fn ensure_months(&self) -> Result<(), StoreError> {
        let now = chrono::Utc::now();
        let month = partitions::month_of(now).0;
        if *self.months_at.lock().expect("months lock") == Some(month) {
            return Ok(());
        }
        if partitions::ensure_months(&self.pool, now).await? {
            *self.months_at.lock().expect("months lock") = Some(month);
        }
        Ok(())
    }

    /// The send limits claims enforce now.
    fn send_limits(&self) -> std::sync::Arc<limits::SendLimits> {
        self.limits.read().expect("limits lock").clone()
    }

    pub(crate) fn run_from_row(row: &sqlx::postgres::PgRow) -> Result<Run, StoreError> {
        let mut run: Run = from_json(row, "doc")?;
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
        let mut c: Contact = from_json(row, "doc")?;
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
        let mut tx = self.pool.begin().await?;
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
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        uow: &UnitOfWork,
        now: Ts,
        claimed: &mut Vec<String>,
    ) -> Result<(), StoreError> {
        let emails = nurture_store::claimed_emails(uow, claimed);
        if !emails.is_empty() {
            let skipped = skip_suppressed(tx, &emails, now).await?;
            claimed.retain(|k| !skipped.contains(k));
        }
        let limits = self.send_limits();
        if !limits.is_empty() && !claimed.is_empty() {
            let entries: Vec<&OutboxEntry> = uow
                .outbox
                .iter()
                .filter(|e| claimed.contains(&e.key))
                .collect();
            let deferred = limits::enforce_postgres(tx, &limits, now, &entries).await?;
            deferrals_in(tx, entries.iter().copied(), &deferred, now).await?;
            claimed.retain(|k| !deferred.iter().any(|d| &d.key == k));
        }
        Ok(())
    }
}

/// The report counts of the email outcomes among `items` whose completion `claimed`
/// holds ([`nurture_store::counts::outcome_metric`]).
async fn outcome_tallies(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    items: &[(String, OutboxOutcome)],
    claimed: &std::collections::HashSet<&str>,
    now: Ts,
) -> Result<(), StoreError> {
    use nurture_store::counts::{message, outcome_metric};
    let counted: Vec<(&str, &str)> = items
        .iter()
        .filter(|(k, _)| claimed.contains(k.as_str()))
        .filter_map(|(k, o)| Some((k.as_str(), outcome_metric(o)?)))
        .collect();
    if counted.is_empty() {
        return Ok(());
    }
    let keys: Vec<&str> = counted.iter().map(|(k, _)| *k).collect();
    let emails: Vec<String> =
        sqlx::query_scalar("SELECT key FROM outbox WHERE key = ANY($1) AND kind = 'email'")
            .bind(&keys)
            .fetch_all(&mut **tx)
            .await?;
    let tallies: Vec<_> = counted
        .iter()
        .filter(|(k, _)| emails.iter().any(|e| e == k))
        .map(|(k, m)| message(k, *m, now))
        .collect();
    counts::tallies_in(tx, &tallies).await
}

/// Fencing of a set-based statement: `got` rows touched of the `want` it was given.
fn fenced(what: ConflictKind, want: usize, got: u64) -> Result<(), StoreError> {
    if got as usize == want {
        Ok(())
    } else {
        Err(StoreError::conflict_on(
            what,
            format!("{got} of {want} rows current"),
        ))
    }
}

/// A commit's contacts: inserts (version 0) and fenced updates.
async fn contacts_in(tx: &mut sqlx::PgConnection, contacts: &[Contact]) -> Result<(), StoreError> {
    let (new_c, old_c): (Vec<&Contact>, Vec<&Contact>) =
        contacts.iter().partition(|c| c.version == 0);
    if !new_c.is_empty() {
        let ids: Vec<&str> = new_c.iter().map(|c| c.id.as_str()).collect();
        let emails: Vec<Option<&str>> = new_c.iter().map(|c| c.email.as_deref()).collect();
        let docs: Vec<_> = new_c
            .iter()
            .map(|c| {
                to_json(&Contact {
                    version: 1,
                    ..(*c).clone()
                })
            })
            .collect();
        let r = sqlx::query(
            "INSERT INTO contacts (id, email, doc, version) \
             SELECT * , 1 FROM UNNEST($1::text[], $2::text[], $3::text[]::json[]) ON CONFLICT DO NOTHING",
        )
        .bind(&ids)
        .bind(&emails)
        .bind(&docs)
        .execute(&mut *tx)
        .await?;
        fenced(ConflictKind::Contact, new_c.len(), r.rows_affected())?;
    }
    if !old_c.is_empty() {
        let ids: Vec<&str> = old_c.iter().map(|c| c.id.as_str()).collect();
        let emails: Vec<Option<&str>> = old_c.iter().map(|c| c.email.as_deref()).collect();
        let versions: Vec<i64> = old_c.iter().map(|c| c.version).collect();
        let docs: Vec<_> = old_c
            .iter()
            .map(|c| {
                to_json(&Contact {
                    version: c.version + 1,
                    ..(*c).clone()
                })
            })
            .collect();
        let r = sqlx::query(
            "UPDATE contacts c SET email = u.email, doc = u.doc, version = c.version + 1 \
             FROM UNNEST($1::text[], $2::text[], $3::text[]::json[], $4::bigint[]) AS u(id, email, doc, version) \
             WHERE c.id = u.id AND c.version = u.version",
        )
        .bind(&ids)
        .bind(&emails)
        .bind(&docs)
        .bind(&versions)
        .execute(&mut *tx)
        .await?;
        fenced(ConflictKind::Contact, old_c.len(), r.rows_affected())?;
    }
    Ok(())
}

/// The contacts a commit keeps ([`UnitOfWork::contacts_kept`]): each still stored, and
/// locked against deletion until the commit, in id order (first in the commit: an
/// erasure, which locks the contact's row before its runs and sends, waits for the
/// commit or the commit for it, never both).
async fn kept_in(tx: &mut sqlx::PgConnection, kept: &[String]) -> Result<(), StoreError> {
    if kept.is_empty() {
        return Ok(());
    }
    let mut ids: Vec<&str> = kept.iter().map(String::as_str).collect();
    ids.sort_unstable();
    ids.dedup();
    let found: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT 1 FROM contacts WHERE id = ANY($1) \
         ORDER BY id FOR KEY SHARE) k",
    )
    .bind(&ids)
    .fetch_one(&mut *tx)
    .await?;
    fenced(ConflictKind::Contact, ids.len(), found as u64)
}

/// A commit's runs: inserts (rev 0) and fenced updates.
async fn runs_in(tx: &mut sqlx::PgConnection, runs: &[Run]) -> Result<(), StoreError> {
    let (new_r, old_r): (Vec<&Run>, Vec<&Run>) = runs.iter().partition(|r| r.rev == 0);
    if !new_r.is_empty() {
        let r = sqlx::query(
            "INSERT INTO runs (id, workflow, workflow_version, contact, status, doc, started_at, rev) \
             SELECT *, 1 FROM UNNEST($1::text[], $2::text[], $3::int[], $4::text[], $5::text[], $6::text[]::json[], $7::timestamptz[]) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(new_r.iter().map(|r| r.id.as_str()).collect::<Vec<_>>())
        .bind(new_r.iter().map(|r| r.workflow.as_str()).collect::<Vec<_>>())
        .bind(new_r.iter().map(|r| r.workflow_version as i32).collect::<Vec<_>>())
        .bind(new_r.iter().map(|r| r.contact.as_str()).collect::<Vec<_>>())
        .bind(new_r.iter().map(|r| r.status.as_str()).collect::<Vec<_>>())
        .bind(new_r.iter().map(|r| to_json(&Run { rev: 1, ..(*r).clone() })).collect::<Vec<_>>())
        .bind(new_r.iter().map(|r| r.started_at).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
        fenced(ConflictKind::Run, new_r.len(), r.rows_affected())?;
    }
    if !old_r.is_empty() {
        let r = sqlx::query(
            "UPDATE runs r SET status = u.status, doc = u.doc, rev = r.rev + 1 \
             FROM UNNEST($1::text[], $2::text[], $3::text[]::json[], $4::bigint[]) AS u(id, status, doc, rev) \
             WHERE r.id = u.id AND r.rev = u.rev",
        )
        .bind(old_r.iter().map(|r| r.id.as_str()).collect::<Vec<_>>())
        .bind(old_r.iter().map(|r| r.status.as_str()).collect::<Vec<_>>())
        .bind(old_r.iter().map(|r| to_json(&Run { rev: r.rev + 1, ..(*r).clone() })).collect::<Vec<_>>())
        .bind(old_r.iter().map(|r| r.rev).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
        fenced(ConflictKind::Run, old_r.len(), r.rows_affected())?;
    }
    Ok(())
}

/// A commit's timers: clears first, then sets (a unit may clear and set the same run's
/// timer: the upsert replaces it, so only the others are deleted).
async fn timers_in(tx: &mut sqlx::PgConnection, uow: &UnitOfWork) -> Result<(), StoreError> {
    let set: std::collections::HashSet<&str> =
        uow.timers_set.iter().map(|t| t.run_id.as_str()).collect();
    let clear: Vec<&str> = uow
        .timers_clear
        .iter()
        .map(String::as_str)
        .filter(|r| !set.contains(r))
        .collect();
    if !clear.is_empty() {
        sqlx::query("DELETE FROM timers WHERE run_id = ANY($1)")
            .bind(&clear)
            .execute(&mut *tx)
            .await?;
    }
    if !uow.timers_set.is_empty() {
        // Last write per run wins, as when applied one by one.
        let mut last: std::collections::BTreeMap<&str, &Timer> = std::collections::BTreeMap::new();
        for t in &uow.timers_set {
            last.insert(t.run_id.as_str(), t);
        }
        sqlx::query(
            "INSERT INTO timers (run_id, due_at, contact) \
             SELECT * FROM UNNEST($1::text[], $2::timestamptz[], $3::text[]) \
             ON CONFLICT (run_id) DO UPDATE SET due_at = excluded.due_at, contact = excluded.contact",
        )
        .bind(last.keys().copied().collect::<Vec<_>>())
        .bind(last.values().map(|t| t.due_at).collect::<Vec<_>>())
        .bind(last.values().map(|t| t.contact.as_str()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// A commit's outbox entries: new keys only (a repeated step adds nothing), and their
/// pending rows; with `claim` (now, until), those due by `now` are leased to this worker
/// until `until`: their keys are returned.
async fn outbox_in(
    tx: &mut sqlx::PgConnection,
    o: &[OutboxEntry],
    claim: Option<(Ts, Ts)>,
) -> Result<Vec<String>, StoreError> {
    if o.is_empty() {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_scalar(
        "WITH ins AS (INSERT INTO outbox (key, run_id, contact, workflow, step, kind, payload, created_at, due_at) \
           SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::jsonb[], $8::timestamptz[], $9::timestamptz[]) \
           ON CONFLICT (key) DO NOTHING RETURNING key, due_at), \
         pend AS (INSERT INTO outbox_pending (key, due_at) \
           SELECT key, CASE WHEN due_at <= $10 THEN $11 ELSE due_at END FROM ins) \
         SELECT key FROM ins WHERE due_at <= $10",
    )
    .bind(o.iter().map(|e| e.key.as_str()).collect::<Vec<_>>())
    .bind(o.iter().map(|e| e.run_id.as_deref()).collect::<Vec<_>>())
    .bind(o.iter().map(|e| e.contact.as_str()).collect::<Vec<_>>())
    .bind(o.iter().map(|e| e.workflow.as_deref()).collect::<Vec<_>>())
    .bind(o.iter().map(|e| e.step.as_deref()).collect::<Vec<_>>())
    .bind(o.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>())
    .bind(o.iter().map(|e| e.payload.clone()).collect::<Vec<_>>())
    .bind(o.iter().map(|e| e.created_at).collect::<Vec<_>>())
    .bind(o.iter().map(|e| e.due_at).collect::<Vec<_>>())
    // Without a claim, NULL: `due_at <= NULL` holds for none.
    .bind(claim.map(|c| c.0))
    .bind(claim.map(|c| c.1))
    .fetch_all(&mut *tx)
    .await?)
}

/// A commit's journal, in order (the identity column follows the array order).
pub(crate) async fn journal_in(
    tx: &mut sqlx::PgConnection,
    journal: &[JournalEntry],
) -> Result<(), StoreError> {
    if journal.is_empty() {
        return Ok(());
    }
    let j = pack_journal(journal);
    sqlx::query(
        "INSERT INTO journal (run_id, contact, at, kind, data) \
         SELECT run_id, contact, at, kind, data FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::bytea[]) \
         WITH ORDINALITY AS u(run_id, contact, at, kind, data, n) ORDER BY n",
    )
    .bind(j.iter().map(|e| e.0).collect::<Vec<_>>())
    .bind(j.iter().map(|e| e.1).collect::<Vec<_>>())
    .bind(j.iter().map(|e| e.2).collect::<Vec<_>>())
    .bind(j.iter().map(|e| e.3).collect::<Vec<_>>())
    .bind(j.into_iter().map(|e| e.4).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A commit's applied events, off the queue: nothing older of the same contact may stay
/// queued (order per contact).
async fn events_done_in(tx: &mut sqlx::PgConnection, done: &[i64]) -> Result<(), StoreError> {
    if done.is_empty() {
        return Ok(());
    }
    let r = sqlx::query(
        "DELETE FROM inbox i WHERE i.seq = ANY($1) AND NOT EXISTS (\
           SELECT 1 FROM inbox o WHERE o.contact = i.contact AND (o.at, o.seq) < (i.at, i.seq) \
           AND o.seq <> ALL($1) OFFSET 0)",
    )
    .bind(done)
    .execute(&mut *tx)
    .await?;
    fenced(ConflictKind::QueuedEvent, done.len(), r.rows_affected())
}

/// A commit's counters: (name, expected value, new value), fenced by the expected value.
async fn counters_in(
    tx: &mut sqlx::PgConnection,
    counters: &[(String, i64, i64)],
) -> Result<(), StoreError> {
    for (name, expected, new) in counters {
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
            return Err(StoreError::conflict_on(ConflictKind::Counter, name));
        }
    }
    Ok(())
}

/// A commit's schedule firings: (workflow, last firing).
async fn schedules_in(
    tx: &mut sqlx::PgConnection,
    schedules: &[(String, Ts)],
) -> Result<(), StoreError> {
    for (wf, at) in schedules {
        sqlx::query(
            "INSERT INTO schedules (workflow, last_fired) VALUES ($1, $2) \
             ON CONFLICT (workflow) DO UPDATE SET last_fired = excluded.last_fired",
        )
        .bind(wf)
        .bind(at)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// The advisory lock (transaction-scoped) that serialises deploys: one fixed key for the
/// database (deploys into other schemas of it wait for each other too; they are rare).
const DEPLOY_LOCK: i64 = 0x6e75_7274_7572_6519;

/// A row of `workflow_versions`, all columns.
fn version_from_row(row: &sqlx::postgres::PgRow) -> Result<WorkflowVersion, StoreError> {
    Ok(WorkflowVersion {
        workflow: row.try_get("workflow")?,
        version: versions::stored_version(row.try_get("version")?)?,
        hash: row.try_get("hash")?,
        source: row.try_get("source")?,
        path: row.try_get("path")?,
        deployed_at: row.try_get("deployed_at")?,
        deployed_by: row.try_get("deployed_by")?,
    })
}

/// The columns of an [`OutboxRow`].
const OUTBOX_ROW: &str = "SELECT key, kind, contact, run_id, workflow, step, state, attempts, \
     last_error, created_at, due_at FROM outbox";

fn outbox_row(r: &sqlx::postgres::PgRow) -> Result<OutboxRow, StoreError> {
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
        created_at: r.try_get("created_at")?,
        due_at: r.try_get("due_at")?,
    })
}

#[async_trait]
impl OutboxView for PostgresStore {
    async fn outbox_entries(&self, keys: &[String]) -> Result<Vec<OutboxRow>, StoreError> {
        let sql = format!("{OUTBOX_ROW} WHERE key = ANY($1) ORDER BY key");
        let rows = sqlx::query(&sql).bind(keys).fetch_all(&self.pool).await?;
        rows.iter().map(outbox_row).collect()
    }

    async fn list_outbox(&self, filter: &OutboxFilter) -> Result<Vec<OutboxRow>, StoreError> {
        let state = filter.state.map_or("TRUE", OutboxState::sql);
        let sql = format!(
            "{OUTBOX_ROW} WHERE {state} AND ($1::text IS NULL OR contact = $1) \
             AND ($2::text IS NULL OR workflow = $2) ORDER BY created_at DESC, key LIMIT $3"
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
impl ControlStore for PostgresStore {
    async fn set_control(&self, c: &WorkflowControl) -> Result<(), StoreError> {
        controls::check_control(c)?;
        sqlx::query(
            "INSERT INTO workflow_controls (workflow, paused, by_whom, at, reason) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (workflow) DO UPDATE SET \
             paused = excluded.paused, by_whom = excluded.by_whom, at = excluded.at, \
             reason = excluded.reason",
        )
        .bind(&c.workflow)
        .bind(c.paused)
        .bind(&c.by)
        .bind(c.at)
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
                    at: r.try_get("at")?,
                    reason: r.try_get("reason")?,
                })
            })
            .collect()
    }
}

/// Deploys are serialised by an advisory lock ([`DEPLOY_LOCK`]) taken first in their
/// transaction: under `READ COMMITTED` each later statement sees what the deploy before it
/// committed, so two deploys planned against the same latest version cannot both pass
/// the check.
#[async_trait]
impl VersionStore for PostgresStore {
    async fn deploy(
        &self,
        versions: &[WorkflowVersion],
        expected: &[Expected],
    ) -> Result<(), StoreError> {
        versions::check_sizes(versions)?;
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(DEPLOY_LOCK)
            .execute(&mut *tx)
            .await?;
        if !expected.is_empty() {
            let names: Vec<&str> = expected.iter().map(|e| e.workflow.as_str()).collect();
            let latest: std::collections::HashMap<String, i64> = sqlx::query_as(
                "SELECT workflow, MAX(version) FROM workflow_versions \
                 WHERE workflow = ANY($1) GROUP BY workflow",
            )
            .bind(&names)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
            for e in expected {
                let now = latest
                    .get(&e.workflow)
                    .copied()
                    .map(versions::stored_version)
                    .transpose()?;
                if now != e.version {
                    return Err(versions::version_conflict(&e.workflow));
                }
            }
        }
        if versions.is_empty() {
            return Ok(tx.commit().await?);
        }
        let names: Vec<&str> = versions.iter().map(|v| v.workflow.as_str()).collect();
        let numbers: Vec<i64> = versions.iter().map(|v| i64::from(v.version)).collect();
        use std::collections::hash_map::Entry;
        let stored: std::collections::HashMap<(String, i64), String> = sqlx::query_as(
            "SELECT w.workflow, w.version, w.hash FROM UNNEST($1::text[], $2::bigint[]) \
             AS u(workflow, version) JOIN workflow_versions w \
             ON w.workflow = u.workflow AND w.version = u.version",
        )
        .bind(&names)
        .bind(&numbers)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|(w, v, h): (String, i64, String)| ((w, v), h))
        .collect();
        // As one by one: a version given twice is stored once, and a conflict the second
        // time with another hash.
        let mut stored = stored;
        let mut new: Vec<&WorkflowVersion> = Vec::with_capacity(versions.len());
        for v in versions {
            match stored.entry((v.workflow.clone(), i64::from(v.version))) {
                Entry::Occupied(h) if *h.get() == v.hash => {}
                Entry::Occupied(_) => return Err(versions::version_conflict(&v.workflow)),
                Entry::Vacant(slot) => {
                    slot.insert(v.hash.clone());
                    new.push(v);
                }
            }
        }
        if !new.is_empty() {
            sqlx::query(
                "INSERT INTO workflow_versions (workflow, version, hash, source, path, \
                 deployed_at, deployed_by) SELECT * FROM UNNEST($1::text[], $2::bigint[], \
                 $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::text[])",
            )
            .bind(new.iter().map(|v| v.workflow.as_str()).collect::<Vec<_>>())
            .bind(new.iter().map(|v| i64::from(v.version)).collect::<Vec<_>>())
            .bind(new.iter().map(|v| v.hash.as_str()).collect::<Vec<_>>())
            .bind(new.iter().map(|v| v.source.as_str()).collect::<Vec<_>>())
            .bind(new.iter().map(|v| v.path.as_str()).collect::<Vec<_>>())
            .bind(new.iter().map(|v| v.deployed_at).collect::<Vec<_>>())
            .bind(
                new.iter()
                    .map(|v| v.deployed_by.as_str())
                    .collect::<Vec<_>>(),
            )
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                StoreError::unique_as(e, |_| ConflictKind::WorkflowVersion, &new[0].workflow)
            })?;
        }
        Ok(tx.commit().await?)
    }

    async fn latest_versions(&self) -> Result<Vec<LatestVersion>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT ON (workflow) workflow, version, hash FROM workflow_versions \
             ORDER BY workflow, version DESC",
        )
        .fetch_all(&self.pool)
        .await?;
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
             FROM workflow_versions WHERE workflow = $1 AND version = $2",
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
             FROM workflow_versions WHERE $1::text IS NULL OR workflow = $1 \
             ORDER BY workflow, version",
        )
        .bind(workflow)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(version_from_row).collect()
    }

    /// Through `runs_workflow` (the runs of the workflow), filtered by status; steps in
    /// byte order, a run at no step first (as SQLite orders them).
    async fn open_runs(&self, workflow: &str) -> Result<Vec<OpenRunCount>, StoreError> {
        let rows = sqlx::query(
            "SELECT workflow_version::bigint AS version, (doc->>'step') COLLATE \"C\" AS step, \
             count(*) AS n FROM runs WHERE workflow = $1 AND status = ANY($2) \
             GROUP BY 1, 2 ORDER BY 1, 2 NULLS FIRST",
        )
        .bind(workflow)
        .bind(versions::open_statuses())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(OpenRunCount {
                    version: versions::stored_version(r.try_get("version")?)?,
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
            "SELECT id, contact FROM runs WHERE workflow = $1 AND workflow_version < $2 \
             AND status = ANY($3) AND id > $4 ORDER BY id LIMIT $5",
        )
        .bind(workflow)
        .bind(i64::from(below))
        .bind(versions::open_statuses())
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

    async fn set_worker_note(&self, id: &str, note: Option<&str>) -> Result<(), StoreError> {
        if let Some(n) = note {
            versions::bounded(n, versions::MAX_LABEL, || {
                format!("the note of worker {id:?}")
            })?;
        }
        sqlx::query("UPDATE workers SET note = $2 WHERE id = $1")
            .bind(id)
            .bind(note)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn load_units(
        &self,
        contacts: &[String],
        history: Option<&HistoryRead>,
    ) -> Result<Vec<UnitData>, StoreError> {
        use std::collections::HashMap;
        let mut by: HashMap<&str, UnitData> = contacts
            .iter()
            .map(|c| (c.as_str(), UnitData::default()))
            .collect();
        for row in sqlx::query("SELECT doc, version FROM contacts WHERE id = ANY($1)")
            .bind(contacts)
            .fetch_all(&self.pool)
            .await?
        {
            let c = Self::contact_from_row(&row)?;
            if let Some(u) = by.get_mut(c.id.as_str()) {
                u.contact = Some(c);
            }
        }
        // One index lookup per contact (`LATERAL` keeps the planner from turning it into a
        // hash join over the whole table when its statistics lag behind a fast-growing
        // table), in `runs_contact` order: per workflow, the first is the latest run.
        for row in sqlx::query(
            "SELECT r.doc, r.rev FROM unnest($1::text[]) AS k(id), LATERAL \
             (SELECT DISTINCT ON (workflow) doc, rev, started_at, id FROM runs WHERE contact = k.id \
              ORDER BY workflow, started_at DESC, id DESC) r \
             ORDER BY r.started_at, r.id",
        )
        .bind(contacts)
        .fetch_all(&self.pool)
        .await?
        {
            let r = Self::run_from_row(&row)?;
            if let Some(u) = by.get_mut(r.contact.as_str()) {
                u.runs.push(r);
            }
        }
        let Some(h) = history else {
            return Ok(nurture_store::in_order(contacts, by));
        };
        // Per contact, the most recent `limit` events of the types asked for.
        for row in sqlx::query(
            "SELECT e.seq, e.id, e.contact, e.type, e.at, e.data FROM unnest($1::text[]) AS k(id), LATERAL \
             (SELECT * FROM events WHERE contact = k.id AND at >= $2 \
               AND ($3::text[] IS NULL OR type = ANY($3)) ORDER BY at DESC, seq DESC LIMIT $4) e \
             ORDER BY e.at, e.seq",
        )
        .bind(contacts)
        .bind(h.since)
        .bind(h.types.as_deref())
        .bind(h.limit)
        .fetch_all(&self.pool)
        .await?
        {
            let e = Self::event_from_row(&row)?;
            if let Some(u) = by.get_mut(e.contact.as_str()) {
                u.events.push(e);
            }
        }
        Ok(nurture_store::in_order(contacts, by))
    }

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

    async fn find_contacts(
        &self,
        ids: &[String],
        emails: &[String],
    ) -> Result<Vec<(String, Option<String>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, email FROM contacts WHERE id = ANY($1) \
             UNION SELECT id, email FROM contacts WHERE email = ANY($2)",
        )
        .bind(ids)
        .bind(emails)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("email")?)))
            .collect()
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
        // Set-based: one statement for the contacts, one for the events and their queue
        // rows, whatever the batch size (seq follows the batch order).
        let mut tx = self.pool.begin().await?;
        if !new_contacts.is_empty() {
            sqlx::query(
                "INSERT INTO contacts (id, email, doc, version) \
                 SELECT *, 1 FROM UNNEST($1::text[], $2::text[], $3::text[]::json[]) ON CONFLICT (id) DO NOTHING",
            )
            .bind(new_contacts.iter().map(|c| c.id.as_str()).collect::<Vec<_>>())
            .bind(new_contacts.iter().map(|c| c.email.as_deref()).collect::<Vec<_>>())
            .bind(
                new_contacts
                    .iter()
                    .map(|c| to_json(&Contact { version: 1, ..c.clone() }))
                    .collect::<Vec<_>>(),
            )
            .execute(&mut *tx)
            .await?;
        }
        let mut out = Vec::with_capacity(events.len());
        if !events.is_empty() {
            let stored = insert_events_in(&mut tx, events).await?;
            // New: stored by this statement, first occurrence in the batch.
            let mut new: std::collections::HashSet<String> = stored.into_iter().collect();
            for e in events {
                out.push(if new.remove(&e.id) {
                    Inserted::New
                } else {
                    Inserted::Duplicate
                });
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn merge_contact(
        &self,
        from: &str,
        into: &str,
        at: Ts,
        source: &str,
    ) -> Result<Option<Merged>, StoreError> {
        let mut tx = self.pool.begin().await?;
        // `into` kept from being deleted until this commits: an erasure (which locks it
        // first) goes before, and then it is gone, or waits, and then finds the visitor
        // among its merges. Its key share lets the engine's updates of it go on.
        let stored: Option<i64> =
            sqlx::query_scalar("SELECT 1::bigint FROM contacts WHERE id = $1 FOR KEY SHARE")
                .bind(into)
                .fetch_optional(&mut *tx)
                .await?;
        if stored.is_none() {
            return Ok(None);
        }
        // Then the visitor's row, before its events and queue: an erasure of the visitor
        // or a unit of work of it (each locks that row before those) goes whole before or
        // after. Taking it last had them wait for each other: a deadlock (40P01).
        sqlx::query("SELECT 1 FROM contacts WHERE id = $1 FOR UPDATE")
            .bind(from)
            .execute(&mut *tx)
            .await?;
        // The merge row next: a concurrent merge of the same contact waits here, then
        // finds it merged.
        let inserted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO contact_merges (from_id, into_id, at, moved, source) \
             VALUES ($1, $2, $3, 0, $4) ON CONFLICT (from_id) DO NOTHING RETURNING 1::bigint",
        )
        .bind(from)
        .bind(into)
        .bind(at)
        .bind(source)
        .fetch_optional(&mut *tx)
        .await?;
        if inserted.is_none() {
            let into: String =
                sqlx::query_scalar("SELECT into_id FROM contact_merges WHERE from_id = $1")
                    .bind(from)
                    .fetch_one(&mut *tx)
                    .await?;
            return Ok(Some(Merged {
                into,
                moved: 0,
                already: true,
            }));
        }
        let moved = merge_in(&mut tx, from, into, at, source).await?;
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
        Ok(
            sqlx::query_as("SELECT from_id, into_id FROM contact_merges WHERE from_id = ANY($1)")
                .bind(ids)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn event_owners(
        &self,
        ids: &[String],
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(
            sqlx::query_as("SELECT id, contact, type FROM events WHERE id = ANY($1::text[])")
                .bind(ids)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    async fn pending_events(&self, limit: i64) -> Result<Vec<StoredEvent>, StoreError> {
        // Claim, for a lease, the oldest queued event of contacts whose older events are
        // all applied (rows another worker holds are skipped or leased), and with it the
        // contact's next queued events: nobody else can claim those while the oldest is
        // queued, since only a contact's oldest event is ever claimable. (Committed
        // without waiting for the disk, see `due_timers`.) The scan starts at the head or
        // after the last full claim's last head (see `inbox_from`).
        let n = self
            .inbox_claims
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let from = match n % INBOX_HEAD_EVERY {
            0 => None,
            _ => *self.inbox_from.lock().expect("inbox cursor lock"),
        };
        let after = match from {
            Some(_) => "AND (i.at, i.seq) > ($4, $5) ",
            None => "",
        };
        let sql = format!(
            "WITH nosync AS (SELECT set_config('synchronous_commit', 'off', true)), \
             heads AS (SELECT i.seq, i.contact, i.at FROM inbox i \
               WHERE (i.lease_until IS NULL OR i.lease_until < now()) {after}\
               AND NOT EXISTS (SELECT 1 FROM inbox o WHERE o.contact = i.contact \
                 AND (o.at, o.seq) < (i.at, i.seq) OFFSET 0) \
               ORDER BY i.at, i.seq LIMIT $1 FOR UPDATE SKIP LOCKED), \
             c AS (SELECT f.ctid FROM heads h, LATERAL (SELECT o.ctid FROM inbox o \
               WHERE o.contact = h.contact ORDER BY o.at, o.seq LIMIT $3) f), \
             claimed AS (UPDATE inbox i SET lease_until = now() + $2 * interval '1 second' \
               WHERE i.ctid = ANY(ARRAY(SELECT ctid FROM c)) RETURNING i.seq, i.at), \
             last AS (SELECT (SELECT count(*) FROM heads) AS heads, h.at AS last_at, \
               h.seq AS last_seq FROM heads h ORDER BY h.at DESC, h.seq DESC LIMIT 1) \
             SELECT e.seq, e.id, e.contact, e.type, e.at, e.data, \
               last.heads, last.last_at, last.last_seq \
             FROM nosync, last, claimed, \
             LATERAL (SELECT * FROM events WHERE seq = claimed.seq OFFSET 0) e \
             ORDER BY claimed.at, claimed.seq"
        );
        let mut q = sqlx::query(&sql)
            .bind(limit)
            .bind(self.lease.as_secs_f64())
            .bind(EVENTS_PER_CONTACT);
        if let Some((at, seq)) = from {
            q = q.bind(at).bind(seq);
        }
        let rows = q.fetch_all(&self.pool).await?;
        // A claim that filled its batch moves the cursor on (never back: lanes claim at
        // once); one that did not sends the next claim to the head.
        let end = match rows.first() {
            Some(r) if r.try_get::<i64, _>("heads")? >= limit => {
                Some((r.try_get("last_at")?, r.try_get("last_seq")?))
            }
            _ => None,
        };
        let mut cursor = self.inbox_from.lock().expect("inbox cursor lock");
        *cursor = end.map(|end: (Ts, i64)| cursor.map_or(end, |c| c.max(end)));
        drop(cursor);
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

    async fn contact_lines(
        &self,
        contact: &str,
        limit: i64,
    ) -> Result<Vec<JournalEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT run_id, contact, at, kind, data FROM (SELECT id, run_id, contact, at, kind, data \
             FROM journal WHERE contact = $1 AND run_id IS NULL ORDER BY id DESC LIMIT $2) j ORDER BY id",
        )
        .bind(contact)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        journal_rows(&rows)
    }

    async fn journal(&self, run_id: &str) -> Result<Vec<JournalEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT run_id, contact, at, kind, data FROM journal WHERE run_id = $1 ORDER BY id",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        journal_rows(&rows)
    }

    /// Claims due timers for a lease ([`nurture_store::lease`]): their due time moves past the lease, so other
    /// workers skip them (`SKIP LOCKED` while claiming); if this worker dies, they come
    /// due again when the lease ends. The run's version still fences the commit.
    /// A claim is committed without waiting for the disk (`synchronous_commit` off for
    /// its own transaction): a lease lost in a crash only makes its rows claimable again,
    /// as when it runs out, and the commit that applies them waits for the disk anyway,
    /// flushing the claim with it. It saves a disk flush per claim on the path from an
    /// event to its effect.
    async fn due_timers(&self, now: Ts, limit: i64) -> Result<Vec<DueTimer>, StoreError> {
        let rows = sqlx::query(
            "WITH nosync AS (SELECT set_config('synchronous_commit', 'off', true)), \
             due AS (SELECT ctid, run_id, due_at, contact FROM timers WHERE due_at <= $1 \
               ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED), \
             claimed AS (UPDATE timers SET due_at = $1 + $3 * interval '1 second' \
               WHERE ctid = ANY(ARRAY(SELECT ctid FROM due))) \
             SELECT d.run_id, d.due_at, \
               COALESCE(d.contact, (SELECT r.contact FROM runs r WHERE r.id = d.run_id)) AS contact \
             FROM nosync, due d ORDER BY d.due_at, d.run_id",
        )
        .bind(now)
        .bind(limit)
        .bind(self.lease.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DueTimer {
                    run_id: r.try_get("run_id")?,
                    due_at: r.try_get("due_at")?,
                    contact: r.try_get("contact")?,
                })
            })
            .collect()
    }

    async fn next_timer(&self) -> Result<Option<Ts>, StoreError> {
        Ok(sqlx::query_scalar("SELECT MIN(due_at) FROM timers")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Claims due segment timers for a lease, as [`Store::due_timers`] claims the runs'.
    async fn due_segment_timers(
        &self,
        now: Ts,
        limit: i64,
    ) -> Result<Vec<(String, Ts)>, StoreError> {
        let rows = sqlx::query(
            "WITH nosync AS (SELECT set_config('synchronous_commit', 'off', true)), \
             due AS (SELECT contact, due_at FROM segment_timers WHERE due_at <= $1 \
               ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED), \
             claimed AS (UPDATE segment_timers s SET due_at = $1 + $3 * interval '1 second' \
               FROM due WHERE s.contact = due.contact) \
             SELECT d.contact, d.due_at FROM nosync, due d ORDER BY d.due_at, d.contact",
        )
        .bind(now)
        .bind(limit)
        .bind(self.lease.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("contact")?, r.try_get("due_at")?)))
            .collect()
    }

    async fn next_segment_timer(&self) -> Result<Option<Ts>, StoreError> {
        Ok(sqlx::query_scalar("SELECT MIN(due_at) FROM segment_timers")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn segment_timer(&self, contact: &str) -> Result<Option<Ts>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT due_at FROM segment_timers WHERE contact = $1")
                .bind(contact)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn segment_members(
        &self,
        segment: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT contact FROM segment_members WHERE segment = $1 AND contact > $2 \
             ORDER BY contact LIMIT $3",
        )
        .bind(segment)
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(&self.pool)
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

    fn empty_claims_cost(&self) -> bool {
        true
    }

    fn lease(&self) -> Duration {
        self.lease
    }

    fn parallelism(&self) -> usize {
        self.lanes.load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn heartbeat(&self, id: &str, host: &str, pid: u32) -> Result<usize, StoreError> {
        // The database's clock, not the workers' (which may disagree). Rows of workers
        // gone for an hour are dropped on the way.
        let others: i64 = sqlx::query_scalar(
            "WITH others AS (SELECT count(*) AS n FROM workers \
               WHERE seen_at > now() - $5 * interval '1 second' AND id <> $1), \
             me AS (INSERT INTO workers (id, host, pid, started_at, seen_at, lanes) \
               VALUES ($1, $2, $3, now(), now(), greatest(1, $4 / ((SELECT n FROM others) + 1))) \
               ON CONFLICT (id) DO UPDATE SET seen_at = now(), lanes = excluded.lanes), \
             gone AS (DELETE FROM workers WHERE seen_at < now() - interval '1 hour') \
             SELECT n FROM others",
        )
        .bind(id)
        .bind(host)
        .bind(pid as i32)
        .bind(self.budget as i64)
        .bind(WORKER_ALIVE.as_secs_f64())
        .fetch_one(&self.pool)
        .await?;
        self.ensure_months().await?;
        let alive = others as usize + 1;
        self.lanes.store(
            (self.budget / alive).max(1),
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(alive)
    }

    async fn retire(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM workers WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, host, pid, started_at, seen_at, lanes, note FROM workers \
             WHERE seen_at > now() - $1 * interval '1 second' ORDER BY started_at, id",
        )
        .bind(WORKER_ALIVE.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(WorkerInfo {
                    id: r.try_get("id")?,
                    host: r.try_get("host")?,
                    pid: r.try_get::<i32, _>("pid")? as u32,
                    started_at: r.try_get("started_at")?,
                    seen_at: r.try_get("seen_at")?,
                    lanes: r.try_get::<i32, _>("lanes")? as usize,
                    note: r.try_get("note")?,
                })
            })
            .collect()
    }

    /// One transaction of set-based statements, whatever the number of units merged into
    /// `uow` (group commit): multi-row writes through `UNNEST`, and fencing by comparing
    /// the rows each statement touched with the rows it was given.
    async fn probe_write(&self) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO counters (name, value) VALUES ($1, 1) \
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

    /// Claims due outbox entries for a lease ([`nurture_store::lease`]) (see `due_timers`, also for
    /// why the claim does not wait for the disk): two workers never deliver the same entry
    /// at once; a crashed worker's entries come back after the lease.
    async fn pending_outbox(&self, now: Ts, limit: i64) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            "WITH nosync AS (SELECT set_config('synchronous_commit', 'off', true)), \
             due AS (SELECT key, due_at FROM outbox_pending WHERE due_at <= $1 \
               ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED), \
             claimed AS (UPDATE outbox_pending SET due_at = $1 + $3 * interval '1 second' \
               WHERE key = ANY(ARRAY(SELECT key FROM due))) \
             SELECT o.key, o.run_id, o.contact, o.workflow, o.step, o.kind, o.payload, \
             o.created_at, d.due_at, o.attempts FROM nosync, due d, \
             LATERAL (SELECT * FROM outbox WHERE key = d.key OFFSET 0) o \
             ORDER BY d.due_at, o.created_at, o.key",
        )
        .bind(now)
        .bind(limit)
        .bind(self.lease.as_secs_f64())
        .fetch_all(&mut *tx)
        .await?;
        let mut out: Vec<OutboxEntry> = rows
            .iter()
            .map(|r| {
                Ok(OutboxEntry {
                    key: r.try_get("key")?,
                    run_id: r.try_get("run_id")?,
                    contact: r.try_get("contact")?,
                    workflow: r.try_get("workflow")?,
                    step: r.try_get("step")?,
                    kind: r.try_get::<String, _>("kind")?.into(),
                    payload: r.try_get("payload")?,
                    created_at: r.try_get("created_at")?,
                    due_at: r.try_get("due_at")?,
                    attempts: r.try_get("attempts")?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        // Claimed emails to suppressed addresses are skipped, in the claiming transaction.
        let emails: Vec<&str> = out
            .iter()
            .filter(|e| e.kind == "email")
            .map(|e| e.key.as_str())
            .collect();
        if !emails.is_empty() {
            let skipped = skip_suppressed(&mut tx, &emails, now).await?;
            out.retain(|e| !skipped.contains(&e.key));
        }
        // The send limits: entries beyond them are deferred instead of claimed.
        let limits = self.send_limits();
        if !limits.is_empty() {
            let all: Vec<&OutboxEntry> = out.iter().collect();
            let deferred = limits::enforce_postgres(&mut tx, &limits, now, &all).await?;
            deferrals_in(&mut tx, all.iter().copied(), &deferred, now).await?;
            out.retain(|e| !deferred.iter().any(|d| d.key == e.key));
        }
        tx.commit().await?;
        Ok(out)
    }

    fn set_send_limits(&self, limits: limits::SendLimits) {
        *self.limits.write().expect("limits lock") = std::sync::Arc::new(limits);
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
        let item = [(key.to_string(), outcome.clone())];
        for r in complete_in(&mut tx, &item, now).await? {
            r?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// One transaction for all: one disk sync for a whole wave of deliveries.
    async fn complete_outbox_many(
        &self,
        items: &[(String, OutboxOutcome)],
        now: Ts,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        self.complete_outbox_waking(items, &[], now).await
    }

    async fn complete_outbox_waking(
        &self,
        items: &[(String, OutboxOutcome)],
        wakes: &[(String, NewEvent)],
        now: Ts,
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let mut tx = self.pool.begin().await?;
        // A stale completion is found before any write: the others go on.
        let mut out = complete_in(&mut tx, items, now).await?;
        if let Some(i) = out
            .iter()
            .position(|r| matches!(r, Err(StoreError::Corrupt(_))))
        {
            return Err(out.swap_remove(i).expect_err("an error"));
        }
        if !wakes.is_empty() {
            let woken: Vec<NewEvent> = items
                .iter()
                .zip(&out)
                .filter(|(_, r)| r.is_ok())
                .flat_map(|((key, _), _)| wakes.iter().filter(move |(k, _)| k == key))
                .map(|(_, e)| e.clone())
                .collect();
            if !woken.is_empty() {
                insert_events_in(&mut tx, &woken).await?;
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn suppress(&self, address: &str, reason: &str, now: Ts) -> Result<bool, StoreError> {
        let r = sqlx::query(
            "INSERT INTO suppressions (address, reason, at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(address.trim().to_lowercase())
        .bind(reason)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    async fn suppression(&self, address: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT reason FROM suppressions WHERE address IN ($1, $2) LIMIT 1")
                .bind(address.trim().to_lowercase())
                .bind(nurture_store::privacy::suppression_hash(
                    &self.salt, address,
                ))
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn emails_since(&self, contact: &str, since: Ts) -> Result<Vec<Ts>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT at FROM deliveries WHERE contact = $1 AND kind = 'email' AND at >= $2 ORDER BY at",
        )
        .bind(contact)
        .bind(since)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn requeue_outbox(&self, key: &str, now: Ts) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(
            "UPDATE outbox SET state = 'pending', due_at = $2, attempts = 0, last_error = NULL \
             WHERE key = $1 \
             AND state IN ('ambiguous', 'failed')",
        )
        .bind(key)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 1 {
            sqlx::query("INSERT INTO outbox_pending (key, due_at) VALUES ($1, $2)")
                .bind(key)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
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
        Ok(
            sqlx::query_scalar("SELECT state FROM outbox WHERE key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?,
        )
    }
}

/// Turns the claimed `email` entries among `keys` whose address is on the suppression list
/// into `skipped`, with an `email_skipped` effect in the journal, inside `tx` (the claiming
/// transaction: an unsubscribe committed before the claim always wins); returns their keys.
/// The segment timers and memberships of a commit ([`UnitOfWork::segment_timers`],
/// [`UnitOfWork::segment_members`]), a statement each kind at most.
async fn segments_in(tx: &mut sqlx::PgConnection, uow: &UnitOfWork) -> Result<(), StoreError> {
    if !uow.segment_timers.is_empty() {
        // Last write per contact wins, as when applied one by one.
        let mut last: std::collections::BTreeMap<&str, Option<Ts>> = Default::default();
        for (c, due) in &uow.segment_timers {
            last.insert(c.as_str(), *due);
        }
        let clear: Vec<&str> = last
            .iter()
            .filter(|(_, d)| d.is_none())
            .map(|(c, _)| *c)
            .collect();
        let (set, due): (Vec<&str>, Vec<Ts>) =
            last.iter().filter_map(|(c, d)| d.map(|d| (*c, d))).unzip();
        if !clear.is_empty() {
            sqlx::query("DELETE FROM segment_timers WHERE contact = ANY($1)")
                .bind(&clear)
                .execute(&mut *tx)
                .await?;
        }
        if !set.is_empty() {
            sqlx::query(
                "INSERT INTO segment_timers (contact, due_at) \
                 SELECT * FROM UNNEST($1::text[], $2::timestamptz[]) \
                 ON CONFLICT (contact) DO UPDATE SET due_at = excluded.due_at",
            )
            .bind(&set)
            .bind(&due)
            .execute(&mut *tx)
            .await?;
        }
    }
    if !uow.segment_members.is_empty() {
        let (join, leave): (Vec<_>, Vec<_>) = uow.segment_members.iter().partition(|m| m.2);
        let cols = |v: &[&(String, String, bool)]| -> (Vec<String>, Vec<String>) {
            v.iter().map(|m| (m.0.clone(), m.1.clone())).unzip()
        };
        let (ls, lc) = cols(&leave);
        if !ls.is_empty() {
            sqlx::query(
                "DELETE FROM segment_members m USING UNNEST($1::text[], $2::text[]) AS u(s, c) \
                 WHERE m.segment = u.s AND m.contact = u.c",
            )
            .bind(&ls)
            .bind(&lc)
            .execute(&mut *tx)
            .await?;
        }
        let (js, jc) = cols(&join);
        if !js.is_empty() {
            sqlx::query(
                "INSERT INTO segment_members (segment, contact) \
                 SELECT * FROM UNNEST($1::text[], $2::text[]) ON CONFLICT DO NOTHING",
            )
            .bind(&js)
            .bind(&jc)
            .execute(&mut *tx)
            .await?;
        }
    }
    Ok(())
}

/// What a claim's send limits held back (`deferred` of `entries`): their report counts and
/// a journal line each naming the rule ([`nurture_store::held::deferral_lines`]).
async fn deferrals_in<'a>(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    entries: impl IntoIterator<Item = &'a OutboxEntry> + Clone,
    deferred: &[limits::Deferral],
    now: Ts,
) -> Result<(), StoreError> {
    if deferred.is_empty() {
        return Ok(());
    }
    let held = nurture_store::counts::deferrals(entries.clone(), deferred, now);
    counts::tallies_in(tx, &held).await?;
    journal_in(
        tx,
        &nurture_store::held::deferral_lines(entries, deferred, now),
    )
    .await
}

async fn skip_suppressed(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    keys: &[&str],
    now: Ts,
) -> Result<Vec<String>, StoreError> {
    let rows = sqlx::query(
        "WITH sup AS (SELECT o.key, s.reason FROM outbox o \
           JOIN suppressions s ON s.address = lower(o.payload->>'to') WHERE o.key = ANY($1)), \
         gone AS (DELETE FROM outbox_pending p USING sup WHERE p.key = sup.key) \
         UPDATE outbox o SET state = 'skipped', last_error = 'suppressed: ' || sup.reason \
           FROM sup WHERE o.key = sup.key \
           RETURNING o.key, o.run_id, o.contact, o.step, o.payload->>'template' AS template, \
             sup.reason",
    )
    .bind(keys)
    .fetch_all(&mut **tx)
    .await?;
    let skipped = rows
        .iter()
        .map(|r| {
            Ok(nurture_store::held::SuppressedSend {
                key: r.try_get("key")?,
                run_id: r.try_get("run_id")?,
                contact: r.try_get("contact")?,
                step: r.try_get("step")?,
                template: r.try_get("template")?,
                reason: r.try_get("reason")?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    // Through the journal's writer: encoded as every other line.
    let lines: Vec<_> = skipped.iter().map(|s| s.line(now)).collect();
    journal_in(tx, &lines).await?;
    let tallies: Vec<_> = skipped
        .iter()
        .map(|s| nurture_store::counts::message(&s.key, "email.skipped.suppressed", now))
        .collect();
    counts::tallies_in(tx, &tallies).await?;
    Ok(skipped.into_iter().map(|s| s.key).collect())
}

/// The writes of [`Store::merge_contact`] inside `tx` (its merge row inserted); returns
/// how many events moved.
async fn merge_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    from: &str,
    into: &str,
    at: Ts,
    source: &str,
) -> Result<u64, StoreError> {
    let moved: i64 = sqlx::query_scalar(
        "WITH m AS (UPDATE events SET contact = $2 WHERE contact = $1 AND type <> 'contact.created' \
           RETURNING seq, at), \
         q AS (INSERT INTO inbox (seq, contact, at) SELECT seq, $2, at FROM m \
           ON CONFLICT (seq) DO UPDATE SET contact = EXCLUDED.contact, lease_until = NULL) \
         SELECT count(*) FROM m",
    )
    .bind(from)
    .bind(into)
    .fetch_one(&mut **tx)
    .await?;
    // Its `contact.created` (kept) leaves the queue: the visitor is gone, and applying it
    // would create the visitor again.
    for table in ["segment_members", "segment_timers", "inbox"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE contact = $1"))
            .bind(from)
            .execute(&mut **tx)
            .await?;
    }
    sqlx::query("DELETE FROM contacts WHERE id = $1")
        .bind(from)
        .execute(&mut **tx)
        .await?;
    sqlx::query("UPDATE contact_merges SET moved = $2 WHERE from_id = $1")
        .bind(from)
        .bind(moved)
        .execute(&mut **tx)
        .await?;
    let data = serde_json::json!({"from": from, "moved": moved, "source": source});
    sqlx::query(
        "INSERT INTO journal (run_id, contact, at, kind, data) VALUES (NULL, $1, $2, 'merged', $3)",
    )
    .bind(into)
    .bind(at)
    .bind(nurture_store::encoding::encode(&to_json(&data)))
    .execute(&mut **tx)
    .await?;
    Ok(moved as u64)
}

/// Stores `events` (idempotent by id) and queues the new ones, inside `tx`, in one
/// statement; returns the ids stored by it.
async fn insert_events_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    events: &[NewEvent],
) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "WITH ins AS (INSERT INTO events (id, contact, type, at, data) \
           SELECT id, contact, type, at, data FROM UNNEST($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::jsonb[]) \
           WITH ORDINALITY AS u(id, contact, type, at, data, n) ORDER BY n \
           ON CONFLICT (id) DO NOTHING RETURNING seq, id, contact, at), \
         q AS (INSERT INTO inbox (seq, contact, at) SELECT seq, contact, at FROM ins) \
         SELECT id FROM ins",
    )
    .bind(events.iter().map(|e| e.id.as_str()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.contact.as_str()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.at).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.data.clone()).collect::<Vec<_>>())
    .fetch_all(&mut **tx)
    .await?)
}

/// The writes of a set of outbox completions (distinct keys), inside `tx`, in a few
/// set-based statements whatever their number: per item, `Ok` or the `Conflict` of a
/// stale completion (the entry was completed elsewhere: nothing of it is written).
async fn complete_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    items: &[(String, OutboxOutcome)],
    now: Ts,
) -> Result<Vec<Result<(), StoreError>>, StoreError> {
    let keys: Vec<&str> = items.iter().map(|(k, _)| k.as_str()).collect();
    // Claim the pending rows: a second (stale) completion finds nothing to claim.
    let claimed: Vec<String> =
        sqlx::query_scalar("DELETE FROM outbox_pending WHERE key = ANY($1) RETURNING key")
            .bind(&keys)
            .fetch_all(&mut **tx)
            .await?;
    let claimed: std::collections::HashSet<&str> = claimed.iter().map(String::as_str).collect();
    let mut out: Vec<Result<(), StoreError>> = Vec::with_capacity(items.len());
    let stale: Vec<&str> = keys
        .iter()
        .copied()
        .filter(|k| !claimed.contains(k))
        .collect();
    let states: std::collections::HashMap<String, String> = if stale.is_empty() {
        Default::default()
    } else {
        sqlx::query_as("SELECT key, state FROM outbox WHERE key = ANY($1)")
            .bind(&stale)
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .collect()
    };
    outcome_tallies(tx, items, &claimed, now).await?;
    let mut delivered: (Vec<&str>, Vec<&Value>) = Default::default();
    // Retries and deferrals: key, reason, due again at, attempts added.
    let mut again: (Vec<&str>, Vec<&str>, Vec<Ts>, Vec<i32>) = Default::default();
    // Failed for good or ambiguous: key, reason, state.
    let mut ended: (Vec<&str>, Vec<&str>, Vec<&str>) = Default::default();
    for (key, outcome) in items {
        if !claimed.contains(key.as_str()) {
            out.push(Err(match states.get(key) {
                Some(s) => {
                    StoreError::conflict_on(ConflictKind::OutboxEntry, format!("{key} is {s}"))
                }
                None => StoreError::Corrupt(format!("no outbox entry {key}")),
            }));
            continue;
        }
        out.push(Ok(()));
        match outcome {
            OutboxOutcome::Delivered { record } => {
                delivered.0.push(key);
                delivered.1.push(record);
            }
            OutboxOutcome::Retry { reason, retry_at } => {
                again.0.push(key);
                again.1.push(reason);
                again.2.push(*retry_at);
                again.3.push(1);
            }
            OutboxOutcome::Defer { reason, until } => {
                again.0.push(key);
                again.1.push(reason);
                again.2.push(*until);
                again.3.push(0);
            }
            OutboxOutcome::Failed { reason } => {
                ended.0.push(key);
                ended.1.push(reason);
                ended.2.push("failed");
            }
            OutboxOutcome::Ambiguous { reason } => {
                ended.0.push(key);
                ended.1.push(reason);
                ended.2.push("ambiguous");
            }
        }
    }
    if !delivered.0.is_empty() {
        sqlx::query(
            "INSERT INTO deliveries (key, kind, contact, at, record) \
             SELECT o.key, o.kind, o.contact, $3, u.record \
             FROM UNNEST($1::text[], $2::jsonb[]) AS u(key, record), \
             LATERAL (SELECT key, kind, contact FROM outbox WHERE key = u.key) o",
        )
        .bind(&delivered.0)
        .bind(&delivered.1)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "UPDATE outbox SET state = 'delivered', attempts = attempts + 1 WHERE key = ANY($1)",
        )
        .bind(&delivered.0)
        .execute(&mut **tx)
        .await?;
    }
    if !again.0.is_empty() {
        sqlx::query(
            "UPDATE outbox o SET attempts = o.attempts + u.inc, last_error = u.reason, due_at = u.due \
             FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::int[]) AS u(key, reason, due, inc) \
             WHERE o.key = u.key",
        )
        .bind(&again.0)
        .bind(&again.1)
        .bind(&again.2)
        .bind(&again.3)
        .execute(&mut **tx)
        .await?;
        sqlx::query(
            "INSERT INTO outbox_pending (key, due_at) SELECT * FROM UNNEST($1::text[], $2::timestamptz[])",
        )
        .bind(&again.0)
        .bind(&again.2)
        .execute(&mut **tx)
        .await?;
    }
    if !ended.0.is_empty() {
        sqlx::query(
            "UPDATE outbox o SET state = u.state, attempts = o.attempts + 1, last_error = u.reason \
             FROM UNNEST($1::text[], $2::text[], $3::text[]) AS u(key, reason, state) \
             WHERE o.key = u.key",
        )
        .bind(&ended.0)
        .bind(&ended.1)
        .bind(&ended.2)
        .execute(&mut **tx)
        .await?;
    }
    // Not sent (sent maybe: ambiguous, still counts): no longer counted by the cap.
    let unsent: Vec<&str> = again
        .0
        .iter()
        .chain(
            ended
                .0
                .iter()
                .zip(&ended.2)
                .filter(|(_, s)| **s == "failed")
                .map(|(k, _)| k),
        )
        .copied()
        .collect();
    if !unsent.is_empty() {
        sqlx::query("DELETE FROM contact_sends WHERE key = ANY($1)")
            .bind(&unsent)
            .execute(&mut **tx)
            .await?;
    }
    Ok(out)
}

/// Journal rows (`run_id, contact, at, kind, data`) as entries.
pub(crate) fn journal_rows(
    rows: &[sqlx::postgres::PgRow],
) -> Result<Vec<JournalEntry>, StoreError> {
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        unpack_journal(
            r.try_get("run_id")?,
            r.try_get("contact")?,
            r.try_get("at")?,
            r.try_get("kind")?,
            nurture_store::encoding::decode(r.try_get::<&[u8], _>("data")?)?,
            &mut out,
        )?;
    }
    Ok(out)
}
