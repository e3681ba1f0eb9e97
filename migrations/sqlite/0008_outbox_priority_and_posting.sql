-- Incidents (PagerDuty) go out ahead of everything else waiting for their channel.
ALTER TABLE outbox ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
-- Set when a sender starts posting a row (with the outbox id the message carries as metadata),
-- cleared only when the post is known not to have happened or the row is settled. A row claimed
-- with them set may be in the channel already: the sender looks for that message first.
ALTER TABLE outbox ADD COLUMN posting_since TEXT;
ALTER TABLE outbox ADD COLUMN posting_as INTEGER;
CREATE INDEX outbox_due_by_priority ON outbox (priority DESC, id) WHERE status = 'pending';
