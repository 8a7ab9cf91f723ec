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
//! booleans; the clock and the row-locking clause are named, see `sql.rs`).
//! The claim's decisions are made in `claim.rs`; `fire_acquire` here reads
//! what they need and writes what they decide.
//!
//! Why one long file: it is the one implementation of [`Scheduling`], and a
//! trait impl is one block. The file reads top down: the trait, the row
//! types, the statements (each a static next to the others of its method),
//! the helpers, then the methods in the trait's order.

use super::model::*;
use super::sql::{Backend, Db, Sql, writer};
use super::{Dialect, StoreError, claim};
use crate::schedule::trigger::TriggerKind;
use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, QueryBuilder, Row, Type};
use std::collections::{HashMap, HashSet};

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
    /// Pauses (with `note`: why, and until when) or resumes (the note
    /// cleared) a job; false when there is no such job.
    async fn job_pause(
        &self,
        job_key: &str,
        paused: bool,
        note: &PauseNote,
    ) -> Result<bool, StoreError>;
    /// Pauses a job that is not paused, with `note` (a pause an operator
    /// made keeps its own note); answers whether it paused it now.
    async fn job_pause_if_active(&self, job_key: &str, note: &str) -> Result<bool, StoreError>;
    /// Resumes the paused jobs whose `until` has passed; answers their keys.
    async fn jobs_resume_due(&self) -> Result<Vec<String>, StoreError>;
    /// Pauses or resumes every job of a group; returns how many.
    async fn group_pause(
        &self,
        group: &str,
        paused: bool,
        note: &PauseNote,
    ) -> Result<u64, StoreError>;
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
    /// The fires `node_id` runs that a claim asked to stop (overlap
    /// `cancel-other`), each with the fire superseding it.
    async fn fire_cancel_requests(
        &self,
        node_id: &str,
    ) -> Result<Vec<(String, String)>, StoreError>;
    /// Marks claims of `node_id` as started: their runs are about to begin. A
    /// claim never marked is handed back untouched when its node is lost.
    /// Returns the ids of those marked: a claim handed back or taken over
    /// since is not, and its fire must not run under it, since another claim
    /// (of another node, or a later one of this node) may run it.
    async fn fire_mark_started(
        &self,
        node_id: &str,
        fires: &[ClaimRef],
    ) -> Result<Vec<String>, StoreError>;
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

/// The start of an UPDATE that sets `jobs.wit_need` to the rank of the module
/// each job's reference resolves to now (the same choice as `module_get`: a
/// name means its newest version not withdrawn by a rollback). A `WHERE`
/// picking the jobs follows.
pub(crate) const REFRESH_WIT_NEED: &str = "UPDATE jobs SET wit_need = (SELECT m.wit_rank FROM modules m \
     WHERE (m.name = jobs.module AND m.withdrawn = 0) OR m.name || '@' || m.version = jobs.module \
     OR 'sha256:' || m.digest = jobs.module \
     ORDER BY m.created_at DESC, m.version DESC LIMIT 1)";

/// The columns of a job row, as [`JobColumns`] reads them.
pub(crate) const JOB_COLUMNS: &str = "job_key, module, data, overlap, max_attempts, backoff, backoff_initial_ms, \
     backoff_max_ms, jitter, timeout_ms, max_memory, requests_recovery, priority, paused, source, kv_max_keys, \
     kv_max_bytes, grants, pause_note, paused_until_ms, pause_on_failure, flow";

/// The columns of a trigger row, as [`TriggerColumns`] reads them.
pub(crate) const TRIGGER_COLUMNS: &str = "trigger_key, job_key, kind, cron, tz, period_ms, repeat_count, at_ms, misfire, \
     start_ms, end_ms, priority, state, next_fire_ms, error, event_name, jitter_ms, calendars";

/// The columns of a task history row, as [`history_from_row`] reads them.
pub(crate) const HISTORY_COLUMNS: &str = "id, fire_id, job_key, trigger_key, status, attempt, node_id, scheduled_ms, \
     started_ms, ended_ms, duration_ms, details";

/// The jobs whose module no live node can run, as a subquery (`$1` now, `$2`
/// the dead-after interval, `$3`/`$4` the calling node's contract range).
/// Nodes that never said what they run (older versions) count as able to run
/// anything: skipping is for when no node can.
pub(crate) const UNRUNNABLE_JOBS: &str = "SELECT j.job_key FROM jobs j WHERE j.paused = 0 AND j.wit_need IS NOT NULL \
     AND (j.wit_need < $3 OR j.wit_need > $4) \
     AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.heartbeat_ms >= $1 - $2 \
       AND (n.wit_lo IS NULL OR j.wit_need BETWEEN n.wit_lo AND n.wit_hi))";

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

pub(crate) fn history_from_row<R: sqlx::Row>(r: &R) -> Result<HistoryEntry, StoreError>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
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

/// A job row as stored, in the order of [`JOB_COLUMNS`]. Read from a result
/// row, or, where many rows are read at once, from a JSON array the query
/// builds of those columns (serde takes a struct from an array in field order).
#[derive(serde::Deserialize, sqlx::FromRow)]
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
    grants: Option<String>,
    pause_note: Option<String>,
    paused_until_ms: Option<i64>,
    pause_on_failure: Option<i64>,
    flow: Option<String>,
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
            grants: self.grants,
            pause: PauseNote {
                note: self.pause_note,
                until_ms: self.paused_until_ms,
            },
            pause_on_failure: self.pause_on_failure.and_then(|n| u32::try_from(n).ok()),
            flow: Flow::from_column(self.flow.as_deref()),
        }
    }
}

/// A trigger row as stored, in the order of [`TRIGGER_COLUMNS`] (see
/// [`JobColumns`] for the two ways it is read).
#[derive(serde::Deserialize, sqlx::FromRow)]
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
    jitter_ms: Option<i64>,
    calendars: Option<String>,
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
            jitter_ms: self.jitter_ms,
            calendars: self.calendars,
        }
        .into_spec()
        .ok_or_else(|| {
            StoreError::Corrupt(format!("trigger {key} has an unreadable schedule ({kind})"))
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

/// A trigger from a result row holding [`TRIGGER_COLUMNS`] (and maybe more).
pub(crate) fn trigger_from_row<'r, R: sqlx::Row>(row: &'r R) -> Result<TriggerRow, StoreError>
where
    TriggerColumns: sqlx::FromRow<'r, R>,
{
    <TriggerColumns as sqlx::FromRow<'r, R>>::from_row(row)?.into_row()
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
            .map_err(|e| StoreError::Corrupt(format!("unreadable {what} rows: {e}"))),
    }
}

/// Adds the jobs of a JSON array of job rows (see [`JobColumns`]) to `map`.
pub(crate) fn jobs_into(
    text: Option<String>,
    map: &mut HashMap<String, JobDef>,
) -> Result<(), StoreError> {
    for columns in json_rows::<JobColumns>(text, "job")? {
        let job = columns.into_job();
        map.insert(job.job_key.clone(), job);
    }
    Ok(())
}

// Statements of the scheduler. `{now}` is the database clock and
// `{skip_locked}` the claim's row locking (see `sql::fragment`).

static CLOCK: Sql = Sql::new("SELECT {now}");
static JOBS_INSERT: Sql = Sql::new("INSERT INTO jobs ({job_columns}, created_at, updated_at) ");
static JOBS_UPSERT: Sql = Sql::new(
    " ON CONFLICT (job_key) DO UPDATE SET module = excluded.module, data = excluded.data, \
     overlap = excluded.overlap, max_attempts = excluded.max_attempts, backoff = excluded.backoff, \
     backoff_initial_ms = excluded.backoff_initial_ms, backoff_max_ms = excluded.backoff_max_ms, \
     jitter = excluded.jitter, timeout_ms = excluded.timeout_ms, max_memory = excluded.max_memory, \
     requests_recovery = excluded.requests_recovery, priority = excluded.priority, \
     paused = excluded.paused, source = excluded.source, kv_max_keys = excluded.kv_max_keys, \
     kv_max_bytes = excluded.kv_max_bytes, grants = excluded.grants, \
     pause_note = excluded.pause_note, paused_until_ms = excluded.paused_until_ms, \
     pause_on_failure = excluded.pause_on_failure, flow = excluded.flow, updated_at = excluded.updated_at",
);
static WIT_NEED_OF_JOBS: Sql = Sql::new("{refresh_wit_need} WHERE job_key IN (");
static TRIGGERS_OF_JOBS: Sql =
    Sql::new("SELECT {trigger_columns} FROM triggers WHERE job_key IN (");
static TRIGGERS_INSERT: Sql = Sql::new("INSERT INTO triggers ({trigger_columns}, updated_at) ");
static TRIGGERS_UPSERT: Sql = Sql::new(
    " ON CONFLICT (trigger_key) DO UPDATE SET job_key = excluded.job_key, kind = excluded.kind, \
     cron = excluded.cron, tz = excluded.tz, period_ms = excluded.period_ms, \
     repeat_count = excluded.repeat_count, at_ms = excluded.at_ms, misfire = excluded.misfire, \
     start_ms = excluded.start_ms, end_ms = excluded.end_ms, priority = excluded.priority, \
     state = excluded.state, next_fire_ms = excluded.next_fire_ms, error = excluded.error, \
     event_name = excluded.event_name, jitter_ms = excluded.jitter_ms, calendars = excluded.calendars, \
     updated_at = excluded.updated_at",
);
static JOB_GET: Sql = Sql::new("SELECT {job_columns} FROM jobs WHERE job_key = $1");
static JOB_LIST: Sql = Sql::new("SELECT {job_columns} FROM jobs ORDER BY job_key");
static JOB_DELETE_FIRES: Sql =
    Sql::new("DELETE FROM fires WHERE job_key = $1 AND state = 'scheduled'");
static JOB_DELETE_TRIGGERS: Sql = Sql::new("DELETE FROM triggers WHERE job_key = $1");
static JOB_DELETE: Sql = Sql::new("DELETE FROM jobs WHERE job_key = $1");
static JOB_PAUSE: Sql = Sql::new(
    "UPDATE jobs SET paused = $1, pause_note = $3, paused_until_ms = $4 WHERE job_key = $2",
);
static GROUP_PAUSE: Sql = Sql::new(
    "UPDATE jobs SET paused = $1, pause_note = $3, paused_until_ms = $4 \
     WHERE substr(job_key, 1, length($2) + 1) = $2 || '/'",
);
static JOB_PAUSE_IF_ACTIVE: Sql =
    Sql::new("UPDATE jobs SET paused = 1, pause_note = $2 WHERE job_key = $1 AND paused = 0");
/// Whether any pause has run out: read first, so that the upkeep pass of
/// every node does not take the writer when none has (the usual case).
static JOBS_RESUME_ANY: Sql = Sql::new(
    "SELECT CAST(1 AS BIGINT) FROM jobs WHERE paused = 1 AND paused_until_ms IS NOT NULL \
     AND paused_until_ms <= {now} LIMIT 1",
);
/// Paused jobs whose pause has run out, resumed (see `jobs_resume_due`).
static JOBS_RESUME_DUE: Sql = Sql::new(
    "UPDATE jobs SET paused = 0, pause_note = NULL, paused_until_ms = NULL \
     WHERE paused = 1 AND paused_until_ms IS NOT NULL AND paused_until_ms <= {now} RETURNING job_key",
);
static TRIGGER_LIST: Sql = Sql::new(
    "SELECT {trigger_columns} FROM triggers WHERE ($1 IS NULL OR job_key = $1) ORDER BY trigger_key",
);
static TRIGGER_PAUSE: Sql =
    Sql::new("UPDATE triggers SET state = $1 WHERE trigger_key = $2 AND state = $3");
static TRIGGER_EXISTS: Sql = Sql::new("SELECT 1 FROM triggers WHERE trigger_key = $1");
static TRIGGER_RESET_ERRORS: Sql =
    Sql::new("UPDATE triggers SET state = 'WAITING', error = NULL WHERE state = 'ERROR'");
static FIRE_NOW: Sql = Sql::new(
    "INSERT INTO fires (fire_id, trigger_key, job_key, scheduled_ms, due_ms, priority, attempt, state, recovering, fencing, \
     concurrency_key, rate_key) \
     SELECT $1, job_key || ':manual', job_key, {now}, {now}, priority, 1, 'scheduled', 0, 0, $3, $4 FROM jobs WHERE job_key = $2",
);
static STARTUP_TRIGGERS: Sql = Sql::new(
    "SELECT t.trigger_key, t.job_key, t.kind, t.priority, j.module, j.data, j.flow FROM triggers t JOIN jobs j ON j.job_key = t.job_key \
     WHERE t.kind IN ('on-start', 'once') AND t.state = 'WAITING' AND j.paused = 0",
);
static ONCE_RUN: Sql = Sql::new(
    "INSERT INTO once_runs (job_key, module, ran_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
);
static STARTUP_FIRE: Sql = Sql::new(
    "INSERT INTO fires (fire_id, trigger_key, job_key, scheduled_ms, due_ms, priority, attempt, state, recovering, fencing, \
     concurrency_key, rate_key) VALUES ($1, $2, $3, $4, $4, $5, 1, 'scheduled', 0, 0, $6, $7) ON CONFLICT DO NOTHING",
);

// The claim (`fire_acquire`). Due triggers and their jobs come back in one
// statement, as one row (see `json_rows`): per trigger its columns, the
// contract rank its job needs, the time of the fire it holds (if any), and
// whether a `fires` row already has its next time. The calendars' definitions
// come too, all of them, only when a due trigger names one: a claim of
// triggers without calendars reads none.
//
// The due triggers are two windows of the index: the oldest `$2` (the claim's
// limit) and the newest `$3` of those due after them (see
// `claim::interleave_jobs`; the claim takes its limit of both, round-robin by
// job): under a backlog of one job, a trigger that has just come due is read
// at once instead of after the backlog.
/// One window of due triggers for [`DUE_TRIGGERS`], each row with what the
/// claim decides on: the contract rank its job needs, the time of the fire it
/// holds (if any), and whether its next fire exists already.
macro_rules! due_window {
    ($extra:literal, $order:literal, $limit:literal) => {
        concat!(
            "SELECT {trigger_columns}, \
             (SELECT j.wit_need FROM jobs j WHERE j.job_key = triggers.job_key) AS wit_need, \
             (SELECT h.scheduled_ms FROM held_claims h WHERE h.trigger_key = triggers.trigger_key) AS held_scheduled_ms, \
             CASE WHEN EXISTS (SELECT 1 FROM fires f WHERE f.trigger_key = triggers.trigger_key AND f.scheduled_ms = triggers.next_fire_ms) \
             THEN 1 ELSE 0 END AS taken FROM triggers \
             WHERE state = 'WAITING' AND next_fire_ms <= $1 \
             AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.job_key = triggers.job_key AND j.paused = 1) ",
            $extra,
            " ORDER BY ",
            $order,
            " LIMIT ",
            $limit,
            "{skip_locked}"
        )
    };
}
static DUE_TRIGGERS: Sql = Sql::new(concat!(
    "WITH o AS MATERIALIZED (",
    due_window!("", "next_fire_ms, priority DESC", "$2"),
    // The newest, of those due after the oldest window's last: none when
    // that window holds every due trigger, or all are due at the same time.
    "), n AS MATERIALIZED (",
    due_window!(
        "AND next_fire_ms > (SELECT MAX(next_fire_ms) FROM o)",
        "next_fire_ms DESC",
        "$3"
    ),
    "), d AS MATERIALIZED (SELECT * FROM o UNION ALL SELECT * FROM n) \
     SELECT CAST((SELECT {json_agg}({json_array}({json_array}({trigger_columns}), wit_need, held_scheduled_ms, taken) \
     ORDER BY next_fire_ms, priority DESC) FROM d) AS TEXT), \
     CAST((SELECT {json_agg}({json_array}({job_columns})) FROM jobs \
     WHERE job_key IN (SELECT job_key FROM d)) AS TEXT), \
     CAST((SELECT {json_agg}(definition) FROM calendars \
     WHERE EXISTS (SELECT 1 FROM d WHERE d.calendars IS NOT NULL)) AS TEXT)"
));
static TRIGGER_ERROR: Sql = Sql::new(
    "UPDATE triggers SET state = 'ERROR', error = $1, updated_at = $2 WHERE trigger_key = $3",
);
// VALUES columns are column1, column2 ... in both dialects.
static TRIGGERS_MOVE: Sql = Sql::new("UPDATE triggers SET next_fire_ms = v.column2, updated_at = ");
static TRIGGERS_COMPLETE: Sql =
    Sql::new("UPDATE triggers SET state = 'COMPLETE', next_fire_ms = NULL, updated_at = ");
static HELD_INSERT: Sql = Sql::new(
    "INSERT INTO held_claims (trigger_key, fire_id, job_key, scheduled_ms, priority, node_id, fencing, lease_until_ms, started) \
     SELECT v.column1, v.column2, v.column3, v.column4, v.column5, ",
);
static FIRES_INSERT: Sql = Sql::new(
    "INSERT INTO fires (fire_id, trigger_key, job_key, scheduled_ms, due_ms, priority, attempt, state, recovering, fencing, node_id, \
     lease_until_ms, started, concurrency_key, rate_key) ",
);
/// The waiting fires a claim reads: two windows of the due index, the
/// oldest `$2` and the newest `$5` (see `claim::interleave_jobs`), with
/// `$extra` filtering both.
macro_rules! waiting_fires {
    ($extra:literal) => {
        concat!(
            "WITH o AS MATERIALIZED (SELECT f.fire_id FROM fires f WHERE f.state = 'scheduled' AND f.due_ms <= $1 \
             AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.job_key = f.job_key AND (j.paused = 1 OR j.wit_need < $3 OR j.wit_need > $4)) ",
            $extra,
            " ORDER BY f.due_ms, f.priority DESC LIMIT $2{skip_locked}), \
             n AS MATERIALIZED (SELECT f.fire_id FROM fires f WHERE f.state = 'scheduled' AND f.due_ms <= $1 \
             AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.job_key = f.job_key AND (j.paused = 1 OR j.wit_need < $3 OR j.wit_need > $4)) ",
            $extra,
            " ORDER BY f.due_ms DESC LIMIT $5{skip_locked}) \
             SELECT f.fire_id, f.trigger_key, f.job_key, f.scheduled_ms, f.due_ms, f.attempt, f.recovering, f.fencing, f.event_id, \
             f.depth, f.concurrency_key, f.rate_key, f.coalesced, f.origin FROM fires f \
             WHERE f.fire_id IN (SELECT fire_id FROM o UNION SELECT fire_id FROM n) ORDER BY f.due_ms, f.priority DESC"
        )
    };
}
static WAITING_FIRES: Sql = Sql::new(waiting_fires!(""));
/// [`WAITING_FIRES`] but for the jobs named in `$6` (a JSON array): those
/// without room left in the node's share (see `JobRoom`), and the fires whose
/// flow keys are named in `$7`: keys at their limit, whose fires would
/// otherwise fill the window and hide every other key's.
static WAITING_FIRES_EXCEPT: Sql = Sql::new(waiting_fires!(
    "AND f.job_key NOT IN ({json_texts_6}) \
     AND (f.concurrency_key IS NULL OR f.concurrency_key NOT IN ({json_texts_7})) \
     AND (f.rate_key IS NULL OR f.rate_key NOT IN ({json_texts_7}))"
));
static SKIP_LOCKED: Sql = Sql::new("{skip_locked}");
static LOAD_JOBS: Sql = Sql::new(
    "SELECT CAST({json_agg}({json_array}({job_columns})) AS TEXT) FROM jobs WHERE job_key IN (",
);
// Flow keys (see `claim::Guards`): a claim locks the rows of the keys
// among its candidates (those another node holds are skipped this round),
// creates the rows of keys seen for the first time, counts the running fires
// of its concurrency keys and writes back its rate keys' admitted starts.
// The keys' rows locked and their running fires counted, read back as one
// row (see [`json_rows`]). On PostgreSQL the count must be read after the
// lock is held (a statement reads as of before its locks, and would miss the
// claims of the node that held a key a moment before): a function of the
// schema does both in one call (migration 0024).
static FLOW_LOCK: Sql = Sql::new("SELECT flow_keys_lock(CAST($1 AS TEXT))");
static FLOW_CREATE: Sql = Sql::new(
    "INSERT INTO flow_keys (flow_key, starts, updated_ms) SELECT k, '[]', $2 FROM ({json_texts_1_as_k}) x WHERE true ON CONFLICT DO NOTHING",
);
// SQLite has one writer, so nothing changes between a read and the next:
// the keys' rows and their running fires come back in one statement.
static FLOW_LOCK_COUNTED: Sql = Sql::new(
    "SELECT CAST((SELECT {json_agg}({json_array}(k.flow_key, k.starts, COALESCE(r.n, 0))) FROM flow_keys k \
     LEFT JOIN (SELECT concurrency_key AS ck, COUNT(*) AS n FROM fires WHERE state = 'acquired' \
     AND concurrency_key IN ({json_texts_1}) GROUP BY concurrency_key) r ON r.ck = k.flow_key \
     WHERE k.flow_key IN ({json_texts_1})) AS TEXT)",
);
static FIRES_SUPERSEDE: Sql = Sql::new(
    "UPDATE fires SET cancel_requested = $1 WHERE job_key = $2 AND state = 'acquired' AND cancel_requested IS NULL \
     RETURNING fire_id",
);
static CANCEL_REQUESTS: Sql = Sql::new(
    "SELECT fire_id, cancel_requested FROM fires WHERE node_id = $1 AND cancel_requested IS NOT NULL AND state = 'acquired'",
);
// The fires are read once each way (no index by key: see migration 0023).
static FLOW_KEYS_IDLE: Sql = Sql::new(
    "DELETE FROM flow_keys WHERE updated_ms < {now} - $1 \
     AND flow_key NOT IN (SELECT concurrency_key FROM fires WHERE concurrency_key IS NOT NULL) \
     AND flow_key NOT IN (SELECT rate_key FROM fires WHERE rate_key IS NOT NULL)",
);
static FLOW_STARTS_SET: Sql = Sql::new("UPDATE flow_keys SET starts = v.column2, updated_ms = ");
static NEXT_DUE: Sql = Sql::new(
    "SELECT MIN(t) AS next FROM (SELECT MIN(next_fire_ms) AS t FROM triggers WHERE state = 'WAITING' \
     UNION ALL SELECT MIN(due_ms) AS t FROM fires WHERE state = 'scheduled') x",
);

static HELD_DELETE: Sql = Sql::new(
    "DELETE FROM held_claims WHERE trigger_key = $1 AND fire_id = $2 AND node_id = $3 AND fencing = $4",
);
static CLAIM_DELETE: Sql = Sql::new(
    "DELETE FROM fires WHERE fire_id = $1 AND node_id = $2 AND fencing = $3 AND state = 'acquired'",
);
static FIRE_RETRY: Sql = Sql::new(
    "UPDATE fires SET state = 'scheduled', attempt = attempt + 1, due_ms = $1, node_id = NULL, lease_until_ms = NULL, \
     recovering = 0, started = 0 WHERE fire_id = $2 AND node_id = $3 AND fencing = $4 AND state = 'acquired'",
);
static FIRE_RELEASE: Sql = Sql::new(
    "UPDATE fires SET state = 'scheduled', node_id = NULL, lease_until_ms = NULL, started = 0 \
     WHERE fire_id = $1 AND node_id = $2 AND fencing = $3 AND state = 'acquired'",
);
static JOB_DATA_SET: Sql = Sql::new("UPDATE jobs SET data = $1 WHERE job_key = $2");
static LEASE_RENEW_FIRES: Sql = Sql::new("UPDATE fires SET lease_until_ms = {now} + ");
static LEASE_RENEW_HELD: Sql = Sql::new("UPDATE held_claims SET lease_until_ms = {now} + ");
static LEASE_LEFT_UNDER: Sql = Sql::new(" AND lease_until_ms < {now} + ");

// Held claims of a dead node, or whose lease ran out, first become `fires`
// rows of their node, recovered as every other claim.
static HELD_LOST: Sql = Sql::new(
    "SELECT trigger_key, fire_id, node_id, fencing FROM held_claims WHERE lease_until_ms < $1 \
     OR node_id IN (SELECT node_id FROM nodes WHERE heartbeat_ms < $1 - $2 AND node_id <> $3){skip_locked}",
);
static CLAIMS_LOST: Sql = Sql::new(
    "SELECT f.fire_id, f.trigger_key, f.job_key, f.scheduled_ms, f.attempt, f.node_id, f.started, \
     COALESCE((SELECT j.requests_recovery FROM jobs j WHERE j.job_key = f.job_key), 0) AS requests_recovery \
     FROM fires f WHERE f.state = 'acquired' AND (f.lease_until_ms < $1 \
     OR f.node_id IN (SELECT node_id FROM nodes WHERE heartbeat_ms < $1 - $2 AND node_id <> $3)){skip_locked}",
);
static FIRE_UNCLAIM: Sql = Sql::new(
    "UPDATE fires SET state = 'scheduled', node_id = NULL, lease_until_ms = NULL WHERE fire_id = $1",
);
static LOCKS_OF_RUN_RELEASE: Sql =
    Sql::new("UPDATE cluster_locks SET holder = NULL, lease_until_ms = NULL WHERE holder = $1");
static FIRE_REQUEUE_RECOVERING: Sql = Sql::new(
    "UPDATE fires SET state = 'scheduled', recovering = 1, node_id = NULL, lease_until_ms = NULL, due_ms = $1 \
     WHERE fire_id = $2",
);
static FIRE_DELETE: Sql = Sql::new("DELETE FROM fires WHERE fire_id = $1");
static FIRE_LIST: Sql = Sql::new(
    "SELECT fire_id, trigger_key, job_key, scheduled_ms, due_ms, attempt, recovering, fencing, event_id, depth, \
     CAST(0 AS BIGINT) AS held, origin FROM fires \
     UNION ALL SELECT fire_id, trigger_key, job_key, scheduled_ms, scheduled_ms, 1, 0, fencing, '', 0, CAST(1 AS BIGINT), '' \
     FROM held_claims ORDER BY 5",
);
static HISTORY_LIST: Sql = Sql::new(
    "SELECT {history_columns} FROM task_history WHERE ($1 IS NULL OR job_key = $1) AND ($2 IS NULL OR status = $2) \
     AND ($3 IS NULL OR started_ms < $3) ORDER BY started_ms DESC, id DESC LIMIT $4",
);
static HISTORY_COUNT: Sql = Sql::new(
    "SELECT COUNT(*) FROM task_history WHERE ($1 IS NULL OR job_key = $1) AND ($2 IS NULL OR status = $2)",
);
static HISTORY_COUNTS: Sql = Sql::new(
    "SELECT (started_ms - $1) / $2 AS b, status, COUNT(*) AS n FROM task_history \
     WHERE started_ms >= $1 AND started_ms < $3 GROUP BY (started_ms - $1) / $2, status",
);
// Nearest-rank percentiles: the row ranked ceil(p * n) within its bucket.
// First attempts only: a retry starts late by its backoff, on purpose.
static HISTORY_LAGS: Sql = Sql::new(
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
);
static HISTORY_AGED: Sql = Sql::new("DELETE FROM task_history WHERE started_ms < {now} - $1");
static HISTORY_OVER: Sql = Sql::new(
    "DELETE FROM task_history WHERE id IN (SELECT id FROM task_history ORDER BY started_ms DESC, id DESC {rows_after})",
);
// Insert, or take over a released or expired lock; a live holder makes the
// statement change nothing and return no row. Released rows are deleted, so
// a new row's token must start above every token the name ever had (see
// migration 0010): PostgreSQL takes tokens from a sequence, SQLite from the
// `''` row that keeps the highest token deleted.
static LOCK_TRY_POSTGRES: Sql = Sql::new(
    "INSERT INTO cluster_locks (name, holder, token, acquired_ms, lease_until_ms) \
     VALUES ($1, $2, nextval('cluster_lock_tokens'), {now}, {now} + $3) \
     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, token = nextval('cluster_lock_tokens'), \
     acquired_ms = excluded.acquired_ms, lease_until_ms = excluded.lease_until_ms \
     WHERE cluster_locks.holder IS NULL OR cluster_locks.lease_until_ms < excluded.acquired_ms \
     RETURNING token",
);
static LOCK_TRY_SQLITE: Sql = Sql::new(
    "INSERT INTO cluster_locks (name, holder, token, acquired_ms, lease_until_ms) \
     VALUES ($1, $2, COALESCE((SELECT token FROM cluster_locks WHERE name = ''), 0) + 1, {now}, {now} + $3) \
     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, token = cluster_locks.token + 1, \
     acquired_ms = excluded.acquired_ms, lease_until_ms = excluded.lease_until_ms \
     WHERE cluster_locks.holder IS NULL OR cluster_locks.lease_until_ms < excluded.acquired_ms \
     RETURNING token",
);
static LOCK_RENEW: Sql = Sql::new(
    "UPDATE cluster_locks SET lease_until_ms = {now} + $1 WHERE name = $2 AND token = $3 AND holder IS NOT NULL",
);
// A released lock leaves no row behind: a run taking a million names must not
// leave a million rows.
static LOCK_RELEASE: Sql = Sql::new(
    "DELETE FROM cluster_locks WHERE name = $1 AND token = $2 AND holder IS NOT NULL AND name <> ''",
);
static LOCK_TOKEN_KEEP: Sql = Sql::new(
    "INSERT INTO cluster_locks (name, holder, token) VALUES ('', NULL, $1) \
     ON CONFLICT (name) DO UPDATE SET token = CASE WHEN cluster_locks.token < excluded.token \
     THEN excluded.token ELSE cluster_locks.token END",
);
static LOCK_LIST: Sql = Sql::new(
    "SELECT name, holder, token, acquired_ms, lease_until_ms FROM cluster_locks \
     WHERE holder IS NOT NULL AND lease_until_ms >= {now} ORDER BY name",
);
static NODE_LIST: Sql = Sql::new(
    "SELECT n.node_id, n.started_ms, n.heartbeat_ms, n.version, n.wit_versions, n.wit_lo, n.wit_hi, n.modules, \
     (SELECT COUNT(*) FROM fires f WHERE f.node_id = n.node_id AND f.state = 'acquired') \
     + (SELECT COUNT(*) FROM held_claims h WHERE h.node_id = n.node_id) AS running, \
     CASE WHEN n.heartbeat_ms >= {now} - $1 THEN 1 ELSE 0 END AS alive \
     FROM nodes n ORDER BY n.node_id",
);
static NODE_HEARTBEAT: Sql = Sql::new(
    "INSERT INTO nodes (node_id, started_ms, heartbeat_ms, version, wit_versions, wit_lo, wit_hi, modules) \
     VALUES ($1, {now}, {now}, $2, $3, $4, $5, $6) \
     ON CONFLICT (node_id) DO UPDATE SET heartbeat_ms = excluded.heartbeat_ms, version = excluded.version, \
     wit_versions = excluded.wit_versions, wit_lo = excluded.wit_lo, wit_hi = excluded.wit_hi, modules = excluded.modules",
);
static NODE_RESTART: Sql = Sql::new("UPDATE nodes SET heartbeat_ms = 0 WHERE node_id = $1");
// Fires due now whose job's module no live node can run.
static UNRUNNABLE_ANY: Sql = Sql::new(
    "SELECT 1 FROM fires f WHERE f.state = 'scheduled' AND f.due_ms <= $1 AND f.job_key IN ({unrunnable_jobs}) LIMIT 1",
);
static UNRUNNABLE: Sql = Sql::new(
    "SELECT f.fire_id, f.trigger_key, f.job_key, f.scheduled_ms, f.attempt, \
     (SELECT j.module FROM jobs j WHERE j.job_key = f.job_key) AS module, \
     (SELECT j.wit_need FROM jobs j WHERE j.job_key = f.job_key) AS wit_need \
     FROM fires f WHERE f.state = 'scheduled' AND f.due_ms <= $1 AND f.job_key IN ({unrunnable_jobs}) \
     ORDER BY f.due_ms LIMIT 500{skip_locked}",
);
static FIRE_DELETE_WAITING: Sql =
    Sql::new("DELETE FROM fires WHERE fire_id = $1 AND state = 'scheduled'");

/// Moves the claim `trigger_key` holds for `fire_id`, if `node_id` still holds
/// it under `fencing`, to an `acquired` `fires` row of that node (same id,
/// fencing and lease); returns whether it did. A retry, release or recovery of
/// the fire is then what it is for any `fires` row.
static UNHOLD_MOVE: Sql = Sql::new(
    "INSERT INTO fires (fire_id, trigger_key, job_key, scheduled_ms, due_ms, priority, attempt, state, recovering, \
     fencing, node_id, lease_until_ms, started) \
     SELECT fire_id, trigger_key, job_key, scheduled_ms, scheduled_ms, priority, 1, 'acquired', 0, fencing, node_id, \
     lease_until_ms, started FROM held_claims WHERE trigger_key = $1 AND fire_id = $2 AND node_id = $3 AND fencing = $4",
);
static UNHOLD_DELETE: Sql = Sql::new("DELETE FROM held_claims WHERE trigger_key = $1");

async fn unhold<DB: Db>(
    tx: &mut sqlx::Transaction<'_, DB>,
    trigger_key: &str,
    fire_id: &str,
    node_id: &str,
    fencing: i64,
) -> Result<bool, StoreError>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
{
    let moved = sqlx::query(UNHOLD_MOVE.on(DB::DIALECT))
        .bind(trigger_key)
        .bind(fire_id)
        .bind(node_id)
        .bind(fencing)
        .execute(&mut **tx)
        .await?;
    let moved = DB::rows_affected(&moved) == 1;
    if moved {
        sqlx::query(UNHOLD_DELETE.on(DB::DIALECT))
            .bind(trigger_key)
            .execute(&mut **tx)
            .await?;
    }
    Ok(moved)
}

/// A claim's read of `n` waiting fires as its two windows (see
/// `WAITING_FIRES`): the oldest and the newest, a quarter of them (at least
/// one), so the read is no larger than it was with one window.
fn windows(n: i64) -> (i64, i64) {
    let newest = (n / 4).max(1);
    ((n - newest).max(1), newest)
}

/// Reads, under locks, what the policies of `candidates` decide on (see
/// `claim::Guards`), for the guarded jobs and flow keys `guards` has not
/// seen yet: each job's and key's row is locked (`SKIP LOCKED`: those another
/// node holds are left out), then the running fires of the locked jobs and
/// concurrency keys are counted and the locked rate keys' starts read.
async fn lock_guards<DB: Db>(
    tx: &mut sqlx::Transaction<'_, DB>,
    candidates: &[claim::Waiting],
    reach: usize,
    jobs: &HashMap<String, JobDef>,
    guards: &mut claim::Guards,
    now: i64,
) -> Result<(), StoreError>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
{
    // `forbid`, `skip`, `buffer-one` and `cancel-other` decide on whether the
    // job is running.
    // Two nodes claiming at once would each see it idle (neither sees the
    // other's uncommitted claim), so the job's row is locked first and its
    // running fires counted after: a job another node is claiming right now
    // is left for the next round.
    let guarded: Vec<String> = claim::guarded_jobs(candidates, jobs)
        .into_iter()
        .filter(|k| guards.seen_jobs.insert(k.clone()))
        .collect();
    for chunk in guarded.chunks(200) {
        let mut qb = QueryBuilder::<DB>::new("SELECT job_key FROM jobs WHERE job_key IN (");
        push_list(&mut qb, chunk.iter().cloned());
        qb.push(") ORDER BY job_key");
        qb.push(SKIP_LOCKED.on(DB::DIALECT));
        let locked: Vec<String> = qb.build_query_scalar().fetch_all(&mut **tx).await?;
        guards
            .running
            .extend(locked.into_iter().map(|key| (key, false)));
        // Running: a claimed `fires` row or a held claim (the job allowed
        // overlap when it was claimed).
        let mut qb = QueryBuilder::<DB>::new(
            "SELECT job_key FROM fires WHERE state = 'acquired' AND job_key IN (",
        );
        push_list(&mut qb, chunk.iter().cloned());
        qb.push(") UNION SELECT job_key FROM held_claims WHERE job_key IN (");
        push_list(&mut qb, chunk.iter().cloned());
        qb.push(")");
        let busy: Vec<String> = qb.build_query_scalar().fetch_all(&mut **tx).await?;
        for key in busy {
            if let Some(running) = guards.running.get_mut(&key) {
                *running = true;
            }
        }
    }
    // Flow keys: the same, on their `flow_keys` rows. A key not locked has
    // no row yet or another node holds it: rows are created for those
    // (`ON CONFLICT DO NOTHING` leaves a held one alone) and locked again.
    let keys: Vec<String> = claim::flow_keys(&candidates[..reach])
        .into_iter()
        .filter(|k| guards.seen_keys.insert(k.clone()))
        .collect();
    if keys.is_empty() {
        return Ok(());
    }
    let list = |keys: &[String]| serde_json::Value::from(keys.to_vec()).to_string();
    let lock = match DB::DIALECT {
        Dialect::Sqlite => &FLOW_LOCK_COUNTED,
        Dialect::Postgres => &FLOW_LOCK,
    };
    let mut rows = flow_rows(tx, lock, list(&keys)).await?;
    if rows.len() < keys.len() {
        let got: HashSet<&str> = rows.iter().map(|(k, _, _)| k.as_str()).collect();
        let rest: Vec<String> = keys
            .iter()
            .filter(|k| !got.contains(k.as_str()))
            .cloned()
            .collect();
        sqlx::query(FLOW_CREATE.on(DB::DIALECT))
            .bind(list(&rest))
            .bind(now)
            .execute(&mut **tx)
            .await?;
        rows.extend(flow_rows(tx, lock, list(&rest)).await?);
    }
    for (key, starts, running) in rows {
        let starts: Vec<i64> = serde_json::from_str(&starts).unwrap_or_default();
        if !starts.is_empty() {
            guards.starts.insert(key.clone(), starts);
        }
        if running > 0 {
            guards
                .key_running
                .insert(key.clone(), u32::try_from(running).unwrap_or(u32::MAX));
        }
        guards.locked.insert(key);
    }
    Ok(())
}

/// The `flow_keys` rows of `keys` (a JSON array) that `lock` locks, as
/// `(key, starts, running fires)`.
async fn flow_rows<DB: Db>(
    tx: &mut sqlx::Transaction<'_, DB>,
    lock: &'static Sql,
    keys: String,
) -> Result<Vec<(String, String, i64)>, StoreError>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
{
    let text: Option<String> = sqlx::query_scalar(lock.on(DB::DIALECT))
        .bind(keys)
        .fetch_one(&mut **tx)
        .await?;
    json_rows(text, "flow key")
}

/// Loads the jobs of `keys` not yet in `map` into it, each once, 200 per
/// statement, each statement's rows as one (see [`json_rows`]).
async fn load_jobs<DB: Db>(
    tx: &mut sqlx::Transaction<'_, DB>,
    keys: impl Iterator<Item = String>,
    map: &mut HashMap<String, JobDef>,
) -> Result<(), StoreError>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    usize: ColumnIndex<DB::Row>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
{
    let mut wanted: Vec<String> = Vec::new();
    let mut seen = HashSet::new();
    for key in keys {
        if !map.contains_key(&key) && seen.insert(key.clone()) {
            wanted.push(key);
        }
    }
    for chunk in wanted.chunks(200) {
        let mut qb = QueryBuilder::<DB>::new(LOAD_JOBS.on(DB::DIALECT));
        push_list(&mut qb, chunk.iter().cloned());
        qb.push(")");
        let text: Option<String> = qb.build_query_scalar().fetch_one(&mut **tx).await?;
        jobs_into(text, map)?;
    }
    Ok(())
}

/// Pushes `items` as bound values separated by commas (the inside of an `IN (...)`).
fn push_list<DB, T>(qb: &mut QueryBuilder<DB>, items: impl IntoIterator<Item = T>)
where
    DB: Db,
    for<'q> T: Encode<'q, DB> + Type<DB>,
{
    let mut list = qb.separated(", ");
    for item in items {
        list.push_bind(item);
    }
}

/// Inserts history rows, 200 per statement.
pub(crate) async fn insert_history<DB, H>(
    tx: &mut sqlx::Transaction<'_, DB>,
    rows: &[H],
) -> Result<(), StoreError>
where
    DB: Db,
    H: std::borrow::Borrow<HistoryEntry> + Sync,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB>,
    for<'q> Option<String>: Encode<'q, DB>,
{
    for chunk in rows.chunks(200) {
        let mut qb = QueryBuilder::<DB>::new(
            "INSERT INTO task_history (id, fire_id, job_key, trigger_key, status, attempt, node_id, \
             scheduled_ms, started_ms, ended_ms, duration_ms, details) ",
        );
        qb.push_values(chunk, |mut b, h| {
            let h: &HistoryEntry = h.borrow();
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
        qb.build().execute(&mut **tx).await?;
    }
    Ok(())
}

fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait]
impl<S, DB> Scheduling for S
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
    for<'q> Vec<u8>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB>,
    for<'q> Option<String>: Encode<'q, DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
{
    async fn now_ms(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(CLOCK.on(DB::DIALECT))
            .fetch_one(self.pool())
            .await?)
    }

    async fn jobs_put(&self, jobs: &[(JobDef, Vec<TriggerPut>)]) -> Result<(), StoreError> {
        // The last declaration of a key wins, as if put one by one.
        let mut latest: HashMap<&str, usize> = HashMap::new();
        for (i, (job, _)) in jobs.iter().enumerate() {
            latest.insert(job.job_key.as_str(), i);
        }
        let jobs: Vec<&(JobDef, Vec<TriggerPut>)> = jobs
            .iter()
            .enumerate()
            .filter(|(i, (j, _))| latest.get(j.job_key.as_str()) == Some(i))
            .map(|(_, j)| j)
            .collect();
        let _writer = writer(self).await;
        let mut tx = self.pool().begin_with(DB::DIALECT.begin_write()).await?;
        let now: i64 = sqlx::query_scalar(CLOCK.on(DB::DIALECT))
            .fetch_one(&mut *tx)
            .await?;
        // Read once, when a trigger names a calendar.
        let mut calendar_set: Option<crate::schedule::calendar::CalendarSet> = None;
        for chunk in jobs.chunks(500) {
            let mut qb = QueryBuilder::<DB>::new(JOBS_INSERT.on(DB::DIALECT));
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
                    .push_bind(big(job.retry.initial_ms))
                    .push_bind(big(job.retry.max_ms))
                    .push_bind(job.retry.jitter)
                    .push_bind(big(job.timeout_ms))
                    .push_bind(big(job.max_memory))
                    .push_bind(i64::from(job.requests_recovery))
                    .push_bind(job.priority)
                    .push_bind(i64::from(job.paused))
                    .push_bind(job.source.clone())
                    .push_bind(job.kv_max_keys.map(big))
                    .push_bind(job.kv_max_bytes.map(big))
                    .push_bind(job.grants.clone())
                    .push_bind(job.pause.note.clone())
                    .push_bind(job.pause.until_ms)
                    .push_bind(job.pause_on_failure.map(i64::from))
                    .push_bind(job.flow.to_column())
                    .push_bind(now)
                    .push_bind(now);
            });
            qb.push(JOBS_UPSERT.on(DB::DIALECT));
            qb.build().execute(&mut *tx).await?;

            let keys = || chunk.iter().map(|(job, _)| job.job_key.clone());
            let mut qb = QueryBuilder::<DB>::new(WIT_NEED_OF_JOBS.on(DB::DIALECT));
            push_list(&mut qb, keys());
            qb.push(")");
            qb.build().execute(&mut *tx).await?;

            let mut qb = QueryBuilder::<DB>::new(TRIGGERS_OF_JOBS.on(DB::DIALECT));
            push_list(&mut qb, keys());
            qb.push(")");
            let existing: Vec<TriggerRow> = qb
                .build_query_as::<TriggerColumns>()
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .map(TriggerColumns::into_row)
                .collect::<Result<_, _>>()?;
            let wanted: HashSet<&str> = chunk
                .iter()
                .flat_map(|(_, ts)| ts.iter().map(|t| t.trigger_key.as_str()))
                .collect();
            let removed: Vec<&str> = existing
                .iter()
                .map(|t| t.trigger_key.as_str())
                .filter(|k| !wanted.contains(k))
                .collect();
            for keys in removed.chunks(500) {
                let mut qb = QueryBuilder::<DB>::new("DELETE FROM triggers WHERE trigger_key IN (");
                push_list(&mut qb, keys.iter().map(|k| k.to_string()));
                qb.push(")");
                qb.build().execute(&mut *tx).await?;
            }
            let mut rows = Vec::new();
            let with_calendars = chunk
                .iter()
                .any(|(_, ts)| ts.iter().any(|t| !t.spec.calendars.is_empty()));
            if with_calendars && calendar_set.is_none() {
                let texts: Vec<String> =
                    sqlx::query_scalar(super::calendars::CALENDAR_DEFINITIONS.on(DB::DIALECT))
                        .fetch_all(&mut *tx)
                        .await?;
                calendar_set = Some(super::calendars::calendar_set(texts)?);
            }
            let calendars = calendar_set.clone().unwrap_or_default();
            for (_, triggers) in chunk {
                for t in triggers {
                    let unchanged = existing.iter().any(|old| {
                        old.trigger_key == t.trigger_key
                            && old.spec.is_declared_by(&t.spec)
                            && old.priority == t.priority
                    });
                    if unchanged {
                        continue; // keeps its state and next fire
                    }
                    let mut spec = t.spec.clone();
                    if matches!(spec.kind, TriggerKind::Every { .. }) && spec.start_ms.is_none() {
                        // An interval counts from when it was declared.
                        spec.start_ms = Some(now);
                    }
                    // A trigger naming a calendar that is not stored is refused
                    // (the job with it): it would otherwise fire on days it
                    // was meant not to.
                    let exclusion =
                        super::calendars::exclusion_of(&spec, &calendars).map_err(|e| {
                            StoreError::Conflict(format!("trigger {}: {e}", t.trigger_key))
                        })?;
                    let (state, next, error) =
                        match spec.first_due_excluding(now, exclusion.as_deref()) {
                            Ok(Some(next)) => ("WAITING", Some(next), None),
                            Ok(None)
                                if matches!(
                                    spec.kind,
                                    TriggerKind::OnStart
                                        | TriggerKind::Once
                                        | TriggerKind::Event { .. }
                                ) =>
                            {
                                ("WAITING", None, None)
                            }
                            Ok(None) => ("COMPLETE", None, None),
                            Err(e) => ("ERROR", None, Some(e.to_string())),
                        };
                    rows.push((t, ScheduleColumns::from_spec(&spec), state, next, error));
                }
            }
            for part in rows.chunks(500) {
                let mut qb = QueryBuilder::<DB>::new(TRIGGERS_INSERT.on(DB::DIALECT));
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
                        .push_bind(c.jitter_ms)
                        .push_bind(c.calendars.clone())
                        .push_bind(now);
                });
                qb.push(TRIGGERS_UPSERT.on(DB::DIALECT));
                qb.build().execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn job_get(&self, job_key: &str) -> Result<Option<JobDef>, StoreError> {
        let row: Option<JobColumns> = sqlx::query_as(JOB_GET.on(DB::DIALECT))
            .bind(job_key)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(JobColumns::into_job))
    }

    async fn job_list(&self) -> Result<Vec<JobDef>, StoreError> {
        let rows: Vec<JobColumns> = sqlx::query_as(JOB_LIST.on(DB::DIALECT))
            .fetch_all(self.pool())
            .await?;
        Ok(rows.into_iter().map(JobColumns::into_job).collect())
    }

    async fn job_delete(&self, job_key: &str) -> Result<bool, StoreError> {
        let _writer = writer(self).await;
        let mut tx = self.pool().begin_with(DB::DIALECT.begin_write()).await?;
        for sql in [&JOB_DELETE_FIRES, &JOB_DELETE_TRIGGERS] {
            sqlx::query(sql.on(DB::DIALECT))
                .bind(job_key)
                .execute(&mut *tx)
                .await?;
        }
        let done = sqlx::query(JOB_DELETE.on(DB::DIALECT))
            .bind(job_key)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    async fn job_pause(
        &self,
        job_key: &str,
        paused: bool,
        note: &PauseNote,
    ) -> Result<bool, StoreError> {
        let _writer = writer(self).await;
        let done = sqlx::query(JOB_PAUSE.on(DB::DIALECT))
            .bind(i64::from(paused))
            .bind(job_key)
            .bind(note.note.clone().filter(|_| paused))
            .bind(note.until_ms.filter(|_| paused))
            .execute(self.pool())
            .await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    async fn job_pause_if_active(&self, job_key: &str, note: &str) -> Result<bool, StoreError> {
        let _writer = writer(self).await;
        let done = sqlx::query(JOB_PAUSE_IF_ACTIVE.on(DB::DIALECT))
            .bind(job_key)
            .bind(note)
            .execute(self.pool())
            .await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    async fn jobs_resume_due(&self) -> Result<Vec<String>, StoreError> {
        let any: Option<i64> = sqlx::query_scalar(JOBS_RESUME_ANY.on(DB::DIALECT))
            .fetch_optional(self.pool())
            .await?;
        if any.is_none() {
            return Ok(Vec::new());
        }
        let _writer = writer(self).await;
        Ok(sqlx::query_scalar(JOBS_RESUME_DUE.on(DB::DIALECT))
            .fetch_all(self.pool())
            .await?)
    }

    async fn group_pause(
        &self,
        group: &str,
        paused: bool,
        note: &PauseNote,
    ) -> Result<u64, StoreError> {
        let _writer = writer(self).await;
        let done = sqlx::query(GROUP_PAUSE.on(DB::DIALECT))
            .bind(i64::from(paused))
            .bind(group)
            .bind(note.note.clone().filter(|_| paused))
            .bind(note.until_ms.filter(|_| paused))
            .execute(self.pool())
            .await?;
        Ok(DB::rows_affected(&done))
    }

    async fn trigger_list(&self, job_key: Option<&str>) -> Result<Vec<TriggerRow>, StoreError> {
        let rows: Vec<TriggerColumns> = sqlx::query_as(TRIGGER_LIST.on(DB::DIALECT))
            .bind(job_key)
            .fetch_all(self.pool())
            .await?;
        rows.into_iter().map(TriggerColumns::into_row).collect()
    }

    async fn trigger_pause(&self, trigger_key: &str, paused: bool) -> Result<bool, StoreError> {
        let _writer = writer(self).await;
        let (from, to) = if paused {
            ("WAITING", "PAUSED")
        } else {
            ("PAUSED", "WAITING")
        };
        let done = sqlx::query(TRIGGER_PAUSE.on(DB::DIALECT))
            .bind(to)
            .bind(trigger_key)
            .bind(from)
            .execute(self.pool())
            .await?;
        if DB::rows_affected(&done) > 0 {
            return Ok(true);
        }
        let exists = sqlx::query(TRIGGER_EXISTS.on(DB::DIALECT))
            .bind(trigger_key)
            .fetch_optional(self.pool())
            .await?;
        Ok(exists.is_some())
    }

    async fn trigger_reset_errors(&self) -> Result<u64, StoreError> {
        let _writer = writer(self).await;
        let done = sqlx::query(TRIGGER_RESET_ERRORS.on(DB::DIALECT))
            .execute(self.pool())
            .await?;
        Ok(DB::rows_affected(&done))
    }

    async fn fire_now(&self, job_key: &str) -> Result<String, StoreError> {
        let _writer = writer(self).await;
        let id = new_id();
        // A job with flow control: its keys are rendered here (a manual fire
        // has no event; its trigger is `JOB:manual`).
        let (concurrency_key, rate_key) = match self.job_get(job_key).await? {
            Some(job) => job.flow_keys(&format!("{job_key}:manual"), None),
            None => (None, None),
        };
        let done = sqlx::query(FIRE_NOW.on(DB::DIALECT))
            .bind(&id)
            .bind(job_key)
            .bind(concurrency_key)
            .bind(rate_key)
            .execute(self.pool())
            .await?;
        if DB::rows_affected(&done) == 0 {
            return Err(StoreError::NotFound(format!("no job {job_key:?}")));
        }
        Ok(id)
    }

    async fn fire_startup(&self) -> Result<u64, StoreError> {
        let _writer = writer(self).await;
        let mut tx = self.pool().begin_with(DB::DIALECT.begin_write()).await?;
        let now: i64 = sqlx::query_scalar(CLOCK.on(DB::DIALECT))
            .fetch_one(&mut *tx)
            .await?;
        type Row = (String, String, String, i64, String, String, Option<String>);
        let rows: Vec<Row> = sqlx::query_as(STARTUP_TRIGGERS.on(DB::DIALECT))
            .fetch_all(&mut *tx)
            .await?;
        let mut created = 0;
        for (trigger_key, job_key, kind, priority, module, data, flow) in rows {
            if kind == "once" {
                let first = sqlx::query(ONCE_RUN.on(DB::DIALECT))
                    .bind(&job_key)
                    .bind(&module)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                if DB::rows_affected(&first) == 0 {
                    continue;
                }
            }
            let keys = Flow::from_column(flow.as_deref()).keys(&crate::domain::flow::KeyInput {
                job_key: &job_key,
                trigger_key: &trigger_key,
                data: &data,
                event: None,
            });
            let done = sqlx::query(STARTUP_FIRE.on(DB::DIALECT))
                .bind(new_id())
                .bind(&trigger_key)
                .bind(&job_key)
                .bind(now)
                .bind(priority)
                .bind(keys.0)
                .bind(keys.1)
                .execute(&mut *tx)
                .await?;
            created += DB::rows_affected(&done);
        }
        tx.commit().await?;
        Ok(created)
    }

    async fn fire_acquire(&self, p: &AcquireParams) -> Result<Acquired, StoreError> {
        let _writer = writer(self).await;
        let mut tx = self.pool().begin_with(DB::DIALECT.begin_write()).await?;
        let now: i64 = sqlx::query_scalar(CLOCK.on(DB::DIALECT))
            .fetch_one(&mut *tx)
            .await?;
        let horizon = now + p.lookahead_ms;
        let limit = i64::try_from(p.max.max(1)).unwrap_or(1000);
        let mut out = Acquired {
            now_ms: now,
            ..Acquired::default()
        };

        // 1. Due triggers become fires (see `claim::plan_due`).
        let (due, due_jobs, calendars): (Option<String>, Option<String>, Option<String>) =
            sqlx::query_as(DUE_TRIGGERS.on(DB::DIALECT))
                .bind(horizon)
                .bind(limit)
                .bind((limit / 4).max(1))
                .fetch_one(&mut *tx)
                .await?;
        let due: Vec<(TriggerColumns, Option<i64>, Option<i64>, i64)> =
            json_rows(due, "due trigger")?;
        let calendars = super::calendars::calendar_set(json_rows(calendars, "calendar")?)?;
        // A trigger whose calendars cannot be resolved goes to ERROR with why.
        let mut calendar_errors: Vec<(String, String)> = Vec::new();
        let due = due
            .into_iter()
            .filter_map(|(t, wit_need, held_ms, taken)| {
                let trigger = match t.into_row() {
                    Ok(t) => t,
                    Err(e) => return Some(Err(e)),
                };
                let exclusion = super::calendars::exclusion_of(&trigger.spec, &calendars)
                    .map_err(|e| calendar_errors.push((trigger.trigger_key.clone(), e)))
                    .ok()?;
                Some(Ok(claim::DueTrigger {
                    trigger,
                    wit_need,
                    held_ms,
                    taken: taken != 0,
                    exclusion,
                }))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        // The claim's `limit`, taken round-robin by job from both windows:
        // the rest stay due for the next claim, untouched.
        let mut due = claim::interleave_jobs(due, |d| claim::group_of(&d.trigger.job_key, None));
        due.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let mut jobs: HashMap<String, JobDef> = HashMap::new();
        jobs_into(due_jobs, &mut jobs)?;
        // Each job's share of the node: fires of a job without room left stay
        // queued (see `JobRoom`).
        let mut room = p.room.clone();
        let plan = claim::plan_due(due, &jobs, p, &mut room, now);
        out.deferred = plan.deferred.into_iter().collect();
        let mut history = plan.history;
        out.misfired = plan.misfired;
        for (trigger_key, error) in calendar_errors.iter().chain(&plan.errors) {
            sqlx::query(TRIGGER_ERROR.on(DB::DIALECT))
                .bind(error)
                .bind(now)
                .bind(trigger_key)
                .execute(&mut *tx)
                .await?;
        }
        for chunk in plan.moved.chunks(200) {
            let mut qb = QueryBuilder::<DB>::new(TRIGGERS_MOVE.on(DB::DIALECT));
            qb.push_bind(now);
            qb.push(" FROM (");
            qb.push_values(chunk, |mut b, (key, next)| {
                b.push_bind(key.clone()).push_bind(*next);
            });
            qb.push(") AS v WHERE triggers.trigger_key = v.column1");
            qb.build().execute(&mut *tx).await?;
        }
        for chunk in plan.completed.chunks(200) {
            let mut qb = QueryBuilder::<DB>::new(TRIGGERS_COMPLETE.on(DB::DIALECT));
            qb.push_bind(now);
            qb.push(" WHERE trigger_key IN (");
            push_list(&mut qb, chunk.iter().cloned());
            qb.push(")");
            qb.build().execute(&mut *tx).await?;
        }
        for chunk in plan.held.chunks(200) {
            let mut qb = QueryBuilder::<DB>::new(HELD_INSERT.on(DB::DIALECT));
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
        out.fires
            .extend(plan.held.into_iter().map(|(claim, _)| claim));
        for (batch, claim) in [(&plan.claimed, true), (&plan.queued, false)] {
            for chunk in batch.chunks(200) {
                let ids: Vec<String> = chunk.iter().map(|_| new_id()).collect();
                let mut qb = QueryBuilder::<DB>::new(FIRES_INSERT.on(DB::DIALECT));
                qb.push_values(chunk.iter().zip(&ids), |mut b, (f, id)| {
                    b.push_bind(id.clone())
                        .push_bind(f.trigger_key.clone())
                        .push_bind(f.job_key.clone())
                        .push_bind(f.scheduled_ms)
                        .push_bind(f.due_ms)
                        .push_bind(f.priority)
                        .push_bind(1i64)
                        .push_bind(if claim { "acquired" } else { "scheduled" })
                        .push_bind(0i64)
                        .push_bind(i64::from(claim))
                        .push_bind(claim.then(|| p.node_id.clone()))
                        .push_bind(claim.then_some(now + p.lease_ms))
                        // Marked as the claim's other rows are: the node will
                        // not mark it again (see `AcquireParams::started`).
                        .push_bind(i64::from(claim && p.started))
                        .push_bind(f.concurrency_key.clone())
                        .push_bind(f.rate_key.clone());
                });
                // A fire that exists already (same trigger and time) is not
                // created twice: the store makes a double fire impossible.
                qb.push(" ON CONFLICT DO NOTHING");
                let created = DB::rows_affected(&qb.build().execute(&mut *tx).await?);
                if !claim {
                    continue;
                }
                let kept: Option<HashSet<String>> = if created == chunk.len() as u64 {
                    None
                } else {
                    let mut qb =
                        QueryBuilder::<DB>::new("SELECT fire_id FROM fires WHERE fire_id IN (");
                    push_list(&mut qb, ids.iter().cloned());
                    qb.push(")");
                    let kept: Vec<String> = qb.build_query_scalar().fetch_all(&mut *tx).await?;
                    Some(kept.into_iter().collect())
                };
                for (f, fire_id) in chunk.iter().zip(ids) {
                    if kept.as_ref().is_some_and(|kept| !kept.contains(&fire_id)) {
                        continue;
                    }
                    let Some(job) = jobs.get(&f.job_key) else {
                        continue;
                    };
                    out.fires.push(FireClaim::first(
                        fire_id,
                        &f.trigger_key,
                        job,
                        f.scheduled_ms,
                        false,
                    ));
                }
            }
        }

        // 2. Claim due fires, respecting each job's overlap policy and flow
        // control (see `claim::pick_waiting`).
        let budget = p.max.saturating_sub(out.fires.len());
        let window = i64::try_from(budget).unwrap_or(1).saturating_mul(4);
        let mut guards = claim::Guards::default();
        let mut picked = claim::Picked::default();
        // Jobs without room are left out of the read, or their queue could
        // fill the window and hide every other job's fires; so are, in a
        // second read, the keys the first found at their limit.
        let mut except_keys: Vec<String> = Vec::new();
        for round in 0..2 {
            let claimed_so_far = out.fires.len() + picked.claims.len();
            if claimed_so_far >= p.max {
                break;
            }
            let full = room.full();
            let candidates: Vec<claim::Waiting> = {
                let plain = full.is_empty() && except_keys.is_empty();
                let read = if plain {
                    &WAITING_FIRES
                } else {
                    &WAITING_FIRES_EXCEPT
                };
                let mut query = sqlx::query_as(read.on(DB::DIALECT))
                    .bind(horizon)
                    .bind(windows(window).0)
                    .bind(p.runs.lo)
                    .bind(p.runs.hi)
                    .bind(windows(window).1);
                if !plain {
                    query = query
                        .bind(serde_json::Value::from(full).to_string())
                        .bind(serde_json::Value::from(except_keys.clone()).to_string());
                }
                query.fetch_all(&mut *tx).await?
            };
            let filled = i64::try_from(candidates.len()).unwrap_or(i64::MAX) >= window;
            let candidates = claim::interleave_jobs(candidates, |c| {
                claim::group_of(&c.job_key, c.concurrency_key.as_deref())
            });
            load_jobs(
                &mut tx,
                candidates.iter().map(|c| c.job_key.clone()),
                &mut jobs,
            )
            .await?;
            // Keys are locked for the candidates the pick can reach (its
            // budget and a quarter more, for candidates it passes over): a
            // window of distinct keys would otherwise lock and count four
            // times the keys the claim can take. Candidates past the reach
            // wait for the next claim.
            let left = p.max - claimed_so_far;
            let reach = left.saturating_add(left / 4 + 1).min(candidates.len());
            lock_guards(&mut tx, &candidates, reach, &jobs, &mut guards, now).await?;
            // The claims so far (a second round adds the first one's).
            let joined: Vec<FireClaim>;
            let claimed: &[FireClaim] = if picked.claims.is_empty() {
                &out.fires
            } else {
                joined = out.fires.iter().chain(&picked.claims).cloned().collect();
                &joined
            };
            let more = claim::pick_waiting(
                candidates,
                &jobs,
                &mut guards,
                claimed,
                &mut room,
                p.max,
                now,
            );
            let blocked_new = more.blocked.iter().any(|k| !except_keys.contains(k));
            picked.absorb(more);
            // A window of fires that all wait for full keys hides the fires
            // behind it: read once more without those keys.
            if round == 1 || !filled || !blocked_new {
                break;
            }
            except_keys = picked.blocked.iter().cloned().collect();
            except_keys.sort();
        }
        out.rate_wait_until = picked.rate_wait_until;
        if !picked.starts.is_empty() {
            for chunk in picked.starts.chunks(200) {
                let mut qb = QueryBuilder::<DB>::new(FLOW_STARTS_SET.on(DB::DIALECT));
                qb.push_bind(now);
                qb.push(" FROM (");
                qb.push_values(chunk, |mut b, (key, starts)| {
                    b.push_bind(key.clone())
                        .push_bind(serde_json::Value::from(starts.clone()).to_string());
                });
                qb.push(") AS v WHERE flow_keys.flow_key = v.column1");
                qb.build().execute(&mut *tx).await?;
            }
        }
        for (job_key, by) in &picked.supersede {
            let marked: Vec<String> = sqlx::query_scalar(FIRES_SUPERSEDE.on(DB::DIALECT))
                .bind(by)
                .bind(job_key)
                .fetch_all(&mut *tx)
                .await?;
            out.superseded
                .extend(marked.into_iter().map(|fire_id| (fire_id, by.clone())));
        }
        if !out.superseded.is_empty() {
            super::common::notify(&mut tx, super::postgres::STOPS_ASKED).await?;
        }
        history.extend(picked.history);
        for chunk in picked.skipped.chunks(200) {
            let mut qb = QueryBuilder::<DB>::new("DELETE FROM fires WHERE fire_id IN (");
            push_list(&mut qb, chunk.iter().cloned());
            qb.push(")");
            qb.build().execute(&mut *tx).await?;
        }
        for chunk in picked.claims.chunks(200) {
            let mut qb = QueryBuilder::<DB>::new(
                "UPDATE fires SET state = 'acquired', fencing = fencing + 1, coalesce_key = NULL, node_id = ",
            );
            qb.push_bind(p.node_id.clone());
            qb.push(", lease_until_ms = ");
            qb.push_bind(now + p.lease_ms);
            qb.push(", started = ");
            qb.push_bind(i64::from(p.started));
            qb.push(" WHERE fire_id IN (");
            push_list(&mut qb, chunk.iter().map(|f| f.fire_id.clone()));
            qb.push(")");
            qb.build().execute(&mut *tx).await?;
        }
        out.fires.extend(picked.claims);
        out.recorded = history.len() as u64;
        out.skipped = history
            .iter()
            .filter(|h| h.status == HistoryStatus::Skipped)
            .count() as u64;
        insert_history(&mut tx, &history).await?;

        out.next_due_ms = sqlx::query_scalar(NEXT_DUE.on(DB::DIALECT))
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn fire_complete(&self, batch: &[Completion]) -> Result<Vec<bool>, StoreError> {
        let _writer = writer(self).await;
        // Finished fires are deleted many per statement (`fires` and
        // `held_claims` rows), only where the claim is still ours. Usually all
        // are, which the counts of deleted rows show without sending rows back;
        // when one was taken over, the transaction is rolled back and done
        // again one completion at a time, which says which are refused (the
        // same fire can end twice in one batch, under an old claim and a new).
        let finished = |held: bool| -> Vec<usize> {
            (0..batch.len())
                .filter(|&i| batch[i].next == FireNext::Done && batch[i].held == held)
                .collect()
        };
        let (as_rows, helds) = (finished(false), finished(true));
        let trigger_key = |c: &Completion| c.history.trigger_key.clone().unwrap_or_default();
        let mut precise = false;
        'attempt: loop {
            let mut tx = self.pool().begin_with(DB::DIALECT.begin_write()).await?;
            let mut accepted = vec![false; batch.len()];
            let mut history = Vec::new();
            if precise {
                for &i in as_rows.iter().chain(&helds) {
                    let c = &batch[i];
                    if c.held {
                        let cleared = sqlx::query(HELD_DELETE.on(DB::DIALECT))
                            .bind(trigger_key(c))
                            .bind(&c.fire_id)
                            .bind(&c.node_id)
                            .bind(c.fencing)
                            .execute(&mut *tx)
                            .await?;
                        if DB::rows_affected(&cleared) == 1 {
                            accepted[i] = true;
                            continue;
                        }
                    }
                    let gone = sqlx::query(CLAIM_DELETE.on(DB::DIALECT))
                        .bind(&c.fire_id)
                        .bind(&c.node_id)
                        .bind(c.fencing)
                        .execute(&mut *tx)
                        .await?;
                    accepted[i] = DB::rows_affected(&gone) == 1;
                }
            } else {
                for chunk in as_rows.chunks(200) {
                    let mut qb = QueryBuilder::<DB>::new(
                        "DELETE FROM fires WHERE state = 'acquired' AND (fire_id, node_id, fencing) IN (VALUES ",
                    );
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
                    let done = qb.build().execute(&mut *tx).await?;
                    if DB::rows_affected(&done) != chunk.len() as u64 {
                        tx.rollback().await?;
                        precise = true;
                        continue 'attempt;
                    }
                }
                // Held claims by key (each statement's completions come from one
                // node and fencing, as a batch does): a pair of a key and an id
                // from two different completions cannot match a row whose own
                // completion is not in the statement, so the count still says
                // whether every claim held.
                let mut claims: std::collections::BTreeMap<(&str, i64), Vec<usize>> =
                    std::collections::BTreeMap::new();
                for &i in &helds {
                    claims
                        .entry((batch[i].node_id.as_str(), batch[i].fencing))
                        .or_default()
                        .push(i);
                }
                for ((node_id, fencing), ids) in claims {
                    for chunk in ids.chunks(200) {
                        let mut qb =
                            QueryBuilder::<DB>::new("DELETE FROM held_claims WHERE node_id = ");
                        qb.push_bind(node_id.to_string());
                        qb.push(" AND fencing = ");
                        qb.push_bind(fencing);
                        qb.push(" AND trigger_key IN (");
                        push_list(&mut qb, chunk.iter().map(|&i| trigger_key(&batch[i])));
                        qb.push(") AND fire_id IN (");
                        push_list(&mut qb, chunk.iter().map(|&i| batch[i].fire_id.clone()));
                        qb.push(")");
                        let done = qb.build().execute(&mut *tx).await?;
                        if DB::rows_affected(&done) != chunk.len() as u64 {
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
                // A held fire to retry or release waits again as a `fires` row;
                // one no longer held (recovered since) is already one, where
                // the fencing refuses this claim.
                if c.held && c.next != FireNext::Done {
                    unhold(&mut tx, &trigger_key(c), &c.fire_id, &c.node_id, c.fencing).await?;
                }
                let done = match &c.next {
                    FireNext::Done => None,
                    FireNext::Retry { due_ms } => Some(
                        sqlx::query(FIRE_RETRY.on(DB::DIALECT))
                            .bind(*due_ms)
                            .bind(&c.fire_id)
                            .bind(&c.node_id)
                            .bind(c.fencing)
                            .execute(&mut *tx)
                            .await?,
                    ),
                    FireNext::Release | FireNext::Unclaim => Some(
                        sqlx::query(FIRE_RELEASE.on(DB::DIALECT))
                            .bind(&c.fire_id)
                            .bind(&c.node_id)
                            .bind(c.fencing)
                            .execute(&mut *tx)
                            .await?,
                    ),
                };
                if let Some(done) = done {
                    accepted[i] = DB::rows_affected(&done) == 1;
                }
                if !accepted[i] || c.next == FireNext::Unclaim {
                    continue;
                }
                if let Some(data) = &c.new_data {
                    sqlx::query(JOB_DATA_SET.on(DB::DIALECT))
                        .bind(data)
                        .bind(&c.history.job_key)
                        .execute(&mut *tx)
                        .await?;
                }
                history.push(&c.history);
            }
            insert_history(&mut tx, &history).await?;
            tx.commit().await?;
            return Ok(accepted);
        }
    }

    async fn fire_cancel_requests(
        &self,
        node_id: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        Ok(sqlx::query_as(CANCEL_REQUESTS.on(DB::DIALECT))
            .bind(node_id)
            .fetch_all(self.pool())
            .await?)
    }

    async fn lease_renew(
        &self,
        node_id: &str,
        fire_ids: &[String],
        lease_ms: i64,
    ) -> Result<u64, StoreError> {
        let _writer = writer(self).await;
        let mut renewed = 0;
        // Both kinds of claim: the node does not keep apart where each lives.
        for (table, claimed) in [
            (&LEASE_RENEW_FIRES, " AND state = 'acquired'"),
            (&LEASE_RENEW_HELD, ""),
        ] {
            for chunk in fire_ids.chunks(500) {
                let mut qb = QueryBuilder::<DB>::new(table.on(DB::DIALECT));
                qb.push_bind(lease_ms);
                qb.push(" WHERE node_id = ");
                qb.push_bind(node_id.to_string());
                qb.push(LEASE_LEFT_UNDER.on(DB::DIALECT));
                qb.push_bind(lease_ms / 2);
                qb.push(claimed);
                qb.push(" AND fire_id IN (");
                push_list(&mut qb, chunk.iter().cloned());
                qb.push(")");
                renewed += DB::rows_affected(&qb.build().execute(self.pool()).await?);
            }
        }
        Ok(renewed)
    }

    async fn fire_mark_started(
        &self,
        node_id: &str,
        fires: &[ClaimRef],
    ) -> Result<Vec<String>, StoreError> {
        let _writer = writer(self).await;
        let mut marked = Vec::with_capacity(fires.len());
        for held in [false, true] {
            let part: Vec<&ClaimRef> = fires.iter().filter(|f| f.held == held).collect();
            for chunk in part.chunks(400) {
                let mut qb = QueryBuilder::<DB>::new(if held {
                    "UPDATE held_claims SET started = 1 WHERE node_id = "
                } else {
                    "UPDATE fires SET started = 1 WHERE state = 'acquired' AND node_id = "
                });
                qb.push_bind(node_id.to_string());
                if held {
                    // By key, as completions delete them: the table's only index.
                    qb.push(" AND trigger_key IN (");
                    push_list(&mut qb, chunk.iter().map(|f| f.trigger_key.clone()));
                    qb.push(")");
                }
                qb.push(" AND fire_id IN (");
                push_list(&mut qb, chunk.iter().map(|f| f.fire_id.clone()));
                // The claim itself, not just its fire: a claim handed back
                // (its lease ran out while the database was away) and made
                // again by this node has a new fencing, and only that claim's
                // run may begin.
                qb.push(") AND (fire_id, fencing) IN (VALUES ");
                let mut list = qb.separated(", ");
                for f in chunk {
                    list.push("(");
                    list.push_bind_unseparated(f.fire_id.clone());
                    list.push_unseparated(", CAST(");
                    list.push_bind_unseparated(f.fencing);
                    list.push_unseparated(" AS BIGINT))");
                }
                qb.push(") RETURNING fire_id");
                let ids: Vec<String> = qb.build_query_scalar().fetch_all(self.pool()).await?;
                marked.extend(ids);
            }
        }
        Ok(marked)
    }

    async fn fire_recover(
        &self,
        dead_after_ms: i64,
        live_node: Option<&str>,
    ) -> Result<u64, StoreError> {
        let _writer = writer(self).await;
        let mut tx = self.pool().begin_with(DB::DIALECT.begin_write()).await?;
        let now: i64 = sqlx::query_scalar(CLOCK.on(DB::DIALECT))
            .fetch_one(&mut *tx)
            .await?;
        let held: Vec<(String, String, String, i64)> = sqlx::query_as(HELD_LOST.on(DB::DIALECT))
            .bind(now)
            .bind(dead_after_ms)
            .bind(live_node.unwrap_or(""))
            .fetch_all(&mut *tx)
            .await?;
        for (trigger_key, fire_id, node_id, fencing) in &held {
            unhold(&mut tx, trigger_key, fire_id, node_id, *fencing).await?;
        }
        let lost = sqlx::query(CLAIMS_LOST.on(DB::DIALECT))
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
                sqlx::query(FIRE_UNCLAIM.on(DB::DIALECT))
                    .bind(&fire_id)
                    .execute(&mut *tx)
                    .await?;
                continue;
            }
            // Locks the lost run held (holder `node/fire`) go with it, so the
            // re-run is not blocked by its own predecessor.
            if let Some(node) = &node {
                sqlx::query(LOCKS_OF_RUN_RELEASE.on(DB::DIALECT))
                    .bind(format!("{node}/{fire_id}"))
                    .execute(&mut *tx)
                    .await?;
            }
            if row.try_get::<i64, _>("requests_recovery")? != 0 {
                // Same attempt, flagged: the guest can tell it may be a re-run.
                sqlx::query(FIRE_REQUEUE_RECOVERING.on(DB::DIALECT))
                    .bind(now)
                    .bind(&fire_id)
                    .execute(&mut *tx)
                    .await?;
            } else {
                sqlx::query(FIRE_DELETE.on(DB::DIALECT))
                    .bind(&fire_id)
                    .execute(&mut *tx)
                    .await?;
                let job_key: String = row.try_get("job_key")?;
                let trigger_key: String = row.try_get("trigger_key")?;
                let mut entry = history_row(
                    Some(&fire_id),
                    &job_key,
                    Some(&trigger_key),
                    HistoryStatus::Failed,
                    Some(row.try_get("scheduled_ms")?),
                    now,
                    serde_json::json!({ "reason": "node-lost",
                        "detail": "the node running this fire stopped before it ended; the job does not request recovery",
                        "node": node }),
                );
                entry.attempt = u32::try_from(row.try_get::<i64, _>("attempt")?).unwrap_or(0);
                entry.node_id = node;
                history.push(entry);
            }
        }
        insert_history(&mut tx, &history).await?;
        tx.commit().await?;
        Ok(lost.len() as u64)
    }

    async fn fire_list(&self) -> Result<Vec<FireClaim>, StoreError> {
        let rows = sqlx::query(FIRE_LIST.on(DB::DIALECT))
            .fetch_all(self.pool())
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let job_key: String = row.try_get("job_key")?;
            let Some(job) = self.job_get(&job_key).await? else {
                continue;
            };
            out.push(FireClaim {
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
                flow: None,
                origin: FireOrigin::from_stored(&row.try_get::<String, _>("origin")?),
            });
        }
        Ok(out)
    }

    async fn history_list(&self, f: &HistoryFilter) -> Result<Vec<HistoryEntry>, StoreError> {
        let rows = sqlx::query(HISTORY_LIST.on(DB::DIALECT))
            .bind(f.job_key.as_deref())
            .bind(f.status.map(|s| s.as_str()))
            .bind(f.before_ms)
            .bind(if f.limit > 0 { f.limit } else { 100 })
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(history_from_row).collect()
    }

    async fn history_count(&self, f: &HistoryFilter) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(HISTORY_COUNT.on(DB::DIALECT))
            .bind(f.job_key.as_deref())
            .bind(f.status.map(|s| s.as_str()))
            .fetch_one(self.pool())
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn history_stats(
        &self,
        p: &HistoryStatsParams,
    ) -> Result<Vec<HistoryBucket>, StoreError> {
        if p.bucket_ms < 1 || p.to_ms <= p.from_ms {
            return Ok(Vec::new());
        }
        let mut out: std::collections::BTreeMap<i64, HistoryBucket> =
            std::collections::BTreeMap::new();
        let counts: Vec<(i64, String, i64)> = sqlx::query_as(HISTORY_COUNTS.on(DB::DIALECT))
            .bind(p.from_ms)
            .bind(p.bucket_ms)
            .bind(p.to_ms)
            .fetch_all(self.pool())
            .await?;
        for (b, status, n) in counts {
            let bucket = out.entry(b).or_insert_with(|| HistoryBucket {
                index: b,
                ..Default::default()
            });
            bucket.counts.insert(status, n);
        }
        let lags = sqlx::query(HISTORY_LAGS.on(DB::DIALECT))
            .bind(p.from_ms)
            .bind(p.bucket_ms)
            .bind(p.to_ms)
            .fetch_all(self.pool())
            .await?;
        for r in &lags {
            let b: i64 = r.try_get("b")?;
            let bucket = out.entry(b).or_insert_with(|| HistoryBucket {
                index: b,
                ..Default::default()
            });
            bucket.lag_samples = r.try_get("n")?;
            bucket.lag_p50_ms = r.try_get("p50")?;
            bucket.lag_p99_ms = r.try_get("p99")?;
            bucket.lag_max_ms = r.try_get("lag_max")?;
        }
        Ok(out.into_values().collect())
    }

    async fn history_cleanup(&self, max_age_ms: i64, max_rows: i64) -> Result<u64, StoreError> {
        let _writer = writer(self).await;
        let mut tx = self.pool().begin_with(DB::DIALECT.begin_write()).await?;
        let aged = sqlx::query(HISTORY_AGED.on(DB::DIALECT))
            .bind(max_age_ms)
            .execute(&mut *tx)
            .await?;
        let over = sqlx::query(HISTORY_OVER.on(DB::DIALECT))
            .bind(max_rows)
            .execute(&mut *tx)
            .await?;
        // Flow keys no fire names and no claim touched for longer than the
        // longest rate window: a key per account would otherwise keep a row
        // per account forever. A key seen again gets a new row.
        sqlx::query(FLOW_KEYS_IDLE.on(DB::DIALECT))
            .bind(crate::domain::flow::RATE_PER_MAX_MS + 3_600_000)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(DB::rows_affected(&aged) + DB::rows_affected(&over))
    }

    async fn lock_try(
        &self,
        name: &str,
        holder: &str,
        lease_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        let _writer = writer(self).await;
        let sql = match DB::DIALECT {
            Dialect::Postgres => &LOCK_TRY_POSTGRES,
            Dialect::Sqlite => &LOCK_TRY_SQLITE,
        };
        Ok(sqlx::query_scalar(sql.on(DB::DIALECT))
            .bind(name)
            .bind(holder)
            .bind(lease_ms)
            .fetch_optional(self.pool())
            .await?)
    }

    async fn lock_renew(&self, name: &str, token: i64, lease_ms: i64) -> Result<bool, StoreError> {
        let _writer = writer(self).await;
        let done = sqlx::query(LOCK_RENEW.on(DB::DIALECT))
            .bind(lease_ms)
            .bind(name)
            .bind(token)
            .execute(self.pool())
            .await?;
        Ok(DB::rows_affected(&done) == 1)
    }

    async fn lock_release(&self, name: &str, token: i64) -> Result<bool, StoreError> {
        let _writer = writer(self).await;
        let mut tx = self.pool().begin().await?;
        let done = sqlx::query(LOCK_RELEASE.on(DB::DIALECT))
            .bind(name)
            .bind(token)
            .execute(&mut *tx)
            .await?;
        let released = DB::rows_affected(&done) == 1;
        if released && DB::DIALECT == Dialect::Sqlite {
            // The '' row keeps the highest token deleted (PostgreSQL's tokens
            // come from a sequence instead).
            sqlx::query(LOCK_TOKEN_KEEP.on(DB::DIALECT))
                .bind(token)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(released)
    }

    async fn lock_list(&self) -> Result<Vec<LockRow>, StoreError> {
        let rows: Vec<(String, Option<String>, i64, Option<i64>, Option<i64>)> =
            sqlx::query_as(LOCK_LIST.on(DB::DIALECT))
                .fetch_all(self.pool())
                .await?;
        Ok(rows
            .into_iter()
            .map(
                |(name, holder, token, acquired_ms, lease_until_ms)| LockRow {
                    name,
                    holder,
                    token,
                    acquired_ms,
                    lease_until_ms,
                },
            )
            .collect())
    }

    async fn node_list(&self, dead_after_ms: i64) -> Result<Vec<NodeRow>, StoreError> {
        let rows = sqlx::query(NODE_LIST.on(DB::DIALECT))
            .bind(dead_after_ms)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                let modules: String = r.try_get("modules")?;
                Ok(NodeRow {
                    node_id: r.try_get("node_id")?,
                    started_ms: r.try_get("started_ms")?,
                    heartbeat_ms: r.try_get("heartbeat_ms")?,
                    version: r.try_get("version")?,
                    wit_versions: r.try_get("wit_versions")?,
                    runs: match (r.try_get("wit_lo")?, r.try_get("wit_hi")?) {
                        (Some(lo), Some(hi)) => Some(WitRange { lo, hi }),
                        _ => None,
                    },
                    modules: modules
                        .split(',')
                        .filter(|d| !d.is_empty())
                        .map(str::to_string)
                        .collect(),
                    running: r.try_get("running")?,
                    alive: r.try_get::<i32, _>("alive")? != 0,
                })
            })
            .collect()
    }

    async fn node_heartbeat(&self, c: &NodeCheckIn) -> Result<(), StoreError> {
        let _writer = writer(self).await;
        sqlx::query(NODE_HEARTBEAT.on(DB::DIALECT))
            .bind(&c.node_id)
            .bind(&c.version)
            .bind(&c.wit_versions)
            .bind(c.runs.lo)
            .bind(c.runs.hi)
            .bind(c.modules.join(","))
            .execute(self.pool())
            .await?;
        Ok(())
    }

    async fn node_restart(&self, node_id: &str) -> Result<bool, StoreError> {
        let _writer = writer(self).await;
        let done = sqlx::query(NODE_RESTART.on(DB::DIALECT))
            .bind(node_id)
            .execute(self.pool())
            .await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    async fn fire_skip_unrunnable(
        &self,
        dead_after_ms: i64,
        runs: WitRange,
    ) -> Result<u64, StoreError> {
        // Called on every check-in: look before taking the writer's lock.
        let any = sqlx::query(UNRUNNABLE_ANY.on(DB::DIALECT))
            .bind(self.now_ms().await?)
            .bind(dead_after_ms)
            .bind(runs.lo)
            .bind(runs.hi)
            .fetch_optional(self.pool())
            .await?;
        if any.is_none() {
            return Ok(0);
        }
        let _writer = writer(self).await;
        let mut tx = self.pool().begin_with(DB::DIALECT.begin_write()).await?;
        let now: i64 = sqlx::query_scalar(CLOCK.on(DB::DIALECT))
            .fetch_one(&mut *tx)
            .await?;
        let rows = sqlx::query(UNRUNNABLE.on(DB::DIALECT))
            .bind(now)
            .bind(dead_after_ms)
            .bind(runs.lo)
            .bind(runs.hi)
            .fetch_all(&mut *tx)
            .await?;
        let mut history = Vec::with_capacity(rows.len());
        for row in &rows {
            let fire_id: String = row.try_get("fire_id")?;
            sqlx::query(FIRE_DELETE_WAITING.on(DB::DIALECT))
                .bind(&fire_id)
                .execute(&mut *tx)
                .await?;
            let need: Option<i64> = row.try_get("wit_need")?;
            let needs = need
                .map(|n| format!("{}.{}", n / 1_000_000, n % 1_000_000))
                .unwrap_or_default();
            let module: Option<String> = row.try_get("module")?;
            let job_key: String = row.try_get("job_key")?;
            let trigger_key: String = row.try_get("trigger_key")?;
            let mut entry = history_row(
                Some(&fire_id),
                &job_key,
                Some(&trigger_key),
                HistoryStatus::Skipped,
                Some(row.try_get("scheduled_ms")?),
                now,
                serde_json::json!({ "reason": "no-capable-node", "module": module, "needs_wit": needs,
                    "detail": format!("no live node runs quartzite:job {needs}, which this job's module needs") }),
            );
            entry.attempt = u32::try_from(row.try_get::<i64, _>("attempt")?).unwrap_or(0);
            history.push(entry);
        }
        insert_history(&mut tx, &history).await?;
        tx.commit().await?;
        Ok(rows.len() as u64)
    }
}
