"""The update benchmark still runs (for a few seconds): it is measured, not asserted on.

Only correctness is asserted: both servers were driven, the ratios were printed and our
server answered every request with a 2xx. The speed goals are for the full run to report.
"""

from __future__ import annotations

import re
import shutil

import pytest

from tests.bench.support import run_bench

pytestmark = pytest.mark.slow


def run_quick(loader: str, *more: str) -> str:
    result = run_bench("updates", "--quick", "--loader", loader, *more, timeout_s=60)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return result.stdout


def assert_complete_report(out: str, loader: str) -> None:
    assert f"loader: {loader}" in out
    for endpoint in ("POST /api/update-score", "GET /api/top-scores"):
        for server in ("ours", "bare"):
            row = re.search(rf"^{re.escape(endpoint)}\s+{server}\s+([\d,]+)\s", out, re.M)
            assert row is not None, f"no {server} row for {endpoint}:\n{out}"
            assert int(row.group(1).replace(",", "")) > 0, out
        assert re.search(rf"^  {re.escape(endpoint)}: [\d,]+ / [\d,]+ = [\d.]+x$", out, re.M), out
    assert "hot-user, 16 connections" in out
    assert re.search(r"^our server: 0 non-2xx, 0 socket errors in [\d,]+ requests", out, re.M), out
    for endpoint in ("POST /api/update-score", "GET /api/top-scores"):  # scraped from /metrics
        gc_line = rf"^our server's garbage collections in its {re.escape(endpoint)} rounds \("
        assert re.search(gc_line + r"\d+ s\): generation 0: \d+, 1: \d+, 2: \d+$", out, re.M), out


def test_updates_benchmark_quick_run_with_the_python_loader() -> None:
    assert_complete_report(run_quick("python"), "python")


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not on PATH")
def test_updates_benchmark_quick_run_with_wrk() -> None:
    assert_complete_report(run_quick("wrk"), "wrk")


def test_updates_benchmark_quick_run_on_a_board_of_three_periods() -> None:
    out = run_quick("python", "--periods", "daily,weekly,all_time")
    assert_complete_report(out, "python")
