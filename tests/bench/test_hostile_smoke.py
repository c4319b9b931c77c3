"""The hostile-clients benchmark still runs (for a few seconds): measured, not asserted on."""

from __future__ import annotations

from tests.bench.support import run_bench


def test_hostile_benchmark_quick_run_reports_every_scenario() -> None:
    result = run_bench("hostile", "--quick", timeout_s=180)
    assert result.returncode == 0, result.stdout + result.stderr
    for scenario in ("stalled", "pings", "connections", "users", "watchers"):
        assert f"== {scenario}:" in result.stdout, result.stdout
    for phase in ("before", "during", "after"):
        assert f"   {phase} " in result.stdout
    assert "loop lag p50 / p99" in result.stdout
    assert "connected 20 watchers" in result.stdout
    assert "(200: 200)" in result.stdout  # every user answered
