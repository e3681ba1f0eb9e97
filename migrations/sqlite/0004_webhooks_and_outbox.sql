-- Every accepted webhook delivery (one row per source and delivery id: a redelivery is a
-- duplicate), and the outbox of chat messages to post.

CREATE TABLE webhook_deliveries (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    source      TEXT NOT NULL CHECK (source IN ('github', 'pagerduty', 'zendesk', 'slack')),
    delivery_id TEXT NOT NULL,
    event       TEXT NOT NULL,
    payload     TEXT NOT NULL,
    messages    INTEGER NOT NULL DEFAULT 0,
    received_at TEXT NOT NULL,
    UNIQUE (source, delivery_id)
) STRICT;

CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery        INTEGER REFERENCES webhook_deliveries (id),
    channel         TEXT NOT NULL,
    text            TEXT NOT NULL,
    blocks          TEXT NOT NULL,
    -- Rows with the same key waiting together are posted as one message.
    coalesce_key    TEXT,
    coalesce_label  TEXT,
    status          TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sent', 'merged', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    last_error      TEXT,
    slack_ts        TEXT,
    merged_into     INTEGER,
    created_at      TEXT NOT NULL,
    sent_at         TEXT
) STRICT;
CREATE INDEX outbox_due ON outbox (next_attempt_at, id) WHERE status = 'pending';
