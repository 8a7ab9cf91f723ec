//! Events: start other jobs, and read the event that started this one.
//!
//! A job subscribes to an event by name (`event = "NAME"` in a manifest
//! trigger); every subscriber fires once per event. [`emit`] sends one from a
//! running job, so one job's work can start others:
//!
//! ```
//! use quartzite_sdk::{Context, Job, JobInfo, Outcome, Result, event};
//!
//! struct Import;
//!
//! impl Job for Import {
//!     fn info() -> JobInfo {
//!         JobInfo::new("import", "1.0.0")
//!     }
//!
//!     fn run(_ctx: &Context) -> Result<Outcome> {
//!         // ... import a batch, then tell whoever cares:
//!         event::emit("import.done", &serde_json::json!({ "rows": 42 }))?;
//!         Ok(Outcome::none())
//!     }
//! }
//!
//! struct Notify;
//!
//! impl Job for Notify {
//!     fn info() -> JobInfo {
//!         JobInfo::new("notify", "1.0.0")
//!     }
//!
//!     fn run(ctx: &Context) -> Result<Outcome> {
//!         let rows = match ctx.event() {
//!             Some(e) => e.payload::<serde_json::Value>()?["rows"].as_u64().unwrap_or(0),
//!             None => 0, // started by another trigger
//!         };
//!         Outcome::details(&serde_json::json!({ "notified_about": rows }))
//!     }
//! }
//!
//! use quartzite_sdk::testing::TestHost;
//! let mut host = TestHost::new();
//! host.run::<Import>().unwrap();
//! assert_eq!(host.emitted()[0].name, "import.done");
//!
//! let mut host = TestHost::new().event("import.done", r#"{"rows":42}"#);
//! let out = host.run::<Notify>().unwrap();
//! assert_eq!(out.details_json().unwrap()["notified_about"], 42);
//! ```

use crate::error::{Error, Result};
use crate::sys;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The event that started a fire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Unique per accepted event.
    pub id: String,
    /// The event's name, e.g. `order.created`.
    pub name: String,
    pub(crate) payload_json: String,
    /// The idempotency key it was emitted with, if any.
    pub key: Option<String>,
    /// 0 when an operator emitted it; one more per job in the chain that led here.
    pub depth: u32,
    pub(crate) emitted_at_ms: i64,
    /// The job that emitted it; `None` when an operator did.
    pub source_job: Option<String>,
}

impl Event {
    /// The payload, deserialized from JSON.
    ///
    /// # Errors
    ///
    /// [`Error::Fatal`] when the payload is not a `T`: the same event would fail again.
    pub fn payload<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_str(&self.payload_json).map_err(|e| {
            Error::Fatal(format!(
                "the payload of event {:?} is not what the job expects: {e}",
                self.name
            ))
        })
    }

    /// The payload as JSON text (`null` when none was given).
    pub fn payload_text(&self) -> &str {
        &self.payload_json
    }

    /// When the event was accepted.
    pub fn emitted_at(&self) -> SystemTime {
        match u64::try_from(self.emitted_at_ms) {
            Ok(ms) => UNIX_EPOCH + Duration::from_millis(ms),
            Err(_) => UNIX_EPOCH,
        }
    }
}

/// The event that started this fire; `None` for a fire of any other trigger.
pub fn current() -> Option<Event> {
    sys::trigger_event()
}

/// Emits the event `name` with `payload` (serialized as JSON): every job
/// subscribed to it fires once. Returns the event's id.
///
/// The host derives an idempotency key from this fire and the call's position,
/// so a retried or recovered run that emits the same events in the same order
/// does not emit them twice. Use [`emit_with_key`] to choose the key.
///
/// # Errors
///
/// [`Error::Fatal`] when the name or payload is not acceptable, or the chain of
/// events that led here has reached the host's depth limit;
/// [`Error::Retry`] when the host's store is unavailable.
pub fn emit<T: Serialize + ?Sized>(name: &str, payload: &T) -> Result<String> {
    sys::emit(name, &to_json(name, payload)?, None)
}

/// [`emit`] with an idempotency key: this job emitting the same key for the
/// same name again starts nothing and returns the first event's id. Keys are
/// the job's own: another job's or the operator's event with the same key is a
/// separate event.
///
/// # Errors
///
/// As [`emit`].
pub fn emit_with_key<T: Serialize + ?Sized>(name: &str, key: &str, payload: &T) -> Result<String> {
    sys::emit(name, &to_json(name, payload)?, Some(key))
}

fn to_json<T: Serialize + ?Sized>(name: &str, payload: &T) -> Result<String> {
    serde_json::to_string(payload)
        .map_err(|e| Error::Fatal(format!("cannot serialize the payload of {name:?}: {e}")))
}
