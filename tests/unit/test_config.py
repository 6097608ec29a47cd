"""Config parsing: defaults, a full config, and each bad value mapped to its exact path."""

from typing import Any

import pytest

from synapse_compliance.config import (
    ComplianceConfig,
    ConfigProblem,
    IdentityConfig,
    ScopeConfig,
    parse_config,
)
from synapse_compliance.core.groups import DirectChats
from synapse_compliance.core.identity import GatedAction


@pytest.mark.parametrize("raw", [None, {}, {"scope": None, "identity": None}, {"scope": {}, "identity": {}}])
def test_empty_config_gives_safe_defaults(raw: Any) -> None:
    config = parse_config(raw)
    assert config == ComplianceConfig()
    assert config.identity.required_for == frozenset(GatedAction)  # everything gated by default
    assert config.scope.direct_chats is DirectChats.IGNORE


def test_full_config() -> None:
    raw = {
        "scope": {"direct_chats": "govern"},
        "identity": {
            "required_for": ["create_group", "invite", "create_group"],
            "help_url": "https://example.org/verify",
            "pii_key_file": "/etc/synapse/pii.key",
        },
    }
    assert parse_config(raw) == ComplianceConfig(
        scope=ScopeConfig(direct_chats=DirectChats.GOVERN),
        identity=IdentityConfig(
            required_for=frozenset({GatedAction.CREATE_GROUP, GatedAction.INVITE}),
            help_url="https://example.org/verify",
            pii_key_file="/etc/synapse/pii.key",
        ),
    )


def test_empty_required_for_gates_nothing() -> None:
    assert parse_config({"identity": {"required_for": []}}).identity.required_for == frozenset()


BAD: list[tuple[Any, tuple[str, ...], str]] = [
    ("identity", (), "expected a mapping"),
    ([1], (), "expected a mapping"),
    ({1: "x"}, (), "keys must be strings"),
    ({"no_such_section": {}}, ("no_such_section",), "unknown option 'no_such_section'"),
    ({"scope": []}, ("scope",), "expected a mapping"),
    ({"scope": {"direct_chat": "ignore"}}, ("scope", "direct_chat"), "accepted here: direct_chats"),
    ({"scope": {"direct_chats": "GOVERN"}}, ("scope", "direct_chats"), "accepted: ignore, govern"),
    ({"scope": {"direct_chats": True}}, ("scope", "direct_chats"), "got True"),
    ({"identity": {"required_for": "invite"}}, ("identity", "required_for"), "expected a list"),
    ({"identity": {"required_for": {"invite": 1}}}, ("identity", "required_for"), "expected a list"),
    ({"identity": {"required_for": ["invite", 3]}}, ("identity", "required_for", "<item 1>"), "got 3"),
    ({"identity": {"help_url": "example.org"}}, ("identity", "help_url"), "http(s) URL"),
    ({"identity": {"help_url": 5}}, ("identity", "help_url"), "non-empty string"),
    ({"identity": {"pii_key_file": ""}}, ("identity", "pii_key_file"), "non-empty string"),
    ({"identity": {"pii_key_file": ["a"]}}, ("identity", "pii_key_file"), "non-empty string"),
]


@pytest.mark.parametrize(("raw", "path", "message"), BAD)
def test_bad_values_name_their_path(raw: Any, path: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigProblem) as caught:
        parse_config(raw)
    assert caught.value.path == path
    assert message in caught.value.message


def test_dotted_path_matches_synapse_spelling() -> None:
    with pytest.raises(ConfigProblem) as caught:
        parse_config({"identity": {"required_for": ["fly"]}})
    assert (
        caught.value.dotted("modules.<item 0>.config")
        == "modules.<item 0>.config.identity.required_for.<item 0>"
    )


@pytest.mark.parametrize(
    ("raw", "path", "message"),
    [
        ({"identity": {"reverify_after": "12h"}}, ("identity", "reverify_after"), "at least 1d"),
        ({"identity": {"reverify_after": "a year"}}, ("identity", "reverify_after"), "expected a duration"),
        ({"identity": {"reverify_warning": 14}}, ("identity", "reverify_warning"), "expected a duration"),
        ({"identity": {"admin_attestation": "no"}}, ("identity", "admin_attestation"), "true or false"),
        (
            {"identity": {"kyc_webhook": {"enabled": True}}},
            ("identity", "kyc_webhook", "secret_file"),
            "required",
        ),
        (
            {"identity": {"kyc_webhook": {"tolerance": "0s"}}},
            ("identity", "kyc_webhook", "tolerance"),
            "1s to 1h",
        ),
        (
            {"identity": {"kyc_webhook": {"secret": "x"}}},
            ("identity", "kyc_webhook", "secret"),
            "accepted here",
        ),
        ({"groups": {"manager_power_level": 0}}, ("groups", "manager_power_level"), "at least 1"),
        ({"groups": {"manager_power_level": "50"}}, ("groups", "manager_power_level"), "expected an integer"),
        ({"scope": {"remote_users": "open"}}, ("scope", "remote_users"), "accepted: allow, restrict, block"),
    ],
)
def test_more_bad_values_name_their_path(raw: Any, path: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigProblem) as caught:
        parse_config(raw)
    assert caught.value.path == path
    assert message in caught.value.message


def test_durations() -> None:
    identity = parse_config({"identity": {"reverify_after": "2w", "reverify_warning": "36h"}}).identity
    assert identity.reverify_after_ms == 14 * 86_400_000
    assert identity.reverify_warning_ms == 36 * 3_600_000
