"""Re-sealing identity records under the current PII key (`synapse-compliance rotate-key`).

Theory of operation. The command runs outside Synapse, on its own connection to Synapse's main
database (the `database:` section of homeserver.yaml, sqlite3 or psycopg2), while Synapse may keep
running: the module opens records sealed with any configured key, so a half-rotated table is
fine. Each batch is one transaction: it locks up to N records not sealed with the current key,
opens each with its own key, seals it again with the current key and a fresh nonce, recomputes
its document fingerprint under the current key, and appends one `identity.rotate_key` audit
entry. An interruption loses at most the batch in flight; a second run continues with what is
left, because "what is left" is simply every record whose key id is not the current one.

Before anything changes, the records' key ids are checked against the keyring: a key id that is
neither current nor previous is an error naming it (its key file must be added to
`identity.previous_pii_key_files`), and nothing is rotated. The same check inside a batch rolls
the batch back.

An update only applies if the record still holds what the batch read (same key id and nonce),
so an attestation made by Synapse during the run is never overwritten with older data.

No Synapse imports: this is plain DB-API with `?` placeholders rewritten for psycopg2.
"""

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from synapse_compliance.core.personal_data import PersonalData
from synapse_compliance.crypto import Keyring, PiiCryptoError, SealedRecord
from synapse_compliance.storage.audit_store import AuditEntry, audit_statement
from synapse_compliance.storage.sealed_rows import decode_bytes, encode_bytes

ROTATE_ACTION = "identity.rotate_key"
ROTATE_ACTOR = "synapse-compliance rotate-key"
TABLE = "compliance_identity_records"


class RotationError(Exception):
    """Rotation cannot go on; the message says why and what to do (no clear data)."""


@attrs.define
class Database:
    """A DB-API connection to Synapse's main database; SQL is written with `?` placeholders."""

    connection: Any
    postgres: bool

    def execute(self, sql: str, args: Sequence[object] = ()) -> Any:
        """Run one statement and return its cursor."""
        cursor = self.connection.cursor()
        cursor.execute(sql.replace("?", "%s") if self.postgres else sql, tuple(args))
        return cursor

    def begin(self) -> None:
        """Start a write transaction (SQLite: take the write lock now, not at the first UPDATE)."""
        if not self.postgres:
            self.connection.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        """Commit the transaction in progress."""
        self.connection.commit()

    def rollback(self) -> None:
        """Roll back the transaction in progress."""
        self.connection.rollback()

    def close(self) -> None:
        """Close the connection."""
        self.connection.close()


def open_database(config: Mapping[str, Any]) -> Database:
    """Connect to the database described by homeserver.yaml's `database:` section.

    Raises:
        RotationError: the section is malformed or names an engine Synapse does not support.
    """
    name = config.get("name")
    args = config.get("args")
    if not isinstance(args, Mapping):
        raise RotationError("database.args: expected a mapping")
    params = {k: v for k, v in args.items() if not str(k).startswith("cp_")}  # pool options
    if name == "sqlite3":
        path = params.get("database")
        if not isinstance(path, str):
            raise RotationError("database.args.database: expected the path of the SQLite file")
        # mode=rw: a wrong path is an error, never a new empty database. A relative path is
        # relative to the working directory, as it is for Synapse. Autocommit mode: transactions
        # are opened explicitly with BEGIN IMMEDIATE.
        uri = Path(path).resolve().as_uri() + "?mode=rw"
        try:
            connection = sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)
        except sqlite3.Error as e:
            raise RotationError(f"database.args.database: cannot open {path!r}: {e}") from None
        return Database(connection, postgres=False)
    if name == "psycopg2":
        import psycopg2  # noqa: PLC0415 (optional: only PostgreSQL deployments have it)

        return Database(psycopg2.connect(**params), postgres=True)
    raise RotationError(f"database.name: {name!r} is not supported; expected sqlite3 or psycopg2")


def main_database_config(document: Mapping[str, Any]) -> Mapping[str, Any]:
    """The config of Synapse's main database: `database:`, or the `databases:` entry for `main`.

    Raises:
        RotationError: neither is present in a usable form.
    """
    single = document.get("database")
    if isinstance(single, Mapping):
        return single
    several = document.get("databases")
    if isinstance(several, Mapping):
        for entry in several.values():
            if isinstance(entry, Mapping) and "main" in (entry.get("data_stores") or []):
                return entry
    raise RotationError("homeserver.yaml has no `database:` section (nor a `databases:` entry for main)")


def pending_by_key(db: Database, keyring: Keyring) -> dict[str, int]:
    """How many records each key id other than the current one still seals.

    Raises:
        RotationError: the module's table does not exist (the module never ran on this database).
    """
    try:
        cursor = db.execute(
            f"SELECT key_id, COUNT(*) FROM {TABLE} WHERE key_id <> ? GROUP BY key_id",  # noqa: S608 (constant table name)
            (keyring.current.key_id,),
        )
        rows = cursor.fetchall()
    except Exception as e:  # the driver's own error types differ; the message says what it was
        db.rollback()
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RotationError(
            f"cannot read {TABLE} ({first_line}); has synapse_compliance started on this database?"
        ) from None
    db.rollback()  # end the read transaction (psycopg2 opens one)
    return {str(key_id): int(count) for key_id, count in rows}


def check_keys(pending: Mapping[str, int], keyring: Keyring) -> None:
    """Refuse to start when some record's key is not configured.

    Raises:
        RotationError: naming each unknown key id and how many records it seals.
    """
    unknown = {key_id: n for key_id, n in sorted(pending.items()) if key_id not in keyring.key_ids}
    if unknown:
        listed = ", ".join(f"{key_id} ({n} records)" for key_id, n in unknown.items())
        raise RotationError(
            f"records are sealed with key id(s) {listed}, which are neither identity.pii_key_file "
            "nor in identity.previous_pii_key_files; add the key file that has that id to "
            "previous_pii_key_files (synapse-compliance check-config prints key ids). Nothing was rotated."
        )


def rotate_batch(db: Database, keyring: Keyring, old_key_id: str, batch_size: int, now_ms: int) -> int:
    """Re-seal up to `batch_size` records sealed with `old_key_id`, in one transaction.

    Returns:
        How many records were re-sealed (0: none left under that key).

    Raises:
        RotationError: a record cannot be opened; the batch is rolled back.
    """
    db.begin()
    try:
        cursor = db.execute(
            f"SELECT user_id, nonce, ciphertext FROM {TABLE} WHERE key_id = ?"  # noqa: S608 (constant table name)
            f" ORDER BY user_id LIMIT ?{' FOR UPDATE' if db.postgres else ''}",
            (old_key_id, batch_size),
        )
        rows = cursor.fetchall()
        rotated = 0
        for user_id, nonce, ciphertext in rows:
            old = SealedRecord(
                key_id=old_key_id, nonce=decode_bytes(nonce), ciphertext=decode_bytes(ciphertext)
            )
            try:
                plaintext = keyring.open(user_id, old)
            except PiiCryptoError as e:
                raise RotationError(f"{e}; nothing in this batch was changed") from None
            data = PersonalData.from_plaintext(plaintext)
            new = keyring.seal(user_id, plaintext)
            updated = db.execute(
                f"UPDATE {TABLE} SET key_id = ?, nonce = ?, ciphertext = ?, fingerprint = ?,"  # noqa: S608 (constant table name)
                " updated_ts = ? WHERE user_id = ? AND key_id = ? AND nonce = ?",
                (
                    new.key_id,
                    encode_bytes(new.nonce),
                    encode_bytes(new.ciphertext),
                    keyring.fingerprint(data.document_type, data.document_number),
                    now_ms,
                    user_id,
                    old_key_id,
                    nonce,
                ),
            )
            rotated += updated.rowcount
        if rotated:
            _append_audit(db, old_key_id, keyring.current.key_id, rotated, now_ms)
        db.commit()
    except BaseException:
        db.rollback()
        raise
    return rotated


def _append_audit(db: Database, old_key_id: str, new_key_id: str, records: int, now_ms: int) -> None:
    details = {"from_key_id": old_key_id, "to_key_id": new_key_id, "records": records}
    reason = f"re-seal identity records under PII key {new_key_id}"
    db.execute(*audit_statement(AuditEntry(ROTATE_ACTOR, ROTATE_ACTION, None, reason, details), now_ms))


def rotate_all(
    db: Database,
    keyring: Keyring,
    batch_size: int,
    clock_ms: Callable[[], int],
    progress: Callable[[int, int], None],
) -> int:
    """Re-seal every record not sealed with the current key, batch by batch.

    Args:
        progress: called after each batch with (records rotated so far, records to rotate).

    Returns:
        How many records were re-sealed.

    Raises:
        RotationError: a record's key is not configured, or a record cannot be opened.
    """
    pending = pending_by_key(db, keyring)
    check_keys(pending, keyring)
    total = sum(pending.values())
    done = 0
    for old_key_id in sorted(pending):
        while True:
            rotated = rotate_batch(db, keyring, old_key_id, batch_size, clock_ms())
            if rotated == 0:
                break
            done += rotated
            progress(done, max(total, done))
    return done
