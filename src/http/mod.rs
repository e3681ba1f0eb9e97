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
    let collected = tokio::time::timeout(timeout, collect_within_budget(body, limit)).await;
    let (bytes, held) = match collected {
        Ok(Ok(collected)) => collected,
        Ok(Err(BodyError::TooLarge)) => return too_large(),
        Ok(Err(BodyError::OverBudget)) => {
            metrics::counter!("pantheon_body_budget_refusals_total").increment(1);
            tracing::warn!("request body refused: bodies in memory are at their budget");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "1")],
                "busy; try again\n",
            )
                .into_response();
        }
        Ok(Err(BodyError::Read(e))) => {
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
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    // The body's share of the budget is held until its request is done.
    drop(held);
    response
}

/// Request bodies held in memory at once, across all requests (KiB). Past it a new body gets
/// 503, so many large bodies arriving together cannot exhaust memory before their signatures are
/// checked.
const BODY_BUDGET_KIB: usize = 64 * 1024;

static BODY_BUDGET: std::sync::LazyLock<Arc<tokio::sync::Semaphore>> =
    std::sync::LazyLock::new(|| Arc::new(tokio::sync::Semaphore::new(BODY_BUDGET_KIB)));

enum BodyError {
    TooLarge,
    OverBudget,
    Read(axum::Error),
}

/// The whole body, at most `limit` bytes, with the share of the budget it holds.
async fn collect_within_budget(
    mut body: Body,
    limit: usize,
) -> Result<(bytes::Bytes, Option<tokio::sync::OwnedSemaphorePermit>), BodyError> {
    let mut buf = bytes::BytesMut::new();
    let mut held: Option<tokio::sync::OwnedSemaphorePermit> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(BodyError::Read)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if buf.len() + data.len() > limit {
            return Err(BodyError::TooLarge);
        }
        let kib_now = (buf.len() + data.len()).div_ceil(1024);
        let kib_held = held.as_ref().map_or(0, |p| p.num_permits());
        if kib_now > kib_held {
            let more = u32::try_from(kib_now - kib_held).map_err(|_| BodyError::TooLarge)?;
            let permit = BODY_BUDGET
                .clone()
                .try_acquire_many_owned(more)
                .map_err(|_| BodyError::OverBudget)?;
            match held.as_mut() {
                Some(h) => h.merge(permit),
                None => held = Some(permit),
            }
        }
        buf.extend_from_slice(&data);
    }
    Ok((buf.freeze(), held))
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
