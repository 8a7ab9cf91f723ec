//! The `Store` methods whose SQL is the same in both dialects (`$n`
//! placeholders, times as UTC milliseconds), implemented once for each store type.

use super::ModuleRecord;
use chrono::{DateTime, Utc};

pub(crate) fn module_from_row<R: sqlx::Row>(row: &R) -> Result<ModuleRecord, super::StoreError>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let created: i64 = row.try_get("created_at")?;
    let size: i64 = row.try_get("size")?;
    let withdrawn: i64 = row.try_get("withdrawn")?;
    Ok(ModuleRecord {
        name: row.try_get("name")?,
        version: row.try_get("version")?,
        digest: row.try_get("digest")?,
        wit_version: row.try_get("wit_version")?,
        size: u64::try_from(size).unwrap_or(0),
        created_at: DateTime::<Utc>::from_timestamp_millis(created).unwrap_or_default(),
        withdrawn: withdrawn != 0,
        current: false,
    })
}

/// Implements [`super::Store`] for a store type whose inherent methods provide
/// `migrate_schema()`; `$dialect` names it and `$now` is its clock in UTC ms.
macro_rules! impl_store {
    ($store:ty, $dialect:expr, $now:literal) => {
        #[async_trait::async_trait]
        impl $crate::store::Store for $store {
            fn dialect(&self) -> $crate::store::Dialect {
                $dialect
            }

            async fn migrate(&self) -> Result<(), $crate::store::StoreError> {
                self.migrate_schema().await
            }

            async fn state_get(&self, job_key: &str, key: &str) -> Result<Option<Vec<u8>>, $crate::store::StoreError> {
                use sqlx::Row;
                let row = sqlx::query("SELECT value FROM job_state WHERE job_key = $1 AND key = $2")
                    .bind(job_key)
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(|r| r.try_get("value")).transpose()?)
            }

            async fn state_set(&self, job_key: &str, key: &str, value: &[u8]) -> Result<(), $crate::store::StoreError> {
                let _writer = self.writer().await;
                sqlx::query(concat!(
                    "INSERT INTO job_state (job_key, key, value, updated_at) VALUES ($1, $2, $3, ", $now, ") \
                     ON CONFLICT (job_key, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
                ))
                .bind(job_key)
                .bind(key)
                .bind(value)
                .execute(&self.pool)
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
            ) -> Result<bool, $crate::store::StoreError> {
                let _writer = self.writer().await;
                let big = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
                // The other keys' count and bytes, plus this value, against the quota.
                // The value's own length is bound: PostgreSQL cannot type `length($3)`.
                let done = sqlx::query(concat!(
                    "INSERT INTO job_state (job_key, key, value, updated_at) SELECT $1, $2, $3, ", $now, " \
                     WHERE (SELECT COUNT(*) FROM job_state WHERE job_key = $1 AND key <> $2) < $4 \
                     AND (SELECT COALESCE(SUM(length(value)), 0) FROM job_state WHERE job_key = $1 AND key <> $2) + $6 <= $5 \
                     ON CONFLICT (job_key, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
                ))
                .bind(job_key)
                .bind(key)
                .bind(value)
                .bind(big(max_keys))
                .bind(big(max_bytes))
                .bind(big(value.len() as u64))
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn state_delete(&self, job_key: &str, key: &str) -> Result<bool, $crate::store::StoreError> {
                let _writer = self.writer().await;
                let done = sqlx::query("DELETE FROM job_state WHERE job_key = $1 AND key = $2")
                    .bind(job_key)
                    .bind(key)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn state_keys(&self, job_key: &str) -> Result<Vec<String>, $crate::store::StoreError> {
                use sqlx::Row;
                let rows = sqlx::query("SELECT key FROM job_state WHERE job_key = $1 ORDER BY key")
                    .bind(job_key)
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter().map(|r| r.try_get("key").map_err($crate::store::StoreError::from)).collect()
            }

            async fn module_put(&self, m: &$crate::store::ModulePut) -> Result<$crate::store::ModuleRecord, $crate::store::StoreError> {
                let _writer = self.writer().await;
                let mut tx = self.pool.begin().await?;
                let added = sqlx::query(concat!(
                    "INSERT INTO modules (name, version, digest, wit_version, wit_rank, size, bytes, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, ", $now, ") ON CONFLICT (name, version) DO NOTHING"
                ))
                .bind(&m.name)
                .bind(&m.version)
                .bind(&m.digest)
                .bind(&m.wit_version)
                .bind($crate::store::model::wit_rank(&m.wit_version))
                .bind(i64::try_from(m.bytes.len()).unwrap_or(i64::MAX))
                .bind(&m.bytes)
                .execute(&mut *tx)
                .await?;
                // The same bytes pushed again restore a version withdrawn by a rollback.
                let restored = sqlx::query(
                    "UPDATE modules SET withdrawn = 0 WHERE name = $1 AND version = $2 AND digest = $3 AND withdrawn <> 0 AND $4",
                )
                .bind(&m.name)
                .bind(&m.version)
                .bind(&m.digest)
                .bind(m.restore)
                .execute(&mut *tx)
                .await?;
                if added.rows_affected() > 0 || restored.rows_affected() > 0 {
                    // Jobs naming this module by name, version or digest may now
                    // need another contract version.
                    sqlx::query(concat!($crate::store::sched::refresh_wit_need!(), "WHERE module IN ($1, $2, $3)"))
                        .bind(&m.name)
                        .bind(format!("{}@{}", m.name, m.version))
                        .bind(format!("sha256:{}", m.digest))
                        .execute(&mut *tx)
                        .await?;
                    self.module_pushed(&mut tx, &m.digest).await?;
                }
                tx.commit().await?;
                let version = $crate::store::ModuleRef::Version { name: m.name.clone(), version: m.version.clone() };
                let stored = self.module_get(&version).await?.ok_or_else(|| {
                    $crate::store::StoreError::Conflict(format!("module {}@{} vanished while being stored", m.name, m.version))
                })?;
                if stored.digest != m.digest {
                    return Err($crate::store::StoreError::Conflict(format!(
                        "module {}@{} already exists with digest {}; a pushed version never changes, push a new version",
                        m.name, m.version, stored.digest
                    )));
                }
                Ok(stored)
            }

            async fn module_get(&self, module: &$crate::store::ModuleRef) -> Result<Option<$crate::store::ModuleRecord>, $crate::store::StoreError> {
                use $crate::store::ModuleRef;
                let query = match module {
                    ModuleRef::Latest(name) => sqlx::query(
                        "SELECT name, version, digest, wit_version, size, created_at, withdrawn FROM modules \
                         WHERE name = $1 AND withdrawn = 0 ORDER BY created_at DESC, version DESC LIMIT 1",
                    )
                    .bind(name),
                    ModuleRef::Version { name, version } => sqlx::query(
                        "SELECT name, version, digest, wit_version, size, created_at, withdrawn FROM modules WHERE name = $1 AND version = $2",
                    )
                    .bind(name)
                    .bind(version),
                    ModuleRef::Digest(digest) => sqlx::query(
                        "SELECT name, version, digest, wit_version, size, created_at, withdrawn FROM modules \
                         WHERE digest = $1 ORDER BY created_at DESC LIMIT 1",
                    )
                    .bind(digest),
                };
                query.fetch_optional(&self.pool).await?.as_ref().map($crate::store::common::module_from_row).transpose()
            }

            async fn module_bytes(&self, digest: &str) -> Result<Option<Vec<u8>>, $crate::store::StoreError> {
                use sqlx::Row;
                let row = sqlx::query("SELECT bytes FROM modules WHERE digest = $1 LIMIT 1")
                    .bind(digest)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(|r| r.try_get("bytes")).transpose()?)
            }

            async fn module_watch(&self) -> Result<Option<$crate::store::ModuleWatch>, $crate::store::StoreError> {
                self.module_watch_start().await
            }

            async fn module_list(&self, name: Option<&str>) -> Result<Vec<$crate::store::ModuleRecord>, $crate::store::StoreError> {
                let rows = sqlx::query(
                    "SELECT name, version, digest, wit_version, size, created_at, withdrawn FROM modules \
                     WHERE ($1 IS NULL OR name = $1) ORDER BY name, created_at DESC, version DESC",
                )
                .bind(name)
                .fetch_all(&self.pool)
                .await?;
                let mut modules = rows
                    .iter()
                    .map($crate::store::common::module_from_row)
                    .collect::<Result<Vec<_>, _>>()?;
                // Rows come per name, newest first: the first not withdrawn is current.
                let mut seen = std::collections::HashSet::new();
                for m in &mut modules {
                    if !m.withdrawn && seen.insert(m.name.clone()) {
                        m.current = true;
                    }
                }
                Ok(modules)
            }

            async fn module_rollback(&self, r: &$crate::store::ModuleRollback) -> Result<Option<$crate::store::ModuleRecord>, $crate::store::StoreError> {
                use $crate::store::ModuleRef;
                let _writer = self.writer().await;
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
                            return Err($crate::store::StoreError::Conflict(format!(
                                "module {} has no version older than {} to roll back to",
                                r.name, versions[current].version
                            )));
                        }
                    },
                };
                let mut tx = self.pool.begin().await?;
                // Rows newer than the target in `module_list` order are withdrawn
                // (they are listed before it); the target itself is restored.
                for (i, m) in versions.iter().enumerate() {
                    let withdrawn = i64::from(i < target);
                    if i64::from(m.withdrawn) != withdrawn {
                        sqlx::query("UPDATE modules SET withdrawn = $1 WHERE name = $2 AND version = $3")
                            .bind(withdrawn)
                            .bind(&m.name)
                            .bind(&m.version)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                sqlx::query(concat!($crate::store::sched::refresh_wit_need!(), "WHERE module = $1"))
                    .bind(&r.name)
                    .execute(&mut *tx)
                    .await?;
                self.module_pushed(&mut tx, &versions[target].digest).await?;
                tx.commit().await?;
                self.module_get(&ModuleRef::Version { name: r.name.clone(), version: versions[target].version.clone() })
                    .await
                    .map(|m| m.map(|m| $crate::store::ModuleRecord { current: true, ..m }))
            }

            async fn fire_running(&self) -> Result<Vec<$crate::store::model::FireRow>, $crate::store::StoreError> {
                use sqlx::Row;
                let rows = sqlx::query(
                    "SELECT fire_id, trigger_key, job_key, scheduled_ms, due_ms, attempt, state, node_id, lease_until_ms, recovering \
                     FROM fires UNION ALL SELECT fire_id, trigger_key, job_key, scheduled_ms, scheduled_ms, 1, 'acquired', \
                     node_id, lease_until_ms, 0 FROM held_claims ORDER BY 5, 1",
                )
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok($crate::store::model::FireRow {
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
                        })
                    })
                    .collect()
            }

            async fn trigger_counts(&self) -> Result<$crate::store::model::TriggerCounts, $crate::store::StoreError> {
                use sqlx::Row;
                // Two cheap counts instead of a join per trigger: states walk the
                // (state, ...) index; WAITING triggers of paused jobs, counted as PAUSED
                // since they fire no more than paused triggers do, start from the
                // partial index of paused jobs, which are few.
                let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM triggers GROUP BY state ORDER BY state")
                    .fetch_all(&self.pool)
                    .await?;
                let mut by_state = rows
                    .iter()
                    .map(|r| Ok((r.try_get("state")?, r.try_get("n")?)))
                    .collect::<Result<Vec<(String, i64)>, sqlx::Error>>()?;
                let held: i64 = sqlx::query(
                    "SELECT COUNT(*) AS n FROM jobs j JOIN triggers t ON t.job_key = j.job_key WHERE j.paused = 1 AND t.state = 'WAITING'",
                )
                .fetch_one(&self.pool)
                .await?
                .try_get("n")?;
                if held > 0 {
                    for (state, n) in &mut by_state {
                        if state == "WAITING" {
                            *n -= held;
                        }
                    }
                    by_state.push(("PAUSED".into(), held));
                }
                let executing: i64 = sqlx::query(
                    "SELECT (SELECT COUNT(*) FROM fires WHERE state = 'acquired') + \
                     (SELECT COUNT(*) FROM held_claims) AS n",
                )
                .fetch_one(&self.pool)
                .await?
                .try_get("n")?;
                Ok($crate::store::model::TriggerCounts { by_state, executing })
            }

            async fn audit_put(&self, e: &$crate::store::model::AuditPut) -> Result<String, $crate::store::StoreError> {
                let _writer = self.writer().await;
                let id = $crate::store::sched::new_id();
                sqlx::query(concat!(
                    "INSERT INTO audit_log (id, at_ms, actor, action, target, status, summary, client) VALUES ($1, ", $now, ", $2, $3, $4, $5, $6, $7)"
                ))
                .bind(&id)
                .bind(&e.actor)
                .bind(&e.action)
                .bind(&e.target)
                .bind(i64::from(e.status))
                .bind(&e.summary)
                .bind(e.client.as_deref())
                .execute(&self.pool)
                .await?;
                Ok(id)
            }

            async fn audit_cleanup(&self, max_age_ms: i64, max_rows: i64) -> Result<u64, $crate::store::StoreError> {
                let _writer = self.writer().await;
                let aged = sqlx::query(concat!("DELETE FROM audit_log WHERE at_ms < ", $now, " - $1"))
                    .bind(max_age_ms)
                    .execute(&self.pool)
                    .await?;
                // Rows older than the newest `max_rows` (rows sharing the last
                // kept row's millisecond are kept too): one statement on both dialects.
                let over = sqlx::query(
                    "DELETE FROM audit_log WHERE at_ms < \
                     (SELECT at_ms FROM audit_log ORDER BY at_ms DESC, id DESC LIMIT 1 OFFSET $1)",
                )
                .bind((max_rows - 1).max(0))
                .execute(&self.pool)
                .await?;
                Ok(aged.rows_affected() + over.rows_affected())
            }

            async fn audit_list(&self, f: &$crate::store::model::AuditFilter) -> Result<Vec<$crate::store::model::AuditEntry>, $crate::store::StoreError> {
                use sqlx::Row;
                let (before_ms, before_id) = match &f.before {
                    Some((ms, id)) => (Some(*ms), Some(id.as_str())),
                    None => (None, None),
                };
                let rows = sqlx::query(
                    "SELECT id, at_ms, actor, action, target, status, summary, client FROM audit_log \
                     WHERE ($1 IS NULL OR actor = $1) AND ($2 IS NULL OR action = $2) \
                     AND ($3 IS NULL OR at_ms < $3 OR (at_ms = $3 AND id < $4)) \
                     ORDER BY at_ms DESC, id DESC LIMIT $5",
                )
                .bind(f.actor.as_deref())
                .bind(f.action.as_deref())
                .bind(before_ms)
                .bind(before_id)
                .bind(if f.limit > 0 { f.limit } else { 100 })
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|r| {
                        Ok($crate::store::model::AuditEntry {
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
    };
}

pub(crate) use impl_store;
