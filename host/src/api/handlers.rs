//! One function per route: read the request, call the admin service (or, for
//! reads with no CLI twin, the store), answer JSON. Every change is an admin
//! service operation, which writes its audit row; [`answer`] marks the
//! response so the guard does not write another.

use super::auth::Audited;
use super::error::ApiError;
use crate::admin::jobs::{PauseRequest, PutMode};
use crate::admin::spec::JobSpec;
use crate::admin::views::{fmt_ms, history_view};
use crate::admin::{AdminError, Caller, Done};
use crate::store::model::{
    AuditFilter, HistoryBucket, HistoryFilter, HistoryStatsParams, HistoryStatus,
};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

pub(super) type Result<T> = std::result::Result<T, ApiError>;
pub(super) type Shared = State<Arc<super::ApiState>>;
/// Who is calling, as the guard authenticated them.
pub(super) type Who = Extension<Caller>;

/// The response to an admin service change, marked as audited either way.
pub(super) fn answer(result: std::result::Result<Done, AdminError>) -> Response {
    let mut response = match result {
        Ok(done) => {
            let status = StatusCode::from_u16(done.status.http()).unwrap_or(StatusCode::OK);
            (status, Json(done.body)).into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
    };
    response.extensions_mut().insert(Audited);
    response
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
        .admin
        .metrics()
        .render(state.admin.store().as_ref(), state.dead_after_ms)
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
    Ok(Json(json!({ "items": state.admin.job_list().await? })))
}

type KeyPath = std::result::Result<Path<(String, String)>, PathRejection>;
type NamePath = std::result::Result<Path<String>, PathRejection>;

fn key_of(p: KeyPath) -> Result<String> {
    let (group, name) = path(p)?;
    Ok(format!("{group}/{name}"))
}

pub async fn job_show(State(state): Shared, p: KeyPath) -> Result<Json<Value>> {
    let key = key_of(p)?;
    Ok(Json(state.admin.job_show(&key).await?))
}

pub async fn job_create(
    State(state): Shared,
    Extension(caller): Who,
    headers: axum::http::HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let spec: JobSpec = json_body(&headers, &read_body(body)?)?;
    Ok(answer(
        state.admin.job_put(&caller, &spec, PutMode::Create).await,
    ))
}

pub async fn job_update(
    State(state): Shared,
    Extension(caller): Who,
    p: KeyPath,
    headers: axum::http::HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let key = key_of(p)?;
    let mut spec: JobSpec = json_body(&headers, &read_body(body)?)?;
    if spec.key.is_empty() {
        spec.key = key;
    } else if spec.key != key {
        return Err(ApiError::invalid_field(
            "key",
            format!(
                "key: {:?} differs from the path's {key:?}; a job cannot be renamed",
                spec.key
            ),
        ));
    }
    Ok(answer(
        state.admin.job_put(&caller, &spec, PutMode::Upsert).await,
    ))
}

pub async fn job_delete(
    State(state): Shared,
    Extension(caller): Who,
    p: KeyPath,
) -> Result<Response> {
    let key = key_of(p)?;
    Ok(answer(state.admin.job_delete(&caller, &key).await))
}

/// A pause's optional body, `{"note": ..., "until": ...}`; none: nothing said.
fn pause_request(
    headers: &axum::http::HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<PauseRequest> {
    let body = read_body(body)?;
    if body.is_empty() {
        return Ok(PauseRequest::default());
    }
    json_body(headers, &body)
}

pub async fn job_pause(
    State(state): Shared,
    Extension(caller): Who,
    p: KeyPath,
    headers: axum::http::HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let key = key_of(p)?;
    let request = pause_request(&headers, body)?;
    Ok(answer(
        state.admin.job_pause(&caller, &key, true, &request).await,
    ))
}

pub async fn job_resume(
    State(state): Shared,
    Extension(caller): Who,
    p: KeyPath,
) -> Result<Response> {
    let key = key_of(p)?;
    Ok(answer(
        state
            .admin
            .job_pause(&caller, &key, false, &PauseRequest::default())
            .await,
    ))
}

pub async fn job_run_now(
    State(state): Shared,
    Extension(caller): Who,
    p: KeyPath,
) -> Result<Response> {
    let key = key_of(p)?;
    Ok(answer(state.admin.job_run_now(&caller, &key).await))
}

pub async fn group_pause(
    State(state): Shared,
    Extension(caller): Who,
    p: NamePath,
    headers: axum::http::HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let group = path(p)?;
    let request = pause_request(&headers, body)?;
    Ok(answer(
        state
            .admin
            .group_pause(&caller, &group, true, &request)
            .await,
    ))
}

pub async fn group_resume(
    State(state): Shared,
    Extension(caller): Who,
    p: NamePath,
) -> Result<Response> {
    let group = path(p)?;
    Ok(answer(
        state
            .admin
            .group_pause(&caller, &group, false, &PauseRequest::default())
            .await,
    ))
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
    Ok(Json(
        json!({ "items": state.admin.trigger_list(q.job.as_deref()).await? }),
    ))
}

pub async fn trigger_pause(
    State(state): Shared,
    Extension(caller): Who,
    p: KeyPath,
) -> Result<Response> {
    let key = key_of(p)?;
    Ok(answer(state.admin.trigger_pause(&caller, &key, true).await))
}

pub async fn trigger_resume(
    State(state): Shared,
    Extension(caller): Who,
    p: KeyPath,
) -> Result<Response> {
    let key = key_of(p)?;
    Ok(answer(
        state.admin.trigger_pause(&caller, &key, false).await,
    ))
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
    Ok(Json(
        json!({ "items": state.admin.module_list(q.name.as_deref()).await? }),
    ))
}

/// The body is the component's bytes; validated exactly as `quartzite module push`.
pub async fn module_push(
    State(state): Shared,
    Extension(caller): Who,
    q: std::result::Result<Query<ModuleQuery>, QueryRejection>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let q = query(q)?;
    let body = read_body(body)?;
    Ok(answer(
        state
            .admin
            .module_push(
                &caller,
                body.to_vec(),
                q.name.as_deref(),
                q.version.as_deref(),
            )
            .await,
    ))
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
    Extension(caller): Who,
    p: NamePath,
    q: std::result::Result<Query<RollbackQuery>, QueryRejection>,
) -> Result<Response> {
    let name = path(p)?;
    let q = query(q)?;
    Ok(answer(
        state
            .admin
            .module_rollback(&caller, &name, q.to.as_deref())
            .await,
    ))
}

/// A page position: the `started_ms`/`at_ms` and id of the last row returned.
fn parse_cursor(text: &str) -> Result<(i64, String)> {
    crate::admin::views::parse_cursor(text).ok_or_else(|| {
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
    let (rows, next_cursor) = crate::admin::views::history_page(
        state.admin.store().as_ref(),
        q.job.as_deref(),
        status,
        limit,
        cursor.as_ref(),
    )
    .await?;
    let total = state
        .admin
        .store()
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

/// Fires in flight: claimed by a node, or due and waiting.
pub async fn fire_list(State(state): Shared) -> Result<Json<Value>> {
    let fires = state.admin.store().fire_running().await?;
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
    let nodes = state.admin.store().node_list(dead_after).await?;
    Ok(Json(json!({ "items": nodes })))
}

pub async fn lock_list(State(state): Shared) -> Result<Json<Value>> {
    let locks = state.admin.store().lock_list().await?;
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
        .admin
        .store()
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

/// The attempts and statuses whose lag the stats cover, as the store's
/// `history_stats` picks them: first attempts that ran. A retry starts late by
/// its backoff on purpose; `quartzite_fire_lag_seconds{attempt="first"}` covers
/// the same attempts (from their start, whatever their status then).
const LAG_ATTEMPTS: &str = "first";
const LAG_STATUSES: [&str; 4] = ["success", "failed", "retried", "timeout"];

/// Runs and failures per bucket, and fire lag percentiles, over the last
/// `minutes` (default 60) in buckets of `bucket` seconds (default 60). Buckets
/// are aligned on multiples of their width and every bucket of the window is
/// listed, empty ones included, oldest first. The answer says which attempts
/// the lag covers (`lag_attempts`, `lag_statuses`), so that a reader comparing
/// it with the metrics or its own history query knows what was left out.
pub async fn stats_runs(
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
    let now = state.admin.store().now_ms().await?;
    let to_ms = (now.div_euclid(bucket_ms) + 1) * bucket_ms;
    let from_ms = to_ms - n * bucket_ms;
    let found = state
        .admin
        .store()
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
        "lag_attempts": LAG_ATTEMPTS,
        "lag_statuses": LAG_STATUSES,
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
    Ok(Json(json!({ "items": state.admin.secret_list().await? })))
}

pub async fn secret_set(
    State(state): Shared,
    Extension(caller): Who,
    Path(name): Path<String>,
    headers: axum::http::HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let secret: SecretBody = json_body(&headers, &read_body(body)?)?;
    let value = zeroize::Zeroizing::new(secret.value);
    let keys = state.secret_keys.get().cloned().unwrap_or_default();
    Ok(answer(
        state.admin.secret_set(&caller, &keys, &name, &value).await,
    ))
}

pub async fn secret_delete(
    State(state): Shared,
    Extension(caller): Who,
    Path(name): Path<String>,
) -> Result<Response> {
    Ok(answer(state.admin.secret_delete(&caller, &name).await))
}
