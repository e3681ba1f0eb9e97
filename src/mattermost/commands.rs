//! `POST /mattermost/commands`: Mattermost's outgoing slash command, a form with `token`,
//! `team_id`, `channel_id`, `user_id`, `user_name`, `command`, `text`, `response_url` and
//! `trigger_id`. The token is the only proof it came from our Mattermost: it is checked in
//! constant time against every configured one before anything else is read. The command is
//! then dispatched as Slack's are, claimed on its `trigger_id` (a copy is refused), and
//! answered in the response (`CommandResponse` JSON) or later through the `response_url`.

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};

use super::Edge;
use crate::{
    config::is_mattermost_id,
    dispatch::{self, Ack, Invocation, ReplyTarget, Transport},
    error::ApiError,
    http::AppState,
};

/// The fields of the form we read.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SlashCommand {
    pub token: String,
    pub team_id: String,
    pub channel_id: String,
    pub user_id: String,
    pub user_name: String,
    pub command: String,
    pub text: String,
    pub response_url: String,
    pub trigger_id: String,
}

impl SlashCommand {
    pub fn parse(body: &[u8]) -> Self {
        let mut cmd = Self::default();
        for (key, value) in form_urlencoded::parse(body) {
            let slot = match &*key {
                "token" => &mut cmd.token,
                "team_id" => &mut cmd.team_id,
                "channel_id" => &mut cmd.channel_id,
                "user_id" => &mut cmd.user_id,
                "user_name" => &mut cmd.user_name,
                "command" => &mut cmd.command,
                "text" => &mut cmd.text,
                "response_url" => &mut cmd.response_url,
                "trigger_id" => &mut cmd.trigger_id,
                _ => continue,
            };
            if slot.is_empty() {
                *slot = value.into_owned();
            }
        }
        cmd
    }
}

pub async fn commands(
    edge: Arc<Edge>,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let cmd = SlashCommand::parse(&body);
    if !edge.token_ok(&cmd.token) {
        let reason = if cmd.token.is_empty() {
            "missing"
        } else {
            "mismatch"
        };
        crate::telemetry::record_signature_failure("mattermost", reason);
        tracing::warn!(reason, "Mattermost command refused: bad token");
        return (StatusCode::UNAUTHORIZED, "invalid token\n").into_response();
    }
    if !crate::http::is_form(&headers) {
        return ApiError::BadRequest(
            "expected Content-Type application/x-www-form-urlencoded".into(),
        )
        .into_response();
    }
    if !is_mattermost_id(&cmd.user_id) || !is_mattermost_id(&cmd.channel_id) {
        return ApiError::BadRequest("user_id and channel_id must be Mattermost ids".into())
            .into_response();
    }
    if cmd.trigger_id.is_empty() {
        return ApiError::BadRequest("no trigger_id (Mattermost 5.10 or later sends one)".into())
            .into_response();
    }
    edge.chat.saw(&cmd.user_id, &cmd.user_name);
    let correlation_id = dispatch::new_correlation_id();
    let slash = if cmd.command.is_empty() {
        edge.slash.clone()
    } else {
        cmd.command.clone()
    };
    let invocation = Invocation {
        correlation_id: correlation_id.clone(),
        user_id: cmd.user_id.clone(),
        user_name: cmd.user_name.clone(),
        channel_id: cmd.channel_id.clone(),
        team_id: cmd.team_id.clone(),
        slash: slash.clone(),
        text: cmd.text.clone(),
        reply: match crate::chat::ChatPort::response_url(&*edge.chat, &cmd.response_url) {
            Ok(url) => ReplyTarget::ResponseUrl(url),
            Err(why) => ReplyTarget::RefusedUrl(why),
        },
        replay_key: Some(super::claim_key(&cmd.trigger_id)),
        transport: Transport::Http,
        // Forms are Slack's modals; Mattermost gets the usage line instead.
        trigger: None,
    };
    let ack = dispatch::dispatch(&state.services, &state.registry, invocation).await;
    let body = match ack {
        Ack::Message(message)
        | Ack::Form {
            fallback: message, ..
        } => Some(edge.chat.command_response(&message).await),
        Ack::Echo => Some(serde_json::json!({
            "response_type": "in_channel",
            "text": super::render::code(&format!("{slash} {}", cmd.text)),
            "skip_slack_parsing": true,
        })),
        Ack::Empty => None,
        Ack::Replay => Some(
            edge.chat
                .command_response(&dispatch::replay_message())
                .await,
        ),
    };
    let mut response = match body {
        Some(body) => axum::Json(body).into_response(),
        None => StatusCode::OK.into_response(),
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
    fn the_documented_form_is_read() {
        // The example request in Mattermost's developer documentation
        // (site/content/integrate/slash-commands/custom/_index.md, step 4).
        let body = concat!(
            "channel_id=fukxanjgjbnp7ng383at53k1sy&",
            "channel_name=town-square&",
            "command=%2Fweather&",
            "response_url=http%3A%2F%2Flocalhost%3A8066%2Fhooks%2Fcommands%2Fi11f6nnfgfyk8eg56x9omc6dpa&",
            "team_domain=team-awesome&",
            "team_id=wx4zz8t4ttgmtxqiwfohijayzc&",
            "text=toronto+week&",
            "token=qzgakf1nx3yt9dr4n8585ihbxy&",
            "trigger_id=ZWZ5ZjRndzR4YmJxOHJlZWh4MXpkaHozbnI6ZXJqNnFjazNyZmd0dWpzODZ3NXI2cmNremg6MTY2MjA0MTY5Njg5NjpNRVFDSUQ5cTZ3MkRHU1RaNjhyaDh1TGl1STlSVHh2R1czSXZ5aGVRYjhkWThuZnlBaUI2YnlPR2ZpWlczR1FmVkdIODlreEp4MmlVT0UxMm9LMjlkZ1d0RC8xbjZRPT0%3D&",
            "user_id=erj6qck3rfgtujs86w5r6rckzh&",
            "user_name=alan"
        );
        let cmd = SlashCommand::parse(body.as_bytes());
        assert_eq!(cmd.token, "qzgakf1nx3yt9dr4n8585ihbxy");
        assert_eq!(cmd.command, "/weather");
        assert_eq!(cmd.text, "toronto week");
        assert_eq!(cmd.user_id, "erj6qck3rfgtujs86w5r6rckzh");
        assert_eq!(cmd.user_name, "alan");
        assert_eq!(cmd.team_id, "wx4zz8t4ttgmtxqiwfohijayzc");
        assert_eq!(cmd.channel_id, "fukxanjgjbnp7ng383at53k1sy");
        assert_eq!(
            cmd.response_url,
            "http://localhost:8066/hooks/commands/i11f6nnfgfyk8eg56x9omc6dpa"
        );
        assert!(cmd.trigger_id.ends_with("PT0="));
        assert!(is_mattermost_id(&cmd.user_id) && is_mattermost_id(&cmd.channel_id));
        // A second `token` cannot replace the first.
        let twice = SlashCommand::parse(b"token=a&token=b");
        assert_eq!(twice.token, "a");
    }
}
