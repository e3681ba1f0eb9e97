//! The durable queue's workers: claim a job atomically, hold its lease with a heartbeat, run
//! it, record how it ended. A reaper finds jobs whose worker died (the lease ran out) and
//! reports them; an expirer closes approval requests nobody decided in time.

mod held;
pub mod report;
pub mod runner;

use std::{sync::Arc, time::Duration};

use time::OffsetDateTime;
use tokio::{sync::watch, time::Instant};
use tracing::Instrument;

use crate::{
    domain::audit::{AuditEntry, Outcome},
    domain::runbook::Run,
    domain::{
        approval::binding,
        job::{Heartbeat, Job, JobStatus, Released, Stream},
    },
    runbooks::Runbooks,
};
use runner::{LogSink, RunEnd, Stop};

/// Start the workers, the reaper and the expirer. They stop when `stop` turns true, after the
/// job in hand ends (running jobs are not abandoned by a graceful shutdown).
pub fn spawn(
    runbooks: Arc<Runbooks>,
    stop: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let background = runbooks.background.clone();
    let mut tasks = Vec::new();
    // Unique per app instance, even for two apps in one process or two containers that share
    // a hostname and pid: heartbeats and results are fenced on this id.
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let process = format!("{}-{}-{}", hostname(), std::process::id(), &nonce[..8]);
    for n in 0..runbooks.jobs.workers {
        let worker = format!("{process}/{n}");
        tasks.push(background.spawn(
            format!("worker {n}"),
            work(runbooks.clone(), worker, stop.clone()),
        ));
    }
    tasks.push(background.spawn("reaper", reap(runbooks.clone(), stop.clone())));
    tasks.push(background.spawn("expirer", expire(runbooks, stop)));
    tasks
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "pantheon".to_owned())
}

async fn work(runbooks: Arc<Runbooks>, worker: String, mut stop: watch::Receiver<bool>) {
    let poll = runbooks.jobs.poll;
    while !*stop.borrow() {
        match run_next(&runbooks, &worker).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                tokio::select! {
                    () = runbooks.work.wait_queued() => {}
                    () = tokio::time::sleep(poll) => {}
                    _ = stop.changed() => {}
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "claiming a job failed");
                tokio::time::sleep(poll).await;
            }
        }
    }
}

/// One step of a worker: claim the next queued job as `worker` and run it to its end. The id of
/// the job run, or None when nothing was waiting. The worker loop repeats this; tests call it
/// to run a job without waiting for a worker to notice it.
pub async fn run_next(
    runbooks: &Arc<Runbooks>,
    worker: &str,
) -> Result<Option<i64>, crate::store::StoreError> {
    let lease =
        time::Duration::try_from(runbooks.jobs.lease).unwrap_or(time::Duration::seconds(30));
    // Taken before the claim: the lease can only end later than this suggests.
    let claimed_at = Instant::now();
    let now = OffsetDateTime::now_utc();
    let Some(job) = runbooks.store.claim_job(worker, now + lease).await? else {
        return Ok(None);
    };
    let id = job.id;
    run_claimed(runbooks, worker, job, claimed_at).await;
    Ok(Some(id))
}

/// Run `job`, which `worker` claimed at `claimed_at` (the instant its lease is counted from),
/// to its end: [`run_next`] after its claim. Tests call it with a claim made long ago, to see a
/// job whose lease ran out before it could start.
pub async fn run_claimed(runbooks: &Arc<Runbooks>, worker: &str, job: Job, claimed_at: Instant) {
    let span = tracing::error_span!("job", job_id = job.id, correlation_id = %job.correlation_id, runbook = %job.runbook);
    run_job(runbooks, worker, job, claimed_at)
        .instrument(span)
        .await;
}

fn job_entry(job: &Job, outcome: Outcome, detail: String) -> AuditEntry {
    AuditEntry::new(&job.correlation_id, "worker", "job", outcome)
        .channel(&job.channel)
        .command(&format!("{} #{}", job.runbook, job.id))
        .detail(detail)
}

/// Run one claimed job to its end.
async fn run_job(runbooks: &Arc<Runbooks>, worker: &str, job: Job, claimed_at: Instant) {
    let started = std::time::Instant::now();
    // A retried job keeps its earlier attempts' lines: each attempt's are keyed by its number.
    let log = LogSink::new(job.attempts);
    metrics::counter!("pantheon_jobs_started_total", "runbook" => job.runbook.clone()).increment(1);
    let waited = OffsetDateTime::now_utc() - job.created_at;
    metrics::histogram!("pantheon_job_queue_wait_seconds").record(waited.as_seconds_f64().max(0.0));

    // The job must still be what was asked for (and approved): same runbook definition, same
    // parameters, every parameter still valid.
    let checked = match check_job(runbooks, &job) {
        // A lock taken or a freeze begun since it was asked for stops it, unless it was
        // approved as an override of exactly that.
        Ok(run) => match runbooks.blocked_at_start(&job).await {
            Ok(None) => Ok(run),
            Ok(Some(why)) => Err(format!("not started: {why}")),
            Err(e) => {
                tracing::error!(error = %e, "the locks could not be read; giving the job back, not started");
                give_back(runbooks, worker, &job).await;
                return;
            }
        },
        Err(why) => Err(why),
    };
    let (end, run_config) = match checked {
        Err(why) => (
            RunEnd::Failed {
                exit_code: None,
                error: why,
            },
            None,
        ),
        Ok(config) => (RunEnd::Succeeded, Some(config)),
    };
    // Set once the job has started, when its runbook records deploys on GitHub.
    let mut deployment: Option<GithubDeployment> = None;
    let end = match run_config {
        None => end,
        Some(run) => {
            if !begin(runbooks, worker, &job, claimed_at).await {
                return;
            }
            log.line(
                Stream::System,
                &format!("started by {worker} (attempt {})", job.attempts),
            )
            .await;
            let _ = runbooks
                .audit
                .record(vec![job_entry(
                    &job,
                    Outcome::Started,
                    format!("worker {worker}, attempt {}", job.attempts),
                )])
                .await;
            let runbooks_bg = runbooks.clone();
            let job_bg = job.clone();
            tokio::spawn(async move {
                report::job_changed(
                    &runbooks_bg,
                    &job_bg,
                    format!(
                        "▶ {} #{} started.",
                        crate::chat::escape(&job_bg.runbook),
                        job_bg.id
                    ),
                )
                .await;
            });
            deployment = GithubDeployment::create(runbooks, &job, &log).await;
            let (cancel_tx, cancel_rx) = watch::channel(Stop::Run);
            let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let heartbeat = tokio::spawn(keep_lease(
                runbooks.clone(),
                job.id,
                worker.to_owned(),
                claimed_at,
                cancel_tx,
                lost.clone(),
                log.clone(),
            ));
            let env = [
                ("PANTHEON_JOB_ID", job.id.to_string()),
                ("PANTHEON_RUNBOOK", job.runbook.clone()),
                ("PANTHEON_REQUESTED_BY", job.requested_by.clone()),
            ];
            let end = match run {
                Run::HeldCommand => held::run(runbooks, &job, &log, cancel_rx).await,
                run => {
                    runner::run(&runbooks.vendors, &run, &job.params, &env, &log, cancel_rx).await
                }
            };
            heartbeat.abort();
            if lost.load(std::sync::atomic::Ordering::SeqCst) {
                // Reaped while we were stuck: someone else owns the outcome now.
                log.flush(&runbooks.store, job.id).await;
                tracing::warn!(job_id = job.id, "lost the lease; result not recorded");
                return;
            }
            end
        }
    };

    let elapsed = started.elapsed();
    let (status, exit_code, error, said) = match &end {
        RunEnd::Succeeded => (
            JobStatus::Succeeded,
            Some(0),
            None,
            format!(
                "✅ {} #{} succeeded in {}.",
                job.runbook,
                job.id,
                report::human_duration(elapsed.try_into().unwrap_or_default())
            ),
        ),
        RunEnd::Failed { exit_code, error } => (
            JobStatus::Failed,
            *exit_code,
            Some(error.clone()),
            format!(
                "❌ {} #{} failed after {}: {}.",
                job.runbook,
                job.id,
                report::human_duration(elapsed.try_into().unwrap_or_default()),
                // Vendor answers and held commands can carry outside text.
                crate::chat::escape(&crate::chat::truncate(error, 300))
            ),
        ),
        RunEnd::TimedOut { after } => (
            JobStatus::Failed,
            None,
            Some(format!(
                "timed out after {} and was stopped",
                humantime::format_duration(*after)
            )),
            format!(
                "⏱ {} #{} timed out after {} and was stopped.",
                job.runbook,
                job.id,
                humantime::format_duration(*after)
            ),
        ),
        RunEnd::Cancelled => (
            JobStatus::Cancelled,
            None,
            Some("cancelled".to_owned()),
            format!("⏹ {} #{} was cancelled.", job.runbook, job.id),
        ),
    };
    log.line(
        Stream::System,
        &format!("{} ({})", status.as_str(), error.as_deref().unwrap_or("ok")),
    )
    .await;
    log.flush(&runbooks.store, job.id).await;
    let outcome = if status == JobStatus::Succeeded {
        Outcome::Succeeded
    } else {
        Outcome::Failed
    };
    let entry = job_entry(
        &job,
        outcome,
        format!(
            "{}{}",
            status.as_str(),
            error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ),
    )
    .duration(elapsed);
    // A transient database error must not turn a finished job into an "interrupted" one.
    let mut recorded = Err(crate::store::StoreError::Unavailable("not tried".into()));
    for attempt in 0..5u32 {
        recorded = runbooks
            .store
            .finish_job(
                job.id,
                worker,
                status,
                exit_code,
                error.as_deref(),
                OffsetDateTime::now_utc(),
                vec![entry.clone()],
            )
            .await;
        if recorded.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200 * 2u64.pow(attempt))).await;
    }
    match recorded {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(job_id = job.id, "the job was no longer ours when it ended");
            return;
        }
        Err(e) => tracing::error!(job_id = job.id, error = %e, "job result not recorded"),
    }
    metrics::counter!("pantheon_jobs_finished_total", "runbook" => job.runbook.clone(), "status" => status.as_str()).increment(1);
    // The thread is seen by the whole channel, so it gets the outcome, not the output: the
    // "Log" button answers those who may see the job with a link of their own.
    let text = said;
    let mut finished = job.clone();
    finished.status = status;
    if let Some(d) = &deployment {
        d.finish(runbooks, &job, status).await;
    }
    report::job_changed(runbooks, &finished, text).await;
}

/// A deploy recorded on GitHub as a Deployment (`deploy = { …, github = "acme/{app}" }`):
/// created when the job starts (state `in_progress`), its final state set when it ends. Both
/// are audited; a failure is logged and noted in the job's log, and never fails the job.
struct GithubDeployment {
    repo: String,
    id: i64,
    env: String,
}

/// `owner/name`, each part GitHub's characters, and no `.` or `..` that would climb the URL.
fn is_repository(repo: &str) -> bool {
    let parts: Vec<&str> = repo.split('/').collect();
    parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && *p != "."
                && *p != ".."
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
}

impl GithubDeployment {
    async fn create(runbooks: &Runbooks, job: &Job, log: &LogSink) -> Option<Self> {
        let deployed = runbooks
            .catalogue
            .runbook(&job.runbook)
            .and_then(|r| r.deployed(&job.params))?;
        let repo = deployed.github.clone()?;
        let Some(github) = runbooks.vendors.github() else {
            log.line(
                Stream::System,
                "not recorded on GitHub: GITHUB_TOKEN is not set",
            )
            .await;
            return None;
        };
        if !is_repository(&repo) {
            log.line(
                Stream::System,
                &format!("not recorded on GitHub: `{repo}` is not a repository"),
            )
            .await;
            return None;
        }
        let description = format!("{} #{} by {}", job.runbook, job.id, job.requested_by);
        let created = github
            .create_deployment(&repo, &deployed.version, &deployed.env, &description)
            .await;
        let (outcome, detail, made) = match created {
            Ok(id) => (
                Outcome::Succeeded,
                format!(
                    "deployment {id} of {repo}: {} to {}",
                    deployed.version, deployed.env
                ),
                Some(Self {
                    repo: repo.clone(),
                    id,
                    env: deployed.env.clone(),
                }),
            ),
            Err(e) => (Outcome::Failed, format!("{repo}: {e}"), None),
        };
        log.line(
            Stream::System,
            &match &made {
                Some(d) => format!("recorded on GitHub as deployment {} of {repo}", d.id),
                None => format!("not recorded on GitHub: {detail}"),
            },
        )
        .await;
        let entry = AuditEntry::new(&job.correlation_id, "worker", "github.deployment", outcome)
            .channel(&job.channel)
            .command(&format!("{} #{}", job.runbook, job.id))
            .detail(detail);
        if let Err(e) = runbooks.audit.record(vec![entry]).await {
            tracing::warn!(error = %e, "the GitHub deployment's audit row was not written");
        }
        if let Some(d) = &made {
            d.set(runbooks, job, "in_progress", "started").await;
        }
        made
    }

    async fn finish(&self, runbooks: &Runbooks, job: &Job, status: JobStatus) {
        let (state, said) = match status {
            JobStatus::Succeeded => ("success", "succeeded"),
            JobStatus::Cancelled => ("error", "cancelled"),
            JobStatus::Interrupted => ("error", "interrupted"),
            _ => ("failure", "failed"),
        };
        self.set(runbooks, job, state, said).await;
    }

    async fn set(&self, runbooks: &Runbooks, job: &Job, state: &str, said: &str) {
        let Some(github) = runbooks.vendors.github() else {
            return;
        };
        let description = format!("{} #{} {said}", job.runbook, job.id);
        let result = github
            .deployment_status(&self.repo, self.id, state, &self.env, &description)
            .await;
        let (outcome, detail) = match &result {
            Ok(()) => (
                Outcome::Succeeded,
                format!("deployment {} of {}: {state}", self.id, self.repo),
            ),
            Err(e) => (
                Outcome::Failed,
                format!("deployment {} of {}: {state}: {e}", self.id, self.repo),
            ),
        };
        if let Err(e) = &result {
            tracing::warn!(error = %e, deployment = self.id, "GitHub deployment status not set");
        }
        let entry = AuditEntry::new(
            &job.correlation_id,
            "worker",
            "github.deployment_status",
            outcome,
        )
        .channel(&job.channel)
        .command(&format!("{} #{}", job.runbook, job.id))
        .detail(detail);
        if let Err(e) = runbooks.audit.record(vec![entry]).await {
            tracing::warn!(error = %e, "the GitHub deployment status's audit row was not written");
        }
    }
}

/// Mark the job started, within its lease. If the lease runs out first (claiming and checking
/// took most of it: a slow database), the job is given back at once, not started: starting it
/// now could overlap a run by whoever gets it next, and holding on to it would keep its target
/// until the reaper came. False if the job is not to be run here.
async fn begin(runbooks: &Runbooks, worker: &str, job: &Job, claimed_at: Instant) -> bool {
    let stop_at = stop_by(runbooks, claimed_at);
    if Instant::now() < stop_at {
        let start = runbooks
            .store
            .start_job(job.id, worker, OffsetDateTime::now_utc());
        match tokio::time::timeout_at(stop_at, start).await {
            Ok(Ok(true)) => return true,
            Ok(Ok(false)) => {
                tracing::warn!("the job was no longer ours to start");
                return false;
            }
            Ok(Err(e)) => tracing::error!(error = %e, "the job could not be marked started"),
            Err(_) => tracing::error!("marking the job started took the rest of its lease"),
        }
    }
    tracing::error!("the lease ran out before the job could start; giving it back, not started");
    give_back(runbooks, worker, job).await;
    false
}

/// Give back a job this worker holds and did not start, and say so in its thread.
async fn give_back(runbooks: &Runbooks, worker: &str, job: &Job) {
    match runbooks
        .store
        .give_back_unstarted(job.id, worker, OffsetDateTime::now_utc(), released_entry)
        .await
    {
        Ok(Some(job)) => report_released(runbooks, &job).await,
        // Reaped or taken meanwhile: whoever did reports it.
        Ok(None) => {}
        Err(e) => {
            tracing::error!(error = %e, "the job could not be given back; the reaper will");
        }
    }
}

/// The audit row of a job its worker no longer holds, released as [`Released::of`] says.
fn released_entry(job: &Job) -> AuditEntry {
    let (outcome, detail) = match Released::of(job) {
        Released::NotStarted => (
            Outcome::Started,
            "not started: its worker did not start it before its lease ran out; re-queued (nothing ran)",
        ),
        Released::NeverStarted => (
            Outcome::Failed,
            "not started: its worker did not start it before its lease ran out, and it has been claimed too often to queue it again; not run this time",
        ),
        Released::Requeued => (
            Outcome::Started,
            "its worker stopped (lease expired); re-queued because the runbook is safe to retry",
        ),
        Released::Cancelled => (
            Outcome::Failed,
            "cancelled: its worker stopped after a cancel was asked",
        ),
        Released::Interrupted => (
            Outcome::Failed,
            "interrupted: its worker stopped before it finished (lease expired); not rerun",
        ),
    };
    job_entry(job, outcome, detail.to_owned())
}

/// Tell the job's thread (and the workers, if it is queued again) what became of a job its
/// worker no longer holds.
async fn report_released(runbooks: &Runbooks, job: &Job) {
    let released = Released::of(job);
    tracing::warn!(
        job_id = job.id,
        status = job.status.as_str(),
        released = ?released,
        "released a job its worker no longer holds"
    );
    metrics::counter!("pantheon_jobs_reaped_total", "status" => job.status.as_str()).increment(1);
    let (runbook, id) = (crate::chat::escape(&job.runbook), job.id);
    let text = match released {
        Released::NotStarted => format!(
            "⚠ {runbook} #{id} was not started: its worker could not start it before its lease ran out. Nothing ran; it is queued again."
        ),
        Released::NeverStarted => format!(
            "⚠ {runbook} #{id} was not started: its worker could not start it before its lease ran out. It has been claimed {} times without finishing, so it is not queued again; nothing ran this time. Ask again once Pantheon is healthy.",
            job.attempts
        ),
        Released::Cancelled => format!("⏹ {runbook} #{id} was cancelled (its worker stopped)."),
        Released::Requeued => format!(
            "⚠ {runbook} #{id} lost its worker and was re-queued (the runbook is safe to retry)."
        ),
        Released::Interrupted => format!(
            "⚠ {runbook} #{id} was interrupted: its worker stopped before it finished. It was *not* run again; check its effects, then ask again if needed."
        ),
    };
    if job.status == JobStatus::Queued {
        runbooks.work.queued();
    }
    report::job_changed(runbooks, job, text).await;
}

/// Renew the lease every third of its length; flush log lines meanwhile; pass on a cancel.
/// If the lease cannot be renewed before it would run out, stop the job ourselves: by then the
/// reaper may hand it to someone else, and two runs must never overlap. That holds however the
/// renewal fails, including a database that does not answer at all: the deadline is kept on
/// this process's own clock and cuts short a heartbeat or a log flush that hangs.
async fn keep_lease(
    runbooks: Arc<Runbooks>,
    job_id: i64,
    worker: String,
    claimed_at: Instant,
    cancel: watch::Sender<Stop>,
    lost: Arc<std::sync::atomic::AtomicBool>,
    log: LogSink,
) {
    let lease = runbooks.jobs.lease;
    let lease_t = time::Duration::try_from(lease).unwrap_or(time::Duration::seconds(30));
    let every = (lease / 3).max(Duration::from_millis(100));
    let flush_every = Duration::from_millis(250).min(every);
    let mut stop_at = stop_by(&runbooks, claimed_at);
    // Beats are counted from the claim, as the lease is; flushes from now.
    let mut next_beat = claimed_at + every;
    let mut next_flush = Instant::now() + flush_every;
    loop {
        let step = async {
            tokio::time::sleep_until(next_beat.min(next_flush)).await;
            if Instant::now() >= next_flush {
                log.flush(&runbooks.store, job_id).await;
                next_flush = Instant::now() + flush_every;
            }
            if Instant::now() < next_beat {
                return None;
            }
            let asked_at = Instant::now();
            next_beat = asked_at + every;
            let until = OffsetDateTime::now_utc() + lease_t;
            Some((
                asked_at,
                runbooks.store.heartbeat(job_id, &worker, until).await,
            ))
        };
        let beat = match tokio::time::timeout_at(stop_at, step).await {
            Ok(None) => continue,
            Ok(Some(beat)) => beat,
            Err(_) => {
                tracing::error!(
                    job_id,
                    "could not renew the lease in time; stopping the job"
                );
                lost.store(true, std::sync::atomic::Ordering::SeqCst);
                // The reaper may act half a lease after the lease ends, that is two thirds of a
                // lease from now: a process gets half of that to exit before it is killed.
                let _ = cancel.send(Stop::Now(lease / 3));
                return;
            }
        };
        match beat {
            (asked_at, Ok(Heartbeat::Held)) => stop_at = stop_by(&runbooks, asked_at),
            (asked_at, Ok(Heartbeat::CancelRequested)) => {
                stop_at = stop_by(&runbooks, asked_at);
                log.line(Stream::System, "cancel requested; stopping").await;
                let _ = cancel.send(Stop::Cancel);
            }
            (_, Ok(Heartbeat::Lost)) => {
                // Already reaped, maybe already running elsewhere: no grace.
                lost.store(true, std::sync::atomic::Ordering::SeqCst);
                let _ = cancel.send(Stop::Now(Duration::ZERO));
                return;
            }
            (_, Err(e)) => tracing::warn!(job_id, error = %e, "heartbeat failed; will retry"),
        }
    }
}

/// When a worker must stop a job whose lease was last granted (or renewed) by a request sent at
/// `asked_at`: while a sixth of the lease is left, so the job is gone before anyone may reap it.
fn stop_by(runbooks: &Runbooks, asked_at: Instant) -> Instant {
    let lease = runbooks.jobs.lease;
    asked_at + lease - lease / 6
}

/// The runbook's run configuration, if the job may still run.
fn check_job(runbooks: &Runbooks, job: &Job) -> Result<crate::domain::runbook::Run, String> {
    let Some(runbook) = runbooks.catalogue.any_runbook(&job.runbook) else {
        return Err(format!("runbook `{}` is no longer configured", job.runbook));
    };
    if binding(runbook.definition(), &job.params) != job.binding {
        return Err("the runbook's definition or the parameters changed since this was requested and approved; ask again".to_owned());
    }
    for (name, value) in &job.params {
        if runbook.param(name).is_none() {
            return Err(format!(
                "`{name}` is not a parameter of `{}` any more",
                job.runbook
            ));
        }
        runbook.validate(name, value).map_err(|e| e.to_string())?;
    }
    Ok(runbook.definition().run.clone())
}

async fn reap(runbooks: Arc<Runbooks>, mut stop: watch::Receiver<bool>) {
    let every =
        (runbooks.jobs.lease / 2).clamp(Duration::from_millis(200), Duration::from_secs(10));
    while !*stop.borrow() {
        reap_once(&runbooks, OffsetDateTime::now_utc()).await;
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stop.changed() => {}
        }
    }
}

/// One round of the reaper at `now`: jobs whose worker's lease ran out more than half a lease
/// ago are released as [`Released::of`] says (queued again if they had not started or are safe
/// to retry, cancelled if a cancel was asked, otherwise interrupted), and their threads told.
/// How many were reaped.
pub async fn reap_once(runbooks: &Runbooks, now: OffsetDateTime) -> usize {
    // A grace of half a lease absorbs clock differences between replicas.
    let cutoff =
        now - time::Duration::try_from(runbooks.jobs.lease / 2).unwrap_or(time::Duration::ZERO);
    match runbooks
        .store
        .reap_expired_leases(now, cutoff, released_entry)
        .await
    {
        Ok(reaped) => {
            for job in &reaped {
                report_released(runbooks, job).await;
            }
            reaped.len()
        }
        Err(e) => {
            tracing::error!(error = %e, "reaping failed");
            0
        }
    }
}

async fn expire(runbooks: Arc<Runbooks>, mut stop: watch::Receiver<bool>) {
    let every = Duration::from_secs(2);
    while !*stop.borrow() {
        expire_once(&runbooks, OffsetDateTime::now_utc()).await;
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stop.changed() => {}
        }
    }
}

/// One round of the expirer at `now`: pending approval requests past their expiry are expired
/// (audited) and their messages refreshed. How many expired.
pub async fn expire_once(runbooks: &Runbooks, now: OffsetDateTime) -> usize {
    let audit = |r: &crate::domain::approval::ApprovalRequest| {
        AuditEntry::new(
            &r.correlation_id,
            "system",
            "approval.expire",
            Outcome::Succeeded,
        )
        .channel(&r.channel)
        .command(&format!("{} request #{}", r.runbook, r.id))
        .detail("expired without enough approvals")
    };
    match runbooks.store.expire_due(now, audit).await {
        Ok(expired) => {
            for request in &expired {
                report::refresh_approval(runbooks, request.id).await;
            }
            expired.len()
        }
        Err(e) => {
            tracing::error!(error = %e, "expiring approval requests failed");
            0
        }
    }
}
