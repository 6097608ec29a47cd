"""Bad `identity.max_accounts_per_identity` / `identity.previous_pii_key_files` stop Synapse at start-up.

Config is parsed before Synapse opens its database, so these run on SQLite only (as in
test_config_startup.py).
"""

import base64
from pathlib import Path
from typing import Any

import pytest

from synapse_compliance.keys import write_pii_key
from tests.harness.homeserver import DatabaseChoice, running_homeserver, start_expecting_failure

pytestmark = pytest.mark.e2e

PREFIX = "modules.<item 0>.config.identity"


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, str]:
    """A current key, an old key, a copy of the current key, a malformed key and a missing path."""
    paths = {name: str(tmp_path / f"{name}.key") for name in ("current", "old", "copy", "short", "missing")}
    write_pii_key(paths["current"])
    write_pii_key(paths["old"])
    Path(paths["copy"]).write_bytes(Path(paths["current"]).read_bytes())
    Path(paths["short"]).write_bytes(base64.b64encode(b"k" * 16))
    return paths


CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("zero accounts", {"max_accounts_per_identity": 0}, "max_accounts_per_identity", "at least 1; got 0"),
    ("bool accounts", {"max_accounts_per_identity": True}, "max_accounts_per_identity", "got True"),
    ("text accounts", {"max_accounts_per_identity": "2"}, "max_accounts_per_identity", "got '2'"),
    (
        "previous not a list",
        {"pii_key_file": "{current}", "previous_pii_key_files": "{old}"},
        "previous_pii_key_files",
        "expected a list",
    ),
    (
        "previous without current",
        {"previous_pii_key_files": ["{old}"]},
        "previous_pii_key_files",
        "needs identity.pii_key_file",
    ),
    (
        "previous missing",
        {"pii_key_file": "{current}", "previous_pii_key_files": ["{old}", "{missing}"]},
        "previous_pii_key_files.<item 1>",
        "cannot read key file",
    ),
    (
        "previous malformed",
        {"pii_key_file": "{current}", "previous_pii_key_files": ["{short}"]},
        "previous_pii_key_files.<item 0>",
        "holds 16 bytes; an AES-256 key needs 32",
    ),
    (
        "previous repeats current",
        {"pii_key_file": "{current}", "previous_pii_key_files": ["{old}", "{copy}"]},
        "previous_pii_key_files.<item 1>",
        "holds the current key",
    ),
]


def _fill(identity: dict[str, Any], keys: dict[str, str]) -> dict[str, Any]:
    def fill(value: Any) -> Any:
        if isinstance(value, str):
            return value.format(**keys)
        if isinstance(value, list):
            return [fill(v) for v in value]
        return value

    return {k: fill(v) for k, v in identity.items()}


@pytest.mark.parametrize(("identity", "path", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_pii_option_fails_startup_naming_the_key(
    tmp_path: Path, keys: dict[str, str], identity: dict[str, Any], path: str, message: str
) -> None:
    config = {"identity": _fill(identity, keys)}
    failure = start_expecting_failure(tmp_path / "hs", DatabaseChoice("sqlite"), config)
    assert failure.returncode == 1, failure.output
    assert f"Error in configuration at '{PREFIX}.{path}'" in failure.output, failure.output
    assert message in failure.output, failure.output


def test_previous_keys_and_account_limit_start(tmp_path: Path, keys: dict[str, str]) -> None:
    config = {
        "identity": {
            "pii_key_file": keys["current"],
            "previous_pii_key_files": [keys["old"]],
            "max_accounts_per_identity": 2,
        }
    }
    with running_homeserver(tmp_path / "hs", DatabaseChoice("sqlite"), config) as hs:
        log = hs.log_text()
        assert "personal data: sealing with PII key" in log
        assert "also opening" in log and "no previous keys" not in log
