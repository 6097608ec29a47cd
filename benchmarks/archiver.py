"""Archiver catch-up benchmark: how fast a backlog of group events is archived (DESIGN §8).

1. Start Synapse with the module on a fresh PostgreSQL database, create a group and send one
   message, archive it, stop Synapse.
2. Write a backlog straight into Synapse's `events`/`event_json` tables: copies of that message
   with new ids and stream orderings (and the stream position and sequence moved to match, as
   Synapse itself would leave them). Sending them over HTTP would take hours at the rates
   plain Synapse reaches here; the archiver reads exactly these two tables, so it cannot tell.
3. Start Synapse again and sample the archive's row count until the backlog is archived.

    python -m benchmarks.archiver [--events 100000] [--json out.json]

Reports events/s over the catch-up (from the first to the last sample that saw rows arrive)
and the time from start-up to caught up. The target is at least 5,000 events/s.
"""

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.harness.client import MatrixClient
from tests.harness.homeserver import DatabaseChoice, database_for, running_homeserver
from tests.harness.postgres import unavailable_reason

MODULE_CONFIG: dict[str, Any] = {"identity": {"required_for": []}}
SAMPLE_S = 0.2
TEMPLATE_BODY = "backlog template"


def _sql(db: DatabaseChoice, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
    assert db.postgres is not None
    conn = db.postgres.connect()
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, tuple(args))
            return list(cur.fetchall()) if cur.description else []
    finally:
        conn.close()


def _columns(db: DatabaseChoice, table: str) -> list[str]:
    rows = _sql(
        db,
        "SELECT column_name FROM information_schema.columns WHERE table_name = %s ORDER BY ordinal_position",
        (table,),
    )
    return [str(r[0]) for r in rows]


def _seed(workdir: Path, db: DatabaseChoice, config: dict[str, Any]) -> str:
    """A group with one archived message; returns that message's event id."""
    with running_homeserver(workdir, db, config) as hs:
        admin = hs.register(admin=True)
        user: MatrixClient = hs.register()
        r = user.create_room(name="backlog", preset="private_chat")
        r.raise_for_status()
        room_id = r.json()["room_id"]
        r = user.send_text(room_id, TEMPLATE_BODY)
        r.raise_for_status()
        event_id = str(r.json()["event_id"])
        admin.compliance("POST", "admin/archive/run").raise_for_status()
    return event_id


def _write_backlog(db: DatabaseChoice, template: str, n: int) -> None:
    """`n` copies of `template` after the current stream end, as Synapse would have written them."""
    top = _sql(db, "SELECT MAX(stream_ordering) FROM events")[0][0]
    subst = {
        "event_id": "'$backlog' || s.n || ':bench'",
        "stream_ordering": f"{top} + s.n",
        "topological_ordering": "e.topological_ordering + s.n",
        "depth": "e.depth + s.n",
    }
    cols = _columns(db, "events")
    select = ", ".join(subst.get(c, f"e.{c}") for c in cols)
    _sql(
        db,
        f"INSERT INTO events ({', '.join(cols)}) SELECT {select}"
        " FROM events AS e, generate_series(1, %s) AS s(n) WHERE e.event_id = %s",
        (n, template),
    )
    jcols = _columns(db, "event_json")
    jsubst = {
        "event_id": "'$backlog' || s.n || ':bench'",
        "json": f"replace(j.json, '{TEMPLATE_BODY}', 'backlog ' || s.n)",
    }
    jselect = ", ".join(jsubst.get(c, f"j.{c}") for c in jcols)
    _sql(
        db,
        f"INSERT INTO event_json ({', '.join(jcols)}) SELECT {jselect}"
        " FROM event_json AS j, generate_series(1, %s) AS s(n) WHERE j.event_id = %s",
        (n, template),
    )
    end = top + n
    _sql(db, "UPDATE stream_positions SET stream_id = %s WHERE stream_name = 'events'", (end,))
    _sql(db, "SELECT setval('events_stream_seq', %s)", (end,))


def _archived(db: DatabaseChoice) -> int:
    return int(_sql(db, "SELECT COUNT(*) FROM compliance_archive")[0][0])


def run(events: int, batch_size: int | None = None) -> dict[str, Any]:
    """Seed, write the backlog, restart, and time the catch-up."""
    config = dict(MODULE_CONFIG)
    if batch_size is not None:
        config["archive"] = {"batch_size": batch_size}
    with tempfile.TemporaryDirectory(prefix="bench-archiver-") as tmp, database_for("postgresql") as db:
        workdir = Path(tmp)
        template = _seed(workdir, db, config)
        before = _archived(db)
        t0 = time.perf_counter()
        _write_backlog(db, template, events)
        backlog_s = time.perf_counter() - t0
        target = before + events
        started = time.perf_counter()
        samples: list[tuple[float, int]] = []
        with running_homeserver(workdir, db, config):
            healthy_s = time.perf_counter() - started
            while True:
                count = _archived(db)
                samples.append((time.perf_counter() - started, count))
                if count >= target:
                    break
                if samples[-1][0] > 600:
                    raise RuntimeError(f"archiver not caught up after 600 s ({count - before}/{events})")
                time.sleep(SAMPLE_S)
        moving = [s for s in samples if s[1] > before]
        first = samples[max(0, samples.index(moving[0]) - 1)] if moving else samples[0]
        last = samples[-1]
        rate = (last[1] - first[1]) / (last[0] - first[0]) if last[0] > first[0] else float("inf")
        return {
            "events": events,
            "batch_size": batch_size,
            "backlog_write_s": backlog_s,
            "startup_to_healthy_s": healthy_s,
            "startup_to_caught_up_s": last[0],
            "archived_before_first_sample": samples[0][1] - before,
            "events_per_s": rate,
            "overall_events_per_s": events / last[0],
        }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.archiver", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="backlog size (default 100000)")
    parser.add_argument("--batch-size", type=int, help="archive.batch_size (default: the module's)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON to this file")
    args = parser.parse_args(argv)
    reason = unavailable_reason()
    if reason is not None:
        print(f"archiver benchmark needs PostgreSQL: {reason}", file=sys.stderr)
        return 2
    result = run(args.events, args.batch_size)
    print(
        f"archiver catch-up, PostgreSQL: {result['events']} events in "
        f"{result['startup_to_caught_up_s']:.1f} s from start-up "
        f"(healthy after {result['startup_to_healthy_s']:.1f} s)\n"
        f"  catch-up rate: {result['events_per_s']:.0f} events/s "
        f"(overall from start-up: {result['overall_events_per_s']:.0f} events/s; target >= 5000)"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
