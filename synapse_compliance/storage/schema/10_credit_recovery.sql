-- Credit recovery (credit.recovery, DESIGN §4.3): the last recovery interval in which each user
-- was granted points. Intervals are numbered from the Unix epoch (floor(now / interval)); a grant
-- and this row are written in one transaction, so no interval is granted twice, whichever
-- instance runs the loop and however often it restarts.

CREATE TABLE IF NOT EXISTS compliance_credit_recovery (
    user_id TEXT NOT NULL PRIMARY KEY,
    period BIGINT NOT NULL,
    ts BIGINT NOT NULL
);

-- The recovery loop looks for users below the ceiling.
CREATE INDEX IF NOT EXISTS compliance_credit_score ON compliance_credit (score, user_id);
