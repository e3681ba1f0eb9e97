-- Retention ([retention] in pantheon.toml) deletes old rows in small batches; these keep each
-- batch from scanning the tables.
CREATE INDEX webhook_deliveries_received_at ON webhook_deliveries (received_at);
CREATE INDEX outbox_delivery ON outbox (delivery);
CREATE INDEX outbox_settled ON outbox (created_at) WHERE status <> 'pending';
CREATE INDEX jobs_finished_at ON jobs (finished_at) WHERE finished_at IS NOT NULL;
