"""Identity from OIDC claims at login, end to end: a real Synapse logging users in via a fake IdP."""

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ServerFactory
from tests.harness.client import MatrixClient
from tests.harness.fake_oidc import FakeOidcProvider, running_fake_oidc, sso_extra, sso_login
from tests.harness.homeserver import DatabaseChoice, Homeserver, free_loopback_port, start_expecting_failure

pytestmark = pytest.mark.e2e

REASON = "io.synapse_compliance.reason"
# Verified when `verified` is true; level 2, or 3 when `acr` says loa3.
COMPLIANCE: dict[str, Any] = {
    "claim": "verified",
    "value": True,
    "level": 2,
    "level_claim": "acr",
    "levels": {"loa3": 3},
}
STRICT: dict[str, Any] = {"claim": "verified", "revoke_when_absent": True}


@pytest.fixture
def idp() -> Iterator[FakeOidcProvider]:
    """A fake OIDC provider, up before the homeserver starts and down after it stops."""
    with running_fake_oidc() as provider:
        yield provider


def _start(server_factory: ServerFactory, idp: FakeOidcProvider, *providers: dict[str, Any]) -> Homeserver:
    return server_factory({}, extra=sso_extra(*(providers or (idp.provider_config("fake", COMPLIANCE),))))


def _login(
    hs: Homeserver, idp: FakeOidcProvider, sub: str, idp_id: str = "fake", **claims: Any
) -> MatrixClient:
    return sso_login(hs.base_url, idp, idp_id, sub=sub, claims={"preferred_username": sub, **claims})


def _sub() -> str:
    return f"oidc{secrets.token_hex(4)}"


def _verification(admin: MatrixClient, user_id: str) -> dict[str, Any]:
    r = admin.admin_user(user_id)
    assert r.status_code == 200, r.text
    return dict(r.json()["verification"])


def _history(admin: MatrixClient, user_id: str) -> list[dict[str, Any]]:
    r = admin.verification_history(user_id)
    assert r.status_code == 200, r.text
    return list(r.json()["chunk"])


def _audit(admin: MatrixClient, user_id: str) -> list[dict[str, Any]]:
    r = admin.audit(target=user_id)
    assert r.status_code == 200, r.text
    return list(r.json()["chunk"])


def test_first_login_with_claim_verifies_and_unlocks_groups(
    idp: FakeOidcProvider, server_factory: ServerFactory
) -> None:
    hs = _start(
        server_factory,
        idp,
        idp.provider_config("fake", COMPLIANCE),
        # New users of this one pick their username on Synapse's page before they exist.
        idp.provider_config("picker", COMPLIANCE, mapping={"confirm_localpart": True}),
    )
    admin = hs.register(admin=True)

    alice = _login(hs, idp, _sub(), verified=True)
    verification = _verification(admin, alice.user_id)
    assert verification["status"] == "verified"
    assert verification["level"] == 2
    assert verification["method"] == "oidc:fake"
    created = alice.create_room(name="Book club", preset="private_chat")
    assert created.status_code == 200, created.text

    bob_sub = _sub()
    bob = _login(hs, idp, bob_sub)  # the IdP does not vouch for bob
    assert _verification(admin, bob.user_id)["status"] == "unverified"
    refused = bob.create_room(name="Book club", preset="private_chat")
    assert refused.status_code == 403, refused.text
    assert refused.json()["errcode"] == "M_FORBIDDEN"
    assert refused.json()[REASON] == "identity_unverified"

    # The gate has just cached bob as unverified; a login with the claim must reach that cache.
    bob_again = _login(hs, idp, bob_sub, verified=True)
    assert bob_again.user_id == bob.user_id
    created = bob.create_room(name="Book club", preset="private_chat")
    assert created.status_code == 200, created.text

    # Minutes may pass on the username picker; the claims wait for the user to exist.
    chosen = _sub()
    gina = sso_login(
        hs.base_url, idp, "picker", sub=_sub(), claims={"verified": True, "acr": "loa3"}, pick_username=chosen
    )
    assert gina.user_id.startswith(f"@{chosen}:")  # the picked name, so the picker ran
    verification = _verification(admin, gina.user_id)
    assert (verification["status"], verification["level"], verification["method"]) == (
        "verified",
        3,
        "oidc:picker",
    )

    carol = _login(hs, idp, _sub(), verified="true")  # a string is not the boolean the config names
    assert _verification(admin, carol.user_id)["status"] == "unverified"


def test_relogin_adds_history_only_when_the_level_changes(
    idp: FakeOidcProvider, server_factory: ServerFactory
) -> None:
    hs = _start(server_factory, idp)
    admin = hs.register(admin=True)
    sub = _sub()

    first = _login(hs, idp, sub, verified=True)
    assert [(h["status"], h["level"], h["actor"]) for h in _history(admin, first.user_id)] == [
        ("verified", 2, "oidc:fake")
    ]
    again = _login(hs, idp, sub, verified=True)
    assert again.user_id == first.user_id
    assert len(_history(admin, first.user_id)) == 1
    assert len(_audit(admin, first.user_id)) == 1

    higher = _login(hs, idp, sub, verified=True, acr="loa3")
    assert higher.user_id == first.user_id
    verification = _verification(admin, first.user_id)
    assert (verification["status"], verification["level"], verification["method"]) == (
        "verified",
        3,
        "oidc:fake",
    )
    history = _history(admin, first.user_id)
    assert [(h["status"], h["level"], h["actor"]) for h in history] == [
        ("verified", 3, "oidc:fake"),
        ("verified", 2, "oidc:fake"),
    ]
    newest = _audit(admin, first.user_id)[0]
    assert newest["actor"] == "oidc:fake"
    assert newest["action"] == "identity.verification.change"
    assert newest["details"]["from_status"] == "verified"
    assert newest["details"]["level"] == 3
    assert "claim 'verified'" in newest["reason"]


def test_revocation_and_other_sources(idp: FakeOidcProvider, server_factory: ServerFactory) -> None:
    hs = _start(
        server_factory,
        idp,
        idp.provider_config("fake", COMPLIANCE),
        # The second provider reads the claims from the userinfo endpoint instead of the id_token.
        idp.provider_config("strict", STRICT, user_profile_method="userinfo_endpoint"),
    )
    admin = hs.register(admin=True)

    # revoke_when_absent: the strict IdP's own verification goes when its claim goes, and returns.
    dave_sub = _sub()
    dave = _login(hs, idp, dave_sub, "strict", verified=True)
    assert _verification(admin, dave.user_id)["method"] == "oidc:strict"
    assert _verification(admin, dave.user_id)["level"] == 1
    _login(hs, idp, dave_sub, "strict")
    assert _verification(admin, dave.user_id)["status"] == "revoked"
    refused = dave.create_room(name="g", preset="private_chat")
    assert refused.status_code == 403
    assert refused.json()["io.synapse_compliance.status"] == "revoked"
    _login(hs, idp, dave_sub, "strict", verified=True)
    assert _verification(admin, dave.user_id)["status"] == "verified"
    assert [h["status"] for h in _history(admin, dave.user_id)] == ["verified", "revoked", "verified"]

    # Default (revoke_when_absent false): a login without the claim leaves the status alone.
    frank_sub = _sub()
    frank = _login(hs, idp, frank_sub, verified=True)
    _login(hs, idp, frank_sub)
    assert _verification(admin, frank.user_id)["status"] == "verified"
    assert len(_history(admin, frank.user_id)) == 1

    # A stronger admin attestation is never weakened by a login, and an admin's revocation is
    # not lifted by one.
    erin_sub = _sub()
    erin = _login(hs, idp, erin_sub)
    assert admin.verify(erin.user_id, level=3, note="passport seen").status_code == 200
    _login(hs, idp, erin_sub, verified=True)
    verification = _verification(admin, erin.user_id)
    assert (verification["level"], verification["method"]) == (3, "admin_attestation")
    r = admin.set_verification(erin.user_id, {"status": "revoked", "reason": "document withdrawn"})
    assert r.status_code == 200, r.text
    _login(hs, idp, erin_sub, verified=True, acr="loa3")
    assert _verification(admin, erin.user_id)["status"] == "revoked"
    assert [h["actor"] for h in _history(admin, erin.user_id)] == [admin.user_id, admin.user_id]


PREFIX = "oidc_providers.<item 0>.user_mapping_provider.config"

BAD_CONFIGS: list[tuple[str, dict[str, Any] | None, dict[str, Any], str, str]] = [
    ("no compliance mapping", None, {}, f"{PREFIX}.compliance", "required"),
    ("missing claim", {"value": True}, {}, f"{PREFIX}.compliance.claim", "required"),
    ("level 5", {"claim": "verified", "level": 5}, {}, f"{PREFIX}.compliance.level", "1-3; got 5"),
    (
        "unknown key",
        {"claim": "verified", "colour": "red"},
        {},
        f"{PREFIX}.compliance.colour",
        "unknown option",
    ),
    (
        "bad level in levels",
        {"claim": "acr", "levels": {"loa3": 4}},
        {},
        f"{PREFIX}.compliance.levels.loa3",
        "1-3; got 4",
    ),
    (
        "typo in a Jinja key",
        {"claim": "verified"},
        {"localpart_templte": "{{ user.sub }}"},
        f"{PREFIX}.localpart_templte",
        "unknown option",
    ),
]


@pytest.mark.parametrize(
    ("compliance", "mapping", "path", "message"),
    [case[1:] for case in BAD_CONFIGS],
    ids=[case[0] for case in BAD_CONFIGS],
)
def test_bad_mapping_provider_config_stops_startup(
    tmp_path: Path, compliance: dict[str, Any] | None, mapping: dict[str, Any], path: str, message: str
) -> None:
    # Parsed with the rest of homeserver.yaml, before Synapse contacts the IdP or opens its
    # database: no provider needs to run, and SQLite stands for both databases.
    idp = FakeOidcProvider(free_loopback_port())
    provider = idp.provider_config("fake", compliance, mapping=mapping)
    failure = start_expecting_failure(tmp_path, DatabaseChoice("sqlite"), {}, extra=sso_extra(provider))
    assert failure.returncode == 1
    assert f"Error in configuration at '{path}'" in failure.output, failure.output
    assert message in failure.output, failure.output
