"""Tamper evidence for the archive: one SHA-256 hash chain per room (DESIGN §4.4).

Theory of operation: every archived row commits to its own content and to the row before it in
the same room. `chain_hash = SHA-256(prev_hash ‖ canonical JSON of the row's fields)`, where
`prev_hash` is the previous row's `chain_hash` (rows of a room in archive order, i.e. by archive
id) and the first row of a room chains from `GENESIS`. Canonical JSON is UTF-8 JSON with sorted
keys, no whitespace and non-ASCII kept as is, so the bytes depend only on the values.

What is hashed: the row's identity and content (`ChainedFields`), never annotations written
later (`redacted_by` is set when a redaction arrives; the redaction itself is a chained row).

`verify_chain` walks one room's rows in order and reports the first link that does not hold:
- `hash_mismatch`: a row's fields no longer give its `chain_hash` (the row was altered, or its
  stored hash was);
- `broken_link`: a row's `prev_hash` is not its predecessor's `chain_hash` — a row in the middle
  was deleted (or rows were reordered);
- `missing_row`: the room's recorded head (last hash and row count) is not where the rows end —
  rows at the end were deleted;
- `missing_head`: a room has rows but no recorded head (the head was deleted).

Pruning (core/retention.py) deletes a prefix of a room's chain and records an anchor: the hash
of the last pruned row and how many rows were pruned. A walk then starts from the anchor instead
of `GENESIS` (the first remaining row's `prev_hash` must be the anchor hash), and the head's row
count, which counts every row ever appended, must equal pruned plus remaining rows.

Pure: no I/O, no clock.
"""

import hashlib
import json
from collections.abc import Iterable, Sequence

import attrs

# The `prev_hash` of every room's first row.
GENESIS = "0" * 64

HASH_MISMATCH = "hash_mismatch"
BROKEN_LINK = "broken_link"
MISSING_ROW = "missing_row"
MISSING_HEAD = "missing_head"


@attrs.frozen
class ChainedFields:
    """The fields of an archive row that its chain hash commits to."""

    room_id: str
    event_id: str
    stream_ordering: int
    sender: str
    type: str
    state_key: str | None
    origin_server_ts: int
    archived_ts: int
    event_json: str

    def canonical(self) -> bytes:
        """The canonical JSON encoding of these fields (every field, keys sorted)."""
        # The same object as `attrs.asdict(self)` (tests/unit pin that), built without its
        # generic recursion: this runs once per archived row.
        fields = {
            "archived_ts": self.archived_ts,
            "event_id": self.event_id,
            "event_json": self.event_json,
            "origin_server_ts": self.origin_server_ts,
            "room_id": self.room_id,
            "sender": self.sender,
            "state_key": self.state_key,
            "stream_ordering": self.stream_ordering,
            "type": self.type,
        }
        return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@attrs.frozen
class ChainedRow:
    """An archive row as stored: its archive id, fields and both hashes."""

    id: int
    fields: ChainedFields
    prev_hash: str
    chain_hash: str


@attrs.frozen
class ChainHead:
    """Where a room's chain ends, as recorded when rows were appended."""

    room_id: str
    rows: int
    chain_hash: str


@attrs.frozen
class ChainBreak:
    """The first link of a room's chain that does not hold.

    Attributes:
        room_id: the room.
        event_id: the row where the break shows (None when rows at the end are missing).
        stream_ordering: that row's stream ordering (None as for `event_id`).
        reason: `hash_mismatch`, `broken_link`, `missing_row` or `missing_head`.
    """

    room_id: str
    event_id: str | None
    stream_ordering: int | None
    reason: str


@attrs.frozen
class VerifyReport:
    """The outcome of recomputing the chains of one or more rooms."""

    rooms_checked: int
    rows_checked: int
    first_break: ChainBreak | None

    @property
    def ok(self) -> bool:
        """True when every chain holds."""
        return self.first_break is None


def chain_hash(prev_hash: str, fields: ChainedFields) -> str:
    """The hash of a row with `fields` appended after a row whose hash is `prev_hash`.

    Raises:
        ValueError: `prev_hash` is not 64 hex digits (a programmer error).
    """
    if len(prev_hash) != len(GENESIS):
        raise ValueError(f"a chain hash is 64 hex digits; got {len(prev_hash)} characters")
    return hashlib.sha256(bytes.fromhex(prev_hash) + fields.canonical()).hexdigest()


def append(prev_hash: str, fields: ChainedFields, row_id: int = 0) -> ChainedRow:
    """The row to store for `fields` after the chain head `prev_hash`."""
    return ChainedRow(row_id, fields, prev_hash, chain_hash(prev_hash, fields))


def chain_rows(fields: Iterable[ChainedFields], head: str = GENESIS) -> list[ChainedRow]:
    """Rows for `fields` appended in order after `head` (ids 1, 2, … for tests)."""
    rows: list[ChainedRow] = []
    for n, f in enumerate(fields, start=1):
        rows.append(append(rows[-1].chain_hash if rows else head, f, n))
    return rows


@attrs.frozen
class ChainAnchor:
    """Where a pruned chain resumes: its last pruned row's id and hash, and how many were pruned."""

    room_id: str
    last_pruned_id: int
    anchor_hash: str
    pruned_rows: int


class ChainWalker:
    """Checks one room's rows page by page, in archive-id order, without holding them all.

    `start_hash` and `start_rows` say where the walk starts: `GENESIS` and 0 for a whole chain,
    an anchor's hash and pruned-row count for a pruned one (`ChainWalker.after(anchor)`).
    """

    def __init__(self, start_hash: str = GENESIS, start_rows: int = 0) -> None:
        self.expected_prev = start_hash
        self.start_rows = start_rows  # rows before the start (pruned); `rows` counts checked ones
        self.rows = 0

    @classmethod
    def after(cls, anchor: ChainAnchor | None) -> "ChainWalker":
        """A walker starting at `anchor` (at `GENESIS` when the chain was never pruned)."""
        if anchor is None:
            return cls()
        return cls(anchor.anchor_hash, anchor.pruned_rows)

    def feed(self, rows: Iterable[ChainedRow]) -> ChainBreak | None:
        """Check the next rows; return the first break among them, or None."""
        for row in rows:
            f = row.fields
            if row.prev_hash != self.expected_prev:
                return ChainBreak(f.room_id, f.event_id, f.stream_ordering, BROKEN_LINK)
            if chain_hash(row.prev_hash, f) != row.chain_hash:
                return ChainBreak(f.room_id, f.event_id, f.stream_ordering, HASH_MISMATCH)
            self.expected_prev = row.chain_hash
            self.rows += 1
        return None

    def finish(self, head: ChainHead) -> ChainBreak | None:
        """After the last row: a break when the rows end short of the recorded head."""
        if head.rows == 0 and (self.rows > 0 or self.start_rows > 0):
            return ChainBreak(head.room_id, None, None, MISSING_HEAD)
        if head.rows != self.start_rows + self.rows or head.chain_hash != self.expected_prev:
            return ChainBreak(head.room_id, None, None, MISSING_ROW)
        return None


def verify_chain(rows: Sequence[ChainedRow], head: ChainHead | None = None) -> ChainBreak | None:
    """The first broken link of one room's chain, or None when it holds.

    Args:
        rows: every row of one room, in archive-id order.
        head: the room's recorded head; when given, rows missing at the end are detected too.

    Returns:
        The first break, or None.
    """
    walker = ChainWalker()
    found = walker.feed(rows)
    if found is None and head is not None:
        found = walker.finish(head)
    return found
