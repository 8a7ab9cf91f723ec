//! What the two databases share, and the few places where they differ.
//!
//! Every statement is written once, as plain SQL with `$n` placeholders,
//! integer times and integer booleans, and run through one generic
//! implementation of the store's traits over [`Backend`]. Where the dialects
//! differ, the text names the difference (`{now}`, `{skip_locked}`, ...) and
//! [`Dialect`] says what it is in each database (see [`fragment`]); a statement
//! is rendered once per dialect, on first use, and kept for the life of the
//! process, so running one costs what running a literal does.
//!
//! Nothing here decides anything: the claim's decisions are in `claim.rs`.

use super::{Dialect, ModuleWatch, StoreError};
use async_trait::async_trait;
use sqlx::Database;
use std::sync::OnceLock;

/// One SQL statement (or the start of one, for a query builder), written once
/// for both dialects.
pub(crate) struct Sql {
    text: &'static str,
    sqlite: OnceLock<String>,
    postgres: OnceLock<String>,
}

impl Sql {
    pub(crate) const fn new(text: &'static str) -> Self {
        Sql {
            text,
            sqlite: OnceLock::new(),
            postgres: OnceLock::new(),
        }
    }

    /// The statement in `dialect`'s words.
    pub(crate) fn on(&'static self, dialect: Dialect) -> &'static str {
        let cell = match dialect {
            Dialect::Sqlite => &self.sqlite,
            Dialect::Postgres => &self.postgres,
        };
        cell.get_or_init(|| render(self.text, dialect))
    }
}

/// The named differences between the dialects, and the column lists and
/// clauses many statements share. A name not listed stays as written.
fn fragment(name: &str, dialect: Dialect) -> Option<&'static str> {
    use Dialect::{Postgres, Sqlite};
    Some(match (name, dialect) {
        // The database clock in UTC milliseconds: times never come from the host.
        ("now", Sqlite) => "CAST(unixepoch('subsec') * 1000 AS INTEGER)",
        ("now", Postgres) => "(extract(epoch from clock_timestamp()) * 1000)::bigint",
        // Locks the rows a claim reads; concurrent claimers each take rows the
        // others have not locked. SQLite has one writer at a time: no clause.
        ("skip_locked", Sqlite) => "",
        ("skip_locked", Postgres) => " FOR UPDATE SKIP LOCKED",
        // Every row after the first `$1`.
        ("rows_after", Sqlite) => "LIMIT -1 OFFSET $1",
        ("rows_after", Postgres) => "OFFSET $1",
        // A JSON array aggregate and constructor (see `sched::json_rows`).
        ("json_agg", Sqlite) => "json_group_array",
        ("json_agg", Postgres) => "json_agg",
        ("json_array", Sqlite) => "json_array",
        ("json_array", Postgres) => "json_build_array",
        // The strings of the JSON array bound as `$N`, as rows of one column.
        ("json_texts_1", Sqlite) => "SELECT value FROM json_each($1)",
        ("json_texts_1", Postgres) => "SELECT json_array_elements_text(CAST($1 AS json))",
        ("json_texts_1_as_k", Sqlite) => "SELECT value AS k FROM json_each($1)",
        ("json_texts_1_as_k", Postgres) => "SELECT json_array_elements_text(CAST($1 AS json)) AS k",
        ("json_texts_5", Sqlite) => "SELECT value FROM json_each($5)",
        ("json_texts_5", Postgres) => "SELECT json_array_elements_text(CAST($5 AS json))",
        ("json_texts_6", Sqlite) => "SELECT value FROM json_each($6)",
        ("json_texts_6", Postgres) => "SELECT json_array_elements_text(CAST($6 AS json))",
        ("json_texts_7", Sqlite) => "SELECT value FROM json_each($7)",
        ("json_texts_7", Postgres) => "SELECT json_array_elements_text(CAST($7 AS json))",
        ("job_columns", _) => super::sched::JOB_COLUMNS,
        ("trigger_columns", _) => super::sched::TRIGGER_COLUMNS,
        ("history_columns", _) => super::sched::HISTORY_COLUMNS,
        ("event_columns", _) => super::events::EVENT_COLUMNS,
        ("delivery_columns", _) => super::events::DELIVERY_COLUMNS,
        ("refresh_wit_need", _) => super::sched::REFRESH_WIT_NEED,
        ("unrunnable_jobs", _) => super::sched::UNRUNNABLE_JOBS,
        _ => return None,
    })
}

fn render(text: &str, dialect: Dialect) -> String {
    let mut out = String::with_capacity(text.len() + 128);
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let known = after
            .find('}')
            .and_then(|close| Some((close, fragment(&after[..close], dialect)?)));
        match known {
            Some((close, words)) => {
                // Fragments may name fragments (the column lists do not, today).
                out.push_str(&render(words, dialect));
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

impl Dialect {
    /// How a transaction that writes begins. SQLite takes the write lock up
    /// front: a deferred transaction that reads first and then writes fails at
    /// once with `SQLITE_BUSY` when another writer got in between.
    pub(crate) fn begin_write(self) -> &'static str {
        match self {
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Postgres => "BEGIN",
        }
    }

    /// A notice to every process using the store, sent on commit (`$1` the
    /// channel, `$2` the payload); `None` where one process uses the store.
    pub(crate) fn notify(self) -> Option<&'static str> {
        match self {
            Dialect::Sqlite => None,
            Dialect::Postgres => Some("SELECT pg_notify($1, current_schema() || ' ' || $2)"),
        }
    }
}

/// A sqlx driver the store runs on, with what sqlx leaves to each driver.
pub(crate) trait Db: Database {
    const DIALECT: Dialect;
    fn rows_affected(done: &Self::QueryResult) -> u64;
}

impl Db for sqlx::Sqlite {
    const DIALECT: Dialect = Dialect::Sqlite;
    fn rows_affected(done: &Self::QueryResult) -> u64 {
        done.rows_affected()
    }
}

impl Db for sqlx::Postgres {
    const DIALECT: Dialect = Dialect::Postgres;
    fn rows_affected(done: &Self::QueryResult) -> u64 {
        done.rows_affected()
    }
}

/// A store type: its pool and what it does around writes. The store's
/// traits are implemented once for every `Backend` (`common.rs`, `sched.rs`,
/// `events.rs`).
#[async_trait]
pub(crate) trait Backend: Send + Sync + 'static {
    type Db: Db;
    fn pool(&self) -> &sqlx::Pool<Self::Db>;
    /// This process's queue of writers, where the database has one writer at
    /// a time: handed over at once instead of each waiter sleeping in SQLite's
    /// busy handler.
    fn write_queue(&self) -> Option<&tokio::sync::Mutex<()>>;
    async fn migrate_schema(&self) -> Result<(), StoreError>;
    /// See [`super::Store::module_watch`].
    async fn module_watch_start(&self) -> Result<Option<ModuleWatch>, StoreError>;
}

/// Waits for this process's turn to write, where the backend queues writers.
pub(crate) async fn writer<B: Backend>(b: &B) -> Option<tokio::sync::MutexGuard<'_, ()>> {
    match b.write_queue() {
        Some(queue) => Some(queue.lock().await),
        None => None,
    }
}

// The generic impls of the store's traits (`common.rs`, `sched.rs`,
// `events.rs`) each carry the same `where` clauses: what sqlx must provide for
// a driver (executors for its connections, the value types bound and read).
// Rust does not carry a trait's `where` clauses to the users of the trait, so
// they cannot be named once; a new value type is added to each list.

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_rendered_per_dialect_and_unknown_braces_stay() {
        static CLOCK: Sql = Sql::new("SELECT {now} AS now, '{x}' FROM t{skip_locked}");
        assert_eq!(
            CLOCK.on(Dialect::Sqlite),
            "SELECT CAST(unixepoch('subsec') * 1000 AS INTEGER) AS now, '{x}' FROM t"
        );
        assert_eq!(
            CLOCK.on(Dialect::Postgres),
            "SELECT (extract(epoch from clock_timestamp()) * 1000)::bigint AS now, '{x}' FROM t FOR UPDATE SKIP LOCKED"
        );
        // Rendered once: the same text every time.
        assert!(std::ptr::eq(
            CLOCK.on(Dialect::Sqlite),
            CLOCK.on(Dialect::Sqlite)
        ));
    }
}
