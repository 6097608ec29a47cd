"""`GET admin/archive/events`: the archive streamed as JSON lines or CSV, ending with a manifest.

Query: `room_id`, `user_id` (sender), `from` (inclusive) and `to` (exclusive) on
`origin_server_ts` in ms, `format=jsonl|csv` (default jsonl), `reason` (for the audit log).
Every check happens before the first byte, so bad input is an ordinary Matrix JSON error (400
`M_INVALID_PARAM`, 401, 403). Then the body is streamed page by page (storage/archive_export.py)
in constant memory: each page is written only once the client has taken the previous ones
(`_BodyProducer` below), so a slow client slows the export instead of filling the server's
memory. An error after the first byte aborts the connection (Synapse's `return_json_error` does
that once writing has started), so a body without its manifest is always an incomplete export.

Audit: `archive.export.start` (actor, filters, format, id bound) is written in the transaction
that takes the snapshot, before any byte, so an export that fails half-way is still on record;
`archive.export.finish` (rows, id range, SHA-256) just before the manifest is written.

Needs Synapse ≥ 1.163.2 only for the module API used elsewhere; the streaming uses Twisted's
public producer interface (`IPushProducer` on the request), not Synapse's private `_ByteProducer`,
which only drains a synchronous iterator.
"""

import logging
import time
from typing import TYPE_CHECKING, Any, cast

from synapse.module_api import (
    LoggingTransaction,
    ModuleApi,
    make_deferred_yieldable,
    run_in_background,
)
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from zope.interface import classImplements  # type: ignore[import-untyped]  # zope ships no type hints

from synapse_compliance.http._auth import require_admin
from synapse_compliance.http._parse import bad_param, query_arg, query_reason
from synapse_compliance.http._router import STREAMED, Route, Streamed, route
from synapse_compliance.storage.archive_export import (
    DEFAULT_REASON,
    FINISH_ACTION,
    START_ACTION,
    EncodedPage,
    ExportPlan,
    ExportState,
    FilterError,
    check_format,
    parse_filters,
    plan_export,
    read_page,
)
from synapse_compliance.storage.archive_rows import txn_query
from synapse_compliance.storage.audit_store import AuditEntry, append_audit_txn
from synapse_compliance.storage.schema import SchemaManager

if TYPE_CHECKING:
    from synapse.module_api import SynapseRequest

logger = logging.getLogger(__name__)

_ARGS = {"room_id", "user_id", "from", "to", "format", "reason"}
CONTENT_TYPES = {"jsonl": b"application/x-ndjson; charset=utf-8", "csv": b"text/csv; charset=utf-8"}


class ClientGone(Exception):
    """The client closed the connection before the export was written."""


class _BodyProducer:
    """Writes the body as the transport takes it: `write` waits while Twisted has paused us."""

    def __init__(self, request: "SynapseRequest") -> None:
        # Twisted's `Request.write` / `registerProducer` / `finish` carry no annotations.
        self._request: Any = cast(Any, request)
        self._paused = False
        self._gone = False
        self._waiting: Deferred[None] | None = None
        self._request.notifyFinish().addErrback(self._lost)
        try:
            self._request.registerProducer(self, True)
        except AttributeError:  # the channel is already gone (Twisted sets it to None)
            self._gone = True

    def start(self, fmt: str, filename: str) -> None:
        """Send the status and headers of a successful export."""
        self._request.setResponseCode(200)
        self._request.setHeader(b"Content-Type", CONTENT_TYPES[fmt])
        self._request.setHeader(b"Cache-Control", b"no-store")
        self._request.setHeader(b"Content-Disposition", f'attachment; filename="{filename}"'.encode("ascii"))

    def _lost(self, _: Failure) -> None:
        self.stopProducing()

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._wake()

    def stopProducing(self) -> None:
        self._gone = True
        self._wake()

    def _wake(self) -> None:
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.callback(None)

    async def write(self, data: bytes) -> None:
        """Write `data`, then wait until the transport wants more.

        Raises:
            ClientGone: the connection was closed.
        """
        if self._gone:
            raise ClientGone()
        if data:
            self._request.write(data)
        while self._paused and not self._gone:
            self._waiting = Deferred()
            await make_deferred_yieldable(self._waiting)
        if self._gone:
            raise ClientGone()

    def finish(self) -> None:
        """End the response."""
        self._request.unregisterProducer()
        self._request.finish()


classImplements(_BodyProducer, IPushProducer)


class ArchiveExportEndpoint:
    """The export route."""

    def __init__(self, api: ModuleApi, schema: SchemaManager) -> None:
        self._api = api
        self._schema = schema

    def routes(self) -> list[Route]:
        """The routes this handler serves."""
        return [route("GET", "admin/archive/events", self.export)]

    async def export(self, request: "SynapseRequest", params: dict[str, str]) -> Streamed:
        actor = await require_admin(self._api, request)
        unknown = sorted({k.decode("utf-8", "replace") for k in request.args} - _ARGS)
        if unknown:
            raise bad_param(unknown[0], f"unknown query argument; accepted: {', '.join(sorted(_ARGS))}")
        try:
            fmt = check_format(query_arg(request, "format"))
            filters = parse_filters(
                *(query_arg(request, name) for name in ("room_id", "user_id", "from", "to"))
            )
        except FilterError as e:
            raise bad_param(e.field, e.message) from None
        reason = query_reason(request, DEFAULT_REASON)
        await self._schema.ready()
        started = self._api.get_current_time_msec()

        def _start_txn(txn: LoggingTransaction) -> ExportPlan:
            plan = plan_export(txn_query(txn), filters, fmt)
            entry = AuditEntry(actor, START_ACTION, plan.audit_target, reason, plan.audit_details())
            append_audit_txn(txn, entry, started)
            return plan

        plan = await self._api.run_db_interaction("compliance_archive_export_start", _start_txn)
        state = ExportState(plan, actor, started)

        body = _BodyProducer(request)
        body.start(fmt, f"archive-{started}.{fmt}")
        clock = time.monotonic()
        pending: Deferred[EncodedPage] | None = None
        try:
            await body.write(state.header())
            # One page is read ahead while the previous one drains to the client: at most two
            # pages in memory, and the database and the network work at the same time.
            pending = self._read_ahead(state)
            while pending is not None:
                data = state.add(await make_deferred_yieldable(pending))
                pending = self._read_ahead(state)
                await body.write(data)
            await self._finish(state, actor, reason)
            await body.write(state.manifest_bytes())
        except ClientGone:
            logger.info("archive export by %s: client left after %d rows", actor, state.rows)
            return STREAMED
        finally:
            if pending is not None:  # a page read ahead that nobody will take: drop its result
                pending.addErrback(lambda _: None)
        body.finish()
        logger.info(
            "archive export by %s: %d rows (%s) in %.1f s", actor, state.rows, fmt, time.monotonic() - clock
        )
        return STREAMED

    def _read_ahead(self, state: ExportState) -> "Deferred[EncodedPage] | None":
        after = state.next_after()
        return None if after is None else run_in_background(self._page, state.plan, after)

    async def _page(self, plan: ExportPlan, after: int) -> EncodedPage:
        def _txn(txn: LoggingTransaction) -> EncodedPage:
            return read_page(txn_query(txn), plan, after)

        return await self._api.run_db_interaction("compliance_archive_export_page", _txn)

    async def _finish(self, state: ExportState, actor: str, reason: str) -> None:
        entry = AuditEntry(actor, FINISH_ACTION, state.plan.audit_target, reason, state.audit_details())
        now = self._api.get_current_time_msec()

        def _txn(txn: LoggingTransaction) -> None:
            append_audit_txn(txn, entry, now)

        await self._api.run_db_interaction("compliance_archive_export_finish", _txn)
