-- Nothing reads the audit trail by time but retention, which now takes the oldest rows by id
-- (ids follow time): the index on `at` cost every audit row one more b-tree insert on the
-- acknowledgement path (about 6% of the acknowledgements a second on SQLite, measured).
DROP INDEX IF EXISTS audit_log_at;
