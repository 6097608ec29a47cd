"""Identity gate: only verified users may do what `identity.required_for` lists (DESIGN §4.2).

Fails closed: if the verification state cannot be read, the request is refused with a 500.
Needs Synapse ≥ 1.131 for `user_may_create_room(user_id, room_config)`.
"""

import logging
from typing import Literal

from synapse.module_api import NOT_SPAM, JsonDict, ModuleApi
from synapse.module_api.errors import Codes

from synapse_compliance.callbacks._common import Exemptions, fail_closed
from synapse_compliance.config import IdentityConfig, ScopeConfig
from synapse_compliance.core.groups import creates_group
from synapse_compliance.core.identity import GatedAction, decide_identity_gate
from synapse_compliance.messages import identity_refusal_fields
from synapse_compliance.storage.identity_store import IdentityStore

logger = logging.getLogger(__name__)

SpamAnswer = Literal["NOT_SPAM"] | Codes | tuple[Codes, JsonDict]


class IdentityGate:
    """Spam-checker callbacks enforcing the identity requirement."""

    def __init__(
        self,
        api: ModuleApi,
        identity: IdentityConfig,
        scope: ScopeConfig,
        store: IdentityStore,
        exemptions: Exemptions,
    ) -> None:
        self._api = api
        self._identity = identity
        self._scope = scope
        self._store = store
        self._exemptions = exemptions

    def register(self) -> None:
        """Register this gate's callbacks with Synapse."""
        self._api.register_spam_checker_callbacks(
            user_may_create_room=fail_closed(self.user_may_create_room),
        )

    async def user_may_create_room(self, user_id: str, room_config: JsonDict) -> SpamAnswer:
        """Refuse group creation (including room upgrades) to unverified users."""
        if GatedAction.CREATE_GROUP not in self._identity.required_for:
            return NOT_SPAM
        if not creates_group(room_config, self._scope.direct_chats):
            return NOT_SPAM
        if await self._exemptions.is_exempt(user_id):
            return NOT_SPAM
        verification = await self._store.get_verification(user_id)
        decision = decide_identity_gate(
            verification,
            GatedAction.CREATE_GROUP,
            self._identity.required_for,
            self._api.get_current_time_msec(),
        )
        if decision.allowed:
            return NOT_SPAM
        logger.debug("refused create_group for %s: %s", user_id, decision.reason_code)
        return Codes.FORBIDDEN, identity_refusal_fields(decision, self._identity.help_url)
