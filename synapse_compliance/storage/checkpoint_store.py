"""The `compliance_archive_checkpoints` table: making checkpoints, the sink outbox, checking them.

A checkpoint is made in one transaction: the latest checkpoint and every room's head are read,
the new document is signed (pure, `core.checkpoints`) and inserted, together with the audit entry
when an admin asked for it. Reading the heads in the same transaction gives one consistent
moment of the archive.

The reading functions take a `Query` (as in `archive_rows`), so `synapse-compliance verify` can
run the same checks over a plain connection; Synapse types are imported for type checking only.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import attrs
from signedjson.types import SigningKey, VerifyKey

from synapse_compliance.core.checkpoints import (
    AnchorLookup,
    ArchivedRow,
    CheckpointHead,
    CheckpointReport,
    CheckpointSteps,
    CheckScope,
    SignedCheckpoint,
    StoredCheckpoint,
    checkpoint_steps,
    parse_checkpoint,
    same_heads,
    sign_checkpoint,
)
from synapse_compliance.storage.archive_rows import Query, anchor_lookup, read_heads, txn_query
from synapse_compliance.storage.audit_store import AuditEntry, append_audit_txn

if TYPE_CHECKING:
    from synapse.module_api import LoggingTransaction, ModuleApi

    from synapse_compliance.storage.schema import SchemaManager

SINK_BATCH = 100  # checkpoints appended to the sink per pass at most


class CheckpointError(Exception):
    """The latest stored checkpoint cannot be read, so no next one can be linked to it."""


@attrs.frozen
class MadeCheckpoint:
    """What a checkpoint pass did: the new checkpoint (None when no head changed) and the latest."""

    created: SignedCheckpoint | None
    latest: SignedCheckpoint | None


@attrs.frozen
class CheckpointStatus:
    """Figures for `GET admin/status`."""

    latest_seq: int | None
    latest_ts: int | None
    sink_pending: int


def read_latest(query: Query, count: int) -> list[StoredCheckpoint]:
    """The latest `count` checkpoints, newest first."""
    rows = query(
        "SELECT seq, document FROM compliance_archive_checkpoints ORDER BY seq DESC LIMIT ?", (count,)
    )
    return [StoredCheckpoint(int(r[0]), str(r[1])) for r in rows]


def read_rows(query: Query, ids: Sequence[int]) -> dict[int, ArchivedRow]:
    """The room and chain hash of the archived rows with these ids (absent ids are left out)."""
    if not ids:
        return {}
    marks = ", ".join("?" for _ in ids)
    rows = query(
        f"SELECT id, room_id, chain_hash FROM compliance_archive WHERE id IN ({marks})",  # noqa: S608 (placeholders only)
        tuple(ids),
    )
    return {int(r[0]): ArchivedRow(r[1], r[2]) for r in rows}


def rows_now(query: Query, room_id: str | None) -> dict[str, int]:
    """Each room's chain length as recorded in its head (rooms with rows but no head: 0)."""
    return {h.head.room_id: h.head.rows for h in read_heads(query, room_id)}


def run_steps(steps: CheckpointSteps, query: Query) -> CheckpointReport:
    """Drive `checkpoint_steps` over a query function (a transaction or a plain connection)."""
    try:
        request = next(steps)
        while True:
            request = steps.send(read_rows(query, request.ids))
    except StopIteration as done:
        report: CheckpointReport = done.value
        return report


# Reads the pruning anchors over the same query and answers a room's anchor (None: not pruned).
AnchorReader = Callable[[Query], AnchorLookup]


def verify_checkpoints_query(
    query: Query,
    keys: Mapping[str, VerifyKey],
    count: int,
    room_id: str | None = None,
    anchors: AnchorReader = anchor_lookup,
) -> CheckpointReport:
    """Check the latest `count` checkpoints against the archive (see `checkpoint_steps`).

    Used by the CLI over its own connection and by `CheckpointStore.verify` in a transaction.
    `anchors` reads the pruning anchors (`compliance_archive_anchors`, storage/archive_rows.py).
    """
    stored = read_latest(query, count + 1)
    scope = CheckScope(keys, rows_now(query, room_id), room_id, anchors(query))
    steps = checkpoint_steps(stored, count, scope)
    return run_steps(steps, query)


class CheckpointStore:
    """Makes, lists and checks signed checkpoints."""

    def __init__(self, api: "ModuleApi", schema: "SchemaManager") -> None:
        self._api = api
        self._schema = schema

    async def make(self, key: SigningKey, now_ms: int, audit: AuditEntry | None = None) -> MadeCheckpoint:
        """Record a checkpoint of every room's head now, unless no head changed since the last.

        Args:
            key: signs the checkpoint.
            now_ms: its time.
            audit: appended in the same transaction (an admin's request), also when skipped.

        Raises:
            CheckpointError: the latest stored checkpoint is not a readable document.
        """
        await self._schema.ready()
        return await self._api.run_db_interaction(
            "compliance_make_checkpoint", self._make_txn, key, now_ms, audit
        )

    def _make_txn(
        self, txn: "LoggingTransaction", key: SigningKey, now_ms: int, audit: AuditEntry | None
    ) -> MadeCheckpoint:
        query = txn_query(txn)
        latest_rows = read_latest(query, 1)
        latest: SignedCheckpoint | None = None
        if latest_rows:
            try:
                latest = parse_checkpoint(latest_rows[0].text)
            except ValueError as e:
                raise CheckpointError(f"checkpoint {latest_rows[0].seq} is unreadable: {e}") from None
        heads = [
            CheckpointHead(r[0], int(r[1]), int(r[2]), r[3])
            for r in query(
                "SELECT room_id, last_id, rows_count, chain_hash FROM compliance_archive_heads", ()
            )
        ]
        created = None
        if not same_heads(latest, heads):
            created = sign_checkpoint(latest, heads, now_ms, self._api.server_name, key)
            txn.execute(
                "INSERT INTO compliance_archive_checkpoints"
                " (seq, created_ts, key_id, rooms, checkpoint_hash, document) VALUES (?, ?, ?, ?, ?, ?)",
                (created.seq, created.ts, created.key_id, len(created.heads), created.hash, created.text),
            )
        now = created or latest
        if audit is not None:
            details = {"created": created is not None, "seq": now.seq if now is not None else None}
            append_audit_txn(txn, attrs.evolve(audit, details={**audit.details, **details}), now_ms)
        return MadeCheckpoint(created, now)

    async def max_archive_id(self) -> int:
        """The highest archive row id (0 while empty): it grows with every row archived."""

        def _txn(txn: "LoggingTransaction") -> int:
            rows = txn_query(txn)("SELECT COALESCE(MAX(id), 0) FROM compliance_archive", ())
            return int(rows[0][0]) if rows else 0

        return await self._api.run_db_interaction("compliance_checkpoint_max_archive_id", _txn)

    async def sink_pending(self, limit: int = SINK_BATCH) -> list[StoredCheckpoint]:
        """Checkpoints not yet appended to the sink, oldest first."""
        await self._schema.ready()

        def _txn(txn: "LoggingTransaction") -> list[StoredCheckpoint]:
            rows = txn_query(txn)(
                "SELECT seq, document FROM compliance_archive_checkpoints"
                " WHERE sink_written_ts IS NULL ORDER BY seq LIMIT ?",
                (limit,),
            )
            return [StoredCheckpoint(int(r[0]), str(r[1])) for r in rows]

        return await self._api.run_db_interaction("compliance_checkpoint_sink_pending", _txn)

    async def mark_sunk(self, seqs: Sequence[int], now_ms: int) -> None:
        """Record that these checkpoints are in the sink."""

        def _txn(txn: "LoggingTransaction") -> None:
            txn.execute_batch(
                "UPDATE compliance_archive_checkpoints SET sink_written_ts = ? WHERE seq = ?",
                [(now_ms, seq) for seq in seqs],
            )

        await self._api.run_db_interaction("compliance_checkpoint_mark_sunk", _txn)

    async def status(self) -> CheckpointStatus:
        """The latest checkpoint's seq and time, and how many wait for the sink."""
        await self._schema.ready()

        def _txn(txn: "LoggingTransaction") -> CheckpointStatus:
            query = txn_query(txn)
            latest = query(
                "SELECT seq, created_ts FROM compliance_archive_checkpoints ORDER BY seq DESC LIMIT 1", ()
            )
            pending = query(
                "SELECT COUNT(*) FROM compliance_archive_checkpoints WHERE sink_written_ts IS NULL", ()
            )
            return CheckpointStatus(
                int(latest[0][0]) if latest else None,
                int(latest[0][1]) if latest else None,
                int(pending[0][0]) if pending else 0,
            )

        return await self._api.run_db_interaction("compliance_checkpoint_status", _txn)

    async def verify(
        self,
        keys: Mapping[str, VerifyKey],
        count: int,
        room_id: str | None = None,
        anchors: AnchorReader = anchor_lookup,
    ) -> CheckpointReport:
        """Check the latest `count` checkpoints against the archive, in one transaction."""
        await self._schema.ready()

        def _txn(txn: "LoggingTransaction") -> CheckpointReport:
            return verify_checkpoints_query(txn_query(txn), keys, count, room_id, anchors)

        return await self._api.run_db_interaction("compliance_verify_checkpoints", _txn)
