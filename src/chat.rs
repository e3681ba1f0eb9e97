//! What we say in chat: messages of blocks ([`Block`]) with a plain-text fallback, built with
//! small helpers that keep to the platforms' limits and escape everything we did not write.
//! Text is in Pantheon's markup, whose writers and reader live in [`crate::domain::markup`].
//! Nothing here is any platform's wire format; each chat edge renders a [`Message`] its own way.

use std::{future::Future, pin::Pin};

use time::OffsetDateTime;
use url::Url;

use crate::clients::vendor::VendorError;
pub use crate::domain::form::Form;
pub use crate::domain::markup::{
    code_block, escape, escape_inline, link, mention, truncate, unescape,
};
pub use crate::domain::message::{Action, Block, Button, ButtonStyle};

/// A message as posted: its channel and its reference there (on Slack, its `ts`). References
/// are opaque outside the platform's edge: stored, compared, handed back, never read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    pub channel: String,
    pub at: String,
}

/// A reply URL the platform gave with a request (Slack's `response_url`), checked against the
/// allow-list once, by the platform's edge ([`ChatPort::response_url`]); only a checked one can
/// be replied to, and only by the port that checked it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseUrl {
    url: Url,
    port: &'static str,
}

impl ResponseUrl {
    /// For a platform edge's policy, once it has checked `url`: answered by the port named
    /// `port` ([`ChatPort::name`]).
    pub fn checked(port: &'static str, url: Url) -> Self {
        Self { url, port }
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The name of the port that checked it.
    pub fn port(&self) -> &'static str {
        self.port
    }
}

pub type ChatFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, VendorError>> + Send + 'a>>;

/// What the rest of Pantheon needs of a chat platform: post (optionally into a thread), update
/// what it posted, reply through a request's reply URL, look up a person's email, and post
/// outbox notices in a way that a sender which died mid-post can recognise afterwards.
pub trait ChatPort: Send + Sync {
    /// Its name, as its [`ResponseUrl`]s carry it.
    fn name(&self) -> &'static str;

    /// Whether it can post at all (its bot credentials are configured).
    fn configured(&self) -> bool;

    /// Whether `id` (a channel's or a person's) is one of this platform's: each platform's ids
    /// have their own documented shape, so a stored channel or a group member names its
    /// platform by itself, and [`Chats`] sends each call where it belongs.
    fn owns(&self, id: &str) -> bool;

    fn post<'a>(
        &'a self,
        channel: &'a str,
        thread: Option<&'a str>,
        message: &'a Message,
    ) -> ChatFuture<'a, Posted>;

    fn update<'a>(
        &'a self,
        channel: &'a str,
        at: &'a str,
        message: &'a Message,
    ) -> ChatFuture<'a, ()>;

    /// The reply URL, if the policy lets us post to it; otherwise why not.
    fn response_url(&self, raw: &str) -> Result<ResponseUrl, String>;

    /// Answer a request through its reply URL (ephemeral unless the message says otherwise).
    fn reply<'a>(&'a self, to: &'a ResponseUrl, message: &'a Message) -> ChatFuture<'a, ()>;

    /// A person's email, when the platform will tell.
    fn user_email<'a>(&'a self, user: &'a str) -> ChatFuture<'a, Option<String>>;

    /// Open `form` for the person whose action gave `trigger` (Slack's `trigger_id`: good
    /// once, for 3 s). `Rejected` with the platform's reason (`expired_trigger_id`) when it
    /// would not.
    fn open_form<'a>(&'a self, trigger: &'a str, form: &'a Form) -> ChatFuture<'a, ()>;

    /// Show `user` their home: what is waiting for them (Slack's App Home tab).
    fn publish_home<'a>(&'a self, user: &'a str, blocks: &'a [Block]) -> ChatFuture<'a, ()>;

    /// Post `message` in `channel` for `user` alone.
    fn post_private<'a>(
        &'a self,
        channel: &'a str,
        user: &'a str,
        message: &'a Message,
    ) -> ChatFuture<'a, ()>;

    /// Whether `user` is a full member of the workspace the app is installed in (looked up once,
    /// then remembered for a short time). An error: the platform could not say just now.
    fn membership<'a>(&'a self, user: &'a str) -> ChatFuture<'a, Membership>;

    /// Post outbox row `outbox_id` as try `post` (a token unique to each try), marked so that
    /// [`ChatPort::find_notice`] can find it again.
    fn post_notice<'a>(
        &'a self,
        channel: &'a str,
        message: &'a Message,
        outbox_id: i64,
        post: i64,
    ) -> ChatFuture<'a, Posted>;

    /// The reference of what try `post` posted to `channel` since `since`, if it got there.
    fn find_notice<'a>(
        &'a self,
        channel: &'a str,
        since: OffsetDateTime,
        post: i64,
    ) -> ChatFuture<'a, Option<String>>;
}

/// Every chat platform behind one port. A call that names a channel or a person goes to the
/// platform that [`ChatPort::owns`] it; a reply to the port that checked its URL; what names
/// neither (a form's trigger) to the first port. Built by `app` from the platforms configured;
/// the code above the edges sees one port, whichever platform a request came from.
pub struct Chats {
    /// In order of preference; never empty.
    ports: Vec<std::sync::Arc<dyn ChatPort>>,
}

impl Chats {
    /// `first`, then `others`, in order of preference; `first` also takes what names no
    /// channel or person.
    pub fn new(
        first: std::sync::Arc<dyn ChatPort>,
        others: impl IntoIterator<Item = std::sync::Arc<dyn ChatPort>>,
    ) -> Self {
        let mut ports = vec![first];
        ports.extend(others);
        Self { ports }
    }

    /// The first configured port, else the first.
    fn first(&self) -> &dyn ChatPort {
        let port = self.ports.iter().find(|p| p.configured());
        &**port.unwrap_or(&self.ports[0])
    }

    /// The port for `id`: its owner, else the first configured port.
    fn of(&self, id: &str) -> &dyn ChatPort {
        match self.ports.iter().find(|p| p.owns(id)) {
            Some(p) => &**p,
            None => self.first(),
        }
    }
}

impl ChatPort for Chats {
    fn name(&self) -> &'static str {
        "chats"
    }

    fn configured(&self) -> bool {
        self.ports.iter().any(|p| p.configured())
    }

    fn owns(&self, id: &str) -> bool {
        self.ports.iter().any(|p| p.owns(id))
    }

    fn post<'a>(
        &'a self,
        channel: &'a str,
        thread: Option<&'a str>,
        message: &'a Message,
    ) -> ChatFuture<'a, Posted> {
        self.of(channel).post(channel, thread, message)
    }

    fn update<'a>(
        &'a self,
        channel: &'a str,
        at: &'a str,
        message: &'a Message,
    ) -> ChatFuture<'a, ()> {
        self.of(channel).update(channel, at, message)
    }

    /// The first port whose policy accepts `raw`; otherwise the first port's reason.
    fn response_url(&self, raw: &str) -> Result<ResponseUrl, String> {
        let mut first_refusal = None;
        for port in &self.ports {
            match port.response_url(raw) {
                Ok(url) => return Ok(url),
                Err(why) => {
                    first_refusal.get_or_insert(why);
                }
            }
        }
        Err(first_refusal.unwrap_or_default())
    }

    fn reply<'a>(&'a self, to: &'a ResponseUrl, message: &'a Message) -> ChatFuture<'a, ()> {
        match self.ports.iter().find(|p| p.name() == to.port()) {
            Some(port) => port.reply(to, message),
            None => self.first().reply(to, message),
        }
    }

    fn user_email<'a>(&'a self, user: &'a str) -> ChatFuture<'a, Option<String>> {
        self.of(user).user_email(user)
    }

    fn open_form<'a>(&'a self, trigger: &'a str, form: &'a Form) -> ChatFuture<'a, ()> {
        self.ports[0].open_form(trigger, form)
    }

    fn publish_home<'a>(&'a self, user: &'a str, blocks: &'a [Block]) -> ChatFuture<'a, ()> {
        self.of(user).publish_home(user, blocks)
    }

    fn post_private<'a>(
        &'a self,
        channel: &'a str,
        user: &'a str,
        message: &'a Message,
    ) -> ChatFuture<'a, ()> {
        self.of(channel).post_private(channel, user, message)
    }

    /// Asked of the person's own platform (without its bot token it answers `Unchecked`;
    /// another platform's token says nothing of them).
    fn membership<'a>(&'a self, user: &'a str) -> ChatFuture<'a, Membership> {
        self.of(user).membership(user)
    }

    fn post_notice<'a>(
        &'a self,
        channel: &'a str,
        message: &'a Message,
        outbox_id: i64,
        post: i64,
    ) -> ChatFuture<'a, Posted> {
        self.of(channel)
            .post_notice(channel, message, outbox_id, post)
    }

    fn find_notice<'a>(
        &'a self,
        channel: &'a str,
        since: OffsetDateTime,
        post: i64,
    ) -> ChatFuture<'a, Option<String>> {
        self.of(channel).find_notice(channel, since, post)
    }
}

/// What the platform says of a person, for the one check every vote, command and form
/// submission passes: people from outside the workspace, guests and deactivated accounts do
/// not act here, whatever groups list them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    /// A full member of the workspace the app is installed in.
    Member,
    /// Not looked up: the platform cannot be asked (no bot credentials).
    Unchecked,
    /// Not someone who may act here.
    Outsider(Outsider),
}

/// Why someone may not act here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outsider {
    /// From another workspace (a shared channel).
    OtherWorkspace,
    /// A guest account (single- or multi-channel).
    Guest,
    /// A deactivated account.
    Deactivated,
    /// The platform does not know them.
    Unknown,
}

impl Outsider {
    pub fn as_str(self) -> &'static str {
        match self {
            Outsider::OtherWorkspace => "from another workspace",
            Outsider::Guest => "a guest account",
            Outsider::Deactivated => "a deactivated account",
            Outsider::Unknown => "unknown to the chat platform",
        }
    }
}

/// How a failed lookup counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenUnsure {
    /// Refuse (a vote: an approval must be from someone we know may give it).
    Refuse,
    /// Let it through, with a warning in the log (a command: its own rules still apply).
    Allow,
}

/// Most time a lookup may take on the acknowledgement path.
pub const MEMBERSHIP_PATIENCE: std::time::Duration = std::time::Duration::from_millis(1500);

/// Whether `user` may act here at all; if not, what they are told (and the audit row says).
pub async fn may_act(chat: &dyn ChatPort, user: &str, unsure: WhenUnsure) -> Result<(), String> {
    if !chat.configured() {
        return Ok(());
    }
    let looked_up = tokio::time::timeout(MEMBERSHIP_PATIENCE, chat.membership(user)).await;
    match looked_up {
        Ok(Ok(Membership::Member | Membership::Unchecked)) => Ok(()),
        Ok(Ok(Membership::Outsider(why))) => Err(format!(
            "Only members of this workspace may do this here, and your account is {}; nothing was done.",
            why.as_str()
        )),
        failed => {
            let why = match failed {
                Ok(Err(e)) => e.to_string(),
                _ => format!("no answer within {} ms", MEMBERSHIP_PATIENCE.as_millis()),
            };
            match unsure {
                WhenUnsure::Allow => {
                    tracing::warn!(error = %why, "membership not checked; allowed");
                    Ok(())
                }
                WhenUnsure::Refuse => {
                    tracing::warn!(error = %why, "membership not checked; refused");
                    Err("The chat platform could not confirm your account just now, so nothing was decided. Try again shortly.".to_owned())
                }
            }
        }
    }
}

/// Limits, Slack's being the tightest (api.slack.com/reference/block-kit): 50 blocks per
/// message, 3000 characters of section text, 150 of header text, 4000 of fallback text.
pub const MAX_BLOCKS: usize = 50;
pub const MAX_SECTION_TEXT: usize = 3000;
pub const MAX_HEADER_TEXT: usize = 150;
pub const MAX_FALLBACK_TEXT: usize = 4000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Visibility {
    /// Only the person who ran the command sees it.
    #[default]
    Ephemeral,
    /// Everyone in the channel sees it, with the command that was typed.
    InChannel,
}

/// A reply, a post or a notice.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Message {
    pub visibility: Visibility,
    /// The fallback text: complete on its own (notifications, the console, screen readers).
    pub text: String,
    pub blocks: Vec<Block>,
    /// For a reply to a click: whether it takes the place of the message clicked (`Some(true)`),
    /// must not (`Some(false)`), or the platform's default applies (`None`).
    pub replace: Option<bool>,
}

impl Message {
    /// A message with only text, in our markup ([`crate::domain::markup`]).
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: truncate(&text.into(), MAX_FALLBACK_TEXT),
            ..Self::default()
        }
    }

    /// A message of blocks with its fallback text. Blocks past Slack's limit are dropped and
    /// the last kept block says how many were cut.
    pub fn blocks(text: impl Into<String>, mut blocks: Vec<Block>) -> Self {
        if blocks.len() > MAX_BLOCKS {
            let cut = blocks.len() - (MAX_BLOCKS - 1);
            blocks.truncate(MAX_BLOCKS - 1);
            blocks.push(context(&format!("… {cut} more blocks not shown")));
        }
        Self {
            text: truncate(&text.into(), MAX_FALLBACK_TEXT),
            blocks,
            ..Self::default()
        }
    }

    pub fn in_channel(mut self) -> Self {
        self.visibility = Visibility::InChannel;
        self
    }

    pub fn replacing_original(mut self) -> Self {
        self.replace = Some(true);
        self
    }
}

pub fn section(markup: &str) -> Block {
    Block::Section {
        text: truncate(markup, MAX_SECTION_TEXT),
    }
}

/// A header block. `plain` is text as it should read (not escaped): it is escaped here like every
/// other text we send, since Slack decodes `&amp;`, `&lt;` and `&gt;` in all text.
pub fn header(plain: &str) -> Block {
    Block::Header {
        text: escape_within(plain, MAX_HEADER_TEXT),
    }
}

/// [`escape`], cut so that the escaped text is at most `max` characters (an entity is never cut
/// in half): Slack refuses a header longer than its limit.
pub fn escape_within(text: &str, max: usize) -> String {
    let escaped = escape(text);
    if escaped.chars().count() <= max {
        return escaped;
    }
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let piece = match c {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            c => c.to_string(),
        };
        let len = piece.chars().count();
        if used + len > max.saturating_sub(1) {
            break;
        }
        out.push_str(&piece);
        used += len;
    }
    out.push('…');
    out
}

pub fn context(markup: &str) -> Block {
    Block::Context {
        text: truncate(markup, MAX_SECTION_TEXT),
    }
}

pub fn divider() -> Block {
    Block::Divider
}

/// A row of buttons.
pub fn buttons(buttons: Vec<Button>) -> Block {
    Block::Actions { buttons }
}

pub fn button(action: Action, label: &str, style: Option<ButtonStyle>) -> Button {
    Button {
        action,
        label: label.to_owned(),
        style,
    }
}

/// How long ago `then` was, in one unit: `45s`, `12m`, `3h`, `2d`.
pub fn age(then: time::OffsetDateTime, now: time::OffsetDateTime) -> String {
    let secs = (now - then).whole_seconds().max(0);
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// `2026-11-24 14:05 UTC`.
pub fn when(t: time::OffsetDateTime) -> String {
    let f = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    t.to_offset(time::UtcOffset::UTC)
        .format(&f)
        .unwrap_or_default()
}

/// Most lines in a list answer; the rest are counted, not shown.
pub const MAX_LIST_LINES: usize = 40;

/// A titled list: header, the lines (cut at [`MAX_LIST_LINES`]), and a footer saying what was
/// cut, both here and by the vendor's pagination cap. Empty lists say `empty`. `title` is plain
/// text (escaped here); `lines` and `empty` are mrkdwn, already escaped by the caller.
pub fn list_message(title: &str, lines: &[String], fetch_truncated: bool, empty: &str) -> Message {
    if lines.is_empty() {
        return Message::text(empty.to_owned());
    }
    let shown = &lines[..lines.len().min(MAX_LIST_LINES)];
    let mut notes = Vec::new();
    if lines.len() > shown.len() {
        notes.push(format!(
            "… and {} more not shown.",
            lines.len() - shown.len()
        ));
    }
    if fetch_truncated {
        notes.push(format!(
            "The list was cut after {} items; there are more.",
            lines.len()
        ));
    }
    let mut blocks = vec![header(title)];
    blocks.extend(sections_of_lines(shown));
    if !notes.is_empty() {
        blocks.push(context(&notes.join(" ")));
    }
    let mut fallback = vec![escape(title)];
    fallback.extend(shown.iter().cloned());
    fallback.extend(notes);
    Message::blocks(fallback.join("\n"), blocks)
}

/// Split lines into as few sections as fit Slack's per-section limit.
pub fn sections_of_lines(lines: &[String]) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut current = String::new();
    for line in lines {
        let line = truncate(line, MAX_SECTION_TEXT);
        if !current.is_empty() && current.len() + 1 + line.len() > MAX_SECTION_TEXT {
            blocks.push(section(&current));
            current.clear();
        }
        if !current.is_empty() {
            current.push('\n');
        }
        current.push_str(&line);
    }
    if !current.is_empty() {
        blocks.push(section(&current));
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_neutralises_mentions_and_links() {
        assert_eq!(
            escape("<!channel> & <@U1>"),
            "&lt;!channel&gt; &amp; &lt;@U1&gt;"
        );
        assert!(!escape_inline("*bold* `code`").contains(['*', '`']));
        assert_eq!(escape_inline("snake_case"), "snake_case");
        assert_eq!(
            link("https://x.test/a|b>c", "A <b>"),
            "<https://x.test/a%7Cb%3Ec|A &lt;b&gt;>"
        );
    }

    #[test]
    fn an_escaped_header_keeps_to_slacks_limit() {
        let long = "&".repeat(200);
        let Block::Header { text } = header(&long) else {
            unreachable!()
        };
        assert!(text.chars().count() <= MAX_HEADER_TEXT, "{}", text.len());
        assert!(text.ends_with("&amp;…"), "no entity cut in half: {text}");
        assert_eq!(
            header("a < b"),
            Block::Header {
                text: "a &lt; b".into()
            }
        );
    }

    #[test]
    fn program_output_is_inert() {
        let block = code_block("done <!channel> <https://evil.example|click> ``` *x*", 200);
        assert_eq!(
            block,
            "```done &lt;!channel&gt; &lt;https://evil.example|click&gt; ''' *x*```"
        );
    }

    #[test]
    fn limits_are_kept() {
        let long = "x".repeat(5000);
        let msg = Message::text(long.clone());
        assert_eq!(msg.text.chars().count(), MAX_FALLBACK_TEXT);
        let blocks: Vec<Block> = (0..60).map(|i| section(&i.to_string())).collect();
        let msg = Message::blocks("t", blocks);
        assert_eq!(msg.blocks.len(), MAX_BLOCKS);
        assert_eq!(msg.blocks[49], context("… 11 more blocks not shown"));
        let lines: Vec<String> = (0..100).map(|_| "y".repeat(100)).collect();
        let sections = sections_of_lines(&lines);
        assert_eq!(sections.len(), 4);
        for s in &sections {
            let Block::Section { text } = s else {
                unreachable!()
            };
            assert!(text.len() <= MAX_SECTION_TEXT);
        }
    }

    #[test]
    fn ages_and_lists() {
        let now = time::macros::datetime!(2026-11-24 12:00 UTC);
        assert_eq!(age(now - time::Duration::minutes(12), now), "12m");
        assert_eq!(age(now - time::Duration::hours(50), now), "2d");
        assert_eq!(age(now + time::Duration::hours(1), now), "0s");
        let lines: Vec<String> = (0..45).map(|i| format!("line {i}")).collect();
        let msg = list_message("Things", &lines, true, "none");
        assert!(msg.text.contains("… and 5 more not shown."));
        assert!(msg.text.contains("The list was cut after 45 items"));
        assert_eq!(
            list_message("Things", &[], false, "Nothing.").text,
            "Nothing."
        );
    }
}
