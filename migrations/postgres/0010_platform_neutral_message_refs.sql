-- Where a message was posted is an opaque reference from the chat platform (Slack calls it a
-- `ts`); the columns say so, so a second platform can use them as they are.
ALTER TABLE approval_requests RENAME COLUMN message_ts TO message_ref;
ALTER TABLE jobs RENAME COLUMN thread_ts TO thread_ref;
ALTER TABLE outbox RENAME COLUMN slack_ts TO posted_ref;
