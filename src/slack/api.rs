//! The Slack Web API calls we make with the bot token.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use crate::clients::{self, Outbound, vendor::VendorError};

pub const NAME: &str = "Slack";

#[derive(Clone)]
pub struct SlackApi {
    out: Outbound,
    base: Url,
    token: Option<SecretString>,
}

impl std::fmt::Debug for SlackApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackApi")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl SlackApi {
    pub fn new(out: Outbound, base: Url, token: Option<SecretString>) -> Self {
        Self { out, base, token }
    }

    pub fn configured(&self) -> bool {
        self.token.is_some()
    }

    /// A user's email from `users.info` (needs the `users:read.email` scope). None when we
    /// have no bot token or Slack will not tell.
    pub async fn user_email(&self, user_id: &str) -> Result<Option<String>, VendorError> {
        if self.token.is_none() {
            return Ok(None);
        }
        Ok(self
            .user_info(user_id)
            .await?
            .ok()
            .and_then(|u| u.profile)
            .and_then(|p| p.email)
            .filter(|e| !e.is_empty()))
    }

    /// `users.info`: the user, or Slack's error code (`user_not_found`, …) when it says `ok:
    /// false`. An `Err` when Slack did not answer, or without a bot token.
    pub async fn user_info(&self, user_id: &str) -> Result<Result<UserInfo, String>, VendorError> {
        let token = self
            .token
            .as_ref()
            .ok_or_else(|| VendorError::not_configured(NAME, "SLACK_BOT_TOKEN"))?;
        let mut url = self
            .base
            .join("users.info")
            .map_err(|e| VendorError::malformed(NAME, e.to_string()))?;
        url.query_pairs_mut().append_pair("user", user_id);
        let resp = self
            .out
            .send(|c| c.get(url.clone()).bearer_auth(token.expose_secret()))
            .await
            .map_err(|e| VendorError::transport(NAME, e))?;
        let status = resp.status();
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(VendorError::new(
                NAME,
                clients::vendor::ErrorKind::Server {
                    status: status.as_u16(),
                },
            ));
        }
        #[derive(Deserialize)]
        struct Answer {
            ok: bool,
            #[serde(default)]
            error: Option<String>,
            #[serde(default)]
            user: Option<UserInfo>,
        }
        let answer: Answer = resp
            .json()
            .await
            .map_err(|e| VendorError::malformed(NAME, e.to_string()))?;
        match (answer.ok, answer.user) {
            (true, Some(user)) => Ok(Ok(user)),
            (_, _) => {
                let error = answer.error.unwrap_or_else(|| "unknown_error".into());
                tracing::info!(error = %error, "users.info gave no user");
                Ok(Err(error))
            }
        }
    }

    /// The id of the workspace the bot token belongs to (`auth.test`'s `team_id`).
    pub async fn workspace(&self) -> Result<String, VendorError> {
        #[derive(Deserialize)]
        struct Auth {
            #[serde(default)]
            team_id: Option<String>,
        }
        let answer = self.call_json("auth.test", serde_json::json!({})).await?;
        serde_json::from_value::<Auth>(answer)
            .ok()
            .and_then(|a| a.team_id)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| VendorError::malformed(NAME, "no team_id in auth.test answer"))
    }
}

/// The fields of `users.info`'s user that we read.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct UserInfo {
    #[serde(default)]
    pub team_id: Option<String>,
    #[serde(default)]
    pub deleted: bool,
    #[serde(default)]
    pub is_restricted: bool,
    #[serde(default)]
    pub is_ultra_restricted: bool,
    #[serde(default)]
    pub profile: Option<Profile>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Profile {
    #[serde(default)]
    pub email: Option<String>,
}

impl UserInfo {
    /// What this user is to the workspace `home`.
    pub fn membership(&self, home: &str) -> crate::chat::Membership {
        use crate::chat::{Membership, Outsider};
        if self.deleted {
            Membership::Outsider(Outsider::Deactivated)
        } else if self.team_id.as_deref().is_some_and(|t| t != home) {
            Membership::Outsider(Outsider::OtherWorkspace)
        } else if self.is_restricted || self.is_ultra_restricted {
            Membership::Outsider(Outsider::Guest)
        } else {
            Membership::Member
        }
    }
}

/// The message-metadata event type of notifications we post.
pub const NOTIFICATION_EVENT: &str = "pantheon_notification";

/// Where a posted message lives, for updates and threads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    pub channel: String,
    pub ts: String,
}

#[derive(Deserialize)]
struct ApiAnswer {
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    ts: Option<String>,
}

impl SlackApi {
    async fn call(&self, method: &str, body: serde_json::Value) -> Result<ApiAnswer, VendorError> {
        let answer = self.call_json(method, body).await?;
        serde_json::from_value(answer).map_err(|e| VendorError::malformed(NAME, e.to_string()))
    }

    /// A Web API method with a JSON body: its answer when Slack says `ok`, else its error as a
    /// [`VendorError`] (a 429, a 5xx, an auth error, or `Rejected` with Slack's error code).
    pub async fn call_json(
        &self,
        method: &str,
        body: serde_json::Value,
    ) -> Result<serde_json::Value, VendorError> {
        let token = self
            .token
            .as_ref()
            .ok_or_else(|| VendorError::not_configured(NAME, "SLACK_BOT_TOKEN"))?;
        let url = self
            .base
            .join(method)
            .map_err(|e| VendorError::malformed(NAME, e.to_string()))?;
        let resp = self
            .out
            .send(|c| {
                c.post(url.clone())
                    .bearer_auth(token.expose_secret())
                    .json(&body)
            })
            .await
            .map_err(|e| VendorError::transport(NAME, e))?;
        let status = resp.status();
        if status.as_u16() == 429 {
            let resets = clients::retry_after(&resp).and_then(|d| {
                time::OffsetDateTime::now_utc().checked_add(time::Duration::try_from(d).ok()?)
            });
            return Err(VendorError::new(
                NAME,
                clients::vendor::ErrorKind::RateLimited { resets },
            ));
        }
        if status.is_server_error() {
            return Err(VendorError::new(
                NAME,
                clients::vendor::ErrorKind::Server {
                    status: status.as_u16(),
                },
            ));
        }
        let answer: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| VendorError::malformed(NAME, e.to_string()))?;
        if answer["ok"] != serde_json::Value::Bool(true) {
            let error = answer["error"]
                .as_str()
                .unwrap_or("unknown_error")
                .to_owned();
            let kind = match error.as_str() {
                "invalid_auth" | "not_authed" | "token_revoked" | "account_inactive" => {
                    clients::vendor::ErrorKind::Unauthorized
                }
                "ratelimited" => clients::vendor::ErrorKind::RateLimited { resets: None },
                _ => clients::vendor::ErrorKind::Rejected {
                    status: status.as_u16(),
                    message: error,
                },
            };
            return Err(VendorError::new(NAME, kind));
        }
        Ok(answer)
    }

    /// `chat.postMessage` of a notification from the outbox, carrying its outbox id and post
    /// token as message metadata so that a sender that died after posting can be recognised in
    /// the channel's history ([`SlackApi::find_notification`]).
    pub async fn post_notification(
        &self,
        channel: &str,
        message: &crate::chat::Message,
        outbox_id: i64,
        post: i64,
    ) -> Result<Posted, VendorError> {
        let metadata = serde_json::json!({
            "event_type": NOTIFICATION_EVENT,
            "event_payload": {"outbox_id": outbox_id, "post": post},
        });
        self.post(channel, None, message, Some(metadata)).await
    }

    /// The `ts` of a notification we posted to `channel` since `oldest` as post `post` (a token
    /// unique to each try), from `conversations.history` (needs `channels:history`, or `groups:history`
    /// for a private channel). Looks at the newest 200 messages.
    pub async fn find_notification(
        &self,
        channel: &str,
        oldest: time::OffsetDateTime,
        post: i64,
    ) -> Result<Option<String>, VendorError> {
        let token = self
            .token
            .as_ref()
            .ok_or_else(|| VendorError::not_configured(NAME, "SLACK_BOT_TOKEN"))?;
        let mut url = self
            .base
            .join("conversations.history")
            .map_err(|e| VendorError::malformed(NAME, e.to_string()))?;
        url.query_pairs_mut()
            .append_pair("channel", channel)
            .append_pair("oldest", &oldest.unix_timestamp().to_string())
            .append_pair("limit", "200")
            .append_pair("include_all_metadata", "true");
        let resp = self
            .out
            .send(|c| c.get(url.clone()).bearer_auth(token.expose_secret()))
            .await
            .map_err(|e| VendorError::transport(NAME, e))?;
        #[derive(Deserialize)]
        struct History {
            ok: bool,
            #[serde(default)]
            error: Option<String>,
            #[serde(default)]
            messages: Vec<Posting>,
        }
        #[derive(Deserialize)]
        struct Posting {
            ts: String,
            #[serde(default)]
            metadata: Option<Metadata>,
        }
        #[derive(Deserialize)]
        struct Metadata {
            event_type: String,
            #[serde(default)]
            event_payload: serde_json::Value,
        }
        let status = resp.status().as_u16();
        let history: History = resp
            .json()
            .await
            .map_err(|e| VendorError::malformed(NAME, e.to_string()))?;
        if !history.ok {
            return Err(VendorError::new(
                NAME,
                clients::vendor::ErrorKind::Rejected {
                    status,
                    message: history.error.unwrap_or_else(|| "unknown_error".into()),
                },
            ));
        }
        Ok(history.messages.into_iter().find_map(|m| {
            let meta = m.metadata?;
            let found = meta.event_payload.get("post")?.as_i64()?;
            (meta.event_type == NOTIFICATION_EVENT && found == post).then_some(m.ts)
        }))
    }

    /// `chat.postMessage`, optionally into a thread.
    pub async fn post_message(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        message: &crate::chat::Message,
    ) -> Result<Posted, VendorError> {
        self.post(channel, thread_ts, message, None).await
    }

    async fn post(
        &self,
        channel: &str,
        thread_ts: Option<&str>,
        message: &crate::chat::Message,
        metadata: Option<serde_json::Value>,
    ) -> Result<Posted, VendorError> {
        let mut body =
            serde_json::json!({"channel": channel, "text": message.text, "unfurl_links": false});
        if !message.blocks.is_empty() {
            body["blocks"] = serde_json::Value::Array(super::blocks::blocks(&message.blocks));
        }
        if let Some(ts) = thread_ts {
            body["thread_ts"] = serde_json::Value::String(ts.to_owned());
        }
        if let Some(metadata) = metadata {
            body["metadata"] = metadata;
        }
        let answer = self.call("chat.postMessage", body).await?;
        Ok(Posted {
            channel: answer.channel.unwrap_or_else(|| channel.to_owned()),
            ts: answer
                .ts
                .ok_or_else(|| VendorError::malformed(NAME, "no ts in chat.postMessage answer"))?,
        })
    }

    /// `views.open`: a modal for the person whose action gave `trigger_id`.
    pub async fn open_view(
        &self,
        trigger_id: &str,
        view: serde_json::Value,
    ) -> Result<(), VendorError> {
        self.call_json(
            "views.open",
            serde_json::json!({"trigger_id": trigger_id, "view": view}),
        )
        .await
        .map(drop)
    }

    /// `views.publish`: `user`'s home tab.
    pub async fn publish_view(
        &self,
        user_id: &str,
        view: serde_json::Value,
    ) -> Result<(), VendorError> {
        self.call_json(
            "views.publish",
            serde_json::json!({"user_id": user_id, "view": view}),
        )
        .await
        .map(drop)
    }

    /// `chat.postEphemeral`: a message in `channel` that only `user` sees.
    pub async fn post_ephemeral(
        &self,
        channel: &str,
        user: &str,
        message: &crate::chat::Message,
    ) -> Result<(), VendorError> {
        let mut body = serde_json::json!({"channel": channel, "user": user, "text": message.text});
        if !message.blocks.is_empty() {
            body["blocks"] = serde_json::Value::Array(super::blocks::blocks(&message.blocks));
        }
        self.call_json("chat.postEphemeral", body).await.map(drop)
    }

    /// `chat.update`: replace a message we posted.
    pub async fn update_message(
        &self,
        channel: &str,
        ts: &str,
        message: &crate::chat::Message,
    ) -> Result<(), VendorError> {
        let body = serde_json::json!({
            "channel": channel, "ts": ts, "text": message.text,
            "blocks": super::blocks::blocks(&message.blocks),
        });
        self.call("chat.update", body).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::UserInfo;
    use crate::chat::{Membership, Outsider};

    /// Slack's documented `users.info` answer (tests/fixtures/slack, from Slack's docs).
    const USERS_INFO: &str = include_str!("../../tests/fixtures/slack/users_info_ok.json");

    #[test]
    fn users_info_says_who_is_a_member() {
        let answer: serde_json::Value = serde_json::from_str(USERS_INFO).unwrap();
        let user: UserInfo = serde_json::from_value(answer["user"].clone()).unwrap();
        assert_eq!(user.team_id.as_deref(), Some("T012AB3C4"));
        assert_eq!(user.membership("T012AB3C4"), Membership::Member);
        assert_eq!(
            user.membership("T0OTHER"),
            Membership::Outsider(Outsider::OtherWorkspace)
        );
        let guest = UserInfo {
            is_ultra_restricted: true,
            ..user.clone()
        };
        assert_eq!(
            guest.membership("T012AB3C4"),
            Membership::Outsider(Outsider::Guest)
        );
        let gone = UserInfo {
            deleted: true,
            ..user
        };
        assert_eq!(
            gone.membership("T012AB3C4"),
            Membership::Outsider(Outsider::Deactivated)
        );
    }
}
