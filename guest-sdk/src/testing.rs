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
use crate::{Context, Job, Level, Outcome};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One captured log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    pub level: Level,
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
    locks: Rc<RefCell<LockTable>>,
    logs: Vec<LogLine>,
    runs: u64,
    event: Option<Event>,
    emitted: Vec<Emitted>,
    pub(crate) http: crate::http::fake::FakeHttp,
    pub(crate) config: BTreeMap<String, String>,
}

/// An event a job emitted under a [`TestHost`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Emitted {
    pub name: String,
    /// JSON text.
    pub payload: String,
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

impl TestHost {
    /// A host with no data, attempt 1, and the clock at 2030-01-01T00:00:00Z.
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
            locks: Rc::default(),
            logs: Vec::new(),
            runs: 0,
            event: None,
            emitted: Vec::new(),
            http: Default::default(),
            config: BTreeMap::new(),
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
        if name.is_empty() {
            return Err(Error::Fatal("invalid argument: event name is empty".into()));
        }
        if serde_json::from_str::<serde_json::Value>(payload).is_err() {
            return Err(Error::Fatal(
                "invalid argument: event payload is not JSON".into(),
            ));
        }
        let repeated = key.is_some()
            && self
                .emitted
                .iter()
                .any(|e| e.name == name && e.key.as_deref() == key);
        if !repeated {
            self.emitted.push(Emitted {
                name: name.to_string(),
                payload: payload.to_string(),
                key: key.map(str::to_string),
            });
        }
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

    /// Makes `cancelled()` return true from its `n + 1`-th call in a run on.
    pub fn cancel_after_checks(mut self, n: usize) -> Self {
        self.cancel_after = Some(n);
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

    /// Runs the job once, as the host would run one fire.
    ///
    /// # Errors
    ///
    /// Whatever the job returns.
    pub fn run<J: Job>(&mut self) -> Result<Outcome> {
        self.runs += 1;
        self.cancel_checks = 0;
        let ctx = Context {
            job_key: self.job_key.clone(),
            trigger_key: self.trigger_key.clone(),
            fire_id: self
                .fire_id
                .clone()
                .unwrap_or_else(|| format!("test-fire-{}", self.runs)),
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

    /// The job data as it stands (updated by outcomes that carry new data).
    pub fn current_data(&self) -> &str {
        &self.data
    }

    /// Reads a kv value directly.
    pub fn kv(&self, key: &str) -> Option<&[u8]> {
        self.kv.get(key).map(Vec::as_slice)
    }

    /// Writes a kv value directly, e.g. to set up state before a run.
    pub fn set_kv(&mut self, key: &str, value: &[u8]) {
        self.kv.insert(key.to_string(), value.to_vec());
    }

    pub(crate) fn log(&mut self, level: Level, message: &str) {
        self.logs.push(LogLine {
            level,
            message: message.to_string(),
        });
    }

    pub(crate) fn check_cancelled(&mut self) -> bool {
        self.cancel_checks += 1;
        matches!(self.cancel_after, Some(n) if self.cancel_checks > n)
    }

    pub(crate) fn now(&self) -> SystemTime {
        self.clock
    }

    pub(crate) fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        check_key(key)?;
        Ok(self.kv.get(key).cloned())
    }

    pub(crate) fn kv_set(&mut self, key: &str, value: &[u8]) -> Result<()> {
        check_key(key)?;
        self.kv.insert(key.to_string(), value.to_vec());
        Ok(())
    }

    pub(crate) fn kv_delete(&mut self, key: &str) -> Result<bool> {
        check_key(key)?;
        Ok(self.kv.remove(key).is_some())
    }

    pub(crate) fn lock(&mut self, name: &str, timeout: Duration) -> Result<(u64, LockHandle)> {
        let mut table = self.locks.borrow_mut();
        if name.is_empty() {
            return Err(Error::Fatal("invalid argument: lock name is empty".into()));
        }
        if table.foreign.contains_key(name) || table.held.contains_key(name) {
            // A single-threaded fake cannot wait for a release: time passes instead.
            drop(table);
            self.clock += timeout;
            return Err(Error::Retry(format!(
                "lock {name:?} not acquired within {} ms",
                timeout.as_millis()
            )));
        }
        table.next_token += 1;
        let token = table.next_token;
        table.held.insert(name.to_string(), token);
        Ok((
            token,
            LockHandle {
                name: name.to_string(),
                table: Rc::clone(&self.locks),
            },
        ))
    }
}

fn check_key(key: &str) -> Result<()> {
    if key.is_empty() {
        Err(Error::Fatal("invalid argument: kv key is empty".into()))
    } else {
        Ok(())
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
}

impl Drop for LockHandle {
    fn drop(&mut self) {
        self.table.borrow_mut().held.remove(&self.name);
    }
}
