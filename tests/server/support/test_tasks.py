"""cancel_and_wait: an owner stops its background task whatever state the task is in."""

from __future__ import annotations

import asyncio
import logging

import pytest

from server.support.tasks import cancel_and_wait
from tests.conftest import scaled


@pytest.mark.gen_test(timeout=scaled(10))
async def test_a_running_task_is_cancelled_and_awaited() -> None:
    task = asyncio.get_running_loop().create_task(asyncio.sleep(60))
    await cancel_and_wait(task)
    assert task.cancelled()
    await cancel_and_wait(None)


@pytest.mark.gen_test(timeout=scaled(10))
async def test_a_task_that_had_failed_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def fail() -> None:
        raise RuntimeError("sweeper bug")

    task = asyncio.get_running_loop().create_task(fail(), name="sweeper")
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR):
        await cancel_and_wait(task)
    assert "sweeper" in caplog.text and "sweeper bug" in caplog.text
