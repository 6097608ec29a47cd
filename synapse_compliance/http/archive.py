"""The archive over HTTP: run the archiver now, and verify the hash chains (admins only).

`POST admin/archive/run` does what the loop does every second, so it changes nothing an admin
decides and is not audited; tests and operators use it instead of waiting. `POST
admin/archive/verify` only reads. Both need the instance that runs background tasks for `run`
(the archiver lives there); `verify` works anywhere.

`POST admin/archive/checkpoint` (with a `reason`, audited) makes a signed checkpoint now, on the
background-tasks instance; `verify` also checks the latest checkpoints when they are on.
"""

from collections.abc import Sequence
from typing import TYPE_CHECKING

from synapse.module_api import JsonDict, ModuleApi, parse_json_object_from_request
from synapse.module_api.errors import Codes, SynapseError

from synapse_compliance._synapse_private import backfilled_downto, persisted_upto
from synapse_compliance.core.partitions import Partition
from synapse_compliance.http._auth import require_admin
from synapse_compliance.http._parse import (
    bad_param,
    json_body,
    optional_int,
    optional_str,
    reject_unknown_fields,
    required_str,
)
from synapse_compliance.http._router import Route, route
from synapse_compliance.storage.archive_store import ArchiveStore
from synapse_compliance.storage.audit_store import AuditEntry
from synapse_compliance.tasks.archiver import Archiver, verify_archive

if TYPE_CHECKING:
    from synapse.module_api import SynapseRequest

    from synapse_compliance.core.checkpoints import CheckpointReport
    from synapse_compliance.startup_checks import LagMonitor
    from synapse_compliance.tasks.checkpointer import Checkpointer

CHECKPOINT_AUDIT_ACTION = "archive.checkpoint"
MAX_VERIFY_CHECKPOINTS = 1000


class ArchiveEndpoints:
    """Handlers for the archive routes, and the `archive` block of `GET admin/status`."""

    def __init__(
        self,
        api: ModuleApi,
        store: ArchiveStore,
        archiver: Archiver,
        *,
        lag: "LagMonitor | None" = None,
        encrypted_rooms: str = "forbid",
        checkpointer: "Checkpointer | None" = None,
    ) -> None:
        self._api = api
        self._store = store
        self._archiver = archiver
        self._lag = lag  # lag_seconds and the lag alert (startup_checks.py)
        self._encrypted_rooms = encrypted_rooms  # `retention.encrypted_rooms`, reported as is
        self._checkpointer = checkpointer  # signed checkpoints (tasks/checkpointer.py)

    def routes(self) -> list[Route]:
        """The routes these handlers serve."""
        return [
            route("POST", "admin/archive/run", self.run),
            route("POST", "admin/archive/verify", self.verify),
            route("POST", "admin/archive/checkpoint", self.checkpoint),
        ]

    async def run(self, request: "SynapseRequest", params: dict[str, str]) -> tuple[int, JsonDict]:
        await require_admin(self._api, request)
        reject_unknown_fields(parse_json_object_from_request(request, allow_empty_body=True), set())
        if not self._api.should_run_background_tasks():
            raise SynapseError(
                400, "The archiver runs on the instance that runs background tasks", Codes.UNKNOWN
            )
        result = await self._archiver.run_once()
        return 200, {
            "archived": result.archived,
            "cursor": result.cursor,
            "persisted_upto": result.persisted_upto,
        }

    async def verify(self, request: "SynapseRequest", params: dict[str, str]) -> tuple[int, JsonDict]:
        await require_admin(self._api, request)
        body = parse_json_object_from_request(request, allow_empty_body=True)
        reject_unknown_fields(body, {"room_id", "checkpoints"})
        room_id = optional_str(body, "room_id", max_length=255)
        checkpoints = self._checkpoints_to_verify(body)
        report = await verify_archive(self._store, room_id)
        first_break: JsonDict | None = None
        if report.first_break is not None:
            b = report.first_break
            first_break = {
                "room_id": b.room_id,
                "event_id": b.event_id,
                "stream_ordering": b.stream_ordering,
                "reason": b.reason,
            }
        answer: JsonDict = {
            "rooms_checked": report.rooms_checked,
            "rows_checked": report.rows_checked,
            "ok": report.ok,
            "first_break": first_break,
        }
        if self._checkpointer is not None and self._checkpointer.enabled:
            checked = await self._checkpointer.verify(checkpoints, room_id)
            answer["checkpoints"] = checkpoint_report_json(checked)
            answer["ok"] = report.ok and checked.ok
        return 200, answer

    def _checkpoints_to_verify(self, body: JsonDict) -> int:
        """The `checkpoints` field of a verify request: how many of the latest to check (1)."""
        count = optional_int(body, "checkpoints")
        if count is None:
            return 1
        if self._checkpointer is None or not self._checkpointer.enabled:
            raise bad_param("checkpoints", "checkpoints are off: archive.signing_key_file is not set")
        if not 1 <= count <= MAX_VERIFY_CHECKPOINTS:
            raise bad_param("checkpoints", f"must be from 1 to {MAX_VERIFY_CHECKPOINTS}")
        return count

    async def checkpoint(self, request: "SynapseRequest", params: dict[str, str]) -> tuple[int, JsonDict]:
        actor = await require_admin(self._api, request)
        body = json_body(request)
        reject_unknown_fields(body, {"reason"})
        reason = required_str(body, "reason")
        if self._checkpointer is None or not self._checkpointer.enabled:
            raise SynapseError(400, "Checkpoints are off: archive.signing_key_file is not set", Codes.UNKNOWN)
        if not self._api.should_run_background_tasks():
            raise SynapseError(
                400, "Checkpoints are made on the instance that runs background tasks", Codes.UNKNOWN
            )
        made = await self._checkpointer.run_once(
            AuditEntry(actor=actor, action=CHECKPOINT_AUDIT_ACTION, target=None, reason=reason)
        )
        latest = made.latest
        return 200, {
            "created": made.created is not None,
            "seq": latest.seq if latest else None,
            "ts": latest.ts if latest else None,
            "rooms": len(latest.heads) if latest else 0,
            "key_id": latest.key_id if latest else None,
            "checkpoint_hash": latest.hash if latest else None,
            "sink": self._sink_json(await self._checkpointer.sink_pending_count()),
        }

    def _sink_json(self, pending: int | None) -> JsonDict | None:
        cp = self._checkpointer
        if cp is None or cp.sink is None:
            return None
        return {
            "path": cp.sink,
            "pending": pending,
            "last_error": cp.sink_error,
            "last_error_ts": cp.sink_error_ts,
        }

    async def _checkpoints_status(self, ready: bool) -> JsonDict:
        """The `checkpoints` part of the `archive` status block."""
        cp = self._checkpointer
        if cp is None or not cp.enabled:
            return {"enabled": False}
        status = await cp.status() if ready else None
        return {
            "enabled": True,
            "key_id": cp.key_id,
            "interval_ms": cp.interval_ms,
            "latest_seq": status.latest_seq if status else None,
            "latest_ts": status.latest_ts if status else None,
            "sink": self._sink_json(status.sink_pending if status else None),
        }

    async def status(self, ready: bool) -> JsonDict:
        """The `archive` block of `GET admin/status` (figures need the schema to be ready)."""
        upto = persisted_upto(self._api)
        downto = backfilled_downto(self._api)
        if not ready:
            return {
                "rows": None,
                "pruned_rows": None,
                "cursor": None,
                "persisted_upto": upto,
                "lag_events": None,
                "oldest_archived_ts": None,
                "backfill_cursor": None,
                "backfilled_downto": downto,
                "lag_seconds": None,
                "lag_alert": False,
                "encrypted_rooms": self._encrypted_rooms,
                "partitions": None,
                "checkpoints": await self._checkpoints_status(ready),
            }
        counts = await self._store.counts()
        lag = await self._lag.measure(counts.cursor, counts.backfill_cursor) if self._lag else None
        return {
            "rows": counts.rows,
            "pruned_rows": counts.pruned_rows,
            "cursor": counts.cursor,
            "persisted_upto": upto,
            # Stream positions not yet read (events of ungoverned rooms included).
            "lag_events": max(0, upto - counts.cursor) + max(0, counts.backfill_cursor - downto),
            "oldest_archived_ts": counts.oldest_archived_ts,
            "backfill_cursor": counts.backfill_cursor,
            "backfilled_downto": downto,
            # Age of the oldest event not yet reached; the alert means it nears the redaction window.
            "lag_seconds": lag.seconds if lag is not None else None,
            "lag_alert": lag.alert if lag is not None else False,
            "encrypted_rooms": self._encrypted_rooms,
            "partitions": partitions_json(await self._store.partitions()),
            "checkpoints": await self._checkpoints_status(ready),
        }


def partitions_json(partitions: Sequence[Partition] | None) -> list[JsonDict] | None:
    """The month partitions (PostgreSQL) for status; `from_ts` None: rows from before partitioning."""
    if partitions is None:
        return None
    return [{"name": p.name, "from_ts": p.lower, "to_ts": p.upper} for p in partitions]


def checkpoint_report_json(report: "CheckpointReport") -> JsonDict:
    """The `checkpoints` block of a verify answer."""
    found = report.first_mismatch
    return {
        "checked": report.checked,
        "latest_seq": report.latest_seq,
        "latest_ts": report.latest_ts,
        "rooms_checked": report.rooms_checked,
        "rooms_pruned": report.rooms_pruned,
        "ok": report.ok,
        "first_mismatch": None
        if found is None
        else {"seq": found.seq, "room_id": found.room_id, "reason": found.reason, "detail": found.detail},
    }
