//! Everything Slack: the three HTTP handlers (slash commands, interactions, events), request
//! verification, Socket Mode (the same requests over a WebSocket we open), replies through
//! `response_url`, the Web API client and the app manifest.
//! Past this folder the code speaks of commands, replies and notices, not of Slack.

pub mod api;
pub mod blocks;
pub mod commands;
pub mod events;
pub mod interactions;
pub mod manifest;
pub mod port;
pub mod request;
pub mod response_url;
pub mod socket;
pub mod views;

use std::time::Duration;

use axum::{Router, routing::post};

use crate::http::{AppState, post_within};

/// Slack's slash-command bodies are a few hundred bytes; interaction payloads carry the whole
/// message they came from (up to 50 blocks), so they get more room.
pub const SLACK_COMMAND_BODY_LIMIT: usize = 64 * 1024;
pub const SLACK_INTERACTION_BODY_LIMIT: usize = 1024 * 1024;

/// Slack's three routes, each reading its body in full (within `body_timeout`) before it is
/// verified.
pub fn routes(body_timeout: Duration) -> Router<AppState> {
    Router::new()
        .route(
            "/slack/commands",
            post_within(
                post(commands::commands),
                SLACK_COMMAND_BODY_LIMIT,
                body_timeout,
            ),
        )
        .route(
            "/slack/interactions",
            post_within(
                post(interactions::interactions),
                SLACK_INTERACTION_BODY_LIMIT,
                body_timeout,
            ),
        )
        .route(
            "/slack/events",
            post_within(
                post(events::events),
                SLACK_INTERACTION_BODY_LIMIT,
                body_timeout,
            ),
        )
}
