//! Deploy safety from chat: `lock`, `unlock`, `locks`; the history of deploys (`deploys`,
//! `where`); and `rollback`, which asks for the previous good version through the same
//! runbook, approval policy and checks as any run.

use std::collections::BTreeMap;

use time::OffsetDateTime;

use super::{ArgType, CommandContext, CommandError, Declaration, HandlerResult, command, handler};
use crate::{
    chat::{self, Message, escape, mention},
    domain::{
        deploy::{Deployed, GLOBAL},
        job::{Job, JobStatus},
    },
    runbooks::{Ask, Requester, RunbookError, jobs::report},
};

/// The words that force a run over a lock or freeze (break-glass).
pub const FORCE: &[&str] = &["--force", "force=yes"];

/// Longest lock reason kept.
const MAX_REASON: usize = 300;

/// Deploys shown by `deploys`.
const HISTORY: usize = 10;

/// Jobs read per deploy runbook to build the history.
const SCANNED: i64 = 500;

pub fn declarations() -> Vec<Declaration> {
    vec![
        command(
            "lock <target> [for <duration>] [reason...]",
            "lock a target or environment (`--global`: everything) against runs",
            handler(lock),
        )
        .family("lock")
        .in_channel()
        .unlimited(),
        command(
            "unlock <target>",
            "release a lock (its holder or an admin)",
            handler(unlock),
        )
        .family("lock")
        .in_channel()
        .unlimited(),
        command("locks", "the locks held now", handler(locks)).family("lock"),
        command(
            "deploys <app> [env]",
            "the last deploys of an app: version, who, approvers, outcome",
            handler(deploys),
        )
        .family("deploys"),
        command(
            "where <app>",
            "which version of an app is on each environment",
            handler(where_is),
        )
        .family("deploys"),
        command(
            "rollback <app> <env> [force]",
            "ask for the previous good version of an app on an environment",
            handler(rollback),
        )
        .arg("force", ArgType::Choice(FORCE))
        .family("rollback"),
    ]
}

fn requester(ctx: &CommandContext) -> Requester<'_> {
    Requester {
        user: &ctx.invocation.user_id,
        channel: &ctx.invocation.channel_id,
        correlation_id: &ctx.invocation.correlation_id,
        command: &ctx.invocation.text,
    }
}

fn said(e: RunbookError) -> CommandError {
    match e {
        RunbookError::Refused(text) => CommandError::User(text),
        RunbookError::Unavailable { detail, .. } => CommandError::Internal(detail),
    }
}

/// The name a lock is stored under: `--global` is everything.
fn lock_name(typed: &str) -> &str {
    if typed.eq_ignore_ascii_case("--global") {
        GLOBAL
    } else {
        typed
    }
}

async fn lock(ctx: CommandContext) -> HandlerResult {
    let name = lock_name(ctx.args.text("target").unwrap_or_default()).to_owned();
    let mut reason = ctx.args.words("reason").join(" ");
    // `for 2h` is a duration; `for the migration` is the start of the reason.
    let duration = match ctx.args.text("duration") {
        None => None,
        Some(raw) => match humantime::parse_duration(raw) {
            Ok(d) => {
                let (min, max) = (
                    std::time::Duration::from_secs(1),
                    std::time::Duration::from_secs(30 * 86400),
                );
                if d < min || d > max {
                    return Err(CommandError::User(
                        "A lock lasts between 1 second and 30 days (or, without `for`, until unlocked).".into(),
                    ));
                }
                Some(d)
            }
            Err(_) => {
                reason = format!("for {raw} {reason}").trim_end().to_owned();
                None
            }
        },
    };
    if reason.chars().count() > MAX_REASON {
        return Err(CommandError::User(format!(
            "The reason is longer than {MAX_REASON} characters; say it shorter."
        )));
    }
    if reason.chars().any(char::is_control) {
        return Err(CommandError::User(
            "The reason holds control characters.".into(),
        ));
    }
    let text = ctx
        .services
        .runbooks
        .lock(&requester(&ctx), &name, &reason, duration)
        .await
        .map_err(said)?;
    Ok(Message::text(text))
}

async fn unlock(ctx: CommandContext) -> HandlerResult {
    let name = lock_name(ctx.args.text("target").unwrap_or_default()).to_owned();
    let text = ctx
        .services
        .runbooks
        .unlock(&requester(&ctx), &name)
        .await
        .map_err(said)?;
    Ok(Message::text(text))
}

async fn locks(ctx: CommandContext) -> HandlerResult {
    let held = ctx.services.runbooks.locks().await.map_err(said)?;
    let lines: Vec<String> = held
        .iter()
        .map(|l| {
            format!(
                "🔒 `{}` by {}{} · since {}{}",
                escape(l.what()),
                mention(&l.holder),
                l.reason_as(escape),
                chat::when(l.created_at),
                l.expires_at
                    .map(|t| format!(" · until {}", chat::when(t)))
                    .unwrap_or_default()
            )
        })
        .collect();
    Ok(chat::list_message(
        "Locks",
        &lines,
        false,
        "Nothing is locked.",
    ))
}

/// The deploys of `app` (in `env`, when given) that `user` may see, newest first.
async fn history(
    ctx: &CommandContext,
    app: &str,
    env: Option<&str>,
) -> Result<Vec<(Job, Deployed)>, CommandError> {
    let services = &ctx.services;
    let mut out = Vec::new();
    let mut any = false;
    for runbook in services.catalogue.deploys() {
        any = true;
        let jobs = services
            .store
            .jobs(Some(runbook.name()), SCANNED)
            .await
            .map_err(|e| CommandError::Internal(e.to_string()))?;
        for job in jobs {
            let Some(deployed) = runbook.deployed(&job.params) else {
                continue;
            };
            if deployed.app == app
                && env.is_none_or(|e| deployed.env == e)
                && services.runbooks.may_see_job(ctx.user(), &job).is_ok()
            {
                out.push((job, deployed));
            }
        }
    }
    if !any {
        return Err(CommandError::User(
            "No runbook is declared as a deploy: give one `deploy = { app = \"{app}\", env = \"{env}\", version = \"{version}\" }`.".into(),
        ));
    }
    out.sort_by_key(|(job, _)| std::cmp::Reverse(job.id));
    Ok(out)
}

async fn deploys(ctx: CommandContext) -> HandlerResult {
    let app = ctx.args.text("app").unwrap_or_default().to_owned();
    let env = ctx.args.text("env").map(str::to_owned);
    let runs = history(&ctx, &app, env.as_deref()).await?;
    let now = OffsetDateTime::now_utc();
    let private = ctx.private_reply();
    let mut lines = Vec::new();
    for (job, deployed) in runs.iter().take(HISTORY) {
        let approvers = match job.approval_id {
            Some(id) => ctx
                .services
                .store
                .approval_request(id)
                .await
                .ok()
                .flatten()
                .map(|r| {
                    r.approvers()
                        .into_iter()
                        .map(mention)
                        .collect::<Vec<_>>()
                        .join(", ")
                }),
            None => None,
        };
        let label = format!("#{}", job.id);
        let link = if private {
            chat::link(&ctx.services.links.job_url(job.id, ctx.user(), now), &label)
        } else {
            label
        };
        let took = match (job.started_at, job.finished_at) {
            (Some(s), Some(f)) => format!(" in {}", report::human_duration(f - s)),
            _ => String::new(),
        };
        lines.push(format!(
            "{link} `{}` → `{}` · *{}*{took} · by {}{}{} · {}",
            escape(&deployed.version),
            escape(&deployed.env),
            job.status.as_str(),
            mention(&job.requested_by),
            approvers
                .filter(|a| !a.is_empty())
                .map(|a| format!(" · approved by {a}"))
                .unwrap_or_default(),
            if job.overrides.is_some() {
                " · ⚠️ break-glass"
            } else {
                ""
            },
            chat::when(job.created_at)
        ));
    }
    let title = match &env {
        Some(e) => format!("Deploys of {app} to {e}"),
        None => format!("Deploys of {app}"),
    };
    Ok(chat::list_message(
        &title,
        &lines,
        false,
        &format!("No deploys of `{}` yet.", escape(&app)),
    ))
}

async fn where_is(ctx: CommandContext) -> HandlerResult {
    let app = ctx.args.text("app").unwrap_or_default().to_owned();
    let runs = history(&ctx, &app, None).await?;
    let mut current: BTreeMap<&str, &(Job, Deployed)> = BTreeMap::new();
    for run in runs
        .iter()
        .filter(|(j, _)| j.status == JobStatus::Succeeded)
    {
        current.entry(run.1.env.as_str()).or_insert(run);
    }
    let lines: Vec<String> = current
        .iter()
        .map(|(env, (job, deployed))| {
            format!(
                "`{}`: `{}` · #{} by {} · {}",
                escape(env),
                escape(&deployed.version),
                job.id,
                mention(&job.requested_by),
                chat::when(job.finished_at.unwrap_or(job.created_at))
            )
        })
        .collect();
    Ok(chat::list_message(
        &format!("Where {app} is"),
        &lines,
        false,
        &format!("`{}` has no successful deploy yet.", escape(&app)),
    ))
}

async fn rollback(ctx: CommandContext) -> HandlerResult {
    let app = ctx.args.text("app").unwrap_or_default().to_owned();
    let env = ctx.args.text("env").unwrap_or_default().to_owned();
    let force = ctx.args.text("force").is_some();
    let runs = history(&ctx, &app, Some(&env)).await?;
    let mut good = runs
        .iter()
        .filter(|(j, _)| j.status == JobStatus::Succeeded);
    let Some((now_job, now_on)) = good.next() else {
        return Err(CommandError::User(format!(
            "`{}` has no successful deploy on `{}`, so there is nothing to roll back to.",
            escape(&app),
            escape(&env)
        )));
    };
    let Some((back_job, back_to)) = good.find(|(_, d)| d.version != now_on.version) else {
        return Err(CommandError::User(format!(
            "There is no successful deploy of `{}` on `{}` before the current `{}` (#{}): nothing to roll back to.",
            escape(&app),
            escape(&env),
            escape(&now_on.version),
            now_job.id
        )));
    };
    let services = &ctx.services;
    let Some(runbook) = services.runbooks.find(&back_job.runbook) else {
        return Err(CommandError::User(format!(
            "Runbook `{}`, which deployed `{}`, is no longer configured.",
            escape(&back_job.runbook),
            escape(&back_to.version)
        )));
    };
    // The same permission as asking for the run by its own command.
    if let Err(refusal) = services
        .catalogue
        .access
        .check(ctx.user(), None, runbook.name(), &[])
    {
        return Err(CommandError::User(
            refusal.message(&format!("{} rollback", ctx.invocation.slash)),
        ));
    }
    let plan = format!(
        "Rollback of {app} on {env}: {} → {} (the version #{} deployed, {}).",
        now_on.version,
        back_to.version,
        back_job.id,
        chat::when(back_job.finished_at.unwrap_or(back_job.created_at))
    );
    let ask = Ask {
        preview: Some(plan.clone()),
        force,
    };
    let mut reply = services
        .runbooks
        .request_as(&requester(&ctx), runbook, back_job.params.clone(), ask)
        .await
        .map_err(said)?;
    let said_first = format!(
        "↩️ Rollback of `{}` on `{}`: `{}` → `{}` (the version #{} deployed).",
        escape(&app),
        escape(&env),
        escape(&now_on.version),
        escape(&back_to.version),
        back_job.id
    );
    reply.text = format!("{said_first}\n{}", reply.text);
    if !reply.blocks.is_empty() {
        reply
            .blocks
            .insert(1.min(reply.blocks.len()), chat::section(&said_first));
    }
    Ok(reply)
}
