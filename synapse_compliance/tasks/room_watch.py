"""The room watch: what the module learns from create and membership events once they persist.

It replaces `on_new_event`, which the module does not register: with any `on_new_event`
callback, Synapse loads the room's whole current state for every event, and that cost ~9 % of
message throughput here (benchmarks/README.md; B/A 0.915 with the callback, 1.012 without).

On the instance that runs background tasks, a tick every 100 ms reads Synapse's in-memory
persisted-up-to positions (no database call). When they moved, it reads the `m.room.create`
and `m.room.member` events after the watch's own cursor, then wakes the archiver; bounded by the
persisted-up-to position like the archiver (orderings commit out of order, SYNAPSE_FACTS §11).
Each event goes to every watcher in stream order; the cursor moves after a batch is handled,
so an event can be handled twice after a crash but never skipped, and watchers are idempotent.
A failing watcher stops the pass at that event; it is retried after `RETRY_AFTER_MS`.

Backfilled (historical) events are not watched: they change no current membership. On a new
installation the watch starts at the current position rather than replaying history.
"""

import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from synapse.module_api import ModuleApi

from synapse_compliance._synapse_private import backfilled_downto, persisted_upto
from synapse_compliance.storage.room_events import RoomEvent, RoomEventStore
from synapse_compliance.storage.schema import SchemaManager

logger = logging.getLogger(__name__)

TICK_MS = 100
BATCH = 500
RETRY_AFTER_MS = 5_000
# Passes that handled no event write the cursor at most this often: re-reading a stretch of
# messages after a restart costs one query, a write per pass during a message flood does not.
PERSIST_EVERY_MS = 5_000


class RoomWatcher(Protocol):
    """Something that acts on persisted create and membership events (idempotently)."""

    async def on_room_event(self, event: RoomEvent) -> None:
        """Handle one event; raise to have it (and those after it) retried later."""


class RoomWatch:
    """Ticks, wakes the archiver, and feeds persisted room events to the watchers."""

    def __init__(
        self,
        api: ModuleApi,
        schema: SchemaManager,
        store: RoomEventStore,
        watchers: Sequence[RoomWatcher],
        wake_archiver: Callable[[], None],
    ) -> None:
        self._api = api
        self._schema = schema
        self._store = store
        self._watchers = list(watchers)
        self._wake_archiver = wake_archiver
        self._seen: tuple[int, int] | None = None
        self._pending = True  # start with one pass: events may have arrived while stopped
        self._running = False
        self._retry_at = 0
        self._position: int | None = None  # the cursor as last read or written here
        self._persisted_at = 0

    def start(self) -> None:
        """Start ticking, on the instance that runs background tasks."""
        if self._api.should_run_background_tasks():
            self._api.looping_background_call(self._tick, TICK_MS, desc="compliance_room_watch")

    async def _tick(self) -> None:
        if not self._schema.is_ready or self._running:
            return
        positions = (persisted_upto(self._api), backfilled_downto(self._api))
        moved = positions != self._seen
        if moved:
            self._seen = positions
            self._pending = True
        if self._pending and self._api.get_current_time_msec() >= self._retry_at:
            await self.run_once()
        if moved:  # after the watchers, so the archiver sees direct chats that grew as groups
            self._wake_archiver()

    async def run_once(self) -> int:
        """Hand every event persisted so far to the watchers; return how many were handled.

        A failing watcher ends the pass just before its event, which is retried later.
        """
        if self._running:
            return 0
        self._running = True
        self._pending = False
        handled = 0
        try:
            upto = persisted_upto(self._api)
            if self._position is None:
                self._position = await self._store.cursor(start_at=upto)
            while self._position < upto:
                events = await self._store.read(self._position, upto, BATCH)
                end = events[-1].stream_ordering if len(events) == BATCH else upto
                for event in events:
                    try:
                        await self._handle(event)
                    except Exception:
                        logger.exception(
                            "room watch: handling %s failed; retrying in %d ms",
                            event.event_id,
                            RETRY_AFTER_MS,
                        )
                        self._pending = True
                        self._retry_at = self._api.get_current_time_msec() + RETRY_AFTER_MS
                        await self._persist(event.stream_ordering - 1)
                        return handled
                    handled += 1
                if events or self._api.get_current_time_msec() - self._persisted_at >= PERSIST_EVERY_MS:
                    await self._persist(end)
                else:
                    self._position = end
        finally:
            self._running = False
        return handled

    async def _persist(self, position: int) -> None:
        await self._store.advance(position)
        self._position = position
        self._persisted_at = self._api.get_current_time_msec()

    async def _handle(self, event: RoomEvent) -> None:
        for watcher in self._watchers:
            await watcher.on_room_event(event)
