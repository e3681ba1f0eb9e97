-- What we remember about a person: their PagerDuty identity, told with `pager me as`.
CREATE TABLE user_prefs (
    slack_user_id     TEXT PRIMARY KEY,
    pagerduty_email   TEXT,
    pagerduty_user_id TEXT,
    updated_at        TEXT NOT NULL
) STRICT;
