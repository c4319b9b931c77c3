"""A broadcast written in steps: each step yields to the event loop, and whatever happens
between two steps (joins, leaves, resyncs, new publications, shutdown) keeps every
watcher's stream consistent. Driven by hand, step by step, as data."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from actors.leaderboard import LeaderboardActor, Publication
from handlers.live.fanout import SLICE, Batch, Fanout
from handlers.tornado_internals import text_frame
from server.support.metrics import Metrics
from tests.conftest import scaled
from tests.handlers.live.test_fanout import (
    Clock,
    EmptyStore,
    FakeWatcher,
    Scores,
    drain,
    lagging,
    metric,
)
from tests.handlers.live.test_resume import Board

pytestmark = pytest.mark.gen_test(timeout=scaled(20))


class Steps:
    """The fan-out's scheduler, run by hand: ``run_one`` takes the next step."""

    def __init__(self) -> None:
        self.queued: list[Callable[[], None]] = []
        self.taken = 0

    def __call__(self, callback: Callable[[], None]) -> Steps.Handle:
        self.queued.append(callback)
        return Steps.Handle(self, callback)

    class Handle:
        def __init__(self, steps: Steps, callback: Callable[[], None]) -> None:
            self.steps, self.callback = steps, callback

        def cancel(self) -> None:
            if self.callback in self.steps.queued:
                self.steps.queued.remove(self.callback)

    def run_one(self) -> None:
        self.taken += 1
        self.queued.pop(0)()

    def run_all(self) -> int:
        """Take steps until none is scheduled; return how many."""
        taken = 0
        while self.queued:
            self.run_one()
            taken += 1
            assert taken < 1000
        return taken


@asynccontextmanager
async def stepped(bound: int = 1 << 20) -> AsyncIterator[tuple[Fanout, LeaderboardActor, Steps]]:
    """A leaderboard (interval 0) and a fan-out whose every step writes one slice."""
    leaderboard = LeaderboardActor(EmptyStore(), 10, 0.0)  # type: ignore[arg-type]
    await leaderboard.load()
    leaderboard.start()
    steps = Steps()
    fanout = Fanout(
        leaderboard,
        Metrics(),
        max_buffer_bytes=bound,
        slow_timeout_s=5.0,
        step_budget_s=0.0,  # one slice per step
        schedule=steps,
        clock=Clock(),
    )
    leaderboard.subscribe(fanout)
    try:
        yield fanout, leaderboard, steps
    finally:
        await fanout.stop()
        await leaderboard.stop()


def versions(watcher: FakeWatcher) -> list[int]:
    return [m["version"] for m in watcher.stream.messages()]


def consistent(watcher: FakeWatcher) -> Board:
    """The watcher's stream applied as a client would (versions consecutive, none older
    than its snapshot: Board asserts it)."""
    board = Board()
    for message in watcher.stream.messages():
        board.apply(message)
    return board


async def test_a_broadcast_goes_out_a_slice_per_step_and_what_happens_between_is_consistent() -> (
    None
):
    async with stepped() as (fanout, leaderboard, steps):
        scores = Scores(leaderboard)
        watchers = [FakeWatcher(wants_delta=i % 2 == 0, takes_all=True) for i in range(100)]
        for watcher in watchers:
            fanout.join(watcher, None)
        await scores.set("a", 1)  # version 1: its first step ran at once
        got_v1 = [w for w in watchers if versions(w)[-1:] == [1]]
        assert got_v1 == watchers[:SLICE]
        assert len(steps.queued) == 1

        # Between two steps: a watcher joins (its snapshot is of version 1, which the
        # walk has not reached everyone with yet), one that the walk has not reached
        # leaves, and two more versions are published, another watcher joining between
        # them (its snapshot is of version 2, which waits to go out with version 3).
        joiner = FakeWatcher(takes_all=True)
        fanout.join(joiner, None)
        leaver = watchers[60]
        leaver.close()
        fanout.leave(leaver)
        await scores.set("b", 2)
        late_joiner = FakeWatcher(wants_delta=False, takes_all=True)
        fanout.join(late_joiner, None)
        await scores.set("c", 3)
        assert len(steps.queued) == 1  # no second walk runs beside the first

        taken = steps.run_all()
        # The rest of version 1 (one of them gone), a slice per step; then versions 2 and
        # 3 together, in one walk of 101 watchers.
        assert taken == math.ceil((100 - SLICE) / SLICE) + math.ceil(101 / SLICE)
        await drain(joiner)
        await drain(late_joiner)
        for watcher in watchers:
            await drain(watcher)
        for watcher in watchers:
            if watcher is leaver:
                assert versions(watcher) == [0]
                continue
            assert versions(watcher) == [0, 1, 2, 3]
            assert consistent(watcher).version == 3
            # Versions 2 and 3 were joined into one write.
            assert watcher.stream.writes == 3
        assert versions(joiner) == [1, 2, 3]
        assert versions(late_joiner) == [2, 3]
        assert (
            consistent(joiner).rows == consistent(late_joiner).rows == consistent(watchers[0]).rows
        )
        assert metric(fanout, "scoreboard_broadcast_duration_seconds_count") == 2
        assert metric(fanout, "scoreboard_broadcast_step_seconds_count") == 1 + taken
        # Each step's own CPU time too (what the step cost, without the OS's pauses).
        assert metric(fanout, "scoreboard_broadcast_step_cpu_seconds_count") == 1 + taken
        cpu = metric(fanout, "scoreboard_broadcast_step_cpu_seconds_sum")
        assert 0 < cpu <= metric(fanout, "scoreboard_broadcast_step_seconds_sum") * 1.5
        assert metric(fanout, "scoreboard_ws_messages_total") == 99 + 100 * 2 + 1


async def test_a_watcher_resynced_between_steps_gets_no_version_older_than_its_snapshot() -> None:
    bound = 2048
    async with stepped(bound) as (fanout, leaderboard, steps):
        scores = Scores(leaderboard)
        watchers = [FakeWatcher(takes_all=True) for _ in range(2 * SLICE)]
        slow = FakeWatcher()  # reads only when told to
        for watcher in watchers:
            fanout.join(watcher, None)
        fanout.join(slow, None)  # last in the walk
        step = 0
        while not lagging(fanout, slow):
            step += 1
            assert step < 100
            await scores.set(f"u{step:02d}", step)
            steps.run_all()
        await scores.set("now", 1000)  # the walk reaches the first slice only
        assert len(steps.queued) == 1
        await drain(slow)
        fanout.check_lagging()  # resynced with a snapshot of the version in progress
        assert not lagging(fanout, slow)
        steps.run_all()
        await scores.set("later", 2000)
        steps.run_all()
        await drain(slow)
        events = [(m["event"], m["version"]) for m in slow.stream.messages()]
        assert events[-2:] == [
            ("snapshot", leaderboard.view.version - 1),
            ("delta", leaderboard.view.version),
        ]
        assert consistent(slow).rows == consistent(watchers[0]).rows


async def test_close_all_between_steps_stops_every_write() -> None:
    async with stepped() as (fanout, leaderboard, steps):
        scores = Scores(leaderboard)
        watchers = [FakeWatcher(takes_all=True) for _ in range(3 * SLICE)]
        for watcher in watchers:
            fanout.join(watcher, None)
        await scores.set("a", 1)
        fanout.close_all(1001, "server shutting down")
        await scores.set("b", 2)
        steps.run_all()
        for i, watcher in enumerate(watchers):
            assert watcher.closed == [(1001, "server shutting down")]
            await drain(watcher)
            assert versions(watcher) == ([0, 1] if i < SLICE else [0])


async def test_stop_between_steps_cancels_the_rest_of_the_walk() -> None:
    async with stepped() as (fanout, leaderboard, steps):
        scores = Scores(leaderboard)
        watchers = [FakeWatcher(takes_all=True) for _ in range(2 * SLICE)]
        for watcher in watchers:
            fanout.join(watcher, None)
        await scores.set("a", 1)
        assert len(steps.queued) == 1
        await fanout.stop()
        assert steps.queued == []
        await drain(watchers[-1])
        assert versions(watchers[-1]) == [0]


def publication(version: int) -> Publication:
    return Publication("e", version, (), f'{{"u":{version}}}', f'{{"d":{version}}}')


def test_a_batch_gives_each_watcher_the_versions_after_its_own() -> None:
    batch = Batch([publication(5), publication(6), publication(7)])
    seed = [text_frame(f'{{"u":{v}}}') for v in (5, 6, 7)]
    delta = [text_frame(f'{{"d":{v}}}') for v in (5, 6, 7)]
    assert (batch.first, batch.count) == (5, 3)
    assert batch.after(4, delta=False) == (b"".join(seed), 3)
    assert batch.after(0, delta=True) == (b"".join(delta), 3)
    assert batch.after(5, delta=True) == (b"".join(delta[1:]), 2)
    assert batch.after(6, delta=False) == (seed[2], 1)
    assert batch.after(7, delta=False) == (b"", 0)
    assert batch.after(100, delta=True) == (b"", 0)


def test_a_batch_of_one_shares_its_frame() -> None:
    only: Any = Batch([publication(1)])
    assert only.seed == text_frame('{"u":1}')
    with pytest.raises(ValueError):
        Batch([])
