-- Signed checkpoints of the archive's chain heads (DESIGN §4.4, core/checkpoints.py). One row
-- per checkpoint; `document` is the whole signed canonical JSON (every room's head as compact
-- lists), so even a big server writes one row per checkpoint. `seq`, `created_ts`, `key_id`,
-- `rooms` and `checkpoint_hash` repeat fields of the document for listing; verify trusts only the
-- document and its signature. `sink_written_ts` is set once the checkpoint has been appended to
-- `archive.checkpoint_sink` (NULL: not yet, retried on every pass, or no sink configured).

CREATE TABLE IF NOT EXISTS compliance_archive_checkpoints (
    seq BIGINT NOT NULL PRIMARY KEY,
    created_ts BIGINT NOT NULL,
    key_id TEXT NOT NULL,
    rooms BIGINT NOT NULL,
    checkpoint_hash TEXT NOT NULL,
    document TEXT NOT NULL,
    sink_written_ts BIGINT
);
CREATE INDEX IF NOT EXISTS compliance_archive_checkpoints_unsunk ON compliance_archive_checkpoints (sink_written_ts, seq);
