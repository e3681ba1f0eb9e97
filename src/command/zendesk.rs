//! `tickets …` and `ticket <id>`: Zendesk from chat.

use time::OffsetDateTime;

use super::{ArgType, CommandContext, CommandError, Declaration, HandlerResult, command, handler};
use crate::{
    chat::{self, Message, escape, link},
    clients::{
        vendor::VendorError,
        zendesk::{self, Ticket, Zendesk},
    },
};

const STATUSES: &[&str] = &["new", "open", "pending", "hold", "unsolved"];

pub fn declarations() -> Vec<Declaration> {
    vec![
        command(
            "tickets <status>",
            "Zendesk tickets by status: new, open, pending, hold or unsolved",
            handler(tickets),
        )
        .arg("status", ArgType::Choice(STATUSES))
        .family("zendesk"),
        command(
            "tickets <status> count",
            "how many Zendesk tickets have a status",
            handler(count),
        )
        .arg("status", ArgType::Choice(STATUSES))
        .family("zendesk"),
        command("ticket <id>", "one Zendesk ticket", handler(ticket))
            .arg(
                "id",
                ArgType::Int {
                    min: 1,
                    max: i64::MAX,
                },
            )
            .family("zendesk"),
    ]
}

fn client(ctx: &CommandContext) -> Result<&Zendesk, CommandError> {
    ctx.services.vendors.zendesk().ok_or_else(|| {
        VendorError::not_configured(
            zendesk::NAME,
            "ZENDESK_SUBDOMAIN (or ZENDESK_API_URL), ZENDESK_EMAIL and ZENDESK_API_TOKEN",
        )
        .into()
    })
}

fn query(status: &str) -> String {
    match status {
        "unsolved" => "type:ticket status<solved".to_owned(),
        s => format!("type:ticket status:{s}"),
    }
}

fn ticket_line(
    zd: &Zendesk,
    t: &Ticket,
    requester: Option<&str>,
    assignee: Option<&str>,
    now: OffsetDateTime,
) -> String {
    let subject = t.subject.as_deref().unwrap_or("(no subject)");
    let mut parts = vec![format!(
        "{} *{}*",
        link(&zd.ticket_link(t.id), &format!("#{}", t.id)),
        chat::escape_inline(&chat::truncate(subject, 120))
    )];
    if let Some(status) = &t.status {
        parts.push(escape(&status.to_lowercase()));
    }
    if let Some(priority) = &t.priority {
        parts.push(format!("{} priority", escape(priority)));
    }
    if let Some(created) = t.created_at {
        parts.push(format!("{} old", chat::age(created, now)));
    }
    if let Some(r) = requester {
        parts.push(format!("from {}", escape(r)));
    }
    parts.push(match assignee {
        Some(a) => format!("assigned to {}", escape(a)),
        None if t.assignee_id.is_none() => "unassigned".to_owned(),
        None => format!("assigned to user {}", t.assignee_id.unwrap_or_default()),
    });
    parts.join(" · ")
}

async fn tickets(ctx: CommandContext) -> HandlerResult {
    let zd = client(&ctx)?;
    let status = ctx.args.text("status").unwrap_or("open");
    let found = zd.search_tickets(&query(status)).await?;
    let now = OffsetDateTime::now_utc();
    let lines: Vec<String> = found
        .listing
        .items
        .iter()
        .map(|t| {
            ticket_line(
                zd,
                t,
                found.user_name(t.requester_id),
                found.user_name(t.assignee_id),
                now,
            )
        })
        .collect();
    let total = found.count.unwrap_or(lines.len() as u64);
    Ok(chat::list_message(
        &format!(
            "{total} {status} ticket{}",
            if total == 1 { "" } else { "s" }
        ),
        &lines,
        found.listing.truncated,
        &format!("No {status} tickets."),
    ))
}

async fn count(ctx: CommandContext) -> HandlerResult {
    let zd = client(&ctx)?;
    let status = ctx.args.text("status").unwrap_or("pending");
    let n = zd.count(&query(status)).await?;
    Ok(Message::text(format!(
        "{n} {status} ticket{}.",
        if n == 1 { "" } else { "s" }
    )))
}

async fn ticket(ctx: CommandContext) -> HandlerResult {
    let zd = client(&ctx)?;
    let id = u64::try_from(ctx.args.int("id").unwrap_or(0)).unwrap_or(0);
    let (t, users) = zd.ticket(id).await?;
    let name = |uid: Option<u64>| {
        uid.and_then(|uid| users.iter().find(|u| u.id == uid))
            .and_then(|u| u.name.as_deref())
    };
    let now = OffsetDateTime::now_utc();
    let line = ticket_line(zd, &t, name(t.requester_id), name(t.assignee_id), now);
    let updated = t
        .updated_at
        .map(|u| format!("Updated {} ago.", chat::age(u, now)))
        .unwrap_or_default();
    let text = format!("{line}\n{updated}");
    Ok(Message::blocks(
        text.clone(),
        vec![chat::section(&line), chat::context(&updated)],
    ))
}
