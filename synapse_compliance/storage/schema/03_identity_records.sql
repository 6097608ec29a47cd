-- Sealed personal data behind verified identities (DESIGN §4.2): one record per user.
-- Nothing here is clear text: `nonce` and `ciphertext` are base64 (AES-256-GCM, sealed for this
-- user_id), `fingerprint` is a keyed HMAC of the identity document, made with the key `key_id`.
-- Re-runnable (IF NOT EXISTS), like every delta.

CREATE TABLE IF NOT EXISTS compliance_identity_records (
    user_id TEXT NOT NULL PRIMARY KEY,
    key_id TEXT NOT NULL,
    nonce TEXT NOT NULL,
    ciphertext TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    updated_ts BIGINT NOT NULL
);
-- Counting the accounts that hold a document (identity.max_accounts_per_identity).
CREATE INDEX IF NOT EXISTS compliance_identity_records_fingerprint
    ON compliance_identity_records (fingerprint);
-- Finding what `rotate-key` still has to re-seal.
CREATE INDEX IF NOT EXISTS compliance_identity_records_key_id
    ON compliance_identity_records (key_id, user_id);
