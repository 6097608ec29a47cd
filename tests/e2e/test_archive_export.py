"""Archive export: `GET admin/archive/events` and `synapse-compliance export`, JSON lines and CSV,
filtered, streamed page by page, ending with a manifest whose SHA-256 covers the bytes before it."""

import csv
import getpass
import hashlib
import io
import json
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest

from synapse_compliance.core.archive_chain import GENESIS, ChainedFields, append
from synapse_compliance.storage.archive_export import COLUMNS, PAGE_ROWS
from tests.e2e.conftest import database
from tests.e2e.test_archive import ArchiveServer, send
from tests.harness.cli import run_cli
from tests.harness.client import MatrixClient, q
from tests.harness.homeserver import running_homeserver

pytestmark = pytest.mark.e2e

EXPORT = "admin/archive/events"
Splitter = Callable[[bytes], tuple[list[Any], dict[str, Any], bytes]]


@attrs.frozen
class Scenario:
    """A group with messages of two senders and a redaction, archived; a second group too."""

    room_id: str
    other_room_id: str
    owner: MatrixClient
    member: MatrixClient
    messages: list[str]  # in sending order, owner and member alternating
    redacted: str
    redaction: str


@pytest.fixture(scope="module")
def archive(db_kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArchiveServer]:
    """One server per database for this module."""
    workdir = tmp_path_factory.mktemp(f"export-{db_kind}")
    with database(db_kind) as db, running_homeserver(workdir, db, {}) as hs:
        yield ArchiveServer(hs, db)


@pytest.fixture(scope="module")
def scenario(archive: ArchiveServer) -> Scenario:
    owner, member = archive.member(), archive.member()
    room_id = owner.create_group("exported group")
    assert owner.invite(room_id, member.user_id).status_code == 200
    assert member.join(room_id).status_code == 200
    messages = []
    for n in range(6):
        messages.append(send(owner if n % 2 == 0 else member, room_id, f"message {n}"))
        time.sleep(0.005)  # distinct origin_server_ts, so time filters have something to cut
    r = owner.redact(room_id, messages[0])
    assert r.status_code == 200, r.text
    other = owner.create_group("another group")
    send(owner, other, "elsewhere")
    archive.run()
    return Scenario(room_id, other, owner, member, messages, messages[0], r.json()["event_id"])


def export(client: MatrixClient, **params: Any) -> httpx.Response:
    """GET admin/archive/events with these query arguments."""
    return client.compliance("GET", EXPORT, params=params)


def split_jsonl(body: bytes) -> tuple[list[dict[str, Any]], dict[str, Any], bytes]:
    """(rows, manifest, the bytes before the manifest line) of a jsonl export."""
    assert body.endswith(b"\n")
    last = body.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    before = body[: len(body) - len(last) - 1]
    rows = [json.loads(line) for line in before.splitlines()]
    manifest = json.loads(last)
    assert set(manifest) == {"manifest"}
    return rows, manifest["manifest"], before


def split_csv(body: bytes) -> tuple[list[dict[str, str]], dict[str, Any], bytes]:
    """(rows, manifest, the bytes before the manifest record) of a csv export."""
    at = body.rfind(b"\r\n#manifest,") + 2
    before = body[:at]
    records = list(csv.DictReader(io.StringIO(body.decode("utf-8"), newline="")))
    assert records[-1]["id"] == "#manifest"
    assert all(records[-1][c] == "" for c in COLUMNS[1:])
    return records[:-1], json.loads(records[-1]["event"])["manifest"], before


def archived_rows(archive: ArchiveServer, where: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    """(id, event_id, sender, origin_server_ts, event_json, redacted_by) of matching rows, by id."""
    return archive.sql(
        "SELECT id, event_id, sender, origin_server_ts, event_json, redacted_by FROM compliance_archive"
        f" WHERE {where} ORDER BY id",
        args,
    )


def audit_entries(archive: ArchiveServer, action: str) -> list[dict[str, Any]]:
    r = archive.admin.audit(action=action, limit=1000)
    assert r.status_code == 200, r.text
    chunk: list[dict[str, Any]] = r.json()["chunk"]
    return chunk


def test_a_room_exports_as_json_lines_with_its_manifest(archive: ArchiveServer, scenario: Scenario) -> None:
    r = export(archive.admin, room_id=scenario.room_id)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/x-ndjson")
    rows, manifest, before = split_jsonl(r.content)

    expected = archived_rows(archive, "room_id = ?", (scenario.room_id,))
    assert [row["id"] for row in rows] == [e[0] for e in expected]
    assert [row["event_id"] for row in rows] == [e[1] for e in expected]
    assert set(scenario.messages) | {scenario.redaction} <= {row["event_id"] for row in rows}
    for row, stored in zip(rows, expected, strict=True):
        assert list(row) == [*COLUMNS, "event"]
        assert row["event"] == json.loads(stored[4])  # the stored JSON, parsed, not a string
        assert row["room_id"] == scenario.room_id and row["sender"] == stored[2]
    # The stored JSON is in the body byte for byte (hashes and signatures included).
    assert all(stored[4].encode() in before for stored in expected)

    by_id = {row["event_id"]: row for row in rows}
    redacted = by_id[scenario.redacted]
    assert redacted["event"]["content"]["body"] == "message 0"  # the original words are kept
    assert redacted["redacted_by"] == scenario.redaction
    assert by_id[scenario.redaction]["type"] == "m.room.redaction"
    assert by_id[scenario.redaction]["redacts"] == scenario.redacted

    assert manifest["sha256"] == hashlib.sha256(before).hexdigest()
    assert manifest["rows"] == len(rows)
    assert (manifest["first_id"], manifest["last_id"]) == (rows[0]["id"], rows[-1]["id"])
    assert manifest["upto_id"] >= rows[-1]["id"]
    assert manifest["format"] == "jsonl" and manifest["exported_by"] == archive.admin.user_id
    assert manifest["filters"] == {"room_id": scenario.room_id, "user_id": None, "from": None, "to": None}
    (head,) = archive.sql(
        "SELECT last_id, chain_hash, rows_count FROM compliance_archive_heads WHERE room_id = ?",
        (scenario.room_id,),
    )
    assert manifest["rooms"] == [
        {
            "room_id": scenario.room_id,
            "last_id": head[0],
            "chain_hash": head[1],
            "rows_count": head[2],
            "exported_rows": len(rows),
        }
    ]
    assert head[0] == rows[-1]["id"] and head[1] == rows[-1]["chain_hash"]  # the whole chain


def test_filters_by_sender_and_time(archive: ArchiveServer, scenario: Scenario) -> None:
    member = scenario.member.user_id
    rows, manifest, _ = split_jsonl(export(archive.admin, user_id=member).content)
    expected = archived_rows(archive, "sender = ?", (member,))
    assert [row["event_id"] for row in rows] == [e[1] for e in expected]
    assert set(scenario.messages[1::2]) <= {row["event_id"] for row in rows}
    assert scenario.messages[0] not in {row["event_id"] for row in rows}
    assert manifest["filters"]["user_id"] == member and manifest["rows"] == len(rows)

    all_rows = archived_rows(archive, "room_id = ?", (scenario.room_id,))
    ts = {e[1]: e[3] for e in all_rows}
    start, end = ts[scenario.messages[1]], ts[scenario.messages[4]]  # [from, to): to is excluded
    rows, manifest, _ = split_jsonl(
        export(archive.admin, room_id=scenario.room_id, **{"from": start, "to": end}).content
    )
    wanted = [e[1] for e in all_rows if start <= e[3] < end]
    assert [row["event_id"] for row in rows] == wanted
    assert 0 < len(wanted) < len(all_rows)
    assert scenario.messages[1] in wanted and scenario.messages[4] not in wanted
    assert manifest["filters"] == {"room_id": scenario.room_id, "user_id": None, "from": start, "to": end}

    both, _, _ = split_jsonl(export(archive.admin, room_id=scenario.other_room_id, user_id=member).content)
    assert both == []  # the member never wrote in the other room


def test_an_export_of_nothing_still_has_a_manifest(archive: ArchiveServer, scenario: Scenario) -> None:
    r = export(archive.admin, user_id="@nobody:elsewhere.example")
    assert r.status_code == 200
    rows, manifest, before = split_jsonl(r.content)
    assert rows == [] and before == b""
    assert manifest["rows"] == 0 and manifest["rooms"] == [] and manifest["first_id"] is None
    assert manifest["sha256"] == hashlib.sha256(b"").hexdigest()


def test_csv_parses_and_carries_the_stored_json(archive: ArchiveServer, scenario: Scenario) -> None:
    r = export(archive.admin, room_id=scenario.room_id, format="csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows, manifest, before = split_csv(r.content)
    assert before.startswith(b"id,room_id,event_id,")
    expected = archived_rows(archive, "room_id = ?", (scenario.room_id,))
    assert [int(row["id"]) for row in rows] == [e[0] for e in expected]
    assert [row["event"] for row in rows] == [e[4] for e in expected]  # exactly as stored
    assert [row["redacted_by"] for row in rows] == [e[5] or "" for e in expected]
    assert manifest["sha256"] == hashlib.sha256(before).hexdigest()
    assert manifest["rows"] == len(rows) and manifest["format"] == "csv"
    # The same rows as the jsonl export, column for column.
    jsonl, _, _ = split_jsonl(export(archive.admin, room_id=scenario.room_id).content)
    for row, line in zip(rows, jsonl, strict=True):
        for column in COLUMNS:
            assert row[column] == ("" if line[column] is None else str(line[column]))


def test_bad_input_is_refused_before_any_byte_and_audits_nothing(
    archive: ArchiveServer, scenario: Scenario
) -> None:
    before = len(audit_entries(archive, "archive.export.start"))
    for params, field in (
        ({"format": "xml"}, "format"),
        ({"from": 10, "to": 5}, "from"),
        ({"from": "yesterday"}, "from"),
        ({"to": "-5"}, "to"),
        ({"user_id": "alice"}, "user_id"),
        ({"user_id": "@alice"}, "user_id"),
        ({"room_id": "#alias:localhost"}, "room_id"),
        ({"room": scenario.room_id}, "room"),
    ):
        r = export(archive.admin, **params)
        assert r.status_code == 400, (params, r.text)
        assert r.headers["content-type"] == "application/json"
        assert r.json()["errcode"] == "M_INVALID_PARAM" and r.json()["error"].startswith(field), r.json()
    assert len(audit_entries(archive, "archive.export.start")) == before


def test_only_admins_export(archive: ArchiveServer, scenario: Scenario) -> None:
    r = export(scenario.member, room_id=scenario.room_id)
    assert r.status_code == 403 and r.json()["errcode"] == "M_FORBIDDEN"
    r = httpx.get(archive.hs.url(f"/_synapse/client/compliance/v1/{EXPORT}"), timeout=30)
    assert r.status_code == 401 and r.json()["errcode"] == "M_MISSING_TOKEN"
    r = archive.admin.compliance("POST", EXPORT, json={})
    assert r.status_code == 405


def test_every_export_is_audited(archive: ArchiveServer, scenario: Scenario) -> None:
    r = export(
        archive.admin, room_id=scenario.room_id, format="csv", reason="request 2026/17 of the authority"
    )
    assert r.status_code == 200
    _, manifest, _ = split_csv(r.content)
    start = audit_entries(archive, "archive.export.start")[0]
    finish = audit_entries(archive, "archive.export.finish")[0]
    for entry in (start, finish):
        assert entry["actor"] == archive.admin.user_id
        assert entry["target"] == scenario.room_id
        assert entry["reason"] == "request 2026/17 of the authority"
        assert entry["details"]["filters"] == manifest["filters"] and entry["details"]["format"] == "csv"
        assert entry["details"]["upto_id"] == manifest["upto_id"]
    assert finish["details"]["rows"] == manifest["rows"]
    assert finish["details"]["sha256"] == manifest["sha256"]
    assert (finish["details"]["first_id"], finish["details"]["last_id"]) == (
        manifest["first_id"],
        manifest["last_id"],
    )


def insert_synthetic_room(archive: ArchiveServer, room_id: str, count: int, padding: int = 0) -> None:
    """`count` chained archive rows of a made-up room, straight into the database."""
    values = []
    prev = GENESIS
    for n in range(count):
        event = {
            "type": "m.room.message",
            "room_id": room_id,
            "content": {"body": f'bulk {n}, "quoted"', "padding": "p" * padding},
        }
        fields = ChainedFields(
            room_id,
            f"$bulk{n}-{room_id}",
            10**9 + n,
            "@bulk:localhost",
            "m.room.message",
            None,
            1_000 + n,
            2_000,
            json.dumps(event),
        )
        row = append(prev, fields)
        prev = row.chain_hash
        values.append((*attrs.astuple(fields), row.prev_hash, row.chain_hash))
    insert = (
        "INSERT INTO compliance_archive (room_id, event_id, stream_ordering, sender, type, state_key,"
        " origin_server_ts, archived_ts, event_json, prev_hash, chain_hash)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    if archive.db.postgres is not None:
        conn = archive.db.postgres.connect()
        insert = insert.replace("?", "%s")
    else:
        conn = sqlite3.connect(archive.hs.workdir / "homeserver.db", timeout=30)
    try:
        conn.cursor().executemany(insert, values)
        conn.commit()
    finally:
        conn.close()
    (last,) = archive.sql("SELECT MAX(id) FROM compliance_archive WHERE room_id = ?", (room_id,))[0]
    archive.sql(
        "INSERT INTO compliance_archive_heads (room_id, last_id, rows_count, chain_hash) VALUES (?, ?, ?, ?)",
        (room_id, last, count, prev),
    )


def test_a_large_export_streams_every_page(archive: ArchiveServer, scenario: Scenario) -> None:
    room_id = "!bulk:localhost"
    insert_synthetic_room(archive, room_id, 2 * PAGE_ROWS)  # exactly two full pages, then an empty one
    digest = hashlib.sha256()
    with archive.admin.http.stream(
        "GET", f"/_synapse/client/compliance/v1/{EXPORT}", params={"room_id": room_id}
    ) as r:
        assert r.status_code == 200
        body = b""
        for chunk in r.iter_bytes(64 * 1024):
            body += chunk
            time.sleep(0.002)  # a slow reader: the server waits for it instead of buffering
    rows, manifest, before = split_jsonl(body)
    digest.update(before)
    assert len(rows) == manifest["rows"] == 2 * PAGE_ROWS
    assert [row["event"]["content"]["body"] for row in rows[:2]] == ['bulk 0, "quoted"', 'bulk 1, "quoted"']
    assert manifest["sha256"] == digest.hexdigest()
    ids = [row["id"] for row in rows]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert manifest["rooms"][0]["rows_count"] == 2 * PAGE_ROWS


def test_a_client_leaving_mid_export_leaves_the_server_fine(
    archive: ArchiveServer, scenario: Scenario
) -> None:
    room_id = "!leaver:localhost"
    # About 20 MB: more than the loopback socket buffers hold, so the server is still writing.
    insert_synthetic_room(archive, room_id, 8 * PAGE_ROWS, padding=2_000)
    with archive.admin.http.stream(
        "GET", f"/_synapse/client/compliance/v1/{EXPORT}", params={"room_id": room_id}
    ) as r:
        assert r.status_code == 200
        next(r.iter_bytes(1024))  # then hang up
    # The export that did not finish is on record: a start entry without a finish.
    started = [e for e in audit_entries(archive, "archive.export.start") if e["target"] == room_id]
    assert len(started) == 1
    r = export(archive.admin, room_id=scenario.room_id)  # the server still serves exports
    rows, manifest, _ = split_jsonl(r.content)
    assert manifest["rows"] == len(rows) > 0
    finished = audit_entries(archive, "archive.export.finish")
    assert finished[0]["target"] == scenario.room_id  # this one finished...
    assert room_id not in {e["target"] for e in finished}  # ...the abandoned one never did


def cli(archive: ArchiveServer, *args: str) -> subprocess.CompletedProcess[str]:
    """`synapse-compliance export -c homeserver.yaml ARGS`, as an operator runs it."""
    return run_cli("export", archive.hs.workdir / "homeserver.yaml", *args)


def test_the_cli_exports_what_http_exports(
    archive: ArchiveServer, scenario: Scenario, tmp_path: Path
) -> None:
    splitters: tuple[tuple[str, Splitter], ...] = (("jsonl", split_jsonl), ("csv", split_csv))
    for fmt, split in splitters:
        out = tmp_path / f"export.{fmt}"
        filters = {"room_id": scenario.room_id, "user_id": scenario.owner.user_id}
        done = cli(
            archive,
            "--room",
            scenario.room_id,
            "--user",
            scenario.owner.user_id,
            "--format",
            fmt,
            "-o",
            str(out),
            "--progress",
        )
        assert done.returncode == 0, done.stderr
        cli_rows, cli_manifest, cli_before = split(out.read_bytes())
        assert not (tmp_path / f"export.{fmt}.partial").exists()
        http_rows, http_manifest, http_before = split(export(archive.admin, format=fmt, **filters).content)
        assert cli_rows == http_rows and len(cli_rows) > 0
        assert cli_before == http_before  # the same bytes, so the same hash
        assert cli_manifest["sha256"] == http_manifest["sha256"] == hashlib.sha256(cli_before).hexdigest()
        for key in ("rows", "filters", "rooms", "first_id", "last_id", "format"):
            assert cli_manifest[key] == http_manifest[key], key
        assert cli_manifest["exported_by"] == f"cli:{getpass.getuser()}"
        assert f"exported {len(cli_rows)} rows" in done.stderr  # the progress line
        assert cli_manifest["sha256"] in done.stdout
    finish = audit_entries(archive, "archive.export.finish")
    assert any(e["actor"] == f"cli:{getpass.getuser()}" and e["details"]["format"] == "csv" for e in finish)


def test_cli_bad_input_exits_2_and_audits_nothing(archive: ArchiveServer, tmp_path: Path) -> None:
    before = len(audit_entries(archive, "archive.export.start"))
    out = tmp_path / "x.jsonl"
    for args, option in (
        (["--from", "10", "--to", "5"], "--from"),
        (["--user", "alice"], "--user"),
        (["--room", "general"], "--room"),
        (["--format", "xml"], "--format"),
    ):
        done = cli(archive, *args, "-o", str(out))
        assert done.returncode == 2, (args, done.stderr)
        assert option in done.stderr
    done = cli(archive, "-o", str(tmp_path / "missing" / "x.jsonl"))
    assert done.returncode == 1 and "cannot write" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not out.exists()
    assert len(audit_entries(archive, "archive.export.start")) == before


def test_a_percent_encoded_room_id_is_decoded(archive: ArchiveServer, scenario: Scenario) -> None:
    # A percent-encoded room id in the query string is decoded like any other argument.
    r = archive.admin.request(
        "GET", f"/_synapse/client/compliance/v1/{EXPORT}?room_id={q(scenario.room_id)}&format=jsonl"
    )
    rows, _, _ = split_jsonl(r.content)
    assert {row["room_id"] for row in rows} == {scenario.room_id}
