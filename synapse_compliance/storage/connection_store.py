"""Connection records: the module's copy of Synapse's `user_ips` (DESIGN §4.4, issue #6).

Theory of operation. Synapse keeps one `user_ips` row per (user, access token, IP) with the user
agent, device and the time it was last seen, refreshed at most every 2 minutes per row
(`LAST_SEEN_GRANULARITY`, synapse/storage/databases/main/client_ips.py:55), and deletes rows
older than `user_ips_max_age` (28d by default). The copy keeps **one row per (user, device, IP,
user agent)** with the earliest and latest `last_seen` it has read. Every individual sighting is
not available to keep: Synapse itself overwrites them. So `first_seen` is the first sighting
copied, which is at most about one pass interval after the real first use.

A batch is read from `user_ips` and written here in one transaction together with the new mark,
so a crash between batches loses nothing and a re-read is harmless: the upsert keeps the minimum
`first_seen` and the maximum `last_seen`, and writes nothing when neither moves.

Pruning (`retention.max_days`) deletes by `last_seen`, in bounded batches, skipping users under
an active legal hold (`compliance_legal_holds`, read in the same transaction), each batch with
its audit entry.

The pure helpers (`connection_key`, `merge_sightings`, `next_position`) have no I/O; the txn
functions take any DB-API cursor with `?` placeholders, so unit tests run them on plain
sqlite3 and psycopg2 connections.
"""

import hashlib
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import attrs

from synapse_compliance._synapse_private import UserIpRow, read_user_ips_txn
from synapse_compliance.storage.audit_store import AuditEntry, append_audit_txn
from synapse_compliance.storage.hold_store import touch_holds_version_txn

if TYPE_CHECKING:
    from synapse.module_api import ModuleApi

    from synapse_compliance.storage.schema import SchemaManager

MARK = "user_ips"
PRUNE_ACTION = "connections.prune"
# Before any mark: sorts before every row (user ids are never empty).
START: UserIpRow = (0, "", "", "", "")


@attrs.frozen
class Sighting:
    """One connection record (user, device, IP, user agent) seen from `first_seen` to `last_seen`."""

    user_id: str
    device_id: str | None
    ip: str
    user_agent: str
    first_seen: int
    last_seen: int

    @property
    def key(self) -> str:
        """The record's unique key."""
        return connection_key(self.user_id, self.device_id, self.ip, self.user_agent)


@attrs.frozen
class StoredConnection:
    """A connection record as stored."""

    id: int
    sighting: Sighting
    first_copied_ts: int
    last_copied_ts: int


@attrs.frozen
class ConnectionsState:
    """The copy's mark and the figures of its last pass."""

    last_seen_mark: int
    rows: int
    last_pass_ts: int | None
    last_pass_scanned: int | None
    last_pass_changed: int | None
    last_pass_pruned: int | None


@attrs.frozen
class PruneConnections:
    """A prune of records last seen before `cutoff_ms`, audited under `actor` and `reason`."""

    cutoff_ms: int
    batch_size: int
    actor: str
    reason: str


@attrs.frozen
class BatchResult:
    """What one batch read and changed, and where the next one starts."""

    scanned: int
    changed: int
    position: UserIpRow


def connection_key(user_id: str, device_id: str | None, ip: str, user_agent: str) -> str:
    """SHA-256 (hex) of the tuple, as JSON so that no two tuples share an encoding."""
    encoded = json.dumps([user_id, device_id, ip, user_agent], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


def merge_sightings(rows: Iterable[UserIpRow]) -> list[Sighting]:
    """One sighting per connection record in `rows` (rows of several tokens of one device merge).

    An empty device id (Synapse's NULL, read through COALESCE) becomes None. Order: first
    appearance in `rows`.
    """
    merged: dict[tuple[str, str | None, str, str], Sighting] = {}
    for last_seen, user_id, device, ip, user_agent in rows:
        tup = (user_id, device or None, ip, user_agent)
        old = merged.get(tup)
        if old is None:
            merged[tup] = Sighting(*tup, first_seen=last_seen, last_seen=last_seen)
        else:
            merged[tup] = attrs.evolve(
                old, first_seen=min(old.first_seen, last_seen), last_seen=max(old.last_seen, last_seen)
            )
    return list(merged.values())


def next_position(rows: list[UserIpRow], limit: int) -> UserIpRow | None:
    """Where the batch after `rows` starts; None when `rows` was the last (short) batch."""
    return rows[-1] if len(rows) == limit and rows else None


def upsert_sighting_txn(txn: Any, s: Sighting, now_ms: int) -> int:
    """Insert or widen one record; 1 if it changed, 0 if it already covered the sighting."""
    txn.execute(
        "INSERT INTO compliance_connections (connection_key, user_id, device_id, ip, user_agent,"
        " first_seen, last_seen, first_copied_ts, last_copied_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (connection_key) DO UPDATE SET"
        " first_seen = CASE WHEN EXCLUDED.first_seen < compliance_connections.first_seen"
        " THEN EXCLUDED.first_seen ELSE compliance_connections.first_seen END,"
        " last_seen = CASE WHEN EXCLUDED.last_seen > compliance_connections.last_seen"
        " THEN EXCLUDED.last_seen ELSE compliance_connections.last_seen END,"
        " last_copied_ts = EXCLUDED.last_copied_ts"
        " WHERE EXCLUDED.last_seen > compliance_connections.last_seen"
        " OR EXCLUDED.first_seen < compliance_connections.first_seen",
        (s.key, s.user_id, s.device_id, s.ip, s.user_agent, s.first_seen, s.last_seen, now_ms, now_ms),
    )
    return max(0, int(txn.rowcount))


def copy_batch_txn(txn: Any, after: UserIpRow, limit: int, now_ms: int) -> BatchResult:
    """Copy the `user_ips` rows after `after` (at most `limit`) and raise the mark past them."""
    rows = read_user_ips_txn(txn, after, limit)
    changed = sum(upsert_sighting_txn(txn, s, now_ms) for s in merge_sightings(rows))
    if rows:
        txn.execute(
            "UPDATE compliance_connections_mark SET last_seen_mark = ? WHERE name = ? AND last_seen_mark < ?",
            (rows[-1][0], MARK, rows[-1][0]),
        )
    return BatchResult(len(rows), changed, next_position(rows, limit) or after)


def prune_batch_txn(txn: Any, request: PruneConnections, now_ms: int) -> int:
    """Delete up to `request.batch_size` records last seen before the cutoff, except those of
    users under an active legal hold; audit the batch when it deleted anything.

    The holds are read in this transaction, which also touches the holds version row, so on
    PostgreSQL a prune racing a new hold fails to serialize and is retried (storage/hold_store.py).
    """
    touch_holds_version_txn(txn)
    txn.execute(
        "DELETE FROM compliance_connections WHERE id IN ("
        " SELECT id FROM compliance_connections WHERE last_seen < ? AND user_id NOT IN ("
        " SELECT user_id FROM compliance_legal_holds WHERE user_id IS NOT NULL AND released_ts IS NULL)"
        " ORDER BY last_seen LIMIT ?)",
        (request.cutoff_ms, request.batch_size),
    )
    deleted = max(0, int(txn.rowcount))
    if deleted:
        details = {"cutoff_ts": request.cutoff_ms, "deleted": deleted}
        append_audit_txn(txn, AuditEntry(request.actor, PRUNE_ACTION, None, request.reason, details), now_ms)
    return deleted


def list_for_user_txn(
    txn: Any, user_id: str, before: tuple[int, int] | None, limit: int
) -> list[StoredConnection]:
    """A user's records, newest `last_seen` first (ties: newest id first), below `before`."""
    where = " AND (last_seen < ? OR (last_seen = ? AND id < ?))" if before else ""
    args: tuple[object, ...] = (before[0], before[0], before[1]) if before else ()
    txn.execute(
        "SELECT id, device_id, ip, user_agent, first_seen, last_seen, first_copied_ts, last_copied_ts"  # noqa: S608 (fixed clause)
        f" FROM compliance_connections WHERE user_id = ?{where} ORDER BY last_seen DESC, id DESC LIMIT ?",
        (user_id, *args, limit),
    )
    return [
        StoredConnection(
            id=int(r[0]),
            sighting=Sighting(user_id, r[1], r[2], r[3], int(r[4]), int(r[5])),
            first_copied_ts=int(r[6]),
            last_copied_ts=int(r[7]),
        )
        for r in txn.fetchall()
    ]


class ConnectionStore:
    """The `compliance_connections` table and its mark."""

    def __init__(self, api: "ModuleApi", schema: "SchemaManager") -> None:
        self._api = api
        self._schema = schema

    async def mark(self) -> int:
        """The latest `last_seen` copied (0 before the first pass)."""
        await self._schema.ready()

        def _txn(txn: Any) -> int:
            txn.execute("SELECT last_seen_mark FROM compliance_connections_mark WHERE name = ?", (MARK,))
            row = txn.fetchone()
            return int(row[0]) if row is not None else 0

        return await self._api.run_db_interaction("compliance_connections_mark", _txn)

    async def copy_batch(self, after: UserIpRow, limit: int) -> BatchResult:
        """Copy one batch of `user_ips` after keyset position `after`."""
        await self._schema.ready()
        now = self._api.get_current_time_msec()
        return await self._api.run_db_interaction(
            "compliance_copy_connections", copy_batch_txn, after, limit, now
        )

    async def finish_pass(self, figures: tuple[int, int, int], audit: AuditEntry | None) -> None:
        """Record a pass's figures (scanned, changed, pruned) and, for a pass an admin asked
        for, its audit entry."""
        await self._schema.ready()
        now = self._api.get_current_time_msec()

        def _txn(txn: Any) -> None:
            txn.execute(
                "UPDATE compliance_connections_mark SET last_pass_ts = ?, last_pass_scanned = ?,"
                " last_pass_changed = ?, last_pass_pruned = ? WHERE name = ?",
                (now, *figures, MARK),
            )
            if audit is not None:
                append_audit_txn(txn, audit, now)

        await self._api.run_db_interaction("compliance_finish_connections_pass", _txn)

    async def state(self) -> ConnectionsState:
        """The mark, the number of records and the last pass's figures."""
        await self._schema.ready()

        def _txn(txn: Any) -> ConnectionsState:
            txn.execute("SELECT COUNT(*) FROM compliance_connections")
            count = txn.fetchone()
            txn.execute(
                "SELECT last_seen_mark, last_pass_ts, last_pass_scanned, last_pass_changed,"
                " last_pass_pruned FROM compliance_connections_mark WHERE name = ?",
                (MARK,),
            )
            row = txn.fetchone()
            if row is None:  # the delta inserts it; only a hand-edited database lacks it
                raise RuntimeError("compliance_connections_mark has no user_ips row")
            return ConnectionsState(int(row[0]), int(count[0]) if count else 0, *row[1:5])

        return await self._api.run_db_interaction("compliance_connections_state", _txn)

    async def list_for_user(
        self, user_id: str, before: tuple[int, int] | None, limit: int, read_by: AuditEntry
    ) -> list[StoredConnection]:
        """A user's records, newest first, after the page position `before` ((last_seen, id)).

        `read_by` is appended to the audit log in the same transaction, with how many records
        the page had, so no record is shown without its entry committed.
        """
        await self._schema.ready()
        now = self._api.get_current_time_msec()

        def _txn(txn: Any) -> list[StoredConnection]:
            records = list_for_user_txn(txn, user_id, before, limit)
            entry = attrs.evolve(read_by, details={**read_by.details, "records": len(records)})
            append_audit_txn(txn, entry, now)
            return records

        return await self._api.run_db_interaction("compliance_list_connections", _txn)

    async def prune_connections(self, request: PruneConnections) -> int:
        """Delete records last seen before `request.cutoff_ms`, except those of held users.

        Bounded batches, each one transaction with its audit entry. Returns how many went.
        """
        await self._schema.ready()
        deleted = 0
        while True:
            now = self._api.get_current_time_msec()
            n = await self._api.run_db_interaction(
                "compliance_prune_connections", prune_batch_txn, request, now
            )
            deleted += n
            if n < request.batch_size:
                return deleted
