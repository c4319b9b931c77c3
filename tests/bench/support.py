"""What the benchmarks' smoke tests share: run one bench module as its command line does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import scaled

ROOT = Path(__file__).resolve().parents[2]


def run_bench(module: str, *args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    """``python -m bench.<module> ARGS`` from the repository's root, its output captured;
    fails the test past ``timeout_s`` (scaled)."""
    return subprocess.run(
        [sys.executable, "-m", f"bench.{module}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=scaled(timeout_s),
        check=False,
    )
