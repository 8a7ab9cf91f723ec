//! Stored grants and secrets: `job_grants` (a job's [`Grants`] as JSON) and
//! `secrets` (sealed values, see `crate::secrets`).
//!
//! Plain SQL per dialect, one method per query. This module never sees a
//! secret's plaintext: it stores and returns the sealed bytes, and listing
//! returns names, versions and times only.

use super::sql::Backend;
use super::{PgStore, SqliteStore, StoreError};
use crate::grants::Grants;
use async_trait::async_trait;
use serde::Serialize;
use sqlx::Row;

/// A sealed secret value to store under `name`.
#[derive(Clone)]
pub struct SecretPut {
    pub name: String,
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// A stored secret, still sealed.
#[derive(Clone)]
pub struct SecretSealed {
    pub name: String,
    pub version: i64,
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// What listing shows of a secret: never its value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SecretMeta {
    pub name: String,
    /// 1 for the first value set, one more for every later `set`.
    pub version: i64,
    /// When the current version was set, UTC milliseconds.
    pub set_ms: i64,
}

/// The store's half of grants and secrets.
#[async_trait]
pub trait GrantStore: Send + Sync {
    /// A job's grants; `None` when nothing is granted.
    ///
    /// # Errors
    ///
    /// When the database fails or the stored JSON is not grants.
    async fn job_grants_get(&self, job_key: &str) -> Result<Option<Grants>, StoreError>;
    /// Replaces a job's grants; empty grants delete the row.
    async fn job_grants_put(&self, job_key: &str, grants: &Grants) -> Result<(), StoreError>;
    /// Stores a new version of a secret; returns its version.
    async fn secret_put(&self, secret: &SecretPut) -> Result<i64, StoreError>;
    /// The sealed current value of a secret.
    async fn secret_get(&self, name: &str) -> Result<Option<SecretSealed>, StoreError>;
    /// Every secret's name, version and time set, by name.
    async fn secret_list(&self) -> Result<Vec<SecretMeta>, StoreError>;
    /// Deletes a secret; returns whether it existed.
    async fn secret_delete(&self, name: &str) -> Result<bool, StoreError>;
}

fn grants_from_text(job_key: &str, text: &str) -> Result<Grants, StoreError> {
    serde_json::from_str(text).map_err(|e| {
        StoreError::Conflict(format!(
            "the stored grants of job {job_key:?} are not valid: {e}"
        ))
    })
}

fn grants_text(grants: &Grants) -> Result<String, StoreError> {
    serde_json::to_string(grants)
        .map_err(|e| StoreError::Conflict(format!("grants cannot be stored: {e}")))
}

fn sealed(row: &impl SealedRow) -> Result<SecretSealed, sqlx::Error> {
    row.sealed()
}

trait SealedRow {
    fn sealed(&self) -> Result<SecretSealed, sqlx::Error>;
}

impl SealedRow for sqlx::sqlite::SqliteRow {
    fn sealed(&self) -> Result<SecretSealed, sqlx::Error> {
        Ok(SecretSealed {
            name: self.try_get("name")?,
            version: self.try_get("version")?,
            key_id: self.try_get("key_id")?,
            nonce: self.try_get("nonce")?,
            ciphertext: self.try_get("ciphertext")?,
        })
    }
}

impl SealedRow for sqlx::postgres::PgRow {
    fn sealed(&self) -> Result<SecretSealed, sqlx::Error> {
        Ok(SecretSealed {
            name: self.try_get("name")?,
            version: self.try_get("version")?,
            key_id: self.try_get("key_id")?,
            nonce: self.try_get("nonce")?,
            ciphertext: self.try_get("ciphertext")?,
        })
    }
}

#[async_trait]
impl GrantStore for SqliteStore {
    async fn job_grants_get(&self, job_key: &str) -> Result<Option<Grants>, StoreError> {
        let row = sqlx::query("SELECT grants FROM job_grants WHERE job_key = ?")
            .bind(job_key)
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| grants_from_text(job_key, &r.try_get::<String, _>("grants")?))
            .transpose()
    }

    async fn job_grants_put(&self, job_key: &str, grants: &Grants) -> Result<(), StoreError> {
        let _writer = super::sql::writer(self).await;
        if grants.is_empty() {
            sqlx::query("DELETE FROM job_grants WHERE job_key = ?")
                .bind(job_key)
                .execute(self.pool())
                .await?;
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO job_grants (job_key, grants, updated_at) VALUES (?, ?, CAST(unixepoch('subsec') * 1000 AS INTEGER)) \
             ON CONFLICT (job_key) DO UPDATE SET grants = excluded.grants, updated_at = excluded.updated_at"
        )
        .bind(job_key)
        .bind(grants_text(grants)?)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn secret_put(&self, secret: &SecretPut) -> Result<i64, StoreError> {
        let _writer = super::sql::writer(self).await;
        let row = sqlx::query(
            "INSERT INTO secrets (name, version, key_id, nonce, ciphertext, created_at, updated_at) \
             VALUES (?, 1, ?, ?, ?, CAST(unixepoch('subsec') * 1000 AS INTEGER), CAST(unixepoch('subsec') * 1000 AS INTEGER)) \
             ON CONFLICT (name) DO UPDATE SET version = secrets.version + 1, key_id = excluded.key_id, \
             nonce = excluded.nonce, ciphertext = excluded.ciphertext, updated_at = excluded.updated_at \
             RETURNING version"
        )
        .bind(&secret.name)
        .bind(&secret.key_id)
        .bind(&secret.nonce)
        .bind(&secret.ciphertext)
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get("version")?)
    }

    async fn secret_get(&self, name: &str) -> Result<Option<SecretSealed>, StoreError> {
        let row = sqlx::query(
            "SELECT name, version, key_id, nonce, ciphertext FROM secrets WHERE name = ?",
        )
        .bind(name)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(sealed).transpose()?)
    }

    async fn secret_list(&self) -> Result<Vec<SecretMeta>, StoreError> {
        let rows = sqlx::query("SELECT name, version, updated_at FROM secrets ORDER BY name")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(SecretMeta {
                    name: r.try_get("name")?,
                    version: r.try_get("version")?,
                    set_ms: r.try_get("updated_at")?,
                })
            })
            .collect()
    }

    async fn secret_delete(&self, name: &str) -> Result<bool, StoreError> {
        let _writer = super::sql::writer(self).await;
        let done = sqlx::query("DELETE FROM secrets WHERE name = ?")
            .bind(name)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

#[async_trait]
impl GrantStore for PgStore {
    async fn job_grants_get(&self, job_key: &str) -> Result<Option<Grants>, StoreError> {
        let row = sqlx::query("SELECT grants FROM job_grants WHERE job_key = $1")
            .bind(job_key)
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| grants_from_text(job_key, &r.try_get::<String, _>("grants")?))
            .transpose()
    }

    async fn job_grants_put(&self, job_key: &str, grants: &Grants) -> Result<(), StoreError> {
        if grants.is_empty() {
            sqlx::query("DELETE FROM job_grants WHERE job_key = $1")
                .bind(job_key)
                .execute(self.pool())
                .await?;
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO job_grants (job_key, grants, updated_at) VALUES ($1, $2, (extract(epoch from clock_timestamp()) * 1000)::bigint) \
             ON CONFLICT (job_key) DO UPDATE SET grants = excluded.grants, updated_at = excluded.updated_at"
        )
        .bind(job_key)
        .bind(grants_text(grants)?)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    async fn secret_put(&self, secret: &SecretPut) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "INSERT INTO secrets (name, version, key_id, nonce, ciphertext, created_at, updated_at) \
             VALUES ($1, 1, $2, $3, $4, (extract(epoch from clock_timestamp()) * 1000)::bigint, (extract(epoch from clock_timestamp()) * 1000)::bigint) \
             ON CONFLICT (name) DO UPDATE SET version = secrets.version + 1, key_id = excluded.key_id, \
             nonce = excluded.nonce, ciphertext = excluded.ciphertext, updated_at = excluded.updated_at \
             RETURNING version"
        )
        .bind(&secret.name)
        .bind(&secret.key_id)
        .bind(&secret.nonce)
        .bind(&secret.ciphertext)
        .fetch_one(self.pool())
        .await?;
        Ok(row.try_get("version")?)
    }

    async fn secret_get(&self, name: &str) -> Result<Option<SecretSealed>, StoreError> {
        let row = sqlx::query(
            "SELECT name, version, key_id, nonce, ciphertext FROM secrets WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(sealed).transpose()?)
    }

    async fn secret_list(&self) -> Result<Vec<SecretMeta>, StoreError> {
        let rows = sqlx::query("SELECT name, version, updated_at FROM secrets ORDER BY name")
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(SecretMeta {
                    name: r.try_get("name")?,
                    version: r.try_get("version")?,
                    set_ms: r.try_get("updated_at")?,
                })
            })
            .collect()
    }

    async fn secret_delete(&self, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM secrets WHERE name = $1")
            .bind(name)
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
