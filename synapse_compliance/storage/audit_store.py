"""The append-only audit log: every admin action, with actor, target, reason and time.

Writers never call this store on its own: they append the entry with `append_audit_txn` inside the
transaction that makes the change, so an action and its audit row commit together or not at all.
"""

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:  # Synapse-free at run time: the CLI appends audit entries over its own connection
    from synapse.module_api import LoggingTransaction, ModuleApi

    from synapse_compliance.storage.schema import SchemaManager


@attrs.frozen
class AuditEntry:
    """One admin action as recorded."""

    actor: str
    action: str
    target: str | None
    reason: str
    details: Mapping[str, object] = attrs.field(factory=dict)


@attrs.frozen
class AuditRecord:
    """An audit entry as stored: the entry plus its id and time."""

    id: int
    ts: int
    entry: AuditEntry


def audit_statement(entry: AuditEntry, now_ms: int) -> tuple[str, tuple[object, ...]]:
    """The statement (`?` placeholders) that appends `entry`: for Synapse's transactions and
    for the CLI's own connection alike."""
    return (
        "INSERT INTO compliance_audit_log (ts, actor, action, target, reason, details)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (
            now_ms,
            entry.actor,
            entry.action,
            entry.target,
            entry.reason,
            json.dumps(dict(entry.details), sort_keys=True),
        ),
    )


def append_audit_txn(txn: "LoggingTransaction", entry: AuditEntry, now_ms: int) -> None:
    """Append `entry` inside the caller's transaction."""
    txn.execute(*audit_statement(entry, now_ms))


@attrs.frozen
class AuditQuery:
    """Filters and page position for listing the audit log, newest first."""

    limit: int
    before_id: int | None = None
    target: str | None = None
    actor: str | None = None
    action: str | None = None


class AuditStore:
    """Reads the audit log (writes happen through `append_audit_txn`)."""

    def __init__(self, api: "ModuleApi", schema: "SchemaManager") -> None:
        self._api = api
        self._schema = schema

    async def list_entries(self, query: AuditQuery) -> list[AuditRecord]:
        """Entries matching `query`, newest first, at most `query.limit`."""
        await self._schema.ready()
        return await self._api.run_db_interaction("compliance_list_audit_entries", _list_entries_txn, query)


def _list_entries_txn(txn: "LoggingTransaction", query: AuditQuery) -> list[AuditRecord]:
    clauses: list[str] = []
    args: list[object] = []
    for column, value in (
        ("id < ?", query.before_id),
        ("target = ?", query.target),
        ("actor = ?", query.actor),
        ("action = ?", query.action),
    ):
        if value is not None:
            clauses.append(column)
            args.append(value)
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    txn.execute(
        "SELECT id, ts, actor, action, target, reason, details FROM compliance_audit_log"  # noqa: S608 (only fixed column clauses are joined)
        f" {where} ORDER BY id DESC LIMIT ?",
        (*args, query.limit),
    )
    return [
        AuditRecord(
            id=int(row[0]),
            ts=int(row[1]),
            entry=AuditEntry(
                actor=row[2],
                action=row[3],
                target=row[4],
                reason=row[5],
                details=json.loads(row[6]),
            ),
        )
        for row in txn.fetchall()
    ]
