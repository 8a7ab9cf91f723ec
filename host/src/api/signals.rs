//! The routes of events and alerts, and the history entry alerts link to.

use super::error::ApiError;
use super::handlers::{Result, Shared, done, json_body, note, parse_limit, path, query, read_body};
use super::views::history_view;
use crate::engine::alerts::Alerter;
use crate::engine::signals::{self, SignalError};
use crate::store::events::{DeliveryFilter, DeliveryState, EmitOutcome};
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

impl From<SignalError> for ApiError {
    fn from(e: SignalError) -> Self {
        match e {
            SignalError::Invalid { field, message } => ApiError::invalid_field(field, message),
            SignalError::NotFound(m) => ApiError::not_found(m),
            SignalError::Store(e) => e.into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmitQuery {
    key: Option<String>,
}

/// `POST /api/v1/events/{name}`: the body is the payload (any JSON; empty: null);
/// the idempotency key comes from `?key=` or the `Idempotency-Key` header.
pub async fn event_emit(
    State(state): Shared,
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
    let outcome = signals::emit(
        state.store.as_ref(),
        &name,
        payload.as_deref(),
        key.as_deref(),
    )
    .await?;
    state.metrics.event_emitted(&outcome);
    let status = match &outcome {
        EmitOutcome::Accepted { fires, .. } => {
            if !fires.is_empty() {
                state.wake();
            }
            StatusCode::ACCEPTED
        }
        _ => StatusCode::OK,
    };
    let view = signals::emit_view(&name, &outcome);
    let summary =
        json!({ "event_id": view["event_id"], "key": key, "duplicate": view["duplicate"] });
    Ok(done(status, view, note("event.emit", &name, summary)))
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
    let events = state.store.event_list(q.name.as_deref(), limit).await?;
    Ok(Json(
        json!({ "items": events.iter().map(signals::event_view).collect::<Vec<_>>() }),
    ))
}

/// `GET /api/v1/alerts`: the alert rules.
pub async fn alert_list(State(state): Shared) -> Result<Json<Value>> {
    Ok(Json(
        json!({ "items": state.store.alert_rule_list().await? }),
    ))
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
    p: std::result::Result<axum::extract::Path<String>, PathRejection>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let name = path(p)?;
    let b: RuleBody = json_body(&headers, &read_body(body)?)?;
    let rule =
        signals::rule_from_input(&name, &b.on, b.job.as_deref(), b.after, &b.webhook, "api")?;
    state.store.alert_rule_put(&rule).await?;
    let view = serde_json::to_value(&rule).unwrap_or_default();
    Ok(done(
        StatusCode::OK,
        view.clone(),
        note("alert.put", &name, view),
    ))
}

/// `DELETE /api/v1/alerts/{name}`.
pub async fn alert_delete(
    State(state): Shared,
    p: std::result::Result<axum::extract::Path<String>, PathRejection>,
) -> Result<Response> {
    let name = path(p)?;
    if !state.store.alert_rule_delete(&name).await? {
        return Err(ApiError::not_found(format!("no alert rule {name:?}")));
    }
    Ok(done(
        StatusCode::OK,
        json!({ "name": name, "deleted": true }),
        note("alert.delete", &name, json!({})),
    ))
}

/// `POST /api/v1/alerts/{name}/test`: sends a sample to the rule's webhook now.
pub async fn alert_test(
    State(state): Shared,
    p: std::result::Result<axum::extract::Path<String>, PathRejection>,
) -> Result<Response> {
    let name = path(p)?;
    let alerter = match state.scheduler.get() {
        Some(s) => Arc::clone(s.alerter()),
        None => Alerter::new(
            Arc::clone(&state.store),
            Arc::clone(&state.metrics),
            "api".into(),
            None,
        ),
    };
    let result = signals::alert_test(state.store.as_ref(), &alerter, &name).await?;
    let summary = json!({ "state": result["state"], "status": result["status"] });
    Ok(done(
        StatusCode::OK,
        result,
        note("alert.test", &name, summary),
    ))
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
        .store
        .alert_delivery_list(&DeliveryFilter {
            rule: q.rule,
            state: delivery_state,
            limit,
        })
        .await?;
    Ok(Json(
        json!({ "items": rows.iter().map(signals::delivery_view).collect::<Vec<_>>() }),
    ))
}

/// `GET /api/v1/history/{id}`: one history entry (where alerts link).
pub async fn history_get(
    State(state): Shared,
    p: std::result::Result<axum::extract::Path<String>, PathRejection>,
) -> Result<Json<Value>> {
    let id = path(p)?;
    match state.store.history_get(&id).await? {
        Some(h) => Ok(Json(history_view(&h))),
        None => Err(ApiError::not_found(format!("no history entry {id:?}"))),
    }
}
