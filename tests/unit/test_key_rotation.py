"""`synapse-compliance rotate-key` on a SQLite database built from the real schema deltas.

(The same command against a real Synapse, on SQLite and PostgreSQL, is in
tests/e2e/test_personal_data.py.)
"""

import importlib.resources
import json
import sqlite3
from pathlib import Path

import pytest
import yaml

from synapse_compliance.cli import main
from synapse_compliance.core.personal_data import PersonalData
from synapse_compliance.crypto import Keyring, SealedRecord, fingerprint
from synapse_compliance.keys import PiiKey, write_pii_key
from synapse_compliance.storage.key_rotation import open_database, rotate_batch
from synapse_compliance.storage.sealed_rows import decode_bytes, encode_bytes


def _schema_statements() -> list[str]:
    """Deltas 01 and 03 as SQLite statements (the module's loader needs Synapse; this does not)."""
    folder = importlib.resources.files("synapse_compliance.storage") / "schema"
    statements = []
    for name in ("01_audit_and_identity.sql", "03_identity_records.sql"):
        text = "\n".join(line.split("--", 1)[0] for line in (folder / name).read_text().splitlines())
        text = text.replace("$ID_PK$", "INTEGER PRIMARY KEY AUTOINCREMENT")
        statements += [s for s in text.split(";") if s.strip()]
    return statements


class Setup:
    """A database with records sealed under `key1`, and a homeserver.yaml pointing at it."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.db_path = tmp_path / "homeserver.db"
        self.key1 = write_pii_key(str(tmp_path / "key1"))
        self.key2 = write_pii_key(str(tmp_path / "key2"))
        conn = sqlite3.connect(self.db_path)
        for statement in _schema_statements():
            conn.execute(statement)
        conn.commit()
        conn.close()

    def add_records(self, key: PiiKey, count: int, prefix: str = "u") -> list[str]:
        ring = Keyring(key)
        users = [f"@{prefix}{i}:example.org" for i in range(count)]
        conn = sqlite3.connect(self.db_path)
        for i, user_id in enumerate(users):
            data = PersonalData(f"Name {prefix}{i}", "passport", f"P{prefix}{i}")
            sealed = ring.seal(user_id, data.to_plaintext())
            conn.execute(
                "INSERT INTO compliance_identity_records VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    user_id,
                    sealed.key_id,
                    encode_bytes(sealed.nonce),
                    encode_bytes(sealed.ciphertext),
                    ring.fingerprint("passport", f"P{prefix}{i}"),
                    1,
                    1,
                ),
            )
        conn.commit()
        conn.close()
        return users

    def homeserver_yaml(self, current: str | None, previous: list[str], database: str | None = None) -> str:
        identity: dict[str, object] = {"previous_pii_key_files": previous}
        if current is not None:
            identity["pii_key_file"] = current
        path = self.tmp_path / "homeserver.yaml"
        document = {
            "database": {"name": "sqlite3", "args": {"database": database or str(self.db_path), "cp_min": 1}},
            "modules": [{"module": "synapse_compliance.ComplianceModule", "config": {"identity": identity}}],
        }
        path.write_text(yaml.safe_dump(document))
        return str(path)

    def rows(self) -> list[tuple[str, str, str, str, str]]:
        conn = sqlite3.connect(self.db_path)
        try:
            return list(
                conn.execute(
                    "SELECT user_id, key_id, nonce, ciphertext, fingerprint"
                    " FROM compliance_identity_records ORDER BY user_id"
                )
            )
        finally:
            conn.close()

    def audit(self) -> list[tuple[str, str, dict[str, object]]]:
        conn = sqlite3.connect(self.db_path)
        try:
            rows = conn.execute("SELECT actor, action, details FROM compliance_audit_log ORDER BY id")
            return [(a, b, json.loads(c)) for a, b, c in rows]
        finally:
            conn.close()


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    return Setup(tmp_path)


def test_rotates_in_batches_and_then_has_nothing_to_do(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    users = setup.add_records(setup.key1, 5)
    config = setup.homeserver_yaml(str(setup.tmp_path / "key2"), [str(setup.tmp_path / "key1")])
    assert main(["rotate-key", "-c", config, "--batch-size", "2"]) == 0
    out = capsys.readouterr().out
    assert "rotated 2/5 records\nrotated 4/5 records\nrotated 5/5 records\n" in out
    assert f"done: 5 records re-sealed with PII key {setup.key2.key_id}" in out

    only_key2 = Keyring(setup.key2)
    for (user_id, key_id, nonce, ciphertext, fp), expected_user in zip(setup.rows(), users, strict=True):
        assert user_id == expected_user and key_id == setup.key2.key_id
        sealed = SealedRecord(key_id, decode_bytes(nonce), decode_bytes(ciphertext))
        data = PersonalData.from_plaintext(only_key2.open(user_id, sealed))
        assert fp == fingerprint(setup.key2, data.document_type, data.document_number)
    audit = setup.audit()
    assert [(a, b, d["records"]) for a, b, d in audit] == [
        ("synapse-compliance rotate-key", "identity.rotate_key", n) for n in (2, 2, 1)
    ]
    assert audit[0][2]["from_key_id"] == setup.key1.key_id

    assert main(["rotate-key", "-c", config]) == 0
    assert "nothing to rotate" in capsys.readouterr().out
    assert len(setup.audit()) == 3


def test_resumes_after_an_interruption(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    setup.add_records(setup.key1, 5)
    ring = Keyring(setup.key2, (setup.key1,))
    db = open_database({"name": "sqlite3", "args": {"database": str(setup.db_path)}})
    assert rotate_batch(db, ring, setup.key1.key_id, 2, now_ms=5) == 2  # then "killed"
    db.close()
    config = setup.homeserver_yaml(str(setup.tmp_path / "key2"), [str(setup.tmp_path / "key1")])
    assert main(["rotate-key", "-c", config, "--batch-size", "2"]) == 0
    assert "rotated 2/3 records\nrotated 3/3 records\n" in capsys.readouterr().out
    assert {row[1] for row in setup.rows()} == {setup.key2.key_id}


def test_unknown_key_id_is_named_and_nothing_changes(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    setup.add_records(setup.key1, 3)
    before = setup.rows()
    write_pii_key(str(setup.tmp_path / "key3"))
    config = setup.homeserver_yaml(str(setup.tmp_path / "key3"), [str(setup.tmp_path / "key2")])
    assert main(["rotate-key", "-c", config]) == 1
    err = capsys.readouterr().err
    assert f"key id(s) {setup.key1.key_id} (3 records)" in err
    assert "previous_pii_key_files" in err and "Nothing was rotated" in err
    assert setup.rows() == before
    assert setup.audit() == []


def test_a_record_that_does_not_open_stops_its_batch(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    setup.add_records(setup.key1, 4)
    conn = sqlite3.connect(setup.db_path)  # the third record (second batch) was copied from u0
    conn.execute(
        "UPDATE compliance_identity_records SET nonce = (SELECT nonce FROM compliance_identity_records"
        " WHERE user_id = '@u0:example.org'), ciphertext = (SELECT ciphertext FROM"
        " compliance_identity_records WHERE user_id = '@u0:example.org') WHERE user_id = '@u2:example.org'"
    )
    conn.commit()
    conn.close()
    before = setup.rows()
    config = setup.homeserver_yaml(str(setup.tmp_path / "key2"), [str(setup.tmp_path / "key1")])
    assert main(["rotate-key", "-c", config, "--batch-size", "2"]) == 1
    captured = capsys.readouterr()
    assert "rotated 2/4 records" in captured.out
    assert "@u2:example.org" in captured.err and "nothing in this batch was changed" in captured.err
    after = setup.rows()
    assert [r[1] for r in after] == [setup.key2.key_id] * 2 + [setup.key1.key_id] * 2
    assert after[2:] == before[2:]  # the failed batch is untouched
    assert "Name u" not in captured.err + captured.out


def test_without_current_key(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rotate-key", "-c", setup.homeserver_yaml(None, [])]) == 1
    assert "pii_key_file is not set" in capsys.readouterr().err


def test_bad_module_config_names_the_key(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    config = setup.homeserver_yaml(str(setup.tmp_path / "key2"), [str(setup.tmp_path / "missing")])
    assert main(["rotate-key", "-c", config]) == 1
    err = capsys.readouterr().err
    assert "modules.<item 0>.config.identity.previous_pii_key_files.<item 0>" in err


def test_wrong_database_path_creates_nothing(setup: Setup, capsys: pytest.CaptureFixture[str]) -> None:
    missing = setup.tmp_path / "nope" / "homeserver.db"
    config = setup.homeserver_yaml(str(setup.tmp_path / "key2"), [], database=str(missing))
    assert main(["rotate-key", "-c", config]) == 1
    assert "cannot open" in capsys.readouterr().err
    assert not missing.exists()


def test_database_without_the_module_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_pii_key(str(tmp_path / "key"))
    sqlite3.connect(tmp_path / "empty.db").close()
    path = tmp_path / "homeserver.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "database": {"name": "sqlite3", "args": {"database": str(tmp_path / "empty.db")}},
                "modules": [
                    {
                        "module": "synapse_compliance.ComplianceModule",
                        "config": {"identity": {"pii_key_file": str(tmp_path / "key")}},
                    }
                ],
            }
        )
    )
    assert main(["rotate-key", "-c", str(path)]) == 1
    assert "has synapse_compliance started on this database" in capsys.readouterr().err


@pytest.mark.parametrize("size", ["0", "-1", "many"])
def test_bad_batch_size_is_a_usage_error(setup: Setup, size: str) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["rotate-key", "-c", setup.homeserver_yaml(None, []), "--batch-size", size])
    assert caught.value.code == 2
