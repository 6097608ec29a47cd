"""Identity gate: only verified users may do what `identity.required_for` lists (DESIGN §4.2).

Where each action is enforced (Synapse 1.163.2 callbacks, SYNAPSE_FACTS §6):

- `create_group`: `user_may_create_room` (`/createRoom` and room upgrades). A creator who could
  not send in or manage the group being made (`send_in_group`, `manage_group`) is refused here
  too, and so is a creation that would make an unverified invitee a manager: Synapse would
  otherwise fail such a creation half-way, on its first state event.
- `join_group`: `user_may_join_room`, for direct joins and joins of held invites (which is how
  a knock ends: the knock is accepted by an invite). Knocking itself is not refused.
- `invite`: `user_may_invite`.
- `send_in_group`: `check_event_for_spam` for local senders' non-membership events, except
  redactions (removing content is always allowed).
- `manage_group`: `check_event_for_spam` on `m.room.power_levels` — an unverified user may not
  change power levels, and no one may raise an unverified user to manager level.

Synapse itself skips the create/join/invite callbacks for server admins; the module exempts
admins and the server-notices user everywhere (`Exemptions`). Remote senders are never refused
here (SYNAPSE_FACTS §8). Fails closed: an error reading state refuses with a 500.
"""

import logging
from collections.abc import Mapping

from synapse.module_api import NOT_SPAM, EventBase, JsonDict, ModuleApi
from synapse.module_api.errors import Codes

from synapse_compliance.callbacks._common import CallbackGuard, Exemptions, SpamAnswer
from synapse_compliance.config import ComplianceConfig
from synapse_compliance.core.decision import Decision
from synapse_compliance.core.groups import creates_group, is_governed_room
from synapse_compliance.core.identity import GatedAction, decide_identity_gate
from synapse_compliance.core.power_levels import granted_management, managers_at_creation
from synapse_compliance.messages import identity_refusal_fields
from synapse_compliance.storage.identity_store import IdentityStore
from synapse_compliance.storage.room_store import RoomStore

logger = logging.getLogger(__name__)

_A = GatedAction
# What creating a group commits its creator to: making it, then sending and managing in it.
_CREATION_DUTIES = (_A.CREATE_GROUP, _A.SEND_IN_GROUP, _A.MANAGE_GROUP)
POWER_LEVELS = "m.room.power_levels"


class IdentityGate:
    """Spam-checker callbacks enforcing the identity requirement."""

    def __init__(
        self,
        api: ModuleApi,
        config: ComplianceConfig,
        identities: IdentityStore,
        rooms: RoomStore,
        exemptions: Exemptions,
    ) -> None:
        self._api = api
        self._required = config.identity.required_for
        self._help_url = config.identity.help_url
        self._direct_chats = config.scope.direct_chats
        self._manager_level = config.groups.manager_power_level
        self._identities = identities
        self._rooms = rooms
        self._exemptions = exemptions

    def register(self, guard: CallbackGuard) -> None:
        """Register the callbacks for the gated actions (none when nothing is required)."""
        if not self._required:
            return
        self._api.register_spam_checker_callbacks(
            user_may_create_room=guard("identity.user_may_create_room", self.user_may_create_room),
            user_may_join_room=guard("identity.user_may_join_room", self.user_may_join_room),
            user_may_invite=guard("identity.user_may_invite", self.user_may_invite),
            user_may_send_3pid_invite=guard(
                "identity.user_may_send_3pid_invite", self.user_may_send_3pid_invite
            ),
            check_event_for_spam=guard("identity.check_event_for_spam", self.check_event_for_spam),
        )

    async def _refusal(self, user_id: str, action: GatedAction, subject: str | None = None) -> Decision:
        verification = await self._identities.get_verification(user_id)
        decision = decide_identity_gate(
            verification, action, self._required, self._api.get_current_time_msec()
        )
        if not decision.allowed and subject is not None:
            decision = Decision.refuse(
                str(decision.errcode), str(decision.reason_code), **decision.facts, subject=subject
            )
        return decision

    def _answer(self, decision: Decision, user_id: str) -> SpamAnswer:
        logger.debug("refused %s for %s: %s", decision.facts.get("action"), user_id, decision.reason_code)
        return Codes.FORBIDDEN, identity_refusal_fields(decision, self._help_url)

    async def _governed(self, room_id: str, adding: int = 0) -> bool:
        return is_governed_room(await self._rooms.get_room_facts(room_id), self._direct_chats, adding)

    async def user_may_create_room(self, user_id: str, room_config: JsonDict) -> SpamAnswer:
        """Refuse group creation (including room upgrades) to unverified users."""
        if not creates_group(room_config, self._direct_chats) or await self._exemptions.is_exempt(user_id):
            return NOT_SPAM
        for action in _CREATION_DUTIES:
            decision = await self._refusal(user_id, action)
            if not decision.allowed:
                # Worded as a creation refusal: that is what the user tried to do.
                return self._answer(
                    Decision.refuse(
                        str(decision.errcode),
                        str(decision.reason_code),
                        **{**decision.facts, "action": _A.CREATE_GROUP.value},
                    ),
                    user_id,
                )
        if _A.MANAGE_GROUP in self._required:
            granted = managers_at_creation(room_config, user_id, self._manager_level)
            return await self._check_new_managers(granted, user_id)
        return NOT_SPAM

    async def user_may_join_room(self, user_id: str, room_id: str, is_invited: bool) -> SpamAnswer:
        """Refuse unverified users joining a group (directly, or by accepting an invite)."""
        if _A.JOIN_GROUP not in self._required:
            return NOT_SPAM
        decision = await self._refusal(user_id, _A.JOIN_GROUP)
        if decision.allowed or await self._exemptions.is_exempt(user_id):
            return NOT_SPAM
        # An invitee is already counted among the members; a direct join adds one.
        if not await self._governed(room_id, adding=0 if is_invited else 1):
            return NOT_SPAM
        return self._answer(decision, user_id)

    async def user_may_invite(self, inviter: str, invitee: str, room_id: str) -> SpamAnswer:
        """Refuse unverified users inviting people into a group."""
        if _A.INVITE not in self._required or not self._api.is_mine(inviter):
            return NOT_SPAM
        decision = await self._refusal(inviter, _A.INVITE)
        if decision.allowed or await self._exemptions.is_exempt(inviter):
            return NOT_SPAM
        if not await self._governed(room_id, adding=1):
            return NOT_SPAM
        return self._answer(decision, inviter)

    async def user_may_send_3pid_invite(
        self, inviter: str, medium: str, address: str, room_id: str
    ) -> SpamAnswer:
        """Refuse unverified users inviting by email or phone into a group.

        Asked before the identity server stores the invite (the invite's state event would be
        refused later anyway, as a send into a group, but after the invite was stored). A
        pending third-party invite is no member, so a direct chat does not become a group by it.
        """
        if _A.INVITE not in self._required or not self._api.is_mine(inviter):
            return NOT_SPAM
        decision = await self._refusal(inviter, _A.INVITE)
        if decision.allowed or await self._exemptions.is_exempt(inviter):
            return NOT_SPAM
        if not await self._governed(room_id):
            return NOT_SPAM
        return self._answer(decision, inviter)

    async def check_event_for_spam(self, event: EventBase) -> SpamAnswer:
        """Refuse unverified local senders in groups, and promotions of unverified managers."""
        sender = event.sender
        if not self._api.is_mine(sender) or event.type == "m.room.redaction":
            return NOT_SPAM
        action = _A.MANAGE_GROUP if event.type == POWER_LEVELS else _A.SEND_IN_GROUP
        decision = await self._refusal(sender, action)
        if decision.allowed and not (event.type == POWER_LEVELS and _A.MANAGE_GROUP in self._required):
            return NOT_SPAM
        if await self._exemptions.is_exempt(sender) or not await self._governed(event.room_id):
            return NOT_SPAM
        if not decision.allowed:
            return self._answer(decision, sender)
        return await self._check_promotions(event)

    async def _check_promotions(self, event: EventBase) -> SpamAnswer:
        state = await self._api.get_room_state(event.room_id, [(POWER_LEVELS, ""), ("m.room.member", None)])
        current = state.get((POWER_LEVELS, ""))
        before: Mapping[str, object] | None = current.content if current is not None else None
        members = [
            key[1]
            for key, ev in state.items()
            if key[0] == "m.room.member" and ev.content.get("membership") in ("join", "invite")
        ]
        granted = granted_management(before, event.content, self._manager_level, members)
        if before is None:
            granted -= {event.sender}  # the creator's own initial power levels
        return await self._check_new_managers(granted, event.sender)

    async def _check_new_managers(self, granted: frozenset[str], requester: str) -> SpamAnswer:
        # Remote users have no verification here; `scope.remote_users` decides about them.
        for target in sorted(u for u in granted if self._api.is_mine(u)):
            decision = await self._refusal(target, _A.MANAGE_GROUP, subject=target)
            if not decision.allowed and not await self._exemptions.is_exempt(target):
                return self._answer(decision, requester)
        return NOT_SPAM
