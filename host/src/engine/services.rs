//! Store-backed implementations of the runtime's host services.

use crate::runtime::services::{EmitRequest, Emitted, EventSink, KvQuota, KvStore, ServiceError};
use crate::store::Store;
use crate::store::events::{EmitBounds, EmitOutcome, EventPut};
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
    bounds: EmitBounds,
    wake: std::sync::OnceLock<Arc<tokio::sync::Notify>>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl StoreEvents {
    /// Events chained at most `max_depth` deep, the other bounds their defaults.
    pub fn new(store: Arc<dyn Store>, max_depth: u32) -> Arc<Self> {
        Self::build(
            store,
            EmitBounds {
                max_depth,
                ..EmitBounds::default()
            },
            None,
        )
    }

    /// Events under `bounds`, counted in the node's `quartzite_events_total`.
    pub fn with_metrics(
        store: Arc<dyn Store>,
        bounds: EmitBounds,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Arc<Self> {
        Self::build(store, bounds, Some(metrics))
    }

    fn build(
        store: Arc<dyn Store>,
        bounds: EmitBounds,
        metrics: Option<Arc<crate::metrics::Metrics>>,
    ) -> Arc<Self> {
        Arc::new(StoreEvents {
            store,
            bounds,
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
            .field("bounds", &self.bounds)
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
            max_depth: self.bounds.max_depth,
            parent_event: request.parent_event.clone(),
            max_chain_events: self.bounds.max_chain_events,
            max_job_fires: self.bounds.max_job_fires,
        };
        let outcome = self.store.event_emit(&put).await.map_err(unavailable)?;
        if let Some(m) = &self.metrics {
            m.event_emitted(&outcome);
        }
        if let EmitOutcome::Accepted { fires, .. } = &outcome
            && !fires.is_empty()
            && let Some(wake) = self.wake.get()
        {
            wake.notify_one();
        }
        Ok(emitted(outcome))
    }

    fn refused_again(&self, refusal: &Emitted) {
        if let Some(m) = &self.metrics {
            m.event_counted(refusal.result());
        }
    }
}

/// What the runtime is told of the store's answer to an emit.
fn emitted(outcome: EmitOutcome) -> Emitted {
    match outcome {
        EmitOutcome::Accepted {
            event_id, fires, ..
        } => Emitted::Accepted {
            event_id,
            fires: fires.len(),
        },
        EmitOutcome::Duplicate { event_id, .. } => Emitted::Duplicate { event_id },
        EmitOutcome::DepthExceeded { limit, .. } => Emitted::DepthExceeded { limit },
        EmitOutcome::ChainBudgetExceeded { limit, .. } => Emitted::ChainBudgetExceeded { limit },
        EmitOutcome::JobFiresExceeded { waiting, limit } => {
            Emitted::JobFiresExceeded { waiting, limit }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_repeated_by_the_run_is_counted_under_the_stores_label() {
        let outcomes = [
            EmitOutcome::Accepted {
                event_id: "e".into(),
                fires: Vec::new(),
                paused: Vec::new(),
            },
            EmitOutcome::Duplicate {
                event_id: "e".into(),
                fires: 0,
            },
            EmitOutcome::DepthExceeded { depth: 9, limit: 8 },
            EmitOutcome::ChainBudgetExceeded {
                root: "r".into(),
                limit: 3,
            },
            EmitOutcome::JobFiresExceeded {
                waiting: 2,
                limit: 2,
            },
        ];
        for outcome in outcomes {
            assert_eq!(emitted(outcome.clone()).result(), outcome.result());
        }
    }
}
