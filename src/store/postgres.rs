//! The Postgres side of the store.

use sqlx::{PgPool, Row, postgres::PgRow};
use time::OffsetDateTime;

use super::{Result, outcome};
use crate::audit::{AuditEntry, AuditRecord};

pub(super) async fn insert_audit(pool: &PgPool, entries: &[&AuditEntry]) -> Result<()> {
    let mut conn = pool.acquire().await?;
    insert_audit_exec(&mut conn, entries).await
}

async fn insert_audit_exec(conn: &mut PgConnection, entries: &[&AuditEntry]) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    // One statement for the whole batch: arrays in, UNNEST turns them into rows, in batch order
    // (WITH ORDINALITY + ORDER BY, so ids follow the order the steps happened in).
    let mut at = Vec::with_capacity(entries.len());
    let mut correlation = Vec::with_capacity(entries.len());
    let mut actor = Vec::with_capacity(entries.len());
    let mut channel = Vec::with_capacity(entries.len());
    let mut action = Vec::with_capacity(entries.len());
    let mut command = Vec::with_capacity(entries.len());
    let mut outcome = Vec::with_capacity(entries.len());
    let mut detail = Vec::with_capacity(entries.len());
    let mut duration = Vec::with_capacity(entries.len());
    for e in entries {
        at.push(e.at);
        correlation.push(e.correlation_id.as_str());
        actor.push(e.actor.as_str());
        channel.push(e.channel.as_deref());
        action.push(e.action.as_str());
        command.push(e.command.as_deref());
        outcome.push(e.outcome.as_str());
        detail.push(e.detail.as_deref());
        duration.push(e.duration_ms);
    }
    sqlx::query(
        "INSERT INTO audit_log
             (at, correlation_id, actor, channel, action, command, outcome, detail, duration_ms)
         SELECT at, correlation_id, actor, channel, action, command, outcome, detail, duration_ms
           FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[],
                       $6::text[], $7::text[], $8::text[], $9::bigint[])
                WITH ORDINALITY
                AS batch (at, correlation_id, actor, channel, action, command, outcome, detail,
                          duration_ms, n)
          ORDER BY n",
    )
    .bind(at)
    .bind(correlation)
    .bind(actor)
    .bind(channel)
    .bind(action)
    .bind(command)
    .bind(outcome)
    .bind(detail)
    .bind(duration)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(super) async fn insert_audit_claiming<'a>(
    pool: &PgPool,
    keys: &[&str],
    now: OffsetDateTime,
    pick: impl FnOnce(&[bool]) -> Vec<&'a AuditEntry>,
) -> Result<Vec<bool>> {
    let mut tx = pool.begin().await?;
    // A replica inserting the same key at the same time waits for this transaction, then finds
    // it taken.
    let inserted: Vec<String> = sqlx::query_scalar(
        "INSERT INTO request_claims (key, seen_at)
         SELECT DISTINCT k, $2 FROM UNNEST($1::text[]) AS k
         ON CONFLICT (key) DO NOTHING
         RETURNING key",
    )
    .bind(keys)
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    let fresh = super::first_claims(keys, &inserted);
    insert_audit_exec(&mut tx, &pick(&fresh)).await?;
    tx.commit().await?;
    Ok(fresh)
}

/// One batch of retention: up to `limit` rows of `what` from before `before`.
pub(super) async fn prune_batch(
    pool: &PgPool,
    what: super::Prunable,
    before: OffsetDateTime,
    limit: i64,
) -> Result<u64> {
    let sql = match what {
        // Settled notifications first, then deliveries no message points at any more.
        super::Prunable::Outbox => {
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox
              WHERE status <> 'pending' AND created_at < $1 LIMIT $2)"
        }
        // The payload goes; the row stays, so a redelivery (GitHub and PagerDuty sign no
        // timestamp) is still recognised as one.
        super::Prunable::Deliveries => {
            "UPDATE webhook_deliveries SET payload = '{}'::jsonb WHERE id IN (SELECT id
               FROM webhook_deliveries WHERE payload <> '{}'::jsonb AND received_at < $1 LIMIT $2)"
        }
        super::Prunable::JobLogs => {
            "DELETE FROM job_logs WHERE (job_id, seq) IN (SELECT l.job_id, l.seq
              FROM jobs j JOIN job_logs l ON l.job_id = j.id
             WHERE j.finished_at < $1 LIMIT $2)"
        }
        super::Prunable::Audit => {
            "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE at < $1 LIMIT $2)"
        }
    };
    let done = sqlx::query(sql)
        .bind(before)
        .bind(limit)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

pub(super) async fn prune_claims(pool: &PgPool, before: OffsetDateTime) -> Result<u64> {
    let done = sqlx::query("DELETE FROM request_claims WHERE key >= 'slack:' AND key < $1")
        .bind(super::claim_bound(before))
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

fn audit_row(row: PgRow) -> Result<AuditRecord> {
    Ok(AuditRecord {
        id: row.try_get("id")?,
        entry: AuditEntry {
            at: row.try_get::<OffsetDateTime, _>("at")?,
            correlation_id: row.try_get("correlation_id")?,
            actor: row.try_get("actor")?,
            channel: row.try_get("channel")?,
            action: row.try_get("action")?,
            command: row.try_get("command")?,
            outcome: outcome(row.try_get("outcome")?)?,
            detail: row.try_get("detail")?,
            duration_ms: row.try_get("duration_ms")?,
        },
    })
}

pub(super) async fn audit_before(
    pool: &PgPool,
    before: i64,
    limit: i64,
) -> Result<Vec<AuditRecord>> {
    let rows = sqlx::query(
        "SELECT id, at, correlation_id, actor, channel, action, command, outcome, detail, duration_ms
           FROM audit_log WHERE id < $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(audit_row).collect()
}

pub(super) async fn audit_for(pool: &PgPool, correlation_id: &str) -> Result<Vec<AuditRecord>> {
    let rows = sqlx::query(
        "SELECT id, at, correlation_id, actor, channel, action, command, outcome, detail, duration_ms
           FROM audit_log WHERE correlation_id = $1 ORDER BY id",
    )
    .bind(correlation_id)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(audit_row).collect()
}

pub(super) async fn user_prefs(
    pool: &PgPool,
    slack_user_id: &str,
) -> Result<Option<super::UserPrefs>> {
    let row = sqlx::query(
        "SELECT pagerduty_email, pagerduty_user_id FROM user_prefs WHERE slack_user_id = $1",
    )
    .bind(slack_user_id)
    .fetch_optional(pool)
    .await?;
    row.map(|r| {
        Ok(super::UserPrefs {
            pagerduty_email: r.try_get("pagerduty_email")?,
            pagerduty_user_id: r.try_get("pagerduty_user_id")?,
        })
    })
    .transpose()
}

pub(super) async fn set_pagerduty_identity(
    pool: &PgPool,
    slack_user_id: &str,
    email: &str,
    pagerduty_user_id: Option<&str>,
    now: OffsetDateTime,
) -> Result<()> {
    sqlx::query(
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
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

// -- approvals and jobs ------------------------------------------------------------------------

use sqlx::{PgConnection, Postgres, Transaction};

use super::{StoreError, params_from_json, params_json};
use crate::domain::{
    approval::{
        ApprovalRequest, Decision, NewApprovalRequest, RequestStatus, Transition, Vote, decide,
    },
    job::{Heartbeat, Job, JobStatus, LogLine, NewJob, Stream},
};

async fn insert_audit_in(conn: &mut PgConnection, entries: &[AuditEntry]) -> Result<()> {
    let refs: Vec<&AuditEntry> = entries.iter().collect();
    insert_audit_exec(conn, &refs).await
}

fn request_row(row: &PgRow) -> Result<ApprovalRequest> {
    let status: String = row.try_get("status")?;
    let required: i32 = row.try_get("required")?;
    Ok(ApprovalRequest {
        id: row.try_get("id")?,
        runbook: row.try_get("runbook")?,
        params: params_from_json(row.try_get("params")?)?,
        binding: row.try_get("binding")?,
        target: row.try_get("target")?,
        requester: row.try_get("requester")?,
        channel: row.try_get("channel")?,
        approver_group: row.try_get("approver_group")?,
        required: u32::try_from(required).unwrap_or(1),
        status: RequestStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("request status `{status}`")))?,
        plan_output: row.try_get("plan_output")?,
        message_ts: row.try_get("message_ts")?,
        correlation_id: row.try_get("correlation_id")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        decided_at: row.try_get("decided_at")?,
        decided_by: row.try_get("decided_by")?,
        job_id: row.try_get("job_id")?,
        votes: Vec::new(),
    })
}

async fn votes_of(conn: &mut PgConnection, id: i64) -> Result<Vec<Vote>> {
    let rows = sqlx::query(
        "SELECT voter, decision, at FROM approval_votes WHERE request_id = $1 ORDER BY at, voter",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            let decision: String = r.try_get("decision")?;
            Ok(Vote {
                voter: r.try_get("voter")?,
                decision: Decision::parse(&decision)
                    .ok_or_else(|| StoreError::Corrupt(format!("vote `{decision}`")))?,
                at: r.try_get("at")?,
            })
        })
        .collect()
}

async fn load_request(
    conn: &mut PgConnection,
    id: i64,
    lock: bool,
) -> Result<Option<ApprovalRequest>> {
    let sql = if lock {
        "SELECT id, runbook, params, binding, target, requester, channel, approver_group, required, status, plan_output, message_ts, correlation_id, created_at, expires_at, decided_at, decided_by, job_id
           FROM approval_requests WHERE id = $1 FOR UPDATE"
    } else {
        "SELECT id, runbook, params, binding, target, requester, channel, approver_group, required, status, plan_output, message_ts, correlation_id, created_at, expires_at, decided_at, decided_by, job_id
           FROM approval_requests WHERE id = $1"
    };
    let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let mut request = request_row(&row)?;
    request.votes = votes_of(conn, id).await?;
    Ok(Some(request))
}

pub(super) async fn create_approval_request(
    pool: &PgPool,
    new: &NewApprovalRequest,
    audit: impl FnOnce(i64) -> Vec<AuditEntry>,
) -> Result<i64> {
    let mut tx = pool.begin().await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO approval_requests (runbook, params, binding, target, requester, channel, approver_group,
                                        required, plan_output, retry_safe, correlation_id, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) RETURNING id",
    )
    .bind(&new.runbook)
    .bind(params_json(&new.params))
    .bind(&new.binding)
    .bind(&new.target)
    .bind(&new.requester)
    .bind(&new.channel)
    .bind(&new.approver_group)
    .bind(i32::try_from(new.required).unwrap_or(i32::MAX))
    .bind(&new.plan_output)
    .bind(new.retry_safe)
    .bind(&new.correlation_id)
    .bind(new.created_at)
    .bind(new.expires_at)
    .fetch_one(&mut *tx)
    .await?;
    insert_audit_in(&mut tx, &audit(id)).await?;
    tx.commit().await?;
    Ok(id)
}

pub(super) async fn approval_request(pool: &PgPool, id: i64) -> Result<Option<ApprovalRequest>> {
    let mut conn = pool.acquire().await?;
    load_request(&mut conn, id, false).await
}

pub(super) async fn pending_approvals(pool: &PgPool) -> Result<Vec<ApprovalRequest>> {
    let ids: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM approval_requests WHERE status = 'pending' ORDER BY id")
            .fetch_all(pool)
            .await?;
    let mut conn = pool.acquire().await?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(r) = load_request(&mut conn, id, false).await? {
            out.push(r);
        }
    }
    Ok(out)
}

pub(super) async fn set_approval_message(pool: &PgPool, id: i64, ts: &str) -> Result<()> {
    sqlx::query("UPDATE approval_requests SET message_ts = $2 WHERE id = $1")
        .bind(id)
        .bind(ts)
        .execute(pool)
        .await?;
    Ok(())
}

pub(super) async fn vote(
    pool: &PgPool,
    id: i64,
    voter: &str,
    decision: Decision,
    qualified: bool,
    now: OffsetDateTime,
    audit: impl FnOnce(Option<&ApprovalRequest>, &super::VoteResult) -> Vec<AuditEntry>,
) -> Result<(Option<ApprovalRequest>, super::VoteResult)> {
    let mut tx = pool.begin().await?;
    let Some(request) = load_request(&mut tx, id, true).await? else {
        let result = super::VoteResult::Refused(crate::domain::approval::Refusal::Unknown);
        insert_audit_in(&mut tx, &audit(None, &result)).await?;
        tx.commit().await?;
        return Ok((None, result));
    };
    let result = match decide(&request, voter, decision, qualified, now) {
        Err(refusal) => super::VoteResult::Refused(refusal),
        Ok(transition) => {
            apply_transition(&mut tx, &request, voter, decision, transition, now).await?
        }
    };
    let after = load_request(&mut tx, id, false).await?;
    insert_audit_in(&mut tx, &audit(after.as_ref(), &result)).await?;
    tx.commit().await?;
    Ok((after, result))
}

async fn apply_transition(
    tx: &mut Transaction<'static, Postgres>,
    request: &ApprovalRequest,
    voter: &str,
    decision: Decision,
    transition: Transition,
    now: OffsetDateTime,
) -> Result<super::VoteResult> {
    if matches!(
        transition,
        Transition::Counted { .. } | Transition::Approve | Transition::Deny
    ) {
        sqlx::query(
            "INSERT INTO approval_votes (request_id, voter, decision, at) VALUES ($1, $2, $3, $4)",
        )
        .bind(request.id)
        .bind(voter)
        .bind(decision.as_str())
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    let set_status = |status: RequestStatus| {
        sqlx::query("UPDATE approval_requests SET status = $2, decided_at = $3, decided_by = $4 WHERE id = $1")
            .bind(request.id)
            .bind(status.as_str())
            .bind(now)
            .bind(voter.to_owned())
    };
    Ok(match transition {
        Transition::Counted {
            approvals,
            required,
        } => super::VoteResult::Counted {
            approvals,
            required,
        },
        Transition::Deny => {
            set_status(RequestStatus::Denied).execute(&mut **tx).await?;
            super::VoteResult::Denied
        }
        Transition::Withdraw => {
            set_status(RequestStatus::Withdrawn)
                .execute(&mut **tx)
                .await?;
            super::VoteResult::Withdrawn
        }
        Transition::Expire => {
            set_status(RequestStatus::Expired)
                .execute(&mut **tx)
                .await?;
            super::VoteResult::Expired
        }
        Transition::Approve => {
            set_status(RequestStatus::Approved)
                .execute(&mut **tx)
                .await?;
            let retry_safe: bool =
                sqlx::query_scalar("SELECT retry_safe FROM approval_requests WHERE id = $1")
                    .bind(request.id)
                    .fetch_one(&mut **tx)
                    .await?;
            let job = NewJob {
                runbook: request.runbook.clone(),
                params: request.params.clone(),
                binding: request.binding.clone(),
                target: request.target.clone(),
                requested_by: request.requester.clone(),
                approval_id: Some(request.id),
                channel: request.channel.clone(),
                thread_ts: request.message_ts.clone(),
                retry_safe,
                correlation_id: request.correlation_id.clone(),
                created_at: now,
            };
            let job_id = insert_job(tx, &job).await?;
            sqlx::query("UPDATE approval_requests SET job_id = $2 WHERE id = $1")
                .bind(request.id)
                .bind(job_id)
                .execute(&mut **tx)
                .await?;
            super::VoteResult::Approved { job_id }
        }
    })
}

pub(super) async fn expire_due(
    pool: &PgPool,
    now: OffsetDateTime,
    audit: impl Fn(&ApprovalRequest) -> AuditEntry,
) -> Result<Vec<ApprovalRequest>> {
    let mut tx = pool.begin().await?;
    let ids: Vec<i64> = sqlx::query_scalar(
        "UPDATE approval_requests SET status = 'expired', decided_at = $1
          WHERE status = 'pending' AND expires_at <= $1 RETURNING id",
    )
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    let mut expired = Vec::new();
    for id in ids {
        if let Some(r) = load_request(&mut tx, id, false).await? {
            expired.push(r);
        }
    }
    let entries: Vec<AuditEntry> = expired.iter().map(&audit).collect();
    insert_audit_in(&mut tx, &entries).await?;
    tx.commit().await?;
    Ok(expired)
}

const JOB_COLUMNS_SQL: &str = "id, runbook, params, binding, target, requested_by, approval_id, channel, thread_ts, status, retry_safe, cancel_requested, attempts, worker, lease_expires_at, correlation_id, created_at, started_at, finished_at, exit_code, error";

fn job_row(row: &PgRow) -> Result<Job> {
    let status: String = row.try_get("status")?;
    Ok(Job {
        id: row.try_get("id")?,
        runbook: row.try_get("runbook")?,
        params: params_from_json(row.try_get("params")?)?,
        binding: row.try_get("binding")?,
        target: row.try_get("target")?,
        requested_by: row.try_get("requested_by")?,
        approval_id: row.try_get("approval_id")?,
        channel: row.try_get("channel")?,
        thread_ts: row.try_get("thread_ts")?,
        status: JobStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("job status `{status}`")))?,
        retry_safe: row.try_get("retry_safe")?,
        cancel_requested: row.try_get("cancel_requested")?,
        attempts: row.try_get("attempts")?,
        worker: row.try_get("worker")?,
        lease_expires_at: row.try_get("lease_expires_at")?,
        correlation_id: row.try_get("correlation_id")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        exit_code: row.try_get("exit_code")?,
        error: row.try_get("error")?,
    })
}

async fn insert_job(tx: &mut Transaction<'static, Postgres>, job: &NewJob) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO jobs (runbook, params, binding, target, requested_by, approval_id, channel, thread_ts,
                           retry_safe, correlation_id, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
    )
    .bind(&job.runbook)
    .bind(params_json(&job.params))
    .bind(&job.binding)
    .bind(&job.target)
    .bind(&job.requested_by)
    .bind(job.approval_id)
    .bind(&job.channel)
    .bind(&job.thread_ts)
    .bind(job.retry_safe)
    .bind(&job.correlation_id)
    .bind(job.created_at)
    .fetch_one(&mut **tx)
    .await?)
}

pub(super) async fn enqueue_job(
    pool: &PgPool,
    job: &NewJob,
    audit: impl FnOnce(i64) -> Vec<AuditEntry>,
) -> Result<i64> {
    let mut tx = pool.begin().await?;
    let id = insert_job(&mut tx, job).await?;
    insert_audit_in(&mut tx, &audit(id)).await?;
    tx.commit().await?;
    Ok(id)
}

pub(super) async fn claim_job(
    pool: &PgPool,
    worker: &str,
    now: OffsetDateTime,
    lease_until: OffsetDateTime,
) -> Result<Option<Job>> {
    let result = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE jobs SET status = 'running', worker = $1, lease_expires_at = $2, started_at = $3,
                         attempts = attempts + 1
          WHERE id = (SELECT j.id FROM jobs j
                       WHERE j.status = 'queued'
                         AND NOT EXISTS (SELECT 1 FROM jobs r WHERE r.target = j.target AND r.status = 'running')
                       ORDER BY j.id LIMIT 1
                       FOR UPDATE SKIP LOCKED)
          RETURNING {JOB_COLUMNS_SQL}"
    )))
    .bind(worker)
    .bind(lease_until)
    .bind(now)
    .fetch_optional(pool)
    .await;
    match result {
        Ok(row) => row.as_ref().map(job_row).transpose(),
        // Two workers raced for different jobs of one target: the unique index let one win.
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub(super) async fn heartbeat(
    pool: &PgPool,
    job_id: i64,
    worker: &str,
    lease_until: OffsetDateTime,
) -> Result<Heartbeat> {
    let cancel: Option<bool> = sqlx::query_scalar(
        "UPDATE jobs SET lease_expires_at = $3 WHERE id = $1 AND worker = $2 AND status = 'running'
         RETURNING cancel_requested",
    )
    .bind(job_id)
    .bind(worker)
    .bind(lease_until)
    .fetch_optional(pool)
    .await?;
    Ok(match cancel {
        None => Heartbeat::Lost,
        Some(true) => Heartbeat::CancelRequested,
        Some(false) => Heartbeat::Held,
    })
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn finish_job(
    pool: &PgPool,
    job_id: i64,
    worker: &str,
    status: JobStatus,
    exit_code: Option<i32>,
    error: Option<&str>,
    now: OffsetDateTime,
    audit: Vec<AuditEntry>,
) -> Result<bool> {
    let mut tx = pool.begin().await?;
    let done = sqlx::query(
        "UPDATE jobs SET status = $3, finished_at = $4, exit_code = $5, error = $6, lease_expires_at = NULL
          WHERE id = $1 AND worker = $2 AND status = 'running'",
    )
    .bind(job_id)
    .bind(worker)
    .bind(status.as_str())
    .bind(now)
    .bind(exit_code)
    .bind(error)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if done {
        insert_audit_in(&mut tx, &audit).await?;
    }
    tx.commit().await?;
    Ok(done)
}

pub(super) async fn request_cancel(
    pool: &PgPool,
    job_id: i64,
    now: OffsetDateTime,
    audit: Vec<AuditEntry>,
) -> Result<Option<JobStatus>> {
    let mut tx = pool.begin().await?;
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1 FOR UPDATE")
            .bind(job_id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(status) = status.as_deref().and_then(JobStatus::parse) else {
        return Ok(None);
    };
    match status {
        JobStatus::Queued => {
            sqlx::query("UPDATE jobs SET status = 'cancelled', finished_at = $2, error = 'cancelled before it started' WHERE id = $1")
                .bind(job_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        JobStatus::Running => {
            sqlx::query("UPDATE jobs SET cancel_requested = TRUE WHERE id = $1")
                .bind(job_id)
                .execute(&mut *tx)
                .await?;
        }
        _ => {}
    }
    if !status.is_final() {
        insert_audit_in(&mut tx, &audit).await?;
    }
    tx.commit().await?;
    Ok(Some(status))
}

pub(super) async fn reap_expired_leases(
    pool: &PgPool,
    now: OffsetDateTime,
    cutoff: OffsetDateTime,
    audit: impl Fn(&Job) -> AuditEntry,
) -> Result<Vec<Job>> {
    let mut tx = pool.begin().await?;
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {JOB_COLUMNS_SQL} FROM jobs WHERE status = 'running' AND lease_expires_at < $1 FOR UPDATE SKIP LOCKED"
    )))
    .bind(cutoff)
    .fetch_all(&mut *tx)
    .await?;
    let mut reaped = Vec::new();
    for row in &rows {
        let mut job = job_row(row)?;
        if job.cancel_requested {
            sqlx::query("UPDATE jobs SET status = 'cancelled', finished_at = $2, lease_expires_at = NULL, error = 'cancelled (its worker stopped)' WHERE id = $1")
                .bind(job.id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            job.status = JobStatus::Cancelled;
        } else if job.retry_safe {
            sqlx::query("UPDATE jobs SET status = 'queued', worker = NULL, lease_expires_at = NULL WHERE id = $1")
                .bind(job.id)
                .execute(&mut *tx)
                .await?;
            job.status = JobStatus::Queued;
        } else {
            sqlx::query(
                "UPDATE jobs SET status = 'interrupted', finished_at = $2, lease_expires_at = NULL,
                                 error = 'its worker stopped before it finished (lease expired)'
                  WHERE id = $1",
            )
            .bind(job.id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            job.status = JobStatus::Interrupted;
        }
        reaped.push(job);
    }
    let entries: Vec<AuditEntry> = reaped.iter().map(&audit).collect();
    insert_audit_in(&mut tx, &entries).await?;
    tx.commit().await?;
    Ok(reaped)
}

pub(super) async fn set_job_thread(pool: &PgPool, job_id: i64, ts: &str) -> Result<()> {
    sqlx::query("UPDATE jobs SET thread_ts = $2 WHERE id = $1 AND thread_ts IS NULL")
        .bind(job_id)
        .bind(ts)
        .execute(pool)
        .await?;
    Ok(())
}

pub(super) async fn job(pool: &PgPool, id: i64) -> Result<Option<Job>> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {JOB_COLUMNS_SQL} FROM jobs WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(job_row).transpose()
}

pub(super) async fn jobs(pool: &PgPool, runbook: Option<&str>, limit: i64) -> Result<Vec<Job>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {JOB_COLUMNS_SQL} FROM jobs WHERE ($1::text IS NULL OR runbook = $1) ORDER BY id DESC LIMIT $2"
    )))
    .bind(runbook)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(job_row).collect()
}

pub(super) async fn append_job_logs(pool: &PgPool, job_id: i64, lines: &[LogLine]) -> Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let seq: Vec<i32> = lines.iter().map(|l| l.seq).collect();
    let at: Vec<OffsetDateTime> = lines.iter().map(|l| l.at).collect();
    let stream: Vec<&str> = lines.iter().map(|l| l.stream.as_str()).collect();
    let line: Vec<&str> = lines.iter().map(|l| l.line.as_str()).collect();
    sqlx::query(
        "INSERT INTO job_logs (job_id, seq, at, stream, line)
         SELECT $1, * FROM UNNEST($2::int[], $3::timestamptz[], $4::text[], $5::text[])
         ON CONFLICT (job_id, seq) DO NOTHING",
    )
    .bind(job_id)
    .bind(seq)
    .bind(at)
    .bind(stream)
    .bind(line)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn job_logs(
    pool: &PgPool,
    job_id: i64,
    last: Option<i64>,
) -> Result<Vec<LogLine>> {
    let rows = sqlx::query(
        "SELECT seq, at, stream, line FROM (
             SELECT seq, at, stream, line FROM job_logs WHERE job_id = $1 ORDER BY seq DESC LIMIT $2
         ) l ORDER BY seq",
    )
    .bind(job_id)
    .bind(last.unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            let stream: String = r.try_get("stream")?;
            Ok(LogLine {
                seq: r.try_get("seq")?,
                at: r.try_get("at")?,
                stream: Stream::parse(&stream)
                    .ok_or_else(|| StoreError::Corrupt(format!("stream `{stream}`")))?,
                line: r.try_get("line")?,
            })
        })
        .collect()
}

// -- webhooks and the outbox -------------------------------------------------------------------

use crate::notify::{Delivery, OutboxCounts, OutboxRow, Recorded};

/// Several deliveries in one transaction (group commit); each is new or a duplicate.
pub(super) async fn record_deliveries(pool: &PgPool, batch: &[Delivery]) -> Result<Vec<Recorded>> {
    let mut tx = pool.begin().await?;
    let mut out = Vec::with_capacity(batch.len());
    for d in batch {
        out.push(record_one(&mut tx, d).await?);
    }
    tx.commit().await?;
    Ok(out)
}

async fn record_one(tx: &mut PgConnection, d: &Delivery) -> Result<Recorded> {
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
    let now = *now;
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO webhook_deliveries (source, delivery_id, event, payload, messages, received_at, body_sha256)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT DO NOTHING RETURNING id",
    )
    .bind(source)
    .bind(delivery_id)
    .bind(event)
    .bind(payload)
    .bind(i32::try_from(messages.len()).unwrap_or(i32::MAX))
    .bind(now)
    .bind(body_sha256)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(id) = id else {
        return Ok(Recorded::Duplicate);
    };
    for m in messages {
        sqlx::query(
            // A row joining a burst already waiting is due when the burst is.
            "INSERT INTO outbox (delivery, channel, text, blocks, coalesce_key, coalesce_label, next_attempt_at, created_at, priority)
             VALUES ($1, $2, $3, $4, $5, $6,
                     CASE WHEN $5::text IS NULL THEN $7
                          ELSE COALESCE((SELECT MIN(next_attempt_at) FROM outbox
                                          WHERE status = 'pending' AND channel = $2 AND coalesce_key = $5
                                            AND coalesce_key IS NOT NULL AND next_attempt_at <= $7), $7) END,
                     $8, $9)",
        )
        .bind(id)
        .bind(&m.channel)
        .bind(&m.text)
        .bind(serde_json::Value::Array(m.blocks.clone()))
        .bind(&m.coalesce_key)
        .bind(&m.coalesce_label)
        .bind(m.next_attempt_at)
        .bind(now)
        .bind(m.priority)
        .execute(&mut *tx)
        .await?;
    }
    insert_audit_in(tx, audit).await?;
    Ok(Recorded::New { id })
}

fn outbox_row(row: &PgRow) -> Result<OutboxRow> {
    let blocks: serde_json::Value = row.try_get("blocks")?;
    Ok(OutboxRow {
        id: row.try_get("id")?,
        channel: row.try_get("channel")?,
        text: row.try_get("text")?,
        blocks: blocks.as_array().cloned().unwrap_or_default(),
        coalesce_key: row.try_get("coalesce_key")?,
        coalesce_label: row.try_get("coalesce_label")?,
        attempts: row.try_get("attempts")?,
        created_at: row.try_get("created_at")?,
        priority: row.try_get("priority")?,
        maybe_posted: row.try_get("maybe_posted")?,
        posting_as: row.try_get("posting_as")?,
    })
}

pub(super) async fn claim_outbox(
    pool: &PgPool,
    now: OffsetDateTime,
    lease_until: OffsetDateTime,
    limit: i64,
) -> Result<Vec<OutboxRow>> {
    let rows = sqlx::query(
        "UPDATE outbox SET next_attempt_at = $2
          WHERE id IN (SELECT id FROM outbox WHERE status = 'pending' AND next_attempt_at <= $1
                        ORDER BY priority DESC, id LIMIT $3 FOR UPDATE SKIP LOCKED)
          RETURNING id, channel, text, blocks, coalesce_key, coalesce_label, attempts, created_at,
                    priority, posting_since IS NOT NULL AS maybe_posted, posting_as",
    )
    .bind(now)
    .bind(lease_until)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let mut out: Vec<OutboxRow> = rows.iter().map(outbox_row).collect::<Result<_>>()?;
    out.sort_by_key(|r| (std::cmp::Reverse(r.priority), r.id));
    Ok(out)
}

pub(super) async fn outbox_sent(
    pool: &PgPool,
    first: i64,
    merged: &[i64],
    ts: &str,
    now: OffsetDateTime,
    audit: Vec<AuditEntry>,
) -> Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("UPDATE outbox SET status = 'sent', slack_ts = $2, sent_at = $3, attempts = attempts + 1, posting_since = NULL WHERE id = $1")
        .bind(first)
        .bind(ts)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    if !merged.is_empty() {
        sqlx::query("UPDATE outbox SET status = 'merged', merged_into = $2, sent_at = $3, posting_since = NULL WHERE id = ANY($1)")
            .bind(merged)
            .bind(first)
            .bind(now)
            .execute(&mut *tx)
            .await?;
    }
    insert_audit_in(&mut tx, &audit).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn pending_posted_as(pool: &PgPool, post: i64) -> Result<Vec<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM outbox WHERE posting_as = $1 AND status = 'pending' ORDER BY id",
    )
    .bind(post)
    .fetch_all(pool)
    .await?)
}

pub(super) async fn outbox_posting(
    pool: &PgPool,
    ids: &[i64],
    posting_as: Option<i64>,
    now: OffsetDateTime,
) -> Result<()> {
    let since = posting_as.map(|_| now);
    sqlx::query(
        "UPDATE outbox SET posting_since = $2, posting_as = $3 WHERE id = ANY($1) AND status = 'pending'",
    )
    .bind(ids)
    .bind(since)
    .bind(posting_as)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn outbox_retry(
    pool: &PgPool,
    ids: &[i64],
    at: OffsetDateTime,
    error: Option<&str>,
    count_attempt: bool,
) -> Result<()> {
    sqlx::query(
        "UPDATE outbox SET next_attempt_at = $2, last_error = COALESCE($3, last_error),
                           attempts = attempts + CASE WHEN $4 THEN 1 ELSE 0 END
          WHERE id = ANY($1) AND status = 'pending'",
    )
    .bind(ids)
    .bind(at)
    .bind(error)
    .bind(count_attempt)
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn outbox_failed(
    pool: &PgPool,
    ids: &[i64],
    error: &str,
    now: OffsetDateTime,
    audit: Vec<AuditEntry>,
) -> Result<()> {
    let mut tx = pool.begin().await?;
    sqlx::query("UPDATE outbox SET status = 'failed', posting_since = NULL, last_error = $2, sent_at = $3, attempts = attempts + 1 WHERE id = ANY($1)")
        .bind(ids)
        .bind(error)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    insert_audit_in(&mut tx, &audit).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn outbox_counts(pool: &PgPool) -> Result<OutboxCounts> {
    let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM outbox GROUP BY status")
        .fetch_all(pool)
        .await?;
    let mut c = OutboxCounts::default();
    for r in rows {
        let status: String = r.try_get("status")?;
        let n: i64 = r.try_get("n")?;
        match status.as_str() {
            "pending" => c.pending = n,
            "sent" => c.sent = n,
            "merged" => c.merged = n,
            "failed" => c.failed = n,
            _ => {}
        }
    }
    Ok(c)
}

pub(super) async fn next_outbox_due(pool: &PgPool) -> Result<Option<OffsetDateTime>> {
    Ok(
        sqlx::query_scalar("SELECT MIN(next_attempt_at) FROM outbox WHERE status = 'pending'")
            .fetch_one(pool)
            .await?,
    )
}
