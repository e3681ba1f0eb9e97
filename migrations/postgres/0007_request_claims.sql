-- Signed requests seen within the replay window. Slack never sends a slash command or a click
-- twice, so a second arrival of the same signature is a replay, on this replica or another, and
-- across restarts. Rows past the window (ten minutes) are pruned.
CREATE TABLE request_claims (
    key     TEXT PRIMARY KEY,
    seen_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX request_claims_seen_at ON request_claims (seen_at);
