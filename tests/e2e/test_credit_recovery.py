"""Credit recovery and tier-change notices end to end, over HTTP, on SQLite and PostgreSQL."""

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import database, server
from tests.harness.client import MatrixClient, q
from tests.harness.homeserver import Homeserver, running_homeserver

pytestmark = pytest.mark.e2e

TIERS = [
    {"name": "restricted", "min_score": 0, "max_groups_created": 2, "may_create_public": False},
    {
        "name": "standard",
        "min_score": 200,
        "max_groups_created": 5,
        "may_create_public": True,
        "message_rate": {"per_second": 5, "burst": 20},
    },
    {"name": "trusted", "min_score": 600, "max_groups_created": 20},
]
# One interval of a hundred years: the whole test run is inside one recovery interval, so the
# loop never fires by itself (it ticks every 10 minutes) and each user recovers at most once.
LONG = {"points": 30, "interval": "36500d", "ceiling": 250}


def config(recovery: dict[str, Any] | None) -> dict[str, Any]:
    credit: dict[str, Any] = {"initial": 100, "hysteresis": 20, "tiers": TIERS}
    if recovery is not None:
        credit["recovery"] = recovery
    return {"identity": {"required_for": []}, "credit": credit}


Server = tuple[Homeserver, MatrixClient]


@pytest.fixture(scope="module")
def hs(db_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with server(db_kind, tmp_path_factory.mktemp(f"recovery-{db_kind}"), config(LONG)) as homeserver:
        yield homeserver, homeserver.register(admin=True)


def credit(admin: MatrixClient, user_id: str) -> dict[str, Any]:
    r = admin.compliance("GET", f"admin/users/{q(user_id)}/credit")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def adjust(admin: MatrixClient, user_id: str, delta: int, reason: str = "test") -> dict[str, Any]:
    r = admin.compliance("POST", f"admin/users/{q(user_id)}/credit", json={"delta": delta, "reason": reason})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def run_recovery(admin: MatrixClient, reason: str = "test run") -> dict[str, Any]:
    r = admin.compliance("POST", "admin/credit/recovery/run", json={"reason": reason})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def outbox(admin: MatrixClient, user_id: str) -> list[dict[str, Any]]:
    r = admin.compliance("GET", f"admin/users/{q(user_id)}/notices")
    assert r.status_code == 200, r.text
    chunk: list[dict[str, Any]] = r.json()["chunk"]
    return chunk


def on(homeserver: Homeserver, client: MatrixClient) -> MatrixClient:
    """The same login on a restarted server (which listens on a new port)."""
    return MatrixClient(homeserver.base_url, client.user_id, client.access_token)


def wait_notices(user: MatrixClient, n: int) -> list[str]:
    """The user's server notices once `n` have arrived (delivery is asynchronous)."""
    deadline = time.monotonic() + 30
    while len(notices := user.server_notices()) < n:
        assert time.monotonic() < deadline, notices
        time.sleep(0.2)
    return notices


def test_recovery_grants_points_below_the_ceiling_never_above_and_once_per_interval(hs: Server) -> None:
    homeserver, admin = hs
    low, near, above, untouched = (homeserver.register() for _ in range(4))
    adjust(admin, low.user_id, -20)  # 80
    adjust(admin, near.user_id, 140)  # 240: 10 below the ceiling
    adjust(admin, above.user_id, 200)  # 300: above the ceiling

    first = run_recovery(admin)
    assert first["enabled"] is True and first["period"] == 0
    assert {low.user_id, near.user_id} <= set(first["granted_users"])
    assert above.user_id not in first["granted_users"]
    assert untouched.user_id not in first["granted_users"]
    assert (credit(admin, low.user_id)["score"], credit(admin, near.user_id)["score"]) == (110, 250)
    assert credit(admin, above.user_id)["score"] == 300
    untouched_now = credit(admin, untouched.user_id)
    assert (untouched_now["score"], untouched_now["ledger_started"]) == (100, False)

    entry = credit(admin, low.user_id)["ledger"][0]
    assert (entry["delta"], entry["reason_code"], entry["actor"]) == (30, "recovery", "synapse_compliance")
    assert "250" in entry["reason"]
    assert credit(admin, near.user_id)["ledger"][0]["delta"] == 10  # capped at the ceiling
    assert sum(e["delta"] for e in credit(admin, low.user_id)["ledger"]) == 110

    second = run_recovery(admin, "again")
    assert low.user_id not in second["granted_users"] and near.user_id not in second["granted_users"]
    assert credit(admin, low.user_id)["score"] == 110  # the same interval grants nothing twice
    runs = admin.audit(action="credit.recovery.run").json()["chunk"]
    assert [(e["actor"], e["reason"]) for e in runs[:2]] == [
        (admin.user_id, "again"),
        (admin.user_id, "test run"),
    ]
    assert runs[1]["details"]["granted"] >= 2


def test_concurrent_runs_grant_each_user_once(hs: Server) -> None:
    homeserver, admin = hs
    users = [homeserver.register() for _ in range(6)]
    for u in users:
        adjust(admin, u.user_id, -50)  # 50
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda i: run_recovery(admin, f"race {i}"), range(4)))
    granted = [u for a in answers for u in a["granted_users"]]
    for u in users:
        assert granted.count(u.user_id) == 1
        ledger = credit(admin, u.user_id)["ledger"]
        assert [e["reason_code"] for e in ledger].count("recovery") == 1
        assert credit(admin, u.user_id)["score"] == 80


def test_a_tier_change_sends_a_notice_with_old_and_new_tier_reason_and_limits(hs: Server) -> None:
    homeserver, admin = hs
    frank = homeserver.register()
    assert adjust(admin, frank.user_id, 100, "helpful moderator")["tier"] == "standard"
    assert adjust(admin, frank.user_id, -1, "small slip")["tier"] == "standard"  # hysteresis: no change
    kinds = [n["kind"] for n in outbox(admin, frank.user_id)]
    assert kinds == ["credit_tier_changed"]  # queued with the change; the -1 queued nothing
    (notice,) = wait_notices(frank, 1)
    assert "rose from restricted to standard" in notice and "credit score now 200" in notice
    assert "Reason: helpful moderator" in notice
    assert "create up to 5 groups" in notice and "create public groups: yes" in notice
    assert "5 per second, bursts of up to 20" in notice

    assert adjust(admin, frank.user_id, -30, "spam in #general")["tier"] == "restricted"  # 169
    notices = wait_notices(frank, 2)
    assert "dropped from standard to restricted" in notices[1]
    assert "Reason: spam in #general" in notices[1] and "create public groups: no" in notices[1]
    time.sleep(0.5)
    assert len(frank.server_notices()) == 2  # nothing more, nothing twice
    sent = outbox(admin, frank.user_id)
    assert all(n["sent_ts"] and n["event_id"] for n in sent)


def test_recovery_into_a_higher_tier_sends_the_notice_too(hs: Server) -> None:
    homeserver, admin = hs
    gina = homeserver.register()
    assert adjust(admin, gina.user_id, 90)["tier"] == "restricted"  # 190
    assert len(outbox(admin, gina.user_id)) == 0
    run = run_recovery(admin)
    assert gina.user_id in run["granted_users"] and run["tier_changes"] >= 1
    body = credit(admin, gina.user_id)
    assert (body["score"], body["tier"]) == (220, "standard")
    (notice,) = wait_notices(gina, 1)
    assert "rose from restricted to standard" in notice and "credit recovery" in notice


def test_bad_calls_are_refused_and_change_nothing(hs: Server) -> None:
    homeserver, admin = hs
    ivan = homeserver.register()
    adjust(admin, ivan.user_id, -10)
    bad: list[tuple[MatrixClient, Any, int, str]] = [
        (admin, {}, 400, "M_MISSING_PARAM"),
        (admin, {"reason": "  "}, 400, "M_INVALID_PARAM"),
        (admin, {"reason": "x", "points": 5}, 400, "M_INVALID_PARAM"),
        (admin, b"not json", 400, "M_NOT_JSON"),
        (ivan, {"reason": "x"}, 403, "M_FORBIDDEN"),
        (ivan.with_token(None), {"reason": "x"}, 401, "M_MISSING_TOKEN"),
    ]
    for client, body, status, errcode in bad:
        kwargs: dict[str, Any] = {"content": body} if isinstance(body, bytes) else {"json": body}
        for path in ("admin/credit/recovery/run", "admin/credit/recount"):
            r: httpx.Response = client.compliance("POST", path, **kwargs)
            assert (r.status_code, r.json()["errcode"]) == (status, errcode), (path, body, r.text)
    assert credit(admin, ivan.user_id)["score"] == 90  # no run happened
    assert admin.audit(actor=ivan.user_id).json()["chunk"] == []


def test_without_recovery_configured_a_run_grants_nothing(
    homeserver: Homeserver, admin: MatrixClient
) -> None:
    user = homeserver.register()
    adjust(admin, user.user_id, -10)
    body = run_recovery(admin)
    assert (body["enabled"], body["granted"]) == (False, 0)
    assert credit(admin, user.user_id)["score"] == 90


def test_restarts_never_grant_an_interval_twice_and_the_loop_runs_by_itself(
    db_kind: str, tmp_path: Path
) -> None:
    workdir = tmp_path / "hs"
    with database(db_kind) as db:
        with running_homeserver(workdir, db, config(LONG)) as homeserver:
            admin = homeserver.register(admin=True)
            user = homeserver.register()
            adjust(admin, user.user_id, -60)  # 40
            assert user.user_id in run_recovery(admin)["granted_users"]
            assert credit(admin, user.user_id)["score"] == 70
        with running_homeserver(workdir, db, config(LONG)) as homeserver:
            admin = on(homeserver, admin)
            assert user.user_id not in run_recovery(admin)["granted_users"]  # same interval
            assert credit(admin, user.user_id)["score"] == 70
        # A short interval: the loop itself grants, an interval at a time, up to the ceiling.
        short = {"points": 25, "interval": "2s", "ceiling": 150}
        with running_homeserver(workdir, db, config(short)) as homeserver:
            admin = on(homeserver, admin)
            deadline = time.monotonic() + 60
            while credit(admin, user.user_id)["score"] < 150:
                assert time.monotonic() < deadline, credit(admin, user.user_id)
                time.sleep(0.5)
            time.sleep(2.5)  # at least one more interval: it stays at the ceiling
            body = credit(admin, user.user_id)
            assert body["score"] == 150
            recoveries = [e for e in body["ledger"] if e["reason_code"] == "recovery"]
            assert [e["delta"] for e in recoveries] == [5, 25, 25, 25, 30]  # newest first
            assert sum(e["delta"] for e in body["ledger"]) == 150
