"""Pruning the archive: delete a room's old, unheld chain prefix and move its anchor, atomically.

One transaction per batch of one room (`retention.prune_batch_size` rows at most). It reads the
holds, the room's anchor and its first rows; picks the prefix to prune (`core.retention`);
checks that prefix link by link from the anchor, so a chain that is already broken is never
pruned into a clean-looking one; deletes it; upserts the anchor (`compliance_archive_anchors`)
to the last pruned row's hash; and writes the audit entry. A crash or a retry therefore never
leaves rows deleted without their anchor, or the other way round.

`compliance_archive_heads` is not touched: a head's `rows_count` counts every row ever appended,
so appending (the archiver) and pruning never write the same rows.
"""

from collections.abc import Sequence

import attrs
from synapse.module_api import LoggingTransaction, ModuleApi

from synapse_compliance.core.archive_chain import ChainedRow, ChainWalker
from synapse_compliance.core.retention import RetentionRow, holds_for, prunable_prefix
from synapse_compliance.storage.archive_rows import read_anchor, read_rows_page, txn_query
from synapse_compliance.storage.audit_store import AuditEntry, append_audit_txn
from synapse_compliance.storage.hold_store import held_user_ids_txn, room_held_txn, touch_holds_version_txn
from synapse_compliance.storage.schema import SchemaManager

PRUNE_ACTION = "archive.prune"
_MAX_ID = 2**63 - 1


@attrs.frozen
class PruneRequest:
    """Prune one batch of one room: rows archived before `cutoff_ms`, at most `batch_size`."""

    room_id: str
    cutoff_ms: int
    batch_size: int
    actor: str
    reason: str


@attrs.frozen
class PrunedBatch:
    """What one prune transaction did to one room.

    Attributes:
        rows: rows deleted (0 when nothing in the room may go now).
        more: the batch was full, so the room may have more rows to prune.
        refused: why the room was left alone although rows were due (its chain is broken),
            else None.
    """

    room_id: str
    rows: int
    more: bool
    last_pruned_id: int | None = None
    anchor_hash: str | None = None
    refused: str | None = None


class PruneStore:
    """Finds rooms with rows to prune and prunes them batch by batch."""

    def __init__(self, api: ModuleApi, schema: SchemaManager) -> None:
        self._api = api
        self._schema = schema

    async def candidate_rooms(
        self, after_room: str, cutoff_ms: int, limit: int
    ) -> tuple[list[str], str | None]:
        """Rooms after `after_room` (by id) whose first remaining row is older than the cutoff.

        Returns:
            The candidates among the next `limit` rooms, and the room id to continue after
            (None when every room has been looked at).
        """
        await self._schema.ready()

        def _txn(txn: LoggingTransaction) -> tuple[list[str], str | None]:
            txn.execute(
                "SELECT room_id FROM compliance_archive_heads WHERE room_id > ? ORDER BY room_id LIMIT ?",
                (after_room, limit),
            )
            rooms = [str(r[0]) for r in txn.fetchall()]
            due: list[str] = []
            for room_id in rooms:
                txn.execute(
                    "SELECT archived_ts FROM compliance_archive WHERE room_id = ? ORDER BY id LIMIT 1",
                    (room_id,),
                )
                first = txn.fetchone()
                if first is not None and int(first[0]) < cutoff_ms:
                    due.append(room_id)
            return due, (rooms[-1] if len(rooms) == limit else None)

        return await self._api.run_db_interaction("compliance_prune_candidates", _txn)

    async def prune_batch(self, request: PruneRequest) -> PrunedBatch:
        """Prune the next batch of `request.room_id`'s old, unheld chain prefix."""
        await self._schema.ready()
        now = self._api.get_current_time_msec()
        return await self._api.run_db_interaction("compliance_prune_batch", _prune_txn, request, now)


def _retention_row(row: ChainedRow) -> RetentionRow:
    f = row.fields
    return RetentionRow(row.id, f.archived_ts, f.sender, f.state_key)


def _prune_txn(txn: LoggingTransaction, request: PruneRequest, now: int) -> PrunedBatch:
    room_id = request.room_id
    touch_holds_version_txn(txn)  # serialize with hold changes (see hold_store)
    query = txn_query(txn)
    anchor = read_anchor(query, room_id)
    rows: Sequence[ChainedRow] = read_rows_page(query, room_id, 0, _MAX_ID, request.batch_size)
    holds = holds_for(room_held_txn(txn, room_id), held_user_ids_txn(txn))
    count = prunable_prefix((_retention_row(r) for r in rows), request.cutoff_ms, holds)
    if count == 0:
        return PrunedBatch(room_id, 0, more=False)
    prefix = rows[:count]
    broken = ChainWalker.after(anchor).feed(prefix)
    if broken is not None:
        return PrunedBatch(room_id, 0, more=False, refused=broken.reason)
    last = prefix[-1]
    txn.execute("DELETE FROM compliance_archive WHERE room_id = ? AND id <= ?", (room_id, last.id))
    if txn.rowcount != count:  # the prefix was read in this transaction; anything else is a bug
        raise RuntimeError(f"prune of {room_id}: deleted {txn.rowcount} rows, expected {count}")
    pruned_total = (anchor.pruned_rows if anchor is not None else 0) + count
    txn.execute(
        "INSERT INTO compliance_archive_anchors (room_id, last_pruned_id, anchor_hash, pruned_rows,"
        " pruned_ts) VALUES (?, ?, ?, ?, ?) ON CONFLICT (room_id) DO UPDATE SET"
        " last_pruned_id = EXCLUDED.last_pruned_id, anchor_hash = EXCLUDED.anchor_hash,"
        " pruned_rows = EXCLUDED.pruned_rows, pruned_ts = EXCLUDED.pruned_ts",
        (room_id, last.id, last.chain_hash, pruned_total, now),
    )
    details = {
        "rows": count,
        "first_pruned_id": prefix[0].id,
        "last_pruned_id": last.id,
        "anchor_hash": last.chain_hash,
        "pruned_rows_total": pruned_total,
        "cutoff_ts": request.cutoff_ms,
    }
    append_audit_txn(txn, AuditEntry(request.actor, PRUNE_ACTION, room_id, request.reason, details), now)
    return PrunedBatch(
        room_id,
        count,
        more=count == len(rows) == request.batch_size,
        last_pruned_id=last.id,
        anchor_hash=last.chain_hash,
    )
