//! Health, readiness and metrics.

use std::time::Duration;

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::AppState;
use crate::error::ApiError;

pub async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when the database answers within two seconds.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let store = &state.services.store;
    let inbound = &state.services.inbound;
    match tokio::time::timeout(Duration::from_secs(2), store.ping()).await {
        // With Socket Mode on, no connection to Slack means no commands: not ready.
        Ok(Ok(())) if inbound.wanted() && inbound.live() == 0 => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                json!({"status": "unavailable", "database": store.kind(), "socket_mode": "disconnected", "reason": "no Socket Mode connection to Slack"}),
            ),
        ),
        Ok(Ok(())) if inbound.wanted() => (
            StatusCode::OK,
            Json(
                json!({"status": "ready", "database": store.kind(), "socket_mode": "connected", "connections": inbound.live()}),
            ),
        ),
        Ok(Ok(())) => (
            StatusCode::OK,
            Json(json!({"status": "ready", "database": store.kind()})),
        ),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "not ready: database");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(
                    json!({"status": "unavailable", "database": store.kind(), "reason": "database error"}),
                ),
            )
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                json!({"status": "unavailable", "database": store.kind(), "reason": "database timeout"}),
            ),
        ),
    }
}

/// Prometheus text. With `METRICS_TOKEN` set, only for `Authorization: Bearer <token>`.
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(token) = &state.services.settings.metrics_token {
        use secrecy::ExposeSecret as _;
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !crate::signature::constant_time_eq(given.as_bytes(), token.expose_secret().as_bytes()) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "unauthorized\n",
            )
                .into_response();
        }
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::telemetry::metrics_handle().render(),
    )
        .into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound
}
