"""Connection records: the pure helpers, and the copy/prune/list SQL on SQLite and PostgreSQL.

The SQL runs on plain DB-API connections (no Synapse process) against a `user_ips` table with
Synapse's columns and the module's delta 13. The whole flow through a real Synapse is in
tests/e2e/test_connections.py.
"""

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from synapse_compliance.http.connections import decode_position, encode_position
from synapse_compliance.storage.connection_store import (
    PRUNE_ACTION,
    START,
    PruneConnections,
    Sighting,
    connection_key,
    copy_batch_txn,
    list_for_user_txn,
    merge_sightings,
    prune_batch_txn,
)
from synapse_compliance.storage.schema import load_deltas
from synapse_compliance.tasks.connections import LATE_COMMIT_MS, pass_start
from tests.harness.postgres import fresh_database, unavailable_reason

# Synapse's table (synapse/storage/schema/main/full_schemas/72/full.sql.*) and its unique index.
USER_IPS = [
    "CREATE TABLE user_ips (user_id TEXT NOT NULL, access_token TEXT NOT NULL, device_id TEXT,"
    " ip TEXT NOT NULL, user_agent TEXT NOT NULL, last_seen BIGINT NOT NULL)",
    "CREATE UNIQUE INDEX user_ips_user_token_ip_unique_index ON user_ips (user_id, access_token, ip)",
    "CREATE INDEX user_ips_last_seen_only ON user_ips (last_seen)",
]
T0 = 1_700_000_000_000


class Txn:
    """A DB-API cursor that takes `?` placeholders on either engine, like Synapse's transactions."""

    def __init__(self, conn: Any, postgres: bool) -> None:
        self.conn = conn
        self.postgres = postgres
        self.cur = conn.cursor()

    def execute(self, sql: str, args: tuple[Any, ...] = ()) -> None:
        self.cur.execute(sql.replace("?", "%s") if self.postgres else sql, args)

    def fetchall(self) -> list[Any]:
        return list(self.cur.fetchall())

    def fetchone(self) -> Any:
        return self.cur.fetchone()

    @property
    def rowcount(self) -> int:
        return int(self.cur.rowcount)


def _create_tables(txn: Txn) -> None:
    engine = "postgres" if txn.postgres else "sqlite"
    # The audit log (01), legal holds (12) and connection records (13).
    deltas = [d for d in load_deltas() if d.version in {1, 12, 13}]
    for statement in [*USER_IPS, *(s for d in deltas for s in d.statements(engine))]:
        txn.execute(statement)
    txn.conn.commit()


def _sqlite_txn() -> Txn:
    txn = Txn(sqlite3.connect(":memory:"), postgres=False)
    _create_tables(txn)
    return txn


@pytest.fixture(params=["sqlite", "postgresql"])
def txn(request: pytest.FixtureRequest) -> Iterator[Txn]:
    """Empty tables on a fresh database of each engine."""
    if request.param == "sqlite":
        t = _sqlite_txn()
        with closing(t.conn):
            yield t
        return
    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get("REQUIRE_PG") == "1":
            pytest.fail(f"REQUIRE_PG=1 but {reason}")
        pytest.skip(reason)
    with fresh_database("compliance_unit") as db, closing(db.connect()) as conn:
        t = Txn(conn, postgres=True)
        _create_tables(t)
        yield t


def add_ip(  # noqa: PLR0917 (one argument per column of the table)
    txn: Txn, user: str, token: str, ip: str, ua: str, device: str | None, last_seen: int
) -> None:
    """Synapse's upsert of one `user_ips` row (client_ips.py `_update_client_ips_batch_txn`)."""
    txn.execute("DELETE FROM user_ips WHERE user_id = ? AND access_token = ? AND ip = ?", (user, token, ip))
    txn.execute("INSERT INTO user_ips VALUES (?, ?, ?, ?, ?, ?)", (user, token, device, ip, ua, last_seen))


def copy_pass(txn: Txn, batch_size: int, now_ms: int = T0) -> tuple[int, int]:
    """One pass as `ConnectionCopier.run_once` makes it: (rows read, records changed)."""
    txn.execute("SELECT last_seen_mark FROM compliance_connections_mark")
    mark = int(txn.fetchone()[0])
    position = (pass_start(mark), "", "", "", "")
    scanned = changed = 0
    while True:
        batch = copy_batch_txn(txn, position, batch_size, now_ms)
        scanned, changed = scanned + batch.scanned, changed + batch.changed
        if batch.position == position:
            return scanned, changed
        position = batch.position


def records(txn: Txn) -> set[tuple[Any, ...]]:
    txn.execute(
        "SELECT user_id, device_id, ip, user_agent, first_seen, last_seen FROM compliance_connections"
    )
    return {tuple(r) for r in txn.fetchall()}


def mark_of(txn: Txn) -> int:
    txn.execute("SELECT last_seen_mark FROM compliance_connections_mark")
    return int(txn.fetchone()[0])


# --- pure helpers ---------------------------------------------------------------------------


def test_connection_keys_do_not_collide_where_concatenation_would() -> None:
    assert connection_key("@a:x", "D", "1.2.3.4", "UA") == connection_key("@a:x", "D", "1.2.3.4", "UA")
    assert connection_key("@a:x", None, "ip", "ua") != connection_key("@a:x", "", "ip", "ua")
    assert connection_key("@a:x", "D", "ip", "u,a") != connection_key("@a:x", "D", "ip,u", "a")
    assert len(connection_key("@a:x", None, "ip", "x" * 100_000)) == 64


rows = st.lists(
    st.tuples(
        st.integers(T0, T0 + 10**6),
        st.sampled_from(["@a:x", "@b:x"]),
        st.sampled_from(["", "DEV1", "DEV2"]),
        st.sampled_from(["127.0.0.1", "::1"]),
        st.sampled_from(["UA-1", "UA-2 (Ünïcode)"]),
    ),
    max_size=30,
)


@given(rows)
def test_merging_keeps_one_sighting_per_record_with_its_earliest_and_latest_time(
    raw: list[tuple[int, str, str, str, str]],
) -> None:
    merged = merge_sightings(raw)
    assert len({s.key for s in merged}) == len(merged)
    for s in merged:
        times = [
            r[0]
            for r in raw
            if (r[1], r[2] or None, r[3], r[4]) == (s.user_id, s.device_id, s.ip, s.user_agent)
        ]
        assert (s.first_seen, s.last_seen) == (min(times), max(times))
    assert {(r[1], r[2] or None, r[3], r[4]) for r in raw} == {
        (s.user_id, s.device_id, s.ip, s.user_agent) for s in merged
    }


def test_a_pass_starts_a_late_commit_window_below_the_mark() -> None:
    assert pass_start(0) == 0
    assert pass_start(1000) == 0
    assert pass_start(T0) == T0 - LATE_COMMIT_MS


def test_page_tokens_round_trip_and_refuse_other_tokens() -> None:
    assert decode_position(encode_position(T0, 42)) == (T0, 42)
    for bad in ["", "x", "Y246MTI=", encode_position(T0, 1)[:-2] + "!!", "YXU6MTI"]:  # incl. audit's "au:12"
        assert decode_position(bad) is None


# --- SQL on both engines ---------------------------------------------------------------------


def test_rows_are_copied_once_per_record_and_a_second_pass_changes_nothing(txn: Txn) -> None:
    add_ip(txn, "@a:x", "tokA", "127.0.0.1", "UA-1", "DEV1", T0)
    add_ip(txn, "@a:x", "tokB", "127.0.0.1", "UA-2", "DEV2", T0 + 10)
    add_ip(txn, "@a:x", "tokC", "127.0.0.1", "UA-1", "DEV1", T0 + 20)  # a second token of DEV1
    add_ip(txn, "@b:x", "tokD", "::1", "UA-1", None, T0 + 30)  # no device
    # The second batch widens DEV1's record (a change) and adds @b's: 3 inserts, 1 widening.
    assert copy_pass(txn, batch_size=2) == (4, 4)
    assert records(txn) == {
        ("@a:x", "DEV1", "127.0.0.1", "UA-1", T0, T0 + 20),
        ("@a:x", "DEV2", "127.0.0.1", "UA-2", T0 + 10, T0 + 10),
        ("@b:x", None, "::1", "UA-1", T0 + 30, T0 + 30),
    }
    assert mark_of(txn) == T0 + 30
    assert copy_pass(txn, batch_size=2) == (4, 0)  # re-read in the late window, nothing changes


def test_records_survive_synapse_pruning_and_later_sightings_move_last_seen(txn: Txn) -> None:
    add_ip(txn, "@a:x", "tokA", "127.0.0.1", "UA-1", "DEV1", T0)
    copy_pass(txn, batch_size=10)
    txn.execute("DELETE FROM user_ips")  # user_ips_max_age pruning
    assert copy_pass(txn, batch_size=10) == (0, 0)
    assert records(txn) == {("@a:x", "DEV1", "127.0.0.1", "UA-1", T0, T0)}
    add_ip(txn, "@a:x", "tokA", "127.0.0.1", "UA-1", "DEV1", T0 + LATE_COMMIT_MS * 3)
    assert copy_pass(txn, batch_size=10, now_ms=T0 + 1) == (1, 1)
    assert records(txn) == {("@a:x", "DEV1", "127.0.0.1", "UA-1", T0, T0 + LATE_COMMIT_MS * 3)}
    txn.execute("SELECT first_copied_ts, last_copied_ts FROM compliance_connections")
    assert tuple(txn.fetchone()) == (T0, T0 + 1)


def test_rows_committed_late_are_caught_within_the_window(txn: Txn) -> None:
    add_ip(txn, "@a:x", "tok1", "127.0.0.1", "UA-1", "D1", T0 + LATE_COMMIT_MS * 2)
    copy_pass(txn, batch_size=10)
    # Stamped before the mark but committed after the pass (Synapse batches its writes).
    add_ip(txn, "@a:x", "tok2", "127.0.0.1", "UA-1", "D2", T0 + LATE_COMMIT_MS * 2 - 1000)
    add_ip(txn, "@a:x", "tok3", "127.0.0.1", "UA-1", "D3", T0 + LATE_COMMIT_MS)  # edge of the window
    add_ip(txn, "@a:x", "tok4", "127.0.0.1", "UA-1", "D4", T0 + LATE_COMMIT_MS - 1)  # beyond it
    assert copy_pass(txn, batch_size=1) == (3, 2)
    assert {r[1] for r in records(txn)} == {"D1", "D2", "D3"}


def test_pages_are_newest_first_and_disjoint(txn: Txn) -> None:
    for n in range(5):
        add_ip(txn, "@a:x", f"t{n}", "127.0.0.1", f"UA-{n}", f"D{n}", T0 + (n // 2) * 1000)  # ties
    add_ip(txn, "@b:x", "tb", "127.0.0.1", "UA", "DB", T0 + 9000)
    copy_pass(txn, batch_size=100)
    seen: list[Any] = []
    before: tuple[int, int] | None = None
    while page := list_for_user_txn(txn, "@a:x", before, 2):
        seen += page
        before = (page[-1].sighting.last_seen, page[-1].id)
    assert len(seen) == 5 and len({c.id for c in seen}) == 5
    order = [(c.sighting.last_seen, c.id) for c in seen]
    assert order == sorted(order, reverse=True)
    assert {c.sighting.user_id for c in seen} == {"@a:x"}


def hold(txn: Txn, hold_id: str, user_id: str) -> None:
    txn.execute(
        "INSERT INTO compliance_legal_holds (hold_id, user_id, reason, created_ts, created_by)"
        " VALUES (?, ?, 'case', ?, '@admin:x')",
        (hold_id, user_id, T0),
    )


def test_pruning_deletes_old_records_in_audited_batches_and_spares_held_users(txn: Txn) -> None:
    for n in range(5):
        add_ip(txn, "@old:x", f"t{n}", "127.0.0.1", "UA", f"D{n}", T0 + n)
    add_ip(txn, "@held:x", "th", "127.0.0.1", "UA", "DH", T0)
    add_ip(txn, "@released:x", "tr", "127.0.0.1", "UA", "DR", T0)
    add_ip(txn, "@new:x", "tn", "127.0.0.1", "UA", "DN", T0 + 100)
    copy_pass(txn, batch_size=100)
    hold(txn, "case-1", "@held:x")
    hold(txn, "case-2", "@released:x")
    txn.execute("UPDATE compliance_legal_holds SET released_ts = ? WHERE hold_id = 'case-2'", (T0,))
    request = PruneConnections(T0 + 100, 3, "synapse_compliance", "retention.max_days is 184")
    assert [prune_batch_txn(txn, request, T0 + 7) for _ in range(4)] == [3, 3, 0, 0]
    assert {r[0] for r in records(txn)} == {"@held:x", "@new:x"}
    txn.execute("SELECT actor, action, target, reason, details, ts FROM compliance_audit_log ORDER BY id")
    entries = txn.fetchall()
    assert [tuple(e[:4]) for e in entries] == [
        ("synapse_compliance", PRUNE_ACTION, None, "retention.max_days is 184")
    ] * 2  # empty batches are not audited
    assert [json.loads(e[4]) for e in entries] == [{"cutoff_ts": T0 + 100, "deleted": 3}] * 2
    txn.execute("UPDATE compliance_legal_holds SET released_ts = ? WHERE hold_id = 'case-1'", (T0,))
    assert prune_batch_txn(txn, request, T0 + 8) == 1
    assert {r[0] for r in records(txn)} == {"@new:x"}


# --- model check on SQLite --------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(rows, min_size=1, max_size=4), st.integers(1, 7))
def test_any_sequence_of_passes_ends_with_one_record_per_tuple_at_its_latest_time(
    rounds: list[list[tuple[int, str, str, str, str]]], batch_size: int
) -> None:
    """Requests arrive between passes (one token per tuple, times moving forward); after the
    last pass there is one record per tuple, last seen at its latest request, and another pass
    changes nothing."""
    t = _sqlite_txn()
    with closing(t.conn):
        seen: list[tuple[int, str, str, str, str]] = []
        clock = T0
        for round_rows in rounds:
            for _, user, device, ip, ua in round_rows:
                clock += 1_000
                add_ip(t, user, f"{user}/{device}/{ua}", ip, ua, device or None, clock)
                seen.append((clock, user, device, ip, ua))
            copy_pass(t, batch_size)
        copied = {(s.key, s.first_seen, s.last_seen) for s in _as_sightings(t)}
        expected = merge_sightings(seen)
        assert {(k, last) for k, _, last in copied} == {(s.key, s.last_seen) for s in expected}
        firsts = {s.key: s.first_seen for s in expected}
        assert all(firsts[k] <= first <= last for k, first, last in copied)
        assert copy_pass(t, batch_size)[1] == 0


def _as_sightings(t: Txn) -> list[Sighting]:
    t.execute("SELECT user_id, device_id, ip, user_agent, first_seen, last_seen FROM compliance_connections")
    return [Sighting(r[0], r[1], r[2], r[3], r[4], r[5]) for r in t.fetchall()]


def test_start_sorts_before_every_row() -> None:
    assert START < (0, "@a:x", "", "", "")
