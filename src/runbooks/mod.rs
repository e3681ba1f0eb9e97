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
    chat::{self, ChatPort, Message, WhenUnsure, escape, mention},
    clients::Vendors,
    config::JobsSection,
    domain::audit::{AuditEntry, Outcome, Transport},
    domain::{
        access::CommandRules,
        approval::{
            ApprovalPolicy, ApprovalRequest, Ballot, Decision, NewApprovalRequest, Standing,
            VoteResult, binding,
        },
        catalogue::Catalogue,
        deploy::{self, Blocker, Lock, Locked, Unlocked},
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
        let ask = Ask {
            preview,
            force: false,
        };
        self.request_as(who, runbook, params, ask).await
    }

    /// Ask for a run, as [`Ask`] says. A run on a locked or frozen target is refused with who
    /// holds the lock or which window holds, unless it is forced: then it needs one more
    /// approval than the runbook asks, from `[deploy] override_group`, and says what it
    /// overrides everywhere it is shown.
    pub async fn request_as(
        &self,
        who: &Requester<'_>,
        runbook: &Runbook,
        params: BTreeMap<String, String>,
        ask: Ask,
    ) -> Result<Message, RunbookError> {
        validate(runbook, &params)?;
        let now = OffsetDateTime::now_utc();
        let target = runbook.target(&params);
        let blockers = self.blockers(runbook, &params, now).await?;
        let overrides = if blockers.is_empty() {
            None
        } else {
            let said = self.say_blockers(&blockers, &target);
            let group = self.catalogue.override_group.as_deref();
            match (ask.force, group) {
                (false, Some(group)) => {
                    return Err(RunbookError::Refused(format!(
                        "{said}. Nothing was requested. To override it, ask again with `--force`: that needs one more approval, from `{}`.",
                        escape(group)
                    )));
                }
                (false, None) => {
                    return Err(RunbookError::Refused(format!(
                        "{said}. Nothing was requested."
                    )));
                }
                (true, None) => {
                    return Err(RunbookError::Refused(format!(
                        "{said}. Nothing was requested: no override is set up (`[deploy] override_group` names who may approve one)."
                    )));
                }
                (true, Some(group)) => Some(Override {
                    what: self.plain_blockers(&blockers, &target),
                    group: group.to_owned(),
                }),
            }
        };
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
            overrides,
        };
        if runbook.needs_approval(&asked.params) || asked.overrides.is_some() {
            self.open_request(who, runbook, asked, ask.preview).await
        } else {
            self.queue_now(who, runbook, asked).await
        }
    }

    /// What stands in the way of a run of `runbook` with `params` at `now`: the locks on its
    /// target or environment, and the freeze windows that hold for it. Held PagerDuty writes
    /// are not deploys: nothing.
    async fn blockers(
        &self,
        runbook: &Runbook,
        params: &BTreeMap<String, String>,
        now: OffsetDateTime,
    ) -> Result<Vec<Blocker>, RunbookError> {
        if held_action(runbook.name()).is_some() {
            return Ok(Vec::new());
        }
        let target = runbook.target(params);
        let env = runbook.deployed(params).map(|d| d.env);
        let locks = self
            .store
            .locks(now)
            .await
            .map_err(|e| store_failed("The locks could not be read", &e))?;
        Ok(deploy::blockers(
            &locks,
            &self.catalogue.freezes,
            runbook.name(),
            &target,
            env.as_deref(),
            now,
        ))
    }

    /// What stands in the way, for the person who asked (chat markup).
    fn say_blockers(&self, blockers: &[Blocker], target: &str) -> String {
        blockers
            .iter()
            .map(|b| b.say(target, mention, escape, chat::when))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The same as plain text, for what is stored (a request's override, a job's error) and
    /// shown on pages and in escaped messages: people by their ids.
    fn plain_blockers(&self, blockers: &[Blocker], target: &str) -> String {
        blockers
            .iter()
            .map(|b| b.say(target, str::to_owned, str::to_owned, chat::when))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Why job `job` may not start now: a lock or freeze that came after it was asked for.
    /// An override covers what stood in the way when it was asked for (a lock that was held
    /// then, a window that held then, until the same end), not what came after it. `Err`: the
    /// store could not be read.
    pub(crate) async fn blocked_at_start(
        &self,
        job: &crate::domain::job::Job,
    ) -> Result<Option<String>, RunbookError> {
        let Some(runbook) = self.catalogue.runbook(&job.runbook) else {
            return Ok(None);
        };
        let mut blockers = self
            .blockers(runbook, &job.params, OffsetDateTime::now_utc())
            .await?;
        if job.overrides.is_some() && !blockers.is_empty() {
            let asked_at = match job.approval_id {
                Some(id) => self
                    .store
                    .approval_request(id)
                    .await
                    .map_err(|e| store_failed("The approval request could not be read", &e))?
                    .map(|r| r.created_at),
                None => None,
            }
            .unwrap_or(job.created_at);
            blockers.retain(|b| match b {
                Blocker::Lock(lock) => lock.created_at > asked_at,
                Blocker::Freeze { freeze, until } => freeze.active_at(asked_at) != Some(*until),
            });
        }
        Ok((!blockers.is_empty()).then(|| self.plain_blockers(&blockers, &job.target)))
    }

    /// The locks held now.
    pub async fn locks(&self) -> Result<Vec<Lock>, RunbookError> {
        self.store
            .locks(OffsetDateTime::now_utc())
            .await
            .map_err(|e| store_failed("The locks could not be read", &e))
    }

    /// Lock `name` (a target or an environment some runbook can have, or [`deploy::GLOBAL`])
    /// for `who`, for `duration` or until unlocked. The answer for the channel.
    pub async fn lock(
        &self,
        who: &Requester<'_>,
        name: &str,
        reason: &str,
        duration: Option<std::time::Duration>,
    ) -> Result<String, RunbookError> {
        if name.len() > 200 || name.chars().any(char::is_control) {
            return Err(RunbookError::Refused(
                "That is not a target or an environment (too long, or with control characters)."
                    .into(),
            ));
        }
        // One lock per name whatever its case (`Production` is `production`).
        let typed = name;
        let name = &typed.to_lowercase();
        if name != deploy::GLOBAL
            && !self.catalogue.lockable(typed)
            && !self.catalogue.lockable(name)
        {
            return Err(RunbookError::Refused(format!(
                "No runbook runs on `{}`: a lock names a target (like `api/production`) or an environment (like `production`) that a runbook can have, or `--global`.",
                escape(typed)
            )));
        }
        let now = OffsetDateTime::now_utc();
        let expires_at =
            duration.map(|d| now + time::Duration::try_from(d).unwrap_or(time::Duration::DAY));
        let lock = Lock {
            name: name.to_owned(),
            holder: who.user.to_owned(),
            reason: reason.to_owned(),
            channel: who.channel.to_owned(),
            correlation_id: who.correlation_id.to_owned(),
            created_at: now,
            expires_at,
        };
        let until = expires_at
            .map(|t| format!(" until {}", chat::when(t)))
            .unwrap_or_default();
        let entry = who.entry("lock.take", Outcome::Succeeded).detail(format!(
            "locked {}{until}{}",
            lock.what(),
            lock.reason_as(str::to_owned)
        ));
        let taken = self
            .store
            .take_lock(&lock, now, vec![entry])
            .await
            .map_err(|e| store_failed("The lock could not be taken", &e))?;
        match taken {
            Locked::Taken(lock) => Ok(format!(
                "🔒 {} locked `{}`{}{until}. Runs on it are refused until {}it is unlocked (`{} unlock {}`).",
                mention(who.user),
                escape(lock.what()),
                lock.reason_as(escape),
                if lock.expires_at.is_some() {
                    "then or until "
                } else {
                    ""
                },
                self.slash,
                if lock.name == deploy::GLOBAL {
                    "--global"
                } else {
                    &lock.name
                }
            )),
            Locked::Held(held) if held.holder == who.user => Err(RunbookError::Refused(format!(
                "You already hold the lock on `{}` (since {}).",
                escape(held.what()),
                chat::when(held.created_at)
            ))),
            Locked::Held(held) => Err(RunbookError::Refused(format!(
                "`{}` is already locked by {}{}, since {}.",
                escape(held.what()),
                mention(&held.holder),
                held.reason_as(escape),
                chat::when(held.created_at)
            ))),
        }
    }

    /// Unlock `name` for `who`: its holder, or anyone who may `lock.break` (default: admins).
    pub async fn unlock(&self, who: &Requester<'_>, name: &str) -> Result<String, RunbookError> {
        let name = &name.to_lowercase();
        let may_break = self
            .catalogue
            .access
            .check(who.user, Some("lock.break"), "lock", &["admins"])
            .is_ok();
        let now = OffsetDateTime::now_utc();
        let unlocked = self
            .store
            .release_lock(name, who.user, may_break, now, |lock| {
                vec![
                    who.entry("lock.release", Outcome::Succeeded)
                        .detail(format!(
                            "unlocked {} (held by {} since {})",
                            lock.what(),
                            lock.holder,
                            chat::when(lock.created_at)
                        )),
                ]
            })
            .await
            .map_err(|e| store_failed("The lock could not be released", &e))?;
        let shown = deploy::shown(name);
        match unlocked {
            Unlocked::Released(lock) => Ok(format!(
                "🔓 {} unlocked `{}`{}.",
                mention(who.user),
                escape(shown),
                if lock.holder == who.user {
                    String::new()
                } else {
                    format!(" (it was held by {})", mention(&lock.holder))
                }
            )),
            Unlocked::NotLocked => Err(RunbookError::Refused(format!(
                "`{}` is not locked.",
                escape(shown)
            ))),
            Unlocked::NotYours(lock) => Err(RunbookError::Refused(format!(
                "`{}` is locked by {}; only they, or whoever may break locks (`lock.break`; by default admins), can unlock it.",
                escape(shown),
                mention(&lock.holder)
            ))),
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
            overrides: _,
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
            overrides: None,
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
            overrides,
        } = asked;
        // A forced run of a runbook that asks no approval of its own needs the override's.
        let policy = match (&runbook.definition().approval, &overrides) {
            (Some(policy), _) if runbook.needs_approval(&params) => policy.clone(),
            (_, Some(o)) => ApprovalPolicy {
                group: o.group.clone(),
                count: 0,
                ..ApprovalPolicy::default()
            },
            (_, None) => {
                return Err(RunbookError::Refused(
                    "This run needs no approval, yet one was about to be asked.".into(),
                ));
            }
        };
        let required = policy.count + u32::from(overrides.is_some());
        let plan_output = match (&runbook.definition().plan, preview) {
            (Some(plan), Some(preview)) => Some(format!(
                "{preview}\n\n{}",
                self.run_plan(plan, &params).await?
            )),
            (Some(plan), None) => Some(self.run_plan(plan, &params).await?),
            (None, preview) => preview,
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
            required,
            plan_output,
            correlation_id: who.correlation_id.to_owned(),
            created_at: now,
            expires_at: expires,
            retry_safe: runbook.definition().retry_safe,
            overrides: overrides.as_ref().map(|o| o.what.clone()),
            override_group: overrides.as_ref().map(|o| o.group.clone()),
        };
        let overriding = overrides
            .as_ref()
            .map(|o| {
                format!(
                    "; overrides: {}; one of the approvals must come from {}",
                    o.what, o.group
                )
            })
            .unwrap_or_default();
        let id = self
            .store
            .create_approval_request(&new, |id| {
                vec![who.entry("approval.request", Outcome::Succeeded).detail(format!(
                "request #{id}: {name} on {target} ({shown}); needs {} from {}; expires {}{overriding}",
                required,
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
                Message::text(match &overrides {
                    None => format!(
                        "Request #{id} for {name} is waiting for {} approval{} from `{}`.",
                        required,
                        if required == 1 { "" } else { "s" },
                        escape(&policy.group)
                    ),
                    Some(o) => format!(
                        "Request #{id} for {name} overrides: {}. It is waiting for {}.",
                        escape(&o.what),
                        report::needs(&request)
                    ),
                })
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
    pub async fn vote(&self, cast: Cast<'_>) -> Result<Voted, RunbookError> {
        let Cast {
            voter,
            channel,
            correlation_id,
            request: id,
            decision,
            comment,
            via,
        } = cast;
        // The vote's own row says how it came, where that is not the usual way, and what the
        // voter said with it.
        let noted = |detail: String| {
            let mut detail = via.noting(detail);
            if let Some(comment) = comment {
                detail = format!("{detail}; comment: {comment}");
            }
            detail
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
        // Whatever groups list them: a guest, a deactivated account or someone from another
        // workspace does not vote, and when the platform cannot say, nobody does.
        if via != Transport::Console
            && let Err(text) = chat::may_act(&*self.chat, voter, WhenUnsure::Refuse).await
        {
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
        let groups = self
            .store
            .approval_request(id)
            .await
            .map_err(|e| store_failed("The request could not be read", &e))?
            .map(|r| (r.approver_group, r.override_group));
        let standing = match &groups {
            Some((approvers, overriders)) => Standing {
                approver: self.catalogue.access.in_group(voter, approvers),
                overrider: overriders
                    .as_deref()
                    .is_some_and(|g| self.catalogue.access.in_group(voter, g)),
            },
            None => Standing::default(),
        };
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
                            "queued on {} after approval of request #{id}{}",
                            r.target,
                            r.overrides
                                .as_deref()
                                .map(|o| format!("; break-glass, overriding: {o}"))
                                .unwrap_or_default()
                        )),
                );
            }
            entries
        };
        let (request, result) = self
            .store
            .vote(
                id,
                Ballot {
                    voter,
                    decision,
                    comment,
                    standing,
                },
                now,
                audit,
            )
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
    /// A forced run over a lock or freeze: what it overrides, and whose approval that needs.
    overrides: Option<Override>,
}

/// What a forced run overrides (said as chat markup), and the group one approver must be of.
struct Override {
    what: String,
    group: String,
}

/// How a run is asked for.
#[derive(Debug, Clone, Default)]
pub struct Ask {
    /// Shown to approvers beside (or instead of) the runbook's plan.
    pub preview: Option<String>,
    /// `--force`: override a lock or freeze (break-glass).
    pub force: bool,
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

/// One vote as asked for, however it came (a button, a command, a form with a comment).
#[derive(Debug, Clone, Copy)]
pub struct Cast<'a> {
    pub voter: &'a str,
    pub channel: &'a str,
    pub correlation_id: &'a str,
    pub request: i64,
    pub decision: Decision,
    pub comment: Option<&'a str>,
    pub via: Transport,
}

/// The answer to a vote, and whether the approval message should be refreshed.
pub struct Voted {
    pub reply: String,
    pub changed: bool,
    pub request: Option<ApprovalRequest>,
}
