"""Deadlines on asks: expiry as data, and the sweeper on a running loop."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from actors.deadlines import AskDeadlines, AskTimedOut
from tests.conftest import scaled

pytestmark = pytest.mark.gen_test(timeout=scaled(10))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def futures(count: int) -> list[asyncio.Future[Any]]:
    loop = asyncio.get_running_loop()
    return [loop.create_future() for _ in range(count)]


async def test_only_replies_past_their_deadline_fail_and_answered_ones_are_left_alone() -> None:
    clock = Clock()
    deadlines = AskDeadlines(10, clock=clock)
    first, second, third = futures(3)
    deadlines.watch(first)
    clock.now = 4
    deadlines.watch(second)
    deadlines.watch(third)
    second.set_result("answered, not yet forgotten")
    assert deadlines.expire(9.9) == 0
    assert deadlines.expire(10) == 1
    assert isinstance(first.exception(), AskTimedOut)
    assert len(deadlines) == 2
    assert deadlines.expire(14) == 1  # second was answered in time: only third fails
    assert second.result() == "answered, not yet forgotten"
    assert isinstance(third.exception(), AskTimedOut)
    assert len(deadlines) == 0


async def test_forgotten_replies_are_not_watched() -> None:
    clock = Clock()
    deadlines = AskDeadlines(1, clock=clock)
    (reply,) = futures(1)
    deadlines.watch(reply)
    deadlines.forget(reply)
    deadlines.forget(reply)  # harmless twice
    assert deadlines.expire(100) == 0
    assert not reply.done()
    reply.cancel()


async def test_the_sweeper_fails_a_reply_nobody_answers() -> None:
    deadlines = AskDeadlines(0.1)
    deadlines.start()
    try:
        (reply,) = futures(1)
        deadlines.watch(reply)
        with pytest.raises(AskTimedOut):
            await asyncio.wait_for(reply, scaled(2))
    finally:
        await deadlines.stop()
        await deadlines.stop()  # idempotent


async def test_it_starts_once_and_needs_a_positive_timeout() -> None:
    with pytest.raises(ValueError):
        AskDeadlines(0)
    deadlines = AskDeadlines(1)
    deadlines.start()
    try:
        with pytest.raises(RuntimeError):
            deadlines.start()
    finally:
        await deadlines.stop()
