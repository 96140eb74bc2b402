//! The errors of a store, classified by what the caller can do about them.
//!
//! Database errors are classified by their code, never by their text: Postgres' SQLSTATE
//! and SQLite's extended result code (`sqlx::error::DatabaseError::code`), and sqlx's own
//! variants for a connection that cannot be made or kept. Two questions decide what a
//! caller does: [`StoreError::is_retryable`] (can trying again help?) and
//! [`StoreError::is_unavailable`] (the store could not be reached or could not take the
//! write now, and nothing was stored: an HTTP API answers 503 with `Retry-After`; any
//! other failure is internal, 500). The driver's error stays the source of every variant
//! that comes from one.

use std::sync::Arc;

/// What conflicted: the row (or the unique key) a commit found changed or taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConflictKind {
    /// A contact's row version moved on, or its id was taken by a concurrent insert.
    Contact,
    /// Another contact has this email address (the unique email key).
    ContactEmail,
    /// A run's row version moved on, or its id was taken by a concurrent insert.
    Run,
    /// An event id that is already stored with other content (the events' unique id).
    EventId,
    /// A queued event is already applied, or an older one of its contact is still queued.
    QueuedEvent,
    /// A counter changed since it was read.
    Counter,
    /// An outbox entry was completed elsewhere (its lease ran out and another worker took
    /// it): a stale completion.
    OutboxEntry,
    /// A deploy planned against a workflow's latest version that another deploy moved
    /// on, or a version already stored with other content.
    WorkflowVersion,
    /// A unique key this store does not name.
    Other,
}

impl ConflictKind {
    /// The conflict as error messages name it (`contact`, `contact email`, `run`...).
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictKind::Contact => "contact",
            ConflictKind::ContactEmail => "contact email",
            ConflictKind::Run => "run",
            ConflictKind::EventId => "event id",
            ConflictKind::QueuedEvent => "queued event",
            ConflictKind::Counter => "counter",
            ConflictKind::OutboxEntry => "outbox entry",
            ConflictKind::WorkflowVersion => "workflow version",
            ConflictKind::Other => "row",
        }
    }

    /// What a Postgres unique constraint (by its name, from the error's fields) guards.
    fn of_constraint(name: &str) -> ConflictKind {
        match name {
            "contacts_pkey" => ConflictKind::Contact,
            "contacts_email_key" => ConflictKind::ContactEmail,
            "events_id_key" => ConflictKind::EventId,
            "inbox_pkey" => ConflictKind::QueuedEvent,
            "runs_pkey" => ConflictKind::Run,
            "counters_pkey" => ConflictKind::Counter,
            "workflow_versions_pkey" => ConflictKind::WorkflowVersion,
            "outbox_pkey" | "outbox_pending_pkey" | "deliveries_pkey" | "contact_sends_pkey" => {
                ConflictKind::OutboxEntry
            }
            _ => ConflictKind::Other,
        }
    }
}

impl std::fmt::Display for ConflictKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the store is unavailable (every reason is worth a retry later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Unavailability {
    /// No connection: refused, broken, timed out waiting for one, the pool closed, the
    /// server shutting down or starting, the database gone (Postgres class 08,
    /// 57P01-57P03, 3D000).
    Unreachable,
    /// Locked by another writer past the wait (SQLITE_BUSY, SQLITE_LOCKED; Postgres
    /// 55P03 lock not available, 57014 statement cancelled).
    Busy,
    /// The transaction lost to a concurrent one (Postgres 40001 serialization failure,
    /// 40P01 deadlock, and 23514 for a journal row routed to `journal_default` while the
    /// month's own partition was being attached: routed again, it lands there).
    Contention,
    /// Out of disk, memory or connections (Postgres class 53 and 58030; SQLITE_FULL,
    /// SQLITE_NOMEM, SQLITE_IOERR).
    Resources,
}

impl std::fmt::Display for Unavailability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unavailability::Unreachable => "unreachable",
            Unavailability::Busy => "busy",
            Unavailability::Contention => "lost to a concurrent transaction",
            Unavailability::Resources => "out of resources",
        })
    }
}

/// A store configuration the store refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A Postgres schema name outside `[a-z_][a-z0-9_]*` (at most 63 bytes, not `pg_...`).
    #[error(
        "invalid schema name {0:?}: use lower-case letters, digits and `_`, starting with a \
         letter or `_`, at most 63 characters, not starting with `pg_`"
    )]
    SchemaName(String),
    /// A store URL of no known kind.
    #[error("unsupported store URL {0:?}: use sqlite://FILE or postgres://USER@HOST/DB")]
    UnsupportedUrl(String),
    /// A pool of no connections, or a store of no lanes.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
}

/// Errors of a store. [`StoreError::is_retryable`] says whether trying again can help,
/// [`StoreError::is_unavailable`] whether the store was unreachable (nothing stored).
///
/// Cheap to clone: the driver's error is shared (`Arc`), so one failure can be answered
/// to every request of a batch, each keeping the source.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A row changed since it was read (another worker, a stale lease), or a unique key
    /// is taken: reload, retry.
    #[error("conflict: {what} {detail}")]
    Conflict {
        /// What conflicted.
        what: ConflictKind,
        /// Which one (an id, a key), or how many rows of a batch were current.
        detail: String,
        /// The unique violation, when the database reported one.
        #[source]
        source: Option<Arc<sqlx::Error>>,
    },
    /// The database could not be reached or could not take the work now; nothing was
    /// stored.
    #[error("database unavailable ({reason}){}", code_suffix(source))]
    Unavailable {
        /// Why, as the error's code or sqlx's variant tells.
        reason: Unavailability,
        /// The driver's error.
        #[source]
        source: Arc<sqlx::Error>,
    },
    /// A stored value cannot be decoded.
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// A stored document is not the JSON its type expects.
    #[error("corrupt data: a stored {what} does not decode")]
    Document {
        /// What the document should be (e.g. `contact`, `run`).
        what: &'static str,
        /// Why it does not decode.
        #[source]
        source: Arc<serde_json::Error>,
    },
    /// A stored timestamp is not RFC 3339.
    #[error("corrupt data: bad timestamp {value:?}")]
    Timestamp {
        /// The stored text.
        value: String,
        /// Why it does not parse.
        #[source]
        source: chrono::ParseError,
    },
    /// A value to store is over the store's bound for it (e.g. a workflow version's
    /// source over [`crate::versions::MAX_SOURCE`]): refused before any write, nothing
    /// stored. A retry does not help.
    #[error("{what} is too large: {size} bytes, at most {limit}")]
    TooLarge {
        /// What is too large (e.g. `workflow source of welcome v2`).
        what: String,
        /// Its size in bytes.
        size: usize,
        /// The bound, in bytes.
        limit: usize,
    },
    /// The configuration is refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An operation this store does not offer: the in-memory store of simulations
    /// (`nurture-store-memory`) keeps only what a simulation uses.
    #[error("the {store} store does not support {what}")]
    Unsupported {
        /// Which store.
        store: &'static str,
        /// What it was asked to do.
        what: &'static str,
    },
    /// The migrations could not be applied (the database was reachable).
    #[error("migration failed")]
    Migration(#[source] Arc<sqlx::migrate::MigrateError>),
    /// Any other database error (a constraint, a statement the database refused, a value
    /// that does not decode): a retry does not help.
    #[error("database error{}", code_suffix(source))]
    Database {
        /// The driver's error.
        #[source]
        source: Arc<sqlx::Error>,
    },
    /// An error whose text quoted a secret of the store URL, with the secret masked (the
    /// driver's error cannot be edited, so it is replaced by its cleaned text).
    #[error("{message}")]
    Redacted {
        /// The whole error chain's text, the secrets masked.
        message: String,
        /// What [`StoreError::is_retryable`] said of the original error.
        retryable: bool,
        /// What [`StoreError::is_unavailable`] said of the original error.
        unavailable: bool,
    },
}

/// ` [CODE]` for a database error with a code (SQLSTATE, SQLite result code): stable and
/// free of data, unlike the message (which is in the source).
fn code_suffix(e: &sqlx::Error) -> String {
    match e.as_database_error().and_then(|d| d.code()) {
        Some(code) => format!(" [{code}]"),
        None => String::new(),
    }
}

impl StoreError {
    /// Whether trying again (reloading what was read) can help: conflicts and an
    /// unavailable store.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Conflict { .. } | StoreError::Unavailable { .. } => true,
            StoreError::Redacted { retryable, .. } => *retryable,
            _ => false,
        }
    }

    /// Whether the store could not be reached or could not take the work now, so that
    /// nothing was stored (an HTTP API answers 503 with `Retry-After`). Anything else that
    /// is not a conflict is an internal failure (500).
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Unavailable { .. } => true,
            StoreError::Redacted { unavailable, .. } => *unavailable,
            _ => false,
        }
    }

    /// Whether the database ended the transaction to let a concurrent one go (a deadlock,
    /// a serialization failure): nothing was stored, and doing it again, or in smaller
    /// parts, goes through.
    pub fn is_contention(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable {
                reason: Unavailability::Contention,
                ..
            }
        )
    }

    /// What conflicted, for a conflict.
    pub fn conflict(&self) -> Option<ConflictKind> {
        match self {
            StoreError::Conflict { what, .. } => Some(*what),
            _ => None,
        }
    }

    /// A conflict the store found itself (fencing: fewer rows current than expected).
    pub fn conflict_on(what: ConflictKind, detail: impl Into<String>) -> StoreError {
        StoreError::Conflict {
            what,
            detail: detail.into(),
            source: None,
        }
    }

    /// `e` classified, a unique violation being a conflict on `what` (the store knows
    /// which row its statement wrote; `detail` names it).
    pub fn unique_as(
        e: sqlx::Error,
        what: impl FnOnce(Unique) -> ConflictKind,
        detail: impl Into<String>,
    ) -> StoreError {
        match unique_violation(&e) {
            Some(u) => StoreError::Conflict {
                what: what(u),
                detail: detail.into(),
                source: Some(Arc::new(e)),
            },
            None => e.into(),
        }
    }

    /// A document that does not decode as a `what`.
    pub fn document(what: &'static str, e: serde_json::Error) -> StoreError {
        StoreError::Document {
            what,
            source: Arc::new(e),
        }
    }
}

/// Which unique key a violation was on, as far as the code tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unique {
    /// The primary key (SQLITE_CONSTRAINT_PRIMARYKEY; a Postgres `*_pkey` constraint).
    PrimaryKey,
    /// Another unique key (SQLITE_CONSTRAINT_UNIQUE; any other Postgres constraint).
    Other,
}

/// SQLite extended result codes (<https://www.sqlite.org/rescode.html>).
mod sqlite_code {
    pub(super) const BUSY: i64 = 5;
    pub(super) const LOCKED: i64 = 6;
    pub(super) const NOMEM: i64 = 7;
    pub(super) const IOERR: i64 = 10;
    pub(super) const FULL: i64 = 13;
    pub(super) const CANTOPEN: i64 = 14;
    pub(super) const CONSTRAINT_PRIMARYKEY: i64 = 1555;
    pub(super) const CONSTRAINT_UNIQUE: i64 = 2067;
}

/// A database error's code, by backend (a SQLSTATE may be all digits: `40001`).
#[derive(Debug, Clone, PartialEq)]
enum DbCode {
    /// SQLite's extended result code.
    Sqlite(i64),
    /// Postgres' SQLSTATE.
    Postgres(String),
}

fn db_code(e: &sqlx::Error) -> Option<DbCode> {
    let d = e.as_database_error()?;
    let code = d.code()?;
    if d.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        code.parse().ok().map(DbCode::Sqlite)
    } else {
        Some(DbCode::Postgres(code.into_owned()))
    }
}

/// The unique violation `e` is, if it is one: SQLite 1555 / 2067, Postgres 23505.
fn unique_violation(e: &sqlx::Error) -> Option<Unique> {
    match db_code(e)? {
        DbCode::Postgres(c) if c == "23505" => {
            Some(match e.as_database_error().and_then(|d| d.constraint()) {
                Some(c) if c.ends_with("_pkey") => Unique::PrimaryKey,
                _ => Unique::Other,
            })
        }
        DbCode::Sqlite(sqlite_code::CONSTRAINT_PRIMARYKEY) => Some(Unique::PrimaryKey),
        DbCode::Sqlite(sqlite_code::CONSTRAINT_UNIQUE) => Some(Unique::Other),
        _ => None,
    }
}

/// Why a database error with `code` makes the store unavailable, if it does.
fn unavailability(code: &DbCode) -> Option<Unavailability> {
    let code = match code {
        // SQLite: the primary code is the low byte of the extended one.
        DbCode::Sqlite(n) => {
            return match n & 0xff {
                sqlite_code::BUSY | sqlite_code::LOCKED => Some(Unavailability::Busy),
                sqlite_code::FULL | sqlite_code::NOMEM | sqlite_code::IOERR => {
                    Some(Unavailability::Resources)
                }
                sqlite_code::CANTOPEN => Some(Unavailability::Unreachable),
                _ => None,
            }
        }
        DbCode::Postgres(c) => c.as_str(),
    };
    // Postgres SQLSTATE (<https://www.postgresql.org/docs/current/errcodes-appendix.html>).
    match code {
        "40001" | "40P01" => Some(Unavailability::Contention),
        "55P03" | "57014" => Some(Unavailability::Busy),
        // The server shutting down, starting, the database gone (dropped), or not
        // accepting connections (55000: `ALLOW_CONNECTIONS false`).
        "57P01" | "57P02" | "57P03" | "3D000" | "55000" => Some(Unavailability::Unreachable),
        "58030" => Some(Unavailability::Resources),
        c if c.starts_with("08") => Some(Unavailability::Unreachable),
        c if c.starts_with("53") => Some(Unavailability::Resources),
        _ => None,
    }
}

/// Whether `e` is SQLite's busy or locked (or another lock wait given up), by its code.
pub fn is_busy(e: &sqlx::Error) -> bool {
    unavailable_reason(e) == Some(Unavailability::Busy)
}

/// Why `e` makes the store unavailable, if it does: sqlx's variants for a connection that
/// cannot be made or kept, and the database's codes.
fn unavailable_reason(e: &sqlx::Error) -> Option<Unavailability> {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Some(Unavailability::Unreachable),
        sqlx::Error::Database(_) if lost_the_month(e) => Some(Unavailability::Contention),
        sqlx::Error::Database(_) => db_code(e).as_ref().and_then(unavailability),
        _ => None,
    }
}

/// Whether `e` is Postgres refusing a journal row in the default partition (23514 on
/// `journal_default`): the row was routed there while compaction was moving its month
/// into a partition of its own, and waited for that move; the constraint of the default
/// partition changed meanwhile. The same write tried again is routed to the new
/// partition.
fn lost_the_month(e: &sqlx::Error) -> bool {
    let Some(d) = e.as_database_error() else {
        return false;
    };
    d.code().as_deref() == Some("23514") && d.table() == Some("journal_default")
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if let Some(reason) = unavailable_reason(&e) {
            return StoreError::Unavailable {
                reason,
                source: Arc::new(e),
            };
        }
        if unique_violation(&e).is_some() {
            let constraint = e
                .as_database_error()
                .and_then(|d| d.constraint())
                .map(str::to_string);
            let what = constraint
                .as_deref()
                .map_or(ConflictKind::Other, ConflictKind::of_constraint);
            return StoreError::Conflict {
                what,
                detail: constraint.unwrap_or_default(),
                source: Some(Arc::new(e)),
            };
        }
        StoreError::Database {
            source: Arc::new(e),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    /// A migration that could not reach the database is [`StoreError::Unavailable`] (or
    /// busy) as any statement; any other failure is [`StoreError::Migration`].
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        use sqlx::migrate::MigrateError;
        match e {
            MigrateError::Execute(inner) | MigrateError::ExecuteMigration(inner, _)
                if unavailable_reason(&inner).is_some() =>
            {
                inner.into()
            }
            e => StoreError::Migration(Arc::new(e)),
        }
    }
}

impl StoreError {
    /// The whole chain's text, as `{:#}` would print it.
    fn chain_text(&self) -> String {
        let mut text = self.to_string();
        let mut next = std::error::Error::source(self);
        while let Some(e) = next {
            text.push_str(": ");
            text.push_str(&e.to_string());
            next = e.source();
        }
        text
    }

    /// This error with the `secrets` masked by `clean`: unchanged (source and all) when
    /// no part of its chain quotes one, else [`StoreError::Redacted`] with the cleaned
    /// text and the same classification.
    pub fn masking(self, secrets: &[String], clean: impl Fn(String) -> String) -> Self {
        let text = self.chain_text();
        if !secrets.iter().any(|s| text.contains(s.as_str())) {
            return self;
        }
        StoreError::Redacted {
            message: clean(text),
            retryable: self.is_retryable(),
            unavailable: self.is_unavailable(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_classify_without_the_message() {
        use DbCode::{Postgres as P, Sqlite as S};
        for (code, reason) in [
            (S(5), Unavailability::Busy),
            (S(517), Unavailability::Busy),
            (S(6), Unavailability::Busy),
            (S(13), Unavailability::Resources),
            (S(778), Unavailability::Resources),
        ] {
            assert_eq!(unavailability(&code), Some(reason), "{code:?}");
        }
        for code in [1, 19, 2067, 1555, 1299] {
            assert_eq!(unavailability(&S(code)), None, "{code}");
        }
        for (code, reason) in [
            ("40001", Unavailability::Contention),
            ("40P01", Unavailability::Contention),
            ("08006", Unavailability::Unreachable),
            ("57P01", Unavailability::Unreachable),
            ("57P03", Unavailability::Unreachable),
            ("3D000", Unavailability::Unreachable),
            ("53100", Unavailability::Resources),
        ] {
            assert_eq!(unavailability(&P(code.into())), Some(reason), "{code}");
        }
        for code in ["23505", "23502", "42601", "42P01", "28P01"] {
            assert_eq!(unavailability(&P(code.into())), None, "{code}");
        }
        assert!(StoreError::from(sqlx::Error::PoolTimedOut).is_unavailable());
        assert!(!StoreError::from(sqlx::Error::RowNotFound).is_retryable());
    }
}
