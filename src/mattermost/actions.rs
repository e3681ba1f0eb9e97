//! `POST /mattermost/actions`: a click on one of our message buttons. Mattermost posts the
//! button's `context`, the clicking user's id, the post and a fresh `trigger_id` as JSON, and
//! signs none of it; so the context is checked against our seal first (a changed or foreign
//! one is refused with 401 and nothing else is read; an expired one is refused and audited),
//! then the click is claimed on its `trigger_id` (a copy is refused), then acted on by the same
//! rules as a click on Slack. The answer is Mattermost's `PostActionIntegrationResponse`: a line
//! for the clicker (`ephemeral_text`), or, for a vote on a message we could not post ourselves
//! (no bot token), that message as it now stands (`update`); one we posted is edited through
//! the API instead, as every later change to it is.

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::Instrument as _;

use super::{
    Edge,
    buttons::{CONTEXT_KEY, Refused},
};
use crate::{
    audit::Claimed,
    chat::{Action, ChatPort as _, Message},
    config::is_mattermost_id,
    dispatch::new_correlation_id,
    domain::audit::{AuditEntry, Outcome, Transport},
    error::ApiError,
    http::AppState,
    runbooks::{self, jobs::report},
};

/// The fields of Mattermost's `PostActionIntegrationRequest` we read.
#[derive(Debug, Clone, Deserialize)]
pub struct Click {
    #[serde(default)]
    pub user_id: String,
    #[serde(default)]
    pub user_name: String,
    #[serde(default)]
    pub channel_id: String,
    #[serde(default)]
    pub post_id: String,
    #[serde(default)]
    pub trigger_id: String,
    #[serde(default)]
    pub context: serde_json::Map<String, Value>,
}

pub async fn actions(edge: Arc<Edge>, State(state): State<AppState>, body: Bytes) -> Response {
    let click: Click = match serde_json::from_slice(&body) {
        Ok(click) => click,
        Err(e) => return ApiError::BadRequest(format!("not a button click: {e}")).into_response(),
    };
    let sealed = click
        .context
        .get(CONTEXT_KEY)
        .and_then(Value::as_str)
        .unwrap_or_default();
    let now = time::OffsetDateTime::now_utc();
    let action = match edge.buttons.unseal(sealed, now) {
        Ok(action) => Ok(action),
        Err(Refused::Forged) => {
            crate::telemetry::record_signature_failure("mattermost", "mismatch");
            tracing::warn!("Mattermost click refused: its context is not ours");
            return (StatusCode::UNAUTHORIZED, "invalid button context\n").into_response();
        }
        Err(Refused::Expired) => Err(Refused::Expired),
    };
    if !is_mattermost_id(&click.user_id) || !is_mattermost_id(&click.channel_id) {
        return ApiError::BadRequest("user_id and channel_id must be Mattermost ids".into())
            .into_response();
    }
    if click.trigger_id.is_empty() {
        return ApiError::BadRequest("no trigger_id".into()).into_response();
    }
    let services = &state.services;
    let refused = AuditEntry::new(
        &new_correlation_id(),
        &click.user_id,
        "interaction",
        Outcome::Refused,
    )
    .channel(&click.channel_id)
    .detail(crate::dispatch::REPLAY_DETAIL);
    match services
        .audit
        .record_claimed(
            Some(super::claim_key(&click.trigger_id)),
            Vec::new(),
            vec![refused],
        )
        .await
    {
        Ok(Claimed::First) => {}
        Ok(Claimed::Replay) => {
            crate::telemetry::record_signature_failure("mattermost", "replay");
            tracing::warn!("replayed Mattermost click refused");
            return (StatusCode::UNAUTHORIZED, "replayed request\n").into_response();
        }
        Err(e) => {
            return ApiError::Unavailable(format!("click not recorded: {e}")).into_response();
        }
    }
    edge.chat.saw(&click.user_id, &click.user_name);
    let answer = match action {
        Err(why) => {
            let text = format!("This button cannot be used: {why}. Nothing was done.");
            let entry = AuditEntry::new(
                &new_correlation_id(),
                &click.user_id,
                "interaction",
                Outcome::Refused,
            )
            .channel(&click.channel_id)
            .detail(format!("refused: {why}"));
            if let Err(e) = services.audit.record(vec![entry]).await {
                tracing::error!(error = %e, "refused click not audited");
            }
            private(&edge, &text).await
        }
        Ok(Action::Vote { request, decision }) => {
            vote(&edge, &state, &click, request, decision).await
        }
        Ok(Action::ShowLog { job }) => {
            let text = crate::forms::log_link(services, &click.user_id, Some(job)).await;
            private(&edge, &text).await
        }
        Ok(Action::Comment { request }) => {
            let text = format!(
                "Comments need a form, which Pantheon does not open on Mattermost; use the buttons, or `{} approve {request}`.",
                edge.slash
            );
            private(&edge, &text).await
        }
    };
    axum::Json(answer).into_response()
}

/// A vote, decided before we answer: the approval message as it now stands, or why not.
async fn vote(
    edge: &Edge,
    state: &AppState,
    click: &Click,
    request: i64,
    decision: crate::domain::approval::Decision,
) -> Value {
    let services = &state.services;
    let correlation_id = new_correlation_id();
    let span = tracing::error_span!(
        "interaction",
        correlation_id = %correlation_id,
        user = %click.user_id,
        channel = %click.channel_id
    );
    let voted = services
        .runbooks
        .vote(runbooks::Cast {
            voter: &click.user_id,
            channel: &click.channel_id,
            correlation_id: &correlation_id,
            request,
            decision,
            comment: None,
            via: Transport::Http,
        })
        .instrument(span)
        .await;
    match voted {
        Ok(v) if v.changed => {
            let Some(request) = v.request else {
                return private(edge, &v.reply).await;
            };
            if edge.chat.configured() && request.message_ref.is_some() {
                // We posted it: edited through the API, one refresh at a time, so a worker's
                // later edit ("running") is never overwritten by this answer's older state.
                let runbooks = services.runbooks.clone();
                let id = request.id;
                tokio::spawn(async move { report::refresh_approval(&runbooks, id).await });
                return json!({});
            }
            // No bot token: the message came back in a command's answer; replace it here.
            let job = match request.job_id {
                Some(j) => services.store.job(j).await.ok().flatten(),
                None => None,
            };
            let message = report::approval_message(&request, job.as_ref());
            let rendered = edge.chat.render(&message).await;
            json!({
                "update": { "message": rendered.message, "props": rendered.props },
                "skip_slack_parsing": true,
            })
        }
        Ok(v) => private(edge, &v.reply).await,
        Err(e) => {
            tracing::error!(error = %e, "vote not recorded");
            private(edge, &format!("{e} Nothing was decided; try again.")).await
        }
    }
}

/// An answer for the clicker alone.
async fn private(edge: &Edge, text: &str) -> Value {
    let rendered = edge.chat.render(&Message::text(text)).await;
    json!({ "ephemeral_text": rendered.message, "skip_slack_parsing": true })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_request_is_read() {
        // The example request in Mattermost's developer documentation
        // (site/content/integrate/plugins/interactive-messages/_index.md, "Context"), with
        // our context in place of its example's and the fields its server code also sends
        // (PostActionIntegrationRequest: user_name, trigger_id, type).
        let click: Click = serde_json::from_value(json!({
            "user_id": "rd49ehbqyjytddasoownkuqrxe",
            "post_id": "gqrnh3675jfxzftnjyjfe4udeh",
            "channel_id": "j6j53p28k6urx15fpcgsr20psq",
            "team_id": "5xxzt146eax4tul69409opqjlf",
            "user_name": "alice",
            "trigger_id": "a-trigger",
            "type": "button",
            "context": { "pantheon": "1.abc.def" }
        }))
        .unwrap();
        assert_eq!(click.user_id, "rd49ehbqyjytddasoownkuqrxe");
        assert_eq!(click.context[CONTEXT_KEY], "1.abc.def");
        assert!(is_mattermost_id(&click.post_id));
    }
}
