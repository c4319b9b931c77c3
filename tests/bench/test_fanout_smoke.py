"""The fan-out benchmark still runs (for a few seconds): it is measured, not asserted on."""

from __future__ import annotations

from tests.bench.support import run_bench


def test_fanout_benchmark_quick_run_delivers_every_change() -> None:
    result = run_bench("fanout", "--quick", timeout_s=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ours/seed" in result.stdout and "textbook" in result.stdout
    assert "no missed updates: MET" in result.stdout
