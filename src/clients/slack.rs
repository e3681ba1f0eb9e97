//! The Slack Web API calls we make with the bot token.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use super::{Outbound, vendor::VendorError};

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
