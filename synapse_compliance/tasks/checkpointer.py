"""The checkpointer: signs every room's chain head every `archive.checkpoint_interval`.

One loop on the instance that runs background tasks, only when `archive.signing_key_file` is
set. It ticks every 10 seconds: a checkpoint is due when the latest one is at least an
interval old, so restarts do not reset the schedule. No checkpoint is made when no head changed
since the last one; while nothing is archived the heads are not even read again (the archive's
highest row id is compared instead). `POST admin/archive/checkpoint` makes one now.

The sink (`archive.checkpoint_sink`) is an outbox: a checkpoint is committed to the table first,
then appended to the file (one JSON line, flushed and fsynced, in a thread) and marked written.
A failed append is logged, shown in `GET admin/status` (error and pending count) and retried on
every tick, oldest first, so the file never silently misses a checkpoint. A crash between the
append and the mark appends that line again (at least once; the line carries its `seq`).
"""

import logging
import os
from collections.abc import Sequence

from signedjson.types import SigningKey, VerifyKey
from synapse.module_api import ModuleApi

from synapse_compliance.config import ArchiveConfig
from synapse_compliance.core.checkpoints import (
    CheckpointReport,
    StoredCheckpoint,
    key_id,
    verify_keys_for,
)
from synapse_compliance.storage.audit_store import AuditEntry
from synapse_compliance.storage.checkpoint_store import (
    CheckpointError,
    CheckpointStatus,
    CheckpointStore,
    MadeCheckpoint,
)
from synapse_compliance.storage.schema import SchemaManager

logger = logging.getLogger(__name__)

# How often the loop checks whether a checkpoint is due and retries the sink (one small query).
MAX_TICK_MS = 10_000
_WAIT_S = 0.01  # how often a request checks whether the running pass has ended


def append_lines(file_name: str, lines: Sequence[str]) -> None:
    """Append `lines` to a file, each ending in a newline, and fsync it (blocking: use a thread)."""
    with open(file_name, "a", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))
        f.flush()
        os.fsync(f.fileno())


class Checkpointer:
    """Makes checkpoints (loop and on demand) and feeds the sink."""

    def __init__(
        self,
        api: ModuleApi,
        config: ArchiveConfig,
        keys: Sequence[SigningKey],
        schema: SchemaManager,
        store: CheckpointStore,
    ) -> None:
        self._api = api
        self._key = keys[0] if keys else None
        self.verify_keys: dict[str, VerifyKey] = verify_keys_for(keys)
        self.interval_ms = config.checkpoint_interval_ms
        self.sink = config.checkpoint_sink
        self._schema = schema
        self._store = store
        self._running = False
        # The archive's highest row id when the loop last made (or skipped) a checkpoint.
        self._seen_top: int | None = None
        # The latest failure to append to the sink (cleared by the next success), for status.
        self.sink_error: str | None = None
        self.sink_error_ts: int | None = None

    @property
    def enabled(self) -> bool:
        """True when a signing key is configured."""
        return self._key is not None

    @property
    def key_id(self) -> str | None:
        """The id of the key that signs new checkpoints."""
        return key_id(self._key) if self._key is not None else None

    def start(self) -> None:
        """Start the loop, on the instance that runs background tasks, if checkpoints are on."""
        if self._key is None or not self._api.should_run_background_tasks():
            return
        tick = min(self.interval_ms, MAX_TICK_MS)
        self._api.looping_background_call(self._tick, tick, desc="compliance_archive_checkpoints")
        logger.info(
            "archive checkpoints: signing with %s every %d ms%s",
            self.key_id,
            self.interval_ms,
            f", appending to {self.sink}" if self.sink else "",
        )

    async def _tick(self) -> None:
        if not self._schema.is_ready or self._running:
            return
        self._running = True
        try:
            await self._flush_sink()
            status = await self._store.status()
            now = self._api.get_current_time_msec()
            if status.latest_ts is not None and now - status.latest_ts < self.interval_ms:
                return
            # Due, but only worth reading every head if rows were archived since the last look.
            top = await self._store.max_archive_id()
            if top == self._seen_top:
                return
            await self._make(None)
            self._seen_top = top
        except CheckpointError as e:
            logger.error("archive checkpoints stopped: %s", e)
        except Exception:
            logger.exception("archive checkpoint pass failed; retrying on the next tick")
        finally:
            self._running = False

    async def run_once(self, audit: AuditEntry) -> MadeCheckpoint:
        """Make a checkpoint now (unless no head changed), audited; then feed the sink.

        Raises:
            RuntimeError: checkpoints are off (no signing key).
            CheckpointError: the latest stored checkpoint is unreadable.
        """
        if self._key is None:
            raise RuntimeError("checkpoints are off: archive.signing_key_file is not set")
        while self._running:
            await self._api.sleep(_WAIT_S)
        self._running = True
        try:
            return await self._make(audit)
        finally:
            self._running = False

    async def verify(self, count: int, room_id: str | None = None) -> CheckpointReport:
        """Check the latest `count` checkpoints against the archive (signatures, links, rows)."""
        return await self._store.verify(self.verify_keys, count, room_id)

    async def status(self) -> CheckpointStatus:
        """The latest checkpoint and the sink's backlog, from the table."""
        return await self._store.status()

    async def sink_pending_count(self) -> int | None:
        """How many checkpoints wait for the sink (None without a sink)."""
        return (await self._store.status()).sink_pending if self.sink is not None else None

    async def _make(self, audit: AuditEntry | None) -> MadeCheckpoint:
        assert self._key is not None  # callers check `enabled`
        made = await self._store.make(self._key, self._api.get_current_time_msec(), audit)
        if made.created is not None:
            logger.info(
                "archive checkpoint %d: %d room head(s), hash %s",
                made.created.seq,
                len(made.created.heads),
                made.created.hash,
            )
        await self._flush_sink()
        return made

    async def _flush_sink(self) -> None:
        """Append every checkpoint not yet in the sink, oldest first; record a failure."""
        if self.sink is None:
            return
        while pending := await self._store.sink_pending():
            if not await self._append(pending):
                return
            await self._store.mark_sunk([p.seq for p in pending], self._api.get_current_time_msec())
            self.sink_error = self.sink_error_ts = None

    async def _append(self, pending: list[StoredCheckpoint]) -> bool:
        assert self.sink is not None
        try:
            await self._api.defer_to_thread(append_lines, self.sink, [p.text for p in pending])
        except OSError as e:
            error = f"{type(e).__name__}: {e.strerror or e}"
            # A WARNING for each new error; the same error again every tick only at DEBUG.
            log = logger.warning if error != self.sink_error else logger.debug
            self.sink_error = error
            self.sink_error_ts = self._api.get_current_time_msec()
            log(
                "archive checkpoint sink %s: cannot append checkpoint(s) %d-%d (%s); they stay "
                "queued and are retried every tick",
                self.sink,
                pending[0].seq,
                pending[-1].seq,
                self.sink_error,
            )
            return False
        return True
