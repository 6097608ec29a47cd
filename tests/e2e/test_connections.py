"""Connection records end to end: copied from Synapse's user_ips, kept after Synapse prunes them.

Users log in with their own user agents and make requests; Synapse writes `user_ips` in batches
(every 5 s, client_ips.py:468), so the tests poll the database for Synapse's rows before they run
a pass. Pruning by `user_ips_max_age` is simulated by deleting the rows directly.
"""

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.e2e.conftest import ServerFactory, database
from tests.harness.client import COMPLIANCE, MatrixClient, q
from tests.harness.homeserver import running_homeserver
from tests.harness.sql import ServerWithDatabase

pytestmark = pytest.mark.e2e

T = TypeVar("T")
UA_PHONE = "ComplianceTestPhone/1.0 (Android 14)"
UA_DESKTOP = "ComplianceTestDesktop/2.3 (X11; Linux x86_64)"
POLL_TIMEOUT_S = 60.0


class ConnectionsServer(ServerWithDatabase):
    """A running server, an admin on it, and direct (test-only) access to its database."""

    def synapse_rows(self, user_id: str) -> set[tuple[Any, ...]]:
        """(device_id, ip, user_agent, last_seen) of the user's rows in Synapse's user_ips."""
        return set(
            self.sql(
                "SELECT device_id, ip, user_agent, last_seen FROM user_ips WHERE user_id = ?", (user_id,)
            )
        )

    def run(self, reason: str = "test: copy connection records now") -> dict[str, Any]:
        """POST admin/connections/run."""
        r = self.admin.compliance("POST", "admin/connections/run", json={"reason": reason})
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    def connections(self, user_id: str, **params: Any) -> dict[str, Any]:
        """GET admin/users/{user_id}/connections."""
        r = self.admin.compliance("GET", f"admin/users/{q(user_id)}/connections", params=params)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body


@pytest.fixture(scope="module")
def conn_server(db_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConnectionsServer]:
    """One server per database with the default config (the copy is on, every hour)."""
    workdir = tmp_path_factory.mktemp(f"connections-{db_kind}")
    with database(db_kind) as db, running_homeserver(workdir, db, {}) as hs:
        yield ConnectionsServer(hs, db)


def login(user: MatrixClient, user_agent: str, device_id: str | None = None) -> tuple[httpx.Client, str]:
    """Log `user` in with a client that sends `user_agent`; the client (with its token) and device."""
    http = httpx.Client(base_url=user.base_url, headers={"User-Agent": user_agent}, timeout=60)
    body: dict[str, Any] = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": user.user_id},
        "password": user.password,
    }
    if device_id is not None:
        body["device_id"] = device_id
    r = http.post("/_matrix/client/v3/login", json=body)
    assert r.status_code == 200, r.text
    http.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
    assert http.get("/_matrix/client/v3/account/whoami").status_code == 200  # Synapse records this
    return http, str(r.json()["device_id"])


def poll(what: str, check: Callable[[], T | None]) -> T:
    """Call `check` until it returns something other than None (Synapse writes in batches)."""
    deadline = time.monotonic() + POLL_TIMEOUT_S
    while True:
        result = check()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def wait_for_synapse_rows(server: ConnectionsServer, user_id: str, count: int) -> set[tuple[Any, ...]]:
    """The user's user_ips rows once Synapse has written `count` of them."""
    return poll(
        f"{count} user_ips rows of {user_id}",
        lambda: rows if len(rows := server.synapse_rows(user_id)) >= count else None,
    )


def records(body: dict[str, Any]) -> set[tuple[Any, ...]]:
    """(device_id, ip, user_agent, last_seen) of the records in a listing."""
    return {(c["device_id"], c["ip"], c["user_agent"], c["last_seen"]) for c in body["chunk"]}


def test_records_are_copied_and_outlive_synapse_pruning(conn_server: ConnectionsServer) -> None:
    user = conn_server.hs.register()
    phone, phone_device = login(user, UA_PHONE)
    desktop, desktop_device = login(user, UA_DESKTOP)
    synapse_rows = wait_for_synapse_rows(conn_server, user.user_id, 2)
    assert {(r[0], r[1], r[2]) for r in synapse_rows} == {
        (phone_device, "127.0.0.1", UA_PHONE),
        (desktop_device, "127.0.0.1", UA_DESKTOP),
    }

    result = conn_server.run()
    # (The loop's first pass, 10 s after start-up, may have copied them already.)
    assert result["scanned"] >= 2
    assert result["mark"] >= max(r[3] for r in synapse_rows)
    listing = conn_server.connections(user.user_id)
    assert listing["user_id"] == user.user_id and "next_batch" not in listing
    assert records(listing) == synapse_rows
    for c in listing["chunk"]:
        assert c["first_seen"] == c["last_seen"]
        assert c["first_copied_ts"] == c["last_copied_ts"] >= c["last_seen"]

    # The same connections as Synapse's own admin API reports (get_user_ip_and_agents).
    whois = conn_server.admin.http.get(f"/_synapse/admin/v1/whois/{q(user.user_id)}").json()
    synapse_view = {
        (c["ip"], c["user_agent"], c["last_seen"])
        for device in whois["devices"].values()
        for session in device["sessions"]
        for c in session["connections"]
    }
    assert synapse_view == {(r[1], r[2], r[3]) for r in synapse_rows}

    # Synapse prunes its rows (user_ips_max_age); the copy keeps them, and a pass adds nothing.
    conn_server.sql("DELETE FROM user_ips WHERE user_id = ?", (user.user_id,))
    assert conn_server.synapse_rows(user.user_id) == set()
    conn_server.run()
    assert conn_server.connections(user.user_id)["chunk"] == listing["chunk"]
    stored = conn_server.sql("SELECT COUNT(*) FROM compliance_connections WHERE user_id = ?", (user.user_id,))
    assert stored == [(2,)]

    # A deactivated account's records are kept and still listed.
    r = conn_server.admin.http.post(f"/_synapse/admin/v1/deactivate/{q(user.user_id)}", json={})
    assert r.status_code == 200, r.text
    conn_server.run()
    assert conn_server.connections(user.user_id)["chunk"] == listing["chunk"]
    phone.close()
    desktop.close()


def test_a_later_request_moves_last_seen_without_a_new_record(conn_server: ConnectionsServer) -> None:
    user = conn_server.hs.register()
    first, device = login(user, UA_PHONE)
    (row,) = wait_for_synapse_rows(conn_server, user.user_id, 1)
    conn_server.run()
    (before,) = conn_server.connections(user.user_id)["chunk"]
    assert before["last_seen"] == row[3]

    # The same device logs in again (a new access token: a new user_ips row) and is seen later.
    again, same_device = login(user, UA_PHONE, device_id=device)
    assert same_device == device
    later = poll(
        "the second sighting in user_ips",
        lambda: next((r for r in conn_server.synapse_rows(user.user_id) if r[3] > row[3]), None),
    )
    conn_server.run()
    (after,) = conn_server.connections(user.user_id)["chunk"]
    assert (after["device_id"], after["ip"], after["user_agent"]) == (device, "127.0.0.1", UA_PHONE)
    assert after["last_seen"] == later[3] > before["last_seen"]
    assert after["first_seen"] == before["first_seen"]
    assert after["first_copied_ts"] == before["first_copied_ts"] <= after["last_copied_ts"]
    first.close()
    again.close()


def test_listing_is_newest_first_in_pages(conn_server: ConnectionsServer) -> None:
    user = conn_server.hs.register()
    clients = []
    for n in range(3):
        clients.append(login(user, f"ComplianceTestClient/{n}")[0])
        wait_for_synapse_rows(conn_server, user.user_id, n + 1)  # distinct last_seen per record
    conn_server.run()
    full = conn_server.connections(user.user_id)["chunk"]
    assert [c["user_agent"] for c in full] == [f"ComplianceTestClient/{n}" for n in (2, 1, 0)]
    assert [c["last_seen"] for c in full] == sorted((c["last_seen"] for c in full), reverse=True)

    pages, token = [], None
    while True:
        body = conn_server.connections(user.user_id, limit=1, **({"from": token} if token else {}))
        pages += body["chunk"]
        token = body.get("next_batch")
        if token is None:
            break
    assert pages == full
    for c in clients:
        c.close()

    # Every page read is audited, newest first: who read whose records, why, and how many.
    reads = conn_server.admin.audit(action="connections.read", target=user.user_id).json()["chunk"]
    assert len(reads) == 1 + len(pages) + 1  # the full list, one page per record, the empty last
    assert all(e["actor"] == conn_server.admin.user_id for e in reads)
    assert [e["details"]["records"] for e in reversed(reads)] == [3, 1, 1, 1, 0]
    assert reads[-1]["details"]["from"] is None and reads[0]["details"]["from"] is not None
    assert reads[-1]["reason"] == "connection records read"
    conn_server.connections(user.user_id, reason="case 2026-7: login from abroad?")
    newest = conn_server.admin.audit(action="connections.read", target=user.user_id, limit=1).json()["chunk"]
    assert newest[0]["reason"] == "case 2026-7: login from abroad?"


def test_bad_requests_are_refused_and_change_nothing(conn_server: ConnectionsServer) -> None:
    user = conn_server.hs.register()
    admin = conn_server.admin

    def audit_count() -> int:
        r = admin.audit(action="connections.run", limit=1000)
        assert r.status_code == 200, r.text
        return len(r.json()["chunk"])

    before = audit_count()
    for params, status, errcode in [
        ({}, 200, None),
        ({"limit": 0}, 400, "M_INVALID_PARAM"),
        ({"limit": 1001}, 400, "M_INVALID_PARAM"),
        ({"from": "not-a-token"}, 400, "M_INVALID_PARAM"),
    ]:
        r = admin.compliance("GET", f"admin/users/{q(user.user_id)}/connections", params=params)
        assert r.status_code == status, r.text
        if errcode:
            assert r.json()["errcode"] == errcode
    r = admin.compliance("GET", f"admin/users/{q(user.user_id)}/connections", params={"reason": "x" * 2001})
    assert r.status_code == 400 and r.json()["errcode"] == "M_INVALID_PARAM"
    # Only the one good read above was audited.
    assert len(admin.audit(action="connections.read", target=user.user_id).json()["chunk"]) == 1
    for bad_id, status in [
        ("not-a-user", 400),
        ("@someone:elsewhere.example", 400),
        ("@nobody:localhost", 404),
    ]:
        r = admin.compliance("GET", f"admin/users/{q(bad_id)}/connections")
        assert r.status_code == status, r.text
        assert r.json()["errcode"] == ("M_INVALID_PARAM" if status == 400 else "M_NOT_FOUND")

    for body, errcode in [
        ({}, "M_MISSING_PARAM"),
        ({"reason": "  "}, "M_INVALID_PARAM"),
        ({"reason": 5}, "M_INVALID_PARAM"),
        ({"reason": "x", "now": True}, "M_INVALID_PARAM"),
    ]:
        r = admin.compliance("POST", "admin/connections/run", json=body)
        assert r.status_code == 400, r.text
        assert r.json()["errcode"] == errcode
    r = admin.compliance("POST", "admin/connections/run", content=b"not json")
    assert r.status_code == 400 and r.json()["errcode"] == "M_NOT_JSON"

    for method, path in [
        ("POST", "admin/connections/run"),
        ("GET", f"admin/users/{q(user.user_id)}/connections"),
    ]:
        r = user.compliance(method, path, json={"reason": "x"} if method == "POST" else None)
        assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN", r.text
        r = httpx.request(method, conn_server.hs.url(f"{COMPLIANCE}/{path}"), json={"reason": "x"})
        assert r.status_code == 401 and r.json()["errcode"] == "M_MISSING_TOKEN", r.text
    assert audit_count() == before


def test_a_run_is_audited_and_shown_in_status(conn_server: ConnectionsServer) -> None:
    result = conn_server.run("checking the copy for ticket 42")
    r = conn_server.admin.audit(action="connections.run", limit=1)
    (entry,) = r.json()["chunk"]
    assert entry["actor"] == conn_server.admin.user_id
    assert entry["reason"] == "checking the copy for ticket 42"
    assert entry["details"] == {"scanned": result["scanned"], "changed": result["changed"], "pruned": 0}

    count_sql = "SELECT COUNT(*) FROM compliance_connections"
    ((rows_before,),) = conn_server.sql(count_sql)
    status = conn_server.admin.status().json()["connections"]
    ((rows_after,),) = conn_server.sql(count_sql)  # the hourly loop may have run in between
    assert status["enabled"] is True and status["interval_ms"] == 3_600_000
    assert rows_before <= status["rows"] <= rows_after
    assert status["last_seen_mark"] >= result["mark"]
    assert status["last_pass"]["ts"] >= entry["ts"]
    assert set(status["last_pass"]) == {"ts", "scanned", "changed", "pruned"}


def test_the_copy_can_be_switched_off(server_factory: ServerFactory) -> None:
    hs = server_factory({"archive": {"connection_records": False, "connections_interval": "1m"}})
    admin = hs.register(admin=True)
    r = admin.compliance("POST", "admin/connections/run", json={"reason": "try"})
    assert r.status_code == 400 and r.json()["errcode"] == "M_UNKNOWN", r.text
    assert "archive.connection_records" in r.json()["error"]
    # /health answers before the schema upgrade (a background process) is done.
    body = poll("the schema", lambda: b if (b := admin.status().json())["schema"]["ready"] else None)
    status = body["connections"]
    assert status == {
        "enabled": False,
        "interval_ms": 60_000,
        "rows": 0,
        "last_seen_mark": 0,
        "last_pass": None,
    }
    assert admin.audit(action="connections.run").json()["chunk"] == []


@pytest.fixture
def retention_server(db_kind: str, tmp_path: Path) -> Iterator[ConnectionsServer]:
    """A server that prunes past 184 days (with database access, so records can be aged)."""
    with (
        database(db_kind) as db,
        running_homeserver(tmp_path / "hs", db, {"retention": {"max_days": 184}}) as hs,
    ):
        yield ConnectionsServer(hs, db)


def test_records_past_max_days_are_pruned_except_under_a_legal_hold(
    retention_server: ConnectionsServer,
) -> None:
    server = retention_server
    hs = server.hs
    old, held, recent = hs.register(), hs.register(), hs.register()
    clients = [login(u, UA_PHONE)[0] for u in (old, held, recent)]
    for u in (old, held, recent):
        wait_for_synapse_rows(server, u.user_id, 1)
    server.run()
    # The loop's own first pass (10 s after start-up) must not race the admin's pass below.
    poll("the loop's first pass", lambda: True if "compliance_connections_first" in hs.log_text() else None)
    # 200 days later: Synapse has long pruned its rows; only the copy remains.
    for u in (old, held):
        server.sql("DELETE FROM user_ips WHERE user_id = ?", (u.user_id,))
        server.sql(
            "UPDATE compliance_connections SET first_seen = first_seen - ?, last_seen = last_seen - ?"
            " WHERE user_id = ?",
            (200 * 86_400_000, 200 * 86_400_000, u.user_id),
        )
    r = server.admin.compliance(
        "PUT", "admin/holds/case-7", json={"user_id": held.user_id, "reason": "investigation 7"}
    )
    assert r.status_code == 200, r.text

    result = server.run("monthly retention check")
    assert result["pruned"] == 1
    assert server.connections(old.user_id)["chunk"] == []
    assert len(server.connections(held.user_id)["chunk"]) == 1
    assert len(server.connections(recent.user_id)["chunk"]) == 1
    (entry,) = server.admin.audit(action="connections.prune").json()["chunk"]
    assert (entry["actor"], entry["reason"]) == (server.admin.user_id, "monthly retention check")
    assert entry["details"]["deleted"] == 1
    assert server.admin.status().json()["connections"]["last_pass"]["pruned"] == 1

    r = server.admin.compliance("DELETE", "admin/holds/case-7", json={"reason": "case closed"})
    assert r.status_code == 200, r.text
    assert server.run()["pruned"] == 1
    assert server.connections(held.user_id)["chunk"] == []
    assert len(server.connections(recent.user_id)["chunk"]) == 1
    for c in clients:
        c.close()
