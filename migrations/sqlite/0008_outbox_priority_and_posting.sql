-- Incidents (PagerDuty) go out ahead of everything else waiting for their channel.
ALTER TABLE outbox ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
-- Set when a sender starts posting a row, cleared when it records how that went. A row claimed
-- with it set may have been posted by a sender that died before recording it: the next sender
-- looks for the message in the channel before posting it again.
ALTER TABLE outbox ADD COLUMN posting_since TEXT;
CREATE INDEX outbox_due_by_priority ON outbox (priority DESC, id) WHERE status = 'pending';
