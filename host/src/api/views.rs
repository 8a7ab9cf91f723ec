//! The JSON shapes of jobs, triggers and history rows, shared by the admin API
//! and the CLI's `--json` output, so a script reads the same fields whether the
//! CLI talks to the database or to a server.

use crate::store::model::{HistoryEntry, JobDef, TriggerRow};
use serde_json::{Value, json};

/// An instant as RFC 3339 UTC with milliseconds, or null.
pub fn fmt_ms(ms: Option<i64>) -> Value {
    ms.and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_millis)
        .map_or(Value::Null, |t| {
            json!(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        })
}

/// A trigger with its schedule described and its next fire as an instant.
pub fn trigger_view(t: &TriggerRow) -> Value {
    json!({
        "trigger_key": t.trigger_key,
        "job_key": t.job_key,
        "kind": t.spec.kind.as_str(),
        "schedule": t.describe(),
        "misfire": t.spec.misfire.as_str(),
        "priority": t.priority,
        "state": t.state,
        "next_fire_ms": t.next_fire_ms,
        "next_fire": fmt_ms(t.next_fire_ms),
        "error": t.error,
    })
}

/// A job with its state, next fire and triggers (those of `triggers` that are its own).
pub fn job_view(job: &JobDef, triggers: &[TriggerRow]) -> Value {
    let mine: Vec<&TriggerRow> = triggers
        .iter()
        .filter(|t| t.job_key == job.job_key)
        .collect();
    // A paused job fires nothing, whatever its triggers' own state.
    let next = mine
        .iter()
        .filter(|t| !job.paused && t.state.as_str() == "WAITING")
        .filter_map(|t| t.next_fire_ms)
        .min();
    let mut v = serde_json::to_value(job).unwrap_or_default();
    // Data is JSON text in the store; clients get it as JSON.
    v["data"] = serde_json::from_str(&job.data).unwrap_or(Value::Null);
    v["state"] = json!(if job.paused { "paused" } else { "active" });
    v["next_fire_ms"] = json!(next);
    v["next_fire"] = fmt_ms(next);
    v["triggers"] = Value::Array(mine.into_iter().map(trigger_view).collect());
    v
}

/// A history row with its details as JSON rather than text.
pub fn history_view(h: &HistoryEntry) -> Value {
    let mut v = serde_json::to_value(h).unwrap_or_default();
    v["details"] = serde_json::from_str(&h.details).unwrap_or(Value::Null);
    v
}
