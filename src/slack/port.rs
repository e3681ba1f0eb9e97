//! Slack as the chat port: the Web API client for posts, updates and lookups, and the
//! allow-listed `response_url` for replies.

use time::OffsetDateTime;

use super::{
    api::{NAME, SlackApi},
    response_url::{self, DeliveryError, ResponseUrlPolicy},
};
use crate::{
    chat::{ChatFuture, ChatPort, Message, Posted, ResponseUrl},
    clients::{
        Outbound,
        vendor::{ErrorKind, VendorError},
    },
};

pub struct SlackChat {
    api: SlackApi,
    response_urls: ResponseUrlPolicy,
    outbound: Outbound,
}

impl SlackChat {
    pub fn new(api: SlackApi, response_urls: ResponseUrlPolicy, outbound: Outbound) -> Self {
        Self {
            api,
            response_urls,
            outbound,
        }
    }
}

fn posted(p: super::api::Posted) -> Posted {
    Posted {
        channel: p.channel,
        at: p.ts,
    }
}

impl ChatPort for SlackChat {
    fn configured(&self) -> bool {
        self.api.configured()
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
        self.response_urls.check(raw).map(ResponseUrl::checked)
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
