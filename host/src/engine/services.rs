//! Store-backed implementations of the runtime's host services.

use crate::runtime::services::{EmitRequest, Emitted, EventSink, KvQuota, KvStore, ServiceError};
use crate::store::Store;
use crate::store::events::{EmitOutcome, EventPut};
use async_trait::async_trait;
use std::sync::Arc;

/// Guests' kv state, kept in the store's `job_state` table: durable across runs,
/// restarts and, on PostgreSQL, nodes.
#[derive(Clone)]
pub struct StoreKv {
    store: Arc<dyn Store>,
}

impl StoreKv {
    pub fn new(store: Arc<dyn Store>) -> Self {
        StoreKv { store }
    }
}

impl std::fmt::Debug for StoreKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreKv")
            .field("dialect", &self.store.dialect())
            .finish()
    }
}

fn unavailable(e: crate::store::StoreError) -> ServiceError {
    ServiceError::Unavailable(e.to_string())
}

#[async_trait]
impl KvStore for StoreKv {
    async fn kv_get(&self, job_key: &str, key: &str) -> Result<Option<Vec<u8>>, ServiceError> {
        self.store
            .state_get(job_key, key)
            .await
            .map_err(unavailable)
    }

    async fn kv_set(
        &self,
        job_key: &str,
        key: &str,
        value: &[u8],
        quota: KvQuota,
    ) -> Result<(), ServiceError> {
        let written = self
            .store
            .state_set_within(job_key, key, value, quota.max_keys, quota.max_bytes)
            .await
            .map_err(unavailable)?;
        if written {
            Ok(())
        } else {
            Err(quota.exceeded())
        }
    }

    async fn kv_delete(&self, job_key: &str, key: &str) -> Result<bool, ServiceError> {
        self.store
            .state_delete(job_key, key)
            .await
            .map_err(unavailable)
    }
}

/// Guests' events, accepted by the store with their fires in one transaction.
/// A node's own scheduler is woken when an event started fires, so they run
/// at once instead of at the next poll.
pub struct StoreEvents {
    store: Arc<dyn Store>,
    max_depth: u32,
    wake: std::sync::OnceLock<Arc<tokio::sync::Notify>>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl StoreEvents {
    pub fn new(store: Arc<dyn Store>, max_depth: u32) -> Arc<Self> {
        Self::build(store, max_depth, None)
    }

    /// [`StoreEvents::new`] counting emits in the node's `quartzite_events_total`.
    pub fn with_metrics(
        store: Arc<dyn Store>,
        max_depth: u32,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Arc<Self> {
        Self::build(store, max_depth, Some(metrics))
    }

    fn build(
        store: Arc<dyn Store>,
        max_depth: u32,
        metrics: Option<Arc<crate::metrics::Metrics>>,
    ) -> Arc<Self> {
        Arc::new(StoreEvents {
            store,
            max_depth,
            wake: std::sync::OnceLock::new(),
            metrics,
        })
    }

    /// Wakes this scheduler whenever an emit starts fires.
    pub fn wake_on_fires(&self, wake: Arc<tokio::sync::Notify>) {
        let _ = self.wake.set(wake);
    }
}

impl std::fmt::Debug for StoreEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreEvents")
            .field("max_depth", &self.max_depth)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl EventSink for StoreEvents {
    async fn emit(&self, request: &EmitRequest) -> Result<Emitted, ServiceError> {
        let put = EventPut {
            name: request.name.clone(),
            payload: request.payload.clone(),
            key: Some(request.key.clone()),
            depth: request.depth,
            source_job: Some(request.job_key.clone()),
            source_fire: Some(request.fire_id.clone()),
            max_depth: self.max_depth,
        };
        let outcome = self.store.event_emit(&put).await.map_err(unavailable)?;
        if let Some(m) = &self.metrics {
            m.event_emitted(&outcome);
        }
        Ok(match outcome {
            EmitOutcome::Accepted {
                event_id, fires, ..
            } => {
                if !fires.is_empty()
                    && let Some(wake) = self.wake.get()
                {
                    wake.notify_one();
                }
                Emitted::Accepted {
                    event_id,
                    fires: fires.len(),
                }
            }
            EmitOutcome::Duplicate { event_id, .. } => Emitted::Duplicate { event_id },
            EmitOutcome::DepthExceeded { limit, .. } => Emitted::DepthExceeded { limit },
        })
    }
}
