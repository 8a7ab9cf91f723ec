//! The scheduler's half of the store: jobs, triggers, fires, history, nodes.
//!
//! Due-ness and ownership are decided here, in transactions, on the database
//! clock: a fire is a row unique on (trigger, scheduled time), claimed with a
//! lease and a fencing token, and completed only by the claim that holds it.
//! The row is one of two kinds. The next fire of an `allow` job, claimed in
//! the transaction that finds its trigger due (the common case), is a
//! `held_claims` row: one per trigger, a table with no index but its key. Every
//! other fire (queued for a `forbid` job, retried, released, recovered, run
//! now, from an event or a start) is a `fires` row. The claim never makes a
//! second fire of a (trigger, time) that either table has; a held fire that
//! must wait again moves to `fires` with the same id.
//! A node claims only fires of jobs whose module needs a contract version it
//! runs (`jobs.wit_need`, kept current by job and module writes, against the
//! node's range): one more condition in the claim, no query per fire.
//! Both dialects share every statement (`$n` placeholders, integer times and
//! booleans); the macro below differs only in the clock expression and the
//! row-locking clause.

use super::StoreError;
use super::model::*;
use async_trait::async_trait;

/// The scheduler's store methods. See the module docs.
#[async_trait]
pub trait Scheduling: Send + Sync {
    /// The database clock, UTC milliseconds.
    async fn now_ms(&self) -> Result<i64, StoreError>;
    /// Creates or replaces a job and its triggers. Triggers whose schedule did not
    /// change keep their state and next fire; triggers not listed are removed.
    async fn job_put(&self, job: &JobDef, triggers: &[TriggerPut]) -> Result<(), StoreError> {
        self.jobs_put(&[(job.clone(), triggers.to_vec())]).await
    }
    /// [`Scheduling::job_put`] for many jobs in one transaction, with multi-row
    /// statements: how manifests and bulk loads are applied.
    async fn jobs_put(&self, jobs: &[(JobDef, Vec<TriggerPut>)]) -> Result<(), StoreError>;
    async fn job_get(&self, job_key: &str) -> Result<Option<JobDef>, StoreError>;
    async fn job_list(&self) -> Result<Vec<JobDef>, StoreError>;
    /// Deletes a job, its triggers and its fires not yet running.
    async fn job_delete(&self, job_key: &str) -> Result<bool, StoreError>;
    /// Pauses or resumes a job; returns whether it exists.
    async fn job_pause(&self, job_key: &str, paused: bool) -> Result<bool, StoreError>;
    /// Pauses or resumes every job of a group; returns how many.
    async fn group_pause(&self, group: &str, paused: bool) -> Result<u64, StoreError>;
    async fn trigger_list(&self, job_key: Option<&str>) -> Result<Vec<TriggerRow>, StoreError>;
    /// Pauses or resumes one trigger; returns whether it exists.
    async fn trigger_pause(&self, trigger_key: &str, paused: bool) -> Result<bool, StoreError>;
    /// Makes every ERROR trigger WAITING again (bootstrap).
    async fn trigger_reset_errors(&self) -> Result<u64, StoreError>;
    /// Adds a fire of `job_key` due now; returns its id.
    async fn fire_now(&self, job_key: &str) -> Result<String, StoreError>;
    /// Creates the fires of `on-start` triggers, and of `once` triggers not yet run
    /// for their job's module; returns how many.
    async fn fire_startup(&self) -> Result<u64, StoreError>;
    /// Turns due triggers into fires and claims due fires for `params.node_id`.
    async fn fire_acquire(&self, params: &AcquireParams) -> Result<Acquired, StoreError>;
    /// Commits the ends of runs in one transaction. A completion whose claim was
    /// taken over (lease expired, fencing token moved on) is refused: `false`.
    async fn fire_complete(&self, batch: &[Completion]) -> Result<Vec<bool>, StoreError>;
    /// Extends the leases of `fire_ids`, fires `node_id` holds, to `lease_ms`
    /// from now; returns how many. Only leases with less than half left are
    /// touched, so a fire is rewritten at most once per half lease however often
    /// this is called, and short runs never are. Only fires the node knows it
    /// runs are named: a claim whose commit it never saw acknowledged (the
    /// connection dropped) expires and is recovered rather than being renewed,
    /// unrun, for ever.
    async fn lease_renew(
        &self,
        node_id: &str,
        fire_ids: &[String],
        lease_ms: i64,
    ) -> Result<u64, StoreError>;
    /// Marks claims of `node_id` as started: their runs are about to begin. A
    /// claim never marked is handed back untouched when its node is lost.
    /// `fires` are `(fire_id, trigger_key, held)` as in the claims. Returns how
    /// many were marked (a claim taken over since is not).
    async fn fire_mark_started(
        &self,
        node_id: &str,
        fires: &[(String, String, bool)],
    ) -> Result<u64, StoreError>;
    /// Recovers claimed fires whose lease expired or whose node has not checked in
    /// for `dead_after_ms`: re-queued with `recovering` when
    /// the job requests recovery, otherwise recorded as failed. Returns how many.
    /// `live_node` is the calling node, running now: however late its own last
    /// check-in, it is never taken for dead (a busy node must not recover its
    /// own runs); its claims are recovered only when their lease ran out, which
    /// happens to claims it does not hold (it renews those it runs first).
    async fn fire_recover(
        &self,
        dead_after_ms: i64,
        live_node: Option<&str>,
    ) -> Result<u64, StoreError>;
    /// Fires claimed or waiting, oldest first.
    async fn fire_list(&self) -> Result<Vec<FireClaim>, StoreError>;
    async fn history_list(&self, filter: &HistoryFilter) -> Result<Vec<HistoryEntry>, StoreError>;
    /// How many history rows match (`limit` and `before_ms` ignored).
    async fn history_count(&self, filter: &HistoryFilter) -> Result<u64, StoreError>;
    /// History per time bucket over a bounded window: rows per status and the
    /// fire lag of runs (first attempts: a retry's delay is its backoff). Reads through the `history_by_started` index; only
    /// non-empty buckets are returned, in order.
    async fn history_stats(
        &self,
        params: &HistoryStatsParams,
    ) -> Result<Vec<HistoryBucket>, StoreError>;
    /// Deletes history older than `max_age_ms` and beyond the newest `max_rows`.
    async fn history_cleanup(&self, max_age_ms: i64, max_rows: i64) -> Result<u64, StoreError>;
    /// Takes lock `name` for `holder` unless someone else holds an unexpired lease;
    /// returns the new fencing token.
    async fn lock_try(
        &self,
        name: &str,
        holder: &str,
        lease_ms: i64,
    ) -> Result<Option<i64>, StoreError>;
    /// Extends a held lease; false when the lease was lost (expired and taken).
    async fn lock_renew(&self, name: &str, token: i64, lease_ms: i64) -> Result<bool, StoreError>;
    /// Releases a lease; a stale token releases nothing.
    async fn lock_release(&self, name: &str, token: i64) -> Result<bool, StoreError>;
    /// Locks held now.
    async fn lock_list(&self) -> Result<Vec<LockRow>, StoreError>;
    /// Nodes that checked in, with whether each is alive.
    async fn node_list(&self, dead_after_ms: i64) -> Result<Vec<NodeRow>, StoreError>;
    /// Records that a node is alive and what it can run.
    async fn node_heartbeat(&self, check_in: &NodeCheckIn) -> Result<(), StoreError>;
    /// Declares a node's previous run over (it is starting again under the same
    /// id), so the fires it held are recovered like a dead node's instead of
    /// being renewed by its new run. Returns whether the node was known.
    async fn node_restart(&self, node_id: &str) -> Result<bool, StoreError>;
    /// Fires due now whose job's module no live node can run (neither the
    /// caller, which runs `runs`, nor a node that checked in within
    /// `dead_after_ms`) are recorded as `skipped` with reason `no-capable-node`
    /// and removed; their triggers have already moved on. Returns how many.
    async fn fire_skip_unrunnable(
        &self,
        dead_after_ms: i64,
        runs: WitRange,
    ) -> Result<u64, StoreError>;
}

/// Sets `jobs.wit_need` to the rank of the module each job's reference resolves
/// to now (the same choice as `module_get`: a name means its newest version
/// not withdrawn by a rollback).
/// Append the `WHERE` that picks the jobs.
macro_rules! refresh_wit_need {
    () => {
        "UPDATE jobs SET wit_need = (SELECT m.wit_rank FROM modules m \
         WHERE (m.name = jobs.module AND m.withdrawn = 0) OR m.name || '@' || m.version = jobs.module \
         OR 'sha256:' || m.digest = jobs.module \
         ORDER BY m.created_at DESC, m.version DESC LIMIT 1) "
    };
}

/// A new time-ordered UUID (v7) for fires and history rows.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

pub(crate) fn history_row(
    fire_id: Option<&str>,
    job_key: &str,
    trigger_key: Option<&str>,
    status: HistoryStatus,
    scheduled_ms: Option<i64>,
    at_ms: i64,
    details: serde_json::Value,
) -> HistoryEntry {
    HistoryEntry {
        id: new_id(),
        fire_id: fire_id.map(str::to_string),
        job_key: job_key.to_string(),
        trigger_key: trigger_key.map(str::to_string),
        status,
        attempt: 0,
        node_id: None,
        scheduled_ms,
        started_ms: at_ms,
        ended_ms: at_ms,
        duration_ms: 0,
        details: details.to_string(),
    }
}

/// The columns of a task history row, as [`history_from_row`] reads them.
macro_rules! history_columns {
    () => {
        "id, fire_id, job_key, trigger_key, status, attempt, node_id, scheduled_ms, started_ms, ended_ms, duration_ms, details"
    };
}

pub(crate) fn history_from_row<R: sqlx::Row>(r: &R) -> Result<HistoryEntry, StoreError>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<i64>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let status: String = r.try_get("status")?;
    Ok(HistoryEntry {
        id: r.try_get("id")?,
        fire_id: r.try_get("fire_id")?,
        job_key: r.try_get("job_key")?,
        trigger_key: r.try_get("trigger_key")?,
        status: HistoryStatus::parse(&status).unwrap_or(HistoryStatus::Failed),
        attempt: u32::try_from(r.try_get::<i64, _>("attempt")?).unwrap_or(0),
        node_id: r.try_get("node_id")?,
        scheduled_ms: r.try_get("scheduled_ms")?,
        started_ms: r.try_get("started_ms")?,
        ended_ms: r.try_get("ended_ms")?,
        duration_ms: r.try_get("duration_ms")?,
        details: r.try_get("details")?,
    })
}

macro_rules! job_columns {
    () => {
        "job_key, module, data, overlap, max_attempts, backoff, backoff_initial_ms, backoff_max_ms, jitter, \
         timeout_ms, max_memory, requests_recovery, priority, paused, source, kv_max_keys, kv_max_bytes"
    };
}

macro_rules! trigger_columns {
    () => {
        "trigger_key, job_key, kind, cron, tz, period_ms, repeat_count, at_ms, misfire, start_ms, end_ms, \
         priority, state, next_fire_ms, error, event_name"
    };
}

/// A job row as stored, in the order of [`job_columns!`]. Read from a result
/// row, or, where many rows are read at once, from a JSON array the query
/// builds of those columns (serde takes a struct from an array in field order).
#[derive(serde::Deserialize)]
pub(crate) struct JobColumns {
    job_key: String,
    module: String,
    data: String,
    overlap: String,
    max_attempts: i64,
    backoff: String,
    backoff_initial_ms: i64,
    backoff_max_ms: i64,
    jitter: f64,
    timeout_ms: i64,
    max_memory: i64,
    requests_recovery: i64,
    priority: i64,
    paused: i64,
    source: String,
    kv_max_keys: Option<i64>,
    kv_max_bytes: Option<i64>,
}

impl JobColumns {
    pub(crate) fn into_job(self) -> JobDef {
        let u = |v: i64| u64::try_from(v).unwrap_or(0);
        JobDef {
            overlap: Overlap::parse(&self.overlap).unwrap_or(Overlap::Allow),
            retry: RetryPolicy {
                max_attempts: u32::try_from(self.max_attempts).unwrap_or(1).max(1),
                backoff: if self.backoff == "immediate" {
                    Backoff::Immediate
                } else {
                    Backoff::Exponential
                },
                initial_ms: u(self.backoff_initial_ms),
                max_ms: u(self.backoff_max_ms),
                jitter: self.jitter,
            },
            timeout_ms: u(self.timeout_ms),
            max_memory: u(self.max_memory),
            requests_recovery: self.requests_recovery != 0,
            priority: self.priority,
            paused: self.paused != 0,
            job_key: self.job_key,
            module: self.module,
            data: self.data,
            source: self.source,
            kv_max_keys: self.kv_max_keys.map(u),
            kv_max_bytes: self.kv_max_bytes.map(u),
        }
    }
}

pub(crate) fn job_from_row<R: sqlx::Row>(row: &R) -> Result<JobDef, StoreError>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> f64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(JobColumns {
        job_key: row.try_get("job_key")?,
        module: row.try_get("module")?,
        data: row.try_get("data")?,
        overlap: row.try_get("overlap")?,
        max_attempts: row.try_get("max_attempts")?,
        backoff: row.try_get("backoff")?,
        backoff_initial_ms: row.try_get("backoff_initial_ms")?,
        backoff_max_ms: row.try_get("backoff_max_ms")?,
        jitter: row.try_get("jitter")?,
        timeout_ms: row.try_get("timeout_ms")?,
        max_memory: row.try_get("max_memory")?,
        requests_recovery: row.try_get("requests_recovery")?,
        priority: row.try_get("priority")?,
        paused: row.try_get("paused")?,
        source: row.try_get("source")?,
        kv_max_keys: row.try_get("kv_max_keys")?,
        kv_max_bytes: row.try_get("kv_max_bytes")?,
    }
    .into_job())
}

/// A trigger row as stored, in the order of [`trigger_columns!`] (see
/// [`JobColumns`] for the two ways it is read).
#[derive(serde::Deserialize)]
pub(crate) struct TriggerColumns {
    trigger_key: String,
    pub(crate) job_key: String,
    kind: String,
    cron: Option<String>,
    tz: Option<String>,
    period_ms: Option<i64>,
    repeat_count: Option<i64>,
    at_ms: Option<i64>,
    misfire: String,
    start_ms: Option<i64>,
    end_ms: Option<i64>,
    priority: i64,
    state: String,
    next_fire_ms: Option<i64>,
    error: Option<String>,
    event_name: Option<String>,
}

impl TriggerColumns {
    pub(crate) fn into_row(self) -> Result<TriggerRow, StoreError> {
        let key = self.trigger_key;
        let kind = self.kind.clone();
        let spec = ScheduleColumns {
            kind: self.kind,
            cron: self.cron,
            tz: self.tz,
            period_ms: self.period_ms,
            repeat: self.repeat_count,
            at_ms: self.at_ms,
            misfire: self.misfire,
            start_ms: self.start_ms,
            end_ms: self.end_ms,
            event: self.event_name,
        }
        .into_spec()
        .ok_or_else(|| {
            StoreError::Conflict(format!("trigger {key} has an unreadable schedule ({kind})"))
        })?;
        Ok(TriggerRow {
            trigger_key: key,
            job_key: self.job_key,
            spec,
            priority: self.priority,
            state: TriggerState::parse(&self.state).unwrap_or(TriggerState::Error),
            next_fire_ms: self.next_fire_ms,
            error: self.error,
        })
    }
}

pub(crate) fn trigger_from_row<R: sqlx::Row>(row: &R) -> Result<TriggerRow, StoreError>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<i64>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    TriggerColumns {
        trigger_key: row.try_get("trigger_key")?,
        job_key: row.try_get("job_key")?,
        kind: row.try_get("kind")?,
        cron: row.try_get("cron")?,
        tz: row.try_get("tz")?,
        period_ms: row.try_get("period_ms")?,
        repeat_count: row.try_get("repeat_count")?,
        at_ms: row.try_get("at_ms")?,
        misfire: row.try_get("misfire")?,
        start_ms: row.try_get("start_ms")?,
        end_ms: row.try_get("end_ms")?,
        priority: row.try_get("priority")?,
        state: row.try_get("state")?,
        next_fire_ms: row.try_get("next_fire_ms")?,
        error: row.try_get("error")?,
        event_name: row.try_get("event_name")?,
    }
    .into_row()
}

/// Rows read as one JSON array of arrays (see [`JobColumns`]): on SQLite every
/// result row crosses from the connection's thread on its own, which costs
/// more than the row itself.
pub(crate) fn json_rows<T: serde::de::DeserializeOwned>(
    text: Option<String>,
    what: &str,
) -> Result<Vec<T>, StoreError> {
    match text {
        None => Ok(Vec::new()),
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| StoreError::Conflict(format!("unreadable {what} rows: {e}"))),
    }
}

/// Implements [`Scheduling`] for a store type. `$now` is the dialect's clock in
/// UTC milliseconds; `$lock` its row-locking clause for claims; `$all_after`
/// its "every row after the first $1" clause; `$begin` how a writing
/// transaction starts; `$agg` and `$arr` its JSON array aggregate and
/// constructor (see [`json_rows`]).
macro_rules! impl_scheduling {
    ($store:ty, $now:literal, $lock:literal, $all_after:literal, $begin:literal, $agg:literal, $arr:literal) => {
        #[async_trait::async_trait]
        impl $crate::store::sched::Scheduling for $store {
            async fn now_ms(&self) -> Result<i64, $crate::store::StoreError> {
                let row = sqlx::query(concat!("SELECT ", $now, " AS now")).fetch_one(&self.pool).await?;
                Ok(sqlx::Row::try_get(&row, "now")?)
            }

            async fn jobs_put(
                &self,
                jobs: &[($crate::store::model::JobDef, Vec<$crate::store::model::TriggerPut>)],
            ) -> Result<(), $crate::store::StoreError> {
                use sqlx::Row;

                use $crate::schedule::trigger::TriggerKind;
                use $crate::store::model::{Backoff, ScheduleColumns, TriggerRow};
                // The last declaration of a key wins, as if put one by one.
                let mut latest: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
                for (i, (job, _)) in jobs.iter().enumerate() {
                    latest.insert(job.job_key.as_str(), i);
                }
                let jobs: Vec<&($crate::store::model::JobDef, Vec<$crate::store::model::TriggerPut>)> =
                    jobs.iter().enumerate().filter(|(i, (j, _))| latest.get(j.job_key.as_str()) == Some(i)).map(|(_, j)| j).collect();
                let _writer = self.writer().await;
                let mut tx = self.pool.begin_with($begin).await?;
                let now: i64 = sqlx::query(concat!("SELECT ", $now, " AS now")).fetch_one(&mut *tx).await?.try_get("now")?;
                for chunk in jobs.chunks(500) {
                    let mut qb = sqlx::QueryBuilder::new(concat!("INSERT INTO jobs (", $crate::store::sched::job_columns!(), ", created_at, updated_at) "));
                    qb.push_values(chunk, |mut b, (job, _)| {
                        b.push_bind(job.job_key.clone())
                            .push_bind(job.module.clone())
                            .push_bind(job.data.clone())
                            .push_bind(job.overlap.as_str())
                            .push_bind(i64::from(job.retry.max_attempts))
                            .push_bind(match job.retry.backoff {
                                Backoff::Immediate => "immediate",
                                Backoff::Exponential => "exponential",
                            })
                            .push_bind(i64::try_from(job.retry.initial_ms).unwrap_or(i64::MAX))
                            .push_bind(i64::try_from(job.retry.max_ms).unwrap_or(i64::MAX))
                            .push_bind(job.retry.jitter)
                            .push_bind(i64::try_from(job.timeout_ms).unwrap_or(i64::MAX))
                            .push_bind(i64::try_from(job.max_memory).unwrap_or(i64::MAX))
                            .push_bind(i64::from(job.requests_recovery))
                            .push_bind(job.priority)
                            .push_bind(i64::from(job.paused))
                            .push_bind(job.source.clone())
                            .push_bind(job.kv_max_keys.map(|n| i64::try_from(n).unwrap_or(i64::MAX)))
                            .push_bind(job.kv_max_bytes.map(|n| i64::try_from(n).unwrap_or(i64::MAX)))
                            .push_bind(now)
                            .push_bind(now);
                    });
                    qb.push(
                        " ON CONFLICT (job_key) DO UPDATE SET module = excluded.module, data = excluded.data, \
                         overlap = excluded.overlap, max_attempts = excluded.max_attempts, backoff = excluded.backoff, \
                         backoff_initial_ms = excluded.backoff_initial_ms, backoff_max_ms = excluded.backoff_max_ms, \
                         jitter = excluded.jitter, timeout_ms = excluded.timeout_ms, max_memory = excluded.max_memory, \
                         requests_recovery = excluded.requests_recovery, priority = excluded.priority, \
                         paused = excluded.paused, source = excluded.source, kv_max_keys = excluded.kv_max_keys, \
                         kv_max_bytes = excluded.kv_max_bytes, updated_at = excluded.updated_at",
                    );
                    qb.build().execute(&mut *tx).await?;
                    let mut qb = sqlx::QueryBuilder::new(concat!($crate::store::sched::refresh_wit_need!(), "WHERE job_key IN ("));
                    let mut list = qb.separated(", ");
                    for (job, _) in chunk {
                        list.push_bind(job.job_key.clone());
                    }
                    qb.push(")");
                    qb.build().execute(&mut *tx).await?;

                    let mut qb = sqlx::QueryBuilder::new(concat!("SELECT ", $crate::store::sched::trigger_columns!(), " FROM triggers WHERE job_key IN ("));
                    let mut list = qb.separated(", ");
                    for (job, _) in chunk {
                        list.push_bind(job.job_key.clone());
                    }
                    qb.push(")");
                    let existing: Vec<TriggerRow> = qb
                        .build()
                        .fetch_all(&mut *tx)
                        .await?
                        .iter()
                        .map($crate::store::sched::trigger_from_row)
                        .collect::<Result<_, _>>()?;
                    let wanted: std::collections::HashSet<&str> =
                        chunk.iter().flat_map(|(_, ts)| ts.iter().map(|t| t.trigger_key.as_str())).collect();
                    let removed: Vec<&str> = existing.iter().map(|t| t.trigger_key.as_str()).filter(|k| !wanted.contains(k)).collect();
                    for keys in removed.chunks(500) {
                        let mut qb = sqlx::QueryBuilder::new("DELETE FROM triggers WHERE trigger_key IN (");
                        let mut list = qb.separated(", ");
                        for key in keys {
                            list.push_bind(key.to_string());
                        }
                        qb.push(")");
                        qb.build().execute(&mut *tx).await?;
                    }
                    let mut rows = Vec::new();
                    for (_, triggers) in chunk {
                        for t in triggers {
                            if existing.iter().any(|old| old.trigger_key == t.trigger_key && old.spec.is_declared_by(&t.spec) && old.priority == t.priority) {
                                continue; // unchanged: keeps its state and next fire
                            }
                            let mut spec = t.spec.clone();
                            if matches!(spec.kind, TriggerKind::Every { .. }) && spec.start_ms.is_none() {
                                // An interval counts from when it was declared.
                                spec.start_ms = Some(now);
                            }
                            let (state, next, error) = match spec.first_due(now) {
                                Ok(Some(next)) => ("WAITING", Some(next), None),
                                Ok(None) if matches!(spec.kind, TriggerKind::OnStart | TriggerKind::Once | TriggerKind::Event { .. }) => ("WAITING", None, None),
                                Ok(None) => ("COMPLETE", None, None),
                                Err(e) => ("ERROR", None, Some(e.to_string())),
                            };
                            rows.push((t, ScheduleColumns::from_spec(&spec), state, next, error));
                        }
                    }
                    for part in rows.chunks(500) {
                        let mut qb = sqlx::QueryBuilder::new(concat!("INSERT INTO triggers (", $crate::store::sched::trigger_columns!(), ", updated_at) "));
                        qb.push_values(part, |mut b, (t, c, state, next, error)| {
                            b.push_bind(t.trigger_key.clone())
                                .push_bind(t.job_key.clone())
                                .push_bind(c.kind.clone())
                                .push_bind(c.cron.clone())
                                .push_bind(c.tz.clone())
                                .push_bind(c.period_ms)
                                .push_bind(c.repeat)
                                .push_bind(c.at_ms)
                                .push_bind(c.misfire.clone())
                                .push_bind(c.start_ms)
                                .push_bind(c.end_ms)
                                .push_bind(t.priority)
                                .push_bind(*state)
                                .push_bind(*next)
                                .push_bind(error.clone())
                                .push_bind(c.event.clone())
                                .push_bind(now);
                        });
                        qb.push(
                            " ON CONFLICT (trigger_key) DO UPDATE SET job_key = excluded.job_key, kind = excluded.kind, \
                             cron = excluded.cron, tz = excluded.tz, period_ms = excluded.period_ms, \
                             repeat_count = excluded.repeat_count, at_ms = excluded.at_ms, misfire = excluded.misfire, \
                             start_ms = excluded.start_ms, end_ms = excluded.end_ms, priority = excluded.priority, \
                             state = excluded.state, next_fire_ms = excluded.next_fire_ms, error = excluded.error, \
                             event_name = excluded.event_name, updated_at = excluded.updated_at",
                        );
                        qb.build().execute(&mut *tx).await?;
                    }
                }
                tx.commit().await?;
                Ok(())
            }

            async fn job_get(&self, job_key: &str) -> Result<Option<$crate::store::model::JobDef>, $crate::store::StoreError> {
                let row = sqlx::query(concat!("SELECT ", $crate::store::sched::job_columns!(), " FROM jobs WHERE job_key = $1"))
                    .bind(job_key)
                    .fetch_optional(&self.pool)
                    .await?;
                row.as_ref().map($crate::store::sched::job_from_row).transpose()
            }

            async fn job_list(&self) -> Result<Vec<$crate::store::model::JobDef>, $crate::store::StoreError> {
                let rows = sqlx::query(concat!("SELECT ", $crate::store::sched::job_columns!(), " FROM jobs ORDER BY job_key"))
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map($crate::store::sched::job_from_row).collect()
            }

            async fn job_delete(&self, job_key: &str) -> Result<bool, $crate::store::StoreError> {
                let _writer = self.writer().await;
                let mut tx = self.pool.begin_with($begin).await?;
                sqlx::query("DELETE FROM fires WHERE job_key = $1 AND state = 'scheduled'").bind(job_key).execute(&mut *tx).await?;
                sqlx::query("DELETE FROM triggers WHERE job_key = $1").bind(job_key).execute(&mut *tx).await?;
                let done = sqlx::query("DELETE FROM jobs WHERE job_key = $1").bind(job_key).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(done.rows_affected() > 0)
            }

            async fn job_pause(&self, job_key: &str, paused: bool) -> Result<bool, $crate::store::StoreError> {
                let _writer = self.writer().await;
                let done = sqlx::query("UPDATE jobs SET paused = $1 WHERE job_key = $2")
                    .bind(i64::from(paused))
                    .bind(job_key)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn group_pause(&self, group: &str, paused: bool) -> Result<u64, $crate::store::StoreError> {
                let _writer = self.writer().await;
                let done = sqlx::query("UPDATE jobs SET paused = $1 WHERE substr(job_key, 1, length($2) + 1) = $2 || '/'")
                    .bind(i64::from(paused))
                    .bind(group)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected())
            }

            async fn trigger_list(&self, job_key: Option<&str>) -> Result<Vec<$crate::store::model::TriggerRow>, $crate::store::StoreError> {
                let rows = sqlx::query(concat!(
                    "SELECT ", $crate::store::sched::trigger_columns!(), " FROM triggers \
                     WHERE ($1 IS NULL OR job_key = $1) ORDER BY trigger_key"
                ))
                .bind(job_key)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map($crate::store::sched::trigger_from_row).collect()
            }

            async fn trigger_pause(&self, trigger_key: &str, paused: bool) -> Result<bool, $crate::store::StoreError> {
                let _writer = self.writer().await;
                let (from, to) = if paused { ("WAITING", "PAUSED") } else { ("PAUSED", "WAITING") };
                let done = sqlx::query("UPDATE triggers SET state = $1 WHERE trigger_key = $2 AND state = $3")
                    .bind(to)
                    .bind(trigger_key)
                    .bind(from)
                    .execute(&self.pool)
                    .await?;
                if done.rows_affected() > 0 {
                    return Ok(true);
                }
                let exists = sqlx::query("SELECT 1 AS one FROM triggers WHERE trigger_key = $1").bind(trigger_key).fetch_optional(&self.pool).await?;
                Ok(exists.is_some())
            }

            async fn trigger_reset_errors(&self) -> Result<u64, $crate::store::StoreError> {
                let _writer = self.writer().await;
                let done = sqlx::query("UPDATE triggers SET state = 'WAITING', error = NULL WHERE state = 'ERROR'").execute(&self.pool).await?;
                Ok(done.rows_affected())
            }

            async fn fire_now(&self, job_key: &str) -> Result<String, $crate::store::StoreError> {
                let _writer = self.writer().await;
                let id = $crate::store::sched::new_id();
                let done = sqlx::query(concat!(
                    "INSERT INTO fires (fire_id, trigger_key, job_key, scheduled_ms, due_ms, priority, attempt, state, recovering, fencing) \
                     SELECT $1, job_key || ':manual', job_key, ", $now, ", ", $now, ", priority, 1, 'scheduled', 0, 0 FROM jobs WHERE job_key = $2"
                ))
                .bind(&id)
                .bind(job_key)
                .execute(&self.pool)
                .await?;
                if done.rows_affected() == 0 {
                    return Err($crate::store::StoreError::Conflict(format!("no job {job_key:?}")));
                }
                Ok(id)
            }

            async fn fire_startup(&self) -> Result<u64, $crate::store::StoreError> {
                use sqlx::Row;
                let _writer = self.writer().await;
                let mut tx = self.pool.begin_with($begin).await?;
                let now: i64 = sqlx::query(concat!("SELECT ", $now, " AS now")).fetch_one(&mut *tx).await?.try_get("now")?;
                let rows = sqlx::query(
                    "SELECT t.trigger_key, t.job_key, t.kind, t.priority, j.module FROM triggers t JOIN jobs j ON j.job_key = t.job_key \
                     WHERE t.kind IN ('on-start', 'once') AND t.state = 'WAITING' AND j.paused = 0",
                )
                .fetch_all(&mut *tx)
                .await?;
                let mut created = 0;
                for row in rows {
                    let trigger_key: String = row.try_get("trigger_key")?;
                    let job_key: String = row.try_get("job_key")?;
                    let kind: String = row.try_get("kind")?;
                    let module: String = row.try_get("module")?;
                    if kind == "once" {
                        let first = sqlx::query("INSERT INTO once_runs (job_key, module, ran_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                            .bind(&job_key)
                            .bind(&module)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                        if first.rows_affected() == 0 {
                            continue;
                        }
                    }
                    let done = sqlx::query(
                        "INSERT INTO fires (fire_id, trigger_key, job_key, scheduled_ms, due_ms, priority, attempt, state, recovering, fencing) \
                         VALUES ($1, $2, $3, $4, $4, $5, 1, 'scheduled', 0, 0) ON CONFLICT DO NOTHING",
                    )
                    .bind($crate::store::sched::new_id())
                    .bind(&trigger_key)
                    .bind(&job_key)
                    .bind(now)
                    .bind(row.try_get::<i64, _>("priority")?)
                    .execute(&mut *tx)
                    .await?;
                    created += done.rows_affected();
                }
                tx.commit().await?;
                Ok(created)
            }

            async fn fire_acquire(
                &self,
                p: &$crate::store::model::AcquireParams,
            ) -> Result<$crate::store::model::Acquired, $crate::store::StoreError> {
                use sqlx::Row;
                use $crate::store::model::{Acquired, FireClaim, HistoryStatus, Overlap};
                use $crate::store::sched::history_row;
                let _writer = self.writer().await;
                let mut tx = self.pool.begin_with($begin).await?;
                let now: i64 = sqlx::query(concat!("SELECT ", $now, " AS now")).fetch_one(&mut *tx).await?.try_get("now")?;
                let horizon = now + p.lookahead_ms;
                let limit = i64::try_from(p.max.max(1)).unwrap_or(1000);
                let mut out = Acquired { now_ms: now, ..Acquired::default() };
                let mut history = Vec::new();

                // 1. Due triggers become fires. The triggers and their jobs come
                // back in one statement, as one row (see `json_rows`).
                let (due, due_jobs): (Option<String>, Option<String>) = sqlx::query_as(concat!(
                    "WITH d AS MATERIALIZED (SELECT ", $crate::store::sched::trigger_columns!(), ", \
                     (SELECT j.wit_need FROM jobs j WHERE j.job_key = triggers.job_key) AS wit_need, \
                     (SELECT h.scheduled_ms FROM held_claims h WHERE h.trigger_key = triggers.trigger_key) AS held_scheduled_ms, \
                     CASE WHEN EXISTS (SELECT 1 FROM fires f WHERE f.trigger_key = triggers.trigger_key AND f.scheduled_ms = triggers.next_fire_ms) \
                     THEN 1 ELSE 0 END AS taken FROM triggers \
                     WHERE state = 'WAITING' AND next_fire_ms <= $1 \
                     AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.job_key = triggers.job_key AND j.paused = 1) \
                     ORDER BY next_fire_ms, priority DESC LIMIT $2", $lock, ") \
                     SELECT CAST((SELECT ", $agg, "(", $arr, "(", $arr, "(", $crate::store::sched::trigger_columns!(), "), wit_need, held_scheduled_ms, taken) \
                     ORDER BY next_fire_ms, priority DESC) FROM d) AS TEXT), \
                     CAST((SELECT ", $agg, "(", $arr, "(", $crate::store::sched::job_columns!(), ")) FROM jobs \
                     WHERE job_key IN (SELECT job_key FROM d)) AS TEXT)"
                ))
                .bind(horizon)
                .bind(limit)
                .fetch_one(&mut *tx)
                .await?;
                // Per trigger: its columns, the contract rank its job needs, the
                // time of the fire it holds (if any), and whether a `fires` row
                // already has its next time.
                let due: Vec<($crate::store::sched::TriggerColumns, Option<i64>, Option<i64>, i64)> = $crate::store::sched::json_rows(due, "due trigger")?;
                let mut jobs: std::collections::HashMap<String, $crate::store::model::JobDef> = std::collections::HashMap::new();
                $crate::store::sched::jobs_into(due_jobs, &mut jobs)?;
                let mut new_fires: Vec<(String, String, i64, i64)> = Vec::new();
                // Jobs whose module this node cannot run: their fires are created
                // for the nodes that can.
                let mut unrunnable: std::collections::HashSet<String> = std::collections::HashSet::new();
                // Each trigger that moves on: (key, next fire or None when it is complete).
                let mut moved: Vec<(String, Option<i64>)> = Vec::new();
                let mut budget = p.max;
                // Each job's share of the node: fires of a job without room
                // left stay queued (see `JobRoom`).
                let mut room = p.room.clone();
                let mut deferred: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
                let mut held: Vec<(FireClaim, i64)> = Vec::new();
                for (t, wit_need, held_ms, taken) in due {
                    let t = t.into_row()?;
                    let runnable = wit_need.is_none_or(|need| p.runs.contains(need));
                    if !runnable {
                        unrunnable.insert(t.job_key.clone());
                    }
                    let Some(next_fire) = t.next_fire_ms else { continue };
                    let plan = match t.spec.plan(next_fire, now, horizon, &p.misfire) {
                        Ok(plan) => plan,
                        Err(e) => {
                            sqlx::query("UPDATE triggers SET state = 'ERROR', error = $1, updated_at = $2 WHERE trigger_key = $3")
                                .bind(e.to_string())
                                .bind(now)
                                .bind(&t.trigger_key)
                                .execute(&mut *tx)
                                .await?;
                            continue;
                        }
                    };
                    // The trigger's next fire, if its job is `allow` and runnable
                    // here, is claimed as a `held_claims` row (see migration 0008)
                    // when the trigger holds none and no `fires` row has that time.
                    // A time the trigger holds is never made a `fires` row as well.
                    for &scheduled in &plan.run {
                        if held_ms == Some(scheduled) {
                            continue;
                        }
                        let job = jobs.get(&t.job_key).filter(|j| j.overlap == Overlap::Allow && runnable);
                        if let Some(job) = job.filter(|_| held_ms.is_none() && taken == 0 && scheduled == next_fire && budget > 0 && room.take(&t.job_key)) {
                            budget -= 1;
                            held.push((FireClaim::first($crate::store::sched::new_id(), &t.trigger_key, job, scheduled, true), t.priority));
                            continue;
                        }
                        new_fires.push((t.trigger_key.clone(), t.job_key.clone(), scheduled, t.priority));
                    }
                    for missed in &plan.misfired {
                        history.push(history_row(None, &t.job_key, Some(&t.trigger_key), HistoryStatus::Misfired, Some(*missed), now,
                            serde_json::json!({ "reason": "misfire", "policy": t.spec.misfire.as_str() })));
                    }
                    out.misfired += plan.misfired_total;
                    let unlisted = plan.misfired_total.saturating_sub(plan.misfired.len() as u64);
                    if unlisted > 0 || plan.misfired_uncounted {
                        history.push(history_row(None, &t.job_key, Some(&t.trigger_key), HistoryStatus::Misfired, None, now,
                            serde_json::json!({ "reason": "misfire", "policy": t.spec.misfire.as_str(),
                                "more_not_listed": unlisted, "outage_too_long_to_count": plan.misfired_uncounted })));
                    }
                    for (at, local) in &plan.gaps {
                        history.push(history_row(None, &t.job_key, Some(&t.trigger_key), HistoryStatus::Skipped, Some(*at), now,
                            serde_json::json!({ "reason": "dst-gap", "local_time": local })));
                    }
                    moved.push((t.trigger_key.clone(), plan.next));
                }
                // Triggers with a next fire move on, 200 per statement (VALUES
                // columns are column1, column2 ... in both dialects); the others
                // are complete.
                let (moved, completed): (Vec<_>, Vec<_>) = moved.into_iter().partition(|(_, next)| next.is_some());
                for chunk in moved.chunks(200) {
                    let mut qb = sqlx::QueryBuilder::new("UPDATE triggers SET next_fire_ms = v.column2, updated_at = ");
                    qb.push_bind(now);
                    qb.push(" FROM (");
                    qb.push_values(chunk, |mut b, (key, next)| {
                        b.push_bind(key.clone()).push_bind(*next);
                    });
                    qb.push(") AS v WHERE triggers.trigger_key = v.column1");
                    qb.build().execute(&mut *tx).await?;
                }
                for chunk in completed.chunks(200) {
                    let mut qb = sqlx::QueryBuilder::new("UPDATE triggers SET state = 'COMPLETE', next_fire_ms = NULL, updated_at = ");
                    qb.push_bind(now);
                    qb.push(" WHERE trigger_key IN (");
                    let mut list = qb.separated(", ");
                    for (key, _) in chunk {
                        list.push_bind(key.clone());
                    }
                    qb.push(")");
                    qb.build().execute(&mut *tx).await?;
                }
                for chunk in held.chunks(200) {
                    let mut qb = sqlx::QueryBuilder::new(
                        "INSERT INTO held_claims (trigger_key, fire_id, job_key, scheduled_ms, priority, node_id, fencing, lease_until_ms, started) \
                         SELECT v.column1, v.column2, v.column3, v.column4, v.column5, ",
                    );
                    qb.push_bind(p.node_id.clone());
                    qb.push(", 1, ");
                    qb.push_bind(now + p.lease_ms);
                    qb.push(", ");
                    qb.push_bind(i64::from(p.started));
                    qb.push(" FROM (");
                    qb.push_values(chunk, |mut b, (f, priority)| {
                        b.push_bind(f.trigger_key.clone())
                            .push_bind(f.fire_id.clone())
                            .push_bind(f.job_key.clone())
                            .push_bind(f.scheduled_ms)
                            .push_bind(*priority);
                    });
                    qb.push(") AS v");
                    qb.build().execute(&mut *tx).await?;
                }
                out.fires.extend(held.into_iter().map(|(f, _)| f));
                // Fires of `allow` jobs are claimed as they are created: one statement
                // instead of insert, select and update. Others wait as `scheduled`.
                let (direct, queued): (Vec<_>, Vec<_>) = {
                    new_fires.into_iter().partition(|(_, job_key, _, _)| {
                        let allow = jobs.get(job_key).is_some_and(|j| j.overlap == Overlap::Allow) && !unrunnable.contains(job_key);
                        if !allow || budget == 0 {
                            false
                        } else if room.take(job_key) {
                            budget -= 1;
                            true
                        } else {
                            *deferred.entry(job_key.clone()).or_default() += 1;
                            false
                        }
                    })
                };
                for (batch, claim) in [(&direct, true), (&queued, false)] {
                    for chunk in batch.chunks(200) {
                        let ids: Vec<String> = chunk.iter().map(|_| $crate::store::sched::new_id()).collect();
                        let mut qb = sqlx::QueryBuilder::new(
                            "INSERT INTO fires (fire_id, trigger_key, job_key, scheduled_ms, due_ms, priority, attempt, state, recovering, fencing, node_id, lease_until_ms) ",
                        );
                        qb.push_values(chunk.iter().zip(&ids), |mut b, ((trigger_key, job_key, scheduled, priority), id)| {
                            b.push_bind(id.clone())
                                .push_bind(trigger_key.clone())
                                .push_bind(job_key.clone())
                                .push_bind(*scheduled)
                                .push_bind(*scheduled)
                                .push_bind(*priority)
                                .push_bind(1i64)
                                .push_bind(if claim { "acquired" } else { "scheduled" })
                                .push_bind(0i64)
                                .push_bind(i64::from(claim))
                                .push_bind(claim.then(|| p.node_id.clone()))
                                .push_bind(claim.then_some(now + p.lease_ms));
                        });
                        // A fire that exists already (same trigger and time) is not
                        // created twice: the store makes a double fire impossible.
                        qb.push(" ON CONFLICT DO NOTHING");
                        let created = qb.build().execute(&mut *tx).await?.rows_affected();
                        if !claim {
                            continue;
                        }
                        let kept: Option<std::collections::HashSet<String>> = if created == chunk.len() as u64 {
                            None
                        } else {
                            let mut qb = sqlx::QueryBuilder::new("SELECT fire_id FROM fires WHERE fire_id IN (");
                            let mut list = qb.separated(", ");
                            for id in &ids {
                                list.push_bind(id.clone());
                            }
                            qb.push(")");
                            let rows = qb.build().fetch_all(&mut *tx).await?;
                            Some(rows.iter().map(|r| r.try_get::<String, _>("fire_id")).collect::<Result<_, _>>()?)
                        };
                        for ((trigger_key, job_key, scheduled_ms, _), fire_id) in chunk.iter().zip(ids) {
                            if kept.as_ref().is_some_and(|kept| !kept.contains(&fire_id)) {
                                continue;
                            }
                            let Some(job) = jobs.get(job_key) else { continue };
                            out.fires.push(FireClaim::first(fire_id, trigger_key, job, *scheduled_ms, false));
                        }
                    }
                }

                // 2. Claim due fires, respecting each job's overlap policy.
                let budget = p.max.saturating_sub(out.fires.len());
                // Jobs without room are left out here, or their queue could fill
                // the window and hide every other job's fires.
                let full = room.full();
                let candidates = if budget == 0 { Vec::new() } else {
                    let mut qb = sqlx::QueryBuilder::new(
                        "SELECT f.fire_id, f.trigger_key, f.job_key, f.scheduled_ms, f.due_ms, f.attempt, f.recovering, f.fencing, f.event_id, f.depth \
                         FROM fires f WHERE f.state = 'scheduled' AND f.due_ms <= ",
                    );
                    qb.push_bind(horizon);
                    qb.push(" AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.job_key = f.job_key AND (j.paused = 1 OR j.wit_need < ");
                    qb.push_bind(p.runs.lo);
                    qb.push(" OR j.wit_need > ");
                    qb.push_bind(p.runs.hi);
                    qb.push("))");
                    if !full.is_empty() {
                        qb.push(" AND f.job_key NOT IN (");
                        let mut list = qb.separated(", ");
                        for key in &full {
                            list.push_bind(key.clone());
                        }
                        qb.push(")");
                    }
                    qb.push(" ORDER BY f.due_ms, f.priority DESC LIMIT ");
                    qb.push_bind(i64::try_from(budget).unwrap_or(1).saturating_mul(4));
                    qb.push($lock);
                    qb.build().fetch_all(&mut *tx).await?
                };
                let keys = candidates.iter().map(|row| row.try_get::<String, _>("job_key")).collect::<Result<Vec<_>, _>>()?;
                $crate::store::sched::load_jobs!(&mut *tx, keys, &mut jobs, $agg, $arr);
                // `forbid` and `skip` decide on whether the job is running. Two
                // nodes claiming at once would each see it idle (neither sees the
                // other's uncommitted claim), so the job's row is locked first and
                // its running fires counted after: a job another node is claiming
                // right now is left for the next round.
                let mut guarded: std::collections::HashMap<String, bool> = std::collections::HashMap::new();
                {
                    let mut keys: Vec<String> = Vec::new();
                    for row in &candidates {
                        let key: String = row.try_get("job_key")?;
                        if jobs.get(&key).is_some_and(|j| j.overlap != Overlap::Allow) && !keys.contains(&key) {
                            keys.push(key);
                        }
                    }
                    for chunk in keys.chunks(200) {
                        let mut qb = sqlx::QueryBuilder::new("SELECT job_key FROM jobs WHERE job_key IN (");
                        let mut list = qb.separated(", ");
                        for key in chunk {
                            list.push_bind(key.clone());
                        }
                        qb.push(") ORDER BY job_key");
                        qb.push($lock);
                        for row in qb.build().fetch_all(&mut *tx).await? {
                            guarded.insert(row.try_get("job_key")?, false);
                        }
                        // Running: a claimed `fires` row or a held claim
                        // (the job allowed overlap when it was claimed).
                        let mut qb = sqlx::QueryBuilder::new("SELECT job_key FROM fires WHERE state = 'acquired' AND job_key IN (");
                        let mut list = qb.separated(", ");
                        for key in chunk {
                            list.push_bind(key.clone());
                        }
                        qb.push(") UNION SELECT job_key FROM held_claims WHERE job_key IN (");
                        let mut list = qb.separated(", ");
                        for key in chunk {
                            list.push_bind(key.clone());
                        }
                        qb.push(")");
                        for row in qb.build().fetch_all(&mut *tx).await? {
                            if let Some(running) = guarded.get_mut(&row.try_get::<String, _>("job_key")?) {
                                *running = true;
                            }
                        }
                    }
                }
                let mut busy: std::collections::HashSet<String> = out.fires.iter().map(|f| f.job_key.clone()).collect();
                let mut skipped_overlap: Vec<String> = Vec::new();
                let first_claimed = out.fires.len();
                for row in &candidates {
                    if out.fires.len() >= p.max {
                        break;
                    }
                    let job_key: String = row.try_get("job_key")?;
                    let fire_id: String = row.try_get("fire_id")?;
                    let Some(job) = jobs.get(&job_key) else { continue };
                    let active = match guarded.get(&job_key) {
                        _ if job.overlap == Overlap::Allow => false,
                        None => continue, // another node is claiming this job's fires
                        Some(running) => *running || busy.contains(&job_key),
                    };
                    if active && job.overlap == Overlap::Forbid {
                        continue; // stays scheduled: blocked until the running fire ends
                    }
                    let trigger_key: String = row.try_get("trigger_key")?;
                    let scheduled_ms: i64 = row.try_get("scheduled_ms")?;
                    if active && job.overlap == Overlap::Skip {
                        history.push(history_row(Some(&fire_id), &job_key, Some(&trigger_key), HistoryStatus::Skipped, Some(scheduled_ms), now,
                            serde_json::json!({ "reason": "overlap", "detail": "the previous fire of this job is still running" })));
                        skipped_overlap.push(fire_id);
                        continue;
                    }
                    if !room.take(&job_key) {
                        continue; // its job has its share of the node: stays scheduled
                    }
                    busy.insert(job_key.clone());
                    out.fires.push(FireClaim {
                        fire_id,
                        trigger_key,
                        job_key,
                        scheduled_ms,
                        due_ms: row.try_get("due_ms")?,
                        attempt: u32::try_from(row.try_get::<i64, _>("attempt")?).unwrap_or(1),
                        recovering: row.try_get::<i64, _>("recovering")? != 0,
                        // The claim below increments it in the same transaction.
                        fencing: row.try_get::<i64, _>("fencing")? + 1,
                        job: job.clone(),
                        event_id: Some(row.try_get::<String, _>("event_id")?).filter(|e| !e.is_empty()),
                        depth: u32::try_from(row.try_get::<i64, _>("depth")?).unwrap_or(0),
                        held: false,
                    });
                }
                for chunk in skipped_overlap.chunks(200) {
                    let mut qb = sqlx::QueryBuilder::new("DELETE FROM fires WHERE fire_id IN (");
                    let mut list = qb.separated(", ");
                    for id in chunk {
                        list.push_bind(id.clone());
                    }
                    qb.push(")");
                    qb.build().execute(&mut *tx).await?;
                }
                for chunk in out.fires[first_claimed..].chunks(200) {
                    let mut qb = sqlx::QueryBuilder::new("UPDATE fires SET state = 'acquired', fencing = fencing + 1, node_id = ");
                    qb.push_bind(p.node_id.clone());
                    qb.push(", lease_until_ms = ");
                    qb.push_bind(now + p.lease_ms);
                    qb.push(", started = ");
                    qb.push_bind(i64::from(p.started));
                    qb.push(" WHERE fire_id IN (");
                    let mut list = qb.separated(", ");
                    for f in chunk {
                        list.push_bind(f.fire_id.clone());
                    }
                    qb.push(")");
                    qb.build().execute(&mut *tx).await?;
                }
                out.recorded = history.len() as u64;
                out.skipped = history.iter().filter(|h| h.status == HistoryStatus::Skipped).count() as u64;
                out.deferred = deferred.into_iter().collect();
                $crate::store::sched::insert_history!(&mut *tx, &history);

                let next = sqlx::query(
                    "SELECT MIN(t) AS next FROM (SELECT MIN(next_fire_ms) AS t FROM triggers WHERE state = 'WAITING' \
                     UNION ALL SELECT MIN(due_ms) AS t FROM fires WHERE state = 'scheduled') x",
                )
                .fetch_one(&mut *tx)
                .await?;
                out.next_due_ms = next.try_get("next")?;
                tx.commit().await?;
                Ok(out)
            }

            async fn fire_complete(&self, batch: &[$crate::store::model::Completion]) -> Result<Vec<bool>, $crate::store::StoreError> {
                use $crate::store::model::FireNext;
                let _writer = self.writer().await;
                // Finished fires are deleted many per statement (`fires` and
                // `held_claims` rows), only where the claim is still ours. Usually
                // all are, which the counts of deleted rows show without sending
                // rows back; when one was taken over, the transaction is rolled
                // back and done again one completion at a time, which says which
                // are refused (the same fire can end twice in one batch, under an
                // old claim and a new).
                let finished = |held: bool| -> Vec<usize> {
                    (0..batch.len()).filter(|&i| batch[i].next == FireNext::Done && batch[i].held == held).collect()
                };
                let (as_rows, helds) = (finished(false), finished(true));
                let mut precise = false;
                'attempt: loop {
                    let mut tx = self.pool.begin_with($begin).await?;
                    let mut accepted = vec![false; batch.len()];
                    let mut history = Vec::new();
                    if precise {
                        for &i in as_rows.iter().chain(&helds) {
                            let c = &batch[i];
                            if c.held {
                                let cleared = sqlx::query(
                                    "DELETE FROM held_claims WHERE trigger_key = $1 AND fire_id = $2 AND node_id = $3 AND fencing = $4")
                                    .bind(c.history.trigger_key.as_deref().unwrap_or_default()).bind(&c.fire_id).bind(&c.node_id).bind(c.fencing)
                                    .execute(&mut *tx).await?;
                                if cleared.rows_affected() == 1 {
                                    accepted[i] = true;
                                    continue;
                                }
                            }
                            let gone = sqlx::query("DELETE FROM fires WHERE fire_id = $1 AND node_id = $2 AND fencing = $3 AND state = 'acquired'")
                                .bind(&c.fire_id).bind(&c.node_id).bind(c.fencing).execute(&mut *tx).await?;
                            accepted[i] = gone.rows_affected() == 1;
                        }
                    } else {
                        for chunk in as_rows.chunks(200) {
                            let mut qb = sqlx::QueryBuilder::new("DELETE FROM fires WHERE state = 'acquired' AND (fire_id, node_id, fencing) IN (VALUES ");
                            let mut list = qb.separated(", ");
                            for &i in chunk {
                                let c = &batch[i];
                                list.push("(");
                                list.push_bind_unseparated(c.fire_id.clone());
                                list.push_unseparated(", ");
                                list.push_bind_unseparated(c.node_id.clone());
                                list.push_unseparated(", CAST(");
                                list.push_bind_unseparated(c.fencing);
                                list.push_unseparated(" AS BIGINT))");
                            }
                            qb.push(")");
                            if qb.build().execute(&mut *tx).await?.rows_affected() != chunk.len() as u64 {
                                tx.rollback().await?;
                                precise = true;
                                continue 'attempt;
                            }
                        }
                        // Held claims by key (each statement's completions come from
                        // one node and fencing, as a batch does): a pair of a key and
                        // an id from two different completions cannot match a row
                        // whose own completion is not in the statement, so the count
                        // still says whether every claim held.
                        let mut claims: std::collections::BTreeMap<(&str, i64), Vec<usize>> = std::collections::BTreeMap::new();
                        for &i in &helds {
                            claims.entry((batch[i].node_id.as_str(), batch[i].fencing)).or_default().push(i);
                        }
                        for ((node_id, fencing), ids) in claims {
                            for chunk in ids.chunks(200) {
                                let mut qb = sqlx::QueryBuilder::new("DELETE FROM held_claims WHERE node_id = ");
                                qb.push_bind(node_id.to_string());
                                qb.push(" AND fencing = ");
                                qb.push_bind(fencing);
                                qb.push(" AND trigger_key IN (");
                                let mut list = qb.separated(", ");
                                for &i in chunk {
                                    list.push_bind(batch[i].history.trigger_key.clone().unwrap_or_default());
                                }
                                qb.push(") AND fire_id IN (");
                                let mut list = qb.separated(", ");
                                for &i in chunk {
                                    list.push_bind(batch[i].fire_id.clone());
                                }
                                qb.push(")");
                                if qb.build().execute(&mut *tx).await?.rows_affected() != chunk.len() as u64 {
                                    tx.rollback().await?;
                                    precise = true;
                                    continue 'attempt;
                                }
                            }
                        }
                        for &i in as_rows.iter().chain(&helds) {
                            accepted[i] = true;
                        }
                    }
                    for (i, c) in batch.iter().enumerate() {
                        // A held fire to retry or release waits again as a `fires`
                        // row; one no longer held (recovered since) is already
                        // one, where the fencing refuses this claim.
                        if c.held && c.next != FireNext::Done {
                            $crate::store::sched::unhold!(&mut *tx, c.history.trigger_key.as_deref().unwrap_or_default(), &c.fire_id, &c.node_id, c.fencing);
                        }
                        let done = match &c.next {
                            FireNext::Done => None,
                            FireNext::Retry { due_ms } => Some(sqlx::query(
                                "UPDATE fires SET state = 'scheduled', attempt = attempt + 1, due_ms = $1, node_id = NULL, lease_until_ms = NULL, recovering = 0, started = 0 \
                                 WHERE fire_id = $2 AND node_id = $3 AND fencing = $4 AND state = 'acquired'")
                                .bind(*due_ms).bind(&c.fire_id).bind(&c.node_id).bind(c.fencing).execute(&mut *tx).await?),
                            FireNext::Release | FireNext::Unclaim => Some(sqlx::query(
                                "UPDATE fires SET state = 'scheduled', node_id = NULL, lease_until_ms = NULL, started = 0 \
                                 WHERE fire_id = $1 AND node_id = $2 AND fencing = $3 AND state = 'acquired'")
                                .bind(&c.fire_id).bind(&c.node_id).bind(c.fencing).execute(&mut *tx).await?),
                        };
                        if let Some(done) = done {
                            accepted[i] = done.rows_affected() == 1;
                        }
                        if !accepted[i] || c.next == FireNext::Unclaim {
                            continue;
                        }
                        if let Some(data) = &c.new_data {
                            sqlx::query("UPDATE jobs SET data = $1 WHERE job_key = $2").bind(data).bind(&c.history.job_key).execute(&mut *tx).await?;
                        }
                        history.push(&c.history);
                    }
                    $crate::store::sched::insert_history!(&mut *tx, history.iter().copied());
                    tx.commit().await?;
                    return Ok(accepted);
                }
            }

            async fn lease_renew(&self, node_id: &str, fire_ids: &[String], lease_ms: i64) -> Result<u64, $crate::store::StoreError> {
                let _writer = self.writer().await;
                let mut renewed = 0;
                // Both kinds of claim: the node does not keep apart where each lives.
                for (table, claimed) in [("fires", " AND state = 'acquired'"), ("held_claims", "")] {
                    for chunk in fire_ids.chunks(500) {
                        let mut qb = sqlx::QueryBuilder::new(format!(concat!("UPDATE {} SET lease_until_ms = ", $now, " + "), table));
                        qb.push_bind(lease_ms);
                        qb.push(" WHERE node_id = ");
                        qb.push_bind(node_id.to_string());
                        qb.push(concat!(" AND lease_until_ms < ", $now, " + "));
                        qb.push_bind(lease_ms / 2);
                        qb.push(claimed);
                        qb.push(" AND fire_id IN (");
                        let mut list = qb.separated(", ");
                        for id in chunk {
                            list.push_bind(id.clone());
                        }
                        qb.push(")");
                        renewed += qb.build().execute(&self.pool).await?.rows_affected();
                    }
                }
                Ok(renewed)
            }

            async fn fire_mark_started(&self, node_id: &str, fires: &[(String, String, bool)]) -> Result<u64, $crate::store::StoreError> {
                let _writer = self.writer().await;
                let mut marked = 0;
                for held in [false, true] {
                    let part: Vec<&(String, String, bool)> = fires.iter().filter(|f| f.2 == held).collect();
                    for chunk in part.chunks(500) {
                        let mut qb = sqlx::QueryBuilder::new(if held {
                            "UPDATE held_claims SET started = 1 WHERE node_id = "
                        } else {
                            "UPDATE fires SET started = 1 WHERE state = 'acquired' AND node_id = "
                        });
                        qb.push_bind(node_id.to_string());
                        if held {
                            // By key, as completions delete them: the table's only index.
                            qb.push(" AND trigger_key IN (");
                            let mut list = qb.separated(", ");
                            for f in chunk {
                                list.push_bind(f.1.clone());
                            }
                            qb.push(")");
                        }
                        qb.push(" AND fire_id IN (");
                        let mut list = qb.separated(", ");
                        for f in chunk {
                            list.push_bind(f.0.clone());
                        }
                        qb.push(")");
                        marked += qb.build().execute(&self.pool).await?.rows_affected();
                    }
                }
                Ok(marked)
            }

            async fn fire_recover(&self, dead_after_ms: i64, live_node: Option<&str>) -> Result<u64, $crate::store::StoreError> {
                use sqlx::Row;
                use $crate::store::model::HistoryStatus;
                let _writer = self.writer().await;
                let mut tx = self.pool.begin_with($begin).await?;
                let now: i64 = sqlx::query(concat!("SELECT ", $now, " AS now")).fetch_one(&mut *tx).await?.try_get("now")?;
                // Held claims of a dead node, or whose lease ran out, first become
                // `fires` rows of their node, recovered below as every other claim.
                let held = sqlx::query(concat!(
                    "SELECT trigger_key, fire_id, node_id, fencing FROM held_claims WHERE lease_until_ms < $1 \
                     OR node_id IN (SELECT node_id FROM nodes WHERE heartbeat_ms < $1 - $2 AND node_id <> $3)", $lock
                ))
                .bind(now)
                .bind(dead_after_ms)
                .bind(live_node.unwrap_or(""))
                .fetch_all(&mut *tx)
                .await?;
                for row in &held {
                    let (trigger_key, fire_id, node_id): (String, String, String) =
                        (row.try_get("trigger_key")?, row.try_get("fire_id")?, row.try_get("node_id")?);
                    $crate::store::sched::unhold!(&mut *tx, &trigger_key, &fire_id, &node_id, row.try_get::<i64, _>("fencing")?);
                }
                let lost = sqlx::query(concat!(
                    "SELECT f.fire_id, f.trigger_key, f.job_key, f.scheduled_ms, f.attempt, f.node_id, f.started, \
                     COALESCE((SELECT j.requests_recovery FROM jobs j WHERE j.job_key = f.job_key), 0) AS requests_recovery \
                     FROM fires f WHERE f.state = 'acquired' AND (f.lease_until_ms < $1 \
                     OR f.node_id IN (SELECT node_id FROM nodes WHERE heartbeat_ms < $1 - $2 AND node_id <> $3))", $lock
                ))
                .bind(now)
                .bind(dead_after_ms)
                .bind(live_node.unwrap_or(""))
                .fetch_all(&mut *tx)
                .await?;
                let mut history = Vec::new();
                for row in &lost {
                    let fire_id: String = row.try_get("fire_id")?;
                    let node: Option<String> = row.try_get("node_id")?;
                    if row.try_get::<i64, _>("started")? == 0 {
                        // Claimed ahead, never run: it simply waits again.
                        sqlx::query("UPDATE fires SET state = 'scheduled', node_id = NULL, lease_until_ms = NULL WHERE fire_id = $1")
                            .bind(&fire_id)
                            .execute(&mut *tx)
                            .await?;
                        continue;
                    }
                    // Locks the lost run held (holder `node/fire`) go with it, so
                    // the re-run is not blocked by its own predecessor.
                    if let Some(node) = &node {
                        sqlx::query("UPDATE cluster_locks SET holder = NULL, lease_until_ms = NULL WHERE holder = $1")
                            .bind(format!("{node}/{fire_id}"))
                            .execute(&mut *tx)
                            .await?;
                    }
                    if row.try_get::<i64, _>("requests_recovery")? != 0 {
                        // Same attempt, flagged: the guest can tell it may be a re-run.
                        sqlx::query("UPDATE fires SET state = 'scheduled', recovering = 1, node_id = NULL, lease_until_ms = NULL, due_ms = $1 WHERE fire_id = $2")
                            .bind(now)
                            .bind(&fire_id)
                            .execute(&mut *tx)
                            .await?;
                    } else {
                        sqlx::query("DELETE FROM fires WHERE fire_id = $1").bind(&fire_id).execute(&mut *tx).await?;
                        let job_key: String = row.try_get("job_key")?;
                        let trigger_key: String = row.try_get("trigger_key")?;
                        let mut entry = $crate::store::sched::history_row(Some(&fire_id), &job_key, Some(&trigger_key), HistoryStatus::Failed,
                            Some(row.try_get("scheduled_ms")?), now,
                            serde_json::json!({ "reason": "node-lost", "detail": "the node running this fire stopped before it ended; the job does not request recovery", "node": node }));
                        entry.attempt = u32::try_from(row.try_get::<i64, _>("attempt")?).unwrap_or(0);
                        entry.node_id = node;
                        history.push(entry);
                    }
                }
                $crate::store::sched::insert_history!(&mut *tx, &history);
                tx.commit().await?;
                Ok(lost.len() as u64)
            }

            async fn fire_list(&self) -> Result<Vec<$crate::store::model::FireClaim>, $crate::store::StoreError> {
                use sqlx::Row;
                let rows = sqlx::query(
                    "SELECT fire_id, trigger_key, job_key, scheduled_ms, due_ms, attempt, recovering, fencing, event_id, depth, CAST(0 AS BIGINT) AS held FROM fires \
                     UNION ALL SELECT fire_id, trigger_key, job_key, scheduled_ms, scheduled_ms, 1, 0, fencing, '', 0, CAST(1 AS BIGINT) \
                     FROM held_claims ORDER BY 5",
                )
                .fetch_all(&self.pool)
                .await?;
                let mut out = Vec::with_capacity(rows.len());
                for row in &rows {
                    let job_key: String = row.try_get("job_key")?;
                    let Some(job) = self.job_get(&job_key).await? else { continue };
                    out.push($crate::store::model::FireClaim {
                        fire_id: row.try_get("fire_id")?,
                        trigger_key: row.try_get("trigger_key")?,
                        job_key,
                        scheduled_ms: row.try_get("scheduled_ms")?,
                        due_ms: row.try_get("due_ms")?,
                        attempt: u32::try_from(row.try_get::<i64, _>("attempt")?).unwrap_or(1),
                        recovering: row.try_get::<i64, _>("recovering")? != 0,
                        fencing: row.try_get("fencing")?,
                        job,
                        event_id: Some(row.try_get::<String, _>("event_id")?).filter(|e| !e.is_empty()),
                        depth: u32::try_from(row.try_get::<i64, _>("depth")?).unwrap_or(0),
                        held: row.try_get::<i64, _>("held")? != 0,
                    });
                }
                Ok(out)
            }

            async fn history_list(&self, f: &$crate::store::model::HistoryFilter) -> Result<Vec<$crate::store::model::HistoryEntry>, $crate::store::StoreError> {
                let rows = sqlx::query(
                    "SELECT id, fire_id, job_key, trigger_key, status, attempt, node_id, scheduled_ms, started_ms, ended_ms, duration_ms, details \
                     FROM task_history WHERE ($1 IS NULL OR job_key = $1) AND ($2 IS NULL OR status = $2) AND ($3 IS NULL OR started_ms < $3) \
                     ORDER BY started_ms DESC, id DESC LIMIT $4",
                )
                .bind(f.job_key.as_deref())
                .bind(f.status.map(|s| s.as_str()))
                .bind(f.before_ms)
                .bind(if f.limit > 0 { f.limit } else { 100 })
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map($crate::store::sched::history_from_row).collect()
            }

            async fn history_count(&self, f: &$crate::store::model::HistoryFilter) -> Result<u64, $crate::store::StoreError> {
                use sqlx::Row;
                let row = sqlx::query("SELECT COUNT(*) AS n FROM task_history WHERE ($1 IS NULL OR job_key = $1) AND ($2 IS NULL OR status = $2)")
                    .bind(f.job_key.as_deref())
                    .bind(f.status.map(|s| s.as_str()))
                    .fetch_one(&self.pool)
                    .await?;
                Ok(u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0))
            }

            async fn history_stats(
                &self,
                p: &$crate::store::model::HistoryStatsParams,
            ) -> Result<Vec<$crate::store::model::HistoryBucket>, $crate::store::StoreError> {
                use sqlx::Row;
                if p.bucket_ms < 1 || p.to_ms <= p.from_ms {
                    return Ok(Vec::new());
                }
                let mut out: std::collections::BTreeMap<i64, $crate::store::model::HistoryBucket> = std::collections::BTreeMap::new();
                let counts = sqlx::query(
                    "SELECT (started_ms - $1) / $2 AS b, status, COUNT(*) AS n FROM task_history \
                     WHERE started_ms >= $1 AND started_ms < $3 GROUP BY (started_ms - $1) / $2, status",
                )
                .bind(p.from_ms)
                .bind(p.bucket_ms)
                .bind(p.to_ms)
                .fetch_all(&self.pool)
                .await?;
                for r in &counts {
                    let b: i64 = r.try_get("b")?;
                    let bucket = out.entry(b).or_insert_with(|| $crate::store::model::HistoryBucket { index: b, ..Default::default() });
                    bucket.counts.insert(r.try_get("status")?, r.try_get("n")?);
                }
                // Nearest-rank percentiles: the row ranked ceil(p * n) within its bucket.
                // First attempts only: a retry starts late by its backoff, on purpose.
                let lags = sqlx::query(
                    "WITH runs AS ( \
                       SELECT (started_ms - $1) / $2 AS b, started_ms - scheduled_ms AS lag FROM task_history \
                       WHERE started_ms >= $1 AND started_ms < $3 AND scheduled_ms IS NOT NULL AND attempt = 1 \
                         AND status IN ('success', 'failed', 'retried', 'timeout') \
                     ), ranked AS ( \
                       SELECT b, lag, ROW_NUMBER() OVER (PARTITION BY b ORDER BY lag) AS rn, COUNT(*) OVER (PARTITION BY b) AS n FROM runs \
                     ) \
                     SELECT b, MAX(n) AS n, \
                       MAX(CASE WHEN rn = (n * 50 + 99) / 100 THEN lag END) AS p50, \
                       MAX(CASE WHEN rn = (n * 99 + 99) / 100 THEN lag END) AS p99, \
                       MAX(lag) AS lag_max \
                     FROM ranked GROUP BY b",
                )
                .bind(p.from_ms)
                .bind(p.bucket_ms)
                .bind(p.to_ms)
                .fetch_all(&self.pool)
                .await?;
                for r in &lags {
                    let b: i64 = r.try_get("b")?;
                    let bucket = out.entry(b).or_insert_with(|| $crate::store::model::HistoryBucket { index: b, ..Default::default() });
                    bucket.lag_samples = r.try_get("n")?;
                    bucket.lag_p50_ms = r.try_get("p50")?;
                    bucket.lag_p99_ms = r.try_get("p99")?;
                    bucket.lag_max_ms = r.try_get("lag_max")?;
                }
                Ok(out.into_values().collect())
            }

            async fn history_cleanup(&self, max_age_ms: i64, max_rows: i64) -> Result<u64, $crate::store::StoreError> {
                let _writer = self.writer().await;
                let mut tx = self.pool.begin_with($begin).await?;
                let aged = sqlx::query(concat!("DELETE FROM task_history WHERE started_ms < ", $now, " - $1"))
                    .bind(max_age_ms)
                    .execute(&mut *tx)
                    .await?;
                let over = sqlx::query(concat!(
                    "DELETE FROM task_history WHERE id IN (SELECT id FROM task_history ORDER BY started_ms DESC, id DESC ", $all_after, ")"
                ));
                let over = over.bind(max_rows).execute(&mut *tx).await?;
                tx.commit().await?;
                Ok(aged.rows_affected() + over.rows_affected())
            }

            async fn lock_try(&self, name: &str, holder: &str, lease_ms: i64) -> Result<Option<i64>, $crate::store::StoreError> {
                use sqlx::Row;
                let _writer = self.writer().await;
                // Insert, or take over a released or expired lock; a live holder makes
                // the statement change nothing and return no row. Released rows are
                // deleted, so a new row's token must start above every token the
                // name ever had (see migration 0010).
                let sql = match $crate::store::Store::dialect(self) {
                    $crate::store::Dialect::Postgres => concat!(
                        "INSERT INTO cluster_locks (name, holder, token, acquired_ms, lease_until_ms) \
                         VALUES ($1, $2, nextval('cluster_lock_tokens'), ", $now, ", ", $now, " + $3) \
                         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, token = nextval('cluster_lock_tokens'), \
                         acquired_ms = excluded.acquired_ms, lease_until_ms = excluded.lease_until_ms \
                         WHERE cluster_locks.holder IS NULL OR cluster_locks.lease_until_ms < excluded.acquired_ms \
                         RETURNING token"
                    ),
                    _ => concat!(
                        "INSERT INTO cluster_locks (name, holder, token, acquired_ms, lease_until_ms) \
                         VALUES ($1, $2, COALESCE((SELECT token FROM cluster_locks WHERE name = ''), 0) + 1, ", $now, ", ", $now, " + $3) \
                         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, token = cluster_locks.token + 1, \
                         acquired_ms = excluded.acquired_ms, lease_until_ms = excluded.lease_until_ms \
                         WHERE cluster_locks.holder IS NULL OR cluster_locks.lease_until_ms < excluded.acquired_ms \
                         RETURNING token"
                    ),
                };
                let row = sqlx::query(sql)
                    .bind(name)
                    .bind(holder)
                    .bind(lease_ms)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(|r| r.try_get("token")).transpose()?)
            }

            async fn lock_renew(&self, name: &str, token: i64, lease_ms: i64) -> Result<bool, $crate::store::StoreError> {
                let _writer = self.writer().await;
                let done = sqlx::query(concat!(
                    "UPDATE cluster_locks SET lease_until_ms = ", $now, " + $1 WHERE name = $2 AND token = $3 AND holder IS NOT NULL"
                ))
                .bind(lease_ms)
                .bind(name)
                .bind(token)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn lock_release(&self, name: &str, token: i64) -> Result<bool, $crate::store::StoreError> {
                let _writer = self.writer().await;
                // A released lock leaves no row behind: a run taking a million names
                // must not leave a million rows.
                let mut tx = self.pool.begin().await?;
                let done = sqlx::query("DELETE FROM cluster_locks WHERE name = $1 AND token = $2 AND holder IS NOT NULL AND name <> ''")
                    .bind(name)
                    .bind(token)
                    .execute(&mut *tx)
                    .await?;
                let released = done.rows_affected() == 1;
                if released && $crate::store::Store::dialect(self) != $crate::store::Dialect::Postgres {
                    // SQLite: the '' row keeps the highest token deleted (PostgreSQL's
                    // tokens come from a sequence instead).
                    sqlx::query(
                        "INSERT INTO cluster_locks (name, holder, token) VALUES ('', NULL, $1) \
                         ON CONFLICT (name) DO UPDATE SET token = CASE WHEN cluster_locks.token < excluded.token \
                         THEN excluded.token ELSE cluster_locks.token END",
                    )
                    .bind(token)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(released)
            }

            async fn lock_list(&self) -> Result<Vec<$crate::store::model::LockRow>, $crate::store::StoreError> {
                use sqlx::Row;
                let rows = sqlx::query(concat!(
                    "SELECT name, holder, token, acquired_ms, lease_until_ms FROM cluster_locks \
                     WHERE holder IS NOT NULL AND lease_until_ms >= ", $now, " ORDER BY name"
                ))
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok($crate::store::model::LockRow {
                            name: r.try_get("name")?,
                            holder: r.try_get("holder")?,
                            token: r.try_get("token")?,
                            acquired_ms: r.try_get("acquired_ms")?,
                            lease_until_ms: r.try_get("lease_until_ms")?,
                        })
                    })
                    .collect()
            }

            async fn node_list(&self, dead_after_ms: i64) -> Result<Vec<$crate::store::model::NodeRow>, $crate::store::StoreError> {
                use sqlx::Row;
                let rows = sqlx::query(concat!(
                    "SELECT n.node_id, n.started_ms, n.heartbeat_ms, n.version, n.wit_versions, n.wit_lo, n.wit_hi, n.modules, \
                     (SELECT COUNT(*) FROM fires f WHERE f.node_id = n.node_id AND f.state = 'acquired') \
                     + (SELECT COUNT(*) FROM held_claims h WHERE h.node_id = n.node_id) AS running, \
                     CASE WHEN n.heartbeat_ms >= ", $now, " - $1 THEN 1 ELSE 0 END AS alive \
                     FROM nodes n ORDER BY n.node_id"
                ))
                .bind(dead_after_ms)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok($crate::store::model::NodeRow {
                            node_id: r.try_get("node_id")?,
                            started_ms: r.try_get("started_ms")?,
                            heartbeat_ms: r.try_get("heartbeat_ms")?,
                            version: r.try_get("version")?,
                            wit_versions: r.try_get("wit_versions")?,
                            runs: match (r.try_get("wit_lo")?, r.try_get("wit_hi")?) {
                                (Some(lo), Some(hi)) => Some($crate::store::model::WitRange { lo, hi }),
                                _ => None,
                            },
                            modules: r.try_get::<String, _>("modules")?.split(',').filter(|d| !d.is_empty()).map(str::to_string).collect(),
                            running: r.try_get("running")?,
                            alive: r.try_get::<i32, _>("alive")? != 0,
                        })
                    })
                    .collect()
            }

            async fn node_heartbeat(&self, c: &$crate::store::model::NodeCheckIn) -> Result<(), $crate::store::StoreError> {
                let _writer = self.writer().await;
                sqlx::query(concat!(
                    "INSERT INTO nodes (node_id, started_ms, heartbeat_ms, version, wit_versions, wit_lo, wit_hi, modules) \
                     VALUES ($1, ", $now, ", ", $now, ", $2, $3, $4, $5, $6) \
                     ON CONFLICT (node_id) DO UPDATE SET heartbeat_ms = excluded.heartbeat_ms, version = excluded.version, \
                     wit_versions = excluded.wit_versions, wit_lo = excluded.wit_lo, wit_hi = excluded.wit_hi, modules = excluded.modules"
                ))
                .bind(&c.node_id)
                .bind(&c.version)
                .bind(&c.wit_versions)
                .bind(c.runs.lo)
                .bind(c.runs.hi)
                .bind(c.modules.join(","))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn node_restart(&self, node_id: &str) -> Result<bool, $crate::store::StoreError> {
                let _writer = self.writer().await;
                let done = sqlx::query("UPDATE nodes SET heartbeat_ms = 0 WHERE node_id = $1")
                    .bind(node_id)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn fire_skip_unrunnable(&self, dead_after_ms: i64, runs: $crate::store::model::WitRange) -> Result<u64, $crate::store::StoreError> {
                use sqlx::Row;
                use $crate::store::model::HistoryStatus;
                // Nodes that never said what they run (older versions) count as
                // able to run anything: skipping is for when no node can.
                macro_rules! unrunnable {
                    () => {
                        "FROM fires f WHERE f.state = 'scheduled' AND f.due_ms <= $1 \
                         AND f.job_key IN (SELECT j.job_key FROM jobs j WHERE j.paused = 0 AND j.wit_need IS NOT NULL \
                           AND (j.wit_need < $3 OR j.wit_need > $4) \
                           AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.heartbeat_ms >= $1 - $2 \
                             AND (n.wit_lo IS NULL OR j.wit_need BETWEEN n.wit_lo AND n.wit_hi)))"
                    };
                }
                // Called on every check-in: look before taking the writer's lock.
                let any = sqlx::query(concat!("SELECT 1 AS one ", unrunnable!(), " LIMIT 1"))
                    .bind(self.now_ms().await?)
                    .bind(dead_after_ms)
                    .bind(runs.lo)
                    .bind(runs.hi)
                    .fetch_optional(&self.pool)
                    .await?;
                if any.is_none() {
                    return Ok(0);
                }
                let _writer = self.writer().await;
                let mut tx = self.pool.begin_with($begin).await?;
                let now: i64 = sqlx::query(concat!("SELECT ", $now, " AS now")).fetch_one(&mut *tx).await?.try_get("now")?;
                let rows = sqlx::query(concat!(
                    "SELECT f.fire_id, f.trigger_key, f.job_key, f.scheduled_ms, f.attempt, \
                     (SELECT j.module FROM jobs j WHERE j.job_key = f.job_key) AS module, \
                     (SELECT j.wit_need FROM jobs j WHERE j.job_key = f.job_key) AS wit_need ",
                     unrunnable!(), " ORDER BY f.due_ms LIMIT 500", $lock
                ))
                .bind(now)
                .bind(dead_after_ms)
                .bind(runs.lo)
                .bind(runs.hi)
                .fetch_all(&mut *tx)
                .await?;
                let mut history = Vec::with_capacity(rows.len());
                for row in &rows {
                    let fire_id: String = row.try_get("fire_id")?;
                    sqlx::query("DELETE FROM fires WHERE fire_id = $1 AND state = 'scheduled'").bind(&fire_id).execute(&mut *tx).await?;
                    let need: Option<i64> = row.try_get("wit_need")?;
                    let needs = need.map(|n| format!("{}.{}", n / 1_000_000, n % 1_000_000)).unwrap_or_default();
                    let module: Option<String> = row.try_get("module")?;
                    let job_key: String = row.try_get("job_key")?;
                    let trigger_key: String = row.try_get("trigger_key")?;
                    let mut entry = $crate::store::sched::history_row(Some(&fire_id), &job_key, Some(&trigger_key), HistoryStatus::Skipped,
                        Some(row.try_get("scheduled_ms")?), now,
                        serde_json::json!({ "reason": "no-capable-node", "module": module, "needs_wit": needs,
                            "detail": format!("no live node runs quartzite:job {needs}, which this job's module needs") }));
                    entry.attempt = u32::try_from(row.try_get::<i64, _>("attempt")?).unwrap_or(0);
                    history.push(entry);
                }
                $crate::store::sched::insert_history!(&mut *tx, &history);
                tx.commit().await?;
                Ok(rows.len() as u64)
            }
        }
    };
}

/// Adds the jobs of a JSON array of job rows (see [`JobColumns`]) to `map`.
pub(crate) fn jobs_into(
    text: Option<String>,
    map: &mut std::collections::HashMap<String, JobDef>,
) -> Result<(), StoreError> {
    for columns in json_rows::<JobColumns>(text, "job")? {
        let job = columns.into_job();
        map.insert(job.job_key.clone(), job);
    }
    Ok(())
}

/// Loads the jobs of `keys` (any iterator of job keys) not yet in the map
/// into it, each once, 200 per statement, each statement's rows as one (see
/// [`json_rows`]).
macro_rules! load_jobs {
    ($conn:expr, $keys:expr, $map:expr, $agg:literal, $arr:literal) => {
        let mut wanted: Vec<String> = Vec::new();
        {
            let mut seen = std::collections::HashSet::new();
            for key in $keys {
                if !$map.contains_key(&key) && seen.insert(key.clone()) {
                    wanted.push(key);
                }
            }
        }
        for chunk in wanted.chunks(200) {
            let mut qb = sqlx::QueryBuilder::new(concat!(
                "SELECT CAST(",
                $agg,
                "(",
                $arr,
                "(",
                $crate::store::sched::job_columns!(),
                ")) AS TEXT) FROM jobs WHERE job_key IN ("
            ));
            let mut list = qb.separated(", ");
            for key in chunk {
                list.push_bind(key.clone());
            }
            qb.push(")");
            let text: Option<String> = qb.build_query_scalar().fetch_one($conn).await?;
            $crate::store::sched::jobs_into(text, $map)?;
        }
    };
}

/// Moves the claim `trigger_key` holds for `fire_id`, if `node_id` still holds
/// it under `fencing`, to an `acquired` `fires` row of that node (same id,
/// fencing and lease); evaluates to whether it did. A retry, release or
/// recovery of the fire is then what it is for any `fires` row.
macro_rules! unhold {
    ($conn:expr, $trigger_key:expr, $fire_id:expr, $node_id:expr, $fencing:expr) => {{
        let moved = sqlx::query(
            "INSERT INTO fires (fire_id, trigger_key, job_key, scheduled_ms, due_ms, priority, attempt, state, recovering, fencing, node_id, lease_until_ms, started) \
             SELECT fire_id, trigger_key, job_key, scheduled_ms, scheduled_ms, priority, 1, 'acquired', 0, fencing, node_id, lease_until_ms, started \
             FROM held_claims WHERE trigger_key = $1 AND fire_id = $2 AND node_id = $3 AND fencing = $4",
        )
        .bind($trigger_key)
        .bind($fire_id)
        .bind($node_id)
        .bind($fencing)
        .execute($conn)
        .await?
        .rows_affected()
            == 1;
        if moved {
            sqlx::query("DELETE FROM held_claims WHERE trigger_key = $1")
                .bind($trigger_key)
                .execute($conn)
                .await?;
        }
        moved
    }};
}

/// Inserts history rows (any iterator of `&HistoryEntry`), 200 per statement.
macro_rules! insert_history {
    ($conn:expr, $rows:expr) => {
        let rows: Vec<&$crate::store::model::HistoryEntry> = ($rows).into_iter().collect();
        for chunk in rows.chunks(200) {
            let mut qb = sqlx::QueryBuilder::new(
                "INSERT INTO task_history (id, fire_id, job_key, trigger_key, status, attempt, node_id, scheduled_ms, started_ms, ended_ms, duration_ms, details) ",
            );
            qb.push_values(chunk, |mut b, h: &&$crate::store::model::HistoryEntry| {
                b.push_bind(h.id.clone())
                    .push_bind(h.fire_id.clone())
                    .push_bind(h.job_key.clone())
                    .push_bind(h.trigger_key.clone())
                    .push_bind(h.status.as_str())
                    .push_bind(i64::from(h.attempt))
                    .push_bind(h.node_id.clone())
                    .push_bind(h.scheduled_ms)
                    .push_bind(h.started_ms)
                    .push_bind(h.ended_ms)
                    .push_bind(h.duration_ms)
                    .push_bind(h.details.clone());
            });
            qb.build().execute($conn).await?;
        }
    };
}

pub(crate) use {
    history_columns, impl_scheduling, insert_history, job_columns, load_jobs, refresh_wit_need,
    trigger_columns, unhold,
};
