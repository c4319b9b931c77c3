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

    lagging = False

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def send(self, stream: object, frame: bytes) -> bool:
        self.frames.append(frame)
        return True

    def events(self) -> list[dict[str, Any]]:
        # A short text frame: 2 bytes of header, then the payload (under 126 bytes: 2).
        return [json.loads(f[4:] if f[1] == 126 else f[2:]) for f in self.frames]


class Watcher:
    wants_delta = False
    out = object()

    def close(self, code: int | None = None, reason: str | None = None) -> None: ...


class Seats:
    def __init__(self) -> None:
        self.seats: dict[Any, Seat] = {}

    def seat_of(self, watcher: Any) -> Any:
        return self.seats.get(watcher)

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
    ranks = Ranks(RankIndex(BoardRow(f"p{i:05}", "P", 10_000 - i, 0, 1) for i in range(players)))
    seats = Seats()
    metrics = Metrics()
    stream = RankStream(ranks, seats, metrics, interval_s=0.02, tick_share=0.01)
    stream.start()
    watchers = []
    for i in range(players):
        watcher = Watcher()
        seats.seats[watcher] = Seat()
        stream.watch(watcher, f"p{i:05}", 1)
        watchers.append(watcher)
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
