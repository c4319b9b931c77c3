"""A boards file served end to end (issue 14): several boards with their own rules,
periods and seasons, over real HTTP and WebSockets, with an injected clock (never by
sleeping past a boundary)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from tests.conftest import (
    Client,
    body_of,
    close_websocket,
    eventually,
    make_token,
    scaled,
    serving,
    settings_for,
)
from tests.handlers.test_admin import admin

pytestmark = pytest.mark.gen_test(timeout=scaled(30))

BOARDS = """
[boards.kills]
title = "Kills"
operator = "incr"
max_increment = 100
periods = ["daily", "weekly", "all_time"]
timezone = "Europe/Berlin"
rate_limit_per_minute = 0

[boards.laps]
title = "Best lap"
operator = "best"
order = "asc"
min_score = 1000
max_score = 600000
periods = ["all_time", { name = "cup", cron = "0 0 1 * *" }]
rate_limit_per_minute = 0

[boards.mood]
operator = "set"
min_score = 0
max_score = 10
periods = ["all_time"]
rate_limit_per_minute = 2
"""
# 2026-03-02 22:59:59 UTC = 23:59:59 in Berlin (CET, UTC+1): a second before a new day.
BEFORE_MIDNIGHT = 1_772_492_399_000


class Clock:
    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


def boards_file(tmp_path: Path) -> str:
    path = tmp_path / "boards.toml"
    path.write_text(BOARDS)
    return str(path)


async def post(client: Client, board: str, user: str, body: dict[str, Any], **headers: str) -> Any:
    response = await client.request(
        "POST",
        f"/api/boards/{board}/scores",
        json.dumps(body),
        {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {make_token(user, name=user.title())}",
            **headers,
        },
    )
    return response


async def get(client: Client, path: str) -> Any:
    response = await client.request("GET", path)
    assert response.code == 200, (path, response.code, response.body)
    return body_of(response)


def shown(page: Any) -> list[tuple[str, int]]:
    return [(row["user_id"], row["score"]) for row in page["top_scores"]]


async def test_writes_before_and_after_midnight_land_in_different_daily_seasons(
    tmp_path: Path,
) -> None:
    clock = Clock(BEFORE_MIDNIGHT)
    settings = settings_for(boards_file=boards_file(tmp_path))
    async with serving(settings, clock_ms=clock) as client:
        first = await post(client, "kills", "alice", {"increment": 5})
        assert first.code == 200, first.body
        periods = body_of(first)["periods"]
        assert periods["daily"] == {"season": "2026-03-02", "score": 5, "rank": 1, "total": 1}
        clock.now_ms += 2000  # 00:00:01 in Berlin: a new day, the same week
        second = body_of(await post(client, "kills", "alice", {"increment": 2}))["periods"]
        assert second["daily"] == {"season": "2026-03-03", "score": 2, "rank": 1, "total": 1}
        assert second["weekly"]["score"] == 7
        assert second["all_time"]["score"] == 7
        today = await get(client, "/api/boards/kills/top?period=daily")
        assert today["season"] == "2026-03-03" and shown(today) == [("alice", 2)]
        # The ended day stays readable, ranks included.
        yesterday = await get(client, "/api/boards/kills/top?period=daily&season=2026-03-02")
        assert shown(yesterday) == [("alice", 5)]
        me = await get(client, "/api/boards/kills/players/alice?period=daily&season=2026-03-02")
        assert me["rank"] == 1 and me["score"] == 5
        seasons = await get(client, "/api/boards/kills/seasons?period=daily")
        assert [s["state"] for s in seasons["seasons"][:2]] == ["current", "ended"]
        assert seasons["seasons"][1]["top"][0]["user_id"] == "alice"


async def test_watchers_get_season_started_and_messages_name_the_season(tmp_path: Path) -> None:
    clock = Clock(BEFORE_MIDNIGHT)
    settings = settings_for(boards_file=boards_file(tmp_path))
    async with serving(settings, clock_ms=clock) as client:
        assert (await post(client, "kills", "alice", {"increment": 5})).code == 200
        ws = await client.websocket_at("/ws/boards/kills?period=daily")
        try:
            first = json.loads(await ws.read_message())  # type: ignore[arg-type]
            assert first["event"] == "snapshot" and first["season"] == "2026-03-02"
            assert [r["user_id"] for r in first["top_scores"]] == ["alice"]
            clock.now_ms += 2000
            await post(client, "kills", "bob", {"increment": 1})  # of the new day
            started = json.loads(await ws.read_message())  # type: ignore[arg-type]
            while started.get("reason") != "season_started":
                started = json.loads(await ws.read_message())  # type: ignore[arg-type]
            assert started["season"] == "2026-03-03"
        finally:
            await close_websocket(ws)


async def test_best_with_lowest_first_and_set(tmp_path: Path) -> None:
    settings = settings_for(boards_file=boards_file(tmp_path))
    async with serving(settings) as client:
        assert (await post(client, "laps", "alice", {"score": 90_000})).code == 200
        assert (await post(client, "laps", "bob", {"score": 85_000})).code == 200
        worse = body_of(await post(client, "laps", "bob", {"score": 99_000}))
        assert worse["periods"]["all_time"] == {
            "season": "all",
            "score": 85_000,
            "rank": 1,
            "total": 2,
        }
        assert (await post(client, "laps", "carol", {"score": 85_000})).code == 200  # a tie
        top = await get(client, "/api/boards/laps/top")
        assert shown(top) == [("bob", 85_000), ("carol", 85_000), ("alice", 90_000)]
        for value in (7, 3):
            assert (await post(client, "mood", "alice", {"score": value})).code == 200
        assert shown(await get(client, "/api/boards/mood/top")) == [("alice", 3)]
        # mood's rate limit is per player and board: a third write is refused there only.
        limited = await post(client, "mood", "alice", {"score": 4})
        assert limited.code == 429
        assert (await post(client, "kills", "alice", {"increment": 1})).code == 200


async def test_an_idempotency_key_is_per_board(tmp_path: Path) -> None:
    settings = settings_for(boards_file=boards_file(tmp_path))
    async with serving(settings) as client:
        first = await post(client, "kills", "alice", {"increment": 5}, **{"Idempotency-Key": "k"})
        again = await post(client, "kills", "alice", {"increment": 5}, **{"Idempotency-Key": "k"})
        assert first.code == again.code == 200
        assert again.headers.get("Idempotent-Replayed") == "true"
        assert body_of(again)["periods"]["all_time"]["score"] == 5
        other = await post(client, "laps", "alice", {"score": 5000}, **{"Idempotency-Key": "k"})
        assert other.code == 200 and "Idempotent-Replayed" not in other.headers
        reused = await post(client, "kills", "alice", {"increment": 6}, **{"Idempotency-Key": "k"})
        assert reused.code == 422


async def test_unknown_board_period_and_season(tmp_path: Path) -> None:
    settings = settings_for(boards_file=boards_file(tmp_path))
    async with serving(settings) as client:
        for path, code in [
            ("/api/boards/nope/top", "unknown_board"),
            ("/api/boards/kills/top?period=hourly", "unknown_period"),
            ("/api/boards/kills/top?period=daily&season=1999-01-01", "unknown_season"),
            ("/api/boards/kills/top?period=daily&season=banana", "unknown_season"),
        ]:
            response = await client.request("GET", path)
            assert response.code == 404, path
            assert body_of(response)["error"] == code, path
        bad = await post(client, "laps", "alice", {"score": 1})
        assert bad.code == 400 and body_of(bad)["error"] == "invalid_score"


async def test_the_original_routes_alias_the_default_boards_default_period(
    tmp_path: Path,
) -> None:
    clock = Clock(BEFORE_MIDNIGHT)
    settings = settings_for(boards_file=boards_file(tmp_path))
    async with serving(settings, clock_ms=clock) as client:
        response = await client.update(make_token("alice", name="Alice"), {"increment": 4})
        assert response.code == 200, response.body
        for alias, route in [
            ("/api/top-scores", "/api/boards/kills/top"),
            ("/api/players/alice", "/api/boards/kills/players/alice"),
            ("/api/players/alice/around", "/api/boards/kills/players/alice/around"),
        ]:
            a, b = await client.request("GET", alias), await client.request("GET", route)
            assert a.code == b.code == 200 and a.body == b.body, alias


async def test_a_ban_holds_on_every_board(tmp_path: Path) -> None:
    settings = settings_for(boards_file=boards_file(tmp_path))
    async with serving(settings) as client:
        assert (await post(client, "laps", "alice", {"score": 5000})).code == 200
        banned = await admin(client, "DELETE", "/api/users/alice")
        assert banned.code == 200, banned.body

        async def off_laps() -> bool:
            return shown(await get(client, "/api/boards/laps/top")) == []

        await eventually(off_laps, "alice off the laps board")
        refused = await post(client, "laps", "alice", {"score": 4000})
        assert refused.code == 403, refused.body
        assert (await post(client, "kills", "alice", {"increment": 1})).code == 403
        # Lifted: the standings come back from the store, writes are taken again.
        assert (await admin(client, "DELETE", "/api/users/alice/ban")).code == 200

        async def back_on_laps() -> bool:
            return shown(await get(client, "/api/boards/laps/top")) == [("alice", 5000)]

        await eventually(back_on_laps, "alice back on the laps board")
        assert (await post(client, "laps", "alice", {"score": 4000})).code == 200


# 2026-03-29 00:30 UTC: Sunday in Berlin, just before the clocks go from 02:00 to 03:00.
BEFORE_DST = 1_774_744_200_000
HOUR = 3_600_000


async def test_a_weekly_season_across_a_daylight_saving_change(tmp_path: Path) -> None:
    clock = Clock(BEFORE_DST)
    settings = settings_for(boards_file=boards_file(tmp_path))
    async with serving(settings, clock_ms=clock) as client:
        before = body_of(await post(client, "kills", "alice", {"increment": 1}))["periods"]
        clock.now_ms += 3 * HOUR  # after the change: the same Sunday, the same week
        after = body_of(await post(client, "kills", "alice", {"increment": 1}))["periods"]
        assert before["weekly"]["season"] == after["weekly"]["season"] == "2026-03-23"
        assert after["weekly"]["score"] == 2
        # Monday 00:00 in Berlin is now 22:00 UTC on Sunday (UTC+2), not 23:00.
        clock.now_ms = 1_774_821_600_000  # 2026-03-29 22:00:00 UTC
        monday = body_of(await post(client, "kills", "alice", {"increment": 1}))["periods"]
        assert monday["weekly"] == {"season": "2026-03-30", "score": 1, "rank": 1, "total": 1}


async def test_a_cron_season_turns_over_on_its_schedule(tmp_path: Path) -> None:
    clock = Clock(1_775_001_599_000)  # 2026-03-31 23:59:59 UTC (laps is in UTC)
    settings = settings_for(boards_file=boards_file(tmp_path))
    async with serving(settings, clock_ms=clock) as client:
        march = body_of(await post(client, "laps", "alice", {"score": 90_000}))["periods"]
        clock.now_ms += 2000
        april = body_of(await post(client, "laps", "alice", {"score": 95_000}))["periods"]
        assert march["cup"]["season"] == "2026-03-01T00:00"
        assert april["cup"] == {
            "season": "2026-04-01T00:00",
            "score": 95_000,
            "rank": 1,
            "total": 1,
        }
        assert april["all_time"]["score"] == 90_000  # best: the better one, lower first
        ended = await get(client, "/api/boards/laps/top?period=cup&season=2026-03-01T00:00")
        assert shown(ended) == [("alice", 90_000)]


async def test_an_action_tokens_jti_is_spent_once_across_boards(tmp_path: Path) -> None:
    secret = "action-service-secret-of-32-bytes-or-more"
    path = tmp_path / "boards.toml"
    path.write_text(
        "[boards.kills]\naction_points = { kill = 3 }\nrate_limit_per_minute = 0\n"
        "[boards.deaths]\naction_points = { kill = 1 }\nrate_limit_per_minute = 0\n"
    )
    settings = settings_for(
        boards_file=str(path), action_secret=secret, action_points=(("kill", 3),)
    )
    now = int(time.time())

    def action(jti: str, **claims: Any) -> dict[str, str]:
        body = {"sub": "alice", "jti": jti, "act": "kill", "iat": now, "exp": now + 60}
        return {"action_token": jwt.encode({**body, **claims}, secret, algorithm="HS256")}

    async with serving(settings) as client:
        first = await post(client, "kills", "alice", action("j1"))
        assert first.code == 200 and body_of(first)["periods"]["all_time"]["score"] == 3
        elsewhere = await post(client, "deaths", "alice", action("j1"))
        assert (elsewhere.code, body_of(elsewhere)["error"]) == (409, "action_replayed")
        bound = await post(client, "deaths", "alice", action("j2", brd="kills"))
        assert (bound.code, body_of(bound)["error"]) == (403, "action_forbidden")
        own = await post(client, "deaths", "alice", action("j3", brd="deaths"))
        assert own.code == 200 and body_of(own)["periods"]["all_time"]["score"] == 1


async def test_the_answer_is_json_whatever_the_player_id(tmp_path: Path) -> None:
    settings = settings_for(boards_file=boards_file(tmp_path))
    async with serving(settings) as client:
        user = 'é"\\<b>'
        answer = body_of(await post(client, "kills", user, {"increment": 1}))
        assert answer["user_id"] == user
        assert answer["periods"]["all_time"] == {"season": "all", "score": 1, "rank": 1, "total": 1}


async def test_a_ban_reaches_ended_seasons_and_holds_across_a_restart(tmp_path: Path) -> None:
    clock = Clock(BEFORE_MIDNIGHT)
    settings = settings_for(boards_file=boards_file(tmp_path), sqlite_path=str(tmp_path / "s.db"))
    yesterday = "/api/boards/kills/top?period=daily&season=2026-03-02"
    seasons = "/api/boards/kills/seasons?period=daily"

    async def final_top() -> list[str]:
        return [row["user_id"] for row in (await get(client, seasons))["seasons"][1]["top"]]

    async with serving(settings, clock_ms=clock) as client:
        await post(client, "kills", "alice", {"increment": 9})
        await post(client, "kills", "bob", {"increment": 1})
        clock.now_ms += 2000  # a new day: yesterday is an ended season, held in memory
        await post(client, "kills", "bob", {"increment": 1})
        assert shown(await get(client, yesterday)) == [("alice", 9), ("bob", 1)]
        assert await final_top() == ["alice", "bob"]  # the season's final, now cached
        assert (await admin(client, "DELETE", "/api/users/alice")).code == 200
        assert shown(await get(client, yesterday)) == [("bob", 1)]
        assert await final_top() == ["bob"]  # the cached final too
    # A pod started after the ban keeps her off, and lifting the ban brings her back.
    async with serving(settings, clock_ms=clock) as client:
        all_time = "/api/boards/kills/top?period=all_time"
        assert shown(await get(client, all_time)) == [("bob", 2)]
        assert (await admin(client, "DELETE", "/api/users/alice/ban")).code == 200

        async def back() -> list[tuple[str, int]]:
            return shown(await get(client, all_time))

        await eventually(back, "alice back", until=lambda rows: rows == [("alice", 9), ("bob", 2)])


async def test_a_season_starts_on_the_clock_with_no_write(tmp_path: Path) -> None:
    clock = Clock(BEFORE_MIDNIGHT)
    settings = settings_for(boards_file=boards_file(tmp_path))
    async with serving(settings, clock_ms=clock) as client:
        await post(client, "kills", "alice", {"increment": 3})
        ws = await client.websocket_at("/ws/boards/kills?period=daily&format=delta")
        try:
            hello = json.loads(await ws.read_message())  # type: ignore[arg-type]
            assert [r["user_id"] for r in hello["top_scores"]] == ["alice"]
            clock.now_ms += 2000  # nobody writes: the pod's ticker sees the new day
            started = json.loads(await ws.read_message())  # type: ignore[arg-type]
            assert (started["event"], started["reason"]) == ("snapshot", "season_started")
            assert (started["season"], started["top_scores"]) == ("2026-03-03", [])
            assert started["epoch"] != hello["epoch"]
        finally:
            await close_websocket(ws)
        today = await get(client, "/api/boards/kills/top?period=daily")
        assert (today["season"], shown(today)) == ("2026-03-03", [])


async def test_the_seasons_list_reads_an_ended_season_from_the_store_once(tmp_path: Path) -> None:
    clock = Clock(BEFORE_MIDNIGHT)
    settings = settings_for(boards_file=boards_file(tmp_path))
    async with serving(settings, clock_ms=clock) as client:
        await post(client, "kills", "alice", {"increment": 4})
        clock.now_ms += 2000
        await post(client, "kills", "bob", {"increment": 1})
        first = await get(client, "/api/boards/kills/seasons?period=daily")
        runtime = client.running.service.board_runtime
        assert runtime is not None
        runtime._archives.clear()  # the whole ended seasons are gone from memory

        async def no_reads(*args: Any) -> Any:
            raise AssertionError("the seasons list read a season from the store again")

        client.running.service.store.season_rows = no_reads  # type: ignore[method-assign]
        again = await get(client, "/api/boards/kills/seasons?period=daily")
        assert again == first
        ended = first["seasons"][1]
        assert (ended["id"], ended["total"]) == ("2026-03-02", 1)
        assert [row["user_id"] for row in ended["top"]] == ["alice"]


async def test_plain_top_reads_answer_the_published_top_alike_on_both_routes(
    tmp_path: Path,
) -> None:
    settings = settings_for(boards_file=boards_file(tmp_path))
    async with serving(settings) as client:
        await post(client, "kills", "alice", {"increment": 2})
        await post(client, "kills", "bob", {"increment": 3})
        fast = await client.request("GET", "/api/top-scores")  # the router's fast path
        handled = await client.request("GET", "/api/boards/kills/top")  # the handler
        assert fast.code == handled.code == 200
        assert fast.body == handled.body
        assert fast.headers["ETag"] == handled.headers["ETag"]
        assert fast.headers["Content-Type"] == handled.headers["Content-Type"]
        assert body_of(fast) == {
            "board": "kills",
            "period": "daily",
            "season": body_of(fast)["season"],
            "top_scores": [
                {"user_id": "bob", "username": "Bob", "score": 3},
                {"user_id": "alice", "username": "Alice", "score": 2},
            ],
        }
        again = await client.request(
            "GET", "/api/top-scores", headers={"If-None-Match": fast.headers["ETag"]}
        )
        assert again.code == 304


async def test_an_ended_season_dropped_from_memory_is_read_again_from_the_store(
    tmp_path: Path,
) -> None:
    clock = Clock(BEFORE_MIDNIGHT)
    settings = settings_for(boards_file=boards_file(tmp_path))
    async with serving(settings, clock_ms=clock) as client:
        runtime = client.running.service.board_runtime
        assert runtime is not None
        runtime._max_archives = 1  # one ended season in memory
        await post(client, "kills", "alice", {"increment": 5})
        clock.now_ms += 2000  # 2026-03-03
        await post(client, "kills", "bob", {"increment": 2})
        clock.now_ms += 86_400_000  # 2026-03-04: 03-03's archive pushes 03-02's out
        await post(client, "kills", "carol", {"increment": 1})
        held = {key[2] for key in runtime._archives}
        assert "2026-03-02" not in held and "2026-03-03" in held
        first = await get(client, "/api/boards/kills/top?period=daily&season=2026-03-02")
        assert shown(first) == [("alice", 5)]  # read back from the store
        second = await get(client, "/api/boards/kills/top?period=daily&season=2026-03-03")
        assert shown(second) == [("bob", 2)]
        assert len(runtime._archives) == 1
