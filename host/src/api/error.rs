//! The admin API's one error shape: an HTTP status, a stable machine-readable
//! code, a message saying what was wrong with the request, and the field when
//! one field was at fault.
//!
//! Store errors never reach clients as they are: the client learns the store
//! failed, the server log gets the cause.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answered to a client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable: clients may branch on it.
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

/// The code an error response carried, kept on the response for the audit log.
#[derive(Clone, Debug)]
pub struct ErrorCode(pub &'static str);

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    /// 400 `bad_request`: the request cannot be read (not JSON, bad query).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 422 `invalid_field`: the request was read, one field's value is wrong.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        ApiError {
            field: Some(field.into()),
            ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message)
        }
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409 `conflict`.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match e {
            StoreError::NotFound(message) => ApiError::not_found(message),
            StoreError::Conflict(message) => ApiError::conflict(message),
            StoreError::Corrupt(_) => {
                tracing::error!(error = %e, "admin API: unreadable data in the store");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "store_corrupt",
                    "the store holds data this server cannot read; the server log has the cause",
                )
            }
            other => {
                tracing::error!(error = %other, "admin API: store error");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the store failed to answer; the server log has the cause",
                )
            }
        }
    }
}

impl From<crate::admin::AdminError> for ApiError {
    fn from(e: crate::admin::AdminError) -> Self {
        use crate::admin::AdminError;
        if let AdminError::Store(e) = e {
            return e.into();
        }
        let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
        ApiError {
            field: e.field().map(str::to_string),
            ..ApiError::new(status, e.code(), e.to_string())
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(field) = &self.field {
            error["field"] = json!(field);
        }
        let mut response = (self.status, Json(json!({ "error": error }))).into_response();
        response.extensions_mut().insert(ErrorCode(self.code));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    #[test]
    fn each_kind_of_store_error_has_its_status_and_hides_internals() {
        let answer = |e: StoreError| {
            let a = ApiError::from(e);
            (a.status.as_u16(), a.code, a.message)
        };
        assert_eq!(
            answer(StoreError::NotFound("no job \"g/a\"".into())),
            (404, "not_found", "no job \"g/a\"".into())
        );
        assert_eq!(
            answer(StoreError::Conflict("module m@1 already exists".into())).0,
            409
        );
        let (status, code, message) = answer(StoreError::Corrupt("trigger t: kind x".into()));
        assert_eq!((status, code), (500, "store_corrupt"));
        assert!(!message.contains("kind x"), "{message}");
        let (status, code, message) = answer(StoreError::Database(sqlx::Error::PoolTimedOut));
        assert_eq!((status, code), (503, "store_unavailable"));
        assert!(!message.contains("pool"), "{message}");
        assert_eq!(
            answer(StoreError::Unavailable("the node is stopping".into())).0,
            503
        );
    }
}
