//! Slack's requests: slash commands (and, in later modules, interactions and events).
//!
//! The signature is checked inside an extractor over the raw bytes, so a handler never holds an
//! unverified body.

use axum::{
    Json,
    body::Bytes,
    extract::{FromRequest, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use crate::http::AppState;
use crate::{
    dispatch::{self, Ack, Invocation, ReplyTarget},
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

pub fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// The fields of a slash-command form that we use.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SlashCommand {
    pub command: String,
    pub text: String,
    pub user_id: String,
    pub user_name: String,
    pub channel_id: String,
    pub team_id: String,
    pub response_url: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlashForm {
    /// Slack checking our certificate: answer 200 and do nothing.
    SslCheck,
    Command(SlashCommand),
}

impl SlashForm {
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        if std::str::from_utf8(body).is_err() {
            return Err("the body is not UTF-8 text".into());
        }
        let mut cmd = SlashCommand::default();
        let mut ssl_check = false;
        let mut seen_command = false;
        let mut seen_user = false;
        let mut seen_response_url = false;
        for (key, value) in form_urlencoded::parse(body) {
            // Nothing downstream (the audit trail, Postgres, replies) wants a NUL.
            let value = if value.contains('\0') {
                crate::domain::redact::without_nul(&value)
                    .into_owned()
                    .into()
            } else {
                value
            };
            match &*key {
                "ssl_check" => ssl_check = value == "1",
                "command" => {
                    cmd.command = value.into_owned();
                    seen_command = true;
                }
                "text" => cmd.text = value.into_owned(),
                "user_id" => {
                    cmd.user_id = value.into_owned();
                    seen_user = true;
                }
                "user_name" => cmd.user_name = value.into_owned(),
                "channel_id" => cmd.channel_id = value.into_owned(),
                "team_id" => cmd.team_id = value.into_owned(),
                "response_url" => {
                    cmd.response_url = value.into_owned();
                    seen_response_url = true;
                }
                _ => {}
            }
        }
        if ssl_check && !seen_command {
            return Ok(SlashForm::SslCheck);
        }
        let missing: Vec<&str> = [
            ("command", seen_command),
            ("user_id", seen_user),
            ("response_url", seen_response_url),
        ]
        .into_iter()
        .filter(|(_, seen)| !seen)
        .map(|(name, _)| name)
        .collect();
        if !missing.is_empty() {
            return Err(format!(
                "not a slash command: missing {}",
                missing.join(", ")
            ));
        }
        if cmd.user_id.is_empty() {
            return Err("not a slash command: empty user_id".into());
        }
        Ok(SlashForm::Command(cmd))
    }
}

pub async fn commands(State(state): State<AppState>, request: VerifiedSlack) -> Response {
    if let Err(e) = request.require_form() {
        return e.into_response();
    }
    let body = request.body.clone();
    let cmd = match SlashForm::parse(&body) {
        Ok(SlashForm::SslCheck) => return StatusCode::OK.into_response(),
        Ok(SlashForm::Command(cmd)) => cmd,
        Err(why) => return ApiError::BadRequest(why).into_response(),
    };
    let correlation_id = dispatch::new_correlation_id();
    let invocation = Invocation {
        correlation_id: correlation_id.clone(),
        user_id: cmd.user_id,
        user_name: cmd.user_name,
        channel_id: cmd.channel_id,
        team_id: cmd.team_id,
        slash: if cmd.command.is_empty() {
            state.services.slash.clone()
        } else {
            cmd.command
        },
        text: cmd.text,
        reply: ReplyTarget::ResponseUrl(cmd.response_url),
        replay_key: Some(request.replay_key()),
    };
    let ack = dispatch::dispatch(&state.services, &state.registry, invocation).await;
    let mut response = match ack {
        Ack::Message(message) => Json(super::blocks::reply(&message)).into_response(),
        Ack::Echo => Json(serde_json::json!({"response_type": "in_channel"})).into_response(),
        Ack::Empty => StatusCode::OK.into_response(),
    };
    if let Ok(value) = HeaderValue::from_str(&correlation_id) {
        response.headers_mut().insert("x-correlation-id", value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_docs_payloads_parse() {
        let body = "token=gIkuvaNzQIHg97ATvDxqgjtO&team_id=T0001&team_domain=example&enterprise_id=E0001&enterprise_name=Globular%20Construct%20Inc&channel_id=C2147483705&channel_name=test&user_id=U2147483697&user_name=Steve&command=/weather&text=94070&response_url=https://hooks.slack.com/commands/1234/5678&trigger_id=13345224609.738474920.8088930838d88f008e0&api_app_id=A123456";
        match SlashForm::parse(body.as_bytes()).unwrap() {
            SlashForm::Command(c) => {
                assert_eq!(c.command, "/weather");
                assert_eq!(c.text, "94070");
                assert_eq!(c.user_id, "U2147483697");
                assert_eq!(c.channel_id, "C2147483705");
                assert_eq!(c.response_url, "https://hooks.slack.com/commands/1234/5678");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ssl_check_and_bad_forms() {
        assert_eq!(
            SlashForm::parse(b"token=random&ssl_check=1").unwrap(),
            SlashForm::SslCheck
        );
        let err = SlashForm::parse(b"{\"json\": true}").unwrap_err();
        assert!(
            err.contains("missing command, user_id, response_url"),
            "{err}"
        );
        assert!(SlashForm::parse(b"\xff\xfe").is_err());
        assert!(SlashForm::parse(b"command=%2Fops&user_id=&response_url=x").is_err());
    }
}
