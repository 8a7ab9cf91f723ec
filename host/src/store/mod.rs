//! The durable store: one trait, a SQLite implementation (the embedded
//! default) and a PostgreSQL one (the cluster store), both reached through sqlx
//! and migrated from `migrations/`.
//!
//! All SQL lives under this module. It knows nothing of wasm: modules are bytes
//! with a name, a version and a digest. Methods read noun-then-verb
//! (`state_get`, `module_put`). Times come from the database clock.

pub mod bulk;
pub mod calendars;
mod claim;
mod common;
pub mod events;
pub mod model;
mod postgres;
pub mod sched;
pub mod secrets;
mod sql;
mod sqlite;

pub use bulk::Bulk;
pub use calendars::CalendarStore;
pub use events::Events;
pub use postgres::{ModuleEvent, ModuleWatch, PgStore};
pub use sched::Scheduling;
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::sync::Arc;

/// Errors of the store. Messages name what failed, never credentials.
///
/// Four kinds a caller branches on: [`NotFound`](StoreError::NotFound) (what
/// was named is not stored), [`Conflict`](StoreError::Conflict) (the request
/// contradicts what is stored), [`Corrupt`](StoreError::Corrupt) (a stored row
/// this build cannot read) and, for every other variant, the store being
/// unavailable (see [`StoreError::is_unavailable`]): worth retrying later.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid database URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot connect to {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error("cannot migrate the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// What was named (a job, a trigger, a module version) is not stored.
    #[error("{0}")]
    NotFound(String),
    /// The request contradicts what is stored: a pushed version with other
    /// bytes, no older version to roll back to.
    #[error("{0}")]
    Conflict(String),
    /// A stored row this build cannot read: an unknown schedule or condition,
    /// a value of the wrong type.
    #[error("{0}")]
    Corrupt(String),
    /// The store could not do it now: a lock it could not take, the node
    /// stopping under the call.
    #[error("{0}")]
    Unavailable(String),
    /// The database failed to answer (connection, I/O, a statement refused).
    #[error("database error: {0}")]
    Database(sqlx::Error),
}

impl StoreError {
    /// Whether the failure is the store's availability rather than the
    /// request or the data: a later try may succeed.
    pub fn is_unavailable(&self) -> bool {
        !matches!(
            self,
            StoreError::NotFound(_) | StoreError::Conflict(_) | StoreError::Corrupt(_)
        )
    }
}

impl From<sqlx::Error> for StoreError {
    /// A value the driver cannot decode is a corrupt row; the rest is the
    /// database failing to answer.
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::ColumnIndexOutOfBounds { .. } => StoreError::Corrupt(e.to_string()),
            e => StoreError::Database(e),
        }
    }
}

/// Which database a store talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A module to record.
#[derive(Clone, Debug)]
pub struct ModulePut {
    pub name: String,
    pub version: String,
    /// Lowercase hex sha256 of `bytes`.
    pub digest: String,
    /// The `quartzite:job` version the component was built for.
    pub wit_version: String,
    pub bytes: Vec<u8>,
    /// Whether the same bytes pushed again restore a version a rollback
    /// withdrew: an operator's push does; a node re-pushing its manifest or
    /// modules directory at start does not, so a restart keeps a rollback.
    pub restore: bool,
}

pub use crate::domain::ModuleRef;

/// A stored module, without its bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ModuleRecord {
    pub name: String,
    pub version: String,
    pub digest: String,
    pub wit_version: String,
    pub size: u64,
    pub created_at: DateTime<Utc>,
    /// Withdrawn by a rollback: a job following the name skips it, a pinned
    /// reference still runs it, pushing it again restores it.
    pub withdrawn: bool,
    /// The version a job following the name runs (set by `module_list` and
    /// `module_rollback`; `false` elsewhere).
    pub current: bool,
}

/// Which version a module name should mean again.
#[derive(Clone, Debug)]
pub struct ModuleRollback {
    pub name: String,
    /// This version [default: the newest one not withdrawn, older than the current].
    pub to: Option<String>,
}

/// The store. See the module docs; the scheduler's methods are in [`Scheduling`],
/// those of events and alerts in [`Events`].
#[async_trait]
pub trait Store:
    Scheduling + Events + Bulk + secrets::SecretStore + calendars::CalendarStore + Send + Sync + 'static
{
    fn dialect(&self) -> Dialect;

    /// Applies the migrations that have not run yet.
    ///
    /// # Errors
    ///
    /// When a migration fails or the database has migrations this build does not know.
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Reads one key of a job's state.
    async fn state_get(&self, job_key: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Writes one key of a job's state.
    async fn state_set(&self, job_key: &str, key: &str, value: &[u8]) -> Result<(), StoreError>;
    /// [`Store::state_set`] within a quota on the job's whole state: the write
    /// happens only if afterwards the job has at most `max_keys` keys and
    /// `max_bytes` bytes of values. Checked in the writing statement itself, no
    /// extra round trip. Returns whether it was written.
    async fn state_set_within(
        &self,
        job_key: &str,
        key: &str,
        value: &[u8],
        max_keys: u64,
        max_bytes: u64,
    ) -> Result<bool, StoreError>;
    /// Deletes one key of a job's state; returns whether it existed.
    async fn state_delete(&self, job_key: &str, key: &str) -> Result<bool, StoreError>;
    /// The keys of a job's state, sorted.
    async fn state_keys(&self, job_key: &str) -> Result<Vec<String>, StoreError>;

    /// Records a module version. Pushing the same bytes under the same name and
    /// version again is a no-op that returns the existing record.
    ///
    /// # Errors
    ///
    /// [`StoreError::Conflict`] when that name and version already hold other bytes:
    /// a version, once pushed, never changes.
    async fn module_put(&self, module: &ModulePut) -> Result<ModuleRecord, StoreError>;
    /// Finds a module's record.
    async fn module_get(&self, module: &ModuleRef) -> Result<Option<ModuleRecord>, StoreError>;
    /// Reads the bytes of a module by digest.
    async fn module_bytes(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Every stored version, of one module or of all, newest first, with the
    /// current one of each name marked.
    async fn module_list(&self, name: Option<&str>) -> Result<Vec<ModuleRecord>, StoreError>;
    /// Makes a name mean an older (or given) version from the next fire: every
    /// version newer than it is withdrawn, and nodes following the store's
    /// module feed hear of it at once. Returns the new current version, `None`
    /// when the name or the given version is not stored.
    ///
    /// # Errors
    ///
    /// [`StoreError::Conflict`] when no older version is left to roll back to.
    async fn module_rollback(
        &self,
        rollback: &ModuleRollback,
    ) -> Result<Option<ModuleRecord>, StoreError>;
    /// A feed of modules pushed by any process, where the database has one
    /// (PostgreSQL's LISTEN/NOTIFY); `None` on SQLite, used by one process.
    async fn module_watch(&self) -> Result<Option<ModuleWatch>, StoreError>;

    /// Fires claimed or waiting to be claimed, oldest due first, without their
    /// jobs: what the admin API shows as executions in flight.
    async fn fire_running(&self) -> Result<Vec<model::FireRow>, StoreError>;
    /// Triggers per state (those of paused jobs as `PAUSED`) and fires being run:
    /// one grouped count per table, read when metrics are scraped, never per fire.
    async fn trigger_counts(&self) -> Result<model::TriggerCounts, StoreError>;
    /// Appends one row to the audit log; returns its id.
    async fn audit_put(&self, entry: &model::AuditPut) -> Result<String, StoreError>;
    /// Deletes audit rows older than `max_age_ms` and beyond the newest
    /// `max_rows`, as history is kept; returns how many went.
    async fn audit_cleanup(&self, max_age_ms: i64, max_rows: i64) -> Result<u64, StoreError>;
    /// Audit rows, newest first.
    async fn audit_list(
        &self,
        filter: &model::AuditFilter,
    ) -> Result<Vec<model::AuditEntry>, StoreError>;
}

/// The default database: `quartzite.db` in the working directory.
pub const DEFAULT_URL: &str = "sqlite://quartzite.db";

/// Opens the store named by `url` (`sqlite://PATH` or `postgres://...`) and
/// migrates it.
///
/// # Errors
///
/// When the URL is not understood, the database cannot be reached, or migrating fails.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    let store: Arc<dyn Store> = if url.starts_with("sqlite:") {
        Arc::new(SqliteStore::connect(url).await?)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Arc::new(PgStore::connect(url).await?)
    } else {
        return Err(StoreError::Url {
            url: redact(url),
            reason: "expected sqlite://PATH or postgres://USER@HOST/DB".into(),
        });
    };
    store.migrate().await?;
    Ok(store)
}

/// The URL without a password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://x.db"), "sqlite://x.db");
    }
}
