//! The SQLite store: one file in WAL mode, the embedded default.

use super::StoreError;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::str::FromStr;
use std::time::Duration;

// `CAST(unixepoch('subsec') * 1000 AS INTEGER)` is the database clock in UTC
// milliseconds: times are never taken from the host's clock.

/// How often the WAL is copied back into the database file, off the writer.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// Pages the WAL may reach before a committing writer copies it back itself:
/// a backstop for when the background checkpoint falls behind (about 40 MiB).
const WAL_BACKSTOP_PAGES: &str = "10000";

#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// The database file (`None` for an in-memory database).
    path: Option<std::path::PathBuf>,
    /// SQLite has one writer at a time. Queueing this process's writers here
    /// hands the lock over at once; left to SQLite's busy handler, each waiter
    /// sleeps in steps of milliseconds.
    writer: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// The background checkpoint of a database file, stopped with the last clone.
    _checkpointer: Option<std::sync::Arc<Checkpointer>>,
}

/// Copies the WAL back into the database file every [`CHECKPOINT_EVERY`] on a
/// connection of its own (`PASSIVE`: it never waits for or blocks a writer).
/// Left to SQLite, the writer that commits past 1,000 WAL pages does it, with
/// an fsync, inside the claim or completion everything else waits for.
#[derive(Debug)]
struct Checkpointer(tokio::task::JoinHandle<()>);

impl Checkpointer {
    fn start(pool: SqlitePool) -> Self {
        Checkpointer(tokio::spawn(async move {
            let mut every = tokio::time::interval(CHECKPOINT_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                    .execute(&pool)
                    .await
                {
                    tracing::debug!(error = %e, "background WAL checkpoint failed; the writers' backstop remains");
                }
            }
        }))
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database file of a `sqlite://PATH` URL.
    ///
    /// # Errors
    ///
    /// When the URL is malformed or the file cannot be opened.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Url {
                url: url.to_string(),
                reason: e.to_string(),
            })?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL + NORMAL survives process crashes; only an OS crash can lose the
            // last commits, and it never corrupts the file.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true)
            .pragma("wal_autocheckpoint", WAL_BACKSTOP_PAGES);
        let path = Some(options.get_filename().to_path_buf())
            .filter(|p| !p.as_os_str().is_empty() && p.as_os_str() != ":memory:");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Connect {
                url: url.to_string(),
                source,
            })?;
        let checkpointer = path
            .is_some()
            .then(|| std::sync::Arc::new(Checkpointer::start(pool.clone())));
        Ok(SqliteStore {
            pool,
            path,
            writer: std::sync::Arc::default(),
            _checkpointer: checkpointer,
        })
    }
}

impl SqliteStore {
    pub(super) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub(crate) async fn writer(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        Some(self.writer.lock().await)
    }
}

impl SqliteStore {
    /// One process per SQLite file: nobody else to tell.
    pub(crate) async fn module_pushed(
        &self,
        _tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
        _digest: &str,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    pub(crate) async fn fires_added(
        &self,
        _tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    pub(crate) async fn module_watch_start(
        &self,
    ) -> Result<Option<super::ModuleWatch>, StoreError> {
        Ok(None)
    }
}

impl SqliteStore {
    async fn migrate_schema(&self) -> Result<(), StoreError> {
        // Two processes opening a new file at once (a server and a CLI call) would
        // race to apply the same migration: take a lock file next to the database.
        let guard = match &self.path {
            Some(path) => {
                let lock_path = path.with_extension("migrate-lock");
                let file =
                    tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
                        let file = std::fs::OpenOptions::new()
                            .create(true)
                            .truncate(false)
                            .write(true)
                            .open(&lock_path)?;
                        file.lock()?;
                        Ok(file)
                    })
                    .await
                    .map_err(|e| StoreError::Conflict(format!("migration lock: {e}")))?
                    .map_err(|e| {
                        StoreError::Conflict(format!("cannot lock the database for migration: {e}"))
                    })?;
                Some(file)
            }
            None => None,
        };
        let result = sqlx::migrate!("../migrations/sqlite").run(&self.pool).await;
        drop(guard);
        result?;
        Ok(())
    }
}

super::common::impl_store!(
    SqliteStore,
    crate::store::Dialect::Sqlite,
    "CAST(unixepoch('subsec') * 1000 AS INTEGER)"
);

super::sched::impl_scheduling!(
    SqliteStore,
    "CAST(unixepoch('subsec') * 1000 AS INTEGER)",
    // One writer at a time: a SQLite transaction that writes holds the database.
    "",
    "LIMIT -1 OFFSET $1",
    // Take the write lock up front: a deferred transaction that reads first and
    // then writes fails at once with SQLITE_BUSY when another writer got in between.
    "BEGIN IMMEDIATE",
    "json_group_array",
    "json_array"
);

super::events::impl_events!(
    SqliteStore,
    "CAST(unixepoch('subsec') * 1000 AS INTEGER)",
    "BEGIN IMMEDIATE"
);
