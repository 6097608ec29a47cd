"""Who becomes a group manager through a power-level change (DESIGN §4.6, §4.2 `manage_group`).

A manager is a member whose power level is at least `groups.manager_power_level` (default 50).
A change *grants* management to every user whose effective level goes from below that line to
at or above it. Levels come from `users` (explicit) or `users_default`; malformed values count
as Synapse counts them (non-integers are ignored here, and Synapse's own auth refuses them).

At room creation the initial power levels are built by Synapse from the `/createRoom` body:
the creator gets 100; the `trusted_private_chat` preset gives every invitee the creator's level;
`power_level_content_override` then sets explicit levels. `granted_at_creation` mirrors that, so
a creation that would fail half-way on its power-level event is refused before it starts.
`managers_at_creation` adds what overrides that: a power-level event in `initial_state`, and
`creation_content.additional_creators` (creators outrank every level in room version 12).
"""

from collections.abc import Iterable, Mapping

CREATOR_LEVEL = 100


def _as_level(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _users(content: Mapping[str, object]) -> dict[str, int]:
    raw = content.get("users")
    if not isinstance(raw, Mapping):
        return {}
    levels = {}
    for user, value in raw.items():
        level = _as_level(value)
        if isinstance(user, str) and level is not None:
            levels[user] = level
    return levels


def _default(content: Mapping[str, object]) -> int:
    level = _as_level(content.get("users_default"))
    return level if level is not None else 0


def required_level(content: Mapping[str, object], action: str, default: int) -> int:
    """The level an action such as `kick` needs under `content`."""
    level = _as_level(content.get(action))
    return level if level is not None else default


def level_of(content: Mapping[str, object], user_id: str) -> int:
    """A user's effective power level under `content`."""
    return _users(content).get(user_id, _default(content))


def granted_management(
    before: Mapping[str, object] | None,
    after: Mapping[str, object],
    manager_level: int,
    members: Iterable[str] = (),
) -> frozenset[str]:
    """Users who reach `manager_level` through the change from `before` to `after`.

    Args:
        before: the current power levels (None when the room has none yet).
        after: the proposed power levels.
        manager_level: the threshold.
        members: users to consider besides those named in either event; needed when
            `users_default` is raised (then every member not named explicitly is affected).
    """
    old = before or {}
    candidates = set(_users(old)) | set(_users(after)) | set(members)
    return frozenset(
        user
        for user in candidates
        if level_of(after, user) >= manager_level and level_of(old, user) < manager_level
    )


def granted_at_creation(
    room_config: Mapping[str, object], creator: str, manager_level: int
) -> frozenset[str]:
    """Users other than the creator who get manager rights from a `/createRoom` body."""
    raw_invites = room_config.get("invite")
    invitees = [u for u in raw_invites if isinstance(u, str)] if isinstance(raw_invites, list | tuple) else []
    levels: dict[str, int] = {creator: CREATOR_LEVEL}
    if room_config.get("preset") == "trusted_private_chat":
        levels.update(dict.fromkeys(invitees, CREATOR_LEVEL))
    override = room_config.get("power_level_content_override")
    default = 0
    if isinstance(override, Mapping):
        levels.update(_users(override))
        default = _default(override)
    candidates = set(levels) | set(invitees)
    return frozenset(
        user for user in candidates if user != creator and levels.get(user, default) >= manager_level
    )


def creation_invitees(room_config: Mapping[str, object]) -> list[str]:
    """The Matrix ids a `/createRoom` body invites (third-party invites are not members yet)."""
    raw = room_config.get("invite")
    if not isinstance(raw, list | tuple):
        return []
    return list(dict.fromkeys(u for u in raw if isinstance(u, str)))


def managers_at_creation(
    room_config: Mapping[str, object], creator: str, manager_level: int
) -> frozenset[str]:
    """Users other than the creator whom a `/createRoom` body makes managers.

    Synapse uses a power-level event in `initial_state` as it is, ignoring the preset and
    `power_level_content_override` (synapse/handlers/room.py:1676-1680); otherwise it builds
    the levels from those, as `granted_at_creation` mirrors. In room versions with creator
    power (MSC4289, version 12, Synapse's default) `creation_content.additional_creators` are
    creators, above every power level (the trusted_private_chat preset makes its invitees
    that, synapse/handlers/room.py:1248-1261).
    """
    content = room_config.get("creation_content")
    raw = content.get("additional_creators") if isinstance(content, Mapping) else None
    creators = (
        frozenset(u for u in raw if isinstance(u, str)) if isinstance(raw, list | tuple) else frozenset()
    )
    return (_managers_by_levels(room_config, creator, manager_level) | creators) - {creator}


def _managers_by_levels(
    room_config: Mapping[str, object], creator: str, manager_level: int
) -> frozenset[str]:
    state = room_config.get("initial_state")
    levels: Mapping[str, object] | None = None
    for ev in state if isinstance(state, list | tuple) else ():
        # The last one wins, as in Synapse (synapse/handlers/room.py:1311-1313).
        if (
            isinstance(ev, Mapping)
            and ev.get("type") == "m.room.power_levels"
            and ev.get("state_key", "") == ""
        ):
            content = ev.get("content")
            levels = content if isinstance(content, Mapping) else levels
    if levels is None:
        return granted_at_creation(room_config, creator, manager_level)
    members = [creator, *creation_invitees(room_config)]
    return granted_management(None, levels, manager_level, members) - {creator}
