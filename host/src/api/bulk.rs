//! The routes of the operations on many fires (`admin::bulk`): backfill,
//! replay, bulk cancel. Each reads a JSON body and calls the operation.

use super::handlers::{Result, Shared, Who, answer, json_body, read_body};
use crate::admin::bulk::{BackfillRequest, CancelRequest, ReplayRequest};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Extension, Path, State};
use axum::response::Response;

type KeyPath = std::result::Result<Path<(String, String)>, PathRejection>;

/// `POST /api/v1/jobs/{group}/{name}/backfill`, body [`BackfillRequest`].
pub async fn job_backfill(
    State(state): Shared,
    Extension(caller): Who,
    p: KeyPath,
    headers: axum::http::HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let (group, name) = super::handlers::path(p)?;
    let request: BackfillRequest = json_body(&headers, &read_body(body)?)?;
    Ok(answer(
        state
            .admin
            .job_backfill(&caller, &format!("{group}/{name}"), &request)
            .await,
    ))
}

/// `POST /api/v1/history/replay`, body [`ReplayRequest`].
pub async fn history_replay(
    State(state): Shared,
    Extension(caller): Who,
    headers: axum::http::HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let request: ReplayRequest = json_body(&headers, &read_body(body)?)?;
    Ok(answer(state.admin.history_replay(&caller, &request).await))
}

/// `POST /api/v1/fires/cancel`, body [`CancelRequest`].
pub async fn fire_cancel(
    State(state): Shared,
    Extension(caller): Who,
    headers: axum::http::HeaderMap,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<Response> {
    let request: CancelRequest = json_body(&headers, &read_body(body)?)?;
    Ok(answer(state.admin.fire_cancel(&caller, &request).await))
}
