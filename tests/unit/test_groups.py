"""What counts as a group when a room is created."""

import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given

from synapse_compliance.core.groups import DirectChats, creates_group, is_direct_chat_request
from tests.unit.strategies import room_configs


@pytest.mark.parametrize(
    ("body", "direct"),
    [
        ({}, False),
        ({"name": "Club", "preset": "private_chat"}, False),
        ({"is_direct": True}, True),
        ({"is_direct": True, "invite": ["@b:hs"]}, True),
        ({"is_direct": True, "invite_3pid": [{"medium": "email", "address": "b@x"}]}, True),
        ({"is_direct": True, "invite": ["@b:hs", "@c:hs"]}, False),
        ({"is_direct": True, "invite": ["@b:hs"], "invite_3pid": [{"medium": "email"}]}, False),
        ({"is_direct": "true", "invite": ["@b:hs"]}, False),  # only the JSON boolean counts
        ({"is_direct": False, "invite": ["@b:hs"]}, False),
        # A room upgrade's synthesized body: never a direct chat.
        ({"creation_content": {}, "initial_state": []}, False),
    ],
)
def test_direct_chat_requests(body: dict[str, Any], direct: bool) -> None:
    assert is_direct_chat_request(body) is direct
    assert creates_group(body, DirectChats.IGNORE) is not direct
    assert creates_group(body, DirectChats.GOVERN) is True


@given(room_configs)
def test_governing_direct_chats_only_widens_the_scope(body: dict[str, Any]) -> None:
    if creates_group(body, DirectChats.IGNORE):
        assert creates_group(body, DirectChats.GOVERN)


def test_pure_parts_import_no_synapse() -> None:
    code = (
        "import sys, synapse_compliance.config, synapse_compliance.cli, synapse_compliance.keys, "
        "synapse_compliance.core.identity, synapse_compliance.core.groups, synapse_compliance.core.decision; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('synapse', 'twisted')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
