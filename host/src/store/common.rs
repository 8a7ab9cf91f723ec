//! The [`Store`] methods (job state, modules, operator views, the audit log),
//! written once for both databases over [`Backend`].

use super::model::{AuditEntry, AuditFilter, AuditPut, FireRow, TriggerCounts};
use super::sql::{Backend, Db, Sql, writer};
use super::{
    Dialect, ModulePut, ModuleRecord, ModuleRef, ModuleRollback, ModuleWatch, Store, StoreError,
};
use crate::domain::flow::Flow;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{ColumnIndex, Decode, Encode, Executor, FromRow, IntoArguments, Row, Type};
use std::collections::HashMap;

/// A `modules` row without its bytes.
#[derive(FromRow)]
struct ModuleRow {
    name: String,
    version: String,
    digest: String,
    wit_version: String,
    size: i64,
    created_at: i64,
    withdrawn: i64,
}

impl ModuleRow {
    fn into_record(self) -> ModuleRecord {
        ModuleRecord {
            name: self.name,
            version: self.version,
            digest: self.digest,
            wit_version: self.wit_version,
            size: u64::try_from(self.size).unwrap_or(0),
            created_at: DateTime::<Utc>::from_timestamp_millis(self.created_at).unwrap_or_default(),
            withdrawn: self.withdrawn != 0,
            current: false,
        }
    }
}

static STATE_GET: Sql = Sql::new("SELECT value FROM job_state WHERE job_key = $1 AND key = $2");
static STATE_SET: Sql = Sql::new(
    "INSERT INTO job_state (job_key, key, value, updated_at) VALUES ($1, $2, $3, {now}) \
     ON CONFLICT (job_key, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
);
// The job's usage (`job_state_usage`, kept by triggers) less this key's own
// row, plus this value, against the quota: a few index lookups, however much
// the job holds. The value's own length is bound: PostgreSQL cannot type
// `length($3)`. Concurrent writers of one job may each pass the check before
// the others' rows count, so a quota can be passed by at most one value per
// writer running at that moment.
static STATE_SET_WITHIN: Sql = Sql::new(
    "INSERT INTO job_state (job_key, key, value, updated_at) SELECT $1, $2, $3, {now} \
     WHERE COALESCE((SELECT keys FROM job_state_usage WHERE job_key = $1), 0) \
       - (SELECT COUNT(*) FROM job_state WHERE job_key = $1 AND key = $2) < $4 \
     AND COALESCE((SELECT bytes FROM job_state_usage WHERE job_key = $1), 0) \
       - COALESCE((SELECT length(value) FROM job_state WHERE job_key = $1 AND key = $2), 0) + $6 <= $5 \
     ON CONFLICT (job_key, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
);
static STATE_DELETE: Sql = Sql::new("DELETE FROM job_state WHERE job_key = $1 AND key = $2");
static STATE_KEYS: Sql = Sql::new("SELECT key FROM job_state WHERE job_key = $1 ORDER BY key");

static MODULE_INSERT: Sql = Sql::new(
    "INSERT INTO modules (name, version, digest, wit_version, wit_rank, size, bytes, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, {now}) ON CONFLICT (name, version) DO NOTHING",
);
// The same bytes pushed again restore a version withdrawn by a rollback.
static MODULE_RESTORE: Sql = Sql::new(
    "UPDATE modules SET withdrawn = 0 WHERE name = $1 AND version = $2 AND digest = $3 AND withdrawn <> 0 AND $4",
);
static WIT_NEED_OF_MODULE_REFS: Sql = Sql::new("{refresh_wit_need} WHERE module IN ($1, $2, $3)");
static WIT_NEED_OF_MODULE_NAME: Sql = Sql::new("{refresh_wit_need} WHERE module = $1");
static MODULE_LATEST: Sql = Sql::new(
    "SELECT name, version, digest, wit_version, size, created_at, withdrawn FROM modules \
     WHERE name = $1 AND withdrawn = 0 ORDER BY created_at DESC, version DESC LIMIT 1",
);
static MODULE_VERSION: Sql = Sql::new(
    "SELECT name, version, digest, wit_version, size, created_at, withdrawn FROM modules \
     WHERE name = $1 AND version = $2",
);
static MODULE_DIGEST: Sql = Sql::new(
    "SELECT name, version, digest, wit_version, size, created_at, withdrawn FROM modules \
     WHERE digest = $1 ORDER BY created_at DESC LIMIT 1",
);
static MODULE_BYTES: Sql = Sql::new("SELECT bytes FROM modules WHERE digest = $1 LIMIT 1");
static MODULE_LIST: Sql = Sql::new(
    "SELECT name, version, digest, wit_version, size, created_at, withdrawn FROM modules \
     WHERE ($1 IS NULL OR name = $1) ORDER BY name, created_at DESC, version DESC",
);
static MODULE_WITHDRAW: Sql =
    Sql::new("UPDATE modules SET withdrawn = $1 WHERE name = $2 AND version = $3");

static FIRE_RUNNING: Sql = Sql::new(
    "SELECT fire_id, trigger_key, job_key, scheduled_ms, due_ms, attempt, state, node_id, lease_until_ms, recovering, \
     concurrency_key, rate_key \
     FROM fires UNION ALL SELECT fire_id, trigger_key, job_key, scheduled_ms, scheduled_ms, 1, 'acquired', \
     node_id, lease_until_ms, 0, NULL, NULL FROM held_claims ORDER BY 5, 1",
);
static NOW: Sql = Sql::new("SELECT {now}");
static FLOW_OF_JOB: Sql = Sql::new("SELECT flow FROM jobs WHERE job_key = $1");
static FLOW_KEY_COUNTS: Sql = Sql::new(
    "SELECT concurrency_key, COUNT(*) FROM fires WHERE state = 'acquired' AND concurrency_key IS NOT NULL \
     GROUP BY concurrency_key",
);
static FLOW_KEY_STARTS: Sql = Sql::new(
    "SELECT flow_key, starts FROM flow_keys WHERE flow_key IN (SELECT rate_key FROM fires WHERE rate_key IS NOT NULL)",
);
// Two cheap counts instead of a join per trigger: states walk the (state, ...)
// index; WAITING triggers of paused jobs, counted as PAUSED since they fire no
// more than paused triggers do, start from the partial index of paused jobs,
// which are few.
static TRIGGERS_BY_STATE: Sql =
    Sql::new("SELECT state, COUNT(*) AS n FROM triggers GROUP BY state ORDER BY state");
static TRIGGERS_HELD_BY_PAUSE: Sql = Sql::new(
    "SELECT COUNT(*) AS n FROM jobs j JOIN triggers t ON t.job_key = j.job_key \
     WHERE j.paused = 1 AND t.state = 'WAITING'",
);
static FIRES_EXECUTING: Sql = Sql::new(
    "SELECT (SELECT COUNT(*) FROM fires WHERE state = 'acquired') + (SELECT COUNT(*) FROM held_claims) AS n",
);

static AUDIT_PUT: Sql = Sql::new(
    "INSERT INTO audit_log (id, at_ms, actor, action, target, status, summary, client) \
     VALUES ($1, {now}, $2, $3, $4, $5, $6, $7)",
);
static AUDIT_AGED: Sql = Sql::new("DELETE FROM audit_log WHERE at_ms < {now} - $1");
// Rows older than the newest `max_rows` (rows sharing the last kept row's
// millisecond are kept too): one statement on both dialects.
static AUDIT_OVER: Sql = Sql::new(
    "DELETE FROM audit_log WHERE at_ms < \
     (SELECT at_ms FROM audit_log ORDER BY at_ms DESC, id DESC LIMIT 1 OFFSET $1)",
);
static AUDIT_LIST: Sql = Sql::new(
    "SELECT id, at_ms, actor, action, target, status, summary, client FROM audit_log \
     WHERE ($1 IS NULL OR actor = $1) AND ($2 IS NULL OR action = $2) \
     AND ($3 IS NULL OR at_ms < $3 OR (at_ms = $3 AND id < $4)) \
     ORDER BY at_ms DESC, id DESC LIMIT $5",
);

/// The channel every node listens on for pushed modules and added fires.
/// Channels are per database, not per schema, so the payload names the schema.
pub(crate) const NOTIFY_CHANNEL: &str = "quartzite_modules";

/// Tells every process using the store `payload`, on commit (see
/// [`Dialect::notify`]); nothing where one process uses the store.
pub(crate) async fn notify<DB: Db>(
    tx: &mut sqlx::Transaction<'_, DB>,
    payload: &str,
) -> Result<(), StoreError>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
{
    if let Some(sql) = DB::DIALECT.notify() {
        sqlx::query(sql)
            .bind(NOTIFY_CHANNEL)
            .bind(payload)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait]
impl<S, DB> Store for S
where
    S: Backend<Db = DB> + super::secrets::SecretStore,
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
    fn dialect(&self) -> Dialect {
        DB::DIALECT
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        self.migrate_schema().await
    }

    async fn state_get(&self, job_key: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar(STATE_GET.on(DB::DIALECT))
            .bind(job_key)
            .bind(key)
            .fetch_optional(self.pool())
            .await?)
    }

    async fn state_set(&self, job_key: &str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let _writer = writer(self).await;
        sqlx::query(STATE_SET.on(DB::DIALECT))
            .bind(job_key)
            .bind(key)
            .bind(value)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    async fn state_set_within(
        &self,
        job_key: &str,
        key: &str,
        value: &[u8],
        max_keys: u64,
        max_bytes: u64,
    ) -> Result<bool, StoreError> {
        let _writer = writer(self).await;
        let done = sqlx::query(STATE_SET_WITHIN.on(DB::DIALECT))
            .bind(job_key)
            .bind(key)
            .bind(value)
            .bind(big(max_keys))
            .bind(big(max_bytes))
            .bind(big(value.len() as u64))
            .execute(self.pool())
            .await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    async fn state_delete(&self, job_key: &str, key: &str) -> Result<bool, StoreError> {
        let _writer = writer(self).await;
        let done = sqlx::query(STATE_DELETE.on(DB::DIALECT))
            .bind(job_key)
            .bind(key)
            .execute(self.pool())
            .await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    async fn state_keys(&self, job_key: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(STATE_KEYS.on(DB::DIALECT))
            .bind(job_key)
            .fetch_all(self.pool())
            .await?)
    }

    async fn module_put(&self, m: &ModulePut) -> Result<ModuleRecord, StoreError> {
        let _writer = writer(self).await;
        let mut tx = self.pool().begin().await?;
        let added = sqlx::query(MODULE_INSERT.on(DB::DIALECT))
            .bind(&m.name)
            .bind(&m.version)
            .bind(&m.digest)
            .bind(&m.wit_version)
            .bind(super::model::wit_rank(&m.wit_version))
            .bind(big(m.bytes.len() as u64))
            .bind(&m.bytes)
            .execute(&mut *tx)
            .await?;
        let restored = sqlx::query(MODULE_RESTORE.on(DB::DIALECT))
            .bind(&m.name)
            .bind(&m.version)
            .bind(&m.digest)
            .bind(m.restore)
            .execute(&mut *tx)
            .await?;
        if DB::rows_affected(&added) > 0 || DB::rows_affected(&restored) > 0 {
            // Jobs naming this module by name, version or digest may now need
            // another contract version.
            sqlx::query(WIT_NEED_OF_MODULE_REFS.on(DB::DIALECT))
                .bind(&m.name)
                .bind(format!("{}@{}", m.name, m.version))
                .bind(format!("sha256:{}", m.digest))
                .execute(&mut *tx)
                .await?;
            notify(&mut tx, &m.digest).await?;
        }
        tx.commit().await?;
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
            ModuleRef::Latest(name) => {
                sqlx::query_as::<DB, ModuleRow>(MODULE_LATEST.on(DB::DIALECT)).bind(name)
            }
            ModuleRef::Version { name, version } => sqlx::query_as(MODULE_VERSION.on(DB::DIALECT))
                .bind(name)
                .bind(version),
            ModuleRef::Digest(digest) => sqlx::query_as(MODULE_DIGEST.on(DB::DIALECT)).bind(digest),
        };
        Ok(query
            .fetch_optional(self.pool())
            .await?
            .map(ModuleRow::into_record))
    }

    async fn module_bytes(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(sqlx::query_scalar(MODULE_BYTES.on(DB::DIALECT))
            .bind(digest)
            .fetch_optional(self.pool())
            .await?)
    }

    async fn module_watch(&self) -> Result<Option<ModuleWatch>, StoreError> {
        self.module_watch_start().await
    }

    async fn module_list(&self, name: Option<&str>) -> Result<Vec<ModuleRecord>, StoreError> {
        let rows: Vec<ModuleRow> = sqlx::query_as(MODULE_LIST.on(DB::DIALECT))
            .bind(name)
            .fetch_all(self.pool())
            .await?;
        let mut modules: Vec<ModuleRecord> = rows.into_iter().map(ModuleRow::into_record).collect();
        // Rows come per name, newest first: the first not withdrawn is current.
        let mut seen = std::collections::HashSet::new();
        for m in &mut modules {
            if !m.withdrawn && seen.insert(m.name.clone()) {
                m.current = true;
            }
        }
        Ok(modules)
    }

    async fn module_rollback(
        &self,
        r: &ModuleRollback,
    ) -> Result<Option<ModuleRecord>, StoreError> {
        let _writer = writer(self).await;
        let versions = self.module_list(Some(&r.name)).await?;
        let Some(current) = versions.iter().position(|m| m.current) else {
            return Ok(None);
        };
        let target = match &r.to {
            Some(v) => match versions.iter().position(|m| &m.version == v) {
                Some(i) => i,
                None => return Ok(None),
            },
            None => match versions.iter().skip(current + 1).position(|m| !m.withdrawn) {
                Some(i) => current + 1 + i,
                None => {
                    return Err(StoreError::Conflict(format!(
                        "module {} has no version older than {} to roll back to",
                        r.name, versions[current].version
                    )));
                }
            },
        };
        let mut tx = self.pool().begin().await?;
        // Rows newer than the target in `module_list` order are withdrawn (they
        // are listed before it); the target itself is restored.
        for (i, m) in versions.iter().enumerate() {
            let withdrawn = i64::from(i < target);
            if i64::from(m.withdrawn) != withdrawn {
                sqlx::query(MODULE_WITHDRAW.on(DB::DIALECT))
                    .bind(withdrawn)
                    .bind(&m.name)
                    .bind(&m.version)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        sqlx::query(WIT_NEED_OF_MODULE_NAME.on(DB::DIALECT))
            .bind(&r.name)
            .execute(&mut *tx)
            .await?;
        notify(&mut tx, &versions[target].digest).await?;
        tx.commit().await?;
        let target = ModuleRef::Version {
            name: r.name.clone(),
            version: versions[target].version.clone(),
        };
        Ok(self
            .module_get(&target)
            .await?
            .map(|m| ModuleRecord { current: true, ..m }))
    }

    async fn fire_running(&self) -> Result<Vec<FireRow>, StoreError> {
        let rows = sqlx::query(FIRE_RUNNING.on(DB::DIALECT))
            .fetch_all(self.pool())
            .await?;
        let mut fires = rows
            .iter()
            .map(|r| {
                Ok(FireRow {
                    fire_id: r.try_get("fire_id")?,
                    trigger_key: r.try_get("trigger_key")?,
                    job_key: r.try_get("job_key")?,
                    scheduled_ms: r.try_get("scheduled_ms")?,
                    due_ms: r.try_get("due_ms")?,
                    attempt: u32::try_from(r.try_get::<i64, _>("attempt")?).unwrap_or(0),
                    state: r.try_get("state")?,
                    node_id: r.try_get("node_id")?,
                    lease_until_ms: r.try_get("lease_until_ms")?,
                    recovering: r.try_get::<i64, _>("recovering")? != 0,
                    concurrency_key: r.try_get("concurrency_key")?,
                    rate_key: r.try_get("rate_key")?,
                    waiting_for: None,
                })
            })
            .collect::<Result<Vec<FireRow>, StoreError>>()?;
        let held = |f: &FireRow| {
            f.state == "scheduled" && (f.concurrency_key.is_some() || f.rate_key.is_some())
        };
        if !fires.iter().any(held) {
            return Ok(fires);
        }
        // Why keyed fires wait: their keys' running fires and admitted
        // starts, against the limits their jobs declare now.
        let now: i64 = sqlx::query_scalar(NOW.on(DB::DIALECT))
            .fetch_one(self.pool())
            .await?;
        let running: HashMap<String, i64> = sqlx::query_as(FLOW_KEY_COUNTS.on(DB::DIALECT))
            .fetch_all(self.pool())
            .await?
            .into_iter()
            .collect();
        let starts: HashMap<String, String> = sqlx::query_as(FLOW_KEY_STARTS.on(DB::DIALECT))
            .fetch_all(self.pool())
            .await?
            .into_iter()
            .collect();
        let mut flows: HashMap<String, Flow> = HashMap::new();
        for f in fires.iter_mut().filter(|f| held(f) && f.due_ms <= now) {
            if !flows.contains_key(&f.job_key) {
                let flow: Option<Option<String>> = sqlx::query_scalar(FLOW_OF_JOB.on(DB::DIALECT))
                    .bind(&f.job_key)
                    .fetch_optional(self.pool())
                    .await?;
                let flow = Flow::from_column(flow.flatten().as_deref());
                flows.insert(f.job_key.clone(), flow);
            }
            f.waiting_for = crate::domain::flow::why_waiting(
                &flows[&f.job_key],
                f.concurrency_key.as_deref(),
                f.rate_key.as_deref(),
                |key| running.get(key).copied().unwrap_or(0),
                |key| {
                    starts
                        .get(key)
                        .and_then(|s| serde_json::from_str(s).ok())
                        .unwrap_or_default()
                },
                now,
            );
        }
        Ok(fires)
    }

    async fn trigger_counts(&self) -> Result<TriggerCounts, StoreError> {
        let mut by_state: Vec<(String, i64)> = sqlx::query_as(TRIGGERS_BY_STATE.on(DB::DIALECT))
            .fetch_all(self.pool())
            .await?;
        let held: i64 = sqlx::query_scalar(TRIGGERS_HELD_BY_PAUSE.on(DB::DIALECT))
            .fetch_one(self.pool())
            .await?;
        if held > 0 {
            for (state, n) in &mut by_state {
                if state == "WAITING" {
                    *n -= held;
                }
            }
            by_state.push(("PAUSED".into(), held));
        }
        let executing: i64 = sqlx::query_scalar(FIRES_EXECUTING.on(DB::DIALECT))
            .fetch_one(self.pool())
            .await?;
        Ok(TriggerCounts {
            by_state,
            executing,
        })
    }

    async fn audit_put(&self, e: &AuditPut) -> Result<String, StoreError> {
        let _writer = writer(self).await;
        let id = super::sched::new_id();
        sqlx::query(AUDIT_PUT.on(DB::DIALECT))
            .bind(&id)
            .bind(&e.actor)
            .bind(&e.action)
            .bind(&e.target)
            .bind(i64::from(e.status))
            .bind(&e.summary)
            .bind(e.client.as_deref())
            .execute(self.pool())
            .await?;
        Ok(id)
    }

    async fn audit_cleanup(&self, max_age_ms: i64, max_rows: i64) -> Result<u64, StoreError> {
        let _writer = writer(self).await;
        let aged = sqlx::query(AUDIT_AGED.on(DB::DIALECT))
            .bind(max_age_ms)
            .execute(self.pool())
            .await?;
        let over = sqlx::query(AUDIT_OVER.on(DB::DIALECT))
            .bind((max_rows - 1).max(0))
            .execute(self.pool())
            .await?;
        Ok(DB::rows_affected(&aged) + DB::rows_affected(&over))
    }

    async fn audit_list(&self, f: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        let (before_ms, before_id) = match &f.before {
            Some((ms, id)) => (Some(*ms), Some(id.as_str())),
            None => (None, None),
        };
        let rows = sqlx::query(AUDIT_LIST.on(DB::DIALECT))
            .bind(f.actor.as_deref())
            .bind(f.action.as_deref())
            .bind(before_ms)
            .bind(before_id)
            .bind(if f.limit > 0 { f.limit } else { 100 })
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.try_get("id")?,
                    at_ms: r.try_get("at_ms")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    status: u16::try_from(r.try_get::<i64, _>("status")?).unwrap_or(0),
                    summary: r.try_get("summary")?,
                    client: r.try_get("client")?,
                })
            })
            .collect()
    }
}
