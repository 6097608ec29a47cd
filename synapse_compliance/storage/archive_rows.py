"""Reading archive rows and chain heads over any connection, and the offline chain check.

Imports nothing from Synapse, so `synapse-compliance verify` can use it with a plain DB-API
connection; `ArchiveStore` uses the same queries inside its transactions. A `Query` runs one
statement written with `?` placeholders and returns its rows.
"""

from collections.abc import Callable, Generator, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from synapse_compliance.core.archive_chain import (
    GENESIS,
    ChainAnchor,
    ChainBreak,
    ChainedFields,
    ChainedRow,
    ChainHead,
    ChainWalker,
    VerifyReport,
)

VERIFY_PAGE = 1_000  # rows read per query while verifying


@attrs.frozen
class StoredHead:
    """A room's chain head, the id of its last row, and its anchor if it was ever pruned."""

    head: ChainHead
    last_id: int
    anchor: ChainAnchor | None = None


Query = Callable[[str, tuple[object, ...]], list[tuple[Any, ...]]]

if TYPE_CHECKING:  # Synapse-free at run time (the CLI imports this module)
    from synapse.module_api import LoggingTransaction


def txn_query(txn: "LoggingTransaction") -> Query:
    """A `Query` running inside one of Synapse's transactions."""

    def query(sql: str, args: tuple[object, ...]) -> list[tuple[Any, ...]]:
        txn.execute(sql, args)
        return [tuple(r) for r in txn.fetchall()]

    return query


def read_heads(query: Query, room_id: str | None) -> list[StoredHead]:
    """Chain heads of every room (or of one), plus rooms with rows but no head (rows 0).

    `query` runs one statement and returns its rows: a transaction here, a plain connection
    in the offline `synapse-compliance verify`.
    """
    where, args = ("WHERE room_id = ?", (room_id,)) if room_id is not None else ("", ())
    heads = {
        r[0]: StoredHead(ChainHead(r[0], int(r[1]), r[2]), int(r[3]))
        for r in query(
            f"SELECT room_id, rows_count, chain_hash, last_id FROM compliance_archive_heads {where}",  # noqa: S608 (fixed clause)
            args,
        )
    }
    # A room whose head row was deleted still has rows: report it with an empty head.
    for r in query(f"SELECT room_id, MAX(id) FROM compliance_archive {where} GROUP BY room_id", args):  # noqa: S608 (fixed clause)
        if r[0] not in heads:
            heads[r[0]] = StoredHead(ChainHead(r[0], 0, GENESIS), int(r[1]))
    # Pruned rooms start their walk at the anchor (a fully pruned room may have no rows left).
    for room, anchor in read_anchors(query, room_id).items():
        stored = heads.get(room) or StoredHead(ChainHead(room, 0, GENESIS), anchor.last_pruned_id)
        heads[room] = attrs.evolve(stored, anchor=anchor)
    return [heads[k] for k in sorted(heads)]


def read_anchors(query: Query, room_id: str | None = None) -> dict[str, ChainAnchor]:
    """The anchors of pruned rooms (or of one room), by room id; see `core.retention`."""
    where, args = ("WHERE room_id = ?", (room_id,)) if room_id is not None else ("", ())
    return {
        r[0]: ChainAnchor(r[0], int(r[1]), r[2], int(r[3]))
        for r in query(
            "SELECT room_id, last_pruned_id, anchor_hash, pruned_rows"  # noqa: S608 (fixed clause)
            f" FROM compliance_archive_anchors {where}",
            args,
        )
    }


def read_anchor(query: Query, room_id: str) -> ChainAnchor | None:
    """One room's anchor, or None when its chain was never pruned."""
    return read_anchors(query, room_id).get(room_id)


def anchor_lookup(query: Query) -> Callable[[str], ChainAnchor | None]:
    """Every anchor, read once now; answers a room's anchor (None: never pruned)."""
    return read_anchors(query).get


def read_rows_page(query: Query, room_id: str, after_id: int, upto_id: int, limit: int) -> list[ChainedRow]:
    """A room's rows with `after_id < id <= upto_id`, in id order, at most `limit`."""
    return [chained_row(r) for r in query(_ROWS_PAGE_SQL, (room_id, after_id, upto_id, limit))]


# The columns `chained_row` reads, in its order.
ROW_COLUMNS = (
    "id, room_id, event_id, stream_ordering, sender, type, state_key, origin_server_ts,"
    " archived_ts, event_json, prev_hash, chain_hash"
)
_ROWS_PAGE_SQL = (
    f"SELECT {ROW_COLUMNS} FROM compliance_archive"  # noqa: S608 (constant)
    " WHERE room_id = ? AND id > ? AND id <= ? ORDER BY id LIMIT ?"
)


def chained_row(r: Sequence[Any]) -> ChainedRow:
    """A row selected as `ROW_COLUMNS`."""
    return ChainedRow(
        id=int(r[0]),
        fields=ChainedFields(
            room_id=r[1],
            event_id=r[2],
            stream_ordering=int(r[3]),
            sender=r[4],
            type=r[5],
            state_key=r[6],
            origin_server_ts=int(r[7]),
            archived_ts=int(r[8]),
            event_json=r[9],
        ),
        prev_hash=r[10],
        chain_hash=r[11],
    )


@attrs.frozen
class PageRequest:
    """What `verify_steps` needs read next: a room's rows with `after_id < id <= upto_id`."""

    room_id: str
    after_id: int
    upto_id: int
    limit: int


@attrs.frozen
class AnchorRequest:
    """What `verify_steps` needs read next: a room's anchor as it is now (None: never pruned)."""

    room_id: str


VerifySteps = Generator[PageRequest | AnchorRequest, Any, VerifyReport]
# A pruned room whose walk broke is walked again from its new anchor at most this often.
_REWALKS = 3


def verify_steps(
    heads: Sequence[StoredHead], progress: Callable[[int, int], None] | None = None
) -> VerifySteps:
    """The archive check without I/O: yields what it needs read, is sent it, returns the report.

    Each room is read in pages up to its recorded head, so rows archived meanwhile are not
    mistaken for a break. `progress` gets (rooms checked, rows checked) after each page. The
    HTTP endpoint (async, through Synapse's pool) and the CLI (a plain connection) drive it:
    a `PageRequest` is answered with the rows, an `AnchorRequest` with the room's anchor.

    A prune that commits while this runs moves a room's anchor after its head was read, and
    its first remaining row then links to an anchor this walk does not know. So when a room's
    walk breaks, its anchor is read again, and if it moved, the room is walked again from there.
    """
    rooms = rows = 0
    for head in heads:
        rooms += 1
        stored = head
        for _ in range(_REWALKS + 1):
            walked, found = yield from _walk_room(stored, rooms, rows, progress)
            if found is None:
                break
            anchor: ChainAnchor | None = yield AnchorRequest(stored.head.room_id)
            if anchor == stored.anchor:
                break
            stored = attrs.evolve(stored, anchor=anchor)
        rows += walked
        if found is not None:
            return VerifyReport(rooms, rows, found)
    return VerifyReport(rooms, rows, None)


def _walk_room(
    stored: StoredHead, rooms: int, rows: int, progress: Callable[[int, int], None] | None
) -> Generator[PageRequest, list[ChainedRow], tuple[int, ChainBreak | None]]:
    """Walk one room's chain from its anchor to its head: (rows checked, first break)."""
    walker = ChainWalker.after(stored.anchor)  # a pruned chain resumes at its anchor
    after = 0
    while True:
        page = yield PageRequest(stored.head.room_id, after, stored.last_id, VERIFY_PAGE)
        found = walker.feed(page)
        if found is not None:
            return walker.rows, found
        if progress is not None:
            progress(rooms, rows + walker.rows)
        if len(page) < VERIFY_PAGE:
            break
        after = page[-1].id
    return walker.rows, walker.finish(stored.head)


def _answer(query: Query, request: PageRequest | AnchorRequest) -> list[ChainedRow] | ChainAnchor | None:
    if isinstance(request, AnchorRequest):
        return read_anchor(query, request.room_id)
    return read_rows_page(query, request.room_id, request.after_id, request.upto_id, request.limit)


def verify_offline(query: Query, room_id: str | None, progress: Callable[[int, int], None]) -> VerifyReport:
    """`verify_archive` for the CLI: the same check over a plain database connection.

    Args:
        query: runs one statement (`?` placeholders) and returns its rows.
        room_id: check only this room.
        progress: called with (rooms checked, rows checked) after each page.
    """
    steps = verify_steps(read_heads(query, room_id), progress)
    try:
        request = next(steps)
        while True:
            request = steps.send(_answer(query, request))
    except StopIteration as done:
        report: VerifyReport = done.value
        return report
