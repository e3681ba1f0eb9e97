//! Runbooks in the registry: every configured runbook's own syntax (`deploy {app} {version} to
//! {env}`), `run <runbook> key=value …`, and the commands around jobs and approvals.

use std::{collections::BTreeMap, sync::Arc};

use time::OffsetDateTime;

use super::{ArgType, CommandContext, CommandError, Declaration, HandlerResult, command, handler};
use crate::{
    chat::{self, Message, escape, mention},
    domain::{approval::Decision, catalogue::Catalogue},
    runbooks::{self, Requester, RunbookError, jobs::report},
};

const ID: ArgType = ArgType::Int {
    min: 1,
    max: i64::MAX,
};

pub fn declarations(catalogue: &Catalogue) -> Result<Vec<Declaration>, String> {
    let mut out = Vec::new();
    for runbook in &catalogue.runbooks {
        let name = runbook.name().to_owned();
        let definition = runbook.definition();
        // `--force` (or `force=yes`) after the parameters: break-glass over a lock or freeze.
        let mut declaration = command(
            &format!("{} [force]", definition.usage),
            definition
                .description
                .as_deref()
                .unwrap_or("run this runbook"),
            handler({
                let name = name.clone();
                move |ctx| request(ctx, name.clone(), None)
            }),
        )
        .family(&name);
        for (param, re) in runbook.params() {
            declaration = declaration.arg(param, ArgType::Param(Arc::clone(re)));
        }
        declaration = declaration.arg("force", ArgType::Choice(super::deploy::FORCE));
        out.push(declaration);
    }
    out.extend([
        command(
            "run <runbook> [params...]",
            "run any runbook with key=value parameters",
            handler(|ctx| async move {
                let name = ctx.args.text("runbook").unwrap_or_default().to_owned();
                let params = key_values(ctx.args.words("params"))?;
                request(ctx, name, Some(params)).await
            }),
        )
        .family("run"),
        command(
            "jobs [runbook]",
            "recent jobs, of one runbook or all",
            handler(jobs),
        )
        .family("jobs"),
        command(
            "job <id>",
            "one job's status and its last log lines",
            handler(job),
        )
        .arg("id", ID)
        .family("jobs"),
        command(
            "cancel <id>",
            "cancel a job (its requester or an admin)",
            handler(cancel),
        )
        .arg("id", ID)
        .family("jobs")
        .in_channel()
        .unlimited(),
        command(
            "approvals",
            "approval requests waiting for a decision",
            handler(approvals),
        )
        .family("approvals"),
        command(
            "approve <id>",
            "approve a request (same rules as the button)",
            handler(|c| vote(c, Decision::Approve)),
        )
        .arg("id", ID)
        .family("approvals")
        .unlimited(),
        command(
            "deny <id>",
            "deny a request",
            handler(|c| vote(c, Decision::Deny)),
        )
        .arg("id", ID)
        .family("approvals")
        .unlimited(),
        command(
            "withdraw <id>",
            "withdraw your own request",
            handler(|c| vote(c, Decision::Withdraw)),
        )
        .arg("id", ID)
        .family("approvals")
        .unlimited(),
    ]);
    Ok(out)
}

fn key_values(words: &[String]) -> Result<BTreeMap<String, String>, CommandError> {
    let mut params = BTreeMap::new();
    for word in words {
        if word.eq_ignore_ascii_case("--force") {
            params.insert("force".to_owned(), "yes".to_owned());
            continue;
        }
        let (k, v) = word
            .split_once('=')
            .ok_or_else(|| CommandError::User(format!("`{}` is not `key=value`.", escape(word))))?;
        if params.insert(k.to_owned(), v.to_owned()).is_some() {
            return Err(CommandError::User(format!(
                "`{}` is given twice.",
                escape(k)
            )));
        }
    }
    Ok(params)
}

async fn request(
    ctx: CommandContext,
    name: String,
    given: Option<BTreeMap<String, String>>,
) -> HandlerResult {
    let services = &ctx.services;
    let Some(runbook) = services.runbooks.find(&name) else {
        let known: Vec<&str> = services
            .config
            .runbooks
            .iter()
            .map(|r| r.name.get_ref().as_str())
            .collect();
        return Err(CommandError::User(format!(
            "There is no runbook `{}`. Runbooks: {}.",
            escape(&name),
            if known.is_empty() {
                "none configured".to_owned()
            } else {
                known.join(", ")
            }
        )));
    };
    // `run <runbook>` reaches every runbook, so it checks the runbook's own permission.
    if given.is_some()
        && let Err(refusal) = services
            .catalogue
            .access
            .check(ctx.user(), None, &name, &[])
    {
        return Err(CommandError::User(
            refusal.message(&format!("{} {name}", ctx.invocation.slash)),
        ));
    }
    let mut params = given.unwrap_or_else(|| ctx.args.texts());
    // Not a parameter of the runbook: Pantheon's own word (config refuses a param so named).
    let force = params
        .remove("force")
        .is_some_and(|v| v.eq_ignore_ascii_case("yes") || v == "--force" || v == "force=yes");
    let who = Requester {
        user: &ctx.invocation.user_id,
        channel: &ctx.invocation.channel_id,
        correlation_id: &ctx.invocation.correlation_id,
        command: &ctx.invocation.text,
    };
    let ask = runbooks::Ask {
        preview: None,
        force,
    };
    services
        .runbooks
        .request_as(&who, runbook, params, ask)
        .await
        .map_err(|e| CommandError::User(e.to_string()))
}

async fn jobs(ctx: CommandContext) -> HandlerResult {
    let runbook = ctx.args.text("runbook");
    let services = &ctx.services;
    // Jobs of runbooks the person may not run are left out (with a count), so fetch more than
    // are shown.
    let list = services
        .store
        .jobs(runbook, 200)
        .await
        .map_err(|e| CommandError::Internal(e.to_string()))?;
    let now = OffsetDateTime::now_utc();
    let (visible, hidden): (Vec<_>, Vec<_>) = list
        .iter()
        .partition(|j| services.runbooks.may_see_job(ctx.user(), j).is_ok());
    let private = ctx.private_reply();
    let mut lines: Vec<String> = visible
        .iter()
        .take(20)
        .map(|j| {
            let url = private.then(|| services.links.job_url(j.id, ctx.user(), now));
            report::job_line(j, url.as_deref())
        })
        .collect();
    if !hidden.is_empty() && !lines.is_empty() {
        lines.push(format!(
            "({} more of runbooks you may not run are not shown.)",
            hidden.len()
        ));
    }
    let title = match runbook {
        Some(r) => format!("Recent {r} jobs"),
        None => "Recent jobs".to_owned(),
    };
    Ok(chat::list_message(
        &title,
        &lines,
        false,
        "No jobs you may see yet.",
    ))
}

async fn job(ctx: CommandContext) -> HandlerResult {
    let id = ctx.args.int("id").unwrap_or(0);
    let services = &ctx.services;
    let Some(job) = services
        .store
        .job(id)
        .await
        .map_err(|e| CommandError::Internal(e.to_string()))?
    else {
        return Err(CommandError::User(format!("There is no job #{id}.")));
    };
    // Saying why is fine (ids are sequential, so "no such job" would hide nothing); its
    // output is what must not show.
    if let Err(refusal) = services.runbooks.may_see_job(ctx.user(), &job) {
        return Err(CommandError::User(runbooks::hidden_job_message(
            &job, &refusal,
        )));
    }
    if !ctx.private_reply() {
        // In a channel thread: the status only. The log and a personal link go to those who
        // ask for them privately.
        let line = report::job_line(&job, None);
        let text = format!(
            "{line}\nFor its log, run `{} job {id}` yourself (the answer is only for you).",
            ctx.services.slash
        );
        return Ok(Message::text(text));
    }
    let url = services
        .links
        .job_url(id, ctx.user(), OffsetDateTime::now_utc());
    let logs = services
        .store
        .job_logs(id, Some(15))
        .await
        .map_err(|e| CommandError::Internal(e.to_string()))?;
    let line = report::job_line(&job, Some(&url));
    let mut blocks = vec![chat::section(&line)];
    let mut text = line.clone();
    if !logs.is_empty() {
        let tail = logs
            .iter()
            .map(|l| l.line.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        blocks.push(chat::section(&chat::code_block(&tail, 2800)));
        text.push_str(&format!("\n{}", chat::escape(&tail)));
    }
    Ok(Message::blocks(text, blocks))
}

async fn cancel(ctx: CommandContext) -> HandlerResult {
    let id = ctx.args.int("id").unwrap_or(0);
    let who = Requester {
        user: &ctx.invocation.user_id,
        channel: &ctx.invocation.channel_id,
        correlation_id: &ctx.invocation.correlation_id,
        command: &ctx.invocation.text,
    };
    let text = ctx
        .services
        .runbooks
        .cancel(&who, id)
        .await
        .map_err(|e| match e {
            RunbookError::Refused(text) => CommandError::User(text),
            // The log gets the database's words; the person a reference to them.
            RunbookError::Unavailable { detail, .. } => CommandError::Internal(detail),
        })?;
    Ok(Message::text(text))
}

async fn approvals(ctx: CommandContext) -> HandlerResult {
    let pending = ctx
        .services
        .store
        .pending_approvals()
        .await
        .map_err(|e| CommandError::Internal(e.to_string()))?;
    let lines: Vec<String> = pending
        .iter()
        .map(|r| {
            format!(
                "#{} *{}* on `{}` by {} · {} of {} from `{}` · expires {}",
                r.id,
                escape(&r.runbook),
                escape(&r.target),
                mention(&r.requester),
                r.approvers().len(),
                r.required,
                escape(&r.approver_group),
                chat::when(r.expires_at)
            )
        })
        .collect();
    Ok(chat::list_message(
        "Waiting for approval",
        &lines,
        false,
        "Nothing is waiting for approval.",
    ))
}

async fn vote(ctx: CommandContext, decision: Decision) -> HandlerResult {
    let id = ctx.args.int("id").unwrap_or(0);
    let voted = ctx
        .services
        .runbooks
        .vote(runbooks::Cast {
            voter: ctx.user(),
            channel: &ctx.invocation.channel_id,
            correlation_id: &ctx.invocation.correlation_id,
            request: id,
            decision,
            comment: None,
            via: ctx.invocation.transport,
        })
        .await
        .map_err(|e| match e {
            // The log gets the database's words; the person a reference to them.
            RunbookError::Unavailable { detail, .. } => CommandError::Internal(detail),
            RunbookError::Refused(text) => CommandError::Internal(text),
        })?;
    if voted.changed {
        report::refresh_approval(&ctx.services.runbooks, id).await;
        Ok(Message::text(voted.reply))
    } else {
        Err(CommandError::User(voted.reply))
    }
}
