"""Pruning by dropping whole month partitions of the archive (PostgreSQL; core/partitions.py).

An expired partition (every row in it archived before the prune cutoff) is dropped when:
1. no active legal hold covers any of its rows (its room, its sender, or the user a membership
   event is about);
2. each room's rows in it are the start of what is left of that room's chain, i.e. they go on
   from the room's anchor with nothing of the room kept elsewhere before them;
3. each room's chain holds, link by link, from its anchor to its last row in the partition, so
   a broken chain is never dropped into a clean-looking one.

`check` walks the partition in (room, id) order, a page per read transaction, while the archive
stays in use; rows of an expired month no longer change (new rows are stamped now). A link that
does not follow is either a row of the room kept elsewhere before it (2 fails: the partition is
simply not droppable yet) or a broken chain (3 fails: the room is refused, as the row-by-row
pruner refuses it). `drop` then, in one transaction, re-reads the holds and each room's row
count, last id, last hash and anchor, and finds them as the walk did; moves every room's
anchor to its last row in the partition; writes an `archive.prune` audit entry per room and an
`archive.prune_partition` entry for the partition; and detaches and drops it. DETACH needs the
archive's ACCESS EXCLUSIVE lock: each of Synapse's (up to five) attempts at the transaction waits
for it at most `LOCK_TIMEOUT_MS` (a long export holds a lock that conflicts; the archiver's
inserts queue behind the wait), and a partition whose lock was not granted is left for the next
pass.
"""

from collections.abc import Iterable, Sequence

import attrs
from synapse.module_api import LoggingTransaction, ModuleApi

from synapse_compliance.core.archive_chain import (
    BROKEN_LINK,
    ChainAnchor,
    ChainBreak,
    ChainedRow,
    ChainWalker,
)
from synapse_compliance.core.partitions import BEFORE, Partition, is_month_name
from synapse_compliance.storage.archive_partitions import partitions_if_partitioned_txn
from synapse_compliance.storage.archive_rows import ROW_COLUMNS, chained_row, read_anchors, txn_query
from synapse_compliance.storage.audit_store import AuditEntry, audit_statement
from synapse_compliance.storage.hold_store import (
    held_room_ids_txn,
    held_user_ids_txn,
    touch_holds_version_txn,
)
from synapse_compliance.storage.prune_store import PRUNE_ACTION
from synapse_compliance.storage.schema import SchemaManager

PARTITION_ACTION = "archive.prune_partition"
LOCK_TIMEOUT_MS = 1_000
WALK_PAGE = 2_000  # rows read per walk transaction

# Why a partition was kept (`PartitionOutcome.kept`).
HELD = "held"  # a hold covers a row of it
NOT_PREFIX = "not_prefix"  # a room has rows kept before its rows in it
BROKEN = "broken_chain"  # a room's chain is broken in it (that room is refused)
CHANGED = "changed"  # it changed between the walk and the drop
LOCKED = "lock_not_granted"  # the archive's lock was not granted in time


@attrs.frozen
class RoomSpan:
    """One room's rows in a partition, as the walk found them."""

    room_id: str
    start: ChainAnchor | None  # the room's anchor when the walk began (None: never pruned)
    rows: int
    first_id: int
    last_id: int
    last_hash: str


@attrs.frozen
class PartitionOutcome:
    """What became of one expired partition.

    Attributes:
        dropped: the partition is gone and its rooms' anchors moved.
        spans: its rooms' rows (when dropped, what went).
        kept: why it was kept (None when dropped).
        refused: (room id, reason) of a room whose chain is broken in it.
    """

    partition: Partition
    dropped: bool
    spans: tuple[RoomSpan, ...] = ()
    kept: str | None = None
    refused: tuple[tuple[str, str], ...] = ()


@attrs.frozen
class DropRequest:
    """Drop `partition` (expired at `cutoff_ms`), audited under `actor` and `reason`."""

    partition: Partition
    cutoff_ms: int
    actor: str
    reason: str


class _Walk:
    """The walk over one partition's rows: one chain walker per room, one room at a time."""

    def __init__(self, anchors: dict[str, ChainAnchor]) -> None:
        self._anchors = anchors
        self.spans: list[RoomSpan] = []
        self._room: str | None = None
        self._walker = ChainWalker()
        self._first = 0
        self._last: ChainedRow | None = None

    def feed(self, rows: Iterable[ChainedRow]) -> tuple[ChainedRow, ChainBreak] | None:
        """Walk on; return the first row that does not follow its room's chain, and why."""
        for row in rows:
            if row.fields.room_id != self._room:
                self._close()
                self._room = row.fields.room_id
                self._walker = ChainWalker.after(self._anchors.get(self._room))
                self._first = row.id
            found = self._walker.feed((row,))
            if found is not None:
                return row, found
            self._last = row
        return None

    def finish(self) -> tuple[RoomSpan, ...]:
        """The rooms' spans once every row was fed."""
        self._close()
        return tuple(self.spans)

    def _close(self) -> None:
        if self._room is None or self._last is None:
            return
        self.spans.append(
            RoomSpan(
                self._room,
                self._anchors.get(self._room),
                self._walker.rows,
                self._first,
                self._last.id,
                self._last.chain_hash,
            )
        )
        self._room, self._last = None, None


class PartitionPruneStore:
    """Lists the archive's expired partitions and drops those that may go."""

    def __init__(self, api: ModuleApi, schema: SchemaManager) -> None:
        self._api = api
        self._schema = schema

    async def partitions(self) -> list[Partition] | None:
        """The archive's partitions, oldest first; None when it is one table (SQLite)."""
        await self._schema.ready()
        return await self._api.run_db_interaction(
            "compliance_archive_partitions", partitions_if_partitioned_txn
        )

    async def rooms_in(self, partition: Partition) -> list[str]:
        """The rooms with rows in `partition`."""
        name = _checked_name(partition)

        def _txn(txn: LoggingTransaction) -> list[str]:
            txn.execute(f"SELECT DISTINCT room_id FROM {name} ORDER BY room_id")  # noqa: S608 (checked name)
            return [str(r[0]) for r in txn.fetchall()]

        return await self._api.run_db_interaction("compliance_partition_rooms", _txn)

    async def check(self, partition: Partition) -> PartitionOutcome:
        """Whether `partition` may be dropped, walking its rows (not dropped: `dropped` is False)."""
        name = _checked_name(partition)
        if await self._api.run_db_interaction("compliance_partition_held", _held_txn, name):
            return PartitionOutcome(partition, False, kept=HELD)
        anchors = await self._api.run_db_interaction(
            "compliance_partition_anchors", lambda txn: read_anchors(txn_query(txn))
        )
        walk = _Walk(anchors)
        after = ("", 0)
        while True:
            page = await self._api.run_db_interaction("compliance_partition_walk", _page_txn, name, after)
            odd = walk.feed(page)
            if odd is not None:
                return await self._odd_row(partition, *odd)
            if len(page) < WALK_PAGE:
                return PartitionOutcome(partition, False, walk.finish())
            after = (page[-1].fields.room_id, page[-1].id)

    async def _odd_row(self, partition: Partition, row: ChainedRow, found: ChainBreak) -> PartitionOutcome:
        """A row that does not follow: its room has rows kept before it elsewhere, or is broken."""
        room_id = row.fields.room_id
        if found.reason != BROKEN_LINK:  # the row itself was altered
            return PartitionOutcome(partition, False, kept=BROKEN, refused=((room_id, found.reason),))

        def _txn(txn: LoggingTransaction) -> bool:
            txn.execute(
                "SELECT 1 FROM compliance_archive WHERE room_id = ? AND id < ?"
                " AND tableoid <> to_regclass(?) LIMIT 1",
                (room_id, row.id, partition.name),
            )
            return txn.fetchone() is not None

        if await self._api.run_db_interaction("compliance_partition_earlier_rows", _txn):
            return PartitionOutcome(partition, False, kept=NOT_PREFIX)
        return PartitionOutcome(partition, False, kept=BROKEN, refused=((room_id, found.reason),))

    async def drop(self, request: DropRequest, spans: Sequence[RoomSpan]) -> PartitionOutcome:
        """Drop the partition `check` found droppable with `spans`, if nothing changed since."""
        now = self._api.get_current_time_msec()
        try:
            kept = await self._api.run_db_interaction(
                "compliance_partition_drop", _drop_txn, request, spans, now
            )
        except Exception as e:
            if getattr(e, "pgcode", None) != "55P03":  # lock_not_available
                raise
            kept = LOCKED
        if kept is not None:
            return PartitionOutcome(request.partition, False, tuple(spans), kept=kept)
        return PartitionOutcome(request.partition, True, tuple(spans))


def _checked_name(partition: Partition) -> str:
    """The partition's name, known to be one of ours (it goes into SQL as an identifier)."""
    if partition.name != BEFORE and not is_month_name(partition.name):
        raise ValueError(f"not an archive partition: {partition.name!r}")
    return partition.name


def _page_txn(txn: LoggingTransaction, name: str, after: tuple[str, int]) -> list[ChainedRow]:
    txn.execute(
        f"SELECT {ROW_COLUMNS} FROM {name} WHERE (room_id, id) > (?, ?)"  # noqa: S608 (checked name)
        " ORDER BY room_id, id LIMIT ?",
        (*after, WALK_PAGE),
    )
    return [chained_row(r) for r in txn.fetchall()]


def _held_txn(txn: LoggingTransaction, name: str) -> bool:
    """Whether an active hold covers any row of partition `name`."""
    rooms, users = sorted(held_room_ids_txn(txn)), sorted(held_user_ids_txn(txn))
    if rooms:
        txn.execute(f"SELECT 1 FROM {name} WHERE room_id = ANY(?) LIMIT 1", (rooms,))  # noqa: S608 (checked name)
        if txn.fetchone() is not None:
            return True
    if users:
        txn.execute(
            f"SELECT 1 FROM {name} WHERE sender = ANY(?) OR state_key = ANY(?) LIMIT 1",  # noqa: S608 (checked name)
            (users, users),
        )
        if txn.fetchone() is not None:
            return True
    return False


def _unchanged_txn(txn: LoggingTransaction, name: str, spans: Sequence[RoomSpan]) -> bool:
    """Whether the partition's rooms, row counts, last rows and anchors are as the walk found them."""
    txn.execute(f"SELECT room_id, COUNT(*), MIN(id), MAX(id) FROM {name} GROUP BY room_id")  # noqa: S608 (checked name)
    now = {str(r[0]): (int(r[1]), int(r[2]), int(r[3])) for r in txn.fetchall()}
    if now != {s.room_id: (s.rows, s.first_id, s.last_id) for s in spans}:
        return False
    if spans:
        txn.execute(f"SELECT id, chain_hash FROM {name} WHERE id = ANY(?)", ([s.last_id for s in spans],))  # noqa: S608 (checked name)
        hashes = {int(r[0]): str(r[1]) for r in txn.fetchall()}
        if any(hashes.get(s.last_id) != s.last_hash for s in spans):
            return False
    anchors = read_anchors(txn_query(txn))
    return all(anchors.get(s.room_id) == s.start for s in spans)


def _drop_txn(
    txn: LoggingTransaction, request: DropRequest, spans: Sequence[RoomSpan], now: int
) -> str | None:
    """Move the anchors, audit, detach and drop; return why not (nothing written) or None."""
    name = _checked_name(request.partition)
    txn.execute(f"SET LOCAL lock_timeout = {LOCK_TIMEOUT_MS:d}")
    touch_holds_version_txn(txn)  # serialize with hold changes (see hold_store)
    if _held_txn(txn, name):
        return HELD
    if not _unchanged_txn(txn, name, spans):
        return CHANGED
    anchors: list[tuple[object, ...]] = []
    audits: list[tuple[object, ...]] = []
    audit_sql = ""
    for s in spans:
        total = (s.start.pruned_rows if s.start is not None else 0) + s.rows
        anchors.append((s.room_id, s.last_id, s.last_hash, total, now))
        details = {
            "rows": s.rows,
            "first_pruned_id": s.first_id,
            "last_pruned_id": s.last_id,
            "anchor_hash": s.last_hash,
            "pruned_rows_total": total,
            "cutoff_ts": request.cutoff_ms,
            "partition": name,
        }
        entry = AuditEntry(request.actor, PRUNE_ACTION, s.room_id, request.reason, details)
        audit_sql, args = audit_statement(entry, now)
        audits.append(args)
    txn.execute_batch(
        "INSERT INTO compliance_archive_anchors (room_id, last_pruned_id, anchor_hash, pruned_rows,"
        " pruned_ts) VALUES (?, ?, ?, ?, ?) ON CONFLICT (room_id) DO UPDATE SET"
        " last_pruned_id = EXCLUDED.last_pruned_id, anchor_hash = EXCLUDED.anchor_hash,"
        " pruned_rows = EXCLUDED.pruned_rows, pruned_ts = EXCLUDED.pruned_ts",
        anchors,
    )
    partition_details = {
        "rows": sum(s.rows for s in spans),
        "rooms": len(spans),
        "from_ts": request.partition.lower,
        "to_ts": request.partition.upper,
        "cutoff_ts": request.cutoff_ms,
    }
    entry = AuditEntry(request.actor, PARTITION_ACTION, name, request.reason, partition_details)
    audit_sql, args = audit_statement(entry, now)
    txn.execute_batch(audit_sql, [*audits, args])
    txn.execute(f"ALTER TABLE compliance_archive DETACH PARTITION {name}")
    txn.execute(f"DROP TABLE {name}")
    return None
