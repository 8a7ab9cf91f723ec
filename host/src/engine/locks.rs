//! Cluster-wide named locks kept in the store (the reference's cluster lock):
//! taking a lock inserts or takes over its row, and fails while another holder's
//! lease is live. Every lock has a lease that its holder renews while it runs, so
//! a dead or paused holder loses it, and a fencing token that grows on every
//! change of hands.
//!
//! Guests reach it through the WIT `lock` resource; host tasks use
//! [`acquire_with_retries`], the reference's retry schedule.

use crate::metrics::Metrics;
use crate::runtime::services::{Lease, LockAcquire, LockService, ServiceError};
use crate::store::Store;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

/// One attempt's timeout in the reference's schedule.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
/// Retries after the first attempt.
pub const MAX_RETRIES: u32 = 5;
/// Wait before the first retry; it doubles after each one.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(1000);
/// Each wait is spread by +/- this fraction so contenders do not retry in step.
pub const RANDOMIZATION: f64 = 0.1;

/// Locks in the store. Cheap to share.
pub struct StoreLocks {
    store: Arc<dyn Store>,
    lease_ms: i64,
    held: Mutex<HashMap<String, i64>>,
    runtime: tokio::runtime::Handle,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for StoreLocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreLocks")
            .field("lease_ms", &self.lease_ms)
            .finish_non_exhaustive()
    }
}

impl StoreLocks {
    /// Creates the service and its lease-renewal task (every third of the lease).
    /// Must be called inside a tokio runtime.
    pub fn new(store: Arc<dyn Store>, lease_ms: i64) -> Arc<Self> {
        Self::with_metrics(store, lease_ms, Arc::default())
    }

    /// [`StoreLocks::new`] counting acquisitions in the node's `metrics`.
    pub fn with_metrics(store: Arc<dyn Store>, lease_ms: i64, metrics: Arc<Metrics>) -> Arc<Self> {
        let locks = Arc::new(StoreLocks {
            store,
            lease_ms: lease_ms.max(100),
            held: Mutex::new(HashMap::new()),
            runtime: tokio::runtime::Handle::current(),
            metrics,
        });
        let weak: Weak<StoreLocks> = Arc::downgrade(&locks);
        let every = Duration::from_millis(u64::try_from(locks.lease_ms / 3).unwrap_or(1000));
        locks.runtime.spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some(locks) = weak.upgrade() else { return };
                let held: Vec<(String, i64)> =
                    locks.held.lock().unwrap_or_else(PoisonError::into_inner).iter().map(|(n, t)| (n.clone(), *t)).collect();
                for (name, token) in held {
                    match locks.store.lock_renew(&name, token, locks.lease_ms).await {
                        Ok(true) => {}
                        Ok(false) => tracing::warn!(lock = %name, token, "lock lease lost: it expired and was taken over"),
                        Err(e) => tracing::warn!(lock = %name, error = %e, "renewing a lock lease failed"),
                    }
                }
            }
        });
        locks
    }
}

#[async_trait]
impl LockService for StoreLocks {
    async fn lock_acquire(&self, params: &LockAcquire) -> Result<Lease, ServiceError> {
        let deadline = tokio::time::Instant::now() + params.timeout;
        let mut wait = Duration::from_millis(20);
        loop {
            match self
                .store
                .lock_try(&params.name, &params.holder, self.lease_ms)
                .await
            {
                Ok(Some(token)) => {
                    self.held
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(params.name.clone(), token);
                    self.metrics.lock_acquisition("acquired");
                    return Ok(Lease {
                        name: params.name.clone(),
                        holder: params.holder.clone(),
                        token: u64::try_from(token).unwrap_or(0),
                    });
                }
                Ok(None) => {}
                Err(e) => {
                    self.metrics.lock_acquisition("error");
                    return Err(ServiceError::Unavailable(e.to_string()));
                }
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                self.metrics.lock_acquisition("timeout");
                return Err(ServiceError::Timeout);
            }
            tokio::time::sleep(wait.min(deadline - now)).await;
            wait = (wait * 2).min(Duration::from_millis(500));
        }
    }

    fn lock_release(&self, lease: &Lease) {
        let token = i64::try_from(lease.token).unwrap_or(i64::MAX);
        {
            let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            if held.get(&lease.name) == Some(&token) {
                held.remove(&lease.name);
            }
        }
        let store = Arc::clone(&self.store);
        let name = lease.name.clone();
        self.runtime.spawn(async move {
            if let Err(e) = store.lock_release(&name, token).await {
                // The lease runs out by itself; nobody is blocked forever.
                tracing::warn!(lock = %name, error = %e, "releasing a lock failed; its lease will expire");
            }
        });
    }
}

/// Takes a lock with the reference's schedule: attempts of [`ATTEMPT_TIMEOUT`],
/// up to [`MAX_RETRIES`] retries, waits from [`INITIAL_BACKOFF`] doubling, each
/// spread by [`RANDOMIZATION`]. `random` yields uniform values in [0, 1).
///
/// # Errors
///
/// [`ServiceError::Timeout`] when every attempt failed; `Unavailable` on store errors.
pub async fn acquire_with_retries(
    locks: &dyn LockService,
    name: &str,
    holder: &str,
    mut random: impl FnMut() -> f64,
) -> Result<Lease, ServiceError> {
    let params = LockAcquire {
        name: name.into(),
        holder: holder.into(),
        timeout: ATTEMPT_TIMEOUT,
    };
    let mut backoff = INITIAL_BACKOFF;
    for attempt in 0..=MAX_RETRIES {
        match locks.lock_acquire(&params).await {
            Ok(lease) => return Ok(lease),
            Err(ServiceError::Timeout) if attempt < MAX_RETRIES => {
                tokio::time::sleep(retry_wait(backoff, random())).await;
                backoff *= 2;
            }
            Err(e) => return Err(e),
        }
    }
    Err(ServiceError::Timeout)
}

/// `base` spread by +/- [`RANDOMIZATION`] according to `random` in [0, 1).
pub fn retry_wait(base: Duration, random: f64) -> Duration {
    base.mul_f64(1.0 + RANDOMIZATION * (2.0 * random.clamp(0.0, 1.0) - 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_stay_within_the_randomization_band() {
        assert_eq!(
            retry_wait(Duration::from_millis(1000), 0.5),
            Duration::from_millis(1000)
        );
        assert_eq!(
            retry_wait(Duration::from_millis(1000), 0.0),
            Duration::from_millis(900)
        );
        assert!(retry_wait(Duration::from_millis(1000), 0.999_999) <= Duration::from_millis(1100));
    }
}
