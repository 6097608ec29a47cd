"""The audit log over HTTP: `GET admin/audit?target=&actor=&action=&limit=&from=`, newest first."""

from typing import TYPE_CHECKING

from synapse.module_api import JsonDict, ModuleApi

from synapse_compliance.http._auth import require_admin
from synapse_compliance.http._parse import encode_page_token, page_limit, page_position, query_arg
from synapse_compliance.http._router import Route, route
from synapse_compliance.storage.audit_store import AuditQuery, AuditStore

if TYPE_CHECKING:
    from synapse.module_api import SynapseRequest


class AuditEndpoints:
    """Handlers for the audit-log routes."""

    def __init__(self, api: ModuleApi, store: AuditStore) -> None:
        self._api = api
        self._store = store

    def routes(self) -> list[Route]:
        """The routes these handlers serve."""
        return [route("GET", "admin/audit", self.list_entries)]

    async def list_entries(self, request: "SynapseRequest", params: dict[str, str]) -> tuple[int, JsonDict]:
        await require_admin(self._api, request)
        query = AuditQuery(
            limit=page_limit(request),
            before_id=page_position(request, "au"),
            target=query_arg(request, "target"),
            actor=query_arg(request, "actor"),
            action=query_arg(request, "action"),
        )
        records = await self._store.list_entries(query)
        body: JsonDict = {
            "chunk": [
                {
                    "ts": r.ts,
                    "actor": r.entry.actor,
                    "action": r.entry.action,
                    "target": r.entry.target,
                    "reason": r.entry.reason,
                    "details": dict(r.entry.details),
                }
                for r in records
            ]
        }
        if len(records) == query.limit:
            body["next_batch"] = encode_page_token("au", records[-1].id)
        return 200, body
