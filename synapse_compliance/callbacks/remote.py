"""`scope.remote_users`: keep users of other homeservers out of groups, or out of management.

Which callbacks see a remote user arrive (checked against Synapse 1.163.2 with two federating
servers, tests/e2e/test_remote_users.py; SYNAPSE_FACTS §8):

- A local member inviting a remote user: `user_may_invite` — refused here under `block`.
- A remote join through this server (make_join, then send_join): `check_event_allowed` on the
  make_join template (not used: registering it makes Synapse load the full room state for every
  event), `check_event_for_spam` on the signed join (must never refuse remote events), then
  `on_new_event` once the join is persisted (not registered: see tasks/room_watch.py).
- A remote join through another server of the room: only `on_new_event` (and
  `check_event_for_spam` as the event arrives over `/send`).

So the join itself cannot be refused; under `block` the module removes the remote user right
after the join persists, from the room watch (tasks/room_watch.py: on the instance that runs
background tasks, so one instance acts), as a local member who has the power to kick (the
room's creator first).
"""

import logging

from synapse.module_api import NOT_SPAM, EventBase, JsonDict, ModuleApi
from synapse.module_api.errors import Codes

from synapse_compliance.callbacks._common import CallbackGuard, Exemptions, SpamAnswer
from synapse_compliance.config import ComplianceConfig
from synapse_compliance.core.groups import is_governed_room
from synapse_compliance.core.power_levels import granted_management, level_of, required_level
from synapse_compliance.core.remote import decide_remote_manager, decide_remote_membership
from synapse_compliance.messages import remote_refusal_fields
from synapse_compliance.storage.room_events import RoomEvent
from synapse_compliance.storage.room_store import RoomStore

logger = logging.getLogger(__name__)

POWER_LEVELS = ("m.room.power_levels", "")
CREATE = ("m.room.create", "")
DEFAULT_KICK_LEVEL = 50
REMOVAL_REASON = "Users of other homeservers may not take part in this server's groups."


class RemoteUsersGate:
    """Applies `scope.remote_users` to local groups."""

    def __init__(
        self, api: ModuleApi, config: ComplianceConfig, rooms: RoomStore, exemptions: Exemptions
    ) -> None:
        self._api = api
        self._policy = config.scope.remote_users
        self._direct_chats = config.scope.direct_chats
        self._manager_level = config.groups.manager_power_level
        self._rooms = rooms
        self._exemptions = exemptions

    def register(self, guard: CallbackGuard) -> None:
        """Register with Synapse."""
        self._api.register_spam_checker_callbacks(
            user_may_invite=guard("remote.user_may_invite", self.user_may_invite),
            check_event_for_spam=guard("remote.check_event_for_spam", self.check_event_for_spam),
        )

    async def _governed(self, room_id: str, adding: int = 0) -> bool:
        return is_governed_room(await self._rooms.get_room_facts(room_id), self._direct_chats, adding)

    async def user_may_invite(self, inviter: str, invitee: str, room_id: str) -> SpamAnswer:
        """Refuse inviting a remote user into a group under `block`."""
        if self._api.is_mine(invitee):
            return NOT_SPAM
        decision = decide_remote_membership(self._policy, invitee)
        if decision.allowed or not await self._governed(room_id, adding=1):
            return NOT_SPAM
        return Codes.FORBIDDEN, remote_refusal_fields(decision)

    async def check_event_for_spam(self, event: EventBase) -> SpamAnswer:
        """Refuse local power-level changes that make a remote user a manager (unless `allow`)."""
        if event.type != POWER_LEVELS[0] or not self._api.is_mine(event.sender):
            return NOT_SPAM
        if await self._exemptions.is_exempt(event.sender) or not await self._governed(event.room_id):
            return NOT_SPAM
        state = await self._api.get_room_state(event.room_id, [POWER_LEVELS, ("m.room.member", None)])
        current = state.get(POWER_LEVELS)
        members = [
            k[1] for k, ev in state.items() if k[0] == "m.room.member" and ev.membership in ("join", "invite")
        ]
        granted = granted_management(
            current.content if current else None, event.content, self._manager_level, members
        )
        for target in sorted(u for u in granted if not self._api.is_mine(u)):
            decision = decide_remote_manager(self._policy, target)
            if not decision.allowed:
                return Codes.FORBIDDEN, remote_refusal_fields(decision)
        return NOT_SPAM

    async def on_room_event(self, event: RoomEvent) -> None:
        """Remove a remote user whose join of a group under `block` has persisted."""
        if event.membership != "join":
            return
        target = event.state_key
        if target is None or self._api.is_mine(target):
            return
        if decide_remote_membership(self._policy, target).allowed or not await self._governed(event.room_id):
            return
        current = await self._api.get_room_state(event.room_id, [("m.room.member", target)])
        member = current.get(("m.room.member", target))
        if member is None or member.membership != "join":
            return  # gone already (or this join is handled again after a restart)
        remover = await self._pick_remover(event.room_id, target)
        if remover is None:
            logger.warning(
                "remote user %s joined group %s, but no local member can remove them", target, event.room_id
            )
            return
        try:
            await self._api.update_room_membership(
                remover, target, event.room_id, "leave", content={"reason": REMOVAL_REASON}
            )
        except Exception:
            logger.warning(
                "could not remove remote user %s from group %s", target, event.room_id, exc_info=True
            )
            return
        logger.info("removed remote user %s from group %s (scope.remote_users: block)", target, event.room_id)

    async def _pick_remover(self, room_id: str, target: str) -> str | None:
        """A joined local member allowed to kick `target`: a creator first, else the most powerful."""
        state = await self._api.get_room_state(room_id, [POWER_LEVELS, CREATE, ("m.room.member", None)])
        power: JsonDict = dict(state[POWER_LEVELS].content) if POWER_LEVELS in state else {}
        create = state.get(CREATE)
        creators: set[str] = set()
        if create is not None:
            creators.add(create.sender)
            extra = create.content.get("additional_creators")
            if isinstance(extra, list | tuple):
                creators.update(u for u in extra if isinstance(u, str))
        kick = required_level(power, "kick", DEFAULT_KICK_LEVEL)
        target_level = level_of(power, target)
        candidates = [
            key[1]
            for key, ev in state.items()
            if key[0] == "m.room.member" and ev.membership == "join" and key[1] and self._api.is_mine(key[1])
        ]
        able = [
            u
            for u in candidates
            if u in creators or (level_of(power, u) >= kick and level_of(power, u) > target_level)
        ]
        able.sort(key=lambda u: (u not in creators, -level_of(power, u), u))
        return able[0] if able else None
