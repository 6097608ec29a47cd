"""Legal holds over the admin API: placing, listing, releasing, bad input, who may (DESIGN §4.4).

What holds do to pruning is in test_retention.py and test_archive_partitions.py; here the
holds themselves, on a server with pruning configured and one archived group.
"""

from collections.abc import Iterator
from typing import Any

import attrs
import httpx
import pytest

from tests.e2e.conftest import database
from tests.e2e.test_archive import ArchiveServer, send
from tests.e2e.test_retention import CONFIG, hold_audit, put_hold, release
from tests.harness.client import MatrixClient, q
from tests.harness.homeserver import Homeserver, running_homeserver

pytestmark = pytest.mark.e2e


@attrs.frozen
class HoldsServer:
    """A server with one archived group, and a hold (`case-carol`) on a user for the whole module."""

    server: ArchiveServer
    room_id: str
    carol: str


@pytest.fixture(scope="module")
def holds(db_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HoldsServer]:
    workdir = tmp_path_factory.mktemp(f"holds-{db_kind}")
    with database(db_kind) as db, running_homeserver(workdir, db, CONFIG) as hs:
        server = ArchiveServer(hs, db)
        owner, carol = server.member(), server.member()
        room_id = owner.create_group("held things")
        send(owner, room_id, "archived")
        server.run()
        r = put_hold(server.admin, "case-carol", {"user_id": carol.user_id, "reason": "court order 2"})
        assert r.status_code == 200, r.text
        yield HoldsServer(server, room_id, carol.user_id)


def test_a_hold_is_placed_listed_and_released_with_its_history(holds: HoldsServer) -> None:
    admin = holds.server.admin
    user = holds.server.member()
    r = put_hold(admin, "case-77", {"user_id": user.user_id, "reason": "investigation 77"})
    assert r.status_code == 200, r.text
    placed = r.json()
    assert placed["created"] is True and placed["active"] is True
    assert (placed["user_id"], placed["room_id"], placed["created_by"]) == (user.user_id, None, admin.user_id)
    # The same hold again: nothing changes, nothing more is audited.
    again = put_hold(admin, "case-77", {"user_id": user.user_id, "reason": "said twice"})
    assert again.status_code == 200 and again.json()["created"] is False
    assert again.json()["reason"] == "investigation 77"
    audit = hold_audit(admin, user.user_id)
    assert [(e["action"], e["reason"], e["details"]["hold_id"]) for e in audit] == [
        ("hold.place", "investigation 77", "case-77")
    ]
    # The same id for another target: a conflict, and the hold is unchanged.
    other = put_hold(admin, "case-77", {"room_id": holds.room_id, "reason": "x"})
    assert other.status_code == 409 and other.json()["errcode"] == "M_INVALID_PARAM"
    got = admin.compliance("GET", "admin/holds/case-77")
    assert got.status_code == 200 and got.json()["user_id"] == user.user_id

    listed = admin.compliance("GET", "admin/holds", params={"user_id": user.user_id}).json()["chunk"]
    assert [h["hold_id"] for h in listed] == ["case-77"]

    r = release(admin, "case-77", {"reason": "closed"})
    assert r.status_code == 200, r.text
    released = r.json()
    assert released["active"] is False and released["release_reason"] == "closed" and released["released_ts"]
    # Releasing twice changes nothing; the first release is kept.
    twice = release(admin, "case-77", {"reason": "closed again"})
    assert twice.status_code == 200 and twice.json()["released"] is False
    assert twice.json()["release_reason"] == "closed"
    # A released id is never reused.
    reuse = put_hold(admin, "case-77", {"user_id": user.user_id, "reason": "new case"})
    assert reuse.status_code == 409 and "released" in reuse.json()["error"]
    audit = hold_audit(admin, user.user_id)
    assert [e["action"] for e in audit] == ["hold.release", "hold.place"]
    assert audit[0]["actor"] == admin.user_id and audit[0]["reason"] == "closed"
    # Released holds stay listed as history.
    inactive = admin.compliance("GET", "admin/holds", params={"active": "false"}).json()["chunk"]
    assert "case-77" in [h["hold_id"] for h in inactive]
    active = admin.compliance("GET", "admin/holds", params={"active": "true"}).json()["chunk"]
    assert "case-77" not in [h["hold_id"] for h in active] and all(h["active"] for h in active)


def test_holds_are_listed_newest_first_in_pages(holds: HoldsServer) -> None:
    admin = holds.server.admin
    user = holds.server.member()
    for n in range(3):
        assert put_hold(admin, f"page-{n}", {"user_id": user.user_id, "reason": f"p{n}"}).status_code == 200
    seen: list[str] = []
    params: dict[str, Any] = {"user_id": user.user_id, "limit": 2}
    while True:
        body = admin.compliance("GET", "admin/holds", params=params).json()
        seen += [h["hold_id"] for h in body["chunk"]]
        if "next_batch" not in body:
            break
        params["from"] = body["next_batch"]
    assert seen == ["page-2", "page-1", "page-0"]
    r = admin.compliance("GET", "admin/holds", params={"from": "bogus"})
    assert r.status_code == 400 and r.json()["errcode"] == "M_INVALID_PARAM"
    r = admin.compliance("GET", "admin/holds", params={"active": "yes"})
    assert r.status_code == 400 and "active" in r.json()["error"]


BAD_HOLDS: list[tuple[str, str, Any, int, str]] = [
    ("no reason", "bad-1", {"user_id": "@x:localhost"}, 400, "M_MISSING_PARAM"),
    ("blank reason", "bad-2", {"user_id": "@x:localhost", "reason": "  "}, 400, "M_INVALID_PARAM"),
    ("no target", "bad-3", {"reason": "r"}, 400, "M_MISSING_PARAM"),
    (
        "two targets",
        "bad-4",
        {"user_id": "@x:localhost", "room_id": "!r:localhost", "reason": "r"},
        400,
        "M_INVALID_PARAM",
    ),
    ("bad user id", "bad-5", {"user_id": "alice", "reason": "r"}, 400, "M_INVALID_PARAM"),
    ("bad room id", "bad-6", {"room_id": "#alias:localhost", "reason": "r"}, 400, "M_INVALID_PARAM"),
    ("unknown room", "bad-7", {"room_id": "!nowhere:localhost", "reason": "r"}, 404, "M_NOT_FOUND"),
    (
        "unknown field",
        "bad-8",
        {"user_id": "@x:localhost", "reason": "r", "until": 5},
        400,
        "M_INVALID_PARAM",
    ),
    ("target not a string", "bad-9", {"user_id": 5, "reason": "r"}, 400, "M_INVALID_PARAM"),
    ("bad hold id", "a b", {"user_id": "@x:localhost", "reason": "r"}, 400, "M_INVALID_PARAM"),
    ("hold id too long", "h" * 129, {"user_id": "@x:localhost", "reason": "r"}, 400, "M_INVALID_PARAM"),
]


@pytest.mark.parametrize("bad", BAD_HOLDS, ids=[c[0] for c in BAD_HOLDS])
def test_bad_hold_input_is_refused_and_changes_nothing(
    holds: HoldsServer, bad: tuple[str, str, Any, int, str]
) -> None:
    case, hold_id, body, status, errcode = bad
    admin = holds.server.admin
    r = put_hold(admin, hold_id, body)
    assert (r.status_code, r.json()["errcode"]) == (status, errcode), (case, r.text)
    assert r.json()["error"]
    assert admin.compliance("GET", f"admin/holds/{q(hold_id)}").status_code in (400, 404)
    assert admin.audit(action="hold.place", target="@x:localhost").json()["chunk"] == []


def test_release_needs_a_reason_and_a_known_hold(holds: HoldsServer) -> None:
    admin = holds.server.admin
    r = release(admin, "case-carol", {})
    assert r.status_code == 400 and r.json()["errcode"] == "M_MISSING_PARAM"
    assert admin.compliance("GET", "admin/holds/case-carol").json()["active"] is True
    r = release(admin, "no-such-hold", {"reason": "r"})
    assert r.status_code == 404 and r.json()["errcode"] == "M_NOT_FOUND"
    r = admin.compliance("GET", "admin/holds/no-such-hold")
    assert r.status_code == 404 and r.json()["errcode"] == "M_NOT_FOUND"
    r = admin.compliance("POST", "admin/archive/prune", json={})
    assert r.status_code == 400 and r.json()["errcode"] == "M_MISSING_PARAM"


def test_holds_and_prune_are_for_admins(holds: HoldsServer) -> None:
    user = holds.server.member()
    calls = [
        ("GET", "admin/holds", None),
        ("GET", "admin/holds/case-carol", None),
        ("PUT", "admin/holds/mine", {"user_id": user.user_id, "reason": "r"}),
        ("DELETE", "admin/holds/case-carol", {"reason": "r"}),
        ("POST", "admin/archive/prune", {"reason": "r"}),
    ]
    for method, path, body in calls:
        r = user.compliance(method, path, json=body)
        assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN", (method, path)
        r = httpx.request(
            method, holds.server.hs.url(f"/_synapse/client/compliance/v1/{path}"), json=body, timeout=30
        )
        assert r.status_code == 401 and r.json()["errcode"] == "M_MISSING_TOKEN", (method, path)
    assert holds.server.admin.compliance("GET", "admin/holds/case-carol").json()["active"] is True
    assert holds.server.admin.compliance("GET", "admin/holds/mine").status_code == 404


def test_without_max_days_nothing_is_pruned(homeserver: Homeserver, admin: MatrixClient) -> None:
    r = admin.compliance("POST", "admin/archive/prune", json={"reason": "try"})
    assert r.status_code == 400 and r.json()["errcode"] == "M_UNKNOWN"
    assert "retention.max_days" in r.json()["error"]
    status = admin.status().json()["retention"]
    assert status["pruning"] is False and status["max_days"] is None and status["min_days"] == 184
