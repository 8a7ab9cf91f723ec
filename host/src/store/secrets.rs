//! Stored secrets: sealed values (see `crate::secrets`), one row per name in
//! `secrets`. A job's grants are part of its row (`jobs.grants`, see
//! `sched.rs`), read by the claim that runs it.
//!
//! This module never sees a secret's plaintext: it stores and returns the
//! sealed bytes, and listing returns names, versions and times only.

use super::StoreError;
use super::sql::{Backend, Db, Sql, writer};
use async_trait::async_trait;
use serde::Serialize;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Row, Type};

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

/// The store's half of secrets.
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// Stores a new version of a secret; returns its version.
    async fn secret_put(&self, secret: &SecretPut) -> Result<i64, StoreError>;
    /// The sealed current value of a secret.
    async fn secret_get(&self, name: &str) -> Result<Option<SecretSealed>, StoreError>;
    /// Every secret's name, version and time set, by name.
    async fn secret_list(&self) -> Result<Vec<SecretMeta>, StoreError>;
    /// Deletes a secret; returns whether it existed.
    async fn secret_delete(&self, name: &str) -> Result<bool, StoreError>;
}

static SECRET_PUT: Sql = Sql::new(
    "INSERT INTO secrets (name, version, key_id, nonce, ciphertext, created_at, updated_at) \
     VALUES ($1, 1, $2, $3, $4, {now}, {now}) \
     ON CONFLICT (name) DO UPDATE SET version = secrets.version + 1, key_id = excluded.key_id, \
     nonce = excluded.nonce, ciphertext = excluded.ciphertext, updated_at = excluded.updated_at \
     RETURNING version",
);
static SECRET_GET: Sql =
    Sql::new("SELECT name, version, key_id, nonce, ciphertext FROM secrets WHERE name = $1");
static SECRET_LIST: Sql = Sql::new("SELECT name, version, updated_at FROM secrets ORDER BY name");
static SECRET_DELETE: Sql = Sql::new("DELETE FROM secrets WHERE name = $1");

#[async_trait]
impl<S, DB> SecretStore for S
where
    S: Backend<Db = DB>,
    DB: Db,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'r> &'r str: ColumnIndex<DB::Row>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Vec<u8>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
{
    async fn secret_put(&self, secret: &SecretPut) -> Result<i64, StoreError> {
        let _writer = writer(self).await;
        let row = sqlx::query(SECRET_PUT.on(DB::DIALECT))
            .bind(secret.name.as_str())
            .bind(secret.key_id.as_str())
            .bind(secret.nonce.as_slice())
            .bind(secret.ciphertext.as_slice())
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get("version")?)
    }

    async fn secret_get(&self, name: &str) -> Result<Option<SecretSealed>, StoreError> {
        let row = sqlx::query(SECRET_GET.on(DB::DIALECT))
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(SecretSealed {
            name: row.try_get("name")?,
            version: row.try_get("version")?,
            key_id: row.try_get("key_id")?,
            nonce: row.try_get("nonce")?,
            ciphertext: row.try_get("ciphertext")?,
        }))
    }

    async fn secret_list(&self) -> Result<Vec<SecretMeta>, StoreError> {
        let rows = sqlx::query(SECRET_LIST.on(DB::DIALECT))
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
        let _writer = writer(self).await;
        let done = sqlx::query(SECRET_DELETE.on(DB::DIALECT))
            .bind(name)
            .execute(self.pool())
            .await?;
        Ok(DB::rows_affected(&done) > 0)
    }
}
