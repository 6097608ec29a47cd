"""What the credit gates read from a `/createRoom` body, and how their refusals are worded."""

from typing import Any

import pytest

from synapse_compliance.callbacks.credit import is_public_request
from synapse_compliance.core.credit import (
    GROUP_CREATE_CAP,
    GROUP_JOIN_CAP,
    GROUP_SIZE_CAP,
    MAY_NOT_CREATE_PUBLIC,
    MAY_NOT_INVITE,
    MAY_NOT_MANAGE,
)
from synapse_compliance.core.decision import Decision
from synapse_compliance.core.power_levels import creation_invitees, managers_at_creation
from synapse_compliance.messages import (
    LIMIT_FIELD,
    REASON_FIELD,
    TIER_FIELD,
    USAGE_FIELD,
    credit_refusal_fields,
)


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


# --- membership caps ------------------------------------------------------------------------

OWNER, A, B = "@owner:hs", "@a:hs", "@b:hs"


@pytest.mark.parametrize(
    ("body", "managers"),
    [
        ({"preset": "private_chat", "invite": [A]}, set()),
        ({"preset": "trusted_private_chat", "invite": [A, B]}, {A, B}),
        ({"power_level_content_override": {"users": {A: 50, B: 49}}}, {A}),
        ({"power_level_content_override": {"users_default": 50}, "invite": [A]}, {A}),
        # A power-level event in initial_state replaces the preset and the override.
        (
            {
                "preset": "trusted_private_chat",
                "invite": [A],
                "power_level_content_override": {"users": {B: 100}},
                "initial_state": [{"type": "m.room.power_levels", "content": {"users": {B: 75}}}],
            },
            {B},
        ),
        ({"initial_state": [{"type": "m.room.power_levels", "state_key": "x", "content": {}}]}, set()),
        (
            {
                "initial_state": [
                    {"type": "m.room.power_levels", "content": {"users": {A: 50}}},
                    {"type": "m.room.power_levels", "content": {"users": {B: 50}}},
                ]
            },
            {B},  # the last one wins
        ),
        ({"creation_content": {"additional_creators": [A, OWNER, 7]}}, {A}),
        ({"creation_content": {"additional_creators": "junk"}, "invite": "junk"}, set()),
    ],
)
def test_managers_a_creation_makes(body: dict[str, Any], managers: set[str]) -> None:
    assert managers_at_creation(body, OWNER, 50) == managers


def test_creation_invitees_are_matrix_ids_once_each() -> None:
    assert creation_invitees({"invite": [A, B, A, 3], "invite_3pid": [{"address": "x"}]}) == [A, B]
    assert creation_invitees({}) == []


def test_join_cap_refusal_says_how_to_rise() -> None:
    fields = credit_refusal_fields(
        Decision.refuse("M_FORBIDDEN", GROUP_JOIN_CAP, limit=3, usage=3, tier="restricted", score=1)
    )
    assert (fields[REASON_FIELD], fields[LIMIT_FIELD], fields[USAGE_FIELD]) == (GROUP_JOIN_CAP, 3, 3)
    text = str(fields["error"])
    assert "in 3 groups" in text and "allows 3 (max_groups_joined)" in text and "me/credit" in text


def test_size_refusal_speaks_of_the_owner_not_the_requester() -> None:
    fields = credit_refusal_fields(
        Decision.refuse("M_FORBIDDEN", GROUP_SIZE_CAP, limit=6, usage=6, adding=1, tier="standard")
    )
    assert (fields[LIMIT_FIELD], fields[USAGE_FIELD], fields[TIER_FIELD]) == (6, 6, "standard")
    text = str(fields["error"])
    assert "6 members and pending invites" in text and "owner's credit tier (standard)" in text
    assert "your credit" not in text.lower()


def test_invite_and_manage_refusals_name_the_right() -> None:
    invite = credit_refusal_fields(Decision.refuse("M_FORBIDDEN", MAY_NOT_INVITE, tier="restricted", score=1))
    assert "may_invite" in str(invite["error"]) and LIMIT_FIELD not in invite
    manage = credit_refusal_fields(
        Decision.refuse("M_FORBIDDEN", MAY_NOT_MANAGE, tier="restricted", subject=A)
    )
    assert str(manage["error"]).startswith(f"{A} cannot be made a manager")
    assert "may_manage" in str(manage["error"]) and manage[TIER_FIELD] == "restricted"
