"""Boards on several pods (issue 14): seasons follow each pod's clock with no coordinator,
and pods whose clocks straddle a boundary agree (the embedded store and mongomock, with
one in-process change feed)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mongomock_motor import AsyncMongoMockClient

from server.domain.increments import IncrementPolicy
from server.store.changes import LocalChangeFeed
from server.store.mongodb import MongoStore
from server.store.port import ScoreStore
from server.store.sqlite import SqliteStore
from tests.conftest import Client, body_of, eventually, make_token, scaled, serving, settings_for

pytestmark = pytest.mark.gen_test(timeout=scaled(30))

BOARDS = """
[boards.kills]
periods = ["daily", "all_time"]
timezone = "Europe/Berlin"
rate_limit_per_minute = 0
keep_seasons = 1
"""
MIDNIGHT = 1_772_492_400_000  # 2026-03-03 00:00 in Berlin (23:00 UTC the day before)


class Clock:
    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


@pytest.fixture(params=["sqlite", "mongomock"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], ScoreStore]:
    feed = LocalChangeFeed()
    policy = IncrementPolicy(rate_limit_per_minute=0)
    if request.param == "sqlite":
        return lambda: SqliteStore(str(tmp_path / "s.db"), policy, synchronous="NORMAL", feed=feed)
    database = AsyncMongoMockClient()["boards"]
    return lambda: MongoStore(database, policy, feed=feed)


@asynccontextmanager
async def pods(
    tmp_path: Path, make_store: Callable[[], ScoreStore], *clocks: Clock
) -> AsyncIterator[list[Client]]:
    path = tmp_path / "boards.toml"
    path.write_text(BOARDS)
    settings = settings_for(sqlite_path=str(tmp_path / "s.db"), boards_file=str(path))
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(serving(settings, store=make_store(), clock_ms=c))
            for c in clocks
        ]


async def post(client: Client, user: str, increment: int) -> Any:
    response = await client.request(
        "POST",
        "/api/boards/kills/scores",
        json.dumps({"increment": increment}),
        {"Content-Type": "application/json", "Authorization": f"Bearer {make_token(user)}"},
    )
    assert response.code == 200, response.body
    return body_of(response)


async def daily(client: Client, season: str | None = None) -> tuple[str, list[Any]]:
    query = "" if season is None else f"&season={season}"
    response = await client.request("GET", f"/api/boards/kills/top?period=daily{query}")
    assert response.code == 200, response.body
    body = body_of(response)
    return body["season"], [(r["user_id"], r["score"]) for r in body["top_scores"]]


async def test_pods_whose_clocks_straddle_midnight_agree(
    tmp_path: Path, make_store: Callable[[], ScoreStore]
) -> None:
    ahead, behind = Clock(MIDNIGHT + 500), Clock(MIDNIGHT - 500)
    async with pods(tmp_path, make_store, ahead, behind) as (a, b):
        ws = await b.websocket_at("/ws/boards/kills?period=daily")
        try:
            hello = json.loads(await ws.read_message())  # type: ignore[arg-type]
            assert hello["season"] == "2026-03-02"
            # Pod A's clock is past midnight: its write is of the new day, and pod B
            # starts the new day when it sees it, before its own clock gets there.
            await post(a, "alice", 5)

            async def b_daily() -> tuple[str, list[Any]]:
                return await daily(b)

            await eventually(b_daily, "pod B on the new day", until=lambda d: d[1] != [])
            assert await daily(a) == await daily(b) == ("2026-03-03", [("alice", 5)])
            started = json.loads(await ws.read_message())  # type: ignore[arg-type]
            assert (started["reason"], started["season"]) == ("season_started", "2026-03-03")
            # Pod B's clock is still before midnight: its write belongs to the day before.
            answer = await post(b, "bob", 1)
            ended = {"season": "2026-03-02", "score": 1, "rank": 1, "total": 1}
            assert answer["periods"]["daily"] == ended  # the season it landed in
            assert await daily(a, "2026-03-02") == ("2026-03-02", [("bob", 1)])
            assert await daily(b, "2026-03-02") == ("2026-03-02", [("bob", 1)])
        finally:
            ws.close()


async def test_ended_seasons_past_keep_seasons_are_retired(
    tmp_path: Path, make_store: Callable[[], ScoreStore]
) -> None:
    clock = Clock(MIDNIGHT + 1000)
    async with pods(tmp_path, make_store, clock) as (pod,):
        await post(pod, "alice", 1)  # and never again
        for day in range(3):
            clock.now_ms = MIDNIGHT + day * 86_400_000 + 1000
            await post(pod, "bob", day + 1)  # his own writes keep his record trimmed
        service = pod.running.service
        runtime = service.board_runtime
        assert runtime is not None

        async def stored(season: str) -> list[str]:
            rows = await service.store.season_rows("kills", "daily", season, None, 10)
            return [r.user_id for r in rows]

        # Bob's own writes trimmed his record to the kept seasons; alice's stays as written.
        assert await stored("2026-03-03") == ["alice"]
        old = await pod.request("GET", "/api/boards/kills/top?period=daily&season=2026-03-03")
        assert (old.code, body_of(old)["error"]) == (404, "unknown_season")
        assert await runtime.retire() == 1  # alice's 03-03; 03-04 is kept (keep_seasons = 1)
        assert await stored("2026-03-03") == []
        assert await daily(pod, "2026-03-04") == ("2026-03-04", [("bob", 2)])
        assert await runtime.retire() == 0
