//! `POST /slack/events`: the Events API. The `url_verification` challenge is answered, and an
//! `app_mention` ("@pantheon pager incidents") runs through the same command registry as the
//! slash command, answered in a thread; `app_home_opened` publishes that person's home tab. Slack retries events (`X-Slack-Retry-Num`); each event
//! id is handled once.

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::{commands::VerifiedSlack, request::Request};
use crate::http::AppState;
use crate::{command::Registry, services::Services};
use crate::{
    dispatch::{self, Ack, Invocation, ReplyTarget, Transport},
    domain::outbox::Recorded,
    error::ApiError,
};
use std::sync::Arc;

pub async fn events(State(state): State<AppState>, request: VerifiedSlack) -> Response {
    let payload: Value = match serde_json::from_slice(&request.body) {
        Ok(v) => v,
        Err(e) => {
            return ApiError::BadRequest(format!("the body is not JSON: {e}")).into_response();
        }
    };
    match handle(&state.services, &state.registry, payload, Transport::Http).await {
        Handled::Done => StatusCode::OK.into_response(),
        Handled::Challenge(challenge) => Json(json!({"challenge": challenge})).into_response(),
        Handled::Malformed(why) => ApiError::BadRequest(why).into_response(),
        Handled::NotStored(why) => ApiError::Unavailable(why).into_response(),
    }
}

/// What became of an Events API delivery.
#[derive(Debug)]
pub enum Handled {
    /// Stored (or known already) and, for a mention, dispatched; nothing else to say.
    Done,
    /// The URL check: answer with this.
    Challenge(String),
    /// Not an event we can read: why.
    Malformed(String),
    /// Not stored, so not acted on: Slack should send it again.
    NotStored(String),
}

/// One Events API delivery, however it arrived: remembered before it is acted on (a
/// redelivery of the same event id is not run again, on any replica), and an `app_mention`
/// dispatched, answered in its thread.
pub async fn handle(
    services: &Arc<Services>,
    registry: &Arc<Registry>,
    payload: Value,
    via: Transport,
) -> Handled {
    let mention = match Request::event(payload) {
        Ok(Request::Mention(mention)) => mention,
        Ok(Request::UrlVerification { challenge }) => return Handled::Challenge(challenge),
        Ok(Request::HomeOpened { user }) => {
            let services = services.clone();
            tokio::spawn(async move { publish_home(&services, &user).await });
            return Handled::Done;
        }
        Ok(_) => return Handled::Done,
        Err(why) => return Handled::Malformed(why),
    };
    let event_id = mention.event_id.as_str();
    // Remember the event before acting on it, so a retry is recognised.
    let entry = crate::domain::audit::AuditEntry::new(
        event_id,
        "slack",
        "event",
        crate::domain::audit::Outcome::Received,
    )
    .detail(via.noting(format!("app_mention {event_id}")));
    let delivery = crate::domain::outbox::Delivery {
        source: "slack".into(),
        delivery_id: event_id.to_owned(),
        body_sha256: None,
        event: "app_mention".into(),
        payload: mention.payload.clone(),
        now: time::OffsetDateTime::now_utc(),
        messages: Vec::new(),
        audit: vec![entry],
    };
    // No time limit here: a late store still dispatches the mention, and Slack's retry of an
    // event it thinks failed is then a duplicate, answered 200 and not run again.
    match services.notifications.record(delivery).await {
        Ok(Recorded::Duplicate) => return Handled::Done,
        Ok(Recorded::New { .. }) => {}
        Err(e) => return Handled::NotStored(format!("event not stored: {e}")),
    }
    let (Some(user), Some(channel)) = (mention.user.as_deref(), mention.channel.as_deref()) else {
        return Handled::Done;
    };
    let thread = mention.thread.clone();
    let text = strip_mentions(&mention.text);
    let invocation = Invocation {
        correlation_id: dispatch::new_correlation_id(),
        user_id: user.to_owned(),
        user_name: user.to_owned(),
        channel_id: channel.to_owned(),
        team_id: mention.team_id.clone(),
        slash: format!("@{}", services.config.slack.app_name.to_lowercase()),
        text,
        reply: ReplyTarget::Thread {
            channel: channel.to_owned(),
            thread_ref: thread.clone(),
        },
        replay_key: None,
        transport: via,
        trigger: None,
    };
    let services = services.clone();
    let registry = registry.clone();
    let channel = channel.to_owned();
    // Events are acknowledged at once; even an answer-in-the-ack is posted to the thread.
    tokio::spawn(async move {
        if let Ack::Message(message) = dispatch::dispatch(&services, &registry, invocation).await
            && let Err(e) = services.chat.post(&channel, Some(&thread), &message).await
        {
            tracing::warn!(error = %e, "mention answer not posted");
        }
    });
    Handled::Done
}

/// `user` opened the home tab: publish theirs, fresh (no polling). Someone who may not act here
/// (unknown to Slack, a guest, another workspace's) is shown nothing of ours, and audited.
async fn publish_home(services: &Services, user: &str) {
    if !services.chat.configured() {
        return;
    }
    if let Err(text) = crate::forms::may_act(services, user).await {
        tracing::warn!(reason = %text, "home tab not shown");
        let entry = crate::domain::audit::AuditEntry::new(
            &dispatch::new_correlation_id(),
            user,
            "home",
            crate::domain::audit::Outcome::Refused,
        )
        .detail(format!("refused: {text}"));
        if let Err(e) = services.audit.record(vec![entry]).await {
            tracing::error!(error = %e, "refused home tab not audited");
        }
        return;
    }
    let blocks = crate::forms::home(services, user).await;
    if let Err(e) = services.chat.publish_home(user, &blocks).await {
        tracing::warn!(error = %e, "home tab not published");
    }
}

/// The text after the mentions that address us (`<@U123> pager incidents` → `pager incidents`).
fn strip_mentions(text: &str) -> String {
    let mut rest = text.trim();
    while let Some(after) = rest.strip_prefix("<@") {
        match after.find('>') {
            Some(end) => rest = after[end + 1..].trim_start(),
            None => break,
        }
    }
    rest.to_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn leading_mentions_are_dropped() {
        assert_eq!(
            super::strip_mentions("<@U0BOT> pager incidents"),
            "pager incidents"
        );
        assert_eq!(super::strip_mentions("  <@U0BOT|pantheon>   help"), "help");
        assert_eq!(super::strip_mentions("help <@U9>"), "help <@U9>");
    }
}
