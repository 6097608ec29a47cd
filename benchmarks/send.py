"""End-to-end A/B benchmark of message sending: plain Synapse (A) against Synapse + module (B).

Both servers run at once on fresh databases, but only one is under load at a time. Each round
runs A and B once, alternating the order (AB, BA, AB, ...) so slow drift of the machine hits both
alike. In a run every sender sends its messages back to back into one shared private room, all
senders concurrently. See benchmarks/README.md for how to read the output (DESIGN §8).

    python -m benchmarks.send [--db sqlite|postgresql] [--senders 8] [--messages 200]
                              [--rounds 3] [--json out.json]
"""

import argparse
import asyncio
import json
import math
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack, ExitStack
from pathlib import Path
from types import FrameType
from typing import Any

import attrs
import httpx
from prometheus_client.parser import text_string_to_metric_families
from scipy.stats import t as student_t

from tests.harness.client import MatrixClient, q
from tests.harness.homeserver import Homeserver, StartupFailed, database_for, running_homeserver
from tests.harness.postgres import unavailable_reason


class BenchmarkError(Exception):
    """The servers did not behave as the benchmark needs (a refused request)."""


@attrs.frozen
class Arm:
    """One prepared server: the room all senders share and their access tokens."""

    name: str
    label: str
    base_url: str
    room_id: str
    tokens: tuple[str, ...]


@attrs.frozen
class Run:
    """One timed run: wall time of the whole burst and each request's latency in ms."""

    wall_s: float
    latencies_ms: tuple[float, ...]

    @property
    def throughput(self) -> float:
        """Messages per second over the whole burst."""
        return len(self.latencies_ms) / self.wall_s


def _expect_ok(r: httpx.Response, what: str) -> None:
    if r.status_code != 200:
        raise BenchmarkError(f"{what} failed: HTTP {r.status_code} {r.text[:300]}")


def _prepare(hs: Homeserver, name: str, label: str, senders: int, with_module: bool) -> Arm:
    """Register an admin and `senders` users, and put all senders in one private group room."""
    admin = hs.register(admin=True)
    clients: list[MatrixClient] = [hs.register() for _ in range(senders)]
    try:
        creator = clients[0]
        if with_module:  # plain Synapse has no module API (it would 404) and no gate to pass
            for c in clients:  # every sender verified: all identity gates on, nobody refused
                _expect_ok(admin.verify(c.user_id), f"{name}: verifying a sender")
                # The benchmark floods on purpose; the `trusted` tier's message rate (20/s, burst
                # 100) stays above what a sender reaches here, so the gates run but never refuse.
                _expect_ok(
                    admin.compliance(
                        "POST",
                        f"admin/users/{q(c.user_id)}/credit",
                        json={"delta": 400, "reason": "benchmark"},
                    ),
                    f"{name}: raising a sender to the trusted tier",
                )
        r = creator.create_room(name="bench", preset="private_chat")
        _expect_ok(r, f"{name}: creating the room")
        room_id = str(r.json()["room_id"])
        for other in clients[1:]:
            _expect_ok(creator.invite(room_id, other.user_id), f"{name}: inviting a sender")
            _expect_ok(other.join(room_id), f"{name}: joining the room")
        tokens = tuple(c.access_token or "" for c in clients)
    finally:
        for c in [admin, *clients]:
            c.http.close()
    return Arm(name, label, hs.base_url, room_id, tokens)


async def _send_burst(arm: Arm, http: Sequence[httpx.AsyncClient], messages: int, tag: str) -> Run:
    """All senders send `messages` messages each, concurrently; txn ids are unique per `tag`."""
    path = f"/_matrix/client/v3/rooms/{q(arm.room_id)}/send/m.room.message"
    latencies: list[float] = []

    async def sender(client: httpx.AsyncClient) -> None:
        for i in range(messages):
            start = time.perf_counter()
            r = await client.put(f"{path}/{tag}-{i}", json={"msgtype": "m.text", "body": f"m{i}"})
            latencies.append((time.perf_counter() - start) * 1000)
            _expect_ok(r, f"{arm.name}: sending")

    start = time.perf_counter()
    try:
        async with asyncio.TaskGroup() as group:
            for client in http:
                group.create_task(sender(client))
    except ExceptionGroup as failed:
        # The TaskGroup has cancelled the other senders; report the first failure as it is.
        raise failed.exceptions[0] from None
    return Run(time.perf_counter() - start, tuple(latencies))


CallbackCosts = dict[str, tuple[float, float]]  # callback -> (calls, seconds)


async def _callback_costs(base_url: str) -> CallbackCosts:
    """The module's per-callback time so far, from the server's Prometheus metrics."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        text = (await client.get("/_synapse/metrics")).text
    costs: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "synapse_compliance_callback_seconds":
            continue
        for sample in family.samples:
            entry = costs.setdefault(sample.labels["callback"], [0.0, 0.0])
            if sample.name.endswith("_count"):
                entry[0] = sample.value
            elif sample.name.endswith("_sum"):
                entry[1] = sample.value
    return {name: (calls, seconds) for name, (calls, seconds) in costs.items()}


def _cost_diff(before: CallbackCosts, after: CallbackCosts) -> dict[str, dict[str, float]]:
    """Calls and mean µs per callback between two scrapes (callbacks that ran only)."""
    out = {}
    for name, (calls, seconds) in sorted(after.items()):
        calls0, seconds0 = before.get(name, (0.0, 0.0))
        if calls > calls0:
            out[name] = {"calls": calls - calls0, "mean_us": (seconds - seconds0) / (calls - calls0) * 1e6}
    return out


async def _measure(
    arms: Sequence[Arm], messages: int, rounds: int
) -> tuple[dict[str, list[Run]], dict[str, dict[str, float]]]:
    """A warm-up burst per arm (discarded), then `rounds` rounds in alternating order.

    Also returns the module's in-process cost per callback over the counted rounds (server B),
    which resolves far below what the end-to-end ratio can show (DESIGN §8).
    """
    async with AsyncExitStack() as stack:
        http = {
            arm.name: [
                await stack.enter_async_context(
                    httpx.AsyncClient(
                        base_url=arm.base_url, timeout=60, headers={"Authorization": f"Bearer {t}"}
                    )
                )
                for t in arm.tokens
            ]
            for arm in arms
        }
        for arm in arms:
            await _send_burst(arm, http[arm.name], max(5, messages // 10), "warmup")
        before = await _callback_costs(arms[-1].base_url)
        runs: dict[str, list[Run]] = {arm.name: [] for arm in arms}
        for n in range(rounds):
            for arm in arms if n % 2 == 0 else reversed(arms):
                runs[arm.name].append(await _send_burst(arm, http[arm.name], messages, f"r{n}"))
        return runs, _cost_diff(before, await _callback_costs(arms[-1].base_url))


def _percentile(values: Sequence[float], p: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def summarise(arms: Sequence[Arm], runs: Mapping[str, Sequence[Run]]) -> dict[str, Any]:
    """Throughput and latency per arm, and the B/A ratio with its 95 % confidence interval.

    The ratio is paired by round (A and B ran back to back), so machine drift between rounds
    cancels. Ratios are skewed, so the t-interval is taken over the per-round log ratios and
    mapped back: the point estimate is their geometric mean. With few rounds the interval is
    wide on purpose (3 rounds: t = 4.30); bootstrap would understate it at such small n.
    """
    a, b = (arm.name for arm in arms)
    out: dict[str, Any] = {"servers": {}}
    for arm in arms:
        pooled = [x for run in runs[arm.name] for x in run.latencies_ms]
        per_round = [run.throughput for run in runs[arm.name]]
        out["servers"][arm.name] = {
            "label": arm.label,
            "throughput_per_round": per_round,
            "throughput_mean": statistics.fmean(per_round),
            "p50_ms": _percentile(pooled, 50),
            "p99_ms": _percentile(pooled, 99),
        }
    pairs = zip(runs[a], runs[b], strict=True)
    logs = [math.log(rb.throughput / ra.throughput) for ra, rb in pairs]
    half = float(student_t.ppf(0.975, len(logs) - 1)) * statistics.stdev(logs) / math.sqrt(len(logs))
    centre = statistics.fmean(logs)
    out["ratio"] = {
        "per_round": [math.exp(x) for x in logs],
        "geometric_mean": math.exp(centre),
        "ci95": [math.exp(centre - half), math.exp(centre + half)],
        "method": "paired t-interval on log ratios",
    }
    sa, sb = out["servers"][a], out["servers"][b]
    out["added_latency_ms"] = {p: sb[f"{p}_ms"] - sa[f"{p}_ms"] for p in ("p50", "p99")}
    return out


def format_table(summary: Mapping[str, Any]) -> str:
    """The summary as a plain-text table."""
    c = summary["config"]
    lines = [
        f"send benchmark: {c['db']}, {c['senders']} senders x {c['messages']} messages, "
        f"{c['rounds']} rounds (order AB, BA, ...)",
        f"{'server':<24}{'msg/s':>9}{'p50 ms':>9}{'p99 ms':>9}   msg/s per round",
    ]
    for name, s in summary["servers"].items():
        per_round = " ".join(f"{x:.1f}" for x in s["throughput_per_round"])
        lines.append(
            f"{name + ' ' + s['label']:<24}{s['throughput_mean']:>9.1f}"
            f"{s['p50_ms']:>9.2f}{s['p99_ms']:>9.2f}   {per_round}"
        )
    r, lat = summary["ratio"], summary["added_latency_ms"]
    lines += [
        f"B/A throughput ratio: {r['geometric_mean']:.3f}  95% CI [{r['ci95'][0]:.3f}, "
        f"{r['ci95'][1]:.3f}]  ({r['method']}; per round: "
        + " ".join(f"{x:.3f}" for x in r["per_round"])
        + ")",
        f"added latency B-A: p50 {lat['p50']:+.2f} ms, p99 {lat['p99']:+.2f} ms",
        "module callbacks on B, in-process, counted rounds only:",
    ]
    for name, cost in summary.get("callback_cost", {}).items():
        lines.append(f"  {name:<40}{cost['calls']:>8.0f} calls {cost['mean_us']:>9.1f} µs mean")
    return "\n".join(lines)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.send",
        description="End-to-end A/B send benchmark: plain Synapse (A) vs Synapse + module (B).",
    )
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--senders", type=int, default=8, help="concurrent senders (default 8)")
    parser.add_argument("--messages", type=int, default=200, help="messages per sender per run")
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds, at least 2 (default 3)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON to this file")
    args = parser.parse_args(argv)
    if args.senders < 1 or args.messages < 1:
        parser.error("--senders and --messages must be at least 1")
    if args.rounds < 2:
        parser.error("--rounds must be at least 2 for a confidence interval")
    if args.db == "postgresql" and (reason := unavailable_reason()) is not None:
        parser.error(reason)
    return args


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # Re-raised as SIGINT so that asyncio.run, while it runs, cancels its task cleanly (Ctrl-C).
    signal.raise_signal(signal.SIGINT)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; exit 1 with one line on stderr if a server misbehaves."""
    args = _parse_args(argv)
    # `kill` (SIGTERM) would otherwise end us without unwinding and leave both servers running.
    signal.signal(signal.SIGTERM, _interrupt)
    plans: list[tuple[str, str, dict[str, Any] | None]] = [
        ("A", "plain Synapse", None),
        ("B", "Synapse + module", {}),  # the module with its defaults
    ]
    try:
        # ExitStack unwinds before the temporary folder goes: servers stop, then databases drop.
        with tempfile.TemporaryDirectory(prefix="bench-send-") as tmp, ExitStack() as stack:
            arms = []
            for name, label, module_config in plans:
                db = stack.enter_context(database_for(args.db, prefix="compliance_bench"))
                hs = stack.enter_context(
                    running_homeserver(Path(tmp) / name, db, module_config, metrics=True)
                )
                arms.append(_prepare(hs, name, label, args.senders, module_config is not None))
            runs, costs = asyncio.run(_measure(arms, args.messages, args.rounds))
    except (BenchmarkError, StartupFailed, httpx.HTTPError) as e:
        print(f"benchmark failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; servers stopped, temporary data removed", file=sys.stderr)
        return 130
    summary = {
        "config": {k: vars(args)[k] for k in ("db", "senders", "messages", "rounds")},
        **summarise(arms, runs),
        "callback_cost": costs,
    }
    print(format_table(summary))
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
