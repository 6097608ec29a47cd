"""Running `synapse-compliance` as an operator does: a subprocess, from the repository root."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_cli(command: str, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`synapse-compliance COMMAND -c CONFIG ARGS`, its output captured (it may fail)."""
    return subprocess.run(
        [sys.executable, "-m", "synapse_compliance.cli", command, "-c", str(config), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        cwd=REPO,
    )
