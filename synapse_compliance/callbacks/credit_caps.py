"""Credit caps on membership (DESIGN §4.3): groups joined, group size, inviting, managing.

- Joins (`user_may_join_room`: direct joins, and joins of a held invite, which is also how an
  accepted knock ends): a local user already in `max_groups_joined` governed groups may not join
  another (`group_join_cap`). Creating a group joins it too, so `/createRoom` is refused at the
  cap as well (its own join skips this callback, SYNAPSE_FACTS §6).
- Group size: a join or an invite that would take a group's joined + invited members (remote
  ones included) beyond its owner's tier's `max_group_size` is refused (`group_size_cap`). The
  owner is the room's creator (the `m.room.create` sender). A held invite being accepted adds
  nobody and is never refused; nor is a member re-joining (Synapse sends a join for every
  profile change). Groups owned by admins or the server-notices user have no size cap.
- Invites (`user_may_invite`): a local inviter whose tier lacks `may_invite` may not invite
  into a group (`may_not_invite`).
- Managers (`m.room.power_levels`, via the credit gate's `check_event_for_spam`): raising a
  local user to `groups.manager_power_level` or above is refused when *their* tier lacks
  `may_manage` (`may_not_manage`). A new room's first power levels are checked at creation
  instead (an upgrade carries its managers over), so no creation fails half-way.
- `/createRoom` of a group checks everything it would do in one go: the join, the invitees
  (`may_invite`, the size), and the managers the preset, `power_level_content_override`, an
  `initial_state` power-level event or `creation_content.additional_creators` would make.

Counting reads Synapse's own current membership (cached store lookups, `_synapse_private`),
so leaves, kicks, bans and shutdowns count at once. A user's governed groups are the rooms they
are joined to that `is_governed_room` (the module's cached room facts) calls groups, except
rooms replaced by an upgrade (with an `m.room.tombstone`): following an upgrade moves a user's
place, it does not take a second one. The full count is only made when the user's joined rooms
of any kind reach the cap; below that the join is allowed at once.

Last seats. The check runs before the join is persisted, but Synapse runs every membership
change of one room, check and persistence together, under a per-room linearizer
(`member_linearizer`, synapse/handlers/room_member.py:670; the callbacks are called inside it at
:914 and :1075), and the membership caches read here are invalidated when the event's
transaction commits (synapse/storage/databases/main/cache.py:705), before the next change of
that room starts. So on one process the group-size cap is exact: with N − 1 members and many
concurrent joiners, exactly one gets the last seat (tests/e2e/test_credit_caps.py). Across
workers each process has its own linearizer: joins to one group handled by W workers at the
same moment can pass together, so a group can exceed its cap by about W − 1, plus joins
admitted while a worker's caches lag replication (reasoned from the code, not measured).
`max_groups_joined` is per user across rooms, which the per-room linearizer does not
serialise: a user's simultaneous joins into k different groups can each pass, so the cap can
be exceeded by at most k − 1 (measured: with cap 3, all of 8 simultaneous joins passed, on
SQLite and PostgreSQL); the count is right afterwards and every later join is refused.
Making it exact would need a per-user lock held until the membership is persisted, and the
module sees no such moment in time: `on_new_event` costs every message (not used) and the
room watch runs later, on another instance.

Synapse skips the join and invite callbacks for admins and the server-notices user, and the
module exempts them from the power-level check too. Remote users' joins never reach these
callbacks (SYNAPSE_FACTS §8); invites by remote users are not refused here. Fails closed (a 500
from `CallbackGuard`).
"""

import logging
from collections.abc import Iterable, Mapping

from synapse.module_api import NOT_SPAM, EventBase, ModuleApi
from synapse.module_api.errors import Codes

from synapse_compliance._synapse_private import member_counts, rooms_for_user
from synapse_compliance.callbacks._common import Exemptions, SpamAnswer
from synapse_compliance.config import ComplianceConfig
from synapse_compliance.core.credit import (
    Standing,
    decide_group_size,
    decide_invite,
    decide_join_group,
    decide_manage,
)
from synapse_compliance.core.decision import Decision
from synapse_compliance.core.groups import is_governed_room
from synapse_compliance.core.power_levels import creation_invitees, granted_management, managers_at_creation
from synapse_compliance.messages import credit_refusal_fields
from synapse_compliance.storage.credit_store import CreditStore
from synapse_compliance.storage.room_store import RoomStore

logger = logging.getLogger(__name__)

POWER_LEVELS = "m.room.power_levels"
CREATE = ("m.room.create", "")
TOMBSTONE = ("m.room.tombstone", "")
_COUNTED = ("join", "invite")


class CreditCaps:
    """The membership caps; wired in by `CreditGate` (callbacks/credit.py)."""

    def __init__(
        self,
        api: ModuleApi,
        config: ComplianceConfig,
        credit: CreditStore,
        rooms: RoomStore,
        exemptions: Exemptions,
    ) -> None:
        self._api = api
        self._direct_chats = config.scope.direct_chats
        self._manager_level = config.groups.manager_power_level
        self._credit = credit
        self._rooms = rooms
        self._exemptions = exemptions

    def _refuse(self, decision: Decision, user_id: str) -> SpamAnswer:
        logger.debug("refused for %s: %s", user_id, decision.reason_code)
        return Codes.FORBIDDEN, credit_refusal_fields(decision)

    # --- counting -----------------------------------------------------------------------------

    async def _replaced(self, room_id: str) -> bool:
        state = await self._api.get_room_state(room_id, [TOMBSTONE])
        tombstone = state.get(TOMBSTONE)
        return tombstone is not None and isinstance(tombstone.content.get("replacement_room"), str)

    async def _count_groups(self, room_ids: Iterable[str]) -> int:
        n = 0
        for room_id in room_ids:
            facts = await self._rooms.get_room_facts(room_id)
            if is_governed_room(facts, self._direct_chats) and not await self._replaced(room_id):
                n += 1
        return n

    async def groups_joined(self, user_id: str) -> int:
        """The governed groups `user_id` is joined to now, not counting rooms replaced by an upgrade."""
        return await self._count_groups(await rooms_for_user(self._api, user_id))

    async def _join_cap(self, user_id: str, joined: frozenset[str]) -> Decision:
        state = await self._credit.get_credit(user_id)
        if len(joined) < state.tier.max_groups_joined:
            return decide_join_group(Standing(state.score, state.tier, groups_joined=len(joined)))
        n = await self._count_groups(joined)
        return decide_join_group(Standing(state.score, state.tier, groups_joined=n))

    async def _owner(self, room_id: str) -> str | None:
        create = (await self._api.get_room_state(room_id, [CREATE])).get(CREATE)
        return create.sender if create is not None else None

    async def _size_refusal(self, room_id: str, adding: int) -> SpamAnswer | None:
        owner = await self._owner(room_id)
        if owner is None or not self._api.is_mine(owner):
            return None
        counts = await member_counts(self._api, room_id)
        members = sum(counts.get(m, 0) for m in _COUNTED)
        decision = decide_group_size((await self._credit.get_credit(owner)).tier, members, adding)
        if decision.allowed or await self._exemptions.is_exempt(owner):
            return None
        return self._refuse(decision, owner)

    # --- callbacks ----------------------------------------------------------------------------

    async def user_may_join_room(self, user_id: str, room_id: str, is_invited: bool) -> SpamAnswer:
        """Refuse joins beyond the joiner's `max_groups_joined` or the owner's `max_group_size`."""
        if not self._api.is_mine(user_id):
            return NOT_SPAM
        joined = await rooms_for_user(self._api, user_id)
        if room_id in joined:
            return NOT_SPAM  # already a member: a profile change, not a new place
        adding = 0 if is_invited else 1  # an invitee is already counted among the members
        if not is_governed_room(await self._rooms.get_room_facts(room_id), self._direct_chats, adding):
            return NOT_SPAM
        decision = await self._join_cap(user_id, joined)
        if not decision.allowed and not await self._exemptions.is_exempt(user_id):
            return self._refuse(decision, user_id)
        return await self._size_refusal(room_id, adding) or NOT_SPAM

    async def user_may_invite(self, inviter: str, invitee: str, room_id: str) -> SpamAnswer:
        """Refuse invites by users without `may_invite`, and beyond the owner's `max_group_size`."""
        if not self._api.is_mine(inviter):
            return NOT_SPAM
        if not is_governed_room(await self._rooms.get_room_facts(room_id), self._direct_chats, 1):
            return NOT_SPAM
        return await self._may_invite_refusal(inviter) or await self._size_refusal(room_id, 1) or NOT_SPAM

    async def user_may_send_3pid_invite(
        self, inviter: str, medium: str, address: str, room_id: str
    ) -> SpamAnswer:
        """Refuse invites by email or phone (no Matrix user has the address) without `may_invite`.

        Synapse asks this only when the identity server knows nobody with the address; when it
        does, the invite is an ordinary one and `user_may_invite` decides. The group's size is
        checked when the invitee joins: a pending third-party invite is no member yet.
        """
        if not self._api.is_mine(inviter):
            return NOT_SPAM
        if not is_governed_room(await self._rooms.get_room_facts(room_id), self._direct_chats):
            return NOT_SPAM
        return await self._may_invite_refusal(inviter) or NOT_SPAM

    async def _may_invite_refusal(self, inviter: str) -> SpamAnswer | None:
        """The refusal when `inviter`'s tier lacks `may_invite` (and they are not exempt), else None."""
        state = await self._credit.get_credit(inviter)
        decision = decide_invite(Standing(state.score, state.tier))
        if decision.allowed or await self._exemptions.is_exempt(inviter):
            return None
        return self._refuse(decision, inviter)

    async def check_power_levels(self, event: EventBase) -> SpamAnswer:
        """Refuse raising a user whose tier lacks `may_manage` to the manager level."""
        sender = event.sender
        if not self._api.is_mine(sender):
            return NOT_SPAM
        if not is_governed_room(await self._rooms.get_room_facts(event.room_id), self._direct_chats):
            return NOT_SPAM
        current = (await self._api.get_room_state(event.room_id, [(POWER_LEVELS, "")])).get(
            (POWER_LEVELS, "")
        )
        if current is None:
            return NOT_SPAM  # a new room's first levels: checked at creation; upgrades carry them over
        before, after = current.content, event.content
        members: list[str] = []
        if before.get("users_default") != after.get("users_default"):
            # A raised default affects every member not named explicitly.
            state = await self._api.get_room_state(event.room_id, [("m.room.member", None)])
            members = [k[1] for k, ev in state.items() if ev.content.get("membership") in _COUNTED]
        granted = granted_management(before, after, self._manager_level, members)
        return await self._check_managers(granted, sender)

    async def _check_managers(self, granted: frozenset[str], requester: str) -> SpamAnswer:
        # Remote users have no credit here; `scope.remote_users` decides about them.
        for target in sorted(u for u in granted if self._api.is_mine(u)):
            decision = decide_manage((await self._credit.get_credit(target)).tier, target)
            if decision.allowed or await self._exemptions.is_exempt(target):
                continue
            if await self._exemptions.is_exempt(requester):
                return NOT_SPAM
            return self._refuse(decision, requester)
        return NOT_SPAM

    async def check_creation(
        self, user_id: str, room_config: Mapping[str, object], standing: Standing
    ) -> SpamAnswer:
        """For `/createRoom` of a group (creator not exempt): the join, invites and managers it makes."""
        decision = await self._join_cap(user_id, await rooms_for_user(self._api, user_id))
        if not decision.allowed:
            return self._refuse(decision, user_id)
        invitees = creation_invitees(room_config)
        if invitees:
            decision = decide_invite(standing)
            if not decision.allowed:
                return self._refuse(decision, user_id)
            decision = decide_group_size(standing.tier, 1, len(invitees))
            if not decision.allowed:
                return self._refuse(decision, user_id)
        granted = managers_at_creation(room_config, user_id, self._manager_level)
        return await self._check_managers(granted, user_id)
