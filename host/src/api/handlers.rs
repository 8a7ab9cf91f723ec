//! One function per route: read the request, call the store or engine, answer
//! JSON. Mutating handlers attach an [`AuditNote`] for the audit row.

use super::ApiState;
use super::auth::AuditNote;
use super::error::ApiError;
use super::views::{fmt_ms, grants_view, history_view, job_view, trigger_view};
use crate::engine::jobs::{JobSpec, valid_key};
use crate::engine::modules::{PushError, push_bytes};
use crate::store::model::{
    AuditFilter, HistoryBucket, HistoryFilter, HistoryStatsParams, HistoryStatus,
};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

pub(super) type Result<T> = std::result::Result<T, ApiError>;
pub(super) type Shared = State<Arc<ApiState>>;

/// A successful mutation: its JSON answer and what the audit log records.
pub(super) fn done(status: StatusCode, body: Value, note: AuditNote) -> Response {
    let mut response = (status, Json(body)).into_response();
    response.extensions_mut().insert(note);
    response
}

pub(super) fn note(action: &'static str, target: &str, summary: Value) -> AuditNote {
    AuditNote {
        action,
        target: target.to_string(),
        summary,
    }
}

pub(super) fn query<T>(q: std::result::Result<Query<T>, QueryRejection>) -> Result<T> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::bad_request(format!("query string: {}", e.body_text())))
}

pub(super) fn path<T>(p: std::result::Result<Path<T>, PathRejection>) -> Result<T> {
    p.map(|Path(t)| t)
        .map_err(|e| ApiError::bad_request(format!("path: {}", e.body_text())))
}

/// The body, or why it could not be read (too large: 413).
pub(super) fn read_body(body: std::result::Result<Bytes, BytesRejection>) -> Result<Bytes> {
    body.map_err(|e| {
        let status = e.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "payload_too_large"
        } else {
            "bad_request"
        };
        ApiError::new(status, code, format!("request body: {}", e.body_text()))
    })
}

/// Parses a JSON body, naming the line and column of what is wrong.
pub(super) fn json_body<T: serde::de::DeserializeOwned>(
    headers: &axum::http::HeaderMap,
    body: &Bytes,
) -> Result<T> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE)
        && !ct
            .to_str()
            .is_ok_and(|c| c.trim_start().starts_with("application/json"))
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the request body must be JSON (Content-Type: application/json)",
        ));
    }
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "the request body is empty; a JSON object was expected",
        ));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("request body: {e}")))
}

fn job_key(group: &str, name: &str) -> Result<String> {
    let key = format!("{group}/{name}");
    if valid_key(&key) {
        Ok(key)
    } else {
        Err(ApiError::invalid_field(
            "key",
            format!("{key:?}: expected GROUP/NAME (letters, digits, _ . -)"),
        ))
    }
}

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn readyz(State(state): Shared) -> Response {
    if state.ready() {
        Json(json!({ "status": "ready" })).into_response()
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the node is starting: the scheduler does not run yet",
        )
        .into_response()
    }
}

pub async fn no_route(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_route",
        format!(
            "no route {}; the routes are listed in /api/v1/openapi.json",
            uri.path()
        ),
    )
}

pub async fn no_method(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{method} is not allowed on {}; see /api/v1/openapi.json",
            uri.path()
        ),
    )
}

pub async fn metrics(State(state): Shared) -> Result<Response> {
    let text = state
        .metrics
        .render(state.store.as_ref(), state.dead_after_ms)
        .await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

pub async fn openapi() -> Json<Value> {
    Json(super::openapi::document())
}

pub async fn job_list(State(state): Shared) -> Result<Json<Value>> {
    let jobs = state.store.job_list().await?;
    let triggers = state.store.trigger_list(None).await?;
    Ok(Json(json!({
        "items": jobs.iter().map(|j| job_view(j, &triggers)).collect::<Vec<_>>(),
    })))
}

pub async fn job_show(
    State(state): Shared,
    p: std::result::Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<Value>> {
    let (group, name) = path(p)?;
    let key = job_key(&group, &name)?;
    let Some(job) = state.store.job_get(&key).await? else {
        return Err(ApiError::not_found(format!("no job {key:?}")));
    };
    let triggers = state.store.trigger_list(Some(&key)).await?;
    let history = state
        .store
        .history_list(&HistoryFilter {
            job_key: Some(key.clone()),
            limit: 10,
            ..HistoryFilter::default()
        })
        .await?;
    let mut v = job_view(&job, &triggers);
    v["grants"] = grants_view(state.store.job_grants_get(&key).await?.as_ref());
    v["history"] = Value::Array(history.iter().map(history_view).collect());
    Ok(Json(v))
}

async fn put_job(state: &ApiState, spec: &JobSpec) -> Result<Value> {
    let mut spec = spec.clone();
    let scheduled =
        spec.cron.is_some() || spec.every.is_some() || spec.at.is_some() || spec.event.is_some();
    // The module's own hints stand in for what the request leaves out.
    if (spec.overlap.is_none() || !scheduled)
        && let Some(info) =
            crate::engine::modules::describe_stored(&state.store, &state.runtime, &spec.module)
                .await?
    {
        spec.apply_hints(&info);
    }
    let (job, trigger) = spec
        .build("api")
        .map_err(|e| ApiError::invalid_field(e.field, e.to_string()))?;
    let grants = spec
        .checked_grants()
        .map_err(|e| ApiError::invalid_field(e.field, e.to_string()))?;
    // Grants first: a fire of the new job never runs with the old grants.
    state.store.job_grants_put(&job.job_key, &grants).await?;
    state.store.job_put(&job, &[trigger]).await?;
    state.wake();
    let triggers = state.store.trigger_list(Some(&job.job_key)).await?;
    let mut v = job_view(&job, &triggers);
    v["grants"] = grants_view(Some(&grants));
    Ok(v)
}

fn spec_summary(spec: &JobSpec) -> Value {
    let mut v = serde_json::to_value(spec).unwrap_or_default();
    // Data can be large and is the job's own business: the audit log keeps its size.
    if let Some(obj) = v.as_object_mut()
        && let Some(data) = obj.remove("data")
    {
        obj.insert("data_bytes".into(), json!(data.to_string().len()));
    }
    v
}

pub async fn job_create(
    State(state): Shared,
    headers: axum::http::HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let spec: JobSpec = json_body(&headers, &read_body(body)?)?;
    if spec.key.is_empty() {
        return Err(ApiError::invalid_field(
            "key",
            "key: missing; give the job key as GROUP/NAME",
        ));
    }
    if state.store.job_get(&spec.key).await?.is_some() {
        return Err(ApiError::conflict(format!(
            "job {:?} exists; update it with PUT /api/v1/jobs/{}",
            spec.key, spec.key
        )));
    }
    let view = put_job(&state, &spec).await?;
    Ok(done(
        StatusCode::CREATED,
        view,
        note("job.create", &spec.key, spec_summary(&spec)),
    ))
}

pub async fn job_update(
    State(state): Shared,
    p: std::result::Result<Path<(String, String)>, PathRejection>,
    headers: axum::http::HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let (group, name) = path(p)?;
    let key = job_key(&group, &name)?;
    let mut spec: JobSpec = json_body(&headers, &read_body(body)?)?;
    if spec.key.is_empty() {
        spec.key = key.clone();
    } else if spec.key != key {
        return Err(ApiError::invalid_field(
            "key",
            format!(
                "key: {:?} differs from the path's {key:?}; a job cannot be renamed",
                spec.key
            ),
        ));
    }
    let existed = state.store.job_get(&key).await?.is_some();
    let view = put_job(&state, &spec).await?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(done(
        status,
        view,
        note("job.update", &key, spec_summary(&spec)),
    ))
}

pub async fn job_delete(
    State(state): Shared,
    p: std::result::Result<Path<(String, String)>, PathRejection>,
) -> Result<Response> {
    let (group, name) = path(p)?;
    let key = job_key(&group, &name)?;
    if !state.store.job_delete(&key).await? {
        return Err(ApiError::not_found(format!("no job {key:?}")));
    }
    state
        .store
        .job_grants_put(&key, &crate::grants::Grants::default())
        .await?;
    state.wake();
    Ok(done(
        StatusCode::OK,
        json!({ "deleted": key }),
        note("job.delete", &key, json!({})),
    ))
}

async fn job_toggle(
    state: &ApiState,
    p: std::result::Result<Path<(String, String)>, PathRejection>,
    paused: bool,
) -> Result<Response> {
    let (group, name) = path(p)?;
    let key = job_key(&group, &name)?;
    if !state.store.job_pause(&key, paused).await? {
        return Err(ApiError::not_found(format!("no job {key:?}")));
    }
    state.wake();
    let (action, state_name) = if paused {
        ("job.pause", "paused")
    } else {
        ("job.resume", "active")
    };
    Ok(done(
        StatusCode::OK,
        json!({ "job_key": key, "state": state_name }),
        note(action, &key, json!({})),
    ))
}

pub async fn job_pause(
    State(state): Shared,
    p: std::result::Result<Path<(String, String)>, PathRejection>,
) -> Result<Response> {
    job_toggle(&state, p, true).await
}

pub async fn job_resume(
    State(state): Shared,
    p: std::result::Result<Path<(String, String)>, PathRejection>,
) -> Result<Response> {
    job_toggle(&state, p, false).await
}

pub async fn job_run_now(
    State(state): Shared,
    p: std::result::Result<Path<(String, String)>, PathRejection>,
) -> Result<Response> {
    let (group, name) = path(p)?;
    let key = job_key(&group, &name)?;
    if state.store.job_get(&key).await?.is_none() {
        return Err(ApiError::not_found(format!("no job {key:?}")));
    }
    let fire_id = state.store.fire_now(&key).await?;
    state.wake();
    Ok(done(
        StatusCode::ACCEPTED,
        json!({ "job_key": key, "fire_id": fire_id }),
        note("job.run_now", &key, json!({ "fire_id": fire_id })),
    ))
}

fn valid_group(group: &str) -> Result<()> {
    if valid_key(&format!("{group}/x")) {
        Ok(())
    } else {
        Err(ApiError::invalid_field(
            "group",
            format!("{group:?}: expected letters, digits, _ . -"),
        ))
    }
}

async fn group_toggle(
    state: &ApiState,
    p: std::result::Result<Path<String>, PathRejection>,
    paused: bool,
) -> Result<Response> {
    let group = path(p)?;
    valid_group(&group)?;
    let n = state.store.group_pause(&group, paused).await?;
    state.wake();
    let action = if paused {
        "group.pause"
    } else {
        "group.resume"
    };
    Ok(done(
        StatusCode::OK,
        json!({ "group": group, "jobs": n }),
        note(action, &group, json!({ "jobs": n })),
    ))
}

pub async fn group_pause(
    State(state): Shared,
    p: std::result::Result<Path<String>, PathRejection>,
) -> Result<Response> {
    group_toggle(&state, p, true).await
}

pub async fn group_resume(
    State(state): Shared,
    p: std::result::Result<Path<String>, PathRejection>,
) -> Result<Response> {
    group_toggle(&state, p, false).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerQuery {
    job: Option<String>,
}

pub async fn trigger_list(
    State(state): Shared,
    q: std::result::Result<Query<TriggerQuery>, QueryRejection>,
) -> Result<Json<Value>> {
    let q = query(q)?;
    let triggers = state.store.trigger_list(q.job.as_deref()).await?;
    Ok(Json(json!({
        "items": triggers.iter().map(trigger_view).collect::<Vec<_>>(),
    })))
}

async fn trigger_toggle(
    state: &ApiState,
    p: std::result::Result<Path<(String, String)>, PathRejection>,
    paused: bool,
) -> Result<Response> {
    let (group, name) = path(p)?;
    let key = format!("{group}/{name}");
    if !state.store.trigger_pause(&key, paused).await? {
        return Err(ApiError::not_found(format!(
            "no trigger {key:?} (trigger keys look like GROUP/NAME:TRIGGER)"
        )));
    }
    state.wake();
    let action = if paused {
        "trigger.pause"
    } else {
        "trigger.resume"
    };
    Ok(done(
        StatusCode::OK,
        json!({ "trigger_key": key, "state": if paused { "PAUSED" } else { "WAITING" } }),
        note(action, &key, json!({})),
    ))
}

pub async fn trigger_pause(
    State(state): Shared,
    p: std::result::Result<Path<(String, String)>, PathRejection>,
) -> Result<Response> {
    trigger_toggle(&state, p, true).await
}

pub async fn trigger_resume(
    State(state): Shared,
    p: std::result::Result<Path<(String, String)>, PathRejection>,
) -> Result<Response> {
    trigger_toggle(&state, p, false).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleQuery {
    name: Option<String>,
    version: Option<String>,
}

pub async fn module_list(
    State(state): Shared,
    q: std::result::Result<Query<ModuleQuery>, QueryRejection>,
) -> Result<Json<Value>> {
    let q = query(q)?;
    if q.version.is_some() {
        return Err(ApiError::bad_request(
            "query string: version only applies when pushing a module",
        ));
    }
    let modules = state.store.module_list(q.name.as_deref()).await?;
    Ok(Json(json!({ "items": modules })))
}

/// The body is the component's bytes; validated exactly as `quartzite module push`.
pub async fn module_push(
    State(state): Shared,
    q: std::result::Result<Query<ModuleQuery>, QueryRejection>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let q = query(q)?;
    let body = read_body(body)?;
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "the request body is empty; send the component's bytes (Content-Type: application/wasm)",
        ));
    }
    let size = body.len();
    let pushed = push_bytes(
        &state.store,
        &state.runtime,
        body.to_vec(),
        q.name.as_deref(),
        q.version.as_deref(),
        Some(&state.metrics),
        true,
    )
    .await;
    match pushed {
        Ok((record, info)) => {
            let target = format!("{}@{}", record.name, record.version);
            let summary = json!({ "digest": record.digest, "bytes": size });
            Ok(done(
                StatusCode::CREATED,
                json!({ "module": record, "describe": info }),
                note("module.push", &target, summary),
            ))
        }
        Err(PushError::Rejected(r)) => Err(ApiError {
            field: Some("body".into()),
            ..ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "module_rejected",
                format!("module rejected ({}): {}", r.code.as_str(), r.detail),
            )
        }),
        Err(PushError::Describe(e)) => Err(ApiError {
            field: Some("body".into()),
            ..ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "module_rejected",
                format!("module rejected: describe() failed: {e}"),
            )
        }),
        Err(PushError::Refused(e)) => Err(ApiError {
            field: Some("name".into()),
            ..ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "module_rejected",
                format!("module rejected: {e}"),
            )
        }),
        Err(PushError::Invalid { field, message }) => Err(ApiError::invalid_field(
            field,
            format!("{field}: {message}"),
        )),
        Err(PushError::Store(e)) => Err(e.into()),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackQuery {
    to: Option<String>,
}

/// Jobs following the module's name run the previous (or `to`) version from
/// their next fire; pinned jobs are unaffected.
pub async fn module_rollback(
    State(state): Shared,
    p: std::result::Result<Path<String>, PathRejection>,
    q: std::result::Result<Query<RollbackQuery>, QueryRejection>,
) -> Result<Response> {
    let name = path(p)?;
    let q = query(q)?;
    let Some(crate::store::ModuleRef::Latest(name)) = crate::engine::modules::parse_ref(&name)
    else {
        return Err(ApiError::bad_request(format!(
            "{name:?} is not a module name"
        )));
    };
    let rollback = crate::store::ModuleRollback {
        name: name.clone(),
        to: q.to,
    };
    let Some(record) = state.store.module_rollback(&rollback).await? else {
        return Err(ApiError::not_found(match &rollback.to {
            Some(v) => format!("no module {name}@{v}"),
            None => format!("no module {name}"),
        }));
    };
    let target = format!("{}@{}", record.name, record.version);
    let summary = json!({ "digest": record.digest, "to": rollback.to });
    Ok(done(
        StatusCode::OK,
        json!({ "module": record }),
        note("module.rollback", &target, summary),
    ))
}

/// A page position: the `started_ms`/`at_ms` and id of the last row returned.
fn parse_cursor(text: &str) -> Result<(i64, String)> {
    super::views::parse_cursor(text).ok_or_else(|| {
        ApiError::invalid_field(
            "cursor",
            format!("cursor {text:?}: not a cursor this API returned (next_cursor)"),
        )
    })
}

pub(super) fn parse_limit(limit: Option<i64>) -> Result<i64> {
    match limit {
        None => Ok(50),
        Some(n) if (1..=1000).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::invalid_field(
            "limit",
            format!("limit {n}: expected 1 to 1000"),
        )),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    job: Option<String>,
    status: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

/// History newest first, `limit` rows a page. Rows started in the same
/// millisecond are ordered by id, so a page boundary never skips or repeats one.
pub async fn history_list(
    State(state): Shared,
    q: std::result::Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Json<Value>> {
    let q = query(q)?;
    let limit = parse_limit(q.limit)?;
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(HistoryStatus::parse(s).ok_or_else(|| {
            ApiError::invalid_field(
                "status",
                format!("status {s:?}: expected success, failed, retried, timeout, skipped, cancelled or misfired"),
            )
        })?),
    };
    let cursor = q.cursor.as_deref().map(parse_cursor).transpose()?;
    let (rows, next_cursor) = super::views::history_page(
        state.store.as_ref(),
        q.job.as_deref(),
        status,
        limit,
        cursor.as_ref(),
    )
    .await?;
    let total = state
        .store
        .history_count(&HistoryFilter {
            job_key: q.job.clone(),
            status,
            ..HistoryFilter::default()
        })
        .await?;
    Ok(Json(json!({
        "items": rows.iter().map(history_view).collect::<Vec<_>>(),
        "next_cursor": next_cursor,
        "total": total,
    })))
}

pub async fn execution_list(State(state): Shared) -> Result<Json<Value>> {
    let fires = state.store.fire_running().await?;
    Ok(Json(json!({ "items": fires })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeQuery {
    dead_after_ms: Option<i64>,
}

pub async fn node_list(
    State(state): Shared,
    q: std::result::Result<Query<NodeQuery>, QueryRejection>,
) -> Result<Json<Value>> {
    let q = query(q)?;
    let dead_after = q.dead_after_ms.unwrap_or(state.dead_after_ms);
    if dead_after < 1 {
        return Err(ApiError::invalid_field(
            "dead_after_ms",
            format!("dead_after_ms {dead_after}: expected a positive number of milliseconds"),
        ));
    }
    let nodes = state.store.node_list(dead_after).await?;
    Ok(Json(json!({ "items": nodes })))
}

pub async fn lock_list(State(state): Shared) -> Result<Json<Value>> {
    let locks = state.store.lock_list().await?;
    Ok(Json(json!({ "items": locks })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    actor: Option<String>,
    action: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

pub async fn audit_list(
    State(state): Shared,
    q: std::result::Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<Value>> {
    let q = query(q)?;
    let limit = parse_limit(q.limit)?;
    let before = q.cursor.as_deref().map(parse_cursor).transpose()?;
    let mut rows = state
        .store
        .audit_list(&AuditFilter {
            actor: q.actor,
            action: q.action,
            limit: limit + 1,
            before,
        })
        .await?;
    let more = rows.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = rows
        .last()
        .filter(|_| more)
        .map(|a| format!("{}_{}", a.at_ms, a.id));
    let items: Vec<Value> = rows
        .iter()
        .map(|a| {
            let mut v = serde_json::to_value(a).unwrap_or_default();
            v["summary"] = serde_json::from_str(&a.summary).unwrap_or(Value::Null);
            v["at"] = fmt_ms(Some(a.at_ms));
            v
        })
        .collect();
    Ok(Json(json!({ "items": items, "next_cursor": next_cursor })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    minutes: Option<i64>,
    bucket: Option<i64>,
}

/// Longest window the stats cover, and most buckets in one answer: the query
/// stays an index range scan of bounded size.
const STATS_MAX_MINUTES: i64 = 7 * 24 * 60;
const STATS_MAX_BUCKETS: i64 = 1440;

/// Executions and failures per bucket, and fire lag percentiles, over the last
/// `minutes` (default 60) in buckets of `bucket` seconds (default 60). Buckets
/// are aligned on multiples of their width and every bucket of the window is
/// listed, empty ones included, oldest first.
pub async fn stats_executions(
    State(state): Shared,
    q: std::result::Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Json<Value>> {
    let q = query(q)?;
    let minutes = q.minutes.unwrap_or(60);
    if !(1..=STATS_MAX_MINUTES).contains(&minutes) {
        return Err(ApiError::invalid_field(
            "minutes",
            format!("minutes {minutes}: expected 1 to {STATS_MAX_MINUTES}"),
        ));
    }
    let bucket_s = q.bucket.unwrap_or(60);
    if !(1..=86_400).contains(&bucket_s) {
        return Err(ApiError::invalid_field(
            "bucket",
            format!("bucket {bucket_s}: expected 1 to 86400 seconds"),
        ));
    }
    let bucket_ms = bucket_s * 1000;
    let window_ms = minutes * 60_000;
    let n = (window_ms + bucket_ms - 1) / bucket_ms;
    if n > STATS_MAX_BUCKETS {
        return Err(ApiError::invalid_field(
            "bucket",
            format!(
                "{minutes} minutes in buckets of {bucket_s}s make {n} buckets; at most {STATS_MAX_BUCKETS}: use wider buckets"
            ),
        ));
    }
    let now = state.store.now_ms().await?;
    let to_ms = (now.div_euclid(bucket_ms) + 1) * bucket_ms;
    let from_ms = to_ms - n * bucket_ms;
    let found = state
        .store
        .history_stats(&HistoryStatsParams {
            from_ms,
            to_ms,
            bucket_ms,
        })
        .await?;
    let mut found = found.into_iter().peekable();
    let mut buckets = Vec::new();
    for i in 0..n {
        let b = match found.peek() {
            Some(b) if b.index == i => found.next().unwrap_or_default(),
            _ => HistoryBucket::default(),
        };
        let count = |s: &str| b.counts.get(s).copied().unwrap_or(0);
        let start_ms = from_ms + i * bucket_ms;
        buckets.push(json!({
            "start_ms": start_ms,
            "start": fmt_ms(Some(start_ms)),
            "total": b.counts.values().sum::<i64>(),
            "failures": count("failed") + count("retried") + count("timeout"),
            "counts": b.counts,
            "lag_samples": b.lag_samples,
            "lag_p50_ms": b.lag_p50_ms,
            "lag_p99_ms": b.lag_p99_ms,
            "lag_max_ms": b.lag_max_ms,
        }));
    }
    Ok(Json(json!({
        "from_ms": from_ms,
        "to_ms": to_ms,
        "now_ms": now,
        "bucket_seconds": bucket_s,
        "buckets": buckets,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretBody {
    value: String,
}

impl std::fmt::Debug for SecretBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBody(..)")
    }
}

pub async fn secret_list(State(state): Shared) -> Result<Json<Value>> {
    let list = state.store.secret_list().await?;
    Ok(Json(json!({
        "items": list.iter().map(crate::secrets::secret_view).collect::<Vec<_>>(),
    })))
}

pub async fn secret_set(
    State(state): Shared,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let secret: SecretBody = json_body(&headers, &read_body(body)?)?;
    let value = zeroize::Zeroizing::new(secret.value);
    let keys = state.secret_keys.get().cloned().unwrap_or_default();
    let meta = crate::secrets::secret_set(&*state.store, &keys, &name, &value)
        .await
        .map_err(|e| match e {
            crate::secrets::SecretError::Store(s) => ApiError::from(s),
            crate::secrets::SecretError::NoKey => ApiError::conflict(e.to_string()),
            other => ApiError::invalid_field("value", other.to_string()),
        })?;
    let view = crate::secrets::secret_view(&meta);
    Ok(done(
        StatusCode::OK,
        view,
        note(
            "secret.set",
            &name,
            json!({ "name": meta.name, "version": meta.version }),
        ),
    ))
}

pub async fn secret_delete(State(state): Shared, Path(name): Path<String>) -> Result<Response> {
    if !state.store.secret_delete(&name).await? {
        return Err(ApiError::not_found(format!("no secret {name:?}")));
    }
    Ok(done(
        StatusCode::OK,
        json!({ "deleted": name }),
        note("secret.delete", &name, json!({ "name": name })),
    ))
}
