-- Outbox of server notices to users. Decisions enqueue a notice in their own transaction; the
-- main process (the only one that can send notices) delivers them, at least once. `dedupe_key`
-- makes enqueueing idempotent, so a sweep that runs twice never notifies twice.

CREATE TABLE IF NOT EXISTS compliance_notices (
    id $ID_PK$,
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    dedupe_key TEXT NOT NULL,
    content TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    sent_ts BIGINT,
    event_id TEXT,
    attempts INTEGER NOT NULL,
    next_attempt_ts BIGINT NOT NULL,
    last_error TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS compliance_notices_dedupe ON compliance_notices (dedupe_key);
CREATE INDEX IF NOT EXISTS compliance_notices_pending ON compliance_notices (sent_ts, next_attempt_ts);
CREATE INDEX IF NOT EXISTS compliance_notices_user ON compliance_notices (user_id, id);
