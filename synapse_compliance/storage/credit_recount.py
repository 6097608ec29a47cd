"""Rebuild `compliance_credit_groups` (groups each local user created) from Synapse's own data.

Used by `POST admin/credit/recount` (inside Synapse, through `run_db_interaction`) and by
`synapse-compliance recount -c homeserver.yaml` (its own DB-API connection). Both drive the same
sans-I/O generator, `recount_steps`: it yields steps (functions of one `Sql` handle, each run
in one transaction) and is sent their results, so the logic exists once.

What counts (the rules of the live counting, DESIGN §4.1/§4.3):
- a room whose `m.room.create` was sent by a local user (not the server-notices user) and that
  is a governed group by `core.groups.is_governed_room`: recorded as a group
  (`io.synapse_compliance.room_kind`), a direct chat that became one (`compliance_groups`) or
  has more than two members now, and, for rooms the module never saw being made (created
  before it was installed), anything clients do not mark as a direct chat; direct chats count
  only under `scope.direct_chats: govern`;
- an upgraded room inherits its predecessor's kind and counts for its own creator (the user who
  upgraded); the predecessor stops counting;
- only while the creator's current membership is `join`.
Rooms this server is no longer in have no current state; their rows stop counting (their
creator cannot be joined). Rows are never deleted: a row that should not count gets
`ended_ts`, one that should gets `ended_ts = NULL` again, a missing one is added.

Private internals: the reads of Synapse's own tables (`rooms`, `current_state_events`,
`event_json`; checked against Synapse 1.163.2) are all in the `read_*` functions below, because
the module API has no way to list rooms or read other users' memberships in bulk. A recount
racing live membership changes may miss one; running it again settles it.
"""

import functools
import json
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from typing import Any, Protocol

from synapse_compliance.core.credit_recount import (
    GroupRow,
    RecountReport,
    RecountSettings,
    RoomCreate,
    RowChange,
    is_local,
    marker_of,
    plan_changes,
    wanted_rows,
)
from synapse_compliance.core.groups import KIND_GROUP, DirectChats
from synapse_compliance.storage.audit_store import AuditEntry, audit_statement

RECOUNT_ACTION = "credit.recount"
ROOM_BATCH = 200
WRITE_BATCH = 500
# Direct chats matter only at two members or fewer (`is_governed_room`); only then are member
# events read for their `is_direct` flag.
_DIRECT_MAX = 2


class Sql(Protocol):
    """One transaction's statements, `?` placeholders on either engine."""

    def rows(self, sql: str, args: Sequence[object]) -> list[tuple[Any, ...]]:
        """Run a query and return its rows."""
        ...

    def run(self, sql: str, args: Sequence[object]) -> int:
        """Run a statement and return how many rows it changed."""
        ...


class _Cursor(Protocol):
    """What the adapters need of a DB-API cursor or Synapse's `LoggingTransaction`."""

    @property
    def rowcount(self) -> int:
        """Rows changed by the last statement."""
        ...

    def fetchall(self) -> list[tuple[Any, ...]]:
        """The last query's rows."""
        ...


class _Executes(Protocol):
    def execute(self, sql: str, args: Any) -> Any:
        """Run one statement."""
        ...


class TxnSql:
    """`Sql` over Synapse's `LoggingTransaction` (which rewrites `?` for PostgreSQL itself)."""

    def __init__(self, txn: Any) -> None:
        self._txn = txn

    def rows(self, sql: str, args: Sequence[object]) -> list[tuple[Any, ...]]:
        """Run a query and return its rows."""
        self._txn.execute(sql, tuple(args))
        return [tuple(r) for r in self._txn.fetchall()]

    def run(self, sql: str, args: Sequence[object]) -> int:
        """Run a statement and return how many rows it changed."""
        self._txn.execute(sql, tuple(args))
        return int(self._txn.rowcount)


class DatabaseSql:
    """`Sql` over the CLI's connection (`key_rotation.Database`, which rewrites `?` itself)."""

    def __init__(self, db: _Executes) -> None:
        self._db = db

    def rows(self, sql: str, args: Sequence[object]) -> list[tuple[Any, ...]]:
        """Run a query and return its rows."""
        cursor: _Cursor = self._db.execute(sql, tuple(args))
        return [tuple(r) for r in cursor.fetchall()]

    def run(self, sql: str, args: Sequence[object]) -> int:
        """Run a statement and return how many rows it changed."""
        cursor: _Cursor = self._db.execute(sql, tuple(args))
        return int(cursor.rowcount)


# --- reads of Synapse's tables (private internals, see the module docstring) --------------------


def read_rooms(
    q: Sql, server_name: str, after_room: str, limit: int
) -> tuple[list[RoomCreate], int, str | None]:
    """Up to `limit` rooms after `after_room` (by id) that have a create event in current state.

    Returns:
        The rooms of local creators among them, how many rooms were read, and the last room id
        read (None: that was the last batch).
    """
    rows = q.rows(
        "SELECT r.room_id, ej.json FROM rooms r"
        " JOIN current_state_events c ON c.room_id = r.room_id"
        " AND c.type = 'm.room.create' AND c.state_key = ''"
        " JOIN event_json ej ON ej.event_id = c.event_id"
        " WHERE r.room_id > ? ORDER BY r.room_id LIMIT ?",
        (after_room, limit),
    )
    found: list[RoomCreate] = []
    for room_id, raw in rows:
        event = json.loads(raw)
        creator = event.get("sender")
        content = event.get("content")
        if not isinstance(creator, str) or not is_local(creator, server_name):
            continue
        content = content if isinstance(content, dict) else {}
        predecessor = content.get("predecessor")
        old_room = predecessor.get("room_id") if isinstance(predecessor, dict) else None
        marker = marker_of(content)
        membership = q.rows(
            "SELECT membership FROM current_state_events"
            " WHERE room_id = ? AND type = 'm.room.member' AND state_key = ?",
            (room_id, creator),
        )
        became = bool(q.rows("SELECT 1 FROM compliance_groups WHERE room_id = ?", (room_id,)))
        members: int | None = None
        direct_flag = False
        if marker != KIND_GROUP:
            counted = q.rows(
                "SELECT COUNT(*) FROM current_state_events WHERE room_id = ?"
                " AND type = 'm.room.member' AND membership IN ('join', 'invite')",
                (room_id,),
            )
            members = int(counted[0][0])
            if members <= _DIRECT_MAX:
                direct_flag = _has_direct_flag(q, room_id)
        found.append(
            RoomCreate(
                room_id=str(room_id),
                creator=creator,
                created_ts=int(event.get("origin_server_ts") or 0),
                marker=marker,
                predecessor=old_room if isinstance(old_room, str) and old_room != room_id else None,
                creator_membership=str(membership[0][0]) if membership else None,
                members=members,
                has_direct_flag=direct_flag,
                became_group=became,
            )
        )
    return found, len(rows), (str(rows[-1][0]) if len(rows) == limit else None)


def _has_direct_flag(q: Sql, room_id: str) -> bool:
    """Whether any member event in the room's current state says `is_direct: true`."""
    for (raw,) in q.rows(
        "SELECT ej.json FROM current_state_events c JOIN event_json ej ON ej.event_id = c.event_id"
        " WHERE c.room_id = ? AND c.type = 'm.room.member'",
        (room_id,),
    ):
        content = json.loads(raw).get("content")
        if isinstance(content, dict) and content.get("is_direct") is True:
            return True
    return False


# --- the module's own table ---------------------------------------------------------------------


def read_group_rows(q: Sql) -> list[GroupRow]:
    """Every row of `compliance_credit_groups`."""
    return [
        GroupRow(str(r[0]), str(r[1]), int(r[2]), None if r[3] is None else int(r[3]))
        for r in q.rows("SELECT room_id, creator, created_ts, ended_ts FROM compliance_credit_groups", ())
    ]


def apply_changes(q: Sql, changes: Sequence[RowChange], now_ms: int) -> dict[str, int]:
    """Write `changes`; each only if the row is still as the plan saw it. Returns counts by kind."""
    done = {"added": 0, "ended": 0, "restored": 0, "reassigned": 0}
    for c in changes:
        ended = None if c.counts else now_ms
        if c.kind == "added":
            n = q.run(
                "INSERT INTO compliance_credit_groups (room_id, creator, created_ts, ended_ts)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (room_id) DO NOTHING",
                (c.room_id, c.creator, c.created_ts, ended),
            )
        elif c.kind == "reassigned":
            n = q.run(
                "UPDATE compliance_credit_groups SET creator = ? WHERE room_id = ? AND creator <> ?",
                (c.creator, c.room_id, c.creator),
            )
        elif c.kind == "ended":
            n = q.run(
                "UPDATE compliance_credit_groups SET ended_ts = ? WHERE room_id = ? AND ended_ts IS NULL",
                (now_ms, c.room_id),
            )
        else:  # restored
            n = q.run(
                "UPDATE compliance_credit_groups SET ended_ts = NULL WHERE room_id = ?"
                " AND ended_ts IS NOT NULL",
                (c.room_id,),
            )
        done[c.kind] += max(0, n)
    return done


def append_audit(q: Sql, actor: str, reason: str, details: Mapping[str, object], now_ms: int) -> None:
    """The recount's audit entry."""
    q.run(*audit_statement(AuditEntry(actor, RECOUNT_ACTION, None, reason, details), now_ms))


# --- the driver -----------------------------------------------------------------------------------

Step = Callable[[Sql], Any]
RecountSteps = Generator[Step, Any, RecountReport]


def recount_steps(
    settings: RecountSettings,
    *,
    actor: str,
    reason: str,
    now_ms: int,
    progress: Callable[[int], None] | None = None,
) -> RecountSteps:
    """The recount without I/O: yields steps (one transaction each), is sent their results.

    Reads rooms in batches of `ROOM_BATCH`, writes in batches of `WRITE_BATCH`, and ends with
    the audit entry (`credit.recount`, the report as details).
    """
    rooms: dict[str, RoomCreate] = {}
    after = ""
    scanned = 0
    while True:
        found, read, last = yield functools.partial(
            _read_rooms_step, server_name=settings.server_name, after_room=after
        )
        rooms.update((r.room_id, r) for r in found)
        scanned += read
        if progress is not None:
            progress(scanned)
        if last is None:
            break
        after = last
    rows: list[GroupRow] = yield read_group_rows
    wanted = wanted_rows(rooms, settings)
    changes = plan_changes(wanted, rows)
    done = {"added": 0, "ended": 0, "restored": 0, "reassigned": 0}
    for i in range(0, len(changes), WRITE_BATCH):
        chunk = changes[i : i + WRITE_BATCH]
        counts: dict[str, int] = yield functools.partial(apply_changes, changes=chunk, now_ms=now_ms)
        for kind, n in counts.items():
            done[kind] += n
    report = RecountReport(
        rooms_scanned=scanned,
        local_rooms=len(rooms),
        groups=len(wanted),
        counting=sum(1 for w in wanted.values() if w.counts),
        **done,
    )
    yield functools.partial(append_audit, actor=actor, reason=reason, details=report.as_json(), now_ms=now_ms)
    return report


def _read_rooms_step(
    q: Sql, *, server_name: str, after_room: str
) -> tuple[list[RoomCreate], int, str | None]:
    return read_rooms(q, server_name, after_room, ROOM_BATCH)


def run_steps(steps: RecountSteps, execute: Callable[[Step], Any]) -> RecountReport:
    """Drive `steps` with a synchronous `execute` (the CLI's connection)."""
    try:
        step = next(steps)
        while True:
            step = steps.send(execute(step))
    except StopIteration as done:
        report: RecountReport = done.value
        return report


async def run_steps_async(steps: RecountSteps, execute: Callable[[Step], Awaitable[Any]]) -> RecountReport:
    """Drive `steps` with an asynchronous `execute` (Synapse's `run_db_interaction`)."""
    try:
        step = next(steps)
        while True:
            step = steps.send(await execute(step))
    except StopIteration as done:
        report: RecountReport = done.value
        return report


class _Connection(_Executes, Protocol):
    def begin(self) -> None:
        """Start a write transaction."""
        ...

    def commit(self) -> None:
        """Commit it."""
        ...

    def rollback(self) -> None:
        """Roll it back."""
        ...


def settings_from_homeserver_yaml(document: Mapping[str, Any], direct_chats: DirectChats) -> RecountSettings:
    """The recount's settings from homeserver.yaml (for the CLI, which has no Synapse).

    Raises:
        ValueError: `server_name` is missing.
    """
    server_name = document.get("server_name")
    if not isinstance(server_name, str) or not server_name:
        raise ValueError("homeserver.yaml has no server_name")
    notices = document.get("server_notices")
    localpart = notices.get("system_mxid_localpart") if isinstance(notices, Mapping) else None
    mxid = f"@{localpart}:{server_name}" if isinstance(localpart, str) and localpart else None
    return RecountSettings(server_name, direct_chats, mxid)


def recount_database(
    db: _Connection,
    settings: RecountSettings,
    *,
    actor: str,
    reason: str,
    now_ms: int,
    progress: Callable[[int], None] | None = None,
) -> RecountReport:
    """The recount over a DB-API connection (`key_rotation.Database`), each step a transaction."""

    def execute(step: Step) -> Any:
        db.begin()
        try:
            result = step(DatabaseSql(db))
            db.commit()
        except BaseException:
            db.rollback()
            raise
        return result

    steps = recount_steps(settings, actor=actor, reason=reason, now_ms=now_ms, progress=progress)
    return run_steps(steps, execute)
