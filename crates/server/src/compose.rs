//! The composition root: the one place that turns configuration into running parts
//! (a store, the engine, the delivery channels, the API and scheduler tasks). `nurture run`,
//! `serve`, `worker` and the benchmark all build through here.

use std::sync::Arc;

use nurture_store::{redact_url, ConfigError, Store, StoreError};
pub use nurture_store_postgres::PostgresConfig;
use nurture_store_postgres::PostgresStore;
pub use nurture_store_sqlite::SqliteConfig;
use nurture_store_sqlite::SqliteStore;

/// How to open a store of either kind ([`open_store_with`]): the configuration of each, the one
/// the URL names is used. The library reads no environment variables; the binary builds
/// this from `NURTURE_LEASE_SECS`, `NURTURE_PG_POOL`, `NURTURE_PG_LANES` and
/// `NURTURE_PG_SCHEMA` (docs/operators.md).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreConfig {
    pub sqlite: SqliteConfig,
    pub postgres: PostgresConfig,
}

/// Opens the store named by `url` with the default configuration ([`StoreConfig`]'s
/// defaults, documented on [`SqliteConfig`] and [`PostgresConfig`]); see [`open_store_with`].
pub async fn open_store(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    open_store_with(url, &StoreConfig::default()).await
}

/// Opens the store named by `url`: `sqlite://PATH` (created if missing), `sqlite::memory:`,
/// or `postgres://...`, configured by `config`. Errors never show the URL's password or
/// query string ([`redact_url`]).
pub async fn open_store_with(
    url: &str,
    config: &StoreConfig,
) -> Result<Arc<dyn Store>, StoreError> {
    let opened: Result<Arc<dyn Store>, StoreError> = if url.starts_with("sqlite:") {
        SqliteStore::open(url, &config.sqlite)
            .await
            .map(|s| Arc::new(s) as _)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        PostgresStore::open(url, &config.postgres)
            .await
            .map(|s| Arc::new(s) as _)
    } else {
        Err(ConfigError::UnsupportedUrl(redact_url(url)).into())
    };
    opened.map_err(|e| e.redacted(url))
}
