"""The guards benchmark still runs (a fraction of a second): measured, not asserted on."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import scaled

ROOT = Path(__file__).resolve().parents[2]


def test_the_guards_benchmark_reports_each_cost() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.guards", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=scaled(60),
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for line in ("ask + AskDeadlines", "store write, direct", "store guard adds"):
        assert line in result.stdout
