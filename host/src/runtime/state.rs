//! A run's store data and the host side of the `quartzite:job/host` interface.
//!
//! Every argument a guest passes is bounded before the host acts on it, and every
//! error a guest sees is a `host-error` without host internals.

use super::bindings::quartzite::job::host::{Host, HostLockGuard};
use super::bindings::quartzite::job::types::{self as wit, HostError, LogLevel as WitLevel};
use super::limits::{MAX_EMITS_PER_RUN, MAX_KV_KEY, MAX_LOCK_NAME, MAX_LOG_MESSAGE, RunLimiter};
use super::logs::RunLog;
use super::outcome::{LogLevel, LogSource};
use super::services::{
    EmitRequest, Emitted, HostServices, KvQuota, LockAcquire, LockGuardEntry, ServiceError,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use wasmtime::component::{HasData, Resource, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// The node's state as runs see it: running, draining (runs are asked to stop),
/// or aborting (runs are stopped).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum NodeState {
    Running,
    Draining,
    Aborting,
}

/// Everything a run's `Store` holds.
pub(crate) struct RunState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) http_ctx: wasmtime_wasi_http::WasiHttpCtx,
    pub(crate) http: super::http::RunHttp,
    /// `config` grants, served through `wasi:config/store`.
    pub(crate) config: wasmtime_wasi_config::WasiConfigVariables,
    /// The job's grants; `None` when nothing is granted (every emit refused).
    pub(crate) grants: Option<Arc<crate::grants::CompiledGrants>>,
    /// Hides the run's secret values in what the guest hands the host.
    pub(crate) redactor: Option<Arc<crate::grants::Redactor>>,
    pub(crate) limiter: RunLimiter,
    pub(crate) log: RunLog,
    pub(crate) services: HostServices,
    pub(crate) job_key: Arc<str>,
    pub(crate) fire_id: Arc<str>,
    /// The event behind the fire, for `trigger-event`.
    pub(crate) event: Option<super::TriggerEvent>,
    /// The fire's event depth: emits are one deeper.
    pub(crate) depth: u32,
    /// Emits so far in this run: numbers the keys derived for keyless emits.
    pub(crate) emits: u32,
    /// The first emit of this run refused by a fan-out bound (the chain's
    /// budget, the job's waiting fires) and the error it got: the run's later
    /// emits get the same without a store round trip or another history row,
    /// so a guest ignoring the error cannot turn each retry into a write.
    pub(crate) fan_out_refused: Option<(Emitted, String)>,
    pub(crate) holder: Arc<str>,
    /// When `cancelled()` turns true.
    pub(crate) soft_deadline: Instant,
    pub(crate) node: watch::Receiver<NodeState>,
    /// A request to stop this run alone (see `RunRequest::stop`).
    pub(crate) stop: Option<watch::Receiver<Option<super::StopRequest>>>,
    pub(crate) max_kv_value: usize,
    pub(crate) kv_quota: KvQuota,
    pub(crate) max_locks: usize,
    pub(crate) locks_held: usize,
    /// Where the run is in its fire's trace (`domain::trace`): the parent of
    /// the spans of its host calls that reach the store. `None` when the fire
    /// is not traced.
    pub(crate) trace: Option<crate::domain::trace::RunContext>,
}

/// A span for one host call that reaches the store, under the run's span;
/// it ends when dropped, and records `error` when the call fails.
macro_rules! call_span {
    ($state:expr, $name:literal) => {
        {
            let span = tracing::trace_span!(
                target: crate::domain::trace::FIRE_TARGET,
                parent: None,
                $name,
                error = tracing::field::Empty,
            );
            if let Some(run) = &$state.trace {
                run.adopt(&span);
            }
            span
        }
    };
}

/// `result`, with its error (if any) recorded on the call's span.
fn traced<T>(span: &tracing::Span, result: Result<T, HostError>) -> Result<T, HostError> {
    if let Err(e) = &result
        && !span.is_disabled()
    {
        span.record("error", tracing::field::debug(e));
    }
    result
}

impl RunState {
    pub(crate) fn is_cancelled(&self) -> bool {
        Instant::now() >= self.soft_deadline
            || *self.node.borrow() >= NodeState::Draining
            || self.stop.as_ref().is_some_and(|s| s.borrow().is_some())
    }

    fn time_left(&self) -> Duration {
        self.soft_deadline.saturating_duration_since(Instant::now())
    }
}

impl WasiView for RunState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wasmtime_wasi_http::WasiHttpView for RunState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut self.http_ctx,
            table: &mut self.table,
            hooks: &mut self.http,
        }
    }
}

impl RunState {
    /// `text` with the run's secret values redacted.
    pub(crate) fn redact(&self, text: String) -> String {
        match &self.redactor {
            Some(r) => r.apply(&text).into_owned(),
            None => text,
        }
    }
}

/// Marker for `add_to_linker`: the host interface is implemented on `RunState` itself.
pub(crate) struct HostData;

impl HasData for HostData {
    type Data<'a> = &'a mut RunState;
}

fn invalid(msg: impl Into<String>) -> HostError {
    HostError::InvalidArgument(msg.into())
}

fn service_error(e: ServiceError) -> HostError {
    match e {
        ServiceError::Timeout => HostError::Timeout,
        ServiceError::LimitExceeded(m) => HostError::LimitExceeded(m),
        // The store's own message may name tables or hosts: keep it in our logs only.
        ServiceError::Unavailable(detail) => {
            tracing::warn!(%detail, "host service unavailable during a guest call");
            HostError::Unavailable("state store unavailable".into())
        }
    }
}

fn check_key(key: &str) -> Result<(), HostError> {
    if key.is_empty() {
        Err(invalid("kv key is empty"))
    } else if key.len() > MAX_KV_KEY {
        Err(invalid(format!(
            "kv key is {} bytes; the limit is {MAX_KV_KEY}",
            key.len()
        )))
    } else {
        Ok(())
    }
}

impl wit::Host for RunState {}

impl Host for RunState {
    async fn log(&mut self, level: WitLevel, message: String) -> wasmtime::Result<()> {
        let level = match level {
            WitLevel::Trace => LogLevel::Trace,
            WitLevel::Debug => LogLevel::Debug,
            WitLevel::Info => LogLevel::Info,
            WitLevel::Warn => LogLevel::Warn,
            WitLevel::Error => LogLevel::Error,
        };
        let message = if message.len() > MAX_LOG_MESSAGE {
            &message[..floor_char(&message, MAX_LOG_MESSAGE)]
        } else {
            &message
        };
        self.log.push(level, LogSource::Log, message);
        Ok(())
    }

    async fn cancelled(&mut self) -> wasmtime::Result<bool> {
        Ok(self.is_cancelled())
    }

    async fn kv_get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, HostError>> {
        if let Err(e) = check_key(&key) {
            return Ok(Err(e));
        }
        let span = call_span!(self, "kv-get");
        let got = self.services.kv.kv_get(&self.job_key, &key).await;
        Ok(traced(&span, got.map_err(service_error)))
    }

    async fn kv_set(
        &mut self,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), HostError>> {
        if let Err(e) = check_key(&key) {
            return Ok(Err(e));
        }
        if value.len() > self.max_kv_value {
            return Ok(Err(HostError::LimitExceeded(format!(
                "kv value is {} bytes; the limit is {}",
                value.len(),
                self.max_kv_value
            ))));
        }
        let value = match self.redactor.as_ref().and_then(|r| r.apply_bytes(&value)) {
            Some(redacted) => redacted,
            None => value,
        };
        let span = call_span!(self, "kv-set");
        let set = self
            .services
            .kv
            .kv_set(&self.job_key, &key, &value, self.kv_quota)
            .await;
        Ok(traced(&span, set.map_err(service_error)))
    }

    async fn kv_delete(&mut self, key: String) -> wasmtime::Result<Result<bool, HostError>> {
        if let Err(e) = check_key(&key) {
            return Ok(Err(e));
        }
        let span = call_span!(self, "kv-delete");
        let deleted = self.services.kv.kv_delete(&self.job_key, &key).await;
        Ok(traced(&span, deleted.map_err(service_error)))
    }

    async fn lock(
        &mut self,
        name: String,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<Resource<LockGuardEntry>, HostError>> {
        if name.is_empty() || name.len() > MAX_LOCK_NAME {
            return Ok(Err(invalid(format!(
                "lock name must be 1 to {MAX_LOCK_NAME} bytes"
            ))));
        }
        if self.locks_held >= self.max_locks {
            return Ok(Err(HostError::LimitExceeded(format!(
                "a run may hold at most {} locks",
                self.max_locks
            ))));
        }
        if self.is_cancelled() {
            return Ok(Err(HostError::Cancelled));
        }
        // Never wait past the point where the run is asked to stop.
        let timeout = Duration::from_millis(u64::from(timeout_ms)).min(self.time_left());
        let params = LockAcquire {
            name: guest_lock_name(&self.job_key, &name),
            holder: self.holder.to_string(),
            timeout,
        };
        let span = call_span!(self, "lock");
        let lease = match self.services.locks.lock_acquire(&params).await {
            Ok(lease) => lease,
            Err(ServiceError::Timeout) if self.is_cancelled() => {
                return Ok(traced(&span, Err(HostError::Cancelled)));
            }
            Err(e) => return Ok(traced(&span, Err(service_error(e)))),
        };
        drop(span);
        let entry = LockGuardEntry {
            lease,
            locks: Arc::clone(&self.services.locks),
        };
        // If the table refuses the entry, dropping it releases the lock at once.
        let resource = self.table.push(entry)?;
        self.locks_held += 1;
        Ok(Ok(resource))
    }

    async fn trigger_event(&mut self) -> wasmtime::Result<Option<wit::Event>> {
        Ok(self.event.as_ref().map(|e| wit::Event {
            id: e.id.clone(),
            name: e.name.clone(),
            payload: e.payload.clone(),
            key: e.key.clone(),
            depth: e.depth,
            emitted_at: e
                .emitted_at
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            source_job: e.source_job.clone(),
        }))
    }

    async fn emit(
        &mut self,
        name: String,
        payload: String,
        key: Option<String>,
    ) -> wasmtime::Result<Result<String, HostError>> {
        let span = call_span!(self, "emit");
        let emitted = self.emit_event(name, payload, key).await;
        Ok(traced(&span, emitted))
    }
}

impl RunState {
    async fn emit_event(
        &mut self,
        name: String,
        payload: String,
        key: Option<String>,
    ) -> Result<String, HostError> {
        crate::domain::events::check_event_name(&name).map_err(invalid)?;
        if !self.grants.as_ref().is_some_and(|g| g.emit_allowed(&name)) {
            self.log.push(
                LogLevel::Warn,
                LogSource::Log,
                &format!(
                    "event {name:?} not emitted: the job has no emit grant for it; \
                     `emit = [\"{name}\"]` in [job.grants] would allow it"
                ),
            );
            return Err(HostError::InvalidArgument(format!(
                "emitting {name:?} is not granted to this job (grant it with emit = [\"{name}\"])"
            )));
        }
        let payload = self.redact(payload);
        let key = key.map(|k| self.redact(k));
        crate::domain::events::check_event_input(key.as_deref(), &payload).map_err(|e| {
            if payload.len() > crate::domain::events::MAX_EVENT_PAYLOAD {
                HostError::LimitExceeded(e)
            } else {
                invalid(e)
            }
        })?;
        if self.emits >= MAX_EMITS_PER_RUN {
            return Err(HostError::LimitExceeded(format!(
                "a run may emit at most {MAX_EMITS_PER_RUN} events"
            )));
        }
        if self.is_cancelled() {
            return Err(HostError::Cancelled);
        }
        self.emits += 1;
        if let Some((refusal, message)) = &self.fan_out_refused {
            self.services.events.refused_again(refusal);
            return Err(HostError::LimitExceeded(message.clone()));
        }
        // Without a key, the fire and the call's position make one: a retried or
        // recovered run that emits the same events in the same order emits once.
        let key = key.unwrap_or_else(|| format!("fire:{}:{}", self.fire_id, self.emits));
        let request = EmitRequest {
            name,
            payload,
            key,
            depth: self.depth.saturating_add(1),
            job_key: self.job_key.to_string(),
            fire_id: self.fire_id.to_string(),
            parent_event: self.event.as_ref().map(|e| e.id.clone()),
        };
        match self.services.events.emit(&request).await {
            Ok(Emitted::Accepted { event_id, .. } | Emitted::Duplicate { event_id }) => {
                Ok(event_id)
            }
            Ok(Emitted::DepthExceeded { limit }) => {
                self.log.push(
                    LogLevel::Warn,
                    LogSource::Log,
                    &format!(
                        "event {:?} not emitted: the chain of events would be {} deep, over the limit of {limit}",
                        request.name, request.depth
                    ),
                );
                Err(HostError::LimitExceeded(format!(
                    "event chain depth limit {limit} reached: {:?} not emitted",
                    request.name
                )))
            }
            Ok(refusal @ Emitted::ChainBudgetExceeded { limit }) => {
                self.log.push(
                    LogLevel::Warn,
                    LogSource::Log,
                    &format!(
                        "event {:?} not emitted: the chain of events this run belongs to holds its budget of {limit} events; \
                         this run's later emits are refused too",
                        request.name
                    ),
                );
                let message = format!(
                    "event chain budget of {limit} events reached: no more events from this run"
                );
                self.fan_out_refused = Some((refusal, message.clone()));
                Err(HostError::LimitExceeded(message))
            }
            Ok(refusal @ Emitted::JobFiresExceeded { waiting, limit }) => {
                self.log.push(
                    LogLevel::Warn,
                    LogSource::Log,
                    &format!(
                        "event {:?} not emitted: this job's events have {waiting} fires waiting, at the limit of {limit}; \
                         this run's later emits are refused too",
                        request.name
                    ),
                );
                let message = format!(
                    "this job's events have {waiting} fires waiting (limit {limit}): no more events from this run"
                );
                self.fan_out_refused = Some((refusal, message.clone()));
                Err(HostError::LimitExceeded(message))
            }
            Err(e) => Err(service_error(e)),
        }
    }
}

impl HostLockGuard for RunState {
    async fn name(&mut self, guard: Resource<LockGuardEntry>) -> wasmtime::Result<String> {
        // The guest sees the name it asked for, not the namespace around it.
        let name = &self.table.get(&guard)?.lease.name;
        let namespace = guest_lock_name(&self.job_key, "");
        Ok(name.strip_prefix(&namespace).unwrap_or(name).to_string())
    }

    async fn fencing_token(&mut self, guard: Resource<LockGuardEntry>) -> wasmtime::Result<u64> {
        Ok(self.table.get(&guard)?.lease.token)
    }

    async fn drop(&mut self, guard: Resource<LockGuardEntry>) -> wasmtime::Result<()> {
        // Removing the entry drops it, and its Drop releases the lease.
        self.table.delete(guard)?;
        self.locks_held = self.locks_held.saturating_sub(1);
        Ok(())
    }
}

/// Every lock name a guest passes is put under this prefix and its job's group
/// (`guest:GROUP:NAME`), so a guest can reach neither the host's own task locks
/// (`quartzite.*`) nor another group's locks: third-party guests are untrusted.
const GUEST_LOCK_PREFIX: &str = "guest:";

/// The cluster lock a guest's `lock(name)` takes for the job `job_key` (`GROUP/NAME`).
pub(crate) fn guest_lock_name(job_key: &str, name: &str) -> String {
    let group = job_key.split_once('/').map_or(job_key, |(group, _)| group);
    format!("{GUEST_LOCK_PREFIX}{group}:{name}")
}

fn floor_char(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}
