//! The job manifest, `jobs.toml`: the declarative list of modules and jobs a
//! node reconciles when it starts.
//!
//! Loading is pure: [`Manifest::load`] and [`Manifest::parse`] only read and
//! validate, they never touch the store. A manifest is accepted as a whole or
//! rejected as a whole, and a rejected manifest reports *every* problem found,
//! each naming the file, the 1-based line and column and the field path (for
//! example `job[2].trigger[1].cron`, indices 1-based), so an operator can fix
//! them all in one go.
//!
//! The document is walked through `toml`'s spanned document tree rather than
//! through `serde` derives, so that unknown keys, wrong types and semantic
//! errors are all collected instead of stopping at the first one. TOML syntax
//! errors are reported on their own (the parser recovers and reports as many
//! as it can); semantic validation only runs on a syntactically valid file.
//!
//! ```toml
//! [[module]]
//! name = "hello"                  # required, [a-z0-9][a-z0-9_-]*, at most 64 characters
//! path = "modules/hello.wasm"     # required, relative to the manifest's directory
//! version = "1.0.0"               # optional
//!
//! [[job]]
//! key = "examples/hello"          # required, "group/name"
//! module = "hello"                # "NAME", "NAME@VERSION" or "sha256:<64 hex>"
//! data = { name = "Quartzite" }   # any TOML value, handed to the job as JSON
//! overlap = "allow"               # "allow" | "forbid" | "skip" | "buffer-one" | "cancel-other"
//! timeout = "30s"
//! max_memory = "64MiB"
//! kv_max_keys = 10000             # the job's whole kv state: keys ...
//! kv_max_bytes = "16MiB"          # ... and bytes of values (these are the defaults)
//! requests_recovery = false
//! priority = 5                    # 1..=10, higher runs first
//! paused = false
//! pause_on_failure = 5            # pause after 5 failed runs in a row (default: never)
//! concurrency = { key = "{{ event.payload.account_id }}", limit = 3 }  # per key, cluster-wide
//! rate = { key = "{{ job }}", limit = 10, per = "1s" }   # starts per key in any window
//! debounce = { window = "5s", key = "{{ event.payload.doc }}" }  # event jobs: one run after a burst
//! singleton = { key = "{{ event.payload.doc }}" }          # event jobs: one at a time, one queued
//! [job.retry]
//! max_attempts = 3
//! backoff = "exponential"         # "immediate" | "exponential"
//! initial = "1s"
//! max = "5m"
//! jitter = 0.1
//! [[job.trigger]]
//! name = "every-10s"
//! cron = "0/10 * * * * ?"         # exactly one of cron | every | at | on | event
//! tz = "Europe/Berlin"
//! misfire = "fire-now"            # "fire-now" | "skip" | "fire-once"
//! jitter = "30s"                  # each fire up to 30 s late, the same on every node
//! [[job.trigger]]
//! event = "order.created"         # fires once for every event of this name
//! [job.grants]                    # nothing is granted by default (see `crate::grants`)
//! http = ["https://api.example.com/v1/*"]
//! emit = ["report.*"]
//! config = { channel = "#ops" }
//! [[job.grants.secret]]
//! name = "SLACK_TOKEN"            # stored with `quartzite secret set`
//! url = "https://hooks.example.com/*"
//! header = "Authorization"
//! format = "Bearer {}"
//!
//! [[alert]]
//! name = "ops"
//! on = "permanent-failure"        # | "consecutive-failures" (with `after = N`) | "misfire" | "noop-skip"
//! job = "examples/*"              # a job key, "group/*" or "*" (the default: every job)
//! webhook = "http://127.0.0.1:9000/alerts"
//! ```

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::diagnostics::{self, Diagnostics};

use crate::domain::events::{AlertCondition, AlertRule, check_job_pattern, check_webhook};
pub use crate::domain::{
    Backoff, MisfirePolicy, Overlap, ParseValueError, RetryPolicy, TriggerKind, parse_size,
};
use crate::schedule::cron::{CronError, CronSchedule};
use crate::schedule::interval::IntervalSchedule;

/// Job timeout when the manifest gives none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Memory limit of one job run, in bytes, when the manifest gives none (128 MiB).
pub const DEFAULT_MAX_MEMORY: u64 = 128 * 1024 * 1024;
/// Job priority when the manifest gives none.
pub const DEFAULT_PRIORITY: u8 = 5;
/// Lowest priority a job or trigger can have.
pub const MIN_PRIORITY: u8 = 1;
/// Highest priority a job or trigger can have (runs first).
pub const MAX_PRIORITY: u8 = 10;
/// Time zone of cron triggers that name none.
pub const DEFAULT_TIME_ZONE: &str = "UTC";

/// Shortest job timeout and shortest trigger period.
const MIN_DURATION: Duration = Duration::from_millis(1);

const TOP_KEYS: &[&str] = &["module", "job", "alert", "calendar"];
const CALENDAR_KEYS: &[&str] = &[
    "name",
    "kind",
    "tz",
    "base",
    "description",
    "dates",
    "days",
    "window",
    "invert",
    "cron",
    "rrule",
    "dtstart",
    "duration",
];
const ALERT_KEYS: &[&str] = &["name", "on", "job", "after", "webhook"];
const MODULE_KEYS: &[&str] = &["name", "path", "version"];
const JOB_KEYS: &[&str] = &[
    "key",
    "module",
    "data",
    "overlap",
    "timeout",
    "max_memory",
    "kv_max_keys",
    "kv_max_bytes",
    "requests_recovery",
    "priority",
    "paused",
    "pause_on_failure",
    "concurrency",
    "rate",
    "debounce",
    "singleton",
    "retry",
    "trigger",
    "grants",
];
const RETRY_KEYS: &[&str] = &["max_attempts", "backoff", "initial", "max", "jitter"];
const TRIGGER_KEYS: &[&str] = &[
    "name", "cron", "tz", "every", "repeat", "at", "on", "event", "misfire", "start", "end",
    "priority", "jitter", "calendar",
];
/// The keys that say what kind of trigger a `[[job.trigger]]` is.
const TRIGGER_KINDS: &[&str] = &["cron", "every", "at", "on", "event"];

// ---------------------------------------------------------------------------
// Domain values
// ---------------------------------------------------------------------------

/// A validated manifest: the modules to push and the jobs to reconcile.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The manifest file, as it was given to [`Manifest::load`] or [`Manifest::parse`].
    pub path: PathBuf,
    /// The `[[module]]` entries, in file order.
    pub modules: Vec<ModuleDecl>,
    /// The `[[job]]` entries, in file order.
    pub jobs: Vec<JobDecl>,
    /// The `[[alert]]` rules, in file order.
    pub alerts: Vec<AlertRule>,
    /// The `[[calendar]]` exclusion calendars, in file order.
    pub calendars: Vec<crate::schedule::calendar::CalendarDef>,
}

/// One `[[module]]`: a WebAssembly component file to push under a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleDecl {
    /// Module name, `[a-z0-9][a-z0-9_-]*`, at most 64 characters.
    pub name: String,
    /// The component file, resolved against the manifest's directory (whether
    /// it exists is not checked here).
    pub path: PathBuf,
    /// The version to push it as, if the manifest names one.
    pub version: Option<String>,
}

/// One `[[job]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct JobDecl {
    /// The part of the key before `/`.
    pub group: String,
    /// The part of the key after `/`.
    pub name: String,
    /// Which module runs the job.
    pub module: ModuleSpec,
    /// Input handed to every run (`null` when the manifest gives none).
    pub data: serde_json::Value,
    /// What happens when a fire comes while a run is still going.
    pub overlap: Overlap,
    /// Whether `overlap` was written; when not, the module's `describe()`
    /// hint is used at start.
    pub overlap_given: bool,
    /// Wall-clock limit of one run.
    pub timeout: Duration,
    /// Memory limit of one run, in bytes.
    pub max_memory: u64,
    /// Keys the job's kv state may hold (`None`: the default, 10,000).
    pub kv_max_keys: Option<u64>,
    /// Bytes of values the job's kv state may hold (`None`: the default, 16 MiB).
    pub kv_max_bytes: Option<u64>,
    /// Whether a run interrupted by a node crash is run again.
    pub requests_recovery: bool,
    /// 1..=10; higher runs first.
    pub priority: u8,
    /// Whether the job starts paused.
    pub paused: bool,
    /// Pause the job after this many failed runs in a row.
    pub pause_on_failure: Option<u32>,
    /// Concurrency and rate limits per key.
    pub flow: crate::domain::flow::Flow,
    /// What happens after a failed run.
    pub retry: RetryPolicy,
    /// When the job fires, in file order.
    pub triggers: Vec<TriggerDecl>,
    /// What the job may do beyond its sandbox (`[job.grants]`); nothing by default.
    pub grants: crate::grants::Grants,
}

impl JobDecl {
    /// The job key, `group/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.group, self.name)
    }
}

/// Which module a job runs: the store's and the API's module reference.
pub use crate::domain::ModuleRef as ModuleSpec;

/// One `[[job.trigger]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerDecl {
    /// Unique within the job; defaults to `<job name>-<1-based index>`.
    pub name: String,
    /// When it fires.
    pub kind: TriggerKind,
    /// What to do about fires missed while no node was running.
    pub misfire: MisfirePolicy,
    /// No fire before this instant.
    pub start: Option<DateTime<Utc>>,
    /// No fire at or after this instant.
    pub end: Option<DateTime<Utc>>,
    /// Overrides the job's priority for fires of this trigger.
    pub priority: Option<u8>,
    /// Each fire is due up to this long after its time (never at or past
    /// the trigger's next fire), the same delay for a fire on every node.
    pub jitter: Duration,
    /// The `[[calendar]]`s whose excluded times it does not fire at.
    pub calendars: Vec<String>,
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// One problem in a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// The manifest file, as given.
    pub file: PathBuf,
    /// 1-based line; 0 when the problem concerns the whole file (e.g. it cannot be read).
    pub line: usize,
    /// 1-based column in characters; 0 together with `line`.
    pub column: usize,
    /// Path of the offending field, e.g. `job[2].trigger[1].cron` (1-based
    /// indices); empty for TOML syntax errors and whole-file problems.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl ManifestError {
    fn whole_file(file: &Path, message: String) -> Self {
        ManifestError {
            file: file.to_path_buf(),
            line: 0,
            column: 0,
            field: String::new(),
            message,
        }
    }
}

impl fmt::Display for ManifestError {
    /// `jobs.toml:14:8: job[2].trigger[1].cron: invalid cron expression ...`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ManifestError {}

/// Every problem found in a rejected manifest, in file order. Never empty
/// when returned by [`Manifest::load`] or [`Manifest::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestErrors(pub Vec<ManifestError>);

impl ManifestErrors {
    /// The individual errors.
    pub fn iter(&self) -> std::slice::Iter<'_, ManifestError> {
        self.0.iter()
    }

    /// How many errors there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ManifestErrors {
    /// One error per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ManifestErrors {}

impl<'a> IntoIterator for &'a ManifestErrors {
    type Item = &'a ManifestError;
    type IntoIter = std::slice::Iter<'a, ManifestError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

// ---------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------

impl Manifest {
    /// Reads and validates the manifest at `path`. Module paths are resolved
    /// against the manifest's directory made absolute, so they stay valid if
    /// the working directory changes later.
    ///
    /// # Errors
    ///
    /// Every problem found: the file cannot be read or is not UTF-8, TOML
    /// syntax errors, or all semantic errors (see [`Manifest::parse`]).
    pub fn load(path: impl AsRef<Path>) -> Result<Manifest, ManifestErrors> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| {
            ManifestErrors(vec![ManifestError::whole_file(
                path,
                format!("cannot read manifest: {e}"),
            )])
        })?;
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => {
                let valid = e.utf8_error().valid_up_to();
                let prefix = std::str::from_utf8(&e.as_bytes()[..valid]).unwrap_or("");
                return Err(validate::not_utf8(path, prefix, valid));
            }
        };
        let base = std::path::absolute(path)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| path.parent().map(Path::to_path_buf).unwrap_or_default());
        validate::parse_with_base(&text, path, &base, true)
    }

    /// Validates manifest `text`. `path` names the file in error messages and
    /// module paths are joined onto its directory; nothing is read from disk.
    ///
    /// # Errors
    ///
    /// TOML syntax errors if there are any; otherwise every unknown key, wrong
    /// type, missing field and invalid value in the whole manifest.
    pub fn parse(text: &str, path: impl AsRef<Path>) -> Result<Manifest, ManifestErrors> {
        let path = path.as_ref();
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        validate::parse_with_base(text, path, &base, false)
    }
}

// ---------------------------------------------------------------------------
// Lexical checks
// ---------------------------------------------------------------------------

// The rules themselves live in `crate::domain`, shared with the API and the CLI.

fn check_module_name(name: &str) -> Result<(), String> {
    crate::domain::check_module_name(name)
}

fn check_version(version: &str) -> Result<(), String> {
    crate::domain::check_module_version(version)
}

/// One part of a job key, or a trigger name ([`crate::domain::check_part`]).
pub(crate) fn check_part(part: &str) -> Result<(), String> {
    crate::domain::check_part(part)
}

fn parse_job_key(key: &str) -> Result<(&str, &str), String> {
    crate::domain::check_job_key(key)
}

mod validate;

#[cfg(test)]
mod tests;
