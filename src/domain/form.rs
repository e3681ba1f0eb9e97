//! Forms: what Pantheon asks people to fill in (a runbook's parameters, a comment on a vote,
//! who to page), described without any platform's widgets. Each chat edge renders a [`Form`]
//! its own way (on Slack, a modal) and hands back what was typed as field name → value.
//!
//! What submitting a form does is its [`Purpose`], which travels with the form sealed
//! ([`crate::seal`]) so a changed one is refused.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Slack's limits for a modal: a title of 24 characters, a submit label of 24, 100 options in
/// a select, 3000 characters of hint.
pub const MAX_TITLE: usize = 24;
pub const MAX_OPTIONS: usize = 100;

/// Most characters in a comment on a vote.
pub const MAX_COMMENT: usize = 500;

/// A form to fill in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Form {
    /// What submitting it does, sealed: the edge carries it as it is and gives it back.
    pub sealed: String,
    /// Plain text, at most [`MAX_TITLE`] characters.
    pub title: String,
    /// The submit button's label (plain text).
    pub submit: String,
    /// Said above the fields, in Pantheon's markup.
    pub intro: Option<String>,
    pub fields: Vec<Field>,
}

/// One thing to fill in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The key its value comes back under.
    pub name: String,
    /// Plain text.
    pub label: String,
    pub kind: FieldKind,
    /// Plain text shown under the field.
    pub hint: Option<String>,
    pub initial: Option<String>,
    pub optional: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldKind {
    /// Free text, at most `max` characters.
    Text { multiline: bool, max: usize },
    /// One of these values.
    Choice(Vec<String>),
    /// A channel, the current one by default: where the answer goes.
    Channel,
    /// A person (their chat id comes back).
    Person,
}

impl Field {
    pub fn text(name: &str, label: &str) -> Self {
        Self {
            name: name.to_owned(),
            label: label.to_owned(),
            kind: FieldKind::Text {
                multiline: false,
                max: 200,
            },
            hint: None,
            initial: None,
            optional: false,
        }
    }

    pub fn kind(mut self, kind: FieldKind) -> Self {
        self.kind = kind;
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn initial(mut self, value: Option<String>) -> Self {
        self.initial = value;
        self
    }

    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }
}

/// What submitting a form does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case")]
pub enum Purpose {
    /// Ask for a run of `runbook` with the form's values as its parameters, answered in
    /// `channel` (None: the form has a channel field).
    Run {
        runbook: String,
        channel: Option<String>,
    },
    /// Choose a runbook (and a channel), then fill in its parameters.
    PickRunbook,
    /// Vote on approval request `request` with a comment.
    Comment { request: i64, channel: String },
    /// Page someone about a message (`pager trigger`), answered in `channel`.
    Page { channel: String },
}

/// What a submission says, by field name. A field left empty is absent.
pub type Values = BTreeMap<String, String>;

/// Per-field errors (field name → what is wrong), shown beside the fields.
pub type FieldErrors = BTreeMap<String, String>;

/// The choices of an expression that is a plain alternation of literal words, such as
/// `^(staging|production)$`: shown as a select rather than a text box. None for anything else.
pub fn alternatives(pattern: &str) -> Option<Vec<String>> {
    let inner = pattern.strip_prefix('^')?.strip_suffix('$')?;
    let inner = inner
        .strip_prefix("(?:")
        .or_else(|| inner.strip_prefix('('))?
        .strip_suffix(')')?;
    let words: Vec<String> = inner.split('|').map(str::to_owned).collect();
    let literal = |w: &String| {
        !w.is_empty()
            && w.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    (words.len() >= 2 && words.len() <= MAX_OPTIONS && words.iter().all(literal)).then_some(words)
}

/// `text` cut to `max` characters, with an ellipsis when cut.
pub fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_alternations_are_choices() {
        assert_eq!(
            alternatives("^(staging|production)$"),
            Some(vec!["staging".to_owned(), "production".to_owned()])
        );
        assert_eq!(
            alternatives("^(?:eu-1|us_2|ap3)$").map(|c| c.len()),
            Some(3)
        );
        for not in [
            // (^a)|(b$) to the regex engine, not a choice of two
            "^a|b$",
            "^[a-z0-9-]+$",
            "^(staging|prod.*)$",
            "(staging|production)",
            "^(one)$",
            "^(a||b)$",
            "^(a|b)+$",
        ] {
            assert_eq!(alternatives(not), None, "{not}");
        }
    }

    #[test]
    fn purposes_round_trip_and_clip_cuts() {
        let p = Purpose::Run {
            runbook: "deploy".into(),
            channel: Some("C1".into()),
        };
        let text = serde_json::to_string(&p).unwrap();
        assert_eq!(text, r#"{"do":"run","runbook":"deploy","channel":"C1"}"#);
        assert_eq!(serde_json::from_str::<Purpose>(&text).unwrap(), p);
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("abc", 4), "abc");
    }
}
