-- Retention ([retention] in pantheon.toml) works in small batches; these keep each batch from
-- scanning the tables. A delivery older than its retention keeps its identity (source, delivery
-- id, body hash: a redelivery stays a duplicate) and loses its payload.
CREATE INDEX webhook_deliveries_payload_kept ON webhook_deliveries (received_at) WHERE payload <> '{}'::jsonb;
CREATE INDEX outbox_settled ON outbox (created_at) WHERE status <> 'pending';
CREATE INDEX jobs_finished_at ON jobs (finished_at) WHERE finished_at IS NOT NULL;
