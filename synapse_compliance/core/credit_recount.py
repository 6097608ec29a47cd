"""The recount's plan (DESIGN §4.3): which rooms should count as groups a user created.

Pure: storage/credit_recount.py reads Synapse's tables into `RoomCreate`s and the module's rows
into `GroupRow`s, and applies the `RowChange`s planned here. The rules are those of the live
counting (tasks/group_count.py) and of `core.groups.is_governed_room`.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from synapse_compliance.core.groups import (
    KIND_DIRECT_CHAT,
    KIND_GROUP,
    ROOM_KIND_KEY,
    DirectChats,
    RoomFacts,
    is_governed_room,
)


@attrs.frozen
class RoomCreate:
    """What a room's create event and current state say (local creators only)."""

    room_id: str
    creator: str
    created_ts: int
    marker: str | None
    predecessor: str | None
    creator_membership: str | None
    members: int | None  # joined + invited; None when not needed (recorded groups)
    has_direct_flag: bool
    became_group: bool


@attrs.frozen
class GroupRow:
    """A row of `compliance_credit_groups`."""

    room_id: str
    creator: str
    created_ts: int
    ended_ts: int | None


@attrs.frozen
class Wanted:
    """How a governed room should be recorded."""

    creator: str
    created_ts: int
    counts: bool


@attrs.frozen
class RowChange:
    """One write: `kind` is added, ended, restored or reassigned."""

    kind: str
    room_id: str
    creator: str
    created_ts: int
    counts: bool


@attrs.frozen
class RecountReport:
    """What a recount found and changed."""

    rooms_scanned: int
    local_rooms: int
    groups: int
    counting: int
    added: int
    ended: int
    restored: int
    reassigned: int

    def as_json(self) -> dict[str, int]:
        """The report as the API and the audit entry show it."""
        return attrs.asdict(self)


@attrs.frozen
class RecountSettings:
    """What decides which rooms are groups."""

    server_name: str
    direct_chats: DirectChats
    notices_mxid: str | None


def is_local(user_id: str, server_name: str) -> bool:
    return user_id.startswith("@") and user_id.partition(":")[2] == server_name


def marker_of(content: Mapping[str, Any]) -> str | None:
    value = content.get(ROOM_KIND_KEY)
    return value if value in (KIND_GROUP, KIND_DIRECT_CHAT) else None


def wanted_rows(rooms: Mapping[str, RoomCreate], settings: RecountSettings) -> dict[str, Wanted]:
    """How every governed room of a local creator should be recorded."""
    superseded = {r.predecessor for r in rooms.values() if r.predecessor is not None}
    wanted: dict[str, Wanted] = {}
    for room in rooms.values():
        marker, became = _kind(room, rooms)
        facts = RoomFacts(
            creator_is_local=True,
            creator_is_notices=room.creator == settings.notices_mxid,
            marker=marker,
            members=room.members or 0,
            has_direct_flag=room.has_direct_flag,
            became_group=became,
        )
        if not is_governed_room(facts, settings.direct_chats):
            continue
        counts = room.creator_membership == "join" and room.room_id not in superseded
        wanted[room.room_id] = Wanted(room.creator, room.created_ts, counts)
    return wanted


def _kind(room: RoomCreate, rooms: Mapping[str, RoomCreate]) -> tuple[str | None, bool]:
    """The room's recorded kind, inherited along its predecessors (as `RoomStore` does)."""
    marker, became = room.marker, room.became_group
    seen = {room.room_id}
    current = room
    while marker is None and current.predecessor is not None and current.predecessor not in seen:
        old = rooms.get(current.predecessor)
        if old is None:
            break
        seen.add(old.room_id)
        marker, became = old.marker, became or old.became_group
        current = old
    return marker, became


def plan_changes(wanted: Mapping[str, Wanted], rows: Sequence[GroupRow]) -> list[RowChange]:
    """The writes that make the table match `wanted` (rows of other rooms stop counting)."""
    existing = {r.room_id: r for r in rows}
    changes: list[RowChange] = []
    for room_id, w in sorted(wanted.items()):
        row = existing.get(room_id)
        if row is None:
            changes.append(RowChange("added", room_id, w.creator, w.created_ts, w.counts))
            continue
        if row.creator != w.creator:
            changes.append(RowChange("reassigned", room_id, w.creator, w.created_ts, w.counts))
        if w.counts and row.ended_ts is not None:
            changes.append(RowChange("restored", room_id, w.creator, w.created_ts, True))
        elif not w.counts and row.ended_ts is None:
            changes.append(RowChange("ended", room_id, w.creator, w.created_ts, False))
    for row in rows:
        if row.room_id not in wanted and row.ended_ts is None:
            changes.append(RowChange("ended", row.room_id, row.creator, row.created_ts, False))
    return changes
