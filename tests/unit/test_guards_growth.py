"""Whether a direct chat may become a group: its encryption and retention policy decide."""

import pytest

from synapse_compliance.core.guards import ENCRYPTION, RETENTION, EncryptedRooms, decide_growth
from synapse_compliance.messages import guard_refusal_fields

DAY_MS = 86_400_000
MEGOLM = {"algorithm": "m.megolm.v1.aes-sha2"}


@pytest.mark.parametrize("mode", list(EncryptedRooms))
def test_a_plain_direct_chat_may_grow(mode: EncryptedRooms) -> None:
    assert decide_growth({}, 184, mode).allowed
    assert decide_growth({RETENTION: {"max_lifetime": 184 * DAY_MS}}, 184, mode).allowed
    assert decide_growth({RETENTION: {}}, 184, mode).allowed  # no max_lifetime: kept for good


def test_encryption_stops_growth_only_under_forbid() -> None:
    refused = decide_growth({ENCRYPTION: MEGOLM}, 184, EncryptedRooms.FORBID)
    assert not refused.allowed and refused.reason_code == "encryption_forbidden"
    assert refused.facts["growth"] is True
    fields = guard_refusal_fields(refused)
    assert "would make this direct chat a group" in str(fields["error"])
    assert fields["io.synapse_compliance.reason"] == "encryption_forbidden"
    assert decide_growth({ENCRYPTION: MEGOLM}, 184, EncryptedRooms.ARCHIVE_CIPHERTEXT).allowed


@pytest.mark.parametrize("mode", list(EncryptedRooms))
def test_a_short_retention_policy_stops_growth_in_either_mode(mode: EncryptedRooms) -> None:
    refused = decide_growth({RETENTION: {"max_lifetime": 184 * DAY_MS - 1}}, 184, mode)
    assert not refused.allowed and refused.reason_code == "retention_too_short"
    fields = guard_refusal_fields(refused)
    assert (
        "184 days" in str(fields["error"]) and fields["io.synapse_compliance.min_lifetime_ms"] == 184 * DAY_MS
    )


def test_encryption_is_named_first_when_both_stop_growth() -> None:
    both = {ENCRYPTION: MEGOLM, RETENTION: {"max_lifetime": DAY_MS}}
    assert decide_growth(both, 184, EncryptedRooms.FORBID).reason_code == "encryption_forbidden"
    assert decide_growth(both, 184, EncryptedRooms.ARCHIVE_CIPHERTEXT).reason_code == "retention_too_short"
