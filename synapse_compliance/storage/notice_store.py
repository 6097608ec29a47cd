"""The server-notice outbox: enqueue inside a decision's transaction, deliver from the main process."""

import json
from collections.abc import Mapping

import attrs
from synapse.module_api import LoggingTransaction, ModuleApi

from synapse_compliance.storage.schema import SchemaManager

MAX_ERROR_LENGTH = 500


@attrs.frozen
class PendingNotice:
    """A notice waiting to be delivered."""

    id: int
    user_id: str
    kind: str
    content: Mapping[str, object]
    attempts: int


@attrs.frozen
class NoticeRecord:
    """A notice as stored (for the admin API)."""

    id: int
    user_id: str
    kind: str
    content: Mapping[str, object]
    created_ts: int
    sent_ts: int | None
    event_id: str | None
    attempts: int
    last_error: str | None


def enqueue_notice_txn(
    txn: LoggingTransaction,
    *,
    user_id: str,
    kind: str,
    dedupe_key: str,
    content: Mapping[str, object],
    now_ms: int,
) -> None:
    """Queue a notice in the caller's transaction; a second enqueue with the same key is a no-op."""
    txn.execute(
        "INSERT INTO compliance_notices (user_id, kind, dedupe_key, content, created_ts, attempts,"
        " next_attempt_ts) VALUES (?, ?, ?, ?, ?, 0, ?) ON CONFLICT (dedupe_key) DO NOTHING",
        (user_id, kind, dedupe_key, json.dumps(dict(content), sort_keys=True), now_ms, now_ms),
    )


class NoticeStore:
    """Reads and settles the outbox."""

    def __init__(self, api: ModuleApi, schema: SchemaManager) -> None:
        self._api = api
        self._schema = schema

    async def due(self, now_ms: int, limit: int) -> list[PendingNotice]:
        """Undelivered notices whose next attempt is due, oldest first."""
        await self._schema.ready()

        def _txn(txn: LoggingTransaction) -> list[PendingNotice]:
            txn.execute(
                "SELECT id, user_id, kind, content, attempts FROM compliance_notices"
                " WHERE sent_ts IS NULL AND next_attempt_ts <= ? ORDER BY id LIMIT ?",
                (now_ms, limit),
            )
            return [PendingNotice(int(r[0]), r[1], r[2], json.loads(r[3]), int(r[4])) for r in txn.fetchall()]

        return await self._api.run_db_interaction("compliance_due_notices", _txn)

    async def mark_sent(self, notice_id: int, event_id: str, now_ms: int) -> None:
        """Record a delivery."""

        def _txn(txn: LoggingTransaction) -> None:
            txn.execute(
                "UPDATE compliance_notices SET sent_ts = ?, event_id = ?, attempts = attempts + 1,"
                " last_error = NULL WHERE id = ?",
                (now_ms, event_id, notice_id),
            )

        await self._api.run_db_interaction("compliance_mark_notice_sent", _txn)

    async def mark_failed(self, notice_id: int, error: str, retry_at_ms: int) -> None:
        """Record a failed attempt and when to try again."""

        def _txn(txn: LoggingTransaction) -> None:
            txn.execute(
                "UPDATE compliance_notices SET attempts = attempts + 1, last_error = ?,"
                " next_attempt_ts = ? WHERE id = ?",
                (error[:MAX_ERROR_LENGTH], retry_at_ms, notice_id),
            )

        await self._api.run_db_interaction("compliance_mark_notice_failed", _txn)

    async def for_user(self, user_id: str, limit: int) -> list[NoticeRecord]:
        """A user's notices, newest first."""
        await self._schema.ready()

        def _txn(txn: LoggingTransaction) -> list[NoticeRecord]:
            txn.execute(
                "SELECT id, user_id, kind, content, created_ts, sent_ts, event_id, attempts, last_error"
                " FROM compliance_notices WHERE user_id = ? ORDER BY id DESC LIMIT ?",
                (user_id, limit),
            )
            return [
                NoticeRecord(int(r[0]), r[1], r[2], json.loads(r[3]), int(r[4]), r[5], r[6], int(r[7]), r[8])
                for r in txn.fetchall()
            ]

        return await self._api.run_db_interaction("compliance_notices_for_user", _txn)
