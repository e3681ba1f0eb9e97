//! `POST /slack/interactions`: button clicks on approval messages, submitted forms (modals)
//! and shortcuts.
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
use tracing::Instrument;

use super::{blocks::UnknownAction, commands::VerifiedSlack, request::Request};
use crate::http::AppState;
use crate::{
    audit::Claimed,
    chat::{Action, Message, ResponseUrl},
    dispatch::new_correlation_id,
    domain::approval::Decision,
    domain::audit::{AuditEntry, Outcome, Transport},
    error::ApiError,
    runbooks::{self, jobs::report},
    services::Services,
};

pub async fn interactions(State(state): State<AppState>, request: VerifiedSlack) -> Response {
    if let Err(e) = request.require_form() {
        return e.into_response();
    }
    let parsed = match Request::interaction_form(&request.body) {
        Ok(parsed) => parsed,
        Err(why) => return ApiError::BadRequest(why).into_response(),
    };
    match handle(
        &state.services,
        &state.registry,
        parsed,
        request.replay_key(),
        Transport::Http,
    )
    .await
    {
        Handled::Done => StatusCode::OK.into_response(),
        Handled::Answer(body) => axum::Json(body).into_response(),
        Handled::Replay => (StatusCode::UNAUTHORIZED, "replayed request\n").into_response(),
        Handled::NotStored(why) => ApiError::Unavailable(why).into_response(),
    }
}

/// What became of an interaction.
#[derive(Debug)]
pub enum Handled {
    /// Claimed and acted on (or left alone, when it is not one of ours).
    Done,
    /// Claimed and acted on, answered with this (a submitted form's errors, or its next view).
    Answer(serde_json::Value),
    /// Its key was claimed before: not acted on again.
    Replay,
    /// Its claim could not be stored, so nothing was done: why.
    NotStored(String),
}

/// One interaction, however it arrived: claimed on `replay_key` (a second delivery is not acted
/// on, on any replica), then each vote decided before this returns and what people see of it
/// posted in the background.
pub async fn handle(
    services: &std::sync::Arc<Services>,
    registry: &std::sync::Arc<crate::command::Registry>,
    parsed: Request,
    replay_key: String,
    via: Transport,
) -> Handled {
    let clicks = match parsed {
        Request::Clicks(clicks) => Ok(clicks),
        other => Err(other),
    };
    let user = match &clicks {
        Ok(clicks) => clicks.user.clone(),
        Err(other) => other.user().unwrap_or_default().to_owned(),
    };
    // Slack never sends a click twice: the same signature again is a replay, refused on every
    // replica and across restarts, and audited.
    let refused = AuditEntry::new(
        &new_correlation_id(),
        &user,
        "interaction",
        Outcome::Refused,
    )
    .detail(crate::dispatch::replay_detail(via));
    match services
        .audit
        .record_claimed(Some(replay_key), Vec::new(), vec![refused])
        .await
    {
        Ok(Claimed::First) => {}
        Ok(Claimed::Replay) => {
            crate::telemetry::record_signature_failure("slack", "replay");
            tracing::warn!("replayed interaction refused");
            return Handled::Replay;
        }
        Err(e) => return Handled::NotStored(format!("interaction not recorded: {e}")),
    }
    let clicks = match clicks {
        Ok(clicks) => clicks,
        Err(Request::Submission(submission)) => {
            return match submitted(services, registry, submission, via).await {
                Some(body) => Handled::Answer(body),
                None => Handled::Done,
            };
        }
        Err(Request::Shortcut(shortcut)) => {
            used_shortcut(services, shortcut).await;
            return Handled::Done;
        }
        Err(other) => {
            tracing::info!(request = ?other, "interaction ignored");
            return Handled::Done;
        }
    };
    let services = services.clone();
    // Checked once, here; a refused one is never posted to.
    let reply =
        clicks
            .response_url
            .as_deref()
            .and_then(|raw| match services.chat.response_url(raw) {
                Ok(url) => Some(url),
                Err(why) => {
                    tracing::warn!(reason = %why, "interaction response_url refused");
                    None
                }
            });
    let from = Clicker {
        user: clicks.user.clone(),
        channel: clicks.channel.clone(),
        reply,
    };
    let channel = &from.channel;
    for clicked in &clicks.actions {
        let (id, decision) = match clicked {
            Ok(Action::Vote { request, decision }) => (*request, *decision),
            Ok(Action::ShowLog { job }) => {
                answer_log(&services, &from, Some(*job));
                continue;
            }
            Ok(Action::Comment { request }) => {
                open_comment(&services, &from, *request, clicks.trigger_id.as_deref()).await;
                continue;
            }
            Err(UnknownAction::Value { vote: None }) => {
                answer_log(&services, &from, None);
                continue;
            }
            Err(UnknownAction::Value {
                vote: Some(decision),
            }) => {
                refuse_vote_without_id(&services, &from, *decision).await;
                continue;
            }
            Err(UnknownAction::Id(other)) => {
                tracing::info!(action_id = %other, "unknown action ignored");
                continue;
            }
        };
        let correlation_id = new_correlation_id();
        let span = tracing::error_span!("interaction", correlation_id = %correlation_id, user = %from.user, channel = %channel);
        let voted = services
            .runbooks
            .vote(runbooks::Cast {
                voter: &from.user,
                channel,
                correlation_id: &correlation_id,
                request: id,
                decision,
                comment: None,
                via,
            })
            .instrument(span.clone())
            .await;
        let response_url = from.reply.clone();
        let services = services.clone();
        tokio::spawn(
            async move {
                match voted {
                    Ok(v) if v.changed => {
                        if services.chat.configured()
                            && v.request.as_ref().is_some_and(|r| r.message_ref.is_some())
                        {
                            report::refresh_approval(&services.runbooks, id).await;
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
    Handled::Done
}

/// The callback ids of our shortcuts (in the app manifest).
pub const RUN_SHORTCUT: &str = "pantheon_run_runbook";
pub const PAGE_SHORTCUT: &str = "pantheon_page_oncall";

/// A submitted form: its state unsealed (a changed, foreign or expired one is refused and
/// audited), then done; the answer to Slack, if not just closing the form.
async fn submitted(
    services: &std::sync::Arc<Services>,
    registry: &std::sync::Arc<crate::command::Registry>,
    submission: super::request::Submission,
    via: Transport,
) -> Option<serde_json::Value> {
    let purpose = if submission.callback_id == super::views::CALLBACK_ID {
        services
            .links
            .unseal(
                &submission.sealed,
                &submission.user,
                time::OffsetDateTime::now_utc(),
            )
            .map_err(|e| e.to_string())
    } else {
        Err(format!(
            "the form's callback_id `{}` is not one of ours",
            submission.callback_id
        ))
    };
    let purpose = match purpose {
        Ok(purpose) => purpose,
        Err(why) => {
            refuse_form(services, &submission.user, &why).await;
            return Some(super::views::update(&crate::ask::notice(
                "Not done",
                &format!("This form cannot be used: {why}. Nothing was done."),
            )));
        }
    };
    let by = crate::forms::Submitter {
        user: submission.user,
        user_name: submission.user_name,
        team_id: submission.team_id,
        via,
    };
    match crate::forms::submit(services, registry, &by, purpose, submission.values).await {
        crate::forms::Submitted::Done => None,
        crate::forms::Submitted::Errors(errors) => Some(super::views::errors(&errors)),
        crate::forms::Submitted::Next(form) => Some(super::views::update(&form)),
    }
}

/// A refused form or shortcut, on the audit trail.
async fn refuse_form(services: &Services, user: &str, why: &str) {
    tracing::warn!(reason = %why, "form refused");
    let entry = AuditEntry::new(&new_correlation_id(), user, "form", Outcome::Refused)
        .detail(format!("refused: {why}"));
    if let Err(e) = services.audit.record(vec![entry]).await {
        tracing::error!(error = %e, "refused form not audited");
    }
}

/// A shortcut: its form opened (after the check every request passes), or a notice of why not.
async fn used_shortcut(services: &std::sync::Arc<Services>, shortcut: super::request::Shortcut) {
    let form = if let Err(text) = crate::forms::may_act(services, &shortcut.user).await {
        refuse_form(services, &shortcut.user, &text).await;
        crate::ask::notice("Not allowed", &text)
    } else {
        match (shortcut.callback_id.as_str(), &shortcut.message) {
            (RUN_SHORTCUT, _) => crate::ask::pick_runbook_form(services, &shortcut.user)
                .unwrap_or_else(|| {
                    crate::ask::notice("Run a runbook", "There are no runbooks you may run.")
                }),
            (PAGE_SHORTCUT, Some(message)) if services.vendors.pagerduty().is_some() => {
                let link = if shortcut.team_domain.is_empty() {
                    String::new()
                } else {
                    format!(
                        "https://{}.slack.com/archives/{}/p{}",
                        shortcut.team_domain,
                        message.channel,
                        message.ts.replace('.', "")
                    )
                };
                crate::ask::page_form(
                    services,
                    &shortcut.user,
                    &message.channel,
                    &message.text,
                    &link,
                )
            }
            (PAGE_SHORTCUT, _) => crate::ask::notice(
                "Page on-call",
                "PagerDuty is not configured here (PAGERDUTY_API_TOKEN), so nobody can be paged from chat.",
            ),
            (other, _) => {
                tracing::info!(callback_id = %other, "unknown shortcut ignored");
                return;
            }
        }
    };
    if let Err(why) = super::commands::open_form(services, &shortcut.trigger_id, &form).await {
        tracing::warn!(reason = %why, "shortcut form not opened");
    }
}

/// "With comment…": the comment form, or a private answer saying why not.
async fn open_comment(
    services: &std::sync::Arc<Services>,
    from: &Clicker,
    request: i64,
    trigger: Option<&str>,
) {
    let opened = match (services.chat.configured(), trigger) {
        (true, Some(trigger)) => {
            match crate::ask::comment_form(services, &from.user, request, &from.channel).await {
                Ok(form) => super::commands::open_form(services, trigger, &form)
                    .await
                    .map_err(|why| format!("The form could not be opened ({why}); use the buttons or `{} approve {request}`.", services.slash)),
                Err(text) => Err(text),
            }
        }
        _ => Err(format!(
            "Comments need Pantheon's bot token (SLACK_BOT_TOKEN) to open a form; use the buttons, or `{} approve {request}`.",
            services.slash
        )),
    };
    if let (Err(text), Some(url)) = (opened, from.reply.clone()) {
        let services = services.clone();
        tokio::spawn(async move { respond(&services, &url, &ephemeral(&text)).await });
    }
}

/// Who clicked, where, and where to answer them (checked).
struct Clicker {
    user: String,
    channel: String,
    reply: Option<ResponseUrl>,
}

/// Answer a click on a job's "Log" button, in the background.
fn answer_log(services: &std::sync::Arc<Services>, from: &Clicker, job: Option<i64>) {
    let Some(url) = from.reply.clone() else {
        return;
    };
    let services = services.clone();
    let user = from.user.clone();
    tokio::spawn(async move {
        let answer = crate::forms::log_link(&services, &user, job).await;
        respond(&services, &url, &ephemeral(&answer)).await;
    });
}

/// A vote button whose value names no request (not one we rendered): refused, audited as the
/// vote it tried to be, and answered.
async fn refuse_vote_without_id(
    services: &std::sync::Arc<Services>,
    from: &Clicker,
    decision: Decision,
) {
    let text = "That button does not name an approval request; nothing was decided.";
    let entry = AuditEntry::new(
        &new_correlation_id(),
        &from.user,
        &format!("approval.{}", decision.as_str()),
        Outcome::Refused,
    )
    .channel(&from.channel)
    .detail(format!("refused: {text}"));
    if let Err(e) = services.audit.record(vec![entry]).await {
        tracing::error!(error = %e, "refused vote not audited");
    }
    if let Some(url) = from.reply.clone() {
        let services = services.clone();
        tokio::spawn(async move { respond(&services, &url, &ephemeral(text)).await });
    }
}

fn ephemeral(text: &str) -> Message {
    let mut m = Message::text(text);
    m.replace = Some(false);
    m
}

async fn respond(services: &Services, url: &ResponseUrl, message: &Message) {
    if let Err(e) = services.chat.reply(url, message).await {
        tracing::warn!(error = %e, "interaction reply not delivered");
    }
}
