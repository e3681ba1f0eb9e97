-- Deploy safety: locks on targets and environments, and runs that override a lock or freeze
-- (break-glass). A lock's name is a target (`api/production`), an environment (`production`)
-- or `*` (everything); one row per name, so two people locking at once cannot both win.
CREATE TABLE locks (
    name           TEXT PRIMARY KEY,
    holder         TEXT NOT NULL,
    reason         TEXT NOT NULL DEFAULT '',
    channel        TEXT NOT NULL,
    correlation_id TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    -- NULL: held until someone unlocks it.
    expires_at     TEXT
) STRICT;

-- A request that overrides a lock or freeze says what it overrode, and one of its approvers
-- must be of override_group; each vote says whether it came from that group.
ALTER TABLE approval_requests ADD COLUMN overrides TEXT;
ALTER TABLE approval_requests ADD COLUMN override_group TEXT;
ALTER TABLE approval_votes ADD COLUMN overrider INTEGER NOT NULL DEFAULT 0;
-- Its job carries the override, so its start is not refused by what was overridden.
ALTER TABLE jobs ADD COLUMN overrides TEXT;
