//! What a message is made of, whatever chat platform shows it: blocks of text and buttons that
//! name what they do. Text in [`Block::Section`] and [`Block::Context`] is Pantheon's markup
//! ([`super::markup`]: escaped, with links and mentions); a header is plain text. Each platform's
//! edge renders these in its own format (Slack: Block Kit) and parses clicks back into an
//! [`Action`], so both directions use one definition.

use serde::{Deserialize, Serialize};

use super::approval::Decision;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Block {
    /// A title line, plain text (escaped by the renderer).
    Header {
        text: String,
    },
    /// A paragraph of markup.
    Section {
        text: String,
    },
    /// A line of small print, markup.
    Context {
        text: String,
    },
    Divider,
    /// A row of buttons.
    Actions {
        buttons: Vec<Button>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Button {
    pub action: Action,
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub style: Option<ButtonStyle>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ButtonStyle {
    /// The button that moves things along.
    Primary,
    /// The button that stops something.
    Danger,
}

/// What a button does when clicked, with the id of what it acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum Action {
    /// A vote on an approval request: approve, deny, or (the requester) withdraw.
    Vote { request: i64, decision: Decision },
    /// Answer the clicker privately with a link to the job's page, if they may see it.
    ShowLog { job: i64 },
    /// Open a form to approve or deny the request with a comment.
    Comment { request: i64 },
}
