-- Connection records (DESIGN §4.4, issue #6): who connected from where, with which client,
-- copied from Synapse's `user_ips` so they outlive its `user_ips_max_age` pruning (28d by
-- default). One row per (user, device, IP, user agent): `first_seen` is the earliest and
-- `last_seen` the latest sighting copied (Synapse keeps only the latest per access token and
-- IP). `connection_key` is the SHA-256 of that tuple (storage/connection_store.py), so a device
-- id of NULL and user agents of any length can be part of a unique key on both engines.

CREATE TABLE IF NOT EXISTS compliance_connections (
    id $ID_PK$,
    connection_key TEXT NOT NULL,
    user_id TEXT NOT NULL,
    device_id TEXT,
    ip TEXT NOT NULL,
    user_agent TEXT NOT NULL,
    first_seen BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    first_copied_ts BIGINT NOT NULL,
    last_copied_ts BIGINT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS compliance_connections_key ON compliance_connections (connection_key);
CREATE INDEX IF NOT EXISTS compliance_connections_user ON compliance_connections (user_id, last_seen, id);
CREATE INDEX IF NOT EXISTS compliance_connections_last_seen ON compliance_connections (last_seen);

-- How far the copy has read `user_ips`: the latest last_seen copied. Each pass starts reading a
-- window below it (tasks/connections.py LATE_COMMIT_MS), for rows Synapse commits late. Advanced
-- in the transaction that writes the rows; the last pass's figures are for `GET admin/status`.
CREATE TABLE IF NOT EXISTS compliance_connections_mark (
    name TEXT NOT NULL PRIMARY KEY,
    last_seen_mark BIGINT NOT NULL,
    last_pass_ts BIGINT,
    last_pass_scanned BIGINT,
    last_pass_changed BIGINT,
    last_pass_pruned BIGINT
);
INSERT INTO compliance_connections_mark (name, last_seen_mark) VALUES ('user_ips', 0) ON CONFLICT (name) DO NOTHING;
