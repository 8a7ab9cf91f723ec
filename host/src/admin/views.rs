//! The JSON shapes of jobs, triggers and history rows, shared by the admin API
//! and the CLI's `--json` output, so a script reads the same fields whether the
//! CLI talks to the database or to a server.

use crate::store::model::{HistoryEntry, HistoryFilter, HistoryStatus, JobDef, TriggerRow};
use crate::store::{Store, StoreError};
use serde_json::{Value, json};

/// A page position in history or audit: the `started_ms`/`at_ms` and id of the
/// last row returned, as `MS_ID`; `None` for text that is not one.
pub fn parse_cursor(text: &str) -> Option<(i64, String)> {
    text.split_once('_')
        .and_then(|(ms, id)| Some((ms.parse().ok()?, id.to_string())))
        .filter(|(_, id)| !id.is_empty())
}

/// One page of history, newest first: at most `limit` rows after `cursor`, and
/// the cursor of the next page when there are more. Rows started in the same
/// millisecond are ordered by id, so a page boundary never skips or repeats
/// one. The admin API and `quartzite history list` both page with it.
///
/// # Errors
///
/// When the store fails.
pub async fn history_page(
    store: &dyn Store,
    job: Option<&str>,
    status: Option<HistoryStatus>,
    limit: i64,
    cursor: Option<&(i64, String)>,
) -> Result<(Vec<HistoryEntry>, Option<String>), StoreError> {
    let after_cursor = |h: &HistoryEntry| {
        cursor.is_none_or(|(ms, id)| {
            h.started_ms < *ms || (h.started_ms == *ms && h.id.as_str() < id.as_str())
        })
    };
    // The store pages by start time only; rows sharing the cursor's millisecond
    // are fetched again and dropped here, asking for more until a page fills.
    let mut want = limit.saturating_add(1);
    let (rows, more) = loop {
        let fetched = store
            .history_list(&HistoryFilter {
                job_key: job.map(str::to_string),
                status,
                limit: want,
                before_ms: cursor.map(|(ms, _)| ms.saturating_add(1)),
            })
            .await?;
        let exhausted = i64::try_from(fetched.len()).unwrap_or(i64::MAX) < want;
        let mut kept: Vec<HistoryEntry> = fetched.into_iter().filter(|h| after_cursor(h)).collect();
        let more = i64::try_from(kept.len()).unwrap_or(i64::MAX) > limit;
        if more || exhausted {
            kept.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            break (kept, more);
        }
        want = want.saturating_mul(2);
    };
    let next_cursor = rows
        .last()
        .filter(|_| more)
        .map(|h| format!("{}_{}", h.started_ms, h.id));
    Ok((rows, next_cursor))
}

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
        "jitter_ms": t.spec.jitter_ms,
        "calendars": t.spec.calendars,
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
    if job.pause.until_ms.is_some() {
        v["paused_until"] = fmt_ms(job.pause.until_ms);
    }
    v["next_fire_ms"] = json!(next);
    v["next_fire"] = fmt_ms(next);
    v["triggers"] = Value::Array(mine.into_iter().map(trigger_view).collect());
    // Patterns, config and secret *names*: a grant never holds a value.
    v["grants"] = match job.grants() {
        Ok(grants) => serde_json::to_value(grants).unwrap_or(Value::Null),
        Err(e) => json!({ "error": e.to_string() }),
    };
    v
}

/// A history row with its details as JSON rather than text.
pub fn history_view(h: &HistoryEntry) -> Value {
    let mut v = serde_json::to_value(h).unwrap_or_default();
    v["details"] = serde_json::from_str(&h.details).unwrap_or(Value::Null);
    v
}
