"""Reads the create and membership events Synapse persisted, for the room watch (tasks/room_watch.py).

The watch keeps its own position in `compliance_archive_cursor` under the name `rooms` (the
table is a plain name → position map; the archiver's cursors are `forward` and `backward`).
Reading Synapse's `events`/`event_json` tables is a use of private schema, as the archiver's
is (SYNAPSE_FACTS §11); the two readers sit side by side in `storage/`.
"""

import json
from collections.abc import Mapping
from typing import Any

import attrs
from synapse.module_api import LoggingTransaction, ModuleApi

from synapse_compliance.storage.schema import SchemaManager

CURSOR_NAME = "rooms"


@attrs.frozen
class RoomEvent:
    """One persisted `m.room.create` or `m.room.member` event, as the watchers see it."""

    stream_ordering: int
    event_id: str
    room_id: str
    sender: str
    type: str
    state_key: str | None
    content: Mapping[str, Any]

    @property
    def membership(self) -> str | None:
        """The membership of an `m.room.member` event (None for anything else)."""
        value = self.content.get("membership") if self.type == "m.room.member" else None
        return value if isinstance(value, str) else None


class RoomEventStore:
    """The watch's cursor and its reads of Synapse's events."""

    def __init__(self, api: ModuleApi, schema: SchemaManager) -> None:
        self._api = api
        self._schema = schema

    async def cursor(self, start_at: int) -> int:
        """The watch's position; the first call records `start_at` (history is not replayed)."""
        await self._schema.ready()

        def _txn(txn: LoggingTransaction) -> int:
            txn.execute(
                "INSERT INTO compliance_archive_cursor (name, position) VALUES (?, ?)"
                " ON CONFLICT (name) DO NOTHING",
                (CURSOR_NAME, start_at),
            )
            txn.execute("SELECT position FROM compliance_archive_cursor WHERE name = ?", (CURSOR_NAME,))
            row = txn.fetchone()
            return int(row[0]) if row is not None else start_at

        return await self._api.run_db_interaction("compliance_room_watch_cursor", _txn)

    async def advance(self, position: int) -> None:
        """Move the watch's position forward to `position` (never backwards)."""

        def _txn(txn: LoggingTransaction) -> None:
            txn.execute(
                "UPDATE compliance_archive_cursor SET position = ? WHERE name = ? AND position < ?",
                (position, CURSOR_NAME, position),
            )

        await self._api.run_db_interaction("compliance_room_watch_advance", _txn)

    async def read(self, after: int, upto: int, limit: int) -> list[RoomEvent]:
        """Create and member events with `after < stream_ordering <= upto`, in stream order.

        Outliers (out-of-band invites, events fetched for auth) and rejected events are not part
        of any room's current state and are left out.
        """

        def _txn(txn: LoggingTransaction) -> list[RoomEvent]:
            txn.execute(
                "SELECT e.stream_ordering, e.event_id, e.room_id, e.sender, e.type, e.state_key, j.json"
                " FROM events AS e JOIN event_json AS j ON j.event_id = e.event_id"
                " WHERE e.stream_ordering > ? AND e.stream_ordering <= ?"
                " AND e.type IN ('m.room.create', 'm.room.member')"
                " AND NOT e.outlier AND e.rejection_reason IS NULL"
                " ORDER BY e.stream_ordering LIMIT ?",
                (after, upto, limit),
            )
            return [_room_event(r) for r in txn.fetchall()]

        return await self._api.run_db_interaction("compliance_room_watch_read", _txn)


def _room_event(r: tuple[Any, ...]) -> RoomEvent:
    try:
        content = json.loads(r[6]).get("content")
    except (ValueError, AttributeError):
        content = None
    return RoomEvent(
        stream_ordering=int(r[0]),
        event_id=r[1],
        room_id=r[2],
        sender=r[3],
        type=r[4],
        state_key=r[5],
        content=content if isinstance(content, dict) else {},
    )
