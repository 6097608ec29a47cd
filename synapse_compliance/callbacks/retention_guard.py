"""Archive guards on room state: no short retention policy, no encryption in groups (DESIGN §4.4).

What is refused (decisions in core/guards.py, words in messages.py), in governed groups only:
an `m.room.retention` policy whose `max_lifetime` is under `retention.min_days` (or not an
integer), and, with `retention.encrypted_rooms: forbid`, `m.room.encryption`. Direct chats that
are not governed are untouched.

Where (Synapse 1.163.2, SYNAPSE_FACTS §6/§7):

- State sent to an existing room (`PUT /rooms/{id}/state/...`, and modules'
  `create_and_send_event_into_room`): `check_event_for_spam`, which every local non-member event
  passes. It is on the message hot path, so it returns on the event type before anything else;
  only the two guarded types go on to read (cached) room facts. `check_event_allowed` would also
  see these events, but registering it makes Synapse load the room's whole state for every
  event (synapse/module_api/callbacks/third_party_event_rules_callbacks.py:280-284).
  A non-integer `max_lifetime` never gets here: Synapse's event validator already answers 400
  `M_BAD_JSON` (synapse/events/validator.py:129-160).
- `/createRoom`: `initial_state` events and Synapse's forced encryption
  (`encryption_enabled_by_default_for_room_type`, added in
  synapse/handlers/room.py:1795-1806) are created by `_send_events_for_new_room`, which skips
  `check_event_for_spam`; so `on_create_room` checks the request body before anything is made
  and predicts the forced encryption from the preset. Refusing there leaves no half-made room.
- A direct chat that would become a group (a third member invited, or joining without an
  invite): `user_may_invite` and `user_may_join_room` refuse it when the chat is encrypted
  (under `forbid`) or keeps a short retention policy, since it would be a group with that state
  from then on. Cheap when it does not apply: rooms already governed, and rooms that would not
  cross into a group with one more member, return on cached room facts. A member who is
  already joined (Synapse's profile updates send a join into every room) changes nothing.
- Room upgrades copy the old room's encryption (synapse/handlers/room.py:605-620) and are not
  checked: an upgrade never makes a group less readable than it already was.

Admins: the guard applies to server admins too (Synapse's `on_create_room` and
`check_event_for_spam` run for them). DESIGN §4.1 promises the module never blocks
administration, but a short retention policy or encryption is not an act of administration: it
shortens or blinds a log the group-chat rules require for every group, whoever asks. Moderation
(kicks, bans, redactions, power levels, upgrades) is untouched, and an operator who wants
encrypted groups says so in the config (`retention.encrypted_rooms: archive_ciphertext`). The
server-notices user is exempt (its rooms are never governed). Remote senders are never refused
(SYNAPSE_FACTS §8): their rooms are not governed, and a remote member's policy event in a local
group cannot be refused without destroying its content; the start-up checks warn about
Synapse's purges instead (startup_checks.py).

Fails closed: an error reading room facts refuses with a 500.
"""

import logging
from collections.abc import Awaitable, Callable

from synapse.module_api import NOT_SPAM, EventBase, JsonDict, ModuleApi, Requester
from synapse.module_api.errors import Codes, SynapseError

from synapse_compliance._synapse_private import server_notices_mxid
from synapse_compliance.callbacks._common import CallbackGuard, SpamAnswer
from synapse_compliance.config import ComplianceConfig
from synapse_compliance.core.decision import Decision
from synapse_compliance.core.groups import creates_group, is_governed_room
from synapse_compliance.core.guards import (
    ENCRYPTION,
    RETENTION,
    EncryptedRooms,
    decide_create_room,
    decide_growth,
    decide_state_event,
)
from synapse_compliance.messages import REASON_FIELD, guard_refusal_fields
from synapse_compliance.metrics import REFUSALS
from synapse_compliance.storage.room_store import RoomStore

logger = logging.getLogger(__name__)

MEMBER = "m.room.member"


class RetentionGuard:
    """Spam-checker and third-party-rules callbacks refusing what would undercut the archive."""

    def __init__(
        self, api: ModuleApi, config: ComplianceConfig, rooms: RoomStore, encrypted_presets: frozenset[str]
    ) -> None:
        self._api = api
        self._min_days = config.retention.min_days
        self._mode = config.retention.encrypted_rooms
        self._direct_chats = config.scope.direct_chats
        self._rooms = rooms
        self._encrypted_presets = encrypted_presets
        self._notices_mxid = server_notices_mxid(api)
        self._guarded_types = frozenset(
            {RETENTION} | ({ENCRYPTION} if self._mode is EncryptedRooms.FORBID else set())
        )
        # Replaced by its guarded version in `register`.
        self._check_guarded: Callable[[EventBase], Awaitable[SpamAnswer]] = self._check_guarded_event

    def register(self, guard: CallbackGuard) -> None:
        """Register with Synapse."""
        self._check_guarded = guard("retention_guard.check_event_for_spam", self._check_guarded_event)
        self._api.register_spam_checker_callbacks(
            check_event_for_spam=self.check_event_for_spam,
            user_may_invite=guard("retention_guard.user_may_invite", self.user_may_invite),
            user_may_join_room=guard("retention_guard.user_may_join_room", self.user_may_join_room),
        )
        self._api.register_third_party_rules_callbacks(
            on_create_room=guard("retention_guard.on_create_room", self.on_create_room)
        )

    async def check_event_for_spam(self, event: EventBase) -> SpamAnswer:
        """Refuse a local short retention policy or (under `forbid`) encryption in a group.

        Not wrapped in the `CallbackGuard` itself: almost every event returns at the first line,
        which should cost no more than that line (DESIGN §8).
        """
        if event.type not in self._guarded_types:
            return NOT_SPAM
        return await self._check_guarded(event)

    async def _check_guarded_event(self, event: EventBase) -> SpamAnswer:
        if event.get_state_key() != "" or not self._api.is_mine(event.sender):
            return NOT_SPAM
        decision = decide_state_event(event.type, "", event.content, self._min_days, self._mode)
        if decision.allowed:
            return NOT_SPAM
        if not is_governed_room(await self._rooms.get_room_facts(event.room_id), self._direct_chats):
            return NOT_SPAM
        logger.debug(
            "refused %s in %s from %s: %s", event.type, event.room_id, event.sender, decision.reason_code
        )
        return Codes.FORBIDDEN, guard_refusal_fields(decision)

    async def user_may_invite(self, inviter: str, invitee: str, room_id: str) -> SpamAnswer:
        """Refuse inviting a third member into an encrypted (or short-lived) direct chat."""
        return await self._check_growth(room_id, inviter, joining=None)

    async def user_may_join_room(self, user_id: str, room_id: str, is_invited: bool) -> SpamAnswer:
        """Refuse a join without an invite that would make such a direct chat a group."""
        if is_invited:  # counted when invited
            return NOT_SPAM
        return await self._check_growth(room_id, user_id, joining=user_id)

    async def _check_growth(self, room_id: str, user_id: str, joining: str | None) -> SpamAnswer:
        facts = await self._rooms.get_room_facts(room_id)
        if is_governed_room(facts, self._direct_chats) or not is_governed_room(
            facts, self._direct_chats, adding=1
        ):
            return NOT_SPAM
        keys = [(ENCRYPTION, ""), (RETENTION, "")] + ([(MEMBER, joining)] if joining else [])
        state = await self._api.get_room_state(room_id, keys)
        member = state.get((MEMBER, joining)) if joining else None
        if member is not None and member.content.get("membership") == "join":
            return NOT_SPAM  # already in the room: not a new member
        policies = {t: e.content for (t, k), e in state.items() if t in (ENCRYPTION, RETENTION) and k == ""}
        decision = decide_growth(policies, self._min_days, self._mode)
        if decision.allowed:
            return NOT_SPAM
        logger.debug("refused growth of %s into a group by %s: %s", room_id, user_id, decision.reason_code)
        return Codes.FORBIDDEN, guard_refusal_fields(decision)

    async def on_create_room(
        self, requester: Requester, request_content: JsonDict, is_requester_admin: bool
    ) -> None:
        """Refuse creating a group whose initial state (or the server's default) breaks the guard.

        Raises:
            SynapseError: 403 `M_FORBIDDEN` with the reason (a raised error is how this callback
                refuses, synapse/module_api/callbacks/third_party_event_rules_callbacks.py:317-340).
        """
        user_id = requester.user.to_string()
        if user_id == self._notices_mxid or not creates_group(request_content, self._direct_chats):
            return
        decision = decide_create_room(request_content, self._min_days, self._mode, self._encrypted_presets)
        if decision.allowed:
            return
        self._refuse(decision, user_id)

    def _refuse(self, decision: Decision, user_id: str) -> None:
        logger.debug("refused group creation for %s: %s", user_id, decision.reason_code)
        fields = guard_refusal_fields(decision)
        REFUSALS.labels(server_name=self._api.server_name, reason=str(fields[REASON_FIELD])).inc()
        message = str(fields.pop("error"))
        raise SynapseError(403, message, Codes.FORBIDDEN, additional_fields=fields)
