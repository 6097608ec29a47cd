"""Which rooms are governed, and who becomes a manager through a power-level change."""

from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from synapse_compliance.core.groups import (
    KIND_DIRECT_CHAT,
    KIND_GROUP,
    DirectChats,
    RoomFacts,
    creation_marker,
    crossed_into_group,
    is_governed_room,
)
from synapse_compliance.core.power_levels import granted_at_creation, granted_management, level_of

IGNORE, GOVERN = DirectChats.IGNORE, DirectChats.GOVERN


def test_creation_marker() -> None:
    assert creation_marker({"is_direct": True, "invite": ["@b:hs"]}) == KIND_DIRECT_CHAT
    assert creation_marker({"name": "club"}) == KIND_GROUP


@pytest.mark.parametrize(
    ("facts", "adding", "governed"),
    [
        (RoomFacts(creator_is_local=False, marker=KIND_GROUP), 0, False),  # remote creator
        (RoomFacts(creator_is_local=True, creator_is_notices=True, marker=KIND_GROUP), 0, False),
        (RoomFacts(creator_is_local=True, marker=KIND_GROUP, members=1), 0, True),
        (RoomFacts(creator_is_local=True, marker=KIND_DIRECT_CHAT, members=1), 1, False),
        (RoomFacts(creator_is_local=True, marker=KIND_DIRECT_CHAT, members=2), 0, False),
        (RoomFacts(creator_is_local=True, marker=KIND_DIRECT_CHAT, members=2), 1, True),  # a third
        (RoomFacts(creator_is_local=True, marker=KIND_DIRECT_CHAT, members=3), 0, True),
        (RoomFacts(creator_is_local=True, marker=KIND_DIRECT_CHAT, members=2, became_group=True), 0, True),
        (RoomFacts(creator_is_local=True, members=2, has_direct_flag=True), 0, False),  # unrecorded DM
        (RoomFacts(creator_is_local=True, members=2), 0, True),  # unrecorded, no DM flag: a group
        # A recorded group stays a group whatever clients flag.
        (RoomFacts(creator_is_local=True, marker=KIND_GROUP, members=2, has_direct_flag=True), 0, True),
    ],
)
def test_is_governed_room(facts: RoomFacts, adding: int, governed: bool) -> None:
    assert is_governed_room(facts, IGNORE, adding) is governed
    if facts.creator_is_local and not facts.creator_is_notices:
        assert is_governed_room(facts, GOVERN, adding) is True


room_facts = st.builds(
    RoomFacts,
    creator_is_local=st.booleans(),
    creator_is_notices=st.booleans(),
    marker=st.sampled_from([None, KIND_GROUP, KIND_DIRECT_CHAT]),
    members=st.integers(0, 6),
    has_direct_flag=st.booleans(),
    became_group=st.booleans(),
)


@given(room_facts, st.integers(0, 3))
def test_more_members_never_ungovern_a_room(facts: RoomFacts, adding: int) -> None:
    if is_governed_room(facts, IGNORE, adding):
        assert is_governed_room(facts, IGNORE, adding + 1)


@given(room_facts)
def test_a_crossed_direct_chat_is_governed_and_recorded_once(facts: RoomFacts) -> None:
    if crossed_into_group(facts):
        assert is_governed_room(facts, IGNORE)
        recorded = attrs.evolve(facts, became_group=True)
        assert not crossed_into_group(recorded)
        assert is_governed_room(attrs.evolve(recorded, members=1), IGNORE)  # sticky


def test_crossed_into_group() -> None:
    assert crossed_into_group(RoomFacts(creator_is_local=True, marker=KIND_DIRECT_CHAT, members=3))
    assert not crossed_into_group(RoomFacts(creator_is_local=True, marker=KIND_DIRECT_CHAT, members=2))
    assert not crossed_into_group(
        RoomFacts(creator_is_local=True, marker=KIND_DIRECT_CHAT, members=3, became_group=True)
    )
    assert not crossed_into_group(RoomFacts(creator_is_local=True, marker=KIND_GROUP, members=9))


PL: dict[str, Any] = {"users": {"@owner:hs": 100, "@mod:hs": 50}, "users_default": 0}


@pytest.mark.parametrize(
    ("after", "members", "granted"),
    [
        ({**PL, "users": {**PL["users"], "@bob:hs": 50}}, [], {"@bob:hs"}),
        ({**PL, "users": {**PL["users"], "@bob:hs": 49}}, [], set()),
        ({**PL, "users": {**PL["users"], "@mod:hs": 100}}, [], set()),  # already a manager
        ({**PL, "users_default": 50}, ["@bob:hs", "@carol:hs", "@owner:hs"], {"@bob:hs", "@carol:hs"}),
        ({**PL, "users": {**PL["users"], "@bob:hs": "75"}}, [], {"@bob:hs"}),  # string levels count
        ({**PL, "users": {**PL["users"], "@bob:hs": True}}, [], set()),  # not a level
    ],
)
def test_granted_management(after: dict[str, Any], members: list[str], granted: set[str]) -> None:
    assert granted_management(PL, after, 50, members) == granted


def test_initial_power_levels_grant_everyone_listed() -> None:
    assert granted_management(None, PL, 50) == {"@owner:hs", "@mod:hs"}


def test_granted_at_creation() -> None:
    creator, bob, carol = "@owner:hs", "@bob:hs", "@carol:hs"
    assert granted_at_creation({"invite": [bob]}, creator, 50) == frozenset()
    assert granted_at_creation({"invite": [bob, carol], "preset": "trusted_private_chat"}, creator, 50) == {
        bob,
        carol,
    }
    assert granted_at_creation({"power_level_content_override": {"users": {bob: 50}}}, creator, 50) == {bob}
    assert granted_at_creation(
        {"invite": [bob], "power_level_content_override": {"users_default": 60}}, creator, 50
    ) == {bob}
    assert (
        granted_at_creation({"invite": "not a list", "power_level_content_override": []}, creator, 50)
        == set()
    )


@given(
    st.dictionaries(st.sampled_from(["@a:hs", "@b:hs", "@c:hs"]), st.integers(-10, 120)), st.integers(0, 120)
)
def test_granted_users_really_cross_the_line(users: dict[str, int], default: int) -> None:
    after = {"users": users, "users_default": default}
    members = ["@a:hs", "@b:hs", "@c:hs", "@d:hs"]
    for user in granted_management(PL, after, 50, members):
        assert level_of(after, user) >= 50 > level_of(PL, user)
