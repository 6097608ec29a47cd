"""The archiver: copies every event of governed rooms into `compliance_archive` (DESIGN §4.4).

One loop, on the instance that runs background tasks, tails Synapse's persisted events by stream
ordering: each batch is the events after the cursor and at most the persisted-up-to position
(never `MAX(stream_ordering)`: orderings commit out of order, SYNAPSE_FACTS §11). Backfilled
events have negative orderings; a second cursor follows them down from 0, bounded by the
persisted-down-to position. Rows of governed rooms and the new cursor are written in one
transaction, so a crash between batches neither loses nor duplicates a row. It runs every second,
and when the room watch (tasks/room_watch.py) sees Synapse's persisted positions move after a
quiet second (it checks every 100 ms without a database call). (`on_new_event` is not used: with it Synapse
loads a room's whole state for every event, and it is silent for backfill.)

Which rooms: an event is archived when its room is governed (`core.groups.is_governed_room`)
at the time the archiver reaches the event, normally within a second of persistence. Groups stay
groups, so a room is archived from the moment it is governed onwards: a direct chat that becomes
a group is archived from then on: its earlier, private messages are not copied, except those the
archiver had not reached yet when the room changed (normally under a second's worth). Growth is
judged at the membership event itself (`RoomStore.grew_at`), so a third member who joins and
leaves between two passes still makes the room a group, archived from that event on.
Outliers, soft-failed and rejected events of governed rooms are archived like any event, so an
outlier that is later de-outliered (keeping its old ordering) is not missed.

`verify_archive` recomputes every room's chain and reports the first broken link.
"""

import logging

import attrs
from synapse.module_api import ModuleApi

from synapse_compliance._synapse_private import backfilled_downto, persisted_upto
from synapse_compliance.config import ComplianceConfig
from synapse_compliance.core.archive_chain import VerifyReport
from synapse_compliance.core.groups import is_governed_room
from synapse_compliance.storage.archive_rows import AnchorRequest, verify_steps
from synapse_compliance.storage.archive_store import (
    BACKWARD,
    FORWARD,
    ArchiveStore,
    CursorMoved,
    StoredEvent,
)
from synapse_compliance.storage.room_store import RoomStore
from synapse_compliance.storage.schema import SchemaManager

logger = logging.getLogger(__name__)

INTERVAL_MS = 1_000
WAKE_GAP_MS = 1_000
_WAIT_S = 0.01  # how often an on-demand pass checks whether the running one has ended
# Events whose arrival can change whether their room is governed (cached facts are refreshed).
_FACT_CHANGING = frozenset({"m.room.create", "m.room.member"})


@attrs.frozen
class PassResult:
    """What one archiver pass did."""

    archived: int
    cursor: int
    persisted_upto: int


class Archiver:
    """Runs archiver passes: from the loop, on wake-ups, and on demand (`POST admin/archive/run`)."""

    def __init__(
        self,
        api: ModuleApi,
        config: ComplianceConfig,
        schema: SchemaManager,
        store: ArchiveStore,
        rooms: RoomStore,
    ) -> None:
        self._api = api
        self._direct_chats = config.scope.direct_chats
        self._batch_size = config.archive.batch_size
        self._schema = schema
        self._store = store
        self._rooms = rooms
        self._running = False
        self._again = False
        self._wake_pending = False
        self._last_pass_ms = 0  # when the last pass ended
        # The cursors as this archiver last wrote them (each append re-checks them in its
        # transaction, so a stale value only costs a `CursorMoved` and a re-read).
        self._cursors: dict[str, int] = {}

    def start(self) -> None:
        """Start the loop, on the instance that runs background tasks."""
        if not self._api.should_run_background_tasks():
            return
        self._api.looping_background_call(self._loop_pass, INTERVAL_MS, desc="compliance_archiver")

    def wake(self) -> None:
        """New events were persisted: archive soon (they are read from the database).

        A wake-up starts a pass only when none ran in the last `WAKE_GAP_MS`: after a quiet
        spell new events are archived at once, while under steady traffic the loop's passes
        take everything that arrived since in one transaction each. (One pass per new event
        competed with Synapse's own writes: measured ~2 % of send throughput on SQLite.)
        """
        if not self._schema.is_ready or self._running or self._wake_pending:
            return
        if self._api.get_current_time_msec() - self._last_pass_ms < WAKE_GAP_MS:
            return
        self._wake_pending = True
        self._api.run_as_background_process("compliance_archiver_wake", self._wake)

    async def _wake(self) -> None:
        self._wake_pending = False
        await self._loop_pass()

    async def _loop_pass(self) -> None:
        if not self._schema.is_ready:
            return
        if self._running:  # ask the running pass to go round again instead
            self._again = True
            return
        try:
            await self.run_once()
        except Exception:
            logger.exception("archiver pass failed; retrying in %d ms", INTERVAL_MS)

    async def run_once(self) -> PassResult:
        """Archive everything persisted so far; return how many rows this pass wrote.

        If a pass is already running, this one waits for it to end and then runs, so when it
        returns every event persisted before the call has been archived.
        """
        while self._running:
            await self._api.sleep(_WAIT_S)
        self._running = True
        archived = 0
        try:
            while True:
                self._again = False
                while (written := await self._batch()) is not None:
                    archived += written
                if not self._again:
                    break
        finally:
            self._running = False
            self._last_pass_ms = self._api.get_current_time_msec()
        cursor = await self._cursor(FORWARD)
        if archived:
            logger.info("archived %d event(s); cursor at %d", archived, cursor)
        return PassResult(archived, cursor, persisted_upto(self._api))

    async def _batch(self) -> int | None:
        """Archive one batch (new events first, then backfilled ones); None when caught up."""
        written = await self._forward_batch()
        if written is None:
            written = await self._backward_batch()
        return written

    async def _forward_batch(self) -> int | None:
        upto = persisted_upto(self._api)
        position = await self._cursor(FORWARD)
        if position >= upto:
            return None
        events = await self._store.read_events(position, upto, self._batch_size)
        # A full batch ends at its last event; a short one has read everything up to `upto`.
        new_position = events[-1].stream_ordering if len(events) == self._batch_size else upto
        return await self._append(FORWARD, position, new_position, events)

    async def _backward_batch(self) -> int | None:
        # Backfilled events count down from -1; `downto` is where all of them are persisted.
        downto = backfilled_downto(self._api)
        position = await self._cursor(BACKWARD)
        if position <= downto:
            return None
        events = await self._store.read_backfilled(position, downto, self._batch_size)
        new_position = events[-1].stream_ordering if len(events) == self._batch_size else downto
        return await self._append(BACKWARD, position, new_position, events)

    async def _append(self, cursor: str, position: int, new_position: int, events: list[StoredEvent]) -> int:
        keep = await self._governed_events(events, forward=cursor == FORWARD)
        try:
            written = await self._store.append(
                cursor, position, new_position, keep, self._api.get_current_time_msec()
            )
        except CursorMoved:
            self._cursors.pop(cursor, None)
            logger.info("archiver cursor %s moved under this pass; reading again", cursor)
            return 0
        self._cursors[cursor] = new_position
        return written

    async def _cursor(self, name: str) -> int:
        if name not in self._cursors:
            self._cursors[name] = await self._store.cursor(name)
        return self._cursors[name]

    async def _governed_events(self, events: list[StoredEvent], forward: bool) -> list[StoredEvent]:
        """The events of `events` to archive: those of governed rooms, in their order.

        A direct chat whose third member arrived in this batch of new events is archived from
        that membership event on, even if the member has left again by now (`RoomStore.grew_at`).
        """
        changed = {e.room_id for e in events if e.type in _FACT_CHANGING}
        keep_from: dict[str, int | None] = {}  # room -> first ordering kept (None: nothing)
        for room_id in dict.fromkeys(e.room_id for e in events):
            if room_id in changed:
                self._rooms.forget(room_id)  # facts cached before these events are stale
            facts = await self._rooms.get_room_facts(room_id)
            if is_governed_room(facts, self._direct_chats):
                keep_from[room_id] = events[0].stream_ordering if forward else events[-1].stream_ordering
            elif forward and room_id in changed:
                keep_from[room_id] = await self._growth_point(room_id, events)
            else:
                keep_from[room_id] = None
        kept = []
        for e in events:
            start = keep_from[e.room_id]
            if start is not None and (e.stream_ordering >= start or not forward):
                kept.append(e)
        return kept

    async def _growth_point(self, room_id: str, events: list[StoredEvent]) -> int | None:
        """The ordering of the membership event in `events` that made a direct chat a group."""
        now = self._api.get_current_time_msec()
        for e in events:
            member = e.room_id == room_id and e.type == "m.room.member"
            if member and await self._rooms.grew_at(room_id, e.stream_ordering, now):
                return e.stream_ordering
        return None


async def verify_archive(store: ArchiveStore, room_id: str | None = None) -> VerifyReport:
    """Recompute the chain of every room (or of `room_id`) and report the first broken link."""
    steps = verify_steps(await store.heads(room_id))
    try:
        request = next(steps)
        while True:
            if isinstance(request, AnchorRequest):
                request = steps.send(await store.anchor(request.room_id))
            else:
                page = await store.rows_page(
                    request.room_id, request.after_id, request.upto_id, request.limit
                )
                request = steps.send(page)
    except StopIteration as done:
        report: VerifyReport = done.value
        return report
