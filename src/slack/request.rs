//! What Slack asks of us, parsed once into types: a slash command, or clicks on our buttons
//! (each a typed [`Action`]: which request, which decision). The parsers take the request's
//! fields, not the transport, so the same ones serve another way in for the same payloads.

use serde::Deserialize;

use super::blocks::{UnknownAction, parse_action};
use crate::chat::Action;

/// One request from Slack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Slack checking our certificate: answer 200 and do nothing.
    SslCheck,
    Command(SlashCommand),
    Clicks(Clicks),
    /// The Events API checking our URL: answer with the challenge.
    UrlVerification {
        challenge: String,
    },
    /// Someone addressed the app in a channel (`app_mention`).
    Mention(Mention),
    /// A form of ours submitted (`view_submission`).
    Submission(Submission),
    /// A global or message shortcut (`shortcut`, `message_action`).
    Shortcut(Shortcut),
    /// Someone opened the app's home tab (`app_home_opened`).
    HomeOpened {
        user: String,
    },
    /// An interaction of a type we do not handle (`kind`), from `user`: acknowledged and left
    /// alone.
    Ignored {
        kind: String,
        user: String,
    },
}

/// Clicks on buttons of one message (`block_actions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clicks {
    /// Who clicked.
    pub user: String,
    /// Where the message is (empty when Slack did not say).
    pub channel: String,
    /// Where to answer the clicker, as received: the edge checks it before use.
    pub response_url: Option<String>,
    /// What each click asks, or why it is not one of ours.
    pub actions: Vec<Result<Action, UnknownAction>>,
    /// Slack's id of this interaction (unique to it): what a Socket Mode delivery is claimed
    /// on, where no signature makes it unique.
    pub trigger_id: Option<String>,
}

/// A submitted modal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    pub user: String,
    pub user_name: String,
    pub team_id: String,
    /// The view's `callback_id`: ours is [`super::views::CALLBACK_ID`].
    pub callback_id: String,
    /// The view's `private_metadata`: what the form is for, sealed.
    pub sealed: String,
    pub values: crate::domain::form::Values,
    /// Slack's id of this submission (a new one each time, even for the same view submitted
    /// again after errors): what a Socket Mode delivery is claimed on.
    pub trigger_id: String,
}

/// A shortcut: "Run a runbook" (global) or "Page on-call about this" (on a message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortcut {
    pub user: String,
    pub callback_id: String,
    pub trigger_id: String,
    /// The message a message shortcut was used on.
    pub message: Option<ShortcutMessage>,
    /// The workspace's domain (`acme` in acme.slack.com), for a link to the message.
    pub team_domain: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShortcutMessage {
    pub channel: String,
    pub ts: String,
    pub text: String,
}

/// An `app_mention` event: "@pantheon pager incidents".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mention {
    /// Slack's id of the event, the same on every retry.
    pub event_id: String,
    /// Who and where; a mention without them is stored (so a retry is known) but not answered.
    pub user: Option<String>,
    pub channel: Option<String>,
    pub team_id: String,
    /// The thread to answer in: the mention's own, or the message itself.
    pub thread: String,
    /// The text, mentions and all (a NUL in it replaced, as everywhere in the payload).
    pub text: String,
    /// The whole event, as stored with the delivery.
    pub payload: serde_json::Value,
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
    /// Slack's id of this invocation (unique to it): what a Socket Mode delivery is claimed
    /// on, where no signature makes it unique.
    pub trigger_id: String,
}

impl Request {
    /// A slash command's form (`POST /slack/commands`): a command, or Slack checking our
    /// certificate.
    pub fn command_form(body: &[u8]) -> Result<Self, String> {
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
                "trigger_id" => cmd.trigger_id = value.into_owned(),
                "response_url" => {
                    cmd.response_url = value.into_owned();
                    seen_response_url = true;
                }
                _ => {}
            }
        }
        if ssl_check && !seen_command {
            return Ok(Request::SslCheck);
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
        Ok(Request::Command(cmd))
    }

    /// A slash command as Socket Mode sends it: the form's fields as one JSON object of
    /// strings. Read by [`Request::command_form`], so both ways in are checked alike.
    pub fn command_payload(payload: &serde_json::Value) -> Result<Self, String> {
        let fields = payload
            .as_object()
            .ok_or_else(|| "not a slash command: the payload is not an object".to_owned())?;
        let mut form = form_urlencoded::Serializer::new(String::new());
        for (key, value) in fields {
            if let Some(value) = value.as_str() {
                form.append_pair(key, value);
            }
        }
        Self::command_form(form.finish().as_bytes())
    }
}

#[derive(Debug, Deserialize)]
struct Payload {
    #[serde(rename = "type")]
    kind: String,
    user: User,
    #[serde(default)]
    view: Option<View>,
    #[serde(default)]
    callback_id: Option<String>,
    #[serde(default)]
    message: Option<Posting>,
    #[serde(default)]
    team: Option<Team>,
    #[serde(default)]
    actions: Vec<Clicked>,
    #[serde(default)]
    response_url: Option<String>,
    #[serde(default)]
    channel: Option<Channel>,
    #[serde(default)]
    container: Option<Container>,
    #[serde(default)]
    trigger_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct User {
    id: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    team_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct View {
    #[serde(default)]
    callback_id: String,
    #[serde(default)]
    private_metadata: String,
    #[serde(default)]
    state: serde_json::Value,
}

#[derive(Debug, Deserialize)]
struct Posting {
    #[serde(default)]
    text: String,
    #[serde(default)]
    ts: String,
}

#[derive(Debug, Deserialize)]
struct Team {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    domain: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Clicked {
    action_id: String,
    #[serde(default)]
    value: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Channel {
    id: String,
}

#[derive(Debug, Deserialize)]
struct Container {
    #[serde(default)]
    channel_id: Option<String>,
}

impl Request {
    /// An interaction's form (`POST /slack/interactions`): its `payload` field.
    pub fn interaction_form(body: &[u8]) -> Result<Self, String> {
        let raw = form_urlencoded::parse(body)
            .find(|(k, _)| k == "payload")
            .map(|(_, v)| v.into_owned())
            .ok_or_else(|| "no `payload` field".to_owned())?;
        let value = serde_json::from_str::<serde_json::Value>(&raw)
            .map_err(|e| format!("`payload` is not an interaction: {e}"))?;
        Self::interaction(value)
    }

    /// An interaction payload, as JSON.
    pub fn interaction(payload: serde_json::Value) -> Result<Self, String> {
        // Its strings reach the database (voter, channel): no NUL, which Postgres cannot store.
        let payload: Payload =
            serde_json::from_value(crate::domain::redact::json_without_nul(payload))
                .map_err(|e| format!("`payload` is not an interaction: {e}"))?;
        let team = payload.team.as_ref();
        match payload.kind.as_str() {
            "block_actions" => {}
            "view_submission" => {
                let view = payload
                    .view
                    .ok_or_else(|| "`payload` is not a submission: no view".to_owned())?;
                return Ok(Request::Submission(Submission {
                    user_name: payload
                        .user
                        .username
                        .or(payload.user.name)
                        .unwrap_or_else(|| payload.user.id.clone()),
                    team_id: payload
                        .user
                        .team_id
                        .or_else(|| team.and_then(|t| t.id.clone()))
                        .unwrap_or_default(),
                    user: payload.user.id,
                    callback_id: view.callback_id,
                    sealed: view.private_metadata,
                    values: super::views::values(&view.state),
                    trigger_id: payload.trigger_id.unwrap_or_default(),
                }));
            }
            "shortcut" | "message_action" => {
                let channel = payload.channel.map(|c| c.id).unwrap_or_default();
                return Ok(Request::Shortcut(Shortcut {
                    user: payload.user.id,
                    callback_id: payload.callback_id.unwrap_or_default(),
                    trigger_id: payload.trigger_id.unwrap_or_default(),
                    message: payload.message.map(|m| ShortcutMessage {
                        channel,
                        ts: m.ts,
                        text: m.text,
                    }),
                    team_domain: team.and_then(|t| t.domain.clone()).unwrap_or_default(),
                }));
            }
            _ => {
                return Ok(Request::Ignored {
                    kind: payload.kind,
                    user: payload.user.id,
                });
            }
        }
        let channel = payload
            .channel
            .map(|c| c.id)
            .or_else(|| payload.container.and_then(|c| c.channel_id))
            .unwrap_or_default();
        Ok(Request::Clicks(Clicks {
            user: payload.user.id,
            channel,
            response_url: payload.response_url,
            actions: payload
                .actions
                .iter()
                .map(|a| parse_action(&a.action_id, a.value.as_deref()))
                .collect(),
            trigger_id: payload.trigger_id,
        }))
    }

    /// An Events API body (`POST /slack/events`, as JSON). Events other than a person's
    /// `app_mention` are ignored.
    pub fn event(payload: serde_json::Value) -> Result<Self, String> {
        let payload = crate::domain::redact::json_without_nul(payload);
        let str_at = |v: &serde_json::Value, key: &str| v[key].as_str().map(str::to_owned);
        match payload["type"].as_str() {
            Some("url_verification") => {
                return Ok(Request::UrlVerification {
                    challenge: str_at(&payload, "challenge").unwrap_or_default(),
                });
            }
            Some("event_callback") => {}
            other => {
                return Ok(Request::Ignored {
                    kind: other.unwrap_or_default().to_owned(),
                    user: String::new(),
                });
            }
        }
        let event = &payload["event"];
        let kind = event["type"].as_str().unwrap_or_default();
        if kind == "app_home_opened" {
            return Ok(match (str_at(event, "user"), event["tab"].as_str()) {
                (Some(user), Some("home")) => Request::HomeOpened { user },
                (user, _) => Request::Ignored {
                    kind: kind.to_owned(),
                    user: user.unwrap_or_default(),
                },
            });
        }
        if kind != "app_mention" || event.get("bot_id").is_some_and(|b| !b.is_null()) {
            return Ok(Request::Ignored {
                kind: kind.to_owned(),
                user: str_at(event, "user").unwrap_or_default(),
            });
        }
        let event_id = str_at(&payload, "event_id").ok_or_else(|| "no event_id".to_owned())?;
        Ok(Request::Mention(Mention {
            event_id,
            user: str_at(event, "user"),
            channel: str_at(event, "channel"),
            team_id: str_at(&payload, "team_id").unwrap_or_default(),
            thread: str_at(event, "thread_ts")
                .or_else(|| str_at(event, "ts"))
                .unwrap_or_default(),
            text: str_at(event, "text").unwrap_or_default(),
            payload,
        }))
    }

    /// Who sent it, when it says.
    pub fn user(&self) -> Option<&str> {
        match self {
            Request::Command(c) => Some(&c.user_id),
            Request::Clicks(c) => Some(&c.user),
            Request::Ignored { user, .. } => Some(user),
            Request::Mention(m) => m.user.as_deref(),
            Request::Submission(s) => Some(&s.user),
            Request::Shortcut(s) => Some(&s.user),
            Request::HomeOpened { user } => Some(user),
            Request::SslCheck | Request::UrlVerification { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::approval::Decision;

    #[test]
    fn slack_docs_payloads_parse() {
        let body = "token=gIkuvaNzQIHg97ATvDxqgjtO&team_id=T0001&team_domain=example&enterprise_id=E0001&enterprise_name=Globular%20Construct%20Inc&channel_id=C2147483705&channel_name=test&user_id=U2147483697&user_name=Steve&command=/weather&text=94070&response_url=https://hooks.slack.com/commands/1234/5678&trigger_id=13345224609.738474920.8088930838d88f008e0&api_app_id=A123456";
        match Request::command_form(body.as_bytes()).unwrap() {
            Request::Command(c) => {
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
            Request::command_form(b"token=random&ssl_check=1").unwrap(),
            Request::SslCheck
        );
        let err = Request::command_form(b"{\"json\": true}").unwrap_err();
        assert!(
            err.contains("missing command, user_id, response_url"),
            "{err}"
        );
        assert!(Request::command_form(b"\xff\xfe").is_err());
        assert!(Request::command_form(b"command=%2Fops&user_id=&response_url=x").is_err());
    }

    #[test]
    fn clicks_are_typed_and_other_interactions_ignored() {
        let payload = serde_json::json!({
            "type": "block_actions",
            "user": {"id": "U1"},
            "container": {"channel_id": "C1"},
            "response_url": "https://hooks.slack.com/actions/1",
            "actions": [
                {"action_id": "approval_approve", "value": "7"},
                {"action_id": "somebody_elses"}
            ]
        });
        let Request::Clicks(clicks) = Request::interaction(payload).unwrap() else {
            panic!("clicks");
        };
        assert_eq!(
            (clicks.user.as_str(), clicks.channel.as_str()),
            ("U1", "C1")
        );
        assert_eq!(
            clicks.actions,
            [
                Ok(Action::Vote {
                    request: 7,
                    decision: Decision::Approve
                }),
                Err(UnknownAction::Id("somebody_elses".into()))
            ]
        );
        assert_eq!(
            Request::interaction(serde_json::json!({"type": "view_closed", "user": {"id": "U1"}}))
                .unwrap(),
            Request::Ignored {
                kind: "view_closed".into(),
                user: "U1".into()
            }
        );
        assert!(
            Request::interaction(
                serde_json::json!({"type": "view_submission", "user": {"id": "U1"}})
            )
            .is_err(),
            "a submission without its view"
        );
        assert!(Request::interaction(serde_json::json!({"type": "block_actions"})).is_err());
        assert!(Request::interaction_form(b"nothing=here").is_err());
    }

    #[test]
    fn events_are_mentions_challenges_or_ignored() {
        let mention = serde_json::json!({
            "type": "event_callback", "event_id": "Ev1", "team_id": "T1",
            "event": {"type": "app_mention", "user": "U1", "channel": "C1",
                      "ts": "1.2", "text": "<@UBOT> pager\u{0} incidents"}
        });
        let Request::Mention(m) = Request::event(mention).unwrap() else {
            panic!("a mention");
        };
        assert_eq!(
            (m.event_id.as_str(), m.user.as_deref(), m.channel.as_deref()),
            ("Ev1", Some("U1"), Some("C1"))
        );
        assert_eq!(
            (m.thread.as_str(), m.text.as_str()),
            ("1.2", "<@UBOT> pager\u{FFFD} incidents")
        );
        assert_eq!(
            Request::event(serde_json::json!({"type": "url_verification", "challenge": "abc"}))
                .unwrap(),
            Request::UrlVerification {
                challenge: "abc".into()
            }
        );
        let from_a_bot = serde_json::json!({
            "type": "event_callback", "event_id": "Ev2",
            "event": {"type": "app_mention", "bot_id": "B1", "user": "U2"}
        });
        assert!(matches!(
            Request::event(from_a_bot),
            Ok(Request::Ignored { .. })
        ));
        let no_id = serde_json::json!({"type": "event_callback", "event": {"type": "app_mention"}});
        assert_eq!(Request::event(no_id), Err("no event_id".to_owned()));
    }

    /// Bolt for Python's fixtures (tests/fixtures/slack): a submission, both shortcuts and a
    /// home-tab open read as ours.
    #[test]
    fn bolt_fixtures_parse() {
        let load = |text: &str| serde_json::from_str::<serde_json::Value>(text).unwrap();
        let submitted = load(include_str!(
            "../../tests/fixtures/slack/view_submission.json"
        ));
        let Request::Submission(s) = Request::interaction(submitted.clone()).unwrap() else {
            panic!("a submission");
        };
        assert_eq!(s.user, submitted["user"]["id"].as_str().unwrap());
        assert_eq!(s.team_id, submitted["user"]["team_id"].as_str().unwrap());
        assert_eq!(
            s.callback_id,
            submitted["view"]["callback_id"].as_str().unwrap()
        );
        assert_eq!(
            s.sealed,
            submitted["view"]["private_metadata"].as_str().unwrap()
        );
        assert_eq!(s.trigger_id, submitted["trigger_id"].as_str().unwrap());

        let global = load(include_str!("../../tests/fixtures/slack/shortcut.json"));
        let Request::Shortcut(g) = Request::interaction(global).unwrap() else {
            panic!("a shortcut");
        };
        assert_eq!(
            (
                g.callback_id.as_str(),
                g.trigger_id.as_str(),
                g.team_domain.as_str()
            ),
            ("test-shortcut", "111.111.xxxxxx", "workspace-domain")
        );
        assert_eq!(g.message, None);

        let on_message = load(include_str!(
            "../../tests/fixtures/slack/message_action.json"
        ));
        let Request::Shortcut(m) = Request::interaction(on_message).unwrap() else {
            panic!("a message shortcut");
        };
        assert_eq!(
            m.message,
            Some(ShortcutMessage {
                channel: "C111".into(),
                ts: "1583636382.000300".into(),
                text: "<@W222> test".into()
            })
        );

        let home = load(include_str!(
            "../../tests/fixtures/slack/app_home_opened.json"
        ));
        assert_eq!(
            Request::event(home).unwrap(),
            Request::HomeOpened {
                user: "W222".into()
            }
        );
        let mut messages_tab = load(include_str!(
            "../../tests/fixtures/slack/app_home_opened.json"
        ));
        messages_tab["event"]["tab"] = serde_json::json!("messages");
        assert!(matches!(
            Request::event(messages_tab),
            Ok(Request::Ignored { .. })
        ));
    }
}
