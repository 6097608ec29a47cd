"""Verified-identity state: the current verification per user and every change to it.

The current row is a projection of the history; both, and the audit entry of the admin action
that caused the change, are written in one transaction. The gate reads the current state through
a `@cached` lookup that is invalidated across workers on every change (SYNAPSE_FACTS §12).
"""

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast

import attrs
from synapse.module_api import CachedFunction, LoggingTransaction, ModuleApi, cached

from synapse_compliance._synapse_private import MISSING, cached_now, get_clock
from synapse_compliance.core.decision import ALLOW, Decision
from synapse_compliance.core.identity import (
    NEVER_VERIFIED,
    Verification,
    VerificationChangeRequest,
    VerificationStatus,
    apply_verification_change,
    decide_verification_change,
    expire_verification,
    with_default_expiry,
)
from synapse_compliance.storage.audit_store import AuditEntry, append_audit_txn
from synapse_compliance.storage.identity_record_store import (
    IdentityRecordWrite,
    serializable_txn,
    write_identity_record_txn,
)
from synapse_compliance.storage.notice_store import enqueue_notice_txn
from synapse_compliance.storage.schema import SchemaManager


@attrs.frozen
class VerificationChangeOutcome:
    """The decision on a change and the verification in force afterwards."""

    decision: Decision
    verification: Verification
    # True when `provider_event_id` had been applied before: nothing was written this time.
    duplicate: bool = False


EXPIRY_ACTOR = "system:reverification"


@attrs.frozen
class ExpirySweep:
    """Who the re-verification sweep expired and who it warned."""

    expired: tuple[str, ...]
    warned: tuple[str, ...]


class ExpiryNotices(Protocol):
    """Composes the notices of the re-verification sweep (keyword arguments of `enqueue_notice_txn`)."""

    def expired(self, user_id: str, verification: Verification) -> dict[str, Any]:
        """The notice for a verification that has just expired."""
        ...

    def expiring(self, user_id: str, verification: Verification) -> dict[str, Any]:
        """The warning before a verification expires."""
        ...


@attrs.frozen
class VerificationHistoryEntry:
    """One recorded change of a user's verification."""

    id: int
    status: VerificationStatus
    level: int | None
    method: str
    actor: str
    note: str | None
    ts: int


class IdentityStore:
    """Reads and changes users' verification state."""

    def __init__(
        self,
        api: ModuleApi,
        schema: SchemaManager,
        *,
        reverify_after_ms: int | None = None,
        register_cache: bool = True,
    ) -> None:
        """`register_cache=False` for a second store in one process (the OIDC mapping provider):
        Synapse keeps one cached function per name for cross-worker invalidation, and it must be
        the `ComplianceModule`'s, which the gates read."""
        self._api = api
        self._schema = schema
        self._reverify_after_ms = reverify_after_ms
        # `@cached` needs these two attributes on its owner (SYNAPSE_FACTS §12).
        self.server_name = api.server_name
        self.clock = get_clock(api)
        if register_cache:
            api.register_cached_function(self._cached_verification)

    async def get_verification(self, user_id: str) -> Verification:
        """The user's current verification (`NEVER_VERIFIED` for users without a record)."""
        hit = cached_now(self._cached_verification, (user_id,))
        if hit is not MISSING:  # the hot path: no Deferred, no logcontext switch
            return cast(Verification, hit)
        # mypy sees `@cached` methods as unbound without Synapse's own mypy plugin; this is the
        # bound call it really is.
        lookup = cast(Callable[[str], Awaitable[Verification]], self._cached_verification)
        return await lookup(user_id)

    @property
    def verification_cache(self) -> CachedFunction[Any]:
        """The cached lookup behind `get_verification` (its name is the cross-worker key)."""
        return self._cached_verification

    async def read_verification(self, user_id: str) -> Verification:
        """The user's verification read from the database, bypassing the cache."""
        await self._schema.ready()
        return await self._api.run_db_interaction(
            "compliance_read_verification", _get_verification_txn, user_id
        )

    @cached(max_entries=100_000)
    async def _cached_verification(self, user_id: str) -> Verification:
        await self._schema.ready()
        return await self._api.run_db_interaction(
            "compliance_get_verification", _get_verification_txn, user_id
        )

    async def change_verification(
        self,
        user_id: str,
        req: VerificationChangeRequest,
        *,
        actor: str,
        reason: str,
        note: str | None,
        record: IdentityRecordWrite | None = None,
        provider_event_id: str | None = None,
    ) -> VerificationChangeOutcome:
        """Apply `req` to `user_id` if the state machine allows it, with history and audit entry.

        With `record`, the user's sealed personal data is stored in the same transaction, unless
        the document is already used by too many other accounts (`identity_already_used`).
        With `provider_event_id` (the KYC webhook), the id is stored with the change; an id seen
        before changes nothing and comes back as `duplicate`.
        Nothing is written when the change is refused. A verification granted without an expiry
        gets `identity.reverify_after` (when configured).
        """
        await self._schema.ready()
        req = with_default_expiry(req, self._reverify_after_ms)

        def _txn(txn: LoggingTransaction) -> VerificationChangeOutcome:
            if record is not None:
                serializable_txn(txn)  # the account count must not race (identity_record_store)
            current = _get_verification_txn(txn, user_id)
            if provider_event_id is not None and _provider_event_seen_txn(txn, provider_event_id):
                return VerificationChangeOutcome(ALLOW, current, duplicate=True)
            decision = decide_verification_change(current, req)
            if not decision.allowed:
                return VerificationChangeOutcome(decision, current)
            if record is not None:
                decision = write_identity_record_txn(txn, user_id, record, req.now_ms)
                if not decision.allowed:
                    return VerificationChangeOutcome(decision, current)
            new = apply_verification_change(current, req)
            if provider_event_id is not None:
                txn.execute(
                    "INSERT INTO compliance_kyc_events (event_id, user_id, status, received_ts)"
                    " VALUES (?, ?, ?, ?)",
                    (provider_event_id, user_id, req.status.value, req.now_ms),
                )
            txn.execute(
                "INSERT INTO compliance_verification"
                " (user_id, status, level, method, updated_ts, verified_ts, expires_ts)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (user_id) DO UPDATE SET status = EXCLUDED.status,"
                " level = EXCLUDED.level, method = EXCLUDED.method,"
                " updated_ts = EXCLUDED.updated_ts, verified_ts = EXCLUDED.verified_ts,"
                " expires_ts = EXCLUDED.expires_ts",
                (
                    user_id,
                    new.status.value,
                    new.level,
                    new.method,
                    new.updated_ts,
                    new.verified_ts,
                    new.expires_ts,
                ),
            )
            txn.execute(
                "INSERT INTO compliance_verification_history"
                " (user_id, status, level, method, actor, note, ts) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (user_id, new.status.value, new.level, req.method, actor, note, req.now_ms),
            )
            append_audit_txn(
                txn,
                AuditEntry(
                    actor=actor,
                    action="identity.verification.change",
                    target=user_id,
                    reason=reason,
                    details={
                        "from_status": current.effective_status(req.now_ms).value,
                        "to_status": new.status.value,
                        "level": new.level,
                        "method": req.method,
                        "expires_ts": new.expires_ts,
                        # Never the data itself: only that a sealed record came with the change.
                        **({"personal_data": True, "key_id": record.sealed.key_id} if record else {}),
                    },
                ),
                req.now_ms,
            )
            return VerificationChangeOutcome(decision, new)

        outcome = await self._api.run_db_interaction("compliance_change_verification", _txn)
        if outcome.decision.allowed and not outcome.duplicate:
            await self._api.invalidate_cache(self._cached_verification, (user_id,))
        return outcome

    async def list_history(
        self, user_id: str, *, before_id: int | None, limit: int
    ) -> list[VerificationHistoryEntry]:
        """The user's verification changes, newest first."""
        await self._schema.ready()

        def _txn(txn: LoggingTransaction) -> list[VerificationHistoryEntry]:
            txn.execute(
                "SELECT id, status, level, method, actor, note, ts"
                " FROM compliance_verification_history"
                " WHERE user_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
                (user_id, before_id if before_id is not None else 2**63 - 1, limit),
            )
            return [
                VerificationHistoryEntry(
                    id=int(r[0]),
                    status=VerificationStatus(r[1]),
                    level=r[2],
                    method=r[3],
                    actor=r[4],
                    note=r[5],
                    ts=int(r[6]),
                )
                for r in txn.fetchall()
            ]

        return await self._api.run_db_interaction("compliance_list_verification_history", _txn)

    async def sweep_expiry(
        self, now_ms: int, warning_ms: int, notices: "ExpiryNotices", limit: int
    ) -> ExpirySweep:
        """Expire verifications past their expiry and queue the notices owed, in one transaction.

        Expired users get a history row (actor `system:reverification`) and an `identity_expired`
        notice; users within `warning_ms` of expiry get one `identity_expiring` notice. Both
        notices are keyed by user and expiry, so running the sweep again sends nothing twice.
        """
        await self._schema.ready()

        def _txn(txn: LoggingTransaction) -> ExpirySweep:
            txn.execute(
                "SELECT user_id FROM compliance_verification WHERE status = ? AND expires_ts <= ?"
                " ORDER BY expires_ts LIMIT ?",
                (VerificationStatus.VERIFIED.value, now_ms, limit),
            )
            expired = [str(r[0]) for r in txn.fetchall()]
            for user_id in expired:
                current = _get_verification_txn(txn, user_id)
                new = expire_verification(current)
                txn.execute(
                    "UPDATE compliance_verification SET status = ?, level = NULL, updated_ts = ?"
                    " WHERE user_id = ?",
                    (new.status.value, now_ms, user_id),
                )
                txn.execute(
                    "INSERT INTO compliance_verification_history"
                    " (user_id, status, level, method, actor, note, ts) VALUES (?, ?, NULL, ?, ?, ?, ?)",
                    (
                        user_id,
                        new.status.value,
                        current.method or "",
                        EXPIRY_ACTOR,
                        "verification expired",
                        now_ms,
                    ),
                )
                enqueue_notice_txn(txn, now_ms=now_ms, **notices.expired(user_id, current))
            txn.execute(
                "SELECT v.user_id FROM compliance_verification AS v WHERE v.status = ?"
                " AND v.expires_ts > ? AND v.expires_ts <= ? AND NOT EXISTS ("
                " SELECT 1 FROM compliance_notices AS n"
                " WHERE n.dedupe_key"
                " = 'identity_expiring:' || v.user_id || ':' || CAST(v.expires_ts AS TEXT))"
                " ORDER BY v.expires_ts LIMIT ?",
                (VerificationStatus.VERIFIED.value, now_ms, now_ms + warning_ms, limit),
            )
            warned = [str(r[0]) for r in txn.fetchall()]
            for user_id in warned:
                enqueue_notice_txn(
                    txn, now_ms=now_ms, **notices.expiring(user_id, _get_verification_txn(txn, user_id))
                )
            return ExpirySweep(expired=tuple(expired), warned=tuple(warned))

        sweep = await self._api.run_db_interaction("compliance_sweep_expiry", _txn)
        for user_id in sweep.expired:
            await self._api.invalidate_cache(self._cached_verification, (user_id,))
        return sweep


def _provider_event_seen_txn(txn: LoggingTransaction, event_id: str) -> bool:
    txn.execute("SELECT 1 FROM compliance_kyc_events WHERE event_id = ?", (event_id,))
    return txn.fetchone() is not None


def _get_verification_txn(txn: LoggingTransaction, user_id: str) -> Verification:
    txn.execute(
        "SELECT status, level, method, updated_ts, verified_ts, expires_ts"
        " FROM compliance_verification WHERE user_id = ?",
        (user_id,),
    )
    row = txn.fetchone()
    if row is None:
        return NEVER_VERIFIED
    return Verification(
        status=VerificationStatus(row[0]),
        level=row[1],
        method=row[2],
        updated_ts=row[3],
        verified_ts=row[4],
        expires_ts=row[5],
    )
