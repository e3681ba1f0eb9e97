-- Each attempt of a job numbers its log lines from 1, and the attempt is part of the key: the
-- late lines of an attempt whose worker lost its lease can no longer collide with the next
-- attempt's and be dropped. Lines stored before this migration belong to attempt 1.
ALTER TABLE job_logs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1;
ALTER TABLE job_logs ALTER COLUMN attempt DROP DEFAULT;
ALTER TABLE job_logs DROP CONSTRAINT job_logs_pkey;
ALTER TABLE job_logs ADD PRIMARY KEY (job_id, attempt, seq);
