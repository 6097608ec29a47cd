"""PostgreSQL: the archive in month partitions, expired months dropped whole, the upgrade to them.

Old rows are made as in test_retention.py: Synapse runs with its clock set back (400 days,
then 300), and its own archiver writes them, so they land in the partitions of those months.
Pruning with `max_days: 200` then finds both months expired. Nothing is written by hand
except where a test plays a forger or rebuilds the unpartitioned table of an older release.
"""

import time
from collections.abc import Iterator
from typing import Any

import attrs
import psycopg2
import pytest

from synapse_compliance.core.partitions import (
    BEFORE,
    Partition,
    month_partition,
    month_start,
    next_month,
    parse_bound,
)
from synapse_compliance.storage.schema import load_deltas
from tests.e2e.conftest import database
from tests.e2e.test_archive import ArchiveServer, cli_verify, send
from tests.e2e.test_retention import (
    CONFIG,
    Row,
    group_with,
    put_hold,
    rejoin,
    release,
    rows_of,
)
from tests.harness.client import MatrixClient
from tests.harness.clock import clock_shifted
from tests.harness.homeserver import DatabaseChoice, running_homeserver

pytestmark = pytest.mark.e2e

REASON = "partition test"
DAY_MS = 86_400_000
COLUMNS = (
    "id, room_id, event_id, stream_ordering, sender, type, state_key, origin_server_ts,"
    " archived_ts, event_json, redacts, redacted_by, prev_hash, chain_hash"
)


def partitions(server: ArchiveServer) -> dict[str, Partition]:
    """The archive's partitions as PostgreSQL's catalog has them."""
    found = server.sql(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits AS i"
        " JOIN pg_class AS c ON c.oid = i.inhrelid WHERE i.inhparent = 'compliance_archive'::regclass"
    )
    return {str(name): parse_bound(str(name), str(expr)) for name, expr in found}


def partition_of(server: ArchiveServer, row_id: int) -> str:
    (name,) = server.sql("SELECT tableoid::regclass::text FROM compliance_archive WHERE id = ?", (row_id,))[0]
    return str(name)


def prune(server: ArchiveServer) -> dict[str, Any]:
    r = server.admin.compliance("POST", "admin/archive/prune", json={"reason": REASON})
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


def kept(result: dict[str, Any]) -> dict[str, str]:
    return {k["partition"]: k["reason"] for k in result["kept_partitions"]}


def anchor(server: ArchiveServer, room_id: str) -> tuple[Any, ...] | None:
    found = server.sql(
        "SELECT last_pruned_id, anchor_hash, pruned_rows FROM compliance_archive_anchors WHERE room_id = ?",
        (room_id,),
    )
    return found[0] if found else None


def assert_verifies(server: ArchiveServer) -> None:
    result = server.verify()
    assert result["ok"] is True, result
    done = cli_verify(server)
    assert done.returncode == 0 and done.stdout.strip().endswith("every chain holds"), (
        done.stdout + done.stderr
    )


@attrs.define
class Months:
    """A server whose archive has rows from 400 days ago (M1), 300 days ago (M2) and today."""

    server: ArchiveServer
    owner: MatrixClient
    dave: MatrixClient
    rooms: dict[str, str]  # A: rows in M1, M2, now (dave is in it); B: M1, now; C: M2, now
    m1: str
    m2: str
    before: dict[str, list[Row]]

    def rows(self, name: str) -> list[Row]:
        return rows_of(self.server, self.rooms[name])

    def in_month(self, name: str, month: str) -> list[Row]:
        return [r for r in self.before[name] if month_partition(r.archived_ts).name == month]


@pytest.fixture(scope="module")
def months(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Months]:
    workdir = tmp_path_factory.mktemp("partitions")
    with database("postgresql") as db:
        with clock_shifted(workdir / "clock400", 400), running_homeserver(workdir, db, CONFIG) as hs:
            past = ArchiveServer(hs, db)
            owner, dave = past.member(), past.member()
            rooms = {"A": owner.create_group("A")}
            for n in range(2):
                send(owner, rooms["A"], f"A in M1, {n}")
            assert owner.invite(rooms["A"], dave.user_id).status_code == 200
            assert dave.join(rooms["A"]).status_code == 200
            send(dave, rooms["A"], "dave in M1")
            rooms["B"] = owner.create_group("B")
            for n in range(3):
                send(owner, rooms["B"], f"B in M1, {n}")
            past.run()
        with clock_shifted(workdir / "clock300", 300), running_homeserver(workdir, db, CONFIG) as hs:
            past = ArchiveServer(hs, db)
            owner = rejoin(owner, hs)
            for n in range(2):
                send(owner, rooms["A"], f"A in M2, {n}")
            rooms["C"] = owner.create_group("C")
            for n in range(3):
                send(owner, rooms["C"], f"C in M2, {n}")
            past.run()
        with running_homeserver(workdir, db, CONFIG) as hs:
            server = ArchiveServer(hs, db)
            owner, dave = rejoin(owner, hs), rejoin(dave, hs)
            for name, room_id in rooms.items():
                send(owner, room_id, f"{name} today")
            server.run()
            before = {name: rows_of(server, room_id) for name, room_id in rooms.items()}
            m1 = partition_of(server, before["B"][0].id)
            m2 = partition_of(server, before["C"][0].id)
            yield Months(server, owner, dave, rooms, m1, m2, before)


def test_rows_land_in_the_partition_of_their_month(months: Months) -> None:
    t = months
    assert t.m1 != t.m2 and t.m1 in partitions(t.server) and t.m2 in partitions(t.server)
    for name, rows in t.before.items():
        for row in rows:
            month = month_partition(row.archived_ts)
            assert partition_of(t.server, row.id) == month.name, (name, row)
            assert partitions(t.server)[month.name] == month
    assert {month_partition(r.archived_ts).name for r in t.before["B"]} == {t.m1, partitions_now(t)}
    assert {month_partition(r.archived_ts).name for r in t.before["C"]} == {t.m2, partitions_now(t)}
    # Ids grow across partitions in archive order, and each event is there once.
    ids = [r.id for rows in t.before.values() for r in rows]
    assert len(ids) == len(set(ids))
    total, distinct = t.server.sql("SELECT COUNT(*), COUNT(DISTINCT event_id) FROM compliance_archive")[0]
    assert total == distinct


def partitions_now(t: Months) -> str:
    return partition_of(t.server, t.before["A"][-1].id)


def test_expired_months_go_whole_or_row_by_row(months: Months) -> None:
    t = months
    server, rooms = t.server, t.rooms
    for hold_id, body in (("case-b", {"room_id": rooms["B"]}), ("case-dave", {"user_id": t.dave.user_id})):
        r = put_hold(server.admin, hold_id, {**body, "reason": "court order"})
        assert r.status_code == 200, r.text
    today = partitions_now(t)

    # 1. M1 holds room B and dave's rows: kept, and pruned row by row up to dave's invite in A.
    #    M2 has A's rows after those kept in M1: not droppable; C's go row by row.
    first = prune(server)
    assert first["refused_rooms"] == []
    assert kept(first) == {t.m1: "held", t.m2: "not_prefix"}
    assert t.m1 in partitions(server) and t.m2 in partitions(server) and today in partitions(server)
    a_rows = t.before["A"]
    stop = next(i for i, r in enumerate(a_rows) if t.dave.user_id in (r.sender, r.state_key))
    assert stop > 0 and t.rows("A") == a_rows[stop:]
    assert t.rows("B") == t.before["B"]
    assert t.rows("C") == [r for r in t.before["C"] if r not in t.in_month("C", t.m2)]
    assert_verifies(server)

    # 2. Dave's hold released: A's rows in M1 go row by row (B's hold keeps M1), and then M2,
    #    where A's rows now start its chain and C's are gone, goes whole.
    assert release(server.admin, "case-dave", {"reason": "case closed"}).status_code == 200
    second = prune(server)
    assert kept(second) == {t.m1: "held"} and second["dropped_partitions"] == [t.m2]
    assert t.m2 not in partitions(server)
    assert t.rows("A") == [r for r in a_rows if month_partition(r.archived_ts).name == today]
    last_a_in_m2 = t.in_month("A", t.m2)[-1]
    a_old = len(t.in_month("A", t.m1)) + len(t.in_month("A", t.m2))
    assert anchor(server, rooms["A"]) == (last_a_in_m2.id, last_a_in_m2.chain_hash, a_old)
    audit = server.admin.audit(action="archive.prune", target=rooms["A"]).json()["chunk"]
    assert audit[0]["details"]["partition"] == t.m2 and audit[0]["details"]["rows"] == len(
        t.in_month("A", t.m2)
    )
    assert audit[0]["details"]["anchor_hash"] == last_a_in_m2.chain_hash
    (whole,) = server.admin.audit(action="archive.prune_partition", target=t.m2).json()["chunk"]
    assert whole["reason"] == REASON and whole["actor"] == server.admin.user_id
    assert whole["details"]["rooms"] == 1 and whole["details"]["rows"] == len(t.in_month("A", t.m2))
    assert_verifies(server)

    # 3. A forger rewrites one of B's rows in M1 and the hold on B goes: M1 is not dropped into
    #    a clean-looking chain; B is refused and keeps every row.
    forged = t.before["B"][1]
    (original,) = server.sql("SELECT event_json FROM compliance_archive WHERE id = ?", (forged.id,))[0]
    server.sql("UPDATE compliance_archive SET event_json = ? WHERE id = ?", ("{}", forged.id))
    assert release(server.admin, "case-b", {"reason": "case closed"}).status_code == 200
    third = prune(server)
    assert kept(third) == {t.m1: "broken_chain"} and third["dropped_partitions"] == []
    assert [(r["room_id"], r["reason"]) for r in third["refused_rooms"]] == [(rooms["B"], "hash_mismatch")]
    assert [r.id for r in t.rows("B")] == [r.id for r in t.before["B"]]

    # 4. Put right, M1 goes whole; B's chain resumes at its last row there.
    server.sql("UPDATE compliance_archive SET event_json = ? WHERE id = ?", (original, forged.id))
    fourth = prune(server)
    assert fourth["dropped_partitions"] == [t.m1] and kept(fourth) == {}
    assert t.m1 not in partitions(server) and today in partitions(server)
    b_old = t.in_month("B", t.m1)
    assert anchor(server, rooms["B"]) == (b_old[-1].id, b_old[-1].chain_hash, len(b_old))
    assert t.rows("B") == t.before["B"][len(b_old) :]
    assert_verifies(server)
    status = server.admin.status().json()["archive"]
    (count,) = server.sql("SELECT COUNT(*) FROM compliance_archive")[0]
    (pruned,) = server.sql("SELECT SUM(pruned_rows) FROM compliance_archive_anchors")[0]
    assert status["rows"] == count and status["pruned_rows"] == pruned
    assert pruned == sum(len(t.before[name]) - len(t.rows(name)) for name in rooms)

    # 5. Nothing left to do; today's rows are all there.
    last = prune(server)
    assert last["pruned_rows"] == 0 and last["dropped_partitions"] == [] and kept(last) == {}
    for name in rooms:
        assert t.rows(name) == [r for r in t.before[name] if month_partition(r.archived_ts).name == today]


def test_a_partition_locked_by_a_reader_is_left_for_the_next_pass(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    workdir = tmp_path_factory.mktemp("partition-lock")
    with database("postgresql") as db:
        with clock_shifted(workdir / "clock", 400), running_homeserver(workdir, db, CONFIG) as hs:
            past = ArchiveServer(hs, db)
            owner = past.member()
            room_id = owner.create_group("old")
            send(owner, room_id, "old enough to go")
            past.run()
            old = rows_of(past, room_id)
        with running_homeserver(workdir, db, CONFIG) as hs:
            server = ArchiveServer(hs, db)
            month = partition_of(server, old[0].id)
            assert db.postgres is not None
            reader = db.postgres.connect()  # an export in progress: a long read of the archive
            try:
                reader.cursor().execute("SELECT id FROM compliance_archive LIMIT 1")
                blocked = prune(server)
                # The first expired partition waited for the lock in vain; the pass stopped there.
                assert list(kept(blocked).values()) == ["lock_not_granted"] and month in partitions(server)
                assert rows_of(server, room_id) == old and anchor(server, room_id) is None
                assert server.admin.audit(action="archive.prune", target=room_id).json()["chunk"] == []
            finally:
                reader.rollback()
                reader.close()
            done = prune(server)
            assert month in done["dropped_partitions"] and rows_of(server, room_id) == []
            assert anchor(server, room_id) == (old[-1].id, old[-1].chain_hash, len(old))
            assert server.verify(room_id)["ok"] is True


def _as_release_15(db: DatabaseChoice, id_gap: int) -> None:
    """Rebuild the archive as the unpartitioned table of schema version 15, rows and all.

    The table comes from the shipped deltas 08 and 15 themselves; its identity sequence is set
    `id_gap` past the highest id, as after rows at the end were pruned.
    """
    assert db.postgres is not None
    columns = COLUMNS
    conn = db.postgres.connect()
    try:
        cur = conn.cursor()
        cur.execute(f"CREATE TABLE archive_copy AS SELECT {columns} FROM compliance_archive")
        cur.execute("DROP TABLE compliance_archive CASCADE")
        for delta in load_deltas():
            if delta.version in (8, 15):
                for statement in delta.statements("postgres"):
                    cur.execute(statement)
        cur.execute(
            f"INSERT INTO compliance_archive ({columns}) OVERRIDING SYSTEM VALUE"
            f" SELECT {columns} FROM archive_copy ORDER BY id"
        )
        cur.execute(
            "SELECT setval(pg_get_serial_sequence('compliance_archive', 'id'),"
            " (SELECT MAX(id) FROM compliance_archive) + %s)",
            (id_gap,),
        )
        cur.execute("DROP TABLE archive_copy")
        cur.execute("DELETE FROM compliance_schema_version WHERE version > 15")
        conn.commit()
    finally:
        conn.close()


def _relkind(db: DatabaseChoice) -> str:
    assert db.postgres is not None
    conn = db.postgres.connect()
    try:
        cur = conn.cursor()
        cur.execute("SELECT relkind FROM pg_class WHERE relname = 'compliance_archive'")
        return str(cur.fetchone()[0])
    finally:
        conn.close()


def test_an_unpartitioned_archive_is_partitioned_on_upgrade_without_copying(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    workdir = tmp_path_factory.mktemp("partition-upgrade")
    with database("postgresql") as db:
        with clock_shifted(workdir / "clock", 400), running_homeserver(workdir, db, {}) as hs:
            past = ArchiveServer(hs, db)
            owner, guest = past.member(), past.member()
            room_id = group_with(owner, guest, "from release 15")
            send(owner, room_id, "400 days before the upgrade")
            past.run()
            long_ago = {r.id for r in rows_of(past, room_id)}
        with running_homeserver(workdir, db, {}) as hs:
            server = ArchiveServer(hs, db)
            owner = rejoin(owner, hs)
            for n in range(3):
                send(owner, room_id, f"just before the upgrade {n}")
            server.run()
            before_upgrade = rows_of(server, room_id)
        _as_release_15(db, id_gap=100)
        assert _relkind(db) == "r"  # a plain table, as release 15 left it
        with running_homeserver(workdir, db, CONFIG) as hs:
            server = ArchiveServer(hs, db)
            old = rows_of(server, room_id)
            assert old == before_upgrade
            assert "applied delta 16_archive_partitions" in hs.log_text()
            assert _relkind(db) == "p"
            found = partitions(server)
            newest = max(r.archived_ts for r in old)
            assert found[BEFORE] == Partition(BEFORE, None, month_partition(newest).upper)
            assert {partition_of(server, r.id) for r in old} == {BEFORE}
            # The old table was attached with its own indexes, none built twice.
            indexes = server.sql("SELECT indexname FROM pg_indexes WHERE tablename = ?", (BEFORE,))
            assert len(indexes) == 5, indexes
            assert server.verify(room_id)["ok"] is True

            # `before` spans 400 days and is not all past max_days: its old rows go row by row.
            result = prune(server)
            assert result["dropped_partitions"] == [] and kept(result) == {}
            assert result["pruned_rows"] == len(long_ago) and result["refused_rooms"] == []
            kept_rows = [r for r in old if r.id not in long_ago]
            assert rows_of(server, room_id) == kept_rows and BEFORE in partitions(server)
            last_gone = [r for r in old if r.id in long_ago][-1]
            assert anchor(server, room_id) == (last_gone.id, last_gone.chain_hash, len(long_ago))

            owner = rejoin(owner, hs)
            event_id = send(owner, room_id, "after the upgrade")
            server.run()
            new = rows_of(server, room_id)
            assert new[: len(kept_rows)] == kept_rows and [r.event_id for r in new[len(kept_rows) :]] == [
                event_id
            ]
            assert new[-1].id > old[-1].id + 100  # past every id the old sequence handed out
            # `before` ends after the month of the newest old row: this month's rows go there too.
            assert new[-1].archived_ts < found[BEFORE].high and partition_of(server, new[-1].id) == BEFORE
            assert_verifies(server)


def test_a_new_install_starts_partitioned(tmp_path_factory: pytest.TempPathFactory) -> None:
    workdir = tmp_path_factory.mktemp("partition-new")
    with database("postgresql") as db, running_homeserver(workdir, db, {}) as hs:
        server = ArchiveServer(hs, db)
        owner = server.member()
        room_id = owner.create_group("fresh")
        server.run()
        rows = rows_of(server, room_id)
        found = partitions(server)
        month = month_partition(rows[0].archived_ts)
        assert found[month.name] == month and found[BEFORE].upper == month.lower
        assert {partition_of(server, r.id) for r in rows} == {month.name}
        # A month partition's event ids are unique within it (a second row, under a new id).
        with pytest.raises(psycopg2.errors.UniqueViolation, match=f"{month.name}_event"):
            server.sql(
                f"INSERT INTO {month.name} ({COLUMNS}) SELECT id + 1000000, {COLUMNS[4:]}"
                f" FROM {month.name} WHERE id = ?",
                (rows[0].id,),
            )


def test_next_months_partition_is_made_a_week_ahead(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Run 3 to 4 days before a month ends: the archiver makes that month's partition and, as
    # the month ends within a week, the next one's too, so the turn of the month costs nothing.
    now = int(time.time() * 1000)
    days_back = (now - (month_start(now) - 3 * DAY_MS)) // DAY_MS + 1
    workdir = tmp_path_factory.mktemp("partition-ahead")
    with (
        database("postgresql") as db,
        clock_shifted(workdir / "clock", days_back),
        running_homeserver(workdir, db, {}) as hs,
    ):
        server = ArchiveServer(hs, db)
        owner = server.member()
        room_id = owner.create_group("end of the month")
        server.run()
        rows = rows_of(server, room_id)
        stamp = rows[0].archived_ts
        assert 3 * DAY_MS <= next_month(stamp) - stamp <= 5 * DAY_MS
        found = partitions(server)
        this, following = month_partition(stamp), month_partition(next_month(stamp))
        assert found[this.name] == this and found[following.name] == following
        assert {partition_of(server, r.id) for r in rows} == {this.name}
