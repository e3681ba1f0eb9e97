-- A vote may say why (approve or deny "with comment…"): shown in the approval message, its
-- thread, the job page and the vote's audit row.
ALTER TABLE approval_votes ADD COLUMN comment TEXT;
