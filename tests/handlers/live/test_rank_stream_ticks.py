"""RankStream's ticks with fake connections: the CPU budget of a tick, and its order."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from actors.ranks import RankMoves
from handlers.live.rank_stream import RankStream
from server.domain.rank_index import RankIndex
from server.domain.records import BoardRow
from server.domain.topk import rank_key
from server.support.metrics import Metrics
from tests.conftest import eventually, scaled

pytestmark = pytest.mark.gen_test(timeout=scaled(30))


class Seat:
    """A connection's seat: records the frames written to it."""

    def __init__(self) -> None:
        self.frames: list[str] = []  # the messages written, in order

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(message) for message in self.frames]


class Watcher:
    wants_delta = False
    season = None
    out = object()

    def close(self, code: int | None = None, reason: str | None = None) -> None: ...


class Seats:
    """The fan-out's part: seats, and writes to them (``broken``: writing raises)."""

    def __init__(self) -> None:
        self.seats: dict[Any, Seat] = {}
        self.broken: set[Any] = set()

    def seat_of(self, watcher: Any) -> Any:
        return self.seats.get(watcher)

    def write_own(self, watcher: Any, message: str) -> bool:
        if watcher in self.broken:
            raise OSError("the test's broken connection")
        self.seats[watcher].frames.append(message)
        return True

    def on_resync(self, callback: Any) -> None: ...


class Ranks:
    def __init__(self, index: RankIndex) -> None:
        self.index = index
        self.moves: RankMoves | None = None

    def apply(self, row: BoardRow) -> None:
        held = self.index.get(row.user_id)
        if self.index.apply(row) and self.moves is not None:
            self.moves.moved(row.user_id, None if held is None else rank_key(held))


async def test_a_tick_past_its_budget_leaves_the_rest_for_the_next_each_once() -> None:
    players = 3_000
    ranks, seats, metrics = board(players), Seats(), Metrics()
    stream = RankStream(ranks, seats, metrics, interval_s=0.02, tick_share=0.01)
    stream.start()
    watchers = watched(ranks, seats, stream, players)
    # A newcomer at the top: every rank below moves by one, every watcher changes.
    ranks.apply(BoardRow("leader", "L", 10**6, 0, 1))

    def ticks() -> float:
        return metrics.registry.get_sample_value("scoreboard_rank_tick_seconds_count") or 0.0

    await eventually(lambda: ticks() >= 1, "the first tick ended")
    waiting = metrics.registry.get_sample_value("scoreboard_rank_watchers_waiting")
    await eventually(
        lambda: all(len(seats.seats[w].frames) == 2 for w in watchers),
        "every watcher got its second event",
        timeout_s=10,
    )
    assert waiting is not None and waiting > 0  # the first tick could not do them all
    assert ticks() > 1
    for i, watcher in enumerate(watchers):
        first, second = seats.seats[watcher].events()
        assert first["rank"] == i + 1 and first["previous"] is None
        assert (second["rank"], second["previous"]) == (i + 2, i + 1)
    await asyncio.sleep(0.1)  # nothing more comes
    assert all(len(seats.seats[w].frames) == 2 for w in watchers)
    stream.stop()


def watched(ranks: Ranks, seats: Seats, stream: RankStream, players: int) -> list[Watcher]:
    watchers = []
    for i in range(players):
        watcher = Watcher()
        seats.seats[watcher] = Seat()
        stream.watch(watcher, f"p{i:05}", 1)
        watchers.append(watcher)
    return watchers


def board(players: int) -> Ranks:
    return Ranks(RankIndex(BoardRow(f"p{i:05}", "P", 10_000 - i, 0, 1) for i in range(players)))


async def test_watchers_leaving_mid_tick_are_forgotten_and_the_last_unhooks_the_index(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ranks, seats = board(2_000), Seats()
    stream = RankStream(ranks, seats, Metrics(), interval_s=0.02, tick_share=0.01)
    stream.start()
    watchers = watched(ranks, seats, stream, 2_000)
    assert ranks.moves is stream  # hooked while anyone watches
    seats.broken.add(watchers[1])  # its writes raise: logged, the others go on
    ranks.apply(BoardRow("leader", "L", 10**6, 0, 1))  # every watcher changes
    await asyncio.sleep(0.03)  # the first tick ran out of its budget
    for watcher in watchers[1_000:]:  # half of them leave, most while queued
        stream.leave(watcher)
    await eventually(
        lambda: all(len(seats.seats[w].frames) == 2 for w in watchers[2:1_000]),
        "the watchers that stayed got their second event",
        timeout_s=10,
    )
    assert len(seats.seats[watchers[1]].frames) == 1  # the broken one: its first only
    assert "a rank event failed" in caplog.text
    assert stream._watches.placed == 1_000 and len(stream) == 1_000
    for watcher in watchers[:1_000]:
        stream.leave(watcher)
    assert stream._watches.placed == 0 and len(stream) == 0
    assert ranks.moves is None  # no watcher: the write path tells no one
    stream.stop()
