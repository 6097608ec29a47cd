"""The archive over HTTP: run the archiver now, and verify the hash chains (admins only).

`POST admin/archive/run` does what the loop does every second, so it changes nothing an admin
decides and is not audited; tests and operators use it instead of waiting. `POST
admin/archive/verify` only reads. Both need the instance that runs background tasks for `run`
(the archiver lives there); `verify` works anywhere.
"""

from typing import TYPE_CHECKING

from synapse.module_api import JsonDict, ModuleApi, parse_json_object_from_request
from synapse.module_api.errors import Codes, SynapseError

from synapse_compliance._synapse_private import backfilled_downto, persisted_upto
from synapse_compliance.http._auth import require_admin
from synapse_compliance.http._parse import optional_str, reject_unknown_fields
from synapse_compliance.http._router import Route, route
from synapse_compliance.storage.archive_store import ArchiveStore
from synapse_compliance.tasks.archiver import Archiver, verify_archive

if TYPE_CHECKING:
    from synapse.module_api import SynapseRequest


class ArchiveEndpoints:
    """Handlers for the archive routes, and the `archive` block of `GET admin/status`."""

    def __init__(self, api: ModuleApi, store: ArchiveStore, archiver: Archiver) -> None:
        self._api = api
        self._store = store
        self._archiver = archiver

    def routes(self) -> list[Route]:
        """The routes these handlers serve."""
        return [
            route("POST", "admin/archive/run", self.run),
            route("POST", "admin/archive/verify", self.verify),
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
        reject_unknown_fields(body, {"room_id"})
        room_id = optional_str(body, "room_id", max_length=255)
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
        return 200, {
            "rooms_checked": report.rooms_checked,
            "rows_checked": report.rows_checked,
            "ok": report.ok,
            "first_break": first_break,
        }

    async def status(self, ready: bool) -> JsonDict:
        """The `archive` block of `GET admin/status` (figures need the schema to be ready)."""
        upto = persisted_upto(self._api)
        downto = backfilled_downto(self._api)
        if not ready:
            return {
                "rows": None,
                "cursor": None,
                "persisted_upto": upto,
                "lag_events": None,
                "oldest_archived_ts": None,
                "backfill_cursor": None,
                "backfilled_downto": downto,
            }
        counts = await self._store.counts()
        return {
            "rows": counts.rows,
            "cursor": counts.cursor,
            "persisted_upto": upto,
            # Stream positions not yet read (events of ungoverned rooms included).
            "lag_events": max(0, upto - counts.cursor) + max(0, counts.backfill_cursor - downto),
            "oldest_archived_ts": counts.oldest_archived_ts,
            "backfill_cursor": counts.backfill_cursor,
            "backfilled_downto": downto,
        }
