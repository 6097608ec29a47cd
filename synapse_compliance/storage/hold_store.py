"""Legal holds: placing, releasing and listing them, and the lookups pruning needs.

A hold names exactly one room or one user. Placing and releasing write the hold row and the
audit entry in one transaction, and bump `compliance_retention_state.holds_version`, which every
prune transaction also updates: on PostgreSQL a prune that started before a hold committed then
fails to serialize, is retried by Synapse and sees the hold (SYNAPSE_FACTS §10).

Released holds are kept with the release's time, actor and reason; a `hold_id` names one hold
for good, so it can never be re-placed on another target.
"""

import attrs
from synapse.module_api import LoggingTransaction, ModuleApi

from synapse_compliance.storage.audit_store import AuditEntry, append_audit_txn
from synapse_compliance.storage.schema import SchemaManager

PLACE_ACTION = "hold.place"
RELEASE_ACTION = "hold.release"

_COLUMNS = (
    "id, hold_id, room_id, user_id, reason, created_ts, created_by, released_ts, released_by, release_reason"
)


@attrs.frozen
class HoldTarget:
    """What a hold keeps: one room or one user (exactly one is set)."""

    room_id: str | None = None
    user_id: str | None = None

    def __attrs_post_init__(self) -> None:
        if (self.room_id is None) == (self.user_id is None):
            raise ValueError("a hold names exactly one of room_id and user_id")

    @property
    def value(self) -> str:
        """The held room or user id."""
        return self.room_id if self.room_id is not None else str(self.user_id)


@attrs.frozen
class Hold:
    """A legal hold as stored (`released_ts` None while it is active)."""

    id: int
    hold_id: str
    target: HoldTarget
    reason: str
    created_ts: int
    created_by: str
    released_ts: int | None = None
    released_by: str | None = None
    release_reason: str | None = None

    @property
    def active(self) -> bool:
        """True until the hold is released."""
        return self.released_ts is None


class HoldConflict(Exception):
    """`hold_id` already names a different hold (another target, or a released one)."""

    def __init__(self, existing: Hold) -> None:
        super().__init__(existing.hold_id)
        self.existing = existing


@attrs.frozen
class HoldChange:
    """A hold after a place or release, and whether the call changed anything."""

    hold: Hold
    changed: bool


@attrs.frozen
class HoldQuery:
    """Filters and page position for listing holds, newest first."""

    limit: int
    before_id: int | None = None
    active: bool | None = None  # None: active and released
    room_id: str | None = None
    user_id: str | None = None


class HoldStore:
    """Reads and changes legal holds."""

    def __init__(self, api: ModuleApi, schema: SchemaManager) -> None:
        self._api = api
        self._schema = schema

    async def place(self, hold_id: str, target: HoldTarget, reason: str, actor: str) -> HoldChange:
        """Place hold `hold_id` on `target`, audited; placing the same active hold again is a no-op.

        Raises:
            HoldConflict: `hold_id` names a hold on another target, or a released hold.
        """
        await self._schema.ready()
        now = self._api.get_current_time_msec()

        def _txn(txn: LoggingTransaction) -> HoldChange:
            existing = _get_txn(txn, hold_id)
            if existing is not None:
                if existing.target == target and existing.active:
                    return HoldChange(existing, changed=False)
                raise HoldConflict(existing)
            txn.execute(
                "INSERT INTO compliance_legal_holds (hold_id, room_id, user_id, reason, created_ts,"
                " created_by) VALUES (?, ?, ?, ?, ?, ?)",
                (hold_id, target.room_id, target.user_id, reason, now, actor),
            )
            _bump_version_txn(txn)
            kind = "room" if target.room_id is not None else "user"
            append_audit_txn(
                txn,
                AuditEntry(actor, PLACE_ACTION, target.value, reason, {"hold_id": hold_id, "kind": kind}),
                now,
            )
            placed = _get_txn(txn, hold_id)
            assert placed is not None  # inserted just now
            return HoldChange(placed, changed=True)

        return await self._api.run_db_interaction("compliance_place_hold", _txn)

    async def release(self, hold_id: str, reason: str, actor: str) -> HoldChange | None:
        """Release hold `hold_id`, audited; None when there is no such hold.

        Releasing a released hold changes nothing (its first release is kept).
        """
        await self._schema.ready()
        now = self._api.get_current_time_msec()

        def _txn(txn: LoggingTransaction) -> HoldChange | None:
            existing = _get_txn(txn, hold_id)
            if existing is None:
                return None
            if not existing.active:
                return HoldChange(existing, changed=False)
            txn.execute(
                "UPDATE compliance_legal_holds SET released_ts = ?, released_by = ?, release_reason = ?"
                " WHERE hold_id = ? AND released_ts IS NULL",
                (now, actor, reason, hold_id),
            )
            _bump_version_txn(txn)
            append_audit_txn(
                txn,
                AuditEntry(actor, RELEASE_ACTION, existing.target.value, reason, {"hold_id": hold_id}),
                now,
            )
            released = _get_txn(txn, hold_id)
            assert released is not None
            return HoldChange(released, changed=True)

        return await self._api.run_db_interaction("compliance_release_hold", _txn)

    async def get(self, hold_id: str) -> Hold | None:
        """The hold named `hold_id`, if any."""
        await self._schema.ready()
        return await self._api.run_db_interaction("compliance_get_hold", _get_txn, hold_id)

    async def list_holds(self, query: HoldQuery) -> list[Hold]:
        """Holds matching `query`, newest first, at most `query.limit`."""
        await self._schema.ready()
        return await self._api.run_db_interaction("compliance_list_holds", _list_txn, query)

    async def count_active(self) -> int:
        """How many holds are active."""
        await self._schema.ready()

        def _txn(txn: LoggingTransaction) -> int:
            txn.execute("SELECT COUNT(*) FROM compliance_legal_holds WHERE released_ts IS NULL")
            row = txn.fetchone()
            return int(row[0]) if row is not None else 0

        return await self._api.run_db_interaction("compliance_count_active_holds", _txn)

    async def room_is_archived(self, room_id: str) -> bool:
        """Whether the archive has (or had, before pruning) rows of `room_id`."""
        await self._schema.ready()

        def _txn(txn: LoggingTransaction) -> bool:
            txn.execute("SELECT 1 FROM compliance_archive_heads WHERE room_id = ?", (room_id,))
            return txn.fetchone() is not None

        return await self._api.run_db_interaction("compliance_room_is_archived", _txn)


def room_held_txn(txn: LoggingTransaction, room_id: str) -> bool:
    """Whether an active hold keeps `room_id`, inside the caller's transaction."""
    txn.execute(
        "SELECT 1 FROM compliance_legal_holds WHERE room_id = ? AND released_ts IS NULL LIMIT 1",
        (room_id,),
    )
    return txn.fetchone() is not None


def held_room_ids_txn(txn: LoggingTransaction) -> frozenset[str]:
    """Every room an active hold keeps, inside the caller's transaction."""
    txn.execute(
        "SELECT room_id FROM compliance_legal_holds WHERE room_id IS NOT NULL AND released_ts IS NULL"
    )
    return frozenset(str(r[0]) for r in txn.fetchall())


def held_user_ids_txn(txn: LoggingTransaction) -> frozenset[str]:
    """Every user an active hold keeps, inside the caller's transaction (also for connection records)."""
    txn.execute(
        "SELECT user_id FROM compliance_legal_holds WHERE user_id IS NOT NULL AND released_ts IS NULL"
    )
    return frozenset(str(r[0]) for r in txn.fetchall())


def touch_holds_version_txn(txn: LoggingTransaction) -> None:
    """Update the holds version row without changing it, to serialize with hold changes."""
    txn.execute("UPDATE compliance_retention_state SET value = value WHERE name = 'holds_version'")


def _bump_version_txn(txn: LoggingTransaction) -> None:
    txn.execute("UPDATE compliance_retention_state SET value = value + 1 WHERE name = 'holds_version'")


def _hold(r: tuple[object, ...]) -> Hold:
    return Hold(
        id=int(str(r[0])),
        hold_id=str(r[1]),
        target=HoldTarget(
            room_id=None if r[2] is None else str(r[2]), user_id=None if r[3] is None else str(r[3])
        ),
        reason=str(r[4]),
        created_ts=int(str(r[5])),
        created_by=str(r[6]),
        released_ts=None if r[7] is None else int(str(r[7])),
        released_by=None if r[8] is None else str(r[8]),
        release_reason=None if r[9] is None else str(r[9]),
    )


def _get_txn(txn: LoggingTransaction, hold_id: str) -> Hold | None:
    txn.execute(f"SELECT {_COLUMNS} FROM compliance_legal_holds WHERE hold_id = ?", (hold_id,))  # noqa: S608 (fixed columns)
    row = txn.fetchone()
    return _hold(tuple(row)) if row is not None else None


def _list_txn(txn: LoggingTransaction, query: HoldQuery) -> list[Hold]:
    clauses: list[str] = []
    args: list[object] = []
    for clause, value in (
        ("id < ?", query.before_id),
        ("room_id = ?", query.room_id),
        ("user_id = ?", query.user_id),
    ):
        if value is not None:
            clauses.append(clause)
            args.append(value)
    if query.active is not None:
        clauses.append("released_ts IS NULL" if query.active else "released_ts IS NOT NULL")
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    txn.execute(
        f"SELECT {_COLUMNS} FROM compliance_legal_holds {where} ORDER BY id DESC LIMIT ?",  # noqa: S608 (fixed clauses)
        (*args, query.limit),
    )
    return [_hold(tuple(r)) for r in txn.fetchall()]
