"""The archive guards' pure checks: retention policies, encryption, settings, lag alert."""

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from synapse_compliance.core.guards import (
    DAY_MS,
    SAFE_MARGIN_MS,
    EncryptedRooms,
    SynapseSettings,
    check_settings,
    decide_create_room,
    decide_retention_state,
    decide_state_event,
    lag_alert,
    lag_warning,
    min_lifetime_ms,
    preset_of,
)
from synapse_compliance.messages import guard_refusal_fields, setting_warning_message

FORBID = EncryptedRooms.FORBID
CIPHER = EncryptedRooms.ARCHIVE_CIPHERTEXT
MIN_MS = 184 * DAY_MS
NONE: frozenset[str] = frozenset()


def test_the_boundary_is_exactly_min_days() -> None:
    assert decide_retention_state({"max_lifetime": MIN_MS}, 184).allowed
    refused = decide_retention_state({"max_lifetime": MIN_MS - 1}, 184)
    assert not refused.allowed
    assert refused.errcode == "M_FORBIDDEN"
    assert refused.reason_code == "retention_too_short"
    assert refused.facts == {
        "min_days": 184,
        "min_lifetime_ms": MIN_MS,
        "max_lifetime": MIN_MS - 1,
        "invalid": False,
    }


@given(st.integers(min_value=184, max_value=10_000), st.integers(min_value=-(2**63), max_value=2**63))
def test_an_integer_lifetime_is_allowed_exactly_when_long_enough(min_days: int, lifetime: int) -> None:
    decision = decide_retention_state({"max_lifetime": lifetime}, min_days)
    assert decision.allowed is (lifetime >= min_lifetime_ms(min_days))
    assert decision == decide_retention_state({"max_lifetime": lifetime}, min_days)  # deterministic


@pytest.mark.parametrize("value", [True, False, float(MIN_MS), "15897600000", [MIN_MS], {"ms": MIN_MS}])
def test_a_lifetime_that_is_not_an_integer_is_refused(value: object) -> None:
    decision = decide_retention_state({"max_lifetime": value}, 184)
    assert decision.reason_code == "retention_too_short"
    assert decision.facts["invalid"] is True
    assert "whole number of milliseconds" in str(guard_refusal_fields(decision)["error"])


@pytest.mark.parametrize("content", [{}, {"max_lifetime": None}, {"min_lifetime": 1}])
def test_no_max_lifetime_keeps_for_ever(content: dict[str, Any]) -> None:
    assert decide_retention_state(content, 184).allowed


def test_the_refusal_names_the_minimum() -> None:
    fields = guard_refusal_fields(decide_retention_state({"max_lifetime": 86_400_000}, 200))
    assert fields["io.synapse_compliance.reason"] == "retention_too_short"
    assert fields["io.synapse_compliance.min_lifetime_ms"] == 200 * DAY_MS
    assert "at least 200 days" in str(fields["error"])
    assert "86400000 ms" in str(fields["error"])


def test_state_events() -> None:
    short = {"max_lifetime": 1}
    assert not decide_state_event("m.room.retention", "", short, 184, CIPHER).allowed
    assert decide_state_event("m.room.retention", "other", short, 184, CIPHER).allowed
    assert decide_state_event("m.room.retention", None, short, 184, CIPHER).allowed
    enc = {"algorithm": "m.megolm.v1.aes-sha2"}
    refused = decide_state_event("m.room.encryption", "", enc, 184, FORBID)
    assert refused.reason_code == "encryption_forbidden"
    assert decide_state_event("m.room.encryption", "", enc, 184, CIPHER).allowed
    assert decide_state_event("m.room.encryption", "x", enc, 184, FORBID).allowed
    assert decide_state_event("m.room.message", None, short, 184, FORBID).allowed
    error = str(guard_refusal_fields(refused)["error"])
    assert "unreadable" in error and "Direct chats may still be encrypted" in error


def _state(event_type: str, content: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": event_type, "content": content, **extra}


def test_create_room_checks_initial_state() -> None:
    enc = _state("m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"})
    short = _state("m.room.retention", {"max_lifetime": MIN_MS - 1})
    long = _state("m.room.retention", {"max_lifetime": MIN_MS})
    assert decide_create_room({}, 184, FORBID, NONE).allowed
    assert decide_create_room({"initial_state": [long]}, 184, FORBID, NONE).allowed
    assert (
        decide_create_room({"initial_state": [short]}, 184, CIPHER, NONE).reason_code == "retention_too_short"
    )
    assert (
        decide_create_room({"initial_state": [enc]}, 184, FORBID, NONE).reason_code == "encryption_forbidden"
    )
    assert decide_create_room({"initial_state": [enc, long]}, 184, CIPHER, NONE).allowed
    # Other state keys are not the room's policy; malformed entries are Synapse's to refuse.
    odd = [_state("m.room.retention", {"max_lifetime": 1}, state_key="x"), "junk", {"type": 5}]
    assert decide_create_room({"initial_state": odd}, 184, FORBID, NONE).allowed
    assert decide_create_room({"initial_state": "junk"}, 184, FORBID, NONE).allowed


def test_create_room_predicts_the_servers_forced_encryption() -> None:
    invite = frozenset({"private_chat", "trusted_private_chat"})
    refused = decide_create_room({"preset": "private_chat"}, 184, FORBID, invite)
    assert refused.reason_code == "encryption_forbidden"
    assert refused.facts == {"forced_by_server": True, "preset": "private_chat"}
    assert "encryption_enabled_by_default_for_room_type" in str(guard_refusal_fields(refused)["error"])
    assert not decide_create_room({}, 184, FORBID, invite).allowed  # private visibility: private_chat
    assert decide_create_room({"visibility": "public"}, 184, FORBID, invite).allowed  # public_chat
    assert decide_create_room({"preset": "private_chat"}, 184, CIPHER, invite).allowed


def test_presets() -> None:
    assert preset_of({}) == "private_chat"
    assert preset_of({"visibility": "public"}) == "public_chat"
    assert preset_of({"visibility": "public", "preset": "trusted_private_chat"}) == "trusted_private_chat"


def _codes(settings: SynapseSettings, min_days: int = 184, mode: EncryptedRooms = FORBID) -> list[str]:
    return [w.code for w in check_settings(settings, min_days, mode)]


def test_synapse_defaults_raise_no_warning() -> None:
    assert _codes(SynapseSettings()) == []


@pytest.mark.parametrize(
    ("settings", "codes"),
    [
        (SynapseSettings(redaction_retention_period_ms=SAFE_MARGIN_MS - 1), ["redaction_retention_short"]),
        (SynapseSettings(redaction_retention_period_ms=None), []),
        (SynapseSettings(redaction_retention_period_ms=365 * DAY_MS), []),
        (SynapseSettings(user_ips_max_age_ms=SAFE_MARGIN_MS - 1), ["user_ips_max_age_short"]),
        (SynapseSettings(user_ips_max_age_ms=SAFE_MARGIN_MS), []),
        (SynapseSettings(user_ips_max_age_ms=None), []),
        (SynapseSettings(forgotten_room_retention_period_ms=365 * DAY_MS), ["forgotten_room_purge"]),
        (SynapseSettings(encrypted_presets=frozenset({"private_chat"})), ["encryption_by_default"]),
        # Retention settings only matter once Synapse's retention is enabled.
        (SynapseSettings(retention_default_max_lifetime_ms=DAY_MS, retention_purge_jobs=1), []),
        (
            SynapseSettings(retention_enabled=True, retention_purge_jobs=1),
            ["retention_purge_jobs"],
        ),
        (
            SynapseSettings(
                retention_enabled=True, retention_purge_jobs=1, retention_allowed_lifetime_min_ms=MIN_MS
            ),
            [],
        ),
        (
            SynapseSettings(
                retention_enabled=True,
                retention_purge_jobs=1,
                retention_allowed_lifetime_min_ms=MIN_MS - 1,
                retention_default_max_lifetime_ms=MIN_MS - 1,
                retention_allowed_lifetime_max_ms=MIN_MS - 1,
            ),
            ["retention_default_too_short", "retention_allowed_max_too_short", "retention_purge_jobs"],
        ),
        (
            SynapseSettings(
                retention_enabled=True,
                retention_default_max_lifetime_ms=MIN_MS,
                retention_allowed_lifetime_max_ms=MIN_MS,
            ),
            [],
        ),
    ],
)
def test_each_setting_warns_on_its_own(settings: SynapseSettings, codes: list[str]) -> None:
    assert _codes(settings) == codes


def test_forced_encryption_is_fine_when_ciphertext_is_archived() -> None:
    assert _codes(SynapseSettings(encrypted_presets=frozenset({"public_chat"})), mode=CIPHER) == []


def test_min_days_moves_the_retention_threshold() -> None:
    settings = SynapseSettings(retention_enabled=True, retention_default_max_lifetime_ms=200 * DAY_MS)
    assert _codes(settings, min_days=184) == []
    assert _codes(settings, min_days=201) == ["retention_default_too_short"]


def test_every_warning_has_words() -> None:
    everything = SynapseSettings(
        redaction_retention_period_ms=3_600_000,
        retention_enabled=True,
        retention_default_max_lifetime_ms=DAY_MS,
        retention_allowed_lifetime_max_ms=DAY_MS,
        retention_purge_jobs=1,
        user_ips_max_age_ms=3_600_000,
        forgotten_room_retention_period_ms=DAY_MS,
        encrypted_presets=frozenset({"private_chat", "trusted_private_chat"}),
    )
    warnings = [*check_settings(everything, 184, FORBID), lag_warning(1_800_001, 3_600_000)]
    assert len({w.code for w in warnings}) == 8
    for w in warnings:
        message = setting_warning_message(w.code, w.facts)
        assert message != w.code and w.setting.split(".")[0] in message, w.code
    assert "0.0416667d" in setting_warning_message(warnings[0].code, warnings[0].facts)
    assert "private_chat, trusted_private_chat" in setting_warning_message(
        warnings[-2].code, warnings[-2].facts
    )


def test_lag_alert_past_half_the_redaction_window() -> None:
    window = 7 * DAY_MS
    assert not lag_alert(window // 2, window)
    assert lag_alert(window // 2 + 1, window)
    assert not lag_alert(10 * window, None)  # nothing is censored
    assert not lag_alert(None, window)


@given(st.integers(min_value=0, max_value=10**12), st.integers(min_value=1, max_value=10**12))
def test_more_lag_never_clears_the_alert(lag: int, window: int) -> None:
    if lag_alert(lag, window):
        assert lag_alert(lag + 1, window)
