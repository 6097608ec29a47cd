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

from collections.abc import Mapping

import attrs

from synapse_compliance.config_credit import DEFAULT_TIERS, CreditConfig, parse_credit
from synapse_compliance.config_readers import (
    ConfigPath,
    ConfigProblem,
    boolean,
    duration,
    enum,
    enum_set,
    integer,
    mapping,
    optional_str,
    reject_unknown,
    str_list,
)
from synapse_compliance.core.groups import DirectChats
from synapse_compliance.core.guards import EncryptedRooms
from synapse_compliance.core.identity import GatedAction
from synapse_compliance.core.remote import RemoteUsers

# Names other modules import from here (the readers and the credit section live in their own files).
__all__ = [
    "DEFAULT_TIERS",
    "ArchiveConfig",
    "ComplianceConfig",
    "ConfigPath",
    "ConfigProblem",
    "CreditConfig",
    "GroupsConfig",
    "IdentityConfig",
    "KycWebhookConfig",
    "RetentionConfig",
    "ScopeConfig",
    "parse_config",
]


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


MIN_RETENTION_DAYS = 184


@attrs.frozen
class RetentionConfig:
    """How long archived group events are kept (DESIGN §4.4), and how pruning past max runs."""

    min_days: int = MIN_RETENTION_DAYS
    max_days: int | None = None
    # With max_days set: how often the pruner runs, and rows deleted per transaction.
    prune_interval_ms: int = 86_400_000
    prune_batch_size: int = 1_000
    # Whether governed groups may be end-to-end encrypted (the archive then keeps ciphertext).
    encrypted_rooms: EncryptedRooms = EncryptedRooms.FORBID


MIN_CONNECTIONS_INTERVAL_MS = 60_000
MAX_CONNECTIONS_INTERVAL_MS = 86_400_000


@attrs.frozen
class ArchiveConfig:
    """The archiver (DESIGN §4.4)."""

    # Events read and written per transaction (2000: catch-up of ~5,000 events/s on PostgreSQL
    # here, benchmarks/archiver.py; 500 gave ~3,200/s).
    batch_size: int = 2_000
    # Copy Synapse's connection records (user_ips) into compliance_connections, every interval.
    connection_records: bool = True
    connections_interval_ms: int = 3_600_000
    # Signed checkpoints of the chain heads every interval (off without a signing key), each
    # also appended as one JSON line to `checkpoint_sink` when set.
    signing_key_file: str | None = None
    checkpoint_interval_ms: int = 3_600_000
    checkpoint_sink: str | None = None


@attrs.frozen
class ComplianceConfig:
    """The whole module configuration."""

    scope: ScopeConfig = ScopeConfig()
    identity: IdentityConfig = IdentityConfig()
    groups: GroupsConfig = GroupsConfig()
    credit: CreditConfig = CreditConfig()  # noqa: RUF009 (a frozen attrs class, like the others)
    retention: RetentionConfig = RetentionConfig()
    archive: ArchiveConfig = ArchiveConfig()


def parse_config(raw: object) -> ComplianceConfig:
    """Parse and validate the module's raw config.

    Args:
        raw: the `config:` value from `homeserver.yaml` (`None` when omitted).

    Returns:
        The validated configuration.

    Raises:
        ConfigProblem: naming the key path, the bad value and what is accepted.
    """
    top = mapping(raw, ())
    reject_unknown(top, {"scope", "identity", "groups", "credit", "retention", "archive"}, ())
    return ComplianceConfig(
        scope=_parse_scope(top.get("scope"), ("scope",)),
        identity=_parse_identity(top.get("identity"), ("identity",)),
        groups=_parse_groups(top.get("groups"), ("groups",)),
        credit=parse_credit(top.get("credit"), ("credit",)),
        retention=_parse_retention(top.get("retention"), ("retention",)),
        archive=_parse_archive(top.get("archive"), ("archive",)),
    )


def _parse_retention(raw: object, path: ConfigPath) -> RetentionConfig:
    d = mapping(raw, path)
    reject_unknown(d, {"min_days", "max_days", "encrypted_rooms", *_PRUNE_OPTIONS}, path)
    min_days = integer(d, "min_days", MIN_RETENTION_DAYS, path)
    if min_days < MIN_RETENTION_DAYS:
        raise ConfigProblem(
            (*path, "min_days"),
            f"must be at least {MIN_RETENTION_DAYS} (six months, the shortest retention the "
            f"group-chat rules allow); got {min_days}",
        )
    max_days: int | None = None
    if d.get("max_days") is not None:
        max_days = integer(d, "max_days", 0, path)
        if max_days < min_days:
            raise ConfigProblem(
                (*path, "max_days"), f"must be at least retention.min_days ({min_days}); got {max_days}"
            )
    prune_interval_ms, prune_batch_size = _prune_options(d, path)
    return RetentionConfig(
        min_days=min_days,
        max_days=max_days,
        prune_interval_ms=prune_interval_ms,
        prune_batch_size=prune_batch_size,
        encrypted_rooms=enum(d, "encrypted_rooms", EncryptedRooms, EncryptedRooms.FORBID, path),
    )


_PRUNE_OPTIONS = ("prune_interval", "prune_batch_size")


def _prune_options(d: Mapping[str, object], path: ConfigPath) -> tuple[int, int]:
    """`retention.prune_interval` (ms, 1m to 7d) and `retention.prune_batch_size` (1 to 10000)."""
    default = RetentionConfig()
    interval = duration(d, "prune_interval", default.prune_interval_ms, path)
    if not 60_000 <= interval <= 7 * 86_400_000:
        raise ConfigProblem((*path, "prune_interval"), f"must be from 1m to 7d; got {d['prune_interval']!r}")
    batch = integer(d, "prune_batch_size", default.prune_batch_size, path, minimum=1)
    if batch > 10_000:
        raise ConfigProblem((*path, "prune_batch_size"), f"must be at most 10000; got {batch}")
    return interval, batch


def _parse_archive(raw: object, path: ConfigPath) -> ArchiveConfig:
    d = mapping(raw, path)
    reject_unknown(
        d,
        {"batch_size", "connection_records", "connections_interval", *_CHECKPOINT_OPTIONS},
        path,
    )
    signing_key_file, checkpoint_interval_ms, checkpoint_sink = _checkpoint_options(d, path)
    default = ArchiveConfig()
    batch_size = integer(d, "batch_size", default.batch_size, path, minimum=1)
    if batch_size > 10_000:
        raise ConfigProblem((*path, "batch_size"), f"must be at most 10000; got {batch_size}")
    interval = duration(d, "connections_interval", default.connections_interval_ms, path)
    if not MIN_CONNECTIONS_INTERVAL_MS <= interval <= MAX_CONNECTIONS_INTERVAL_MS:
        # Below 1m the pass mostly re-reads its overlap window; above 1d it risks the copy
        # falling behind Synapse's user_ips_max_age pruning (28d by default).
        raise ConfigProblem(
            (*path, "connections_interval"), f"must be from 1m to 1d; got {d['connections_interval']!r}"
        )
    return ArchiveConfig(
        batch_size=batch_size,
        connection_records=boolean(d, "connection_records", default.connection_records, path),
        connections_interval_ms=interval,
        signing_key_file=signing_key_file,
        checkpoint_interval_ms=checkpoint_interval_ms,
        checkpoint_sink=checkpoint_sink,
    )


MIN_CHECKPOINT_INTERVAL_MS = 60_000
MAX_CHECKPOINT_INTERVAL_MS = 7 * 86_400_000
_CHECKPOINT_OPTIONS = ("signing_key_file", "checkpoint_interval", "checkpoint_sink")


def _checkpoint_options(d: Mapping[str, object], path: ConfigPath) -> tuple[str | None, int, str | None]:
    """`archive.signing_key_file`, `.checkpoint_interval` (ms) and `.checkpoint_sink`."""
    signing_key_file = optional_str(d, "signing_key_file", path)
    interval = duration(d, "checkpoint_interval", ArchiveConfig().checkpoint_interval_ms, path)
    if not MIN_CHECKPOINT_INTERVAL_MS <= interval <= MAX_CHECKPOINT_INTERVAL_MS:
        raise ConfigProblem(
            (*path, "checkpoint_interval"), f"must be from 1m to 7d; got {d['checkpoint_interval']!r}"
        )
    sink = optional_str(d, "checkpoint_sink", path)
    if sink is not None and signing_key_file is None:
        raise ConfigProblem(
            (*path, "checkpoint_sink"),
            "needs archive.signing_key_file: without a signing key no checkpoints are made",
        )
    return signing_key_file, interval, sink


def _parse_groups(raw: object, path: ConfigPath) -> GroupsConfig:
    d = mapping(raw, path)
    reject_unknown(d, {"manager_power_level"}, path)
    default = GroupsConfig()
    return GroupsConfig(
        manager_power_level=integer(d, "manager_power_level", default.manager_power_level, path, minimum=1),
    )


def _parse_scope(raw: object, path: ConfigPath) -> ScopeConfig:
    d = mapping(raw, path)
    reject_unknown(d, {"direct_chats", "remote_users"}, path)
    default = ScopeConfig()
    return ScopeConfig(
        direct_chats=enum(d, "direct_chats", DirectChats, default.direct_chats, path),
        remote_users=enum(d, "remote_users", RemoteUsers, default.remote_users, path),
    )


def _parse_identity(raw: object, path: ConfigPath) -> IdentityConfig:
    d = mapping(raw, path)
    reject_unknown(
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
        required_for = enum_set(d["required_for"], GatedAction, (*path, "required_for"))
    help_url = optional_str(d, "help_url", path)
    if help_url is not None and not help_url.startswith(("https://", "http://")):
        raise ConfigProblem((*path, "help_url"), f"must be an http(s) URL; got {help_url!r}")
    pii_key_file = optional_str(d, "pii_key_file", path)
    previous = str_list(d, "previous_pii_key_files", path)
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
        max_accounts_per_identity=integer(
            d, "max_accounts_per_identity", default.max_accounts_per_identity, path, minimum=1
        ),
        admin_attestation=boolean(d, "admin_attestation", default.admin_attestation, path),
        kyc_webhook=_parse_kyc_webhook(d.get("kyc_webhook"), (*path, "kyc_webhook")),
        reverify_after_ms=_reverify_after(d, path),
        reverify_warning_ms=duration(d, "reverify_warning", default.reverify_warning_ms, path),
    )


def _reverify_after(d: Mapping[str, object], path: ConfigPath) -> int | None:
    if d.get("reverify_after") is None:
        return None
    value = duration(d, "reverify_after", 0, path)
    if value < 86_400_000:
        raise ConfigProblem((*path, "reverify_after"), "must be at least 1d")
    return value


def _parse_kyc_webhook(raw: object, path: ConfigPath) -> KycWebhookConfig:
    d = mapping(raw, path)
    reject_unknown(d, {"enabled", "secret_file", "tolerance"}, path)
    default = KycWebhookConfig()
    enabled = boolean(d, "enabled", default.enabled, path)
    secret_file = optional_str(d, "secret_file", path)
    if enabled and secret_file is None:
        raise ConfigProblem((*path, "secret_file"), "required when the KYC webhook is enabled")
    tolerance = duration(d, "tolerance", default.tolerance_ms, path)
    if not 1_000 <= tolerance <= 3_600_000:
        raise ConfigProblem((*path, "tolerance"), "must be from 1s to 1h")
    return KycWebhookConfig(enabled=enabled, secret_file=secret_file, tolerance_ms=tolerance)
