"""What counts as a group (DESIGN §4.1).

A group is a room created by a local user that is not a direct chat. A creation request is a
direct chat when it says `is_direct` and invites at most one other user (by Matrix id or by third
party id). With `scope.direct_chats: govern` direct chats are treated as groups too.

A room upgrade reaches the create check with a synthesized body (no `is_direct`, no invites),
so an upgrade is a group creation: it makes a new room that carries the old one's members.
"""

from collections.abc import Mapping
from enum import Enum


class DirectChats(Enum):
    """Whether direct chats fall under the group rules."""

    IGNORE = "ignore"
    GOVERN = "govern"


def is_direct_chat_request(room_config: Mapping[str, object]) -> bool:
    """True when a `/createRoom` body describes a direct chat: `is_direct` with ≤ 1 invitee."""
    if room_config.get("is_direct") is not True:
        return False
    invitees = 0
    for key in ("invite", "invite_3pid"):
        value = room_config.get(key)
        if isinstance(value, list | tuple):
            invitees += len(value)
    return invitees <= 1


def creates_group(room_config: Mapping[str, object], direct_chats: DirectChats) -> bool:
    """True when creating a room from `room_config` creates a governed group."""
    if direct_chats is DirectChats.GOVERN:
        return True
    return not is_direct_chat_request(room_config)
