//! Runbooks from chat: a request either becomes a queued job at once or an approval request
//! with Approve / Deny buttons; votes (buttons or commands, same rules) move it along; the
//! workers in [`jobs`] run what was queued. [`Runbooks`] is this service: what requests, votes
//! and jobs need, and nothing else.

pub mod jobs;
mod work;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use time::OffsetDateTime;

use crate::{
    audit::AuditLog,
    background::Background,
    chat::{self, ChatPort, Message, escape, mention},
    clients::Vendors,
    config::JobsSection,
    domain::audit::{AuditEntry, Outcome, Transport},
    domain::{
        access::CommandRules,
        approval::{ApprovalRequest, Decision, NewApprovalRequest, VoteResult, binding},
        catalogue::Catalogue,
        held::HeldWrite,
        job::{JobStatus, NewJob},
        runbook::{Run, Runbook, held_action},
    },
    store::Store,
};
use jobs::{report, runner};
use work::Work;

/// Requests, approvals and jobs: the store and audit trail they write, the catalogue they are
/// checked against, the chat they post to, the vendors a job may call, and the workers'
/// wake-up. Built once by [`crate::app`]; shared behind an `Arc`.
pub struct Runbooks {
    store: Store,
    audit: AuditLog,
    catalogue: Arc<Catalogue>,
    /// Who may run each command: a held PagerDuty write is checked against its command's rule.
    commands: CommandRules,
    chat: Arc<dyn ChatPort>,
    vendors: Arc<Vendors>,
    /// The workers' wake-up and the approval messages' refresh locks.
    work: Work,
    /// Where the workers, reaper and expirer run, and which of them died.
    background: Arc<Background>,
    /// Workers, lease, poll interval, stop grace.
    jobs: JobsSection,
    /// The slash command we answer, e.g. `/ops` (a held write's job re-runs it as itself).
    slash: String,
    /// How long a held write may take once approved.
    handler_timeout: Duration,
}

/// What [`Runbooks::new`] takes: the parts it shares with the rest of the app.
pub struct Parts {
    pub store: Store,
    pub audit: AuditLog,
    pub catalogue: Arc<Catalogue>,
    pub commands: CommandRules,
    pub chat: Arc<dyn ChatPort>,
    pub vendors: Arc<Vendors>,
    pub background: Arc<Background>,
    pub jobs: JobsSection,
    pub slash: String,
    pub handler_timeout: Duration,
}

impl Runbooks {
    pub fn new(parts: Parts) -> Self {
        let Parts {
            store,
            audit,
            catalogue,
            commands,
            chat,
            vendors,
            background,
            jobs,
            slash,
            handler_timeout,
        } = parts;
        Self {
            store,
            audit,
            catalogue,
            commands,
            chat,
            vendors,
            work: Work::default(),
            background,
            jobs,
            slash,
            handler_timeout,
        }
    }
}

/// Who is asking, and where.
#[derive(Debug, Clone)]
pub struct Requester<'a> {
    pub user: &'a str,
    pub channel: &'a str,
    pub correlation_id: &'a str,
    pub command: &'a str,
}

impl Requester<'_> {
    fn entry(&self, action: &str, outcome: Outcome) -> AuditEntry {
        AuditEntry::new(self.correlation_id, self.user, action, outcome)
            .channel(self.channel)
            .command(self.command)
    }
}

impl Runbooks {
    /// Wake a waiting worker: a job was queued some other way than through these methods
    /// (written to the store directly, as a test or a migration may).
    pub fn queued(&self) {
        self.work.queued();
    }

    /// The runbook called `name`, if chat may ask for it.
    pub fn find(&self, name: &str) -> Option<&Runbook> {
        self.catalogue.runbook(name)
    }

    /// Whether `user` may see `job` (its status, log and page): whoever may run its runbook, and
    /// whoever asked for it. A held PagerDuty write is seen by those who may run the command it
    /// holds (`pager ack!` needs what `pager ack!` needs). The check runs at every look, so a
    /// permission taken away also closes the job's page.
    pub fn may_see_job(
        &self,
        user: &str,
        job: &crate::domain::job::Job,
    ) -> Result<(), crate::domain::access::Refusal> {
        if user == job.requested_by {
            return Ok(());
        }
        if held_action(&job.runbook).is_some() {
            let write = job.params.get("write").map(|w| HeldWrite::parse(w));
            return match write {
                Some(Ok(write)) => {
                    self.commands
                        .allowed(&self.catalogue.access, write.command(), user)
                }
                _ => Err(crate::domain::access::Refusal { needed: Vec::new() }),
            };
        }
        self.catalogue.access.check(user, None, &job.runbook, &[])
    }

    /// Ask for a run. Returns the answer for the person who asked.
    pub async fn request(
        &self,
        who: &Requester<'_>,
        runbook: &Runbook,
        params: BTreeMap<String, String>,
    ) -> Result<Message, RunbookError> {
        self.request_with_preview(who, runbook, params, None).await
    }

    /// [`Runbooks::request`], with `preview` shown to approvers where a runbook without a `plan` shows
    /// nothing: for held PagerDuty commands, what the command would do.
    pub async fn request_with_preview(
        &self,
        who: &Requester<'_>,
        runbook: &Runbook,
        params: BTreeMap<String, String>,
        preview: Option<String>,
    ) -> Result<Message, RunbookError> {
        validate(runbook, &params)?;
        let asked = Asked {
            name: runbook.name().to_owned(),
            target: runbook.target(&params),
            bound: binding(runbook.definition(), &params),
            now: OffsetDateTime::now_utc(),
            shown: params
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
            params,
        };
        if runbook.needs_approval(&asked.params) {
            self.open_request(who, runbook, asked, preview).await
        } else {
            self.queue_now(who, runbook, asked).await
        }
    }

    /// A run that needs no approval: announced in the channel, then queued as a job that knows its
    /// thread.
    async fn queue_now(
        &self,
        who: &Requester<'_>,
        runbook: &Runbook,
        asked: Asked,
    ) -> Result<Message, RunbookError> {
        let Asked {
            name,
            target,
            bound,
            now,
            shown,
            params,
        } = asked;
        // Post to the channel first (when we can), so the job is born knowing its thread.
        let intro = format!(
            "{} asked for *{}* on `{}` ({}).",
            mention(who.user),
            escape(&name),
            escape(&target),
            escape(&shown)
        );
        let posted = self
            .post(who.channel, &Message::text(intro).in_channel())
            .await;
        let job = NewJob {
            runbook: name.clone(),
            params: params.clone(),
            binding: bound,
            target: target.clone(),
            requested_by: who.user.to_owned(),
            approval_id: None,
            channel: who.channel.to_owned(),
            thread_ref: posted.clone(),
            retry_safe: runbook.definition().retry_safe,
            correlation_id: who.correlation_id.to_owned(),
            created_at: now,
        };
        let id = self
            .store
            .enqueue_job(&job, |id| {
                vec![
                    who.entry("job.enqueue", Outcome::Succeeded)
                        .detail(format!("{name} #{id} queued on {target}: {shown}")),
                ]
            })
            .await
            .map_err(|e| store_failed("The job could not be queued", &e))?;
        self.work.queued();
        let text = format!(
            "{} queued *{}* #{id} on `{}` ({}).",
            mention(who.user),
            escape(&name),
            escape(&target),
            escape(&shown),
        );
        // In the channel: no link to the page, a button that hands each clicker their own.
        let message = report::with_log_button(text, id).in_channel();
        Ok(match posted {
            Some(ts) => {
                if let Err(e) = self.chat.update(who.channel, &ts, &message).await {
                    tracing::warn!(error = %e, "queued message not updated");
                }
                Message::text(format!(
                    "Queued {name} #{id}; progress follows in the thread."
                ))
            }
            None => message,
        })
    }

    /// A run that needs approval: its plan (or `preview`) shown, the request stored, and the
    /// approval message posted with its buttons.
    async fn open_request(
        &self,
        who: &Requester<'_>,
        runbook: &Runbook,
        asked: Asked,
        preview: Option<String>,
    ) -> Result<Message, RunbookError> {
        let Asked {
            name,
            target,
            bound,
            now,
            shown,
            params,
        } = asked;
        let Some(policy) = runbook.definition().approval.clone() else {
            unreachable!("checked by needs_approval")
        };
        let plan_output = match &runbook.definition().plan {
            Some(plan) => Some(self.run_plan(plan, &params).await?),
            None => preview,
        };
        let expires =
            now + time::Duration::try_from(policy.expires).unwrap_or(time::Duration::hours(1));
        let new = NewApprovalRequest {
            runbook: name.clone(),
            params: params.clone(),
            binding: bound,
            target: target.clone(),
            requester: who.user.to_owned(),
            channel: who.channel.to_owned(),
            approver_group: policy.group.clone(),
            required: policy.count,
            plan_output,
            correlation_id: who.correlation_id.to_owned(),
            created_at: now,
            expires_at: expires,
            retry_safe: runbook.definition().retry_safe,
        };
        let id = self
            .store
            .create_approval_request(&new, |id| {
                vec![who.entry("approval.request", Outcome::Succeeded).detail(format!(
                "request #{id}: {name} on {target} ({shown}); needs {} from {}; expires {}",
                policy.count,
                policy.group,
                chat::when(expires)
            ))]
            })
            .await
            .map_err(|e| store_failed("The approval request could not be stored", &e))?;
        let Ok(Some(request)) = self.store.approval_request(id).await else {
            return Err(RunbookError::Refused(
                "The approval request was stored but could not be read back.".into(),
            ));
        };
        let message = report::approval_message(&request, None);
        Ok(match self.post(who.channel, &message).await {
            Some(ts) => {
                if let Err(e) = self.store.set_approval_message(id, &ts).await {
                    // The message stands; without its reference, votes answer the voter instead of
                    // updating it.
                    tracing::warn!(request_id = id, error = %e, "approval message posted, its reference not stored");
                }
                Message::text(format!(
                    "Request #{id} for {name} is waiting for {} approval{} from `{}`.",
                    policy.count,
                    if policy.count == 1 { "" } else { "s" },
                    escape(&policy.group)
                ))
            }
            // No bot token: the approval message goes back through the response URL, in channel.
            None => message,
        })
    }

    /// Post to the channel with the bot token; None without one (or when Slack refuses).
    async fn post(&self, channel: &str, message: &Message) -> Option<String> {
        if !self.chat.configured() || channel.is_empty() {
            return None;
        }
        match self.chat.post(channel, None, message).await {
            Ok(posted) => Some(posted.at),
            Err(e) => {
                tracing::warn!(error = %e, "could not post to the channel; answering through the response URL");
                None
            }
        }
    }

    /// Run a runbook's plan step and return its output (the last 40 lines).
    async fn run_plan(
        &self,
        plan: &Run,
        params: &BTreeMap<String, String>,
    ) -> Result<String, String> {
        let log = runner::LogSink::new(0);
        let (_never, cancel) = tokio::sync::watch::channel(runner::Stop::Run);
        let end = runner::run(
            &self.vendors,
            plan,
            params,
            &[("PANTHEON_PLAN", "1".to_owned())],
            &log,
            cancel,
        )
        .await;
        let output = log.tail(40).await.join("\n");
        match end {
            runner::RunEnd::Succeeded => Ok(output),
            other => Err(format!(
                "The plan step did not succeed ({other:?}), so nothing was requested. Its output:\n{}",
                chat::code_block(&output, 1500)
            )),
        }
    }

    /// Cancel job `id` for `who`: a queued job ends at once (its thread and approval message
    /// say so), a running one is asked to stop. Anyone may cancel their own job; others' need
    /// `jobs.cancel` (default: admins). The answer for the person who asked.
    pub async fn cancel(&self, who: &Requester<'_>, id: i64) -> Result<String, RunbookError> {
        let Some(job) = self
            .store
            .job(id)
            .await
            .map_err(|e| store_failed("The job could not be read", &e))?
        else {
            return Err(RunbookError::Refused(format!("There is no job #{id}.")));
        };
        let may_cancel_others = self
            .catalogue
            .access
            .check(who.user, Some("jobs.cancel"), "jobs", &["admins"])
            .is_ok();
        if job.requested_by != who.user && !may_cancel_others {
            return Err(RunbookError::Refused(format!(
                "Only {} (who asked for it) or an admin can cancel job #{id}.",
                mention(&job.requested_by)
            )));
        }
        if job.status.is_final() {
            return Err(RunbookError::Refused(format!(
                "Job #{id} has already ended ({}).",
                job.status.as_str()
            )));
        }
        let entry = who.entry("job.cancel", Outcome::Succeeded).detail(format!(
            "cancel {} #{id} ({})",
            job.runbook,
            job.status.as_str()
        ));
        let before = self
            .store
            .request_cancel(id, OffsetDateTime::now_utc(), vec![entry])
            .await
            .map_err(|e| store_failed("The job could not be cancelled", &e))?;
        Ok(match before {
            Some(JobStatus::Queued) => {
                let mut cancelled = job.clone();
                cancelled.status = JobStatus::Cancelled;
                report::job_changed(
                    self,
                    &cancelled,
                    format!(
                        "⏹ {} #{id} was cancelled by {} before it started.",
                        job.runbook,
                        mention(who.user)
                    ),
                )
                .await;
                format!(
                    "{} cancelled {} #{id} before it started.",
                    mention(who.user),
                    escape(&job.runbook)
                )
            }
            Some(JobStatus::Running) => format!(
                "{} asked {} #{id} to stop; its process group is being stopped.",
                mention(who.user),
                escape(&job.runbook)
            ),
            Some(other) => format!("Job #{id} has already ended ({}).", other.as_str()),
            None => format!("There is no job #{id}."),
        })
    }

    /// Apply a vote (button click or command) by `voter` on request `id`.
    pub async fn vote(
        &self,
        voter: &str,
        channel: &str,
        correlation_id: &str,
        id: i64,
        decision: Decision,
        via: Transport,
    ) -> Result<Voted, RunbookError> {
        // The vote's own row says how it came, where that is not the usual way.
        let noted = |detail: String| match via.noted() {
            Some(note) => format!("{detail} ({note})"),
            None => detail,
        };
        let now = OffsetDateTime::now_utc();
        let action = format!("approval.{}", decision.as_str());
        // Every way to vote (a button, a command, a future modal) comes through here, so the
        // `approvals` permission is checked here, once for all of them.
        if let Err(refusal) = self.catalogue.access.check(voter, None, "approvals", &[]) {
            let text = refusal.message(&format!("{} request #{id}", decision.as_str()));
            let entry = AuditEntry::new(correlation_id, voter, &action, Outcome::Refused)
                .channel(channel)
                .command(&format!("{} request #{id}", decision.as_str()))
                .detail(noted(format!("refused: {text}")));
            self.audit
                .record(vec![entry])
                .await
                .map_err(|e| RunbookError::Refused(format!("{e}.")))?;
            metrics::counter!("pantheon_approval_votes_total", "result" => "refused").increment(1);
            return Ok(Voted {
                reply: text,
                changed: false,
                request: None,
            });
        }
        let group = self
            .store
            .approval_request(id)
            .await
            .map_err(|e| store_failed("The request could not be read", &e))?
            .map(|r| r.approver_group);
        let qualified = group
            .as_deref()
            .is_some_and(|g| self.catalogue.access.in_group(voter, g));
        let audit = |request: Option<&ApprovalRequest>, result: &VoteResult| {
            let base = AuditEntry::new(correlation_id, voter, &action, Outcome::Succeeded)
                .channel(channel)
                .command(&format!("{} request #{id}", decision.as_str()));
            let (outcome, detail) = match result {
                VoteResult::Refused(r) => (Outcome::Refused, format!("refused: {}", r.code())),
                VoteResult::Counted {
                    approvals,
                    required,
                } => (
                    Outcome::Succeeded,
                    format!("approval {approvals} of {required}"),
                ),
                VoteResult::Approved { job_id } => (
                    Outcome::Succeeded,
                    format!("approved; job #{job_id} queued"),
                ),
                VoteResult::Denied => (Outcome::Succeeded, "denied".to_owned()),
                VoteResult::Withdrawn => (Outcome::Succeeded, "withdrawn".to_owned()),
                VoteResult::Expired => {
                    (Outcome::Refused, "too late: the request expired".to_owned())
                }
            };
            let mut entry = base;
            entry.outcome = outcome;
            let mut entries = vec![entry.detail(noted(detail))];
            if let (VoteResult::Approved { job_id }, Some(r)) = (result, request) {
                entries.push(
                    AuditEntry::new(&r.correlation_id, voter, "job.enqueue", Outcome::Succeeded)
                        .channel(&r.channel)
                        .command(&format!("{} #{job_id}", r.runbook))
                        .detail(format!(
                            "queued on {} after approval of request #{id}",
                            r.target
                        )),
                );
            }
            entries
        };
        let (request, result) = self
            .store
            .vote(id, voter, decision, qualified, now, audit)
            .await
            .map_err(|e| store_failed("The vote could not be recorded", &e))?;
        let name = request
            .as_ref()
            .map(|r| r.runbook.clone())
            .unwrap_or_default();
        let (reply, changed) = match &result {
            VoteResult::Refused(refusal) => (refusal.message(id), false),
            VoteResult::Counted {
                approvals,
                required,
            } => (
                format!("Your approval of request #{id} is counted ({approvals} of {required})."),
                true,
            ),
            VoteResult::Approved { job_id } => {
                self.work.queued();
                (format!("Approved: {name} #{job_id} is queued."), true)
            }
            VoteResult::Denied => (format!("Request #{id} is denied."), true),
            VoteResult::Withdrawn => (format!("Request #{id} is withdrawn."), true),
            VoteResult::Expired => (
                format!("Request #{id} has expired; ask for it again."),
                true,
            ),
        };
        let counted = match &result {
            VoteResult::Refused(_) => "refused",
            VoteResult::Counted { .. } => "counted",
            VoteResult::Approved { .. } => "approved",
            VoteResult::Denied => "denied",
            VoteResult::Withdrawn => "withdrawn",
            VoteResult::Expired => "expired",
        };
        metrics::counter!("pantheon_approval_votes_total", "result" => counted).increment(1);
        Ok(Voted {
            reply,
            changed,
            request,
        })
    }
}

/// What someone who may not see job `job` is told instead.
pub fn hidden_job_message(
    job: &crate::domain::job::Job,
    refusal: &crate::domain::access::Refusal,
) -> String {
    let needs = match refusal.needed.as_slice() {
        [] => "no group may run it".to_owned(),
        [one] => format!("it needs the `{}` group", escape(one)),
        many => format!(
            "it needs one of the groups {}",
            many.iter()
                .map(|g| format!("`{}`", escape(g)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    format!(
        "Job #{} is a job of `{}`, which you may not run ({needs}), so its status and log are not shown to you.",
        job.id,
        escape(&job.runbook)
    )
}

/// Check `params` against the runbook: every declared parameter present and valid, nothing else.
pub fn validate(runbook: &Runbook, params: &BTreeMap<String, String>) -> Result<(), String> {
    for name in params.keys() {
        if runbook.param(name).is_none() {
            return Err(format!(
                "`{}` is not a parameter of `{}`",
                escape(name),
                runbook.name()
            ));
        }
    }
    for (name, _) in runbook.params() {
        let value = params
            .get(name)
            .ok_or_else(|| format!("`{name}` is missing (give `{name}=…`)"))?;
        runbook
            .validate(name, value)
            .map_err(|e| chat::escape(&e.to_string()))?;
    }
    Ok(())
}

/// A validated run, as asked.
struct Asked {
    name: String,
    target: String,
    /// The approval binding of the runbook's definition and these parameters.
    bound: String,
    now: OffsetDateTime,
    /// The parameters as `key=value …`, for messages and audit rows.
    shown: String,
    params: BTreeMap<String, String>,
}

/// Why a request or a vote did not go through. What it says (`Display`) is for the person who
/// asked; the database's own words are only in `detail` and the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunbookError {
    /// Refused as asked (a bad parameter, a plan that failed, the audit trail unwritable):
    /// said as is.
    #[error("{0}")]
    Refused(String),
    /// The store did not answer; nothing was changed.
    #[error("{what} (the database did not answer); nothing was changed. Try again shortly.")]
    Unavailable { what: &'static str, detail: String },
}

impl From<String> for RunbookError {
    fn from(text: String) -> Self {
        RunbookError::Refused(text)
    }
}

/// A store failure as the person sees it: what did not happen, not the database's words
/// (those go to the log).
fn store_failed(what: &'static str, e: &crate::store::StoreError) -> RunbookError {
    tracing::error!(error = %e, "{what}");
    RunbookError::Unavailable {
        what,
        detail: e.to_string(),
    }
}

/// The answer to a vote, and whether the approval message should be refreshed.
pub struct Voted {
    pub reply: String,
    pub changed: bool,
    pub request: Option<ApprovalRequest>,
}
