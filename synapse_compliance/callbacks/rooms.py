"""Room lifecycle glue: record each new room's kind, and keep room facts fresh.

`on_create_room` writes the room kind (group or direct chat, from the `/createRoom` body) into
the create event's content, where it is durable, replicated and visible to members. Clients
cannot forge it: the module always overwrites the key. After a membership change persists, the
room watch (tasks/room_watch.py, on the instance that runs background tasks) drops the room's
cached facts on every process and records a direct chat that gained a third member as a group
for good.
"""

import logging
from typing import Any

from synapse.module_api import JsonDict, ModuleApi, Requester

from synapse_compliance.core.groups import ROOM_KIND_KEY, creation_marker
from synapse_compliance.storage.room_events import RoomEvent
from synapse_compliance.storage.room_store import RoomStore

logger = logging.getLogger(__name__)


class RoomLifecycle:
    """Third-party-rules callbacks about rooms (not gates: they never refuse)."""

    def __init__(self, api: ModuleApi, rooms: RoomStore) -> None:
        self._api = api
        self._rooms = rooms

    def register(self) -> None:
        """Register with Synapse."""
        self._api.register_third_party_rules_callbacks(on_create_room=self.on_create_room)

    async def on_create_room(
        self, requester: Requester, request_content: JsonDict, is_requester_admin: bool
    ) -> None:
        """Record the room kind in the create event (runs for admins too)."""
        creation_content: Any = request_content.get("creation_content")
        if not isinstance(creation_content, dict):
            creation_content = {}
            request_content["creation_content"] = creation_content
        creation_content[ROOM_KIND_KEY] = creation_marker(request_content)

    async def on_room_event(self, event: RoomEvent) -> None:
        """After a membership change persisted: refresh facts, and record a direct chat that grew."""
        if event.type != "m.room.member":
            return
        await self._rooms.invalidate(event.room_id)
        now = self._api.get_current_time_msec()
        if await self._rooms.grew_at(event.room_id, event.stream_ordering, now):
            logger.info("direct chat %s gained a third member: it is a group from now on", event.room_id)
