"""Retention over HTTP: legal holds, pruning on demand, and the `retention` block of status.

PUT    admin/holds/{hold_id}   {room_id | user_id, reason}: place a hold, audited
DELETE admin/holds/{hold_id}   {reason}: release it, audited (the hold is kept as released)
GET    admin/holds             list, newest first: active=, room_id=, user_id=, limit=, from=
GET    admin/holds/{hold_id}   one hold
POST   admin/archive/prune     {reason}: prune what is due now (background-tasks instance only)

Placing an active hold again with the same target is idempotent (200, nothing written); the same
`hold_id` for another target, or for a released hold, is a 409 (ids are never reused, so a hold
id in the audit log always means one thing). Releasing needs a reason, since it lets evidence be
pruned; releasing a released hold changes nothing.
"""

import re
from typing import TYPE_CHECKING

from synapse.module_api import JsonDict, ModuleApi, UserID
from synapse.module_api.errors import Codes, SynapseError

from synapse_compliance.config import RetentionConfig
from synapse_compliance.http._auth import require_admin
from synapse_compliance.http._parse import (
    bad_param,
    encode_page_token,
    json_body,
    optional_str,
    page_limit,
    page_position,
    query_arg,
    reject_unknown_fields,
    required_str,
)
from synapse_compliance.http._router import Route, route
from synapse_compliance.storage.hold_store import Hold, HoldConflict, HoldQuery, HoldStore, HoldTarget
from synapse_compliance.tasks.pruner import Pruner, PruningOff

if TYPE_CHECKING:
    from synapse.module_api import SynapseRequest

_HOLD_ID = re.compile(r"^[A-Za-z0-9._~:-]{1,128}$")
_MAX_ID_LENGTH = 255


def hold_json(hold: Hold) -> JsonDict:
    """The API shape of a hold."""
    return {
        "hold_id": hold.hold_id,
        "room_id": hold.target.room_id,
        "user_id": hold.target.user_id,
        "reason": hold.reason,
        "created_ts": hold.created_ts,
        "created_by": hold.created_by,
        "active": hold.active,
        "released_ts": hold.released_ts,
        "released_by": hold.released_by,
        "release_reason": hold.release_reason,
    }


def _hold_id(raw: str) -> str:
    if not _HOLD_ID.match(raw):
        raise bad_param("hold_id", "must be 1 to 128 characters of A-Z a-z 0-9 . _ ~ : -")
    return raw


def _room_id(raw: str) -> str:
    if not raw.startswith("!") or len(raw) < 2 or any(c.isspace() for c in raw):
        raise bad_param("room_id", f"{raw!r} is not a Matrix room id")
    return raw


def _user_id(raw: str) -> str:
    try:
        return UserID.from_string(raw).to_string()
    except SynapseError:
        raise bad_param("user_id", f"{raw!r} is not a Matrix user id") from None


class RetentionEndpoints:
    """Handlers for the hold and prune routes."""

    def __init__(self, api: ModuleApi, retention: RetentionConfig, holds: HoldStore, pruner: Pruner) -> None:
        self._api = api
        self._retention = retention
        self._holds = holds
        self._pruner = pruner

    def routes(self) -> list[Route]:
        """The routes these handlers serve."""
        return [
            route("GET", "admin/holds", self.list_holds),
            route("GET", "admin/holds/{hold_id}", self.get_hold),
            route("PUT", "admin/holds/{hold_id}", self.put_hold),
            route("DELETE", "admin/holds/{hold_id}", self.delete_hold),
            route("POST", "admin/archive/prune", self.prune),
        ]

    async def _target(self, body: JsonDict) -> HoldTarget:
        room = optional_str(body, "room_id", max_length=_MAX_ID_LENGTH)
        user = optional_str(body, "user_id", max_length=_MAX_ID_LENGTH)
        if room is None and user is None:
            raise SynapseError(400, "room_id or user_id: one of them is required", Codes.MISSING_PARAM)
        if room is not None and user is not None:
            raise bad_param("user_id", "a hold names either a room_id or a user_id, not both")
        if room is not None:
            room = _room_id(room)
            if not await self._holds.room_is_archived(room):
                raise SynapseError(404, f"the archive has no rows of room {room}", Codes.NOT_FOUND)
            return HoldTarget(room_id=room)
        assert user is not None
        return HoldTarget(user_id=_user_id(user))

    async def put_hold(self, request: "SynapseRequest", params: dict[str, str]) -> tuple[int, JsonDict]:
        actor = await require_admin(self._api, request)
        hold_id = _hold_id(params["hold_id"])
        body = json_body(request)
        reject_unknown_fields(body, {"room_id", "user_id", "reason"})
        reason = required_str(body, "reason")
        target = await self._target(body)
        try:
            change = await self._holds.place(hold_id, target, reason, actor)
        except HoldConflict as e:
            state = "an active" if e.existing.active else "a released"
            raise SynapseError(
                409,
                f"hold_id: {hold_id} already names {state} hold on {e.existing.target.value}; "
                "hold ids are never reused",
                Codes.INVALID_PARAM,
            ) from None
        return 200, {**hold_json(change.hold), "created": change.changed}

    async def delete_hold(self, request: "SynapseRequest", params: dict[str, str]) -> tuple[int, JsonDict]:
        actor = await require_admin(self._api, request)
        hold_id = _hold_id(params["hold_id"])
        body = json_body(request)
        reject_unknown_fields(body, {"reason"})
        reason = required_str(body, "reason")
        change = await self._holds.release(hold_id, reason, actor)
        if change is None:
            raise SynapseError(404, f"no such hold: {hold_id}", Codes.NOT_FOUND)
        return 200, {**hold_json(change.hold), "released": change.changed}

    async def get_hold(self, request: "SynapseRequest", params: dict[str, str]) -> tuple[int, JsonDict]:
        await require_admin(self._api, request)
        hold = await self._holds.get(_hold_id(params["hold_id"]))
        if hold is None:
            raise SynapseError(404, f"no such hold: {params['hold_id']}", Codes.NOT_FOUND)
        return 200, hold_json(hold)

    async def list_holds(self, request: "SynapseRequest", params: dict[str, str]) -> tuple[int, JsonDict]:
        await require_admin(self._api, request)
        active_raw = query_arg(request, "active")
        if active_raw not in (None, "true", "false"):
            raise bad_param("active", "must be true or false")
        room = query_arg(request, "room_id")
        user = query_arg(request, "user_id")
        query = HoldQuery(
            limit=page_limit(request),
            before_id=page_position(request, "lh"),
            active=None if active_raw is None else active_raw == "true",
            room_id=_room_id(room) if room is not None else None,
            user_id=_user_id(user) if user is not None else None,
        )
        holds = await self._holds.list_holds(query)
        body: JsonDict = {"chunk": [hold_json(h) for h in holds]}
        if len(holds) == query.limit:
            body["next_batch"] = encode_page_token("lh", holds[-1].id)
        return 200, body

    async def prune(self, request: "SynapseRequest", params: dict[str, str]) -> tuple[int, JsonDict]:
        actor = await require_admin(self._api, request)
        body = json_body(request)
        reject_unknown_fields(body, {"reason"})
        reason = required_str(body, "reason")
        if not self._api.should_run_background_tasks():
            raise SynapseError(
                400, "The pruner runs on the instance that runs background tasks", Codes.UNKNOWN
            )
        try:
            result = await self._pruner.run_once(actor, reason)
        except PruningOff:
            raise SynapseError(
                400,
                "Pruning is off: retention.max_days is not set, so archived rows are kept for good",
                Codes.UNKNOWN,
            ) from None
        return 200, {
            "max_days": self._retention.max_days,
            "cutoff_ts": result.cutoff_ts,
            "pruned_rows": result.rows,
            "rooms": result.rooms,
            "refused_rooms": [{"room_id": room, "reason": why} for room, why in result.refused_rooms],
            "dropped_partitions": list(result.dropped_partitions),
            "kept_partitions": [{"partition": name, "reason": why} for name, why in result.kept_partitions],
        }

    async def status(self, ready: bool) -> JsonDict:
        """The `retention` block of `GET admin/status` (the hold count needs the schema)."""
        return {
            "min_days": self._retention.min_days,
            "max_days": self._retention.max_days,
            "pruning": self._pruner.enabled,
            "prune_interval_ms": self._retention.prune_interval_ms,
            "active_holds": await self._holds.count_active() if ready else None,
        }
