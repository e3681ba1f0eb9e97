//! The HTTP surface: one router, one module per surface.

pub mod events;
pub mod interactions;
pub mod ops;
pub mod pages;
pub mod server;
pub mod slack;
pub mod webhooks;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    extract::{DefaultBodyLimit, MatchedPath, Request},
    http::{StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{MethodRouter, get, post},
};
use http_body_util::BodyExt as _;

use crate::{app::Services, signature::HmacKey};

/// Slack's slash-command bodies are a few hundred bytes; interaction payloads carry the whole
/// message they came from (up to 50 blocks), so they get more room.
pub const SLACK_COMMAND_BODY_LIMIT: usize = 64 * 1024;
pub const SLACK_INTERACTION_BODY_LIMIT: usize = 1024 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub services: Arc<Services>,
    pub slack_key: Arc<HmacKey>,
}

pub fn router(state: AppState) -> Router {
    let body_timeout = state.services.config.limits.body_timeout;
    let post_within = |handler: MethodRouter<AppState>, limit: usize| {
        handler
            .layer(DefaultBodyLimit::max(limit))
            .layer(middleware::from_fn(move |request, next| {
                read_body(request, next, limit, body_timeout)
            }))
    };
    Router::new()
        .route(
            "/slack/commands",
            post_within(post(slack::commands), SLACK_COMMAND_BODY_LIMIT),
        )
        .route(
            "/slack/interactions",
            post_within(
                post(interactions::interactions),
                SLACK_INTERACTION_BODY_LIMIT,
            ),
        )
        .route(
            "/slack/events",
            post_within(post(events::events), SLACK_INTERACTION_BODY_LIMIT),
        )
        .route(
            "/webhooks/github",
            post_within(post(webhooks::github), webhooks::GITHUB_BODY_LIMIT),
        )
        .route(
            "/webhooks/pagerduty",
            post_within(post(webhooks::pagerduty), webhooks::SMALL_WEBHOOK_LIMIT),
        )
        .route(
            "/webhooks/zendesk",
            post_within(post(webhooks::zendesk), webhooks::SMALL_WEBHOOK_LIMIT),
        )
        .route("/jobs/{id}", get(pages::job_page))
        .route("/audit", get(pages::audit_page))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .merge(if state.services.settings.metrics_listen_addr.is_some() {
            // Served on its own address instead.
            Router::new()
        } else {
            Router::new().route("/metrics", get(ops::metrics))
        })
        .fallback(ops::not_found)
        .layer(middleware::from_fn(track))
        .with_state(state)
}

/// `/metrics` and `/healthz` alone, for `METRICS_LISTEN_ADDR`.
pub fn metrics_router(services: Arc<Services>) -> Router {
    let state = AppState {
        services,
        // Nothing signed is served here.
        slack_key: Arc::new(HmacKey::new(b"unused")),
    };
    Router::new()
        .route("/metrics", get(ops::metrics))
        .route("/healthz", get(ops::healthz))
        .fallback(ops::not_found)
        .with_state(state)
}

/// Read the whole body before the handler sees the request: 413 at once when the announced
/// length is over `limit` (nothing is read), 413 when more than `limit` bytes arrive, 408 when
/// the body has not arrived within `timeout` of its headers. A client that announces a huge body
/// or trickles one cannot hold a connection and a task for longer than that.
async fn read_body(request: Request, next: Next, limit: usize, timeout: Duration) -> Response {
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        return too_large();
    }
    let (parts, body) = request.into_parts();
    let collected =
        tokio::time::timeout(timeout, http_body_util::Limited::new(body, limit).collect()).await;
    let bytes = match collected {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
        Ok(Err(e)) => {
            tracing::info!(error = %e, "request body not read");
            return (
                StatusCode::BAD_REQUEST,
                "bad request: the body could not be read\n",
            )
                .into_response();
        }
        Err(_) => {
            metrics::counter!("pantheon_body_timeouts_total").increment(1);
            tracing::info!(
                timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                "request body not received in time"
            );
            let mut response = (
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time\n",
            )
                .into_response();
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            return response;
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

fn too_large() -> Response {
    let mut response = (StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n").into_response();
    // The body was not read: the connection cannot carry another request.
    response.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
}

/// Count and time every request by route, method and status.
async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let start = Instant::now();
    let response = next.run(request).await;
    crate::telemetry::record_http(&route, &method, response.status().as_u16(), start.elapsed());
    response
}
