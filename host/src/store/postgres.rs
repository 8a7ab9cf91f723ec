//! The PostgreSQL store: the cluster store, shared by every node.

use super::{StoreError, redact};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use std::str::FromStr;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Connects to a `postgres://` URL.
    ///
    /// # Errors
    ///
    /// When the URL is malformed or the server cannot be reached.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url).map_err(|e| StoreError::Url {
            url: redact(url),
            reason: e.to_string(),
        })?;
        Self::connect_with(options, url).await
    }

    /// Connects with explicit options (tests use a private schema through `search_path`).
    ///
    /// # Errors
    ///
    /// When the server cannot be reached.
    pub async fn connect_with(options: PgConnectOptions, url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Connect {
                url: redact(url),
                source,
            })?;
        Ok(PgStore { pool })
    }
}

impl PgStore {
    /// PostgreSQL has row locks: writers need no queue of their own.
    pub(crate) async fn writer(&self) -> Option<()> {
        None
    }
}

impl PgStore {
    async fn migrate_schema(&self) -> Result<(), StoreError> {
        sqlx::migrate!("../migrations/postgres")
            .run(&self.pool)
            .await?;
        Ok(())
    }
}

super::common::impl_store!(
    PgStore,
    crate::store::Dialect::Postgres,
    "(extract(epoch from clock_timestamp()) * 1000)::bigint"
);

super::sched::impl_scheduling!(
    PgStore,
    "(extract(epoch from clock_timestamp()) * 1000)::bigint",
    // Concurrent claimers each take rows the others have not locked.
    " FOR UPDATE SKIP LOCKED",
    "OFFSET $1",
    "BEGIN"
);
