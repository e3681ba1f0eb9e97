-- Runbook requests that need a peer's approval, the votes on them, and the durable job queue.

CREATE TABLE approval_requests (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    runbook        TEXT NOT NULL,
    params         JSONB NOT NULL,
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
    retry_safe     BOOLEAN NOT NULL DEFAULT FALSE,
    message_ts     TEXT,
    correlation_id TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    expires_at     TIMESTAMPTZ NOT NULL,
    decided_at     TIMESTAMPTZ,
    decided_by     TEXT,
    job_id         BIGINT
);
CREATE INDEX approval_requests_pending ON approval_requests (expires_at) WHERE status = 'pending';

CREATE TABLE approval_votes (
    request_id BIGINT NOT NULL REFERENCES approval_requests (id),
    voter      TEXT NOT NULL,
    decision   TEXT NOT NULL CHECK (decision IN ('approve', 'deny')),
    at         TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (request_id, voter)
);

CREATE TABLE jobs (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    runbook          TEXT NOT NULL,
    params           JSONB NOT NULL,
    binding          TEXT NOT NULL,
    target           TEXT NOT NULL,
    requested_by     TEXT NOT NULL,
    approval_id      BIGINT REFERENCES approval_requests (id),
    channel          TEXT NOT NULL,
    thread_ts        TEXT,
    status           TEXT NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'interrupted')),
    retry_safe       BOOLEAN NOT NULL DEFAULT FALSE,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    attempts         INTEGER NOT NULL DEFAULT 0,
    worker           TEXT,
    lease_expires_at TIMESTAMPTZ,
    correlation_id   TEXT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    started_at       TIMESTAMPTZ,
    finished_at      TIMESTAMPTZ,
    exit_code        INTEGER,
    error            TEXT
);
-- At most one running job per target, whatever the workers or processes.
CREATE UNIQUE INDEX jobs_one_running_per_target ON jobs (target) WHERE status = 'running';
CREATE INDEX jobs_queued ON jobs (id) WHERE status = 'queued';
CREATE INDEX jobs_running_lease ON jobs (lease_expires_at) WHERE status = 'running';

CREATE TABLE job_logs (
    job_id BIGINT NOT NULL REFERENCES jobs (id),
    seq    INTEGER NOT NULL,
    at     TIMESTAMPTZ NOT NULL,
    stream TEXT NOT NULL CHECK (stream IN ('stdout', 'stderr', 'system')),
    line   TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
);
