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
//! overlap = "allow"               # "allow" | "forbid" | "skip"
//! timeout = "30s"
//! max_memory = "64MiB"
//! kv_max_keys = 10000             # the job's whole kv state: keys ...
//! kv_max_bytes = "16MiB"          # ... and bytes of values (these are the defaults)
//! requests_recovery = false
//! priority = 5                    # 1..=10, higher runs first
//! paused = false
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
use serde::{Deserialize, Serialize};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::schedule::cron::{CronError, CronSchedule};
use crate::schedule::interval::IntervalSchedule;
use crate::store::events::{AlertCondition, AlertRule};

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

const TOP_KEYS: &[&str] = &["module", "job", "alert"];
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
    "retry",
    "trigger",
    "grants",
];
const RETRY_KEYS: &[&str] = &["max_attempts", "backoff", "initial", "max", "jitter"];
const TRIGGER_KEYS: &[&str] = &[
    "name", "cron", "tz", "every", "repeat", "at", "on", "event", "misfire", "start", "end",
    "priority",
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

/// Which module a job runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ModuleSpec {
    /// `NAME`: the most recently pushed version of the module.
    Latest(String),
    /// `NAME@VERSION`: one pinned version.
    Version {
        /// Module name.
        name: String,
        /// Module version.
        version: String,
    },
    /// `sha256:<hex>`: exactly these bytes; holds the 64 lowercase hex digits.
    Digest(String),
}

impl ModuleSpec {
    /// The module name, unless the spec is a digest.
    pub fn module_name(&self) -> Option<&str> {
        match self {
            ModuleSpec::Latest(name) | ModuleSpec::Version { name, .. } => Some(name),
            ModuleSpec::Digest(_) => None,
        }
    }
}

impl fmt::Display for ModuleSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModuleSpec::Latest(name) => f.write_str(name),
            ModuleSpec::Version { name, version } => write!(f, "{name}@{version}"),
            ModuleSpec::Digest(hex) => write!(f, "sha256:{hex}"),
        }
    }
}

impl FromStr for ModuleSpec {
    type Err = ParseValueError;

    /// Parses `NAME`, `NAME@VERSION` or `sha256:<64 hex digits>` (hex digits
    /// of either case; they are stored lowercase).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: String| ParseValueError(format!("invalid module {s:?}: {reason}"));
        if let Some(hex) = s.strip_prefix("sha256:") {
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(
                    "a digest is `sha256:` followed by 64 hex digits".to_owned(),
                ));
            }
            return Ok(ModuleSpec::Digest(hex.to_ascii_lowercase()));
        }
        match s.split_once('@') {
            Some((name, version)) => {
                check_module_name(name).map_err(invalid)?;
                check_version(version).map_err(invalid)?;
                Ok(ModuleSpec::Version {
                    name: name.to_owned(),
                    version: version.to_owned(),
                })
            }
            None => {
                check_module_name(s).map_err(invalid)?;
                Ok(ModuleSpec::Latest(s.to_owned()))
            }
        }
    }
}

/// What happens when a job fires while one of its runs is still going.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Overlap {
    /// Start another run alongside.
    #[default]
    Allow,
    /// Keep the fire waiting until the running one ends.
    Forbid,
    /// Drop the fire.
    Skip,
}

impl Overlap {
    /// The manifest spelling: `allow`, `forbid` or `skip`.
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Allow => "allow",
            Overlap::Forbid => "forbid",
            Overlap::Skip => "skip",
        }
    }
}

impl FromStr for Overlap {
    type Err = ParseValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "allow" => Ok(Overlap::Allow),
            "forbid" => Ok(Overlap::Forbid),
            "skip" => Ok(Overlap::Skip),
            _ => Err(ParseValueError(format!(
                "invalid overlap policy {s:?}: expected \"allow\", \"forbid\" or \"skip\""
            ))),
        }
    }
}

/// How long to wait between attempts of a failed run.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in total, at least 1 (1 means no retry).
    pub max_attempts: u32,
    /// How the delay grows.
    pub backoff: Backoff,
    /// Delay after the first failed attempt (before jitter).
    pub initial: Duration,
    /// Cap on the delay (before jitter); at least `initial`.
    pub max: Duration,
    /// Relative spread of the delay, 0.0..=1.0: the delay is multiplied by a
    /// random factor in `[1 - jitter, 1 + jitter)`.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    /// One attempt (no retry), exponential from 1 s up to 5 min, 10 % jitter.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 1,
            backoff: Backoff::Exponential,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
            jitter: 0.1,
        }
    }
}

impl RetryPolicy {
    /// The delay before attempt `attempt + 1`, after attempt `attempt` (1-based;
    /// 0 is read as 1) failed.
    ///
    /// [`Backoff::Immediate`] gives zero. [`Backoff::Exponential`] gives
    /// `min(initial * 2^(attempt-1), max)` multiplied by
    /// `1 + jitter * (2 * random - 1)`, where `random` is a uniform sample from
    /// `[0, 1)` supplied by the caller (values outside are clamped, a
    /// non-finite one means no jitter). Never overflows or panics: the
    /// arithmetic saturates at `max` and at [`Duration::MAX`].
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        if self.backoff == Backoff::Immediate {
            return Duration::ZERO;
        }
        let doublings = attempt.saturating_sub(1);
        let base = if self.initial.is_zero() {
            Duration::ZERO
        } else {
            2u32.checked_pow(doublings)
                .and_then(|factor| self.initial.checked_mul(factor))
                .map_or(self.max, |d| d.min(self.max))
        };
        let jitter = if self.jitter.is_finite() {
            self.jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let random = if random.is_finite() {
            random.clamp(0.0, 1.0)
        } else {
            0.5
        };
        let factor = 1.0 + jitter * (2.0 * random - 1.0);
        if base.is_zero() || factor == 1.0 {
            return base;
        }
        Duration::try_from_secs_f64(base.as_secs_f64() * factor).unwrap_or(Duration::MAX)
    }
}

/// How the retry delay grows from attempt to attempt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backoff {
    /// Retry at once.
    Immediate,
    /// Double the delay after each failed attempt, up to the maximum.
    #[default]
    Exponential,
}

impl Backoff {
    /// The manifest spelling: `immediate` or `exponential`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backoff::Immediate => "immediate",
            Backoff::Exponential => "exponential",
        }
    }
}

impl FromStr for Backoff {
    type Err = ParseValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "immediate" => Ok(Backoff::Immediate),
            "exponential" => Ok(Backoff::Exponential),
            _ => Err(ParseValueError(format!(
                "invalid backoff {s:?}: expected \"immediate\" or \"exponential\""
            ))),
        }
    }
}

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
}

/// When a trigger fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriggerKind {
    /// A Quartz cron expression in an IANA time zone (both validated).
    Cron {
        /// The expression as written.
        expr: String,
        /// IANA zone name, `UTC` by default.
        tz: String,
    },
    /// Every `period`, `repeat` more times after the first (forever if `None`).
    Every {
        /// At least 1 ms.
        period: Duration,
        /// Number of repeats after the first fire.
        repeat: Option<u64>,
    },
    /// Once, at this instant.
    At(DateTime<Utc>),
    /// At every node start.
    OnStart,
    /// Once per store, keyed by job key and module version.
    Once,
    /// Once for every event of this name.
    Event(String),
}

/// What to do about fires that were due while no node could run them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MisfirePolicy {
    /// Fire once now for the missed fires, then continue on schedule.
    #[default]
    FireNow,
    /// Drop missed fires.
    Skip,
    /// Fire once for all missed fires (Quartz's "fire once now").
    FireOnce,
}

impl MisfirePolicy {
    /// The manifest spelling: `fire-now`, `skip` or `fire-once`.
    pub fn as_str(self) -> &'static str {
        match self {
            MisfirePolicy::FireNow => "fire-now",
            MisfirePolicy::Skip => "skip",
            MisfirePolicy::FireOnce => "fire-once",
        }
    }
}

impl fmt::Display for MisfirePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MisfirePolicy {
    type Err = ParseValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fire-now" => Ok(MisfirePolicy::FireNow),
            "skip" => Ok(MisfirePolicy::Skip),
            "fire-once" => Ok(MisfirePolicy::FireOnce),
            _ => Err(ParseValueError(format!(
                "invalid misfire policy {s:?}: expected \"fire-now\", \"skip\" or \"fire-once\""
            ))),
        }
    }
}

/// A string that is not a valid [`ModuleSpec`], [`Overlap`], [`Backoff`] or
/// [`MisfirePolicy`]; the message quotes it and says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseValueError(pub String);

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
                let mut validator = Validator::new(path, prefix);
                validator.error(valid..valid, "", "the manifest is not valid UTF-8");
                return Err(validator.into_errors());
            }
        };
        let base = std::path::absolute(path)
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| path.parent().map(Path::to_path_buf).unwrap_or_default());
        parse_with_base(&text, path, &base, true)
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
        parse_with_base(text, path, &base, false)
    }
}

/// `check_files`: also report module files that do not exist, in the same
/// round as every other error (set when the manifest was read from disk).
fn parse_with_base(
    text: &str,
    path: &Path,
    base: &Path,
    check_files: bool,
) -> Result<Manifest, ManifestErrors> {
    let mut validator = Validator::new(path, text);
    validator.check_files = check_files;
    let (root, syntax_errors) = DeTable::parse_recoverable(text);
    if !syntax_errors.is_empty() {
        for error in syntax_errors {
            let span = error.span().unwrap_or(0..0);
            validator.error(span, "", format!("invalid TOML: {}", error.message()));
        }
        return Err(validator.into_errors());
    }
    let table = Table {
        table: root.get_ref(),
        span: root.span(),
        path: String::new(),
    };
    let (modules, jobs, alerts) = validator.document(&table, base);
    if validator.errors.is_empty() {
        Ok(Manifest {
            path: path.to_path_buf(),
            modules,
            jobs,
            alerts,
        })
    } else {
        Err(validator.into_errors())
    }
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

type Value<'i> = Spanned<DeValue<'i>>;

/// A TOML table together with where it is and its field path.
struct Table<'t, 'i> {
    table: &'t DeTable<'i>,
    /// The table's header (`[[job]]`) or inline `{ ... }`.
    span: Range<usize>,
    /// Field path of the table, e.g. `job[2]`; empty for the document.
    path: String,
}

impl<'t, 'i> Table<'t, 'i> {
    fn field(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn get(&self, key: &str) -> Option<&'t Value<'i>> {
        self.table.get(key)
    }

    /// Where `key` is written, if present.
    fn key_span(&self, key: &str) -> Option<Range<usize>> {
        self.table.get_key_value(key).map(|(k, _)| k.span())
    }
}

/// Collects errors while turning the document tree into domain values.
struct Validator<'a> {
    file: &'a Path,
    text: &'a str,
    line_starts: Vec<usize>,
    /// Errors with the byte offset they point at, for sorting into file order.
    errors: Vec<(usize, ManifestError)>,
    /// Whether module paths are checked to name existing files.
    check_files: bool,
}

/// What the cross-checks need to know about a `[[module]]`.
struct ModuleSeen {
    path: String,
    name: String,
    name_span: Range<usize>,
    version: Option<String>,
}

/// What the cross-checks need to know about a `[[job]]`.
struct JobSeen {
    path: String,
    key: Option<(String, Range<usize>)>,
    module: Option<(ModuleSpec, Range<usize>)>,
}

impl<'a> Validator<'a> {
    fn new(file: &'a Path, text: &'a str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Validator {
            file,
            text,
            line_starts,
            errors: Vec::new(),
            check_files: false,
        }
    }

    /// 1-based line and column (in characters) of byte `offset`.
    fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self
            .line_starts
            .partition_point(|&start| start <= offset)
            .max(1);
        let start = self.line_starts.get(line - 1).copied().unwrap_or(0);
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (line, column + 1)
    }

    fn error(&mut self, span: Range<usize>, field: &str, message: impl Into<String>) {
        let (line, column) = self.position(span.start);
        self.errors.push((
            span.start,
            ManifestError {
                file: self.file.to_path_buf(),
                line,
                column,
                field: field.to_owned(),
                message: message.into(),
            },
        ));
    }

    fn into_errors(mut self) -> ManifestErrors {
        self.errors.sort_by_key(|(offset, _)| *offset);
        ManifestErrors(self.errors.into_iter().map(|(_, e)| e).collect())
    }

    // -- the document -------------------------------------------------------

    fn document(
        &mut self,
        root: &Table<'_, '_>,
        base: &Path,
    ) -> (Vec<ModuleDecl>, Vec<JobDecl>, Vec<AlertRule>) {
        self.check_keys(root, TOP_KEYS);

        let mut modules = Vec::new();
        let mut modules_seen = Vec::new();
        for entry in self.array_of_tables(root, "module") {
            let (decl, seen) = self.module(&entry, base);
            modules.push(decl);
            modules_seen.extend(seen);
        }

        let mut jobs = Vec::new();
        let mut jobs_seen = Vec::new();
        for entry in self.array_of_tables(root, "job") {
            let (decl, seen) = self.job(&entry);
            jobs.push(decl);
            jobs_seen.push(seen);
        }

        let mut alerts: Vec<AlertRule> = Vec::new();
        for entry in self.array_of_tables(root, "alert") {
            if let Some(rule) = self.alert(&entry) {
                if alerts.iter().any(|a| a.name == rule.name) {
                    self.error(
                        entry.span.clone(),
                        &entry.field("name"),
                        format!("duplicate alert name {:?}", rule.name),
                    );
                } else {
                    alerts.push(rule);
                }
            }
        }

        self.cross_check(&modules_seen, &jobs_seen);
        (modules, jobs, alerts)
    }

    // -- [[alert]] -----------------------------------------------------------

    fn alert(&mut self, t: &Table<'_, '_>) -> Option<AlertRule> {
        self.check_keys(t, ALERT_KEYS);
        let name = self.required(t, "name").and_then(|v| {
            let s = self.string(v, &t.field("name"))?;
            match check_part(s) {
                Ok(()) => Some(s.to_owned()),
                Err(reason) => {
                    self.error(
                        v.span(),
                        &t.field("name"),
                        format!("invalid alert name {s:?}: {reason}"),
                    );
                    None
                }
            }
        });
        let condition = self.required(t, "on").and_then(|v| {
            let s = self.string(v, &t.field("on"))?;
            let parsed = AlertCondition::parse(s);
            if parsed.is_none() {
                self.error(
                    v.span(),
                    &t.field("on"),
                    format!(
                        "invalid alert condition {s:?}: expected \"permanent-failure\", \
                         \"consecutive-failures\", \"misfire\" or \"noop-skip\""
                    ),
                );
            }
            parsed
        });
        let job = t.get("job").and_then(|v| {
            let s = self.string(v, &t.field("job"))?;
            match check_job_pattern(s) {
                Ok(()) => Some(s.to_owned()),
                Err(reason) => {
                    self.error(v.span(), &t.field("job"), reason);
                    None
                }
            }
        });
        let after = match t.get("after") {
            None => None,
            Some(v) => {
                let n = self.integer(v, &t.field("after"))?;
                if condition.is_some_and(|c| c != AlertCondition::ConsecutiveFailures) {
                    self.error(
                        v.span(),
                        &t.field("after"),
                        "`after` only applies to `consecutive-failures` alerts",
                    );
                }
                match u32::try_from(n) {
                    Ok(n @ 1..=1000) => Some(n),
                    _ => {
                        self.error(
                            v.span(),
                            &t.field("after"),
                            format!("after must be 1 to 1000, not {n}"),
                        );
                        None
                    }
                }
            }
        };
        if condition == Some(AlertCondition::ConsecutiveFailures) && t.get("after").is_none() {
            self.error(
                t.span.clone(),
                &t.field("after"),
                "a `consecutive-failures` alert needs `after`: how many failed runs in a row",
            );
        }
        let webhook = self.required(t, "webhook").and_then(|v| {
            let s = self.string(v, &t.field("webhook"))?;
            match check_webhook(s) {
                Ok(()) => Some(s.to_owned()),
                Err(reason) => {
                    self.error(v.span(), &t.field("webhook"), reason);
                    None
                }
            }
        });
        Some(AlertRule {
            name: name?,
            condition: condition?,
            job_pattern: job,
            threshold: after.unwrap_or(1),
            webhook: webhook?,
            source: "manifest".into(),
        })
    }

    fn cross_check(&mut self, modules: &[ModuleSeen], jobs: &[JobSeen]) {
        let mut by_name: HashMap<&str, &ModuleSeen> = HashMap::new();
        for module in modules {
            match by_name.get(module.name.as_str()) {
                Some(first) => {
                    let (line, _) = self.position(first.name_span.start);
                    self.error(
                        module.name_span.clone(),
                        &format!("{}.name", module.path),
                        format!(
                            "duplicate module name {:?} (first declared on line {line})",
                            module.name
                        ),
                    );
                }
                None => {
                    by_name.insert(&module.name, module);
                }
            }
        }

        let mut by_key: HashMap<&str, usize> = HashMap::new();
        for job in jobs {
            if let Some((key, span)) = &job.key {
                match by_key.get(key.as_str()) {
                    Some(&first) => {
                        let (line, _) = self.position(first);
                        self.error(
                            span.clone(),
                            &format!("{}.key", job.path),
                            format!("duplicate job key {key:?} (first declared on line {line})"),
                        );
                    }
                    None => {
                        by_key.insert(key, span.start);
                    }
                }
            }
            if let Some((ModuleSpec::Version { name, version }, span)) = &job.module
                && let Some(declared) = by_name.get(name.as_str())
                && let Some(declared_version) = &declared.version
                && declared_version != version
            {
                let (line, _) = self.position(declared.name_span.start);
                self.error(
                    span.clone(),
                    &format!("{}.module", job.path),
                    format!(
                        "module {name:?} is declared with version {declared_version:?} \
                         on line {line}, not {version:?}"
                    ),
                );
            }
        }
    }

    // -- [[module]] ----------------------------------------------------------

    fn module(&mut self, t: &Table<'_, '_>, base: &Path) -> (ModuleDecl, Option<ModuleSeen>) {
        self.check_keys(t, MODULE_KEYS);
        let mut seen = None;
        let mut name = String::new();
        if let Some(v) = self.required(t, "name")
            && let Some(s) = self.string(v, &t.field("name"))
        {
            match check_module_name(s) {
                Ok(()) => {
                    name = s.to_owned();
                    seen = Some(ModuleSeen {
                        path: t.path.clone(),
                        name: name.clone(),
                        name_span: v.span(),
                        version: None,
                    });
                }
                Err(reason) => {
                    self.error(
                        v.span(),
                        &t.field("name"),
                        format!("invalid module name {s:?}: {reason}"),
                    );
                }
            }
        }
        let mut path = PathBuf::new();
        if let Some(v) = self.required(t, "path")
            && let Some(s) = self.string(v, &t.field("path"))
        {
            if s.is_empty() {
                self.error(v.span(), &t.field("path"), "the module path is empty");
            } else {
                path = base.join(s);
                if self.check_files && !path.is_file() {
                    self.error(
                        v.span(),
                        &t.field("path"),
                        format!("module-missing: no file {}", path.display()),
                    );
                }
            }
        }
        let mut version = None;
        if let Some(v) = t.get("version")
            && let Some(s) = self.string(v, &t.field("version"))
        {
            match check_version(s) {
                Ok(()) => version = Some(s.to_owned()),
                Err(reason) => self.error(
                    v.span(),
                    &t.field("version"),
                    format!("invalid module version {s:?}: {reason}"),
                ),
            }
        }
        if let Some(seen) = &mut seen {
            seen.version.clone_from(&version);
        }
        (
            ModuleDecl {
                name,
                path,
                version,
            },
            seen,
        )
    }

    // -- [[job]] -------------------------------------------------------------

    fn job(&mut self, t: &Table<'_, '_>) -> (JobDecl, JobSeen) {
        self.check_keys(t, JOB_KEYS);
        let mut seen = JobSeen {
            path: t.path.clone(),
            key: None,
            module: None,
        };

        let (mut group, mut name) = (String::new(), String::new());
        if let Some(v) = self.required(t, "key")
            && let Some(s) = self.string(v, &t.field("key"))
        {
            match parse_job_key(s) {
                Ok((g, n)) => {
                    group = g.to_owned();
                    name = n.to_owned();
                    seen.key = Some((s.to_owned(), v.span()));
                }
                Err(reason) => {
                    // Still name default triggers after something recognisable.
                    name = s.rsplit('/').next().unwrap_or(s).to_owned();
                    self.error(
                        v.span(),
                        &t.field("key"),
                        format!("invalid job key {s:?}: {reason}"),
                    );
                }
            }
        }

        let mut module = ModuleSpec::Latest(String::new());
        if let Some(v) = self.required(t, "module")
            && let Some(s) = self.string(v, &t.field("module"))
        {
            match s.parse::<ModuleSpec>() {
                Ok(spec) => {
                    seen.module = Some((spec.clone(), v.span()));
                    module = spec;
                }
                Err(e) => self.error(v.span(), &t.field("module"), e.0),
            }
        }

        let data = t
            .get("data")
            .map_or(serde_json::Value::Null, |v| self.json(v, &t.field("data")));
        if let Some(v) = t.get("data")
            && let Err(e) = crate::domain::job_data_text(Some(&data))
        {
            self.error(v.span(), &t.field("data"), e);
        }
        let overlap = self.parsed::<Overlap>(t, "overlap").unwrap_or_default();
        let timeout = t
            .get("timeout")
            .and_then(|v| self.duration(v, &t.field("timeout"), MIN_DURATION))
            .unwrap_or(DEFAULT_TIMEOUT);
        let max_memory = t
            .get("max_memory")
            .and_then(|v| self.size(v, &t.field("max_memory")))
            .unwrap_or(DEFAULT_MAX_MEMORY);
        let kv_max_keys = t.get("kv_max_keys").and_then(|v| {
            let field = t.field("kv_max_keys");
            let n = self.integer(v, &field)?;
            match u64::try_from(n).ok().filter(|&n| n > 0) {
                Some(n) => Some(n),
                None => {
                    self.error(
                        v.span(),
                        &field,
                        format!("invalid key count {n}: must be positive"),
                    );
                    None
                }
            }
        });
        let kv_max_bytes = t
            .get("kv_max_bytes")
            .and_then(|v| self.size(v, &t.field("kv_max_bytes")));
        let requests_recovery = t
            .get("requests_recovery")
            .and_then(|v| self.boolean(v, &t.field("requests_recovery")))
            .unwrap_or(false);
        let priority = t
            .get("priority")
            .and_then(|v| self.priority(v, &t.field("priority")))
            .unwrap_or(DEFAULT_PRIORITY);
        let paused = t
            .get("paused")
            .and_then(|v| self.boolean(v, &t.field("paused")))
            .unwrap_or(false);
        let retry = self
            .table(t, "retry")
            .map_or_else(RetryPolicy::default, |r| self.retry(&r));
        let grants = t
            .get("grants")
            .map(|v| self.grants(v, &t.field("grants")))
            .unwrap_or_default();

        let mut triggers: Vec<TriggerDecl> = Vec::new();
        let mut trigger_names: HashMap<String, usize> = HashMap::new();
        for (index, entry) in self.array_of_tables(t, "trigger").into_iter().enumerate() {
            let (trigger, name_span) = self.trigger(&entry, index + 1, &name);
            match trigger_names.get(&trigger.name) {
                Some(&first) => {
                    let span = name_span.unwrap_or_else(|| entry.span.clone());
                    self.error(
                        span,
                        &entry.field("name"),
                        format!(
                            "duplicate trigger name {:?} (also the name of trigger {first})",
                            trigger.name
                        ),
                    );
                }
                None => {
                    trigger_names.insert(trigger.name.clone(), index + 1);
                }
            }
            triggers.push(trigger);
        }

        let decl = JobDecl {
            group,
            name,
            module,
            data,
            overlap,
            overlap_given: t.get("overlap").is_some(),
            timeout,
            max_memory,
            kv_max_keys,
            kv_max_bytes,
            requests_recovery,
            priority,
            paused,
            retry,
            triggers,
            grants,
        };
        (decl, seen)
    }

    // -- [job.grants] --------------------------------------------------------

    fn grants(&mut self, v: &Value<'_>, field: &str) -> crate::grants::Grants {
        let json = self.json(v, field);
        if !json.is_object() {
            self.type_error(v, field, "a table");
            return crate::grants::Grants::default();
        }
        let grants: crate::grants::Grants = match serde_json::from_value(json) {
            Ok(g) => g,
            Err(e) => {
                self.error(v.span(), field, e.to_string());
                return crate::grants::Grants::default();
            }
        };
        if let Err(e) = grants.compile() {
            self.error(v.span(), &format!("{field}.{}", e.field), e.message);
        }
        grants
    }

    // -- [job.retry] ---------------------------------------------------------

    fn retry(&mut self, t: &Table<'_, '_>) -> RetryPolicy {
        self.check_keys(t, RETRY_KEYS);
        let defaults = RetryPolicy::default();
        let max_attempts = t
            .get("max_attempts")
            .and_then(|v| {
                let field = t.field("max_attempts");
                let n = self.integer(v, &field)?;
                match u32::try_from(n) {
                    Ok(n) if n >= 1 => Some(n),
                    _ => {
                        self.error(
                            v.span(),
                            &field,
                            format!("max_attempts must be between 1 and {}, not {n}", u32::MAX),
                        );
                        None
                    }
                }
            })
            .unwrap_or(defaults.max_attempts);
        let backoff = self
            .parsed::<Backoff>(t, "backoff")
            .unwrap_or(defaults.backoff);
        let initial_value = t.get("initial");
        let initial = initial_value
            .and_then(|v| self.duration(v, &t.field("initial"), Duration::ZERO))
            .unwrap_or(defaults.initial);
        let max_value = t.get("max");
        let max = max_value
            .and_then(|v| self.duration(v, &t.field("max"), Duration::ZERO))
            .unwrap_or(defaults.max);
        if max < initial {
            let message = format!(
                "the maximum delay ({}) is shorter than the initial delay ({})",
                humantime::format_duration(max),
                humantime::format_duration(initial)
            );
            match (max_value, initial_value) {
                (Some(v), _) => self.error(v.span(), &t.field("max"), message),
                (None, Some(v)) => self.error(v.span(), &t.field("initial"), message),
                (None, None) => self.error(t.span.clone(), &t.path, message),
            }
        }
        let jitter = t
            .get("jitter")
            .and_then(|v| {
                let field = t.field("jitter");
                let x = self.float(v, &field)?;
                if (0.0..=1.0).contains(&x) {
                    Some(x)
                } else {
                    self.error(
                        v.span(),
                        &field,
                        format!("jitter must be between 0.0 and 1.0, not {x}"),
                    );
                    None
                }
            })
            .unwrap_or(defaults.jitter);
        RetryPolicy {
            max_attempts,
            backoff,
            initial,
            max,
            jitter,
        }
    }

    // -- [[job.trigger]] -----------------------------------------------------

    /// The trigger and where its explicit name is written, if it has one.
    fn trigger(
        &mut self,
        t: &Table<'_, '_>,
        index: usize,
        job_name: &str,
    ) -> (TriggerDecl, Option<Range<usize>>) {
        self.check_keys(t, TRIGGER_KEYS);

        let mut name = format!("{job_name}-{index}");
        let mut name_span = None;
        if let Some(v) = t.get("name")
            && let Some(s) = self.string(v, &t.field("name"))
        {
            match check_part(s) {
                Ok(()) => {
                    name = s.to_owned();
                    name_span = Some(v.span());
                }
                Err(reason) => self.error(
                    v.span(),
                    &t.field("name"),
                    format!("invalid trigger name {s:?}: {reason}"),
                ),
            }
        }

        let start = t
            .get("start")
            .and_then(|v| self.timestamp(v, &t.field("start")));
        let end = t
            .get("end")
            .and_then(|v| self.timestamp(v, &t.field("end")));
        if let (Some(s), Some(e), Some(v)) = (start, end, t.get("end"))
            && s >= e
        {
            self.error(
                v.span(),
                &t.field("end"),
                format!(
                    "end ({}) must be after start ({})",
                    e.to_rfc3339(),
                    s.to_rfc3339()
                ),
            );
        }

        // Exactly one kind key; the first one written decides the kind.
        let mut kinds: Vec<(&str, Range<usize>)> = TRIGGER_KINDS
            .iter()
            .filter_map(|&k| t.key_span(k).map(|span| (k, span)))
            .collect();
        kinds.sort_by_key(|(_, span)| span.start);
        let kind_key = kinds.first().map(|(k, _)| *k);
        match kind_key {
            None => self.error(
                t.span.clone(),
                &t.path,
                "a trigger needs exactly one of `cron`, `every`, `at`, `on` or `event`",
            ),
            Some(first) => {
                for (extra, span) in kinds.iter().skip(1) {
                    self.error(
                        span.clone(),
                        &t.field(extra),
                        format!(
                            "a trigger has exactly one of `cron`, `every`, `at`, `on` or `event`; \
                             this one already has `{first}`"
                        ),
                    );
                }
            }
        }
        let has = |key: &str| kinds.iter().any(|(k, _)| *k == key);

        let tz_value = t.get("tz");
        if let Some(span) = t.key_span("tz")
            && !has("cron")
        {
            self.error(span, &t.field("tz"), "`tz` only applies to `cron` triggers");
        }
        if let Some(span) = t.key_span("repeat")
            && !has("every")
        {
            self.error(
                span,
                &t.field("repeat"),
                "`repeat` only applies to `every` triggers",
            );
        }
        if let Some(span) = t.key_span("misfire")
            && matches!(kind_key, Some("on" | "event"))
        {
            self.error(
                span,
                &t.field("misfire"),
                "`misfire` only applies to `cron`, `every` and `at` triggers",
            );
        }

        let kind = match kind_key {
            Some("cron") => self.cron(t, tz_value),
            Some("every") => self.every(t, start),
            Some("at") => t
                .get("at")
                .and_then(|v| self.timestamp(v, &t.field("at")))
                .map(TriggerKind::At),
            Some("event") => t.get("event").and_then(|v| {
                let field = t.field("event");
                let name = self.string(v, &field)?;
                match crate::store::events::check_event_name(name) {
                    Ok(()) => Some(TriggerKind::Event(name.to_owned())),
                    Err(reason) => {
                        self.error(v.span(), &field, reason);
                        None
                    }
                }
            }),
            Some("on") => t.get("on").and_then(|v| {
                let field = t.field("on");
                match self.string(v, &field)? {
                    "start" => Some(TriggerKind::OnStart),
                    "once" => Some(TriggerKind::Once),
                    other => {
                        self.error(
                            v.span(),
                            &field,
                            format!("invalid `on` {other:?}: expected \"start\" or \"once\""),
                        );
                        None
                    }
                }
            }),
            _ => None,
        };

        let misfire = self
            .parsed::<MisfirePolicy>(t, "misfire")
            .unwrap_or_default();
        let priority = t
            .get("priority")
            .and_then(|v| self.priority(v, &t.field("priority")));

        let decl = TriggerDecl {
            name,
            // Only a placeholder when an error has been reported.
            kind: kind.unwrap_or(TriggerKind::OnStart),
            misfire,
            start,
            end,
            priority,
        };
        (decl, name_span)
    }

    fn cron(&mut self, t: &Table<'_, '_>, tz_value: Option<&Value<'_>>) -> Option<TriggerKind> {
        let cron_field = t.field("cron");
        let expr = t.get("cron").and_then(|v| self.string(v, &cron_field));
        let tz_field = t.field("tz");
        let tz = match tz_value {
            Some(v) => self.string(v, &tz_field),
            None => Some(DEFAULT_TIME_ZONE),
        };
        let (expr, tz) = (expr?, tz?);
        let cron_span = t.get("cron").map(Spanned::span).unwrap_or(t.span.clone());
        match CronSchedule::parse(expr, tz) {
            Ok(c) if c.next_after(Utc::now()).is_none() => {
                self.error(
                    cron_span,
                    &cron_field,
                    format!("{expr:?} can never fire: no time matches it"),
                );
                None
            }
            Ok(_) => Some(TriggerKind::Cron {
                expr: expr.to_owned(),
                tz: tz.to_owned(),
            }),
            Err(e @ CronError::UnknownTimeZone { .. }) => {
                let tz_span = tz_value.map_or(cron_span.clone(), Spanned::span);
                self.error(tz_span, &tz_field, e.to_string());
                // Still check the expression on its own.
                if let Err(e) = CronSchedule::parse(expr, DEFAULT_TIME_ZONE) {
                    self.error(cron_span, &cron_field, e.to_string());
                }
                None
            }
            Err(e) => {
                self.error(cron_span, &cron_field, e.to_string());
                None
            }
        }
    }

    fn every(&mut self, t: &Table<'_, '_>, start: Option<DateTime<Utc>>) -> Option<TriggerKind> {
        let field = t.field("every");
        let value = t.get("every")?;
        // Both are checked before either error ends the trigger.
        let period = self.duration(value, &field, Duration::ZERO);
        let repeat = match t.get("repeat") {
            None => Some(None),
            Some(v) => {
                let repeat_field = t.field("repeat");
                self.integer(v, &repeat_field)
                    .and_then(|n| match u64::try_from(n) {
                        Ok(n) => Some(n),
                        Err(_) => {
                            self.error(
                                v.span(),
                                &repeat_field,
                                format!("repeat must not be negative, not {n}"),
                            );
                            None
                        }
                    })
                    .map(Some)
            }
        };
        let start = start.unwrap_or(DateTime::UNIX_EPOCH);
        let period = period.and_then(|period| match IntervalSchedule::new(start, period, None) {
            Ok(_) => Some(period),
            Err(e) => {
                self.error(value.span(), &field, e.to_string());
                None
            }
        });
        Some(TriggerKind::Every {
            period: period?,
            repeat: repeat?,
        })
    }

    // -- structure helpers ---------------------------------------------------

    /// Reports every key of `t` that is not in `allowed`.
    fn check_keys(&mut self, t: &Table<'_, '_>, allowed: &[&str]) {
        let expected = allowed
            .iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ");
        for (key, _) in t.table.iter() {
            let key_str: &str = key.get_ref();
            if !allowed.contains(&key_str) {
                self.error(
                    key.span(),
                    &t.field(key_str),
                    format!("unknown field `{key_str}`, expected one of {expected}"),
                );
            }
        }
    }

    /// The value of a required key, or an error at the table's header.
    fn required<'t, 'i>(&mut self, t: &Table<'t, 'i>, key: &str) -> Option<&'t Value<'i>> {
        let value = t.get(key);
        if value.is_none() {
            self.error(
                t.span.clone(),
                &t.field(key),
                format!("missing required field `{key}`"),
            );
        }
        value
    }

    /// The tables of `[[key]]` (or `key = [{...}, ...]`); empty when absent.
    fn array_of_tables<'t, 'i>(&mut self, t: &Table<'t, 'i>, key: &str) -> Vec<Table<'t, 'i>> {
        let Some(value) = t.get(key) else {
            return Vec::new();
        };
        let field = t.field(key);
        let items = match value.get_ref() {
            DeValue::Array(items) => items,
            DeValue::Table(_) => {
                self.error(
                    value.span(),
                    &field,
                    format!("`{key}` must be an array of tables: write [[{field}]], not [{field}]"),
                );
                return Vec::new();
            }
            other => {
                self.error(
                    value.span(),
                    &field,
                    format!(
                        "expected an array of tables ([[{field}]]), found {}",
                        other.type_str()
                    ),
                );
                return Vec::new();
            }
        };
        let mut tables = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("{field}[{}]", i + 1);
            match item.get_ref() {
                DeValue::Table(table) => tables.push(Table {
                    table,
                    span: item.span(),
                    path,
                }),
                other => self.error(
                    item.span(),
                    &path,
                    format!("expected a table, found {}", other.type_str()),
                ),
            }
        }
        tables
    }

    /// The sub-table `key` of `t`, if present and a table.
    fn table<'t, 'i>(&mut self, t: &Table<'t, 'i>, key: &str) -> Option<Table<'t, 'i>> {
        let value = t.get(key)?;
        let field = t.field(key);
        match value.get_ref() {
            DeValue::Table(table) => Some(Table {
                table,
                span: value.span(),
                path: field,
            }),
            other => {
                self.error(
                    value.span(),
                    &field,
                    format!("expected a table, found {}", other.type_str()),
                );
                None
            }
        }
    }

    // -- value helpers -------------------------------------------------------

    fn type_error(&mut self, v: &Value<'_>, field: &str, expected: &str) {
        let found = v.get_ref().type_str();
        self.error(
            v.span(),
            field,
            format!("expected {expected}, found {found}"),
        );
    }

    fn string<'v>(&mut self, v: &'v Value<'_>, field: &str) -> Option<&'v str> {
        match v.get_ref() {
            DeValue::String(s) => Some(s),
            _ => {
                self.type_error(v, field, "a string");
                None
            }
        }
    }

    fn boolean(&mut self, v: &Value<'_>, field: &str) -> Option<bool> {
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.type_error(v, field, "a boolean");
                None
            }
        }
    }

    fn integer(&mut self, v: &Value<'_>, field: &str) -> Option<i64> {
        match v.get_ref() {
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => Some(n),
                Err(_) => {
                    self.error(v.span(), field, format!("integer {i} is out of range"));
                    None
                }
            },
            _ => {
                self.type_error(v, field, "an integer");
                None
            }
        }
    }

    /// A float; integers are accepted too.
    fn float(&mut self, v: &Value<'_>, field: &str) -> Option<f64> {
        match v.get_ref() {
            DeValue::Float(f) => match f.as_str().parse::<f64>() {
                Ok(x) => Some(x),
                Err(_) => {
                    self.error(v.span(), field, format!("invalid number {f}"));
                    None
                }
            },
            // i64 -> f64 may round, which is fine for a range-checked ratio.
            DeValue::Integer(_) => self.integer(v, field).map(|n| n as f64),
            _ => {
                self.type_error(v, field, "a number");
                None
            }
        }
    }

    fn priority(&mut self, v: &Value<'_>, field: &str) -> Option<u8> {
        let n = self.integer(v, field)?;
        match u8::try_from(n) {
            Ok(p) if (MIN_PRIORITY..=MAX_PRIORITY).contains(&p) => Some(p),
            _ => {
                self.error(
                    v.span(),
                    field,
                    format!("priority must be between {MIN_PRIORITY} and {MAX_PRIORITY}, not {n}"),
                );
                None
            }
        }
    }

    /// An optional string field parsed with `FromStr` (whose error message is reported).
    fn parsed<T>(&mut self, t: &Table<'_, '_>, key: &str) -> Option<T>
    where
        T: FromStr<Err = ParseValueError>,
    {
        let v = t.get(key)?;
        let field = t.field(key);
        let s = self.string(v, &field)?;
        match s.parse() {
            Ok(x) => Some(x),
            Err(e) => {
                self.error(v.span(), &field, e.0);
                None
            }
        }
    }

    /// A humantime duration string, at least `min`.
    fn duration(&mut self, v: &Value<'_>, field: &str, min: Duration) -> Option<Duration> {
        let max = if field.ends_with(".timeout") || field == "timeout" {
            crate::domain::MAX_TIMEOUT
        } else {
            crate::domain::MAX_PERIOD
        };
        let Some(s) = (match v.get_ref() {
            DeValue::String(s) => Some(s),
            _ => None,
        }) else {
            self.type_error(v, field, "a duration string such as \"30s\"");
            return None;
        };
        match crate::domain::parse_duration_within(s, min, max) {
            Ok(d) => Some(d),
            Err(e) => {
                self.error(v.span(), field, e);
                None
            }
        }
    }

    /// A size in bytes: a positive integer, or a string of digits with an
    /// optional unit.
    fn size(&mut self, v: &Value<'_>, field: &str) -> Option<u64> {
        let parsed = match v.get_ref() {
            DeValue::String(s) => parse_size(s),
            DeValue::Integer(_) => {
                let n = self.integer(v, field)?;
                u64::try_from(n)
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("invalid size {n}: must be positive"))
            }
            _ => {
                self.type_error(v, field, "a size such as \"64MiB\"");
                return None;
            }
        };
        match parsed {
            Ok(n) => Some(n),
            Err(message) => {
                self.error(v.span(), field, message);
                None
            }
        }
    }

    /// An RFC 3339 timestamp, as a string or a TOML offset date-time.
    fn timestamp(&mut self, v: &Value<'_>, field: &str) -> Option<DateTime<Utc>> {
        let text = match v.get_ref() {
            DeValue::String(s) => s.to_string(),
            DeValue::Datetime(d) => d.to_string(),
            _ => {
                self.type_error(v, field, "an RFC 3339 timestamp");
                return None;
            }
        };
        match DateTime::parse_from_rfc3339(&text) {
            Ok(t) => Some(t.with_timezone(&Utc)),
            Err(e) => {
                self.error(
                    v.span(),
                    field,
                    format!(
                        "invalid timestamp {text:?}: expected RFC 3339 with a UTC offset, \
                         e.g. \"2030-01-01T00:00:00Z\" ({e})"
                    ),
                );
                None
            }
        }
    }

    /// Any TOML value as JSON; date-times become their RFC 3339 text.
    fn json(&mut self, v: &Value<'_>, field: &str) -> serde_json::Value {
        use serde_json::Value as Json;
        match v.get_ref() {
            DeValue::String(s) => Json::String(s.to_string()),
            DeValue::Integer(_) => self.integer(v, field).map_or(Json::Null, Json::from),
            DeValue::Float(f) => {
                match f
                    .as_str()
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                {
                    Some(n) => Json::Number(n),
                    None => {
                        self.error(
                            v.span(),
                            field,
                            format!("{f} cannot be represented in JSON (only finite numbers can)"),
                        );
                        Json::Null
                    }
                }
            }
            DeValue::Boolean(b) => Json::Bool(*b),
            DeValue::Datetime(d) => Json::String(d.to_string()),
            DeValue::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    out.push(self.json(item, &format!("{field}[{}]", i + 1)));
                }
                Json::Array(out)
            }
            DeValue::Table(table) => {
                let mut out = serde_json::Map::new();
                for (key, item) in table.iter() {
                    let key: &str = key.get_ref();
                    let value = self.json(item, &format!("{field}.{key}"));
                    out.insert(key.to_owned(), value);
                }
                Json::Object(out)
            }
        }
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

/// Digits and an optional binary unit: `B`, `KiB`/`k`/`kb`, `MiB`/`m`/`mb`,
/// `GiB`/`g`/`gb` (case-insensitive; every unit is a power of 1024).
fn parse_size(text: &str) -> Result<u64, String> {
    let invalid = |reason: &str| format!("invalid size {text:?}: {reason}");
    let trimmed = text.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(digits_end);
    if digits.is_empty() {
        return Err(invalid(
            "expected digits and an optional unit, e.g. \"64MiB\"",
        ));
    }
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(invalid("unknown unit; use B, KiB, MiB or GiB")),
    };
    let size = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| invalid("too large"))?;
    if size == 0 {
        return Err(invalid("must be positive"));
    }
    Ok(size)
}

/// An alert's `job`: a job key, `group/*` or `*`.
pub(crate) fn check_job_pattern(s: &str) -> Result<(), String> {
    if s == "*" {
        return Ok(());
    }
    let (group, name) = s.split_once('/').ok_or_else(|| {
        format!("invalid job {s:?}: expected \"group/name\", \"group/*\" or \"*\"")
    })?;
    check_part(group).map_err(|r| format!("invalid job {s:?}: {r}"))?;
    if name != "*" {
        check_part(name).map_err(|r| format!("invalid job {s:?}: {r}"))?;
    }
    Ok(())
}

/// A webhook URL: http or https with a host.
pub fn check_webhook(s: &str) -> Result<(), String> {
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .ok_or_else(|| format!("invalid webhook {s:?}: expected an http:// or https:// URL"))?;
    if rest.is_empty() || rest.starts_with('/') || s.chars().any(char::is_whitespace) {
        return Err(format!("invalid webhook {s:?}: the URL has no host"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ts(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn errors(text: &str) -> Vec<ManifestError> {
        match Manifest::parse(text, "jobs.toml") {
            Ok(m) => panic!("expected errors, got {m:#?}"),
            Err(e) => {
                assert!(!e.is_empty());
                e.0
            }
        }
    }

    /// (line, field) of every error, for compact assertions.
    fn located(errors: &[ManifestError]) -> Vec<(usize, &str)> {
        errors.iter().map(|e| (e.line, e.field.as_str())).collect()
    }

    fn single(text: &str) -> ManifestError {
        let mut errors = errors(text);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        errors.remove(0)
    }

    const DIGEST: &str = "ABCDEF0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789";

    fn full_manifest() -> String {
        format!(
            r#"# Quartzite jobs
[[module]]
name = "hello"
path = "modules/hello.wasm"
version = "1.0.0"

[[module]]
name = "report"
path = "/opt/report.wasm"

[[job]]
key = "examples/hello"
module = "hello"
data = {{ name = "Quartzite", count = 3, ratio = 0.5, tags = ["a", "b"], when = 2030-01-01T00:00:00Z, nested = {{ ok = true }} }}
overlap = "forbid"
timeout = "30s"
max_memory = "64MiB"
requests_recovery = true
priority = 7
paused = true
[job.retry]
max_attempts = 3
backoff = "immediate"
initial = "2s"
max = "1m"
jitter = 0
[[job.trigger]]
name = "every-10s"
cron = "0/10 * * * * ?"
tz = "Europe/Berlin"
misfire = "skip"
start = "2030-01-01T00:00:00Z"
end = 2031-01-01T00:00:00+01:00
priority = 9
[[job.trigger]]
every = "90s"
repeat = 10
[[job.trigger]]
at = "2030-06-01T12:00:00Z"
misfire = "fire-once"
[[job.trigger]]
on = "start"
[[job.trigger]]
on = "once"

[[job]]
key = "reports/daily"
module = "report@2.0.0"
max_memory = 1048576
kv_max_keys = 50
kv_max_bytes = "1MiB"
[job.retry]
max_attempts = 5

[[job]]
key = "pinned/x.y_z-1"
module = "sha256:{DIGEST}"
max_memory = "2 g"
"#
        )
    }

    #[test]
    fn a_full_manifest_parses_to_the_expected_values() {
        let m = Manifest::parse(&full_manifest(), "/etc/quartzite/jobs.toml").unwrap();
        assert_eq!(m.path, PathBuf::from("/etc/quartzite/jobs.toml"));
        assert_eq!(
            m.modules,
            vec![
                ModuleDecl {
                    name: "hello".into(),
                    path: PathBuf::from("/etc/quartzite/modules/hello.wasm"),
                    version: Some("1.0.0".into()),
                },
                ModuleDecl {
                    name: "report".into(),
                    path: PathBuf::from("/opt/report.wasm"),
                    version: None,
                },
            ]
        );
        assert_eq!(m.jobs.len(), 3);

        let hello = &m.jobs[0];
        assert_eq!(hello.key(), "examples/hello");
        assert_eq!(
            (hello.group.as_str(), hello.name.as_str()),
            ("examples", "hello")
        );
        assert_eq!(hello.module, ModuleSpec::Latest("hello".into()));
        assert_eq!(
            hello.data,
            json!({
                "name": "Quartzite",
                "count": 3,
                "ratio": 0.5,
                "tags": ["a", "b"],
                "when": "2030-01-01T00:00:00Z",
                "nested": { "ok": true },
            })
        );
        assert_eq!(hello.overlap, Overlap::Forbid);
        assert_eq!(hello.timeout, Duration::from_secs(30));
        assert_eq!(hello.max_memory, 64 * 1024 * 1024);
        assert!(hello.requests_recovery);
        assert_eq!(hello.priority, 7);
        assert!(hello.paused);
        assert_eq!(
            hello.retry,
            RetryPolicy {
                max_attempts: 3,
                backoff: Backoff::Immediate,
                initial: Duration::from_secs(2),
                max: Duration::from_secs(60),
                jitter: 0.0,
            }
        );
        assert_eq!(
            hello.triggers,
            vec![
                TriggerDecl {
                    name: "every-10s".into(),
                    kind: TriggerKind::Cron {
                        expr: "0/10 * * * * ?".into(),
                        tz: "Europe/Berlin".into(),
                    },
                    misfire: MisfirePolicy::Skip,
                    start: Some(ts("2030-01-01T00:00:00Z")),
                    end: Some(ts("2030-12-31T23:00:00Z")),
                    priority: Some(9),
                },
                TriggerDecl {
                    name: "hello-2".into(),
                    kind: TriggerKind::Every {
                        period: Duration::from_secs(90),
                        repeat: Some(10),
                    },
                    misfire: MisfirePolicy::FireNow,
                    start: None,
                    end: None,
                    priority: None,
                },
                TriggerDecl {
                    name: "hello-3".into(),
                    kind: TriggerKind::At(ts("2030-06-01T12:00:00Z")),
                    misfire: MisfirePolicy::FireOnce,
                    start: None,
                    end: None,
                    priority: None,
                },
                TriggerDecl {
                    name: "hello-4".into(),
                    kind: TriggerKind::OnStart,
                    misfire: MisfirePolicy::FireNow,
                    start: None,
                    end: None,
                    priority: None,
                },
                TriggerDecl {
                    name: "hello-5".into(),
                    kind: TriggerKind::Once,
                    misfire: MisfirePolicy::FireNow,
                    start: None,
                    end: None,
                    priority: None,
                },
            ]
        );

        // Defaults.
        let daily = &m.jobs[1];
        assert_eq!(
            daily.module,
            ModuleSpec::Version {
                name: "report".into(),
                version: "2.0.0".into()
            }
        );
        assert_eq!(daily.module.to_string(), "report@2.0.0");
        assert_eq!(daily.data, serde_json::Value::Null);
        assert_eq!(daily.overlap, Overlap::Allow);
        assert_eq!(daily.timeout, DEFAULT_TIMEOUT);
        assert_eq!(daily.max_memory, 1024 * 1024);
        assert_eq!(daily.kv_max_keys, Some(50));
        assert_eq!(daily.kv_max_bytes, Some(1 << 20));
        assert_eq!(m.jobs[0].kv_max_keys, None, "the default quota");
        assert!(!daily.requests_recovery);
        assert_eq!(daily.priority, DEFAULT_PRIORITY);
        assert!(!daily.paused);
        assert_eq!(
            daily.retry,
            RetryPolicy {
                max_attempts: 5,
                ..RetryPolicy::default()
            }
        );
        assert!(daily.triggers.is_empty());

        let pinned = &m.jobs[2];
        assert_eq!(pinned.name, "x.y_z-1");
        assert_eq!(
            pinned.module,
            ModuleSpec::Digest(DIGEST.to_ascii_lowercase())
        );
        assert_eq!(
            pinned.module.to_string(),
            format!("sha256:{}", DIGEST.to_ascii_lowercase())
        );
        assert_eq!(pinned.max_memory, 2 * 1024 * 1024 * 1024);
        assert_eq!(pinned.retry, RetryPolicy::default());
        assert_eq!(pinned.max_memory, 2 << 30);
        assert_eq!(daily.max_memory, 1 << 20);
        assert_eq!(pinned.timeout, Duration::from_secs(60));
        assert_eq!(hello.max_memory, DEFAULT_MAX_MEMORY / 2);
    }

    #[test]
    fn grants_parse_and_a_bad_pattern_is_reported_at_its_field() {
        let m = Manifest::parse(
            "[[job]]\nkey = \"a/b\"\nmodule = \"m\"\n[job.grants]\nhttp = [\"https://api.example.com/v1/*\"]\n\
             emit = [\"report.*\"]\nconfig = { channel = \"#ops\" }\n[[job.grants.secret]]\nname = \"TOKEN\"\n\
             url = \"https://hooks.example.com/*\"\nformat = \"Bearer {}\"\n",
            "jobs.toml",
        )
        .unwrap();
        let g = &m.jobs[0].grants;
        assert_eq!(g.http, ["https://api.example.com/v1/*"]);
        assert_eq!(g.config["channel"], "#ops");
        assert_eq!(g.secret[0].header, "Authorization", "the default header");
        let e = single(
            "[[job]]\nkey = \"a/b\"\nmodule = \"m\"\n[job.grants]\nhttp = [\"ftp://x/*\"]\n",
        );
        assert_eq!(e.field, "job[1].grants.http[1]", "{e:?}");
        let e = single("[[job]]\nkey = \"a/b\"\nmodule = \"m\"\n[job.grants]\nhtp = []\n");
        assert!(e.message.contains("unknown field `htp`"), "{e:?}");
        assert!(
            Manifest::parse("[[job]]\nkey = \"a/b\"\nmodule = \"m\"\n", "j.toml")
                .unwrap()
                .jobs[0]
                .grants
                .is_empty()
        );
    }

    #[test]
    fn an_empty_manifest_is_valid() {
        let m = Manifest::parse("# nothing yet\n", "jobs.toml").unwrap();
        assert!(m.modules.is_empty());
        assert!(m.jobs.is_empty());
    }

    #[test]
    fn inline_arrays_of_tables_are_accepted() {
        let m = Manifest::parse(
            r#"job = [{ key = "a/b", module = "m", trigger = [{ on = "start" }] }]"#,
            "jobs.toml",
        )
        .unwrap();
        assert_eq!(m.jobs[0].triggers[0].kind, TriggerKind::OnStart);
        assert_eq!(m.jobs[0].triggers[0].name, "b-1");
    }

    #[test]
    fn semantic_errors_in_several_jobs_are_all_reported_in_file_order() {
        let text = r#"[[module]]
name = "hello"
path = "hello.wasm"
version = "1.0.0"

[[job]]
key = "examples/hello"
module = "hello@2.0.0"
priority = 11
timeout = "0s"

[[job]]
key = "bad key"
module = "hello"
max_memory = "12 parsecs"
[job.retry]
max_attempts = 0
jitter = 1.5
[[job.trigger]]
cron = "0 0 25 * * ?"
[[job.trigger]]
every = "10s"
start = "2030-01-01T00:00:00Z"
end = "2029-01-01T00:00:00Z"

[[job]]
module = "Hello"
overlap = "sometimes"
"#;
        let errs = errors(text);
        assert_eq!(
            located(&errs),
            vec![
                (8, "job[1].module"),
                (9, "job[1].priority"),
                (10, "job[1].timeout"),
                (13, "job[2].key"),
                (15, "job[2].max_memory"),
                (17, "job[2].retry.max_attempts"),
                (18, "job[2].retry.jitter"),
                (20, "job[2].trigger[1].cron"),
                (24, "job[2].trigger[2].end"),
                (26, "job[3].key"),
                (27, "job[3].module"),
                (28, "job[3].overlap"),
            ],
            "{errs:#?}"
        );
        assert!(
            errs[0]
                .message
                .contains("declared with version \"1.0.0\" on line 2")
        );
        assert_eq!(errs[1].column, 12);
        assert!(errs[2].message.contains("too short"));
        assert!(errs[9].message.contains("missing required field `key`"));
        let shown = ManifestErrors(errs.clone()).to_string();
        assert_eq!(shown.lines().count(), errs.len());
        assert!(shown.lines().any(|l| l.starts_with(
            "jobs.toml:20:8: job[2].trigger[1].cron: invalid cron expression \"0 0 25 * * ?\""
        )));
    }

    #[test]
    fn a_syntax_error_reports_its_line() {
        let e = single("[[job]]\nkey = \"a/b\"\nmodule = \"m\nprioriy = 3\n");
        assert_eq!(e.line, 3);
        assert_eq!(e.field, "");
        assert!(e.to_string().starts_with("jobs.toml:3:"), "{e}");
    }

    #[test]
    fn an_unknown_key_is_reported_with_its_name_and_location() {
        let e = single("[[job]]\nkey = \"a/b\"\nmodule = \"m\"\n  prioriy = 3\n");
        assert_eq!((e.line, e.column), (4, 3));
        assert_eq!(e.field, "job[1].prioriy");
        assert!(e.message.contains("unknown field `prioriy`"), "{e}");
        assert!(e.message.contains("`priority`"), "{e}");
    }

    #[test]
    fn all_unknown_keys_are_reported() {
        let errs = errors(
            "colour = 1\n[[module]]\nname = \"m\"\npath = \"m.wasm\"\nsize = 3\n\
             [[job]]\nkey = \"a/b\"\nmodule = \"m\"\n[[job.trigger]]\non = \"start\"\nwhen = 1\n",
        );
        assert_eq!(
            located(&errs),
            vec![
                (1, "colour"),
                (5, "module[1].size"),
                (11, "job[1].trigger[1].when")
            ]
        );
    }

    #[test]
    fn a_bad_cron_expression_is_quoted() {
        let e = single(
            "[[job]]\nkey = \"a/b\"\nmodule = \"m\"\n[[job.trigger]]\ncron = \"0 0 * * *\"\n",
        );
        assert_eq!((e.line, e.column), (5, 8));
        assert_eq!(e.field, "job[1].trigger[1].cron");
        assert!(
            e.message
                .starts_with("invalid cron expression \"0 0 * * *\""),
            "{e}"
        );
    }

    #[test]
    fn a_bad_time_zone_is_reported_on_the_tz_and_the_expression_is_still_checked() {
        let e = single(
            "[[job]]\nkey = \"a/b\"\nmodule = \"m\"\n[[job.trigger]]\ncron = \"0 0 * * * ?\"\ntz = \"Mars/Olympus\"\n",
        );
        assert_eq!((e.line, e.field.as_str()), (6, "job[1].trigger[1].tz"));
        assert!(e.message.contains("Mars/Olympus"), "{e}");

        let errs = errors(
            "[[job]]\nkey = \"a/b\"\nmodule = \"m\"\n[[job.trigger]]\ncron = \"nope\"\ntz = \"Mars/Olympus\"\n",
        );
        assert_eq!(
            located(&errs),
            vec![(5, "job[1].trigger[1].cron"), (6, "job[1].trigger[1].tz")]
        );
    }

    #[test]
    fn a_trigger_with_two_kinds_or_none_is_rejected() {
        let e = single(
            "[[job]]\nkey = \"a/b\"\nmodule = \"m\"\n[[job.trigger]]\nevery = \"1m\"\nat = \"2030-01-01T00:00:00Z\"\n",
        );
        assert_eq!((e.line, e.field.as_str()), (6, "job[1].trigger[1].at"));
        assert!(e.message.contains("already has `every`"), "{e}");

        let e = single("[[job]]\nkey = \"a/b\"\nmodule = \"m\"\n[[job.trigger]]\nname = \"t\"\n");
        assert_eq!((e.line, e.field.as_str()), (4, "job[1].trigger[1]"));
        assert!(e.message.contains("exactly one of"), "{e}");
    }

    #[test]
    fn tz_repeat_and_misfire_only_go_with_their_kinds() {
        let errs = errors(
            "[[job]]\nkey = \"a/b\"\nmodule = \"m\"\n\
             [[job.trigger]]\nevery = \"1m\"\ntz = \"UTC\"\n\
             [[job.trigger]]\ncron = \"0 * * * * ?\"\nrepeat = 3\n\
             [[job.trigger]]\non = \"start\"\nmisfire = \"skip\"\n",
        );
        assert_eq!(
            located(&errs),
            vec![
                (6, "job[1].trigger[1].tz"),
                (9, "job[1].trigger[2].repeat"),
                (12, "job[1].trigger[3].misfire"),
            ]
        );
        assert!(errs[0].message.contains("only applies to `cron`"));
    }

    #[test]
    fn every_checks_its_period_and_repeat() {
        let errs = errors(
            "[[job]]\nkey = \"a/b\"\nmodule = \"m\"\n[[job.trigger]]\nevery = \"0s\"\nrepeat = -1\n",
        );
        assert_eq!(
            located(&errs),
            vec![
                (5, "job[1].trigger[1].every"),
                (6, "job[1].trigger[1].repeat")
            ]
        );
        assert!(errs[0].message.contains("at least 1 ms"), "{}", errs[0]);
    }

    #[test]
    fn start_must_be_before_end() {
        let e = single(
            "[[job]]\nkey = \"a/b\"\nmodule = \"m\"\n[[job.trigger]]\non = \"start\"\n\
             start = \"2030-01-01T00:00:00Z\"\nend = \"2030-01-01T00:00:00Z\"\n",
        );
        assert_eq!((e.line, e.field.as_str()), (7, "job[1].trigger[1].end"));
        assert!(e.message.contains("must be after start"), "{e}");
    }

    #[test]
    fn duplicate_names_and_keys_are_rejected() {
        let errs = errors(
            "[[module]]\nname = \"m\"\npath = \"a.wasm\"\n\
             [[module]]\nname = \"m\"\npath = \"b.wasm\"\n\
             [[job]]\nkey = \"a/b\"\nmodule = \"m\"\n\
             [[job.trigger]]\non = \"start\"\n\
             [[job.trigger]]\nname = \"b-1\"\non = \"once\"\n\
             [[job]]\nkey = \"a/b\"\nmodule = \"m\"\n",
        );
        assert_eq!(
            located(&errs),
            vec![
                (5, "module[2].name"),
                (13, "job[1].trigger[2].name"),
                (16, "job[2].key")
            ]
        );
        assert!(
            errs[0]
                .message
                .contains("duplicate module name \"m\" (first declared on line 2)")
        );
        assert!(
            errs[2]
                .message
                .contains("duplicate job key \"a/b\" (first declared on line 8)")
        );
    }

    #[test]
    fn unknown_modules_may_be_referenced() {
        let m = Manifest::parse(
            "[[job]]\nkey = \"a/b\"\nmodule = \"elsewhere@3\"\n",
            "jobs.toml",
        )
        .unwrap();
        assert_eq!(m.jobs[0].module.module_name(), Some("elsewhere"));
    }

    #[test]
    fn wrong_types_are_reported() {
        let errs =
            errors("[[job]]\nkey = 3\nmodule = \"m\"\npaused = \"no\"\ntimeout = 30\nretry = 1\n");
        assert_eq!(
            located(&errs),
            vec![
                (2, "job[1].key"),
                (4, "job[1].paused"),
                (5, "job[1].timeout"),
                (6, "job[1].retry")
            ]
        );
        assert_eq!(errs[0].message, "expected a string, found integer");
    }

    #[test]
    fn a_single_job_table_is_explained() {
        let e = single("[job]\nkey = \"a/b\"\nmodule = \"m\"\n");
        assert_eq!(e.field, "job");
        assert!(e.message.contains("[[job]]"), "{e}");
    }

    #[test]
    fn load_resolves_module_paths_and_names_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("jobs.toml");
        std::fs::write(&file, "[[module]]\nname = \"m\"\npath = \"mods/m.wasm\"\n").unwrap();
        std::fs::create_dir(dir.path().join("mods")).unwrap();
        std::fs::write(dir.path().join("mods/m.wasm"), b"").unwrap();
        let m = Manifest::load(&file).unwrap();
        assert_eq!(m.modules[0].path, dir.path().join("mods/m.wasm"));
        assert!(m.modules[0].path.is_absolute());

        let missing = dir.path().join("nope.toml");
        let errs = Manifest::load(&missing).unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs.0[0].file, missing);
        let shown = errs.to_string();
        assert!(shown.starts_with(&missing.display().to_string()), "{shown}");
        assert!(shown.contains("cannot read manifest"), "{shown}");
    }

    #[test]
    fn a_missing_module_file_is_reported_with_the_other_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("jobs.toml");
        std::fs::write(
            &file,
            "[[module]]\nname = \"m\"\npath = \"gone.wasm\"\n\
             [[job]]\nkey = \"a/..\"\nmodule = \"m\"\n[[job.trigger]]\ncron = \"0 0 0 31 2 ?\"\n",
        )
        .unwrap();
        let errs = Manifest::load(&file).unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["module[1].path", "job[1].key", "job[1].trigger[1].cron"],
            "{errs}"
        );
        assert!(errs.0[0].message.contains("gone.wasm"), "{errs}");
        assert!(errs.0[2].message.contains("never fire"), "{errs}");
    }

    #[test]
    fn load_reports_invalid_utf8_with_its_position() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("jobs.toml");
        std::fs::write(&file, b"# ok\n# \xff\n").unwrap();
        let errs = Manifest::load(&file).unwrap_err();
        assert_eq!((errs.0[0].line, errs.0[0].column), (2, 3));
    }

    #[test]
    fn data_that_json_cannot_hold_is_rejected() {
        let e = single("[[job]]\nkey = \"a/b\"\nmodule = \"m\"\ndata = { x = [1, nan] }\n");
        assert_eq!((e.line, e.field.as_str()), (4, "job[1].data.x[2]"));
    }

    #[test]
    fn enums_round_trip_through_their_spelling() {
        for p in [
            MisfirePolicy::FireNow,
            MisfirePolicy::Skip,
            MisfirePolicy::FireOnce,
        ] {
            assert_eq!(p.as_str().parse::<MisfirePolicy>(), Ok(p));
        }
        assert!("fire_now".parse::<MisfirePolicy>().is_err());
        for o in [Overlap::Allow, Overlap::Forbid, Overlap::Skip] {
            assert_eq!(o.as_str().parse::<Overlap>(), Ok(o));
            assert_eq!(serde_json::to_value(o).unwrap(), json!(o.as_str()));
        }
        for spec in [
            "hello",
            "hello@1.0.0-rc.1+b5",
            &format!("sha256:{}", "0".repeat(64)),
        ] {
            assert_eq!(spec.parse::<ModuleSpec>().unwrap().to_string(), spec);
        }
        for bad in ["", "Hello", "a@", "@1", "sha256:12", "-a", "a b"] {
            assert!(bad.parse::<ModuleSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_accept_the_documented_units() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("4KB"), Ok(4096));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("64 mb"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert!(parse_size("0MiB").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("1.5GiB").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
        assert!(parse_size("17179869184GiB").is_err());
    }

    fn exponential(jitter: f64) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 10,
            backoff: Backoff::Exponential,
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
            jitter,
        }
    }

    #[test]
    fn exponential_delays_double_up_to_the_maximum() {
        let p = exponential(0.0);
        let secs: Vec<u64> = (1..=11).map(|a| p.delay(a, 0.3).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(p.delay(0, 0.3), Duration::from_secs(1));
    }

    #[test]
    fn jitter_spreads_the_delay_symmetrically() {
        let p = exponential(0.1);
        assert_eq!(p.delay(3, 0.0), Duration::from_millis(3600));
        assert_eq!(p.delay(3, 0.5), Duration::from_secs(4));
        let high = p.delay(3, 0.999_999);
        assert!(high > Duration::from_millis(4399) && high < Duration::from_millis(4400));
        // Out-of-range or non-finite samples are tamed.
        assert_eq!(p.delay(3, f64::NAN), Duration::from_secs(4));
        assert_eq!(p.delay(3, -5.0), Duration::from_millis(3600));
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        let p = exponential(0.1);
        assert_eq!(p.delay(u32::MAX, 0.5), Duration::from_secs(300));
        let wide = RetryPolicy {
            initial: Duration::from_secs(u64::MAX / 2),
            max: Duration::MAX,
            ..exponential(1.0)
        };
        assert_eq!(wide.delay(40, 0.999), Duration::MAX);
        assert_eq!(wide.delay(u32::MAX, 0.0), Duration::ZERO);
        let zero = RetryPolicy {
            initial: Duration::ZERO,
            ..exponential(0.5)
        };
        assert_eq!(zero.delay(1000, 0.9), Duration::ZERO);
    }

    #[test]
    fn immediate_backoff_has_no_delay() {
        let p = RetryPolicy {
            backoff: Backoff::Immediate,
            ..exponential(0.5)
        };
        assert_eq!(p.delay(1, 0.9), Duration::ZERO);
        assert_eq!(p.delay(u32::MAX, 0.9), Duration::ZERO);
    }

    #[test]
    fn retry_max_must_not_be_below_initial() {
        let e = single("[[job]]\nkey = \"a/b\"\nmodule = \"m\"\n[job.retry]\ninitial = \"10m\"\n");
        assert_eq!((e.line, e.field.as_str()), (5, "job[1].retry.initial"));
        let e = single(
            "[[job]]\nkey = \"a/b\"\nmodule = \"m\"\n[job.retry]\ninitial = \"10s\"\nmax = \"5s\"\n",
        );
        assert_eq!((e.line, e.field.as_str()), (6, "job[1].retry.max"));
    }
}
