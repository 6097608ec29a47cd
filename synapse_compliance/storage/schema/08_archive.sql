-- The retention archive (DESIGN §4.4): every event of a governed room, with the JSON exactly as
-- Synapse stored it, so later redactions and purges in Synapse do not erase it. Rows are never
-- updated except `redacted_by`, set when the redaction of that event is archived (the redaction
-- is a row of its own). `prev_hash`/`chain_hash` link the rows of one room in id order
-- (core/archive_chain.py).

CREATE TABLE IF NOT EXISTS compliance_archive (
    id $ID_PK$,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    sender TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT,
    origin_server_ts BIGINT NOT NULL,
    archived_ts BIGINT NOT NULL,
    event_json TEXT NOT NULL,
    redacts TEXT,
    redacted_by TEXT,
    prev_hash TEXT NOT NULL,
    chain_hash TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS compliance_archive_event ON compliance_archive (event_id);
CREATE INDEX IF NOT EXISTS compliance_archive_room ON compliance_archive (room_id, id);
CREATE INDEX IF NOT EXISTS compliance_archive_redacts ON compliance_archive (redacts);

-- Each room's chain head: its last row (id and hash) and how many rows its chain has, updated in
-- the transaction that appends rows. Verify reads rows up to `last_id` and compares the end of
-- the chain with the head, so rows deleted at the end of a chain are detected too.
CREATE TABLE IF NOT EXISTS compliance_archive_heads (
    room_id TEXT NOT NULL PRIMARY KEY,
    last_id BIGINT NOT NULL,
    rows_count BIGINT NOT NULL,
    chain_hash TEXT NOT NULL
);

-- How far the archiver has read Synapse's event stream. `forward`: every event with
-- 0 < stream_ordering <= position has been archived or found to belong to no governed room.
-- `backward` (backfilled events, which have negative orderings): the same for every event with
-- position <= stream_ordering < 0. Advanced in the same transaction as the rows they cover.
CREATE TABLE IF NOT EXISTS compliance_archive_cursor (
    name TEXT NOT NULL PRIMARY KEY,
    position BIGINT NOT NULL
);
INSERT INTO compliance_archive_cursor (name, position) VALUES ('forward', 0) ON CONFLICT (name) DO NOTHING;
INSERT INTO compliance_archive_cursor (name, position) VALUES ('backward', 0) ON CONFLICT (name) DO NOTHING;
