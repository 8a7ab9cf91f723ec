//! Events and alerts as an operator names them: event names, idempotency
//! keys and payload limits, the bounds on chains of events, and alert rules
//! (what they watch for, which jobs, where they are sent). The store keeps
//! them, the runtime checks a guest's emit against them, the manifest, the
//! admin service and the API check an operator's input against them.

use serde::Serialize;

/// The longest event name.
pub const MAX_EVENT_NAME: usize = 128;
/// The longest idempotency key.
pub const MAX_EVENT_KEY: usize = 256;
/// The largest event payload, as JSON text.
pub const MAX_EVENT_PAYLOAD: usize = 64 << 10;
/// How deep a chain of events emitted by jobs may go unless configured.
pub const DEFAULT_MAX_DEPTH: u32 = 8;
/// How many events jobs may emit below one root event unless configured.
pub const DEFAULT_MAX_CHAIN_EVENTS: u32 = 10_000;
/// How many fires the events of one job may have waiting unless configured.
pub const DEFAULT_MAX_JOB_FIRES: u32 = 1_000;

/// Checks an event name: 1 to 128 of `A-Z a-z 0-9 . _ - : /`, starting with a
/// letter or digit. The message says what is wrong.
///
/// # Errors
///
/// When the name is not acceptable.
pub fn check_event_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_EVENT_NAME {
        return Err(format!(
            "event name {name:?} must be 1 to {MAX_EVENT_NAME} bytes"
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(format!(
            "event name {name:?} must start with a letter or digit"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._-:/".contains(*c)))
    {
        return Err(format!(
            "event name {name:?} contains {bad:?}; use letters, digits and . _ - : /"
        ));
    }
    Ok(())
}

/// Checks an event's idempotency key and payload (JSON text).
///
/// # Errors
///
/// When the key is empty or too long, or the payload is too large or not JSON.
pub fn check_event_input(key: Option<&str>, payload: &str) -> Result<(), String> {
    if let Some(key) = key
        && (key.is_empty() || key.len() > MAX_EVENT_KEY)
    {
        return Err(format!(
            "idempotency key must be 1 to {MAX_EVENT_KEY} bytes"
        ));
    }
    if payload.len() > MAX_EVENT_PAYLOAD {
        return Err(format!(
            "event payload is {} bytes; the limit is {MAX_EVENT_PAYLOAD}",
            payload.len()
        ));
    }
    serde_json::from_str::<serde::de::IgnoredAny>(payload)
        .map_err(|e| format!("event payload is not JSON: {e}"))?;
    Ok(())
}

/// What an alert rule watches for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlertCondition {
    /// A fire ended failed for good: a fatal failure, a timeout or retries used up.
    PermanentFailure,
    /// `threshold` runs in a row failed (retried attempts count; a success resets).
    ConsecutiveFailures,
    /// A fire was missed (history status `misfired`).
    Misfire,
    /// The NoOp job ran instead of the module (missing, invalid, incompatible,
    /// or no node able to run it).
    NoopSkip,
}

impl AlertCondition {
    pub const ALL: [AlertCondition; 4] = [
        AlertCondition::PermanentFailure,
        AlertCondition::ConsecutiveFailures,
        AlertCondition::Misfire,
        AlertCondition::NoopSkip,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertCondition::PermanentFailure => "permanent-failure",
            AlertCondition::ConsecutiveFailures => "consecutive-failures",
            AlertCondition::Misfire => "misfire",
            AlertCondition::NoopSkip => "noop-skip",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == text)
    }
}

/// An alert rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AlertRule {
    pub name: String,
    pub condition: AlertCondition,
    /// A job key, or `group/*` for a group; `None`: every job.
    pub job_pattern: Option<String>,
    /// For `consecutive-failures`: how many in a row (1 otherwise).
    pub threshold: u32,
    /// Where deliveries are POSTed.
    pub webhook: String,
    /// Who declared it: `manifest`, `cli` or `api`.
    pub source: String,
}

impl AlertRule {
    /// Whether the rule covers `job_key`.
    pub fn covers(&self, job_key: &str) -> bool {
        self.job_pattern
            .as_deref()
            .is_none_or(|p| super::origin::job_pattern_covers(p, job_key))
    }
}

/// An alert's `job`: a job key, `group/*` or `*`.
pub fn check_job_pattern(s: &str) -> Result<(), String> {
    if s == "*" {
        return Ok(());
    }
    let (group, name) = s.split_once('/').ok_or_else(|| {
        format!("invalid job {s:?}: expected \"group/name\", \"group/*\" or \"*\"")
    })?;
    super::check_part(group).map_err(|r| format!("invalid job {s:?}: {r}"))?;
    if name != "*" {
        super::check_part(name).map_err(|r| format!("invalid job {s:?}: {r}"))?;
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
