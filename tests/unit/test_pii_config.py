"""`identity.max_accounts_per_identity` and `identity.previous_pii_key_files`: parsing and key files."""

import base64
from pathlib import Path
from typing import Any

import pytest

from synapse_compliance.config import ConfigProblem, parse_config
from synapse_compliance.crypto import keyring_for
from synapse_compliance.keys import load_settings, write_pii_key

PREVIOUS = ("identity", "previous_pii_key_files")


def test_defaults() -> None:
    identity = parse_config({}).identity
    assert identity.max_accounts_per_identity == 1
    assert identity.previous_pii_key_files == ()
    settings = load_settings(parse_config({}))
    assert settings.previous_pii_keys == ()
    assert keyring_for(settings) is None


def test_good_values(tmp_path: Path) -> None:
    current, old1, old2 = (write_pii_key(str(tmp_path / n)) for n in ("new.key", "old1.key", "old2.key"))
    config = parse_config(
        {
            "identity": {
                "pii_key_file": str(tmp_path / "new.key"),
                "previous_pii_key_files": [str(tmp_path / "old1.key"), str(tmp_path / "old2.key")],
                "max_accounts_per_identity": 3,
            }
        }
    )
    assert config.identity.max_accounts_per_identity == 3
    settings = load_settings(config)
    assert settings.pii_key == current
    assert settings.previous_pii_keys == (old1, old2)
    ring = keyring_for(settings)
    assert ring is not None and ring.key_ids == (current.key_id, old1.key_id, old2.key_id)


BAD: list[tuple[dict[str, Any], tuple[str, ...], str]] = [
    ({"max_accounts_per_identity": 0}, ("identity", "max_accounts_per_identity"), "at least 1; got 0"),
    ({"max_accounts_per_identity": -2}, ("identity", "max_accounts_per_identity"), "at least 1"),
    ({"max_accounts_per_identity": True}, ("identity", "max_accounts_per_identity"), "integer; got True"),
    ({"max_accounts_per_identity": "2"}, ("identity", "max_accounts_per_identity"), "integer; got '2'"),
    ({"max_accounts_per_identity": 1.5}, ("identity", "max_accounts_per_identity"), "integer; got 1.5"),
    ({"pii_key_file": "/k", "previous_pii_key_files": "/old.key"}, PREVIOUS, "expected a list"),
    ({"pii_key_file": "/k", "previous_pii_key_files": {"a": 1}}, PREVIOUS, "expected a list"),
    ({"pii_key_file": "/k", "previous_pii_key_files": ["/a", ""]}, (*PREVIOUS, "<item 1>"), "non-empty"),
    ({"pii_key_file": "/k", "previous_pii_key_files": [3]}, (*PREVIOUS, "<item 0>"), "got 3"),
    ({"previous_pii_key_files": ["/old.key"]}, PREVIOUS, "needs identity.pii_key_file"),
]


@pytest.mark.parametrize(("identity", "path", "message"), BAD)
def test_bad_values_name_their_path(identity: dict[str, Any], path: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigProblem) as caught:
        parse_config({"identity": identity})
    assert caught.value.path == path
    assert message in caught.value.message


def _settings_problem(tmp_path: Path, previous: list[str]) -> ConfigProblem:
    write_pii_key(str(tmp_path / "current.key"))
    config = parse_config(
        {"identity": {"pii_key_file": str(tmp_path / "current.key"), "previous_pii_key_files": previous}}
    )
    with pytest.raises(ConfigProblem) as caught:
        load_settings(config)
    return caught.value


def test_missing_previous_key_file_names_the_item(tmp_path: Path) -> None:
    write_pii_key(str(tmp_path / "old.key"))
    problem = _settings_problem(tmp_path, [str(tmp_path / "old.key"), str(tmp_path / "gone.key")])
    assert problem.path == (*PREVIOUS, "<item 1>")
    assert "cannot read key file" in problem.message and "keygen" in problem.message


@pytest.mark.parametrize(
    ("content", "message"),
    [(base64.b64encode(b"x" * 24), "holds 24 bytes"), (b"!!", "not base64"), (b"\xff\xfe", "cannot read")],
)
def test_malformed_previous_key_file(tmp_path: Path, content: bytes, message: str) -> None:
    (tmp_path / "bad.key").write_bytes(content)
    problem = _settings_problem(tmp_path, [str(tmp_path / "bad.key")])
    assert problem.path == (*PREVIOUS, "<item 0>")
    assert message in problem.message


def test_previous_key_repeating_the_current_key(tmp_path: Path) -> None:
    problem = _settings_problem(tmp_path, [str(tmp_path / "current.key")])
    assert problem.path == (*PREVIOUS, "<item 0>")
    assert "holds the current key" in problem.message


def test_previous_key_listed_twice(tmp_path: Path) -> None:
    write_pii_key(str(tmp_path / "old.key"))
    (tmp_path / "copy.key").write_bytes((tmp_path / "old.key").read_bytes())
    problem = _settings_problem(tmp_path, [str(tmp_path / "old.key"), str(tmp_path / "copy.key")])
    assert problem.path == (*PREVIOUS, "<item 1>")
    assert "repeats key" in problem.message
