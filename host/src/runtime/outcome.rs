//! What a run produced, as data: metrics, history and retries key on these
//! variants, never on message text.

use serde::Serialize;
use std::time::{Duration, SystemTime};

/// Why a job resolved to the NoOp job instead of its module.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SkipCode {
    /// No module under that name, version, digest or path.
    ModuleMissing,
    /// The bytes are not a valid WebAssembly component (not wasm, truncated, corrupt).
    ModuleInvalid,
    /// A valid wasm binary this host cannot run: a core module, another major version
    /// of `quartzite:job`, or an import the host does not provide.
    ModuleIncompatible,
}

impl SkipCode {
    /// The stable reason code stored in history and shown to operators.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipCode::ModuleMissing => "module-missing",
            SkipCode::ModuleInvalid => "module-invalid",
            SkipCode::ModuleIncompatible => "module-incompatible",
        }
    }
}

impl std::fmt::Display for SkipCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A module that cannot be run, and exactly why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct ModuleRejection {
    pub code: SkipCode,
    pub detail: String,
}

impl ModuleRejection {
    pub(crate) fn new(code: SkipCode, detail: impl Into<String>) -> Self {
        ModuleRejection {
            code,
            detail: detail.into(),
        }
    }
}

/// Which limit a run hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LimitKind {
    /// The guest tried to grow its memory past the job's cap.
    Memory,
    /// The guest used up its fuel.
    Fuel,
    /// The guest's stack overflowed.
    Stack,
    /// The run's details or new data were larger than allowed.
    Output,
}

/// How one run ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum RunOutcome {
    /// `run` returned `ok`.
    Completed {
        details: Option<String>,
        new_data: Option<String>,
    },
    /// `run` returned `err`: `retryable` for `failure::retry`, false for `failure::fatal`.
    Failed { retryable: bool, message: String },
    /// The guest trapped (panic, `unreachable`, bad memory access, ...).
    Trapped { message: String },
    /// The run passed its timeout and was stopped.
    TimedOut { timeout_ms: u64 },
    /// The node is shutting down and stopped the run.
    Cancelled,
    /// A newer fire of the job (overlap `cancel-other`) asked the run to stop:
    /// it returned or was stopped after the grace.
    Superseded { by: String },
    /// The guest hit one of its limits.
    LimitExceeded { limit: LimitKind, message: String },
    /// The NoOp job ran instead of the module: nothing was executed.
    Skipped { reason: SkipCode, detail: String },
}

impl RunOutcome {
    /// The outcome's kind, as written in logs and JSON: `completed`, `failed`, ...
    pub fn status(&self) -> &'static str {
        match self {
            RunOutcome::Completed { .. } => "completed",
            RunOutcome::Failed { .. } => "failed",
            RunOutcome::Trapped { .. } => "trapped",
            RunOutcome::TimedOut { .. } => "timed-out",
            RunOutcome::Cancelled => "cancelled",
            RunOutcome::Superseded { .. } => "superseded",
            RunOutcome::LimitExceeded { .. } => "limit-exceeded",
            RunOutcome::Skipped { .. } => "skipped",
        }
    }

    /// Whether the run succeeded.
    pub fn is_success(&self) -> bool {
        matches!(self, RunOutcome::Completed { .. })
    }

    /// Whether the job's retry policy may run the fire again. Fatal failures and
    /// skips never retry; crashes, timeouts and limits do, since the next attempt
    /// may see other data or state.
    pub fn is_retryable(&self) -> bool {
        match self {
            RunOutcome::Failed { retryable, .. } => *retryable,
            RunOutcome::Trapped { .. }
            | RunOutcome::TimedOut { .. }
            | RunOutcome::LimitExceeded { .. } => true,
            RunOutcome::Completed { .. }
            | RunOutcome::Cancelled
            | RunOutcome::Superseded { .. }
            | RunOutcome::Skipped { .. } => false,
        }
    }

    /// A one-line human summary, for logs and the CLI's stderr.
    pub fn summary(&self) -> String {
        match self {
            RunOutcome::Completed { .. } => "completed".into(),
            RunOutcome::Failed {
                retryable: true,
                message,
            } => format!("failed (retryable): {message}"),
            RunOutcome::Failed {
                retryable: false,
                message,
            } => format!("failed (fatal): {message}"),
            RunOutcome::Trapped { message } => format!("trapped: {message}"),
            RunOutcome::TimedOut { timeout_ms } => format!("timed out after {timeout_ms} ms"),
            RunOutcome::Cancelled => "cancelled: the node is shutting down".into(),
            RunOutcome::Superseded { by } => {
                format!("cancelled: fire {by} of this job (overlap cancel-other) superseded it")
            }
            RunOutcome::LimitExceeded { limit, message } => {
                format!("{} limit exceeded: {message}", serde_plain(limit))
            }
            RunOutcome::Skipped { reason, detail } => format!("skipped ({reason}): {detail}"),
        }
    }
}

fn serde_plain(limit: &LimitKind) -> &'static str {
    match limit {
        LimitKind::Memory => "memory",
        LimitKind::Fuel => "fuel",
        LimitKind::Stack => "stack",
        LimitKind::Output => "output",
    }
}

/// The level of a captured log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Where a captured log line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogSource {
    /// The `host.log` import.
    Log,
    Stdout,
    Stderr,
}

/// One line the guest logged or printed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LogLine {
    pub level: LogLevel,
    pub source: LogSource,
    pub message: String,
}

/// Everything about one run.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    #[serde(flatten)]
    pub outcome: RunOutcome,
    #[serde(with = "system_time_ms")]
    pub started_at: SystemTime,
    #[serde(rename = "duration_ms", serialize_with = "duration_ms")]
    pub duration: Duration,
    pub logs: Vec<LogLine>,
    /// Lines dropped because the run reached its log cap.
    pub logs_dropped: u64,
}

fn duration_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

mod system_time_ms {
    use std::time::{SystemTime, UNIX_EPOCH};

    pub fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        let ms = t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        s.serialize_u128(ms)
    }
}

pub use crate::domain::Overlap;

/// What a module's `describe` returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JobInfo {
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    pub default_schedule: Option<String>,
    pub overlap: Option<Overlap>,
}
