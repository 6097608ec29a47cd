"""Module configuration: frozen attrs classes and a strict, pure parser.

Theory of operation: `parse_config(raw)` turns the `config:` mapping of the module's entry in
`homeserver.yaml` into a `ComplianceConfig`, or raises `ConfigProblem(path, message)`. The path is
the full key path relative to the module's config (list items as `<item N>`, the way Synapse spells
them), so Synapse prints `modules.<item 0>.config.identity.required_for.<item 2>`. An empty or
missing config gives the safe defaults of DESIGN §3. Unknown keys are refused, so a typo never
silently disables a rule.

This module imports nothing from Synapse and does no I/O (it may import `core`); the secrets it
names (key files) are read by `synapse_compliance.keys`.
"""

import re
from collections.abc import Mapping, Sequence
from enum import Enum
from typing import TypeVar

import attrs

from synapse_compliance.core.groups import DirectChats
from synapse_compliance.core.identity import GatedAction
from synapse_compliance.core.remote import RemoteUsers

ConfigPath = tuple[str, ...]

E = TypeVar("E", bound=Enum)


class ConfigProblem(Exception):
    """A config value is invalid. `path` is relative to the module's `config:` mapping."""

    def __init__(self, path: ConfigPath, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message

    def dotted(self, prefix: str = "") -> str:
        """The path as Synapse prints it, e.g. `identity.required_for.<item 1>`."""
        parts = [prefix, *self.path] if prefix else list(self.path)
        return ".".join(parts)


@attrs.frozen
class ScopeConfig:
    """Which rooms the rules apply to, and how far remote users may take part."""

    direct_chats: DirectChats = DirectChats.IGNORE
    remote_users: RemoteUsers = RemoteUsers.BLOCK


@attrs.frozen
class KycWebhookConfig:
    """The signed KYC-provider webhook (`POST kyc/webhook`)."""

    enabled: bool = False
    secret_file: str | None = None
    tolerance_ms: int = 300_000


@attrs.frozen
class IdentityConfig:
    """Verified identities (DESIGN §4.2)."""

    required_for: frozenset[GatedAction] = frozenset(GatedAction)
    help_url: str | None = None
    pii_key_file: str | None = None
    # Keys that sealed older records; they only open records until `rotate-key` has re-sealed them.
    previous_pii_key_files: tuple[str, ...] = ()
    max_accounts_per_identity: int = 1
    # Sources of verification besides OIDC (which is configured on the OIDC provider).
    admin_attestation: bool = True
    kyc_webhook: KycWebhookConfig = KycWebhookConfig()
    # A verification granted without its own expiry expires this long after it was granted
    # (None: never); users are warned `reverify_warning` before.
    reverify_after_ms: int | None = None
    reverify_warning_ms: int = 14 * 86_400_000


@attrs.frozen
class GroupsConfig:
    """Group accountability (DESIGN §4.6)."""

    # Members at or above this power level are the group's managers.
    manager_power_level: int = 50


@attrs.frozen
class ComplianceConfig:
    """The whole module configuration."""

    scope: ScopeConfig = ScopeConfig()
    identity: IdentityConfig = IdentityConfig()
    groups: GroupsConfig = GroupsConfig()


def parse_config(raw: object) -> ComplianceConfig:
    """Parse and validate the module's raw config.

    Args:
        raw: the `config:` value from `homeserver.yaml` (`None` when omitted).

    Returns:
        The validated configuration.

    Raises:
        ConfigProblem: naming the key path, the bad value and what is accepted.
    """
    top = _mapping(raw, ())
    _reject_unknown(top, {"scope", "identity", "groups"}, ())
    return ComplianceConfig(
        scope=_parse_scope(top.get("scope"), ("scope",)),
        identity=_parse_identity(top.get("identity"), ("identity",)),
        groups=_parse_groups(top.get("groups"), ("groups",)),
    )


def _parse_groups(raw: object, path: ConfigPath) -> GroupsConfig:
    d = _mapping(raw, path)
    _reject_unknown(d, {"manager_power_level"}, path)
    default = GroupsConfig()
    return GroupsConfig(
        manager_power_level=_int(d, "manager_power_level", default.manager_power_level, path, minimum=1),
    )


def _parse_scope(raw: object, path: ConfigPath) -> ScopeConfig:
    d = _mapping(raw, path)
    _reject_unknown(d, {"direct_chats", "remote_users"}, path)
    default = ScopeConfig()
    return ScopeConfig(
        direct_chats=_enum(d, "direct_chats", DirectChats, default.direct_chats, path),
        remote_users=_enum(d, "remote_users", RemoteUsers, default.remote_users, path),
    )


def _parse_identity(raw: object, path: ConfigPath) -> IdentityConfig:
    d = _mapping(raw, path)
    _reject_unknown(
        d,
        {
            "required_for",
            "help_url",
            "pii_key_file",
            "previous_pii_key_files",
            "max_accounts_per_identity",
            "admin_attestation",
            "kyc_webhook",
            "reverify_after",
            "reverify_warning",
        },
        path,
    )
    default = IdentityConfig()
    required_for = default.required_for
    if "required_for" in d:
        required_for = _enum_set(d["required_for"], GatedAction, (*path, "required_for"))
    help_url = _optional_str(d, "help_url", path)
    if help_url is not None and not help_url.startswith(("https://", "http://")):
        raise ConfigProblem((*path, "help_url"), f"must be an http(s) URL; got {help_url!r}")
    pii_key_file = _optional_str(d, "pii_key_file", path)
    previous = _str_list(d, "previous_pii_key_files", path)
    if previous and pii_key_file is None:
        raise ConfigProblem(
            (*path, "previous_pii_key_files"),
            "needs identity.pii_key_file: previous keys only open old records, "
            "the current key seals new ones",
        )
    return IdentityConfig(
        required_for=required_for,
        help_url=help_url,
        pii_key_file=pii_key_file,
        previous_pii_key_files=previous,
        max_accounts_per_identity=_int(
            d, "max_accounts_per_identity", default.max_accounts_per_identity, path, minimum=1
        ),
        admin_attestation=_bool(d, "admin_attestation", default.admin_attestation, path),
        kyc_webhook=_parse_kyc_webhook(d.get("kyc_webhook"), (*path, "kyc_webhook")),
        reverify_after_ms=_reverify_after(d, path),
        reverify_warning_ms=_duration(d, "reverify_warning", default.reverify_warning_ms, path),
    )


def _reverify_after(d: Mapping[str, object], path: ConfigPath) -> int | None:
    if d.get("reverify_after") is None:
        return None
    value = _duration(d, "reverify_after", 0, path)
    if value < 86_400_000:
        raise ConfigProblem((*path, "reverify_after"), "must be at least 1d")
    return value


def _parse_kyc_webhook(raw: object, path: ConfigPath) -> KycWebhookConfig:
    d = _mapping(raw, path)
    _reject_unknown(d, {"enabled", "secret_file", "tolerance"}, path)
    default = KycWebhookConfig()
    enabled = _bool(d, "enabled", default.enabled, path)
    secret_file = _optional_str(d, "secret_file", path)
    if enabled and secret_file is None:
        raise ConfigProblem((*path, "secret_file"), "required when the KYC webhook is enabled")
    tolerance = _duration(d, "tolerance", default.tolerance_ms, path)
    if not 1_000 <= tolerance <= 3_600_000:
        raise ConfigProblem((*path, "tolerance"), "must be from 1s to 1h")
    return KycWebhookConfig(enabled=enabled, secret_file=secret_file, tolerance_ms=tolerance)


# --- small typed readers; each names the full path in its error --------------------------------


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _mapping(raw: object, path: ConfigPath) -> Mapping[str, object]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigProblem(path, f"expected a mapping; got {_describe(raw)}")
    for key in raw:
        if not isinstance(key, str):
            raise ConfigProblem(path, f"keys must be strings; got {_describe(key)}")
    return raw


def _reject_unknown(d: Mapping[str, object], allowed: set[str], path: ConfigPath) -> None:
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise ConfigProblem(
            (*path, unknown[0]),
            f"unknown option {unknown[0]!r}; accepted here: {', '.join(sorted(allowed))}",
        )


def _optional_str(d: Mapping[str, object], key: str, path: ConfigPath) -> str | None:
    value = d.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigProblem((*path, key), f"expected a non-empty string; got {_describe(value)}")
    return value


def _str_list(d: Mapping[str, object], key: str, path: ConfigPath) -> tuple[str, ...]:
    raw = d.get(key)
    if raw is None:
        return ()
    if isinstance(raw, str) or not isinstance(raw, Sequence):
        raise ConfigProblem((*path, key), f"expected a list; got {_describe(raw)}")
    for i, item in enumerate(raw):
        if not isinstance(item, str) or not item.strip():
            raise ConfigProblem(
                (*path, key, f"<item {i}>"), f"expected a non-empty string; got {_describe(item)}"
            )
    return tuple(raw)


_DURATION = re.compile(r"^([0-9]+)(ms|s|m|h|d|w)$")
_DURATION_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def _duration(d: Mapping[str, object], key: str, default_ms: int, path: ConfigPath) -> int:
    """A duration written like "300s", "12h", "184d"; returned in milliseconds."""
    value = d.get(key)
    if value is None:
        return default_ms
    match = _DURATION.match(value) if isinstance(value, str) else None
    if match is None:
        raise ConfigProblem(
            (*path, key), f'expected a duration such as "30s", "12h" or "7d"; got {_describe(value)}'
        )
    return int(match.group(1)) * _DURATION_MS[match.group(2)]


def _bool(d: Mapping[str, object], key: str, default: bool, path: ConfigPath) -> bool:
    value = d.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ConfigProblem((*path, key), f"expected true or false; got {_describe(value)}")
    return value


def _int(
    d: Mapping[str, object], key: str, default: int, path: ConfigPath, *, minimum: int | None = None
) -> int:
    value = d.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigProblem((*path, key), f"expected an integer; got {_describe(value)}")
    if minimum is not None and value < minimum:
        raise ConfigProblem((*path, key), f"must be at least {minimum}; got {value}")
    return value


def _enum(d: Mapping[str, object], key: str, enum_type: type[E], default: E, path: ConfigPath) -> E:
    if key not in d or d[key] is None:
        return default
    return _enum_value(d[key], enum_type, (*path, key))


def _enum_value(value: object, enum_type: type[E], path: ConfigPath) -> E:
    accepted = [str(member.value) for member in enum_type]
    if isinstance(value, str):
        for member in enum_type:
            if member.value == value:
                return member
    raise ConfigProblem(path, f"got {_describe(value)}; accepted: {', '.join(accepted)}")


def _enum_set(raw: object, enum_type: type[E], path: ConfigPath) -> frozenset[E]:
    if isinstance(raw, str) or not isinstance(raw, Sequence):
        raise ConfigProblem(path, f"expected a list; got {_describe(raw)}")
    members = [_enum_value(item, enum_type, (*path, f"<item {i}>")) for i, item in enumerate(raw)]
    return frozenset(members)
