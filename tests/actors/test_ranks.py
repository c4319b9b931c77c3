"""LiveRanks: the rank index loaded from the store in pages and kept current meanwhile."""

from __future__ import annotations

import asyncio
import logging

import pytest

from actors.ranks import LiveRanks
from server.domain.records import BoardRow
from server.store.port import StoreUnavailable
from tests.conftest import scaled

pytestmark = pytest.mark.gen_test(timeout=scaled(10))


def row(user: str, score: int, v: int = 1) -> BoardRow:
    return BoardRow(user, user.title(), score, 1_000 + v, v)


class PagedStore:
    """``ranked_rows`` over ``rows`` as the store port pages them (by user id), noting
    each call; ``gate``: each call waits for it; ``fail_at``: that call raises."""

    def __init__(self, rows: list[BoardRow]) -> None:
        self.rows = rows
        self.calls: list[tuple[str | None, int]] = []
        self.gate: asyncio.Event | None = None
        self.fail_at: int | None = None

    async def ranked_rows(self, after_user_id: str | None, limit: int) -> list[BoardRow]:
        self.calls.append((after_user_id, limit))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail_at == len(self.calls):
            raise StoreUnavailable("the test's store is down")
        by_id = sorted(self.rows, key=lambda r: r.user_id)
        return [r for r in by_id if after_user_id is None or r.user_id > after_user_id][:limit]


def players(n: int) -> list[BoardRow]:
    return [row(f"p{i:03d}", (i * 37) % 101) for i in range(n)]


def board_order(rows: list[BoardRow]) -> list[str]:
    return [r.user_id for r in sorted(rows, key=lambda r: (-r.score, r.reached_ms, r.user_id))]


async def test_it_loads_every_player_in_pages_and_logs_progress(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rows = players(25)
    store = PagedStore(rows)
    ranks = LiveRanks(store, batch_size=10, progress_every_s=0)
    assert not ranks.loaded and len(ranks.index) == 0
    with caplog.at_level(logging.INFO, logger="actors.ranks"):
        await ranks.load()
    assert store.calls == [(None, 10), ("p009", 10), ("p019", 10)]
    assert ranks.loaded and not ranks.loading
    assert [r.user_id for _, r in ranks.index.page(1, 100)] == board_order(rows)
    lines = [r.getMessage() for r in caplog.records if r.name == "actors.ranks"]
    assert lines == [
        "loading the rank index: 10 players so far",
        "loading the rank index: 20 players so far",
        "rank index loaded: 25 players in 0.0 s",
    ]
    assert caplog.records[-1].players == 25  # type: ignore[attr-defined]


async def test_a_full_last_page_is_followed_by_an_empty_one() -> None:
    store = PagedStore(players(20))
    ranks = LiveRanks(store, batch_size=10)
    await ranks.load()
    assert store.calls == [(None, 10), ("p009", 10), ("p019", 10)]
    assert len(ranks.index) == 20


async def test_progress_lines_come_at_most_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    times = iter(float(t) for t in range(100))  # one second per clock reading
    ranks = LiveRanks(
        PagedStore(players(50)), batch_size=5, progress_every_s=3, clock=lambda: next(times)
    )
    with caplog.at_level(logging.INFO, logger="actors.ranks"):
        await ranks.load()
    lines = [r.getMessage() for r in caplog.records if r.name == "actors.ranks"]
    # Nine full pages read at t = 1..9: a line at t = 3, 6, 9; then the total.
    assert lines[:-1] == [f"loading the rank index: {n} players so far" for n in (15, 30, 45)]
    assert lines[-1].startswith("rank index loaded: 50 players in ")


async def test_it_gives_the_loop_to_others_between_pages() -> None:
    """A store that answers at once (in memory) must not hold the loop for the whole load."""
    turns = 0

    async def other_work() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    other = asyncio.ensure_future(other_work())
    try:
        await asyncio.sleep(0)
        before = turns
        await LiveRanks(PagedStore(players(50)), batch_size=5).load()
        assert turns - before >= 10
    finally:
        other.cancel()


async def test_updates_taken_during_a_reload_reach_the_new_index() -> None:
    """A reload swaps a new index in whole; what this pod wrote meanwhile is not lost, and
    the old index answered (complete) until the swap."""
    store = PagedStore([row("a", 10), row("b", 20), row("c", 30)])
    ranks = LiveRanks(store, batch_size=2)
    await ranks.load()
    old = ranks.index
    store.rows = [row("a", 10), row("b", 20), row("c", 30), row("d", 5)]  # d: a missed write
    store.gate = asyncio.Event()
    reload = asyncio.ensure_future(ranks.load())
    await asyncio.sleep(0.01)
    assert ranks.loading and ranks.index is old
    ranks.apply(row("a", 99, v=2))  # written on this pod during the load
    ranks.remove("c", 2)  # banned on this pod during the load
    assert old.rank_of("a") == 1 and old.rank_of("c") is None  # the old one answers
    store.gate.set()
    await reload
    assert ranks.index is not old
    assert [r.user_id for _, r in ranks.index.page(1, 10)] == ["a", "b", "d"]
    # The removal's version is remembered: an older row of c arriving late stays out.
    ranks.apply(row("c", 30, v=1))
    assert ranks.index.rank_of("c") is None
    # After the swap, updates go to the new index only.
    ranks.apply(row("d", 50, v=2))
    assert ranks.index.rank_of("d") == 2 and old.rank_of("d") is None


async def test_a_failed_load_keeps_the_index_held() -> None:
    store = PagedStore(players(6))
    ranks = LiveRanks(store, batch_size=2)
    await ranks.load()
    held = ranks.index
    store.fail_at = len(store.calls) + 2
    with pytest.raises(StoreUnavailable):
        await ranks.load()
    assert ranks.index is held and ranks.loaded and not ranks.loading
    ranks.apply(row("new", 1000))  # nothing is kept for a load that no longer runs
    assert ranks.index.rank_of("new") == 1


async def test_a_first_load_that_fails_leaves_it_unloaded() -> None:
    store = PagedStore(players(6))
    store.fail_at = 1
    ranks = LiveRanks(store, batch_size=2)
    with pytest.raises(StoreUnavailable):
        await ranks.load()
    assert not ranks.loaded and not ranks.loading


async def test_two_loads_at_once_are_refused() -> None:
    store = PagedStore(players(3))
    store.gate = asyncio.Event()
    ranks = LiveRanks(store)
    first = asyncio.ensure_future(ranks.load())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError):
        await ranks.load()
    store.gate.set()
    await first
    assert len(ranks.index) == 3


class Moves:
    """A listener of the index's moves (what the live rank stream hears)."""

    def __init__(self) -> None:
        self.heard: list[object] = []

    def moved(self, user_id: str, old: object) -> None:
        self.heard.append((user_id, old))

    def replaced(self) -> None:
        self.heard.append("replaced")


async def test_a_listener_hears_each_change_with_the_key_before_it_and_each_reload() -> None:
    ranks = LiveRanks(PagedStore([row("a", 5)]))
    ranks.moves = moves = Moves()
    await ranks.load()
    ranks.apply(row("b", 3))  # a newcomer: not ranked before
    ranks.apply(row("a", 9, v=2))
    ranks.apply(row("a", 7, v=1))  # older than the row held: no change, nothing heard
    ranks.remove("b", 2)
    ranks.remove("zed", 1)  # not ranked: nothing to hear
    assert moves.heard == [
        "replaced",
        ("b", None),
        ("a", (-5, 1_001, "a")),
        ("b", (-3, 1_001, "b")),
    ]
    ranks.moves = None
    ranks.apply(row("c", 1))
    assert len(moves.heard) == 4 and ranks.index.rank_of("c") == 2
