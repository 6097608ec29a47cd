"""The retention archive: group events are kept with their full JSON, past redactions and purges,
in tamper-evident chains; direct chats are not archived."""

import itertools
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import database
from tests.harness.cli import REPO, run_cli
from tests.harness.client import MatrixClient, q
from tests.harness.homeserver import running_homeserver
from tests.harness.sql import ServerWithDatabase

pytestmark = pytest.mark.e2e


class ArchiveServer(ServerWithDatabase):
    """A running server, an admin on it, and direct (test-only) access to its database."""

    def run(self) -> int:
        """POST admin/archive/run; the number of rows archived."""
        r = self.admin.compliance("POST", "admin/archive/run", json={})
        assert r.status_code == 200, r.text
        return int(r.json()["archived"])

    def verify(self, room_id: str | None = None) -> dict[str, Any]:
        """POST admin/archive/verify (for one room, or all)."""
        body = {"room_id": room_id} if room_id else {}
        r = self.admin.compliance("POST", "admin/archive/verify", json=body)
        assert r.status_code == 200, r.text
        result: dict[str, Any] = r.json()
        return result

    def archived(self, room_id: str) -> list[tuple[Any, ...]]:
        """(event_id, type, event_json, redacted_by) of a room's archive rows, in archive order."""
        return self.sql(
            "SELECT event_id, type, event_json, redacted_by FROM compliance_archive"
            " WHERE room_id = ? ORDER BY id",
            (room_id,),
        )

    def synapse_event_ids(self, room_id: str) -> list[str]:
        """The ids of the events Synapse has persisted in a room."""
        return [r[0] for r in self.sql("SELECT event_id FROM events WHERE room_id = ?", (room_id,))]

    def member(self) -> MatrixClient:
        """A new verified user."""
        user = self.hs.register()
        assert self.admin.verify(user.user_id).status_code == 200
        return user


@pytest.fixture(scope="module")
def archive(db_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArchiveServer]:
    """One server per database with the default config (direct chats are not governed)."""
    workdir = tmp_path_factory.mktemp(f"archive-{db_kind}")
    with database(db_kind) as db, running_homeserver(workdir, db, {}) as hs:
        yield ArchiveServer(hs, db)


def send(user: MatrixClient, room_id: str, text: str) -> str:
    r = user.send_text(room_id, text)
    assert r.status_code == 200, r.text
    return str(r.json()["event_id"])


def test_group_events_are_archived_with_the_json_synapse_stored(archive: ArchiveServer) -> None:
    owner = archive.member()
    room_id = owner.create_group("archived group")
    sent = [send(owner, room_id, f"message {n}") for n in range(3)]
    archive.run()  # the loop may have been first: either way everything is archived now
    rows = archive.archived(room_id)
    ids = [r[0] for r in rows]
    assert set(sent) <= set(ids)
    assert sorted(ids) == sorted(archive.synapse_event_ids(room_id))  # every event, create included
    assert rows[0][1] == "m.room.create"
    stored = dict(archive.sql("SELECT event_id, json FROM event_json WHERE room_id = ?", (room_id,)))
    for event_id, _, event_json, _ in rows:
        assert event_json == stored[event_id]  # byte for byte, hashes and signatures included
    body = json.loads(rows[ids.index(sent[1])][2])
    assert body["content"]["body"] == "message 1" and "hashes" in body and "signatures" in body
    assert archive.verify(room_id) == {
        "rooms_checked": 1,
        "rows_checked": len(rows),
        "ok": True,
        "first_break": None,
    }


def test_a_direct_chat_is_not_archived(archive: ArchiveServer) -> None:
    alice, bob = archive.member(), archive.member()
    r = alice.create_room(is_direct=True, invite=[bob.user_id], preset="trusted_private_chat")
    assert r.status_code == 200, r.text
    room_id = r.json()["room_id"]
    assert bob.join(room_id).status_code == 200
    send(alice, room_id, "just between us")
    archive.run()
    assert archive.archived(room_id) == []


def _direct_chat(archive: ArchiveServer) -> tuple[MatrixClient, MatrixClient, MatrixClient, str, str]:
    """Alice and Bob in a direct chat with one archived-past message; Carol not yet in it."""
    alice, bob, carol = archive.member(), archive.member(), archive.member()
    r = alice.create_room(is_direct=True, invite=[bob.user_id], preset="trusted_private_chat")
    assert r.status_code == 200, r.text
    room_id = r.json()["room_id"]
    assert bob.join(room_id).status_code == 200
    private = send(alice, room_id, "still a direct chat")
    archive.run()  # the archiver passes the direct chat's events by
    assert archive.archived(room_id) == []
    return alice, bob, carol, room_id, private


def test_a_direct_chat_that_becomes_a_group_is_archived_from_then_on(archive: ArchiveServer) -> None:
    alice, bob, carol, room_id, private = _direct_chat(archive)

    assert alice.invite(room_id, carol.user_id).status_code == 200  # a third member: a group now
    after = send(alice, room_id, "now a group")
    archive.run()
    ids = [r[0] for r in archive.archived(room_id)]
    assert after in ids and private not in ids
    assert (
        ids[0]
        == archive.sql(  # the chain starts with the invite that made it a group
            "SELECT event_id FROM events WHERE room_id = ? AND type = 'm.room.member' AND state_key = ?",
            (room_id, carol.user_id),
        )[0][0]
    )

    # Groups stay groups: with the third member gone again, the room is still archived.
    assert carol.leave(room_id).status_code == 200
    later = send(bob, room_id, "two of us again")
    archive.run()
    assert later in [r[0] for r in archive.archived(room_id)]
    assert archive.verify(room_id)["ok"] is True


def test_a_third_member_who_leaves_at_once_still_makes_a_group(archive: ArchiveServer) -> None:
    alice, _bob, carol, room_id, private = _direct_chat(archive)
    # Invited and gone again before anything looked: back to two members, but a group for good.
    assert alice.invite(room_id, carol.user_id).status_code == 200
    assert carol.leave(room_id).status_code == 200
    after = send(alice, room_id, "a group now, with two members")
    archive.run()
    ids = [r[0] for r in archive.archived(room_id)]
    assert after in ids and private not in ids
    invite = archive.sql(
        "SELECT event_id FROM events WHERE room_id = ? AND type = 'm.room.member' AND state_key = ?"
        " ORDER BY stream_ordering",
        (room_id, carol.user_id),
    )[0][0]
    assert ids[0] == invite
    assert archive.verify(room_id)["ok"] is True


def test_the_loop_archives_without_being_asked(archive: ArchiveServer) -> None:
    owner = archive.member()
    event_id = send(owner, owner.create_group(), "archived by the loop")
    deadline = time.monotonic() + 15  # the loop runs every second and on each new event
    while not archive.sql("SELECT 1 FROM compliance_archive WHERE event_id = ?", (event_id,)):
        assert time.monotonic() < deadline, "the archiver loop did not archive the message"
        time.sleep(0.1)


def test_running_twice_archives_nothing_new(archive: ArchiveServer) -> None:
    owner = archive.member()
    room_id = owner.create_group()
    send(owner, room_id, "once")
    archive.run()
    assert archive.run() == 0
    ids = [r[0] for r in archive.archived(room_id)]
    assert len(ids) == len(set(ids))
    total, distinct = archive.sql("SELECT COUNT(*), COUNT(DISTINCT event_id) FROM compliance_archive")[0]
    assert total == distinct


def test_a_redaction_marks_the_row_and_keeps_the_original(archive: ArchiveServer) -> None:
    owner = archive.member()
    room_id = owner.create_group()
    early = send(owner, room_id, "archived before its redaction")
    archive.run()
    late = send(owner, room_id, "redacted in the same batch")
    redactions = []
    for event_id in (early, late):
        r = owner.redact(room_id, event_id)
        assert r.status_code == 200, r.text
        redactions.append(r.json()["event_id"])
    archive.run()
    rows = {r[0]: r for r in archive.archived(room_id)}
    for event_id, redaction_id, text in zip(
        (early, late),
        redactions,
        ("archived before its redaction", "redacted in the same batch"),
        strict=True,
    ):
        assert json.loads(rows[event_id][2])["content"]["body"] == text
        assert rows[event_id][3] == redaction_id
        assert rows[redaction_id][1] == "m.room.redaction"
    # Synapse itself serves the redacted event without its body.
    served = owner.request("GET", f"/_matrix/client/v3/rooms/{q(room_id)}/event/{q(early)}").json()
    assert "body" not in served["content"]
    assert archive.verify(room_id)["ok"] is True


def test_the_archive_outlives_a_history_purge(archive: ArchiveServer) -> None:
    owner = archive.member()
    room_id = owner.create_group()
    purged = [send(owner, room_id, f"soon purged {n}") for n in range(3)]
    time.sleep(0.05)
    cut_ts = int(time.time() * 1000)
    time.sleep(0.05)
    send(owner, room_id, "kept by Synapse")
    archive.run()
    before = archive.archived(room_id)

    r = archive.admin.request(
        "POST",
        f"/_synapse/admin/v1/purge_history/{q(room_id)}",
        json={"purge_up_to_ts": cut_ts, "delete_local_events": True},
    )
    assert r.status_code == 200, r.text
    purge_id = r.json()["purge_id"]
    deadline = time.monotonic() + 30
    while (status := _purge_status(archive.admin, purge_id)) == "active":
        assert time.monotonic() < deadline, "purge did not finish"
        time.sleep(0.1)
    assert status == "complete"
    assert not set(purged) & set(archive.synapse_event_ids(room_id))  # gone from Synapse

    archive.run()
    assert archive.archived(room_id) == before  # nothing lost, nothing added
    assert archive.verify(room_id)["ok"] is True


def _purge_status(admin: MatrixClient, purge_id: str) -> str:
    r = admin.request("GET", f"/_synapse/admin/v1/purge_history_status/{q(purge_id)}")
    assert r.status_code == 200, r.text
    return str(r.json()["status"])


def test_a_forged_row_is_reported(archive: ArchiveServer) -> None:
    owner = archive.member()
    room_id = owner.create_group()
    target = send(owner, room_id, "the original words")
    send(owner, room_id, "a later message")
    archive.run()
    assert archive.verify(room_id)["ok"] is True
    original = dict((r[0], r[2]) for r in archive.archived(room_id))[target]
    forged = original.replace("the original words", "forged words")
    archive.sql("UPDATE compliance_archive SET event_json = ? WHERE event_id = ?", (forged, target))
    (so,) = archive.sql("SELECT stream_ordering FROM compliance_archive WHERE event_id = ?", (target,))[0]
    result = archive.verify(room_id)
    assert result["ok"] is False
    assert result["first_break"] == {
        "room_id": room_id,
        "event_id": target,
        "stream_ordering": so,
        "reason": "hash_mismatch",
    }
    archive.sql("UPDATE compliance_archive SET event_json = ? WHERE event_id = ?", (original, target))
    assert archive.verify(room_id)["ok"] is True


def test_a_deleted_row_is_reported(archive: ArchiveServer) -> None:
    owner = archive.member()
    room_id = owner.create_group()
    ids = [send(owner, room_id, f"message {n}") for n in range(3)]
    archive.run()
    archive.sql("DELETE FROM compliance_archive WHERE event_id = ?", (ids[1],))
    result = archive.verify(room_id)
    assert result["ok"] is False
    assert result["first_break"]["event_id"] == ids[2]  # its predecessor is missing
    assert result["first_break"]["reason"] == "broken_link"

    # With its successor gone too, the chain holds but ends short of its recorded head.
    archive.sql("DELETE FROM compliance_archive WHERE event_id = ?", (ids[2],))
    result = archive.verify(room_id)
    assert result["first_break"] == {
        "room_id": room_id,
        "event_id": None,
        "stream_ordering": None,
        "reason": "missing_row",
    }
    # Leave no broken chain behind for the other tests on this server.
    archive.sql("DELETE FROM compliance_archive WHERE room_id = ?", (room_id,))
    archive.sql("DELETE FROM compliance_archive_heads WHERE room_id = ?", (room_id,))


def test_status_shows_the_archive(archive: ArchiveServer) -> None:
    owner = archive.member()
    send(owner, owner.create_group(), "counted")
    archive.run()
    block = archive.admin.status().json()["archive"]
    assert block["rows"] > 0 and block["oldest_archived_ts"] > 0
    assert block["cursor"] <= block["persisted_upto"]
    assert block["lag_events"] == block["persisted_upto"] - block["cursor"]
    if archive.db.postgres is None:
        assert block["partitions"] is None  # SQLite: one table, pruned row by row
    else:  # the month partitions, oldest first; `before` holds rows from before partitioning
        names = [p["name"] for p in block["partitions"]]
        assert names[0] == "compliance_archive_before" and block["partitions"][0]["from_ts"] is None
        assert len(names) >= 2 and all(n.startswith("compliance_archive_y") for n in names[1:])
        assert all(a["to_ts"] <= b["from_ts"] for a, b in itertools.pairwise(block["partitions"]))


def test_archive_endpoints_are_for_admins(archive: ArchiveServer) -> None:
    user = archive.member()
    for path in ("admin/archive/run", "admin/archive/verify"):
        r = user.compliance("POST", path, json={})
        assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN"
        r = httpx.post(archive.hs.url(f"/_synapse/client/compliance/v1/{path}"), json={}, timeout=30)
        assert r.status_code == 401 and r.json()["errcode"] == "M_MISSING_TOKEN"
    r = archive.admin.compliance("POST", "admin/archive/verify", json={"room": "!x:localhost"})
    assert r.status_code == 400 and r.json()["errcode"] == "M_INVALID_PARAM"
    r = archive.admin.compliance("POST", "admin/archive/verify", json={"room_id": 5})
    assert r.status_code == 400 and "room_id" in r.json()["error"]
    r = archive.admin.compliance("POST", "admin/archive/verify")  # no body at all
    assert r.status_code == 200


def test_every_chain_holds(archive: ArchiveServer) -> None:
    owner = archive.member()
    for n in range(2):
        send(owner, owner.create_group(f"room {n}"), "hello")
    archive.run()
    result = archive.verify()
    assert result["ok"] is True, result
    heads = archive.sql("SELECT COUNT(*), COALESCE(SUM(rows_count), 0) FROM compliance_archive_heads")[0]
    assert (result["rooms_checked"], result["rows_checked"]) == (heads[0], heads[1])


def cli_verify(archive: ArchiveServer, *extra: str) -> subprocess.CompletedProcess[str]:
    """`synapse-compliance verify` on the server's homeserver.yaml, as an operator runs it."""
    return run_cli("verify", archive.hs.workdir / "homeserver.yaml", *extra)


def test_the_cli_verifies_the_same_chains(archive: ArchiveServer) -> None:
    owner = archive.member()
    room_id = owner.create_group()
    target = send(owner, room_id, "checked offline")
    archive.run()
    done = cli_verify(archive)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("every chain holds")
    one = cli_verify(archive, "--room-id", room_id)
    rows = len(archive.archived(room_id))
    assert one.returncode == 0 and f"ok: {rows} rows in 1 rooms" in one.stdout, one.stdout

    (original,) = archive.sql("SELECT event_json FROM compliance_archive WHERE event_id = ?", (target,))[0]
    archive.sql("UPDATE compliance_archive SET event_json = ? WHERE event_id = ?", ("{}", target))
    try:
        broken = cli_verify(archive, "--room-id", room_id)
        assert broken.returncode == 1
        assert f"chain of room {room_id} broken at event {target}" in broken.stderr
        assert "hash_mismatch" in broken.stderr and len(broken.stderr.strip().splitlines()) == 1
    finally:
        archive.sql("UPDATE compliance_archive SET event_json = ? WHERE event_id = ?", (original, target))
    assert cli_verify(archive, "--room-id", room_id).returncode == 0


def test_cli_verify_usage_errors_exit_2() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "synapse_compliance.cli", "verify"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=REPO,
    )
    assert done.returncode == 2 and "--config" in done.stderr
