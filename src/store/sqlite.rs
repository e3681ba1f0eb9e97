//! The SQLite side of the store. Writes that read first begin with `BEGIN IMMEDIATE` so two
//! writers never both read and then collide on the upgrade to a write lock. Timestamps are
//! stored as RFC 3339 text in UTC.

use sqlx::{Row, SqlitePool, sqlite::SqliteRow};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use super::{Result, outcome};
use crate::audit::{AuditEntry, AuditRecord};

pub(super) async fn insert_audit(pool: &SqlitePool, entries: &[&AuditEntry]) -> Result<()> {
    let mut conn = pool.acquire().await?;
    insert_audit_exec(&mut conn, entries).await
}

async fn insert_audit_exec(conn: &mut SqliteConnection, entries: &[&AuditEntry]) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    // The whole batch as one JSON array, unpacked by jsonb_each: one statement, one commit, and
    // one round trip to sqlx's connection thread however many rows there are. jsonb_each (not
    // json_each) hands each row over in SQLite's binary form, so the nine lookups per row do
    // not turn it back into text and parse it nine times.
    let rows: Vec<_> = entries
        .iter()
        .map(|e| {
            (
                ts(e.at),
                &e.correlation_id,
                &e.actor,
                &e.channel,
                &e.action,
                &e.command,
                e.outcome.as_str(),
                &e.detail,
                e.duration_ms,
            )
        })
        .collect();
    let rows = serde_json::to_string(&rows).map_err(|e| StoreError::Unavailable(e.to_string()))?;
    sqlx::query(
        "INSERT INTO audit_log
             (at, correlation_id, actor, channel, action, command, outcome, detail, duration_ms)
         SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4,
                value ->> 5, value ->> 6, value ->> 7, value ->> 8
           FROM jsonb_each(?) ORDER BY key",
    )
    .bind(rows)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub(super) async fn insert_audit_claiming<'a>(
    pool: &SqlitePool,
    keys: &[&str],
    now: OffsetDateTime,
    pick: impl FnOnce(&[bool]) -> Vec<&'a AuditEntry>,
) -> Result<Vec<bool>> {
    let keys_json =
        serde_json::to_string(keys).map_err(|e| StoreError::Unavailable(e.to_string()))?;
    // The first statement writes, so the write lock is taken at once (no upgrade to collide on).
    let mut tx = pool.begin().await?;
    let inserted: Vec<String> = sqlx::query_scalar(
        "INSERT INTO request_claims (key, seen_at)
         SELECT DISTINCT value, ? FROM json_each(?) WHERE true
         ON CONFLICT (key) DO NOTHING
         RETURNING key",
    )
    .bind(ts(now))
    .bind(keys_json)
    .fetch_all(&mut *tx)
    .await?;
    let fresh = super::first_claims(keys, &inserted);
    insert_audit_exec(&mut tx, &pick(&fresh)).await?;
    tx.commit().await?;
    Ok(fresh)
}

/// One batch of retention: up to `limit` rows of `what` from before `before`.
pub(super) async fn prune_batch(
    pool: &SqlitePool,
    what: super::Prunable,
    before: OffsetDateTime,
    limit: i64,
) -> Result<u64> {
    let sql = match what {
        super::Prunable::Outbox => {
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox
              WHERE status <> 'pending' AND created_at < ?1 LIMIT ?2)"
        }
        super::Prunable::Deliveries => {
            "UPDATE webhook_deliveries SET payload = '{}' WHERE id IN (SELECT id
               FROM webhook_deliveries WHERE payload <> '{}' AND received_at < ?1 LIMIT ?2)"
        }
        super::Prunable::JobLogs => {
            "DELETE FROM job_logs WHERE (job_id, seq) IN (SELECT l.job_id, l.seq
              FROM jobs j JOIN job_logs l ON l.job_id = j.id
             WHERE j.finished_at IS NOT NULL AND j.finished_at < ?1 LIMIT ?2)"
        }
        super::Prunable::Audit => {
            "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE at < ?1 LIMIT ?2)"
        }
    };
    let done = sqlx::query(sql)
        .bind(ts(before))
        .bind(limit)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

pub(super) async fn prune_claims(pool: &SqlitePool, before: OffsetDateTime) -> Result<u64> {
    let done = sqlx::query("DELETE FROM request_claims WHERE key >= 'slack:' AND key < ?")
        .bind(super::claim_bound(before))
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

fn audit_row(row: SqliteRow) -> Result<AuditRecord> {
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
    pool: &SqlitePool,
    before: i64,
    limit: i64,
) -> Result<Vec<AuditRecord>> {
    let rows = sqlx::query(
        "SELECT id, at, correlation_id, actor, channel, action, command, outcome, detail, duration_ms
           FROM audit_log WHERE id < ? ORDER BY id DESC LIMIT ?",
    )
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(audit_row).collect()
}

pub(super) async fn audit_for(pool: &SqlitePool, correlation_id: &str) -> Result<Vec<AuditRecord>> {
    let rows = sqlx::query(
        "SELECT id, at, correlation_id, actor, channel, action, command, outcome, detail, duration_ms
           FROM audit_log WHERE correlation_id = ? ORDER BY id",
    )
    .bind(correlation_id)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(audit_row).collect()
}

pub(super) async fn user_prefs(
    pool: &SqlitePool,
    slack_user_id: &str,
) -> Result<Option<super::UserPrefs>> {
    let row = sqlx::query(
        "SELECT pagerduty_email, pagerduty_user_id FROM user_prefs WHERE slack_user_id = ?1",
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
    pool: &SqlitePool,
    slack_user_id: &str,
    email: &str,
    pagerduty_user_id: Option<&str>,
    now: OffsetDateTime,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO user_prefs (slack_user_id, pagerduty_email, pagerduty_user_id, updated_at)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (slack_user_id) DO UPDATE
            SET pagerduty_email = excluded.pagerduty_email,
                pagerduty_user_id = excluded.pagerduty_user_id,
                updated_at = excluded.updated_at",
    )
    .bind(slack_user_id)
    .bind(email)
    .bind(pagerduty_user_id)
    .bind(ts(now))
    .execute(pool)
    .await?;
    Ok(())
}

// -- approvals and jobs ------------------------------------------------------------------------

use sqlx::{Sqlite, SqliteConnection, Transaction};

use super::{StoreError, params_from_json, params_json};
use crate::domain::{
    approval::{
        ApprovalRequest, Decision, NewApprovalRequest, RequestStatus, Transition, Vote, decide,
    },
    job::{Heartbeat, Job, JobStatus, LogLine, NewJob, Stream},
};

/// Fixed-width RFC 3339 in UTC (`2026-11-24T04:05:06.123456Z`), so text order is time order.
pub(super) fn ts(t: OffsetDateTime) -> String {
    let f = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    t.to_offset(time::UtcOffset::UTC)
        .format(&f)
        .unwrap_or_default()
}

fn parse_ts(raw: &str) -> Result<OffsetDateTime> {
    OffsetDateTime::parse(raw, &Rfc3339)
        .map_err(|e| StoreError::Corrupt(format!("timestamp `{raw}`: {e}")))
}

fn opt_ts(row: &SqliteRow, column: &str) -> Result<Option<OffsetDateTime>> {
    let raw: Option<String> = row.try_get(column)?;
    raw.as_deref().map(parse_ts).transpose()
}

fn req_ts(row: &SqliteRow, column: &str) -> Result<OffsetDateTime> {
    let raw: String = row.try_get(column)?;
    parse_ts(&raw)
}

fn json_col(row: &SqliteRow, column: &str) -> Result<serde_json::Value> {
    let raw: String = row.try_get(column)?;
    serde_json::from_str(&raw).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

async fn insert_audit_in(conn: &mut SqliteConnection, entries: &[AuditEntry]) -> Result<()> {
    let refs: Vec<&AuditEntry> = entries.iter().collect();
    insert_audit_exec(conn, &refs).await
}

const REQUEST_SELECT: &str = "SELECT id, runbook, params, binding, target, requester, channel, approver_group, required, status, plan_output, message_ts, correlation_id, created_at, expires_at, decided_at, decided_by, job_id FROM approval_requests";

fn request_row(row: &SqliteRow) -> Result<ApprovalRequest> {
    let status: String = row.try_get("status")?;
    let required: i64 = row.try_get("required")?;
    Ok(ApprovalRequest {
        id: row.try_get("id")?,
        runbook: row.try_get("runbook")?,
        params: params_from_json(json_col(row, "params")?)?,
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
        created_at: req_ts(row, "created_at")?,
        expires_at: req_ts(row, "expires_at")?,
        decided_at: opt_ts(row, "decided_at")?,
        decided_by: row.try_get("decided_by")?,
        job_id: row.try_get("job_id")?,
        votes: Vec::new(),
    })
}

async fn load_request(conn: &mut SqliteConnection, id: i64) -> Result<Option<ApprovalRequest>> {
    let Some(row) = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{REQUEST_SELECT} WHERE id = ?"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let mut request = request_row(&row)?;
    let votes = sqlx::query(
        "SELECT voter, decision, at FROM approval_votes WHERE request_id = ? ORDER BY at, voter",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    request.votes = votes
        .iter()
        .map(|r| {
            let decision: String = r.try_get("decision")?;
            Ok(Vote {
                voter: r.try_get("voter")?,
                decision: Decision::parse(&decision)
                    .ok_or_else(|| StoreError::Corrupt(format!("vote `{decision}`")))?,
                at: req_ts(r, "at")?,
            })
        })
        .collect::<Result<_>>()?;
    Ok(Some(request))
}

pub(super) async fn create_approval_request(
    pool: &SqlitePool,
    new: &NewApprovalRequest,
    audit: impl FnOnce(i64) -> Vec<AuditEntry>,
) -> Result<i64> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO approval_requests (runbook, params, binding, target, requester, channel, approver_group,
                                        required, plan_output, retry_safe, correlation_id, created_at, expires_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(&new.runbook)
    .bind(params_json(&new.params).to_string())
    .bind(&new.binding)
    .bind(&new.target)
    .bind(&new.requester)
    .bind(&new.channel)
    .bind(&new.approver_group)
    .bind(i64::from(new.required))
    .bind(&new.plan_output)
    .bind(new.retry_safe)
    .bind(&new.correlation_id)
    .bind(ts(new.created_at))
    .bind(ts(new.expires_at))
    .fetch_one(&mut *tx)
    .await?;
    insert_audit_in(&mut tx, &audit(id)).await?;
    tx.commit().await?;
    Ok(id)
}

pub(super) async fn approval_request(
    pool: &SqlitePool,
    id: i64,
) -> Result<Option<ApprovalRequest>> {
    let mut conn = pool.acquire().await?;
    load_request(&mut conn, id).await
}

pub(super) async fn pending_approvals(pool: &SqlitePool) -> Result<Vec<ApprovalRequest>> {
    let mut conn = pool.acquire().await?;
    let ids: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM approval_requests WHERE status = 'pending' ORDER BY id")
            .fetch_all(&mut *conn)
            .await?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(r) = load_request(&mut conn, id).await? {
            out.push(r);
        }
    }
    Ok(out)
}

pub(super) async fn set_approval_message(
    pool: &SqlitePool,
    id: i64,
    message_ts: &str,
) -> Result<()> {
    sqlx::query("UPDATE approval_requests SET message_ts = ? WHERE id = ?")
        .bind(message_ts)
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

pub(super) async fn vote(
    pool: &SqlitePool,
    id: i64,
    voter: &str,
    decision: Decision,
    qualified: bool,
    now: OffsetDateTime,
    audit: impl FnOnce(Option<&ApprovalRequest>, &super::VoteResult) -> Vec<AuditEntry>,
) -> Result<(Option<ApprovalRequest>, super::VoteResult)> {
    // One writer at a time: the read of the request and the writes that follow cannot interleave
    // with another vote.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let Some(request) = load_request(&mut tx, id).await? else {
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
    let after = load_request(&mut tx, id).await?;
    insert_audit_in(&mut tx, &audit(after.as_ref(), &result)).await?;
    tx.commit().await?;
    Ok((after, result))
}

async fn apply_transition(
    tx: &mut Transaction<'static, Sqlite>,
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
            "INSERT INTO approval_votes (request_id, voter, decision, at) VALUES (?, ?, ?, ?)",
        )
        .bind(request.id)
        .bind(voter)
        .bind(decision.as_str())
        .bind(ts(now))
        .execute(&mut **tx)
        .await?;
    }
    let set_status = |status: RequestStatus| {
        sqlx::query(
            "UPDATE approval_requests SET status = ?, decided_at = ?, decided_by = ? WHERE id = ?",
        )
        .bind(status.as_str())
        .bind(ts(now))
        .bind(voter.to_owned())
        .bind(request.id)
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
                sqlx::query_scalar("SELECT retry_safe FROM approval_requests WHERE id = ?")
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
            sqlx::query("UPDATE approval_requests SET job_id = ? WHERE id = ?")
                .bind(job_id)
                .bind(request.id)
                .execute(&mut **tx)
                .await?;
            super::VoteResult::Approved { job_id }
        }
    })
}

pub(super) async fn expire_due(
    pool: &SqlitePool,
    now: OffsetDateTime,
    audit: impl Fn(&ApprovalRequest) -> AuditEntry,
) -> Result<Vec<ApprovalRequest>> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let ids: Vec<i64> = sqlx::query_scalar(
        "UPDATE approval_requests SET status = 'expired', decided_at = ?1
          WHERE status = 'pending' AND expires_at <= ?1 RETURNING id",
    )
    .bind(ts(now))
    .fetch_all(&mut *tx)
    .await?;
    let mut expired = Vec::new();
    for id in ids {
        if let Some(r) = load_request(&mut tx, id).await? {
            expired.push(r);
        }
    }
    let entries: Vec<AuditEntry> = expired.iter().map(&audit).collect();
    insert_audit_in(&mut tx, &entries).await?;
    tx.commit().await?;
    Ok(expired)
}

const JOB_SELECT: &str = "SELECT id, runbook, params, binding, target, requested_by, approval_id, channel, thread_ts, status, retry_safe, cancel_requested, attempts, worker, lease_expires_at, correlation_id, created_at, started_at, finished_at, exit_code, error FROM jobs";

fn job_row(row: &SqliteRow) -> Result<Job> {
    let status: String = row.try_get("status")?;
    Ok(Job {
        id: row.try_get("id")?,
        runbook: row.try_get("runbook")?,
        params: params_from_json(json_col(row, "params")?)?,
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
        lease_expires_at: opt_ts(row, "lease_expires_at")?,
        correlation_id: row.try_get("correlation_id")?,
        created_at: req_ts(row, "created_at")?,
        started_at: opt_ts(row, "started_at")?,
        finished_at: opt_ts(row, "finished_at")?,
        exit_code: row.try_get("exit_code")?,
        error: row.try_get("error")?,
    })
}

async fn insert_job(tx: &mut Transaction<'static, Sqlite>, job: &NewJob) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO jobs (runbook, params, binding, target, requested_by, approval_id, channel, thread_ts,
                           retry_safe, correlation_id, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(&job.runbook)
    .bind(params_json(&job.params).to_string())
    .bind(&job.binding)
    .bind(&job.target)
    .bind(&job.requested_by)
    .bind(job.approval_id)
    .bind(&job.channel)
    .bind(&job.thread_ts)
    .bind(job.retry_safe)
    .bind(&job.correlation_id)
    .bind(ts(job.created_at))
    .fetch_one(&mut **tx)
    .await?)
}

pub(super) async fn enqueue_job(
    pool: &SqlitePool,
    job: &NewJob,
    audit: impl FnOnce(i64) -> Vec<AuditEntry>,
) -> Result<i64> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let id = insert_job(&mut tx, job).await?;
    insert_audit_in(&mut tx, &audit(id)).await?;
    tx.commit().await?;
    Ok(id)
}

pub(super) async fn claim_job(
    pool: &SqlitePool,
    worker: &str,
    now: OffsetDateTime,
    lease_until: OffsetDateTime,
) -> Result<Option<Job>> {
    // One writer transaction: choose and take the job with nobody else in between.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let id: Option<i64> = sqlx::query_scalar(
        "SELECT j.id FROM jobs j
          WHERE j.status = 'queued'
            AND NOT EXISTS (SELECT 1 FROM jobs r WHERE r.target = j.target AND r.status = 'running')
          ORDER BY j.id LIMIT 1",
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(id) = id else {
        tx.commit().await?;
        return Ok(None);
    };
    sqlx::query(
        "UPDATE jobs SET status = 'running', worker = ?, lease_expires_at = ?, started_at = ?, attempts = attempts + 1
          WHERE id = ?",
    )
    .bind(worker)
    .bind(ts(lease_until))
    .bind(ts(now))
    .bind(id)
    .execute(&mut *tx)
    .await?;
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("{JOB_SELECT} WHERE id = ?")))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    let job = job_row(&row)?;
    tx.commit().await?;
    Ok(Some(job))
}

pub(super) async fn heartbeat(
    pool: &SqlitePool,
    job_id: i64,
    worker: &str,
    lease_until: OffsetDateTime,
) -> Result<Heartbeat> {
    let cancel: Option<bool> = sqlx::query_scalar(
        "UPDATE jobs SET lease_expires_at = ? WHERE id = ? AND worker = ? AND status = 'running'
         RETURNING cancel_requested",
    )
    .bind(ts(lease_until))
    .bind(job_id)
    .bind(worker)
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
    pool: &SqlitePool,
    job_id: i64,
    worker: &str,
    status: JobStatus,
    exit_code: Option<i32>,
    error: Option<&str>,
    now: OffsetDateTime,
    audit: Vec<AuditEntry>,
) -> Result<bool> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let done = sqlx::query(
        "UPDATE jobs SET status = ?, finished_at = ?, exit_code = ?, error = ?, lease_expires_at = NULL
          WHERE id = ? AND worker = ? AND status = 'running'",
    )
    .bind(status.as_str())
    .bind(ts(now))
    .bind(exit_code)
    .bind(error)
    .bind(job_id)
    .bind(worker)
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
    pool: &SqlitePool,
    job_id: i64,
    now: OffsetDateTime,
    audit: Vec<AuditEntry>,
) -> Result<Option<JobStatus>> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let status: Option<String> = sqlx::query_scalar("SELECT status FROM jobs WHERE id = ?")
        .bind(job_id)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(status) = status.as_deref().and_then(JobStatus::parse) else {
        return Ok(None);
    };
    match status {
        JobStatus::Queued => {
            sqlx::query("UPDATE jobs SET status = 'cancelled', finished_at = ?, error = 'cancelled before it started' WHERE id = ?")
                .bind(ts(now))
                .bind(job_id)
                .execute(&mut *tx)
                .await?;
        }
        JobStatus::Running => {
            sqlx::query("UPDATE jobs SET cancel_requested = 1 WHERE id = ?")
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
    pool: &SqlitePool,
    now: OffsetDateTime,
    cutoff: OffsetDateTime,
    audit: impl Fn(&Job) -> AuditEntry,
) -> Result<Vec<Job>> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{JOB_SELECT} WHERE status = 'running' AND lease_expires_at < ?"
    )))
    .bind(ts(cutoff))
    .fetch_all(&mut *tx)
    .await?;
    let mut reaped = Vec::new();
    for row in &rows {
        let mut job = job_row(row)?;
        if job.cancel_requested {
            sqlx::query("UPDATE jobs SET status = 'cancelled', finished_at = ?, lease_expires_at = NULL, error = 'cancelled (its worker stopped)' WHERE id = ?")
                .bind(ts(now))
                .bind(job.id)
                .execute(&mut *tx)
                .await?;
            job.status = JobStatus::Cancelled;
        } else if job.retry_safe {
            sqlx::query("UPDATE jobs SET status = 'queued', worker = NULL, lease_expires_at = NULL WHERE id = ?")
                .bind(job.id)
                .execute(&mut *tx)
                .await?;
            job.status = JobStatus::Queued;
        } else {
            sqlx::query(
                "UPDATE jobs SET status = 'interrupted', finished_at = ?, lease_expires_at = NULL,
                                 error = 'its worker stopped before it finished (lease expired)'
                  WHERE id = ?",
            )
            .bind(ts(now))
            .bind(job.id)
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

pub(super) async fn set_job_thread(pool: &SqlitePool, job_id: i64, thread_ts: &str) -> Result<()> {
    sqlx::query("UPDATE jobs SET thread_ts = ? WHERE id = ? AND thread_ts IS NULL")
        .bind(thread_ts)
        .bind(job_id)
        .execute(pool)
        .await?;
    Ok(())
}

pub(super) async fn job(pool: &SqlitePool, id: i64) -> Result<Option<Job>> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("{JOB_SELECT} WHERE id = ?")))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    row.as_ref().map(job_row).transpose()
}

pub(super) async fn jobs(pool: &SqlitePool, runbook: Option<&str>, limit: i64) -> Result<Vec<Job>> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{JOB_SELECT} WHERE (?1 IS NULL OR runbook = ?1) ORDER BY id DESC LIMIT ?2"
    )))
    .bind(runbook)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter().map(job_row).collect()
}

pub(super) async fn append_job_logs(
    pool: &SqlitePool,
    job_id: i64,
    lines: &[LogLine],
) -> Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let rows: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::json!([l.seq, ts(l.at), l.stream.as_str(), l.line]))
        .collect();
    sqlx::query(
        "INSERT INTO job_logs (job_id, seq, at, stream, line)
         SELECT ?, value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM json_each(?) WHERE true ORDER BY key
         ON CONFLICT (job_id, seq) DO NOTHING",
    )
    .bind(job_id)
    .bind(serde_json::Value::Array(rows).to_string())
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn job_logs(
    pool: &SqlitePool,
    job_id: i64,
    last: Option<i64>,
) -> Result<Vec<LogLine>> {
    let rows = sqlx::query(
        "SELECT seq, at, stream, line FROM (
             SELECT seq, at, stream, line FROM job_logs WHERE job_id = ? ORDER BY seq DESC LIMIT ?
         ) ORDER BY seq",
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
                at: req_ts(r, "at")?,
                stream: Stream::parse(&stream)
                    .ok_or_else(|| StoreError::Corrupt(format!("stream `{stream}`")))?,
                line: r.try_get("line")?,
            })
        })
        .collect()
}

// -- webhooks and the outbox -------------------------------------------------------------------

use crate::notify::{Delivery, OutboxCounts, OutboxRow, Recorded};

fn ids_json(ids: &[i64]) -> String {
    serde_json::to_string(ids).unwrap_or_else(|_| "[]".into())
}

/// Several deliveries in one transaction (group commit); each is new or a duplicate.
pub(super) async fn record_deliveries(
    pool: &SqlitePool,
    batch: &[Delivery],
) -> Result<Vec<Recorded>> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let mut out = Vec::with_capacity(batch.len());
    for d in batch {
        out.push(record_one(&mut tx, d).await?);
    }
    tx.commit().await?;
    Ok(out)
}

async fn record_one(tx: &mut SqliteConnection, d: &Delivery) -> Result<Recorded> {
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
         VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT DO NOTHING RETURNING id",
    )
    .bind(source)
    .bind(delivery_id)
    .bind(event)
    .bind(payload.to_string())
    .bind(i64::try_from(messages.len()).unwrap_or(i64::MAX))
    .bind(ts(now))
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
             VALUES (?1, ?2, ?3, ?4, ?5, ?6,
                     CASE WHEN ?5 IS NULL THEN ?7
                          ELSE COALESCE((SELECT MIN(next_attempt_at) FROM outbox
                                          WHERE status = 'pending' AND channel = ?2 AND coalesce_key = ?5
                                            AND coalesce_key IS NOT NULL AND next_attempt_at <= ?7), ?7) END,
                     ?8, ?9)",
        )
        .bind(id)
        .bind(&m.channel)
        .bind(&m.text)
        .bind(serde_json::Value::Array(m.blocks.clone()).to_string())
        .bind(&m.coalesce_key)
        .bind(&m.coalesce_label)
        .bind(ts(m.next_attempt_at))
        .bind(ts(now))
        .bind(m.priority)
        .execute(&mut *tx)
        .await?;
    }
    insert_audit_in(tx, audit).await?;
    Ok(Recorded::New { id })
}

fn outbox_row(row: &SqliteRow) -> Result<OutboxRow> {
    Ok(OutboxRow {
        id: row.try_get("id")?,
        channel: row.try_get("channel")?,
        text: row.try_get("text")?,
        blocks: json_col(row, "blocks")?
            .as_array()
            .cloned()
            .unwrap_or_default(),
        coalesce_key: row.try_get("coalesce_key")?,
        coalesce_label: row.try_get("coalesce_label")?,
        attempts: row.try_get("attempts")?,
        created_at: req_ts(row, "created_at")?,
        priority: row.try_get("priority")?,
        maybe_posted: row.try_get("maybe_posted")?,
        posting_as: row.try_get("posting_as")?,
    })
}

pub(super) async fn claim_outbox(
    pool: &SqlitePool,
    now: OffsetDateTime,
    lease_until: OffsetDateTime,
    limit: i64,
) -> Result<Vec<OutboxRow>> {
    let rows = sqlx::query(
        "UPDATE outbox SET next_attempt_at = ?2
          WHERE id IN (SELECT id FROM outbox WHERE status = 'pending' AND next_attempt_at <= ?1
                        ORDER BY priority DESC, id LIMIT ?3)
          RETURNING id, channel, text, blocks, coalesce_key, coalesce_label, attempts, created_at,
                    priority, posting_since IS NOT NULL AS maybe_posted, posting_as",
    )
    .bind(ts(now))
    .bind(ts(lease_until))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let mut out: Vec<OutboxRow> = rows.iter().map(outbox_row).collect::<Result<_>>()?;
    out.sort_by_key(|r| (std::cmp::Reverse(r.priority), r.id));
    Ok(out)
}

pub(super) async fn outbox_sent(
    pool: &SqlitePool,
    first: i64,
    merged: &[i64],
    slack_ts: &str,
    now: OffsetDateTime,
    audit: Vec<AuditEntry>,
) -> Result<()> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query("UPDATE outbox SET status = 'sent', slack_ts = ?, sent_at = ?, attempts = attempts + 1, posting_since = NULL WHERE id = ?")
        .bind(slack_ts)
        .bind(ts(now))
        .bind(first)
        .execute(&mut *tx)
        .await?;
    if !merged.is_empty() {
        sqlx::query("UPDATE outbox SET status = 'merged', merged_into = ?, sent_at = ?, posting_since = NULL WHERE id IN (SELECT value FROM json_each(?))")
            .bind(first)
            .bind(ts(now))
            .bind(ids_json(merged))
            .execute(&mut *tx)
            .await?;
    }
    insert_audit_in(&mut tx, &audit).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn pending_posted_as(pool: &SqlitePool, post: i64) -> Result<Vec<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM outbox WHERE posting_as = ? AND status = 'pending' ORDER BY id",
    )
    .bind(post)
    .fetch_all(pool)
    .await?)
}

pub(super) async fn outbox_posting(
    pool: &SqlitePool,
    ids: &[i64],
    posting_as: Option<i64>,
    now: OffsetDateTime,
) -> Result<()> {
    let since = posting_as.map(|_| ts(now));
    sqlx::query(
        "UPDATE outbox SET posting_since = ?, posting_as = ? WHERE id IN (SELECT value FROM json_each(?)) AND status = 'pending'",
    )
    .bind(since)
    .bind(posting_as)
    .bind(ids_json(ids))
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn outbox_retry(
    pool: &SqlitePool,
    ids: &[i64],
    at: OffsetDateTime,
    error: Option<&str>,
    count_attempt: bool,
) -> Result<()> {
    sqlx::query(
        "UPDATE outbox SET next_attempt_at = ?, last_error = COALESCE(?, last_error), attempts = attempts + ?
          WHERE id IN (SELECT value FROM json_each(?)) AND status = 'pending'",
    )
    .bind(ts(at))
    .bind(error)
    .bind(i64::from(count_attempt))
    .bind(ids_json(ids))
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn outbox_failed(
    pool: &SqlitePool,
    ids: &[i64],
    error: &str,
    now: OffsetDateTime,
    audit: Vec<AuditEntry>,
) -> Result<()> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query("UPDATE outbox SET status = 'failed', posting_since = NULL, last_error = ?, sent_at = ?, attempts = attempts + 1 WHERE id IN (SELECT value FROM json_each(?))")
        .bind(error)
        .bind(ts(now))
        .bind(ids_json(ids))
        .execute(&mut *tx)
        .await?;
    insert_audit_in(&mut tx, &audit).await?;
    tx.commit().await?;
    Ok(())
}

pub(super) async fn outbox_counts(pool: &SqlitePool) -> Result<OutboxCounts> {
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

pub(super) async fn next_outbox_due(pool: &SqlitePool) -> Result<Option<OffsetDateTime>> {
    let raw: Option<String> =
        sqlx::query_scalar("SELECT MIN(next_attempt_at) FROM outbox WHERE status = 'pending'")
            .fetch_one(pool)
            .await?;
    raw.as_deref().map(parse_ts).transpose()
}
