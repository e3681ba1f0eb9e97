//! Everything Mattermost: its outgoing slash command (`POST /mattermost/commands`, checked
//! against the command tokens), its message buttons (`POST /mattermost/actions`, checked
//! against our own seal on each button's context), and the chat port that posts and edits
//! through its REST API v4 with a bot account's token.
//!
//! Past this folder the code speaks of commands, replies and notices, not of Mattermost: a
//! command from here is dispatched exactly as one from Slack, and a vote counted by the same
//! rules.

pub mod actions;
pub mod api;
pub mod buttons;
pub mod commands;
pub mod port;
pub mod render;

use std::sync::Arc;

use axum::{Router, routing::post};
use secrecy::{ExposeSecret, SecretString};

use crate::http::{AppState, post_within};

/// Mattermost's slash-command forms are a few hundred bytes; a click's JSON carries the
/// context we sealed (well under a kilobyte) and a trigger id.
pub const COMMAND_BODY_LIMIT: usize = 64 * 1024;
pub const ACTION_BODY_LIMIT: usize = 64 * 1024;

/// Shortest action secret accepted: an HMAC key should be at least as long as its output is
/// strong; 32 characters of a random string is what `openssl rand -hex 16` gives.
pub const MIN_ACTION_SECRET: usize = 32;

/// The key for button contexts, if set; what is wrong with `PANTHEON_MATTERMOST_ACTION_SECRET`
/// (said after its name) if it is too short, or missing while Mattermost's commands are on
/// (their buttons need it).
pub fn action_secret(settings: &crate::config::Settings) -> Result<Option<&[u8]>, String> {
    match &settings.mattermost_action_secret {
        Some(secret) if secret.expose_secret().len() < MIN_ACTION_SECRET => Err(format!(
            "is shorter than {MIN_ACTION_SECRET} characters; make one with `openssl rand -hex 32`"
        )),
        Some(secret) => Ok(Some(secret.expose_secret().as_bytes())),
        None if !settings.mattermost_command_tokens.is_empty() => Err(
            "is not set, and MATTERMOST_COMMAND_TOKEN is: Mattermost's buttons need a key of our own (make one with `openssl rand -hex 32`)".to_owned(),
        ),
        None => Ok(None),
    }
}

/// What Mattermost's two routes need: the command tokens, the port (for answers, usernames
/// and the response-URL check) and the button seal.
pub struct Edge {
    pub tokens: Vec<SecretString>,
    pub chat: Arc<port::MattermostChat>,
    pub buttons: Arc<buttons::Buttons>,
    /// The slash command, when a request does not name it.
    pub slash: String,
}

impl Edge {
    /// Whether `token` is one of the command tokens: each compared in constant time, all of
    /// them every time.
    pub fn token_ok(&self, token: &str) -> bool {
        let mut ok = false;
        for t in &self.tokens {
            ok |=
                crate::signature::constant_time_eq(t.expose_secret().as_bytes(), token.as_bytes());
        }
        ok && !token.is_empty()
    }
}

/// Mattermost's two routes, each reading its body in full (within `body_timeout`) first.
pub fn routes(edge: Arc<Edge>, body_timeout: std::time::Duration) -> Router<AppState> {
    let for_commands = edge.clone();
    Router::new()
        .route(
            "/mattermost/commands",
            post_within(
                post(move |state, headers, body| {
                    commands::commands(for_commands.clone(), state, headers, body)
                }),
                COMMAND_BODY_LIMIT,
                body_timeout,
            ),
        )
        .route(
            "/mattermost/actions",
            post_within(
                post(move |state, body| actions::actions(edge.clone(), state, body)),
                ACTION_BODY_LIMIT,
                body_timeout,
            ),
        )
}

/// The claim key of a Mattermost delivery, from its `trigger_id` (a fresh one for each
/// command and each click, so a copy of one is refused): hashed, since a trigger id is long.
pub fn claim_key(trigger: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(trigger.as_bytes());
    crate::store::socket_claim_key(&format!("mm:{}", hex::encode(&digest[..20])))
}
