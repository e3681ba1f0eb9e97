-- The audit trail: one row per step of everything people and webhooks do.
CREATE TABLE audit_log (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at             TIMESTAMPTZ NOT NULL,
    correlation_id TEXT NOT NULL,
    actor          TEXT NOT NULL,
    channel        TEXT,
    action         TEXT NOT NULL,
    command        TEXT,
    outcome        TEXT NOT NULL CHECK (outcome IN
                       ('received', 'invalid', 'refused', 'started', 'succeeded', 'failed')),
    detail         TEXT,
    duration_ms    BIGINT CHECK (duration_ms >= 0)
);

CREATE INDEX audit_log_correlation_id ON audit_log (correlation_id);
CREATE INDEX audit_log_at ON audit_log (at DESC);
