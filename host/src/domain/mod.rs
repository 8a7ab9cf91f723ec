//! Quartzite's vocabulary, defined once: the names and values an operator
//! gives and every layer passes on. Job keys, module names, versions and
//! references, job data, retry counts, sizes and durations (here); a job's
//! policies and a trigger's kinds ([`policy`]); event names and alert rules
//! ([`events`]). Each comes with its parser and its checks. The manifest, the
//! config, the admin service (API and CLI alike), the store and the runtime
//! all use these, so a value is accepted by one exactly when it is accepted by
//! the others and is refused with the same words, quoting what was typed.
//!
//! This is the bottom layer: it imports nothing of the crate. The words it
//! uses are those of the glossary in ARCHITECTURE.md.

pub mod events;
pub mod flow;
pub mod origin;
pub mod policy;
pub mod trace;

pub use origin::{BackfillOverlap, FireOrigin};
pub use policy::{Backoff, MisfirePolicy, Overlap, ParseValueError, RetryPolicy, TriggerKind};

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Which module a job means.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ModuleRef {
    /// `NAME`: the most recently pushed version of `name`.
    Latest(String),
    /// `NAME@VERSION`: one pinned version of a module.
    Version { name: String, version: String },
    /// `sha256:<64 hex digits>`: exactly these bytes (the digits, lowercase).
    Digest(String),
}

impl ModuleRef {
    /// The module name, unless the reference is a digest.
    pub fn module_name(&self) -> Option<&str> {
        match self {
            ModuleRef::Latest(name) | ModuleRef::Version { name, .. } => Some(name),
            ModuleRef::Digest(_) => None,
        }
    }
}

impl fmt::Display for ModuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModuleRef::Latest(name) => f.write_str(name),
            ModuleRef::Version { name, version } => write!(f, "{name}@{version}"),
            ModuleRef::Digest(hex) => write!(f, "sha256:{hex}"),
        }
    }
}

impl FromStr for ModuleRef {
    type Err = ParseValueError;

    /// [`parse_module_ref`], the message quoting the text.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_module_ref(s)
            .map_err(|reason| ParseValueError(format!("invalid module {s:?}: {reason}")))
    }
}

/// The address the admin API listens on when none is given; alert links
/// start with it when the node has no other public URL.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";

/// Longest job-key part, trigger name, module name or version.
pub const MAX_NAME_LEN: usize = 64;

/// Largest job data, as JSON text. Job data is returned by every job list and
/// handed to every run, so it is kept to the size a run may write back as new
/// data (the runtime's output limit).
pub const MAX_JOB_DATA_BYTES: usize = 1 << 20;

/// Longest run timeout: a run holding a worker for longer than a day is a
/// mistake in the unit, not a plan.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Longest `every` period (ten years): longer ones overflow schedules' arithmetic
/// long before they would fire.
pub const MAX_PERIOD: Duration = Duration::from_secs(3650 * 24 * 3600);

/// One part of a job key, or a trigger name: 1 to 64 of `[A-Za-z0-9_.-]`, not
/// starting with `.` (so never `.` or `..`, nor a hidden-file-like name: keys
/// appear in URL paths and file names).
///
/// # Errors
///
/// Why the part is refused.
pub fn check_part(part: &str) -> Result<(), String> {
    if part.is_empty() {
        return Err("it is empty".to_owned());
    }
    if part.len() > MAX_NAME_LEN {
        return Err(format!("it is longer than {MAX_NAME_LEN} characters"));
    }
    if !part
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err("only ASCII letters, digits, `_`, `.` and `-` are allowed".to_owned());
    }
    if part.starts_with('.') {
        return Err("it must not start with `.` (no `.` or `..` segments)".to_owned());
    }
    Ok(())
}

/// `GROUP/NAME`, each part per [`check_part`].
///
/// # Errors
///
/// Why the key is refused.
pub fn check_job_key(key: &str) -> Result<(&str, &str), String> {
    let Some((group, name)) = key.split_once('/') else {
        return Err("expected `group/name`".to_owned());
    };
    check_part(group).map_err(|reason| format!("the group is invalid: {reason}"))?;
    check_part(name).map_err(|reason| format!("the name is invalid: {reason}"))?;
    Ok((group, name))
}

/// `[a-z0-9][a-z0-9_-]*`, at most 64 characters.
///
/// # Errors
///
/// Why the name is refused.
pub fn check_module_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".to_owned());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("the name is longer than {MAX_NAME_LEN} characters"));
    }
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !first_ok
        || !bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err(
            "a module name starts with a lowercase letter or digit and has only \
             lowercase letters, digits, `_` and `-`"
                .to_owned(),
        );
    }
    Ok(())
}

/// 1 to 64 of `[A-Za-z0-9._+-]` (semantic versions and the like).
///
/// # Errors
///
/// Why the version is refused.
pub fn check_module_version(version: &str) -> Result<(), String> {
    if version.is_empty() {
        return Err("the version is empty".to_owned());
    }
    if version.len() > MAX_NAME_LEN {
        return Err(format!(
            "the version is longer than {MAX_NAME_LEN} characters"
        ));
    }
    if !version
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'))
    {
        return Err("a version has only ASCII letters, digits, `.`, `_`, `+` and `-`".to_owned());
    }
    Ok(())
}

/// `NAME`, `NAME@VERSION` or `sha256:<64 hex digits>` (stored lowercase).
///
/// # Errors
///
/// Why the reference is refused.
pub fn parse_module_ref(text: &str) -> Result<ModuleRef, String> {
    if let Some(hex) = text.strip_prefix("sha256:") {
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("a digest is `sha256:` followed by 64 hex digits".to_owned());
        }
        return Ok(ModuleRef::Digest(hex.to_ascii_lowercase()));
    }
    match text.split_once('@') {
        Some((name, version)) => {
            check_module_name(name)?;
            check_module_version(version)?;
            Ok(ModuleRef::Version {
                name: name.to_owned(),
                version: version.to_owned(),
            })
        }
        None => {
            check_module_name(text)?;
            Ok(ModuleRef::Latest(text.to_owned()))
        }
    }
}

/// Job data as the JSON text stored, refused when larger than
/// [`MAX_JOB_DATA_BYTES`].
///
/// # Errors
///
/// The size, and the limit.
pub fn job_data_text(data: Option<&serde_json::Value>) -> Result<String, String> {
    let text = data.map_or_else(|| "null".into(), serde_json::Value::to_string);
    if text.len() > MAX_JOB_DATA_BYTES {
        return Err(format!(
            "{} bytes of JSON; job data is at most {MAX_JOB_DATA_BYTES} bytes (keep larger inputs in kv or elsewhere)",
            text.len()
        ));
    }
    Ok(text)
}

/// Runs of a fire in all: at least 1 (1 = no retry).
///
/// # Errors
///
/// For 0, quoting it.
pub fn check_max_attempts(n: u64) -> Result<u32, String> {
    if n == 0 {
        return Err("0: must be at least 1 (1 = no retry)".to_owned());
    }
    u32::try_from(n).map_err(|_| format!("{n}: must be at most {}", u32::MAX))
}

/// Parses a duration such as `30s`, `500ms` or `2m` and checks it lies in
/// `min..=max`, quoting `text` in every refusal.
///
/// # Errors
///
/// Text that is not a duration, or one out of bounds.
pub fn parse_duration_within(text: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| format!("invalid duration {text:?}: {e} (use e.g. 30s, 500ms, 2m)"))?;
    if d < min {
        return Err(format!(
            "duration {text:?} is too short: the minimum is {}",
            humantime::format_duration(min)
        ));
    }
    if d > max {
        return Err(format!(
            "duration {text:?} is too long: the maximum is {}",
            humantime::format_duration(max)
        ));
    }
    Ok(d)
}

/// Digits and an optional binary unit: `B`, `KiB`/`k`/`kb`, `MiB`/`m`/`mb`,
/// `GiB`/`g`/`gb` (case-insensitive; every unit is a power of 1024). Zero is refused: every
/// size is a limit (memory, kv), and a limit of nothing is a mistake.
///
/// # Errors
///
/// The text, quoted, and what is wrong with it.
pub fn parse_size(text: &str) -> Result<u64, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_keys_refuse_dot_segments_and_path_like_names() {
        for bad in [
            "a/.",
            "a/..",
            "../b",
            "./b",
            "a/.hidden",
            "a/b/c",
            "a",
            "a/",
            "/b",
        ] {
            assert!(check_job_key(bad).is_err(), "{bad} was accepted");
        }
        for good in ["a/b", "billing/daily-report", "g_1/n.v2"] {
            assert!(check_job_key(good).is_ok(), "{good} was refused");
        }
    }

    #[test]
    fn module_references_follow_the_name_and_version_rules() {
        assert!(parse_module_ref("hello@<script>").is_err());
        assert!(parse_module_ref("Hello").is_err());
        assert!(parse_module_ref("hello@1.0.0+build.1").is_ok());
        assert!(check_module_version("<script>").is_err());
    }

    #[test]
    fn sizes_take_binary_units_and_are_positive() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("4KB"), Ok(4096));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("64 mb"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        // Every size is a limit, and a limit of nothing is a mistake.
        assert!(parse_size("0").is_err_and(|e| e.contains("must be positive")));
        assert!(parse_size("0MiB").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("1.5GiB").is_err());
        assert!(parse_size("12XB").is_err_and(|e| e.contains("\"12XB\"")));
        assert!(parse_size("99999999999999999999GiB").is_err());
    }

    #[test]
    fn data_durations_and_attempts_have_limits() {
        let big = serde_json::Value::String("x".repeat(MAX_JOB_DATA_BYTES));
        assert!(job_data_text(Some(&big)).is_err());
        assert_eq!(job_data_text(None).as_deref(), Ok("null"));
        assert!(check_max_attempts(0).is_err());
        assert!(parse_duration_within("1000y", Duration::ZERO, MAX_PERIOD).is_err());
        assert!(parse_duration_within("30s", Duration::ZERO, MAX_PERIOD).is_ok());
    }
}
