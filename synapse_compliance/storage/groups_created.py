"""The groups each local user created, for `max_groups_created` (DESIGN §4.3).

One row per counted room in `compliance_credit_groups`: its creator, and `ended_ts` while it
does not count (its creator left it, or it was upgraded away). Written by the live counting
(tasks/group_count.py) and rebuilt by the recount (storage/credit_recount.py); read by the
creation gate and the credit API.
"""

from synapse.module_api import LoggingTransaction, ModuleApi

from synapse_compliance.storage.schema import SchemaManager


class GroupsCreatedStore:
    """Counting the groups each user created (`CreditStore.groups`)."""

    def __init__(self, api: ModuleApi, schema: SchemaManager) -> None:
        self._api = api
        self._schema = schema

    async def record_group_created(self, room_id: str, creator: str, now_ms: int) -> None:
        """Count `room_id` as a group `creator` created (idempotent)."""
        await self._schema.ready()

        def _txn(txn: LoggingTransaction) -> None:
            txn.execute(
                "INSERT INTO compliance_credit_groups (room_id, creator, created_ts) VALUES (?, ?, ?)"
                " ON CONFLICT (room_id) DO NOTHING",
                (room_id, creator, now_ms),
            )

        await self._api.run_db_interaction("compliance_record_group_created", _txn)

    async def record_group_upgraded(
        self, old_room: str, new_room: str, upgrader: str, present: bool, now_ms: int
    ) -> None:
        """An upgrade replaced a counted group: the replacement counts instead (for the upgrader).

        `present`: whether the upgrader is (or is about to be) in the new room; an upgrade
        replaces rooms nobody counts without effect.
        """
        await self._schema.ready()

        def _txn(txn: LoggingTransaction) -> None:
            txn.execute("SELECT 1 FROM compliance_credit_groups WHERE room_id = ?", (old_room,))
            if txn.fetchone() is None:
                return
            txn.execute(
                "UPDATE compliance_credit_groups SET ended_ts = ? WHERE room_id = ? AND ended_ts IS NULL",
                (now_ms, old_room),
            )
            txn.execute(
                "INSERT INTO compliance_credit_groups (room_id, creator, created_ts, ended_ts)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (room_id) DO NOTHING",
                (new_room, upgrader, now_ms, None if present else now_ms),
            )

        await self._api.run_db_interaction("compliance_record_group_upgraded", _txn)

    async def set_creator_present(self, room_id: str, user_id: str, present: bool, now_ms: int) -> None:
        """After `user_id`'s membership changed in `room_id`: if they created it, (un)count it."""
        await self._schema.ready()

        def _txn(txn: LoggingTransaction) -> None:
            txn.execute(
                "UPDATE compliance_credit_groups SET ended_ts = ? WHERE room_id = ? AND creator = ?",
                (None if present else now_ms, room_id, user_id),
            )

        await self._api.run_db_interaction("compliance_set_creator_present", _txn)

    async def count_groups_created(self, user_id: str) -> int:
        """Groups `user_id` created that still count (they have not left them)."""
        await self._schema.ready()

        def _txn(txn: LoggingTransaction) -> int:
            txn.execute(
                "SELECT COUNT(*) FROM compliance_credit_groups WHERE creator = ? AND ended_ts IS NULL",
                (user_id,),
            )
            row = txn.fetchone()
            assert row is not None  # COUNT(*) always yields a row
            return int(row[0])

        return await self._api.run_db_interaction("compliance_count_groups_created", _txn)
