"""Config of the OIDC mapping provider: Synapse's Jinja keys plus a strict `compliance:` mapping.

Pure (no Synapse import), so the unit tests and `check-config` can use it. The provider's config
lives at `oidc_providers.<item N>.user_mapping_provider.config` in homeserver.yaml; paths in
`ConfigProblem` are relative to it, and Synapse prefixes the rest when it reports the error.

```yaml
user_mapping_provider:
  module: synapse_compliance.oidc.ComplianceOidcMappingProvider
  config:
    localpart_template: "{{ user.preferred_username }}"   # Synapse's own keys keep working
    compliance:
      claim: acr                    # required: the claim to read
      one_of: [loa2, loa3]          # or `value: ...` (default: value true)
      level: 2                      # 1-3, default 1
      levels: {loa3: 3}             # optional: claim value -> level (highest match wins)
      level_claim: acr              # optional: the claim `levels` reads (default: `claim`)
      revoke_when_absent: false     # default false: a login without the claim changes nothing
```
"""

from collections.abc import Mapping

from synapse_compliance.config_readers import ConfigPath, ConfigProblem, describe, mapping, reject_unknown
from synapse_compliance.core.identity import MAX_LEVEL, MIN_LEVEL
from synapse_compliance.core.oidc_claims import ClaimValue, OidcClaimPolicy

# The keys `synapse.handlers.oidc.JinjaOidcMappingProvider.parse_config` reads (Synapse 1.163.2).
# Refusing anything else catches typos such as `localpart_templte`, which Synapse would ignore.
JINJA_KEYS = frozenset(
    {
        "subject_template",
        "subject_claim",
        "picture_template",
        "picture_claim",
        "localpart_template",
        "display_name_template",
        "email_template",
        "extra_attributes",
        "confirm_localpart",
    }
)
COMPLIANCE_KEY = "compliance"
_POLICY_KEYS = frozenset({"claim", "value", "one_of", "level", "level_claim", "levels", "revoke_when_absent"})
_MAX_CLAIM_NAME = 255


def split_mapping_provider_config(raw: object) -> tuple[dict[str, object], OidcClaimPolicy]:
    """Separate Synapse's Jinja keys from the `compliance:` mapping and parse the latter.

    Args:
        raw: the provider's `config:` value (`None` when omitted).

    Returns:
        The Jinja keys (for `JinjaOidcMappingProvider.parse_config`) and the claim policy.

    Raises:
        ConfigProblem: naming the key path, the bad value and what is accepted.
    """
    top = mapping(raw, ())
    reject_unknown(top, JINJA_KEYS | {COMPLIANCE_KEY}, ())
    if top.get(COMPLIANCE_KEY) is None:
        raise ConfigProblem(
            (COMPLIANCE_KEY,),
            "required: a mapping naming the claim that marks a user verified, e.g. "
            "{claim: verified, value: true}",
        )
    policy = parse_oidc_claim_policy(top[COMPLIANCE_KEY], (COMPLIANCE_KEY,))
    return {k: v for k, v in top.items() if k != COMPLIANCE_KEY}, policy


def parse_oidc_claim_policy(raw: object, path: ConfigPath) -> OidcClaimPolicy:
    """Parse the `compliance:` mapping of the mapping provider's config.

    Raises:
        ConfigProblem: naming the key path, the bad value and what is accepted.
    """
    d = mapping(raw, path)
    reject_unknown(d, _POLICY_KEYS, path)
    claim = _claim_name(d, "claim", path, required=True)
    assert claim is not None  # required=True
    if "value" in d and "one_of" in d:
        raise ConfigProblem((*path, "one_of"), "give either `value` or `one_of`, not both")
    accepted: tuple[ClaimValue, ...] = (True,)
    if "value" in d:
        accepted = (_claim_value(d["value"], (*path, "value")),)
    elif "one_of" in d:
        accepted = _claim_values(d["one_of"], (*path, "one_of"))
    level = _level(d.get("level", MIN_LEVEL), (*path, "level"))
    level_claim = _claim_name(d, "level_claim", path, required=False)
    levels = _levels(d.get("levels"), (*path, "levels"))
    if level_claim is not None and not levels:
        raise ConfigProblem(
            (*path, "level_claim"), "needs `levels`: a mapping from the claim's values to levels 1-3"
        )
    revoke = d.get("revoke_when_absent", False)
    if not isinstance(revoke, bool):
        raise ConfigProblem((*path, "revoke_when_absent"), f"expected true or false; got {describe(revoke)}")
    return OidcClaimPolicy(
        claim=claim,
        accepted=accepted,
        level=level,
        level_claim=level_claim,
        levels=levels,
        revoke_when_absent=revoke,
    )


def _claim_name(d: Mapping[str, object], key: str, path: ConfigPath, *, required: bool) -> str | None:
    value = d.get(key)
    if value is None:
        if required:
            raise ConfigProblem(
                (*path, key), "required: the name of the id_token/userinfo claim to read, e.g. 'verified'"
            )
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > _MAX_CLAIM_NAME:
        raise ConfigProblem(
            (*path, key), f"expected a claim name (a non-empty string); got {describe(value)}"
        )
    return value


def _claim_value(value: object, path: ConfigPath) -> ClaimValue:
    if isinstance(value, (str, bool, int)):
        return value
    raise ConfigProblem(path, f"expected a string, an integer or true/false; got {describe(value)}")


def _claim_values(raw: object, path: ConfigPath) -> tuple[ClaimValue, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigProblem(path, f"expected a non-empty list of claim values; got {describe(raw)}")
    return tuple(_claim_value(item, (*path, f"<item {i}>")) for i, item in enumerate(raw))


def _level(value: object, path: ConfigPath) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_LEVEL <= value <= MAX_LEVEL:
        raise ConfigProblem(
            path, f"expected an assurance level {MIN_LEVEL}-{MAX_LEVEL}; got {describe(value)}"
        )
    return value


def _levels(raw: object, path: ConfigPath) -> tuple[tuple[ClaimValue, int], ...]:
    if raw is None:
        return ()
    # Keys may be strings, integers or booleans (YAML `{2: 2}` gives integer keys), so this does
    # not go through `_mapping`.
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigProblem(
            path, f"expected a non-empty mapping of claim value to level; got {describe(raw)}"
        )
    pairs: list[tuple[ClaimValue, int]] = []
    for key, level in raw.items():
        key_path = (*path, str(key))
        pairs.append((_claim_value(key, key_path), _level(level, key_path)))
    return tuple(pairs)
