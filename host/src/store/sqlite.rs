//! The SQLite store: one file in WAL mode, the embedded default.

use super::{Dialect, ModulePut, ModuleRecord, ModuleRef, Store, StoreError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use std::str::FromStr;
use std::time::Duration;

// `CAST(unixepoch('subsec') * 1000 AS INTEGER)` is the database clock in UTC
// milliseconds: times are never taken from the host's clock.

#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// The database file (`None` for an in-memory database).
    path: Option<std::path::PathBuf>,
    /// SQLite has one writer at a time. Queueing this process's writers here
    /// hands the lock over at once; left to SQLite's busy handler, each waiter
    /// sleeps in steps of milliseconds.
    writer: std::sync::Arc<tokio::sync::Mutex<()>>,
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
            .foreign_keys(true);
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
        Ok(SqliteStore {
            pool,
            path,
            writer: std::sync::Arc::default(),
        })
    }
}

impl SqliteStore {
    pub(crate) async fn writer(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        Some(self.writer.lock().await)
    }
}

fn record(row: &SqliteRow) -> Result<ModuleRecord, StoreError> {
    let created: i64 = row.try_get("created_at")?;
    let size: i64 = row.try_get("size")?;
    Ok(ModuleRecord {
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        digest: row.try_get("digest")?,
        wit_version: row.try_get("wit_version")?,
        size: u64::try_from(size).unwrap_or(0),
        created_at: DateTime::<Utc>::from_timestamp_millis(created).unwrap_or_default(),
    })
}

#[async_trait]
impl Store for SqliteStore {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    async fn migrate(&self) -> Result<(), StoreError> {
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

    async fn state_get(&self, job_key: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query("SELECT value FROM job_state WHERE job_key = ? AND key = ?")
            .bind(job_key)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("value")).transpose()?)
    }

    async fn state_set(&self, job_key: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO job_state (job_key, key, value, updated_at) VALUES (?, ?, ?, CAST(unixepoch('subsec') * 1000 AS INTEGER)) \
             ON CONFLICT (job_key, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at")
        .bind(job_key)
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn state_delete(&self, job_key: &str, key: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM job_state WHERE job_key = ? AND key = ?")
            .bind(job_key)
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn state_keys(&self, job_key: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT key FROM job_state WHERE job_key = ? ORDER BY key")
            .bind(job_key)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| r.try_get("key").map_err(StoreError::from))
            .collect()
    }

    async fn module_put(&self, m: &ModulePut) -> Result<ModuleRecord, StoreError> {
        sqlx::query("INSERT INTO modules (name, version, digest, wit_version, size, bytes, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, CAST(unixepoch('subsec') * 1000 AS INTEGER)) ON CONFLICT (name, version) DO NOTHING")
        .bind(&m.name)
        .bind(&m.version)
        .bind(&m.digest)
        .bind(&m.wit_version)
        .bind(i64::try_from(m.bytes.len()).unwrap_or(i64::MAX))
        .bind(&m.bytes)
        .execute(&self.pool)
        .await?;
        let version = ModuleRef::Version {
            name: m.name.clone(),
            version: m.version.clone(),
        };
        let stored = self.module_get(&version).await?.ok_or_else(|| {
            StoreError::Conflict(format!(
                "module {}@{} vanished while being stored",
                m.name, m.version
            ))
        })?;
        if stored.digest != m.digest {
            return Err(StoreError::Conflict(format!(
                "module {}@{} already exists with digest {}; a pushed version never changes, push a new version",
                m.name, m.version, stored.digest
            )));
        }
        Ok(stored)
    }

    async fn module_get(&self, module: &ModuleRef) -> Result<Option<ModuleRecord>, StoreError> {
        let query = match module {
            ModuleRef::Latest(name) => sqlx::query("SELECT name, version, digest, wit_version, size, created_at FROM modules WHERE name = ? ORDER BY created_at DESC, rowid DESC LIMIT 1")
            .bind(name),
            ModuleRef::Version { name, version } => sqlx::query("SELECT name, version, digest, wit_version, size, created_at FROM modules WHERE name = ? AND version = ?")
            .bind(name)
            .bind(version),
            ModuleRef::Digest(digest) => sqlx::query("SELECT name, version, digest, wit_version, size, created_at FROM modules WHERE digest = ? ORDER BY created_at DESC LIMIT 1")
            .bind(digest),
        };
        query
            .fetch_optional(&self.pool)
            .await?
            .as_ref()
            .map(record)
            .transpose()
    }

    async fn module_bytes(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query("SELECT bytes FROM modules WHERE digest = ? LIMIT 1")
            .bind(digest)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("bytes")).transpose()?)
    }

    async fn module_list(&self, name: Option<&str>) -> Result<Vec<ModuleRecord>, StoreError> {
        let rows = sqlx::query("SELECT name, version, digest, wit_version, size, created_at FROM modules WHERE (? IS NULL OR name = ?) \
             ORDER BY name, created_at DESC, rowid DESC")
        .bind(name)
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(record).collect()
    }
}

super::sched::impl_scheduling!(
    SqliteStore,
    "CAST(unixepoch('subsec') * 1000 AS INTEGER)",
    // One writer at a time: a SQLite transaction that writes holds the database.
    "",
    "LIMIT -1 OFFSET $1",
    // Take the write lock up front: a deferred transaction that reads first and
    // then writes fails at once with SQLITE_BUSY when another writer got in between.
    "BEGIN IMMEDIATE"
);
