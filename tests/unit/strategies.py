"""Reusable Hypothesis strategies for the pure policy."""

from hypothesis import strategies as st

from synapse_compliance.core.identity import (
    GatedAction,
    Verification,
    VerificationChangeRequest,
    VerificationStatus,
)

# Milliseconds since the epoch in a plausible range.
times = st.integers(min_value=1_600_000_000_000, max_value=2_500_000_000_000)

statuses = st.sampled_from(list(VerificationStatus))
actions = st.sampled_from(list(GatedAction))
action_sets = st.frozensets(actions)


@st.composite
def verifications(draw: st.DrawFn) -> Verification:
    """Any verification record the store could hold (level only while verified)."""
    status = draw(statuses)
    verified = status is VerificationStatus.VERIFIED
    return Verification(
        status=status,
        level=draw(st.integers(1, 3)) if verified else None,
        method=draw(st.sampled_from(["admin_attestation", "kyc_webhook", None])),
        updated_ts=draw(times),
        verified_ts=draw(st.none() | times),
        expires_ts=draw(st.none() | times) if verified else None,
    )


@st.composite
def change_requests(draw: st.DrawFn) -> VerificationChangeRequest:
    """Change requests, valid or not: any status, any (or no) level and expiry."""
    return VerificationChangeRequest(
        status=draw(statuses),
        level=draw(st.none() | st.integers(-2, 6)),
        method=draw(st.sampled_from(["admin_attestation", "kyc_webhook"])),
        now_ms=draw(times),
        expires_ts=draw(st.none() | times),
    )


room_configs = st.fixed_dictionaries(
    {},
    optional={
        "is_direct": st.sampled_from([True, False, "true", 1, None]),
        "invite": st.lists(st.text(min_size=1, max_size=5), max_size=4),
        "invite_3pid": st.lists(st.dictionaries(st.text(max_size=3), st.text(max_size=3)), max_size=3),
        "name": st.text(max_size=10),
        "preset": st.sampled_from(["private_chat", "public_chat", "trusted_private_chat"]),
    },
)
