"""What the benchmarks that drive one server at a time share: their error, waiting for the
module's schema, and a guarded run that always stops servers and drops databases."""

import signal
import sys
import time
from collections.abc import Callable
from types import FrameType

import httpx

from tests.harness.client import MatrixClient


class BenchmarkError(Exception):
    """The server or the CLI did not behave as the benchmark needs."""


def wait_for_schema(admin: MatrixClient, timeout_s: float = 60) -> None:
    """Wait until the module answers an archive request (its schema is ready)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r = admin.compliance("GET", "admin/archive/events", params={"room_id": "!none:localhost"})
        if r.status_code == 200:
            return
        time.sleep(0.2)
    raise BenchmarkError("the module's schema did not become ready")


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwind, so servers stop and databases are dropped


def run_guarded(body: Callable[[], None]) -> int:
    """Run `body`; 0 when it finished, 1 (one line on stderr) when a server misbehaved, 130 on
    Ctrl-C or `kill` (SIGTERM, which would otherwise end us without unwinding)."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        body()
    except (BenchmarkError, httpx.HTTPError) as e:
        print(f"benchmark failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; servers stopped, databases dropped", file=sys.stderr)
        return 130
    return 0
