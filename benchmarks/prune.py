"""Archive pruning benchmark (PostgreSQL): an expired month dropped whole, against row by row.

Each mode runs on its own fresh server and database:
1. Start Synapse with the module (`retention.max_days: 184`; the loop's first pass a week away)
   with its clock 400 days back, and make one group there: the archiver archives it and makes
   that month's partition, as it would have back then. Stop, and start again with the real clock.
2. Fill that month's partition with `--rows` rows of realistic size (about 900 bytes of event
   JSON) in `--rooms` rooms, stamped within the month, as valid hash chains made with the
   module's own chain code, plus their heads. Sending that many messages over HTTP would take
   hours here, and pruning reads only the module's tables. `VACUUM ANALYZE` afterwards, as
   autovacuum would have by then.
3. `partition`: time `POST admin/archive/prune`; the month goes whole.
   `rows`: first place a legal hold on the group made in step 1, so the month cannot go whole;
   the same request then deletes every other row of it row by row, in batches of
   `--batch-size` (`retention.prune_batch_size`).
   Both must prune every filled row and leave every chain verifiable.

    python -m benchmarks.prune [--rows 100000] [--rooms 100] [--batch-size 1000]

Reported: seconds and rows/s of each mode, their ratio, the archive's size on disk before and
after (row-by-row deletes leave dead rows until a VACUUM; a dropped month is gone at once), and
the WAL written meanwhile (what replicas and backups must carry).
"""

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
from psycopg2.extras import execute_values

from benchmarks._common import BenchmarkError, run_guarded, wait_for_schema
from synapse_compliance.core.archive_chain import GENESIS, ChainedFields, append
from synapse_compliance.core.partitions import Partition, parse_bound
from tests.harness.client import MatrixClient
from tests.harness.clock import clock_shifted
from tests.harness.homeserver import DatabaseChoice, database_for, running_homeserver
from tests.harness.postgres import unavailable_reason

DAY_MS = 86_400_000
PAST_DAYS = 400
_INSERT = (
    "INSERT INTO compliance_archive (room_id, event_id, stream_ordering, sender, type, state_key,"
    " origin_server_ts, archived_ts, event_json, prev_hash, chain_hash) VALUES %s"
)
_HEADS = """
INSERT INTO compliance_archive_heads (room_id, last_id, rows_count, chain_hash)
SELECT a.room_id, a.id, c.n, a.chain_hash
FROM (SELECT room_id, MAX(id) AS last_id, COUNT(*) AS n FROM compliance_archive GROUP BY room_id) AS c
JOIN compliance_archive AS a ON a.id = c.last_id
WHERE a.room_id LIKE '!bench%'
"""
_SIZE = (
    "SELECT COALESCE(SUM(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits"
    " WHERE inhparent = 'compliance_archive'::regclass"
)


@attrs.frozen
class Measurement:
    """One timed prune."""

    mode: str
    rows: int
    seconds: float
    bytes_before: int
    bytes_after: int
    wal_bytes: int  # WAL the whole server wrote during the prune
    answer: dict[str, Any]

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds

    def as_json(self) -> dict[str, Any]:
        return {**attrs.asdict(self), "rows_per_s": round(self.rows_per_s)}


def _event(n: int, room_id: str, sender: str, ts: int) -> str:
    """An event of realistic size, shaped as Synapse stores it."""
    return json.dumps(
        {
            "auth_events": [
                f"$auth{n}aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                f"$auth{n}bbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
            ],
            "prev_events": [f"$prev{n}cccccccccccccccccccccccccccccccccccccccccc"],
            "type": "m.room.message",
            "room_id": room_id,
            "sender": sender,
            "content": {
                "msgtype": "m.text",
                "body": f"benchmark message number {n} with some ordinary chat text to give it a usual size",
            },
            "depth": n,
            "origin_server_ts": ts,
            "hashes": {"sha256": "x" * 43},
            "signatures": {"localhost": {"ed25519:a_test": "s" * 86}},
            "unsigned": {"age_ts": ts},
        },
        separators=(",", ":"),
    )


def _rows(count: int, rooms: Sequence[str], start_ts: int) -> Iterator[tuple[object, ...]]:
    """`count` rows spread over `rooms`, each room a valid chain, stamped a second apart."""
    heads = dict.fromkeys(rooms, GENESIS)
    for n in range(count):
        room_id = rooms[n % len(rooms)]
        sender = f"@sender{n % 50}:localhost"
        ts = start_ts + (n * 1000) % (20 * DAY_MS)  # within the first three weeks of the month
        fields = ChainedFields(
            room_id,
            f"$bench{n}:localhost",
            n + 1,
            sender,
            "m.room.message",
            None,
            ts,
            ts,
            _event(n, room_id, sender, ts),
        )
        row = append(heads[room_id], fields)
        heads[room_id] = row.chain_hash
        yield (*attrs.astuple(fields), row.prev_hash, row.chain_hash)


def _fill(db: DatabaseChoice, rows: int, rooms: int, month: Partition) -> None:
    assert db.postgres is not None and month.lower is not None
    names = [f"!bench{r}:localhost" for r in range(rooms)]
    conn = db.postgres.connect()
    try:
        with conn, conn.cursor() as cur:
            execute_values(cur, _INSERT, _rows(rows, names, month.lower + 3_600_000), page_size=2000)
            cur.execute(_HEADS)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("VACUUM ANALYZE compliance_archive")
    finally:
        conn.close()


def _query(db: DatabaseChoice, sql: str) -> list[tuple[Any, ...]]:
    assert db.postgres is not None
    conn = db.postgres.connect()
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql)
            return [tuple(r) for r in cur.fetchall()]
    finally:
        conn.close()


def _size(db: DatabaseChoice) -> int:
    return int(_query(db, _SIZE)[0][0])


def _old_month(db: DatabaseChoice) -> Partition:
    """The month partition the clock-shifted server's archiver made."""
    found = _query(
        db,
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM compliance_archive AS a"
        " JOIN pg_class AS c ON c.oid = a.tableoid ORDER BY a.id LIMIT 1",
    )
    if not found:
        raise BenchmarkError("the clock-shifted server archived nothing")
    return parse_bound(str(found[0][0]), str(found[0][1]))


def _post(admin: MatrixClient, path: str, body: dict[str, Any], method: str = "POST") -> dict[str, Any]:
    r = admin.compliance(method, path, json=body)
    if r.status_code != 200:
        raise BenchmarkError(f"{path} answered {r.status_code}: {r.text[:300]}")
    answer: dict[str, Any] = r.json()
    return answer


def measure(mode: str, args: argparse.Namespace, tmp: Path) -> Measurement:
    """Fill a fresh archive and time one prune of it in `mode` ("partition" or "rows")."""
    config = {"retention": {"max_days": 184, "prune_interval": "7d", "prune_batch_size": args.batch_size}}
    with database_for("postgresql", prefix="compliance_bench") as db:
        with (
            clock_shifted(tmp / f"clock-{mode}", PAST_DAYS),
            running_homeserver(tmp / mode, db, config) as hs,
        ):
            admin = hs.register(admin=True)
            wait_for_schema(admin)
            room_id = admin.create_group("made in the past")
            _post(admin, "admin/archive/run", {})
        with running_homeserver(tmp / mode, db, config) as hs:
            return _measure_now(mode, args, db, hs.register(admin=True), room_id)


def _measure_now(
    mode: str, args: argparse.Namespace, db: DatabaseChoice, admin: MatrixClient, room_id: str
) -> Measurement:
    wait_for_schema(admin)
    month = _old_month(db)
    _fill(db, args.rows, args.rooms, month)
    if mode == "rows":
        _post(admin, "admin/holds/bench", {"room_id": room_id, "reason": "benchmark"}, "PUT")
    before = _size(db)
    (wal_start,) = _query(db, "SELECT pg_current_wal_lsn()::text")[0]
    start = time.perf_counter()
    answer = _post(admin, "admin/archive/prune", {"reason": "benchmark"})
    seconds = time.perf_counter() - start
    (wal,) = _query(db, f"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{wal_start}')")[0]
    # The partition mode also drops the group's own few rows, and empty months.
    if not 0 <= answer["pruned_rows"] - args.rows <= 20:
        raise BenchmarkError(f"{mode}: pruned {answer['pruned_rows']} rows, not about {args.rows}")
    if (month.name in answer["dropped_partitions"]) != (mode == "partition"):
        raise BenchmarkError(f"{mode}: unexpected partitions in {answer}")
    verify = _post(admin, "admin/archive/verify", {})
    if verify["ok"] is not True:
        raise BenchmarkError(f"{mode}: verify failed after pruning: {verify}")
    answer.pop("cutoff_ts", None)
    return Measurement(mode, answer["pruned_rows"], seconds, before, _size(db), int(wal), answer)


def format_table(results: Sequence[Measurement]) -> str:
    """The report printed at the end."""
    header = f"{'mode':<10} {'rows':>8} {'seconds':>8} {'rows/s':>10}"
    lines = [f"{header} {'MB before':>9} {'MB after':>8} {'WAL MB':>7}"]
    for m in results:
        lines.append(
            f"{m.mode:<10} {m.rows:>8} {m.seconds:>8.2f} {m.rows_per_s:>10,.0f}"
            f" {m.bytes_before / 1e6:>9.1f} {m.bytes_after / 1e6:>8.1f} {m.wal_bytes / 1e6:>7.1f}"
        )
    by_mode = {m.mode: m for m in results}
    if {"partition", "rows"} <= by_mode.keys():
        ratio = by_mode["rows"].seconds / by_mode["partition"].seconds
        lines.append(f"row by row takes {ratio:,.1f}x as long as dropping the month")
    return "\n".join(lines)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.prune", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows in the expired month (100000)")
    parser.add_argument("--rooms", type=int, default=100, help="rooms the rows are spread over (100)")
    parser.add_argument("--batch-size", type=int, default=1000, help="retention.prune_batch_size (1000)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.rooms < 1 or not 1 <= args.batch_size <= 10_000:
        parser.error("--rows and --rooms must be at least 1, --batch-size 1 to 10000")
    if (reason := unavailable_reason()) is not None:
        parser.error(reason)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    results: list[Measurement] = []

    def body() -> None:
        with tempfile.TemporaryDirectory(prefix="bench-prune-") as tmp:
            for mode in ("partition", "rows"):
                results.append(measure(mode, args, Path(tmp)))
                print(format_table(results[-1:]).splitlines()[1], flush=True)

    if (code := run_guarded(body)) != 0:
        return code
    print(format_table(results))
    if args.json is not None:
        args.json.write_text(json.dumps([m.as_json() for m in results], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
