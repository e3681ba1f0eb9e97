-- Every accepted webhook delivery (one row per source and delivery id: a redelivery is a
-- duplicate), and the outbox of chat messages to post.

CREATE TABLE webhook_deliveries (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source      TEXT NOT NULL CHECK (source IN ('github', 'pagerduty', 'zendesk', 'slack')),
    delivery_id TEXT NOT NULL,
    event       TEXT NOT NULL,
    payload     JSONB NOT NULL,
    messages    INTEGER NOT NULL DEFAULT 0,
    received_at TIMESTAMPTZ NOT NULL,
    UNIQUE (source, delivery_id)
);

CREATE TABLE outbox (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery        BIGINT REFERENCES webhook_deliveries (id),
    channel         TEXT NOT NULL,
    text            TEXT NOT NULL,
    blocks          JSONB NOT NULL,
    -- Rows with the same key waiting together are posted as one message.
    coalesce_key    TEXT,
    coalesce_label  TEXT,
    status          TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sent', 'merged', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    last_error      TEXT,
    slack_ts        TEXT,
    merged_into     BIGINT,
    created_at      TIMESTAMPTZ NOT NULL,
    sent_at         TIMESTAMPTZ
);
CREATE INDEX outbox_due ON outbox (next_attempt_at, id) WHERE status = 'pending';
