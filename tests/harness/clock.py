"""Servers whose wall clock runs in the past, so the module stamps rows as if written back then.

Pruning goes by `archived_ts`, the module's own clock when it wrote a row, and retention is at
least 184 days: old rows are made honestly by running Synapse with its clock set back (a
`sitecustomize` on the server's PYTHONPATH shifts `time.time` before Twisted and Synapse read
it), through the real API and archiver.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

SITECUSTOMIZE = '''"""Test only: shift this process's wall clock by COMPLIANCE_TEST_CLOCK_OFFSET_S seconds."""
import os
import time

_offset = float(os.environ.get("COMPLIANCE_TEST_CLOCK_OFFSET_S", "0"))
if _offset:
    _time, _time_ns = time.time, time.time_ns
    time.time = lambda: _time() + _offset
    time.time_ns = lambda: _time_ns() + int(_offset * 1_000_000_000)
'''


@contextmanager
def clock_shifted(folder: Path, days: int) -> Iterator[None]:
    """Servers started inside run with their clock `days` in the past."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH")) if p))
        mp.setenv("COMPLIANCE_TEST_CLOCK_OFFSET_S", str(-days * 86_400))
        yield
