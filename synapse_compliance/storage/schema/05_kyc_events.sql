-- Event ids of applied KYC-provider webhook deliveries: a replayed delivery changes nothing.

CREATE TABLE IF NOT EXISTS compliance_kyc_events (
    event_id TEXT NOT NULL PRIMARY KEY,
    user_id TEXT NOT NULL,
    status TEXT NOT NULL,
    received_ts BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS compliance_kyc_events_user ON compliance_kyc_events (user_id, received_ts);
