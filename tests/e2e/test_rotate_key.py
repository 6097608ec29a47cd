"""`synapse-compliance rotate-key` against a real Synapse database, on SQLite and PostgreSQL.

The operator workflow of docs/api.md: records sealed with key1; key2 becomes current with key1
as previous (Synapse keeps running and still opens key1 records); rotate-key re-seals everything
under key2; Synapse restarts with key2 alone and still reveals everything.
"""

import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from synapse_compliance.keys import write_pii_key
from tests.e2e.conftest import database
from tests.harness.cli import run_cli
from tests.harness.client import MatrixClient, q
from tests.harness.homeserver import Homeserver, running_homeserver

pytestmark = pytest.mark.e2e


def rotate_key(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI as an operator would."""
    return run_cli("rotate-key", config, *extra)


def with_identity(hs_yaml: Path, target: Path, identity: dict[str, Any]) -> Path:
    """A copy of a server's homeserver.yaml with another `identity` module config."""
    document = yaml.safe_load(hs_yaml.read_text())
    document["modules"][0]["config"] = {"identity": identity}
    target.write_text(yaml.safe_dump(document))
    return target


def attest(admin: MatrixClient, user_id: str, number: str) -> httpx.Response:
    return admin.set_verification(
        user_id,
        {
            "status": "verified",
            "level": 1,
            "reason": "desk check",
            "personal_data": {
                "real_name": f"Person {number}",
                "document_type": "id_card",
                "document_number": number,
            },
        },
    )


def reveal(admin: MatrixClient, user_id: str) -> dict[str, Any]:
    r = admin.compliance(
        "POST", f"admin/users/{q(user_id)}/identity/reveal", json={"reason": "rotation check"}
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def reveal_all(hs: Homeserver, users: dict[str, str]) -> set[str]:
    """Reveal every user's record; return the key ids that sealed them."""
    admin = hs.register(admin=True)
    key_ids = set()
    for user_id, number in users.items():
        body = reveal(admin, user_id)
        assert body["personal_data"]["document_number"] == number
        key_ids.add(body["key_id"])
    return key_ids


def test_rotate_key_workflow(db_kind: str, tmp_path: Path) -> None:
    key1 = write_pii_key(str(tmp_path / "key1.pem"))
    key2 = write_pii_key(str(tmp_path / "key2.pem"))
    workdir = tmp_path / "hs"
    hs_yaml = workdir / "homeserver.yaml"
    users: dict[str, str] = {}
    with database(db_kind) as db:
        # 1. Records sealed with key1.
        with running_homeserver(
            workdir, db, {"identity": {"pii_key_file": str(tmp_path / "key1.pem")}}
        ) as hs:
            admin = hs.register(admin=True)
            for i in range(3):
                user = hs.register()
                users[user.user_id] = f"ROT-{db_kind}-{i}"
                assert attest(admin, user.user_id, users[user.user_id]).status_code == 200
        first = next(iter(users))

        # 2. key1 forgotten in the config: a clear error naming it, and nothing changes.
        wrong = with_identity(hs_yaml, tmp_path / "wrong.yaml", {"pii_key_file": str(tmp_path / "key2.pem")})
        result = rotate_key(wrong)
        assert result.returncode == 1, result
        assert key1.key_id in result.stderr and "Nothing was rotated" in result.stderr
        assert result.stderr.count("\n") == 1  # one line, no traceback

        # 3. key2 current, key1 previous; Synapse keeps running while rotate-key works.
        both = {
            "pii_key_file": str(tmp_path / "key2.pem"),
            "previous_pii_key_files": [str(tmp_path / "key1.pem")],
        }
        with running_homeserver(workdir, db, {"identity": both}) as hs:
            assert reveal_all(hs, users) == {key1.key_id}  # still readable with the previous key
            admin = hs.register(admin=True)
            # The account limit holds across keys: key1 records are matched with key1 fingerprints.
            twin = hs.register()
            r = attest(admin, twin.user_id, users[first].lower())
            assert (
                r.status_code == 400 and r.json()["io.synapse_compliance.reason"] == "identity_already_used"
            )
            newcomer = hs.register()
            users[newcomer.user_id] = f"ROT-{db_kind}-new"
            assert attest(admin, newcomer.user_id, users[newcomer.user_id]).status_code == 200

            result = rotate_key(hs_yaml, "--batch-size", "2")
            assert result.returncode == 0, result
            assert "rotated 2/3 records\nrotated 3/3 records\n" in result.stdout
            assert f"done: 3 records re-sealed with PII key {key2.key_id}" in result.stdout
            assert reveal_all(hs, users) == {key2.key_id}  # while still running
            entries = admin.audit(action="identity.rotate_key").json()["chunk"]
            assert sorted(e["details"]["records"] for e in entries) == [1, 2]
            assert {e["actor"] for e in entries} == {"synapse-compliance rotate-key"}

        # 4. Old key removed: everything still opens, and the fingerprints moved to key2.
        with running_homeserver(
            workdir, db, {"identity": {"pii_key_file": str(tmp_path / "key2.pem")}}
        ) as hs:
            assert reveal_all(hs, users) == {key2.key_id}
            admin = hs.register(admin=True)
            r = attest(admin, hs.register().user_id, users[first])
            assert (
                r.status_code == 400 and r.json()["io.synapse_compliance.reason"] == "identity_already_used"
            )
            result = rotate_key(hs_yaml)
            assert result.returncode == 0, result
            assert "nothing to rotate" in result.stdout
            assert key2.key_id in result.stdout
