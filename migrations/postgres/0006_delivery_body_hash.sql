-- A signed body seen before is a replay (or the same event from two hooks), whatever delivery
-- id its unsigned header claims: de-duplicate on the body's SHA-256 too.
ALTER TABLE webhook_deliveries ADD COLUMN body_sha256 TEXT;
CREATE UNIQUE INDEX webhook_deliveries_body ON webhook_deliveries (source, body_sha256);
