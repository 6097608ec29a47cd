"""Re-verification: expiry on schedule, with a server notice before and at expiry."""

import time
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import server
from tests.harness.client import MatrixClient
from tests.harness.homeserver import Homeserver

pytestmark = pytest.mark.e2e

DAY_MS = 86_400_000


@pytest.fixture(scope="module")
def hs(db_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Homeserver, MatrixClient]]:
    config = {
        "identity": {
            "reverify_after": "30d",
            "reverify_warning": "7d",
            "help_url": "https://example.org/renew",
        }
    }
    with server(db_kind, tmp_path_factory.mktemp(f"reverify-{db_kind}"), config) as homeserver:
        yield homeserver, homeserver.register(admin=True)


def _run(admin: MatrixClient) -> dict[str, list[str]]:
    r = admin.compliance("POST", "admin/identity/expiry/run", json={})
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_verification_without_expiry_gets_reverify_after(hs: tuple[Homeserver, MatrixClient]) -> None:
    homeserver, admin = hs
    alice = homeserver.register()
    before = int(time.time() * 1000)
    v = admin.verify(alice.user_id).json()["verification"]
    assert before + 30 * DAY_MS <= v["expires_ts"] <= int(time.time() * 1000) + 30 * DAY_MS


def test_warning_then_expiry_with_notices(hs: tuple[Homeserver, MatrixClient]) -> None:
    homeserver, admin = hs
    bob = homeserver.register()
    expires = int(time.time() * 1000) + 3000  # inside the 7-day warning window at once
    r = admin.set_verification(
        bob.user_id, {"status": "verified", "level": 2, "expires_ts": expires, "reason": "x"}
    )
    assert r.status_code == 200, r.text

    first = _run(admin)
    assert bob.user_id in first["warned"] and bob.user_id not in first["expired"]
    assert bob.user_id not in _run(admin)["warned"]  # warned once only
    notices = bob.server_notices()
    assert len(notices) == 1 and "expires on" in notices[0] and "https://example.org/renew" in notices[0]
    assert bob.create_room(name="still fine").status_code == 200

    time.sleep(max(0.0, (expires - time.time() * 1000) / 1000) + 0.2)
    second = _run(admin)
    assert second["expired"] == [bob.user_id] or bob.user_id in second["expired"]
    assert bob.user_id not in _run(admin)["expired"]  # nothing twice
    history = admin.verification_history(bob.user_id).json()["chunk"]
    assert (history[0]["status"], history[0]["actor"]) == ("expired", "system:reverification")
    assert admin.admin_user(bob.user_id).json()["verification"]["recorded_status"] == "expired"
    notices = bob.server_notices()
    assert len(notices) == 2 and "expired on" in notices[1] and "create a group" in notices[1]
    refused = bob.create_room(name="now refused")
    assert refused.status_code == 403 and refused.json()["io.synapse_compliance.status"] == "expired"

    outbox = admin.compliance("GET", f"admin/users/{bob.user_id}/notices").json()["chunk"]
    assert [n["kind"] for n in outbox] == ["identity_expired", "identity_expiring"]
    assert all(n["sent_ts"] and n["event_id"] for n in outbox)

    # Renewal: verified again, with a fresh expiry; the sweep leaves them alone.
    assert admin.verify(bob.user_id).status_code == 200
    assert bob.user_id not in _run(admin)["expired"]
    assert bob.create_room(name="renewed").status_code == 200


def test_sweep_endpoint_is_admin_only(hs: tuple[Homeserver, MatrixClient]) -> None:
    homeserver, _ = hs
    carol = homeserver.register()
    r = carol.compliance("POST", "admin/identity/expiry/run", json={})
    assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN"
    assert carol.compliance("GET", f"admin/users/{carol.user_id}/notices").status_code == 403
