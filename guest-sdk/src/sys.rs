//! The one place that talks to the host: the WIT imports inside a component,
//! the thread-local [`crate::testing::TestHost`] in native builds.

#[cfg(target_arch = "wasm32")]
use crate::error::Error;
use crate::error::Result;
use crate::{Level, LockGuard, event::Event};
use std::time::{Duration, SystemTime};

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::*;
    use crate::__bindings::quartzite::job::host;
    use crate::__bindings::quartzite::job::types::{HostError, LogLevel};

    pub type LockHandle = host::LockGuard;

    pub fn log(level: Level, message: &str) {
        let level = match level {
            Level::Trace => LogLevel::Trace,
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        host::log(level, message);
    }

    pub fn cancelled() -> bool {
        host::cancelled()
    }

    pub fn now() -> SystemTime {
        SystemTime::now()
    }

    fn convert(err: HostError) -> Error {
        match err {
            HostError::InvalidArgument(m) => Error::Fatal(format!("invalid argument: {m}")),
            HostError::LimitExceeded(m) => Error::Fatal(format!("limit exceeded: {m}")),
            HostError::Timeout => Error::Retry("timed out waiting for the host".into()),
            HostError::Cancelled => Error::Retry("run cancelled".into()),
            HostError::Unavailable(m) => Error::Retry(format!("host unavailable: {m}")),
        }
    }

    pub fn kv_get(key: &str) -> Result<Option<Vec<u8>>> {
        host::kv_get(key).map_err(convert)
    }

    pub fn kv_set(key: &str, value: &[u8]) -> Result<()> {
        host::kv_set(key, value).map_err(convert)
    }

    pub fn kv_delete(key: &str) -> Result<bool> {
        host::kv_delete(key).map_err(convert)
    }

    pub fn lock(name: &str, timeout: Duration) -> Result<LockGuard> {
        let ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
        let guard = host::lock(name, ms).map_err(|e| match e {
            HostError::Timeout => {
                Error::Retry(format!("lock {name:?} not acquired within {ms} ms"))
            }
            other => convert(other),
        })?;
        Ok(LockGuard {
            name: guard.name(),
            fencing_token: guard.fencing_token(),
            inner: guard,
        })
    }

    pub fn trigger_event() -> Option<Event> {
        host::trigger_event().map(|e| Event {
            id: e.id,
            name: e.name,
            payload_json: e.payload,
            key: e.key,
            depth: e.depth,
            emitted_at_ms: e.emitted_at,
            source_job: e.source_job,
        })
    }

    pub fn emit(name: &str, payload_json: &str, key: Option<&str>) -> Result<String> {
        host::emit(name, payload_json, key).map_err(convert)
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::*;
    use crate::testing;

    pub type LockHandle = testing::LockHandle;

    pub fn log(level: Level, message: &str) {
        testing::with_host(|h| h.log(level, message));
    }

    pub fn cancelled() -> bool {
        testing::with_host(|h| h.check_cancelled())
    }

    pub fn now() -> SystemTime {
        testing::with_host(|h| h.now())
    }

    pub fn kv_get(key: &str) -> Result<Option<Vec<u8>>> {
        testing::with_host(|h| h.kv_get(key))
    }

    pub fn kv_set(key: &str, value: &[u8]) -> Result<()> {
        testing::with_host(|h| h.kv_set(key, value))
    }

    pub fn kv_delete(key: &str) -> Result<bool> {
        testing::with_host(|h| h.kv_delete(key))
    }

    pub fn lock(name: &str, timeout: Duration) -> Result<LockGuard> {
        let (token, handle) = testing::with_host(|h| h.lock(name, timeout))?;
        Ok(LockGuard {
            name: name.to_string(),
            fencing_token: token,
            inner: handle,
        })
    }

    pub fn trigger_event() -> Option<Event> {
        testing::with_host(|h| h.trigger_event())
    }

    pub fn emit(name: &str, payload_json: &str, key: Option<&str>) -> Result<String> {
        testing::with_host(|h| h.emit(name, payload_json, key))
    }
}

pub use imp::*;
