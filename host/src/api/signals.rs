//! The routes of events and alerts, and the history entry alerts link to.

use super::error::ApiError;
use super::handlers::{
    Result, Shared, Who, answer, json_body, parse_limit, path, query, read_body,
};
use crate::admin::views::history_view;
use crate::store::events::{DeliveryFilter, DeliveryState};
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Extension, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmitQuery {
    key: Option<String>,
}

/// `POST /api/v1/events/{name}`: the body is the payload (any JSON; empty: null);
/// the idempotency key comes from `?key=` or the `Idempotency-Key` header.
pub async fn event_emit(
    State(state): Shared,
    Extension(caller): Who,
    p: std::result::Result<axum::extract::Path<String>, PathRejection>,
    q: std::result::Result<axum::extract::Query<EmitQuery>, QueryRejection>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let name = path(p)?;
    let q = query(q)?;
    let body = read_body(body)?;
    let header_key = headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str().map(str::to_string).map_err(|_| {
                ApiError::invalid_field("key", "the Idempotency-Key header is not text")
            })
        })
        .transpose()?;
    let key = q.key.or(header_key);
    let payload: Option<String> = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let value: Value = json_body(&headers, &body)?;
        Some(value.to_string())
    };
    Ok(answer(
        state
            .admin
            .event_emit(&caller, &name, payload.as_deref(), key.as_deref())
            .await,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    name: Option<String>,
    limit: Option<i64>,
}

/// `GET /api/v1/events`: accepted events, newest first.
pub async fn event_list(
    State(state): Shared,
    q: std::result::Result<axum::extract::Query<EventQuery>, QueryRejection>,
) -> Result<Json<Value>> {
    let q = query(q)?;
    let limit = parse_limit(q.limit)?;
    Ok(Json(
        json!({ "items": state.admin.event_list(q.name.as_deref(), limit).await? }),
    ))
}

/// `GET /api/v1/alerts`: the alert rules.
pub async fn alert_list(State(state): Shared) -> Result<Json<Value>> {
    Ok(Json(json!({ "items": state.admin.alert_list().await? })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleBody {
    on: String,
    job: Option<String>,
    after: Option<u32>,
    webhook: String,
}

/// `PUT /api/v1/alerts/{name}`: adds or replaces a rule.
pub async fn alert_put(
    State(state): Shared,
    Extension(caller): Who,
    p: std::result::Result<axum::extract::Path<String>, PathRejection>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let name = path(p)?;
    let b: RuleBody = json_body(&headers, &read_body(body)?)?;
    Ok(answer(
        state
            .admin
            .alert_put(&caller, &name, &b.on, b.job.as_deref(), b.after, &b.webhook)
            .await,
    ))
}

/// `DELETE /api/v1/alerts/{name}`.
pub async fn alert_delete(
    State(state): Shared,
    Extension(caller): Who,
    p: std::result::Result<axum::extract::Path<String>, PathRejection>,
) -> Result<Response> {
    let name = path(p)?;
    Ok(answer(state.admin.alert_delete(&caller, &name).await))
}

/// `POST /api/v1/alerts/{name}/test`: sends a sample to the rule's webhook now.
pub async fn alert_test(
    State(state): Shared,
    Extension(caller): Who,
    p: std::result::Result<axum::extract::Path<String>, PathRejection>,
) -> Result<Response> {
    let name = path(p)?;
    Ok(answer(state.admin.alert_test(&caller, &name).await))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryQuery {
    rule: Option<String>,
    state: Option<String>,
    limit: Option<i64>,
}

/// `GET /api/v1/alerts/deliveries`: deliveries, newest first.
pub async fn delivery_list(
    State(state): Shared,
    q: std::result::Result<axum::extract::Query<DeliveryQuery>, QueryRejection>,
) -> Result<Json<Value>> {
    let q = query(q)?;
    let limit = parse_limit(q.limit)?;
    let delivery_state = match q.state.as_deref() {
        None => None,
        Some(s) => Some(DeliveryState::parse(s).ok_or_else(|| {
            ApiError::invalid_field(
                "state",
                format!("state {s:?}: expected pending, sent or failed"),
            )
        })?),
    };
    let rows = state
        .admin
        .delivery_list(&DeliveryFilter {
            rule: q.rule,
            state: delivery_state,
            limit,
        })
        .await?;
    Ok(Json(json!({ "items": rows })))
}

/// `GET /api/v1/history/{id}`: one history entry (where alerts link).
pub async fn history_get(
    State(state): Shared,
    p: std::result::Result<axum::extract::Path<String>, PathRejection>,
) -> Result<Json<Value>> {
    let id = path(p)?;
    match state.admin.store().history_get(&id).await? {
        Some(h) => Ok(Json(history_view(&h))),
        None => Err(ApiError::not_found(format!("no history entry {id:?}"))),
    }
}
