"""KYC webhook signatures and event parsing."""

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from synapse_compliance.core.identity import VerificationStatus
from synapse_compliance.core.kyc import (
    KycEvent,
    KycEventProblem,
    decide_signature,
    parse_kyc_event,
    sign,
    signature_header,
)

SECRET = b"whsec-test-secret-0123456789"
BODY = b'{"event_id":"evt_1","type":"verification.completed","user_id":"@a:hs","level":2}'
NOW = 1_800_000_000


def test_a_fresh_correct_signature_is_accepted() -> None:
    assert decide_signature(SECRET, signature_header(SECRET, NOW, BODY), BODY, NOW, 300).allowed
    assert decide_signature(SECRET, signature_header(SECRET, NOW - 300, BODY), BODY, NOW, 300).allowed
    assert decide_signature(SECRET, signature_header(SECRET, NOW + 300, BODY), BODY, NOW, 300).allowed


def test_any_of_several_signatures_may_match() -> None:
    header = f"t={NOW},v1={sign(b'old-secret', NOW, BODY)},v1={sign(SECRET, NOW, BODY)}"
    assert decide_signature(SECRET, header, BODY, NOW, 300).allowed


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "signature_missing"),
        ("", "signature_missing"),
        ("garbage", "signature_malformed"),
        (f"v1={sign(SECRET, NOW, BODY)}", "signature_malformed"),  # no timestamp
        (f"t={NOW}", "signature_malformed"),  # no signature
        (f"t=abc,v1={sign(SECRET, NOW, BODY)}", "signature_malformed"),
        (f"t={NOW},t={NOW},v1={sign(SECRET, NOW, BODY)}", "signature_malformed"),
        (signature_header(SECRET, NOW - 301, BODY), "signature_expired"),
        (signature_header(SECRET, NOW + 301, BODY), "signature_expired"),
        (signature_header(b"wrong secret", NOW, BODY), "signature_mismatch"),
        (signature_header(SECRET, NOW, BODY + b" "), "signature_mismatch"),  # another body
        (f"t={NOW - 1},v1={sign(SECRET, NOW, BODY)}", "signature_mismatch"),  # timestamp swapped
        (f"t={NOW},v1=zzzz\u00e9", "signature_mismatch"),
    ],
)
def test_bad_signatures_are_refused(header: str | None, reason: str) -> None:
    decision = decide_signature(SECRET, header, BODY, NOW, 300)
    assert (decision.allowed, decision.errcode, decision.reason_code) == (False, "M_UNAUTHORIZED", reason)


@given(st.binary(max_size=200), st.integers(0, 2**33))
def test_a_signature_only_fits_its_own_body(body: bytes, t: int) -> None:
    header = signature_header(SECRET, t, body)
    assert decide_signature(SECRET, header, body, t, 0).allowed
    assert not decide_signature(SECRET, header, body + b"x", t, 0).allowed


def test_parse_a_complete_event() -> None:
    event = parse_kyc_event(
        {
            "event_id": "evt_1",
            "type": "verification.completed",
            "user_id": "@a:hs",
            "level": 2,
            "expires_ts": 5,
        }
    )
    assert event == KycEvent("evt_1", VerificationStatus.VERIFIED, "@a:hs", 2, 5)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "verification.pending", "user_id": "@a:hs"}, "event_id"),
        ({"event_id": "", "type": "verification.pending", "user_id": "@a:hs"}, "event_id"),
        ({"event_id": "e" * 256, "type": "verification.pending", "user_id": "@a:hs"}, "event_id"),
        ({"event_id": 7, "type": "verification.pending", "user_id": "@a:hs"}, "event_id"),
        ({"event_id": "e", "type": "verification.done", "user_id": "@a:hs"}, "type"),
        ({"event_id": "e", "type": "verification.pending"}, "user_id"),
        ({"event_id": "e", "type": "verification.completed", "user_id": "@a:hs", "level": "2"}, "level"),
        ({"event_id": "e", "type": "verification.completed", "user_id": "@a:hs", "level": True}, "level"),
        (
            {"event_id": "e", "type": "verification.pending", "user_id": "@a:hs", "expires_ts": 1.5},
            "expires_ts",
        ),
        ({"event_id": "e", "type": "verification.pending", "user_id": "@a:hs", "score": 1}, "score"),
    ],
)
def test_bad_events_name_the_field(body: dict[str, Any], field: str) -> None:
    problem = parse_kyc_event(body)
    assert isinstance(problem, KycEventProblem)
    assert problem.field == field
