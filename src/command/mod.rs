//! The command registry: every command declared once (its usage pattern, argument types, help
//! line, who may run it, where its answer shows), and the parser, help and the Slack manifest
//! all generated from those declarations.

pub mod builtin;
pub mod deploy;
pub mod github;
pub mod grammar;
pub mod help;
pub mod pagerduty;
pub mod runbook;
pub mod zendesk;

use std::{future::Future, pin::Pin, sync::Arc};

pub use grammar::{ArgType, Args};
use grammar::{Mismatch, Usage, words};

use crate::{chat::Message, chat::Visibility, services::Services};

impl From<crate::pager::WriteError> for CommandError {
    fn from(e: crate::pager::WriteError) -> Self {
        CommandError::User(e.0)
    }
}

impl From<crate::clients::vendor::VendorError> for CommandError {
    fn from(e: crate::clients::vendor::VendorError) -> Self {
        CommandError::User(e.to_string())
    }
}

/// Where a command's answer goes.
#[derive(Debug, Clone)]
pub enum ReplyTarget {
    /// The platform's reply URL (Slack's `response_url`), checked by the edge that received it.
    ResponseUrl(crate::chat::ResponseUrl),
    /// The request came with a reply URL its edge refused (why): nothing runs, and the
    /// refusal is audited and answered in the acknowledgement.
    RefusedUrl(String),
    /// The local console.
    Console(tokio::sync::mpsc::UnboundedSender<Message>),
    /// A thread in a channel (an @mention), posted with the bot token.
    Thread { channel: String, thread_ref: String },
    /// A message in a channel for one person alone (a submitted form), posted with the bot
    /// token.
    Private { channel: String, user: String },
}

/// One command as someone typed it.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub correlation_id: String,
    pub user_id: String,
    pub user_name: String,
    pub channel_id: String,
    pub team_id: String,
    /// The slash command used, e.g. `/ops`.
    pub slash: String,
    pub text: String,
    pub reply: ReplyTarget,
    /// What makes this request unique within the replay window (its signature, or its own id
    /// where no signature came with it): a second request with the same key is a replay and is
    /// refused.
    pub replay_key: Option<String>,
    /// How it reached us; the audit trail says so.
    pub transport: Transport,
    /// The platform's handle for opening a form for this person now (Slack's `trigger_id`,
    /// good once for 3 s), if it gave one.
    pub trigger: Option<String>,
}

pub use crate::domain::audit::Transport;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a handler gets: the app's services, who asked and where, and the typed arguments.
#[derive(Clone)]
pub struct CommandContext {
    pub services: Arc<Services>,
    /// Every command, for those that list them (`help`).
    pub registry: Arc<Registry>,
    pub invocation: Arc<Invocation>,
    pub args: Args,
    /// The matched command's name, e.g. `pager ack`.
    pub command: String,
}

/// A failure the handler reports.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommandError {
    /// Said to the user as is (it must hold no secret); the audit row says failed.
    #[error("{0}")]
    User(String),
    /// Logged in full; the user gets a short apology with the correlation id.
    #[error("internal error: {0}")]
    Internal(String),
}

/// What a handler answers when it did not fail.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Done: the answer to show.
    Reply(Message),
    /// Not run now: held for a peer's approval. The message says so (and where to vote); the
    /// audit row says succeeded, with the request's own steps beside it.
    Held(Message),
}

impl From<Message> for Answer {
    fn from(message: Message) -> Self {
        Answer::Reply(message)
    }
}

/// What most handlers return; [`handler`] makes it an [`Answer`].
pub type HandlerResult = Result<Message, CommandError>;

impl CommandContext {
    /// Whether the answer is seen only by the person who asked: the slash command's ephemeral
    /// reply, or the local console. A reply in a channel thread (an @mention) is seen by the
    /// channel. Personal links and job output go only into private answers.
    pub fn private_reply(&self) -> bool {
        matches!(
            self.invocation.reply,
            ReplyTarget::ResponseUrl(_)
                | ReplyTarget::RefusedUrl(_)
                | ReplyTarget::Console(_)
                | ReplyTarget::Private { .. }
        )
    }

    /// Record one step of this command (a vendor call, a state change) in the audit trail,
    /// under the command's correlation id. Steps that act must be recorded before they act, so
    /// a failure to record stops the command.
    pub async fn audit_step(
        &self,
        action: &str,
        outcome: crate::domain::audit::Outcome,
        detail: impl Into<String>,
    ) -> Result<(), CommandError> {
        let inv = &self.invocation;
        let entry = crate::domain::audit::AuditEntry::new(
            &inv.correlation_id,
            &inv.user_id,
            action,
            outcome,
        )
        .channel(&inv.channel_id)
        .command(&inv.text)
        .detail(detail);
        self.services
            .audit
            .record(vec![entry])
            .await
            .map_err(|e| CommandError::User(format!("Nothing was done: {e}.")))
    }

    pub fn user(&self) -> &str {
        &self.invocation.user_id
    }
}
pub type Handler =
    Arc<dyn Fn(CommandContext) -> BoxFuture<Result<Answer, CommandError>> + Send + Sync>;

/// Wrap an async function that answers a [`Message`] as a [`Handler`].
pub fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(CommandContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    Arc::new(move |ctx| {
        let answered = f(ctx);
        Box::pin(async move { answered.await.map(Answer::Reply) })
    })
}

/// Wrap an async function that may hold what it was asked for a peer's approval (it answers
/// an [`Answer`]) as a [`Handler`].
pub fn answering<F, Fut>(f: F) -> Handler
where
    F: Fn(CommandContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Answer, CommandError>> + Send + 'static,
{
    Arc::new(move |ctx| Box::pin(f(ctx)))
}

/// A command as declared, before its pattern is parsed.
pub struct Declaration {
    usage: String,
    types: Vec<(String, ArgType)>,
    summary: String,
    family: Option<String>,
    permission: Option<String>,
    visibility: Visibility,
    inline: bool,
    hidden: bool,
    unlimited: bool,
    default_groups: Vec<String>,
    handler: Handler,
}

/// Declare a command: `command("pager ack [ids...]", "acknowledge incidents", handler(ack))`.
pub fn command(usage: &str, summary: &str, handler: Handler) -> Declaration {
    Declaration {
        usage: usage.to_owned(),
        types: Vec::new(),
        summary: summary.to_owned(),
        family: None,
        permission: None,
        visibility: Visibility::Ephemeral,
        inline: false,
        hidden: false,
        unlimited: false,
        default_groups: Vec::new(),
        handler,
    }
}

impl Declaration {
    pub fn arg(mut self, name: &str, ty: ArgType) -> Self {
        self.types.push((name.to_owned(), ty));
        self
    }

    /// The permission family (default: the first word).
    pub fn family(mut self, family: &str) -> Self {
        self.family = Some(family.to_owned());
        self
    }

    /// A more specific permission key checked before the family (`pager.all`).
    pub fn permission(mut self, key: &str) -> Self {
        self.permission = Some(key.to_owned());
        self
    }

    /// Answer in the channel for everyone, echoing the command.
    pub fn in_channel(mut self) -> Self {
        self.visibility = Visibility::InChannel;
        self
    }

    /// Never refused as "busy": takes no in-flight slot (votes and cancels, which are how people
    /// get out of a jam).
    pub fn unlimited(mut self) -> Self {
        self.unlimited = true;
        self
    }

    /// Answer inside the acknowledgement (for cheap commands without I/O).
    pub fn inline(mut self) -> Self {
        self.inline = true;
        self
    }

    /// Parsed but not listed in help (aliases).
    pub fn hidden(mut self) -> Self {
        self.hidden = true;
        self
    }

    /// Groups allowed when `[permissions]` says nothing about this command.
    pub fn default_groups(mut self, groups: &[&str]) -> Self {
        self.default_groups = groups.iter().map(|g| (*g).to_owned()).collect();
        self
    }
}

/// A declared command, ready to match.
pub struct CommandSpec {
    pub usage: Usage,
    /// The command words, e.g. `pager ack`: its id in metrics, audit and help.
    pub name: String,
    pub family: String,
    pub permission: Option<String>,
    pub summary: String,
    pub visibility: Visibility,
    pub inline: bool,
    pub hidden: bool,
    /// Takes no in-flight slot (see [`Declaration::unlimited`]).
    pub unlimited: bool,
    pub default_groups: Vec<String>,
    pub handler: Handler,
}

impl std::fmt::Debug for CommandSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandSpec")
            .field("name", &self.name)
            .field("usage", &self.usage.display())
            .finish_non_exhaustive()
    }
}

impl CommandSpec {
    /// Whether `user` may run this command.
    pub fn allowed(
        &self,
        access: &crate::domain::access::Access,
        user: &str,
    ) -> Result<(), crate::domain::access::Refusal> {
        access.check(
            user,
            self.permission.as_deref(),
            &self.family,
            &self.default_groups(),
        )
    }

    /// Permission keys, most specific first.
    pub fn permission_keys(&self) -> Vec<&str> {
        let mut keys = Vec::with_capacity(2);
        if let Some(p) = &self.permission {
            keys.push(p.as_str());
        }
        keys.push(self.family.as_str());
        keys
    }

    pub fn default_groups(&self) -> Vec<&str> {
        self.default_groups.iter().map(String::as_str).collect()
    }
}

/// Why text did not parse as a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Nothing after the slash command.
    Empty,
    /// Words that start a family or command but stop short (`pager`): shown as that topic's help.
    Incomplete { topic: String },
    /// No command starts like this.
    Unknown {
        typed: String,
        suggestions: Vec<String>,
    },
    /// The command is known; its arguments are not right.
    Usage {
        command: String,
        problem: String,
        usages: Vec<String>,
    },
}

impl ParseError {
    /// The chat answer, with `slash` (e.g. `/ops`) in front of every command shown.
    pub fn message(&self, slash: &str) -> String {
        match self {
            ParseError::Empty | ParseError::Incomplete { .. } => {
                format!("Type `{slash} help` to see what I can do.")
            }
            ParseError::Unknown { typed, suggestions } => {
                let mut text = format!("I don't know `{slash} {}`.", crate::chat::escape(typed));
                match suggestions.as_slice() {
                    [] => {}
                    [one] => text.push_str(&format!(" Did you mean `{slash} {one}`?")),
                    many => text.push_str(&format!(
                        " Did you mean {}?",
                        many.iter()
                            .map(|s| format!("`{slash} {s}`"))
                            .collect::<Vec<_>>()
                            .join(" or ")
                    )),
                }
                text.push_str(&format!(" Type `{slash} help` for the list of commands."));
                text
            }
            ParseError::Usage {
                command,
                problem,
                usages,
            } => {
                let mut text = format!("`{slash} {command}`: {}.", crate::chat::escape(problem));
                text.push_str("\nUsage: ");
                text.push_str(
                    &usages
                        .iter()
                        .map(|u| format!("`{slash} {}`", crate::chat::escape(u)))
                        .collect::<Vec<_>>()
                        .join(" or "),
                );
                text
            }
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            ParseError::Empty => "empty",
            ParseError::Incomplete { .. } => "incomplete",
            ParseError::Unknown { .. } => "unknown command",
            ParseError::Usage { .. } => "wrong arguments",
        }
    }
}

pub struct Registry {
    specs: Vec<CommandSpec>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.specs.iter().map(|s| &s.name))
            .finish()
    }
}

impl Registry {
    /// Build a registry from declarations. Two commands with the same usage are refused.
    pub fn build(declarations: Vec<Declaration>) -> Result<Self, String> {
        let mut specs: Vec<CommandSpec> = Vec::with_capacity(declarations.len());
        for d in declarations {
            let types: Vec<(&str, ArgType)> = d
                .types
                .iter()
                .map(|(n, t)| (n.as_str(), t.clone()))
                .collect();
            let usage = Usage::parse(&d.usage, &types)?;
            let name = usage.command_words().join(" ");
            let family = d.family.unwrap_or_else(|| {
                usage
                    .command_words()
                    .first()
                    .map(|w| (*w).to_owned())
                    .unwrap_or_default()
            });
            if let Some(other) = specs.iter().find(|s| s.usage.display() == usage.display()) {
                return Err(format!("`{}` is declared twice", other.usage.display()));
            }
            specs.push(CommandSpec {
                usage,
                name,
                family,
                permission: d.permission,
                summary: d.summary,
                visibility: d.visibility,
                inline: d.inline,
                hidden: d.hidden,
                unlimited: d.unlimited,
                default_groups: d.default_groups,
                handler: d.handler,
            });
        }
        Ok(Self { specs })
    }

    /// Who may run each command, by name, without the handlers.
    pub fn rules(&self) -> crate::domain::access::CommandRules {
        crate::domain::access::CommandRules::new(self.specs.iter().map(|s| {
            let rule = crate::domain::access::CommandRule {
                family: s.family.clone(),
                permission: s.permission.clone(),
                default_groups: s.default_groups.clone(),
            };
            (s.name.clone(), rule)
        }))
    }

    pub fn specs(&self) -> &[CommandSpec] {
        &self.specs
    }

    /// Families in declaration order.
    pub fn families(&self) -> Vec<&str> {
        let mut seen: Vec<&str> = Vec::new();
        for s in &self.specs {
            if !seen.contains(&s.family.as_str()) {
                seen.push(&s.family);
            }
        }
        seen
    }

    /// Every permission key a `[permissions]` table may name.
    pub fn permission_keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = Vec::new();
        for s in &self.specs {
            for k in s.permission_keys() {
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
        }
        keys
    }

    /// Match `text` against every command. `visible` filters what suggestions may name.
    pub fn parse(
        &self,
        text: &str,
        visible: impl Fn(&CommandSpec) -> bool,
    ) -> Result<(&CommandSpec, Args), ParseError> {
        let input = words(text);
        if input.is_empty() {
            return Err(ParseError::Empty);
        }
        let mut best: Option<(&CommandSpec, Args)> = None;
        let mut arg_failures: Vec<(&CommandSpec, String)> = Vec::new();
        for spec in &self.specs {
            match spec.usage.bind(text, &input) {
                Ok(args) => {
                    let better = best
                        .as_ref()
                        .is_none_or(|(b, _)| spec.usage.literal_count() > b.usage.literal_count());
                    if better {
                        best = Some((spec, args));
                    }
                }
                Err(Mismatch::Arg { matched, problem })
                    if matched >= spec.usage.command_words().len() =>
                {
                    arg_failures.push((spec, problem));
                }
                Err(_) => {}
            }
        }
        if let Some(found) = best {
            return Ok(found);
        }
        if !arg_failures.is_empty() {
            // Several commands may share the words typed (`pager schedule` with and without a
            // name): show every usage of the longest command name that matched.
            let longest = arg_failures
                .iter()
                .map(|(s, _)| s.usage.command_words().len())
                .max()
                .unwrap_or(0);
            arg_failures.retain(|(s, _)| s.usage.command_words().len() == longest);
            let (first, problem) = &arg_failures[0];
            return Err(ParseError::Usage {
                command: first.name.clone(),
                problem: problem.clone(),
                usages: arg_failures
                    .iter()
                    .map(|(s, _)| s.usage.display())
                    .collect(),
            });
        }
        let typed: Vec<String> = input.iter().map(|w| w.text.to_lowercase()).collect();
        let is_prefix = self.specs.iter().any(|s| {
            let cw = s.usage.command_words();
            cw.len() > typed.len()
                && cw
                    .iter()
                    .zip(&typed)
                    .all(|(a, b)| a.eq_ignore_ascii_case(b))
        });
        if is_prefix {
            return Err(ParseError::Incomplete {
                topic: typed.join(" "),
            });
        }
        Err(ParseError::Unknown {
            typed: text.trim().chars().take(100).collect(),
            suggestions: self.suggest(&typed, visible),
        })
    }

    /// Command names close to what was typed, closest first.
    fn suggest(&self, typed: &[String], visible: impl Fn(&CommandSpec) -> bool) -> Vec<String> {
        let mut scored: Vec<(usize, &str)> = Vec::new();
        for spec in self.specs.iter().filter(|s| !s.hidden && visible(s)) {
            let n = spec.usage.command_words().len().min(typed.len());
            let attempt = typed[..n].join(" ");
            let allowed = (spec.name.len() / 4).clamp(1, 3);
            // The distance is at least the difference in length, so a word far longer than any
            // name is no typo of one; the check costs lengths, where the distance would cost
            // their product (a 60,000-character word took seconds, inline).
            if attempt.chars().count().abs_diff(spec.name.chars().count()) > allowed {
                continue;
            }
            let distance = strsim::damerau_levenshtein(&attempt, &spec.name);
            if distance <= allowed && !scored.iter().any(|(_, n)| *n == spec.name) {
                scored.push((distance, &spec.name));
            }
        }
        scored.sort();
        scored
            .into_iter()
            .take(3)
            .map(|(_, n)| n.to_owned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noop() -> Handler {
        handler(|_| async { Ok(Message::text("ok")) })
    }

    fn registry() -> Registry {
        Registry::build(vec![
            command("help [topic...]", "show help", noop()).inline(),
            command("pager incidents", "list incidents", noop()),
            command("pager ack [ids...]", "ack incidents", noop()),
            command("pager schedules [query...]", "list schedules", noop()),
            command("pager schedule <name> [days=30]", "one schedule", noop())
                .arg("days", ArgType::Int { min: 1, max: 90 }),
            command("pager me as <email>", "remember me", noop()).arg("email", ArgType::Email),
            command("pager me <schedule> <minutes>", "take the pager", noop())
                .arg("minutes", ArgType::Int { min: 1, max: 1440 }),
            command("audit [n=20]", "recent audit", noop())
                .arg("n", ArgType::Int { min: 1, max: 100 }),
        ])
        .unwrap()
    }

    fn parse(text: &str) -> Result<String, ParseError> {
        registry()
            .parse(text, |_| true)
            .map(|(s, _)| s.name.clone())
    }

    #[test]
    fn commands_are_found_by_their_words() {
        assert_eq!(parse("pager incidents").unwrap(), "pager incidents");
        assert_eq!(parse("PAGER ACK P1 P2").unwrap(), "pager ack");
        assert_eq!(parse("pager schedule ops 7").unwrap(), "pager schedule");
        assert_eq!(parse("pager schedules").unwrap(), "pager schedules");
        assert_eq!(
            parse("pager me as <mailto:a@b.co|a@b.co>").unwrap(),
            "pager me as"
        );
        assert_eq!(parse("pager me primary 60").unwrap(), "pager me");
        assert_eq!(parse("help pager").unwrap(), "help");
    }

    #[test]
    fn a_typo_gets_a_suggestion() {
        match parse("pager incidnets") {
            Err(ParseError::Unknown { suggestions, .. }) => {
                assert_eq!(suggestions, ["pager incidents"])
            }
            other => panic!("{other:?}"),
        }
        match parse("adit") {
            Err(ParseError::Unknown { suggestions, .. }) => assert_eq!(suggestions, ["audit"]),
            other => panic!("{other:?}"),
        }
        match parse("frobnicate the widgets") {
            Err(ParseError::Unknown { suggestions, typed }) => {
                assert!(suggestions.is_empty());
                assert_eq!(typed, "frobnicate the widgets");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wrong_arguments_show_the_usage() {
        let err = parse("audit many").unwrap_err();
        assert_eq!(
            err.message("/ops"),
            "`/ops audit`: &lt;n&gt; must be a whole number, not `many`.\nUsage: `/ops audit [n=20]`"
        );
        let err = parse("pager schedule").unwrap_err();
        match &err {
            ParseError::Usage { usages, .. } => {
                assert_eq!(usages, &["pager schedule <name> [days=30]"])
            }
            other => panic!("{other:?}"),
        }
        let err = parse("pager me as not-an-email").unwrap_err();
        assert!(
            err.message("/ops").contains("is not an email address"),
            "{err:?}"
        );
        let err = parse("pager incidents now").unwrap_err();
        assert!(err.message("/ops").contains("unexpected `now`"));
    }

    #[test]
    fn a_bare_family_is_incomplete_and_empty_is_empty() {
        assert_eq!(
            parse("pager"),
            Err(ParseError::Incomplete {
                topic: "pager".into()
            })
        );
        assert_eq!(parse("   "), Err(ParseError::Empty));
    }

    #[test]
    fn a_huge_word_is_unknown_with_no_suggestion() {
        let reg = registry();
        let huge = "x".repeat(60_000);
        match reg.parse(&huge, |_| true) {
            Err(ParseError::Unknown { suggestions, .. }) => assert!(suggestions.is_empty()),
            other => panic!("{other:?}"),
        }
        // A typo still gets its suggestion.
        match reg.parse("adit", |_| true) {
            Err(ParseError::Unknown { suggestions, .. }) => {
                assert_eq!(suggestions, ["audit"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn suggestions_respect_visibility() {
        let reg = registry();
        match reg.parse("adit", |s| s.family != "audit") {
            Err(ParseError::Unknown { suggestions, .. }) => assert!(suggestions.is_empty()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn duplicate_declarations_are_refused() {
        let err = Registry::build(vec![
            command("pager ack", "a", noop()),
            command("pager ack", "b", noop()),
        ])
        .unwrap_err();
        assert!(err.contains("declared twice"));
    }
}
