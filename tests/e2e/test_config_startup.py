"""Malformed module config stops Synapse at start-up with a message naming the key.

Config is parsed before Synapse opens its database, so these run once (on SQLite): the database
plays no part in how they fail.
"""

import base64
from pathlib import Path
from typing import Any

import pytest

from synapse_compliance.keys import write_pii_key
from tests.harness.homeserver import DatabaseChoice, running_homeserver, start_expecting_failure

pytestmark = pytest.mark.e2e

PREFIX = "modules.<item 0>.config"


def _bad_key_file(tmp_path: Path, content: bytes) -> str:
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    return str(path)


CASES: list[tuple[str, Any, str, str]] = [
    ("unknown section", {"credits": {}}, f"{PREFIX}.credits", "unknown option 'credits'"),
    ("not a mapping", ["identity"], PREFIX, "expected a mapping"),
    (
        "unknown identity key",
        {"identity": {"require_for": []}},
        f"{PREFIX}.identity.require_for",
        "accepted here",
    ),
    (
        "unknown gated action",
        {"identity": {"required_for": ["create_group", "fly"]}},
        f"{PREFIX}.identity.required_for.<item 1>",
        "got 'fly'; accepted: create_group, join_group, invite, send_in_group, manage_group",
    ),
    (
        "required_for not a list",
        {"identity": {"required_for": "create_group"}},
        f"{PREFIX}.identity.required_for",
        "expected a list",
    ),
    (
        "bad direct_chats",
        {"scope": {"direct_chats": "sometimes"}},
        f"{PREFIX}.scope.direct_chats",
        "accepted: ignore, govern",
    ),
    (
        "help_url not a url",
        {"identity": {"help_url": "ask the admin"}},
        f"{PREFIX}.identity.help_url",
        "http(s) URL",
    ),
    (
        "missing key file",
        {"identity": {"pii_key_file": "/nonexistent/pii.key"}},
        f"{PREFIX}.identity.pii_key_file",
        "cannot read key file",
    ),
]


@pytest.mark.parametrize(("case", "config", "path", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_config_fails_startup_naming_the_key(
    tmp_path: Path, case: str, config: Any, path: str, message: str
) -> None:
    failure = start_expecting_failure(tmp_path, DatabaseChoice("sqlite"), config)
    assert failure.returncode == 1, failure.output
    assert f"Error in configuration at '{path}'" in failure.output, failure.output
    assert message in failure.output, failure.output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (base64.b64encode(b"k" * 16) + b"\n", "holds 16 bytes; an AES-256 key needs 32"),
        (b"this is not base64 at all!!", "is not base64 text"),
        (b"\xff\xfe\x00binary", "cannot read key file"),
    ],
    ids=["wrong length", "not base64", "binary"],
)
def test_bad_pii_key_file_fails_startup(tmp_path: Path, content: bytes, message: str) -> None:
    key_file = _bad_key_file(tmp_path, content)
    failure = start_expecting_failure(
        tmp_path / "hs", DatabaseChoice("sqlite"), {"identity": {"pii_key_file": key_file}}
    )
    assert failure.returncode == 1
    assert f"Error in configuration at '{PREFIX}.identity.pii_key_file'" in failure.output, failure.output
    assert message in failure.output
    assert "keygen" in failure.output  # says how to make a good one


def test_good_key_file_starts(tmp_path: Path) -> None:
    key_file = tmp_path / "pii.key"
    write_pii_key(str(key_file))
    with running_homeserver(
        tmp_path / "hs", DatabaseChoice("sqlite"), {"identity": {"pii_key_file": str(key_file)}}
    ) as hs:
        assert "synapse_compliance loaded" in hs.log_text()
