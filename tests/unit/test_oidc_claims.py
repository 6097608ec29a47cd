"""OIDC claims → verification: claim evaluation, the change decision and the config, without Synapse."""

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from synapse_compliance.config import ConfigProblem
from synapse_compliance.core.identity import (
    NEVER_VERIFIED,
    Verification,
    VerificationStatus,
    apply_verification_change,
    decide_verification_change,
)
from synapse_compliance.core.oidc_claims import (
    CLAIM_ABSENT,
    CLAIM_WITHDRAWN,
    KEPT_STRONGER,
    LEVEL_CHANGED,
    LEVEL_RAISED,
    NOT_VERIFIED,
    REVOKED_ELSEWHERE,
    UNCHANGED,
    VERIFIED,
    ClaimVerdict,
    OidcClaimPolicy,
    ParkedVerdicts,
    claim_matches,
    decide_oidc_verification,
    evaluate_oidc_claims,
)
from synapse_compliance.oidc_config import JINJA_KEYS, parse_oidc_claim_policy, split_mapping_provider_config
from tests.unit.strategies import times, verifications

S = VerificationStatus
NOW = 1_800_000_000_000
OURS = "oidc:corp"
ACR = OidcClaimPolicy(claim="acr", accepted=("loa2", "loa3"), level=2, levels=(("loa3", 3),))


def verified(level: int, method: str = OURS, expires_ts: int | None = None) -> Verification:
    return Verification(
        status=S.VERIFIED, level=level, method=method, updated_ts=1, verified_ts=1, expires_ts=expires_ts
    )


# --- evaluating claims ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("actual", "expected", "matches"),
    [
        (True, True, True),
        ("true", True, False),  # a string is not a boolean
        (1, True, False),  # Python's True == 1 must not leak into claims
        (True, 1, False),
        (1, 1, True),
        ("1", 1, False),
        ("loa3", "loa3", True),
        ("LOA3", "loa3", False),  # exact, case-sensitive
        (["a", "loa3"], "loa3", True),  # list claims: any element
        ([], "loa3", False),
        ({"loa3": True}, "loa3", False),
        (None, True, False),
        (1.0, 1, False),
    ],
)
def test_claim_matching_is_exact_and_type_aware(actual: Any, expected: Any, matches: bool) -> None:
    assert claim_matches(actual, expected) is matches


def test_default_policy_wants_claim_true() -> None:
    policy = OidcClaimPolicy(claim="verified")
    assert evaluate_oidc_claims({"verified": True}, policy) == ClaimVerdict(True, 1)
    assert evaluate_oidc_claims({"verified": False}, policy) == NOT_VERIFIED
    assert evaluate_oidc_claims({"sub": "x"}, policy) == NOT_VERIFIED


@pytest.mark.parametrize(
    ("claims", "verdict"),
    [
        ({"acr": "loa2"}, ClaimVerdict(True, 2)),  # accepted, not in `levels`: the base level
        ({"acr": "loa3"}, ClaimVerdict(True, 3)),
        ({"acr": "loa1"}, NOT_VERIFIED),
        ({"acr": ["loa2", "loa3"]}, ClaimVerdict(True, 3)),  # highest matching level wins
        ({}, NOT_VERIFIED),
    ],
)
def test_levels_from_the_claim_itself(claims: dict[str, Any], verdict: ClaimVerdict) -> None:
    assert evaluate_oidc_claims(claims, ACR) == verdict


def test_levels_from_a_separate_level_claim() -> None:
    policy = OidcClaimPolicy(claim="verified", level=1, level_claim="loa", levels=((2, 2), (3, 3)))
    assert evaluate_oidc_claims({"verified": True, "loa": 3}, policy) == ClaimVerdict(True, 3)
    assert evaluate_oidc_claims({"verified": True, "loa": "3"}, policy) == ClaimVerdict(True, 1)
    assert evaluate_oidc_claims({"verified": True}, policy) == ClaimVerdict(True, 1)
    assert evaluate_oidc_claims({"loa": 3}, policy) == NOT_VERIFIED  # the level alone verifies nothing


def test_policy_level_is_validated() -> None:
    with pytest.raises(ValueError, match="1-3"):
        OidcClaimPolicy(claim="verified", level=4)


# --- deciding the change --------------------------------------------------------------------


def decide(current: Verification, verdict: ClaimVerdict, policy: OidcClaimPolicy = ACR) -> tuple[Any, str]:
    outcome = decide_oidc_verification(current, verdict, OURS, policy, NOW)
    change = outcome.change
    return ((change.status, change.level, change.method) if change else None), outcome.reason_code


STRICT = OidcClaimPolicy(claim="verified", revoke_when_absent=True)


@pytest.mark.parametrize(
    ("current", "verdict", "policy", "expected"),
    [
        # First login, and logins of users never verified or no longer verified.
        (NEVER_VERIFIED, ClaimVerdict(True, 2), ACR, ((S.VERIFIED, 2, OURS), VERIFIED)),
        (
            Verification(status=S.PENDING, method="kyc"),
            ClaimVerdict(True, 2),
            ACR,
            ((S.VERIFIED, 2, OURS), VERIFIED),
        ),
        (
            verified(3, "kyc", expires_ts=NOW - 1),
            ClaimVerdict(True, 2),
            ACR,
            ((S.VERIFIED, 2, OURS), VERIFIED),
        ),
        # Re-login: idempotent unless the level changed (also downwards: it is our attestation).
        (verified(2), ClaimVerdict(True, 2), ACR, (None, UNCHANGED)),
        (verified(2), ClaimVerdict(True, 3), ACR, ((S.VERIFIED, 3, OURS), LEVEL_CHANGED)),
        (verified(3), ClaimVerdict(True, 2), ACR, ((S.VERIFIED, 2, OURS), LEVEL_CHANGED)),
        # Another source's verification is only ever raised, never weakened or replaced.
        (verified(3, "admin_attestation"), ClaimVerdict(True, 2), ACR, (None, KEPT_STRONGER)),
        (verified(2, "admin_attestation"), ClaimVerdict(True, 2), ACR, (None, KEPT_STRONGER)),
        (verified(1, "admin_attestation"), ClaimVerdict(True, 3), ACR, ((S.VERIFIED, 3, OURS), LEVEL_RAISED)),
        # Revocations: ours is lifted by the claim coming back, anyone else's is not.
        (
            Verification(status=S.REVOKED, method="admin_attestation"),
            ClaimVerdict(True, 3),
            ACR,
            (None, REVOKED_ELSEWHERE),
        ),
        (
            Verification(status=S.REVOKED, method=OURS),
            ClaimVerdict(True, 2),
            ACR,
            ((S.VERIFIED, 2, OURS), VERIFIED),
        ),
        # No verified claim: nothing by default; with revoke_when_absent only our own verification goes.
        (verified(2), NOT_VERIFIED, ACR, (None, CLAIM_ABSENT)),
        (verified(1), NOT_VERIFIED, STRICT, ((S.REVOKED, None, OURS), CLAIM_WITHDRAWN)),
        (verified(1, "admin_attestation"), NOT_VERIFIED, STRICT, (None, CLAIM_ABSENT)),
        (NEVER_VERIFIED, NOT_VERIFIED, STRICT, (None, CLAIM_ABSENT)),
        (verified(1, expires_ts=NOW - 1), NOT_VERIFIED, STRICT, (None, CLAIM_ABSENT)),  # expired already
    ],
)
def test_decision_table(
    current: Verification, verdict: ClaimVerdict, policy: OidcClaimPolicy, expected: tuple[Any, str]
) -> None:
    assert decide(current, verdict, policy) == expected


verdicts = st.one_of(st.just(NOT_VERIFIED), st.builds(ClaimVerdict, st.just(True), st.integers(1, 3)))
policies = st.builds(OidcClaimPolicy, st.just("verified"), revoke_when_absent=st.booleans())


def _with_method(v: Verification, method: str | None) -> Verification:
    return Verification(v.status, v.level, method, v.updated_ts, v.verified_ts, v.expires_ts)


@st.composite
def currents(draw: st.DrawFn) -> Verification:
    """Any stored verification, sometimes recorded by this IdP."""
    v = draw(verifications())
    return _with_method(v, OURS) if draw(st.booleans()) else v


@given(currents(), verdicts, policies, times)
def test_every_change_is_a_valid_step_and_a_second_identical_login_changes_nothing(
    current: Verification, verdict: ClaimVerdict, policy: OidcClaimPolicy, now: int
) -> None:
    outcome = decide_oidc_verification(current, verdict, OURS, policy, now)
    if outcome.change is None:
        return
    assert decide_verification_change(current, outcome.change).allowed
    after = apply_verification_change(current, outcome.change)
    again = decide_oidc_verification(after, verdict, OURS, policy, now)
    assert again.change is None, again


@given(currents(), verdicts, policies, times)
def test_a_login_never_lowers_another_sources_verification(
    current: Verification, verdict: ClaimVerdict, policy: OidcClaimPolicy, now: int
) -> None:
    outcome = decide_oidc_verification(current, verdict, OURS, policy, now)
    if current.method == OURS or current.effective_status(now) is not S.VERIFIED:
        return
    change = outcome.change
    assert change is None or (change.status is S.VERIFIED and (change.level or 0) > (current.level or 0))


@given(currents(), verdicts, policies, times)
def test_decision_is_deterministic(
    current: Verification, verdict: ClaimVerdict, policy: OidcClaimPolicy, now: int
) -> None:
    first = decide_oidc_verification(current, verdict, OURS, policy, now)
    assert decide_oidc_verification(current, verdict, OURS, policy, now) == first


# --- parking verdicts between the claims and the user id ------------------------------------

V2 = ClaimVerdict(True, 2)
V3 = ClaimVerdict(True, 3)


def test_parked_verdict_is_taken_once() -> None:
    parked = ParkedVerdicts(ttl_ms=1000, max_entries=10)
    parked.put("sub-a", V2, now_ms=0)
    assert parked.take(["sub-b"], now_ms=10) is None
    assert parked.take(["sub-a"], now_ms=10) == V2
    assert parked.take(["sub-a"], now_ms=20) is None
    assert len(parked) == 0


def test_parked_verdict_newer_login_replaces_older() -> None:
    parked = ParkedVerdicts(ttl_ms=1000, max_entries=10)
    parked.put("sub-a", V2, now_ms=0)
    parked.put("sub-a", V3, now_ms=5)
    assert len(parked) == 1
    assert parked.take(["sub-a"], now_ms=10) == V3


def test_parked_verdicts_expire_and_are_bounded() -> None:
    parked = ParkedVerdicts(ttl_ms=100, max_entries=3)
    parked.put("old", V2, now_ms=0)
    assert parked.take(["old"], now_ms=100) is None  # expired exactly at the ttl
    for i in range(5):
        parked.put(f"sub-{i}", V2, now_ms=200 + i)
    assert len(parked) == 3  # the two oldest went
    assert parked.take(["sub-0", "sub-1"], now_ms=210) is None
    parked.put("late", V3, now_ms=500)  # everything before it has expired by now
    assert len(parked) == 1


def test_parked_take_prefers_the_newest_of_several_remote_ids() -> None:
    parked = ParkedVerdicts(ttl_ms=1000, max_entries=10)
    parked.put("sub-a", V2, now_ms=0)
    parked.put("sub-b", V3, now_ms=1)
    assert parked.take(["sub-a", "sub-b"], now_ms=2) == V3
    assert len(parked) == 0


# --- config ---------------------------------------------------------------------------------


def test_full_config_and_jinja_keys_pass_through() -> None:
    jinja, policy = split_mapping_provider_config(
        {
            "localpart_template": "{{ user.preferred_username }}",
            "display_name_template": "{{ user.name }}",
            "compliance": {
                "claim": "verified",
                "value": True,
                "level": 2,
                "level_claim": "acr",
                "levels": {"loa3": 3, 4: 3},
                "revoke_when_absent": True,
            },
        }
    )
    assert jinja == {
        "localpart_template": "{{ user.preferred_username }}",
        "display_name_template": "{{ user.name }}",
    }
    assert policy == OidcClaimPolicy(
        claim="verified",
        accepted=(True,),
        level=2,
        level_claim="acr",
        levels=(("loa3", 3), (4, 3)),
        revoke_when_absent=True,
    )


def test_minimal_config_defaults() -> None:
    assert parse_oidc_claim_policy({"claim": "verified"}, ()) == OidcClaimPolicy(claim="verified")
    assert parse_oidc_claim_policy({"claim": "acr", "one_of": ["a", 2, False]}, ()).accepted == (
        "a",
        2,
        False,
    )


C = ("compliance",)

BAD: list[tuple[Any, tuple[str, ...], str]] = [
    ({}, C, "required"),
    ({"compliance": None}, C, "required"),
    ({"compliance": ["claim"]}, C, "expected a mapping"),
    ("verified", (), "expected a mapping"),
    ({"localpart_templte": "x", "compliance": {"claim": "v"}}, ("localpart_templte",), "unknown option"),
    ({"compliance": {}}, (*C, "claim"), "required"),
    ({"compliance": {"claim": ""}}, (*C, "claim"), "claim name"),
    ({"compliance": {"claim": 3}}, (*C, "claim"), "claim name"),
    ({"compliance": {"claim": "v", "colour": 1}}, (*C, "colour"), "unknown option 'colour'"),
    ({"compliance": {"claim": "v", "value": 1.5}}, (*C, "value"), "a string, an integer or true/false"),
    ({"compliance": {"claim": "v", "value": None}}, (*C, "value"), "a string, an integer or true/false"),
    ({"compliance": {"claim": "v", "value": True, "one_of": [True]}}, (*C, "one_of"), "not both"),
    ({"compliance": {"claim": "v", "one_of": []}}, (*C, "one_of"), "non-empty list"),
    ({"compliance": {"claim": "v", "one_of": "a"}}, (*C, "one_of"), "non-empty list"),
    ({"compliance": {"claim": "v", "one_of": ["a", [1]]}}, (*C, "one_of", "<item 1>"), "a string"),
    ({"compliance": {"claim": "v", "level": 5}}, (*C, "level"), "1-3; got 5"),
    ({"compliance": {"claim": "v", "level": 0}}, (*C, "level"), "1-3; got 0"),
    ({"compliance": {"claim": "v", "level": True}}, (*C, "level"), "1-3; got True"),
    ({"compliance": {"claim": "v", "level": "2"}}, (*C, "level"), "1-3; got '2'"),
    ({"compliance": {"claim": "v", "levels": {}}}, (*C, "levels"), "non-empty mapping"),
    ({"compliance": {"claim": "v", "levels": ["a"]}}, (*C, "levels"), "non-empty mapping"),
    ({"compliance": {"claim": "v", "levels": {"a": 4}}}, (*C, "levels", "a"), "1-3; got 4"),
    ({"compliance": {"claim": "v", "levels": {1.5: 2}}}, (*C, "levels", "1.5"), "a string"),
    ({"compliance": {"claim": "v", "level_claim": "acr"}}, (*C, "level_claim"), "needs `levels`"),
    (
        {"compliance": {"claim": "v", "revoke_when_absent": "yes"}},
        (*C, "revoke_when_absent"),
        "true or false",
    ),
]


@pytest.mark.parametrize(("raw", "path", "message"), BAD)
def test_bad_config_names_the_path(raw: Any, path: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigProblem) as e:
        split_mapping_provider_config(raw)
    assert e.value.path == path
    assert message in e.value.message


def test_jinja_keys_are_those_synapse_reads() -> None:
    # Every key JinjaOidcMappingProvider.parse_config reads must be accepted (Synapse 1.163.2).
    assert {"localpart_template", "display_name_template", "email_template", "subject_claim"} <= JINJA_KEYS
