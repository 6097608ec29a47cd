-- Audit log of every admin action, and verified-identity state with its full history.
-- Deltas must be re-runnable (IF NOT EXISTS): on SQLite, DDL commits statement by statement, so a
-- delta interrupted half-way is simply applied again at the next start-up.

CREATE TABLE IF NOT EXISTS compliance_audit_log (
    id $ID_PK$,
    ts BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    reason TEXT NOT NULL,
    details TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS compliance_audit_log_target ON compliance_audit_log (target, id);
CREATE INDEX IF NOT EXISTS compliance_audit_log_actor ON compliance_audit_log (actor, id);

CREATE TABLE IF NOT EXISTS compliance_verification (
    user_id TEXT NOT NULL PRIMARY KEY,
    status TEXT NOT NULL,
    level INTEGER,
    method TEXT,
    updated_ts BIGINT NOT NULL,
    verified_ts BIGINT,
    expires_ts BIGINT
);

CREATE TABLE IF NOT EXISTS compliance_verification_history (
    id $ID_PK$,
    user_id TEXT NOT NULL,
    status TEXT NOT NULL,
    level INTEGER,
    method TEXT NOT NULL,
    actor TEXT NOT NULL,
    note TEXT,
    ts BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS compliance_verification_history_user
    ON compliance_verification_history (user_id, id);
