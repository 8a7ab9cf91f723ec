//! The routes of exclusion calendars: list, show, put, delete.

use super::handlers::{Result, Shared, Who, answer, json_body, path, read_body};
use crate::admin::calendars::CalendarInput;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Extension, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Value, json};

/// `GET /api/v1/calendars`: every calendar.
pub async fn calendar_list(State(state): Shared) -> Result<Json<Value>> {
    Ok(Json(json!({ "items": state.admin.calendar_list().await? })))
}

/// `GET /api/v1/calendars/{name}`: one calendar and the triggers using it.
pub async fn calendar_show(
    State(state): Shared,
    p: std::result::Result<axum::extract::Path<String>, PathRejection>,
) -> Result<Json<Value>> {
    let name = path(p)?;
    Ok(Json(state.admin.calendar_show(&name).await?))
}

/// `PUT /api/v1/calendars/{name}`: stores or replaces a calendar; the body
/// is its kind and fields (see `CalendarInput`).
pub async fn calendar_put(
    State(state): Shared,
    Extension(caller): Who,
    p: std::result::Result<axum::extract::Path<String>, PathRejection>,
    headers: HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let name = path(p)?;
    let input: CalendarInput = json_body(&headers, &read_body(body)?)?;
    Ok(answer(
        state.admin.calendar_put(&caller, &name, &input).await,
    ))
}

/// `DELETE /api/v1/calendars/{name}`: refused (409) while a trigger or
/// another calendar uses it.
pub async fn calendar_delete(
    State(state): Shared,
    Extension(caller): Who,
    p: std::result::Result<axum::extract::Path<String>, PathRejection>,
) -> Result<Response> {
    let name = path(p)?;
    Ok(answer(state.admin.calendar_delete(&caller, &name).await))
}
