"""The boards' memory benchmark still runs (on a few players): figures, not assertions."""

from __future__ import annotations

import re

import pytest

from tests.bench.support import run_bench

pytestmark = pytest.mark.slow


def test_board_memory_benchmark_reports_memory_and_disk_per_player_per_period() -> None:
    result = run_bench("board_memory", "--players", "2000", timeout_s=60)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert re.search(r"^rank indexes in memory: [\d,]+ B per player per period", out, re.M), out
    assert re.search(r"^SQLite file: [\d,]+ B per player per period", out, re.M), out
