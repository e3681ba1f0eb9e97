//! The HTTP surface: one router, one module per surface.

pub mod events;
pub mod interactions;
pub mod ops;
pub mod pages;
pub mod slack;
pub mod webhooks;

use std::{sync::Arc, time::Instant};

use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request},
    middleware::{self, Next},
    response::Response,
    routing::{get, post},
};

use crate::{app::Services, signature::HmacKey};

/// Slack's slash-command bodies are a few hundred bytes; interaction payloads carry the whole
/// message they came from (up to 50 blocks), so they get more room.
pub const SLACK_COMMAND_BODY_LIMIT: usize = 64 * 1024;
pub const SLACK_INTERACTION_BODY_LIMIT: usize = 1024 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub services: Arc<Services>,
    pub slack_key: Arc<HmacKey>,
    pub replays: Arc<interactions::ReplayGuard>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/slack/commands",
            post(slack::commands).layer(DefaultBodyLimit::max(SLACK_COMMAND_BODY_LIMIT)),
        )
        .route(
            "/slack/interactions",
            post(interactions::interactions)
                .layer(DefaultBodyLimit::max(SLACK_INTERACTION_BODY_LIMIT)),
        )
        .route(
            "/slack/events",
            post(events::events).layer(DefaultBodyLimit::max(SLACK_INTERACTION_BODY_LIMIT)),
        )
        .route(
            "/webhooks/github",
            post(webhooks::github).layer(DefaultBodyLimit::max(webhooks::GITHUB_BODY_LIMIT)),
        )
        .route(
            "/webhooks/pagerduty",
            post(webhooks::pagerduty).layer(DefaultBodyLimit::max(webhooks::SMALL_WEBHOOK_LIMIT)),
        )
        .route(
            "/webhooks/zendesk",
            post(webhooks::zendesk).layer(DefaultBodyLimit::max(webhooks::SMALL_WEBHOOK_LIMIT)),
        )
        .route("/jobs/{id}", get(pages::job_page))
        .route("/audit", get(pages::audit_page))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .fallback(ops::not_found)
        .layer(middleware::from_fn(track))
        .with_state(state)
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
