//! Messages as Slack shows them: Block Kit for blocks, `response_type` / `replace_original` for
//! replies, and the one table of action ids that both the renderer and the click parser use.

use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    chat::{Action, Block, Button, ButtonStyle, Message, Visibility},
    domain::approval::Decision,
};

/// Slack's `action_id`s for our buttons; a click's `value` carries the id acted on.
const APPROVE: &str = "approval_approve";
const DENY: &str = "approval_deny";
const WITHDRAW: &str = "approval_withdraw";
const SHOW_LOG: &str = "job_log";
const COMMENT: &str = "approval_comment";

/// The `action_id` and `value` of a button.
fn action_wire(action: Action) -> (&'static str, i64) {
    match action {
        Action::Vote { request, decision } => (vote_id(decision), request),
        Action::ShowLog { job } => (SHOW_LOG, job),
        Action::Comment { request } => (COMMENT, request),
    }
}

fn vote_id(decision: Decision) -> &'static str {
    match decision {
        Decision::Approve => APPROVE,
        Decision::Deny => DENY,
        Decision::Withdraw => WITHDRAW,
    }
}

/// A clicked button that is not one we render, or whose value is not an id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnknownAction {
    #[error("`{0}` is not one of our buttons")]
    Id(String),
    /// One of ours, with a value that is no id; `vote` says which vote it tried to be (none for
    /// a Log button), so the click can be refused and audited as that.
    #[error("the button's value is not an id")]
    Value { vote: Option<Decision> },
}

/// A click (`action_id`, `value`) as the action it stands for.
pub fn parse_action(action_id: &str, value: Option<&str>) -> Result<Action, UnknownAction> {
    let vote = match action_id {
        APPROVE => Some(Decision::Approve),
        DENY => Some(Decision::Deny),
        WITHDRAW => Some(Decision::Withdraw),
        SHOW_LOG | COMMENT => None,
        other => return Err(UnknownAction::Id(other.to_owned())),
    };
    let id = value
        .and_then(|v| v.parse::<i64>().ok())
        .filter(|id| *id > 0)
        .ok_or(UnknownAction::Value { vote })?;
    Ok(match vote {
        Some(decision) => Action::Vote {
            request: id,
            decision,
        },
        None if action_id == COMMENT => Action::Comment { request: id },
        None => Action::ShowLog { job: id },
    })
}

fn button(b: &Button) -> Value {
    let (action_id, id) = action_wire(b.action);
    let mut out = json!({
        "type": "button",
        "action_id": action_id,
        "value": id.to_string(),
        "text": {"type": "plain_text", "text": b.label},
    });
    if let Some(style) = b.style {
        out["style"] = json!(match style {
            ButtonStyle::Primary => "primary",
            ButtonStyle::Danger => "danger",
        });
    }
    out
}

/// One block in Block Kit. Section and context text go as `mrkdwn` as they are: Pantheon's
/// markup ([`crate::domain::markup`]) is a subset of it, escapes included.
pub fn block(b: &Block) -> Value {
    match b {
        Block::Header { text } => {
            json!({"type": "header", "text": {"type": "plain_text", "text": text, "emoji": true}})
        }
        Block::Section { text } => {
            json!({"type": "section", "text": {"type": "mrkdwn", "text": text}})
        }
        Block::Context { text } => {
            json!({"type": "context", "elements": [{"type": "mrkdwn", "text": text}]})
        }
        Block::Divider => json!({"type": "divider"}),
        Block::Actions { buttons } => {
            // A block id per row, from what its first button acts on: unique within a message
            // (approval buttons and a job's Log button act on different things).
            let block_id = buttons.first().map(|b| match b.action {
                Action::Vote { request, .. } | Action::Comment { request } => {
                    format!("approval:{request}")
                }
                Action::ShowLog { job } => format!("job:{job}"),
            });
            let mut out = json!({
                "type": "actions",
                "elements": buttons.iter().map(button).collect::<Vec<_>>(),
            });
            if let Some(id) = block_id {
                out["block_id"] = json!(id);
            }
            out
        }
    }
}

pub fn blocks(blocks: &[Block]) -> Vec<Value> {
    blocks.iter().map(block).collect()
}

/// A reply body: what an acknowledgement answers or a `response_url` is sent. Serialized
/// straight from the message (a text-only answer builds no JSON tree on the way).
#[derive(Debug, Serialize)]
pub struct Reply<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    blocks: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replace_original: Option<bool>,
    response_type: &'static str,
    text: &'a str,
}

pub fn reply(message: &Message) -> Reply<'_> {
    Reply {
        blocks: blocks(&message.blocks),
        replace_original: message.replace,
        response_type: match message.visibility {
            Visibility::Ephemeral => "ephemeral",
            Visibility::InChannel => "in_channel",
        },
        text: &message.text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat;

    #[test]
    fn replies_serialise_as_slack_expects() {
        let msg = Message::text("hi").in_channel();
        assert_eq!(
            serde_json::to_value(reply(&msg)).unwrap(),
            json!({"response_type": "in_channel", "text": "hi"})
        );
        let mut clicked = Message::blocks("t", vec![chat::section("*x*")]).replacing_original();
        assert_eq!(
            serde_json::to_value(reply(&clicked)).unwrap(),
            json!({"response_type": "ephemeral", "text": "t", "replace_original": true,
                   "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "*x*"}}]})
        );
        clicked.replace = Some(false);
        assert_eq!(
            serde_json::to_value(reply(&clicked)).unwrap()["replace_original"],
            false
        );
    }

    #[test]
    fn every_button_parses_back_to_its_action() {
        let vote = |decision| Action::Vote {
            request: 7,
            decision,
        };
        for action in [
            vote(Decision::Approve),
            vote(Decision::Deny),
            vote(Decision::Withdraw),
            Action::ShowLog { job: 9 },
            Action::Comment { request: 7 },
        ] {
            let rendered = button(&chat::button(action, "x", None));
            let parsed = parse_action(
                rendered["action_id"].as_str().unwrap(),
                rendered["value"].as_str(),
            );
            assert_eq!(parsed, Ok(action));
        }
    }

    #[test]
    fn clicks_that_are_not_ours_or_carry_no_id_are_refused() {
        assert_eq!(
            parse_action("other", Some("1")),
            Err(UnknownAction::Id("other".into()))
        );
        assert_eq!(
            parse_action(SHOW_LOG, Some("x")),
            Err(UnknownAction::Value { vote: None })
        );
        for bad in [
            None,
            Some(""),
            Some("1\0"),
            Some("0"),
            Some("-3"),
            Some("x"),
        ] {
            assert_eq!(
                parse_action(APPROVE, bad),
                Err(UnknownAction::Value {
                    vote: Some(Decision::Approve)
                }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn approval_buttons_render_as_before() {
        let row = crate::runbooks::jobs::report::approval_buttons(3);
        assert_eq!(
            block(&row),
            json!({
                "type": "actions",
                "block_id": "approval:3",
                "elements": [
                    {"type": "button", "action_id": "approval_approve", "style": "primary", "value": "3",
                     "text": {"type": "plain_text", "text": "Approve"}},
                    {"type": "button", "action_id": "approval_deny", "style": "danger", "value": "3",
                     "text": {"type": "plain_text", "text": "Deny"}},
                    {"type": "button", "action_id": "approval_comment", "value": "3",
                     "text": {"type": "plain_text", "text": "With comment…"}},
                    {"type": "button", "action_id": "approval_withdraw", "value": "3",
                     "text": {"type": "plain_text", "text": "Withdraw"}},
                ]
            })
        );
    }
}
