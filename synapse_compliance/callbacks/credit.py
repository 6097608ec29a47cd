"""Credit gates (DESIGN §4.3), first slice: group creation and message rate.

- Group creation (`user_may_create_room`, `/createRoom` only): a public group (`visibility:
  public`, `preset: public_chat`, or public join rules in `initial_state`) needs the tier's
  `may_create_public`; every group counts against `max_groups_created`. A room upgrade replaces
  a group rather than adding one and is not capped: it is told apart from `/createRoom` because
  only `/createRoom` passes `on_create_room` first, which always writes the room kind into
  `creation_content` (callbacks/rooms.py), so clients cannot forge an upgrade.
- Counting: tasks/group_count.py keeps the count of groups each user created, from the room
  watch, just after each creation persists; two creations racing within that delay can both
  pass: the cap can be exceeded by the number of concurrent creations, never more.
- Message rate (`check_event_for_spam`): local senders' non-state events (not redactions) in
  governed rooms draw from a per-user, per-process token bucket sized by the tier's
  `message_rate`; an empty bucket refuses with `M_LIMIT_EXCEEDED` and `retry_after_ms`. Every
  worker has its own buckets (like Synapse's limiters, SYNAPSE_FACTS §5). With warm caches this
  path makes no DB call; admins and the server-notices user are exempt (checked only when a
  refusal is due, to keep the path fast).

The membership caps (groups joined, group size, inviting, managing) are in
callbacks/credit_caps.py; this gate registers them and hands them power-level events and group
creations.

Synapse skips the create callback for admins (SYNAPSE_FACTS §6). Remote senders are never
refused here (SYNAPSE_FACTS §8).
"""

import logging
from collections.abc import Mapping

from synapse.module_api import NOT_SPAM, EventBase, JsonDict, ModuleApi
from synapse.module_api.errors import Codes

from synapse_compliance.callbacks._common import CallbackGuard, Exemptions, SpamAnswer
from synapse_compliance.callbacks.credit_caps import POWER_LEVELS, CreditCaps
from synapse_compliance.config import ComplianceConfig
from synapse_compliance.core.credit import (
    BucketState,
    Standing,
    TokenBucket,
    decide_create_group,
    decide_message_rate,
)
from synapse_compliance.core.groups import ROOM_KIND_KEY, creates_group, is_governed_room
from synapse_compliance.messages import credit_refusal_fields
from synapse_compliance.storage.credit_store import CreditStore
from synapse_compliance.storage.room_store import RoomStore

logger = logging.getLogger(__name__)

# Buckets kept per process before they are all dropped (a dropped bucket starts full again).
MAX_BUCKETS = 100_000


def is_public_request(room_config: Mapping[str, object]) -> bool:
    """Whether a `/createRoom` body asks for a public room."""
    if room_config.get("visibility") == "public" or room_config.get("preset") == "public_chat":
        return True
    state = room_config.get("initial_state")
    if isinstance(state, list):
        for ev in state:
            if isinstance(ev, Mapping) and ev.get("type") == "m.room.join_rules":
                content = ev.get("content")
                if isinstance(content, Mapping) and content.get("join_rule") == "public":
                    return True
    return False


def _kind_in_request(room_config: Mapping[str, object]) -> object:
    content = room_config.get("creation_content")
    return content.get(ROOM_KIND_KEY) if isinstance(content, Mapping) else None


class CreditGate:
    """Spam-checker and third-party-rules callbacks enforcing the credit tiers."""

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
        self._credit = credit
        self._rooms = rooms
        self._exemptions = exemptions
        self._buckets: dict[str, BucketState] = {}
        self.caps = CreditCaps(api, config, credit, rooms, exemptions)

    def register(self, guard: CallbackGuard) -> None:
        """Register with Synapse."""
        self._api.register_spam_checker_callbacks(
            user_may_create_room=guard("credit.user_may_create_room", self.user_may_create_room),
            check_event_for_spam=guard("credit.check_event_for_spam", self.check_event_for_spam),
            user_may_join_room=guard("credit.user_may_join_room", self.caps.user_may_join_room),
            user_may_invite=guard("credit.user_may_invite", self.caps.user_may_invite),
            user_may_send_3pid_invite=guard(
                "credit.user_may_send_3pid_invite", self.caps.user_may_send_3pid_invite
            ),
        )

    async def standing(self, user_id: str) -> Standing:
        """The user's standing with their live group count (reads the DB: not for the hot path)."""
        state = await self._credit.get_credit(user_id)
        groups = await self._credit.groups.count_groups_created(user_id)
        return Standing(state.score, state.tier, groups)

    async def user_may_create_room(self, user_id: str, room_config: JsonDict) -> SpamAnswer:
        """Refuse group creation beyond the tier's cap, and public groups without the right."""
        if _kind_in_request(room_config) is None or not creates_group(room_config, self._direct_chats):
            return NOT_SPAM  # an upgrade (replaces a group), or a direct chat
        if await self._exemptions.is_exempt(user_id):
            return NOT_SPAM
        standing = await self.standing(user_id)
        decision = decide_create_group(standing, is_public_request(room_config))
        if decision.allowed:
            return await self.caps.check_creation(user_id, room_config, standing)
        logger.debug("refused group creation for %s: %s", user_id, decision.reason_code)
        return Codes.FORBIDDEN, credit_refusal_fields(decision)

    async def check_event_for_spam(self, event: EventBase) -> SpamAnswer:
        """Refuse local senders' messages in groups beyond their tier's message rate."""
        sender = event.sender
        if event.is_state():
            return await self.caps.check_power_levels(event) if event.type == POWER_LEVELS else NOT_SPAM
        if event.type == "m.room.redaction" or not self._api.is_mine(sender):
            return NOT_SPAM
        facts = await self._rooms.get_room_facts(event.room_id)
        if not is_governed_room(facts, self._direct_chats):
            return NOT_SPAM
        tier = (await self._credit.get_credit(sender)).tier
        rate = tier.message_rate
        bucket = TokenBucket(rate.per_second, rate.burst)
        answer = bucket.take(self._buckets.get(sender), self._api.get_current_time_msec())
        if answer.allowed:
            if len(self._buckets) >= MAX_BUCKETS and sender not in self._buckets:
                self._buckets.clear()
            self._buckets[sender] = answer.state
            return NOT_SPAM
        if await self._exemptions.is_exempt(sender):
            return NOT_SPAM
        self._buckets[sender] = answer.state
        decision = decide_message_rate(answer, tier)
        return Codes.LIMIT_EXCEEDED, credit_refusal_fields(decision)
