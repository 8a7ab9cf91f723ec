//! The PostgreSQL store: the cluster store, shared by every node.

use super::{Dialect, ModulePut, ModuleRecord, ModuleRef, Store, StoreError, redact};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
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

fn record(row: &PgRow) -> Result<ModuleRecord, StoreError> {
    let size: i64 = row.try_get("size")?;
    Ok(ModuleRecord {
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        digest: row.try_get("digest")?,
        wit_version: row.try_get("wit_version")?,
        size: u64::try_from(size).unwrap_or(0),
        created_at: row.try_get::<DateTime<Utc>, _>("created_at")?,
    })
}

#[async_trait]
impl Store for PgStore {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("../migrations/postgres")
            .run(&self.pool)
            .await?;
        Ok(())
    }

    async fn state_get(&self, job_key: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row = sqlx::query("SELECT value FROM job_state WHERE job_key = $1 AND key = $2")
            .bind(job_key)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("value")).transpose()?)
    }

    async fn state_set(&self, job_key: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO job_state (job_key, key, value, updated_at) VALUES ($1, $2, $3, now()) \
             ON CONFLICT (job_key, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        )
        .bind(job_key)
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn state_delete(&self, job_key: &str, key: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM job_state WHERE job_key = $1 AND key = $2")
            .bind(job_key)
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn state_keys(&self, job_key: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT key FROM job_state WHERE job_key = $1 ORDER BY key")
            .bind(job_key)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| r.try_get("key").map_err(StoreError::from))
            .collect()
    }

    async fn module_put(&self, m: &ModulePut) -> Result<ModuleRecord, StoreError> {
        sqlx::query(
            "INSERT INTO modules (name, version, digest, wit_version, size, bytes) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name, version) DO NOTHING",
        )
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
            ModuleRef::Latest(name) => sqlx::query(
                "SELECT name, version, digest, wit_version, size, created_at FROM modules \
                 WHERE name = $1 ORDER BY created_at DESC LIMIT 1",
            )
            .bind(name),
            ModuleRef::Version { name, version } => sqlx::query(
                "SELECT name, version, digest, wit_version, size, created_at FROM modules \
                 WHERE name = $1 AND version = $2",
            )
            .bind(name)
            .bind(version),
            ModuleRef::Digest(digest) => sqlx::query(
                "SELECT name, version, digest, wit_version, size, created_at FROM modules \
                 WHERE digest = $1 ORDER BY created_at DESC LIMIT 1",
            )
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
        let row = sqlx::query("SELECT bytes FROM modules WHERE digest = $1 LIMIT 1")
            .bind(digest)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("bytes")).transpose()?)
    }

    async fn module_list(&self, name: Option<&str>) -> Result<Vec<ModuleRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, version, digest, wit_version, size, created_at FROM modules \
             WHERE ($1::text IS NULL OR name = $1) ORDER BY name, created_at DESC",
        )
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(record).collect()
    }
}

super::sched::impl_scheduling!(
    PgStore,
    "(extract(epoch from clock_timestamp()) * 1000)::bigint",
    // Concurrent claimers each take rows the others have not locked.
    " FOR UPDATE SKIP LOCKED",
    "OFFSET $1",
    "BEGIN"
);
