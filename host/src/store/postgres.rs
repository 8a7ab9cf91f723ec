//! The PostgreSQL store: the cluster store, shared by every node.

use super::{StoreError, redact};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
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

use super::common::NOTIFY_CHANNEL as MODULES_CHANNEL;

/// The payload (after the schema) announcing fires added by an event; a digest
/// is 64 hex digits, so the two never mix.
pub(crate) const FIRES_ADDED: &str = "fires";
/// The payload of a claim that asked runs to stop (overlap `cancel-other`):
/// the nodes running them read their requests at once, not at their next
/// upkeep.
pub(crate) const STOPS_ASKED: &str = "stops";

#[async_trait::async_trait]
impl super::sql::Backend for PgStore {
    type Db = sqlx::Postgres;

    fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// PostgreSQL has row locks: writers need no queue of their own.
    fn write_queue(&self) -> Option<&tokio::sync::Mutex<()>> {
        None
    }

    async fn module_watch_start(&self) -> Result<Option<ModuleWatch>, StoreError> {
        let schema: String = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(&self.pool)
            .await?;
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(MODULES_CHANNEL).await?;
        Ok(Some(ModuleWatch { listener, schema }))
    }

    async fn migrate_schema(&self) -> Result<(), StoreError> {
        sqlx::migrate!("../migrations/postgres")
            .run(&self.pool)
            .await?;
        Ok(())
    }
}

/// Modules pushed and fires added (events) through any process, as they are committed.
pub struct ModuleWatch {
    listener: PgListener,
    schema: String,
}

impl std::fmt::Debug for ModuleWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleWatch")
            .field("schema", &self.schema)
            .finish_non_exhaustive()
    }
}

/// What a [`ModuleWatch`] saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModuleEvent {
    /// A module with this digest was stored.
    Pushed(String),
    /// Fires were added by another process (an event): worth claiming now.
    FiresAdded,
    /// A claim asked runs to stop (a newer `cancel-other` fire): worth
    /// reading this node's requests now.
    StopsAsked,
    /// The connection was lost and is back: pushes in between were not seen.
    Missed,
}

impl ModuleWatch {
    /// Waits for the next push into this store's schema.
    ///
    /// # Errors
    ///
    /// When the database cannot be reached again; the caller retries later.
    pub async fn next(&mut self) -> Result<ModuleEvent, StoreError> {
        loop {
            let Some(n) = self.listener.try_recv().await? else {
                return Ok(ModuleEvent::Missed);
            };
            if let Some((schema, what)) = n.payload().split_once(' ')
                && schema == self.schema
            {
                return Ok(match what {
                    FIRES_ADDED => ModuleEvent::FiresAdded,
                    STOPS_ASKED => ModuleEvent::StopsAsked,
                    digest => ModuleEvent::Pushed(digest.to_string()),
                });
            }
        }
    }
}
