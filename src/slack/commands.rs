//! Slack's requests: slash commands (and, in later modules, interactions and events).
//!
//! The signature is checked inside an extractor over the raw bytes, so a handler never holds an
//! unverified body.

use axum::{
    body::Bytes,
    extract::{FromRequest, Request, State},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use super::request::Request as SlackRequest;
use crate::http::AppState;
use crate::{
    dispatch::{self, Ack, Invocation, ReplyTarget, Transport},
    error::ApiError,
    signature,
};

/// A request whose Slack signature has been verified: its body, whether it says it is a form,
/// and the signature (for replay checks).
pub struct VerifiedSlack {
    pub body: Bytes,
    pub form: bool,
    pub signature: HeaderValue,
    /// The signed `X-Slack-Request-Timestamp` (unix seconds).
    pub timestamp: i64,
}

impl FromRequest<AppState> for VerifiedSlack {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        // Only what the check needs is kept from the headers (cloning a HeaderValue is cheap).
        let headers = req.headers();
        let timestamp = headers.get("x-slack-request-timestamp").cloned();
        let signature = headers.get("x-slack-signature").cloned();
        let form = is_form(headers);
        let body = Bytes::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        signature::verify_slack(
            &state.slack_key,
            timestamp.as_ref().map(HeaderValue::as_bytes),
            signature.as_ref().map(HeaderValue::as_bytes),
            &body,
            now,
        )
        .map_err(|e| {
            crate::telemetry::record_signature_failure("slack", reason_label(e));
            ApiError::from(e).into_response()
        })?;
        let timestamp = timestamp
            .as_ref()
            .and_then(|t| t.to_str().ok())
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(now);
        Ok(Self {
            body,
            form,
            signature: signature.unwrap_or_else(|| HeaderValue::from_static("")),
            timestamp,
        })
    }
}

impl VerifiedSlack {
    /// What makes this request unique for the replay check: its signature (hex case folded,
    /// since verification accepts either).
    pub fn replay_key(&self) -> String {
        crate::store::claim_key(self.timestamp, self.signature.to_str().unwrap_or_default())
    }

    /// 400 unless the request said it is a form.
    pub fn require_form(&self) -> Result<(), ApiError> {
        if self.form {
            Ok(())
        } else {
            Err(ApiError::BadRequest(
                "expected Content-Type application/x-www-form-urlencoded".into(),
            ))
        }
    }
}

fn reason_label(e: signature::SignatureError) -> &'static str {
    use signature::SignatureError::*;
    match e {
        MissingSignature | MissingTimestamp => "missing",
        MalformedTimestamp | MalformedSignature => "malformed",
        StaleTimestamp => "stale",
        Mismatch => "mismatch",
    }
}

pub use crate::http::is_form;

pub async fn commands(State(state): State<AppState>, request: VerifiedSlack) -> Response {
    if let Err(e) = request.require_form() {
        return e.into_response();
    }
    let cmd = match SlackRequest::command_form(&request.body) {
        Ok(SlackRequest::Command(cmd)) => cmd,
        Ok(_) => return StatusCode::OK.into_response(),
        Err(why) => return ApiError::BadRequest(why).into_response(),
    };
    let (correlation_id, body) = acknowledge(
        &state.services,
        &state.registry,
        cmd,
        request.replay_key(),
        Transport::Http,
    )
    .await;
    let mut response = match body {
        Some(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        None => StatusCode::OK.into_response(),
    };
    if let Ok(value) = HeaderValue::from_str(&correlation_id) {
        response.headers_mut().insert("x-correlation-id", value);
    }
    response
}

/// A slash command, however it arrived: dispatched as far as its acknowledgement, claimed on
/// `replay_key` (a second delivery with it is not run again). Its correlation id and Slack's
/// answer to it, as JSON: the body of the HTTP response, or the payload of the Socket Mode ack
/// (None: nothing to show; the answer, if any, follows through the response URL).
pub async fn acknowledge(
    services: &std::sync::Arc<crate::services::Services>,
    registry: &std::sync::Arc<crate::command::Registry>,
    cmd: super::request::SlashCommand,
    replay_key: String,
    via: Transport,
) -> (String, Option<Vec<u8>>) {
    let correlation_id = dispatch::new_correlation_id();
    let invocation = Invocation {
        correlation_id: correlation_id.clone(),
        user_id: cmd.user_id,
        user_name: cmd.user_name,
        channel_id: cmd.channel_id,
        team_id: cmd.team_id,
        slash: if cmd.command.is_empty() {
            services.slash.clone()
        } else {
            cmd.command
        },
        text: cmd.text,
        reply: match services.chat.response_url(&cmd.response_url) {
            Ok(url) => ReplyTarget::ResponseUrl(url),
            Err(why) => ReplyTarget::RefusedUrl(why),
        },
        replay_key: Some(replay_key),
        transport: via,
        trigger: Some(cmd.trigger_id).filter(|t| !t.is_empty()),
    };
    let user = invocation.user_id.clone();
    let ack = dispatch::dispatch(services, registry, invocation).await;
    let answer =
        |message: &crate::chat::Message| match serde_json::to_vec(&super::blocks::reply(message)) {
            Ok(body) => Some(body),
            Err(e) => {
                tracing::error!(error = %e, "answer not serialized");
                None
            }
        };
    let body = match ack {
        Ack::Message(message) => answer(&message),
        Ack::Echo => Some(br#"{"response_type":"in_channel"}"#.to_vec()),
        Ack::Empty => None,
        Ack::Form {
            trigger,
            form,
            fallback,
        } => match open_form(services, &trigger, &form).await {
            Ok(()) => None,
            Err(why) => {
                tracing::warn!(reason = %why, "form not opened; answered with the usage line");
                services.audit.try_submit(vec![
                    crate::domain::audit::AuditEntry::new(
                        &correlation_id,
                        &user,
                        "command",
                        crate::domain::audit::Outcome::Failed,
                    )
                    .detail(format!(
                        "form not opened ({why}); answered with the usage line"
                    )),
                ]);
                answer(&fallback)
            }
        },
        Ack::Replay => match via {
            Transport::Http | Transport::Console => answer(&dispatch::replay_message()),
            // Slack delivering again what it thinks was not acknowledged: the first delivery
            // ran (and answers through the response URL); this one is only acknowledged.
            Transport::Socket => None,
        },
    };
    (correlation_id, body)
}

/// How long opening a form may take: Slack's `trigger_id` lives 3 s from the command, and the
/// acknowledgement must be sent within them either way.
const FORM_PATIENCE: std::time::Duration = std::time::Duration::from_millis(2000);

/// Open `form` on Slack (`views.open`), or say why not (`expired_trigger_id`, a timeout).
pub async fn open_form(
    services: &crate::services::Services,
    trigger: &str,
    form: &crate::domain::form::Form,
) -> Result<(), String> {
    match tokio::time::timeout(FORM_PATIENCE, services.chat.open_form(trigger, form)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "Slack did not answer within {} ms",
            FORM_PATIENCE.as_millis()
        )),
    }
}
