"""The guards benchmark still runs (a fraction of a second): measured, not asserted on."""

from __future__ import annotations

from tests.bench.support import run_bench


def test_the_guards_benchmark_reports_each_cost() -> None:
    result = run_bench("guards", "--quick", timeout_s=60)
    assert result.returncode == 0, result.stdout + result.stderr
    for line in ("ask + AskDeadlines", "store write, direct", "store guard adds"):
        assert line in result.stdout
