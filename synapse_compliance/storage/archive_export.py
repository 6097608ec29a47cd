"""Archive export without I/O: filters, the keyset page query, row encoding and the manifest.

Theory of operation. An export is a snapshot: `plan_export` reads the chain heads of the rooms
in scope in one statement pair, and the highest row id among them (`upto_id`) bounds every page,
so rows archived while the export runs are not in it and the heads in the manifest match the
rows. Pages are keyset reads (`id > after AND id <= upto_id ... ORDER BY id LIMIT n`) over
indexes that match the filters (`(room_id, id)`, `(sender, id)`, the primary key), so memory is
one page whatever the archive's size. `ExportState` turns pages into body bytes, hashing every
byte it hands out, and ends with the manifest: row count, filters, id range, the heads of the
exported rooms and the SHA-256 of all bytes before the manifest.

Formats (docs/api.md "Archive export"):
- `jsonl`: one JSON object a line: the row's columns, then `event`, the event JSON exactly as
  Synapse stored it, embedded as JSON (not as a string). The last line is `{"manifest": {...}}`.
- `csv` (RFC 4180, CRLF): a header, one record a row, `event` as the compact JSON text. The last
  record has `id` = `#manifest`, empty columns and the same `{"manifest": {...}}` JSON as `event`.

Imports nothing from Synapse: the HTTP endpoint runs these queries inside Synapse transactions,
`synapse-compliance export` over a plain DB-API connection (`Query`, as in `archive_rows`).
"""

import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from json.encoder import encode_basestring
from typing import Any

import attrs

from synapse_compliance.storage.archive_rows import Query, StoredHead, read_heads

FORMATS = ("jsonl", "csv")
PAGE_ROWS = 1_000  # rows per keyset page: about 1 MB of body
MANIFEST_ID = "#manifest"  # the `id` of the CSV manifest record
START_ACTION = "archive.export.start"
FINISH_ACTION = "archive.export.finish"
DEFAULT_REASON = "archive export"
MAX_ID_LENGTH = 255

# The row's columns in body order; `event` (the stored event JSON) follows them.
COLUMNS = (
    "id",
    "room_id",
    "event_id",
    "stream_ordering",
    "sender",
    "type",
    "state_key",
    "origin_server_ts",
    "archived_ts",
    "redacts",
    "redacted_by",
    "prev_hash",
    "chain_hash",
)
_SELECT = f"SELECT {', '.join(COLUMNS)}, event_json FROM compliance_archive"  # noqa: S608 (constants)
_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class FilterError(ValueError):
    """A filter value is unusable; `field` names it as the HTTP API does (`from`, `user_id`, ...)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@attrs.frozen
class ExportFilters:
    """What to export: optional room, sender and `origin_server_ts` range `[from_ts, to_ts)` in ms."""

    room_id: str | None = None
    user_id: str | None = None
    from_ts: int | None = None
    to_ts: int | None = None

    def to_json(self) -> dict[str, object]:
        """The filters as the manifest and the audit log show them."""
        return {"room_id": self.room_id, "user_id": self.user_id, "from": self.from_ts, "to": self.to_ts}


def parse_filters(
    room_id: str | None, user_id: str | None, from_ts: str | None, to_ts: str | None
) -> ExportFilters:
    """Filters from text (query arguments or command-line options); empty text counts as absent.

    Raises:
        FilterError: a malformed room or user id, a time that is not a whole number of ms, or
            `from` after `to`.
    """
    room = _optional_id(room_id, "room_id", "!", "a room id (!...)")
    user = _optional_id(user_id, "user_id", "@", "a Matrix user id (@localpart:server)")
    if user is not None and ":" not in user[1:]:
        raise FilterError("user_id", f"{user!r} is not a Matrix user id (@localpart:server)")
    start, end = _optional_ms(from_ts, "from"), _optional_ms(to_ts, "to")
    if start is not None and end is not None and start > end:
        raise FilterError("from", f"must not be after `to` ({start} > {end})")
    return ExportFilters(room, user, start, end)


def _optional_id(raw: str | None, field: str, sigil: str, what: str) -> str | None:
    if raw is None or not raw.strip():
        return None
    if not raw.startswith(sigil) or len(raw) > MAX_ID_LENGTH or len(raw) < 2:
        raise FilterError(field, f"{raw!r} is not {what}")
    return raw


def _optional_ms(raw: str | None, field: str) -> int | None:
    if raw is None or not raw.strip():
        return None
    if not raw.isdigit() or len(raw) > 16:
        raise FilterError(field, f"{raw!r} is not a time in milliseconds since the epoch")
    return int(raw)


def check_format(raw: str | None) -> str:
    """The format named by `raw` (default `jsonl`).

    Raises:
        FilterError: an unknown format (field `format`).
    """
    if raw is None or not raw.strip():
        return FORMATS[0]
    if raw not in FORMATS:
        raise FilterError("format", f"{raw!r} is not one of {', '.join(FORMATS)}")
    return raw


@attrs.frozen
class ExportPlan:
    """The snapshot an export reads: chain heads of the rooms in scope and the id bound."""

    filters: ExportFilters
    format: str
    heads: Mapping[str, StoredHead]
    upto_id: int

    def audit_details(self) -> dict[str, object]:
        """What the start entry of the audit log records."""
        return {"filters": self.filters.to_json(), "format": self.format, "upto_id": self.upto_id}

    @property
    def audit_target(self) -> str | None:
        """The audit entries' target: the room, else the user exported."""
        return self.filters.room_id or self.filters.user_id


def plan_export(query: Query, filters: ExportFilters, fmt: str) -> ExportPlan:
    """Read the snapshot an export works from (run it in one read transaction)."""
    heads = {h.head.room_id: h for h in read_heads(query, filters.room_id)}
    upto = max((h.last_id for h in heads.values()), default=0)
    return ExportPlan(filters, fmt, heads, upto)


@attrs.frozen
class EncodedPage:
    """A page of rows encoded as body bytes, and what the manifest needs to know about it."""

    data: bytes
    rows: int
    first_id: int | None
    last_id: int | None
    rooms: Mapping[str, int]  # rows per room


def read_page(query: Query, plan: ExportPlan, after_id: int, limit: int = PAGE_ROWS) -> EncodedPage:
    """The next page of matching rows with `after_id < id <= plan.upto_id`, encoded.

    Pure apart from `query`, so it may run inside a transaction that can be retried.
    """
    clauses = ["id > ?", "id <= ?"]
    args: list[object] = [after_id, plan.upto_id]
    f = plan.filters
    for clause, value in (
        ("room_id = ?", f.room_id),
        ("sender = ?", f.user_id),
        ("origin_server_ts >= ?", f.from_ts),
        ("origin_server_ts < ?", f.to_ts),
    ):
        if value is not None:
            clauses.append(clause)
            args.append(value)
    rows = query(f"{_SELECT} WHERE {' AND '.join(clauses)} ORDER BY id LIMIT ?", (*args, limit))
    return EncodedPage(
        data=encode_rows(rows, plan.format).encode("utf-8"),
        rows=len(rows),
        first_id=int(rows[0][0]) if rows else None,
        last_id=int(rows[-1][0]) if rows else None,
        rooms=Counter(r[1] for r in rows),
    )


def encode_rows(rows: Sequence[Sequence[Any]], fmt: str) -> str:
    """Rows (`COLUMNS` then `event_json`) as body text in `fmt`."""
    # Both by hand: this is the export's inner loop, and the stdlib encoders (`json.dumps` of a
    # dict, `csv.writer`) cost 3-5x more CPU for the same bytes (tests/unit compare them).
    if fmt == "csv":
        return "".join(f"{','.join([_csv_field(v) for v in r])}\r\n" for r in rows)
    return "".join(
        f"{{{','.join([key + _value(v) for key, v in zip(_KEYS, r[:-1], strict=True)])}"
        f',"event":{_event_json(r[-1])}}}\n'
        for r in rows
    )


_KEYS = [f'"{c}":' for c in COLUMNS]


def _csv_field(v: object) -> str:
    """One CSV field as `csv.writer` (excel dialect, minimal quoting) writes it."""
    if v is None:
        return ""
    text = v if type(v) is str else str(v)
    if '"' in text or "," in text or "\n" in text or "\r" in text:
        return '"' + text.replace('"', '""') + '"'
    return text


def _value(v: object) -> str:
    if v is None:
        return "null"
    if type(v) is int:
        return str(v)
    if type(v) is str:
        return encode_basestring(v)
    return _JSON(v)


def _event_json(raw: str) -> str:
    """The stored event JSON as a JSON value for a jsonl line: verbatim when it is one line.

    Synapse stores compact one-line JSON objects, embedded as they are (not parsed: that would
    double the export's cost). Anything else is parsed, and re-encoded on one line or, when it
    is not JSON at all, kept as a string. A row that looks like an object but is not valid JSON
    can only come from tampering, which `verify` reports; it would make its line invalid.
    """
    if raw.startswith("{") and raw.endswith("}") and "\n" not in raw and "\r" not in raw:
        return raw
    try:
        return _JSON(json.loads(raw))
    except ValueError:
        return _JSON(raw)


def csv_header() -> str:
    """The CSV header record."""
    return encode_rows([(*COLUMNS, "event")], "csv")


@attrs.define
class ExportState:
    """Where an export stands: the next page to read, the hash and counts of what was written."""

    plan: ExportPlan
    exported_by: str
    started_ts: int
    rows: int = 0
    first_id: int | None = None
    last_id: int | None = None
    rooms: Counter[str] = attrs.field(factory=Counter)
    _after: int = 0
    _done: bool = False
    _digest: Any = attrs.field(factory=hashlib.sha256)

    def header(self) -> bytes:
        """The body's first bytes (the CSV header; nothing for jsonl)."""
        return self._out(csv_header().encode("utf-8") if self.plan.format == "csv" else b"")

    def next_after(self) -> int | None:
        """The `after_id` of the next page to read, or None when every page has been read."""
        return None if self._done or self.plan.upto_id == 0 else self._after

    def add(self, page: EncodedPage, limit: int = PAGE_ROWS) -> bytes:
        """Account for a page read with `limit`; return its bytes to write."""
        if page.rows < limit or page.last_id is None:
            self._done = True
        if page.last_id is not None:
            self._after = page.last_id
            self.last_id = page.last_id
            if self.first_id is None:
                self.first_id = page.first_id
        self.rows += page.rows
        self.rooms.update(page.rooms)
        return self._out(page.data)

    def manifest(self) -> dict[str, object]:
        """The manifest of what has been written so far (SHA-256 over every byte handed out)."""
        heads = self.plan.heads
        return {
            "format": self.plan.format,
            "filters": self.plan.filters.to_json(),
            "rows": self.rows,
            "first_id": self.first_id,
            "last_id": self.last_id,
            "upto_id": self.plan.upto_id,
            "rooms": [
                _room_json(room_id, heads.get(room_id), self.rooms[room_id]) for room_id in sorted(self.rooms)
            ],
            "exported_by": self.exported_by,
            "started_ts": self.started_ts,
            "sha256": self._digest.hexdigest(),
        }

    def manifest_bytes(self) -> bytes:
        """The body's last line (jsonl) or record (csv): the manifest, not itself hashed."""
        text = _JSON({"manifest": self.manifest()})
        if self.plan.format == "csv":
            return encode_rows([(MANIFEST_ID, *([""] * (len(COLUMNS) - 1)), text)], "csv").encode("utf-8")
        return f"{text}\n".encode()

    def audit_details(self) -> dict[str, object]:
        """What the finish entry of the audit log records."""
        return {
            **self.plan.audit_details(),
            "rows": self.rows,
            "first_id": self.first_id,
            "last_id": self.last_id,
            "sha256": self._digest.hexdigest(),
        }

    def _out(self, data: bytes) -> bytes:
        self._digest.update(data)
        return data


def _room_json(room_id: str, stored: StoredHead | None, exported: int) -> dict[str, object]:
    """A room's entry in the manifest.

    The head is null only for a room whose first row committed after the snapshot although its
    id is lower (ids are allocated before commit).
    """
    return {
        "room_id": room_id,
        "last_id": stored.last_id if stored else None,
        "chain_hash": stored.head.chain_hash if stored else None,
        "rows_count": stored.head.rows if stored else None,
        "exported_rows": exported,
    }
