"""The verification state machine and the identity gate, without Synapse."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from synapse_compliance.core.identity import (
    NEVER_VERIFIED,
    TRANSITIONS,
    GatedAction,
    Verification,
    VerificationChangeRequest,
    VerificationStatus,
    apply_verification_change,
    decide_identity_gate,
    decide_verification_change,
    expire_verification,
    expiry_due,
    with_default_expiry,
)
from tests.unit.strategies import action_sets, actions, change_requests, times, verifications

S = VerificationStatus
NOW = 1_800_000_000_000


def req(
    status: VerificationStatus, level: int | None = None, expires_ts: int | None = None
) -> VerificationChangeRequest:
    return VerificationChangeRequest(
        status=status, level=level, method="admin_attestation", now_ms=NOW, expires_ts=expires_ts
    )


def test_lifecycle_from_the_design() -> None:
    v = NEVER_VERIFIED
    for step in (req(S.PENDING), req(S.VERIFIED, 2), req(S.REVOKED), req(S.VERIFIED, 1)):
        assert decide_verification_change(v, step).allowed
        v = apply_verification_change(v, step)
    assert v.status is S.VERIFIED and v.level == 1


@pytest.mark.parametrize(
    ("start", "target"),
    [
        (S.UNVERIFIED, S.REVOKED),
        (S.UNVERIFIED, S.EXPIRED),
        (S.REVOKED, S.EXPIRED),
        (S.PENDING, S.EXPIRED),
        (S.REVOKED, S.REVOKED),
        (S.PENDING, S.PENDING),
    ],
)
def test_transitions_outside_the_table_are_refused(
    start: VerificationStatus, target: VerificationStatus
) -> None:
    d = decide_verification_change(Verification(status=start), req(target))
    assert not d.allowed
    assert d.reason_code == "invalid_transition"
    assert d.facts["from_status"] == start.value and d.facts["to_status"] == target.value


@pytest.mark.parametrize(
    ("level", "reason"), [(None, "level_required"), (0, "level_out_of_range"), (4, "level_out_of_range")]
)
def test_verified_needs_a_level_from_1_to_3(level: int | None, reason: str) -> None:
    d = decide_verification_change(NEVER_VERIFIED, req(S.VERIFIED, level))
    assert (d.allowed, d.reason_code) == (False, reason)


def test_level_only_applies_to_verified() -> None:
    d = decide_verification_change(NEVER_VERIFIED, req(S.PENDING, 2))
    assert d.reason_code == "level_not_applicable"


def test_expiry_must_be_in_the_future() -> None:
    d = decide_verification_change(NEVER_VERIFIED, req(S.VERIFIED, 1, expires_ts=NOW))
    assert d.reason_code == "expiry_in_past"


def test_past_expiry_counts_as_expired_before_any_sweep() -> None:
    v = Verification(status=S.VERIFIED, level=1, expires_ts=NOW - 1)
    assert v.effective_status(NOW) is S.EXPIRED
    d = decide_identity_gate(v, GatedAction.CREATE_GROUP, frozenset(GatedAction), NOW)
    assert d.reason_code == "identity_unverified" and d.facts["status"] == "expired"
    # ... and re-verification from expired is allowed.
    assert decide_verification_change(v, req(S.VERIFIED, 1)).allowed


@given(verifications(), change_requests())
def test_allowed_changes_follow_the_table_and_refusals_change_nothing(
    v: Verification, r: VerificationChangeRequest
) -> None:
    d = decide_verification_change(v, r)
    if d.allowed:
        assert r.status in TRANSITIONS[v.effective_status(r.now_ms)]
        new = apply_verification_change(v, r)
        assert new.status is r.status
        assert (new.level is not None) == (r.status is S.VERIFIED)
        assert new.updated_ts == r.now_ms
    else:
        assert d.errcode == "M_INVALID_PARAM"
        assert d.reason_code


@given(st.lists(change_requests(), max_size=12))
def test_any_history_keeps_the_invariants(requests: list[VerificationChangeRequest]) -> None:
    v = NEVER_VERIFIED
    for r in requests:
        if decide_verification_change(v, r).allowed:
            v = apply_verification_change(v, r)
        assert v.level is None or (v.status is S.VERIFIED and 1 <= v.level <= 3)
        assert v.expires_ts is None or v.status is S.VERIFIED


@given(verifications(), actions, action_sets, times)
def test_gate_allows_exactly_ungated_actions_or_verified_users(
    v: Verification, action: GatedAction, required: frozenset[GatedAction], now: int
) -> None:
    d = decide_identity_gate(v, action, required, now)
    expected = action not in required or v.effective_status(now) is S.VERIFIED
    assert d.allowed is expected
    assert d == decide_identity_gate(v, action, required, now)  # deterministic
    if not d.allowed:
        assert (d.errcode, d.reason_code) == ("M_FORBIDDEN", "identity_unverified")
        assert d.facts == {"status": v.effective_status(now).value, "action": action.value}


@given(verifications(), actions, action_sets, action_sets, times)
def test_requiring_less_never_refuses_more(
    v: Verification, action: GatedAction, a: frozenset[GatedAction], b: frozenset[GatedAction], now: int
) -> None:
    smaller = a & b
    if not decide_identity_gate(v, action, smaller, now).allowed:
        assert not decide_identity_gate(v, action, a, now).allowed


def test_default_expiry_only_for_verifications_without_one() -> None:
    assert with_default_expiry(req(S.VERIFIED, 1), 1000).expires_ts == NOW + 1000
    assert with_default_expiry(req(S.VERIFIED, 1, expires_ts=NOW + 5), 1000).expires_ts == NOW + 5
    assert with_default_expiry(req(S.PENDING), 1000).expires_ts is None
    assert with_default_expiry(req(S.VERIFIED, 1), None).expires_ts is None


@given(verifications(), times, st.integers(0, 10**10))
def test_expiry_due(v: Verification, now: int, warning: int) -> None:
    due = expiry_due(v, now, warning)
    if due == "expired":
        assert v.effective_status(now) is S.EXPIRED
        assert (
            expire_verification(v).status is S.EXPIRED and expire_verification(v).expires_ts == v.expires_ts
        )
    elif due == "expiring":
        assert v.effective_status(now) is S.VERIFIED
    else:
        assert v.status is not S.VERIFIED or v.expires_ts is None or v.expires_ts - warning > now
