"""Backfilled events (negative stream orderings) of a governed group are archived too.

Server A runs the module on the database under test; server B is a plain Synapse. A's owner
leaves a group that B's user stays in and talks in; when the owner rejoins and scrolls back, A
backfills what it missed from B, and the archiver's second cursor picks it up.
"""

import time
from collections.abc import Callable

import pytest

from tests.e2e.conftest import database
from tests.e2e.test_archive import ArchiveServer, send
from tests.harness.client import MatrixClient, q
from tests.harness.homeserver import DatabaseChoice, Homeserver, running_homeserver

pytestmark = pytest.mark.e2e


def _join_via(user: MatrixClient, room_id: str, via: Homeserver) -> None:
    r = user.http.post(
        f"/_matrix/client/v3/join/{q(room_id)}", params={"server_name": via.server_name}, json={}
    )
    assert r.status_code == 200, r.text


def _wait_until(check: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_backfilled_events_of_a_group_are_archived(
    db_kind: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    remote_dir = tmp_path_factory.mktemp("backfill-remote")
    local_dir = tmp_path_factory.mktemp(f"backfill-{db_kind}")
    config = {"scope": {"remote_users": "allow"}}
    with (
        running_homeserver(remote_dir, DatabaseChoice("sqlite"), None, federated=True) as remote,
        database(db_kind) as db,
        running_homeserver(local_dir, db, config, federated=True) as hs,
    ):
        server = ArchiveServer(hs, db)
        owner = server.member()
        r = owner.create_room(name="backfilled group", preset="public_chat")
        assert r.status_code == 200, r.text
        room_id = r.json()["room_id"]
        guest = remote.register()
        _join_via(guest, room_id, hs)
        _wait_until(
            lambda: owner.state(room_id, "m.room.member", guest.user_id).status_code == 200,
            "the remote join to reach A",
        )
        assert owner.leave(room_id).status_code == 200
        _wait_until(
            lambda: guest.state(room_id, "m.room.member", owner.user_id).json().get("membership") == "leave",
            "the leave to reach B",
        )
        missed = [send(guest, room_id, f"while A was away {n}") for n in range(5)]

        _join_via(owner, room_id, remote)
        r = owner.request(
            "GET", f"/_matrix/client/v3/rooms/{q(room_id)}/messages", params={"dir": "b", "limit": 50}
        )
        assert r.status_code == 200, r.text

        def backfilled() -> set[str]:
            rows = server.sql(
                "SELECT event_id FROM events WHERE room_id = ? AND stream_ordering < 0", (room_id,)
            )
            return {row[0] for row in rows}

        _wait_until(lambda: set(missed) <= backfilled(), "A to backfill the missed messages")

        server.run()
        archived = {
            row[0]
            for row in server.sql(
                "SELECT event_id FROM compliance_archive WHERE room_id = ? AND stream_ordering < 0",
                (room_id,),
            )
        }
        assert archived == backfilled()
        assert set(missed) <= archived
        assert server.verify(room_id)["ok"] is True
        status = server.admin.status().json()["archive"]
        assert status["backfill_cursor"] == status["backfilled_downto"] < 0
        assert server.run() == 0
