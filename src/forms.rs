//! Forms end to end, on any platform: what a submitted form ([`crate::ask`]) does, and the
//! home tab. A valid submission takes the same path as the typed command (dispatch: its
//! checks, its audit rows, its approval and job); a wrong value is answered beside its field.

use std::{collections::BTreeMap, sync::Arc};

use time::OffsetDateTime;

use crate::{
    ask::{is_held, params_in_order, runbook_form},
    chat::{self, Message, WhenUnsure, escape},
    command::Registry,
    dispatch::{self, Ack, Invocation, ReplyTarget, Transport},
    domain::{
        approval::Decision,
        audit::{AuditEntry, Outcome},
        form::{self, FieldErrors, Form, Purpose, Values},
    },
    runbooks::{self, jobs::report},
    services::Services,
};

/// What became of a submitted form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    /// Done (or refused, and said so to the person): close the form.
    Done,
    /// Values that are wrong: shown beside their fields; nothing was done.
    Errors(FieldErrors),
    /// Go on to this form in the same place.
    Next(Form),
}

/// Who submitted a form, as their platform says.
#[derive(Debug, Clone)]
pub struct Submitter {
    pub user: String,
    pub user_name: String,
    pub team_id: String,
    pub via: Transport,
}

/// Do what a submitted form is for.
pub async fn submit(
    services: &Arc<Services>,
    registry: &Arc<Registry>,
    by: &Submitter,
    purpose: Purpose,
    values: Values,
) -> Submitted {
    match purpose {
        Purpose::PickRunbook => pick(services, registry, by, &values).await,
        Purpose::Run { runbook, channel } => {
            let Some(channel) = channel.or_else(|| values.get("channel").cloned()) else {
                return one_error("channel", "Choose a channel.");
            };
            run(services, registry, by, &runbook, &channel, &values).await
        }
        Purpose::Comment { request, channel } => {
            comment(services, by, request, &channel, &values).await
        }
        Purpose::Page { channel } => {
            let Some(who) = values.get("who") else {
                return one_error("who", "Choose who to page.");
            };
            let Some(message) = values.get("message") else {
                return one_error("message", "Say what it is about.");
            };
            let text = format!(
                "pager trigger <@{who}> {}",
                message.replace(['\n', '\r'], " ")
            );
            let note = "page: from the \"Page on-call about this\" form";
            command(services, registry, by, &channel, text, note).await;
            Submitted::Done
        }
    }
}

fn one_error(field: &str, text: &str) -> Submitted {
    Submitted::Errors(BTreeMap::from([(field.to_owned(), text.to_owned())]))
}

async fn pick(
    services: &Arc<Services>,
    registry: &Arc<Registry>,
    by: &Submitter,
    values: &Values,
) -> Submitted {
    let (Some(name), Some(channel)) = (values.get("runbook"), values.get("channel")) else {
        return Submitted::Errors(
            [
                ("runbook", "Choose a runbook."),
                ("channel", "Choose a channel."),
            ]
            .into_iter()
            .filter(|(k, _)| !values.contains_key(*k))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        );
    };
    let Some(runbook) = services.runbooks.find(name).filter(|r| !is_held(r)) else {
        return one_error("runbook", &format!("There is no runbook `{name}`."));
    };
    if runbook.params().next().is_none() {
        return run(services, registry, by, name, channel, values).await;
    }
    Submitted::Next(runbook_form(
        services,
        runbook,
        &by.user,
        Some(channel),
        &Values::new(),
    ))
}

/// A run of `name` with the form's values: each checked against its parameter's rules (errors
/// beside the fields, audited as an invalid command), then asked for as `run name key=value …`.
async fn run(
    services: &Arc<Services>,
    registry: &Arc<Registry>,
    by: &Submitter,
    name: &str,
    channel: &str,
    values: &Values,
) -> Submitted {
    let Some(runbook) = services.runbooks.find(name).filter(|r| !is_held(r)) else {
        return one_error(
            "channel",
            &format!("There is no runbook `{name}` any more; close this form."),
        );
    };
    let order = params_in_order(runbook);
    let first = order.first().copied().unwrap_or("channel");
    let shown = format!("{} {name}", services.slash);
    let mut errors = FieldErrors::new();
    if let Err(refusal) = services.catalogue.access.check(&by.user, None, name, &[]) {
        errors.insert(first.to_owned(), chat::unescape(&refusal.message(&shown)));
    }
    for param in &order {
        match values.get(*param) {
            None => {
                errors.insert((*param).to_owned(), "Fill this in.".to_owned());
            }
            Some(v) if v.contains(['"', '\u{201c}', '\u{201d}']) => {
                errors.insert(
                    (*param).to_owned(),
                    "Quotes cannot be used here.".to_owned(),
                );
            }
            Some(v) => {
                if let Err(e) = runbook.validate(param, v) {
                    errors.entry((*param).to_owned()).or_insert(e.to_string());
                }
            }
        }
    }
    let mut text = format!("run {name}");
    for param in &order {
        if let Some(v) = values.get(*param) {
            if v.chars().any(char::is_whitespace) {
                text.push_str(&format!(" \"{param}={v}\""));
            } else {
                text.push_str(&format!(" {param}={v}"));
            }
        }
    }
    if !errors.is_empty() {
        let detail = errors
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let refused = errors
            .values()
            .any(|e| e.starts_with("You are not allowed"));
        let outcome = if refused {
            Outcome::Refused
        } else {
            Outcome::Invalid
        };
        let id = dispatch::new_correlation_id();
        // Answered at once, so one row (as a command answered in its acknowledgement).
        let rows = vec![
            AuditEntry::new(&id, &by.user, "command", outcome)
                .channel(channel)
                .command(&text)
                .detail(format!("form: {detail}")),
        ];
        if let Err(e) = services.audit.record(rows).await {
            tracing::error!(error = %e, "form refusal not audited");
        }
        return Submitted::Errors(errors);
    }
    command(services, registry, by, channel, text, "run: from a form").await;
    Submitted::Done
}

/// Dispatch `text` as if `by` had typed it in `channel`, answered there for them alone.
async fn command(
    services: &Arc<Services>,
    registry: &Arc<Registry>,
    by: &Submitter,
    channel: &str,
    text: String,
    why: &str,
) {
    let invocation = Invocation {
        correlation_id: dispatch::new_correlation_id(),
        user_id: by.user.clone(),
        user_name: by.user_name.clone(),
        channel_id: channel.to_owned(),
        team_id: by.team_id.clone(),
        slash: services.slash.clone(),
        text,
        reply: ReplyTarget::Private {
            channel: channel.to_owned(),
            user: by.user.clone(),
        },
        // Claimed already: the submission itself was.
        replay_key: None,
        transport: by.via,
        trigger: None,
    };
    tracing::info!(correlation_id = %invocation.correlation_id, "{why}");
    if let Ack::Message(message) = dispatch::dispatch(services, registry, invocation).await {
        answer_privately(services, channel, &by.user, &message).await;
    }
}

async fn answer_privately(services: &Services, channel: &str, user: &str, message: &Message) {
    if let Err(e) = services.chat.post_private(channel, user, message).await {
        tracing::warn!(error = %e, "form answer not posted");
    }
}

/// A vote with a comment: the comment checked, then the vote taken as a button's would be.
async fn comment(
    services: &Arc<Services>,
    by: &Submitter,
    request: i64,
    channel: &str,
    values: &Values,
) -> Submitted {
    let decision = match values.get("decision").map(String::as_str) {
        Some("approve") => Decision::Approve,
        Some("deny") => Decision::Deny,
        _ => return one_error("decision", "Choose approve or deny."),
    };
    let Some(text) = values.get("comment") else {
        return one_error(
            "comment",
            "Say why, or use the buttons to vote without a comment.",
        );
    };
    let correlation_id = dispatch::new_correlation_id();
    let length = text.chars().count();
    let bad = if length > form::MAX_COMMENT {
        Some(format!(
            "At most {} characters, please (this is {length}).",
            form::MAX_COMMENT
        ))
    } else if text.chars().any(|c| c.is_control() && c != '\n') {
        Some("Control characters cannot be used here.".to_owned())
    } else {
        None
    };
    if let Some(why) = bad {
        let entry = AuditEntry::new(
            &correlation_id,
            &by.user,
            &format!("approval.{}", decision.as_str()),
            Outcome::Invalid,
        )
        .channel(channel)
        .command(&format!("{} request #{request}", decision.as_str()))
        .detail(format!("refused: comment: {why}"));
        if let Err(e) = services.audit.record(vec![entry]).await {
            tracing::error!(error = %e, "refused comment not audited");
        }
        return one_error("comment", &why);
    }
    let voted = services
        .runbooks
        .vote(runbooks::Cast {
            voter: &by.user,
            channel,
            correlation_id: &correlation_id,
            request,
            decision,
            comment: Some(text),
            via: by.via,
        })
        .await;
    match voted {
        Ok(v) if v.changed => {
            // Decided and audited; what people see of it follows, so the form closes at once.
            let services = services.clone();
            let (user, channel, text) = (by.user.clone(), channel.to_owned(), text.clone());
            tokio::spawn(async move {
                report::refresh_approval(&services.runbooks, request).await;
                if let Some(r) = &v.request {
                    report::comment_in_thread(&services.runbooks, r, &user, decision, &text).await;
                }
                answer_privately(&services, &channel, &user, &Message::text(v.reply)).await;
            });
            Submitted::Done
        }
        Ok(v) => one_error("decision", &chat::unescape(&v.reply)),
        Err(e) => one_error("decision", &format!("{e} Nothing was decided.")),
    }
}

/// The home tab for `user`: approvals waiting for them (with the buttons, under the same
/// rules), their recent jobs with links, who is on call (with PagerDuty), and current locks.
pub async fn home(services: &Services, user: &str) -> Vec<chat::Block> {
    let now = OffsetDateTime::now_utc();
    let mut blocks = vec![chat::header("Pantheon")];
    blocks.push(chat::context(&format!(
        "Type `{} help` anywhere for the commands. Updated {}.",
        escape(&services.slash),
        chat::when(now)
    )));
    blocks.push(chat::divider());
    // Waiting for you: pending requests of groups you are in, not your own.
    blocks.push(chat::section("*Waiting for your approval*"));
    match services.store.pending_approvals().await {
        Ok(pending) => {
            let access = &services.catalogue.access;
            let mine: Vec<_> = pending
                .iter()
                .filter(|r| r.requester != user && !r.votes.iter().any(|v| v.voter == user))
                .filter(|r| {
                    access.in_group(user, &r.approver_group)
                        || r.override_group
                            .as_deref()
                            .is_some_and(|g| access.in_group(user, g))
                })
                .take(10)
                .collect();
            if mine.is_empty() {
                blocks.push(chat::context("Nothing is waiting for you."));
            }
            for r in mine {
                blocks.push(chat::section(&format!(
                    "#{} {} asks to run *{}* on `{}` · needs {} · expires {}",
                    r.id,
                    chat::mention(&r.requester),
                    escape(&r.runbook),
                    escape(&r.target),
                    report::needs(r),
                    chat::when(r.expires_at)
                )));
                blocks.push(report::approver_buttons(r.id));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "home: approvals not read");
            blocks.push(chat::context("Approvals could not be read just now."));
        }
    }
    blocks.push(chat::divider());
    blocks.push(chat::section("*Your recent jobs*"));
    match services.store.jobs(None, 200).await {
        Ok(jobs) => {
            let lines: Vec<String> = jobs
                .iter()
                .filter(|j| j.requested_by == user)
                .take(10)
                .map(|j| report::job_line(j, Some(&services.links.job_url(j.id, user, now))))
                .collect();
            if lines.is_empty() {
                blocks.push(chat::context("You have not run a job lately."));
            } else {
                blocks.extend(chat::sections_of_lines(&lines));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "home: jobs not read");
            blocks.push(chat::context("Jobs could not be read just now."));
        }
    }
    if let Some(pd) = services.vendors.pagerduty() {
        blocks.push(chat::divider());
        blocks.push(chat::section("*On call now*"));
        match pd.oncalls(&[], None, None, true).await {
            Ok(list) if list.items.is_empty() => {
                blocks.push(chat::context("Nobody is on call in PagerDuty right now."));
            }
            Ok(list) => {
                let lines = crate::command::pagerduty::oncall_lines(list.items);
                blocks.extend(chat::sections_of_lines(&lines));
            }
            Err(e) => blocks.push(chat::context(&format!(
                "PagerDuty did not answer: {}",
                escape(&e.to_string())
            ))),
        }
    }
    match services.runbooks.locks().await {
        Ok(locks) if !locks.is_empty() => {
            blocks.push(chat::divider());
            blocks.push(chat::section("*Locked now*"));
            let lines: Vec<String> = locks
                .iter()
                .map(|l| {
                    format!(
                        "🔒 `{}` by {}{} since {}",
                        escape(l.what()),
                        chat::mention(&l.holder),
                        l.reason_as(|r| escape(r).to_string()),
                        chat::when(l.created_at)
                    )
                })
                .collect();
            blocks.extend(chat::sections_of_lines(&lines));
        }
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "home: locks not read"),
    }
    blocks.truncate(chat::MAX_BLOCKS);
    blocks
}

/// Whether `user` may be shown a form or a home at all (the same check as every command).
pub async fn may_act(services: &Services, user: &str) -> Result<(), String> {
    chat::may_act(&*services.chat, user, WhenUnsure::Allow).await
}

/// The answer to a click on a job's "Log" button: a link to its page for the clicker alone, if
/// they may see the job.
pub async fn log_link(services: &Services, user: &str, id: Option<i64>) -> String {
    let job = match id {
        Some(id) => services.store.job(id).await,
        None => Ok(None),
    };
    match job {
        Ok(Some(job)) => match services.runbooks.may_see_job(user, &job) {
            Ok(()) => {
                let url = services
                    .links
                    .job_url(job.id, user, time::OffsetDateTime::now_utc());
                format!(
                    "{} #{}: {} (this link is yours alone; do not share it).",
                    crate::chat::escape(&job.runbook),
                    job.id,
                    crate::chat::link(&url, "job page with the full log")
                )
            }
            Err(refusal) => crate::runbooks::hidden_job_message(&job, &refusal),
        },
        Ok(None) => "There is no such job.".to_owned(),
        Err(e) => {
            tracing::error!(error = %e, "job lookup failed");
            "The job could not be read just now; try again shortly.".to_owned()
        }
    }
}
