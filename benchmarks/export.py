"""Archive export benchmark: rows/s and peak memory of the HTTP and the CLI export (DESIGN §8).

1. Start Synapse with the module on a fresh PostgreSQL database and wait for its schema.
2. Fill `compliance_archive` straight from SQL (`generate_series`): `--rows` rows of realistic
   size (about 900 bytes of event JSON each, in `--rooms` rooms), plus their chain heads.
   Sending that many messages over HTTP would take hours here; the export reads only these two
   tables, so it cannot tell. (The rows' hashes are not a valid chain; export does not check.)
3. Time `GET admin/archive/events` (read as fast as the client can) while sampling Synapse's
   VmRSS every 20 ms, then `synapse-compliance export` as a subprocess (its peak RSS from
   `wait4`). Each body's manifest must count every row.
4. With `--steps 2` (default), add as many rows again and measure again: flat memory means the
   peaks stay where they were although the body doubled.

    python -m benchmarks.export [--rows 100000] [--rooms 20] [--steps 2] [--format jsonl|csv]

The target is at least 50,000 rows/s for both, with memory that does not grow with the rows.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import httpx

from benchmarks._common import BenchmarkError, run_guarded, wait_for_schema
from tests.harness.client import COMPLIANCE, MatrixClient
from tests.harness.homeserver import DatabaseChoice, Homeserver, database_for, running_homeserver
from tests.harness.postgres import unavailable_reason

REPO = Path(__file__).resolve().parents[1]
SAMPLE_S = 0.02

# One realistic event a row: keys, hashes and signatures as Synapse stores them (~900 bytes).
_FILL_SQL = """
INSERT INTO compliance_archive (room_id, event_id, stream_ordering, sender, type, state_key,
    origin_server_ts, archived_ts, event_json, prev_hash, chain_hash)
SELECT '!bench' || (g %% %(rooms)s) || ':localhost', '$bench' || g || 'AbCdEfGhIjKlMnOpQrStUvWxYz012345',
    g, '@sender' || (g %% 50) || ':localhost', 'm.room.message', NULL,
    1700000000000 + g, 1700000000000 + g,
    json_build_object(
        'auth_events', json_build_array('$' || md5(g::text) || 'aaaaaaaaaaa',
            '$' || md5((g + 1)::text) || 'bbbbbbbbbbb'),
        'prev_events', json_build_array('$' || md5((g - 1)::text) || 'ccccccccccc'),
        'type', 'm.room.message', 'room_id', '!bench' || (g %% %(rooms)s) || ':localhost',
        'sender', '@sender' || (g %% 50) || ':localhost',
        'content', json_build_object('msgtype', 'm.text',
            'body', 'benchmark message number ' || g
                || ' with some ordinary chat text to give it a typical size'),
        'depth', g, 'origin_server_ts', 1700000000000 + g,
        'hashes', json_build_object('sha256', substr(md5(g::text) || md5((g * 7)::text), 1, 43)),
        'signatures', json_build_object('localhost', json_build_object('ed25519:a_test',
            md5(g::text) || md5((g * 3)::text) || md5((g * 5)::text) || substr(md5((g * 11)::text), 1, 22))),
        'unsigned', json_build_object('age_ts', 1700000000000 + g)
    )::text,
    repeat('0', 64), md5(g::text) || md5((g + 1)::text)
FROM generate_series(%(first)s, %(last)s) AS g
"""
_HEADS_SQL = """
INSERT INTO compliance_archive_heads (room_id, last_id, rows_count, chain_hash)
SELECT room_id, MAX(id), COUNT(*), 'bench' FROM compliance_archive GROUP BY room_id
ON CONFLICT (room_id) DO UPDATE SET last_id = EXCLUDED.last_id, rows_count = EXCLUDED.rows_count
"""


@attrs.frozen
class Measurement:
    """One timed export."""

    how: str
    rows: int
    seconds: float
    body_bytes: int
    rss_before_kb: int | None
    rss_peak_kb: int
    cpu_s: float  # CPU time of the exporting process (server or CLI) during the export
    inner_rows_per_s: float | None = None  # the CLI's own figure, without its start-up

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds

    def as_json(self) -> dict[str, Any]:
        return {**attrs.asdict(self), "rows_per_s": round(self.rows_per_s)}


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _vm_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchmarkError(f"no VmRSS for process {pid}")


class RssSampler:
    """The peak VmRSS of a process, sampled on a thread while the `with` block runs."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, _vm_rss_kb(self._pid))
            time.sleep(SAMPLE_S)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kb = max(self.peak_kb, _vm_rss_kb(self._pid))


def _fill(db: DatabaseChoice, first: int, last: int, rooms: int) -> None:
    assert db.postgres is not None
    conn = db.postgres.connect()
    try:
        with conn, conn.cursor() as cur:
            cur.execute(_FILL_SQL, {"first": first, "last": last, "rooms": rooms})
            cur.execute(_HEADS_SQL)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("VACUUM ANALYZE compliance_archive")
    finally:
        conn.close()


def _manifest_rows(tail: bytes, fmt: str) -> int:
    text = tail.decode("utf-8").rstrip("\r\n").rsplit("\n", 1)[-1]
    if fmt == "csv":  # the manifest record's last column is the quoted manifest JSON
        text = text[text.index('"') + 1 : -1].replace('""', '"')
    rows: int = json.loads(text)["manifest"]["rows"]
    return rows


def measure_http(hs: Homeserver, admin: MatrixClient, fmt: str) -> Measurement:
    """One HTTP export of the whole archive, read as fast as this client can."""
    rss_before = _vm_rss_kb(hs.process.pid)
    cpu_before = _cpu_s(hs.process.pid)
    size = 0
    tail = b""
    headers = {"Authorization": f"Bearer {admin.access_token}"}
    with RssSampler(hs.process.pid) as rss, httpx.Client(base_url=hs.base_url, timeout=600) as http:
        start = time.perf_counter()
        with http.stream(
            "GET", f"{COMPLIANCE}/admin/archive/events", params={"format": fmt}, headers=headers
        ) as r:
            if r.status_code != 200:
                raise BenchmarkError(f"export answered {r.status_code}: {r.read()[:300]!r}")
            for chunk in r.iter_raw(256 * 1024):
                size += len(chunk)
                tail = (tail + chunk)[-64 * 1024 :]
        seconds = time.perf_counter() - start
    cpu = _cpu_s(hs.process.pid) - cpu_before
    return Measurement("http", _manifest_rows(tail, fmt), seconds, size, rss_before, rss.peak_kb, cpu)


def measure_cli(hs: Homeserver, fmt: str, out: Path) -> Measurement:
    """One `synapse-compliance export` of the whole archive; its peak RSS comes from `wait4`."""
    config = str(hs.workdir / "homeserver.yaml")
    command = [sys.executable, "-m", "synapse_compliance.cli", "export", "-c", config]
    start = time.perf_counter()
    process = subprocess.Popen(
        [*command, "--format", fmt, "-o", str(out), "--progress"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    stderr = process.stderr.read().decode(errors="replace")  # small: a progress line twice a second
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise BenchmarkError(f"CLI export failed: {stderr[-300:]}")
    # Its last progress line, "exported N rows, R rows/s", timed by the CLI after its start-up.
    inner = float(stderr.strip().splitlines()[-1].split(", ")[1].split()[0].replace(",", ""))
    size = out.stat().st_size
    with out.open("rb") as f:
        f.seek(max(0, size - 64 * 1024))
        tail = f.read()
    out.unlink()
    cpu = usage.ru_utime + usage.ru_stime
    return Measurement(
        "cli", _manifest_rows(tail, fmt), seconds, size, None, int(usage.ru_maxrss), cpu, inner
    )


def format_table(results: Sequence[Measurement]) -> str:
    """The report printed at the end."""
    lines = [
        f"{'export':<6} {'rows':>8} {'seconds':>7} {'rows/s':>8} {'inner':>8} {'CPU s':>6}"
        f" {'rows/CPU-s':>10} {'MB':>6} {'RSS before':>10} {'RSS peak':>8}",
    ]
    for m in results:
        before = f"{m.rss_before_kb / 1024:.0f} MB" if m.rss_before_kb is not None else "-"
        inner = f"{m.inner_rows_per_s:,.0f}" if m.inner_rows_per_s is not None else "-"
        lines.append(
            f"{m.how:<6} {m.rows:>8} {m.seconds:>7.2f} {m.rows_per_s:>8,.0f} {inner:>8} {m.cpu_s:>6.2f}"
            f" {m.rows / max(m.cpu_s, 1e-9):>10,.0f} {m.body_bytes / 1e6:>6.1f} {before:>10}"
            f" {m.rss_peak_kb / 1024:>5.0f} MB"
        )
    lines.append(
        "rows/s: wall clock (CLI: with its start-up; inner: its own rate after start-up);"
        " rows/CPU-s: rows per CPU second of the exporting process"
    )
    lines.append("target (DESIGN §8): at least 50,000 rows/s; peaks flat as the rows grow")
    return "\n".join(lines)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows added before each step (100000)")
    parser.add_argument("--rooms", type=int, default=20, help="rooms the rows are spread over (20)")
    parser.add_argument("--steps", type=int, default=2, help="how many times to add rows and measure (2)")
    parser.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.rooms < 1 or args.steps < 1:
        parser.error("--rows, --rooms and --steps must be at least 1")
    if (reason := unavailable_reason()) is not None:
        parser.error(reason)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    results: list[Measurement] = []

    def body() -> None:
        with (
            tempfile.TemporaryDirectory(prefix="bench-export-") as tmp,
            database_for("postgresql", prefix="compliance_bench") as db,
            running_homeserver(Path(tmp) / "hs", db, {}) as hs,
        ):
            admin = hs.register(admin=True)
            wait_for_schema(admin)
            for step in range(args.steps):
                _fill(db, step * args.rows + 1, (step + 1) * args.rows, args.rooms)
                for m in (
                    measure_http(hs, admin, args.format),
                    measure_cli(hs, args.format, Path(tmp) / "out"),
                ):
                    if m.rows != (step + 1) * args.rows:
                        raise BenchmarkError(
                            f"{m.how} export has {m.rows} rows, not {(step + 1) * args.rows}"
                        )
                    results.append(m)
                    print(format_table([m]).splitlines()[1], flush=True)

    if (code := run_guarded(body)) != 0:
        return code
    print(format_table(results))
    if args.json is not None:
        args.json.write_text(json.dumps([m.as_json() for m in results], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
