//! Run job logic natively in `cargo test`, without building wasm.
//!
//! [`TestHost`] plays the host: it hands the job its data, keeps kv state and
//! locks in memory, captures log lines, owns a fake clock and can cancel the run
//! after a given number of `cancelled()` checks. Inside a component these calls go
//! to the real host instead, and this module is not compiled.
//!
//! ```
//! use quartzite_sdk::testing::TestHost;
//! use quartzite_sdk::{Context, Job, JobInfo, Outcome, Result, cancelled, info};
//!
//! struct Steps;
//! impl Job for Steps {
//!     fn info() -> JobInfo { JobInfo::new("steps", "0.1.0") }
//!     fn run(_ctx: &Context) -> Result<Outcome> {
//!         let mut done = 0;
//!         while done < 10 && !cancelled() {
//!             done += 1;
//!             info!("step {done}");
//!         }
//!         Outcome::details(&done)
//!     }
//! }
//!
//! let mut host = TestHost::new().cancel_after_checks(3);
//! let out = host.run::<Steps>().unwrap();
//! assert_eq!(out.details_text(), Some("3"));
//! assert_eq!(host.logs().len(), 3);
//! ```

use crate::error::{Error, Result};
use crate::event::Event;
use crate::limits;
use crate::{Context, Job, Level, Outcome};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One captured log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// The level it was logged at.
    pub level: Level,
    /// The text, cut as the host cuts it.
    pub message: String,
}

#[derive(Debug, Default)]
struct LockTable {
    /// name -> fencing token of the current holder
    held: HashMap<String, u64>,
    /// locks held by "another node" for contention tests
    foreign: HashMap<String, ()>,
    next_token: u64,
}

/// The in-memory stand-in for the host. See the [module docs](self).
///
/// It refuses what the real host refuses, with the same errors: kv keys over
/// [`limits::MAX_KV_KEY`] bytes, values over the value limit, writes past the
/// job's kv quota, lock names over [`limits::MAX_LOCK_NAME`] bytes, more than
/// [`limits::MAX_LOCKS_HELD`] locks at once, event names the host refuses,
/// payloads that are not JSON or too large, more than
/// [`limits::MAX_EMITS_PER_RUN`] emits, and outcomes larger than
/// [`limits::MAX_OUTPUT_BYTES`]. Log lines past [`limits::MAX_LOG_BYTES`] are
/// dropped and counted, as the host drops them.
#[derive(Debug)]
pub struct TestHost {
    data: String,
    job_key: String,
    trigger_key: String,
    fire_id: Option<String>,
    attempt: u32,
    recovering: bool,
    clock: SystemTime,
    cancel_after: Option<usize>,
    cancel_checks: usize,
    kv: BTreeMap<String, Vec<u8>>,
    kv_max_keys: u64,
    kv_max_bytes: u64,
    max_kv_value: usize,
    locks: Rc<RefCell<LockTable>>,
    locks_held: Rc<RefCell<usize>>,
    logs: Vec<LogLine>,
    log_bytes: usize,
    logs_dropped: u64,
    runs: u64,
    current_fire: String,
    emits: u32,
    event: Option<Event>,
    emitted: Vec<Emitted>,
    pub(crate) http: crate::http::fake::FakeHttp,
    pub(crate) config: BTreeMap<String, String>,
    emitted_keys: Vec<(String, String)>,
}

/// An event a job emitted under a [`TestHost`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Emitted {
    /// The event's name.
    pub name: String,
    /// JSON text.
    pub payload: String,
    /// The idempotency key the job gave, if any.
    pub key: Option<String>,
}

impl Emitted {
    /// The payload parsed as JSON.
    pub fn payload_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.payload).unwrap_or(serde_json::Value::Null)
    }
}

impl Default for TestHost {
    fn default() -> Self {
        TestHost::new()
    }
}

thread_local! {
    static CURRENT: RefCell<Option<TestHost>> = const { RefCell::new(None) };
}

/// Runs `f` on the host installed by [`TestHost::run`].
///
/// # Panics
///
/// When host functions are called natively outside [`TestHost::run`]: that is a
/// test written wrong, not a runtime condition.
pub(crate) fn with_host<R>(f: impl FnOnce(&mut TestHost) -> R) -> R {
    CURRENT.with(|cell| {
        let mut slot = cell.borrow_mut();
        match slot.as_mut() {
            Some(host) => f(host),
            None => panic!(
                "quartzite-sdk host function called outside TestHost::run; \
                 natively, job code can only run under quartzite_sdk::testing::TestHost"
            ),
        }
    })
}

fn invalid(message: String) -> Error {
    Error::Fatal(format!("invalid argument: {message}"))
}

fn limit_exceeded(message: String) -> Error {
    Error::Fatal(format!("limit exceeded: {message}"))
}

fn run_cancelled() -> Error {
    Error::Retry("run cancelled".into())
}

impl TestHost {
    /// A host with no data, attempt 1, the host's default limits, and the clock
    /// at 2030-01-01T00:00:00Z.
    pub fn new() -> Self {
        TestHost {
            data: String::new(),
            job_key: "test/job".into(),
            trigger_key: "test/trigger".into(),
            fire_id: None,
            attempt: 1,
            recovering: false,
            clock: UNIX_EPOCH + Duration::from_secs(1_893_456_000),
            cancel_after: None,
            cancel_checks: 0,
            kv: BTreeMap::new(),
            kv_max_keys: limits::KV_MAX_KEYS,
            kv_max_bytes: limits::KV_MAX_BYTES,
            max_kv_value: limits::MAX_KV_VALUE,
            locks: Rc::default(),
            locks_held: Rc::default(),
            logs: Vec::new(),
            log_bytes: 0,
            logs_dropped: 0,
            runs: 0,
            current_fire: String::new(),
            emits: 0,
            event: None,
            emitted: Vec::new(),
            http: Default::default(),
            config: BTreeMap::new(),
            emitted_keys: Vec::new(),
        }
    }

    /// Runs as if the event `name` with `payload` (JSON text) had started the fire.
    pub fn event(mut self, name: impl Into<String>, payload: impl Into<String>) -> Self {
        self.event = Some(Event {
            id: "test-event".into(),
            name: name.into(),
            payload_json: payload.into(),
            key: None,
            depth: 0,
            emitted_at_ms: millis(self.clock),
            source_job: None,
        });
        self
    }

    /// The events emitted so far, in order (a repeated name and key once).
    pub fn emitted(&self) -> &[Emitted] {
        &self.emitted
    }

    pub(crate) fn trigger_event(&self) -> Option<Event> {
        self.event.clone()
    }

    pub(crate) fn emit(&mut self, name: &str, payload: &str, key: Option<&str>) -> Result<String> {
        limits::check_event_name(name).map_err(invalid)?;
        if let Some(key) = key
            && (key.is_empty() || key.len() > limits::MAX_EVENT_KEY)
        {
            return Err(invalid(format!(
                "idempotency key must be 1 to {} bytes",
                limits::MAX_EVENT_KEY
            )));
        }
        if payload.len() > limits::MAX_EVENT_PAYLOAD {
            return Err(limit_exceeded(format!(
                "event payload is {} bytes; the limit is {}",
                payload.len(),
                limits::MAX_EVENT_PAYLOAD
            )));
        }
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(payload) {
            return Err(invalid(format!("event payload is not JSON: {e}")));
        }
        if self.emits >= limits::MAX_EMITS_PER_RUN {
            return Err(limit_exceeded(format!(
                "a run may emit at most {} events",
                limits::MAX_EMITS_PER_RUN
            )));
        }
        if self.is_cancelled() {
            return Err(run_cancelled());
        }
        self.emits += 1;
        // As the host does: a keyless emit is keyed by the fire and its position,
        // so a retry of the same fire emitting the same events emits nothing new.
        let derived = key.map_or_else(
            || format!("fire:{}:{}", self.current_fire, self.emits),
            str::to_string,
        );
        let seen = (name.to_string(), derived);
        if let Some(i) = self.emitted_keys.iter().position(|k| *k == seen) {
            return Ok(format!("test-event-{}", i + 1));
        }
        self.emitted_keys.push(seen);
        self.emitted.push(Emitted {
            name: name.to_string(),
            payload: payload.to_string(),
            key: key.map(str::to_string),
        });
        Ok(format!("test-event-{}", self.emitted.len()))
    }

    /// Sets the job data (JSON text).
    pub fn data(mut self, json: impl Into<String>) -> Self {
        self.data = json.into();
        self
    }

    /// Sets the job key (`group/name`).
    pub fn job_key(mut self, key: impl Into<String>) -> Self {
        self.job_key = key.into();
        self
    }

    /// Sets the fire id of the next runs (by default each run is a new fire).
    pub fn fire_id(mut self, id: impl Into<String>) -> Self {
        self.fire_id = Some(id.into());
        self
    }

    /// Sets the attempt number seen by the next run.
    pub fn attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    /// Marks the next runs as recovery re-runs.
    pub fn recovering(mut self, recovering: bool) -> Self {
        self.recovering = recovering;
        self
    }

    /// Sets the fake clock.
    pub fn at(mut self, time: SystemTime) -> Self {
        self.clock = time;
        self
    }

    /// Makes `cancelled()` return true from its `n + 1`-th call in a run on;
    /// from then on (and from the start for `n = 0`) `lock` and `emit` fail
    /// as the host's do in a cancelled run.
    pub fn cancel_after_checks(mut self, n: usize) -> Self {
        self.cancel_after = Some(n);
        self
    }

    /// The job's kv quota, as `kv_max_keys` and `kv_max_bytes` set it in a
    /// manifest (default [`limits::KV_MAX_KEYS`] and [`limits::KV_MAX_BYTES`]).
    pub fn kv_quota(mut self, max_keys: u64, max_bytes: u64) -> Self {
        self.kv_max_keys = max_keys;
        self.kv_max_bytes = max_bytes;
        self
    }

    /// The largest kv value, as the node's `max_kv_value_bytes` sets it
    /// (default [`limits::MAX_KV_VALUE`]).
    pub fn max_kv_value(mut self, bytes: usize) -> Self {
        self.max_kv_value = bytes;
        self
    }

    /// Moves the fake clock forward.
    pub fn advance(&mut self, by: Duration) {
        self.clock += by;
    }

    /// Pretends another node holds lock `name`, so the job's `lock` times out.
    pub fn hold_lock_elsewhere(&mut self, name: &str) {
        self.locks.borrow_mut().foreign.insert(name.to_string(), ());
    }

    /// Whether the job currently holds lock `name` (after a run: whether it leaked it).
    pub fn lock_held(&self, name: &str) -> bool {
        self.locks.borrow().held.contains_key(name)
    }

    /// Runs the job once, as the host would run one fire. Locks the run still
    /// holds when it returns are released, as the host releases them.
    ///
    /// # Errors
    ///
    /// Whatever the job returns, or [`Error::Fatal`] when the outcome is larger
    /// than [`limits::MAX_OUTPUT_BYTES`] (the host records that run as over a
    /// limit and does not retry it).
    pub fn run<J: Job>(&mut self) -> Result<Outcome> {
        self.runs += 1;
        self.cancel_checks = 0;
        self.emits = 0;
        self.current_fire = self
            .fire_id
            .clone()
            .unwrap_or_else(|| format!("test-fire-{}", self.runs));
        let ctx = Context {
            job_key: self.job_key.clone(),
            trigger_key: self.trigger_key.clone(),
            fire_id: self.current_fire.clone(),
            scheduled_at_ms: millis(self.clock),
            fired_at_ms: millis(self.clock),
            attempt: self.attempt,
            recovering: self.recovering,
            data_json: self.data.clone(),
        };
        let placeholder = TestHost::new();
        let me = std::mem::replace(self, placeholder);
        CURRENT.with(|c| *c.borrow_mut() = Some(me));
        // Restore the host even if the job panics, so the test sees a clean state.
        struct Restore<'a>(&'a mut TestHost);
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                if let Some(host) = CURRENT.with(|c| c.borrow_mut().take()) {
                    *self.0 = host;
                }
            }
        }
        let _restore = Restore(self);
        let result = J::run(&ctx);
        let size = result.as_ref().map_or(0, |o| {
            o.details_text().map_or(0, str::len) + o.new_data_text().map_or(0, str::len)
        });
        if size > limits::MAX_OUTPUT_BYTES {
            return Err(limit_exceeded(format!(
                "the run returned {size} bytes of details and data; the limit is {}",
                limits::MAX_OUTPUT_BYTES
            )));
        }
        if let Ok(outcome) = &result
            && let Some(data) = outcome.new_data_text()
        {
            let data = data.to_string();
            with_host(|h| h.data = data);
        }
        result
    }

    /// The log lines captured so far.
    pub fn logs(&self) -> &[LogLine] {
        &self.logs
    }

    /// Log lines dropped because a run went past [`limits::MAX_LOG_BYTES`].
    pub fn logs_dropped(&self) -> u64 {
        self.logs_dropped
    }

    /// The job data as it stands (updated by outcomes that carry new data).
    pub fn current_data(&self) -> &str {
        &self.data
    }

    /// Reads a kv value directly.
    pub fn kv(&self, key: &str) -> Option<&[u8]> {
        self.kv.get(key).map(Vec::as_slice)
    }

    /// Writes a kv value directly, e.g. to set up state before a run. No
    /// limit applies: this is the test's setup, not the job's call.
    pub fn set_kv(&mut self, key: &str, value: &[u8]) {
        self.kv.insert(key.to_string(), value.to_vec());
    }

    pub(crate) fn log(&mut self, level: Level, message: &str) {
        // The host cuts a line to 4096 bytes and keeps MAX_LOG_BYTES a run.
        let mut cut = message.len().min(4096);
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        let message = &message[..cut];
        if self.logs_dropped > 0 || self.log_bytes + message.len() > limits::MAX_LOG_BYTES {
            self.logs_dropped += 1;
            return;
        }
        self.log_bytes += message.len();
        self.logs.push(LogLine {
            level,
            message: message.to_string(),
        });
    }

    fn is_cancelled(&self) -> bool {
        match self.cancel_after {
            Some(0) => true,
            Some(n) => self.cancel_checks > n,
            None => false,
        }
    }

    pub(crate) fn check_cancelled(&mut self) -> bool {
        self.cancel_checks += 1;
        self.is_cancelled()
    }

    pub(crate) fn now(&self) -> SystemTime {
        self.clock
    }

    pub(crate) fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        limits::check_kv_key(key).map_err(invalid)?;
        Ok(self.kv.get(key).cloned())
    }

    pub(crate) fn kv_set(&mut self, key: &str, value: &[u8]) -> Result<()> {
        limits::check_kv_key(key).map_err(invalid)?;
        if value.len() > self.max_kv_value {
            return Err(limit_exceeded(format!(
                "kv value is {} bytes; the limit is {}",
                value.len(),
                self.max_kv_value
            )));
        }
        let (mut keys, mut bytes) = (0u64, value.len() as u64);
        for (k, v) in &self.kv {
            if k != key {
                keys += 1;
                bytes += v.len() as u64;
            }
        }
        if keys >= self.kv_max_keys || bytes > self.kv_max_bytes {
            return Err(limit_exceeded(format!(
                "the job's kv state may hold at most {} keys and {} bytes of values",
                self.kv_max_keys, self.kv_max_bytes
            )));
        }
        self.kv.insert(key.to_string(), value.to_vec());
        Ok(())
    }

    pub(crate) fn kv_delete(&mut self, key: &str) -> Result<bool> {
        limits::check_kv_key(key).map_err(invalid)?;
        Ok(self.kv.remove(key).is_some())
    }

    pub(crate) fn lock(&mut self, name: &str, timeout: Duration) -> Result<(u64, LockHandle)> {
        limits::check_lock_name(name).map_err(invalid)?;
        if *self.locks_held.borrow() >= limits::MAX_LOCKS_HELD {
            return Err(limit_exceeded(format!(
                "a run may hold at most {} locks",
                limits::MAX_LOCKS_HELD
            )));
        }
        if self.is_cancelled() {
            return Err(run_cancelled());
        }
        let mut table = self.locks.borrow_mut();
        if table.foreign.contains_key(name) || table.held.contains_key(name) {
            // A single-threaded fake cannot wait for a release: time passes instead.
            drop(table);
            self.clock += timeout;
            let ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
            return Err(Error::Retry(format!(
                "lock {name:?} not acquired within {ms} ms"
            )));
        }
        table.next_token += 1;
        let token = table.next_token;
        table.held.insert(name.to_string(), token);
        *self.locks_held.borrow_mut() += 1;
        Ok((
            token,
            LockHandle {
                name: name.to_string(),
                table: Rc::clone(&self.locks),
                held: Rc::clone(&self.locks_held),
            },
        ))
    }
}

fn millis(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// The native stand-in for a host lock resource: releases on drop.
#[derive(Debug)]
pub struct LockHandle {
    name: String,
    table: Rc<RefCell<LockTable>>,
    held: Rc<RefCell<usize>>,
}

impl Drop for LockHandle {
    fn drop(&mut self) {
        self.table.borrow_mut().held.remove(&self.name);
        let mut held = self.held.borrow_mut();
        *held = held.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{JobInfo, event, kv, lock};

    /// A job whose run is whatever the test put in `BODY`.
    struct Probe;
    type Body = Box<dyn Fn() -> Result<Outcome>>;
    thread_local! {
        static BODY: RefCell<Option<Body>> = RefCell::new(None);
    }
    impl Job for Probe {
        fn info() -> JobInfo {
            JobInfo::new("probe", "0.0.0")
        }
        fn run(_ctx: &Context) -> Result<Outcome> {
            BODY.with(|b| (b.borrow().as_ref().expect("a body"))())
        }
    }
    fn run_with(
        host: &mut TestHost,
        body: impl Fn() -> Result<Outcome> + 'static,
    ) -> Result<Outcome> {
        BODY.with(|b| *b.borrow_mut() = Some(Box::new(body)));
        host.run::<Probe>()
    }

    #[test]
    fn kv_keys_values_and_the_quota_are_refused_as_the_host_refuses_them() {
        let mut host = TestHost::new().kv_quota(2, 10);
        let long = "k".repeat(limits::MAX_KV_KEY + 1);
        let err = run_with(&mut host, move || {
            kv::set(&long, b"x").map(|()| Outcome::none())
        })
        .unwrap_err();
        assert_eq!(
            err,
            Error::Fatal("invalid argument: kv key is 257 bytes; the limit is 256".into())
        );
        let err = run_with(&mut host, || {
            kv::set("a", b"12345")?;
            kv::set("b", b"12345")?;
            kv::set("a", b"123456")?; // 6 + 5 > 10 bytes
            Ok(Outcome::none())
        })
        .unwrap_err();
        assert!(!err.is_retryable());
        assert!(
            err.message().contains("at most 2 keys and 10 bytes"),
            "{err}"
        );
        assert_eq!(host.kv("a"), Some(&b"12345"[..]));
        let err = run_with(&mut host, || kv::set("c", b"").map(|()| Outcome::none())).unwrap_err();
        assert!(err.message().contains("at most 2 keys"), "{err}");
    }

    #[test]
    fn a_kv_value_over_the_limit_is_refused() {
        let mut host = TestHost::new().max_kv_value(4);
        let err = run_with(&mut host, || {
            kv::set("a", b"12345").map(|()| Outcome::none())
        })
        .unwrap_err();
        assert_eq!(
            err.message(),
            "limit exceeded: kv value is 5 bytes; the limit is 4"
        );
    }

    #[test]
    fn event_names_keys_and_payloads_follow_the_host_rules() {
        let mut host = TestHost::new();
        let err = run_with(&mut host, || {
            event::emit("report done", &1).map(|_| Outcome::none())
        })
        .unwrap_err();
        assert!(err.message().contains("contains ' '"), "{err}");
        let err =
            run_with(&mut host, || event::emit("-x", &1).map(|_| Outcome::none())).unwrap_err();
        assert!(
            err.message().contains("must start with a letter or digit"),
            "{err}"
        );
        let err = run_with(&mut host, || {
            event::emit_with_key("ok", "", &1).map(|_| Outcome::none())
        })
        .unwrap_err();
        assert!(err.message().contains("idempotency key"), "{err}");
        let big = "x".repeat(limits::MAX_EVENT_PAYLOAD);
        let err = run_with(&mut host, move || {
            event::emit("ok", &big).map(|_| Outcome::none())
        })
        .unwrap_err();
        assert!(
            err.message()
                .starts_with("limit exceeded: event payload is"),
            "{err}"
        );
        assert!(host.emitted().is_empty());
    }

    #[test]
    fn a_retry_of_the_same_fire_does_not_emit_its_keyless_events_twice() {
        let mut host = TestHost::new().fire_id("f1");
        for _ in 0..2 {
            run_with(&mut host, || {
                event::emit("a.done", &1)?;
                Ok(Outcome::none())
            })
            .unwrap();
        }
        assert_eq!(host.emitted().len(), 1);
        let mut host = TestHost::new();
        for _ in 0..2 {
            run_with(&mut host, || {
                event::emit("a.done", &1).map(|_| Outcome::none())
            })
            .unwrap();
        }
        assert_eq!(host.emitted().len(), 2, "two fires emit twice");
    }

    #[test]
    fn lock_names_and_the_number_held_are_bounded_and_released_after_the_run() {
        let mut host = TestHost::new();
        let err = run_with(&mut host, || {
            lock("", Duration::ZERO).map(|_| Outcome::none())
        })
        .unwrap_err();
        assert_eq!(
            err.message(),
            "invalid argument: lock name must be 1 to 256 bytes"
        );
        let err = run_with(&mut host, || {
            let mut guards = Vec::new();
            for i in 0..=limits::MAX_LOCKS_HELD {
                guards.push(lock(&format!("l{i}"), Duration::ZERO)?);
            }
            Ok(Outcome::none())
        })
        .unwrap_err();
        assert_eq!(
            err.message(),
            "limit exceeded: a run may hold at most 16 locks"
        );
        assert!(!host.lock_held("l0"));
        run_with(&mut host, || {
            lock("l0", Duration::ZERO).map(|_| Outcome::none())
        })
        .unwrap();
    }

    #[test]
    fn a_cancelled_run_gets_no_lock_and_emits_nothing() {
        let mut host = TestHost::new().cancel_after_checks(0);
        let err = run_with(&mut host, || {
            lock("a", Duration::ZERO).map(|_| Outcome::none())
        })
        .unwrap_err();
        assert_eq!(err, Error::Retry("run cancelled".into()));
        let err =
            run_with(&mut host, || event::emit("a", &1).map(|_| Outcome::none())).unwrap_err();
        assert_eq!(err, Error::Retry("run cancelled".into()));
    }

    #[test]
    fn output_over_the_limit_fails_the_run_and_logs_past_the_cap_are_dropped() {
        let mut host = TestHost::new();
        let err = run_with(&mut host, || {
            Outcome::details(&"x".repeat(limits::MAX_OUTPUT_BYTES))
        })
        .unwrap_err();
        assert!(err.message().contains("bytes of details and data"), "{err}");
        run_with(&mut host, || {
            for _ in 0..20 {
                crate::info!("{}", "y".repeat(8192));
            }
            Ok(Outcome::none())
        })
        .unwrap();
        assert_eq!(host.logs().len(), 16);
        assert!(host.logs().iter().all(|l| l.message.len() == 4096));
        assert_eq!(host.logs_dropped(), 4);
    }
}
