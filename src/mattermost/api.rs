//! Mattermost's REST API v4, with a bot account's access token: posts (in threads with
//! `root_id`), edits (`PUT /posts/{id}/patch`), ephemeral posts, a channel's recent posts and
//! user lookups. Errors are Mattermost's `AppError` (`{"id", "message", …}`) mapped to
//! [`VendorError`]s; a 429's body is plain text, its reset in `X-RateLimit-Reset` (seconds from
//! now) or `Retry-After`.

use reqwest::{Method, header::HeaderMap};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use time::OffsetDateTime;
use url::Url;

use crate::clients::{
    Outbound,
    vendor::{Dialect, ErrorKind, VendorError, checked, decode},
};

pub const NAME: &str = "Mattermost";

struct Mm;

impl Dialect for Mm {
    const NAME: &'static str = NAME;

    fn error_message(body: &serde_json::Value) -> Option<String> {
        body.get("message")
            .and_then(|m| m.as_str())
            .map(str::to_owned)
    }

    fn rate_limit_reset(headers: &HeaderMap, now: OffsetDateTime) -> Option<OffsetDateTime> {
        let seconds: i64 = headers
            .get("x-ratelimit-reset")?
            .to_str()
            .ok()?
            .trim()
            .parse()
            .ok()?;
        now.checked_add(time::Duration::seconds(seconds.clamp(0, 3600)))
    }
}

/// A post as Mattermost answers it (the fields we read).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Post {
    pub id: String,
    #[serde(default)]
    pub channel_id: String,
    #[serde(default)]
    pub create_at: i64,
    #[serde(default)]
    pub props: serde_json::Value,
}

/// A user as Mattermost answers it (the fields we read; privacy settings may blank `email`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct User {
    pub id: String,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub email: String,
    /// Milliseconds since the epoch when deactivated; 0 while active.
    #[serde(default)]
    pub delete_at: i64,
    /// Space-separated: `system_user`, `system_admin`, `system_guest`, …
    #[serde(default)]
    pub roles: String,
    /// Set only for a user of another server (shared channels).
    #[serde(default)]
    pub remote_id: Option<String>,
}

impl User {
    pub fn is_guest(&self) -> bool {
        self.roles.split(' ').any(|r| r == "system_guest")
    }
}

#[derive(Clone)]
pub struct MattermostApi {
    out: Outbound,
    /// `{server}/api/v4/`.
    base: Option<Url>,
    token: Option<SecretString>,
}

impl std::fmt::Debug for MattermostApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MattermostApi")
            .field("base", &self.base.as_ref().map(Url::as_str))
            .finish_non_exhaustive()
    }
}

impl MattermostApi {
    /// `server` is the server's base URL (`[mattermost] url`).
    pub fn new(out: Outbound, server: Option<&Url>, token: Option<SecretString>) -> Self {
        Self {
            out,
            base: server.and_then(|s| s.join("api/v4/").ok()),
            token,
        }
    }

    pub fn configured(&self) -> bool {
        self.base.is_some() && self.token.is_some()
    }

    fn url(&self, path: &str) -> Result<(Url, &SecretString), VendorError> {
        let (Some(base), Some(token)) = (&self.base, &self.token) else {
            return Err(VendorError::not_configured(
                NAME,
                "MATTERMOST_BOT_TOKEN and [mattermost] url",
            ));
        };
        let url = base
            .join(path)
            .map_err(|e| VendorError::malformed(NAME, e.to_string()))?;
        Ok((url, token))
    }

    /// One call. `create`: a request that makes something, retried only when Mattermost cannot
    /// have acted on it.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
        what: &str,
        create: bool,
    ) -> Result<bytes::Bytes, VendorError> {
        let (url, token) = self.url(path)?;
        let build = |c: &reqwest::Client| {
            let request = c
                .request(method.clone(), url.clone())
                .bearer_auth(token.expose_secret())
                .header("Accept", "application/json");
            match body {
                Some(body) => request.json(body),
                None => request,
            }
        };
        let resp = if create {
            self.out.send_once(build).await
        } else {
            self.out.send(build).await
        }
        .map_err(|e| VendorError::transport(NAME, e))?;
        checked::<Mm>(resp, what).await.map(|(_, body)| body)
    }

    /// `POST /posts`: a post in `channel` (in the thread of `root` if given).
    pub async fn create_post(
        &self,
        channel: &str,
        root: Option<&str>,
        message: &str,
        props: serde_json::Value,
    ) -> Result<Post, VendorError> {
        let body = serde_json::json!({
            "channel_id": channel,
            "root_id": root.unwrap_or_default(),
            "message": message,
            "props": props,
        });
        let answer = self
            .call(Method::POST, "posts", Some(&body), "channel", true)
            .await?;
        decode(NAME, &answer)
    }

    /// `PUT /posts/{id}/patch`: the post's message and props replaced.
    pub async fn patch_post(
        &self,
        post: &str,
        message: &str,
        props: serde_json::Value,
    ) -> Result<(), VendorError> {
        let body = serde_json::json!({ "message": message, "props": props });
        self.call(
            Method::PUT,
            &format!("posts/{}/patch", path_id(post)?),
            Some(&body),
            "post",
            false,
        )
        .await
        .map(drop)
    }

    /// `POST /posts/ephemeral`: a post in `channel` that only `user` sees.
    pub async fn ephemeral(
        &self,
        channel: &str,
        user: &str,
        message: &str,
        props: serde_json::Value,
    ) -> Result<(), VendorError> {
        let body = serde_json::json!({
            "user_id": user,
            "post": { "channel_id": channel, "message": message, "props": props },
        });
        self.call(
            Method::POST,
            "posts/ephemeral",
            Some(&body),
            "channel",
            true,
        )
        .await
        .map(drop)
    }

    /// `GET /users/{id}`: the user, or None when Mattermost has no such user (404).
    pub async fn user(&self, id: &str) -> Result<Option<User>, VendorError> {
        match self
            .call(
                Method::GET,
                &format!("users/{}", path_id(id)?),
                None,
                "user",
                false,
            )
            .await
        {
            Ok(body) => decode(NAME, &body).map(Some),
            Err(VendorError {
                kind: ErrorKind::NotFound { .. },
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /channels/{id}/posts?since=`: the channel's posts created or changed since `since`.
    pub async fn posts_since(
        &self,
        channel: &str,
        since: OffsetDateTime,
    ) -> Result<Vec<Post>, VendorError> {
        let ms = i64::try_from(since.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
        let answer = self
            .call(
                Method::GET,
                &format!("channels/{}/posts?since={ms}", path_id(channel)?),
                None,
                "channel",
                false,
            )
            .await?;
        #[derive(Deserialize)]
        struct PostList {
            #[serde(default)]
            posts: std::collections::HashMap<String, Post>,
        }
        let list: PostList = decode(NAME, &answer)?;
        Ok(list.posts.into_values().collect())
    }
}

/// An id put in a URL path: Mattermost's ids are letters and digits, so anything else is not
/// one of its ids (and never reaches the path).
fn path_id(id: &str) -> Result<&str, VendorError> {
    if !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(id)
    } else {
        Err(VendorError::new(
            NAME,
            ErrorKind::NotFound {
                what: format!("id `{}`", id.chars().take(64).collect::<String>()),
            },
        ))
    }
}
