"""Credit and tiers end to end: the creation cap, public groups, message rate, the admin API."""

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import server
from tests.harness.client import MatrixClient, q
from tests.harness.homeserver import Homeserver

pytestmark = pytest.mark.e2e

REASON = "io.synapse_compliance.reason"
LIMIT = "io.synapse_compliance.limit"
USAGE = "io.synapse_compliance.usage"

# Unverified users start at 100: "restricted". Identity gates are off so only credit decides.
CONFIG = {
    "identity": {"required_for": []},
    "credit": {
        "initial": 100,
        "hysteresis": 20,
        "tiers": [
            {
                "name": "restricted",
                "min_score": 0,
                "max_groups_created": 2,
                "may_create_public": False,
                "message_rate": {"per_second": 1, "burst": 3},
            },
            {
                "name": "standard",
                "min_score": 200,
                "max_groups_created": 5,
                "may_create_public": True,
                "message_rate": {"per_second": 50, "burst": 100},
            },
            {"name": "trusted", "min_score": 600, "max_groups_created": 20},
        ],
    },
}

Credit = tuple[Homeserver, MatrixClient]


@pytest.fixture(scope="module")
def credit(db_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Credit]:
    """One server per database with the tiers above, and an admin on it."""
    with server(db_kind, tmp_path_factory.mktemp(f"credit-{db_kind}"), CONFIG) as hs:
        yield hs, hs.register(admin=True)


def get_credit(admin: MatrixClient, user_id: str, **params: Any) -> dict[str, Any]:
    r = admin.compliance("GET", f"admin/users/{q(user_id)}/credit", params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def adjust(admin: MatrixClient, user_id: str, body: Any) -> httpx.Response:
    if isinstance(body, bytes | str):
        return admin.compliance("POST", f"admin/users/{q(user_id)}/credit", content=body)
    return admin.compliance("POST", f"admin/users/{q(user_id)}/credit", json=body)


def adjusted(admin: MatrixClient, user_id: str, delta: int, reason: str = "test") -> dict[str, Any]:
    r = adjust(admin, user_id, {"delta": delta, "reason": reason})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def wait_groups_created(admin: MatrixClient, user_id: str, n: int) -> None:
    """Creations are counted just after they persist (the room watch): wait for the count."""
    deadline = time.monotonic() + 15
    while get_credit(admin, user_id)["usage"]["groups_created"] != n:
        assert time.monotonic() < deadline, get_credit(admin, user_id)
        time.sleep(0.05)


def refused(r: httpx.Response, errcode: str, reason: str) -> dict[str, Any]:
    assert r.status_code == 403, r.text
    body: dict[str, Any] = r.json()
    assert (body["errcode"], body[REASON]) == (errcode, reason), body
    return body


# --- group creation -----------------------------------------------------------------------------


def test_the_creation_cap_refuses_exactly_at_the_limit_and_frees_a_place_on_leaving(credit: Credit) -> None:
    hs, admin = credit
    alice = hs.register()
    first = alice.create_group("one")
    wait_groups_created(admin, alice.user_id, 1)
    second = alice.create_group("two")  # not one earlier: the second of two is allowed
    wait_groups_created(admin, alice.user_id, 2)
    body = refused(alice.create_room(name="three", preset="private_chat"), "M_FORBIDDEN", "group_create_cap")
    assert (body[LIMIT], body[USAGE], body["io.synapse_compliance.tier"]) == (2, 2, "restricted")
    assert "created 2 groups" in body["error"] and "allows 2" in body["error"]
    # A direct chat is not a group: neither capped nor counted.
    bob = hs.register()
    dm = alice.create_room(is_direct=True, invite=[bob.user_id], preset="trusted_private_chat")
    assert dm.status_code == 200, dm.text
    # An upgrade replaces a group (allowed at the cap); the count moves to the replacement.
    upgraded = alice.upgrade(first)
    assert upgraded.status_code == 200, upgraded.text
    replacement = upgraded.json()["replacement_room"]
    # A profile change sends a join into every room, the replaced one too: it stays replaced.
    # (Leaving the second group afterwards shows when the watch has handled both, in order.)
    r = alice.http.put(
        f"/_matrix/client/v3/profile/{q(alice.user_id)}/displayname", json={"displayname": "Alice"}
    )
    assert r.status_code == 200, r.text
    member = f"/_matrix/client/v3/rooms/{q(first)}/state/m.room.member/{q(alice.user_id)}"
    deadline = time.monotonic() + 15  # Synapse updates member events from a scheduled task
    while alice.http.get(member).json().get("displayname") != "Alice":
        assert time.monotonic() < deadline, "the profile change never reached the old room"
        time.sleep(0.1)
    assert alice.leave(second).status_code == 200
    wait_groups_created(admin, alice.user_id, 1)
    assert alice.leave(first).status_code == 200  # leaving the old room frees nothing
    time.sleep(0.5)
    assert get_credit(admin, alice.user_id)["usage"]["groups_created"] == 1
    # Leaving a group one created frees its place.
    assert alice.leave(replacement).status_code == 200
    wait_groups_created(admin, alice.user_id, 0)
    alice.create_group("three")


def test_public_groups_need_a_tier_that_allows_them(credit: Credit) -> None:
    hs, admin = credit
    carol = hs.register()
    body = refused(
        carol.create_room(name="open", preset="public_chat"), "M_FORBIDDEN", "may_not_create_public"
    )
    assert "may_create_public" in body["error"]
    refused(carol.create_room(name="listed", visibility="public"), "M_FORBIDDEN", "may_not_create_public")
    assert get_credit(admin, carol.user_id)["usage"]["groups_created"] == 0  # refusals count nothing
    assert adjusted(admin, carol.user_id, 150)["tier"] == "standard"
    r = carol.create_room(name="open", preset="public_chat", visibility="public")
    assert r.status_code == 200, r.text


def test_admins_are_not_capped(credit: Credit) -> None:
    _, admin = credit
    for i in range(3):
        r = admin.create_room(name=f"admin group {i}", preset="public_chat")
        assert r.status_code == 200, r.text


# --- message rate -------------------------------------------------------------------------------


def test_a_burst_beyond_the_tier_is_limited_and_sending_works_again_after_the_wait(credit: Credit) -> None:
    hs, _ = credit
    dave = hs.register()
    room_id = dave.create_group("chatty")
    for i in range(3):  # burst 3
        assert dave.send_text(room_id, f"m{i}").status_code == 200
    body = refused(dave.send_text(room_id, "one too many"), "M_LIMIT_EXCEEDED", "message_rate")
    wait_ms = body["retry_after_ms"]
    assert 0 < wait_ms <= 1000  # 1 per second
    assert body[LIMIT] == {"per_second": 1.0, "burst": 3}
    assert "1.0 per second" in body["error"]
    time.sleep(wait_ms / 1000 + 0.05)
    assert dave.send_text(room_id, "after the wait").status_code == 200


def test_direct_chats_and_admins_are_not_rate_limited(credit: Credit) -> None:
    hs, admin = credit
    erin, frank = hs.register(), hs.register()
    dm = erin.create_room(is_direct=True, invite=[frank.user_id], preset="trusted_private_chat")
    assert dm.status_code == 200, dm.text
    for i in range(6):
        assert erin.send_text(dm.json()["room_id"], f"dm {i}").status_code == 200
    room_id = admin.create_group("announcements")
    for i in range(6):  # the admin is "restricted" by score, but exempt
        assert admin.send_text(room_id, f"notice {i}").status_code == 200


def test_a_higher_tier_gets_a_higher_rate(credit: Credit) -> None:
    hs, admin = credit
    gina = hs.register()
    room_id = gina.create_group("busy")
    adjusted(admin, gina.user_id, 100)
    for i in range(10):
        assert gina.send_text(room_id, f"m{i}").status_code == 200


# --- tiers and the ledger -----------------------------------------------------------------------


def test_adjustments_move_between_tiers_with_hysteresis(credit: Credit) -> None:
    hs, admin = credit
    henry = hs.register()
    mine = henry.compliance("GET", "me/credit").json()
    assert (mine["score"], mine["tier"], mine["ledger_started"]) == (100, "restricted", False)
    assert mine["limits"]["max_groups_created"] == 2
    steps = [(100, 200, "standard"), (-10, 190, "standard"), (-10, 180, "standard")]
    steps += [(-1, 179, "restricted"), (+20, 199, "restricted"), (+1, 200, "standard")]
    steps += [(+400, 600, "trusted"), (-20, 580, "trusted"), (-1, 579, "standard")]
    for delta, score, tier in steps:
        body = adjusted(admin, henry.user_id, delta)
        assert (body["applied_delta"], body["score"], body["tier"]) == (delta, score, tier), body
        assert body["limits"]["name"] == tier
    mine = henry.compliance("GET", "me/credit").json()
    assert (mine["score"], mine["tier"], mine["ledger_started"]) == (579, "standard", True)
    assert mine["limits"]["max_groups_created"] == 5


def test_ledger_sum_equals_score_through_clamping_at_min_and_max(credit: Credit) -> None:
    hs, admin = credit
    ivy = hs.register()
    requested = [2000, 5, -50, -5000, -1, 37, 12]
    applied = [adjusted(admin, ivy.user_id, d, f"change {d}")["applied_delta"] for d in requested]
    assert applied == [900, 0, -50, -950, 0, 37, 12]
    body = get_credit(admin, ivy.user_id)
    assert body["score"] == 49
    ledger = body["ledger"]
    assert [e["delta"] for e in ledger] == [*reversed(applied), 100]  # newest first; initial last
    assert sum(e["delta"] for e in ledger) == body["score"]
    assert ledger[-1]["reason_code"] == "initial"
    assert ledger[0]["reason_code"] == "admin_adjustment"
    assert (ledger[0]["reason"], ledger[0]["actor"]) == ("change 12", admin.user_id)
    # Pagination: limit and next_batch, no entry twice or missed.
    seen: list[int] = []
    params: dict[str, Any] = {"limit": 3}
    while True:
        page = get_credit(admin, ivy.user_id, **params)
        seen += [e["delta"] for e in page["ledger"]]
        if "next_batch" not in page:
            break
        params["from"] = page["next_batch"]
    assert seen == [e["delta"] for e in ledger]
    audit = admin.audit(target=ivy.user_id, action="credit.adjust").json()["chunk"]
    assert len(audit) == len(requested)
    assert audit[-1]["reason"] == "change 2000"


def test_concurrent_adjustments_of_a_fresh_user_lose_nothing(credit: Credit) -> None:
    hs, admin = credit
    kim = hs.register()
    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(
            pool.map(lambda i: adjust(admin, kim.user_id, {"delta": 1, "reason": f"r{i}"}), range(16))
        )
    assert [r.status_code for r in codes] == [200] * 16, [r.text for r in codes if r.status_code != 200]
    body = get_credit(admin, kim.user_id)
    assert body["score"] == 116
    assert [e["reason_code"] for e in body["ledger"]].count("initial") == 1
    assert sum(e["delta"] for e in body["ledger"]) == 116


# --- bad input ----------------------------------------------------------------------------------

BAD_BODIES: list[tuple[Any, int, str]] = [
    ({"reason": "no delta"}, 400, "M_MISSING_PARAM"),
    ({"delta": "5", "reason": "x"}, 400, "M_INVALID_PARAM"),
    ({"delta": 1.5, "reason": "x"}, 400, "M_INVALID_PARAM"),
    ({"delta": 5.0, "reason": "x"}, 400, "M_INVALID_PARAM"),
    ({"delta": True, "reason": "x"}, 400, "M_INVALID_PARAM"),
    ({"delta": None, "reason": "x"}, 400, "M_INVALID_PARAM"),
    ({"delta": 0, "reason": "x"}, 400, "M_INVALID_PARAM"),
    ({"delta": 5}, 400, "M_MISSING_PARAM"),
    ({"delta": 5, "reason": "   "}, 400, "M_INVALID_PARAM"),
    ({"delta": 5, "reason": 7}, 400, "M_INVALID_PARAM"),
    ({"delta": 5, "reason": "x", "case": "c1"}, 400, "M_INVALID_PARAM"),
    (b"{not json", 400, "M_NOT_JSON"),
    ("[1, 2]", 400, "M_BAD_JSON"),
]


def test_bad_adjustments_are_refused_and_change_nothing(credit: Credit) -> None:
    hs, admin = credit
    jack = hs.register()
    for body, status, errcode in BAD_BODIES:
        r = adjust(admin, jack.user_id, body)
        assert (r.status_code, r.json()["errcode"]) == (status, errcode), (body, r.text)
    field_named = adjust(admin, jack.user_id, {"delta": "5", "reason": "x"}).json()["error"]
    assert field_named.startswith("delta:")
    for client, status, errcode in [
        (jack, 403, "M_FORBIDDEN"),
        (jack.with_token(None), 401, "M_MISSING_TOKEN"),
        (jack.with_token("not-a-token"), 401, "M_UNKNOWN_TOKEN"),
    ]:
        r = adjust(client, jack.user_id, {"delta": 5, "reason": "x"})
        assert (r.status_code, r.json()["errcode"]) == (status, errcode), r.text
        r = client.compliance("GET", f"admin/users/{q(jack.user_id)}/credit")
        assert r.status_code == status, r.text
    missing = adjust(admin, f"@nobody:{hs.server_name}", {"delta": 5, "reason": "x"})
    assert (missing.status_code, missing.json()["errcode"]) == (404, "M_NOT_FOUND")
    remote = adjust(admin, "@someone:elsewhere.example", {"delta": 5, "reason": "x"})
    assert remote.status_code == 400
    assert admin.compliance("GET", f"admin/users/{q('@nobody:' + hs.server_name)}/credit").status_code == 404
    assert admin.compliance("GET", f"admin/users/{q(jack.user_id)}/credit?limit=0").status_code == 400
    assert admin.compliance("GET", f"admin/users/{q(jack.user_id)}/credit?from=zzz").status_code == 400
    after = get_credit(admin, jack.user_id)
    assert (after["score"], after["ledger"], after["ledger_started"]) == (100, [], False)
    assert admin.audit(target=jack.user_id).json()["chunk"] == []
    assert jack.with_token(None).compliance("GET", "me/credit").status_code == 401
