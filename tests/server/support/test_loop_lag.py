"""The event loop's lag: a timer's lateness, reported while something holds the loop."""

from __future__ import annotations

import asyncio
import time

import pytest

from server.support.loop_lag import LoopLagMonitor
from tests.conftest import scaled, serving
from tests.handlers.live.test_socket import metrics_text

pytestmark = pytest.mark.gen_test(timeout=scaled(10))


async def test_a_loop_held_by_blocking_work_shows_as_lag_and_stop_ends_the_task() -> None:
    seen: list[float] = []
    enough = asyncio.Event()

    def observe(lag: float) -> None:
        seen.append(lag)
        if len(seen) >= 10:
            enough.set()

    monitor = LoopLagMonitor(observe, interval_s=0.01)
    monitor.start()
    try:
        await asyncio.sleep(0.05)
        time.sleep(0.1)  # noqa: ASYNC251  (what a long broadcast step would do)
        await asyncio.wait_for(enough.wait(), scaled(5))
    finally:
        await monitor.stop()
    assert max(seen) >= 0.09
    assert min(seen) < 0.05
    count = len(seen)
    await asyncio.sleep(0.05)
    assert len(seen) == count  # stopped
    await monitor.stop()  # idempotent


async def test_the_server_exports_its_loop_lag_and_stops_measuring_on_shutdown() -> None:
    async with serving() as client:
        service = client.running.service
        await asyncio.sleep(0.25)
        text = await metrics_text(client)
        count = [
            float(line.split()[1])
            for line in text.splitlines()
            if line.startswith("scoreboard_event_loop_lag_seconds_count ")
        ]
        assert count and count[0] >= 1
    assert service.loop_lag._task is None
    names = {task.get_name() for task in asyncio.all_tasks()}
    assert "loop-lag" not in names
