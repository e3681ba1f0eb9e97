//! Jobs: one run of a runbook on the durable queue.

use std::collections::BTreeMap;

use serde::Serialize;
use time::OffsetDateTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    /// Its worker died (the lease ran out) and the runbook is not safe to retry.
    Interrupted,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
            JobStatus::Interrupted => "interrupted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => JobStatus::Queued,
            "running" => JobStatus::Running,
            "succeeded" => JobStatus::Succeeded,
            "failed" => JobStatus::Failed,
            "cancelled" => JobStatus::Cancelled,
            "interrupted" => JobStatus::Interrupted,
            _ => return None,
        })
    }

    pub fn is_final(self) -> bool {
        !matches!(self, JobStatus::Queued | JobStatus::Running)
    }
}

/// A job not started on its last claim is queued again only while it has been claimed fewer
/// times than this in all (every claim counts, started or not): a job its workers keep losing
/// fails in the end rather than cycle for ever.
pub const MAX_ATTEMPTS: i32 = 5;

/// What becomes of a running job that its worker no longer holds: its lease ran out, or it gave
/// the job back before starting it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// It had not started, so nothing ran: queued again, whether or not it is safe to retry.
    NotStarted,
    /// It had not started, and it has been claimed [`MAX_ATTEMPTS`] times: failed, without
    /// running this time.
    NeverStarted,
    /// A cancel was asked: cancelled.
    Cancelled,
    /// It had started and the runbook is safe to retry: queued again.
    Requeued,
    /// It had started and is not safe to repeat: it may have done part of its work.
    Interrupted,
}

impl Released {
    pub fn of(job: &Job) -> Self {
        match (job.started_at.is_some(), job.cancel_requested) {
            (_, true) => Released::Cancelled,
            (false, false) if job.attempts < MAX_ATTEMPTS => Released::NotStarted,
            (false, false) => Released::NeverStarted,
            (true, false) if job.retry_safe => Released::Requeued,
            (true, false) => Released::Interrupted,
        }
    }

    /// The job's status afterwards.
    pub fn status(self) -> JobStatus {
        match self {
            Released::NotStarted | Released::Requeued => JobStatus::Queued,
            Released::NeverStarted => JobStatus::Failed,
            Released::Cancelled => JobStatus::Cancelled,
            Released::Interrupted => JobStatus::Interrupted,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Job {
    pub id: i64,
    pub runbook: String,
    pub params: BTreeMap<String, String>,
    pub binding: String,
    pub target: String,
    pub requested_by: String,
    pub approval_id: Option<i64>,
    pub channel: String,
    pub thread_ref: Option<String>,
    pub status: JobStatus,
    pub retry_safe: bool,
    pub cancel_requested: bool,
    pub attempts: i32,
    pub worker: Option<String>,
    pub lease_expires_at: Option<OffsetDateTime>,
    pub correlation_id: String,
    pub created_at: OffsetDateTime,
    pub started_at: Option<OffsetDateTime>,
    pub finished_at: Option<OffsetDateTime>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
    /// What this run overrode (a lock, a freeze), when it was approved as break-glass.
    pub overrides: Option<String>,
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub runbook: String,
    pub params: BTreeMap<String, String>,
    pub binding: String,
    pub target: String,
    pub requested_by: String,
    pub approval_id: Option<i64>,
    pub channel: String,
    pub thread_ref: Option<String>,
    pub retry_safe: bool,
    pub correlation_id: String,
    pub created_at: OffsetDateTime,
    pub overrides: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    Stdout,
    Stderr,
    System,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::System => "system",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "stdout" => Stream::Stdout,
            "stderr" => Stream::Stderr,
            "system" => Stream::System,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// Which attempt of the job wrote it: with `seq`, its key.
    pub attempt: i32,
    /// Its place within the attempt, from 1.
    pub seq: i32,
    pub at: OffsetDateTime,
    pub stream: Stream,
    pub line: String,
}

/// What a lease renewal found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    /// Still ours; keep going.
    Held,
    /// Still ours, and someone asked to cancel it.
    CancelRequested,
    /// No longer ours (reaped after a stall): stop without recording a result.
    Lost,
}
