-- The re-verification sweep looks for verified identities by expiry time.

CREATE INDEX IF NOT EXISTS compliance_verification_expiry
    ON compliance_verification (status, expires_ts);
