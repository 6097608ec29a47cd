"""The export's encoding and manifest, over an in-memory SQLite database with the module's schema."""

import argparse
import csv
import hashlib
import io
import json
import sqlite3
from collections.abc import Iterator
from importlib import resources
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from synapse_compliance.cli_export import ExportUsageError, Progress, filters_from_args
from synapse_compliance.storage.archive_export import (
    COLUMNS,
    MANIFEST_ID,
    ExportFilters,
    ExportState,
    FilterError,
    check_format,
    encode_rows,
    parse_filters,
    plan_export,
    read_page,
)

ROOM_A, ROOM_B = "!a:example.org", "!b:example.org"
ALICE, BOB = "@alice:example.org", "@bob:example.org"


@pytest.fixture
def db() -> Iterator[sqlite3.Connection]:
    """An in-memory database with every schema delta the package ships."""
    conn = sqlite3.connect(":memory:")
    folder = resources.files("synapse_compliance.storage") / "schema"
    for delta in sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name):
        conn.executescript(delta.read_text().replace("$ID_PK$", "INTEGER PRIMARY KEY AUTOINCREMENT"))
    yield conn
    conn.close()


def query_of(conn: sqlite3.Connection) -> Any:
    return lambda sql, args: [tuple(r) for r in conn.execute(sql, args).fetchall()]


def add_rows(conn: sqlite3.Connection, rows: list[tuple[str, str, int, str]]) -> None:
    """Archive rows (room, sender, origin_server_ts, event JSON) and keep each room's head."""
    for room, sender, ts, event_json in rows:
        cur = conn.execute(
            "INSERT INTO compliance_archive (room_id, event_id, stream_ordering, sender, type, state_key,"
            " origin_server_ts, archived_ts, event_json, prev_hash, chain_hash)"
            " VALUES (?, ?, 1, ?, 'm.room.message', NULL, ?, 5, ?, 'p', ?)",
            (room, f"$e{ts}", sender, ts, event_json, f"h{ts}"),
        )
        conn.execute(
            "INSERT INTO compliance_archive_heads (room_id, last_id, rows_count, chain_hash)"
            " VALUES (?, ?, 1, ?)"
            " ON CONFLICT (room_id) DO UPDATE SET last_id = EXCLUDED.last_id,"
            " rows_count = compliance_archive_heads.rows_count + 1, chain_hash = EXCLUDED.chain_hash",
            (room, cur.lastrowid, f"h{ts}"),
        )


def run_export(
    conn: sqlite3.Connection, filters: ExportFilters, fmt: str, limit: int
) -> tuple[bytes, ExportState]:
    """The whole body, read in pages of `limit`."""
    query = query_of(conn)
    state = ExportState(plan_export(query, filters, fmt), "@admin:example.org", 42)
    body = state.header()
    while (after := state.next_after()) is not None:
        body += state.add(read_page(query, state.plan, after, limit), limit)
    return body + state.manifest_bytes(), state


def event(n: int) -> str:
    return json.dumps({"type": "m.room.message", "content": {"body": f"message {n}"}}, separators=(",", ":"))


@pytest.fixture
def filled(db: sqlite3.Connection) -> sqlite3.Connection:
    add_rows(
        db, [(ROOM_A if n % 3 else ROOM_B, ALICE if n % 2 else BOB, 1_000 + n, event(n)) for n in range(10)]
    )
    return db


@pytest.mark.parametrize("limit", [1, 3, 10, 11, 100])
def test_pages_of_any_size_give_the_same_body(filled: sqlite3.Connection, limit: int) -> None:
    body, state = run_export(filled, ExportFilters(), "jsonl", limit)
    assert body == run_export(filled, ExportFilters(), "jsonl", 1000)[0]
    lines = body.splitlines()
    manifest = json.loads(lines[-1])["manifest"]
    assert [json.loads(line)["event"]["content"]["body"] for line in lines[:-1]] == [
        f"message {n}" for n in range(10)
    ]
    assert manifest["rows"] == state.rows == 10
    assert manifest["sha256"] == hashlib.sha256(b"\n".join(lines[:-1]) + b"\n").hexdigest()
    assert (manifest["first_id"], manifest["last_id"], manifest["upto_id"]) == (1, 10, 10)
    rooms = {r["room_id"]: r for r in manifest["rooms"]}
    assert rooms[ROOM_B] == {
        "room_id": ROOM_B,
        "last_id": 10,
        "chain_hash": "h1009",
        "rows_count": 4,
        "exported_rows": 4,
    }
    assert rooms[ROOM_A]["exported_rows"] == 6


def test_filters_select_rows(filled: sqlite3.Connection) -> None:
    def exported(filters: ExportFilters) -> list[int]:
        body, _ = run_export(filled, filters, "jsonl", 2)
        return [json.loads(line)["origin_server_ts"] - 1_000 for line in body.splitlines()[:-1]]

    assert exported(ExportFilters(room_id=ROOM_B)) == [0, 3, 6, 9]
    assert exported(ExportFilters(user_id=ALICE)) == [1, 3, 5, 7, 9]
    assert exported(ExportFilters(room_id=ROOM_B, user_id=ALICE)) == [3, 9]
    assert exported(ExportFilters(from_ts=1_002, to_ts=1_005)) == [2, 3, 4]  # [from, to)
    assert exported(ExportFilters(from_ts=1_005, to_ts=1_005)) == []
    assert exported(ExportFilters(room_id="!none:example.org")) == []


def test_rows_archived_after_the_snapshot_are_not_exported(filled: sqlite3.Connection) -> None:
    query = query_of(filled)
    state = ExportState(plan_export(query, ExportFilters(), "jsonl"), "@admin:example.org", 42)
    add_rows(filled, [(ROOM_A, ALICE, 2_000, event(99))])
    while (after := state.next_after()) is not None:
        state.add(read_page(query, state.plan, after, 4), 4)
    assert state.rows == 10 and state.last_id == 10
    rooms = json.loads(state.manifest_bytes())["manifest"]["rooms"]
    assert {r["room_id"]: r["last_id"] for r in rooms}[ROOM_A] == 9


def test_an_empty_archive_exports_only_a_manifest(db: sqlite3.Connection) -> None:
    body, state = run_export(db, ExportFilters(), "csv", 5)
    header, manifest_record = list(csv.reader(io.StringIO(body.decode(), newline="")))
    assert header == [*COLUMNS, "event"]
    assert manifest_record[0] == MANIFEST_ID and manifest_record[1:-1] == [""] * (len(COLUMNS) - 1)
    manifest = json.loads(manifest_record[-1])["manifest"]
    assert manifest["rows"] == 0 and manifest["upto_id"] == 0
    assert manifest["sha256"] == hashlib.sha256(body[: body.index(MANIFEST_ID.encode())]).hexdigest()
    assert state.audit_details()["rows"] == 0


def test_csv_and_jsonl_carry_the_same_values(filled: sqlite3.Connection) -> None:
    jsonl, _ = run_export(filled, ExportFilters(), "jsonl", 4)
    text, _ = run_export(filled, ExportFilters(), "csv", 4)
    records = list(csv.DictReader(io.StringIO(text.decode(), newline="")))[:-1]
    for line, record in zip(jsonl.splitlines()[:-1], records, strict=True):
        row = json.loads(line)
        assert json.loads(record["event"]) == row["event"]
        assert {c: record[c] for c in COLUMNS} == {c: "" if row[c] is None else str(row[c]) for c in COLUMNS}


def raw_row(event_json: str, text: str = "x") -> tuple[Any, ...]:
    return (7, text, "$e", 3, text, "m.room.message", None, 1, 2, None, text, "p", "c", event_json)


def test_the_stored_event_json_is_embedded_verbatim() -> None:
    stored = '{"b":1,"a":"é\\u00e9","n":1.50}'  # key order, escapes and number spelling kept
    line = encode_rows([raw_row(stored)], "jsonl")
    assert line.endswith(f',"event":{stored}}}\n')
    assert json.loads(line)["event"] == {"b": 1, "a": "éé", "n": 1.5}


def test_odd_stored_json_still_gives_one_valid_line() -> None:
    spread = '{\n  "a": 1\n}'
    assert json.loads(encode_rows([raw_row(spread)], "jsonl"))["event"] == {"a": 1}
    assert encode_rows([raw_row(spread)], "jsonl").count("\n") == 1
    broken = '{"a": '  # only a tampered row could hold this; `verify` reports it
    assert json.loads(encode_rows([raw_row(broken)], "jsonl"))["event"] == broken


values = st.none() | st.text() | st.integers(min_value=-(2**63), max_value=2**63 - 1)


@given(st.text(), st.text(), st.lists(values, min_size=len(COLUMNS), max_size=len(COLUMNS)))
def test_any_values_encode_as_the_stdlib_would(text: str, body: str, columns: list[Any]) -> None:
    stored = json.dumps({"content": {"body": body}}, separators=(",", ":"))
    for row in (raw_row(stored, text), (*columns, stored)):
        line = encode_rows([row], "jsonl")
        as_dict = dict(zip(COLUMNS, row[:-1], strict=True))
        fields = json.dumps(as_dict, separators=(",", ":"), ensure_ascii=False)
        # The same bytes as json.dumps of the columns, with the stored event JSON spliced in.
        assert line == f'{fields[:-1]},"event":{stored}}}\n'
        assert json.loads(line)["event"]["content"]["body"] == body
        written = io.StringIO()
        csv.writer(written).writerow(row)
        assert encode_rows([row], "csv") == written.getvalue()  # the same bytes as csv.writer
        (record,) = list(csv.reader(io.StringIO(encode_rows([row], "csv"), newline="")))
        assert record == ["" if v is None else str(v) for v in row]


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (("#alias:example.org", None, None, None), "room_id"),
        (("!", None, None, None), "room_id"),
        (("!" + "x" * 300, None, None, None), "room_id"),
        ((None, "alice", None, None), "user_id"),
        ((None, "@alice", None, None), "user_id"),
        ((None, None, "-1", None), "from"),
        ((None, None, "1.5", None), "from"),
        ((None, None, None, "soon"), "to"),
        ((None, None, "10", "9"), "from"),
    ],
)
def test_bad_filters_name_their_field(args: tuple[str | None, ...], field: str) -> None:
    with pytest.raises(FilterError) as e:
        parse_filters(*args)
    assert e.value.field == field


def test_good_filters() -> None:
    assert parse_filters(None, "", " ", None) == ExportFilters()
    assert parse_filters(ROOM_A, ALICE, "5", "5") == ExportFilters(ROOM_A, ALICE, 5, 5)
    assert parse_filters("!opaque-v12-room-id", None, None, "7").to_json() == {
        "room_id": "!opaque-v12-room-id",
        "user_id": None,
        "from": None,
        "to": 7,
    }


def test_formats() -> None:
    assert check_format(None) == check_format("") == "jsonl"
    assert check_format("csv") == "csv"
    with pytest.raises(FilterError) as e:
        check_format("xml")
    assert e.value.field == "format"


class FakeTerminal(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def test_progress_redraws_on_a_terminal_and_prints_lines_elsewhere() -> None:
    now = [100.0]
    for tty, end in ((True, "\r"), (False, "\n")):
        out = FakeTerminal(tty)
        progress = Progress(out, enabled=True, clock=lambda: now[0])
        now[0] += 0.1
        progress.update(10)  # too soon after the last line: nothing
        now[0] += 1.9
        progress.update(5_000)
        progress.update(6_000, final=True)
        assert out.getvalue() == f"exported 5000 rows, 2,500 rows/s{end}exported 6000 rows, 3,000 rows/s\n"
    quiet = FakeTerminal(False)
    Progress(quiet, enabled=False).update(1, final=True)
    assert quiet.getvalue() == ""


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"room": "general"}, "--room"),
        ({"user": "bob"}, "--user"),
        ({"from_ts": "9", "to_ts": "3"}, "--from"),
        ({"to_ts": "later"}, "--to"),
    ],
)
def test_cli_errors_name_the_option(options: dict[str, str], named: str) -> None:
    args = argparse.Namespace(**{"room": None, "user": None, "from_ts": None, "to_ts": None, **options})
    with pytest.raises(ExportUsageError) as e:
        filters_from_args(args)
    assert str(e.value).startswith(named + ":")
