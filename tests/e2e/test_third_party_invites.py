"""Invites by email (third-party invites) pass the same gates as invites of Matrix users."""

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import server
from tests.e2e.test_credit_caps import CONFIG, raise_credit, refused
from tests.harness.client import MatrixClient, q
from tests.harness.homeserver import Homeserver
from tests.harness.identity_server import IDENTITY_SERVER_SETTINGS, identity_server

pytestmark = pytest.mark.e2e

World = tuple[Homeserver, MatrixClient, str, list[str]]


@pytest.fixture(scope="module")
def world(db_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp(f"3pid-{db_kind}")
    with (
        identity_server(workdir / "is") as (id_server, asked),
        server(db_kind, workdir / "hs", CONFIG, extra=IDENTITY_SERVER_SETTINGS) as hs,
    ):
        yield hs, hs.register(admin=True), id_server, asked


def invite_by_email(user: MatrixClient, room_id: str, id_server: str, address: str) -> httpx.Response:
    body: dict[str, Any] = {
        "id_server": id_server,
        "id_access_token": "test-token",
        "medium": "email",
        "address": address,
    }
    return user.http.post(f"/_matrix/client/v3/rooms/{q(room_id)}/invite", json=body)


def third_party_invites(user: MatrixClient, room_id: str) -> list[dict[str, Any]]:
    r = user.http.get(f"/_matrix/client/v3/rooms/{q(room_id)}/state")
    assert r.status_code == 200, r.text
    return [e for e in r.json() if e["type"] == "m.room.third_party_invite"]


def test_an_email_invite_needs_may_invite_like_any_invite(world: World) -> None:
    hs, admin, id_server, asked = world
    inviter = hs.register()  # restricted: may_invite is false
    room_id = inviter.create_group("invites by email")
    body = refused(invite_by_email(inviter, room_id, id_server, "dave@example.org"), "may_not_invite")
    assert "may_invite" in body["error"]
    assert third_party_invites(inviter, room_id) == []
    assert not any(p.startswith("/_matrix/identity/v2/store-invite") for p in asked)  # nothing stored
    raise_credit(admin, inviter, 100)  # standard: may invite
    r = invite_by_email(inviter, room_id, id_server, "dave@example.org")
    assert r.status_code == 200, r.text
    assert [e["content"]["display_name"] for e in third_party_invites(inviter, room_id)] == [
        "d...@example.org"
    ]


def test_an_email_invite_into_a_direct_chat_is_not_the_groups_business(world: World) -> None:
    hs, _, id_server, _ = world
    alice, bob = hs.register(), hs.register()  # restricted
    r = alice.create_room(is_direct=True, invite=[bob.user_id], preset="trusted_private_chat")
    assert r.status_code == 200, r.text
    dm = r.json()["room_id"]
    # Not yet a group (two members; a pending email invite is no member): allowed.
    r = invite_by_email(alice, dm, id_server, "erin@example.org")
    assert r.status_code == 200, r.text


def test_an_unverified_user_cannot_invite_by_email_into_a_group(
    db_kind: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    workdir = tmp_path_factory.mktemp(f"3pid-identity-{db_kind}")
    with (
        identity_server(workdir / "is") as (id_server, asked),
        server(db_kind, workdir / "hs", {}, extra=IDENTITY_SERVER_SETTINGS) as hs,
    ):
        admin, owner = hs.register(admin=True), hs.register()
        assert admin.verify(owner.user_id).status_code == 200
        room_id = owner.create_group("verified owner")
        member = hs.register()
        assert admin.verify(member.user_id).status_code == 200
        assert owner.invite(room_id, member.user_id).status_code == 200
        assert member.join(room_id).status_code == 200
        revoked = {"status": "revoked", "reason": "document withdrawn"}
        assert admin.set_verification(member.user_id, revoked).status_code == 200  # a member, unverified now
        r = invite_by_email(member, room_id, id_server, "frank@example.org")
        assert r.status_code == 403 and r.json()["io.synapse_compliance.reason"] == "identity_unverified", (
            r.text
        )
        assert not any(p.startswith("/_matrix/identity/v2/store-invite") for p in asked)  # nothing stored
        r = invite_by_email(owner, room_id, id_server, "frank@example.org")
        assert r.status_code == 200, r.text
        assert len(third_party_invites(owner, room_id)) == 1
