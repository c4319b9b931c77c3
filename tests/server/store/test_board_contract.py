"""The store port's contract for boards (issue 14): one record per (board, player), every
period fed by one atomic write, seasons paged for the rank index, retired in bounded steps.

Every adapter runs it (the backends of ``test_contract``).
"""

from __future__ import annotations

import asyncio
import dataclasses
from zoneinfo import ZoneInfo

import pytest

from server.domain.admin import AdminAction
from server.domain.board_writes import (
    BoardApplied,
    BoardBanned,
    BoardCommand,
    BoardDecision,
    BoardReplayed,
    BoardRules,
)
from server.domain.boards import BoardSpec, Standing
from server.domain.records import ActionReplayed, KeyReused, RateLimited, SpentAction
from server.domain.seasons import Period, season_at
from server.domain.standings import SeasonClock
from server.store.changes import BoardChange, LocalChangeFeed
from server.store.port import ScoreStore, StoreError
from tests.conftest import scaled
from tests.server.store.support import apply_one
from tests.server.store.test_contract import Backend, cmd

pytestmark = pytest.mark.gen_test(timeout=scaled(20))

UTC = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")
# 2026-03-02 10:00 UTC, a Monday.
T0 = 1_772_445_600_000
DAY = 86_400_000


def spec(
    board: str = "kills",
    *,
    operator: str = "incr",
    order: str = "desc",
    periods: tuple[Period, ...] = (
        Period("daily", "daily", BERLIN),
        Period("weekly", "weekly", BERLIN),
        Period("all_time", "all_time", UTC),
    ),
    rate: int = 0,
    keep: int = 8,
) -> BoardSpec:
    return BoardSpec(
        id=board,
        title=board,
        operator=operator,  # type: ignore[arg-type]
        order=order,  # type: ignore[arg-type]
        periods=periods,
        timezone="Europe/Berlin",
        week_starts="monday",
        top_n=10,
        rate_limit_per_minute=rate,
        keep_seasons=keep,
        action_points=(),
        max_increment=100 if operator == "incr" else None,
        min_score=0 if operator != "incr" else None,
        max_score=1_000_000 if operator != "incr" else None,
    )


def rules(board_spec: BoardSpec | None = None) -> BoardRules:
    return BoardRules(board_spec or spec(), SeasonClock())


def write(
    user: str = "alice",
    value: int = 1,
    *,
    board: str = "kills",
    now_ms: int = T0,
    key: str | None = None,
    jti: str | None = None,
    fingerprint: str | None = None,
) -> BoardCommand:
    return BoardCommand(
        board=board,
        user_id=user,
        username=user.title(),
        value=value,
        now_ms=now_ms,
        idempotency_key=key,
        action=SpentAction(jti, now_ms + 60_000) if jti is not None else None,
        fingerprint=fingerprint,
    )


async def one(store: ScoreStore, r: BoardRules, command: BoardCommand) -> BoardDecision:
    (decision,) = await store.apply_board_writes(r, [command])
    return decision


def scores(decision: BoardDecision) -> dict[str, tuple[str, int]]:
    assert isinstance(decision, BoardApplied), decision
    return {s.period: (s.season, s.standing.score) for s in decision.record.standings.current}


async def all_rows(
    store: ScoreStore, board: str, period: str, season: str
) -> list[tuple[str, int]]:
    rows, after = [], None
    while True:
        page = await store.season_rows(board, period, season, after, 2)
        rows += [(r.user_id, r.score) for r in page]
        if len(page) < 2:
            return rows
        after = page[-1].user_id


async def test_one_write_feeds_every_period_and_is_read_back(backend: Backend) -> None:
    r = rules()
    async with backend.opened() as store:
        first = await one(store, r, write(value=5))
        second = await one(store, r, write(value=3, now_ms=T0 + 1000))
        assert scores(first) == {
            "daily": ("2026-03-02", 5),
            "weekly": ("2026-03-02", 5),
            "all_time": ("all", 5),
        }
        assert {p: s for p, (_, s) in scores(second).items()} == {
            "daily": 8,
            "weekly": 8,
            "all_time": 8,
        }
        record = await store.get_board_record(r, "alice")
        assert record is not None and record.v == 2
        assert record.standings == second.record.standings  # type: ignore[union-attr]
        assert await store.get_board_record(r, "bob") is None


async def test_a_new_day_starts_afresh_and_keeps_the_ended_day(backend: Backend) -> None:
    r = rules()
    async with backend.opened() as store:
        await one(store, r, write(value=5))
        after = await one(store, r, write(value=2, now_ms=T0 + DAY))
        assert scores(after)["daily"] == ("2026-03-03", 2)
        assert scores(after)["weekly"] == ("2026-03-02", 7)
        assert await all_rows(store, "kills", "daily", "2026-03-02") == [("alice", 5)]
        assert await all_rows(store, "kills", "daily", "2026-03-03") == [("alice", 2)]
        record = await store.get_board_record(r, "alice")
        assert record is not None
        assert record.standings.in_season("daily", "2026-03-02") == Standing(5, T0)


async def test_season_rows_page_by_user_id_per_board_and_period(backend: Backend) -> None:
    kills, laps = rules(), rules(spec("laps", operator="best", order="asc"))
    async with backend.opened() as store:
        for user, value in [("carol", 3), ("alice", 1), ("dave", 4), ("bob", 2), ("erin", 9)]:
            await one(store, kills, write(user, value))
        await one(store, laps, write("zed", 900, board="laps"))
        assert await all_rows(store, "kills", "weekly", "2026-03-02") == [
            ("alice", 1),
            ("bob", 2),
            ("carol", 3),
            ("dave", 4),
            ("erin", 9),
        ]
        assert await all_rows(store, "laps", "daily", "2026-03-02") == [("zed", 900)]
        assert await all_rows(store, "kills", "weekly", "2026-03-09") == []


async def test_best_keeps_the_better_score_by_the_boards_order(backend: Backend) -> None:
    laps = rules(spec("laps", operator="best", order="asc"))
    async with backend.opened() as store:
        await one(store, laps, write(value=900, board="laps"))
        worse = await one(store, laps, write(value=950, board="laps", now_ms=T0 + 1))
        better = await one(store, laps, write(value=880, board="laps", now_ms=T0 + 2))
        assert scores(worse)["all_time"] == ("all", 900)
        assert scores(better)["all_time"] == ("all", 880)
        assert isinstance(better, BoardApplied)
        (standing,) = [s for s in better.record.standings.current if s.period == "all_time"]
        assert standing.standing.reached_ms == T0 + 2


async def test_an_idempotency_key_is_per_board(backend: Backend) -> None:
    kills, deaths = rules(), rules(spec("deaths"))
    async with backend.opened() as store:
        first = await one(store, kills, write(value=5, key="k1", fingerprint="a"))
        again = await one(store, kills, write(value=5, key="k1", fingerprint="a"))
        other = await one(store, kills, write(value=6, key="k1", fingerprint="b"))
        elsewhere = await one(store, deaths, write(value=5, board="deaths", key="k1"))
        assert scores(first)["all_time"][1] == 5
        assert again == BoardReplayed((5, 5, 5))
        assert isinstance(other, KeyReused)
        assert scores(elsewhere)["all_time"][1] == 5
        record = await store.get_board_record(kills, "alice")
        assert record is not None and record.v == 1


async def test_a_spent_jti_is_refused_on_every_board(backend: Backend) -> None:
    kills, deaths = rules(), rules(spec("deaths"))
    async with backend.opened() as store:
        assert isinstance(await one(store, kills, write(jti="j1")), BoardApplied)
        assert isinstance(await one(store, kills, write(jti="j1")), ActionReplayed)
        assert isinstance(await one(store, deaths, write(board="deaths", jti="j1")), ActionReplayed)
        # Once expired, the token is forgotten by the cleanup job.
        assert await store.expire_spent_actions(T0 + 120_000, 100) == 1
        assert await store.expire_spent_actions(T0 + 120_000, 100) == 0


async def test_the_rate_limit_is_per_player_and_board(backend: Backend) -> None:
    kills, deaths = rules(spec(rate=2)), rules(spec("deaths", rate=2))
    async with backend.opened() as store:
        for i in range(2):
            assert isinstance(await one(store, kills, write(now_ms=T0 + i)), BoardApplied)
        limited = await one(store, kills, write(now_ms=T0 + 2))
        assert isinstance(limited, RateLimited) and limited.retry_after_s == 60
        assert isinstance(await one(store, deaths, write(board="deaths")), BoardApplied)
        assert isinstance(await one(store, kills, write("bob")), BoardApplied)


async def test_a_ban_holds_on_every_board(backend: Backend) -> None:
    kills = rules()
    async with backend.opened() as store:
        await apply_one(store, cmd("alice"))  # a user record, for the admin to ban
        await one(store, kills, write(value=4))
        await store.apply_admin("alice", AdminAction.REMOVE.change(T0))
        assert isinstance(await one(store, kills, write(value=4)), BoardBanned)
        assert await all_rows(store, "kills", "all_time", "all") == []
        await store.apply_admin("alice", AdminAction.UNBAN.change(T0))
        assert await all_rows(store, "kills", "all_time", "all") == [("alice", 4)]


async def test_queued_writes_apply_in_order_in_one_call(backend: Backend) -> None:
    r = rules()
    async with backend.opened() as store:
        decisions = await store.apply_board_writes(
            r, [write(value=1), write(value=2, key="k"), write(value=3, key="k")]
        )
        assert [scores(d)["all_time"][1] for d in decisions[:2]] == [1, 3]
        assert decisions[2] == BoardReplayed((3, 3, 3))


async def test_concurrent_writers_on_one_player_lose_nothing(backend: Backend) -> None:
    # Two store objects on the same data, as two pods: every write counts once.
    if backend.kind == "sqlite-memory":
        pytest.skip("a :memory: database cannot be shared")
    r = rules()
    async with backend.opened() as a, backend.opened() as b:
        await asyncio.gather(
            *(one(store, r, write(value=1)) for store in (a, b) for _ in range(10))
        )
        record = await a.get_board_record(r, "alice")
        assert record is not None and record.v == 20
        assert scores(BoardApplied(record))["all_time"][1] == 20


async def test_a_writer_holding_a_stale_record_loses_nothing(backend: Backend) -> None:
    # A pod's writer keeps the record its last write left and writes with it (no read):
    # another pod's write since must not be overwritten.
    if backend.kind == "sqlite-memory":
        pytest.skip("a :memory: database cannot be shared")
    r = rules()
    async with backend.opened() as a, backend.opened() as b:
        first = await one(a, r, write(value=1))
        assert isinstance(first, BoardApplied)
        await one(b, r, write(value=1))  # the other pod's write: v 2
        (third,) = await a.apply_board_writes(r, [write(value=1)], first.record)
        assert isinstance(third, BoardApplied)
        assert third.record.v == 3
        assert scores(third)["all_time"][1] == 3
        stored = await b.get_board_record(r, "alice")
        assert stored is not None and (stored.v, scores(BoardApplied(stored))["all_time"][1]) == (
            3,
            3,
        )


async def test_admin_reset_drops_one_season_of_one_period(backend: Backend) -> None:
    r = rules()
    async with backend.opened() as store:
        await one(store, r, write(value=5))
        record = await store.reset_board_standing(r, "alice", "weekly", "2026-03-02")
        assert record is not None and record.v == 2
        assert record.standings.in_season("weekly", "2026-03-02") is None
        assert record.standings.in_season("daily", "2026-03-02") == Standing(5, T0)
        assert await all_rows(store, "kills", "weekly", "2026-03-02") == []
        assert await store.reset_board_standing(r, "bob", "weekly", "2026-03-02") is None


async def test_retiring_seasons_goes_in_bounded_steps(backend: Backend) -> None:
    r = rules(spec(periods=(Period("daily", "daily", BERLIN),)))
    async with backend.opened() as store:
        for day in range(3):
            for user in ("alice", "bob", "carol"):
                await one(store, r, write(user, now_ms=T0 + day * DAY))
        third = season_at(Period("daily", "daily", BERLIN), T0 + 2 * DAY)
        assert await store.retire_seasons("kills", "daily", third.start_ms, 4) == 4
        assert await store.retire_seasons("kills", "daily", third.start_ms, 4) == 2
        assert await store.retire_seasons("kills", "daily", third.start_ms, 4) == 0
        assert await all_rows(store, "kills", "daily", "2026-03-02") == []
        assert len(await all_rows(store, "kills", "daily", "2026-03-04")) == 3


async def test_board_writes_are_on_the_change_feed(backend: Backend) -> None:
    if backend.kind not in {"sqlite-file", "mongomock"}:
        pytest.skip("the local feed is given to these backends")
    feed = LocalChangeFeed()
    r = rules()
    store = backend.build(feed=feed)
    await store.open()
    try:
        stream = await feed.watch(None)
        await one(store, r, write(value=5))
        (event,) = await stream.next_batch()
        assert isinstance(event, BoardChange)
        assert event.record.board == "kills" and event.record.v == 1
    finally:
        await store.close()


async def test_calls_after_close_raise_store_error(backend: Backend) -> None:
    store = backend.build()
    await store.open()
    await store.close()
    with pytest.raises(StoreError):
        await one(store, rules(), write())


async def test_banned_users_are_listed(backend: Backend) -> None:
    async with backend.opened() as store:
        await apply_one(store, cmd("alice"))
        await apply_one(store, cmd("bob"))
        assert await store.banned_users() == []
        await store.apply_admin("alice", AdminAction.REMOVE.change(T0))
        assert await store.banned_users() == ["alice"]
        await store.apply_admin("alice", AdminAction.UNBAN.change(T0))
        assert await store.banned_users() == []


async def test_a_season_id_of_an_earlier_schedule_is_an_ended_season(backend: Backend) -> None:
    weekly = rules(spec(periods=(Period("weekly", "weekly", BERLIN),)))
    async with backend.opened() as store:
        await one(store, weekly, write(value=5))  # week 2026-03-02 (weeks start on Monday)
        sunday = Period("weekly", "weekly", BERLIN, week_starts=6)
        moved = rules(dataclasses.replace(spec(periods=(sunday,)), week_starts="sunday"))
        after = await one(store, moved, write(value=2, now_ms=T0 + 1000))
        assert scores(after)["weekly"] == ("2026-03-01", 2)  # a week of the new schedule
