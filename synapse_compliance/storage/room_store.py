"""Facts about rooms for the group rules: read from Synapse's room state, cached per process.

The facts of a room recorded as a group never change, so they are cached until evicted. For
possible direct chats the member count matters: after a membership change persists, the room
watch (tasks/room_watch.py) invalidates the room's entry on every process through Synapse's
cache replication (SYNAPSE_FACTS §12), normally within a few hundred milliseconds. That is too
late for a message sent right after a third member arrived (or an invite right after a member
left), so a possible direct chat's cached facts are also checked against Synapse's own member
counts, which Synapse invalidates as the membership change commits (before the join's, leave's
or invite's response is sent): another member count than the facts have means they are stale
and are read again. (A group stays a group whatever its count: `became_group`.)
"""

from collections.abc import Awaitable, Callable, Mapping
from typing import cast

import attrs
from synapse.module_api import LoggingTransaction, ModuleApi, cached

from synapse_compliance._synapse_private import (
    MISSING,
    cached_now,
    get_clock,
    member_counts,
    member_counts_now,
    server_notices_mxid,
)
from synapse_compliance.core.groups import (
    DIRECT_CHAT_MAX_MEMBERS,
    KIND_DIRECT_CHAT,
    KIND_GROUP,
    ROOM_KIND_KEY,
    RoomFacts,
    crossed_into_group,
)
from synapse_compliance.storage.schema import SchemaManager

CREATE = ("m.room.create", "")
_COUNTED = frozenset({"join", "invite"})


class RoomStore:
    """Room facts (cached) and the registry of direct chats that became groups."""

    def __init__(self, api: ModuleApi, schema: SchemaManager) -> None:
        self._api = api
        self._schema = schema
        self._notices_mxid = server_notices_mxid(api)
        # `@cached` needs these two attributes on its owner (SYNAPSE_FACTS §12).
        self.server_name = api.server_name
        self.clock = get_clock(api)
        api.register_cached_function(self._cached_facts)
        self._member_counts_now = member_counts_now(api)

    async def get_room_facts(self, room_id: str) -> RoomFacts:
        """What the group rules need to know about `room_id` (an unknown room is not local)."""
        hit = cached_now(self._cached_facts, (room_id,))
        if hit is not MISSING:
            facts = cast(RoomFacts, hit)
            if not facts.needs_members or not await self._members_changed(room_id, facts):
                return facts
            self.forget(room_id)
        lookup = cast(Callable[[str], Awaitable[RoomFacts]], self._cached_facts)  # see IdentityStore
        return await lookup(room_id)

    async def _members_changed(self, room_id: str, facts: RoomFacts) -> bool:
        """Whether the room has another number of joined and invited members than `facts` counted."""
        counts = self._member_counts_now(room_id)
        if counts is None:
            counts = await member_counts(self._api, room_id)
        return sum(counts.get(m, 0) for m in _COUNTED) != facts.members

    def forget(self, room_id: str) -> None:
        """Drop this process's cached facts of `room_id` (after a membership change)."""
        self._cached_facts.invalidate((room_id,))

    async def invalidate(self, room_id: str) -> None:
        """Drop the cached facts of `room_id` on every process (after a membership change)."""
        await self._api.invalidate_cache(self._cached_facts, (room_id,))

    async def record_became_group(self, room_id: str, now_ms: int) -> None:
        """Remember that a direct chat became a group (idempotent)."""
        await self._schema.ready()

        def _txn(txn: LoggingTransaction) -> None:
            txn.execute(
                "INSERT INTO compliance_groups (room_id, became_group_ts, origin) VALUES (?, ?, ?)"
                " ON CONFLICT (room_id) DO NOTHING",
                (room_id, now_ms, "direct_chat_grew"),
            )

        await self._api.run_db_interaction("compliance_record_became_group", _txn)
        await self.invalidate(room_id)

    async def grew_at(self, room_id: str, stream_ordering: int, now_ms: int) -> bool:
        """Whether a direct chat had a third member just after `stream_ordering`; records it if so.

        Judged by the memberships at that point, not now, so a third member who joined and
        left again before anyone looked still makes the room a group for good (DESIGN §4.1).
        Why private: ModuleApi has no state-at-an-event lookup. Synapse's `room_memberships`
        keeps every membership event with its stream ordering (synapse/storage/schema/main/
        delta/74/03_membership_tables_event_stream_ordering.sql); a user's latest one at or
        before the point is their membership then.
        """
        facts = await self.get_room_facts(room_id)
        if not crossed_into_group(attrs.evolve(facts, members=DIRECT_CHAT_MAX_MEMBERS + 1)):
            return False  # not a direct chat that can grow (or already recorded as grown)

        def _txn(txn: LoggingTransaction) -> int:
            txn.execute(
                "SELECT COUNT(*) FROM room_memberships AS m WHERE m.room_id = ?"
                " AND m.event_stream_ordering <= ? AND m.membership IN ('join', 'invite')"
                " AND NOT EXISTS (SELECT 1 FROM room_memberships AS later"
                " WHERE later.room_id = m.room_id AND later.user_id = m.user_id"
                " AND later.event_stream_ordering > m.event_stream_ordering"
                " AND later.event_stream_ordering <= ?)",
                (room_id, stream_ordering, stream_ordering),
            )
            row = txn.fetchone()
            return int(row[0]) if row is not None else 0

        members = await self._api.run_db_interaction("compliance_members_at", _txn)
        if members <= DIRECT_CHAT_MAX_MEMBERS:
            return False
        await self.record_became_group(room_id, now_ms)
        return True

    @cached(max_entries=50_000)
    async def _cached_facts(self, room_id: str) -> RoomFacts:
        state = await self._api.get_room_state(room_id, [CREATE])
        create = state.get(CREATE)
        if create is None:
            return RoomFacts(creator_is_local=False)
        marker = _marker(create.content)
        became_group = False
        predecessor = create.content.get("predecessor")
        if marker is None and isinstance(predecessor, Mapping):
            # An upgraded room carries its predecessor's kind (upgrades skip on_create_room).
            old_room = predecessor.get("room_id")
            if isinstance(old_room, str) and old_room != room_id:
                old = await self.get_room_facts(old_room)
                marker, became_group = old.marker, old.became_group
        facts = RoomFacts(
            creator_is_local=self._api.is_mine(create.sender),
            creator_is_notices=create.sender == self._notices_mxid,
            marker=marker,
            became_group=became_group,
        )
        if not facts.needs_members:
            return facts
        members = await self._api.get_room_state(room_id, [("m.room.member", None)])
        counted = [e for e in members.values() if e.content.get("membership") in _COUNTED]
        return RoomFacts(
            creator_is_local=facts.creator_is_local,
            creator_is_notices=facts.creator_is_notices,
            marker=facts.marker,
            members=len(counted),
            has_direct_flag=any(e.content.get("is_direct") is True for e in members.values()),
            became_group=facts.became_group or await self._became_group(room_id),
        )

    async def _became_group(self, room_id: str) -> bool:
        await self._schema.ready()

        def _txn(txn: LoggingTransaction) -> bool:
            txn.execute("SELECT 1 FROM compliance_groups WHERE room_id = ?", (room_id,))
            return txn.fetchone() is not None

        return await self._api.run_db_interaction("compliance_get_became_group", _txn)


def _marker(content: Mapping[str, object]) -> str | None:
    value = content.get(ROOM_KIND_KEY)
    if isinstance(value, str) and value in (KIND_GROUP, KIND_DIRECT_CHAT):
        return value
    return None
