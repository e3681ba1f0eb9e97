//! A [`Message`] as Mattermost shows it: Mattermost Markdown for the text, and a message
//! attachment per row of buttons (no Block Kit here).
//!
//! Everything we did not write arrives as [`Piece::Text`] and is escaped for Markdown: every
//! character that could open a style, a link, an image, a heading, a quote or a table is
//! backslash-escaped, and an `@` is followed by a zero-width space, so that nobody's text can
//! become `@channel`, `@here`, `@all` or a mention of someone (Mattermost finds mentions in
//! text nodes, and a backslash does not stop them). We set `skip_slack_parsing` on every
//! answer, so Slack-style `<!channel>` and `<url|label>` stay text too.

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::buttons::{Buttons, CONTEXT_KEY};
use crate::{
    chat::{Block, ButtonStyle, Message},
    domain::markup::{Piece, Style, parse},
};

/// A post's content: its Markdown and its props (attachments with buttons).
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub message: String,
    pub props: Value,
}

/// Usernames for the people a message mentions, by user id (Mattermost mentions are
/// `@username`; someone not in it is shown by id).
pub type Names = std::collections::HashMap<String, String>;

/// Render `message`, sealing its buttons with `buttons` (without it, buttons are left out and
/// the text says so where it matters: it names the typed command).
pub fn render(
    message: &Message,
    buttons: Option<&Buttons>,
    names: &Names,
    now: OffsetDateTime,
) -> Rendered {
    if message.blocks.is_empty() {
        return Rendered {
            message: markdown(&message.text, names),
            props: json!({}),
        };
    }
    // What a notification shows for the buttons' attachment: the title, not the ids.
    let fallback = message
        .blocks
        .iter()
        .find_map(|b| match b {
            Block::Header { text } => Some(text.clone()),
            _ => None,
        })
        .unwrap_or_else(|| "Pantheon".to_owned());
    let mut parts: Vec<String> = Vec::new();
    let mut attachments = Vec::new();
    let mut next_id = 0usize;
    for block in &message.blocks {
        match block {
            Block::Header { text } => parts.push(format!("#### {}", escape_text(text))),
            Block::Section { text } | Block::Context { text } => parts.push(markdown(text, names)),
            Block::Divider => parts.push("---".to_owned()),
            Block::Actions { buttons: row } => {
                let Some(buttons) = buttons else { continue };
                let actions: Vec<Value> = row
                    .iter()
                    // "With comment…" opens a form, which Mattermost is not offered.
                    .filter(|b| !matches!(b.action, crate::chat::Action::Comment { .. }))
                    .map(|b| {
                        next_id += 1;
                        let mut action = json!({
                            // Letters and digits only: Mattermost's click route takes no other.
                            "id": format!("pantheon{next_id}"),
                            "type": "button",
                            "name": b.label,
                            "integration": {
                                "url": buttons.url().as_str(),
                                "context": { CONTEXT_KEY: buttons.seal(&b.action, now) },
                            },
                        });
                        if let Some(style) = b.style {
                            action["style"] = json!(match style {
                                ButtonStyle::Primary => "primary",
                                ButtonStyle::Danger => "danger",
                            });
                        }
                        action
                    })
                    .collect();
                if !actions.is_empty() {
                    attachments.push(json!({
                        "fallback": fallback,
                        "actions": actions,
                    }));
                }
            }
        }
    }
    let props = if attachments.is_empty() {
        json!({})
    } else {
        json!({ "attachments": attachments })
    };
    Rendered {
        message: parts.join("\n\n"),
        props,
    }
}

/// Our markup as Mattermost Markdown.
pub fn markdown(markup: &str, names: &Names) -> String {
    let mut out = String::with_capacity(markup.len() + 16);
    for piece in parse(markup) {
        match piece {
            Piece::Text(t) => out.push_str(&escape_text(&t)),
            Piece::Start(style) | Piece::End(style) => out.push_str(match style {
                Style::Bold => "**",
                Style::Italic => "_",
                Style::Struck => "~~",
            }),
            Piece::Code(t) => out.push_str(&code_span(&t)),
            Piece::Preformatted(t) => {
                let fence = "`".repeat(longest_run(&t, '`').max(2) + 1);
                out.push_str(&format!("{fence}\n{t}\n{fence}"));
            }
            Piece::Link { url, label } => {
                if label == url {
                    out.push_str(&format!("<{}>", link_target(url)));
                } else {
                    out.push_str(&format!("[{}]({})", escape_text(&label), link_target(url)));
                }
            }
            Piece::Mention(id) => match names.get(id) {
                Some(name) if is_username(name) => {
                    out.push('@');
                    out.push_str(name);
                }
                // Not someone Mattermost told us of: their id, as text that mentions nobody.
                _ => out.push_str(&code_span(id)),
            },
            // Never written by us; never a broadcast here.
            Piece::Broadcast(what) => out.push_str(&escape_text(&format!("<!{what}>"))),
        }
    }
    out
}

/// Text as Markdown that shows exactly it: ASCII punctuation that Markdown reads is
/// backslash-escaped; `@` gets a zero-width space after it (no mention, no broadcast).
pub fn escape_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    let mut line_start = true;
    for c in text.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '~' | '[' | ']' | '<' | '>' | '#' | '|' | '!' => {
                out.push('\\');
                out.push(c);
            }
            // A list item or a rule only where a line begins.
            '-' | '+' if line_start => {
                out.push('\\');
                out.push(c);
            }
            '@' => {
                out.push('@');
                out.push('\u{200B}');
            }
            c => out.push(c),
        }
        line_start = c == '\n' || (line_start && c == ' ');
    }
    out
}

/// `text` as a code span (never scanned for mentions), with a fence longer than any run of
/// backticks inside it.
pub fn code(text: &str) -> String {
    code_span(text)
}

fn code_span(text: &str) -> String {
    let fence = "`".repeat(longest_run(text, '`') + 1);
    let pad = if text.starts_with('`') || text.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{text}{pad}{fence}")
}

fn longest_run(text: &str, c: char) -> usize {
    let (mut best, mut run) = (0, 0);
    for x in text.chars() {
        run = if x == c { run + 1 } else { 0 };
        best = best.max(run);
    }
    best
}

/// A link target with nothing in it that would end the link early.
fn link_target(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    for c in url.chars() {
        match c {
            ' ' => out.push_str("%20"),
            '(' => out.push_str("%28"),
            ')' => out.push_str("%29"),
            '<' => out.push_str("%3C"),
            '>' => out.push_str("%3E"),
            c => out.push(c),
        }
    }
    out
}

/// Mattermost usernames: lower-case letters, digits, `.`, `-` and `_`.
fn is_username(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && !matches!(name, "all" | "channel" | "here")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{Action, Button, escape, link, mention};
    use crate::domain::approval::Decision;

    fn names() -> Names {
        [("aaaaaaaaaaaaaaaaaaaaaaaaaa".to_owned(), "alice".to_owned())].into()
    }

    #[test]
    fn nobody_s_text_becomes_a_broadcast_a_mention_or_a_link() {
        let hostile = "@channel @here @all @alice [click](https://evil.example) <!channel> <https://x|y> # heading\n> quote | a | b |\n![img](https://x/i.png)";
        let md = markdown(&escape(hostile), &names());
        for word in ["@channel", "@here", "@all", "@alice"] {
            assert!(!md.contains(word), "{word} survived in {md}");
        }
        assert!(!md.contains("[click]("), "{md}");
        assert!(!md.contains("!["), "{md}");
        assert!(md.contains("\\# heading"), "{md}");
        assert!(md.contains("\\> quote"), "{md}");
        // Shown as typed, once the escapes are read.
        let shown: String = md.replace(['\u{200B}', '\\'], "");
        assert_eq!(shown, hostile.replace('\\', ""));
    }

    #[test]
    fn our_own_links_mentions_and_code_are_kept() {
        let text = format!(
            "{} approved {} `{}`\n{}",
            mention("aaaaaaaaaaaaaaaaaaaaaaaaaa"),
            link("https://pantheon.example.com/jobs/1?t=a b", "job (log)"),
            "v1.2",
            crate::chat::code_block("log ``` line @channel", 100)
        );
        let md = markdown(&text, &names());
        assert_eq!(
            md,
            "@alice approved [job (log)](https://pantheon.example.com/jobs/1?t=a%20b) `v1.2`\n```\nlog \'\'\' line @channel\n```"
        );
        assert_eq!(code("a`b"), "``a`b``");
        // Someone we know nothing of is shown by id, mentioning nobody.
        assert_eq!(
            markdown(&mention("bbbbbbbbbbbbbbbbbbbbbbbbbb"), &names()),
            "`bbbbbbbbbbbbbbbbbbbbbbbbbb`"
        );
    }

    #[test]
    fn buttons_become_one_attachment_with_sealed_contexts() {
        let buttons = Buttons::new(
            b"0123456789abcdef0123456789abcdef",
            &url::Url::parse("https://pantheon.example.com").unwrap(),
            std::time::Duration::from_secs(60),
        );
        let approve = Action::Vote {
            request: 7,
            decision: Decision::Approve,
        };
        let message = Message::blocks(
            "Request #7",
            vec![
                Block::Header {
                    text: "Deploy *api*".into(),
                },
                Block::Section {
                    text: "waiting".into(),
                },
                Block::Actions {
                    buttons: vec![Button {
                        action: approve,
                        label: "Approve".into(),
                        style: Some(ButtonStyle::Primary),
                    }],
                },
            ],
        );
        let now = OffsetDateTime::now_utc();
        let r = render(&message, Some(&buttons), &Names::new(), now);
        assert_eq!(r.message, "#### Deploy \\*api\\*\n\nwaiting");
        let action = &r.props["attachments"][0]["actions"][0];
        assert_eq!(action["id"], "pantheon1");
        assert_eq!(action["style"], "primary");
        assert_eq!(
            action["integration"]["url"],
            "https://pantheon.example.com/mattermost/actions"
        );
        let sealed = action["integration"]["context"][CONTEXT_KEY]
            .as_str()
            .unwrap();
        assert_eq!(buttons.unseal(sealed, now), Ok(approve));
        // Without a key there are no buttons.
        let bare = render(&message, None, &Names::new(), now);
        assert_eq!(bare.props, json!({}));
    }
}
