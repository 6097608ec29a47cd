"""`scope.remote_users` with two homeservers federating over loopback TLS.

Server A runs the module (on the database under test); server B is a plain Synapse.
"""

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.client import MatrixClient, q
from tests.harness.homeserver import DatabaseChoice, Homeserver, running_homeserver

pytestmark = pytest.mark.e2e

REASON = "io.synapse_compliance.reason"


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Homeserver]:
    """Server B: plain Synapse, federating."""
    with running_homeserver(
        tmp_path_factory.mktemp("remote"), DatabaseChoice("sqlite"), None, federated=True
    ) as hs:
        yield hs


def _local(server_factory: Any, policy: str | None) -> tuple[Homeserver, MatrixClient, MatrixClient]:
    scope = {} if policy is None else {"scope": {"remote_users": policy}}
    hs: Homeserver = server_factory(scope, federated=True)
    admin = hs.register(admin=True)
    owner = hs.register()
    assert admin.verify(owner.user_id).status_code == 200
    return hs, admin, owner


def _remote_join(user: MatrixClient, room_id: str, via: Homeserver) -> None:
    r = user.http.post(
        f"/_matrix/client/v3/join/{q(room_id)}", params={"server_name": via.server_name}, json={}
    )
    assert r.status_code == 200, r.text


def _membership(client: MatrixClient, room_id: str, user_id: str) -> dict[str, Any]:
    r = client.state(room_id, "m.room.member", user_id)
    return dict(r.json()) if r.status_code == 200 else {}


def _wait_membership(
    client: MatrixClient, room_id: str, user_id: str, want: str, timeout_s: float = 20
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        content = _membership(client, room_id, user_id)
        if content.get("membership") == want:
            return content
        time.sleep(0.2)
    raise AssertionError(
        f"{user_id} did not reach {want} in {room_id}: {_membership(client, room_id, user_id)}"
    )


def test_block_is_the_default_and_removes_remote_joins(server_factory: Any, remote: Homeserver) -> None:
    hs, _, owner = _local(server_factory, None)
    room_id = owner.create_room(name="Local club", preset="public_chat").json()["room_id"]
    bob = remote.register()
    _remote_join(bob, room_id, hs)  # Synapse offers no way to refuse the join itself
    content = _wait_membership(owner, room_id, bob.user_id, "leave")
    assert "other homeservers" in content.get("reason", "")
    assert "removed remote user" in hs.log_text()
    # Server A's view is the one that counts: bob's membership there is now `leave` (server B may
    # keep a stale partial-state copy of the room; its later sends fail A's auth checks).


def test_block_refuses_inviting_remote_users(server_factory: Any, remote: Homeserver) -> None:
    _, _, owner = _local(server_factory, "block")
    room_id = owner.create_group()
    bob = remote.register()
    r = owner.invite(room_id, bob.user_id)
    assert r.status_code == 403, r.text
    assert r.json()[REASON] == "remote_users_blocked"
    assert bob.user_id in r.json()["error"]


def test_direct_chats_with_remote_users_stay_open(server_factory: Any, remote: Homeserver) -> None:
    hs, _, _ = _local(server_factory, "block")
    alice = hs.register()  # not even verified: direct chats are not groups
    bob = remote.register()
    r = alice.create_room(is_direct=True, invite=[bob.user_id], preset="trusted_private_chat")
    assert r.status_code == 200, r.text
    dm = r.json()["room_id"]
    deadline = time.monotonic() + 20
    while bob.join(dm).status_code != 200:  # the invite travels over federation first
        assert time.monotonic() < deadline, "remote invite never arrived"
        time.sleep(0.3)
    assert bob.send_text(dm, "hello alice").status_code == 200
    _wait_membership(alice, dm, bob.user_id, "join")
    assert alice.send_text(dm, "hi bob").status_code == 200


def test_restrict_lets_remote_users_talk_but_not_manage(server_factory: Any, remote: Homeserver) -> None:
    hs, _, owner = _local(server_factory, "restrict")
    room_id = owner.create_room(name="Open club", preset="public_chat").json()["room_id"]
    bob = remote.register()
    _remote_join(bob, room_id, hs)
    _wait_membership(owner, room_id, bob.user_id, "join")
    assert bob.send_text(room_id, "hello from the other server").status_code == 200
    r = owner.set_power_level(room_id, bob.user_id, 50)
    assert r.status_code == 403, r.text
    assert r.json()[REASON] == "remote_user_restricted"
    assert owner.set_power_level(room_id, bob.user_id, 10).status_code == 200  # below manager level
    assert _membership(owner, room_id, bob.user_id)["membership"] == "join"


def test_allow_treats_remote_users_like_anyone(server_factory: Any, remote: Homeserver) -> None:
    hs, _, owner = _local(server_factory, "allow")
    room_id = owner.create_room(name="Open club", preset="public_chat").json()["room_id"]
    bob = remote.register()
    assert owner.invite(room_id, bob.user_id).status_code == 200
    _remote_join(bob, room_id, hs)
    _wait_membership(owner, room_id, bob.user_id, "join")
    assert owner.set_power_level(room_id, bob.user_id, 50).status_code == 200


def test_remote_users_policy_is_validated(tmp_path: Path) -> None:
    from tests.harness.homeserver import start_expecting_failure  # noqa: PLC0415

    failure = start_expecting_failure(tmp_path, DatabaseChoice("sqlite"), {"scope": {"remote_users": "open"}})
    assert "modules.<item 0>.config.scope.remote_users" in failure.output
    assert "accepted: allow, restrict, block" in failure.output
