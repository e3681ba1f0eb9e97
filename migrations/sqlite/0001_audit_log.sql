-- The audit trail: one row per step of everything people and webhooks do.
-- Timestamps are RFC 3339 text in UTC, which sorts in time order.
CREATE TABLE audit_log (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    at             TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    actor          TEXT NOT NULL,
    channel        TEXT,
    action         TEXT NOT NULL,
    command        TEXT,
    outcome        TEXT NOT NULL CHECK (outcome IN
                       ('received', 'invalid', 'refused', 'started', 'succeeded', 'failed')),
    detail         TEXT,
    duration_ms    INTEGER CHECK (duration_ms >= 0)
) STRICT;

CREATE INDEX audit_log_correlation_id ON audit_log (correlation_id);
CREATE INDEX audit_log_at ON audit_log (at DESC);
