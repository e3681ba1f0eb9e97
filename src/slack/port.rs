//! Slack as the chat port: the Web API client for posts, updates and lookups, and the
//! allow-listed `response_url` for replies.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use time::OffsetDateTime;

use super::{
    api::{NAME, SlackApi},
    response_url::{self, DeliveryError, ResponseUrlPolicy},
};
use crate::{
    chat::{Block, ChatFuture, ChatPort, Form, Membership, Message, Outsider, Posted, ResponseUrl},
    clients::{
        Outbound,
        vendor::{ErrorKind, VendorError},
    },
};

pub struct SlackChat {
    api: SlackApi,
    response_urls: ResponseUrlPolicy,
    outbound: Outbound,
    /// The workspace the bot token belongs to, asked once (`auth.test`).
    workspace: tokio::sync::OnceCell<String>,
    /// `users.info` answers, for [`MEMBERSHIP_TTL`].
    members: Mutex<HashMap<String, (Instant, Membership)>>,
}

/// How long a looked-up membership is trusted: long enough that a burst of clicks asks Slack
/// once, short enough that a deactivation or a guest conversion holds within a minute.
pub const MEMBERSHIP_TTL: Duration = Duration::from_secs(60);

/// Most memberships remembered; past this the cache starts over.
const MEMBERS_REMEMBERED: usize = 10_000;

impl SlackChat {
    pub fn new(api: SlackApi, response_urls: ResponseUrlPolicy, outbound: Outbound) -> Self {
        Self {
            api,
            response_urls,
            outbound,
            workspace: tokio::sync::OnceCell::new(),
            members: Mutex::new(HashMap::new()),
        }
    }

    /// The API client, for the Slack edge's own calls (views).
    pub fn api(&self) -> &SlackApi {
        &self.api
    }

    async fn look_up(&self, user: &str) -> Result<Membership, VendorError> {
        if !self.api.configured() {
            return Ok(Membership::Unchecked);
        }
        if let Some((at, known)) = self.remembered(user)
            && at.elapsed() < MEMBERSHIP_TTL
        {
            return Ok(known);
        }
        let home = self
            .workspace
            .get_or_try_init(|| self.api.workspace())
            .await?;
        let found = match self.api.user_info(user).await? {
            Ok(info) => info.membership(home),
            Err(code) if code == "user_not_found" || code == "users_not_found" => {
                Membership::Outsider(Outsider::Unknown)
            }
            Err(code) => {
                return Err(VendorError::new(
                    NAME,
                    ErrorKind::Rejected {
                        status: 200,
                        message: code,
                    },
                ));
            }
        };
        let mut members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        if members.len() >= MEMBERS_REMEMBERED {
            members.retain(|_, (at, _)| at.elapsed() < MEMBERSHIP_TTL);
            if members.len() >= MEMBERS_REMEMBERED {
                members.clear();
            }
        }
        members.insert(user.to_owned(), (Instant::now(), found));
        Ok(found)
    }

    fn remembered(&self, user: &str) -> Option<(Instant, Membership)> {
        self.members
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(user)
            .copied()
    }
}

fn posted(p: super::api::Posted) -> Posted {
    Posted {
        channel: p.channel,
        at: p.ts,
    }
}

impl ChatPort for SlackChat {
    fn name(&self) -> &'static str {
        NAME
    }

    fn configured(&self) -> bool {
        self.api.configured()
    }

    /// Slack's ids are upper-case letters and digits (`C…`, `G…`, `D…` channels, `U…` and
    /// `W…` people).
    fn owns(&self, id: &str) -> bool {
        !id.is_empty()
            && id
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    }

    fn post<'a>(
        &'a self,
        channel: &'a str,
        thread: Option<&'a str>,
        message: &'a Message,
    ) -> ChatFuture<'a, Posted> {
        Box::pin(async move {
            self.api
                .post_message(channel, thread, message)
                .await
                .map(posted)
        })
    }

    fn update<'a>(
        &'a self,
        channel: &'a str,
        at: &'a str,
        message: &'a Message,
    ) -> ChatFuture<'a, ()> {
        Box::pin(self.api.update_message(channel, at, message))
    }

    fn response_url(&self, raw: &str) -> Result<ResponseUrl, String> {
        self.response_urls
            .check(raw)
            .map(|url| ResponseUrl::checked(NAME, url))
    }

    fn reply<'a>(&'a self, to: &'a ResponseUrl, message: &'a Message) -> ChatFuture<'a, ()> {
        Box::pin(async move {
            response_url::post_response(&self.outbound, to.url(), message)
                .await
                .map_err(|e| match e {
                    DeliveryError::Transport(e) => VendorError::transport(NAME, e),
                    DeliveryError::Rejected { status, body } => VendorError::new(
                        NAME,
                        ErrorKind::Rejected {
                            status,
                            message: body,
                        },
                    ),
                })
        })
    }

    fn user_email<'a>(&'a self, user: &'a str) -> ChatFuture<'a, Option<String>> {
        Box::pin(self.api.user_email(user))
    }

    fn open_form<'a>(&'a self, trigger: &'a str, form: &'a Form) -> ChatFuture<'a, ()> {
        Box::pin(self.api.open_view(trigger, super::views::modal(form)))
    }

    fn publish_home<'a>(&'a self, user: &'a str, blocks: &'a [Block]) -> ChatFuture<'a, ()> {
        Box::pin(self.api.publish_view(user, super::views::home(blocks)))
    }

    fn post_private<'a>(
        &'a self,
        channel: &'a str,
        user: &'a str,
        message: &'a Message,
    ) -> ChatFuture<'a, ()> {
        Box::pin(self.api.post_ephemeral(channel, user, message))
    }

    fn membership<'a>(&'a self, user: &'a str) -> ChatFuture<'a, Membership> {
        Box::pin(self.look_up(user))
    }

    fn post_notice<'a>(
        &'a self,
        channel: &'a str,
        message: &'a Message,
        outbox_id: i64,
        post: i64,
    ) -> ChatFuture<'a, Posted> {
        Box::pin(async move {
            self.api
                .post_notification(channel, message, outbox_id, post)
                .await
                .map(posted)
        })
    }

    fn find_notice<'a>(
        &'a self,
        channel: &'a str,
        since: OffsetDateTime,
        post: i64,
    ) -> ChatFuture<'a, Option<String>> {
        Box::pin(self.api.find_notification(channel, since, post))
    }
}
