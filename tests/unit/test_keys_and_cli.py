"""Key files and the `synapse-compliance` command (check-config, keygen)."""

import base64
import stat
from pathlib import Path

import pytest
import yaml

from synapse_compliance.cli import main
from synapse_compliance.config import ConfigProblem
from synapse_compliance.keys import key_id_for, read_pii_key, write_pii_key


def test_keygen_writes_a_private_key_that_reads_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "pii.key"
    assert main(["keygen", "--pii-key", str(path)]) == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = read_pii_key(str(path), ("identity", "pii_key_file"))
    assert len(key.key) == 32
    assert key.key_id == key_id_for(key.key)
    assert key.key_id in capsys.readouterr().out
    assert key.key.hex() not in repr(key)  # never printed


def test_keygen_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "pii.key"
    first = write_pii_key(str(path))
    assert main(["keygen", "--pii-key", str(path)]) == 1
    assert "--force" in capsys.readouterr().err
    assert read_pii_key(str(path), ()).key == first.key
    assert main(["keygen", "--pii-key", str(path), "--force"]) == 0
    assert read_pii_key(str(path), ()).key != first.key


@pytest.mark.parametrize(
    ("content", "message"),
    [(base64.b64encode(b"x" * 31), "holds 31 bytes"), (b"%%%", "not base64"), (b"\xff\xfe", "cannot read")],
)
def test_bad_key_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "k"
    path.write_bytes(content)
    with pytest.raises(ConfigProblem) as caught:
        read_pii_key(str(path), ("identity", "pii_key_file"))
    assert caught.value.path == ("identity", "pii_key_file")
    assert message in caught.value.message


def _homeserver_yaml(tmp_path: Path, module_config: object) -> Path:
    path = tmp_path / "homeserver.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "server_name": "example.org",
                "modules": [
                    {"module": "some_other.Module", "config": {"anything": 1}},
                    {"module": "synapse_compliance.ComplianceModule", "config": module_config},
                ],
            }
        )
    )
    return path


def test_check_config_accepts_a_good_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "pii.key"
    write_pii_key(str(key))
    path = _homeserver_yaml(tmp_path, {"identity": {"pii_key_file": str(key)}})
    assert main(["check-config", str(path)]) == 0
    assert "modules.<item 1>: synapse_compliance config is valid" in capsys.readouterr().out


def test_check_config_names_the_bad_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _homeserver_yaml(tmp_path, {"identity": {"required_for": ["invite", "fly"]}})
    assert main(["check-config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "modules.<item 1>.config.identity.required_for.<item 1>" in err
    assert "got 'fly'" in err


def test_check_config_without_the_module(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "homeserver.yaml"
    path.write_text("server_name: x\n")
    assert main(["check-config", str(path)]) == 1
    assert "no `modules:` entry" in capsys.readouterr().err


def test_check_config_usage_errors_exit_2(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["check-config", str(tmp_path / "missing.yaml")])
    assert caught.value.code == 2
    with pytest.raises(SystemExit) as caught:
        main([])
    assert caught.value.code == 2
