//! Write Quartzite jobs in Rust.
//!
//! A job is a type that implements [`Job`]; [`export_job!`] turns it into the
//! `quartzite:job/runner` export of a WebAssembly component. The generated
//! bindings stay hidden: a job author deals only in [`Context`], [`Outcome`],
//! [`Error`] and the host helpers of this crate ([`kv`], [`lock`], [`cancelled`],
//! the logging macros).
//!
//! Build a job with `cargo build --release --target wasm32-wasip2`; the
//! component is `target/wasm32-wasip2/release/<crate>.wasm`. The crate carries
//! the WIT contract it was built against (`quartzite:job@1.1.0`, in its `wit/`
//! directory), so a job crate anywhere depends on it by path or git alone:
//!
//! ```toml
//! [dependencies]
//! quartzite-sdk = { path = "../quartzite/guest-sdk" } # or { git = "<repository URL>" }
//! serde = { version = "1", features = ["derive"] }
//! ```
//!
//! # Example
//!
//! ```
//! use quartzite_sdk::{Context, Job, JobInfo, Outcome, Result, info, kv};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct Data {
//!     greeting: String,
//! }
//!
//! struct Greeter;
//!
//! impl Job for Greeter {
//!     fn info() -> JobInfo {
//!         JobInfo::new("greeter", "1.0.0").description("greets and counts")
//!     }
//!
//!     fn run(ctx: &Context) -> Result<Outcome> {
//!         let data: Data = ctx.data()?;
//!         let count = kv::get_json::<u64>("greeted")?.unwrap_or(0) + 1;
//!         kv::set_json("greeted", &count)?;
//!         info!("{} (run {count})", data.greeting);
//!         Outcome::details(&serde_json::json!({ "count": count }))
//!     }
//! }
//!
//! quartzite_sdk::export_job!(Greeter);
//!
//! // Job logic is unit-tested natively, without building wasm:
//! use quartzite_sdk::testing::TestHost;
//!
//! let mut host = TestHost::new().data(r#"{"greeting":"hi"}"#);
//! host.run::<Greeter>().unwrap();
//! let outcome = host.run::<Greeter>().unwrap();
//! assert_eq!(outcome.details_json().unwrap()["count"], 2);
//! assert!(host.logs().iter().any(|l| l.message == "hi (run 2)"));
//! ```

#![deny(missing_docs)]

pub mod config;
mod context;
mod error;
pub mod event;
pub mod http;
pub mod limits;
mod sys;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

pub use context::{Context, JobInfo, Outcome, Overlap};
pub use error::{Error, Result, ResultExt, fatal, retry};
pub use serde_json;

use std::time::{Duration, SystemTime};

/// The generated WIT bindings. Not part of the public API: use [`export_job!`].
#[doc(hidden)]
#[allow(missing_docs)]
pub mod __bindings {
    wit_bindgen::generate!({
        // The crate's own copy of the contract: it must build wherever the
        // crate is unpacked (a git checkout, a `cargo package` tarball).
        path: "wit",
        world: "quartzite:job/job",
        pub_export_macro: true,
        export_macro_name: "__export_runner",
        default_bindings_module: "quartzite_sdk::__bindings",
    });
}

/// What a job is: a description and a `run` function.
///
/// Implement it on a unit struct and export it with [`export_job!`].
pub trait Job {
    /// Name, version and hints for the host (`quartzite module inspect` shows them).
    fn info() -> JobInfo;

    /// Runs one fire. Return [`Error::Retry`] for transient failures (the job's
    /// retry policy applies) and [`Error::Fatal`] for permanent ones; `?` on any
    /// `std::error::Error` gives a retry.
    fn run(ctx: &Context) -> Result<Outcome>;
}

/// Exports a [`Job`] as the component's `quartzite:job/runner` interface.
///
/// Use it once per crate, at module level: `quartzite_sdk::export_job!(MyJob);`
#[macro_export]
macro_rules! export_job {
    ($job:ty) => {
        // Natively (unit tests, `cargo build --workspace`) there is no component to
        // export to, and the WIT export names are not valid native symbol names.
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct __QuartziteRunner;

            impl $crate::__bindings::exports::quartzite::job::runner::Guest for __QuartziteRunner {
                fn describe() -> $crate::__bindings::quartzite::job::types::JobInfo {
                    $crate::__private::describe::<$job>()
                }

                fn run(
                    ctx: $crate::__bindings::quartzite::job::types::Context,
                ) -> ::core::result::Result<
                    $crate::__bindings::quartzite::job::types::Outcome,
                    $crate::__bindings::quartzite::job::types::Failure,
                > {
                    $crate::__private::run::<$job>(ctx)
                }
            }

            $crate::__bindings::__export_runner!(__QuartziteRunner with_types_in $crate::__bindings);
        };
        #[cfg(not(target_arch = "wasm32"))]
        const _: fn() = || {
            fn is_a_job<J: $crate::Job>() {}
            is_a_job::<$job>();
        };
    };
}

/// Glue used by [`export_job!`]: converts between the bindings and this crate's types.
#[doc(hidden)]
#[allow(missing_docs)]
pub mod __private {
    use super::__bindings::quartzite::job::types as wit;
    use super::{Context, Error, Job};

    pub fn describe<J: Job>() -> wit::JobInfo {
        J::info().into_wit()
    }

    pub fn run<J: Job>(ctx: wit::Context) -> Result<wit::Outcome, wit::Failure> {
        let ctx = Context::from_wit(ctx);
        match J::run(&ctx) {
            Ok(outcome) => Ok(outcome.into_wit()),
            Err(Error::Retry(msg)) => Err(wit::Failure::Retry(msg)),
            Err(Error::Fatal(msg)) => Err(wit::Failure::Fatal(msg)),
        }
    }
}

/// Log levels, from the most to the least verbose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Step-by-step detail, usually filtered out.
    Trace,
    /// Detail for whoever debugs the job.
    Debug,
    /// What the job did.
    Info,
    /// Something an operator may want to look at.
    Warn,
    /// Something went wrong.
    Error,
}

/// Writes one line to the host's log (tagged there with the job key and fire id).
///
/// The logging macros ([`info!`] and friends) format and call this. The host caps
/// the bytes a run may log; past the cap, lines are dropped and the run's log says so.
pub fn log(level: Level, message: &str) {
    sys::log(level, message);
}

/// True once the run should stop early: its timeout was reached or the node is
/// shutting down. Long jobs should check it between steps and return.
pub fn cancelled() -> bool {
    sys::cancelled()
}

/// The current time: the host's wall clock, or the fake clock of a
/// [`testing::TestHost`].
pub fn now() -> SystemTime {
    sys::now()
}

/// Takes the cluster-wide lock `name`, waiting at most `timeout` for it.
///
/// The lock is held until the returned guard is dropped, and is released by the
/// host when the run ends in any way, so a crashed or leaked guard cannot hold it.
///
/// # Errors
///
/// [`Error::Retry`] when the lock stays taken for `timeout` or the run is cancelled;
/// [`Error::Fatal`] when the name is not acceptable.
pub fn lock(name: &str, timeout: Duration) -> Result<LockGuard> {
    sys::lock(name, timeout)
}

/// A held cluster lock; dropping it releases the lock.
#[derive(Debug)]
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard {
    name: String,
    fencing_token: u64,
    #[allow(dead_code)] // held for its Drop
    inner: sys::LockHandle,
}

impl LockGuard {
    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Grows every time the lock changes hands. Give it to systems that can refuse
    /// writes carrying an older token, so a paused former holder cannot clobber data.
    pub fn fencing_token(&self) -> u64 {
        self.fencing_token
    }
}

/// The job's durable key-value state, kept by the host between runs.
///
/// Keys are per job: two jobs never see each other's keys.
pub mod kv {
    use super::{Error, Result, sys};
    use serde::{Serialize, de::DeserializeOwned};

    /// Reads the raw bytes stored under `key`.
    ///
    /// # Errors
    ///
    /// [`Error::Retry`] when the host's store is unavailable.
    pub fn get(key: &str) -> Result<Option<Vec<u8>>> {
        sys::kv_get(key)
    }

    /// Stores raw bytes under `key`.
    ///
    /// # Errors
    ///
    /// [`Error::Fatal`] when the key or value exceeds the host's limits,
    /// [`Error::Retry`] when the store is unavailable.
    pub fn set(key: &str, value: &[u8]) -> Result<()> {
        sys::kv_set(key, value)
    }

    /// Deletes `key`; returns whether it existed.
    ///
    /// # Errors
    ///
    /// As [`set`].
    pub fn delete(key: &str) -> Result<bool> {
        sys::kv_delete(key)
    }

    /// Reads and deserializes a JSON value stored by [`set_json`].
    ///
    /// # Errors
    ///
    /// As [`get`], plus [`Error::Fatal`] when the stored bytes are not a `T`.
    pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>> {
        match get(key)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Error::Fatal(format!(
                    "kv key {key:?} does not hold the expected JSON: {e}"
                ))
            }),
        }
    }

    /// Serializes `value` as JSON and stores it under `key`.
    ///
    /// # Errors
    ///
    /// As [`set`].
    pub fn set_json<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| Error::Fatal(format!("cannot serialize kv value for {key:?}: {e}")))?;
        set(key, &bytes)
    }
}

/// Logs at an explicit [`Level`]: `log!(Level::Info, "x = {}", x)`.
#[macro_export]
macro_rules! log {
    ($level:expr, $($arg:tt)+) => {
        $crate::log($level, &::std::format!($($arg)+))
    };
}

/// Logs at trace level, formatting like `format!`.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)+) => { $crate::log!($crate::Level::Trace, $($arg)+) };
}

/// Logs at debug level, formatting like `format!`.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)+) => { $crate::log!($crate::Level::Debug, $($arg)+) };
}

/// Logs at info level, formatting like `format!`.
#[macro_export]
macro_rules! info {
    ($($arg:tt)+) => { $crate::log!($crate::Level::Info, $($arg)+) };
}

/// Logs at warn level, formatting like `format!`.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)+) => { $crate::log!($crate::Level::Warn, $($arg)+) };
}

/// Logs at error level, formatting like `format!`.
#[macro_export]
macro_rules! error {
    ($($arg:tt)+) => { $crate::log!($crate::Level::Error, $($arg)+) };
}
