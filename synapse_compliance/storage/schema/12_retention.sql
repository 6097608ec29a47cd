-- Legal holds and archive pruning (DESIGN §4.4, issue #6).

-- A legal hold keeps a room's archive rows, or a user's (rows they sent and membership events
-- about them), from being pruned while it is active. Released holds stay, with who released
-- them, when and why: the history of holds is evidence too. `hold_id` is chosen by the admin
-- (e.g. a case number) and never reused.
CREATE TABLE IF NOT EXISTS compliance_legal_holds (
    id $ID_PK$,
    hold_id TEXT NOT NULL,
    room_id TEXT,
    user_id TEXT,
    reason TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    created_by TEXT NOT NULL,
    released_ts BIGINT,
    released_by TEXT,
    release_reason TEXT,
    CHECK ((room_id IS NULL AND user_id IS NOT NULL) OR (room_id IS NOT NULL AND user_id IS NULL))
);
CREATE UNIQUE INDEX IF NOT EXISTS compliance_legal_holds_hold_id ON compliance_legal_holds (hold_id);
CREATE INDEX IF NOT EXISTS compliance_legal_holds_room ON compliance_legal_holds (room_id, released_ts);
CREATE INDEX IF NOT EXISTS compliance_legal_holds_user ON compliance_legal_holds (user_id, released_ts);

-- Where each pruned room's chain resumes: the id and chain hash of its last pruned row, and how
-- many rows were pruned in all (compliance_archive_heads.rows_count counts every row ever
-- appended, so pruned_rows plus the remaining rows must equal it). Written in the transaction
-- that deletes the rows.
CREATE TABLE IF NOT EXISTS compliance_archive_anchors (
    room_id TEXT NOT NULL PRIMARY KEY,
    last_pruned_id BIGINT NOT NULL,
    anchor_hash TEXT NOT NULL,
    pruned_rows BIGINT NOT NULL,
    pruned_ts BIGINT NOT NULL
);

-- One row that every hold change and every prune transaction updates, so on PostgreSQL
-- (REPEATABLE READ) a prune whose snapshot predates a concurrently committed hold fails to
-- serialize and is retried, and then sees the hold.
CREATE TABLE IF NOT EXISTS compliance_retention_state (
    name TEXT NOT NULL PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO compliance_retention_state (name, value) VALUES ('holds_version', 0) ON CONFLICT (name) DO NOTHING;
