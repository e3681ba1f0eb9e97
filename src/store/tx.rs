//! Every business transaction of the store, written once for both databases over [`Conn`].
//! The rules themselves (who may vote, what a vote does) come from `domain/`; here they are
//! applied inside one transaction, with the audit rows of the step written in the same commit.

use std::collections::BTreeMap;

use sqlx::types::Json;
use time::OffsetDateTime;

use super::db::{Conn, List, Pooled, Ts, Tx};
use super::{Claiming, Prunable, Result, Store, StoreError, UserPrefs};
use crate::{
    domain::audit::{AuditEntry, AuditRecord, Outcome},
    domain::outbox::{Delivery, OutboxCounts, OutboxRow, Recorded},
    domain::{
        approval::{
            ApprovalRequest, Ballot, Decision, NewApprovalRequest, Refusal, RequestStatus,
            Transition, Vote, VoteResult, counts_as_override, decide,
        },
        deploy::{Lock, Locked, Unlocked},
        job::{Heartbeat, Job, JobStatus, LogLine, NewJob, Released, Stream},
        message::Block,
    },
};

// -- rows ---------------------------------------------------------------------------------------

fn corrupt(what: &str, raw: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} `{raw}`"))
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    id: i64,
    at: Ts,
    correlation_id: String,
    actor: String,
    channel: Option<String>,
    action: String,
    command: Option<String>,
    outcome: String,
    detail: Option<String>,
    duration_ms: Option<i64>,
}

impl TryFrom<AuditRow> for AuditRecord {
    type Error = StoreError;
    fn try_from(r: AuditRow) -> Result<Self> {
        Ok(AuditRecord {
            id: r.id,
            entry: AuditEntry {
                at: r.at.0,
                outcome: Outcome::parse(&r.outcome)
                    .ok_or_else(|| corrupt("audit outcome", &r.outcome))?,
                correlation_id: r.correlation_id,
                actor: r.actor,
                channel: r.channel,
                action: r.action,
                command: r.command,
                detail: r.detail,
                duration_ms: r.duration_ms,
            },
        })
    }
}

const AUDIT_COLUMNS: &str =
    "id, at, correlation_id, actor, channel, action, command, outcome, detail, duration_ms";

#[derive(sqlx::FromRow)]
struct RequestRow {
    id: i64,
    runbook: String,
    params: Json<BTreeMap<String, String>>,
    binding: String,
    target: String,
    requester: String,
    channel: String,
    approver_group: String,
    required: i32,
    status: String,
    plan_output: Option<String>,
    message_ref: Option<String>,
    correlation_id: String,
    created_at: Ts,
    expires_at: Ts,
    decided_at: Option<Ts>,
    decided_by: Option<String>,
    job_id: Option<i64>,
    retry_safe: bool,
    overrides: Option<String>,
    override_group: Option<String>,
}

/// The columns of [`RequestRow`].
const REQUEST_COLUMNS: &str = "id, runbook, params, binding, target, requester, channel, approver_group, required, status, plan_output, message_ref, correlation_id, created_at, expires_at, decided_at, decided_by, job_id, retry_safe, overrides, override_group";

impl RequestRow {
    fn into_request(self, votes: Vec<Vote>) -> Result<ApprovalRequest> {
        Ok(ApprovalRequest {
            id: self.id,
            runbook: self.runbook,
            params: self.params.0,
            binding: self.binding,
            target: self.target,
            requester: self.requester,
            channel: self.channel,
            approver_group: self.approver_group,
            required: u32::try_from(self.required).unwrap_or(1),
            status: RequestStatus::parse(&self.status)
                .ok_or_else(|| corrupt("request status", &self.status))?,
            plan_output: self.plan_output,
            message_ref: self.message_ref,
            correlation_id: self.correlation_id,
            created_at: self.created_at.0,
            expires_at: self.expires_at.0,
            decided_at: self.decided_at.map(|t| t.0),
            decided_by: self.decided_by,
            job_id: self.job_id,
            votes,
            overrides: self.overrides,
            override_group: self.override_group,
        })
    }
}

#[derive(sqlx::FromRow)]
struct VoteRow {
    voter: String,
    decision: String,
    at: Ts,
    overrider: bool,
    comment: Option<String>,
}

#[derive(sqlx::FromRow)]
struct JobRow {
    id: i64,
    runbook: String,
    params: Json<BTreeMap<String, String>>,
    binding: String,
    target: String,
    requested_by: String,
    approval_id: Option<i64>,
    channel: String,
    thread_ref: Option<String>,
    status: String,
    retry_safe: bool,
    cancel_requested: bool,
    attempts: i32,
    worker: Option<String>,
    lease_expires_at: Option<Ts>,
    correlation_id: String,
    created_at: Ts,
    started_at: Option<Ts>,
    finished_at: Option<Ts>,
    exit_code: Option<i32>,
    error: Option<String>,
    overrides: Option<String>,
}

/// The columns of [`JobRow`].
const JOB_COLUMNS: &str = "id, runbook, params, binding, target, requested_by, approval_id, channel, thread_ref, status, retry_safe, cancel_requested, attempts, worker, lease_expires_at, correlation_id, created_at, started_at, finished_at, exit_code, error, overrides";

impl TryFrom<JobRow> for Job {
    type Error = StoreError;
    fn try_from(r: JobRow) -> Result<Self> {
        Ok(Job {
            status: JobStatus::parse(&r.status).ok_or_else(|| corrupt("job status", &r.status))?,
            id: r.id,
            runbook: r.runbook,
            params: r.params.0,
            binding: r.binding,
            target: r.target,
            requested_by: r.requested_by,
            approval_id: r.approval_id,
            channel: r.channel,
            thread_ref: r.thread_ref,
            retry_safe: r.retry_safe,
            cancel_requested: r.cancel_requested,
            attempts: r.attempts,
            worker: r.worker,
            lease_expires_at: r.lease_expires_at.map(|t| t.0),
            correlation_id: r.correlation_id,
            created_at: r.created_at.0,
            started_at: r.started_at.map(|t| t.0),
            finished_at: r.finished_at.map(|t| t.0),
            exit_code: r.exit_code,
            error: r.error,
            overrides: r.overrides,
        })
    }
}

fn jobs_from(rows: Vec<JobRow>) -> Result<Vec<Job>> {
    rows.into_iter().map(Job::try_from).collect()
}

#[derive(sqlx::FromRow)]
struct LogRow {
    attempt: i32,
    seq: i32,
    at: Ts,
    stream: String,
    line: String,
}

#[derive(sqlx::FromRow)]
struct OutboxDbRow {
    id: i64,
    channel: String,
    text: String,
    blocks: Json<Vec<serde_json::Value>>,
    coalesce_key: Option<String>,
    coalesce_label: Option<String>,
    attempts: i32,
    created_at: Ts,
    priority: i16,
    maybe_posted: bool,
    posting_as: Option<i64>,
}

/// A row's blocks. Rows queued before blocks were stored in the neutral form hold Slack's Block
/// Kit: those are posted with their text alone (complete on its own), not refused.
fn blocks_of(id: i64, raw: Vec<serde_json::Value>) -> Vec<Block> {
    let parsed: std::result::Result<Vec<Block>, _> =
        raw.into_iter().map(serde_json::from_value).collect();
    parsed.unwrap_or_else(|e| {
        tracing::warn!(outbox_id = id, error = %e, "stored blocks are not in the neutral form; posting the text alone");
        Vec::new()
    })
}

/// The columns of [`OutboxDbRow`].
const OUTBOX_COLUMNS: &str = "id, channel, text, blocks, coalesce_key, coalesce_label, attempts, created_at, priority, posting_since IS NOT NULL AS maybe_posted, posting_as";

impl From<OutboxDbRow> for OutboxRow {
    fn from(r: OutboxDbRow) -> Self {
        OutboxRow {
            id: r.id,
            channel: r.channel,
            text: r.text,
            blocks: blocks_of(r.id, r.blocks.0),
            coalesce_key: r.coalesce_key,
            coalesce_label: r.coalesce_label,
            attempts: r.attempts,
            created_at: r.created_at.0,
            priority: r.priority,
            maybe_posted: r.maybe_posted,
            posting_as: r.posting_as,
        }
    }
}

// -- audit and claims ---------------------------------------------------------------------------

pub(super) async fn insert_audit(store: &Store, entries: &[&AuditEntry]) -> Result<()> {
    let mut pooled = Pooled::writer(store).await?;
    pooled.conn().insert_audit(entries).await
}

pub(super) async fn insert_audit_claiming(
    store: &Store,
    batch: &[Claiming<'_>],
    now: OffsetDateTime,
) -> Result<Vec<bool>> {
    let keys: Vec<&str> = batch.iter().filter_map(|c| c.key).collect();
    if let Store::Postgres(pool) = store {
        // One statement, so one round trip instead of four (see `postgres.rs`); a statement is
        // a transaction of its own.
        let mut conn = pool.acquire().await?;
        let inserted = super::postgres::insert_audit_claiming(&mut conn, batch, now).await?;
        return Ok(super::first_claims(&keys, &inserted));
    }
    // The first statement writes, so the write lock is taken at once.
    let mut tx = Tx::begin(store).await?;
    let mut conn = tx.conn();
    let sql = format!(
        "INSERT INTO request_claims (key, seen_at)
         SELECT DISTINCT value, $2 FROM ({}) AS keys WHERE true
         ON CONFLICT (key) DO NOTHING
         RETURNING key",
        conn.sql().list_1
    );
    let inserted: Vec<String> = conn
        .query_built(sql)
        .bind(List(&keys))
        .bind(Ts(now))
        .scalars()
        .await?;
    let fresh = super::first_claims(&keys, &inserted);
    let chosen: Vec<&AuditEntry> = Claiming::stored(batch, &fresh).collect();
    conn.insert_audit(&chosen).await?;
    tx.commit().await?;
    Ok(fresh)
}

pub(super) async fn claims_committed_at(
    store: &Store,
    keys: &[&str],
    now: OffsetDateTime,
) -> Result<Vec<String>> {
    let mut pooled = Pooled::acquire(store).await?;
    let mut conn = pooled.conn();
    let sql = format!(
        "SELECT key FROM request_claims WHERE key IN ({}) AND seen_at = $2",
        conn.sql().list_1
    );
    conn.query_built(sql)
        .bind(List(keys))
        .bind(Ts(now))
        .scalars()
        .await
}

pub(super) async fn prune_socket_claims(store: &Store, before: OffsetDateTime) -> Result<u64> {
    let mut pooled = Pooled::acquire(store).await?;
    pooled
        .conn()
        .query("DELETE FROM request_claims WHERE key >= 'socket:' AND key < 'socket;' AND seen_at < $1")
        .bind(Ts(before))
        .execute()
        .await
}

pub(super) async fn prune_claims(store: &Store, before: OffsetDateTime) -> Result<u64> {
    let mut pooled = Pooled::acquire(store).await?;
    pooled
        .conn()
        .query("DELETE FROM request_claims WHERE key >= 'slack:' AND key < $1")
        .bind(super::claim_bound(before))
        .execute()
        .await
}

/// One batch of retention: up to `limit` rows of `what` from before `before`.
pub(super) async fn prune_batch(
    store: &Store,
    what: Prunable,
    before: OffsetDateTime,
    limit: i64,
) -> Result<u64> {
    let sql = match what {
        // Settled notifications first, then deliveries no message points at any more.
        Prunable::Outbox => {
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox
              WHERE status <> 'pending' AND created_at < $1 LIMIT $2)"
        }
        // The payload goes; the row stays, so a redelivery (GitHub and PagerDuty sign no
        // timestamp) is still recognised as one.
        Prunable::Deliveries => {
            "UPDATE webhook_deliveries SET payload = '{}' WHERE id IN (SELECT id
               FROM webhook_deliveries WHERE payload <> '{}' AND received_at < $1 LIMIT $2)"
        }
        Prunable::JobLogs => {
            "DELETE FROM job_logs WHERE (job_id, attempt, seq) IN (SELECT l.job_id, l.attempt, l.seq
              FROM jobs j JOIN job_logs l ON l.job_id = j.id
             WHERE j.finished_at IS NOT NULL AND j.finished_at < $1 LIMIT $2)"
        }
        // The oldest rows by id (the primary key; ids follow time), those of them older than
        // the cutoff: bounded work per batch with no index on `at`, which every audit row
        // would otherwise pay for on the acknowledgement path. A row written with a clock
        // behind its neighbours' waits for the next round, never goes early.
        Prunable::Audit => {
            "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log ORDER BY id LIMIT $2)
               AND at < $1"
        }
    };
    let mut pooled = Pooled::acquire(store).await?;
    pooled
        .conn()
        .query(sql)
        .bind(Ts(before))
        .bind(limit)
        .execute()
        .await
}

pub(super) async fn audit_before(
    store: &Store,
    before: i64,
    limit: i64,
) -> Result<Vec<AuditRecord>> {
    let mut pooled = Pooled::acquire(store).await?;
    let rows: Vec<AuditRow> = pooled
        .conn()
        .query_built(format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE id < $1 ORDER BY id DESC LIMIT $2"
        ))
        .bind(before)
        .bind(limit)
        .fetch_all()
        .await?;
    rows.into_iter().map(AuditRecord::try_from).collect()
}

pub(super) async fn audit_for(store: &Store, correlation_id: &str) -> Result<Vec<AuditRecord>> {
    let mut pooled = Pooled::acquire(store).await?;
    let rows: Vec<AuditRow> = pooled
        .conn()
        .query_built(format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE correlation_id = $1 ORDER BY id"
        ))
        .bind(correlation_id)
        .fetch_all()
        .await?;
    rows.into_iter().map(AuditRecord::try_from).collect()
}

// -- people -------------------------------------------------------------------------------------

#[derive(sqlx::FromRow)]
struct PrefsRow {
    pagerduty_email: Option<String>,
    pagerduty_user_id: Option<String>,
}

pub(super) async fn user_prefs(store: &Store, slack_user_id: &str) -> Result<Option<UserPrefs>> {
    let mut pooled = Pooled::acquire(store).await?;
    let row: Option<PrefsRow> = pooled
        .conn()
        .query("SELECT pagerduty_email, pagerduty_user_id FROM user_prefs WHERE slack_user_id = $1")
        .bind(slack_user_id)
        .fetch_optional()
        .await?;
    Ok(row.map(|r| UserPrefs {
        pagerduty_email: r.pagerduty_email,
        pagerduty_user_id: r.pagerduty_user_id,
    }))
}

pub(super) async fn set_pagerduty_identity(
    store: &Store,
    slack_user_id: &str,
    email: &str,
    pagerduty_user_id: Option<&str>,
    now: OffsetDateTime,
) -> Result<()> {
    let mut pooled = Pooled::acquire(store).await?;
    pooled
        .conn()
        .query(
            "INSERT INTO user_prefs (slack_user_id, pagerduty_email, pagerduty_user_id, updated_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (slack_user_id) DO UPDATE
                SET pagerduty_email = excluded.pagerduty_email,
                    pagerduty_user_id = excluded.pagerduty_user_id,
                    updated_at = excluded.updated_at",
        )
        .bind(slack_user_id)
        .bind(email)
        .bind(pagerduty_user_id)
        .bind(Ts(now))
        .execute()
        .await?;
    Ok(())
}

// -- approvals ----------------------------------------------------------------------------------

async fn votes_of(conn: &mut Conn<'_>, id: i64) -> Result<Vec<Vote>> {
    let rows: Vec<VoteRow> = conn
        .query(
            "SELECT voter, decision, at, overrider, comment FROM approval_votes WHERE request_id = $1 ORDER BY at, voter",
        )
        .bind(id)
        .fetch_all()
        .await?;
    rows.into_iter()
        .map(|r| {
            Ok(Vote {
                decision: Decision::parse(&r.decision)
                    .ok_or_else(|| corrupt("vote", &r.decision))?,
                voter: r.voter,
                at: r.at.0,
                overrider: r.overrider,
                comment: r.comment,
            })
        })
        .collect()
}

/// A request with its votes, and whether its job may be retried; `lock` holds it until the
/// transaction ends.
async fn load_request(
    conn: &mut Conn<'_>,
    id: i64,
    lock: bool,
) -> Result<Option<(ApprovalRequest, bool)>> {
    let row: Option<RequestRow> = if lock {
        let sql = format!(
            "SELECT {REQUEST_COLUMNS} FROM approval_requests WHERE id = $1{}",
            conn.sql().for_update
        );
        conn.query_built(sql).bind(id).fetch_optional().await?
    } else {
        conn.query_built(format!(
            "SELECT {REQUEST_COLUMNS} FROM approval_requests WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional()
        .await?
    };
    let Some(row) = row else {
        return Ok(None);
    };
    let retry_safe = row.retry_safe;
    let votes = votes_of(conn, id).await?;
    Ok(Some((row.into_request(votes)?, retry_safe)))
}

pub(super) async fn create_approval_request(
    store: &Store,
    new: &NewApprovalRequest,
    audit: impl FnOnce(i64) -> Vec<AuditEntry>,
) -> Result<i64> {
    let mut tx = Tx::begin(store).await?;
    let mut conn = tx.conn();
    let id: i64 = conn
        .query(
            "INSERT INTO approval_requests (runbook, params, binding, target, requester, channel, approver_group,
                                            required, plan_output, retry_safe, correlation_id, created_at, expires_at,
                                            overrides, override_group)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) RETURNING id",
        )
        .bind(&new.runbook)
        .bind(Json(&new.params))
        .bind(&new.binding)
        .bind(&new.target)
        .bind(&new.requester)
        .bind(&new.channel)
        .bind(&new.approver_group)
        .bind(i32::try_from(new.required).unwrap_or(i32::MAX))
        .bind(&new.plan_output)
        .bind(new.retry_safe)
        .bind(&new.correlation_id)
        .bind(Ts(new.created_at))
        .bind(Ts(new.expires_at))
        .bind(&new.overrides)
        .bind(&new.override_group)
        .scalar()
        .await?;
    conn.insert_audit_owned(&audit(id)).await?;
    tx.commit().await?;
    Ok(id)
}

pub(super) async fn approval_request(store: &Store, id: i64) -> Result<Option<ApprovalRequest>> {
    let mut pooled = Pooled::acquire(store).await?;
    Ok(load_request(&mut pooled.conn(), id, false)
        .await?
        .map(|(r, _)| r))
}

pub(super) async fn pending_approvals(store: &Store) -> Result<Vec<ApprovalRequest>> {
    let mut pooled = Pooled::acquire(store).await?;
    let mut conn = pooled.conn();
    let ids: Vec<i64> = conn
        .query("SELECT id FROM approval_requests WHERE status = 'pending' ORDER BY id")
        .scalars()
        .await?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some((r, _)) = load_request(&mut conn, id, false).await? {
            out.push(r);
        }
    }
    Ok(out)
}

pub(super) async fn set_approval_message(store: &Store, id: i64, ts: &str) -> Result<()> {
    let mut pooled = Pooled::acquire(store).await?;
    pooled
        .conn()
        .query("UPDATE approval_requests SET message_ref = $2 WHERE id = $1")
        .bind(id)
        .bind(ts)
        .execute()
        .await?;
    Ok(())
}

pub(super) async fn vote(
    store: &Store,
    id: i64,
    ballot: Ballot<'_>,
    now: OffsetDateTime,
    audit: impl FnOnce(Option<&ApprovalRequest>, &VoteResult) -> Vec<AuditEntry>,
) -> Result<(Option<ApprovalRequest>, VoteResult)> {
    // The request is locked first: the read and the writes that follow cannot interleave with
    // another vote.
    let mut tx = Tx::begin(store).await?;
    let mut conn = tx.conn();
    let Ballot {
        voter,
        decision,
        comment,
        standing,
    } = ballot;
    let Some((request, retry_safe)) = load_request(&mut conn, id, true).await? else {
        let result = VoteResult::Refused(Refusal::Unknown);
        conn.insert_audit_owned(&audit(None, &result)).await?;
        tx.commit().await?;
        return Ok((None, result));
    };
    let result = match decide(&request, voter, decision, standing, now) {
        Err(refusal) => VoteResult::Refused(refusal),
        Ok(transition) => {
            let step = Step {
                request: &request,
                retry_safe,
                voter,
                decision,
                comment,
                overrider: counts_as_override(&request, standing),
                now,
            };
            apply_transition(&mut conn, step, transition).await?
        }
    };
    let after = load_request(&mut conn, id, false).await?.map(|(r, _)| r);
    conn.insert_audit_owned(&audit(after.as_ref(), &result))
        .await?;
    tx.commit().await?;
    Ok((after, result))
}

/// One vote on a locked request.
struct Step<'a> {
    request: &'a ApprovalRequest,
    retry_safe: bool,
    voter: &'a str,
    decision: Decision,
    comment: Option<&'a str>,
    /// The voter is of the request's override group.
    overrider: bool,
    now: OffsetDateTime,
}

async fn apply_transition(
    conn: &mut Conn<'_>,
    step: Step<'_>,
    transition: Transition,
) -> Result<VoteResult> {
    let Step {
        request,
        retry_safe,
        voter,
        decision,
        comment,
        overrider,
        now,
    } = step;
    if matches!(
        transition,
        Transition::Counted { .. } | Transition::Approve | Transition::Deny
    ) {
        conn.query(
            "INSERT INTO approval_votes (request_id, voter, decision, at, overrider, comment) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(request.id)
        .bind(voter)
        .bind(decision.as_str())
        .bind(Ts(now))
        .bind(overrider)
        .bind(comment)
        .execute()
        .await?;
    }
    let status = match transition {
        Transition::Counted {
            approvals,
            required,
        } => {
            return Ok(VoteResult::Counted {
                approvals,
                required,
            });
        }
        Transition::Deny => RequestStatus::Denied,
        Transition::Withdraw => RequestStatus::Withdrawn,
        Transition::Expire => RequestStatus::Expired,
        Transition::Approve => RequestStatus::Approved,
    };
    conn.query(
        "UPDATE approval_requests SET status = $2, decided_at = $3, decided_by = $4 WHERE id = $1",
    )
    .bind(request.id)
    .bind(status.as_str())
    .bind(Ts(now))
    .bind(voter)
    .execute()
    .await?;
    Ok(match status {
        RequestStatus::Approved => {
            let job = NewJob {
                runbook: request.runbook.clone(),
                params: request.params.clone(),
                binding: request.binding.clone(),
                target: request.target.clone(),
                requested_by: request.requester.clone(),
                approval_id: Some(request.id),
                channel: request.channel.clone(),
                thread_ref: request.message_ref.clone(),
                retry_safe,
                correlation_id: request.correlation_id.clone(),
                created_at: now,
                overrides: request.overrides.clone(),
            };
            let job_id = insert_job(conn, &job).await?;
            conn.query("UPDATE approval_requests SET job_id = $2 WHERE id = $1")
                .bind(request.id)
                .bind(job_id)
                .execute()
                .await?;
            VoteResult::Approved { job_id }
        }
        RequestStatus::Denied => VoteResult::Denied,
        RequestStatus::Withdrawn => VoteResult::Withdrawn,
        RequestStatus::Expired | RequestStatus::Pending => VoteResult::Expired,
    })
}

pub(super) async fn expire_due(
    store: &Store,
    now: OffsetDateTime,
    audit: impl Fn(&ApprovalRequest) -> AuditEntry,
) -> Result<Vec<ApprovalRequest>> {
    let mut tx = Tx::begin(store).await?;
    let mut conn = tx.conn();
    let ids: Vec<i64> = conn
        .query(
            "UPDATE approval_requests SET status = 'expired', decided_at = $1
              WHERE status = 'pending' AND expires_at <= $1 RETURNING id",
        )
        .bind(Ts(now))
        .scalars()
        .await?;
    let mut expired = Vec::new();
    for id in ids {
        if let Some((r, _)) = load_request(&mut conn, id, false).await? {
            expired.push(r);
        }
    }
    let entries: Vec<AuditEntry> = expired.iter().map(&audit).collect();
    conn.insert_audit_owned(&entries).await?;
    tx.commit().await?;
    Ok(expired)
}

// -- jobs ---------------------------------------------------------------------------------------

async fn insert_job(conn: &mut Conn<'_>, job: &NewJob) -> Result<i64> {
    conn.query(
        "INSERT INTO jobs (runbook, params, binding, target, requested_by, approval_id, channel, thread_ref,
                           retry_safe, correlation_id, created_at, overrides)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id",
    )
    .bind(&job.runbook)
    .bind(Json(&job.params))
    .bind(&job.binding)
    .bind(&job.target)
    .bind(&job.requested_by)
    .bind(job.approval_id)
    .bind(&job.channel)
    .bind(&job.thread_ref)
    .bind(job.retry_safe)
    .bind(&job.correlation_id)
    .bind(Ts(job.created_at))
    .bind(&job.overrides)
    .scalar()
    .await
}

pub(super) async fn enqueue_job(
    store: &Store,
    job: &NewJob,
    audit: impl FnOnce(i64) -> Vec<AuditEntry>,
) -> Result<i64> {
    let mut tx = Tx::begin(store).await?;
    let mut conn = tx.conn();
    let id = insert_job(&mut conn, job).await?;
    conn.insert_audit_owned(&audit(id)).await?;
    tx.commit().await?;
    Ok(id)
}

pub(super) async fn claim_job(
    store: &Store,
    worker: &str,
    lease_until: OffsetDateTime,
) -> Result<Option<Job>> {
    // One statement: choosing the job and taking it cannot be split by another worker. In a
    // writing transaction all the same: in SQLite that takes the write lock before the read, so
    // a commit by another writer in between cannot leave this one reading a stale snapshot.
    let mut tx = Tx::begin(store).await?;
    let mut conn = tx.conn();
    let sql = format!(
        "UPDATE jobs SET status = 'running', worker = $1, lease_expires_at = $2, started_at = NULL,
                         attempts = attempts + 1
          WHERE id = (SELECT j.id FROM jobs j
                       WHERE j.status = 'queued'
                         AND NOT EXISTS (SELECT 1 FROM jobs r WHERE r.target = j.target AND r.status = 'running')
                       ORDER BY j.id LIMIT 1{})
          RETURNING {JOB_COLUMNS}",
        conn.sql().skip_locked
    );
    let result = conn
        .query_built(sql)
        .bind(worker)
        .bind(Ts(lease_until))
        .fetch_optional::<JobRow>()
        .await;
    match result {
        Ok(row) => {
            tx.commit().await?;
            row.map(Job::try_from).transpose()
        }
        // Two workers raced for different jobs of one target: the unique index let one win.
        Err(StoreError::Rejected {
            duplicate: true, ..
        }) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(super) async fn heartbeat(
    store: &Store,
    job_id: i64,
    worker: &str,
    lease_until: OffsetDateTime,
) -> Result<Heartbeat> {
    let mut pooled = Pooled::acquire(store).await?;
    let cancel: Option<bool> = pooled
        .conn()
        .query(
            "UPDATE jobs SET lease_expires_at = $3 WHERE id = $1 AND worker = $2 AND status = 'running'
             RETURNING cancel_requested",
        )
        .bind(job_id)
        .bind(worker)
        .bind(Ts(lease_until))
        .scalar_optional()
        .await?;
    Ok(match cancel {
        None => Heartbeat::Lost,
        Some(true) => Heartbeat::CancelRequested,
        Some(false) => Heartbeat::Held,
    })
}

/// How a job ended, as its worker saw it.
pub(super) struct Finish<'a> {
    pub job_id: i64,
    pub worker: &'a str,
    pub status: JobStatus,
    pub exit_code: Option<i32>,
    pub error: Option<&'a str>,
    pub now: OffsetDateTime,
}

pub(super) async fn finish_job(
    store: &Store,
    end: Finish<'_>,
    audit: Vec<AuditEntry>,
) -> Result<bool> {
    let mut tx = Tx::begin(store).await?;
    let mut conn = tx.conn();
    let done = conn
        .query(
            "UPDATE jobs SET status = $3, finished_at = $4, exit_code = $5, error = $6, lease_expires_at = NULL
              WHERE id = $1 AND worker = $2 AND status = 'running'",
        )
        .bind(end.job_id)
        .bind(end.worker)
        .bind(end.status.as_str())
        .bind(Ts(end.now))
        .bind(end.exit_code)
        .bind(end.error)
        .execute()
        .await?
        == 1;
    if done {
        conn.insert_audit_owned(&audit).await?;
    }
    tx.commit().await?;
    Ok(done)
}

pub(super) async fn request_cancel(
    store: &Store,
    job_id: i64,
    now: OffsetDateTime,
    audit: Vec<AuditEntry>,
) -> Result<Option<JobStatus>> {
    let mut tx = Tx::begin(store).await?;
    let mut conn = tx.conn();
    let sql = format!(
        "SELECT status FROM jobs WHERE id = $1{}",
        conn.sql().for_update
    );
    let status: Option<String> = conn.query_built(sql).bind(job_id).scalar_optional().await?;
    let Some(status) = status.as_deref().and_then(JobStatus::parse) else {
        return Ok(None);
    };
    match status {
        JobStatus::Queued => {
            conn.query("UPDATE jobs SET status = 'cancelled', finished_at = $2, error = 'cancelled before it started' WHERE id = $1")
                .bind(job_id)
                .bind(Ts(now))
                .execute()
                .await?;
        }
        JobStatus::Running => {
            conn.query("UPDATE jobs SET cancel_requested = TRUE WHERE id = $1")
                .bind(job_id)
                .execute()
                .await?;
        }
        _ => {}
    }
    if !status.is_final() {
        conn.insert_audit_owned(&audit).await?;
    }
    tx.commit().await?;
    Ok(Some(status))
}

pub(super) async fn reap_expired_leases(
    store: &Store,
    now: OffsetDateTime,
    cutoff: OffsetDateTime,
    audit: impl Fn(&Job) -> AuditEntry,
) -> Result<Vec<Job>> {
    let mut tx = Tx::begin(store).await?;
    let mut conn = tx.conn();
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE status = 'running' AND lease_expires_at < $1{}",
        conn.sql().skip_locked
    );
    let rows: Vec<JobRow> = conn.query_built(sql).bind(Ts(cutoff)).fetch_all().await?;
    let mut reaped = Vec::new();
    for row in rows {
        let mut job = Job::try_from(row)?;
        release_job(&mut conn, &mut job, now).await?;
        reaped.push(job);
    }
    let entries: Vec<AuditEntry> = reaped.iter().map(&audit).collect();
    conn.insert_audit_owned(&entries).await?;
    tx.commit().await?;
    Ok(reaped)
}

/// Apply [`Released::of`] to a running job that its worker no longer holds.
async fn release_job(conn: &mut Conn<'_>, job: &mut Job, now: OffsetDateTime) -> Result<()> {
    let released = Released::of(job);
    let ended = match released {
        Released::NotStarted | Released::Requeued => None,
        Released::Cancelled => Some(
            "UPDATE jobs SET status = 'cancelled', finished_at = $2, lease_expires_at = NULL, error = 'cancelled (its worker stopped)' WHERE id = $1",
        ),
        Released::NeverStarted => Some(
            "UPDATE jobs SET status = 'failed', finished_at = $2, lease_expires_at = NULL, started_at = NULL,
                             error = 'not started, and claimed too often to queue it again'
              WHERE id = $1",
        ),
        Released::Interrupted => Some(
            "UPDATE jobs SET status = 'interrupted', finished_at = $2, lease_expires_at = NULL,
                             error = 'its worker stopped before it finished (lease expired)'
              WHERE id = $1",
        ),
    };
    let update = match ended {
        Some(sql) => conn.query(sql).bind(job.id).bind(Ts(now)),
        None => conn
            .query("UPDATE jobs SET status = 'queued', worker = NULL, lease_expires_at = NULL, started_at = NULL WHERE id = $1")
            .bind(job.id),
    };
    update.execute().await?;
    job.status = released.status();
    Ok(())
}

/// Mark job `job_id` started by `worker`, if it still holds it and it has not started. False:
/// it is no longer this worker's to start.
pub(super) async fn start_job(
    store: &Store,
    job_id: i64,
    worker: &str,
    now: OffsetDateTime,
) -> Result<bool> {
    let mut pooled = Pooled::acquire(store).await?;
    let started: Option<i64> = pooled
        .conn()
        .query(
            "UPDATE jobs SET started_at = $3
              WHERE id = $1 AND worker = $2 AND status = 'running' AND started_at IS NULL
             RETURNING id",
        )
        .bind(job_id)
        .bind(worker)
        .bind(Ts(now))
        .scalar_optional()
        .await?;
    Ok(started.is_some())
}

/// Give back job `job_id`, which `worker` holds and did not run: queued again at once (or given
/// up after too many tries), so its target is free. `None` if it was not ours to give. The
/// worker's word decides that it did not start, even if a `start_job` of its own committed
/// after the worker stopped waiting for it.
pub(super) async fn give_back_unstarted(
    store: &Store,
    job_id: i64,
    worker: &str,
    now: OffsetDateTime,
    audit: impl Fn(&Job) -> AuditEntry,
) -> Result<Option<Job>> {
    let mut tx = Tx::begin(store).await?;
    let mut conn = tx.conn();
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs
          WHERE id = $1 AND worker = $2 AND status = 'running'{}",
        conn.sql().for_update
    );
    let row: Option<JobRow> = conn
        .query_built(sql)
        .bind(job_id)
        .bind(worker)
        .fetch_optional()
        .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let mut job = Job::try_from(row)?;
    job.started_at = None;
    release_job(&mut conn, &mut job, now).await?;
    conn.insert_audit_owned(&[audit(&job)]).await?;
    tx.commit().await?;
    Ok(Some(job))
}

pub(super) async fn set_job_thread(store: &Store, job_id: i64, ts: &str) -> Result<()> {
    let mut pooled = Pooled::acquire(store).await?;
    pooled
        .conn()
        .query("UPDATE jobs SET thread_ref = $2 WHERE id = $1 AND thread_ref IS NULL")
        .bind(job_id)
        .bind(ts)
        .execute()
        .await?;
    Ok(())
}

pub(super) async fn job(store: &Store, id: i64) -> Result<Option<Job>> {
    let mut pooled = Pooled::acquire(store).await?;
    let row: Option<JobRow> = pooled
        .conn()
        .query_built(format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
        .bind(id)
        .fetch_optional()
        .await?;
    row.map(Job::try_from).transpose()
}

pub(super) async fn jobs(store: &Store, runbook: Option<&str>, limit: i64) -> Result<Vec<Job>> {
    let mut pooled = Pooled::acquire(store).await?;
    let rows: Vec<JobRow> = pooled
        .conn()
        .query_built(format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE (CAST($1 AS TEXT) IS NULL OR runbook = $1)
              ORDER BY id DESC LIMIT $2"
        ))
        .bind(runbook)
        .bind(limit)
        .fetch_all()
        .await?;
    jobs_from(rows)
}

pub(super) async fn append_job_logs(store: &Store, job_id: i64, lines: &[LogLine]) -> Result<()> {
    let mut pooled = Pooled::acquire(store).await?;
    pooled.conn().append_job_logs(job_id, lines).await
}

pub(super) async fn job_logs(
    store: &Store,
    job_id: i64,
    last: Option<i64>,
) -> Result<Vec<LogLine>> {
    let mut pooled = Pooled::acquire(store).await?;
    let rows: Vec<LogRow> = pooled
        .conn()
        .query(
            "SELECT attempt, seq, at, stream, line FROM (
                 SELECT attempt, seq, at, stream, line FROM job_logs WHERE job_id = $1
                  ORDER BY attempt DESC, seq DESC LIMIT $2
             ) l ORDER BY attempt, seq",
        )
        .bind(job_id)
        .bind(last.unwrap_or(i64::MAX))
        .fetch_all()
        .await?;
    rows.into_iter()
        .map(|r| {
            Ok(LogLine {
                stream: Stream::parse(&r.stream).ok_or_else(|| corrupt("stream", &r.stream))?,
                attempt: r.attempt,
                seq: r.seq,
                at: r.at.0,
                line: r.line,
            })
        })
        .collect()
}

// -- webhooks and the outbox --------------------------------------------------------------------

/// Several deliveries in one transaction (group commit); each is new or a duplicate.
pub(super) async fn record_deliveries(store: &Store, batch: &[Delivery]) -> Result<Vec<Recorded>> {
    let mut tx = Tx::begin(store).await?;
    let mut conn = tx.conn();
    let mut out = Vec::with_capacity(batch.len());
    for d in batch {
        out.push(record_one(&mut conn, d).await?);
    }
    tx.commit().await?;
    Ok(out)
}

async fn record_one(conn: &mut Conn<'_>, d: &Delivery) -> Result<Recorded> {
    let Delivery {
        source,
        delivery_id,
        body_sha256,
        event,
        payload,
        now,
        messages,
        audit,
    } = d;
    let now = Ts(*now);
    // The source's delivery id is unique: a second insert of it finds the first.
    let id: Option<i64> = conn
        .query(
            "INSERT INTO webhook_deliveries (source, delivery_id, event, payload, messages, received_at, body_sha256)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(source)
        .bind(delivery_id)
        .bind(event)
        .bind(Json(payload))
        .bind(i32::try_from(messages.len()).unwrap_or(i32::MAX))
        .bind(now)
        .bind(body_sha256)
        .scalar_optional()
        .await?;
    let Some(id) = id else {
        return Ok(Recorded::Duplicate);
    };
    for m in messages {
        conn.query(
            // A row joining a burst already waiting is due when the burst is.
            "INSERT INTO outbox (delivery, channel, text, blocks, coalesce_key, coalesce_label, next_attempt_at, created_at, priority)
             VALUES ($1, $2, $3, $4, $5, $6,
                     CASE WHEN CAST($5 AS TEXT) IS NULL THEN $7
                          ELSE COALESCE((SELECT MIN(next_attempt_at) FROM outbox
                                          WHERE status = 'pending' AND channel = $2 AND coalesce_key = $5
                                            AND coalesce_key IS NOT NULL AND next_attempt_at <= $7), $7) END,
                     $8, $9)",
        )
        .bind(id)
        .bind(&m.channel)
        .bind(&m.text)
        .bind(Json(&m.blocks))
        .bind(&m.coalesce_key)
        .bind(&m.coalesce_label)
        .bind(Ts(m.next_attempt_at))
        .bind(now)
        .bind(m.priority)
        .execute()
        .await?;
    }
    conn.insert_audit_owned(audit).await?;
    Ok(Recorded::New { id })
}

pub(super) async fn claim_outbox(
    store: &Store,
    now: OffsetDateTime,
    lease_until: OffsetDateTime,
    limit: i64,
) -> Result<Vec<OutboxRow>> {
    let mut pooled = Pooled::acquire(store).await?;
    let mut conn = pooled.conn();
    let sql = format!(
        // Not a row behind an older one of its channel that is still waiting (to be retried,
        // or claimed by another sender): that one goes first. A higher priority goes ahead.
        "UPDATE outbox SET next_attempt_at = $2
          WHERE id IN (SELECT id FROM outbox o WHERE status = 'pending' AND next_attempt_at <= $1
                          AND NOT EXISTS (SELECT 1 FROM outbox b
                                           WHERE b.channel = o.channel AND b.status = 'pending'
                                             AND b.id < o.id AND b.priority >= o.priority
                                             AND b.next_attempt_at > $1)
                        ORDER BY priority DESC, id LIMIT $3{})
          RETURNING {OUTBOX_COLUMNS}",
        conn.sql().skip_locked
    );
    let rows: Vec<OutboxDbRow> = conn
        .query_built(sql)
        .bind(Ts(now))
        .bind(Ts(lease_until))
        .bind(limit)
        .fetch_all()
        .await?;
    let mut out: Vec<OutboxRow> = rows.into_iter().map(OutboxRow::from).collect();
    out.sort_by_key(|r| (std::cmp::Reverse(r.priority), r.id));
    Ok(out)
}

pub(super) async fn outbox_sent(
    store: &Store,
    first: i64,
    merged: &[i64],
    ts: &str,
    now: OffsetDateTime,
    audit: Vec<AuditEntry>,
) -> Result<()> {
    let mut tx = Tx::begin(store).await?;
    let mut conn = tx.conn();
    conn.query("UPDATE outbox SET status = 'sent', posted_ref = $2, sent_at = $3, attempts = attempts + 1, posting_since = NULL WHERE id = $1")
        .bind(first)
        .bind(ts)
        .bind(Ts(now))
        .execute()
        .await?;
    if !merged.is_empty() {
        let sql = format!(
            "UPDATE outbox SET status = 'merged', merged_into = $2, sent_at = $3, posting_since = NULL
              WHERE id IN ({})",
            conn.sql().list_1
        );
        conn.query_built(sql)
            .bind(List(merged))
            .bind(first)
            .bind(Ts(now))
            .execute()
            .await?;
    }
    conn.insert_audit_owned(&audit).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn pending_posted_as(store: &Store, post: i64) -> Result<Vec<i64>> {
    let mut pooled = Pooled::acquire(store).await?;
    pooled
        .conn()
        .query("SELECT id FROM outbox WHERE posting_as = $1 AND status = 'pending' ORDER BY id")
        .bind(post)
        .scalars()
        .await
}

pub(super) async fn outbox_posting(
    store: &Store,
    ids: &[i64],
    posting_as: Option<i64>,
    now: OffsetDateTime,
) -> Result<()> {
    let mut pooled = Pooled::acquire(store).await?;
    let mut conn = pooled.conn();
    let sql = format!(
        "UPDATE outbox SET posting_since = $2, posting_as = $3 WHERE id IN ({}) AND status = 'pending'",
        conn.sql().list_1
    );
    conn.query_built(sql)
        .bind(List(ids))
        .bind(posting_as.map(|_| Ts(now)))
        .bind(posting_as)
        .execute()
        .await?;
    Ok(())
}

pub(super) async fn outbox_retry(
    store: &Store,
    ids: &[i64],
    at: OffsetDateTime,
    error: Option<&str>,
    count_attempt: bool,
) -> Result<()> {
    let mut pooled = Pooled::acquire(store).await?;
    let mut conn = pooled.conn();
    let sql = format!(
        "UPDATE outbox SET next_attempt_at = $2, last_error = COALESCE($3, last_error),
                           attempts = attempts + CASE WHEN $4 THEN 1 ELSE 0 END
          WHERE id IN ({}) AND status = 'pending'",
        conn.sql().list_1
    );
    conn.query_built(sql)
        .bind(List(ids))
        .bind(Ts(at))
        .bind(error)
        .bind(count_attempt)
        .execute()
        .await?;
    Ok(())
}

pub(super) async fn outbox_failed(
    store: &Store,
    ids: &[i64],
    error: &str,
    now: OffsetDateTime,
    audit: Vec<AuditEntry>,
) -> Result<()> {
    let mut tx = Tx::begin(store).await?;
    let mut conn = tx.conn();
    let sql = format!(
        "UPDATE outbox SET status = 'failed', posting_since = NULL, last_error = $2, sent_at = $3,
                           attempts = attempts + 1
          WHERE id IN ({})",
        conn.sql().list_1
    );
    conn.query_built(sql)
        .bind(List(ids))
        .bind(error)
        .bind(Ts(now))
        .execute()
        .await?;
    conn.insert_audit_owned(&audit).await?;
    tx.commit().await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct CountRow {
    status: String,
    n: i64,
}

pub(super) async fn outbox_counts(store: &Store) -> Result<OutboxCounts> {
    let mut pooled = Pooled::acquire(store).await?;
    let rows: Vec<CountRow> = pooled
        .conn()
        .query("SELECT status, COUNT(*) AS n FROM outbox GROUP BY status")
        .fetch_all()
        .await?;
    let mut c = OutboxCounts::default();
    for r in rows {
        match r.status.as_str() {
            "pending" => c.pending = r.n,
            "sent" => c.sent = r.n,
            "merged" => c.merged = r.n,
            "failed" => c.failed = r.n,
            _ => {}
        }
    }
    Ok(c)
}

pub(super) async fn next_outbox_due(store: &Store) -> Result<Option<OffsetDateTime>> {
    let mut pooled = Pooled::acquire(store).await?;
    let due: Option<Ts> = pooled
        .conn()
        .query("SELECT MIN(next_attempt_at) FROM outbox WHERE status = 'pending'")
        .scalar()
        .await?;
    Ok(due.map(|t| t.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neutral_blocks_load_and_block_kit_from_before_falls_back_to_text() {
        let neutral = serde_json::to_value(Block::Section { text: "*x*".into() }).unwrap();
        assert_eq!(
            blocks_of(1, vec![neutral]),
            vec![Block::Section { text: "*x*".into() }]
        );
        let block_kit =
            serde_json::json!({"type": "section", "text": {"type": "mrkdwn", "text": "*x*"}});
        assert!(blocks_of(2, vec![block_kit]).is_empty());
    }
}

// -- locks --------------------------------------------------------------------------------------

#[derive(sqlx::FromRow)]
struct LockRow {
    name: String,
    holder: String,
    reason: String,
    channel: String,
    correlation_id: String,
    created_at: Ts,
    expires_at: Option<Ts>,
}

const LOCK_COLUMNS: &str = "name, holder, reason, channel, correlation_id, created_at, expires_at";

impl From<LockRow> for Lock {
    fn from(r: LockRow) -> Self {
        Lock {
            name: r.name,
            holder: r.holder,
            reason: r.reason,
            channel: r.channel,
            correlation_id: r.correlation_id,
            created_at: r.created_at.0,
            expires_at: r.expires_at.map(|t| t.0),
        }
    }
}

/// Take `lock` unless someone holds its name (a lock that ran out by `now` no longer does).
/// One row per name: of two people locking at once, one inserts and the other reads the
/// winner's row. The audit rows are written only when it was taken, in the same commit.
pub(super) async fn take_lock(
    store: &Store,
    lock: &Lock,
    now: OffsetDateTime,
    audit: Vec<AuditEntry>,
) -> Result<Locked> {
    // A lock released between our insert and our read (possible under Postgres' READ
    // COMMITTED) is simply tried again.
    for _ in 0..3 {
        if let Some(done) = try_take_lock(store, lock, now, &audit).await? {
            return Ok(done);
        }
    }
    Err(StoreError::Unavailable(format!(
        "lock `{}` kept changing hands",
        lock.name
    )))
}

async fn try_take_lock(
    store: &Store,
    lock: &Lock,
    now: OffsetDateTime,
    audit: &[AuditEntry],
) -> Result<Option<Locked>> {
    let mut tx = Tx::begin(store).await?;
    let mut conn = tx.conn();
    conn.query("DELETE FROM locks WHERE name = $1 AND expires_at IS NOT NULL AND expires_at <= $2")
        .bind(&lock.name)
        .bind(Ts(now))
        .execute()
        .await?;
    let taken = conn
        .query(
            "INSERT INTO locks (name, holder, reason, channel, correlation_id, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO NOTHING",
        )
        .bind(&lock.name)
        .bind(&lock.holder)
        .bind(&lock.reason)
        .bind(&lock.channel)
        .bind(&lock.correlation_id)
        .bind(Ts(lock.created_at))
        .bind(lock.expires_at.map(Ts))
        .execute()
        .await?
        == 1;
    if taken {
        conn.insert_audit_owned(audit).await?;
        tx.commit().await?;
        return Ok(Some(Locked::Taken(lock.clone())));
    }
    let held: Option<LockRow> = conn
        .query_built(format!("SELECT {LOCK_COLUMNS} FROM locks WHERE name = $1"))
        .bind(&lock.name)
        .fetch_optional()
        .await?;
    tx.commit().await?;
    Ok(held.map(|row| Locked::Held(row.into())))
}

/// Release the lock on `name` for `by`; `may_break` lets someone who is not its holder (an
/// admin). The audit rows go in the same commit as the release.
pub(super) async fn release_lock(
    store: &Store,
    name: &str,
    by: &str,
    may_break: bool,
    now: OffsetDateTime,
    audit: impl FnOnce(&Lock) -> Vec<AuditEntry>,
) -> Result<Unlocked> {
    let mut tx = Tx::begin(store).await?;
    let mut conn = tx.conn();
    let sql = format!(
        "SELECT {LOCK_COLUMNS} FROM locks WHERE name = $1 AND (expires_at IS NULL OR expires_at > $2){}",
        conn.sql().for_update
    );
    let held: Option<LockRow> = conn
        .query_built(sql)
        .bind(name)
        .bind(Ts(now))
        .fetch_optional()
        .await?;
    let Some(lock) = held.map(Lock::from) else {
        return Ok(Unlocked::NotLocked);
    };
    if lock.holder != by && !may_break {
        return Ok(Unlocked::NotYours(lock));
    }
    conn.query("DELETE FROM locks WHERE name = $1")
        .bind(name)
        .execute()
        .await?;
    conn.insert_audit_owned(&audit(&lock)).await?;
    tx.commit().await?;
    Ok(Unlocked::Released(lock))
}

/// The locks held at `now`, by name.
pub(super) async fn locks(store: &Store, now: OffsetDateTime) -> Result<Vec<Lock>> {
    let mut pooled = Pooled::acquire(store).await?;
    let rows: Vec<LockRow> = pooled
        .conn()
        .query_built(format!(
            "SELECT {LOCK_COLUMNS} FROM locks WHERE expires_at IS NULL OR expires_at > $1 ORDER BY name"
        ))
        .bind(Ts(now))
        .fetch_all()
        .await?;
    Ok(rows.into_iter().map(Lock::from).collect())
}
