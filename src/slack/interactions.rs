//! `POST /slack/interactions`: button clicks on approval messages.
//!
//! Verified like slash commands (the same extractor), then the `payload` field is parsed and
//! the request's signature claimed (a replay is refused).
//! A vote is one database transaction decided before we answer; what people see (the updated
//! message, or an ephemeral "you cannot approve your own request") follows in the background.

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use tracing::Instrument;

use super::{
    blocks::{UnknownAction, parse_action},
    commands::VerifiedSlack,
};
use crate::http::AppState;
use crate::{
    audit::Claimed,
    chat::{Action, Message},
    dispatch::new_correlation_id,
    domain::approval::Decision,
    domain::audit::{AuditEntry, Outcome},
    error::ApiError,
    jobs::report,
    runbooks,
    services::Services,
};

#[derive(Debug, Deserialize)]
struct Payload {
    #[serde(rename = "type")]
    kind: String,
    user: User,
    #[serde(default)]
    actions: Vec<Clicked>,
    #[serde(default)]
    response_url: Option<String>,
    #[serde(default)]
    channel: Option<Channel>,
    #[serde(default)]
    container: Option<Container>,
}

#[derive(Debug, Deserialize)]
struct User {
    id: String,
}

#[derive(Debug, Deserialize)]
struct Clicked {
    action_id: String,
    #[serde(default)]
    value: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Channel {
    id: String,
}

#[derive(Debug, Deserialize)]
struct Container {
    #[serde(default)]
    channel_id: Option<String>,
}

fn parse(body: &[u8]) -> Result<Payload, String> {
    let raw = form_urlencoded::parse(body)
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| "no `payload` field".to_owned())?;
    // Its strings reach the database (voter, channel): no NUL, which Postgres cannot store.
    serde_json::from_str::<serde_json::Value>(&raw)
        .map(crate::domain::redact::json_without_nul)
        .and_then(serde_json::from_value)
        .map_err(|e| format!("`payload` is not an interaction: {e}"))
}

pub async fn interactions(State(state): State<AppState>, request: VerifiedSlack) -> Response {
    if let Err(e) = request.require_form() {
        return e.into_response();
    }
    let payload = match parse(&request.body) {
        Ok(p) => p,
        Err(why) => return ApiError::BadRequest(why).into_response(),
    };
    // Slack never sends a click twice: the same signature again is a replay, refused on every
    // replica and across restarts, and audited.
    let refused = AuditEntry::new(
        &new_correlation_id(),
        &payload.user.id,
        "interaction",
        Outcome::Refused,
    )
    .detail(crate::dispatch::REPLAY_DETAIL);
    match state
        .services
        .audit
        .record_claimed(Some(request.replay_key()), Vec::new(), vec![refused])
        .await
    {
        Ok(Claimed::First) => {}
        Ok(Claimed::Replay) => {
            crate::telemetry::record_signature_failure("slack", "replay");
            tracing::warn!("replayed interaction refused");
            return (StatusCode::UNAUTHORIZED, "replayed request\n").into_response();
        }
        Err(e) => {
            return ApiError::Unavailable(format!("interaction not recorded: {e}")).into_response();
        }
    }
    if payload.kind != "block_actions" {
        tracing::info!(kind = %payload.kind, "interaction ignored");
        return StatusCode::OK.into_response();
    }
    let services = state.services.clone();
    let channel = payload
        .channel
        .as_ref()
        .map(|c| c.id.clone())
        .or_else(|| {
            payload
                .container
                .as_ref()
                .and_then(|c| c.channel_id.clone())
        })
        .unwrap_or_default();
    for clicked in &payload.actions {
        let (id, decision) = match parse_action(&clicked.action_id, clicked.value.as_deref()) {
            Ok(Action::Vote { request, decision }) => (request, decision),
            Ok(Action::ShowLog { job }) => {
                answer_log(&services, &payload, Some(job));
                continue;
            }
            Err(UnknownAction::Value { vote: None }) => {
                answer_log(&services, &payload, None);
                continue;
            }
            Err(UnknownAction::Value {
                vote: Some(decision),
            }) => {
                refuse_vote_without_id(&services, &payload, &channel, decision).await;
                continue;
            }
            Err(UnknownAction::Id(other)) => {
                tracing::info!(action_id = %other, "unknown action ignored");
                continue;
            }
        };
        let correlation_id = new_correlation_id();
        let span = tracing::error_span!("interaction", correlation_id = %correlation_id, user = %payload.user.id, channel = %channel);
        let voted = runbooks::vote(
            &services,
            &payload.user.id,
            &channel,
            &correlation_id,
            id,
            decision,
        )
        .instrument(span.clone())
        .await;
        let response_url = payload.response_url.clone();
        let services = services.clone();
        tokio::spawn(
            async move {
                match voted {
                    Ok(v) if v.changed => {
                        if services.chat.configured()
                            && v.request.as_ref().is_some_and(|r| r.message_ref.is_some())
                        {
                            report::refresh_approval(&services, id).await;
                        } else if let (Some(url), Some(request)) = (response_url, v.request) {
                            // No bot token: replace the message through the interaction's URL.
                            let job = match request.job_id {
                                Some(j) => services.store.job(j).await.ok().flatten(),
                                None => None,
                            };
                            let message = report::approval_message(&request, job.as_ref())
                                .replacing_original();
                            respond(&services, &url, &message).await;
                        }
                    }
                    Ok(v) => {
                        if let Some(url) = response_url {
                            respond(&services, &url, &ephemeral(&v.reply)).await;
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "vote not recorded");
                        if let Some(url) = response_url {
                            respond(
                                &services,
                                &url,
                                &ephemeral(&format!("{e} Nothing was decided; try again.")),
                            )
                            .await;
                        }
                    }
                }
            }
            .instrument(span),
        );
    }
    StatusCode::OK.into_response()
}

/// Answer a click on a job's "Log" button, in the background.
fn answer_log(services: &std::sync::Arc<Services>, payload: &Payload, job: Option<i64>) {
    let Some(url) = payload.response_url.clone() else {
        return;
    };
    let services = services.clone();
    let user = payload.user.id.clone();
    tokio::spawn(async move {
        let answer = log_link(&services, &user, job).await;
        respond(&services, &url, &ephemeral(&answer)).await;
    });
}

/// A vote button whose value names no request (not one we rendered): refused, audited as the
/// vote it tried to be, and answered.
async fn refuse_vote_without_id(
    services: &std::sync::Arc<Services>,
    payload: &Payload,
    channel: &str,
    decision: Decision,
) {
    let text = "That button does not name an approval request; nothing was decided.";
    let entry = AuditEntry::new(
        &new_correlation_id(),
        &payload.user.id,
        &format!("approval.{}", decision.as_str()),
        Outcome::Refused,
    )
    .channel(channel)
    .detail(format!("refused: {text}"));
    if let Err(e) = services.audit.record(vec![entry]).await {
        tracing::error!(error = %e, "refused vote not audited");
    }
    if let Some(url) = payload.response_url.clone() {
        let services = services.clone();
        tokio::spawn(async move { respond(&services, &url, &ephemeral(text)).await });
    }
}

/// The answer to a click on a job's "Log" button: a link to its page for the clicker alone, if
/// they may see the job.
async fn log_link(services: &Services, user: &str, id: Option<i64>) -> String {
    let job = match id {
        Some(id) => services.store.job(id).await,
        None => Ok(None),
    };
    match job {
        Ok(Some(job)) => match runbooks::may_see_job(services, user, &job) {
            Ok(()) => {
                let url = services
                    .links
                    .job_url(job.id, user, time::OffsetDateTime::now_utc());
                format!(
                    "{} #{}: {} (this link is yours alone; do not share it).",
                    crate::chat::escape(&job.runbook),
                    job.id,
                    crate::chat::link(&url, "job page with the full log")
                )
            }
            Err(refusal) => runbooks::hidden_job_message(&job, &refusal),
        },
        Ok(None) => "There is no such job.".to_owned(),
        Err(e) => {
            tracing::error!(error = %e, "job lookup failed");
            "The job could not be read just now; try again shortly.".to_owned()
        }
    }
}

fn ephemeral(text: &str) -> Message {
    let mut m = Message::text(text);
    m.replace = Some(false);
    m
}

async fn respond(services: &Services, raw_url: &str, message: &Message) {
    match services.chat.response_url(raw_url) {
        Ok(url) => {
            if let Err(e) = services.chat.reply(&url, message).await {
                tracing::warn!(error = %e, "interaction reply not delivered");
            }
        }
        Err(why) => tracing::warn!(reason = %why, "interaction response_url refused"),
    }
}
