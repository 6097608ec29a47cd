"""The module's schema: applied once, by the instance that runs background tasks; others wait."""

import time
from pathlib import Path
from typing import Any

import pytest

from synapse_compliance.storage.schema import load_deltas
from tests.e2e.conftest import database
from tests.harness.homeserver import DatabaseChoice, running_homeserver

pytestmark = pytest.mark.e2e


def _version_rows(db: DatabaseChoice, workdir: Path) -> list[tuple[Any, ...]]:
    if db.postgres is not None:
        conn = db.postgres.connect()
    else:
        import sqlite3  # noqa: PLC0415 (only this branch needs it)

        conn = sqlite3.connect(workdir / "homeserver.db")
    try:
        cur = conn.cursor()
        cur.execute("SELECT version, name FROM compliance_schema_version ORDER BY version")
        return [tuple(r) for r in cur.fetchall()]
    finally:
        conn.close()


def test_schema_is_applied_once_and_survives_restart(db_kind: str, tmp_path: Path) -> None:
    with database(db_kind) as db:
        with running_homeserver(tmp_path, db, {}) as hs:
            admin = hs.register(admin=True)
            alice = hs.register()
            assert admin.verify(alice.user_id).status_code == 200
            assert "compliance schema: applied delta 01_audit_and_identity" in hs.log_text()
        first_log = (tmp_path / "homeserver.log").read_text()
        rows = _version_rows(db, tmp_path)
        assert rows == [(d.version, d.name) for d in load_deltas()]  # every shipped delta, once

        with running_homeserver(tmp_path, db, {}) as hs:
            # Same database: nothing is applied again, and the data is still there.
            fresh_admin = hs.register(admin=True)
            r = fresh_admin.admin_user(alice.user_id)
            assert r.status_code == 200 and r.json()["verification"]["status"] == "verified"
            new_log = hs.log_text()[len(first_log) :]
            assert "applied delta" not in new_log
            assert f"compliance schema at version {load_deltas()[-1].version}" in new_log
        assert _version_rows(db, tmp_path) == rows


def test_instance_without_background_tasks_waits_and_fails_closed(db_kind: str, tmp_path: Path) -> None:
    elsewhere = {"run_background_tasks_on": "background_worker"}
    # Nobody has made the schema yet: this instance must not make it, and must refuse gated
    # actions with a clear 503 rather than let them through.
    with database(db_kind) as db, running_homeserver(tmp_path / "a", db, {}, extra=elsewhere) as hs:
        admin = hs.register(admin=True)
        assert admin.status().json()["schema"]["ready"] is False
        alice = hs.register()
        r = alice.create_room(name="too early")
        assert r.status_code == 503, r.text
        assert "background tasks" in r.json()["error"]
        assert "applied delta" not in hs.log_text()


def test_waiting_instance_becomes_ready_once_upgraded(tmp_path: Path) -> None:
    """Two instances on one database: needs PostgreSQL (a SQLite file belongs to one process)."""
    elsewhere = {"run_background_tasks_on": "background_worker"}
    with database("postgresql") as db:
        with running_homeserver(tmp_path / "upgrader", db, {}) as upgrader:
            # /health answers before the background upgrade is done: wait for it before stopping.
            upgrader_admin = upgrader.register(admin=True)
            deadline = time.monotonic() + 30
            while not upgrader_admin.status().json()["schema"]["ready"]:
                assert time.monotonic() < deadline, "the upgrader never finished the schema"
                time.sleep(0.1)
        with running_homeserver(tmp_path / "waiter", db, {}, extra=elsewhere) as hs:
            admin = hs.register(admin=True)
            alice = hs.register()
            assert admin.status().json()["schema"]["ready"] is True
            assert admin.verify(alice.user_id).status_code == 200
            assert alice.create_room(name="now").status_code == 200
            assert "applied delta" not in hs.log_text()
