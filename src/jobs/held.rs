//! Chat commands held for approval (`[pagerduty] approval_required`). Once a peer approves, a
//! job runs the command as it was typed, as the person who asked, with the approval gate
//! passed. Its answer goes to the job log and, with the job's report, to the approval thread.

use std::sync::Arc;

use tokio::sync::watch;
use tracing::Instrument as _;

use super::runner::{LogSink, RunEnd, Stop, cancelled};
use crate::{
    app::Services,
    command::{Answer, Approved, CommandContext, CommandError},
    dispatch::{Invocation, ReplyTarget},
    domain::job::{Job, Stream},
};

fn failed(error: impl Into<String>) -> RunEnd {
    RunEnd::Failed {
        exit_code: None,
        error: error.into(),
    }
}

pub async fn run(
    services: &Arc<Services>,
    job: &Job,
    log: &LogSink,
    mut cancel: watch::Receiver<Stop>,
) -> RunEnd {
    let (Some(text), Some(check)) = (job.params.get("command"), job.params.get("check")) else {
        return failed("the job names no command");
    };
    let Some(action) = crate::domain::runbook::held_action(&job.runbook) else {
        return failed(format!("`{}` is not a held PagerDuty action", job.runbook));
    };
    let user = &job.requested_by;
    let slash = &services.slash;
    // Parsed and authorized again: the requester must still be allowed to run it.
    let may_run =
        |spec: &crate::command::CommandSpec| spec.allowed(&services.catalogue.access, user).is_ok();
    let (spec, args) = match services.registry.parse(text, may_run) {
        Ok(found) => found,
        Err(e) => {
            return failed(format!(
                "`{slash} {text}` no longer parses: {}",
                e.message(slash)
            ));
        }
    };
    if let Err(refusal) = spec.allowed(&services.catalogue.access, user) {
        return failed(refusal.message(&format!("{slash} {}", spec.name)));
    }
    log.line(
        Stream::System,
        &format!("running `{slash} {text}` as {user}, approved"),
    )
    .await;
    let ctx = CommandContext {
        services: services.clone(),
        invocation: Arc::new(Invocation {
            correlation_id: job.correlation_id.clone(),
            user_id: user.clone(),
            // Slack's display name is not kept with the job; the id stands in for it.
            user_name: user.clone(),
            channel_id: job.channel.clone(),
            team_id: String::new(),
            slash: slash.clone(),
            text: text.clone(),
            reply: ReplyTarget::Thread {
                channel: job.channel.clone(),
                thread_ref: job.thread_ref.clone().unwrap_or_default(),
            },
            replay_key: None,
        }),
        args,
        command: spec.name.clone(),
        approved: Some(Approved {
            action: action.to_owned(),
            check: check.clone(),
        }),
    };
    let limit = services.limits().handler_timeout;
    // In its own task, so a panicking handler fails the job rather than the worker.
    let mut handler = tokio::spawn((spec.handler)(ctx).in_current_span());
    let joined = tokio::select! {
        r = tokio::time::timeout(limit, &mut handler) => r,
        _ = cancelled(&mut cancel) => {
            handler.abort();
            return RunEnd::Cancelled;
        }
    };
    match joined {
        Err(_) => {
            handler.abort();
            RunEnd::TimedOut { after: limit }
        }
        Ok(Ok(Ok(Answer::Reply(message)))) => {
            for line in message.text.lines() {
                log.line(Stream::Stdout, line).await;
            }
            // What PagerDuty did, where the request was approved.
            super::report::to_thread(services, job, message.text).await;
            RunEnd::Succeeded
        }
        Ok(Ok(Err(CommandError::User(text)))) => failed(text),
        Ok(Ok(Err(CommandError::Internal(detail)))) => {
            tracing::error!(job_id = job.id, error = %detail, "held command failed");
            failed(format!(
                "internal error; reference `{}`",
                job.correlation_id
            ))
        }
        Ok(Ok(Ok(Answer::Held(_)))) => {
            failed("the command asked for approval again; this is a bug in Pantheon")
        }
        Ok(Err(join)) => {
            tracing::error!(job_id = job.id, error = %join, "held command panicked");
            failed("the command failed unexpectedly; this is a bug in Pantheon")
        }
    }
}
