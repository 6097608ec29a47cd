"""Recount of the groups each user created, from Synapse's own data: HTTP and CLI, both databases."""

import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
import yaml

from tests.e2e.conftest import database
from tests.harness.cli import run_cli
from tests.harness.client import MatrixClient, q
from tests.harness.homeserver import Homeserver, running_homeserver
from tests.harness.sql import server_sql

pytestmark = pytest.mark.e2e

CONFIG = {
    "identity": {"required_for": []},
    "credit": {
        "tiers": [
            {"name": "restricted", "min_score": 0, "max_groups_created": 3, "may_create_public": False},
            {"name": "standard", "min_score": 200, "max_groups_created": 10},
        ]
    },
}


@attrs.frozen
class World:
    """A server with the module, and the rooms made on it (some before the module was installed)."""

    hs: Homeserver
    admin: MatrixClient
    alice: MatrixClient
    bob: MatrixClient
    rooms: dict[str, str]


def on(hs: Homeserver, client: MatrixClient) -> MatrixClient:
    return MatrixClient(hs.base_url, client.user_id, client.access_token)


def groups_created(w: World, user_id: str) -> int:
    r = w.admin.compliance("GET", f"admin/users/{q(user_id)}/credit")
    assert r.status_code == 200, r.text
    return int(r.json()["usage"]["groups_created"])


def wait_groups_created(w: World, user_id: str, n: int) -> None:
    """Live counting follows persisted events with a short delay: wait for it to settle."""
    deadline = time.monotonic() + 30
    while groups_created(w, user_id) != n:
        assert time.monotonic() < deadline, groups_created(w, user_id)
        time.sleep(0.1)


sql = server_sql


@pytest.fixture(scope="module")
def world(db_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp(f"recount-{db_kind}")
    with database(db_kind) as db:
        # Before the module is installed: a group and a direct chat, neither recorded.
        with running_homeserver(workdir, db, None) as plain:
            alice, bob = plain.register(), plain.register()
            legacy_group = alice.create_group("legacy group")
            dm = alice.create_room(is_direct=True, invite=[bob.user_id], preset="trusted_private_chat")
            assert dm.status_code == 200, dm.text
            legacy_dm = dm.json()["room_id"]
        with running_homeserver(workdir, db, CONFIG) as hs:
            yield World(
                hs,
                hs.register(admin=True),
                on(hs, alice),
                on(hs, bob),
                {"legacy_group": legacy_group, "legacy_dm": legacy_dm},
            )


def recount(w: World, reason: str = "recount test") -> dict[str, int]:
    r = w.admin.compliance("POST", "admin/credit/recount", json={"reason": reason})
    assert r.status_code == 200, r.text
    body: dict[str, int] = r.json()
    return body


def changes(report: dict[str, int]) -> tuple[int, int, int, int]:
    return report["added"], report["ended"], report["restored"], report["reassigned"]


def test_recount_agrees_with_live_counting_and_adds_groups_made_before_the_module(world: World) -> None:
    w = world
    alice, bob = w.alice, w.bob
    w.rooms["g1"] = alice.create_group("g1")
    w.rooms["g2"] = alice.create_group("g2")
    w.rooms["g3"] = alice.create_group("g3")
    upgraded = alice.upgrade(w.rooms["g1"])
    assert upgraded.status_code == 200, upgraded.text
    w.rooms["g1u"] = upgraded.json()["replacement_room"]
    assert alice.leave(w.rooms["g3"]).status_code == 200
    dm = alice.create_room(is_direct=True, invite=[bob.user_id], preset="trusted_private_chat")
    assert dm.status_code == 200, dm.text
    w.rooms["dm"] = dm.json()["room_id"]
    wait_groups_created(w, alice.user_id, 2)  # g1u and g2: the live count

    report = recount(w)
    # Only the group made before the module is new; everything the live count did stands.
    assert changes(report) == (1, 0, 0, 0), report
    # Groups: legacy, g2, g1u counting, g1 (upgraded away) not. g3 is gone from Synapse's
    # current state (its last member left), so its row simply stays ended.
    assert (report["counting"], report["groups"]) == (3, 4), report
    assert groups_created(w, alice.user_id) == 3
    assert groups_created(w, bob.user_id) == 0
    refused = alice.create_room(name="one too many", preset="private_chat")
    assert refused.status_code == 403 and refused.json()["io.synapse_compliance.reason"] == "group_create_cap"
    assert changes(recount(w, "again")) == (0, 0, 0, 0)  # a second recount changes nothing
    audit = w.admin.audit(action="credit.recount").json()["chunk"]
    assert [(e["actor"], e["reason"]) for e in audit[:2]] == [
        (w.admin.user_id, "again"),
        (w.admin.user_id, "recount test"),
    ]
    assert audit[1]["details"] == report


def corrupt(w: World) -> None:
    r = w.rooms
    sql(w.hs, "DELETE FROM compliance_credit_groups WHERE room_id = ?", (r["legacy_group"],))
    sql(w.hs, "UPDATE compliance_credit_groups SET ended_ts = 1 WHERE room_id = ?", (r["g2"],))
    sql(w.hs, "UPDATE compliance_credit_groups SET ended_ts = NULL WHERE room_id = ?", (r["g3"],))
    sql(w.hs, "UPDATE compliance_credit_groups SET creator = ? WHERE room_id = ?", (w.bob.user_id, r["g1u"]))
    sql(w.hs, "DELETE FROM compliance_credit_groups WHERE room_id = ?", (r["dm"],))
    sql(
        w.hs,
        "INSERT INTO compliance_credit_groups (room_id, creator, created_ts) VALUES (?, ?, 1)",
        (r["dm"], w.alice.user_id),
    )
    assert groups_created(w, w.alice.user_id) == 2  # g3 and the direct chat: wrong
    assert groups_created(w, w.bob.user_id) == 1  # g1u: wrong


EXPECTED_REPAIR = (1, 2, 1, 1)  # legacy group added; g3, dm ended; g2 restored; g1u reassigned


def test_a_corrupted_table_is_repaired_over_http(world: World) -> None:
    w = world
    assert groups_created(w, w.alice.user_id) == 3  # after the test above
    corrupt(w)
    assert changes(recount(w)) == EXPECTED_REPAIR
    assert groups_created(w, w.alice.user_id) == 3
    assert groups_created(w, w.bob.user_id) == 0
    rows = dict(sql(w.hs, "SELECT room_id, ended_ts FROM compliance_credit_groups"))
    assert rows[w.rooms["dm"]] is not None and rows[w.rooms["g3"]] is not None
    assert rows[w.rooms["g2"]] is None and rows[w.rooms["legacy_group"]] is None


def test_a_corrupted_table_is_repaired_by_the_cli_while_synapse_runs(world: World) -> None:
    w = world
    corrupt(w)
    result = run_cli("recount", w.hs.workdir / "homeserver.yaml", "--reason", "nightly")
    assert result.returncode == 0, result
    assert "rows added 1, ended 2, restored 1, reassigned 1" in result.stdout, result.stdout
    assert groups_created(w, w.alice.user_id) == 3
    assert groups_created(w, w.bob.user_id) == 0
    entry = w.admin.audit(action="credit.recount").json()["chunk"][0]
    assert (entry["actor"], entry["reason"]) == ("synapse-compliance recount", "nightly")
    assert changes(entry["details"]) == EXPECTED_REPAIR


def test_the_cli_fails_in_one_line_without_a_module_entry(world: World, tmp_path: Any) -> None:
    document = yaml.safe_load((world.hs.workdir / "homeserver.yaml").read_text())
    document["modules"] = []
    bare = tmp_path / "bare.yaml"
    bare.write_text(yaml.safe_dump(document))
    result = subprocess.run(
        [sys.executable, "-m", "synapse_compliance.cli", "recount", "-c", str(bare)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result
    assert "no `modules:` entry" in result.stderr


def test_a_direct_chat_that_became_a_group_counts_live_as_the_recount_counts_it(world: World) -> None:
    # Last in this module: it adds a group of bob's, which the repair tests above do not expect.
    w = world
    carol = w.hs.register()
    dm = w.bob.create_room(is_direct=True, invite=[w.alice.user_id], preset="trusted_private_chat")
    assert dm.status_code == 200, dm.text
    room_id = dm.json()["room_id"]
    assert w.alice.join(room_id).status_code == 200
    time.sleep(0.5)  # give the live count time to (wrongly) count a direct chat
    assert groups_created(w, w.bob.user_id) == 0  # a direct chat is no group of bob's
    assert w.bob.invite(room_id, carol.user_id).status_code == 200  # a third member: a group now
    wait_groups_created(w, w.bob.user_id, 1)
    assert changes(recount(w, "after a direct chat grew")) == (0, 0, 0, 0)  # live and recount agree
    # Its creator leaving stops it counting, as for any group; coming back counts it again.
    assert w.bob.leave(room_id).status_code == 200
    wait_groups_created(w, w.bob.user_id, 0)
    assert w.alice.invite(room_id, w.bob.user_id).status_code == 200
    assert w.bob.join(room_id).status_code == 200
    wait_groups_created(w, w.bob.user_id, 1)
    assert changes(recount(w, "once more")) == (0, 0, 0, 0)
