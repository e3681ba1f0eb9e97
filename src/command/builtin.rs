//! The commands every Pantheon has: `help`, `whoami`, `audit`.

use super::{ArgType, CommandContext, Declaration, HandlerResult, command, handler, help};
use crate::chat::{self, Message};

pub fn declarations() -> Vec<Declaration> {
    vec![
        command(
            "help [topic...]",
            "what you can run here; `help <topic>` for one family",
            handler(help_command),
        )
        .inline(),
        command("whoami", "your Slack id and your groups", handler(whoami)).inline(),
        command(
            "audit [n=20]",
            "the most recent audit entries",
            handler(audit),
        )
        .arg("n", ArgType::Int { min: 1, max: 100 })
        .default_groups(&["admins"]),
    ]
}

async fn help_command(ctx: CommandContext) -> HandlerResult {
    let services = &ctx.services;
    let user = &ctx.invocation.user_id;
    let topic = ctx.args.words("topic").join(" ");
    let may_run =
        |spec: &super::CommandSpec| spec.allowed(&services.catalogue.access, user).is_ok();
    let mut message = help::render(
        &ctx.registry,
        &ctx.invocation.slash,
        may_run,
        (!topic.is_empty()).then_some(topic.as_str()),
    );
    // The status line: what is locked now, where it bears on what people run.
    if topic.is_empty() || topic == "lock" || services.runbooks.find(&topic).is_some() {
        let locks = services.runbooks.locks().await.unwrap_or_default();
        if !locks.is_empty() {
            let held: Vec<String> = locks
                .iter()
                .map(|l| {
                    format!(
                        "`{}` ({})",
                        crate::chat::escape(l.what()),
                        crate::chat::mention(&l.holder)
                    )
                })
                .collect();
            let line = format!("🔒 Locked now: {}", held.join(", "));
            let text = format!("{}\n{line}", message.text);
            // A text-only answer stays text (a lone block would hide it); blocks are rebuilt
            // through `Message::blocks`, which keeps them within the platform's limit.
            message = if message.blocks.is_empty() {
                crate::chat::Message { text, ..message }
            } else {
                let mut blocks = std::mem::take(&mut message.blocks);
                blocks.push(crate::chat::context(&line));
                crate::chat::Message {
                    visibility: message.visibility,
                    replace: message.replace,
                    ..crate::chat::Message::blocks(text, blocks)
                }
            };
        }
    }
    Ok(message)
}

async fn whoami(ctx: CommandContext) -> HandlerResult {
    let user = &ctx.invocation.user_id;
    let groups = ctx.services.catalogue.access.groups_of(user);
    let groups_text = if groups.is_empty() {
        "You are in no groups.".to_owned()
    } else {
        format!(
            "Groups: {}.",
            groups
                .iter()
                .map(|g| format!("`{g}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let text = format!(
        "You are {} (`{}`). {groups_text}",
        chat::mention(user),
        chat::escape_inline(user)
    );
    Ok(Message::blocks(text.clone(), vec![chat::section(&text)]))
}

async fn audit(ctx: CommandContext) -> HandlerResult {
    let n = ctx.args.int("n").unwrap_or(20);
    let records = ctx
        .services
        .store
        .recent_audit(n)
        .await
        .map_err(|e| super::CommandError::Internal(e.to_string()))?;
    if records.is_empty() {
        return Ok(Message::text("The audit trail is empty."));
    }
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    let lines: Vec<String> = records
        .iter()
        .map(|r| {
            let e = &r.entry;
            let when = e.at.format(&format).unwrap_or_default();
            let what = e
                .command
                .as_deref()
                .map(|c| format!(" `{}`", chat::escape_inline(&chat::truncate(c, 80))))
                .unwrap_or_default();
            let took = e
                .duration_ms
                .map(|ms| format!(" ({ms} ms)"))
                .unwrap_or_default();
            let detail = e
                .detail
                .as_deref()
                .map(|d| format!(" — {}", chat::escape(&chat::truncate(d, 120))))
                .unwrap_or_default();
            let actor = if crate::config::is_slack_user_id(&e.actor) {
                chat::mention(&e.actor)
            } else {
                chat::escape(&e.actor)
            };
            format!(
                "`{when}` {actor} {}{what}: *{}*{took}{detail}",
                chat::escape(&e.action),
                e.outcome.as_str()
            )
        })
        .collect();
    let title = format!("Last {} audit entries (newest first, UTC)", records.len());
    // The link opens the whole trail for whoever holds it, so it goes only into replies no one
    // else sees: the slash command's ephemeral reply, or the local console. A reply in a
    // channel thread (an @mention) does not get it.
    let private = ctx.private_reply();
    let more = if private {
        let links = &ctx.services.links;
        let url = links.audit_url(ctx.user(), time::OffsetDateTime::now_utc());
        let minutes = links.audit_ttl().whole_minutes();
        format!(
            "The whole trail, with every step of each request: <{url}|audit page> (this link is yours, valid for {minutes} minutes)."
        )
    } else {
        format!(
            "For a link to the whole trail, run `{} audit` yourself: the link is sent only to you.",
            ctx.services.slash
        )
    };
    let mut blocks = vec![chat::header(&title)];
    blocks.extend(chat::sections_of_lines(&lines));
    blocks.push(chat::context(&more));
    let fallback = format!("{title}\n{}\n{more}", lines.join("\n"));
    Ok(Message::blocks(fallback, blocks))
}
