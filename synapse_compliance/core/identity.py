"""Verified identities: the state machine and the identity gate (DESIGN §4.2).

Theory of operation. Every local user has one current `Verification`; users never seen by the
module are `unverified`. The lifecycle is

    unverified → pending → verified → expired | revoked

with these extra edges, each of which an experienced operator needs: `pending → unverified`
(a check was abandoned or rejected), `verified → verified` (renewal or a change of assurance
level), and `expired | revoked → pending | verified` (re-verification; a revoked identity comes
back only by a new decision). `TRANSITIONS` is the whole table; anything else is refused.

A verification with `expires_ts` in the past counts as expired at once, whether or not the
expiry sweep has recorded it yet, so a late sweep never lets an expired user through.

The gate refuses a gated action (`identity.required_for`) to every user whose effective status
is not `verified`, with reason `identity_unverified` and the status in the facts so the message
can say which.
"""

from enum import Enum

import attrs

from synapse_compliance.core.decision import ALLOW, FORBIDDEN, INVALID_PARAM, Decision

MIN_LEVEL = 1
MAX_LEVEL = 3


class VerificationStatus(Enum):
    """Where a user's identity verification stands."""

    UNVERIFIED = "unverified"
    PENDING = "pending"
    VERIFIED = "verified"
    EXPIRED = "expired"
    REVOKED = "revoked"


class GatedAction(Enum):
    """Things `identity.required_for` can reserve for verified users."""

    CREATE_GROUP = "create_group"
    JOIN_GROUP = "join_group"
    INVITE = "invite"
    SEND_IN_GROUP = "send_in_group"
    MANAGE_GROUP = "manage_group"


_S = VerificationStatus
TRANSITIONS: dict[VerificationStatus, frozenset[VerificationStatus]] = {
    _S.UNVERIFIED: frozenset({_S.PENDING, _S.VERIFIED}),
    _S.PENDING: frozenset({_S.VERIFIED, _S.UNVERIFIED, _S.REVOKED}),
    _S.VERIFIED: frozenset({_S.VERIFIED, _S.EXPIRED, _S.REVOKED}),
    _S.EXPIRED: frozenset({_S.PENDING, _S.VERIFIED, _S.REVOKED}),
    _S.REVOKED: frozenset({_S.PENDING, _S.VERIFIED}),
}


@attrs.frozen
class Verification:
    """A user's current verification. `level` is set only while verified."""

    status: VerificationStatus = VerificationStatus.UNVERIFIED
    level: int | None = None
    method: str | None = None
    updated_ts: int | None = None
    verified_ts: int | None = None
    expires_ts: int | None = None

    def effective_status(self, now_ms: int) -> VerificationStatus:
        """The status as of `now_ms`: a verification past its expiry counts as expired."""
        if (
            self.status is VerificationStatus.VERIFIED
            and self.expires_ts is not None
            and self.expires_ts <= now_ms
        ):
            return VerificationStatus.EXPIRED
        return self.status


NEVER_VERIFIED = Verification()


@attrs.frozen
class VerificationChangeRequest:
    """A request to move a user's verification to `status` (admin attestation, webhook, ...)."""

    status: VerificationStatus
    level: int | None
    method: str
    now_ms: int
    expires_ts: int | None = None


def decide_verification_change(current: Verification, req: VerificationChangeRequest) -> Decision:
    """Decide whether `req` is a valid next step from `current`.

    Refusal reasons: `invalid_transition` (facts: from, to), `level_required`,
    `level_out_of_range` (facts: level, min, max), `level_not_applicable`, `expiry_in_past`.
    """
    current_status = current.effective_status(req.now_ms)
    if req.status not in TRANSITIONS[current_status]:
        return Decision.refuse(
            INVALID_PARAM,
            "invalid_transition",
            from_status=current_status.value,
            to_status=req.status.value,
            allowed=sorted(s.value for s in TRANSITIONS[current_status]),
        )
    if req.status is VerificationStatus.VERIFIED:
        if req.level is None:
            return Decision.refuse(INVALID_PARAM, "level_required", min=MIN_LEVEL, max=MAX_LEVEL)
        if not MIN_LEVEL <= req.level <= MAX_LEVEL:
            return Decision.refuse(
                INVALID_PARAM, "level_out_of_range", level=req.level, min=MIN_LEVEL, max=MAX_LEVEL
            )
        if req.expires_ts is not None and req.expires_ts <= req.now_ms:
            return Decision.refuse(INVALID_PARAM, "expiry_in_past", expires_ts=req.expires_ts)
    elif req.level is not None or req.expires_ts is not None:
        return Decision.refuse(INVALID_PARAM, "level_not_applicable", status=req.status.value)
    return ALLOW


def apply_verification_change(current: Verification, req: VerificationChangeRequest) -> Verification:
    """The verification after an allowed change (call `decide_verification_change` first)."""
    if req.status is VerificationStatus.VERIFIED:
        return Verification(
            status=req.status,
            level=req.level,
            method=req.method,
            updated_ts=req.now_ms,
            verified_ts=req.now_ms,
            expires_ts=req.expires_ts,
        )
    return Verification(
        status=req.status,
        level=None,
        method=req.method,
        updated_ts=req.now_ms,
        verified_ts=current.verified_ts,
        expires_ts=None,
    )


def with_default_expiry(
    req: VerificationChangeRequest, reverify_after_ms: int | None
) -> VerificationChangeRequest:
    """`req` with an expiry of `reverify_after_ms` from now when it verifies without one."""
    if (
        req.status is not VerificationStatus.VERIFIED
        or req.expires_ts is not None
        or reverify_after_ms is None
    ):
        return req
    return attrs.evolve(req, expires_ts=req.now_ms + reverify_after_ms)


def expire_verification(current: Verification) -> Verification:
    """The record of a verification that reached its expiry (method and times are kept)."""
    return attrs.evolve(current, status=VerificationStatus.EXPIRED, level=None)


def expiry_due(v: Verification, now_ms: int, warning_ms: int) -> str | None:
    """What the re-verification sweep owes a user: "expired", "expiring" (a warning) or None."""
    if v.status is not VerificationStatus.VERIFIED or v.expires_ts is None:
        return None
    if v.expires_ts <= now_ms:
        return "expired"
    if v.expires_ts - warning_ms <= now_ms:
        return "expiring"
    return None


def decide_identity_gate(
    verification: Verification,
    action: GatedAction,
    required_for: frozenset[GatedAction],
    now_ms: int,
) -> Decision:
    """Decide whether a user with `verification` may do `action`.

    Returns ALLOW when the action is not gated or the user is verified; otherwise a refusal with
    reason `identity_unverified` and facts `status` (the effective status) and `action`.
    """
    if action not in required_for:
        return ALLOW
    status = verification.effective_status(now_ms)
    if status is VerificationStatus.VERIFIED:
        return ALLOW
    return Decision.refuse(FORBIDDEN, "identity_unverified", status=status.value, action=action.value)
