"""The signed KYC-provider webhook: genuine deliveries verify users; anything else changes nothing."""

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from synapse_compliance.core.kyc import signature_header
from synapse_compliance.keys import write_pii_key
from tests.e2e.conftest import server
from tests.harness.client import MatrixClient
from tests.harness.homeserver import DatabaseChoice, Homeserver, start_expecting_failure

pytestmark = pytest.mark.e2e

SECRET = b"kyc-provider-shared-secret-0123456789"
WEBHOOK = "/_synapse/client/compliance/v1/kyc/webhook"
REASON = "io.synapse_compliance.reason"


@pytest.fixture(scope="module")
def kyc(db_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Homeserver, MatrixClient]]:
    """One server per database with the webhook on; tests use their own users and event ids."""
    workdir = tmp_path_factory.mktemp(f"kyc-{db_kind}")
    secret_file = workdir / "kyc.secret"
    secret_file.write_bytes(SECRET + b"\n")
    key_file = workdir / "pii.key"
    write_pii_key(str(key_file))
    config = {
        "identity": {
            "pii_key_file": str(key_file),
            "kyc_webhook": {"enabled": True, "secret_file": str(secret_file), "tolerance": "300s"},
        }
    }
    with server(db_kind, workdir / "hs", config) as hs:
        yield hs, hs.register(admin=True)


def deliver(
    hs: Homeserver, body: Any, *, secret: bytes = SECRET, at: int | None = None, header: str | None = None
) -> httpx.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    t = int(time.time()) if at is None else at
    headers = {"Content-Type": "application/json"}
    headers["X-Compliance-Signature"] = header if header is not None else signature_header(secret, t, raw)
    return httpx.post(hs.url(WEBHOOK), content=raw, headers=headers, timeout=30)


def event(
    user_id: str, event_id: str = "evt_1", kind: str = "verification.completed", **extra: Any
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": kind,
        "user_id": user_id,
        **({"level": 2} if kind.endswith("completed") else {}),
        **extra,
    }


def _untouched(admin: MatrixClient, user_id: str) -> None:
    assert admin.admin_user(user_id).json()["verification"]["status"] == "unverified"
    assert admin.audit(target=user_id).json()["chunk"] == []
    assert admin.verification_history(user_id).json()["chunk"] == []


def test_a_signed_completion_verifies_the_user(kyc: tuple[Homeserver, MatrixClient]) -> None:
    hs, admin = kyc
    alice = hs.register()
    r = deliver(hs, event(alice.user_id))
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "applied"
    v = admin.admin_user(alice.user_id).json()["verification"]
    assert (v["status"], v["level"], v["method"]) == ("verified", 2, "kyc_webhook")
    entry = admin.audit(target=alice.user_id).json()["chunk"][0]
    assert entry["actor"] == "kyc_webhook" and "evt_1" in entry["reason"]
    assert alice.create_room(name="now allowed").status_code == 200


def test_a_replayed_event_changes_nothing_and_says_so(kyc: tuple[Homeserver, MatrixClient]) -> None:
    hs, admin = kyc
    bob = hs.register()
    assert deliver(hs, event(bob.user_id, "evt_replay", "verification.pending")).json()["status"] == "applied"
    again = deliver(hs, event(bob.user_id, "evt_replay", "verification.pending"))
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    # Same id, other content (re-signed): still a replay, still nothing.
    other = deliver(hs, event(bob.user_id, "evt_replay", "verification.completed"))
    assert other.json()["status"] == "duplicate"
    assert admin.admin_user(bob.user_id).json()["verification"]["status"] == "pending"
    assert len(admin.verification_history(bob.user_id).json()["chunk"]) == 1
    assert len(admin.audit(target=bob.user_id).json()["chunk"]) == 1


def test_the_lifecycle_through_the_webhook(kyc: tuple[Homeserver, MatrixClient]) -> None:
    hs, admin = kyc
    carol = hs.register()
    for n, kind in enumerate(["verification.pending", "verification.completed", "verification.revoked"]):
        assert deliver(hs, event(carol.user_id, f"evt_c{n}", kind)).status_code == 200
    assert admin.admin_user(carol.user_id).json()["verification"]["status"] == "revoked"
    assert carol.create_room(name="no").status_code == 403


def test_personal_data_from_the_provider_is_sealed_and_revealable(
    kyc: tuple[Homeserver, MatrixClient],
) -> None:
    hs, admin = kyc
    dave = hs.register()
    pd = {"real_name": "Dagmar Quillfeather", "document_type": "passport", "document_number": "QX-778812"}
    r = deliver(hs, event(dave.user_id, "evt_pd", personal_data=pd))
    assert r.status_code == 200, r.text
    assert "Quillfeather" not in r.text
    revealed = admin.compliance(
        "POST", f"admin/users/{dave.user_id}/identity/reveal", json={"reason": "court order 12"}
    )
    assert revealed.status_code == 200, revealed.text
    assert revealed.json()["personal_data"]["real_name"] == "Dagmar Quillfeather"


@pytest.mark.parametrize(
    ("case", "kwargs", "reason"),
    [
        ("no signature", {"header": ""}, "signature_missing"),
        ("garbled header", {"header": "sha256=abc"}, "signature_malformed"),
        ("wrong secret", {"secret": b"another-secret-entirely-0000"}, "signature_mismatch"),
        ("too old", {"skew_s": -400}, "signature_expired"),
        ("too far ahead", {"skew_s": 400}, "signature_expired"),
    ],
)
def test_bad_signatures_are_401_and_change_nothing(
    kyc: tuple[Homeserver, MatrixClient], case: str, kwargs: dict[str, Any], reason: str
) -> None:
    hs, admin = kyc
    erin = hs.register()
    if "skew_s" in kwargs:  # relative to now, at delivery time
        kwargs = {"at": int(time.time()) + kwargs["skew_s"]}
    r = deliver(hs, event(erin.user_id, f"evt_{reason}"), **kwargs)
    assert r.status_code == 401, (case, r.text)
    assert r.json()["errcode"] == "M_UNAUTHORIZED" and r.json()[REASON] == reason
    _untouched(admin, erin.user_id)


def test_a_tampered_body_is_refused(kyc: tuple[Homeserver, MatrixClient]) -> None:
    hs, admin = kyc
    frank = hs.register()
    raw = json.dumps(event(frank.user_id, "evt_t", level=1)).encode()
    header = signature_header(SECRET, int(time.time()), raw)
    tampered = raw.replace(b'"level": 1', b'"level": 3')
    r = deliver(hs, tampered, header=header)
    assert r.status_code == 401 and r.json()[REASON] == "signature_mismatch"
    _untouched(admin, frank.user_id)


@pytest.mark.parametrize(
    ("body", "status", "errcode"),
    [
        (b"not json at all", 400, "M_NOT_JSON"),
        (b'["a list"]', 400, "M_BAD_JSON"),
        ({"event_id": "e1", "type": "verification.completed", "level": "2"}, 400, "M_INVALID_PARAM"),
        ({"event_id": "e2", "type": "verification.approved"}, 400, "M_INVALID_PARAM"),
        ({"event_id": "e3", "type": "verification.completed", "level": 9}, 400, "M_INVALID_PARAM"),
        (
            {"event_id": "e4", "type": "verification.failed"},
            400,
            "M_INVALID_PARAM",
        ),  # unverified → unverified
    ],
)
def test_bad_bodies_are_4xx_and_change_nothing(
    kyc: tuple[Homeserver, MatrixClient], body: Any, status: int, errcode: str
) -> None:
    hs, admin = kyc
    gina = hs.register()
    if isinstance(body, dict):
        body = {**body, "user_id": gina.user_id}
    r = deliver(hs, body)
    assert r.status_code == status, r.text
    assert r.json()["errcode"] == errcode
    _untouched(admin, gina.user_id)
    if isinstance(body, dict):  # the refused event id was not used up: a good delivery may reuse it
        assert deliver(hs, event(gina.user_id, body["event_id"])).json()["status"] == "applied"


@pytest.mark.parametrize(
    ("user_id", "status", "errcode"),
    [("@nobody-here:localhost", 404, "M_NOT_FOUND"), ("@x:elsewhere.example", 400, "M_INVALID_PARAM")],
)
def test_unknown_or_remote_users(
    kyc: tuple[Homeserver, MatrixClient], user_id: str, status: int, errcode: str
) -> None:
    hs, admin = kyc
    before = admin.audit(limit=1).json()["chunk"]
    r = deliver(hs, event(user_id, f"evt_{status}"))
    assert r.status_code == status and r.json()["errcode"] == errcode
    assert admin.audit(limit=1).json()["chunk"] == before


def test_webhook_is_off_by_default(homeserver: Homeserver) -> None:
    r = deliver(homeserver, event("@a:localhost"))
    assert r.status_code == 404 and r.json()["errcode"] == "M_UNRECOGNIZED"


def test_admin_attestation_can_be_turned_off(server_factory: Any) -> None:
    hs = server_factory({"identity": {"admin_attestation": False}})
    admin, henry = hs.register(admin=True), hs.register()
    r = admin.verify(henry.user_id)
    assert r.status_code == 403 and "admin_attestation" in r.json()["error"]
    assert (
        admin.set_verification(
            henry.user_id, {"status": "pending", "note": "documents requested"}
        ).status_code
        == 200
    )


@pytest.mark.parametrize(
    ("webhook", "path", "message"),
    [
        ({"enabled": True}, "identity.kyc_webhook.secret_file", "required when the KYC webhook is enabled"),
        ({"enabled": "yes", "secret_file": "/x"}, "identity.kyc_webhook.enabled", "expected true or false"),
        ({"tolerance": "5 minutes"}, "identity.kyc_webhook.tolerance", "expected a duration"),
        ({"tolerance": "2h"}, "identity.kyc_webhook.tolerance", "from 1s to 1h"),
        ({"enabled": True, "secret_file": "SHORT"}, "identity.kyc_webhook.secret_file", "use at least 16"),
    ],
)
def test_bad_webhook_config_fails_startup(
    tmp_path: Path, webhook: dict[str, Any], path: str, message: str
) -> None:
    if webhook.get("secret_file") == "SHORT":
        short = tmp_path / "short.secret"
        short.write_bytes(b"tooshort")
        webhook = {**webhook, "secret_file": str(short)}
    failure = start_expecting_failure(
        tmp_path / "hs", DatabaseChoice("sqlite"), {"identity": {"kyc_webhook": webhook}}
    )
    assert f"modules.<item 0>.config.{path}" in failure.output, failure.output
    assert message in failure.output
