//! The seams between a running guest and the rest of the node: durable kv state,
//! cluster locks and events. The runtime only knows these traits; the in-process
//! implementations here serve `run-once` and tests, and the store and cluster
//! replace them with database-backed ones.

use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;

/// Why a kv or lock call failed on the host side. Shown to guests without
/// internals: `Unavailable` carries a short, safe message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    #[error("timed out")]
    Timeout,
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The call would go over a quota; the message says which, for the guest.
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
}

/// What a job's whole kv state may hold: keys, and bytes of values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvQuota {
    pub max_keys: u64,
    pub max_bytes: u64,
}

impl KvQuota {
    /// The guest's error for a write the quota refused.
    pub fn exceeded(&self) -> ServiceError {
        ServiceError::LimitExceeded(format!(
            "the job's kv state may hold at most {} keys and {} bytes of values",
            self.max_keys, self.max_bytes
        ))
    }
}

/// Per-job durable key-value state.
///
/// Implementations scope keys by `job_key`: one job never sees another's keys.
#[async_trait]
pub trait KvStore: Send + Sync + 'static {
    /// Reads `key` of `job_key`'s state.
    async fn kv_get(&self, job_key: &str, key: &str) -> Result<Option<Vec<u8>>, ServiceError>;
    /// Writes `key` of `job_key`'s state, unless afterwards the state would be
    /// over `quota`: then nothing is written and the error is `LimitExceeded`.
    async fn kv_set(
        &self,
        job_key: &str,
        key: &str,
        value: &[u8],
        quota: KvQuota,
    ) -> Result<(), ServiceError>;
    /// Deletes `key`; returns whether it existed.
    async fn kv_delete(&self, job_key: &str, key: &str) -> Result<bool, ServiceError>;
}

/// What a lock acquisition asks for.
#[derive(Clone, Debug)]
pub struct LockAcquire {
    pub name: String,
    /// Who will hold it: node and fire, for operators listing holders.
    pub holder: String,
    /// How long to wait for a holder to release it.
    pub timeout: Duration,
}

/// A held lock. `token` grows every time the lock changes hands (fencing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub name: String,
    pub holder: String,
    pub token: u64,
}

/// Named cluster-wide locks.
#[async_trait]
pub trait LockService: Send + Sync + 'static {
    /// Waits up to `params.timeout` for the lock.
    async fn lock_acquire(&self, params: &LockAcquire) -> Result<Lease, ServiceError>;

    /// Releases a lease. Synchronous because it runs from `Drop` when a run's store
    /// is torn down; implementations that need I/O queue it and return at once.
    /// Releasing a lease that is no longer held (expired, taken over) does nothing.
    fn lock_release(&self, lease: &Lease);
}

/// In-memory kv state, for one process.
#[derive(Debug, Default)]
pub struct MemoryKv {
    values: Mutex<HashMap<(String, String), Vec<u8>>>,
}

impl MemoryKv {
    pub fn new() -> Self {
        MemoryKv::default()
    }
}

#[async_trait]
impl KvStore for MemoryKv {
    async fn kv_get(&self, job_key: &str, key: &str) -> Result<Option<Vec<u8>>, ServiceError> {
        let values = self.values.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(values.get(&(job_key.to_string(), key.to_string())).cloned())
    }

    async fn kv_set(
        &self,
        job_key: &str,
        key: &str,
        value: &[u8],
        quota: KvQuota,
    ) -> Result<(), ServiceError> {
        let mut values = self.values.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut keys, mut bytes) = (0u64, value.len() as u64);
        for ((job, k), v) in values.iter() {
            if job == job_key && k != key {
                keys += 1;
                bytes += v.len() as u64;
            }
        }
        if keys >= quota.max_keys || bytes > quota.max_bytes {
            return Err(quota.exceeded());
        }
        values.insert((job_key.to_string(), key.to_string()), value.to_vec());
        Ok(())
    }

    async fn kv_delete(&self, job_key: &str, key: &str) -> Result<bool, ServiceError> {
        let mut values = self.values.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(values
            .remove(&(job_key.to_string(), key.to_string()))
            .is_some())
    }
}

/// In-process locks: exclusive within this process only.
#[derive(Debug, Default)]
pub struct LocalLocks {
    held: Mutex<HashMap<String, Lease>>,
    next_token: AtomicU64,
    released: Notify,
}

impl LocalLocks {
    pub fn new() -> Self {
        LocalLocks::default()
    }

    /// The leases held right now, sorted by name.
    pub fn holders(&self) -> Vec<Lease> {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let mut leases: Vec<Lease> = held.values().cloned().collect();
        leases.sort_by(|a, b| a.name.cmp(&b.name));
        leases
    }

    fn try_take(&self, params: &LockAcquire) -> Option<Lease> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if held.contains_key(&params.name) {
            return None;
        }
        let lease = Lease {
            name: params.name.clone(),
            holder: params.holder.clone(),
            token: self.next_token.fetch_add(1, Ordering::Relaxed) + 1,
        };
        held.insert(params.name.clone(), lease.clone());
        Some(lease)
    }
}

#[async_trait]
impl LockService for LocalLocks {
    async fn lock_acquire(&self, params: &LockAcquire) -> Result<Lease, ServiceError> {
        let deadline = tokio::time::Instant::now() + params.timeout;
        loop {
            // Register for the wake-up before looking, so a release in between is not missed.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if let Some(lease) = self.try_take(params) {
                return Ok(lease);
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return Err(ServiceError::Timeout);
            }
        }
    }

    fn lock_release(&self, lease: &Lease) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if held
            .get(&lease.name)
            .is_some_and(|l| l.token == lease.token)
        {
            held.remove(&lease.name);
            drop(held);
            self.released.notify_waiters();
        }
    }
}

/// An event a guest emits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmitRequest {
    pub name: String,
    /// JSON text.
    pub payload: String,
    /// The guest's key, or one derived from the fire and the call's position.
    pub key: String,
    /// The emitting fire's depth + 1.
    pub depth: u32,
    pub job_key: String,
    pub fire_id: String,
    /// The event that started the emitting fire: the new event joins its chain.
    pub parent_event: Option<String>,
}

/// What became of an emitted event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Emitted {
    /// Accepted; `fires` subscribers will run.
    Accepted { event_id: String, fires: usize },
    /// The key was emitted before: nothing new started.
    Duplicate { event_id: String },
    /// The chain of events is too deep: refused (and recorded).
    DepthExceeded { limit: u32 },
    /// The chain of events holds its budget of `limit` events: refused (and recorded).
    ChainBudgetExceeded { limit: u32 },
    /// The emitting job's events have `waiting` fires not yet ended, at least
    /// `limit`: refused (and recorded).
    JobFiresExceeded { waiting: u64, limit: u32 },
}

impl Emitted {
    /// The label of the outcome in `quartzite_events_total{result}`, as the
    /// store's outcome it came from has it.
    pub fn result(&self) -> &'static str {
        match self {
            Emitted::Accepted { .. } => "accepted",
            Emitted::Duplicate { .. } => "duplicate",
            Emitted::DepthExceeded { .. } => "depth-exceeded",
            Emitted::ChainBudgetExceeded { .. } => "chain-budget-exceeded",
            Emitted::JobFiresExceeded { .. } => "job-fires-exceeded",
        }
    }
}

/// Where guests' events go.
#[async_trait]
pub trait EventSink: Send + Sync + 'static {
    async fn emit(&self, request: &EmitRequest) -> Result<Emitted, ServiceError>;

    /// An emit the run refused by itself, without asking the sink: `refusal`
    /// is what the sink answered to the run's first refused emit. Counted
    /// where the sink counts its own answers.
    fn refused_again(&self, refusal: &Emitted) {
        let _ = refusal;
    }
}

/// Events kept in memory, starting nothing: what `run-once` uses.
#[derive(Debug)]
pub struct MemoryEvents {
    emitted: Mutex<Vec<EmitRequest>>,
    max_depth: u32,
}

impl MemoryEvents {
    pub fn new(max_depth: u32) -> Self {
        MemoryEvents {
            emitted: Mutex::new(Vec::new()),
            max_depth,
        }
    }

    /// What was emitted, in order (duplicates by key kept once).
    pub fn emitted(&self) -> Vec<EmitRequest> {
        self.emitted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[async_trait]
impl EventSink for MemoryEvents {
    async fn emit(&self, request: &EmitRequest) -> Result<Emitted, ServiceError> {
        if request.depth > self.max_depth {
            return Ok(Emitted::DepthExceeded {
                limit: self.max_depth,
            });
        }
        let mut emitted = self.emitted.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = emitted
            .iter()
            .position(|e| e.name == request.name && e.key == request.key)
        {
            return Ok(Emitted::Duplicate {
                event_id: format!("memory-{i}"),
            });
        }
        emitted.push(request.clone());
        Ok(Emitted::Accepted {
            event_id: format!("memory-{}", emitted.len() - 1),
            fires: 0,
        })
    }
}

/// A run's grants, resolved: the compiled patterns and the values of the
/// secrets they inject (name, version, value).
#[derive(Clone)]
pub struct RunGrants {
    pub grants: Arc<crate::grants::CompiledGrants>,
    pub secrets: Vec<(String, i64, zeroize::Zeroizing<String>)>,
}

impl std::fmt::Debug for RunGrants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<(&str, i64)> = self
            .secrets
            .iter()
            .map(|(n, v, _)| (n.as_str(), *v))
            .collect();
        f.debug_struct("RunGrants")
            .field("grants", &self.grants)
            .field("secrets", &names)
            .finish()
    }
}

/// Why a run's grants cannot be had.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GrantRefusal {
    /// The store could not be read: the fire is retried.
    #[error("grants unavailable: {0}")]
    Unavailable(String),
    /// This node lacks the key the job's secrets need; another node may have it.
    #[error("{0}")]
    NoKey(String),
    /// The grants cannot be met (a secret is missing): not retried.
    #[error("{0}")]
    Permanent(String),
}

/// Where a run's grants come from (see [`GrantsFrom`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum GrantsFrom {
    /// Asked of the runtime's [`GrantSource`] by job key: `run-once` and tests.
    #[default]
    Source,
    /// Read with the job by the claim that runs it (JSON text; `None`:
    /// nothing granted). Only secrets, if the grants name any, are read
    /// when the run starts.
    Stored(Option<String>),
}

/// Opens the secrets a run's grants name, and counts outbound requests.
#[async_trait]
pub trait GrantSource: Send + Sync + 'static {
    /// `grants` resolved for one run: patterns compiled, secrets opened.
    async fn open(&self, grants: &crate::grants::Grants) -> Result<RunGrants, GrantRefusal>;

    /// The grants of `job_key` now, resolved; `None` when nothing is granted.
    /// Only for runs whose request says [`GrantsFrom::Source`]: a source that
    /// keeps no grants by job grants nothing.
    async fn run_grants(&self, job_key: &str) -> Result<Option<RunGrants>, GrantRefusal> {
        let _ = job_key;
        Ok(None)
    }

    /// One outbound request ended with `result` (`denied`, `limit`, `error`
    /// or the status class `2xx` ...): counted where the node counts.
    fn http_request(&self, job_key: &str, host: &str, result: &str) {
        let _ = (job_key, host, result);
    }
}

/// Grants and secrets kept in memory: `run-once` and tests.
#[derive(Debug, Default)]
pub struct MemoryGrants {
    grants: Mutex<HashMap<String, crate::grants::Grants>>,
    secrets: Mutex<HashMap<String, (i64, String)>>,
    requests: Mutex<Vec<(String, String, String)>>,
}

impl MemoryGrants {
    pub fn new() -> Self {
        MemoryGrants::default()
    }

    /// Sets a job's grants.
    pub fn put(&self, job_key: &str, grants: crate::grants::Grants) {
        self.grants
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(job_key.to_string(), grants);
    }

    /// Sets a secret's value (a new version).
    pub fn secret_set(&self, name: &str, value: &str) {
        let mut secrets = self.secrets.lock().unwrap_or_else(PoisonError::into_inner);
        let version = secrets.get(name).map_or(1, |(v, _)| v + 1);
        secrets.insert(name.to_string(), (version, value.to_string()));
    }

    /// Requests counted so far: (job, host, result).
    pub fn requests(&self) -> Vec<(String, String, String)> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[async_trait]
impl GrantSource for MemoryGrants {
    async fn open(&self, grants: &crate::grants::Grants) -> Result<RunGrants, GrantRefusal> {
        crate::secrets::resolve(grants, |name| {
            let found = self
                .secrets
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&name)
                .map(|(v, s)| (*v, zeroize::Zeroizing::new(s.clone())));
            async move { Ok(found) }
        })
        .await
    }

    async fn run_grants(&self, job_key: &str) -> Result<Option<RunGrants>, GrantRefusal> {
        let grants = self
            .grants
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(job_key)
            .cloned();
        match grants {
            Some(grants) => self.open(&grants).await.map(Some),
            None => Ok(None),
        }
    }

    fn http_request(&self, job_key: &str, host: &str, result: &str) {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((job_key.to_string(), host.to_string(), result.to_string()));
    }
}

/// The kv store, lock service, event sink and grants a runtime hands to its guests.
#[derive(Clone)]
pub struct HostServices {
    pub kv: Arc<dyn KvStore>,
    pub locks: Arc<dyn LockService>,
    pub events: Arc<dyn EventSink>,
    pub grants: Arc<dyn GrantSource>,
}

impl HostServices {
    /// In-process kv, locks and events: what `run-once` and single-process tests use.
    pub fn in_memory() -> Self {
        HostServices {
            kv: Arc::new(MemoryKv::new()),
            locks: Arc::new(LocalLocks::new()),
            events: Arc::new(MemoryEvents::new(crate::domain::events::DEFAULT_MAX_DEPTH)),
            grants: Arc::new(MemoryGrants::new()),
        }
    }
}

impl std::fmt::Debug for HostServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostServices").finish_non_exhaustive()
    }
}

/// A lock held by a guest, living in the run's resource table.
///
/// Its `Drop` releases the lease, so a guard the guest dropped, leaked or held while
/// trapping is released at the latest when the run's store is dropped.
pub struct LockGuardEntry {
    pub(crate) lease: Lease,
    pub(crate) locks: Arc<dyn LockService>,
}

impl Drop for LockGuardEntry {
    fn drop(&mut self) {
        self.locks.lock_release(&self.lease);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(name: &str, timeout_ms: u64) -> LockAcquire {
        LockAcquire {
            name: name.into(),
            holder: "test".into(),
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    #[tokio::test]
    async fn a_held_lock_times_out_then_is_granted_after_release_with_a_higher_token() {
        let locks = LocalLocks::new();
        let first = locks.lock_acquire(&params("a", 0)).await.unwrap();
        assert_eq!(
            locks.lock_acquire(&params("a", 20)).await,
            Err(ServiceError::Timeout)
        );
        locks.lock_release(&first);
        let second = locks.lock_acquire(&params("a", 0)).await.unwrap();
        assert!(second.token > first.token);
    }

    #[tokio::test]
    async fn a_waiter_is_woken_by_the_release() {
        let locks = Arc::new(LocalLocks::new());
        let first = locks.lock_acquire(&params("a", 0)).await.unwrap();
        let waiter = {
            let locks = Arc::clone(&locks);
            tokio::spawn(async move { locks.lock_acquire(&params("a", 5_000)).await })
        };
        tokio::task::yield_now().await;
        locks.lock_release(&first);
        assert!(waiter.await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn a_stale_release_does_not_free_the_new_holder() {
        let locks = LocalLocks::new();
        let first = locks.lock_acquire(&params("a", 0)).await.unwrap();
        locks.lock_release(&first);
        let _second = locks.lock_acquire(&params("a", 0)).await.unwrap();
        locks.lock_release(&first);
        assert_eq!(locks.holders().len(), 1);
    }
}
