-- Finding the burst a new message joins must not scan every pending message.
CREATE INDEX outbox_pending_bursts ON outbox (channel, coalesce_key, next_attempt_at)
    WHERE status = 'pending' AND coalesce_key IS NOT NULL;
