"""What the credit gate reads from a `/createRoom` body, and how its refusals are worded."""

from typing import Any

import pytest

from synapse_compliance.callbacks.credit import is_public_request
from synapse_compliance.core.credit import GROUP_CREATE_CAP, MAY_NOT_CREATE_PUBLIC
from synapse_compliance.core.decision import Decision
from synapse_compliance.messages import REASON_FIELD, credit_refusal_fields


@pytest.mark.parametrize(
    ("body", "public"),
    [
        ({}, False),
        ({"preset": "private_chat"}, False),
        ({"visibility": "private", "preset": "trusted_private_chat"}, False),
        ({"visibility": "public"}, True),
        ({"preset": "public_chat"}, True),
        ({"initial_state": [{"type": "m.room.join_rules", "content": {"join_rule": "public"}}]}, True),
        ({"initial_state": [{"type": "m.room.join_rules", "content": {"join_rule": "invite"}}]}, False),
        ({"initial_state": ["junk", {"type": "m.room.join_rules", "content": "junk"}]}, False),
        ({"initial_state": "junk"}, False),
    ],
)
def test_public_requests(body: dict[str, Any], public: bool) -> None:
    assert is_public_request(body) is public


def test_cap_refusal_names_limit_usage_and_how_to_rise() -> None:
    decision = Decision.refuse("M_FORBIDDEN", GROUP_CREATE_CAP, limit=1, usage=1, tier="restricted", score=90)
    fields = credit_refusal_fields(decision)
    assert fields[REASON_FIELD] == GROUP_CREATE_CAP
    assert fields["io.synapse_compliance.limit"] == 1
    assert fields["io.synapse_compliance.usage"] == 1
    text = str(fields["error"])
    assert "created 1 group you are still in" in text and "allows 1" in text
    assert "me/credit" in text  # how to find out more


def test_public_refusal_suggests_a_private_group() -> None:
    fields = credit_refusal_fields(Decision.refuse("M_FORBIDDEN", MAY_NOT_CREATE_PUBLIC, tier="restricted"))
    assert "private group instead" in str(fields["error"])
    assert "io.synapse_compliance.limit" not in fields
