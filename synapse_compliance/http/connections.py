"""Connection records over HTTP (admins only).

POST admin/connections/run                {reason}: copy Synapse's user_ips now, audited
GET  admin/users/{user_id}/connections    a user's records, newest last_seen first, paginated;
                                          each page read is audited (`connections.read`)

The run endpoint does what the loop does every `archive.connections_interval`; it needs the
instance that runs background tasks (the copy lives there). The `connections` block of
`GET admin/status` comes from `status` here.
"""

import base64
import binascii
import re
from typing import TYPE_CHECKING

from synapse.module_api import JsonDict, ModuleApi
from synapse.module_api.errors import Codes, SynapseError

from synapse_compliance.http._auth import require_admin
from synapse_compliance.http._parse import (
    bad_param,
    json_body,
    local_user,
    page_limit,
    query_arg,
    query_reason,
    reject_unknown_fields,
    required_str,
)
from synapse_compliance.http._router import Route, route
from synapse_compliance.storage.audit_store import AuditEntry
from synapse_compliance.storage.connection_store import ConnectionStore, StoredConnection
from synapse_compliance.tasks.connections import AUDIT_ACTION, ConnectionCopier

if TYPE_CHECKING:
    from synapse.module_api import SynapseRequest

READ_ACTION = "connections.read"
READ_REASON = "connection records read"
_TOKEN = re.compile(r"^cn:([0-9]{1,19}):([0-9]{1,19})$")


def encode_position(last_seen: int, record_id: int) -> str:
    """The `next_batch` token for the page after a record (last_seen, id)."""
    return base64.urlsafe_b64encode(f"cn:{last_seen}:{record_id}".encode()).decode("ascii").rstrip("=")


def decode_position(token: str) -> tuple[int, int] | None:
    """The (last_seen, id) in a `next_batch` token; None if it is not one of this list."""
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    match = _TOKEN.match(text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def connection_json(c: StoredConnection) -> JsonDict:
    """One record as the API shows it."""
    s = c.sighting
    return {
        "device_id": s.device_id,
        "ip": s.ip,
        "user_agent": s.user_agent,
        "first_seen": s.first_seen,
        "last_seen": s.last_seen,
        "first_copied_ts": c.first_copied_ts,
        "last_copied_ts": c.last_copied_ts,
    }


class ConnectionEndpoints:
    """Handlers for the connection-record routes, and the `connections` status block."""

    def __init__(self, api: ModuleApi, store: ConnectionStore, copier: ConnectionCopier) -> None:
        self._api = api
        self._store = store
        self._copier = copier

    def routes(self) -> list[Route]:
        """The routes these handlers serve."""
        return [
            route("POST", "admin/connections/run", self.run),
            route("GET", "admin/users/{user_id}/connections", self.list_for_user),
        ]

    async def run(self, request: "SynapseRequest", params: dict[str, str]) -> tuple[int, JsonDict]:
        actor = await require_admin(self._api, request)
        body = json_body(request)
        reject_unknown_fields(body, {"reason"})
        reason = required_str(body, "reason")
        if not self._copier.active:
            raise SynapseError(
                400,
                "The copy of connection records is off (archive.connection_records) and nothing is"
                " pruned (retention.max_days is not set)",
                Codes.UNKNOWN,
            )
        if not self._api.should_run_background_tasks():
            raise SynapseError(400, "The copy runs on the instance that runs background tasks", Codes.UNKNOWN)
        result = await self._copier.run_once(AuditEntry(actor, AUDIT_ACTION, None, reason))
        return 200, {
            "scanned": result.scanned,
            "changed": result.changed,
            "pruned": result.pruned,
            "mark": result.mark,
        }

    async def list_for_user(self, request: "SynapseRequest", params: dict[str, str]) -> tuple[int, JsonDict]:
        actor = await require_admin(self._api, request)
        user_id = await local_user(self._api, params["user_id"])
        limit = page_limit(request)
        reason = query_reason(request, READ_REASON)
        before: tuple[int, int] | None = None
        token = query_arg(request, "from")
        if token is not None:
            before = decode_position(token)
            if before is None:
                raise bad_param("from", "not a next_batch token of this list")
        # Who saw whose addresses is personal-data access: audited in the read's transaction.
        read_by = AuditEntry(actor, READ_ACTION, user_id, reason, {"from": token})
        records = await self._store.list_for_user(user_id, before, limit, read_by)
        body: JsonDict = {"user_id": user_id, "chunk": [connection_json(c) for c in records]}
        if len(records) == limit:
            body["next_batch"] = encode_position(records[-1].sighting.last_seen, records[-1].id)
        return 200, body

    async def status(self, ready: bool) -> JsonDict:
        """The `connections` block of `GET admin/status` (figures need the schema to be ready)."""
        body: JsonDict = {"enabled": self._copier.enabled, "interval_ms": self._copier.interval_ms}
        state = await self._store.state() if ready else None
        body["rows"] = state.rows if state else None
        body["last_seen_mark"] = state.last_seen_mark if state else None
        body["last_pass"] = (
            {
                "ts": state.last_pass_ts,
                "scanned": state.last_pass_scanned,
                "changed": state.last_pass_changed,
                "pruned": state.last_pass_pruned,
            }
            if state and state.last_pass_ts is not None
            else None
        )
        return body
