//! Errors at the HTTP edge: what the client is told is short and fixed; the detail goes to the
//! log. Nothing a client can send produces a 500.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A missing, malformed, wrong or stale signature. The reason is logged, not returned.
    #[error("invalid signature: {0}")]
    Unauthorized(#[from] crate::signature::SignatureError),
    /// The body is not what this route takes.
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("not found")]
    NotFound,
    /// We could not do our part (database down). The client may retry.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Unauthorized(reason) => {
                tracing::warn!(%reason, "request refused: bad signature");
                (StatusCode::UNAUTHORIZED, "invalid signature\n").into_response()
            }
            ApiError::BadRequest(why) => {
                tracing::info!(%why, "bad request");
                (StatusCode::BAD_REQUEST, format!("bad request: {why}\n")).into_response()
            }
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not found\n").into_response(),
            ApiError::Unavailable(why) => {
                tracing::error!(%why, "unavailable");
                (StatusCode::SERVICE_UNAVAILABLE, "temporarily unavailable\n").into_response()
            }
        }
    }
}
