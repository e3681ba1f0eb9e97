//! PagerDuty writes held for approval (`[pagerduty] approval_required`). Once a peer approves,
//! a job does the write the request holds ([`HeldWrite`]), as the person who asked, through
//! the same function a command uses when no approval is needed. Its answer goes to the job log
//! and, with the job's report, to the approval thread.

use std::sync::Arc;

use tokio::sync::watch;
use tracing::Instrument as _;

use super::runner::{LogSink, RunEnd, Stop, cancelled};
use crate::{
    domain::{
        held::HeldWrite,
        job::{Job, Stream},
    },
    pager,
    runbooks::Runbooks,
};

fn failed(error: impl Into<String>) -> RunEnd {
    RunEnd::Failed {
        exit_code: None,
        error: error.into(),
    }
}

pub async fn run(
    runbooks: &Arc<Runbooks>,
    job: &Job,
    log: &LogSink,
    mut cancel: watch::Receiver<Stop>,
) -> RunEnd {
    let (Some(text), Some(write)) = (job.params.get("command"), job.params.get("write")) else {
        return failed("the job holds no PagerDuty write; ask again");
    };
    let write = match HeldWrite::parse(write) {
        Ok(write) => write,
        Err(e) => return failed(e),
    };
    if crate::domain::runbook::held_action(&job.runbook) != Some(write.action()) {
        return failed(format!(
            "`{}` holds a PagerDuty `{}`; nothing was done",
            job.runbook,
            write.action()
        ));
    }
    let user = &job.requested_by;
    let slash = &runbooks.slash;
    // The requester must still be allowed to ask for it.
    let allowed = runbooks
        .commands
        .allowed(&runbooks.catalogue.access, write.command(), user);
    if let Err(refusal) = allowed {
        return failed(refusal.message(&format!("{slash} {}", write.command())));
    }
    let Some(pd) = runbooks.vendors.pagerduty().cloned() else {
        let missing = crate::clients::vendor::VendorError::not_configured(
            crate::clients::pagerduty::NAME,
            "PAGERDUTY_API_TOKEN",
        );
        return failed(missing.to_string());
    };
    log.line(
        Stream::System,
        &format!("running `{slash} {text}` as {user}, approved"),
    )
    .await;
    let who = pager::Requester {
        user: user.clone(),
        channel: job.channel.clone(),
        correlation_id: job.correlation_id.clone(),
        command: text.clone(),
    };
    let limit = runbooks.handler_timeout;
    // In its own task, so a panic fails the job rather than the worker.
    let task = {
        let runbooks = runbooks.clone();
        async move {
            match pager::recheck(&pd, &write).await? {
                pager::Recheck::Same => pager::perform(&runbooks.audit, &pd, &who, &write).await,
                pager::Recheck::Nothing(answer) => Ok(answer),
            }
        }
    };
    let mut handler = tokio::spawn(task.in_current_span());
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
        Ok(Ok(Ok(message))) => {
            for line in message.text.lines() {
                log.line(Stream::Stdout, line).await;
            }
            // What PagerDuty did, where the request was approved.
            super::report::to_thread(runbooks, job, message.text).await;
            RunEnd::Succeeded
        }
        Ok(Ok(Err(refused))) => failed(refused.0),
        Ok(Err(join)) => {
            tracing::error!(job_id = job.id, error = %join, "held write panicked");
            failed("the write failed unexpectedly; this is a bug in Pantheon")
        }
    }
}
