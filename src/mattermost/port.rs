//! Mattermost as a chat port: posts, edits and lookups through the REST API with the bot
//! token; replies to a slash command's `response_url` (on the configured server only).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::json;
use time::OffsetDateTime;
use url::Url;

use super::{
    api::{MattermostApi, NAME, User},
    buttons::Buttons,
    render::{self, Names, Rendered},
};
use crate::{
    chat::{Block, ChatFuture, ChatPort, Form, Membership, Message, Outsider, Posted, ResponseUrl},
    clients::{
        Outbound,
        vendor::{ErrorKind, VendorError},
    },
    domain::markup::{Piece, parse},
};

/// How long what Mattermost said of a person is trusted (as on Slack).
pub const PERSON_TTL: Duration = Duration::from_secs(60);

/// Most people remembered; past this the cache starts over.
const REMEMBERED: usize = 10_000;

/// The marker in a notice's props that lets a sender that died mid-post find it again.
const NOTICE_PROP: &str = "pantheon_post";

#[derive(Debug, Clone)]
struct Person {
    /// When Mattermost was asked (None: only a username seen with a request).
    at: Option<Instant>,
    membership: Membership,
    username: Option<String>,
    email: Option<String>,
}

pub struct MattermostChat {
    api: MattermostApi,
    /// The server's base URL: the only origin whose `response_url`s we answer.
    server: Option<Url>,
    buttons: Option<Arc<Buttons>>,
    outbound: Outbound,
    people: Mutex<HashMap<String, Person>>,
}

impl MattermostChat {
    pub fn new(
        api: MattermostApi,
        server: Option<Url>,
        buttons: Option<Arc<Buttons>>,
        outbound: Outbound,
    ) -> Self {
        Self {
            api,
            server,
            buttons,
            outbound,
            people: Mutex::new(HashMap::new()),
        }
    }

    /// Remember a username Mattermost gave us with a request, for mentions.
    pub fn saw(&self, user: &str, username: &str) {
        if username.is_empty() {
            return;
        }
        let mut people = self.people.lock().unwrap_or_else(|e| e.into_inner());
        match people.get_mut(user) {
            Some(p) => p.username = Some(username.to_owned()),
            None => {
                Self::make_room(&mut people);
                people.insert(
                    user.to_owned(),
                    Person {
                        at: None,
                        membership: Membership::Unchecked,
                        username: Some(username.to_owned()),
                        email: None,
                    },
                );
            }
        }
    }

    fn make_room(people: &mut HashMap<String, Person>) {
        if people.len() >= REMEMBERED {
            people.retain(|_, p| p.at.is_some_and(|at| at.elapsed() < PERSON_TTL));
            if people.len() >= REMEMBERED {
                people.clear();
            }
        }
    }

    fn known(&self, user: &str) -> Option<Person> {
        let people = self.people.lock().unwrap_or_else(|e| e.into_inner());
        people
            .get(user)
            .filter(|p| p.at.is_some_and(|at| at.elapsed() < PERSON_TTL))
            .cloned()
    }

    /// What Mattermost says of `user` (remembered for [`PERSON_TTL`]).
    async fn person(&self, user: &str) -> Result<Person, VendorError> {
        if let Some(p) = self.known(user) {
            return Ok(p);
        }
        let found = self.api.user(user).await?;
        let person = match found {
            None => Person {
                at: Some(Instant::now()),
                membership: Membership::Outsider(Outsider::Unknown),
                username: None,
                email: None,
            },
            Some(u) => Person {
                at: Some(Instant::now()),
                membership: membership(&u),
                username: Some(u.username.clone()).filter(|n| !n.is_empty()),
                email: Some(u.email).filter(|e| !e.is_empty()),
            },
        };
        let mut people = self.people.lock().unwrap_or_else(|e| e.into_inner());
        Self::make_room(&mut people);
        people.insert(user.to_owned(), person.clone());
        Ok(person)
    }

    /// Usernames for everyone `message` mentions, looked up where not known (a failed lookup
    /// leaves that person shown by id).
    async fn names(&self, message: &Message) -> Names {
        let mut ids: Vec<String> = Vec::new();
        let mut collect = |markup: &str| {
            for piece in parse(markup) {
                if let Piece::Mention(id) = piece
                    && !ids.iter().any(|i| i == id)
                {
                    ids.push(id.to_owned());
                }
            }
        };
        collect(&message.text);
        for block in &message.blocks {
            if let Block::Section { text } | Block::Context { text } = block {
                collect(text);
            }
        }
        let mut names = Names::new();
        for id in ids.into_iter().take(20) {
            let name = match self.remembered_name(&id) {
                Some(name) => Some(name),
                None if self.api.configured() => {
                    self.person(&id).await.ok().and_then(|p| p.username)
                }
                None => None,
            };
            if let Some(name) = name {
                names.insert(id, name);
            }
        }
        names
    }

    fn remembered_name(&self, user: &str) -> Option<String> {
        let people = self.people.lock().unwrap_or_else(|e| e.into_inner());
        people.get(user).and_then(|p| p.username.clone())
    }

    /// `message` as Mattermost shows it, with its mentions' names looked up.
    pub async fn render(&self, message: &Message) -> Rendered {
        let names = self.names(message).await;
        render::render(
            message,
            self.buttons.as_deref(),
            &names,
            OffsetDateTime::now_utc(),
        )
    }

    /// A slash command's or a button's answer: Mattermost's `CommandResponse`.
    pub async fn command_response(&self, message: &Message) -> serde_json::Value {
        let rendered = self.render(message).await;
        let mut body = json!({
            "response_type": match message.visibility {
                crate::chat::Visibility::Ephemeral => "ephemeral",
                crate::chat::Visibility::InChannel => "in_channel",
            },
            "text": rendered.message,
            "skip_slack_parsing": true,
        });
        if let Some(attachments) = rendered.props.get("attachments") {
            body["attachments"] = attachments.clone();
        }
        body
    }
}

/// Whether a user Mattermost told us of may act here.
pub fn membership(user: &User) -> Membership {
    if user.delete_at > 0 {
        Membership::Outsider(Outsider::Deactivated)
    } else if user.is_guest() {
        Membership::Outsider(Outsider::Guest)
    } else if user.remote_id.as_deref().is_some_and(|r| !r.is_empty()) {
        Membership::Outsider(Outsider::OtherWorkspace)
    } else {
        Membership::Member
    }
}

impl ChatPort for MattermostChat {
    fn name(&self) -> &'static str {
        NAME
    }

    fn configured(&self) -> bool {
        self.api.configured()
    }

    /// Mattermost's ids: 26 lower-case letters and digits.
    fn owns(&self, id: &str) -> bool {
        crate::config::is_mattermost_id(id)
    }

    fn post<'a>(
        &'a self,
        channel: &'a str,
        thread: Option<&'a str>,
        message: &'a Message,
    ) -> ChatFuture<'a, Posted> {
        Box::pin(async move {
            let r = self.render(message).await;
            let post = self
                .api
                .create_post(channel, thread, &r.message, r.props)
                .await?;
            Ok(Posted {
                channel: channel.to_owned(),
                at: post.id,
            })
        })
    }

    fn update<'a>(
        &'a self,
        _channel: &'a str,
        at: &'a str,
        message: &'a Message,
    ) -> ChatFuture<'a, ()> {
        Box::pin(async move {
            let r = self.render(message).await;
            // Props replace the post's whole props: buttons are sent again in full (Mattermost
            // strips their integration from what it shows, so nothing could be kept anyway).
            self.api.patch_post(at, &r.message, r.props).await
        })
    }

    fn response_url(&self, raw: &str) -> Result<ResponseUrl, String> {
        let Some(server) = &self.server else {
            return Err("no Mattermost server is configured ([mattermost] url)".to_owned());
        };
        let url = Url::parse(raw).map_err(|_| "response_url is not a URL".to_owned())?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err("response_url may not carry credentials".to_owned());
        }
        if url.origin() != server.origin() {
            return Err(format!(
                "response_url is not on the Mattermost server {}",
                server.origin().ascii_serialization()
            ));
        }
        let below = server.path().trim_end_matches('/');
        if !url.path().starts_with(&format!("{below}/hooks/commands/")) {
            return Err("response_url is not a Mattermost command hook".to_owned());
        }
        Ok(ResponseUrl::checked(NAME, url))
    }

    fn reply<'a>(&'a self, to: &'a ResponseUrl, message: &'a Message) -> ChatFuture<'a, ()> {
        Box::pin(async move {
            let body = self.command_response(message).await;
            let resp = self
                .outbound
                .send(|c| c.post(to.url().clone()).json(&body))
                .await
                .map_err(|e| VendorError::transport(NAME, e))?;
            let status = resp.status();
            if status.is_success() {
                return Ok(());
            }
            let text: String = resp
                .text()
                .await
                .unwrap_or_default()
                .chars()
                .take(200)
                .collect();
            Err(VendorError::new(
                NAME,
                ErrorKind::Rejected {
                    status: status.as_u16(),
                    message: crate::domain::redact::scrub(&text).into_owned(),
                },
            ))
        })
    }

    fn user_email<'a>(&'a self, user: &'a str) -> ChatFuture<'a, Option<String>> {
        Box::pin(async move {
            if !self.api.configured() {
                return Ok(None);
            }
            Ok(self.person(user).await?.email)
        })
    }

    fn open_form<'a>(&'a self, _trigger: &'a str, _form: &'a Form) -> ChatFuture<'a, ()> {
        Box::pin(async {
            Err(VendorError::new(
                NAME,
                ErrorKind::Rejected {
                    status: 0,
                    message: "forms are not offered on Mattermost".to_owned(),
                },
            ))
        })
    }

    fn publish_home<'a>(&'a self, _user: &'a str, _blocks: &'a [Block]) -> ChatFuture<'a, ()> {
        Box::pin(async {
            Err(VendorError::new(
                NAME,
                ErrorKind::Rejected {
                    status: 0,
                    message: "Mattermost has no home tab".to_owned(),
                },
            ))
        })
    }

    fn post_private<'a>(
        &'a self,
        channel: &'a str,
        user: &'a str,
        message: &'a Message,
    ) -> ChatFuture<'a, ()> {
        Box::pin(async move {
            let r = self.render(message).await;
            self.api.ephemeral(channel, user, &r.message, r.props).await
        })
    }

    fn membership<'a>(&'a self, user: &'a str) -> ChatFuture<'a, Membership> {
        Box::pin(async move {
            if !self.api.configured() {
                return Ok(Membership::Unchecked);
            }
            if !crate::config::is_mattermost_id(user) {
                return Ok(Membership::Outsider(Outsider::Unknown));
            }
            Ok(self.person(user).await?.membership)
        })
    }

    fn post_notice<'a>(
        &'a self,
        channel: &'a str,
        message: &'a Message,
        outbox_id: i64,
        post: i64,
    ) -> ChatFuture<'a, Posted> {
        Box::pin(async move {
            let mut r = self.render(message).await;
            if let Some(props) = r.props.as_object_mut() {
                props.insert(NOTICE_PROP.to_owned(), json!(post.to_string()));
                props.insert("pantheon_outbox".to_owned(), json!(outbox_id.to_string()));
            }
            let created = self
                .api
                .create_post(channel, None, &r.message, r.props)
                .await?;
            Ok(Posted {
                channel: channel.to_owned(),
                at: created.id,
            })
        })
    }

    fn find_notice<'a>(
        &'a self,
        channel: &'a str,
        since: OffsetDateTime,
        post: i64,
    ) -> ChatFuture<'a, Option<String>> {
        Box::pin(async move {
            let wanted = post.to_string();
            let posts = self.api.posts_since(channel, since).await?;
            Ok(posts
                .into_iter()
                .find(|p| p.props.get(NOTICE_PROP).and_then(|v| v.as_str()) == Some(&wanted))
                .map(|p| p.id))
        })
    }
}
