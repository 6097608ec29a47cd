"""Bad input to the admin API: a clear Matrix error, and nothing changes."""

from typing import Any

import pytest

from tests.harness.client import MatrixClient, q
from tests.harness.homeserver import Homeserver

pytestmark = pytest.mark.e2e


def _assert_untouched(admin: MatrixClient, user_id: str) -> None:
    user = admin.admin_user(user_id)
    assert user.status_code == 200, user.text
    assert user.json()["verification"]["status"] == "unverified"
    assert admin.audit(target=user_id).json()["chunk"] == []
    assert admin.verification_history(user_id).json()["chunk"] == []


BAD_BODIES: list[tuple[str, Any, str]] = [
    ("not json", b"{status: verified", "M_NOT_JSON"),
    ("json array", b'["verified"]', "M_BAD_JSON"),
    ("missing status", {"level": 1, "note": "x"}, "M_MISSING_PARAM"),
    ("unknown status", {"status": "approved", "level": 1, "note": "x"}, "M_INVALID_PARAM"),
    ("expired set by hand", {"status": "expired", "note": "x"}, "M_INVALID_PARAM"),
    ("status not a string", {"status": 1, "level": 1, "note": "x"}, "M_INVALID_PARAM"),
    ("verified without level", {"status": "verified", "note": "x"}, "M_INVALID_PARAM"),
    ("level too low", {"status": "verified", "level": 0, "note": "x"}, "M_INVALID_PARAM"),
    ("level too high", {"status": "verified", "level": 4, "note": "x"}, "M_INVALID_PARAM"),
    ("level as string", {"status": "verified", "level": "1", "note": "x"}, "M_INVALID_PARAM"),
    ("level as bool", {"status": "verified", "level": True, "note": "x"}, "M_INVALID_PARAM"),
    ("level as float", {"status": "verified", "level": 1.5, "note": "x"}, "M_INVALID_PARAM"),
    ("no reason or note", {"status": "verified", "level": 1}, "M_INVALID_PARAM"),
    ("blank reason", {"status": "verified", "level": 1, "reason": "   "}, "M_INVALID_PARAM"),
    ("reason not a string", {"status": "verified", "level": 1, "reason": ["x"]}, "M_INVALID_PARAM"),
    ("reason too long", {"status": "verified", "level": 1, "reason": "x" * 2001}, "M_INVALID_PARAM"),
    ("unknown field", {"status": "verified", "level": 1, "note": "x", "real_name": "A"}, "M_INVALID_PARAM"),
    ("level on pending", {"status": "pending", "level": 2, "note": "x"}, "M_INVALID_PARAM"),
    (
        "expiry in the past",
        {"status": "verified", "level": 1, "note": "x", "expires_ts": 1000},
        "M_INVALID_PARAM",
    ),
    ("invalid transition", {"status": "revoked", "note": "x"}, "M_INVALID_PARAM"),
]


@pytest.mark.parametrize(("case", "body", "errcode"), BAD_BODIES, ids=[c for c, _, _ in BAD_BODIES])
def test_bad_verification_body_is_refused_and_changes_nothing(
    homeserver: Homeserver, admin: MatrixClient, case: str, body: Any, errcode: str
) -> None:
    target = homeserver.register()
    r = admin.set_verification(target.user_id, body)
    assert r.status_code == 400, (case, r.text)
    assert r.json()["errcode"] == errcode, r.text
    assert r.json()["error"]
    _assert_untouched(admin, target.user_id)
    assert target.create_room(name="still gated").status_code == 403


def test_invalid_transition_names_the_allowed_ones(homeserver: Homeserver, admin: MatrixClient) -> None:
    target = homeserver.register()
    r = admin.set_verification(target.user_id, {"status": "revoked", "note": "x"})
    assert r.status_code == 400
    assert r.json()["io.synapse_compliance.reason"] == "invalid_transition"
    assert "unverified to revoked" in r.json()["error"]
    assert "pending, verified" in r.json()["error"]


def test_non_admin_is_forbidden_and_changes_nothing(homeserver: Homeserver, admin: MatrixClient) -> None:
    mallory, target = homeserver.register(), homeserver.register()
    for response in (
        mallory.verify(target.user_id),
        mallory.verify(mallory.user_id),
        mallory.admin_user(target.user_id),
        mallory.audit(),
        mallory.verification_history(target.user_id),
        mallory.status(),
    ):
        assert response.status_code == 403, response.text
        assert response.json()["errcode"] == "M_FORBIDDEN"
    _assert_untouched(admin, target.user_id)
    _assert_untouched(admin, mallory.user_id)


@pytest.mark.parametrize(
    ("token", "errcode"), [(None, "M_MISSING_TOKEN"), ("syt_not_a_token", "M_UNKNOWN_TOKEN")]
)
def test_missing_or_invalid_token_is_401(
    homeserver: Homeserver, admin: MatrixClient, token: str | None, errcode: str
) -> None:
    target = homeserver.register()
    anonymous = admin.with_token(token)
    for response in (
        anonymous.verify(target.user_id),
        anonymous.admin_user(target.user_id),
        anonymous.audit(),
        anonymous.me(),
    ):
        assert response.status_code == 401, response.text
        assert response.json()["errcode"] == errcode
    _assert_untouched(admin, target.user_id)


@pytest.mark.parametrize(
    ("user_id", "status", "errcode"),
    [
        ("@nobody-here:localhost", 404, "M_NOT_FOUND"),
        ("not-a-user-id", 400, "M_INVALID_PARAM"),
        ("@someone:elsewhere.example", 400, "M_INVALID_PARAM"),
    ],
)
def test_unknown_or_malformed_user(admin: MatrixClient, user_id: str, status: int, errcode: str) -> None:
    before = admin.audit(limit=1).json()["chunk"]
    for response in (admin.verify(user_id), admin.admin_user(user_id), admin.verification_history(user_id)):
        assert response.status_code == status, response.text
        assert response.json()["errcode"] == errcode
    assert admin.audit(limit=1).json()["chunk"] == before


def test_unknown_endpoint_and_method(admin: MatrixClient) -> None:
    r = admin.compliance("GET", "admin/no-such-thing")
    assert r.status_code == 404 and r.json()["errcode"] == "M_UNRECOGNIZED"
    r = admin.compliance("DELETE", f"admin/users/{q(admin.user_id)}/verification")
    assert r.status_code == 405 and r.json()["errcode"] == "M_UNRECOGNIZED"


@pytest.mark.parametrize(
    "params", [{"limit": "0"}, {"limit": "1001"}, {"limit": "ten"}, {"from": "garbage!"}]
)
def test_bad_pagination_is_400(admin: MatrixClient, params: dict[str, str]) -> None:
    r = admin.audit(**params)
    assert r.status_code == 400, r.text
    assert r.json()["errcode"] == "M_INVALID_PARAM"


def test_token_of_another_list_is_refused(homeserver: Homeserver, admin: MatrixClient) -> None:
    target = homeserver.register()
    for _ in range(2):
        admin.set_verification(target.user_id, {"status": "pending", "note": "a"})
        admin.set_verification(target.user_id, {"status": "unverified", "note": "b"})
    history_token = admin.verification_history(target.user_id, limit=1).json()["next_batch"]
    r = admin.audit(**{"from": history_token})
    assert r.status_code == 400 and r.json()["errcode"] == "M_INVALID_PARAM"
