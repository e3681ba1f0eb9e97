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
        let Some(token) = &self.token else {
            return Ok(None);
        };
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
        #[derive(Deserialize)]
        struct Answer {
            ok: bool,
            #[serde(default)]
            error: Option<String>,
            #[serde(default)]
            user: Option<UserInfo>,
        }
        #[derive(Deserialize)]
        struct UserInfo {
            #[serde(default)]
            profile: Option<Profile>,
        }
        #[derive(Deserialize)]
        struct Profile {
            #[serde(default)]
            email: Option<String>,
        }
        let answer: Answer = resp
            .json()
            .await
            .map_err(|e| VendorError::malformed(NAME, e.to_string()))?;
        if !answer.ok {
            tracing::info!(
                error = answer.error.as_deref().unwrap_or(""),
                "users.info gave no email"
            );
            return Ok(None);
        }
        Ok(answer
            .user
            .and_then(|u| u.profile)
            .and_then(|p| p.email)
            .filter(|e| !e.is_empty()))
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
    ok: bool,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    ts: Option<String>,
}

impl SlackApi {
    async fn call(&self, method: &str, body: serde_json::Value) -> Result<ApiAnswer, VendorError> {
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
        let answer: ApiAnswer = resp
            .json()
            .await
            .map_err(|e| VendorError::malformed(NAME, e.to_string()))?;
        if !answer.ok {
            let error = answer
                .error
                .clone()
                .unwrap_or_else(|| "unknown_error".into());
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
