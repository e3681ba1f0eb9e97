//! `pager …`: everything hubot-pager-me did, against PagerDuty's REST API.
//!
//! Reads answer privately; writes (ack, resolve, take the pager, maintenance, trigger) answer
//! in the channel so the team sees them, and each write is an audit step before and after the
//! call, with what was asked and what PagerDuty answered.

use time::{Duration, OffsetDateTime};

use super::{
    Answer, ArgType, CommandContext, CommandError, Declaration, HandlerResult, answering, command,
    handler,
};
use crate::{
    chat::{self, Message, escape, link, mention},
    clients::{
        pagerduty::{self, PagerDuty},
        vendor::VendorError,
    },
    domain::audit::Outcome,
    domain::held::{HeldWrite, IncidentUpdate, Scope},
    domain::policy::Gate,
    pager,
};

const DAYS: ArgType = ArgType::Int { min: 1, max: 90 };

pub fn declarations() -> Vec<Declaration> {
    vec![
        command(
            "pager incidents",
            "triggered and acknowledged incidents",
            handler(incidents),
        ),
        command(
            "pager ack [ids...]",
            "acknowledge incidents (yours when no ids are given)",
            answering(|c| update(c, IncidentUpdate::Acknowledged, Choose::Given)),
        )
        .in_channel(),
        command(
            "pager ack!",
            "acknowledge every triggered incident",
            answering(|c| update(c, IncidentUpdate::Acknowledged, Choose::All)),
        )
        .permission("pager.all")
        .default_groups(&["admins"])
        .in_channel(),
        command(
            "pager resolve [ids...]",
            "resolve incidents (yours when no ids are given)",
            answering(|c| update(c, IncidentUpdate::Resolved, Choose::Given)),
        )
        .in_channel(),
        command(
            "pager resolve!",
            "resolve every open incident",
            answering(|c| update(c, IncidentUpdate::Resolved, Choose::All)),
        )
        .permission("pager.all")
        .default_groups(&["admins"])
        .in_channel(),
        command(
            "pager oncall",
            "who is on call now, by escalation policy",
            handler(oncall),
        ),
        command(
            "pager schedules [search...]",
            "schedules, optionally matching a search",
            handler(schedules),
        ),
        command(
            "pager schedule <schedule> [days=30]",
            "one schedule's shifts for the next days",
            handler(schedule),
        )
        .arg("days", DAYS),
        command(
            "pager my schedule [days=30]",
            "your own on-call shifts for the next days",
            handler(my_schedule),
        )
        .arg("days", DAYS),
        command(
            "pager me as <email>",
            "remember your PagerDuty email",
            handler(me_as),
        )
        .arg("email", ArgType::Email),
        command(
            "pager me <schedule> <minutes>",
            "take the pager: put yourself on call for some minutes",
            answering(take_pager),
        )
        .arg(
            "minutes",
            ArgType::Int {
                min: 1,
                max: 24 * 60,
            },
        )
        .in_channel(),
        command(
            "pager maintenance <minutes> <services...>",
            "a maintenance window on services",
            answering(maintenance),
        )
        .arg(
            "minutes",
            ArgType::Int {
                min: 1,
                max: 7 * 24 * 60,
            },
        )
        .in_channel(),
        command(
            "pager services [search...]",
            "PagerDuty services",
            handler(services),
        ),
        command(
            "pager trigger <user> <message...>",
            "open an incident assigned to someone",
            answering(trigger),
        )
        .in_channel(),
    ]
}

fn client(ctx: &CommandContext) -> Result<&PagerDuty, CommandError> {
    ctx.services
        .vendors
        .pagerduty()
        .ok_or_else(|| VendorError::not_configured(pagerduty::NAME, "PAGERDUTY_API_TOKEN").into())
}

/// Who the caller is in PagerDuty: remembered (`pager me as`), else their Slack email.
struct Identity {
    email: String,
    user_id: String,
}

async fn identity(ctx: &CommandContext, pd: &PagerDuty) -> Result<Identity, CommandError> {
    let store = &ctx.services.store;
    let prefs = store
        .user_prefs(ctx.user())
        .await
        .map_err(|e| CommandError::Internal(e.to_string()))?
        .unwrap_or_default();
    let slash = &ctx.invocation.slash;
    let (email, remembered) = match prefs.pagerduty_email {
        Some(email) => (email, true),
        None => match ctx.services.chat.user_email(ctx.user()).await? {
            Some(email) => (email, false),
            None => {
                return Err(CommandError::User(format!(
                    "I don't know who you are in PagerDuty. Tell me once with `{slash} pager me as you@example.com`."
                )));
            }
        },
    };
    if let Some(user_id) = prefs.pagerduty_user_id.filter(|_| remembered) {
        return Ok(Identity { email, user_id });
    }
    let user = pd.user_by_email(&email).await?.ok_or_else(|| {
        CommandError::User(format!(
            "No PagerDuty user has the email `{}`. Set yours with `{slash} pager me as you@example.com`.",
            escape(&email)
        ))
    })?;
    store
        .set_pagerduty_identity(ctx.user(), &email, Some(&user.id))
        .await
        .map_err(|e| CommandError::Internal(e.to_string()))?;
    Ok(Identity {
        email,
        user_id: user.id,
    })
}

/// Do a PagerDuty write for the caller, or, when `[pagerduty] approval_required` names its
/// action, hold it for a peer's approval (the answer says so and where to vote).
async fn write(ctx: &CommandContext, write: HeldWrite) -> Result<Answer, CommandError> {
    if ctx.services.catalogue.pagerduty_gate(write.action()) == Gate::NeedsApproval {
        return hold_for_approval(ctx, &write).await.map(Answer::Held);
    }
    let pd = client(ctx)?;
    let inv = &ctx.invocation;
    let who = pager::Requester {
        user: inv.user_id.clone(),
        channel: inv.channel_id.clone(),
        correlation_id: inv.correlation_id.clone(),
        command: inv.text.clone(),
    };
    let message = pager::perform(&ctx.services.audit, pd, &who, &write).await?;
    Ok(Answer::Reply(message))
}

/// Open an approval request for `write` instead of doing it. The approvers see what it would
/// do now; once approved, a job does exactly that write, as the person who asked.
async fn hold_for_approval(
    ctx: &CommandContext,
    write: &HeldWrite,
) -> Result<Message, CommandError> {
    let services = &ctx.services;
    let name = crate::domain::runbook::held_name(write.action());
    let Some(runbook) = services.catalogue.any_runbook(&name) else {
        return Err(CommandError::Internal(format!("no held runbook `{name}`")));
    };
    let inv = &ctx.invocation;
    if inv.text.chars().count() > crate::domain::runbook::MAX_PARAM_LEN
        || inv.text.chars().any(char::is_control)
    {
        return Err(CommandError::User(format!(
            "`{} {}` needs a peer's approval here, and a command held for approval must be one line of at most {} characters. Nothing was done.",
            inv.slash,
            ctx.command,
            crate::domain::runbook::MAX_PARAM_LEN
        )));
    }
    let who = crate::runbooks::Requester {
        user: &inv.user_id,
        channel: &inv.channel_id,
        correlation_id: &inv.correlation_id,
        command: &inv.text,
    };
    let params = std::collections::BTreeMap::from([
        ("command".to_owned(), inv.text.clone()),
        ("write".to_owned(), write.canonical()),
    ]);
    let preview = format!("Would {}", pager::asked(write, OffsetDateTime::now_utc()));
    services
        .runbooks
        .request_with_preview(&who, runbook, params, Some(preview))
        .await
        .map_err(|e| CommandError::User(e.to_string()))
}

async fn incidents(ctx: CommandContext) -> HandlerResult {
    let pd = client(&ctx)?;
    let list = pd.incidents(&["triggered", "acknowledged"], &[]).await?;
    let now = OffsetDateTime::now_utc();
    let lines: Vec<String> = list
        .items
        .iter()
        .map(|i| pager::incident_line(i, now))
        .collect();
    let triggered = list
        .items
        .iter()
        .filter(|i| i.status.as_deref() == Some("triggered"))
        .count();
    let title = format!(
        "{} open incident{} ({triggered} triggered, {} acknowledged)",
        list.items.len(),
        pager::plural(list.items.len()),
        list.items.len() - triggered
    );
    Ok(chat::list_message(
        &title,
        &lines,
        list.truncated,
        "No triggered or acknowledged incidents.",
    ))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Choose {
    /// The ids given, or the caller's own incidents when none are.
    Given,
    /// Every open incident (the `!` commands).
    All,
}

fn valid_incident_id(id: &str) -> bool {
    (1..=32).contains(&id.len()) && id.chars().all(|c| c.is_ascii_alphanumeric())
}

async fn update(
    ctx: CommandContext,
    to: IncidentUpdate,
    choose: Choose,
) -> Result<Answer, CommandError> {
    let pd = client(&ctx)?;
    let from_statuses = to.from_statuses();
    let me = identity(&ctx, pd).await?;
    let given = ctx.args.words("ids");
    if let Some(bad) = given.iter().find(|id| !valid_incident_id(id)) {
        return Err(CommandError::User(format!(
            "`{}` is not a PagerDuty incident id (like `PT4KHLK`).",
            escape(bad)
        )));
    }
    let (ids, scope): (Vec<String>, Scope) = match (choose, given.is_empty()) {
        (Choose::Given, false) => (given.to_vec(), Scope::Given),
        (Choose::Given, true) => {
            let mine = pd.incidents(from_statuses, &[&me.user_id]).await?;
            (mine.items.into_iter().map(|i| i.id).collect(), Scope::Mine)
        }
        (Choose::All, _) => {
            let all = pd.incidents(from_statuses, &[]).await?;
            (all.items.into_iter().map(|i| i.id).collect(), Scope::All)
        }
    };
    if ids.is_empty() {
        return Ok(Answer::Reply(pager::nothing_to_update(to, scope)));
    }
    let held = HeldWrite::Update {
        to,
        ids,
        scope,
        from: me.email,
        user_id: me.user_id,
    };
    write(&ctx, held).await
}

async fn oncall(ctx: CommandContext) -> HandlerResult {
    let pd = client(&ctx)?;
    let list = pd.oncalls(&[], None, None, true).await?;
    Ok(chat::list_message(
        "On call now",
        &oncall_lines(list.items),
        list.truncated,
        "Nobody is on call in PagerDuty right now.",
    ))
}

/// Who is on call, one line per person under a line per escalation policy (mrkdwn, escaped):
/// for `pager oncall` and the home tab.
pub fn oncall_lines(mut entries: Vec<pagerduty::Oncall>) -> Vec<String> {
    entries.sort_by(|a, b| {
        let name = |o: &pagerduty::Oncall| {
            o.escalation_policy
                .as_ref()
                .map(|p| p.name().to_owned())
                .unwrap_or_default()
        };
        name(a)
            .cmp(&name(b))
            .then(a.escalation_level.cmp(&b.escalation_level))
    });
    let mut lines = Vec::new();
    let mut last_policy = String::new();
    for o in &entries {
        let policy = o
            .escalation_policy
            .as_ref()
            .map(|p| p.name().to_owned())
            .unwrap_or_else(|| "(no policy)".into());
        if policy != last_policy {
            lines.push(format!("*{}*", escape(&policy)));
            last_policy = policy;
        }
        let who = o
            .user
            .as_ref()
            .map_or_else(|| "nobody".to_owned(), |u| escape(u.name()));
        let level = o
            .escalation_level
            .map(|l| format!("level {l}: "))
            .unwrap_or_default();
        let until = o
            .end
            .map(|e| format!(" until {}", chat::when(e)))
            .unwrap_or_else(|| " (always)".into());
        let via = o
            .schedule
            .as_ref()
            .map(|s| format!(" via {}", escape(s.name())))
            .unwrap_or_default();
        lines.push(format!("• {level}{who}{until}{via}"));
    }
    lines
}

async fn schedules(ctx: CommandContext) -> HandlerResult {
    let pd = client(&ctx)?;
    let search = ctx.args.words("search").join(" ");
    let search = (!search.is_empty()).then_some(search.as_str());
    let list = pd.schedules(search).await?;
    let lines: Vec<String> = list
        .items
        .iter()
        .map(|s| {
            let name = match &s.html_url {
                Some(url) => link(url, s.display_name()),
                None => escape(s.display_name()),
            };
            let tz = s
                .time_zone
                .as_deref()
                .map(|t| format!(" · {}", escape(t)))
                .unwrap_or_default();
            format!("{name} · `{}`{tz}", escape(&s.id))
        })
        .collect();
    let empty = match search {
        Some(q) => format!("No PagerDuty schedules match `{}`.", escape(q)),
        None => "There are no PagerDuty schedules.".to_owned(),
    };
    Ok(chat::list_message(
        &format!("{} schedule{}", lines.len(), pager::plural(lines.len())),
        &lines,
        list.truncated,
        &empty,
    ))
}

/// A schedule by id, or by name (exact, else the only partial match).
async fn find_schedule(pd: &PagerDuty, wanted: &str) -> Result<pagerduty::Schedule, CommandError> {
    let found = pd.schedules(Some(wanted)).await?;
    if let Some(s) = found
        .items
        .iter()
        .find(|s| s.id == wanted || s.display_name().eq_ignore_ascii_case(wanted))
    {
        return Ok(s.clone());
    }
    match found.items.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(CommandError::User(format!(
            "No PagerDuty schedule matches `{}`.",
            escape(wanted)
        ))),
        many => Err(CommandError::User(format!(
            "`{}` matches {} schedules: {}. Use the name in full or the id.",
            escape(wanted),
            many.len(),
            many.iter()
                .take(10)
                .map(|s| format!("{} (`{}`)", escape(s.display_name()), escape(&s.id)))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

async fn schedule(ctx: CommandContext) -> HandlerResult {
    let pd = client(&ctx)?;
    let wanted = ctx.args.text("schedule").unwrap_or_default();
    let days = ctx.args.int("days").unwrap_or(30);
    let found = if valid_incident_id(wanted)
        && wanted
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    {
        // Looks like an id: use it directly, falling back to a name search.
        None
    } else {
        Some(find_schedule(pd, wanted).await?)
    };
    let id = found.as_ref().map_or(wanted, |s| s.id.as_str());
    let now = OffsetDateTime::now_utc();
    let schedule = match pd.schedule(id, now, now + Duration::days(days)).await {
        Err(e)
            if found.is_none()
                && matches!(e.kind, crate::clients::vendor::ErrorKind::NotFound { .. }) =>
        {
            let s = find_schedule(pd, wanted).await?;
            pd.schedule(&s.id, now, now + Duration::days(days)).await?
        }
        other => other?,
    };
    let entries = schedule
        .final_schedule
        .as_ref()
        .map(|f| f.rendered_schedule_entries.clone())
        .unwrap_or_default();
    let lines: Vec<String> = entries
        .iter()
        .map(|e| {
            let who = e
                .user
                .as_ref()
                .map_or_else(|| "nobody".to_owned(), |u| escape(u.name()));
            let end = e.end.map_or_else(|| "open-ended".to_owned(), chat::when);
            format!("• {} → {end}: {who}", chat::when(e.start))
        })
        .collect();
    let name = schedule.display_name().to_owned();
    Ok(chat::list_message(
        &format!("{name}: next {days} days"),
        &lines,
        false,
        &format!(
            "Nobody is scheduled on {} in the next {days} days.",
            escape(&name)
        ),
    ))
}

async fn my_schedule(ctx: CommandContext) -> HandlerResult {
    let pd = client(&ctx)?;
    let me = identity(&ctx, pd).await?;
    let days = ctx.args.int("days").unwrap_or(30);
    let now = OffsetDateTime::now_utc();
    let list = pd
        .oncalls(
            &[&me.user_id],
            Some(now),
            Some(now + Duration::days(days)),
            false,
        )
        .await?;
    let mut shifts = list.items;
    shifts.sort_by_key(|o| o.start);
    let lines: Vec<String> = shifts
        .iter()
        .map(|o| {
            let start = o.start.map_or_else(|| "now".to_owned(), chat::when);
            let end = o.end.map_or_else(|| "open-ended".to_owned(), chat::when);
            let on = o
                .schedule
                .as_ref()
                .map(|s| escape(s.name()))
                .or_else(|| o.escalation_policy.as_ref().map(|p| escape(p.name())))
                .unwrap_or_default();
            format!("• {start} → {end}: {on}")
        })
        .collect();
    Ok(chat::list_message(
        &format!("Your on-call shifts, next {days} days"),
        &lines,
        list.truncated,
        &format!("You have no on-call shifts in the next {days} days."),
    ))
}

async fn me_as(ctx: CommandContext) -> HandlerResult {
    let email = ctx.args.text("email").unwrap_or_default().to_owned();
    let store = &ctx.services.store;
    // You may only claim your own identity: when Slack tells us your email, it must match,
    // unless you may set anyone's (`pager.identity`, default admins).
    if let Some(own) = ctx.services.chat.user_email(ctx.user()).await? {
        let may_set_any = ctx
            .services
            .catalogue
            .access
            .check(ctx.user(), Some("pager.identity"), "pager", &["admins"])
            .is_ok();
        if !own.eq_ignore_ascii_case(&email) && !may_set_any {
            return Err(CommandError::User(format!(
                "Your Slack profile's email is `{}`; you can only claim your own PagerDuty identity. An admin can set another.",
                escape(&own)
            )));
        }
    }
    let user = match ctx.services.vendors.pagerduty() {
        Some(pd) => Some(pd.user_by_email(&email).await?.ok_or_else(|| {
            CommandError::User(format!(
                "No PagerDuty user has the email `{}`; nothing was changed.",
                escape(&email)
            ))
        })?),
        None => None,
    };
    store
        .set_pagerduty_identity(ctx.user(), &email, user.as_ref().map(|u| u.id.as_str()))
        .await
        .map_err(|e| CommandError::Internal(e.to_string()))?;
    ctx.audit_step(
        "user.pagerduty_identity",
        Outcome::Succeeded,
        format!("set to {email}"),
    )
    .await?;
    let text = match user {
        Some(u) => format!(
            "Got it: in PagerDuty you are {} ({}).",
            escape(u.name.as_deref().unwrap_or(&u.id)),
            escape(&email)
        ),
        None => format!("Got it: your PagerDuty email is {}.", escape(&email)),
    };
    Ok(Message::text(text))
}

async fn take_pager(ctx: CommandContext) -> Result<Answer, CommandError> {
    let pd = client(&ctx)?;
    let me = identity(&ctx, pd).await?;
    let wanted = ctx.args.text("schedule").unwrap_or_default();
    let minutes = ctx.args.int("minutes").unwrap_or(60);
    let schedule = find_schedule(pd, wanted).await?;
    // An approval holds to the schedule, the person and the length, not the clock: approved
    // later, the override starts then.
    let held = HeldWrite::Override {
        schedule_name: schedule.display_name().to_owned(),
        schedule_id: schedule.id,
        user_id: me.user_id,
        from: me.email,
        minutes,
    };
    write(&ctx, held).await
}

async fn maintenance(ctx: CommandContext) -> Result<Answer, CommandError> {
    let pd = client(&ctx)?;
    let me = identity(&ctx, pd).await?;
    let minutes = ctx.args.int("minutes").unwrap_or(60);
    let mut found = Vec::new();
    for wanted in ctx.args.words("services") {
        let list = pd.services(Some(wanted)).await?;
        let service = list
            .items
            .iter()
            .find(|s| s.id == *wanted || s.display_name().eq_ignore_ascii_case(wanted))
            .cloned()
            .or_else(|| (list.items.len() == 1).then(|| list.items[0].clone()))
            .ok_or_else(|| match list.items.len() {
                0 => CommandError::User(format!(
                    "No PagerDuty service matches `{}`; nothing was changed.",
                    escape(wanted)
                )),
                n => CommandError::User(format!(
                    "`{}` matches {n} services; name one in full or by id. Nothing was changed.",
                    escape(wanted)
                )),
            })?;
        found.push(service);
    }
    let held = HeldWrite::Maintenance {
        service_ids: found.iter().map(|s| s.id.clone()).collect(),
        service_names: found.iter().map(|s| s.display_name().to_owned()).collect(),
        from: me.email,
        minutes,
        description: format!("from chat by {} ({})", ctx.invocation.user_name, ctx.user()),
    };
    write(&ctx, held).await
}

async fn services(ctx: CommandContext) -> HandlerResult {
    let pd = client(&ctx)?;
    let search = ctx.args.words("search").join(" ");
    let list = pd
        .services((!search.is_empty()).then_some(search.as_str()))
        .await?;
    let lines: Vec<String> = list
        .items
        .iter()
        .map(|s| {
            let name = match &s.html_url {
                Some(url) => link(url, s.display_name()),
                None => escape(s.display_name()),
            };
            let status = s
                .status
                .as_deref()
                .map(|st| format!(" · {}", escape(st)))
                .unwrap_or_default();
            format!("{name}{status} · `{}`", escape(&s.id))
        })
        .collect();
    Ok(chat::list_message(
        &format!("{} service{}", lines.len(), pager::plural(lines.len())),
        &lines,
        list.truncated,
        "No PagerDuty services found.",
    ))
}

async fn trigger(ctx: CommandContext) -> Result<Answer, CommandError> {
    let pd = client(&ctx)?;
    let service_id = ctx.services.config.pagerduty.default_service.clone().ok_or_else(|| {
        CommandError::User("`pager trigger` needs a service to open incidents on: set `[pagerduty] default_service` in pantheon.toml.".into())
    })?;
    let me = identity(&ctx, pd).await?;
    let who = ctx.args.text("user").unwrap_or_default();
    let message = ctx.args.words("message").join(" ");
    // A mention of someone in chat, an email, or a PagerDuty name.
    let target_email = if let Some(person) = crate::domain::markup::only_mention(who) {
        let remembered = ctx
            .services
            .store
            .user_prefs(person)
            .await
            .map_err(|e| CommandError::Internal(e.to_string()))?;
        match remembered.and_then(|p| p.pagerduty_email) {
            Some(email) => Some(email),
            None => ctx.services.chat.user_email(person).await?,
        }
        .ok_or_else(|| {
            CommandError::User(format!(
                "I don't know {}'s PagerDuty email; they can set it with `{} pager me as …`.",
                mention(person),
                ctx.invocation.slash
            ))
        })
        .map(Some)?
    } else if who.contains('@') {
        Some(who.to_owned())
    } else {
        None
    };
    let assignee = match target_email {
        Some(email) => pd.user_by_email(&email).await?.ok_or_else(|| {
            CommandError::User(format!(
                "No PagerDuty user has the email `{}`.",
                escape(&email)
            ))
        })?,
        None => {
            let users = pd.users(who).await?;
            match users.items.as_slice() {
                [one] => one.clone(),
                [] => {
                    return Err(CommandError::User(format!(
                        "No PagerDuty user matches `{}`.",
                        escape(who)
                    )));
                }
                many => {
                    if let Some(exact) = many.iter().find(|u| {
                        u.name
                            .as_deref()
                            .is_some_and(|n| n.eq_ignore_ascii_case(who))
                    }) {
                        exact.clone()
                    } else {
                        return Err(CommandError::User(format!(
                            "`{}` matches {} PagerDuty users; use their email.",
                            escape(who),
                            many.len()
                        )));
                    }
                }
            }
        }
    };
    let held = HeldWrite::Trigger {
        service_id,
        title: chat::truncate(&message, 255),
        assignee_name: assignee.name.clone().unwrap_or_else(|| assignee.id.clone()),
        assignee_id: assignee.id,
        from: me.email,
    };
    write(&ctx, held).await
}
