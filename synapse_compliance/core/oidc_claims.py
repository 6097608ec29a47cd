"""Verified identity from OIDC claims at login (DESIGN §4.2, SYNAPSE_FACTS §4).

Theory of operation. An operator's identity provider (IdP) vouches for users through a claim in
the id_token or the userinfo response, e.g. `verified: true` or `acr: "loa3"`. Two steps turn a
login's claims into a change of the user's verification:

1. `evaluate_oidc_claims(claims, policy)` reads the claims: the login is *verified* when
   `policy.claim` equals one of `policy.accepted` (a list-valued claim counts when any element
   does); its level is the highest level in `policy.levels` that the level claim (by default the
   same claim) matches, else `policy.level`. Matching is exact and type-aware: the string
   `"true"` is not the boolean `true`, and `1` is not `true`.

2. `decide_oidc_verification(current, verdict, method, policy, now_ms)` decides what the login
   changes. `method` names this IdP (`oidc:<idp>`); "ours" below means the current verification
   was recorded by that same method. In order of precedence:

   - verified login, current verified and ours at the same level → nothing (idempotent re-login);
   - verified login, current verified and ours at another level → re-verify at the new level
     (the IdP is the authority for its own attestation, so it may also lower the level);
   - verified login, current verified by another source at the same or a higher level → nothing
     (a login never weakens an admin attestation or a KYC check);
   - verified login, current verified by another source at a lower level → raise to the claim's
     level;
   - verified login, current revoked by another source → nothing (a revocation by an admin or a
     KYC provider is lifted only by a new decision from them);
   - verified login, anything else (unverified, pending, expired, or revoked by this IdP) →
     verify;
   - login without the verified claim, `policy.revoke_when_absent`, current verified and ours →
     revoke (the only way out of `verified` the state machine has besides expiry);
   - login without the verified claim otherwise → nothing: the default leaves the status alone,
     because many IdPs send a claim only when it is true.

Every outcome carries a stable reason code so the shell can log what happened and why.

`ParkedVerdicts` holds verdicts between the two moments the shell needs them: the claims are
seen before Synapse knows (or has even created) the local user, the user id only afterwards
(see `synapse_compliance.oidc`). Pure: no I/O, no clock (times are passed in), no Synapse.
"""

from collections.abc import Mapping, Sequence

import attrs

from synapse_compliance.core.identity import (
    MAX_LEVEL,
    MIN_LEVEL,
    Verification,
    VerificationChangeRequest,
    VerificationStatus,
)

# A claim value an operator can name in the config: JSON scalars except null and floats.
ClaimValue = str | bool | int

# Reason codes of `OidcClaimOutcome`.
VERIFIED = "verified"
LEVEL_CHANGED = "level_changed"
LEVEL_RAISED = "level_raised"
UNCHANGED = "unchanged"
KEPT_STRONGER = "kept_stronger"
REVOKED_ELSEWHERE = "revoked_elsewhere"
CLAIM_WITHDRAWN = "claim_withdrawn"
CLAIM_ABSENT = "claim_absent"

PARKED_TTL_MS = 20 * 60 * 1000  # > Synapse's 15-minute username-picker session (handlers/sso.py)
MAX_PARKED = 10_000  # bounds memory when many logins are abandoned after the IdP's redirect


def _level_in_range(_instance: object, attribute: "attrs.Attribute[int]", value: int) -> None:
    if not MIN_LEVEL <= value <= MAX_LEVEL:
        raise ValueError(f"{attribute.name} must be {MIN_LEVEL}-{MAX_LEVEL}; got {value}")


@attrs.frozen
class OidcClaimPolicy:
    """Which claims mark a login as verified, and at which level (one per OIDC provider)."""

    claim: str
    accepted: tuple[ClaimValue, ...] = (True,)
    level: int = attrs.field(default=MIN_LEVEL, validator=_level_in_range)
    # The claim `levels` is matched against; None means `claim` itself.
    level_claim: str | None = None
    # (claim value, level) pairs, in config order.
    levels: tuple[tuple[ClaimValue, int], ...] = ()
    revoke_when_absent: bool = False


@attrs.frozen
class ClaimVerdict:
    """What one login's claims say: verified (at `level`) or not."""

    verified: bool
    level: int | None = None


NOT_VERIFIED = ClaimVerdict(verified=False)


@attrs.frozen
class OidcClaimOutcome:
    """The change a login makes (None: nothing changes) and why."""

    change: VerificationChangeRequest | None
    reason_code: str


def claim_matches(actual: object, expected: ClaimValue) -> bool:
    """Whether a claim value equals a configured value; a list matches when any element does.

    Booleans only match booleans, so `1` does not match `true` (Python's `True == 1`).
    """
    if isinstance(actual, list):
        return any(claim_matches(item, expected) for item in actual)
    if isinstance(actual, bool) or isinstance(expected, bool):
        return isinstance(actual, bool) and isinstance(expected, bool) and actual is expected
    if isinstance(actual, (str, int)):
        return type(actual) is type(expected) and actual == expected
    return False


def _matches_any(actual: object, expected: Sequence[ClaimValue]) -> bool:
    return any(claim_matches(actual, value) for value in expected)


def evaluate_oidc_claims(claims: Mapping[str, object], policy: OidcClaimPolicy) -> ClaimVerdict:
    """Read a login's claims (id_token or userinfo) under `policy`."""
    if policy.claim not in claims or not _matches_any(claims[policy.claim], policy.accepted):
        return NOT_VERIFIED
    level = policy.level
    if policy.levels:
        level_value = claims.get(policy.level_claim or policy.claim)
        matched = [lvl for value, lvl in policy.levels if claim_matches(level_value, value)]
        if matched:
            level = max(matched)
    return ClaimVerdict(verified=True, level=level)


def decide_oidc_verification(
    current: Verification,
    verdict: ClaimVerdict,
    method: str,
    policy: OidcClaimPolicy,
    now_ms: int,
) -> OidcClaimOutcome:
    """Decide what a login with `verdict` changes in `current` (precedence in the module doc).

    Args:
        current: the user's verification before the login.
        verdict: what the login's claims say (`evaluate_oidc_claims`).
        method: this IdP's verification method, `oidc:<idp>`.
        policy: the provider's claim policy (for `revoke_when_absent`).
        now_ms: the time of the login.

    Returns:
        The change to apply (a valid step of the state machine) or None, with a reason code.
    """
    status = current.effective_status(now_ms)
    ours = current.method == method
    if not verdict.verified:
        if policy.revoke_when_absent and status is VerificationStatus.VERIFIED and ours:
            revoke = VerificationChangeRequest(
                status=VerificationStatus.REVOKED, level=None, method=method, now_ms=now_ms
            )
            return OidcClaimOutcome(revoke, CLAIM_WITHDRAWN)
        return OidcClaimOutcome(None, CLAIM_ABSENT)
    level = verdict.level if verdict.level is not None else policy.level
    reason = _verified_login_reason(current, status, ours, level)
    if reason not in (VERIFIED, LEVEL_CHANGED, LEVEL_RAISED):
        return OidcClaimOutcome(None, reason)
    verify = VerificationChangeRequest(
        status=VerificationStatus.VERIFIED, level=level, method=method, now_ms=now_ms
    )
    return OidcClaimOutcome(verify, reason)


def _verified_login_reason(current: Verification, status: VerificationStatus, ours: bool, level: int) -> str:
    """The reason code of a login whose claims say verified at `level`."""
    if status is VerificationStatus.VERIFIED:
        current_level = current.level if current.level is not None else MIN_LEVEL
        if ours:
            return UNCHANGED if current_level == level else LEVEL_CHANGED
        return KEPT_STRONGER if current_level >= level else LEVEL_RAISED
    if status is VerificationStatus.REVOKED and not ours:
        return REVOKED_ELSEWHERE
    return VERIFIED


@attrs.frozen
class _Parked:
    verdict: ClaimVerdict
    recorded_ms: int


class ParkedVerdicts:
    """Verdicts read at a login, waiting until the shell learns which local user logged in.

    Keyed by the IdP's remote user id. Entries expire after `ttl_ms`; at most `max_entries` are
    kept (the oldest go first). Time is passed in, like everywhere in `core`.
    """

    def __init__(self, ttl_ms: int = PARKED_TTL_MS, max_entries: int = MAX_PARKED) -> None:
        self._ttl_ms = ttl_ms
        self._max = max_entries
        self._entries: dict[str, _Parked] = {}  # insertion order = age order

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, remote_id: str, verdict: ClaimVerdict, now_ms: int) -> None:
        """Park `verdict` for `remote_id`, replacing an older one, dropping expired entries."""
        self._entries.pop(remote_id, None)
        self._entries[remote_id] = _Parked(verdict, now_ms)
        while self._entries:  # oldest first (insertion order); stop at the first one kept
            oldest = next(iter(self._entries))
            if len(self._entries) <= self._max and now_ms - self._entries[oldest].recorded_ms < self._ttl_ms:
                break
            del self._entries[oldest]

    def take(self, remote_ids: list[str], now_ms: int) -> ClaimVerdict | None:
        """Remove the verdicts of `remote_ids`; return the newest unexpired one (None if none)."""
        found = [p for p in (self._entries.pop(r, None) for r in remote_ids) if p is not None]
        live = [p for p in found if now_ms - p.recorded_ms < self._ttl_ms]
        return max(live, key=lambda p: p.recorded_ms).verdict if live else None
