//! What the team sees of approvals and jobs: the approval message (replaced in place as the
//! request moves: pending → approved → running → succeeded or failed) and progress posted into
//! its thread. Posting needs `SLACK_BOT_TOKEN`; without it, answers go through the command's
//! response URL only and later progress is visible with `job <id>` and on the job page.

use crate::{
    chat::{self, Action, ButtonStyle, Message, escape, mention},
    domain::{
        approval::{ApprovalRequest, Decision, RequestStatus},
        job::{Job, JobStatus},
    },
    runbooks::Runbooks,
};

fn params_lines(params: &std::collections::BTreeMap<String, String>) -> String {
    params
        .iter()
        .map(|(k, v)| format!("`{}` = `{}`", escape(k), chat::escape_inline(v)))
        .collect::<Vec<_>>()
        .join("  ·  ")
}

fn mention_list(users: &[&str]) -> String {
    match users {
        [] => String::new(),
        [one] => mention(one),
        many => {
            let (last, rest) = many.split_last().unwrap_or((&"", &[]));
            format!(
                "{} and {}",
                rest.iter()
                    .map(|u| mention(u))
                    .collect::<Vec<_>>()
                    .join(", "),
                mention(last)
            )
        }
    }
}

/// The approval message for a request in its current state (and its job's, once there is one).
pub fn approval_message(request: &ApprovalRequest, job: Option<&Job>) -> Message {
    let title = match request.status {
        RequestStatus::Pending => format!("Approval needed: {}", request.runbook),
        RequestStatus::Approved => match job.map(|j| j.status) {
            Some(JobStatus::Running) => format!("Running: {}", request.runbook),
            Some(JobStatus::Succeeded) => format!("Succeeded: {}", request.runbook),
            Some(JobStatus::Failed) => format!("Failed: {}", request.runbook),
            Some(JobStatus::Interrupted) => format!("Interrupted: {}", request.runbook),
            Some(JobStatus::Cancelled) => format!("Cancelled: {}", request.runbook),
            _ => format!("Approved: {}", request.runbook),
        },
        RequestStatus::Denied => format!("Denied: {}", request.runbook),
        RequestStatus::Expired => format!("Expired: {}", request.runbook),
        RequestStatus::Withdrawn => format!("Withdrawn: {}", request.runbook),
    };
    // A held PagerDuty command reads as itself and what it would do; its `write` parameter is
    // JSON, for the job rather than for a person.
    let held = request
        .params
        .get("command")
        .filter(|_| crate::domain::runbook::held_action(&request.runbook).is_some());
    let asked = match held {
        Some(command) => format!(
            "{} asks to run `{}`\n{}",
            mention(&request.requester),
            chat::escape_inline(command),
            escape(request.plan_output.as_deref().unwrap_or_default())
        ),
        None => format!(
            "{} asks to run *{}* on `{}`\n{}",
            mention(&request.requester),
            escape(&request.runbook),
            escape(&request.target),
            params_lines(&request.params)
        ),
    };
    let approvers = request.approvers();
    let status = match request.status {
        RequestStatus::Pending => format!(
            "Needs {} ({} so far) · expires {} · request #{}",
            needs(request),
            approvers.len(),
            chat::when(request.expires_at),
            request.id
        ),
        RequestStatus::Approved => {
            let job_text = match (job, request.job_id) {
                (Some(j), _) => {
                    let state = match j.status {
                        JobStatus::Queued => "queued".to_owned(),
                        JobStatus::Running => "running".to_owned(),
                        JobStatus::Succeeded => format!("succeeded{}", took(j)),
                        JobStatus::Failed => format!("failed{}", took(j)),
                        JobStatus::Cancelled => "cancelled".to_owned(),
                        JobStatus::Interrupted => "interrupted".to_owned(),
                    };
                    format!("{} #{} {state}", escape(&request.runbook), j.id)
                }
                (None, Some(id)) => format!("{} #{id} queued", escape(&request.runbook)),
                (None, None) => "queued".to_owned(),
            };
            format!("Approved by {} — {job_text}", mention_list(&approvers))
        }
        RequestStatus::Denied => format!(
            "Denied by {}",
            request
                .decided_by
                .as_deref()
                .map(mention)
                .unwrap_or_default()
        ),
        RequestStatus::Expired => format!(
            "Expired at {} without enough approvals",
            chat::when(request.expires_at)
        ),
        RequestStatus::Withdrawn => format!("Withdrawn by {}", mention(&request.requester)),
    };
    let mut blocks = vec![chat::header(&title), chat::section(&asked)];
    let overrides = request.overrides.as_deref().map(|o| {
        format!(
            "⚠️ *Break-glass:* this run overrides a lock or freeze: {}",
            escape(o)
        )
    });
    if let Some(o) = &overrides {
        blocks.push(chat::section(o));
    }
    if let Some(plan) = request
        .plan_output
        .as_deref()
        .filter(|p| !p.trim().is_empty() && held.is_none())
    {
        blocks.push(chat::section(&format!(
            "*Plan*\n{}",
            chat::code_block(plan, 2800)
        )));
    }
    blocks.push(chat::context(&status));
    let comments = comments(request);
    if !comments.is_empty() {
        blocks.push(chat::section(&comments));
    }
    if request.status == RequestStatus::Pending {
        blocks.push(approval_buttons(request.id));
    }
    if let Some(job_id) = request.job_id {
        blocks.push(log_button(job_id));
    }
    let mut fallback = match &overrides {
        Some(o) => format!(
            "{}\n{}\n{}\n{status}",
            escape(&title),
            asked.replace('*', ""),
            o.replace('*', "")
        ),
        None => format!("{}\n{}\n{status}", escape(&title), asked.replace('*', "")),
    };
    if !comments.is_empty() {
        fallback.push('\n');
        fallback.push_str(&comments);
    }
    Message::blocks(fallback, blocks).in_channel()
}

/// What voters said with their votes, one line each (empty when nobody commented).
fn comments(request: &ApprovalRequest) -> String {
    request
        .votes
        .iter()
        .filter_map(|v| {
            let said = v.comment.as_deref()?;
            Some(format!(
                "💬 {} ({}): {}",
                mention(&v.voter),
                v.decision.as_str(),
                escape(said)
            ))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Who must approve: `2 approvals from `approvers``, or with an override `1 approval from
/// `approvers` and one from `sre` (break-glass)`.
pub fn needs(request: &ApprovalRequest) -> String {
    let plural = |n: u32| if n == 1 { "" } else { "s" };
    match &request.override_group {
        Some(g) if *g != request.approver_group => {
            let own = request.required.saturating_sub(1);
            format!(
                "{own} approval{} from `{}` and one from `{}` (break-glass)",
                plural(own),
                escape(&request.approver_group),
                escape(g)
            )
        }
        Some(g) => format!(
            "{} approval{} from `{}` (break-glass)",
            request.required,
            plural(request.required),
            escape(g)
        ),
        None => format!(
            "{} approval{} from `{}`",
            request.required,
            plural(request.required),
            escape(&request.approver_group)
        ),
    }
}

fn took(job: &Job) -> String {
    match (job.started_at, job.finished_at) {
        (Some(s), Some(f)) => format!(" in {}", human_duration(f - s)),
        _ => String::new(),
    }
}

pub fn human_duration(d: time::Duration) -> String {
    let secs = d.whole_seconds().max(0);
    match secs {
        s if s < 60 => format!("{}.{}s", s, (d.whole_milliseconds().max(0) % 1000) / 100),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

/// The one-line summary of a job, for lists and `job <id>`.
pub fn job_line(job: &Job, url: Option<&str>) -> String {
    let label = format!("{} #{}", job.runbook, job.id);
    let head = match url {
        Some(u) => chat::link(u, &label),
        None => escape(&label),
    };
    let mut parts = vec![format!("{head} *{}*", job.status.as_str())];
    parts.push(format!("on `{}`", escape(&job.target)));
    parts.push(format!("by {}", mention(&job.requested_by)));
    parts.push(chat::when(job.created_at));
    if job.status.is_final() {
        let t = took(job);
        if !t.is_empty() {
            parts.push(t.trim().to_owned());
        }
    }
    if let Some(e) = &job.error {
        parts.push(escape(&chat::truncate(e, 120)));
    }
    parts.join(" · ")
}

/// Approve, Deny and Withdraw for approval request `request`.
pub fn approval_buttons(request: i64) -> chat::Block {
    let vote = |decision| Action::Vote { request, decision };
    chat::buttons(vec![
        chat::button(
            vote(Decision::Approve),
            "Approve",
            Some(ButtonStyle::Primary),
        ),
        chat::button(vote(Decision::Deny), "Deny", Some(ButtonStyle::Danger)),
        chat::button(Action::Comment { request }, "With comment…", None),
        chat::button(vote(Decision::Withdraw), "Withdraw", None),
    ])
}

/// The buttons an approver is offered (the home tab): approve, deny, or either with a comment.
pub fn approver_buttons(request: i64) -> chat::Block {
    let vote = |decision| Action::Vote { request, decision };
    chat::buttons(vec![
        chat::button(
            vote(Decision::Approve),
            "Approve",
            Some(ButtonStyle::Primary),
        ),
        chat::button(vote(Decision::Deny), "Deny", Some(ButtonStyle::Danger)),
        chat::button(Action::Comment { request }, "With comment…", None),
    ])
}

/// A "Log" button for job `job_id`. Messages in a channel carry no link to the job's page (a link
/// opens the page for whoever holds it); a click answers the clicker privately with a link of
/// their own, if they may see the job.
pub fn log_button(job_id: i64) -> chat::Block {
    chat::buttons(vec![chat::button(
        Action::ShowLog { job: job_id },
        "Log",
        None,
    )])
}

/// `text` (mrkdwn) with a "Log" button for job `job_id` under it.
pub fn with_log_button(text: String, job_id: i64) -> Message {
    let blocks = vec![chat::section(&text), log_button(job_id)];
    Message::blocks(text, blocks)
}

/// Replace the approval message with the request's current state (bot token and a posted
/// message needed; otherwise nothing to update).
pub async fn refresh_approval(runbooks: &Runbooks, request_id: i64) {
    runbooks
        .work
        .one_refresh_at_a_time(request_id, refresh_approval_now(runbooks, request_id))
        .await;
}

async fn refresh_approval_now(runbooks: &Runbooks, request_id: i64) {
    let Ok(Some(request)) = runbooks.store.approval_request(request_id).await else {
        return;
    };
    let Some(ts) = request.message_ref.clone() else {
        return;
    };
    if !runbooks.chat.configured() {
        return;
    }
    let job = match request.job_id {
        Some(id) => runbooks.store.job(id).await.ok().flatten(),
        None => None,
    };
    let message = approval_message(&request, job.as_ref());
    if let Err(e) = runbooks.chat.update(&request.channel, &ts, &message).await {
        tracing::warn!(request_id, error = %e, "approval message not updated");
    }
}

/// Say a vote's comment in the approval message's thread (when it has one and we have a bot
/// token).
pub async fn comment_in_thread(
    runbooks: &Runbooks,
    request: &ApprovalRequest,
    voter: &str,
    decision: Decision,
    comment: &str,
) {
    let Some(ts) = request.message_ref.as_deref() else {
        return;
    };
    if !runbooks.chat.configured() {
        return;
    }
    let said = match decision {
        Decision::Approve => "approved",
        Decision::Deny => "denied",
        Decision::Withdraw => "withdrew",
    };
    let text = format!("💬 {} {said}: {}", mention(voter), escape(comment));
    if let Err(e) = runbooks
        .chat
        .post(&request.channel, Some(ts), &Message::text(text))
        .await
    {
        tracing::warn!(request_id = request.id, error = %e, "comment not posted in the thread");
    }
}

/// Post into the job's thread (when it has one and we have a bot token).
pub async fn to_thread(runbooks: &Runbooks, job: &Job, text: String) {
    if !runbooks.chat.configured() {
        return;
    }
    let Some(thread) = job.thread_ref.as_deref() else {
        return;
    };
    if let Err(e) = runbooks
        .chat
        .post(&job.channel, Some(thread), &with_log_button(text, job.id))
        .await
    {
        tracing::warn!(job_id = job.id, error = %e, "thread message not posted");
    }
}

/// The job changed state: say so in its thread and refresh its approval message.
pub async fn job_changed(runbooks: &Runbooks, job: &Job, text: String) {
    to_thread(runbooks, job, text).await;
    if let Some(request_id) = job.approval_id {
        refresh_approval(runbooks, request_id).await;
    }
}
