//! Per-run limits and the `ResourceLimiter` that enforces the memory cap.

use serde::Deserialize;
use std::time::Duration;

/// What one run may use. Every field has a default fit for untrusted guests.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Wall-clock time for instantiation and `run`. At this point `cancelled()`
    /// turns true; `grace` later the guest is stopped. Default 60 s.
    #[serde(with = "humantime_serde_compat")]
    pub timeout: Duration,
    /// Time between `cancelled()` turning true and the guest being stopped. Default 1 s.
    #[serde(with = "humantime_serde_compat")]
    pub grace: Duration,
    /// Linear memory the guest may grow to, in bytes, summed over its memories. Default 128 MiB.
    pub max_memory: u64,
    /// Wasm instructions (roughly) the guest may execute, when the engine meters fuel.
    pub fuel: Option<u64>,
    /// Bytes of log lines and stdout/stderr kept per run; more are dropped and counted. Default 64 KiB.
    pub max_log_bytes: usize,
    /// Bytes of `details` plus `new-data` a run may return. Default 1 MiB.
    pub max_output_bytes: usize,
    /// Bytes of one kv value. Default 1 MiB.
    pub max_kv_value_bytes: usize,
    /// Locks a run may hold at once. Default 16.
    pub max_locks_held: usize,
    /// Keys the job's kv state may hold in all (durable across runs). Default 10,000.
    pub max_kv_keys: u64,
    /// Bytes of values the job's kv state may hold in all. Default 16 MiB.
    pub max_kv_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(60),
            grace: Duration::from_secs(1),
            max_memory: 128 << 20,
            fuel: None,
            max_log_bytes: 64 << 10,
            max_output_bytes: 1 << 20,
            max_kv_value_bytes: 1 << 20,
            max_locks_held: 16,
            max_kv_keys: 10_000,
            max_kv_bytes: 16 << 20,
        }
    }
}

// Public so that the guest SDKs' test hosts can be checked against them
// (host/tests/all/new.rs): a job tested natively must meet the same rules.

/// Longest accepted kv key, in bytes.
pub const MAX_KV_KEY: usize = 256;
/// Longest accepted lock name, in bytes.
pub const MAX_LOCK_NAME: usize = 256;
/// Longest accepted log message, in bytes, before the log cap applies.
pub const MAX_LOG_MESSAGE: usize = 64 << 10;
/// Emits one run may make: a guest looping on `emit` cannot flood the store.
pub const MAX_EMITS_PER_RUN: u32 = 1_000;

/// Enforces the memory cap and remembers whether it had to refuse a growth, so a
/// trap that follows is reported as a memory limit rather than a mystery.
#[derive(Debug)]
pub(crate) struct RunLimiter {
    max_memory: usize,
    used_memory: usize,
    pub(crate) denied_memory: Option<usize>,
}

impl RunLimiter {
    pub(crate) fn new(max_memory: u64) -> Self {
        RunLimiter {
            max_memory: usize::try_from(max_memory).unwrap_or(usize::MAX),
            used_memory: 0,
            denied_memory: None,
        }
    }
}

impl wasmtime::ResourceLimiter for RunLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // A component has several memories (one per core instance that defines one);
        // the cap is on their sum.
        let total = self
            .used_memory
            .saturating_sub(current)
            .saturating_add(desired);
        if total > self.max_memory {
            self.denied_memory = Some(total);
            return Ok(false);
        }
        self.used_memory = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        100
    }

    fn tables(&self) -> usize {
        100
    }

    fn memories(&self) -> usize {
        100
    }
}

/// `Duration` fields in config files read like `30s` or `1m 30s`.
pub(crate) mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {text:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    #[test]
    fn the_memory_cap_counts_all_memories_and_remembers_a_refusal() {
        let mut l = RunLimiter::new(100);
        assert!(l.memory_growing(0, 60, None).unwrap());
        assert!(l.memory_growing(0, 40, None).unwrap());
        assert!(!l.memory_growing(40, 41, None).unwrap());
        assert_eq!(l.denied_memory, Some(101));
    }
}
