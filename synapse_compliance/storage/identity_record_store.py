"""Sealed personal data: written with a verification change, read only by the audited reveal.

A record is written inside `IdentityStore.change_verification`'s transaction (see
`write_identity_record_txn`), so the verification, its history, the record and the audit entry
commit together or not at all. Before writing, the transaction counts the *other* accounts whose
record has the same document fingerprint; `identity.max_accounts_per_identity` is enforced on
that count, and a refusal writes nothing.

Two attestations of one document for two users at the same moment must not both pass the count.
SQLite runs one write transaction at a time; on PostgreSQL (REPEATABLE READ by default, where
both would see the other's row missing) the transaction switches itself to SERIALIZABLE, so one
of the two fails with a serialization error, which Synapse retries (SYNAPSE_FACTS §10); the retry
then sees the committed record.

Reading clear data happens only in `IdentityRecordStore.reveal`, whose transaction also appends
the `identity.reveal` audit entry: the data is never read without the entry being committed.
"""

import attrs
from synapse.module_api import LoggingTransaction, ModuleApi

from synapse_compliance._synapse_private import is_postgres
from synapse_compliance.core.decision import ALLOW, Decision
from synapse_compliance.core.personal_data import PersonalData, decide_identity_uniqueness
from synapse_compliance.crypto import Keyring, SealedRecord
from synapse_compliance.storage.audit_store import AuditEntry, append_audit_txn
from synapse_compliance.storage.schema import SchemaManager
from synapse_compliance.storage.sealed_rows import decode_bytes, encode_bytes

REVEAL_ACTION = "identity.reveal"


@attrs.frozen
class IdentityRecordWrite:
    """A sealed record to store with a verification change, and what to check first."""

    sealed: SealedRecord
    # The document's fingerprint under the sealing (current) key: stored with the record.
    fingerprint: str
    # The document's fingerprint under every configured key: records not yet re-sealed by
    # `rotate-key` carry a fingerprint made with their own (previous) key.
    match_fingerprints: tuple[str, ...]
    max_accounts: int


@attrs.frozen
class RevealedIdentity:
    """A record opened for the reveal endpoint."""

    user_id: str
    key_id: str
    personal_data: PersonalData
    created_ts: int
    updated_ts: int


def serializable_txn(txn: LoggingTransaction) -> None:
    """Make this PostgreSQL transaction SERIALIZABLE; must be its first statement (no-op on SQLite).

    PostgreSQL accepts `SET TRANSACTION` before the first query of a transaction; Synapse runs
    the interaction function as the first thing on a fresh transaction (checked against 1.163.2,
    `synapse/storage/database.py` `new_transaction`) and again from the start on each retry.
    """
    if is_postgres(txn):
        txn.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")


def write_identity_record_txn(
    txn: LoggingTransaction, user_id: str, write: IdentityRecordWrite, now_ms: int
) -> Decision:
    """Store `write` for `user_id` unless the document is used by too many other accounts.

    Returns:
        ALLOW when the record was written; the `identity_already_used` refusal (nothing
        written) otherwise.
    """
    placeholders = ", ".join("?" for _ in write.match_fingerprints)
    txn.execute(
        "SELECT COUNT(*) FROM compliance_identity_records"  # noqa: S608 (only `?` placeholders are joined)
        f" WHERE fingerprint IN ({placeholders}) AND user_id <> ?",
        (*write.match_fingerprints, user_id),
    )
    row = txn.fetchone()
    assert row is not None  # COUNT(*) always yields a row
    decision = decide_identity_uniqueness(int(row[0]), write.max_accounts)
    if not decision.allowed:
        return decision
    txn.execute(
        "INSERT INTO compliance_identity_records"
        " (user_id, key_id, nonce, ciphertext, fingerprint, created_ts, updated_ts)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (user_id) DO UPDATE SET key_id = EXCLUDED.key_id, nonce = EXCLUDED.nonce,"
        " ciphertext = EXCLUDED.ciphertext, fingerprint = EXCLUDED.fingerprint,"
        " updated_ts = EXCLUDED.updated_ts",
        (
            user_id,
            write.sealed.key_id,
            encode_bytes(write.sealed.nonce),
            encode_bytes(write.sealed.ciphertext),
            write.fingerprint,
            now_ms,
            now_ms,
        ),
    )
    return ALLOW


class IdentityRecordStore:
    """Opens sealed records for the audited reveal (writes go through `IdentityStore`)."""

    def __init__(self, api: ModuleApi, schema: SchemaManager) -> None:
        self._api = api
        self._schema = schema

    async def reveal(
        self, user_id: str, keyring: Keyring, *, actor: str, reason: str, now_ms: int
    ) -> RevealedIdentity | None:
        """Open `user_id`'s record and audit the reveal, in one transaction.

        Returns:
            The clear record, or None (and no audit entry) when the user has none.

        Raises:
            PiiCryptoError: the record cannot be opened (unknown key id, altered or copied row);
                the transaction is rolled back, so no audit entry claims a reveal.
        """
        await self._schema.ready()

        def _txn(txn: LoggingTransaction) -> RevealedIdentity | None:
            txn.execute(
                "SELECT key_id, nonce, ciphertext, created_ts, updated_ts"
                " FROM compliance_identity_records WHERE user_id = ?",
                (user_id,),
            )
            row = txn.fetchone()
            if row is None:
                return None
            sealed = SealedRecord(key_id=row[0], nonce=decode_bytes(row[1]), ciphertext=decode_bytes(row[2]))
            # Opening is pure computation, so it is safe in a retried transaction; doing it here
            # means a record that cannot be opened leaves no audit entry behind.
            data = PersonalData.from_plaintext(keyring.open(user_id, sealed))
            append_audit_txn(
                txn,
                AuditEntry(
                    actor=actor,
                    action=REVEAL_ACTION,
                    target=user_id,
                    reason=reason,
                    details={"key_id": sealed.key_id},
                ),
                now_ms,
            )
            return RevealedIdentity(
                user_id=user_id,
                key_id=sealed.key_id,
                personal_data=data,
                created_ts=int(row[3]),
                updated_ts=int(row[4]),
            )

        return await self._api.run_db_interaction("compliance_reveal_identity", _txn)
