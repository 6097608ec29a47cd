"""Remote users in local groups (DESIGN §4.1, `scope.remote_users`).

The module cannot verify the identity of a user of another homeserver, and Synapse runs none of
the join or send gates for events arriving over federation (SYNAPSE_FACTS §8). So the policy
says how far remote users may take part in this server's groups:

- `block` (default): not at all. Local invites of remote users into groups are refused, and a
  remote user who joins anyway (through this server or another one in the room) is removed.
- `restrict`: they may join and talk, but never manage a group (no promotion to manager level).
- `allow`: they take part like anyone; identity rules apply to local users only.

Direct chats are not groups (unless `scope.direct_chats: govern`), so they stay open to remote
users under every policy.
"""

from enum import Enum

from synapse_compliance.core.decision import ALLOW, FORBIDDEN, Decision


class RemoteUsers(Enum):
    """How far users of other homeservers may take part in local groups."""

    ALLOW = "allow"
    RESTRICT = "restrict"
    BLOCK = "block"


def decide_remote_membership(policy: RemoteUsers, user_id: str) -> Decision:
    """Whether a remote user may be invited to or stay in a local group."""
    if policy is RemoteUsers.BLOCK:
        return Decision.refuse(FORBIDDEN, "remote_users_blocked", subject=user_id)
    return ALLOW


def decide_remote_manager(policy: RemoteUsers, user_id: str) -> Decision:
    """Whether a remote user may be given manager rights in a local group."""
    if policy is RemoteUsers.ALLOW:
        return ALLOW
    return Decision.refuse(FORBIDDEN, "remote_user_restricted", subject=user_id, policy=policy.value)
