"""The boards' runtime on its own (actors/boards.py): what the server tests cannot time, a
season starting while a period's index loads."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from actors.boards import BoardsRuntime, LiveSettings
from server.domain.board_writes import BoardCommand, BoardRules
from server.domain.boards import BoardSpec
from server.domain.increments import IncrementPolicy
from server.domain.records import BoardRow
from server.domain.seasons import Period
from server.domain.standings import SeasonClock
from server.store.sqlite import SqliteStore
from tests.conftest import scaled

pytestmark = pytest.mark.gen_test(timeout=scaled(20))

BERLIN = ZoneInfo("Europe/Berlin")
BEFORE_MIDNIGHT = 1_772_492_399_000  # 2026-03-02 23:59:59 in Berlin
DAILY = BoardSpec(
    id="kills",
    title="kills",
    operator="incr",
    order="desc",
    periods=(Period("daily", "daily", BERLIN),),
    timezone="Europe/Berlin",
    week_starts="monday",
    top_n=10,
    rate_limit_per_minute=0,
    keep_seasons=8,
    action_points=(),
    max_increment=100,
)


class Clock:
    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


class TurnsOverMidLoad:
    """The store, except that its first page of a season's rows comes back after the
    clock passed midnight and the runtime saw it (a load across a boundary)."""

    def __init__(self, inner: SqliteStore, clock: Clock) -> None:
        self.inner = inner
        self.clock = clock
        self.runtime: BoardsRuntime | None = None
        self.pages = 0

    async def season_rows(self, *args: Any) -> list[BoardRow]:
        rows = await self.inner.season_rows(*args)
        self.pages += 1
        if self.pages == 1 and self.runtime is not None:
            self.clock.now_ms += 2000
            self.runtime.check_seasons(self.clock.now_ms)
        return rows

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_a_season_starting_during_a_load_is_loaded_again(tmp_path: Path) -> None:
    clock = Clock(BEFORE_MIDNIGHT)
    store = SqliteStore(str(tmp_path / "s.db"), IncrementPolicy(rate_limit_per_minute=0))
    await store.open()
    try:
        rules = BoardRules(DAILY, SeasonClock())
        await store.apply_board_writes(rules, [BoardCommand("kills", "alice", "A", 5, clock())])
        wrapped = TurnsOverMidLoad(store, clock)
        runtime = BoardsRuntime((DAILY,), wrapped, rules.seasons, clock, LiveSettings())  # type: ignore[arg-type]
        wrapped.runtime = runtime
        live = runtime.period("kills", "daily")
        await runtime._load_current(live)
        # The first load read 03-02's rows; the day turned meanwhile: it was read again,
        # and the index holds the new day's players (none), not yesterday's.
        assert live.season.season_id == "2026-03-03"
        assert wrapped.pages == 2
        assert len(live.ranks.index) == 0
        await runtime.stop()  # its own tasks (the new season's announcement) end with it
    finally:
        await store.close()


async def test_a_players_next_write_keeps_an_ended_seasons_final(tmp_path: Path) -> None:
    clock = Clock(BEFORE_MIDNIGHT)
    store = SqliteStore(str(tmp_path / "s.db"), IncrementPolicy(rate_limit_per_minute=0))
    await store.open()
    rules = BoardRules(DAILY, SeasonClock())
    runtime = BoardsRuntime((DAILY,), store, rules.seasons, clock, LiveSettings())
    try:
        await runtime.load()

        async def write(user: str, value: int) -> None:
            cmd = BoardCommand("kills", user, user.title(), value, clock())
            [decision] = await store.apply_board_writes(rules, [cmd])
            runtime.took(decision.record)  # type: ignore[union-attr]

        await write("alice", 5)
        await write("bob", 3)
        clock.now_ms += 2000  # 2026-03-03: 03-02 ended, kept in memory
        runtime.check_seasons(clock.now_ms)
        final = await runtime.final("kills", "daily", "2026-03-02")
        assert [row.user_id for _, row in final[1]] == ["alice", "bob"]
        # Alice plays the new day: her write carries her unchanged 03-02 standing.
        await write("alice", 1)
        assert await runtime.final("kills", "daily", "2026-03-02") is final
        # A row of the ended season that did change (a late write) does drop it.
        late = BoardCommand("kills", "bob", "Bob", 9, BEFORE_MIDNIGHT)
        [decision] = await store.apply_board_writes(rules, [late])
        runtime.took(decision.record)  # type: ignore[union-attr]
        refreshed = await runtime.final("kills", "daily", "2026-03-02")
        assert [(row.user_id, row.score) for _, row in refreshed[1]] == [("bob", 12), ("alice", 5)]
    finally:
        await runtime.stop()
        await store.close()
