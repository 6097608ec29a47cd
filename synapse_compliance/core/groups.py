"""What counts as a group (DESIGN §4.1).

A group is a room created by a local user that is not a direct chat. A creation request is a
direct chat when it says `is_direct` and invites at most one other user (by Matrix id or by third
party id). With `scope.direct_chats: govern` direct chats are treated as groups too.

A room upgrade reaches the create check with a synthesized body (no `is_direct`, no invites),
so an upgrade is a group creation: it makes a new room that carries the old one's members.

After creation, `is_governed_room` decides from `RoomFacts`: the kind recorded in the create
event when the module saw the room being made, how many members it has, and whether a direct
chat ever grew into a group ("a direct chat that gains a third member becomes a group from then
on", DESIGN §4.1).
"""

from collections.abc import Mapping
from enum import Enum

import attrs


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


# The key the module writes into every new room's `m.room.create` content, recording at creation
# whether the room was requested as a direct chat. It is a fact, not a policy: whether direct
# chats are governed is decided at check time from `scope.direct_chats`.
ROOM_KIND_KEY = "io.synapse_compliance.room_kind"
KIND_GROUP = "group"
KIND_DIRECT_CHAT = "direct_chat"
DIRECT_CHAT_MAX_MEMBERS = 2


def creation_marker(room_config: Mapping[str, object]) -> str:
    """The room kind to record in a new room's create event."""
    return KIND_DIRECT_CHAT if is_direct_chat_request(room_config) else KIND_GROUP


@attrs.frozen
class RoomFacts:
    """What the classification needs to know about a room.

    Attributes:
        creator_is_local: the `m.room.create` sender is a user of this server.
        creator_is_notices: the room belongs to the server-notices user (never governed).
        marker: the recorded kind (`ROOM_KIND_KEY`), or None for rooms the module did not see
            being created (created before it was installed, upgrades, remote rooms).
        members: joined plus invited users now.
        has_direct_flag: some membership event carries `is_direct: true` (how clients mark DMs).
        became_group: the registry recorded that this direct chat once had a third member.
    """

    creator_is_local: bool
    creator_is_notices: bool = False
    marker: str | None = None
    members: int = 0
    has_direct_flag: bool = False
    became_group: bool = False

    @property
    def looks_direct(self) -> bool:
        """Recorded as a direct chat, or unrecorded but flagged `is_direct` by a client."""
        return self.marker == KIND_DIRECT_CHAT or (self.marker is None and self.has_direct_flag)

    @property
    def needs_members(self) -> bool:
        """Whether membership facts can change the answer (only for possible direct chats)."""
        return self.creator_is_local and not self.creator_is_notices and self.marker != KIND_GROUP


def is_governed_room(facts: RoomFacts, direct_chats: DirectChats, adding: int = 0) -> bool:
    """Whether the group rules apply to a room, counting `adding` members about to arrive.

    Precedence: rooms of remote creators and of the server-notices user are never governed; a
    room recorded as a group, or a direct chat that once had a third member, always is; a direct
    chat (recorded as one, or unrecorded but flagged `is_direct` by clients) with at most two
    members is governed only with `scope.direct_chats: govern`; everything else is a group.
    """
    if not facts.creator_is_local or facts.creator_is_notices:
        return False
    if facts.marker == KIND_GROUP or facts.became_group:
        return True
    if facts.looks_direct and facts.members + adding <= DIRECT_CHAT_MAX_MEMBERS:
        return direct_chats is DirectChats.GOVERN
    return True


def crossed_into_group(facts: RoomFacts) -> bool:
    """True when a direct chat has just gained a third member (to be recorded as a group)."""
    return (
        facts.creator_is_local
        and not facts.creator_is_notices
        and facts.looks_direct
        and not facts.became_group
        and facts.members > DIRECT_CHAT_MAX_MEMBERS
    )
