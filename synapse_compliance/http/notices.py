"""Notices and the re-verification sweep over HTTP.

GET  admin/users/{user_id}/notices   what the module has told a user (newest first)
POST admin/identity/expiry/run       run the re-verification sweep now, then deliver notices
"""

from typing import TYPE_CHECKING

from synapse.module_api import JsonDict, ModuleApi

from synapse_compliance.http._auth import require_admin
from synapse_compliance.http._parse import local_user, page_limit
from synapse_compliance.http._router import Route, route
from synapse_compliance.storage.notice_store import NoticeStore
from synapse_compliance.tasks.identity_expiry import IdentityExpiry
from synapse_compliance.tasks.notices import NoticeSender

if TYPE_CHECKING:
    from synapse.module_api import SynapseRequest


class NoticeEndpoints:
    """Handlers for the notice routes."""

    def __init__(
        self, api: ModuleApi, store: NoticeStore, sender: NoticeSender, expiry: IdentityExpiry
    ) -> None:
        self._api = api
        self._store = store
        self._sender = sender
        self._expiry = expiry

    def routes(self) -> list[Route]:
        """The routes these handlers serve."""
        return [
            route("GET", "admin/users/{user_id}/notices", self.list_for_user),
            route("POST", "admin/identity/expiry/run", self.run_expiry),
        ]

    async def list_for_user(self, request: "SynapseRequest", params: dict[str, str]) -> tuple[int, JsonDict]:
        await require_admin(self._api, request)
        user_id = await local_user(self._api, params["user_id"])
        records = await self._store.for_user(user_id, page_limit(request))
        return 200, {
            "user_id": user_id,
            "chunk": [
                {
                    "kind": r.kind,
                    "body": r.content.get("body"),
                    "created_ts": r.created_ts,
                    "sent_ts": r.sent_ts,
                    "event_id": r.event_id,
                    "attempts": r.attempts,
                    "last_error": r.last_error,
                }
                for r in records
            ],
        }

    async def run_expiry(self, request: "SynapseRequest", params: dict[str, str]) -> tuple[int, JsonDict]:
        await require_admin(self._api, request)
        sweep = await self._expiry.run_once()
        delivered = await self._sender.deliver_due() if self._sender.can_send else 0
        return 200, {
            "expired": list(sweep.expired),
            "warned": list(sweep.warned),
            "notices_delivered": delivered,
        }
