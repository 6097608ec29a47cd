"""Retention: pruning past `retention.max_days` with anchors, and what legal holds keep (the holds
API itself is tested in test_legal_holds.py).

How old rows are made, honestly: pruning goes by `archived_ts`, the module's own clock when it
wrote a row, and `max_days >= min_days >= 184`. So the module fixture first runs Synapse with its
clock set 400 days back (a `sitecustomize` on the server's PYTHONPATH shifts `time.time` before
Twisted and Synapse read it), sends and archives the old messages there through the real API and
archiver, stops it, and starts it again on the same database with the real clock. Nothing in
the archive is written by hand, and the chains are the archiver's own; only the tamper tests
below edit rows, as a forger would.
"""

import time
from collections.abc import Iterator
from typing import Any

import attrs
import httpx
import pytest

from tests.e2e.conftest import database
from tests.e2e.test_archive import ArchiveServer, cli_verify, send
from tests.harness.client import MatrixClient, q
from tests.harness.clock import clock_shifted
from tests.harness.homeserver import Homeserver, running_homeserver

pytestmark = pytest.mark.e2e

DAY_MS = 86_400_000
MAX_DAYS = 200
PAST_DAYS = 400
# The loop would run first after 7 days: the tests prune on demand, so results are exact.
CONFIG = {"retention": {"max_days": MAX_DAYS, "prune_interval": "7d", "prune_batch_size": 2}}
REASON = "retention test"


def rejoin(client: MatrixClient, hs: Homeserver) -> MatrixClient:
    """The same user on the restarted server, logged in on a new device.

    A new device, not the old token: Synapse remembers the transaction ids of the old device's
    sends, and this client would count them from 1 again.
    """
    r = httpx.post(
        hs.url("/_matrix/client/v3/login"),
        json={
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": client.user_id},
            "password": client.password,
        },
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return MatrixClient(hs.base_url, client.user_id, r.json()["access_token"], password=client.password)


@attrs.frozen
class Row:
    id: int
    event_id: str
    sender: str
    state_key: str | None
    archived_ts: int
    chain_hash: str


@attrs.define
class Retention:
    """The restarted server, its admin, the rooms and users made in the past, and the holds."""

    server: ArchiveServer
    owner: MatrixClient
    carol: MatrixClient  # under a hold for the whole module
    dave: MatrixClient  # under a hold that one test releases
    rooms: dict[str, str]  # name -> room id
    old_ids: dict[str, set[int]]  # name -> ids of the rows archived in the past
    before: dict[str, list[Row]]  # name -> every row before any prune

    def rows(self, name: str) -> list[Row]:
        return rows_of(self.server, self.rooms[name])

    def prune(self, reason: str = REASON) -> dict[str, Any]:
        r = self.server.admin.compliance("POST", "admin/archive/prune", json={"reason": reason})
        assert r.status_code == 200, r.text
        result: dict[str, Any] = r.json()
        return result

    def anchor(self, name: str) -> tuple[Any, ...] | None:
        found = self.server.sql(
            "SELECT last_pruned_id, anchor_hash, pruned_rows, pruned_ts FROM compliance_archive_anchors"
            " WHERE room_id = ?",
            (self.rooms[name],),
        )
        return found[0] if found else None


def rows_of(server: ArchiveServer, room_id: str) -> list[Row]:
    return [
        Row(int(r[0]), r[1], r[2], r[3], int(r[4]), r[5])
        for r in server.sql(
            "SELECT id, event_id, sender, state_key, archived_ts, chain_hash FROM compliance_archive"
            " WHERE room_id = ? ORDER BY id",
            (room_id,),
        )
    ]


def put_hold(admin: MatrixClient, hold_id: str, body: Any) -> httpx.Response:
    return admin.compliance("PUT", f"admin/holds/{q(hold_id)}", json=body)


def release(admin: MatrixClient, hold_id: str, body: Any) -> httpx.Response:
    return admin.compliance("DELETE", f"admin/holds/{q(hold_id)}", json=body)


def hold_audit(admin: MatrixClient, target: str) -> list[dict[str, Any]]:
    """The audit entries of holds on `target`, newest first (its verification is audited too)."""
    entries: list[dict[str, Any]] = admin.audit(target=target).json()["chunk"]
    return [e for e in entries if e["action"].startswith("hold.")]


def group_with(owner: MatrixClient, guest: MatrixClient, name: str) -> str:
    room_id = owner.create_group(name)
    assert owner.invite(room_id, guest.user_id).status_code == 200
    assert guest.join(room_id).status_code == 200
    return room_id


@pytest.fixture(scope="module")
def retention(db_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Retention]:
    workdir = tmp_path_factory.mktemp(f"retention-{db_kind}")
    with database(db_kind) as db:
        # 1. The past: groups and their messages, archived 400 days ago.
        with clock_shifted(workdir / "clock", PAST_DAYS), running_homeserver(workdir, db, CONFIG) as hs:
            past = ArchiveServer(hs, db)
            owner, carol, dave = past.member(), past.member(), past.member()
            rooms = {name: owner.create_group(name) for name in ("unheld", "room_held", "fully_old")}
            rooms["user_held"] = group_with(owner, carol, "user_held")
            rooms["released"] = group_with(owner, dave, "released")
            for name, room_id in rooms.items():
                for n in range(3):
                    send(owner, room_id, f"{name}: old message {n}")
            send(carol, rooms["user_held"], "carol, long ago")
            send(owner, rooms["user_held"], "after carol, long ago")
            send(dave, rooms["released"], "dave, long ago")
            past.run()
            old_ids = {name: {r.id for r in rows_of(past, room_id)} for name, room_id in rooms.items()}
            oldest_allowed = int(time.time() * 1000) - (PAST_DAYS - 10) * DAY_MS
            for room_id in rooms.values():  # the clock shift took: these rows are old
                assert all(r.archived_ts < oldest_allowed for r in rows_of(past, room_id))

        # 2. Today, on the same database: new messages, and the holds.
        with running_homeserver(workdir, db, CONFIG) as hs:
            server = ArchiveServer(hs, db)
            owner, carol, dave = (rejoin(u, hs) for u in (owner, carol, dave))
            for name in ("unheld", "room_held", "user_held", "released"):
                for n in range(2):
                    send(owner, rooms[name], f"{name}: new message {n}")
            server.run()
            admin = server.admin
            for hold_id, body in (
                ("case-room", {"room_id": rooms["room_held"], "reason": "court order 1"}),
                ("case-carol", {"user_id": carol.user_id, "reason": "court order 2"}),
                ("case-dave", {"user_id": dave.user_id, "reason": "court order 3"}),
            ):
                r = put_hold(admin, hold_id, body)
                assert r.status_code == 200, r.text
            before = {name: rows_of(server, room_id) for name, room_id in rooms.items()}
            for name in ("unheld", "room_held", "user_held", "released"):  # the new rows are there
                assert len(before[name]) == len(old_ids[name]) + 2, name
            assert server.verify()["ok"] is True
            yield Retention(server, owner, carol, dave, rooms, old_ids, before)


def _first_held(rows: list[Row], user_id: str) -> int:
    return next(i for i, r in enumerate(rows) if user_id in (r.sender, r.state_key))


def test_prune_removes_exactly_the_old_unheld_prefix(retention: Retention) -> None:
    t = retention
    result = t.prune()
    assert result["max_days"] == MAX_DAYS and result["refused_rooms"] == []
    assert result["cutoff_ts"] < int(time.time() * 1000) - (MAX_DAYS - 1) * DAY_MS

    # Unheld: the old rows are gone, the new ones all kept.
    assert t.rows("unheld") == [r for r in t.before["unheld"] if r.id not in t.old_ids["unheld"]]
    # A room under a hold keeps everything, old rows included.
    assert t.rows("room_held") == t.before["room_held"]
    assert t.anchor("room_held") is None
    # A user under a hold: the prefix stops at the first row by or about them (carol's invite).
    user_rows = t.before["user_held"]
    stop = _first_held(user_rows, t.carol.user_id)
    assert stop > 0 and user_rows[stop].state_key == t.carol.user_id
    assert t.rows("user_held") == user_rows[stop:]
    assert any(r.sender == t.owner.user_id and r.id in t.old_ids["user_held"] for r in t.rows("user_held"))
    # Every row of a room with only old rows went; its chain head stays.
    assert not set(r.id for r in t.rows("fully_old")) & t.old_ids["fully_old"]

    # The anchor is the last pruned row's hash and counts every pruned row.
    pruned = [r for r in t.before["unheld"] if r.id in t.old_ids["unheld"]]
    last_id, anchor_hash, pruned_rows, _ = t.anchor("unheld") or ()
    assert (last_id, anchor_hash, pruned_rows) == (pruned[-1].id, pruned[-1].chain_hash, len(pruned))
    assert (t.anchor("user_held") or ())[:3] == (user_rows[stop - 1].id, user_rows[stop - 1].chain_hash, stop)

    # A second pass finds nothing more to do.
    again = t.prune()
    assert again["pruned_rows"] == 0 and t.rows("unheld") == [
        r for r in t.before["unheld"] if r.id not in t.old_ids["unheld"]
    ]


def test_pruning_is_audited_in_batches_with_the_anchor(retention: Retention) -> None:
    t = retention
    t.prune("quarterly clean-up")
    r = t.server.admin.audit(action="archive.prune", target=t.rooms["unheld"])
    assert r.status_code == 200, r.text
    entries = r.json()["chunk"]
    pruned = len(t.old_ids["unheld"])
    # prune_batch_size is 2: one audited transaction per two rows, each moving the anchor.
    assert sum(e["details"]["rows"] for e in entries) == pruned
    assert all(e["details"]["rows"] <= 2 for e in entries) and len(entries) == (pruned + 1) // 2
    newest = entries[0]
    last_id, anchor_hash, total, _ = t.anchor("unheld") or ()
    assert newest["actor"] == t.server.admin.user_id
    assert newest["details"]["anchor_hash"] == anchor_hash and newest["details"]["last_pruned_id"] == last_id
    assert newest["details"]["pruned_rows_total"] == total
    assert t.server.admin.audit(action="archive.prune", target=t.rooms["room_held"]).json()["chunk"] == []


def test_verify_holds_after_pruning(retention: Retention) -> None:
    t = retention
    t.prune()
    for name, room_id in t.rooms.items():
        result = t.server.verify(room_id)
        assert result["ok"] is True, (name, result)
        assert result["rows_checked"] == len(t.rows(name))
    assert t.server.verify()["ok"] is True
    done = cli_verify(t.server)
    assert done.returncode == 0 and done.stdout.strip().endswith("every chain holds"), done.stderr
    status = t.server.admin.status().json()
    counted = t.server.sql("SELECT COUNT(*) FROM compliance_archive")[0][0]
    assert status["archive"]["rows"] == counted and status["archive"]["pruned_rows"] > 0
    assert status["retention"]["max_days"] == MAX_DAYS and status["retention"]["pruning"] is True
    assert status["retention"]["active_holds"] >= 1  # carol's hold at least


def test_a_fully_pruned_room_continues_its_chain(retention: Retention) -> None:
    t = retention
    t.prune()
    room_id = t.rooms["fully_old"]
    assert t.rows("fully_old") == []  # only this test sends anything new here
    last_id, anchor_hash, pruned_rows, _ = t.anchor("fully_old") or ()
    assert pruned_rows == len(t.old_ids["fully_old"])
    head = t.server.sql(
        "SELECT last_id, rows_count, chain_hash FROM compliance_archive_heads WHERE room_id = ?", (room_id,)
    )
    # The head still names the last row and counts every row ever appended.
    assert head == [(last_id, pruned_rows, anchor_hash)]
    empty = t.server.verify(room_id)
    assert (empty["ok"], empty["rows_checked"]) == (True, 0)  # nothing left to check, yet it holds
    event_id = send(t.owner, room_id, "a new message after the old ones went")
    t.server.run()
    rows = t.rows("fully_old")
    assert [r.event_id for r in rows] == [event_id]
    (prev,) = t.server.sql("SELECT prev_hash FROM compliance_archive WHERE id = ?", (rows[0].id,))[0]
    assert prev == anchor_hash  # the chain goes on from the anchor
    assert t.server.verify(room_id)["ok"] is True


def test_a_forged_row_after_pruning_is_reported(retention: Retention) -> None:
    t = retention
    t.prune()
    room_id = t.rooms["unheld"]
    first = t.rows("unheld")[0]
    (original,) = t.server.sql("SELECT event_json FROM compliance_archive WHERE id = ?", (first.id,))[0]
    t.server.sql("UPDATE compliance_archive SET event_json = ? WHERE id = ?", ("{}", first.id))
    try:
        result = t.server.verify(room_id)
        assert result["ok"] is False
        assert (result["first_break"]["event_id"], result["first_break"]["reason"]) == (
            first.event_id,
            "hash_mismatch",
        )
    finally:
        t.server.sql("UPDATE compliance_archive SET event_json = ? WHERE id = ?", (original, first.id))
    assert t.server.verify(room_id)["ok"] is True


def test_a_tampered_anchor_is_reported(retention: Retention) -> None:
    t = retention
    t.prune()
    room_id = t.rooms["unheld"]
    first = t.rows("unheld")[0]
    saved = t.anchor("unheld")
    assert saved is not None
    cases: list[tuple[str, tuple[Any, ...], str, str | None]] = [
        # Another hash: the first remaining row no longer links to it.
        (
            "UPDATE compliance_archive_anchors SET anchor_hash = ? WHERE room_id = ?",
            ("f" * 64, room_id),
            "broken_link",
            first.event_id,
        ),
        # Fewer pruned rows than the head says were appended: rows are missing.
        (
            "UPDATE compliance_archive_anchors SET pruned_rows = pruned_rows - 1 WHERE room_id = ?",
            (room_id,),
            "missing_row",
            None,
        ),
        # No anchor at all: the walk starts at the genesis hash and the first row does not fit.
        (
            "DELETE FROM compliance_archive_anchors WHERE room_id = ?",
            (room_id,),
            "broken_link",
            first.event_id,
        ),
    ]
    for statement, args, reason, event_id in cases:
        t.server.sql(statement, args)
        try:
            result = t.server.verify(room_id)
            assert result["ok"] is False, statement
            assert (result["first_break"]["reason"], result["first_break"]["event_id"]) == (reason, event_id)
        finally:
            t.server.sql("DELETE FROM compliance_archive_anchors WHERE room_id = ?", (room_id,))
            t.server.sql(
                "INSERT INTO compliance_archive_anchors (room_id, last_pruned_id, anchor_hash, pruned_rows,"
                " pruned_ts) VALUES (?, ?, ?, ?, ?)",
                (room_id, *saved),
            )
        assert t.server.verify(room_id)["ok"] is True


def test_a_broken_chain_is_not_pruned_into_a_clean_one(retention: Retention) -> None:
    t = retention
    t.prune()
    rows = t.rows("room_held")
    old = [r for r in rows if r.id in t.old_ids["room_held"]]
    (original,) = t.server.sql("SELECT event_json FROM compliance_archive WHERE id = ?", (old[1].id,))[0]
    t.server.sql("UPDATE compliance_archive SET event_json = ? WHERE id = ?", ("{}", old[1].id))
    r = release(t.server.admin, "case-room", {"reason": "released only to test"})
    try:
        assert r.status_code == 200, r.text
        result = t.prune()
        assert {"room_id": t.rooms["room_held"], "reason": "hash_mismatch"} in result["refused_rooms"]
        assert t.rows("room_held") == rows  # nothing deleted: the break is still there to be seen
        assert t.server.verify(t.rooms["room_held"])["ok"] is False
    finally:
        t.server.sql("UPDATE compliance_archive SET event_json = ? WHERE id = ?", (original, old[1].id))
        # Holds are never re-placed under a released id; a new id keeps the room held again.
        assert (
            put_hold(
                t.server.admin, "case-room-2", {"room_id": t.rooms["room_held"], "reason": "again"}
            ).status_code
            == 200
        )
    assert t.server.verify(t.rooms["room_held"])["ok"] is True


def test_releasing_a_user_hold_lets_its_prefix_go(retention: Retention) -> None:
    t = retention
    t.prune()
    rows = t.before["released"]
    stop = _first_held(rows, t.dave.user_id)
    assert t.rows("released") == rows[stop:]
    r = release(t.server.admin, "case-dave", {"reason": "case closed"})
    assert r.status_code == 200, r.text
    assert (r.json()["active"], r.json()["released"], r.json()["released_by"]) == (
        False,
        True,
        t.server.admin.user_id,
    )
    t.prune()
    assert t.rows("released") == [r for r in rows if r.id not in t.old_ids["released"]]
    assert t.server.verify(t.rooms["released"])["ok"] is True


def test_the_loop_prunes_without_being_asked(db_kind: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    # Its own server: the loop's first pass comes one `prune_interval` (at least 1m) after start.
    workdir = tmp_path_factory.mktemp(f"retention-loop-{db_kind}")
    config = {"retention": {"max_days": MAX_DAYS, "prune_interval": "1m"}}
    with database(db_kind) as db:
        with clock_shifted(workdir / "clock", PAST_DAYS), running_homeserver(workdir, db, config) as hs:
            past = ArchiveServer(hs, db)
            owner = past.member()
            room_id = owner.create_group("pruned by the loop")
            send(owner, room_id, "old enough to go")
            past.run()
            old = {r.id for r in rows_of(past, room_id)}
        with running_homeserver(workdir, db, config) as hs:
            server = ArchiveServer(hs, db)
            deadline = time.monotonic() + 240  # a bound for a slow machine, not a timing check
            while {r.id for r in rows_of(server, room_id)} & old:
                assert time.monotonic() < deadline, "the pruner loop did not prune"
                time.sleep(1)
            entries = server.admin.audit(action="archive.prune", target=room_id).json()["chunk"]
            assert entries and all(e["actor"] == "synapse_compliance" for e in entries)
            assert entries[0]["reason"] == f"retention.max_days is {MAX_DAYS}"
            assert sum(e["details"]["rows"] for e in entries) == len(old)
            assert server.verify(room_id)["ok"] is True
