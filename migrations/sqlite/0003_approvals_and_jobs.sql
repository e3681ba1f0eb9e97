-- Runbook requests that need a peer's approval, the votes on them, and the durable job queue.
-- Timestamps are RFC 3339 text in UTC; JSON is text.

CREATE TABLE approval_requests (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    runbook        TEXT NOT NULL,
    params         TEXT NOT NULL,
    -- SHA-256 of the runbook's definition and the exact parameters: what was approved.
    binding        TEXT NOT NULL,
    target         TEXT NOT NULL,
    requester      TEXT NOT NULL,
    channel        TEXT NOT NULL,
    approver_group TEXT NOT NULL,
    required       INTEGER NOT NULL CHECK (required >= 1),
    status         TEXT NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'approved', 'denied', 'expired', 'withdrawn')),
    plan_output    TEXT,
    retry_safe     INTEGER NOT NULL DEFAULT 0,
    message_ts     TEXT,
    correlation_id TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    expires_at     TEXT NOT NULL,
    decided_at     TEXT,
    decided_by     TEXT,
    job_id         INTEGER
) STRICT;
CREATE INDEX approval_requests_pending ON approval_requests (expires_at) WHERE status = 'pending';

CREATE TABLE approval_votes (
    request_id INTEGER NOT NULL REFERENCES approval_requests (id),
    voter      TEXT NOT NULL,
    decision   TEXT NOT NULL CHECK (decision IN ('approve', 'deny')),
    at         TEXT NOT NULL,
    PRIMARY KEY (request_id, voter)
) STRICT;

CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    runbook          TEXT NOT NULL,
    params           TEXT NOT NULL,
    binding          TEXT NOT NULL,
    target           TEXT NOT NULL,
    requested_by     TEXT NOT NULL,
    approval_id      INTEGER REFERENCES approval_requests (id),
    channel          TEXT NOT NULL,
    thread_ts        TEXT,
    status           TEXT NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'interrupted')),
    retry_safe       INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    attempts         INTEGER NOT NULL DEFAULT 0,
    worker           TEXT,
    lease_expires_at TEXT,
    correlation_id   TEXT NOT NULL,
    created_at       TEXT NOT NULL,
    started_at       TEXT,
    finished_at      TEXT,
    exit_code        INTEGER,
    error            TEXT
) STRICT;
-- At most one running job per target, whatever the workers or processes.
CREATE UNIQUE INDEX jobs_one_running_per_target ON jobs (target) WHERE status = 'running';
CREATE INDEX jobs_queued ON jobs (id) WHERE status = 'queued';
CREATE INDEX jobs_running_lease ON jobs (lease_expires_at) WHERE status = 'running';

CREATE TABLE job_logs (
    job_id INTEGER NOT NULL REFERENCES jobs (id),
    seq    INTEGER NOT NULL,
    at     TEXT NOT NULL,
    stream TEXT NOT NULL CHECK (stream IN ('stdout', 'stderr', 'system')),
    line   TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
) STRICT;
