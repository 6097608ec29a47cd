"""The pruner: deletes archive rows past `retention.max_days` that no legal hold keeps (DESIGN §4.4).

Only when `retention.max_days` is set, and only on the instance that runs background tasks: a
loop every `retention.prune_interval` (default 1d), and `POST admin/archive/prune` on demand.
A pass computes one cutoff (`core.retention.prune_cutoff`, which refuses anything that would
reach rows younger than `min_days`). On SQLite it pages through the rooms with a head, and
prunes each room whose first row is past the cutoff in batches of `retention.prune_batch_size`
rows, one transaction (with its anchor and audit entry) per batch. On PostgreSQL, where the
archive is partitioned by month (core/partitions.py), it drops each month whose every row is
past the cutoff whole (storage/partition_prune.py); a month that cannot go whole (a hold keeps
a row of it, say) is pruned row by row as above, up to its end. So on PostgreSQL a row goes
when its month is past `max_days`: up to a month after it is itself. The exception is an
archive partitioned on upgrade: its old rows, in `compliance_archive_before`, are pruned row by
row as above until that whole partition is past the cutoff, and then it is dropped like a month.
Passes never overlap: an on-demand pass waits for the running one to end, then runs.
"""

import logging
from collections.abc import Iterable, Sequence

import attrs
from synapse.module_api import ModuleApi

from synapse_compliance.config import RetentionConfig
from synapse_compliance.core.partitions import Partition, expired_oldest_first
from synapse_compliance.core.retention import RetentionPolicy, prune_cutoff
from synapse_compliance.storage.partition_prune import (
    LOCKED,
    DropRequest,
    PartitionOutcome,
    PartitionPruneStore,
)
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
        rows: rows deleted (by the row and with dropped partitions).
        rooms: rooms that lost rows.
        refused_rooms: rooms left alone because their chain is broken (room id, reason).
        dropped_partitions: on PostgreSQL, the month partitions dropped whole.
        kept_partitions: on PostgreSQL, expired months that could not go whole, and why
            (`storage.partition_prune`); their unheld rows were pruned row by row.
    """

    cutoff_ts: int | None
    rows: int = 0
    rooms: int = 0
    refused_rooms: tuple[tuple[str, str], ...] = ()
    dropped_partitions: tuple[str, ...] = ()  # PostgreSQL: months that went whole
    kept_partitions: tuple[tuple[str, str], ...] = ()  # expired months kept (name, why)


class PruningOff(Exception):
    """`retention.max_days` is not set, so nothing is ever pruned."""


class Pruner:
    """Runs pruner passes: from the loop and on demand."""

    def __init__(
        self,
        api: ModuleApi,
        retention: RetentionConfig,
        schema: SchemaManager,
        store: PruneStore,
        partitions: PartitionPruneStore,
    ) -> None:
        self._api = api
        self._config = retention
        self._policy = RetentionPolicy(retention.min_days, retention.max_days)
        self._schema = schema
        self._store = store
        self._partitions = partitions
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
        tally = _Tally(actor, reason)
        partitions = await self._partitions.partitions()
        # An archive partitioned on upgrade keeps its old rows in `before`, which can span years:
        # until all of it is past the cutoff, its rows go row by row as they did before. (Every
        # row older than the cutoff is then in it: every other partition starts after it ends.)
        unexpired_before = any(p.lower is None and not p.expired(cutoff) for p in partitions or ())
        if partitions is not None and not unexpired_before:
            await self._partitions_pass(expired_oldest_first(partitions, cutoff), cutoff, tally)
        else:
            after: str | None = ""
            while after is not None:
                due, after = await self._store.candidate_rooms(after, cutoff, _ROOMS_PAGE)
                for room_id in due:
                    await self._prune_room(room_id, cutoff, tally)
        if tally.rows or tally.refused or tally.kept:
            logger.info(
                "pruned %d archive row(s) in %d room(s), %d partition(s) dropped, %d kept;"
                " %d room(s) refused",
                tally.rows,
                len(tally.rooms),
                len(tally.dropped),
                len(tally.kept),
                len(tally.refused),
            )
        return tally.result(cutoff)

    async def _partitions_pass(self, expired: Sequence[Partition], cutoff: int, tally: "_Tally") -> None:
        """PostgreSQL: drop each expired month that may go whole; prune the others row by row.

        Oldest first, so a month whose rows went row by row can let the next one go whole. A
        kept month's rows are pruned up to its own end, never into a month not yet expired:
        those wait to go whole.
        """
        for partition in expired:
            outcome = await self._partitions.check(partition)
            if outcome.kept is None:
                request = DropRequest(partition, cutoff, tally.actor, tally.reason)
                outcome = await self._partitions.drop(request, outcome.spans)
            if outcome.dropped:
                tally.add_drop(outcome)
                continue
            assert outcome.kept is not None and partition.upper is not None  # expired: bounded
            tally.kept.append((partition.name, outcome.kept))
            tally.refuse(outcome.refused)
            if outcome.kept == LOCKED:  # the lock will not come soon: try again next pass
                logger.warning(
                    "could not drop archive partition %s: its lock was not granted (a long export"
                    " or verify is reading the archive); the next pass tries again",
                    partition.name,
                )
                break
            for room_id in await self._partitions.rooms_in(partition):
                if room_id not in tally.refused_rooms:
                    await self._prune_room(room_id, partition.upper, tally)

    async def _prune_room(self, room_id: str, cutoff: int, tally: "_Tally") -> None:
        """Prune one room's rows archived before `cutoff`, batch by batch."""
        request = PruneRequest(room_id, cutoff, self._config.prune_batch_size, tally.actor, tally.reason)
        while True:
            batch = await self._store.prune_batch(request)
            tally.add_rows(room_id, batch.rows)
            if batch.refused is not None:
                tally.refuse(((room_id, batch.refused),))
            if not batch.more:
                break


@attrs.define
class _Tally:
    """What a pass has done so far."""

    actor: str
    reason: str
    rows: int = 0
    rooms: set[str] = attrs.Factory(set)
    refused: list[tuple[str, str]] = attrs.Factory(list)
    dropped: list[str] = attrs.Factory(list)
    kept: list[tuple[str, str]] = attrs.Factory(list)

    @property
    def refused_rooms(self) -> set[str]:
        return {room for room, _ in self.refused}

    def add_rows(self, room_id: str, rows: int) -> None:
        if rows:
            self.rows += rows
            self.rooms.add(room_id)

    def add_drop(self, outcome: PartitionOutcome) -> None:
        self.dropped.append(outcome.partition.name)
        for span in outcome.spans:
            self.add_rows(span.room_id, span.rows)

    def refuse(self, rooms: Iterable[tuple[str, str]]) -> None:
        for room_id, why in rooms:
            if room_id not in self.refused_rooms:
                logger.error(
                    "not pruning room %s: its archive chain is broken (%s); run verify", room_id, why
                )
                self.refused.append((room_id, why))

    def result(self, cutoff: int) -> PruneResult:
        return PruneResult(
            cutoff, self.rows, len(self.rooms), tuple(self.refused), tuple(self.dropped), tuple(self.kept)
        )
