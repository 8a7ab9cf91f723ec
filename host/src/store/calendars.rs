//! The store's half of exclusion calendars: the `calendars` table, and the
//! triggers that name them.
//!
//! A calendar's definition is stored whole, as the JSON of
//! [`CalendarDef`]. Storing one checks its chain of bases (no cycle, no
//! missing base) against the others in the same transaction, and recomputes
//! the next fire of every waiting (or failed) trigger whose calendars include
//! it, directly or as a base: a changed calendar holds from the next fire on.
//! Deleting one that a trigger or another calendar uses is refused, naming
//! them. The claim reads definitions with the due triggers (see
//! `sched::DUE_TRIGGERS`), never per trigger.

use super::sql::{Backend, Db, Sql, writer};
use super::{StoreError, sched::TriggerColumns};
use crate::schedule::calendar::{CalendarDef, CalendarSet, Exclusion};
use crate::schedule::trigger::TriggerSpec;
use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, Row, Type};
use std::sync::Arc;

/// A stored calendar.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CalendarRow {
    #[serde(flatten)]
    pub def: CalendarDef,
    /// Who stored it: `manifest`, `api`, `cli`.
    pub source: String,
    pub updated_ms: i64,
}

/// The store's calendar methods. See the module docs.
#[async_trait]
pub trait CalendarStore: Send + Sync {
    /// Stores (or replaces) a calendar and recomputes the next fire of the
    /// triggers it affects; answers their keys.
    ///
    /// # Errors
    ///
    /// [`StoreError::Conflict`] when its base does not exist or the bases
    /// would form a cycle.
    async fn calendar_put(
        &self,
        def: &CalendarDef,
        source: &str,
    ) -> Result<Vec<String>, StoreError>;
    async fn calendar_get(&self, name: &str) -> Result<Option<CalendarRow>, StoreError>;
    /// Every calendar, by name.
    async fn calendar_list(&self) -> Result<Vec<CalendarRow>, StoreError>;
    /// Deletes a calendar no trigger and no other calendar uses; false when
    /// there is none of that name.
    ///
    /// # Errors
    ///
    /// [`StoreError::Conflict`] naming the triggers and calendars that use it.
    async fn calendar_delete(&self, name: &str) -> Result<bool, StoreError>;
}

/// Every calendar's definition, for resolving a trigger's names.
pub(crate) static CALENDAR_DEFINITIONS: Sql = Sql::new("SELECT definition FROM calendars");
static CALENDAR_ROWS: Sql =
    Sql::new("SELECT name, definition, source, updated_at FROM calendars ORDER BY name");
static CALENDAR_ROW: Sql =
    Sql::new("SELECT name, definition, source, updated_at FROM calendars WHERE name = $1");
static CALENDAR_UPSERT: Sql = Sql::new(
    "INSERT INTO calendars (name, definition, source, updated_at) VALUES ($1, $2, $3, {now}) \
     ON CONFLICT (name) DO UPDATE SET definition = excluded.definition, source = excluded.source, \
     updated_at = excluded.updated_at",
);
static CALENDAR_DELETE: Sql = Sql::new("DELETE FROM calendars WHERE name = $1");
/// Triggers naming any calendar; the names are matched in Rust (JSON text).
static TRIGGERS_WITH_CALENDARS: Sql = Sql::new(
    "SELECT {trigger_columns} FROM triggers WHERE calendars IS NOT NULL ORDER BY trigger_key",
);
static TRIGGER_RECOMPUTE: Sql = Sql::new(
    "UPDATE triggers SET state = $1, next_fire_ms = $2, error = $3, updated_at = {now} \
     WHERE trigger_key = $4",
);
static CLOCK: Sql = Sql::new("SELECT {now}");

/// The calendars of these stored definitions.
pub(crate) fn calendar_set(texts: Vec<String>) -> Result<CalendarSet, StoreError> {
    texts
        .iter()
        .map(|t| {
            serde_json::from_str::<CalendarDef>(t)
                .map_err(|e| StoreError::Corrupt(format!("unreadable calendar definition: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(CalendarSet::new)
}

/// The resolved calendars of a trigger; `None` when it names none.
pub(crate) fn exclusion_of(
    spec: &TriggerSpec,
    calendars: &CalendarSet,
) -> Result<Option<Arc<Exclusion>>, String> {
    if spec.calendars.is_empty() {
        return Ok(None);
    }
    calendars
        .exclusion(&spec.calendars)
        .map(Some)
        .map_err(|e| e.message)
}

/// Where a trigger stands once its calendars changed: its state, next fire
/// and error. A trigger already due keeps its due time as the start of the
/// search, so what it missed is still judged by its misfire policy.
pub(crate) fn recomputed(
    spec: &TriggerSpec,
    next_fire_ms: Option<i64>,
    calendars: &CalendarSet,
    now: i64,
) -> (&'static str, Option<i64>, Option<String>) {
    let from = next_fire_ms.map_or(now, |next| next.min(now));
    // In ERROR the trigger keeps its next fire, as the claim leaves it: once
    // reset (a start resets ERROR triggers) it is planned, and judged, again.
    let exclusion = match exclusion_of(spec, calendars) {
        Ok(x) => x,
        Err(e) => return ("ERROR", next_fire_ms, Some(e)),
    };
    match spec.first_due_excluding(from, exclusion.as_deref()) {
        Ok(Some(next)) => ("WAITING", Some(next), None),
        Ok(None) => ("COMPLETE", None, None),
        Err(e) => ("ERROR", next_fire_ms, Some(e.to_string())),
    }
}

fn row_of<R: Row>(r: &R) -> Result<CalendarRow, StoreError>
where
    for<'a> &'a str: ColumnIndex<R>,
    for<'a> String: Decode<'a, R::Database> + Type<R::Database>,
    for<'a> i64: Decode<'a, R::Database> + Type<R::Database>,
{
    let text: String = r.try_get("definition")?;
    let def: CalendarDef = serde_json::from_str(&text)
        .map_err(|e| StoreError::Corrupt(format!("unreadable calendar definition: {e}")))?;
    Ok(CalendarRow {
        def,
        source: r.try_get("source")?,
        updated_ms: r.try_get("updated_at")?,
    })
}

#[async_trait]
impl<S, DB> CalendarStore for S
where
    S: Backend<Db = DB>,
    DB: Db,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'r> &'r str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    for<'q> i32: Decode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> f64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB>,
    for<'q> Option<String>: Encode<'q, DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
{
    async fn calendar_put(
        &self,
        def: &CalendarDef,
        source: &str,
    ) -> Result<Vec<String>, StoreError> {
        let _writer = writer(self).await;
        let mut tx = self.pool().begin_with(DB::DIALECT.begin_write()).await?;
        let now: i64 = sqlx::query_scalar(CLOCK.on(DB::DIALECT))
            .fetch_one(&mut *tx)
            .await?;
        let texts: Vec<String> = sqlx::query_scalar(CALENDAR_DEFINITIONS.on(DB::DIALECT))
            .fetch_all(&mut *tx)
            .await?;
        let stored = calendar_set(texts)?;
        let unchanged = stored.get(&def.name) == Some(def);
        let mut defs: Vec<CalendarDef> =
            stored.into_defs().filter(|d| d.name != def.name).collect();
        defs.push(def.clone());
        let set = CalendarSet::new(defs);
        set.chain(&def.name)
            .map_err(|e| StoreError::Conflict(format!("calendar {:?}: {}", def.name, e.message)))?;
        let text = serde_json::to_string(def)
            .map_err(|e| StoreError::Corrupt(format!("calendar {:?}: {e}", def.name)))?;
        sqlx::query(CALENDAR_UPSERT.on(DB::DIALECT))
            .bind(def.name.as_str())
            .bind(text)
            .bind(source)
            .execute(&mut *tx)
            .await?;
        if unchanged {
            // Declared again as it was (every start of every node): no trigger moves.
            tx.commit().await?;
            return Ok(Vec::new());
        }
        // The triggers it changes: those naming it or a calendar based on it.
        let affected = set.dependents(&def.name);
        let triggers: Vec<TriggerColumns> = sqlx::query_as(TRIGGERS_WITH_CALENDARS.on(DB::DIALECT))
            .fetch_all(&mut *tx)
            .await?;
        let mut recomputed_keys = Vec::new();
        for t in triggers {
            let t = t.into_row()?;
            let uses = t.spec.calendars.iter().any(|c| affected.contains(c));
            let live = matches!(
                t.state,
                super::model::TriggerState::Waiting | super::model::TriggerState::Error
            );
            if !uses || !live {
                continue;
            }
            let (state, next, error) = recomputed(&t.spec, t.next_fire_ms, &set, now);
            sqlx::query(TRIGGER_RECOMPUTE.on(DB::DIALECT))
                .bind(state)
                .bind(next)
                .bind(error)
                .bind(t.trigger_key.as_str())
                .execute(&mut *tx)
                .await?;
            recomputed_keys.push(t.trigger_key);
        }
        tx.commit().await?;
        Ok(recomputed_keys)
    }

    async fn calendar_get(&self, name: &str) -> Result<Option<CalendarRow>, StoreError> {
        let row = sqlx::query(CALENDAR_ROW.on(DB::DIALECT))
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(row_of).transpose()
    }

    async fn calendar_list(&self) -> Result<Vec<CalendarRow>, StoreError> {
        let rows = sqlx::query(CALENDAR_ROWS.on(DB::DIALECT))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(row_of).collect()
    }

    async fn calendar_delete(&self, name: &str) -> Result<bool, StoreError> {
        let _writer = writer(self).await;
        let mut tx = self.pool().begin_with(DB::DIALECT.begin_write()).await?;
        let triggers: Vec<TriggerColumns> = sqlx::query_as(TRIGGERS_WITH_CALENDARS.on(DB::DIALECT))
            .fetch_all(&mut *tx)
            .await?;
        let mut users: Vec<String> = Vec::new();
        for t in triggers {
            let t = t.into_row()?;
            if t.spec.calendars.iter().any(|c| c == name) {
                users.push(t.trigger_key);
            }
        }
        if !users.is_empty() {
            return Err(StoreError::Conflict(format!(
                "calendar {name:?} is used by trigger(s) {}: detach it from them first",
                users.join(", ")
            )));
        }
        let texts: Vec<String> = sqlx::query_scalar(CALENDAR_DEFINITIONS.on(DB::DIALECT))
            .fetch_all(&mut *tx)
            .await?;
        let based = calendar_set(texts)?.based_on(name);
        if !based.is_empty() {
            return Err(StoreError::Conflict(format!(
                "calendar {name:?} is the base of calendar(s) {}: change their base first",
                based.join(", ")
            )));
        }
        let done = sqlx::query(CALENDAR_DELETE.on(DB::DIALECT))
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(DB::rows_affected(&done) > 0)
    }
}
