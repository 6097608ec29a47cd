"""Archive guards (DESIGN §4.4 "Guards"): what would shorten or blind a group's log.

Theory of operation. The archive must keep every group's events for `retention.min_days`, in a
form that can be read. Three things can undercut that, and this module decides about each from
plain data (the shell fetches the facts and words the answers):

1. A room retention policy (`m.room.retention` state, state key "") whose `max_lifetime` is
   shorter than `min_days`: with Synapse's `retention` enabled it purges the room's history
   early, and in any case it tells members a falsehood about how long the log is kept.
   `decide_retention_state` refuses it, and refuses a `max_lifetime` that is not an integer
   (an unknown lifetime cannot be shown to be long enough). No `max_lifetime` means "keep for
   ever" and is allowed.
2. Encryption (`m.room.encryption` state, state key ""): an archive of ciphertext nobody can
   read cannot satisfy the group-chat rules. With `retention.encrypted_rooms: forbid` (the
   default) `decide_encryption_state` refuses it; with `archive_ciphertext` it is allowed and
   the archive keeps the ciphertext as stored. `decide_create_room` applies both checks to a
   `/createRoom` body's `initial_state` and predicts Synapse's forced encryption
   (`encryption_enabled_by_default_for_room_type`), which no event callback but the costly
   `check_event_allowed` would otherwise see.
3. Homeserver settings that destroy history before, or independently of, the archive:
   `check_settings` turns a `SynapseSettings` snapshot into `SettingWarning`s. The margin for
   data the module copies (redacted events' original JSON, connection records) is
   `SAFE_MARGIN_MS` (7 days: the copy jobs run every second or hour, so a shorter window only
   survives an outage of the background-tasks instance if the outage is shorter still).
   `lag_alert` says when the archiver lags more than half of the redaction window.

Which rooms and senders the checks apply to (governed groups, local senders) is the shell's
business; this module sees only contents and settings.
"""

from collections.abc import Iterator, Mapping
from enum import Enum

import attrs

from synapse_compliance.core.decision import ALLOW, FORBIDDEN, Decision

DAY_MS = 86_400_000
SAFE_MARGIN_MS = 7 * DAY_MS
# The archiver lag, as a fraction of the redaction window, above which status raises an alert.
LAG_ALERT_FRACTION = 0.5

RETENTION = "m.room.retention"
ENCRYPTION = "m.room.encryption"

RETENTION_TOO_SHORT = "retention_too_short"
ENCRYPTION_FORBIDDEN = "encryption_forbidden"


class EncryptedRooms(Enum):
    """What an encrypted group means for the archive (`retention.encrypted_rooms`)."""

    FORBID = "forbid"
    ARCHIVE_CIPHERTEXT = "archive_ciphertext"


def min_lifetime_ms(min_days: int) -> int:
    """The shortest `max_lifetime` (ms) a governed room's retention policy may have."""
    return min_days * DAY_MS


def decide_retention_state(content: Mapping[str, object], min_days: int) -> Decision:
    """Allow an `m.room.retention` content whose `max_lifetime` keeps events `min_days` or more.

    Returns:
        ALLOW, or a refusal `retention_too_short` with facts `min_days`, `min_lifetime_ms` and
        `max_lifetime` (the value given) and `invalid` (True when it is not an integer).
    """
    max_lifetime = content.get("max_lifetime")
    if max_lifetime is None:
        return ALLOW
    minimum = min_lifetime_ms(min_days)
    # `bool` is an `int` in Python but not in JSON; Synapse's own validator refuses it too.
    invalid = type(max_lifetime) is not int
    if not invalid and isinstance(max_lifetime, int) and max_lifetime >= minimum:
        return ALLOW
    return Decision.refuse(
        FORBIDDEN,
        RETENTION_TOO_SHORT,
        min_days=min_days,
        min_lifetime_ms=minimum,
        max_lifetime=max_lifetime,
        invalid=invalid,
    )


def decide_encryption_state(mode: EncryptedRooms, forced_by_server: bool = False) -> Decision:
    """Allow encrypting a governed room only with `retention.encrypted_rooms: archive_ciphertext`.

    Args:
        mode: the configured `retention.encrypted_rooms`.
        forced_by_server: the encryption would come from the homeserver's
            `encryption_enabled_by_default_for_room_type`, not from the request (for the message).
    """
    if mode is EncryptedRooms.ARCHIVE_CIPHERTEXT:
        return ALLOW
    return Decision.refuse(FORBIDDEN, ENCRYPTION_FORBIDDEN, forced_by_server=forced_by_server)


def decide_state_event(
    event_type: str, state_key: str | None, content: Mapping[str, object], min_days: int, mode: EncryptedRooms
) -> Decision:
    """The guard's answer for one state event in a governed room (other events are allowed)."""
    if state_key != "":
        return ALLOW  # Synapse and clients only read these policies at state key ""
    if event_type == RETENTION:
        return decide_retention_state(content, min_days)
    if event_type == ENCRYPTION:
        return decide_encryption_state(mode)
    return ALLOW


def decide_growth(state: Mapping[str, Mapping[str, object]], min_days: int, mode: EncryptedRooms) -> Decision:
    """Whether a direct chat whose policies are `state` may become a group (a third member).

    A group may not be encrypted (under `forbid`) or keep its log shorter than `min_days`, and
    a direct chat that grows is a group from then on, with the state it has. So the invite or
    join that would make it one is refused instead, with the guard's reason and `growth` set.

    Args:
        state: the content of the room's `m.room.encryption` and `m.room.retention` (state key
            ""), by event type; a type it does not have is absent.
    """
    for event_type in (ENCRYPTION, RETENTION):
        content = state.get(event_type)
        if content is None:
            continue
        decision = decide_state_event(event_type, "", content, min_days, mode)
        if not decision.allowed:
            return attrs.evolve(decision, facts={**decision.facts, "growth": True})
    return ALLOW


def _initial_state(
    room_config: Mapping[str, object],
) -> Iterator[tuple[str, str | None, Mapping[str, object]]]:
    raw = room_config.get("initial_state")
    if not isinstance(raw, list | tuple):
        return
    for ev in raw:
        if not isinstance(ev, Mapping):
            continue
        event_type, content = ev.get("type"), ev.get("content")
        state_key = ev.get("state_key", "")
        if isinstance(event_type, str) and isinstance(content, Mapping):
            yield event_type, state_key if isinstance(state_key, str) else None, content


def preset_of(room_config: Mapping[str, object]) -> object:
    """The preset Synapse applies to a `/createRoom` body (its default depends on `visibility`)."""
    if "preset" in room_config:
        return room_config["preset"]
    return "public_chat" if room_config.get("visibility", "private") == "public" else "private_chat"


def _supplies_encryption(room_config: Mapping[str, object]) -> bool:
    # Synapse lets a supplied `m.room.encryption` replace the forced one only if it names an
    # algorithm (synapse/handlers/room.py, `supplied_encryption_is_valid`).
    return any(
        t == ENCRYPTION and k == "" and isinstance(c.get("algorithm"), str)
        for t, k, c in _initial_state(room_config)
    )


def decide_create_room(
    room_config: Mapping[str, object],
    min_days: int,
    mode: EncryptedRooms,
    encrypted_presets: frozenset[str],
) -> Decision:
    """The guard's answer for a `/createRoom` body that creates a governed group.

    Checks each `initial_state` event like `decide_state_event`, then whether Synapse would
    encrypt the room anyway because its preset is in `encrypted_presets` (from
    `encryption_enabled_by_default_for_room_type`).
    """
    for event_type, state_key, content in _initial_state(room_config):
        decision = decide_state_event(event_type, state_key, content, min_days, mode)
        if not decision.allowed:
            return decision
    if preset_of(room_config) in encrypted_presets and not _supplies_encryption(room_config):
        decision = decide_encryption_state(mode, forced_by_server=True)
        if not decision.allowed:
            return Decision.refuse(
                str(decision.errcode),
                str(decision.reason_code),
                **decision.facts,
                preset=preset_of(room_config),
            )
    return ALLOW


# --- homeserver settings ----------------------------------------------------------------------


@attrs.frozen
class SynapseSettings:
    """The homeserver settings that can destroy history, as Synapse parsed them (ms or None).

    Attributes:
        redaction_retention_period_ms: after this, redacted events' JSON is censored (None: never).
        retention_enabled: Synapse's `retention.enabled`.
        retention_default_max_lifetime_ms: `retention.default_policy.max_lifetime`.
        retention_allowed_lifetime_min_ms: `retention.allowed_lifetime_min`.
        retention_allowed_lifetime_max_ms: `retention.allowed_lifetime_max`.
        retention_purge_jobs: how many purge jobs run (Synapse adds a daily one when none is set).
        user_ips_max_age_ms: connection records (`user_ips`) older than this are deleted.
        forgotten_room_retention_period_ms: rooms every local member forgot are purged after this.
        encrypted_presets: room presets Synapse encrypts by default.
    """

    redaction_retention_period_ms: int | None = SAFE_MARGIN_MS
    retention_enabled: bool = False
    retention_default_max_lifetime_ms: int | None = None
    retention_allowed_lifetime_min_ms: int | None = None
    retention_allowed_lifetime_max_ms: int | None = None
    retention_purge_jobs: int = 0
    user_ips_max_age_ms: int | None = 28 * DAY_MS
    forgotten_room_retention_period_ms: int | None = None
    encrypted_presets: frozenset[str] = frozenset()


@attrs.frozen
class SettingWarning:
    """A homeserver setting that undercuts the archive, with the facts that explain it.

    `code` is stable snake_case (tools rely on it); `setting` is the `homeserver.yaml` key.
    """

    code: str
    setting: str
    facts: Mapping[str, object] = attrs.field(factory=dict)


def _short(value_ms: int | None, limit_ms: int) -> bool:
    return value_ms is not None and value_ms < limit_ms


def check_settings(
    settings: SynapseSettings, min_days: int, mode: EncryptedRooms
) -> tuple[SettingWarning, ...]:
    """Every way the homeserver's settings undercut an archive kept `min_days` days.

    Precedence: none; each setting is judged on its own, in a fixed order.
    """
    minimum = min_lifetime_ms(min_days)
    warnings: list[SettingWarning] = []
    if _short(settings.redaction_retention_period_ms, SAFE_MARGIN_MS):
        warnings.append(
            SettingWarning(
                "redaction_retention_short",
                "redaction_retention_period",
                {"value_ms": settings.redaction_retention_period_ms, "margin_ms": SAFE_MARGIN_MS},
            )
        )
    if settings.retention_enabled:
        if _short(settings.retention_default_max_lifetime_ms, minimum):
            warnings.append(
                SettingWarning(
                    "retention_default_too_short",
                    "retention.default_policy.max_lifetime",
                    {"value_ms": settings.retention_default_max_lifetime_ms, "min_days": min_days},
                )
            )
        if _short(settings.retention_allowed_lifetime_max_ms, minimum):
            warnings.append(
                SettingWarning(
                    "retention_allowed_max_too_short",
                    "retention.allowed_lifetime_max",
                    {"value_ms": settings.retention_allowed_lifetime_max_ms, "min_days": min_days},
                )
            )
        # With allowed_lifetime_min ≥ min_days Synapse clamps every room's policy (remote users'
        # too, which the module cannot refuse) up to a safe value, so the purges are harmless.
        allowed_min = settings.retention_allowed_lifetime_min_ms
        if settings.retention_purge_jobs and (allowed_min is None or allowed_min < minimum):
            warnings.append(
                SettingWarning(
                    "retention_purge_jobs",
                    "retention.purge_jobs",
                    {
                        "jobs": settings.retention_purge_jobs,
                        "allowed_min_ms": allowed_min,
                        "min_days": min_days,
                    },
                )
            )
    if _short(settings.user_ips_max_age_ms, SAFE_MARGIN_MS):
        warnings.append(
            SettingWarning(
                "user_ips_max_age_short",
                "user_ips_max_age",
                {"value_ms": settings.user_ips_max_age_ms, "margin_ms": SAFE_MARGIN_MS},
            )
        )
    if settings.forgotten_room_retention_period_ms is not None:
        warnings.append(
            SettingWarning(
                "forgotten_room_purge",
                "forgotten_room_retention_period",
                {"value_ms": settings.forgotten_room_retention_period_ms},
            )
        )
    if mode is EncryptedRooms.FORBID and settings.encrypted_presets:
        warnings.append(
            SettingWarning(
                "encryption_by_default",
                "encryption_enabled_by_default_for_room_type",
                {"presets": sorted(settings.encrypted_presets)},
            )
        )
    return tuple(warnings)


def lag_alert(lag_ms: int | None, redaction_retention_period_ms: int | None) -> bool:
    """Whether the archiver lags more than `LAG_ALERT_FRACTION` of the redaction window.

    Past the window Synapse overwrites redacted events' JSON (SYNAPSE_FACTS §13), so an event
    redacted before the archiver reaches it would be archived censored. No window, no alert.
    """
    if lag_ms is None or redaction_retention_period_ms is None:
        return False
    return lag_ms > redaction_retention_period_ms * LAG_ALERT_FRACTION


def lag_warning(lag_ms: int, redaction_retention_period_ms: int) -> SettingWarning:
    """The status warning for an archiver lag that `lag_alert` flags."""
    return SettingWarning(
        "archive_lag_near_redaction_window",
        "redaction_retention_period",
        {"lag_ms": lag_ms, "value_ms": redaction_retention_period_ms},
    )
