"""Signed checkpoints of the archive's chain heads: made, signed, sunk to a file, and checked by
verify, which catches even a forger who recomputes a whole chain and its head."""

import hashlib
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from canonicaljson import encode_canonical_json
from signedjson.key import get_verify_key, read_signing_keys
from signedjson.sign import SignatureVerifyException, verify_signed_json
from signedjson.types import VerifyKey

from synapse_compliance.cli import main as cli_main
from synapse_compliance.core.archive_chain import GENESIS, chain_hash
from synapse_compliance.storage.archive_rows import read_rows_page
from tests.e2e.conftest import database
from tests.e2e.test_archive import ArchiveServer, cli_verify, send
from tests.harness.homeserver import DatabaseChoice, running_homeserver, start_expecting_failure

pytestmark = pytest.mark.e2e

SIGNATURE_NAME = "synapse_compliance"  # what the module signs as (core/checkpoints.py)


class CheckpointServer(ArchiveServer):
    """An archive server with checkpoints on: its key's public half and its sink file."""

    def __init__(self, archive: ArchiveServer, verify_key: VerifyKey, sink: Path) -> None:
        super().__init__(archive.hs, archive.db)
        self.verify_key = verify_key
        self.sink = sink

    def checkpoint(self, reason: str = "test checkpoint") -> dict[str, Any]:
        """POST admin/archive/checkpoint."""
        r = self.admin.compliance("POST", "admin/archive/checkpoint", json={"reason": reason})
        assert r.status_code == 200, r.text
        result: dict[str, Any] = r.json()
        return result

    def stored(self) -> list[tuple[int, str, int | None]]:
        """(seq, document, sink_written_ts) of every checkpoint, in seq order."""
        return [
            (int(r[0]), str(r[1]), r[2])
            for r in self.sql(
                "SELECT seq, document, sink_written_ts FROM compliance_archive_checkpoints ORDER BY seq"
            )
        ]

    def document(self, seq: int) -> dict[str, Any]:
        (text,) = self.sql("SELECT document FROM compliance_archive_checkpoints WHERE seq = ?", (seq,))[0]
        doc: dict[str, Any] = json.loads(text)
        return doc

    def head(self, room_id: str) -> list[Any]:
        """A room's head as a checkpoint lists it: [room_id, last_id, rows, chain_hash]."""
        (row,) = self.sql(
            "SELECT room_id, last_id, rows_count, chain_hash FROM compliance_archive_heads WHERE room_id = ?",
            (room_id,),
        )
        return [row[0], int(row[1]), int(row[2]), row[3]]

    def group_with_messages(self, count: int = 3) -> tuple[str, list[str]]:
        """A new group with `count` messages, archived."""
        owner = self.member()
        room_id = owner.create_group("checkpointed")
        ids = [send(owner, room_id, f"message {n}") for n in range(count)]
        self.run()
        return room_id, ids


@pytest.fixture(scope="module")
def cps(db_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CheckpointServer]:
    """One server per database with checkpoints signed by a key made with `keygen`, and a sink."""
    workdir = tmp_path_factory.mktemp(f"checkpoints-{db_kind}")
    key_file = workdir / "checkpoints.key"
    assert cli_main(["keygen", "--signing-key", str(key_file)]) == 0
    with key_file.open() as f:
        verify_key = get_verify_key(read_signing_keys(f)[0])
    sink = workdir / "checkpoints.jsonl"
    config = {
        "archive": {
            "signing_key_file": str(key_file),
            "checkpoint_sink": str(sink),
            "checkpoint_interval": "7d",
        }
    }
    with database(db_kind) as db, running_homeserver(workdir / "hs", db, config) as hs:
        yield CheckpointServer(ArchiveServer(hs, db), verify_key, sink)


def _hash(doc: dict[str, Any]) -> str:
    return hashlib.sha256(encode_canonical_json(doc)).hexdigest()


def test_the_loop_makes_the_first_checkpoint_by_itself(cps: CheckpointServer) -> None:
    # First in this module: nobody has asked for a checkpoint yet.
    room_id, _ = cps.group_with_messages(1)
    deadline = time.monotonic() + 60  # the loop ticks every 10 s; the first checkpoint is due at once
    while not cps.stored() or not cps.sink.exists():
        assert time.monotonic() < deadline, "the checkpoint loop made no checkpoint"
        time.sleep(0.2)
    seq, text, _ = cps.stored()[0]
    assert seq == 1 and cps.head(room_id) in json.loads(text)["heads"]
    verify_signed_json(json.loads(text), SIGNATURE_NAME, cps.verify_key)
    assert cps.admin.audit(action="archive.checkpoint").json()["chunk"] == []  # made by the loop
    deadline = time.monotonic() + 60
    while cps.sink.read_text().splitlines()[:1] != [text]:
        assert time.monotonic() < deadline, "the loop's checkpoint did not reach the sink"
        time.sleep(0.2)


def test_a_checkpoint_pins_every_head_and_is_signed(cps: CheckpointServer) -> None:
    room_id, _ = cps.group_with_messages()
    made = cps.checkpoint("quarterly audit")
    seq = made["seq"]
    doc = cps.document(seq)
    # Signed with the configured key: the signature holds with its public half.
    verify_signed_json(doc, SIGNATURE_NAME, cps.verify_key)
    assert made["key_id"] == doc["key_id"] == f"ed25519:{cps.verify_key.version}"
    assert made["checkpoint_hash"] == _hash(doc)
    assert (doc["type"], doc["seq"], doc["server_name"]) == (
        "io.synapse_compliance.archive_checkpoint",
        seq,
        "localhost",
    )
    # Every room's head, the new group's included, exactly as recorded.
    heads = cps.sql("SELECT room_id, last_id, rows_count, chain_hash FROM compliance_archive_heads")
    assert sorted(doc["heads"]) == sorted([r[0], int(r[1]), int(r[2]), r[3]] for r in heads)
    assert cps.head(room_id) in doc["heads"]
    assert made["rooms"] == len(heads)
    # Checkpoints form their own chain.
    expected_prev = GENESIS if seq == 1 else _hash(cps.document(seq - 1))
    assert doc["prev_hash"] == expected_prev
    # Audited with the reason.
    entries = cps.admin.audit(action="archive.checkpoint").json()["chunk"]
    assert entries[0]["reason"] == "quarterly audit" and entries[0]["details"]["seq"] == seq

    # Nothing changed: no new checkpoint, the latest is reported.
    again = cps.checkpoint()
    assert again["created"] is False and again["seq"] == seq
    # A forged signature is not accepted by signedjson either (the test's check can fail).
    doc["heads"][0][2] += 1
    with pytest.raises(SignatureVerifyException):
        verify_signed_json(doc, SIGNATURE_NAME, cps.verify_key)


def test_the_sink_holds_every_checkpoint_as_a_line(cps: CheckpointServer) -> None:
    cps.group_with_messages(1)
    cps.checkpoint()
    stored = cps.stored()
    lines = cps.sink.read_text().splitlines()
    assert lines == [text for _, text, _ in stored]
    assert all(ts is not None for _, _, ts in stored)
    block = cps.admin.status().json()["archive"]["checkpoints"]
    assert block["enabled"] is True and block["latest_seq"] == stored[-1][0]
    assert block["sink"] == {"path": str(cps.sink), "pending": 0, "last_error": None, "last_error_ts": None}


def test_a_failing_sink_is_reported_and_caught_up(cps: CheckpointServer) -> None:
    kept = cps.sink.with_suffix(".kept")
    shutil.move(cps.sink, kept)
    cps.sink.mkdir()  # appending to a directory fails
    try:
        cps.group_with_messages(1)
        made = cps.checkpoint()
        assert made["created"] is True
        assert made["sink"]["pending"] >= 1 and "IsADirectoryError" in made["sink"]["last_error"]
        block = cps.admin.status().json()["archive"]["checkpoints"]
        assert block["sink"]["pending"] >= 1 and block["sink"]["last_error_ts"] > 0
        assert cps.stored()[-1][2] is None  # in the table, not yet in the file
    finally:
        cps.sink.rmdir()
        shutil.move(kept, cps.sink)
    again = cps.checkpoint()  # nothing new, but the backlog is written first
    assert again["sink"] == {"path": str(cps.sink), "pending": 0, "last_error": None, "last_error_ts": None}
    assert cps.sink.read_text().splitlines() == [text for _, text, _ in cps.stored()]


def test_verify_checks_the_latest_checkpoints(cps: CheckpointServer) -> None:
    room_id, _ = cps.group_with_messages()
    seq = cps.checkpoint()["seq"]
    result = cps.verify()
    assert result["ok"] is True and result["first_break"] is None, result
    block = result["checkpoints"]
    assert block["ok"] is True and block["first_mismatch"] is None
    assert block["checked"] == 1 and block["latest_seq"] == seq
    assert block["rooms_checked"] == len(cps.document(seq)["heads"])
    one = cps.verify(room_id)["checkpoints"]
    assert one["ok"] is True and one["rooms_checked"] == 1
    r = cps.admin.compliance("POST", "admin/archive/verify", json={"checkpoints": seq})
    assert r.status_code == 200 and r.json()["checkpoints"]["checked"] == seq, r.text
    done = cli_verify(cps, "--checkpoints", str(seq))
    assert done.returncode == 0, done.stderr
    assert f"checkpoints: the latest {seq} (up to {seq}) hold" in done.stdout


def _rechain(cps: CheckpointServer, room_id: str, target: str, new_json: str) -> None:
    """Forge a row as a careful forger would: change it, rehash the rest of its chain and the head."""

    def query(sql: str, args: tuple[object, ...]) -> list[tuple[Any, ...]]:
        return cps.sql(sql, args)

    rows = read_rows_page(query, room_id, 0, 1 << 62, 10_000)
    prev = GENESIS
    for row in rows:
        fields = row.fields
        if fields.event_id == target:
            fields = attrs.evolve(fields, event_json=new_json)
        new_hash = chain_hash(prev, fields)
        cps.sql(
            "UPDATE compliance_archive SET event_json = ?, prev_hash = ?, chain_hash = ? WHERE id = ?",
            (fields.event_json, prev, new_hash, row.id),
        )
        prev = new_hash
    cps.sql("UPDATE compliance_archive_heads SET chain_hash = ? WHERE room_id = ?", (prev, room_id))


def test_a_forger_who_recomputes_the_chain_is_caught_by_the_checkpoint(cps: CheckpointServer) -> None:
    room_id, ids = cps.group_with_messages()
    seq = cps.checkpoint()["seq"]
    originals = cps.sql(
        "SELECT id, event_json, prev_hash, chain_hash FROM compliance_archive WHERE room_id = ? ORDER BY id",
        (room_id,),
    )
    head = cps.head(room_id)
    (original,) = cps.sql("SELECT event_json FROM compliance_archive WHERE event_id = ?", (ids[1],))[0]
    _rechain(cps, room_id, ids[1], original.replace("message 1", "words never said"))
    try:
        result = cps.verify(room_id)
        assert result["first_break"] is None  # the chain itself holds: the forger was careful
        assert result["ok"] is False
        mismatch = result["checkpoints"]["first_mismatch"]
        assert (mismatch["seq"], mismatch["room_id"], mismatch["reason"]) == (
            seq,
            room_id,
            "checkpoint_mismatch",
        )
        assert str(head[1]) in mismatch["detail"]
        assert cps.verify()["checkpoints"]["first_mismatch"]["room_id"] == room_id  # also over all rooms
        done = cli_verify(cps)
        assert done.returncode == 1
        assert f"checkpoint {seq} does not hold: room {room_id}: checkpoint_mismatch" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
    finally:
        for row_id, event_json, prev_hash, chain in originals:
            cps.sql(
                "UPDATE compliance_archive SET event_json = ?, prev_hash = ?, chain_hash = ? WHERE id = ?",
                (event_json, prev_hash, chain, row_id),
            )
        cps.sql("UPDATE compliance_archive_heads SET chain_hash = ? WHERE room_id = ?", (head[3], room_id))
    assert cps.verify()["ok"] is True


def test_a_forged_checkpoint_fails_its_signature(cps: CheckpointServer) -> None:
    room_id, _ = cps.group_with_messages(1)
    seq = cps.checkpoint()["seq"]
    (text,) = cps.sql("SELECT document FROM compliance_archive_checkpoints WHERE seq = ?", (seq,))[0]
    head = cps.head(room_id)
    forged = text.replace(json.dumps(head[3]), json.dumps("f" * 64))
    assert forged != text
    cps.sql("UPDATE compliance_archive_checkpoints SET document = ? WHERE seq = ?", (forged, seq))
    try:
        mismatch = cps.verify()["checkpoints"]["first_mismatch"]
        assert (mismatch["seq"], mismatch["room_id"], mismatch["reason"]) == (seq, None, "bad_signature")
        done = cli_verify(cps)
        assert done.returncode == 1 and f"checkpoint {seq} does not hold: bad_signature" in done.stderr
    finally:
        cps.sql("UPDATE compliance_archive_checkpoints SET document = ? WHERE seq = ?", (text, seq))
    assert cps.verify()["ok"] is True


def test_a_deleted_checkpoint_breaks_the_checkpoint_chain(cps: CheckpointServer) -> None:
    cps.group_with_messages(1)
    first = cps.checkpoint()["seq"]
    cps.group_with_messages(1)
    second = cps.checkpoint()["seq"]
    assert second == first + 1
    (row,) = cps.sql("SELECT * FROM compliance_archive_checkpoints WHERE seq = ?", (first,))
    cps.sql("DELETE FROM compliance_archive_checkpoints WHERE seq = ?", (first,))
    try:
        mismatch = cps.verify()["checkpoints"]["first_mismatch"]
        assert (mismatch["seq"], mismatch["reason"]) == (second, "checkpoint_chain_broken")
    finally:
        marks = ", ".join("?" for _ in row)
        cps.sql(f"INSERT INTO compliance_archive_checkpoints VALUES ({marks})", tuple(row))
    assert cps.verify()["ok"] is True


def test_checkpoint_endpoint_errors(cps: CheckpointServer) -> None:
    before = len(cps.stored())
    user = cps.member()
    r = user.compliance("POST", "admin/archive/checkpoint", json={"reason": "x"})
    assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN"
    for body, errcode in (
        ({}, "M_MISSING_PARAM"),
        ({"reason": " "}, "M_INVALID_PARAM"),
        ({"reason": "x", "seq": 1}, "M_INVALID_PARAM"),
    ):
        r = cps.admin.compliance("POST", "admin/archive/checkpoint", json=body)
        assert r.status_code == 400 and r.json()["errcode"] == errcode, (body, r.text)
    for count in (0, 1001, "2", True):
        r = cps.admin.compliance("POST", "admin/archive/verify", json={"checkpoints": count})
        assert r.status_code == 400 and "checkpoints" in r.json()["error"], (count, r.text)
    assert len(cps.stored()) == before


def test_checkpoints_are_off_without_a_key(tmp_path: Path) -> None:
    with running_homeserver(tmp_path / "hs", DatabaseChoice("sqlite"), {}) as hs:
        admin = hs.register(admin=True)
        assert admin.status().json()["archive"]["checkpoints"] == {"enabled": False}
        r = admin.compliance("POST", "admin/archive/checkpoint", json={"reason": "x"})
        assert r.status_code == 400 and "signing_key_file" in r.json()["error"]
        r = admin.compliance("POST", "admin/archive/verify", json={"checkpoints": 2})
        assert r.status_code == 400 and "signing_key_file" in r.json()["error"]
        assert "checkpoints" not in admin.compliance("POST", "admin/archive/verify", json={}).json()


PREFIX = "modules.<item 0>.config.archive"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read signing key file"),
        ("garbage\n", "is not an Ed25519 signing key file"),
        ("ed25519 a1 not-base64!\n", "is not an Ed25519 signing key file"),
        ("", "holds no key"),
    ],
    ids=["missing", "garbage", "bad base64", "empty"],
)
def test_a_bad_signing_key_file_stops_startup(tmp_path: Path, content: str | None, message: str) -> None:
    key_file = tmp_path / "checkpoints.key"
    if content is not None:
        key_file.write_text(content)
    config = {"archive": {"signing_key_file": str(key_file)}}
    failure = start_expecting_failure(tmp_path / "hs", DatabaseChoice("sqlite"), config)
    assert failure.returncode == 1, failure.output
    assert f"Error in configuration at '{PREFIX}.signing_key_file'" in failure.output, failure.output
    assert message in failure.output and str(key_file) in failure.output
    assert "keygen --signing-key" in failure.output


def test_a_sink_without_a_key_stops_startup(tmp_path: Path) -> None:
    config = {"archive": {"checkpoint_sink": str(tmp_path / "sink.jsonl")}}
    failure = start_expecting_failure(tmp_path / "hs", DatabaseChoice("sqlite"), config)
    assert f"Error in configuration at '{PREFIX}.checkpoint_sink'" in failure.output, failure.output
    assert "needs archive.signing_key_file" in failure.output
