"""Credit state: the ledger, and the score and tier per user (the groups each user created are
`CreditStore.groups`, storage/groups_created.py).

A user whose credit never changed has no rows: their score is `credit.initial_verified` when
their identity is verified now, else `credit.initial` (read through the cached `IdentityStore`,
so a verification before the first change is honoured). Their first change writes that initial
grant as their first ledger row (reason code `initial`), so `score == sum(ledger)` always holds
for every user with a ledger. Reads never write.

A change writes the ledger row, the new score and tier, and (for admin changes) the audit entry
in one transaction, and so is the server notice to the user when the change moves them to
another tier. Recovery (`recover`) is a change like the others whose transaction also records
the recovery interval it was granted for. The hot path reads the score row through a `@cached`
lookup invalidated across workers after every change (SYNAPSE_FACTS §12).
"""

from collections.abc import Awaitable, Callable
from typing import cast

import attrs
from synapse.module_api import LoggingTransaction, ModuleApi, cached

from synapse_compliance._synapse_private import MISSING, cached_now, get_clock, is_postgres
from synapse_compliance.config import CreditConfig
from synapse_compliance.core.credit import (
    INITIAL,
    RECOVERY,
    LedgerEntry,
    Tier,
    apply_delta,
    recovery_delta,
    tier_for,
)
from synapse_compliance.core.identity import VerificationStatus
from synapse_compliance.messages import tier_change_notice_body
from synapse_compliance.notices import notice_content
from synapse_compliance.storage.audit_store import AuditEntry, append_audit_txn
from synapse_compliance.storage.groups_created import GroupsCreatedStore
from synapse_compliance.storage.identity_store import IdentityStore
from synapse_compliance.storage.notice_store import enqueue_notice_txn
from synapse_compliance.storage.schema import SchemaManager

MODULE_ACTOR = "synapse_compliance"
TIER_NOTICE_KIND = "credit_tier_changed"
_MAX_ID = 2**63 - 1


@attrs.frozen
class CreditState:
    """A user's score and tier; `started` is False while they have no ledger yet."""

    score: int
    tier: Tier
    started: bool


@attrs.frozen
class CreditChange:
    """One requested change."""

    delta: int
    reason_code: str
    reason: str
    actor: str
    case_id: str | None = None
    # Admin changes are also written to the audit log, under this action.
    audit_action: str | None = None


@attrs.frozen
class CreditChangeOutcome:
    """What a change did: the delta applied after clamping, and the state before and after."""

    applied: int
    before: CreditState
    after: CreditState
    # A tier change queued a server notice to the user (in the change's transaction).
    notice_queued: bool = False


@attrs.frozen
class StoredLedgerEntry:
    """A ledger row with its id (the pagination position)."""

    id: int
    entry: LedgerEntry


class CreditStore:
    """Reads and changes users' credit."""

    def __init__(
        self, api: ModuleApi, schema: SchemaManager, config: CreditConfig, identities: IdentityStore
    ) -> None:
        self._api = api
        self._schema = schema
        self._config = config
        self._identities = identities
        self.groups = GroupsCreatedStore(api, schema)
        # `@cached` needs these two attributes on its owner (SYNAPSE_FACTS §12).
        self.server_name = api.server_name
        self.clock = get_clock(api)
        api.register_cached_function(self._cached_row)
        self._notice_listener: Callable[[], None] | None = None

    def set_notice_listener(self, listener: Callable[[], None]) -> None:
        """Call `listener` after a change queued a tier-change notice (e.g. `NoticeSender.wake`)."""
        self._notice_listener = listener

    async def get_credit(self, user_id: str) -> CreditState:
        """The user's score and tier (no DB access when the caches are warm)."""
        hit = cached_now(self._cached_row, (user_id,))
        if hit is MISSING:
            lookup = cast(  # see IdentityStore
                Callable[[str], Awaitable[tuple[int, str] | None]], self._cached_row
            )
            hit = await lookup(user_id)
        row = cast(tuple[int, str] | None, hit)
        if row is None:
            return self._state(await self._initial_score(user_id), None, started=False)
        return self._state(row[0], row[1], started=True)

    def _state(self, score: int, previous_tier: str | None, *, started: bool) -> CreditState:
        c = self._config
        return CreditState(score, tier_for(score, c.tiers, previous_tier, c.hysteresis), started)

    async def _initial_score(self, user_id: str) -> int:
        verification = await self._identities.get_verification(user_id)
        status = verification.effective_status(self._api.get_current_time_msec())
        verified = status is VerificationStatus.VERIFIED
        return self._config.initial_verified if verified else self._config.initial

    @cached(max_entries=100_000)
    async def _cached_row(self, user_id: str) -> tuple[int, str] | None:
        await self._schema.ready()
        return await self._api.run_db_interaction("compliance_get_credit", _get_row_txn, user_id)

    async def change(self, user_id: str, change: CreditChange) -> CreditChangeOutcome:
        """Apply `change` (clamped to `[credit.min, credit.max]`) with ledger row and audit entry.

        A change that moves the user to another tier also queues a server notice to them (old
        and new tier, the reason, the new limits) in the same transaction.
        """
        outcome = await self._change(user_id, "compliance_change_credit", lambda txn, before: change)
        assert outcome is not None  # this `decide` always changes
        return outcome

    async def recover(
        self, user_id: str, *, period: int, points: int, ceiling: int
    ) -> CreditChangeOutcome | None:
        """Grant recovery for interval `period`, unless granted in it before or at `ceiling`.

        The interval is recorded in the grant's transaction, after the user's row is locked, so
        concurrent loops and restarts never grant one interval twice. Returns None when nothing
        was granted.
        """

        def decide(txn: LoggingTransaction, before: CreditState) -> CreditChange | None:
            delta = recovery_delta(before.score, points, ceiling)
            if delta <= 0:
                return None
            txn.execute(
                "INSERT INTO compliance_credit_recovery (user_id, period, ts) VALUES (?, ?, ?)"
                " ON CONFLICT (user_id) DO UPDATE SET period = excluded.period, ts = excluded.ts"
                " WHERE compliance_credit_recovery.period < excluded.period",
                (user_id, period, self._api.get_current_time_msec()),
            )
            if txn.rowcount != 1:
                return None  # already granted in this interval
            return CreditChange(
                delta=delta,
                reason_code=RECOVERY,
                reason=f"credit recovery: up to {points} points per interval while below {ceiling}",
                actor=MODULE_ACTOR,
            )

        return await self._change(user_id, "compliance_recover_credit", decide)

    async def _change(
        self,
        user_id: str,
        desc: str,
        decide: Callable[[LoggingTransaction, CreditState], CreditChange | None],
    ) -> CreditChangeOutcome | None:
        """One change in one transaction; `decide` sees the locked state and may decline (None)."""
        await self._schema.ready()
        initial = await self._initial_score(user_id)
        now = self._api.get_current_time_msec()
        c = self._config

        def _txn(txn: LoggingTransaction) -> CreditChangeOutcome | None:
            if is_postgres(txn):
                # Changes of one user queue on their row lock instead of failing Synapse's
                # REPEATABLE READ with serialization errors (and exhausting its retries) when
                # many arrive at once; each statement then sees what the one before committed.
                # Must be the transaction's first statement (see `serializable_txn`).
                txn.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
            fresh = self._state(initial, None, started=False)
            # Whoever creates the row writes the initial grant; a concurrent first change
            # waits here for that one to commit, then finds the row.
            txn.execute(
                "INSERT INTO compliance_credit (user_id, score, tier, updated_ts) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (user_id) DO NOTHING",
                (user_id, initial, fresh.tier.name, now),
            )
            if txn.rowcount == 1:
                before = fresh
                _append_txn(txn, user_id, LedgerEntry(initial, INITIAL, "initial credit", MODULE_ACTOR, now))
            else:
                row = _get_row_txn(txn, user_id, for_update=True)
                assert row is not None  # inserted above or before
                before = self._state(row[0], row[1], started=True)
            change = decide(txn, before)
            if change is None:
                return None  # (an initial grant written above stays: the ledger has started)
            applied = apply_delta(before.score, change.delta, c.min, c.max)
            after = self._state(before.score + applied, before.tier.name, started=True)
            ledger_id = _append_txn(
                txn,
                user_id,
                LedgerEntry(applied, change.reason_code, change.reason, change.actor, now, change.case_id),
            )
            txn.execute(
                "UPDATE compliance_credit SET score = ?, tier = ?, updated_ts = ? WHERE user_id = ?",
                (after.score, after.tier.name, now, user_id),
            )
            if change.audit_action is not None:
                append_audit_txn(
                    txn,
                    AuditEntry(
                        actor=change.actor,
                        action=change.audit_action,
                        target=user_id,
                        reason=change.reason,
                        details={
                            "requested_delta": change.delta,
                            "applied_delta": applied,
                            "from_score": before.score,
                            "to_score": after.score,
                            "from_tier": before.tier.name,
                            "to_tier": after.tier.name,
                        },
                    ),
                    now,
                )
            notice = after.tier.name != before.tier.name
            if notice:
                _enqueue_tier_notice_txn(
                    txn, user_id, ledger_id, before=before, after=after, change=change, now_ms=now
                )
            return CreditChangeOutcome(applied, before, after, notice_queued=notice)

        outcome = await self._api.run_db_interaction(desc, _txn)
        await self._api.invalidate_cache(self._cached_row, (user_id,))  # also after a declined first change
        if outcome is not None and outcome.notice_queued and self._notice_listener is not None:
            self._notice_listener()
        return outcome

    async def due_for_recovery(self, *, period: int, ceiling: int, after: str, limit: int) -> list[str]:
        """Users with a credit row, below `ceiling`, not yet granted in `period`; by user id after `after`."""
        await self._schema.ready()

        def _txn(txn: LoggingTransaction) -> list[str]:
            txn.execute(
                "SELECT c.user_id FROM compliance_credit c"
                " LEFT JOIN compliance_credit_recovery r ON r.user_id = c.user_id"
                " WHERE c.score < ? AND c.user_id > ? AND (r.period IS NULL OR r.period < ?)"
                " ORDER BY c.user_id LIMIT ?",
                (ceiling, after, period, limit),
            )
            return [str(r[0]) for r in txn.fetchall()]

        return await self._api.run_db_interaction("compliance_due_for_recovery", _txn)

    async def list_ledger(
        self, user_id: str, *, before_id: int | None, limit: int
    ) -> list[StoredLedgerEntry]:
        """The user's ledger, newest first."""
        await self._schema.ready()

        def _txn(txn: LoggingTransaction) -> list[StoredLedgerEntry]:
            txn.execute(
                "SELECT id, delta, reason_code, reason, actor, case_id, ts FROM compliance_credit_ledger"
                " WHERE user_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
                (user_id, before_id if before_id is not None else _MAX_ID, limit),
            )
            return [
                StoredLedgerEntry(
                    id=int(r[0]),
                    entry=LedgerEntry(
                        delta=int(r[1]),
                        reason_code=r[2],
                        reason=r[3],
                        actor=r[4],
                        case_id=r[5],
                        ts=int(r[6]),
                    ),
                )
                for r in txn.fetchall()
            ]

        return await self._api.run_db_interaction("compliance_list_credit_ledger", _txn)

    # --- groups created, for `max_groups_created` --------------------------------------------


def _get_row_txn(
    txn: LoggingTransaction, user_id: str, *, for_update: bool = False
) -> tuple[int, str] | None:
    lock = " FOR UPDATE" if for_update and is_postgres(txn) else ""
    txn.execute(f"SELECT score, tier FROM compliance_credit WHERE user_id = ?{lock}", (user_id,))  # noqa: S608 (a fixed suffix)
    row = txn.fetchone()
    return None if row is None else (int(row[0]), str(row[1]))


def _append_txn(txn: LoggingTransaction, user_id: str, e: LedgerEntry) -> int:
    """Append a ledger row; returns its id."""
    txn.execute(
        "INSERT INTO compliance_credit_ledger (user_id, delta, reason_code, reason, actor, case_id, ts)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (user_id, e.delta, e.reason_code, e.reason, e.actor, e.case_id, e.ts),
    )
    row = txn.fetchone()
    assert row is not None  # RETURNING yields the new row
    return int(row[0])


def _tier_facts(tier: Tier) -> dict[str, object]:
    """A tier's limits for a notice's machine-readable part.

    Event content may not hold floats (Matrix canonical JSON), so the message rate per second
    is a decimal string there.
    """
    facts = attrs.asdict(tier)
    facts["message_rate"] = {
        "per_second": f"{tier.message_rate.per_second:g}",
        "burst": tier.message_rate.burst,
    }
    return facts


def _enqueue_tier_notice_txn(
    txn: LoggingTransaction,
    user_id: str,
    ledger_id: int,
    *,
    before: CreditState,
    after: CreditState,
    change: CreditChange,
    now_ms: int,
) -> None:
    """Queue the server notice for a tier change, keyed by the ledger row that caused it."""
    body = tier_change_notice_body(before.tier, after.tier, after.score, change.reason)
    content = notice_content(
        TIER_NOTICE_KIND,
        body,
        from_tier=before.tier.name,
        to_tier=after.tier.name,
        score=after.score,
        reason_code=change.reason_code,
        limits=_tier_facts(after.tier),
    )
    enqueue_notice_txn(
        txn,
        user_id=user_id,
        kind=TIER_NOTICE_KIND,
        dedupe_key=f"{TIER_NOTICE_KIND}:{user_id}:{ledger_id}",
        content=content,
        now_ms=now_ms,
    )
