-- Credit (DESIGN §4.3): the ledger of every change, the current score and tier per user, and the
-- groups each user created (for `max_groups_created`). The score is always the plain sum of the
-- user's ledger: each row holds the delta actually applied after clamping, and the first row of a
-- user is their initial grant (reason code `initial`), written when their credit first changes.

CREATE TABLE IF NOT EXISTS compliance_credit_ledger (
    id $ID_PK$,
    user_id TEXT NOT NULL,
    delta BIGINT NOT NULL,
    reason_code TEXT NOT NULL,
    reason TEXT NOT NULL,
    actor TEXT NOT NULL,
    case_id TEXT,
    ts BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS compliance_credit_ledger_user ON compliance_credit_ledger (user_id, id);

-- A projection of the ledger; `tier` is the tier last assigned, which hysteresis needs.
CREATE TABLE IF NOT EXISTS compliance_credit (
    user_id TEXT NOT NULL PRIMARY KEY,
    score BIGINT NOT NULL,
    tier TEXT NOT NULL,
    updated_ts BIGINT NOT NULL
);

-- Groups created by local users. A group counts for its creator while `ended_ts` is NULL: it
-- stops counting when the creator leaves it (or is kicked or banned, as a shutdown does) and
-- counts again if they rejoin.
CREATE TABLE IF NOT EXISTS compliance_credit_groups (
    room_id TEXT NOT NULL PRIMARY KEY,
    creator TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    ended_ts BIGINT
);
CREATE INDEX IF NOT EXISTS compliance_credit_groups_creator ON compliance_credit_groups (creator);
