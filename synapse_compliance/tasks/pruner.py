"""The pruner: deletes archive rows past `retention.max_days` that no legal hold keeps (DESIGN §4.4).

Only when `retention.max_days` is set, and only on the instance that runs background tasks: a
loop every `retention.prune_interval` (default 1d), and `POST admin/archive/prune` on demand.
A pass computes one cutoff (`core.retention.prune_cutoff`, which refuses anything that would
reach rows younger than `min_days`), pages through the rooms with a head, and prunes each room
whose first row is past the cutoff in batches of `retention.prune_batch_size` rows, one
transaction (with its anchor and audit entry) per batch. Passes never overlap: an on-demand pass
waits for the running one to end, then runs.
"""

import logging

import attrs
from synapse.module_api import ModuleApi

from synapse_compliance.config import RetentionConfig
from synapse_compliance.core.retention import RetentionPolicy, prune_cutoff
from synapse_compliance.storage.prune_store import PruneRequest, PruneStore
from synapse_compliance.storage.schema import SchemaManager

logger = logging.getLogger(__name__)

LOOP_ACTOR = "synapse_compliance"
_ROOMS_PAGE = 500  # rooms looked at per candidate query
_WAIT_S = 0.05  # how often an on-demand pass checks whether the running one has ended


@attrs.frozen
class PruneResult:
    """What one pruner pass did.

    Attributes:
        cutoff_ts: rows archived before this were due (None: pruning is off).
        rows: rows deleted.
        rooms: rooms that lost rows.
        refused_rooms: rooms left alone because their chain is broken (room id, reason).
    """

    cutoff_ts: int | None
    rows: int = 0
    rooms: int = 0
    refused_rooms: tuple[tuple[str, str], ...] = ()


class PruningOff(Exception):
    """`retention.max_days` is not set, so nothing is ever pruned."""


class Pruner:
    """Runs pruner passes: from the loop and on demand."""

    def __init__(
        self, api: ModuleApi, retention: RetentionConfig, schema: SchemaManager, store: PruneStore
    ) -> None:
        self._api = api
        self._config = retention
        self._policy = RetentionPolicy(retention.min_days, retention.max_days)
        self._schema = schema
        self._store = store
        self._running = False

    @property
    def enabled(self) -> bool:
        """Whether pruning is configured (`retention.max_days` set)."""
        return self._policy.max_days is not None

    def start(self) -> None:
        """Start the loop on the instance that runs background tasks, when pruning is configured."""
        if not self.enabled or not self._api.should_run_background_tasks():
            return
        self._api.looping_background_call(
            self._loop_pass, self._config.prune_interval_ms, desc="compliance_pruner"
        )
        logger.info(
            "archive pruning on: rows older than %s days go every %d ms (holds respected)",
            self._policy.max_days,
            self._config.prune_interval_ms,
        )

    async def _loop_pass(self) -> None:
        if not self._schema.is_ready or self._running:
            return
        try:
            await self.run_once(LOOP_ACTOR, f"retention.max_days is {self._policy.max_days}")
        except Exception:
            logger.exception("pruner pass failed; retrying in %d ms", self._config.prune_interval_ms)

    async def run_once(self, actor: str, reason: str) -> PruneResult:
        """Prune everything due now; each batch is audited under `actor` and `reason`.

        Raises:
            PruningOff: `retention.max_days` is not set.
            UnsafeRetention: the policy would reach rows younger than `min_days`.
        """
        if not self.enabled:
            raise PruningOff()
        while self._running:
            await self._api.sleep(_WAIT_S)
        self._running = True
        try:
            return await self._pass(actor, reason)
        finally:
            self._running = False

    async def _pass(self, actor: str, reason: str) -> PruneResult:
        cutoff = prune_cutoff(self._policy, self._api.get_current_time_msec())
        assert cutoff is not None  # `enabled` was checked
        rows = rooms = 0
        refused: list[tuple[str, str]] = []
        after: str | None = ""
        while after is not None:
            due, after = await self._store.candidate_rooms(after, cutoff, _ROOMS_PAGE)
            for room_id in due:
                request = PruneRequest(room_id, cutoff, self._config.prune_batch_size, actor, reason)
                room_rows = 0
                while True:
                    batch = await self._store.prune_batch(request)
                    room_rows += batch.rows
                    if batch.refused is not None:
                        logger.error(
                            "not pruning room %s: its archive chain is broken (%s); run verify",
                            room_id,
                            batch.refused,
                        )
                        refused.append((room_id, batch.refused))
                    if not batch.more:
                        break
                if room_rows:
                    rows += room_rows
                    rooms += 1
        if rows or refused:
            logger.info(
                "pruned %d archive row(s) in %d room(s); %d room(s) refused", rows, rooms, len(refused)
            )
        return PruneResult(cutoff, rows, rooms, tuple(refused))
