"""The retention archive's tables, and reading Synapse's persisted events for it.

Reading Synapse's own `events` and `event_json` tables is the one way to get events as Synapse
stored them (the ModuleApi has no event stream; SYNAPSE_FACTS §11). Their columns used here were
checked against Synapse 1.163.2; the e2e tests fail loudly if an upgrade changes them.

`append` writes a batch of rows, the chain heads of their rooms and the cursor in one
transaction, after checking that the cursor is still where the batch was read from. A crash or a
retry therefore never duplicates or skips a row, and `event_id` is unique besides (within each
month partition on PostgreSQL, storage/archive_partitions.py, whose keeper makes sure the
batch's month has one).
"""

import json
from collections.abc import Iterable, Sequence

import attrs
from synapse.module_api import LoggingTransaction, ModuleApi

from synapse_compliance._synapse_private import is_postgres
from synapse_compliance.core.archive_chain import (
    GENESIS,
    ChainAnchor,
    ChainedFields,
    ChainedRow,
    append,
)
from synapse_compliance.core.partitions import Partition
from synapse_compliance.storage.archive_partitions import (
    SEQUENCE,
    PartitionKeeper,
    partitions_if_partitioned_txn,
)
from synapse_compliance.storage.archive_rows import (
    StoredHead,
    read_anchor,
    read_heads,
    read_rows_page,
    txn_query,
)
from synapse_compliance.storage.schema import SchemaManager

FORWARD = "forward"
BACKWARD = "backward"
REDACTION = "m.room.redaction"
_IN_CHUNK = 500  # values per `IN (...)` list: well below SQLite's bound-parameter limit


class CursorMoved(Exception):
    """The cursor is no longer where the batch was read from (another pass got there first)."""


@attrs.frozen
class StoredEvent:
    """An event as Synapse persisted it."""

    stream_ordering: int
    event_id: str
    room_id: str
    sender: str
    type: str
    state_key: str | None
    origin_server_ts: int
    event_json: str

    @property
    def redacts(self) -> str | None:
        """The event this redaction takes down (top level before room v11, in content after)."""
        if self.type != REDACTION:
            return None
        try:
            event = json.loads(self.event_json)
        except ValueError:
            return None
        if not isinstance(event, dict):
            return None
        content = event.get("content")
        target = event.get("redacts")
        if not isinstance(target, str) and isinstance(content, dict):
            target = content.get("redacts")
        return target if isinstance(target, str) else None


@attrs.frozen
class Batch:
    """Events to archive, and the cursor move that covers them."""

    cursor: str
    expected: int
    position: int
    events: Sequence[StoredEvent]
    archived_ts: int


@attrs.frozen
class ArchiveCounts:
    """Figures for `GET admin/status`."""

    rows: int
    cursor: int
    backfill_cursor: int
    oldest_archived_ts: int | None
    pruned_rows: int = 0  # rows deleted past retention.max_days (`rows` counts those left)


class ArchiveStore:
    """Reads Synapse's events; appends, reads and counts archive rows."""

    def __init__(self, api: ModuleApi, schema: SchemaManager) -> None:
        self._api = api
        self._schema = schema
        self._partitions = PartitionKeeper()

    async def cursor(self, name: str = FORWARD) -> int:
        """Where the archiver's cursor `name` stands."""
        await self._schema.ready()
        return await self._api.run_db_interaction("compliance_archive_cursor", _cursor_txn, name)

    async def read_events(self, after: int, upto: int, limit: int) -> list[StoredEvent]:
        """Synapse's events with `after < stream_ordering <= upto`, in stream order, at most `limit`."""
        where = "e.stream_ordering > ? AND e.stream_ordering <= ? ORDER BY e.stream_ordering"
        return await self._api.run_db_interaction(
            "compliance_archive_read_events", _read_events_txn, where, (after, upto, limit)
        )

    async def read_backfilled(self, before: int, downto: int, limit: int) -> list[StoredEvent]:
        """Backfilled events with `downto <= stream_ordering < before` (negative), newest first."""
        where = "e.stream_ordering < ? AND e.stream_ordering >= ? ORDER BY e.stream_ordering DESC"
        return await self._api.run_db_interaction(
            "compliance_archive_read_backfilled", _read_events_txn, where, (before, downto, limit)
        )

    async def append(
        self, name: str, expected: int, position: int, events: Sequence[StoredEvent], archived_ts: int
    ) -> int:
        """Archive `events` and move cursor `name` from `expected` to `position`, atomically.

        Events already archived are skipped. Returns how many rows were written.

        Raises:
            CursorMoved: the cursor is not at `expected` (nothing was written).
        """
        await self._schema.ready()
        batch = Batch(name, expected, position, events, archived_ts)
        try:
            return await self._api.run_db_interaction(
                "compliance_archive_append", _append_txn, batch, self._partitions
            )
        except Exception:
            self._partitions.forget()  # e.g. the pruner dropped a partition it remembered
            raise

    async def counts(self) -> ArchiveCounts:
        """Rows archived, both cursors and the oldest row's archive time."""
        await self._schema.ready()

        def _txn(txn: LoggingTransaction) -> ArchiveCounts:
            txn.execute("SELECT COALESCE(SUM(rows_count), 0) FROM compliance_archive_heads")
            row = txn.fetchone()
            rows = int(row[0]) if row is not None else 0
            # Heads count every row ever appended; pruned ones are gone (storage/prune_store.py).
            txn.execute("SELECT COALESCE(SUM(pruned_rows), 0) FROM compliance_archive_anchors")
            pruned_row = txn.fetchone()
            pruned = int(pruned_row[0]) if pruned_row is not None else 0
            rows -= pruned
            txn.execute("SELECT archived_ts FROM compliance_archive ORDER BY id LIMIT 1")
            oldest = txn.fetchone()
            return ArchiveCounts(
                rows,
                _cursor_txn(txn, FORWARD),
                _cursor_txn(txn, BACKWARD),
                int(oldest[0]) if oldest else None,
                pruned,
            )

        return await self._api.run_db_interaction("compliance_archive_counts", _txn)

    async def partitions(self) -> list[Partition] | None:
        """The archive's month partitions, oldest first (None when it is one table: SQLite)."""
        await self._schema.ready()
        return await self._api.run_db_interaction(
            "compliance_archive_partitions", partitions_if_partitioned_txn
        )

    async def heads(self, room_id: str | None = None) -> list[StoredHead]:
        """Chain heads of every room (or of one), plus rooms with rows but no head (rows 0)."""
        await self._schema.ready()

        def _txn(txn: LoggingTransaction) -> list[StoredHead]:
            return read_heads(txn_query(txn), room_id)

        return await self._api.run_db_interaction("compliance_archive_heads", _txn)

    async def anchor(self, room_id: str) -> ChainAnchor | None:
        """A room's anchor as it is now (None: its chain was never pruned)."""

        def _txn(txn: LoggingTransaction) -> ChainAnchor | None:
            return read_anchor(txn_query(txn), room_id)

        return await self._api.run_db_interaction("compliance_archive_anchor", _txn)

    async def rows_page(self, room_id: str, after_id: int, upto_id: int, limit: int) -> list[ChainedRow]:
        """A room's rows with `after_id < id <= upto_id`, in id order, at most `limit`."""

        def _txn(txn: LoggingTransaction) -> list[ChainedRow]:
            return read_rows_page(txn_query(txn), room_id, after_id, upto_id, limit)

        return await self._api.run_db_interaction("compliance_archive_rows_page", _txn)


def _read_events_txn(txn: LoggingTransaction, where: str, args: tuple[int, int, int]) -> list[StoredEvent]:
    txn.execute(
        "SELECT e.stream_ordering, e.event_id, e.room_id, e.sender, e.type, e.state_key,"  # noqa: S608 (fixed clauses)
        " COALESCE(e.origin_server_ts, 0), j.json"
        " FROM events AS e JOIN event_json AS j ON j.event_id = e.event_id"
        f" WHERE {where} LIMIT ?",
        args,
    )
    return [
        StoredEvent(int(r[0]), r[1], r[2], r[3], r[4], r[5], int(r[6]), str(r[7])) for r in txn.fetchall()
    ]


def _cursor_txn(txn: LoggingTransaction, name: str) -> int:
    txn.execute("SELECT position FROM compliance_archive_cursor WHERE name = ?", (name,))
    row = txn.fetchone()
    return int(row[0]) if row is not None else 0


def _chunks(values: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(values), _IN_CHUNK):
        yield values[start : start + _IN_CHUNK]


def _placeholders(values: Sequence[str]) -> str:
    return ", ".join("?" for _ in values)


def _already_archived(txn: LoggingTransaction, event_ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for chunk in _chunks(event_ids):
        txn.execute(
            f"SELECT event_id FROM compliance_archive WHERE event_id IN ({_placeholders(chunk)})",  # noqa: S608 (placeholders only)
            tuple(chunk),
        )
        found.update(r[0] for r in txn.fetchall())
    return found


def _load_heads(txn: LoggingTransaction, room_ids: Sequence[str]) -> dict[str, tuple[int, str]]:
    heads: dict[str, tuple[int, str]] = {}
    for chunk in _chunks(room_ids):
        txn.execute(
            f"SELECT room_id, rows_count, chain_hash FROM compliance_archive_heads"  # noqa: S608 (placeholders only)
            f" WHERE room_id IN ({_placeholders(chunk)})",
            tuple(chunk),
        )
        heads.update({r[0]: (int(r[1]), r[2]) for r in txn.fetchall()})
    return heads


def _append_txn(txn: LoggingTransaction, batch: Batch, partitions: PartitionKeeper) -> int:
    if _cursor_txn(txn, batch.cursor) != batch.expected:
        raise CursorMoved(batch.cursor)
    archived_ts = batch.archived_ts
    if batch.events:
        partitions.ensure_txn(txn, archived_ts)
    done = _already_archived(txn, [e.event_id for e in batch.events])
    new = [e for e in batch.events if e.event_id not in done]
    rooms = sorted({e.room_id for e in new})
    heads = _load_heads(txn, rooms)
    values: list[tuple[object, ...]] = []
    for event in new:
        count, prev = heads.get(event.room_id, (0, GENESIS))
        fields = ChainedFields(
            room_id=event.room_id,
            event_id=event.event_id,
            stream_ordering=event.stream_ordering,
            sender=event.sender,
            type=event.type,
            state_key=event.state_key,
            origin_server_ts=event.origin_server_ts,
            archived_ts=archived_ts,
            event_json=event.event_json,
        )
        row = append(prev, fields)
        values.append(
            (
                event.room_id,
                event.event_id,
                event.stream_ordering,
                event.sender,
                event.type,
                event.state_key,
                event.origin_server_ts,
                archived_ts,
                event.event_json,
                event.redacts,
                row.prev_hash,
                row.chain_hash,
            )
        )
        heads[event.room_id] = (count + 1, row.chain_hash)
    last_ids = _insert_rows(txn, new, values)
    _mark_redactions(txn, new)
    for room_id in rooms:
        count, chain = heads[room_id]
        txn.execute(
            "INSERT INTO compliance_archive_heads (room_id, last_id, rows_count, chain_hash)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (room_id) DO UPDATE SET last_id = EXCLUDED.last_id,"
            " rows_count = EXCLUDED.rows_count, chain_hash = EXCLUDED.chain_hash",
            (room_id, last_ids[room_id], count, chain),
        )
    txn.execute(
        "INSERT INTO compliance_archive_cursor (name, position) VALUES (?, ?)"
        " ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position",
        (batch.cursor, batch.position),
    )
    return len(new)


_COLUMNS = (
    "room_id, event_id, stream_ordering, sender, type, state_key, origin_server_ts, archived_ts,"
    " event_json, redacts, prev_hash, chain_hash"
)


def _insert_rows(
    txn: LoggingTransaction, new: Sequence[StoredEvent], values: Sequence[tuple[object, ...]]
) -> dict[str, int]:
    """Insert the rows in order, so ids follow each room's chain; return each room's last id.

    On PostgreSQL the ids are taken from the archive's sequence first and the rows go in as
    multi-row INSERTs (`execute_values`): one statement per row (`execute_batch`) was half of
    the archiver's time in benchmarks/archiver.py. SQLite numbers them as they are inserted.
    """
    if not values:
        return {}
    if is_postgres(txn):
        txn.execute(f"SELECT nextval('{SEQUENCE}') FROM generate_series(1, ?)", (len(values),))  # noqa: S608 (constant)
        ids = sorted(int(r[0]) for r in txn.fetchall())
        txn.execute_values(
            f"INSERT INTO compliance_archive (id, {_COLUMNS}) VALUES ?",  # noqa: S608 (constant)
            [(row_id, *row) for row_id, row in zip(ids, values, strict=True)],
            fetch=False,
        )
        return {event.room_id: row_id for event, row_id in zip(new, ids, strict=True)}
    txn.execute_batch(
        f"INSERT INTO compliance_archive ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608 (constant)
        values,
    )
    last_ids: dict[str, int] = {}
    for room_id in dict.fromkeys(e.room_id for e in new):
        txn.execute("SELECT MAX(id) FROM compliance_archive WHERE room_id = ?", (room_id,))
        last = txn.fetchone()
        assert last is not None and last[0] is not None  # rows of this room were just inserted
        last_ids[room_id] = int(last[0])
    return last_ids


def _mark_redactions(txn: LoggingTransaction, new: Sequence[StoredEvent]) -> None:
    """Set `redacted_by` on targets of new redactions, and on new rows already redacted."""
    marks: list[tuple[str, str | None, str]] = []
    for chunk in _chunks([e.event_id for e in new]):
        # Redactions of the new rows, archived earlier (one can arrive before its target over
        # federation) or in this batch.
        txn.execute(
            "SELECT event_id, redacts, room_id FROM compliance_archive"  # noqa: S608 (placeholders only)
            f" WHERE redacts IN ({_placeholders(chunk)}) ORDER BY id",
            tuple(chunk),
        )
        marks.extend((r[0], r[1], r[2]) for r in txn.fetchall())
    # New redactions of rows archived before this batch.
    marks.extend((e.event_id, e.redacts, e.room_id) for e in new if e.redacts is not None)
    for redaction_id, target, room_id in marks:
        # Only a redaction in the same room counts; the first one archived wins.
        txn.execute(
            "UPDATE compliance_archive SET redacted_by = ?"
            " WHERE event_id = ? AND room_id = ? AND redacted_by IS NULL",
            (redaction_id, target, room_id),
        )
