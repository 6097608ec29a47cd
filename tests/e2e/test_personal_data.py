"""Personal data behind verified identities, end to end (DESIGN §4.2).

Attestation with sealed personal data, the audited reveal, one identity per account, and the
least-exposure promise: the clear data is nowhere in the database, the audit log or Synapse's log.
"""

import json
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from synapse_compliance.keys import write_pii_key
from tests.e2e.conftest import ServerFactory, server
from tests.harness.client import MatrixClient, q
from tests.harness.dumps import dump_database
from tests.harness.homeserver import Homeserver

pytestmark = pytest.mark.e2e

REASON = "io.synapse_compliance.reason"


def person(**overrides: Any) -> dict[str, Any]:
    """Personal data with a document number no other test uses."""
    data = {
        "real_name": f"Zebulon Quartermaine-{secrets.token_hex(4)}",
        "document_type": "passport",
        "document_number": f"QZ{secrets.token_hex(5).upper()}",
        "birth_date": "1923-04-17",
    }
    data.update(overrides)
    return data


def distinctive(data: dict[str, Any]) -> list[str]:
    """The values of `data` that nothing else in the server could contain by chance."""
    return [str(data[k]) for k in ("real_name", "document_number", "birth_date") if data.get(k)]


def attest(admin: MatrixClient, user_id: str, personal_data: Any, status: str = "verified") -> httpx.Response:
    body: dict[str, Any] = {"status": status, "reason": "passport checked at the desk"}
    if status == "verified":
        body["level"] = 2
    body["personal_data"] = personal_data
    return admin.set_verification(user_id, body)


def reveal(client: MatrixClient, user_id: str, body: Any) -> httpx.Response:
    path = f"admin/users/{q(user_id)}/identity/reveal"
    if isinstance(body, bytes):
        return client.compliance("POST", path, content=body)
    return client.compliance("POST", path, json=body)


def audit(admin: MatrixClient, user_id: str, action: str | None = None) -> list[dict[str, Any]]:
    params = {"target": user_id, **({"action": action} if action else {})}
    r = admin.audit(**params)
    assert r.status_code == 200, r.text
    return list(r.json()["chunk"])


def assert_nothing_stored(admin: MatrixClient, user_id: str, status: str = "unverified") -> None:
    assert admin.admin_user(user_id).json()["verification"]["status"] == status
    assert reveal(admin, user_id, {"reason": "check"}).status_code == 404


@pytest.fixture(scope="module")
def pii_server(db_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Homeserver]:
    """A server with a PII key (one account per identity, the default)."""
    workdir = tmp_path_factory.mktemp(f"pii-{db_kind}")
    write_pii_key(str(workdir / "pii.key"))
    with server(db_kind, workdir / "hs", {"identity": {"pii_key_file": str(workdir / "pii.key")}}) as hs:
        yield hs


@pytest.fixture(scope="module")
def pii_admin(pii_server: Homeserver) -> MatrixClient:
    return pii_server.register(admin=True)


def test_attest_with_personal_data_then_reveal(pii_server: Homeserver, pii_admin: MatrixClient) -> None:
    alice = pii_server.register()
    data = person()
    r = attest(pii_admin, alice.user_id, data)
    assert r.status_code == 200, r.text
    assert r.json()["verification"]["status"] == "verified"
    key_id = r.json()["identity_record"]["key_id"]
    for value in distinctive(data):
        assert value not in r.text  # the answer says a record was stored, never what

    change = audit(pii_admin, alice.user_id, "identity.verification.change")
    assert change[0]["details"]["personal_data"] is True
    assert change[0]["details"]["key_id"] == key_id

    r = reveal(pii_admin, alice.user_id, {"reason": "court order 2031/77"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user_id"] == alice.user_id
    assert body["key_id"] == key_id
    assert body["personal_data"] == data
    assert body["verification"]["status"] == "verified" and body["verification"]["level"] == 2
    assert "no-store" in r.headers["cache-control"]

    [entry] = audit(pii_admin, alice.user_id, "identity.reveal")
    assert entry["actor"] == pii_admin.user_id
    assert entry["reason"] == "court order 2031/77"
    assert entry["details"] == {"key_id": key_id}
    everything = json.dumps(audit(pii_admin, alice.user_id))
    for value in distinctive(data):
        assert value not in everything
    assert alice.create_room(name="verified now").status_code == 200


def test_without_birth_date_and_reattesting_the_same_person(
    pii_server: Homeserver, pii_admin: MatrixClient
) -> None:
    bob = pii_server.register()
    data = person()
    del data["birth_date"]
    assert attest(pii_admin, bob.user_id, data).status_code == 200
    # The same document for the same account again is no second account; new data replaces old.
    renewed = {
        **data,
        "real_name": data["real_name"] + " Jr",
        "document_number": data["document_number"].lower(),
    }
    assert attest(pii_admin, bob.user_id, renewed).status_code == 200
    revealed = reveal(pii_admin, bob.user_id, {"reason": "check"}).json()["personal_data"]
    assert revealed == {**renewed, "birth_date": None}
    # A later attestation without personal data keeps the record.
    assert pii_admin.verify(bob.user_id, level=3, note="renewed").status_code == 200
    assert reveal(pii_admin, bob.user_id, {"reason": "check"}).json()["personal_data"] == revealed


BAD_REVEALS: list[tuple[str, Any, int, str]] = [
    ("no body", b"", 400, "M_NOT_JSON"),
    ("no reason", {}, 400, "M_MISSING_PARAM"),
    ("blank reason", {"reason": "  "}, 400, "M_INVALID_PARAM"),
    ("reason not a string", {"reason": 7}, 400, "M_INVALID_PARAM"),
    ("reason too long", {"reason": "x" * 2001}, 400, "M_INVALID_PARAM"),
    ("unknown field", {"reason": "x", "fields": ["real_name"]}, 400, "M_INVALID_PARAM"),
]


def test_bad_reveals_are_refused_and_leave_no_audit_entry(
    pii_server: Homeserver, pii_admin: MatrixClient
) -> None:
    target, mallory = pii_server.register(), pii_server.register()
    data = person()
    assert attest(pii_admin, target.user_id, data).status_code == 200
    before = audit(pii_admin, target.user_id)
    for case, body, status, errcode in BAD_REVEALS:
        r = reveal(pii_admin, target.user_id, body)
        assert (r.status_code, r.json()["errcode"]) == (status, errcode), (case, r.text)
    for client, status, errcode in [
        (mallory, 403, "M_FORBIDDEN"),
        (pii_admin.with_token(None), 401, "M_MISSING_TOKEN"),
        (pii_admin.with_token("syt_bogus"), 401, "M_UNKNOWN_TOKEN"),
    ]:
        r = reveal(client, target.user_id, {"reason": "curious"})
        assert (r.status_code, r.json()["errcode"]) == (status, errcode), r.text
        assert data["real_name"] not in r.text
    assert audit(pii_admin, target.user_id) == before


@pytest.mark.parametrize(
    ("user_id", "status", "errcode"),
    [("@nobody-here:localhost", 404, "M_NOT_FOUND"), ("@x:elsewhere.example", 400, "M_INVALID_PARAM")],
)
def test_reveal_of_unknown_user(pii_admin: MatrixClient, user_id: str, status: int, errcode: str) -> None:
    before = pii_admin.audit(limit=1).json()["chunk"]
    r = reveal(pii_admin, user_id, {"reason": "x"})
    assert (r.status_code, r.json()["errcode"]) == (status, errcode)
    assert pii_admin.audit(limit=1).json()["chunk"] == before


def test_reveal_of_user_without_record_is_404(pii_server: Homeserver, pii_admin: MatrixClient) -> None:
    carol = pii_server.register()
    assert pii_admin.verify(carol.user_id).status_code == 200  # verified, but no personal data
    r = reveal(pii_admin, carol.user_id, {"reason": "x"})
    assert (r.status_code, r.json()["errcode"]) == (404, "M_NOT_FOUND")
    assert audit(pii_admin, carol.user_id, "identity.reveal") == []


BAD_PERSONAL_DATA: list[tuple[str, Any, str, str]] = [
    ("not an object", "Zebulon", "M_INVALID_PARAM", "personal_data:"),
    (
        "missing real_name",
        {"document_type": "passport", "document_number": "X1"},
        "M_MISSING_PARAM",
        ".real_name",
    ),
    ("blank document_number", person(document_number="  "), "M_INVALID_PARAM", ".document_number"),
    ("number not a string", person(document_number=12345), "M_INVALID_PARAM", ".document_number"),
    ("name too long", person(real_name="Z" * 257), "M_INVALID_PARAM", ".real_name"),
    ("unknown field", {**person(), "nationality": "XX"}, "M_INVALID_PARAM", ".nationality"),
    ("birth date format", person(birth_date="17.04.1923"), "M_INVALID_PARAM", "YYYY-MM-DD"),
    ("birth date compact", person(birth_date="19230417"), "M_INVALID_PARAM", "YYYY-MM-DD"),
    ("birth date not real", person(birth_date="1923-02-30"), "M_INVALID_PARAM", "exists"),
    ("birth date in future", person(birth_date="2999-01-01"), "M_INVALID_PARAM", "future"),
    ("birth date ancient", person(birth_date="0099-01-01"), "M_INVALID_PARAM", "1900-01-01"),
]


@pytest.mark.parametrize(
    ("data", "errcode", "says"), [c[1:] for c in BAD_PERSONAL_DATA], ids=[c[0] for c in BAD_PERSONAL_DATA]
)
def test_bad_personal_data_is_refused_and_changes_nothing(
    pii_server: Homeserver, pii_admin: MatrixClient, data: Any, errcode: str, says: str
) -> None:
    target = pii_server.register()
    r = attest(pii_admin, target.user_id, data)
    assert (r.status_code, r.json()["errcode"]) == (400, errcode), r.text
    assert says in r.json()["error"]
    if isinstance(data, dict):  # errors name fields, never echo values
        for value in data.values():
            if isinstance(value, str) and len(value) > 3:
                assert value not in r.json()["error"]
    assert_nothing_stored(pii_admin, target.user_id)
    assert audit(pii_admin, target.user_id) == []


@pytest.mark.parametrize("status", ["pending", "revoked", "unverified"])
def test_personal_data_only_with_verified(
    pii_server: Homeserver, pii_admin: MatrixClient, status: str
) -> None:
    target = pii_server.register()
    if status == "revoked":
        assert (
            pii_admin.set_verification(target.user_id, {"status": "pending", "note": "x"}).status_code == 200
        )
    before = audit(pii_admin, target.user_id)
    r = attest(pii_admin, target.user_id, person(), status=status)
    assert r.status_code == 400 and r.json()["errcode"] == "M_INVALID_PARAM", r.text
    assert "only allowed with status verified" in r.json()["error"]
    assert_nothing_stored(pii_admin, target.user_id, "pending" if status == "revoked" else "unverified")
    assert audit(pii_admin, target.user_id) == before


def test_without_a_key_personal_data_is_refused(homeserver: Homeserver, admin: MatrixClient) -> None:
    target = homeserver.register()
    r = attest(admin, target.user_id, person())
    assert r.status_code == 400 and r.json()["errcode"] == "M_INVALID_PARAM", r.text
    assert "identity.pii_key_file" in r.json()["error"]
    assert admin.admin_user(target.user_id).json()["verification"]["status"] == "unverified"
    assert audit(admin, target.user_id) == []
    r = reveal(admin, target.user_id, {"reason": "x"})
    assert r.status_code == 400 and "identity.pii_key_file" in r.json()["error"]


def test_second_account_with_the_same_document_is_refused(
    pii_server: Homeserver, pii_admin: MatrixClient
) -> None:
    first, second = pii_server.register(), pii_server.register()
    number = f"ZX {secrets.token_hex(2).upper()} {secrets.randbelow(10**6):06d}"
    assert (
        attest(pii_admin, first.user_id, person(document_type="Passport", document_number=number)).status_code
        == 200
    )
    # Pending first, so "nothing written" also means "still pending".
    assert (
        pii_admin.set_verification(second.user_id, {"status": "pending", "note": "docs"}).status_code == 200
    )
    before = audit(pii_admin, second.user_id)
    same = person(document_type="PASSPORT", document_number=number.replace(" ", "").lower())
    r = attest(pii_admin, second.user_id, same)
    assert r.status_code == 400, r.text
    assert r.json()["errcode"] == "M_INVALID_PARAM"
    assert r.json()[REASON] == "identity_already_used"
    assert "personal_data.document_number" in r.json()["error"]
    assert "1 other account" in r.json()["error"]
    assert first.user_id not in r.text and same["document_number"] not in r.text
    assert_nothing_stored(pii_admin, second.user_id, "pending")
    assert audit(pii_admin, second.user_id) == before
    assert second.create_room(name="still gated").status_code == 403
    # Another document is fine.
    assert attest(pii_admin, second.user_id, person()).status_code == 200


def test_concurrent_attestations_of_one_document_let_exactly_one_through(
    pii_server: Homeserver, pii_admin: MatrixClient
) -> None:
    users = [pii_server.register() for _ in range(5)]
    data = person()
    barrier = threading.Barrier(len(users))
    results: dict[str, int] = {}

    def attempt(user: MatrixClient) -> None:
        client = pii_admin.with_token(pii_admin.access_token)
        barrier.wait()
        results[user.user_id] = attest(client, user.user_id, {**data, "real_name": user.user_id}).status_code

    threads = [threading.Thread(target=attempt, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results.values()) == [200, 400, 400, 400, 400], results
    revealed = [u for u in users if reveal(pii_admin, u.user_id, {"reason": "check"}).status_code == 200]
    assert [u.user_id for u in revealed] == [uid for uid, s in results.items() if s == 200]


def test_max_accounts_per_identity_two_allows_exactly_two(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    write_pii_key(str(tmp_path / "pii.key"))
    hs = server_factory(
        {"identity": {"pii_key_file": str(tmp_path / "pii.key"), "max_accounts_per_identity": 2}}
    )
    admin = hs.register(admin=True)
    a, b, c = hs.register(), hs.register(), hs.register()
    data = person()
    assert attest(admin, a.user_id, data).status_code == 200
    assert (
        attest(admin, b.user_id, {**data, "document_number": " " + data["document_number"]}).status_code
        == 200
    )
    r = attest(admin, c.user_id, data)
    assert r.status_code == 400 and r.json()[REASON] == "identity_already_used", r.text
    assert "2 other account(s)" in r.json()["error"] and "is 2" in r.json()["error"]
    assert_nothing_stored(admin, c.user_id)
    assert audit(admin, c.user_id) == []


def test_database_dump_and_log_hold_no_clear_personal_data(
    pii_server: Homeserver, pii_admin: MatrixClient
) -> None:
    dana = pii_server.register()
    data = person(real_name=f"Ottoline Vexworth-{secrets.token_hex(3)}", document_number="vq 9182 7364 55")
    assert attest(pii_admin, dana.user_id, data).status_code == 200
    assert reveal(pii_admin, dana.user_id, {"reason": "dump test"}).json()["personal_data"] == data

    dump = dump_database(pii_server)
    assert "compliance_identity_records" in dump and dana.user_id in dump  # the dump is complete
    secrets_to_find = [
        data["real_name"],
        "Ottoline",
        "Vexworth",
        data["document_number"],
        "VQ9182736455",
        data["birth_date"],
    ]
    for needle in secrets_to_find:
        assert needle.lower() not in dump.lower(), f"{needle!r} found in the database dump"
    log = pii_server.log_text() + (pii_server.workdir / "stdout.log").read_text(errors="replace")
    assert "personal data of" in log  # the reveal was logged, without the data
    for needle in secrets_to_find:
        assert needle.lower() not in log.lower(), f"{needle!r} found in Synapse's log"
