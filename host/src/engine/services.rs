//! Store-backed implementations of the runtime's host services.

use crate::runtime::services::{KvStore, ServiceError};
use crate::store::Store;
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

    async fn kv_set(&self, job_key: &str, key: &str, value: &[u8]) -> Result<(), ServiceError> {
        self.store
            .state_set(job_key, key, value)
            .await
            .map_err(unavailable)
    }

    async fn kv_delete(&self, job_key: &str, key: &str) -> Result<bool, ServiceError> {
        self.store
            .state_delete(job_key, key)
            .await
            .map_err(unavailable)
    }
}
