//! The operator's changes to many fires at once: a backfill (fires at past
//! times of a job's triggers), a replay (failed fires run again, each once)
//! and a bulk cancel (waiting fires deleted and recorded as cancelled).
//!
//! Each is one transaction on the database clock. None of them is on the
//! fire path: the claim reads what they write (`fires.origin`) in the rows it
//! reads anyway. They never touch a claimed or running fire.

use super::StoreError;
use super::model::{FireOrigin, HistoryEntry, HistoryStatus};
use super::sched::{history_from_row, history_row, insert_history, new_id};
use super::sql::{Backend, Db, Sql, writer};
use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, QueryBuilder, Row, Type};
use std::collections::HashSet;

/// Fires at past times of a job's triggers (`fire_backfill`).
#[derive(Clone, Debug)]
pub struct BackfillPut {
    pub job_key: String,
    /// `(trigger key, scheduled time)`, in the order they are to run.
    pub times: Vec<(String, i64)>,
    /// What the fires' origin says: a backfill with its overlap mode.
    pub origin: FireOrigin,
}

/// What a backfill did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackfillDone {
    /// Fires created.
    pub created: u64,
    /// Times a fire already had (waiting, claimed or running): not created twice.
    pub existing: u64,
}

/// Which history rows a replay or a report picks (`history_select`).
#[derive(Clone, Debug, Default)]
pub struct HistorySelect {
    /// A job key, `GROUP/*` or `*`.
    pub job_pattern: String,
    /// Any of these statuses (none: any status).
    pub statuses: Vec<HistoryStatus>,
    /// Rows started at or after this instant.
    pub since_ms: i64,
    /// Rows started before this instant, if given.
    pub until_ms: Option<i64>,
    /// Most rows, oldest first.
    pub limit: i64,
}

/// One failed fire to run again (`fire_replay`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayPut {
    /// The fire replayed: the first fire, for a replay of a replay. A fire
    /// is replayed once, whatever became of its replay.
    pub source_fire_id: String,
    pub job_key: String,
    pub trigger_key: String,
    /// The original scheduled time: the replay's `scheduled-at`.
    pub scheduled_ms: i64,
    /// The event the original fire ran for (`''`: none).
    pub event_id: String,
}

/// A job's data and flow and its fire's event (name, key, payload), if any.
type FlowInput = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// What became of one [`ReplayPut`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Replayed {
    /// A fire was created, with this id.
    Started(String),
    /// The fire was replayed before.
    Already,
    /// The job is gone, or a fire of the same trigger, time and event waits:
    /// nothing was created or recorded.
    NotStarted(&'static str),
}

/// Which waiting fires a bulk cancel deletes (`fire_cancel`).
#[derive(Clone, Debug, Default)]
pub struct FireCancel {
    /// A job key, `GROUP/*` or `*`.
    pub job_pattern: String,
    /// Only the fires of this trigger key.
    pub trigger_key: Option<String>,
    /// Only fires scheduled before this instant.
    pub before_ms: Option<i64>,
    /// Only fires of this origin kind: `""` (plain), `backfill` or `replay`.
    pub origin: Option<String>,
    /// Recorded in each fire's history row.
    pub reason: String,
}

/// The job filter of [`HistorySelect`] and [`FireCancel`] as two binds: the
/// job key, or the group of `GROUP/*`; `*` binds neither.
fn job_binds(pattern: &str) -> (Option<String>, Option<String>) {
    match pattern {
        "*" => (None, None),
        p => match p.strip_suffix("/*") {
            Some(group) => (None, Some(group.to_string())),
            None => (Some(p.to_string()), None),
        },
    }
}

/// The operator's bulk changes to fires. See the module docs.
#[async_trait]
pub trait Bulk: Send + Sync {
    /// Creates one waiting fire per time of `put`, with its origin; a time a
    /// fire already has is left as it is. Due now, one millisecond apart in
    /// the order given, so that one-at-a-time modes run them in that order.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`] when the job does not exist.
    async fn fire_backfill(&self, put: &BackfillPut) -> Result<BackfillDone, StoreError>;
    /// History rows matching `select`, oldest first.
    async fn history_select(&self, select: &HistorySelect)
    -> Result<Vec<HistoryEntry>, StoreError>;
    /// Creates a fire per replay not recorded before, and records it, in one
    /// transaction: a second call with the same fires creates none.
    async fn fire_replay(&self, puts: &[ReplayPut]) -> Result<Vec<Replayed>, StoreError>;
    /// Deletes the waiting fires `cancel` matches (never a claimed or running
    /// one) and records each as `cancelled` with the reason; returns how many.
    async fn fire_cancel(&self, cancel: &FireCancel) -> Result<u64, StoreError>;
}

static CLOCK: Sql = Sql::new("SELECT {now}");
static JOB_PRIORITY: Sql = Sql::new("SELECT priority, data, flow FROM jobs WHERE job_key = $1");
// What a replayed fire's flow keys are rendered from: its job, and its event.
static FLOW_INPUT: Sql = Sql::new(
    "SELECT j.data, j.flow, e.name, e.idem_key, e.payload FROM jobs j \
     LEFT JOIN events e ON e.event_id = $2 WHERE j.job_key = $1",
);
static HELD_OF_JOB: Sql =
    Sql::new("SELECT trigger_key, scheduled_ms FROM held_claims WHERE job_key = $1");
static BACKFILL_INSERT: Sql = Sql::new(
    "INSERT INTO fires (fire_id, trigger_key, job_key, scheduled_ms, due_ms, priority, attempt, state, recovering, \
     fencing, origin, concurrency_key, rate_key) ",
);
static HISTORY_SELECT: Sql = Sql::new(
    "SELECT {history_columns} FROM task_history WHERE ($1 IS NULL OR job_key = $1) \
     AND ($2 IS NULL OR substr(job_key, 1, length($2) + 1) = $2 || '/') \
     AND started_ms >= $3 AND ($4 IS NULL OR started_ms < $4) \
     AND ($5 IS NULL OR status IN ({json_texts_5})) ORDER BY started_ms, id LIMIT $6",
);
static REPLAY_RECORD: Sql = Sql::new(
    "INSERT INTO fire_replays (source_fire_id, fire_id, job_key, created_ms) VALUES ($1, $2, $3, $4) \
     ON CONFLICT DO NOTHING",
);
static REPLAY_FIRE: Sql = Sql::new(
    "INSERT INTO fires (fire_id, trigger_key, job_key, scheduled_ms, due_ms, priority, attempt, state, recovering, \
     fencing, event_id, origin, concurrency_key, rate_key) \
     SELECT $1, $2, job_key, $3, $4, priority, 1, 'scheduled', 0, 0, $5, $6, $8, $9 FROM jobs WHERE job_key = $7 \
     ON CONFLICT DO NOTHING",
);
static REPLAY_UNRECORD: Sql = Sql::new("DELETE FROM fire_replays WHERE source_fire_id = $1");
static FIRE_CANCEL: Sql = Sql::new(
    "DELETE FROM fires WHERE state = 'scheduled' AND ($1 IS NULL OR job_key = $1) \
     AND ($2 IS NULL OR substr(job_key, 1, length($2) + 1) = $2 || '/') \
     AND ($3 IS NULL OR trigger_key = $3) AND ($4 IS NULL OR scheduled_ms < $4) \
     AND ($5 IS NULL OR origin = $5 OR substr(origin, 1, length($5) + 1) = $5 || ':') \
     RETURNING fire_id, trigger_key, job_key, scheduled_ms, origin",
);

#[async_trait]
impl<S, DB> Bulk for S
where
    S: Backend<Db = DB>,
    DB: Db,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'r> &'r str: ColumnIndex<DB::Row>,
    usize: ColumnIndex<DB::Row>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB>,
    for<'q> Option<String>: Encode<'q, DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
{
    async fn fire_backfill(&self, put: &BackfillPut) -> Result<BackfillDone, StoreError> {
        let _writer = writer(self).await;
        let mut tx = self.pool().begin_with(DB::DIALECT.begin_write()).await?;
        let now: i64 = sqlx::query_scalar(CLOCK.on(DB::DIALECT))
            .fetch_one(&mut *tx)
            .await?;
        let job: Option<(i64, String, Option<String>)> =
            sqlx::query_as(JOB_PRIORITY.on(DB::DIALECT))
                .bind(&put.job_key)
                .fetch_optional(&mut *tx)
                .await?;
        let Some((priority, data, flow)) = job else {
            return Err(StoreError::NotFound(format!("no job {:?}", put.job_key)));
        };
        // The backfill's fires are held to the job's flow control as its
        // trigger's own are (their keys rendered as a clock fire's).
        let flow = crate::domain::flow::Flow::from_column(flow.as_deref());
        // A time held as a running `held_claims` row has its fire: a `fires`
        // row of the same time could not take its place on a retry.
        let held: Vec<(String, i64)> = sqlx::query_as(HELD_OF_JOB.on(DB::DIALECT))
            .bind(&put.job_key)
            .fetch_all(&mut *tx)
            .await?;
        let held: HashSet<(String, i64)> = held.into_iter().collect();
        let fresh: Vec<(usize, &(String, i64))> = put
            .times
            .iter()
            .enumerate()
            .filter(|(_, t)| !held.contains(t))
            .collect();
        let origin = put.origin.to_stored();
        let mut created = 0;
        for chunk in fresh.chunks(200) {
            let mut qb = QueryBuilder::<DB>::new(BACKFILL_INSERT.on(DB::DIALECT));
            qb.push_values(chunk, |mut b, (i, (trigger_key, scheduled_ms))| {
                b.push_bind(new_id())
                    .push_bind(trigger_key.clone())
                    .push_bind(put.job_key.clone())
                    .push_bind(*scheduled_ms)
                    .push_bind(now + i64::try_from(*i).unwrap_or(0))
                    .push_bind(priority)
                    .push_bind(1i64)
                    .push_bind("scheduled")
                    .push_bind(0i64)
                    .push_bind(0i64)
                    .push_bind(origin.clone());
                let (concurrency_key, rate_key) = flow.keys(&crate::domain::flow::KeyInput {
                    job_key: &put.job_key,
                    trigger_key,
                    data: &data,
                    event: None,
                });
                b.push_bind(concurrency_key).push_bind(rate_key);
            });
            // A time with a fire (waiting, claimed, or of an earlier backfill)
            // keeps it: the store makes a double fire impossible.
            qb.push(" ON CONFLICT DO NOTHING");
            created += DB::rows_affected(&qb.build().execute(&mut *tx).await?);
        }
        tx.commit().await?;
        Ok(BackfillDone {
            created,
            existing: put.times.len() as u64 - created,
        })
    }

    async fn history_select(
        &self,
        select: &HistorySelect,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let (job, group) = job_binds(&select.job_pattern);
        let statuses = (!select.statuses.is_empty()).then(|| {
            serde_json::Value::from(
                select
                    .statuses
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>(),
            )
            .to_string()
        });
        let rows = sqlx::query(HISTORY_SELECT.on(DB::DIALECT))
            .bind(job)
            .bind(group)
            .bind(select.since_ms)
            .bind(select.until_ms)
            .bind(statuses)
            .bind(select.limit.max(1))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(history_from_row).collect()
    }

    async fn fire_replay(&self, puts: &[ReplayPut]) -> Result<Vec<Replayed>, StoreError> {
        let _writer = writer(self).await;
        let mut tx = self.pool().begin_with(DB::DIALECT.begin_write()).await?;
        let now: i64 = sqlx::query_scalar(CLOCK.on(DB::DIALECT))
            .fetch_one(&mut *tx)
            .await?;
        let mut out = Vec::with_capacity(puts.len());
        for put in puts {
            let fire_id = new_id();
            let recorded = sqlx::query(REPLAY_RECORD.on(DB::DIALECT))
                .bind(&put.source_fire_id)
                .bind(&fire_id)
                .bind(&put.job_key)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            if DB::rows_affected(&recorded) == 0 {
                out.push(Replayed::Already);
                continue;
            }
            let origin = FireOrigin::Replay {
                of: put.source_fire_id.clone(),
            };
            // The replay is held to the job's flow control, its keys rendered
            // from the job as it is now and the original event.
            let input: Option<FlowInput> = sqlx::query_as(FLOW_INPUT.on(DB::DIALECT))
                .bind(&put.job_key)
                .bind(&put.event_id)
                .fetch_optional(&mut *tx)
                .await?;
            let (concurrency_key, rate_key) = match input {
                Some((data, Some(flow), name, key, payload)) => {
                    crate::domain::flow::Flow::from_column(Some(&flow)).keys(
                        &crate::domain::flow::KeyInput {
                            job_key: &put.job_key,
                            trigger_key: &put.trigger_key,
                            data: &data,
                            event: name.as_deref().map(|name| crate::domain::flow::EventInput {
                                name,
                                key: key.as_deref(),
                                payload: payload.as_deref().unwrap_or("null"),
                            }),
                        },
                    )
                }
                _ => (None, None),
            };
            let created = sqlx::query(REPLAY_FIRE.on(DB::DIALECT))
                .bind(&fire_id)
                .bind(&put.trigger_key)
                .bind(put.scheduled_ms)
                .bind(now)
                .bind(&put.event_id)
                .bind(origin.to_stored())
                .bind(&put.job_key)
                .bind(concurrency_key)
                .bind(rate_key)
                .execute(&mut *tx)
                .await?;
            if DB::rows_affected(&created) == 1 {
                out.push(Replayed::Started(fire_id));
                continue;
            }
            // Not started: not recorded either, so a later replay can.
            sqlx::query(REPLAY_UNRECORD.on(DB::DIALECT))
                .bind(&put.source_fire_id)
                .execute(&mut *tx)
                .await?;
            out.push(Replayed::NotStarted(
                "the job is gone, or a fire of the same trigger and time waits",
            ));
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn fire_cancel(&self, cancel: &FireCancel) -> Result<u64, StoreError> {
        let _writer = writer(self).await;
        let mut tx = self.pool().begin_with(DB::DIALECT.begin_write()).await?;
        let now: i64 = sqlx::query_scalar(CLOCK.on(DB::DIALECT))
            .fetch_one(&mut *tx)
            .await?;
        let (job, group) = job_binds(&cancel.job_pattern);
        let rows = sqlx::query(FIRE_CANCEL.on(DB::DIALECT))
            .bind(job)
            .bind(group)
            .bind(cancel.trigger_key.as_deref())
            .bind(cancel.before_ms)
            .bind(cancel.origin.as_deref())
            .fetch_all(&mut *tx)
            .await?;
        let mut history = Vec::with_capacity(rows.len());
        for row in &rows {
            let fire_id: String = row.try_get("fire_id")?;
            let trigger_key: String = row.try_get("trigger_key")?;
            let job_key: String = row.try_get("job_key")?;
            let origin = FireOrigin::from_stored(&row.try_get::<String, _>("origin")?);
            let mut details = serde_json::json!({ "reason": "cancelled", "note": cancel.reason });
            if !origin.is_plain() {
                details["origin"] = serde_json::json!(origin.kind());
            }
            history.push(history_row(
                Some(&fire_id),
                &job_key,
                Some(&trigger_key),
                HistoryStatus::Cancelled,
                Some(row.try_get("scheduled_ms")?),
                now,
                details,
            ));
        }
        insert_history(&mut tx, &history).await?;
        tx.commit().await?;
        Ok(history.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::job_binds;

    #[test]
    fn a_job_pattern_binds_a_key_a_group_or_nothing() {
        assert_eq!(job_binds("*"), (None, None));
        assert_eq!(job_binds("g/*"), (None, Some("g".into())));
        assert_eq!(job_binds("g/a"), (Some("g/a".into()), None));
    }
}
