"""Joining, inviting, sending and managing in groups need a verified identity; direct chats do not."""

import httpx
import pytest

from tests.harness.client import MatrixClient
from tests.harness.homeserver import Homeserver

REASON = "io.synapse_compliance.reason"

pytestmark = pytest.mark.e2e


def _verified(hs: Homeserver, admin: MatrixClient) -> MatrixClient:
    user = hs.register()
    assert admin.verify(user.user_id).status_code == 200
    return user


def _revoke(admin: MatrixClient, user: MatrixClient) -> None:
    r = admin.set_verification(user.user_id, {"status": "revoked", "reason": "document withdrawn"})
    assert r.status_code == 200, r.text


def _refused(r: httpx.Response, action_words: str) -> None:
    assert r.status_code == 403, r.text
    body = r.json()
    assert body["errcode"] == "M_FORBIDDEN"
    assert body[REASON] == "identity_unverified"
    assert action_words in body["error"], body["error"]


def test_unverified_user_cannot_join_a_group_until_verified(
    homeserver: Homeserver, admin: MatrixClient
) -> None:
    owner = _verified(homeserver, admin)
    bob = homeserver.register()
    room_id = owner.create_group()
    assert owner.invite(room_id, bob.user_id).status_code == 200  # the owner is verified
    _refused(bob.join(room_id), "join a group")
    assert admin.verify(bob.user_id).status_code == 200
    assert bob.join(room_id).status_code == 200


def test_direct_join_of_a_public_group_is_refused(homeserver: Homeserver, admin: MatrixClient) -> None:
    owner = _verified(homeserver, admin)
    room_id = owner.create_room(name="Open group", preset="public_chat").json()["room_id"]
    carol = homeserver.register()
    _refused(carol.join(room_id), "join a group")


def test_unverified_member_cannot_invite_send_or_manage(homeserver: Homeserver, admin: MatrixClient) -> None:
    owner = _verified(homeserver, admin)
    bob = _verified(homeserver, admin)
    room_id = owner.create_group()
    assert owner.invite(room_id, bob.user_id).status_code == 200
    assert bob.join(room_id).status_code == 200
    assert owner.set_power_level(room_id, bob.user_id, 50).status_code == 200  # bob is verified
    sent = bob.send_text(room_id, "before revocation")
    assert sent.status_code == 200

    _revoke(admin, bob)
    dave = homeserver.register()
    _refused(bob.invite(room_id, dave.user_id), "invite people to a group")
    _refused(bob.send_text(room_id, "after revocation"), "send messages in a group")
    _refused(bob.set_power_level(room_id, dave.user_id, 10), "manage a group")
    # Taking one's own content down is always allowed, and so is leaving.
    assert bob.redact(room_id, sent.json()["event_id"]).status_code == 200
    assert bob.leave(room_id).status_code == 200


def test_unverified_member_cannot_be_made_a_manager(homeserver: Homeserver, admin: MatrixClient) -> None:
    owner = _verified(homeserver, admin)
    bob = _verified(homeserver, admin)
    room_id = owner.create_group()
    assert owner.invite(room_id, bob.user_id).status_code == 200
    assert bob.join(room_id).status_code == 200
    _revoke(admin, bob)

    r = owner.set_power_level(room_id, bob.user_id, 50)
    assert r.status_code == 403, r.text
    assert r.json()[REASON] == "identity_unverified"
    assert bob.user_id in r.json()["error"] and "manager" in r.json()["error"]
    assert owner.state(room_id, "m.room.power_levels").json().get("users", {}).get(bob.user_id) is None
    # Below the manager line is fine; so is promoting once verified again.
    assert owner.set_power_level(room_id, bob.user_id, 49).status_code == 200
    assert admin.verify(bob.user_id).status_code == 200
    assert owner.set_power_level(room_id, bob.user_id, 50).status_code == 200


def test_creation_that_would_promote_an_unverified_invitee_is_refused(
    homeserver: Homeserver, admin: MatrixClient
) -> None:
    owner = _verified(homeserver, admin)
    bob, carol = homeserver.register(), homeserver.register()
    r = owner.create_room(name="g", invite=[bob.user_id, carol.user_id], preset="trusted_private_chat")
    assert r.status_code == 403, r.text
    assert "manager" in r.json()["error"]
    r = owner.create_room(name="g", power_level_content_override={"users": {bob.user_id: 50}})
    assert r.status_code == 403, r.text
    assert bob.user_id in r.json()["error"]
    # Extra creators outrank every power level (room version 12); a power-level event in
    # `initial_state` replaces the preset and the override.
    r = owner.create_room(name="g", creation_content={"additional_creators": [carol.user_id]})
    assert r.status_code == 403, r.text
    assert carol.user_id in r.json()["error"]
    levels = {"users": {owner.user_id: 100, bob.user_id: 50}}
    r = owner.create_room(
        name="g",
        initial_state=[{"type": "m.room.power_levels", "state_key": "", "content": levels}],
        room_version="10",
    )
    assert r.status_code == 403, r.text
    assert bob.user_id in r.json()["error"]
    # The plain creation works and leaves no half-made room behind for the refused ones.
    assert owner.create_room(name="g", invite=[bob.user_id]).status_code == 200


def test_direct_chats_are_free_until_a_third_member_makes_them_a_group(
    homeserver: Homeserver, admin: MatrixClient
) -> None:
    alice = homeserver.register()  # never verified
    bob = _verified(homeserver, admin)
    r = alice.create_room(is_direct=True, invite=[bob.user_id], preset="trusted_private_chat")
    assert r.status_code == 200, r.text
    dm = r.json()["room_id"]
    create = alice.state(dm, "m.room.create").json()
    assert create["io.synapse_compliance.room_kind"] == "direct_chat"
    assert bob.join(dm).status_code == 200
    assert alice.send_text(dm, "hi bob").status_code == 200

    carol = _verified(homeserver, admin)
    _refused(alice.invite(dm, carol.user_id), "invite people to a group")  # would make 3 members
    assert bob.invite(dm, carol.user_id).status_code == 200  # bob is verified
    assert carol.join(dm).status_code == 200
    _refused(alice.send_text(dm, "now a group"), "send messages in a group")
    # Once a group, always a group: back to two members changes nothing.
    assert carol.leave(dm).status_code == 200
    _refused(alice.send_text(dm, "still a group"), "send messages in a group")


def test_a_direct_chat_is_a_group_the_moment_a_third_member_is_invited(
    homeserver: Homeserver, admin: MatrixClient
) -> None:
    # No waiting between the invite and the message: the gate must not depend on the room watch
    # having seen the invite yet (it ticks every 100 ms). Several rooms, so a gate that raced
    # the watch would lose at least once.
    alice = homeserver.register()  # never verified
    bob, carol = _verified(homeserver, admin), _verified(homeserver, admin)
    for n in range(6):
        r = alice.create_room(is_direct=True, invite=[bob.user_id], preset="trusted_private_chat")
        assert r.status_code == 200, r.text
        dm = r.json()["room_id"]
        assert bob.join(dm).status_code == 200
        assert alice.send_text(dm, f"hi bob {n}").status_code == 200
        assert bob.invite(dm, carol.user_id).status_code == 200
        _refused(alice.send_text(dm, f"now a group {n}"), "send messages in a group")


def test_client_cannot_forge_the_room_kind(homeserver: Homeserver, admin: MatrixClient) -> None:
    owner = _verified(homeserver, admin)
    r = owner.create_room(name="g", creation_content={"io.synapse_compliance.room_kind": "direct_chat"})
    room_id = r.json()["room_id"]
    assert owner.state(room_id, "m.room.create").json()["io.synapse_compliance.room_kind"] == "group"
    eve = homeserver.register()
    assert owner.invite(room_id, eve.user_id).status_code == 200
    _refused(eve.join(room_id), "join a group")


def test_upgraded_direct_chat_stays_a_direct_chat(homeserver: Homeserver, admin: MatrixClient) -> None:
    alice = homeserver.register()
    bob = _verified(homeserver, admin)
    dm = alice.create_room(is_direct=True, invite=[bob.user_id], preset="trusted_private_chat").json()[
        "room_id"
    ]
    assert bob.join(dm).status_code == 200
    up = bob.upgrade(dm)
    assert up.status_code == 200, up.text
    new_room = up.json()["replacement_room"]
    assert bob.invite(new_room, alice.user_id).status_code == 200
    joined = alice.join(new_room)
    assert joined.status_code == 200, joined.text
    assert alice.send_text(new_room, "still just us").status_code == 200


def test_admins_are_never_blocked_in_groups(homeserver: Homeserver, admin: MatrixClient) -> None:
    owner = _verified(homeserver, admin)
    room_id = owner.create_room(name="g", preset="public_chat").json()["room_id"]
    assert admin.join(room_id).status_code == 200  # the admin was never verified
    assert admin.send_text(room_id, "moderator here").status_code == 200
    assert owner.set_power_level(room_id, admin.user_id, 100).status_code == 200  # admin: no check
    bob = _verified(homeserver, admin)
    assert bob.join(room_id).status_code == 200
    assert admin.set_power_level(room_id, bob.user_id, 50).status_code == 200
