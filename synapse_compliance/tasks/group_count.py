"""Counting the groups each local user created, for `max_groups_created` (DESIGN §4.3).

A room watcher (tasks/room_watch.py), so it runs on the instance that runs background tasks,
in stream order, once each create or membership event has persisted:

- a local user's create event carrying a counted room kind records a group they created;
- a create event naming a predecessor (a room upgrade) moves the count from the old room to its
  replacement, counted for the upgrader while they are in it;
- a creator's own join counts their group again (unless the room was upgraded away: users stay
  joined to the old room, and every profile change sends a join there), a leave, kick or ban
  (a shutdown kicks everyone) stops counting it;
- a direct chat that a third member made a group (the room lifecycle watcher, before this one,
  records it in `compliance_groups`) counts as a group its creator created, as the recount
  counts it, while the creator is joined.

Every step is idempotent, so an event handled twice (after a restart) changes nothing. The gate
(callbacks/credit.py) reads the count when a creation is requested; creations racing within the
watch's delay (normally under a second) can both pass, so the cap can be exceeded by at most
the number of concurrent creations.
"""

from collections.abc import Mapping

from synapse.module_api import ModuleApi

from synapse_compliance.config import ComplianceConfig
from synapse_compliance.core.groups import KIND_DIRECT_CHAT, KIND_GROUP, ROOM_KIND_KEY, DirectChats
from synapse_compliance.storage.credit_store import CreditStore
from synapse_compliance.storage.room_events import RoomEvent
from synapse_compliance.storage.room_store import CREATE, RoomStore


class GroupCounter:
    """Keeps `compliance_credit_groups` in step with creations, upgrades and creators' memberships."""

    def __init__(
        self, api: ModuleApi, config: ComplianceConfig, credit: CreditStore, rooms: RoomStore
    ) -> None:
        self._api = api
        self._credit = credit
        self._rooms = rooms
        self._counted_kinds = {KIND_GROUP} | (
            {KIND_DIRECT_CHAT} if config.scope.direct_chats is DirectChats.GOVERN else set()
        )
        self._grown: set[str] = set()  # direct chats this process already counted as groups

    async def on_room_event(self, event: RoomEvent) -> None:
        """Count creations and upgrades; (un)count a group when its creator joins or leaves."""
        now = self._api.get_current_time_msec()
        if event.type == "m.room.create" and event.state_key == "" and self._api.is_mine(event.sender):
            predecessor = event.content.get("predecessor")
            if event.content.get(ROOM_KIND_KEY) in self._counted_kinds:
                await self._credit.groups.record_group_created(event.room_id, event.sender, now)
            elif isinstance(predecessor, Mapping) and isinstance(predecessor.get("room_id"), str):
                await self._credit.groups.record_group_upgraded(
                    predecessor["room_id"],
                    event.room_id,
                    event.sender,
                    await self._still_in(event.room_id, event.sender),
                    now,
                )
        elif (
            event.membership in ("join", "leave", "ban")
            and event.state_key
            and self._api.is_mine(event.state_key)
        ):
            present = event.membership == "join"
            if present and await self._replaced(event.room_id):
                return  # e.g. a profile change in the old room of an upgrade: it stays replaced
            await self._credit.groups.set_creator_present(event.room_id, event.state_key, present, now)
        if event.type == "m.room.member" and event.room_id not in self._grown:
            await self._count_grown_direct_chat(event.room_id, now)

    async def _count_grown_direct_chat(self, room_id: str, now: int) -> None:
        """Count a direct chat that became a group for its creator (once; idempotent anyway)."""
        facts = await self._rooms.get_room_facts(room_id)
        if not facts.became_group or facts.marker in self._counted_kinds or not facts.creator_is_local:
            return
        if facts.creator_is_notices:
            return
        state = await self._api.get_room_state(room_id, [CREATE])
        create = state.get(CREATE)
        if create is None:
            return
        creator = create.sender
        await self._credit.groups.record_group_created(room_id, creator, now)
        if not await self._still_in(room_id, creator) or await self._replaced(room_id):
            await self._credit.groups.set_creator_present(room_id, creator, False, now)
        self._grown.add(room_id)

    async def _replaced(self, room_id: str) -> bool:
        """Whether `room_id` was upgraded (it has a tombstone): it no longer counts as a group."""
        state = await self._api.get_room_state(room_id, [("m.room.tombstone", "")])
        return ("m.room.tombstone", "") in state

    async def _still_in(self, room_id: str, user_id: str) -> bool:
        """False once `user_id` left `room_id`; a membership not yet persisted counts as in."""
        state = await self._api.get_room_state(room_id, [("m.room.member", user_id)])
        member = state.get(("m.room.member", user_id))
        return member is None or member.content.get("membership") not in ("leave", "ban")
