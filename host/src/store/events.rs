//! Events and alerts in the store.
//!
//! An accepted event is one row of `events` written in the same transaction as
//! one fire per subscribed trigger, so a crash after the call returns loses
//! nothing, and an idempotency key is unique per event name and source (the
//! emitting job, or the operator), so the same key emitted twice by one source
//! starts one set of fires while no source can take a key another will use.
//!
//! A job's emit is bounded three ways, each refusal recorded as a `skipped`
//! history row of the emitting job: the chain's depth, the chain's budget (the
//! events accepted below its root, counted on the root's row and reserved by
//! one conditional UPDATE, so concurrent emitters cannot overshoot it), and the
//! fires the job's events have waiting (counted from a partial index), so one
//! job cannot bury the others' fires under its own.
//!
//! Alerts are derived from task history: a scan under a cluster lock reads the
//! history rows an alert can be about (a partial index: successes are never
//! read) and queues one delivery per rule and triggering condition, unique on a
//! de-duplication key, so a row scanned twice or by two nodes is delivered once.
//!
//! Why one long file: the types of events and alerts, the statements and the
//! one implementation of [`Events`] (a trait impl is one block) read together.

use super::StoreError;
use super::common::notify;
use super::model::{HistoryEntry, HistoryStatus, TriggerState};
use super::sched::{history_from_row, history_row, insert_history, new_id, trigger_from_row};
use super::sql::{Backend, Db, Sql, writer};
use async_trait::async_trait;
use serde::Serialize;
use sqlx::{ColumnIndex, Decode, Encode, Executor, IntoArguments, QueryBuilder, Row, Type};

pub use crate::domain::events::{
    AlertCondition, AlertRule, DEFAULT_MAX_CHAIN_EVENTS, DEFAULT_MAX_DEPTH, DEFAULT_MAX_JOB_FIRES,
    MAX_EVENT_KEY, MAX_EVENT_NAME, MAX_EVENT_PAYLOAD, check_event_input, check_event_name,
};

/// The bounds on the events jobs emit (`[scheduler]` `max_event_depth`,
/// `max_chain_events`, `max_job_event_fires`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EmitBounds {
    pub max_depth: u32,
    pub max_chain_events: u32,
    pub max_job_fires: u32,
}

impl Default for EmitBounds {
    fn default() -> Self {
        EmitBounds {
            max_depth: DEFAULT_MAX_DEPTH,
            max_chain_events: DEFAULT_MAX_CHAIN_EVENTS,
            max_job_fires: DEFAULT_MAX_JOB_FIRES,
        }
    }
}

/// An event to accept.
#[derive(Clone, Debug)]
pub struct EventPut {
    pub name: String,
    /// JSON text; `null` when none was given.
    pub payload: String,
    pub key: Option<String>,
    /// 0 from an operator; the emitting fire's depth + 1 from a job.
    pub depth: u32,
    /// The job and fire that emitted it, if a job did.
    pub source_job: Option<String>,
    pub source_fire: Option<String>,
    /// Events deeper than this are refused (and recorded in the emitting job's history).
    pub max_depth: u32,
    /// The event whose fire emitted this one: the new event joins its chain.
    pub parent_event: Option<String>,
    /// Events a chain may hold below its root; more are refused and recorded.
    pub max_chain_events: u32,
    /// An emit of `source_job` is refused (and recorded) while the fires its
    /// events started and that have not ended number this many.
    pub max_job_fires: u32,
}

impl EventPut {
    /// An operator's or the API's event: depth 0, no source, no bound but the key.
    pub fn operator(name: &str, payload: &str, key: Option<&str>) -> Self {
        EventPut {
            name: name.to_string(),
            payload: payload.to_string(),
            key: key.map(str::to_string),
            depth: 0,
            source_job: None,
            source_fire: None,
            max_depth: u32::MAX,
            parent_event: None,
            max_chain_events: u32::MAX,
            max_job_fires: u32::MAX,
        }
    }
}

/// A fire's flow keys: (concurrency key, rate key).
type Keys = (Option<String>, Option<String>);

/// An event's fire for a job that folds events (see `domain::flow::Coalesce`).
struct Folded {
    fire: EventFire,
    priority: i64,
    keys: Keys,
    /// The key it folds by.
    key: String,
    debounce_ms: Option<i64>,
}

/// One fire an event started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EventFire {
    pub fire_id: String,
    pub job_key: String,
    pub trigger_key: String,
}

/// What emitting an event did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum EmitOutcome {
    /// Stored with one fire per active subscriber; `paused` subscribers got a
    /// `skipped` history row instead.
    Accepted {
        event_id: String,
        fires: Vec<EventFire>,
        paused: Vec<String>,
    },
    /// The key was used before for this name by the same source: nothing new
    /// was started.
    Duplicate { event_id: String, fires: u64 },
    /// The chain is too deep: refused, recorded in the emitter's history.
    DepthExceeded { depth: u32, limit: u32 },
    /// The chain of `root` holds `limit` events already: refused, recorded in
    /// the emitter's history.
    ChainBudgetExceeded { root: String, limit: u32 },
    /// The emitting job's events have `waiting` fires not yet ended, at least
    /// `limit`: refused, recorded in the emitter's history.
    JobFiresExceeded { waiting: u64, limit: u32 },
}

impl EmitOutcome {
    /// The label of the outcome in `quartzite_events_total{result}`.
    pub fn result(&self) -> &'static str {
        match self {
            EmitOutcome::Accepted { .. } => "accepted",
            EmitOutcome::Duplicate { .. } => "duplicate",
            EmitOutcome::DepthExceeded { .. } => "depth-exceeded",
            EmitOutcome::ChainBudgetExceeded { .. } => "chain-budget-exceeded",
            EmitOutcome::JobFiresExceeded { .. } => "job-fires-exceeded",
        }
    }
}

/// A stored event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EventRecord {
    pub event_id: String,
    pub name: String,
    pub key: Option<String>,
    /// JSON text.
    pub payload: String,
    pub depth: u32,
    pub source_job: Option<String>,
    pub source_fire: Option<String>,
    /// Fires it started.
    pub fires: u64,
    pub created_ms: i64,
}

/// Where an alert delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    Pending,
    Sent,
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Sent => "sent",
            DeliveryState::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            DeliveryState::Pending,
            DeliveryState::Sent,
            DeliveryState::Failed,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// An alert to deliver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryPut {
    pub delivery_id: String,
    pub rule: String,
    /// One delivery per key: rule and triggering condition.
    pub dedup_key: String,
    pub job_key: Option<String>,
    pub history_id: Option<String>,
    /// The JSON document POSTed.
    pub payload: String,
}

/// A delivery as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Delivery {
    pub delivery_id: String,
    pub rule: String,
    pub dedup_key: String,
    pub job_key: Option<String>,
    pub history_id: Option<String>,
    pub payload: String,
    pub state: DeliveryState,
    pub attempts: u32,
    pub next_at_ms: i64,
    /// HTTP status of the last attempt, if the receiver answered.
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// The result of one delivery attempt, to record.
#[derive(Clone, Debug)]
pub struct DeliveryAttempt {
    pub delivery_id: String,
    pub state: DeliveryState,
    pub attempts: u32,
    pub next_at_ms: i64,
    pub status: Option<u16>,
    pub error: Option<String>,
}

/// Filters of `alert_delivery_list`.
#[derive(Clone, Debug, Default)]
pub struct DeliveryFilter {
    pub rule: Option<String>,
    pub state: Option<DeliveryState>,
    pub limit: i64,
}

/// The history statuses that count as a failed run, and the one that ends a streak.
pub const FAILURE_STATUSES: [HistoryStatus; 3] = [
    HistoryStatus::Failed,
    HistoryStatus::Retried,
    HistoryStatus::Timeout,
];

/// How many of `runs` (newest first, as [`Events::history_runs_before`]
/// answers them) failed in a row: the streak the `consecutive-failures`
/// alert and a job's `pause_on_failure` count.
pub fn failure_streak(runs: &[(String, HistoryStatus)]) -> usize {
    runs.iter()
        .take_while(|(_, s)| FAILURE_STATUSES.contains(s))
        .count()
}

/// The store's events and alerts. See the module docs.
#[async_trait]
pub trait Events: Send + Sync {
    /// Accepts an event: stores it and one fire per active subscriber in one
    /// transaction. See [`EmitOutcome`].
    async fn event_emit(&self, event: &EventPut) -> Result<EmitOutcome, StoreError>;
    /// One event by id.
    async fn event_get(&self, event_id: &str) -> Result<Option<EventRecord>, StoreError>;
    /// Events, newest first, of one name or all.
    async fn event_list(
        &self,
        name: Option<&str>,
        limit: i64,
    ) -> Result<Vec<EventRecord>, StoreError>;
    /// Deletes events accepted before `before_ms` (their keys may then be reused).
    async fn event_cleanup(&self, before_ms: i64) -> Result<u64, StoreError>;

    /// Makes the rules of `source` exactly `rules`: others of that source are deleted.
    async fn alert_rules_sync(&self, source: &str, rules: &[AlertRule]) -> Result<(), StoreError>;
    /// Adds or replaces one rule.
    async fn alert_rule_put(&self, rule: &AlertRule) -> Result<(), StoreError>;
    /// Deletes a rule; returns whether it existed.
    async fn alert_rule_delete(&self, name: &str) -> Result<bool, StoreError>;
    /// Every rule, by name.
    async fn alert_rule_list(&self) -> Result<Vec<AlertRule>, StoreError>;

    /// Where a history scan has got to (an `ended_ms`), if it has run.
    async fn alert_cursor(&self, name: &str) -> Result<Option<i64>, StoreError>;
    async fn alert_cursor_set(&self, name: &str, ended_ms: i64) -> Result<(), StoreError>;
    /// History rows an alert can be about that ended after `after_ms`, oldest first.
    async fn history_alertable(
        &self,
        after_ms: i64,
        limit: i64,
    ) -> Result<Vec<HistoryEntry>, StoreError>;
    /// The newest `limit` runs of a job (successes and failures only) that
    /// started no later than `upto`, newest first: `(id, status)`.
    async fn history_runs_before(
        &self,
        job_key: &str,
        upto: &HistoryEntry,
        limit: i64,
    ) -> Result<Vec<(String, HistoryStatus)>, StoreError>;
    /// One history row by id.
    async fn history_get(&self, id: &str) -> Result<Option<HistoryEntry>, StoreError>;

    /// Queues deliveries; a key already queued is left alone. Returns how many are new.
    async fn alert_enqueue(&self, deliveries: &[DeliveryPut]) -> Result<u64, StoreError>;
    /// Pending deliveries due now, oldest first.
    async fn alert_due(&self, limit: i64) -> Result<Vec<Delivery>, StoreError>;
    /// Records a delivery attempt.
    async fn alert_attempt(&self, attempt: &DeliveryAttempt) -> Result<(), StoreError>;
    /// Deliveries, newest first.
    async fn alert_delivery_list(
        &self,
        filter: &DeliveryFilter,
    ) -> Result<Vec<Delivery>, StoreError>;
    /// Deletes finished deliveries created before `before_ms`.
    async fn alert_cleanup(&self, before_ms: i64) -> Result<u64, StoreError>;
}

/// The `skipped` history row of an emit refused by one of its bounds: in the
/// emitting job's history, naming the fire that emitted, so the refusal is seen
/// where the job's runs are.
pub(crate) fn refusal_row(
    e: &EventPut,
    now: i64,
    reason: &str,
    limit: u32,
    extra: serde_json::Value,
    detail: String,
) -> super::model::HistoryEntry {
    let mut details = serde_json::json!({
        "reason": reason,
        "event": e.name,
        "limit": limit,
        "detail": detail,
    });
    if let (Some(details), serde_json::Value::Object(extra)) = (details.as_object_mut(), extra) {
        details.extend(extra);
    }
    super::sched::history_row(
        e.source_fire.as_deref(),
        e.source_job.as_deref().unwrap_or("-"),
        None,
        HistoryStatus::Skipped,
        None,
        now,
        details,
    )
}

pub(crate) fn event_from_row<R: sqlx::Row>(r: &R) -> Result<EventRecord, StoreError>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(EventRecord {
        event_id: r.try_get("event_id")?,
        name: r.try_get("name")?,
        key: r.try_get("idem_key")?,
        payload: r.try_get("payload")?,
        depth: u32::try_from(r.try_get::<i64, _>("depth")?).unwrap_or(0),
        source_job: r.try_get("source_job")?,
        source_fire: r.try_get("source_fire")?,
        fires: u64::try_from(r.try_get::<i64, _>("fires")?).unwrap_or(0),
        created_ms: r.try_get("created_ms")?,
    })
}

pub(crate) fn rule_from_row<R: sqlx::Row>(r: &R) -> Result<AlertRule, StoreError>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let name: String = r.try_get("name")?;
    let condition: String = r.try_get("condition")?;
    Ok(AlertRule {
        condition: AlertCondition::parse(&condition).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "alert rule {name} has an unknown condition {condition:?}"
            ))
        })?,
        name,
        job_pattern: r.try_get("job_pattern")?,
        threshold: u32::try_from(r.try_get::<i64, _>("threshold")?).unwrap_or(1),
        webhook: r.try_get("webhook")?,
        source: r.try_get("source")?,
    })
}

pub(crate) fn delivery_from_row<R: sqlx::Row>(r: &R) -> Result<Delivery, StoreError>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<i64>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let state: String = r.try_get("state")?;
    Ok(Delivery {
        delivery_id: r.try_get("delivery_id")?,
        rule: r.try_get("rule")?,
        dedup_key: r.try_get("dedup_key")?,
        job_key: r.try_get("job_key")?,
        history_id: r.try_get("history_id")?,
        payload: r.try_get("payload")?,
        state: DeliveryState::parse(&state).unwrap_or(DeliveryState::Failed),
        attempts: u32::try_from(r.try_get::<i64, _>("attempts")?).unwrap_or(0),
        next_at_ms: r.try_get("next_at_ms")?,
        last_status: r
            .try_get::<Option<i64>, _>("last_status")?
            .and_then(|s| u16::try_from(s).ok()),
        last_error: r.try_get("last_error")?,
        created_ms: r.try_get("created_ms")?,
        updated_ms: r.try_get("updated_ms")?,
    })
}

/// The columns of an event row, as [`event_from_row`] reads them.
pub(crate) const EVENT_COLUMNS: &str =
    "event_id, name, idem_key, payload, depth, source_job, source_fire, fires, created_ms";

/// The columns of a delivery row, as [`delivery_from_row`] reads them.
pub(crate) const DELIVERY_COLUMNS: &str = "delivery_id, rule, dedup_key, job_key, history_id, payload, state, attempts, next_at_ms, \
     last_status, last_error, created_ms, updated_ms";

// One read answers the clock, a repeated key, the chain this event joins (its
// root, if that row is still kept) and the fires the emitting job's events
// have waiting: a refusal or a duplicate costs no second round trip.
static EMIT_HEAD: Sql = Sql::new(
    "SELECT {now} AS now, \
     (SELECT event_id FROM events WHERE name = $1 AND key_scope = $2 AND idem_key = $3) AS dup_id, \
     (SELECT fires FROM events WHERE name = $1 AND key_scope = $2 AND idem_key = $3) AS dup_fires, \
     (SELECT r.event_id FROM events p JOIN events r ON r.event_id = COALESCE(p.root_id, p.event_id) \
      WHERE p.event_id = $4) AS root, \
     (SELECT COUNT(*) FROM fires WHERE source_job = $5) AS waiting",
);
// A conditional UPDATE, not the count read above: concurrent emitters in one
// chain each wait for the row and re-check, so the chain never holds more
// than its budget.
static CHAIN_RESERVE: Sql = Sql::new(
    "UPDATE events SET chain_events = chain_events + 1 WHERE event_id = $1 AND chain_events < $2",
);
static EVENT_INSERT: Sql = Sql::new(
    "INSERT INTO events (event_id, name, idem_key, key_scope, payload, depth, source_job, source_fire, fires, created_ms, root_id, chain_events) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $10, 0) ON CONFLICT DO NOTHING RETURNING event_id",
);
static EVENT_BY_KEY: Sql = Sql::new(
    "SELECT event_id, fires FROM events WHERE name = $1 AND key_scope = $2 AND idem_key = $3",
);
static SUBSCRIBERS: Sql = Sql::new(
    "SELECT {trigger_columns}, (SELECT j.paused FROM jobs j WHERE j.job_key = triggers.job_key) AS job_paused, \
     (SELECT j.flow FROM jobs j WHERE j.job_key = triggers.job_key) AS job_flow, \
     (SELECT CASE WHEN j.flow IS NULL THEN NULL ELSE j.data END FROM jobs j WHERE j.job_key = triggers.job_key) AS job_data \
     FROM triggers WHERE kind = 'event' AND event_name = $1 ORDER BY trigger_key",
);
static EVENT_FIRES_INSERT: Sql = Sql::new(
    "INSERT INTO fires (fire_id, trigger_key, job_key, scheduled_ms, due_ms, priority, attempt, state, recovering, fencing, event_id, depth, \
     source_job, concurrency_key, rate_key) ",
);
// A fire of a job that folds events: the key's waiting fire takes this event
// (and, for a debounce, its due time moves to the window's end), or a new one
// is created. The partial unique index `fires_coalescing` is the arbiter.
static EVENT_FIRE_FOLD: Sql = Sql::new(
    "INSERT INTO fires (fire_id, trigger_key, job_key, scheduled_ms, due_ms, priority, attempt, state, recovering, fencing, \
     event_id, depth, source_job, concurrency_key, rate_key, coalesce_key, coalesced) \
     VALUES ($1, $2, $3, $4, $5, $6, 1, 'scheduled', 0, 0, $7, $8, $9, $10, $11, $12, 0) \
     ON CONFLICT (trigger_key, coalesce_key) WHERE state = 'scheduled' AND coalesce_key IS NOT NULL \
     DO UPDATE SET event_id = excluded.event_id, depth = excluded.depth, source_job = excluded.source_job, \
     scheduled_ms = excluded.scheduled_ms, due_ms = CASE WHEN $13 = 1 THEN excluded.due_ms ELSE fires.due_ms END, \
     concurrency_key = excluded.concurrency_key, rate_key = excluded.rate_key, coalesced = fires.coalesced + 1 \
     RETURNING fire_id",
);
static EVENT_FIRES_SET: Sql = Sql::new("UPDATE events SET fires = $1 WHERE event_id = $2");
static EVENT_GET: Sql = Sql::new("SELECT {event_columns} FROM events WHERE event_id = $1");
static EVENT_LIST: Sql = Sql::new(
    "SELECT {event_columns} FROM events WHERE ($1 IS NULL OR name = $1) \
     ORDER BY created_ms DESC, event_id DESC LIMIT $2",
);
static EVENT_CLEANUP: Sql = Sql::new("DELETE FROM events WHERE created_ms < $1");

static RULE_UPSERT: Sql = Sql::new(
    "INSERT INTO alert_rules (name, condition, job_pattern, threshold, webhook, source, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, {now}) ON CONFLICT (name) DO UPDATE SET condition = excluded.condition, \
     job_pattern = excluded.job_pattern, threshold = excluded.threshold, webhook = excluded.webhook, \
     source = excluded.source, updated_at = excluded.updated_at",
);
static RULE_DELETE: Sql = Sql::new("DELETE FROM alert_rules WHERE name = $1");
static RULE_LIST: Sql = Sql::new(
    "SELECT name, condition, job_pattern, threshold, webhook, source FROM alert_rules ORDER BY name",
);
static CURSOR_GET: Sql = Sql::new("SELECT ended_ms FROM alert_cursor WHERE name = $1");
static CURSOR_SET: Sql = Sql::new(
    "INSERT INTO alert_cursor (name, ended_ms) VALUES ($1, $2) \
     ON CONFLICT (name) DO UPDATE SET ended_ms = excluded.ended_ms",
);
// The status list repeats the partial index's, so the index serves it.
static HISTORY_ALERTABLE: Sql = Sql::new(
    "SELECT {history_columns} FROM task_history \
     WHERE status IN ('failed', 'retried', 'timeout', 'skipped', 'misfired') \
     AND ended_ms > $1 ORDER BY ended_ms, id LIMIT $2",
);
static HISTORY_RUNS_BEFORE: Sql = Sql::new(
    "SELECT id, status FROM task_history WHERE job_key = $1 \
     AND status IN ('success', 'failed', 'retried', 'timeout') \
     AND (started_ms < $2 OR (started_ms = $2 AND id <= $3)) \
     ORDER BY started_ms DESC, id DESC LIMIT $4",
);
static HISTORY_GET: Sql = Sql::new("SELECT {history_columns} FROM task_history WHERE id = $1");
static CLOCK: Sql = Sql::new("SELECT {now}");
static DELIVERIES_INSERT: Sql = Sql::new("INSERT INTO alert_deliveries ({delivery_columns}) ");
static DELIVERIES_DUE: Sql = Sql::new(
    "SELECT {delivery_columns} FROM alert_deliveries \
     WHERE state = 'pending' AND next_at_ms <= {now} ORDER BY next_at_ms, delivery_id LIMIT $1",
);
static DELIVERY_ATTEMPT: Sql = Sql::new(
    "UPDATE alert_deliveries SET state = $1, attempts = $2, next_at_ms = $3, last_status = $4, last_error = $5, \
     updated_ms = {now} WHERE delivery_id = $6",
);
static DELIVERY_LIST: Sql = Sql::new(
    "SELECT {delivery_columns} FROM alert_deliveries \
     WHERE ($1 IS NULL OR rule = $1) AND ($2 IS NULL OR state = $2) ORDER BY created_ms DESC, delivery_id DESC LIMIT $3",
);
static DELIVERY_CLEANUP: Sql =
    Sql::new("DELETE FROM alert_deliveries WHERE state <> 'pending' AND created_ms < $1");

/// Adds or replaces one alert rule.
async fn rule_upsert<DB: Db>(
    tx: &mut sqlx::Transaction<'_, DB>,
    r: &AlertRule,
) -> Result<(), StoreError>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB>,
{
    sqlx::query(RULE_UPSERT.on(DB::DIALECT))
        .bind(r.name.as_str())
        .bind(r.condition.as_str())
        .bind(r.job_pattern.as_deref())
        .bind(i64::from(r.threshold))
        .bind(r.webhook.as_str())
        .bind(r.source.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[async_trait]
impl<S, DB> Events for S
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
    async fn event_emit(&self, e: &EventPut) -> Result<EmitOutcome, StoreError> {
        let _writer = writer(self).await;
        let mut tx = self.pool().begin_with(DB::DIALECT.begin_write()).await?;
        let scope = e.source_job.as_deref().unwrap_or("");
        let head = sqlx::query(EMIT_HEAD.on(DB::DIALECT))
            .bind(&e.name)
            .bind(scope)
            .bind(e.key.as_deref())
            .bind(e.parent_event.as_deref())
            .bind(e.source_job.as_deref())
            .fetch_one(&mut *tx)
            .await?;
        let now: i64 = head.try_get("now")?;
        if let Some(event_id) = head.try_get::<Option<String>, _>("dup_id")? {
            let fires = head.try_get::<Option<i64>, _>("dup_fires")?.unwrap_or(0);
            tx.rollback().await?;
            return Ok(EmitOutcome::Duplicate {
                event_id,
                fires: u64::try_from(fires).unwrap_or(0),
            });
        }
        if e.depth > e.max_depth {
            let row = refusal_row(
                e,
                now,
                "event-depth-limit",
                e.max_depth,
                serde_json::json!({ "depth": e.depth }),
                format!(
                    "event {:?} not emitted: it would be {} events deep, and chains stop at {}",
                    e.name, e.depth, e.max_depth
                ),
            );
            insert_history(&mut tx, &[row]).await?;
            tx.commit().await?;
            return Ok(EmitOutcome::DepthExceeded {
                depth: e.depth,
                limit: e.max_depth,
            });
        }
        let waiting = u64::try_from(head.try_get::<i64, _>("waiting")?).unwrap_or(0);
        if waiting >= u64::from(e.max_job_fires) {
            let row = refusal_row(
                e,
                now,
                "event-job-fires-limit",
                e.max_job_fires,
                serde_json::json!({ "waiting": waiting }),
                format!(
                    "event {:?} not emitted: the events of {} have {waiting} fires waiting, and a job's events may have at most {}",
                    e.name, scope, e.max_job_fires
                ),
            );
            insert_history(&mut tx, &[row]).await?;
            tx.commit().await?;
            return Ok(EmitOutcome::JobFiresExceeded {
                waiting,
                limit: e.max_job_fires,
            });
        }
        let root: Option<String> = head.try_get("root")?;
        if let Some(root) = &root {
            let reserved = sqlx::query(CHAIN_RESERVE.on(DB::DIALECT))
                .bind(root)
                .bind(i64::from(e.max_chain_events))
                .execute(&mut *tx)
                .await?;
            if DB::rows_affected(&reserved) == 0 {
                let row = refusal_row(
                    e,
                    now,
                    "event-chain-budget",
                    e.max_chain_events,
                    serde_json::json!({ "root": root }),
                    format!(
                        "event {:?} not emitted: the chain of event {root} holds {} events already, its budget",
                        e.name, e.max_chain_events
                    ),
                );
                insert_history(&mut tx, &[row]).await?;
                tx.commit().await?;
                return Ok(EmitOutcome::ChainBudgetExceeded {
                    root: root.clone(),
                    limit: e.max_chain_events,
                });
            }
        }
        let event_id = new_id();
        let inserted: Option<String> = sqlx::query_scalar(EVENT_INSERT.on(DB::DIALECT))
            .bind(&event_id)
            .bind(&e.name)
            .bind(e.key.as_deref())
            .bind(scope)
            .bind(&e.payload)
            .bind(i64::from(e.depth))
            .bind(e.source_job.as_deref())
            .bind(e.source_fire.as_deref())
            .bind(now)
            .bind(root.as_deref())
            .fetch_optional(&mut *tx)
            .await?;
        if inserted.is_none() {
            // Another emit of the key committed since the first read: undo
            // this one's reservation and answer with that event.
            tx.rollback().await?;
            let (event_id, fires): (String, i64) = sqlx::query_as(EVENT_BY_KEY.on(DB::DIALECT))
                .bind(&e.name)
                .bind(scope)
                .bind(e.key.as_deref())
                .fetch_one(self.pool())
                .await?;
            return Ok(EmitOutcome::Duplicate {
                event_id,
                fires: u64::try_from(fires).unwrap_or(0),
            });
        }
        let subscribers = sqlx::query(SUBSCRIBERS.on(DB::DIALECT))
            .bind(&e.name)
            .fetch_all(&mut *tx)
            .await?;
        // Each fire with its priority and its flow keys (see `domain::flow`);
        // the fires of jobs that fold events apart, each an upsert.
        let mut fires: Vec<(EventFire, i64, Keys)> = Vec::new();
        let mut folded: Vec<Folded> = Vec::new();
        let mut paused = Vec::new();
        let mut history = Vec::new();
        for row in &subscribers {
            let t = trigger_from_row(row)?;
            // Outside the subscription's start and end: not subscribed now.
            if t.spec.start_ms.is_some_and(|s| now < s)
                || t.spec.end_ms.is_some_and(|end| now > end)
            {
                continue;
            }
            let job_paused = row.try_get::<Option<i64>, _>("job_paused")?.unwrap_or(0) != 0;
            match t.state {
                TriggerState::Waiting if !job_paused => {
                    let flow: Option<String> = row.try_get("job_flow")?;
                    let keys = match flow {
                        None => (None, None),
                        Some(flow) => {
                            let flow = crate::domain::flow::Flow::from_column(Some(&flow));
                            let data: Option<String> = row.try_get("job_data")?;
                            let input = crate::domain::flow::KeyInput {
                                job_key: &t.job_key,
                                trigger_key: &t.trigger_key,
                                data: data.as_deref().unwrap_or_default(),
                                event: Some(crate::domain::flow::EventInput {
                                    name: &e.name,
                                    key: e.key.as_deref(),
                                    payload: &e.payload,
                                }),
                            };
                            let keys = flow.keys(&input);
                            if let (Some(key), Some(c)) =
                                (flow.coalesce_key(&input), &flow.coalesce)
                            {
                                folded.push(Folded {
                                    fire: EventFire {
                                        fire_id: new_id(),
                                        job_key: t.job_key.clone(),
                                        trigger_key: t.trigger_key.clone(),
                                    },
                                    priority: t.priority,
                                    keys,
                                    key,
                                    debounce_ms: c.debounce_ms,
                                });
                                continue;
                            }
                            keys
                        }
                    };
                    fires.push((
                        EventFire {
                            fire_id: new_id(),
                            job_key: t.job_key.clone(),
                            trigger_key: t.trigger_key.clone(),
                        },
                        t.priority,
                        keys,
                    ));
                }
                TriggerState::Waiting | TriggerState::Paused => {
                    let what = if job_paused { "job" } else { "trigger" };
                    history.push(history_row(
                        None,
                        &t.job_key,
                        Some(&t.trigger_key),
                        HistoryStatus::Skipped,
                        Some(now),
                        now,
                        serde_json::json!({ "reason": "paused", "event": e.name, "event_id": event_id,
                            "detail": format!("event {:?} arrived while this {what} was paused", e.name) }),
                    ));
                    paused.push(t.job_key.clone());
                }
                _ => {}
            }
        }
        for chunk in fires.chunks(100) {
            let mut qb = QueryBuilder::<DB>::new(EVENT_FIRES_INSERT.on(DB::DIALECT));
            qb.push_values(
                chunk,
                |mut b, (f, priority, (concurrency_key, rate_key))| {
                    b.push_bind(f.fire_id.clone())
                        .push_bind(f.trigger_key.clone())
                        .push_bind(f.job_key.clone())
                        .push_bind(now)
                        .push_bind(now)
                        .push_bind(*priority)
                        .push_bind(1i64)
                        .push_bind("scheduled")
                        .push_bind(0i64)
                        .push_bind(0i64)
                        .push_bind(event_id.clone())
                        .push_bind(i64::from(e.depth))
                        .push_bind(e.source_job.clone())
                        .push_bind(concurrency_key.clone())
                        .push_bind(rate_key.clone());
                },
            );
            qb.build().execute(&mut *tx).await?;
        }
        for f in &mut folded {
            let due = now + f.debounce_ms.unwrap_or(0);
            let fire_id: String = sqlx::query_scalar(EVENT_FIRE_FOLD.on(DB::DIALECT))
                .bind(&f.fire.fire_id)
                .bind(&f.fire.trigger_key)
                .bind(&f.fire.job_key)
                .bind(now)
                .bind(due)
                .bind(f.priority)
                .bind(&event_id)
                .bind(i64::from(e.depth))
                .bind(e.source_job.clone())
                .bind(f.keys.0.clone())
                .bind(f.keys.1.clone())
                .bind(&f.key)
                .bind(i64::from(f.debounce_ms.is_some()))
                .fetch_one(&mut *tx)
                .await?;
            // Folded into the key's waiting fire: that fire is this event's.
            f.fire.fire_id = fire_id;
        }
        let fires: Vec<(EventFire, i64, Keys)> = fires
            .into_iter()
            .chain(folded.into_iter().map(|f| (f.fire, f.priority, f.keys)))
            .collect();
        sqlx::query(EVENT_FIRES_SET.on(DB::DIALECT))
            .bind(i64::try_from(fires.len()).unwrap_or(i64::MAX))
            .bind(&event_id)
            .execute(&mut *tx)
            .await?;
        insert_history(&mut tx, &history).await?;
        if !fires.is_empty() {
            notify(&mut tx, super::postgres::FIRES_ADDED).await?;
        }
        tx.commit().await?;
        Ok(EmitOutcome::Accepted {
            event_id,
            fires: fires.into_iter().map(|(f, _, _)| f).collect(),
            paused,
        })
    }

    async fn event_get(&self, event_id: &str) -> Result<Option<EventRecord>, StoreError> {
        let row = sqlx::query(EVENT_GET.on(DB::DIALECT))
            .bind(event_id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(event_from_row).transpose()
    }

    async fn event_list(
        &self,
        name: Option<&str>,
        limit: i64,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let rows = sqlx::query(EVENT_LIST.on(DB::DIALECT))
            .bind(name)
            .bind(if limit > 0 { limit } else { 100 })
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn event_cleanup(&self, before_ms: i64) -> Result<u64, StoreError> {
        let _writer = writer(self).await;
        let done = sqlx::query(EVENT_CLEANUP.on(DB::DIALECT))
            .bind(before_ms)
            .execute(self.pool())
            .await?;
        Ok(DB::rows_affected(&done))
    }

    async fn alert_rules_sync(&self, source: &str, rules: &[AlertRule]) -> Result<(), StoreError> {
        let _writer = writer(self).await;
        let mut tx = self.pool().begin_with(DB::DIALECT.begin_write()).await?;
        let mut qb = QueryBuilder::<DB>::new("DELETE FROM alert_rules WHERE source = ");
        qb.push_bind(source.to_string());
        if !rules.is_empty() {
            qb.push(" AND name NOT IN (");
            let mut list = qb.separated(", ");
            for r in rules {
                list.push_bind(r.name.clone());
            }
            qb.push(")");
        }
        qb.build().execute(&mut *tx).await?;
        for r in rules {
            rule_upsert(&mut tx, r).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn alert_rule_put(&self, rule: &AlertRule) -> Result<(), StoreError> {
        let _writer = writer(self).await;
        let mut tx = self.pool().begin_with(DB::DIALECT.begin_write()).await?;
        rule_upsert(&mut tx, rule).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn alert_rule_delete(&self, name: &str) -> Result<bool, StoreError> {
        let _writer = writer(self).await;
        let done = sqlx::query(RULE_DELETE.on(DB::DIALECT))
            .bind(name)
            .execute(self.pool())
            .await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    async fn alert_rule_list(&self) -> Result<Vec<AlertRule>, StoreError> {
        let rows = sqlx::query(RULE_LIST.on(DB::DIALECT))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(rule_from_row).collect()
    }

    async fn alert_cursor(&self, name: &str) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(CURSOR_GET.on(DB::DIALECT))
            .bind(name)
            .fetch_optional(self.pool())
            .await?)
    }

    async fn alert_cursor_set(&self, name: &str, ended_ms: i64) -> Result<(), StoreError> {
        let _writer = writer(self).await;
        sqlx::query(CURSOR_SET.on(DB::DIALECT))
            .bind(name)
            .bind(ended_ms)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    async fn history_alertable(
        &self,
        after_ms: i64,
        limit: i64,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let rows = sqlx::query(HISTORY_ALERTABLE.on(DB::DIALECT))
            .bind(after_ms)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(history_from_row).collect()
    }

    async fn history_runs_before(
        &self,
        job_key: &str,
        upto: &HistoryEntry,
        limit: i64,
    ) -> Result<Vec<(String, HistoryStatus)>, StoreError> {
        let rows: Vec<(String, String)> = sqlx::query_as(HISTORY_RUNS_BEFORE.on(DB::DIALECT))
            .bind(job_key)
            .bind(upto.started_ms)
            .bind(&upto.id)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        Ok(rows
            .into_iter()
            .map(|(id, status)| {
                let status = HistoryStatus::parse(&status).unwrap_or(HistoryStatus::Failed);
                (id, status)
            })
            .collect())
    }

    async fn history_get(&self, id: &str) -> Result<Option<HistoryEntry>, StoreError> {
        let row = sqlx::query(HISTORY_GET.on(DB::DIALECT))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(history_from_row).transpose()
    }

    async fn alert_enqueue(&self, deliveries: &[DeliveryPut]) -> Result<u64, StoreError> {
        if deliveries.is_empty() {
            return Ok(0);
        }
        let _writer = writer(self).await;
        let mut tx = self.pool().begin_with(DB::DIALECT.begin_write()).await?;
        let now: i64 = sqlx::query_scalar(CLOCK.on(DB::DIALECT))
            .fetch_one(&mut *tx)
            .await?;
        let mut added = 0;
        for chunk in deliveries.chunks(50) {
            let mut qb = QueryBuilder::<DB>::new(DELIVERIES_INSERT.on(DB::DIALECT));
            qb.push_values(chunk, |mut b, d| {
                b.push_bind(d.delivery_id.clone())
                    .push_bind(d.rule.clone())
                    .push_bind(d.dedup_key.clone())
                    .push_bind(d.job_key.clone())
                    .push_bind(d.history_id.clone())
                    .push_bind(d.payload.clone())
                    .push_bind("pending")
                    .push_bind(0i64)
                    .push_bind(now)
                    .push_bind(None::<i64>)
                    .push_bind(None::<String>)
                    .push_bind(now)
                    .push_bind(now);
            });
            qb.push(" ON CONFLICT DO NOTHING");
            added += DB::rows_affected(&qb.build().execute(&mut *tx).await?);
        }
        tx.commit().await?;
        Ok(added)
    }

    async fn alert_due(&self, limit: i64) -> Result<Vec<Delivery>, StoreError> {
        let rows = sqlx::query(DELIVERIES_DUE.on(DB::DIALECT))
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(delivery_from_row).collect()
    }

    async fn alert_attempt(&self, a: &DeliveryAttempt) -> Result<(), StoreError> {
        let _writer = writer(self).await;
        sqlx::query(DELIVERY_ATTEMPT.on(DB::DIALECT))
            .bind(a.state.as_str())
            .bind(i64::from(a.attempts))
            .bind(a.next_at_ms)
            .bind(a.status.map(i64::from))
            .bind(a.error.as_deref())
            .bind(&a.delivery_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    async fn alert_delivery_list(&self, f: &DeliveryFilter) -> Result<Vec<Delivery>, StoreError> {
        let rows = sqlx::query(DELIVERY_LIST.on(DB::DIALECT))
            .bind(f.rule.as_deref())
            .bind(f.state.map(|s| s.as_str()))
            .bind(if f.limit > 0 { f.limit } else { 100 })
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(delivery_from_row).collect()
    }

    async fn alert_cleanup(&self, before_ms: i64) -> Result<u64, StoreError> {
        let _writer = writer(self).await;
        let done = sqlx::query(DELIVERY_CLEANUP.on(DB::DIALECT))
            .bind(before_ms)
            .execute(self.pool())
            .await?;
        Ok(DB::rows_affected(&done))
    }
}
