-- Each attempt of a job numbers its log lines from 1, and the attempt is part of the key: the
-- late lines of an attempt whose worker lost its lease can no longer collide with the next
-- attempt's and be dropped. Lines stored before this migration belong to attempt 1.
CREATE TABLE job_logs_by_attempt (
    job_id  INTEGER NOT NULL REFERENCES jobs (id),
    attempt INTEGER NOT NULL,
    seq     INTEGER NOT NULL,
    at      TEXT NOT NULL,
    stream  TEXT NOT NULL CHECK (stream IN ('stdout', 'stderr', 'system')),
    line    TEXT NOT NULL,
    PRIMARY KEY (job_id, attempt, seq)
) STRICT;
INSERT INTO job_logs_by_attempt (job_id, attempt, seq, at, stream, line)
    SELECT job_id, 1, seq, at, stream, line FROM job_logs;
DROP TABLE job_logs;
ALTER TABLE job_logs_by_attempt RENAME TO job_logs;
