"""The connection-records copy: Synapse's `user_ips` into `compliance_connections` (issue #6).

Synapse deletes its connection records (user, device, IP, user agent, last seen) after
`user_ips_max_age` (28d by default, SYNAPSE_FACTS §13); the rules need them as long as the
archive. One loop, on the instance that runs background tasks, every
`archive.connections_interval` (default 1h) and once shortly after start-up (so frequent
restarts cannot starve it), copies what changed since its mark.

Which rows: the public `api.get_user_ip_and_agents(user_id, since_ts)` is the reference for the
semantics (local users, one row per token and IP, `last_seen` in milliseconds whatever its
docstring says, SYNAPSE_FACTS §14), but it is asked per user and lacks the device id, so a pass
through it costs O(local users) queries however little changed. The pass instead reads the
`user_ips` rows with `last_seen` past the mark (`_synapse_private.read_user_ips_txn`), O(changes),
in keyset batches of `archive.batch_size`.

Late rows: Synapse stamps `last_seen` when the request arrives but writes rows in a batch every
5 s (client_ips.py:468), from another worker's replication stream when `user_ips` is written
elsewhere, so a row can commit with a `last_seen` below a mark already taken. Each pass therefore
re-reads `LATE_COMMIT_MS` below its mark; re-reading is idempotent (the upsert keeps min/max and
writes nothing when neither moves).

Retention: records follow `retention.max_days` like the archive. After copying, each pass
deletes the records last seen before the cutoff (`core.retention.prune_cutoff`, which refuses
anything younger than `min_days`), except those of users under an active legal hold, in batches
of `retention.prune_batch_size`, each audited (`connections.prune`). Age is Synapse's `last_seen`,
stamped by the server (not by a client), so a record is kept `max_days` after its connection.
With the copy off, the loop still prunes what was copied before.
"""

import logging

import attrs
from synapse.module_api import ModuleApi

from synapse_compliance.config import ComplianceConfig
from synapse_compliance.core.retention import RetentionPolicy, prune_cutoff
from synapse_compliance.storage.audit_store import AuditEntry
from synapse_compliance.storage.connection_store import ConnectionStore, PruneConnections
from synapse_compliance.storage.schema import SchemaManager

logger = logging.getLogger(__name__)

LATE_COMMIT_MS = 5 * 60_000  # far above Synapse's 5 s write batching and replication delay
FIRST_PASS_DELAY_MS = 10_000
AUDIT_ACTION = "connections.run"
LOOP_ACTOR = "synapse_compliance"
_WAIT_S = 0.05  # how often an on-demand pass checks whether the running one has ended


@attrs.frozen
class ConnectionsPass:
    """What one pass did: `user_ips` rows read, records added or widened, records pruned, and
    the mark after."""

    scanned: int
    changed: int
    pruned: int
    mark: int


def pass_start(mark: int) -> int:
    """The `last_seen` a pass starts reading from, given the mark the last one reached."""
    return max(0, mark - LATE_COMMIT_MS)


class ConnectionCopier:
    """Runs copy passes: from the loop, and on demand (`POST admin/connections/run`)."""

    def __init__(
        self, api: ModuleApi, config: ComplianceConfig, schema: SchemaManager, store: ConnectionStore
    ) -> None:
        self._api = api
        self._enabled = config.archive.connection_records
        self._interval_ms = config.archive.connections_interval_ms
        self._batch_size = config.archive.batch_size
        self._policy = RetentionPolicy(config.retention.min_days, config.retention.max_days)
        self._prune_batch_size = config.retention.prune_batch_size
        self._schema = schema
        self._store = store
        self._running = False

    @property
    def enabled(self) -> bool:
        """Whether `archive.connection_records` is on."""
        return self._enabled

    @property
    def active(self) -> bool:
        """Whether a pass has anything to do: copy, or prune past `retention.max_days`."""
        return self._enabled or self._policy.max_days is not None

    @property
    def interval_ms(self) -> int:
        """Time between loop passes."""
        return self._interval_ms

    def start(self) -> None:
        """Start the loop on the instance that runs background tasks, if it has work."""
        if not self.active or not self._api.should_run_background_tasks():
            return
        self._api.looping_background_call(self._loop_pass, self._interval_ms, desc="compliance_connections")
        self._api.delayed_background_call(
            FIRST_PASS_DELAY_MS, self._first_pass, desc="compliance_connections_first"
        )
        logger.info(
            "connection records: a pass every %d ms (copy %s; pruning past retention.max_days: %s)",
            self._interval_ms,
            "on" if self._enabled else "off",
            self._policy.max_days or "off",
        )

    async def _first_pass(self) -> None:
        try:
            await self._schema.ready()
        except Exception:  # the schema upgrade logs its own failure; the loop tries again
            return
        await self._loop_pass()

    async def _loop_pass(self) -> None:
        if not self._schema.is_ready:
            logger.debug("connection records: schema not ready; skipping this turn")
            return
        if self._running:  # a running pass covers this turn
            logger.debug("connection records: a pass is running; skipping this turn")
            return
        try:
            await self.run_once()
        except Exception:
            logger.exception("connection records pass failed; retrying in %d ms", self._interval_ms)

    async def run_once(self, audit: AuditEntry | None = None) -> ConnectionsPass:
        """Copy everything Synapse has written to `user_ips` so far, then prune what is due.

        If a pass is already running, this one waits for it to end and then runs, so when it
        returns every row committed before the call has been copied.

        Args:
            audit: the audit entry of an admin's request, written with the pass's figures; its
                actor and reason also go on the pass's prune entries.

        Raises:
            UnsafeRetention: the retention policy would reach records younger than `min_days`.
        """
        while self._running:
            await self._api.sleep(_WAIT_S)
        self._running = True
        try:
            scanned, changed = await self._copy() if self._enabled else (0, 0)
            pruned = await self._prune(audit)
            if audit is not None:
                details = {"scanned": scanned, "changed": changed, "pruned": pruned}
                audit = attrs.evolve(audit, details=details)
            await self._store.finish_pass((scanned, changed, pruned), audit)
            mark = await self._store.mark()
        finally:
            self._running = False
        logger.info(
            "connection records: read %d user_ips row(s), %d record(s) added or updated, %d pruned; mark %d",
            scanned,
            changed,
            pruned,
            mark,
        )
        return ConnectionsPass(scanned, changed, pruned, mark)

    async def _copy(self) -> tuple[int, int]:
        scanned = changed = 0
        position = (pass_start(await self._store.mark()), "", "", "", "")
        while True:
            batch = await self._store.copy_batch(position, self._batch_size)
            scanned += batch.scanned
            changed += batch.changed
            if batch.position == position:
                return scanned, changed
            position = batch.position

    async def _prune(self, audit: AuditEntry | None) -> int:
        cutoff = prune_cutoff(self._policy, self._api.get_current_time_msec())
        if cutoff is None:
            return 0
        if audit is not None:
            actor, reason = audit.actor, audit.reason
        else:
            actor, reason = LOOP_ACTOR, f"retention.max_days is {self._policy.max_days}"
        return await self._store.prune_connections(
            PruneConnections(cutoff, self._prune_batch_size, actor, reason)
        )
