"""The signed KYC-provider webhook: signature check and event parsing (DESIGN §4.2).

Theory of operation. A provider POSTs a JSON event with the header

    X-Compliance-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...]

where each `v1` is HMAC-SHA256(secret, "<t>.<raw body>"). The request is genuine when some `v1`
matches (several are allowed so a provider can sign with an old and a new secret while the
operator rotates) and `t` is within the tolerance of now, in either direction. Comparison is
constant-time. The signature is checked before the body is even parsed.

A verified body is an event:

    {"event_id": "evt_1", "type": "verification.completed", "user_id": "@alice:example.org",
     "level": 2, "expires_ts": 1830000000000}

`type` maps onto the verification lifecycle: `verification.pending` → pending,
`verification.completed` → verified (needs `level`), `verification.failed` → unverified,
`verification.revoked` → revoked. `event_id` makes delivery idempotent: the shell stores it with
the change, and a replay changes nothing and says so.
"""

import hashlib
import hmac
from collections.abc import Mapping

import attrs

from synapse_compliance.core.decision import ALLOW, Decision
from synapse_compliance.core.identity import VerificationStatus

UNAUTHORIZED = "M_UNAUTHORIZED"
SIGNATURE_HEADER = "X-Compliance-Signature"
MAX_EVENT_ID_LENGTH = 255

EVENT_TYPES = {
    "verification.pending": VerificationStatus.PENDING,
    "verification.completed": VerificationStatus.VERIFIED,
    "verification.failed": VerificationStatus.UNVERIFIED,
    "verification.revoked": VerificationStatus.REVOKED,
}


def sign(secret: bytes, timestamp: int, raw_body: bytes) -> str:
    """The `v1` signature of a body at `timestamp` (what a provider computes)."""
    return hmac.new(secret, str(timestamp).encode("ascii") + b"." + raw_body, hashlib.sha256).hexdigest()


def signature_header(secret: bytes, timestamp: int, raw_body: bytes) -> str:
    """A complete `X-Compliance-Signature` value (for providers, tests and docs)."""
    return f"t={timestamp},v1={sign(secret, timestamp, raw_body)}"


def decide_signature(
    secret: bytes, header: str | None, raw_body: bytes, now_s: int, tolerance_s: int
) -> Decision:
    """Whether a delivery is genuine and fresh.

    Refusal reasons (errcode `M_UNAUTHORIZED`): `signature_missing`, `signature_malformed`,
    `signature_expired` (facts: age_s, tolerance_s), `signature_mismatch`.
    """
    if not header:
        return Decision.refuse(UNAUTHORIZED, "signature_missing")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            return Decision.refuse(UNAUTHORIZED, "signature_malformed")
        if key == "t":
            if not value.isdigit() or timestamp is not None:
                return Decision.refuse(UNAUTHORIZED, "signature_malformed")
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        return Decision.refuse(UNAUTHORIZED, "signature_malformed")
    age = now_s - timestamp
    if abs(age) > tolerance_s:
        return Decision.refuse(UNAUTHORIZED, "signature_expired", age_s=age, tolerance_s=tolerance_s)
    expected = sign(secret, timestamp, raw_body)
    # compare_digest on every candidate (no early exit), so timing says nothing about which matched.
    matches = [hmac.compare_digest(expected.encode(), c.encode("ascii", "replace")) for c in candidates]
    return ALLOW if any(matches) else Decision.refuse(UNAUTHORIZED, "signature_mismatch")


@attrs.frozen
class KycEvent:
    """A provider's verification event, validated."""

    event_id: str
    status: VerificationStatus
    user_id: str
    level: int | None
    expires_ts: int | None


@attrs.frozen
class KycEventProblem:
    """Why a body is not a valid event: the field at fault and what is wrong."""

    field: str
    message: str


def parse_kyc_event(body: Mapping[str, object]) -> KycEvent | KycEventProblem:
    """Validate a webhook body (already known to be a JSON object)."""
    allowed = {"event_id", "type", "user_id", "level", "expires_ts", "personal_data"}
    unknown = sorted(set(body) - allowed)
    if unknown:
        return KycEventProblem(unknown[0], f"unknown field; accepted: {', '.join(sorted(allowed))}")
    event_id = body.get("event_id")
    if not isinstance(event_id, str) or not event_id.strip() or len(event_id) > MAX_EVENT_ID_LENGTH:
        return KycEventProblem("event_id", f"must be a non-empty string of at most {MAX_EVENT_ID_LENGTH}")
    kind = body.get("type")
    if not isinstance(kind, str) or kind not in EVENT_TYPES:
        return KycEventProblem("type", f"must be one of {', '.join(EVENT_TYPES)}")
    user_id = body.get("user_id")
    if not isinstance(user_id, str) or not user_id:
        return KycEventProblem("user_id", "must be a Matrix user id")
    numbers: dict[str, int | None] = {}
    for field in ("level", "expires_ts"):
        value = body.get(field)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            return KycEventProblem(field, f"must be an integer, not {type(value).__name__}")
        numbers[field] = value
    return KycEvent(
        event_id=event_id,
        status=EVENT_TYPES[kind],
        user_id=user_id,
        level=numbers["level"],
        expires_ts=numbers["expires_ts"],
    )
