-- Signed requests seen within the replay window. Slack never sends a slash command or a click
-- twice, so a second arrival of the same signature is a replay, on this replica or another, and
-- across restarts. The key is `slack:<signed timestamp, 10 digits>:<signature>`, so rows sort by
-- the time they were signed: new ones land together at one end of the index, and the ones no
-- verifiable copy can match any more (signed longer ago than the clock skew allows) are deleted
-- as one range of keys. No other index is needed.
CREATE TABLE request_claims (
    key     TEXT PRIMARY KEY,
    seen_at TEXT NOT NULL
) WITHOUT ROWID;
