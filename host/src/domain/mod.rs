//! The rules for names and inputs an operator gives, in one place: job keys,
//! module names, versions and references, job data, retry counts, durations,
//! cron expressions and time zones. The manifest, the admin API and the CLI
//! (on `--db` and through `--server`) all call these functions, so a value is
//! accepted by one exactly when it is accepted by the others and is refused
//! with the same words, quoting what the operator typed.

use crate::schedule::cron::{CronError, CronSchedule};
use crate::store::ModuleRef;
use std::time::Duration;

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

/// What is wrong with a cron trigger, and in which field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CronCheckError {
    /// The time zone is not an IANA zone (reported under `tz`).
    #[error("{0}")]
    Tz(String),
    /// The expression does not parse, or can never fire (reported under `cron`).
    #[error("{0}")]
    Cron(String),
}

/// Checks a cron expression in a time zone: the zone is an IANA name, the
/// expression parses, and it fires at least once after `now` (as Quartz refuses
/// a trigger that will never fire, e.g. `0 0 0 31 2 ?`).
///
/// # Errors
///
/// The first problem, tagged with the field it belongs to.
pub fn check_cron(
    expr: &str,
    tz: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<CronSchedule, CronCheckError> {
    if tz.parse::<chrono_tz::Tz>().is_err() {
        return Err(CronCheckError::Tz(
            CronError::UnknownTimeZone {
                name: tz.to_owned(),
            }
            .to_string(),
        ));
    }
    let schedule = CronSchedule::parse(expr, tz).map_err(|e| match e {
        e @ CronError::UnknownTimeZone { .. } => CronCheckError::Tz(e.to_string()),
        e => CronCheckError::Cron(e.to_string()),
    })?;
    if schedule.next_after(now).is_none() {
        return Err(CronCheckError::Cron(format!(
            "{expr:?} can never fire: no time matches it"
        )));
    }
    Ok(schedule)
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
    fn a_cron_that_never_fires_and_a_bad_zone_are_told_apart() {
        let now = chrono::Utc::now();
        assert!(matches!(
            check_cron("0 0 0 31 2 ?", "UTC", now),
            Err(CronCheckError::Cron(m)) if m.contains("never fire")
        ));
        assert!(matches!(
            check_cron("0 0 * * * ?", "Mars/Olympus", now),
            Err(CronCheckError::Tz(_))
        ));
        assert!(check_cron("0 0 * * * ?", "Europe/Berlin", now).is_ok());
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
