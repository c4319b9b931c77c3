"""``/api/boards/{board}/...``: the served board's routes answer as the original ones do,
and a board, period or season the server does not have is 404 with its own code."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Client, body_of, make_token, scaled, serving, settings_for

pytestmark = pytest.mark.gen_test(timeout=scaled(30))


async def get(client: Client, path: str, token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    return await client.request("GET", path, None, headers)


async def post(client: Client, path: str, token: str, body: Any) -> Any:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    return await client.request("POST", path, json.dumps(body), headers)


async def test_the_boards_routes_answer_as_the_original_ones() -> None:
    async with serving(rate_limit_per_minute=0) as client:
        first = await post(client, "/api/boards/main/scores", make_token("ann"), {"increment": 5})
        assert body_of(first) == {"status": "success", "new_score": 5, "rank": 1, "total": 1}
        await client.update(make_token("bob"), {"increment": 3})
        await client.update(make_token("cid"), {"increment": 1})
        pairs = [
            ("/api/top-scores", "/api/boards/main/top"),
            ("/api/top-scores?limit=2", "/api/boards/main/top?limit=2&period=all_time"),
            ("/api/players/bob", "/api/boards/main/players/bob?season=all"),
            ("/api/players/bob/around?above=1", "/api/boards/main/players/bob/around?above=1"),
        ]
        for original, on_board in pairs:
            plain, boarded = await get(client, original), await get(client, on_board)
            assert (plain.code, plain.body) == (boarded.code, boarded.body), on_board
        me = make_token("cid")
        mine = await get(client, "/api/boards/main/players/me", me)
        assert body_of(mine)["rank"] == 3
        assert (await get(client, "/api/players/me", me)).body == mine.body


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/api/boards/laps/top", "unknown_board"),
        ("/api/boards/main/top?period=daily", "unknown_period"),
        ("/api/boards/main/top?season=2026-12-04", "unknown_season"),
        ("/api/boards/main/players/ann?season=nope", "unknown_season"),
        ("/api/boards/laps/players/ann/around", "unknown_board"),
        ("/api/boards/main/players/ann/around?period=weekly", "unknown_period"),
    ],
)
async def test_a_board_period_or_season_not_served_is_404_with_its_code(
    path: str, code: str
) -> None:
    async with serving() as client:
        await client.update(make_token("ann"), {"increment": 1})
        answer = await get(client, path)
        assert (answer.code, body_of(answer)["error"]) == (404, code)


async def test_an_update_to_another_board_applies_nothing() -> None:
    async with serving() as client:
        answer = await post(client, "/api/boards/laps/scores", make_token("ann"), {"increment": 5})
        assert (answer.code, body_of(answer)["error"]) == (404, "unknown_board")
        assert await client.top() == []


async def test_a_file_board_is_served_under_its_own_id(tmp_path: Path) -> None:
    path = tmp_path / "boards.toml"
    path.write_text("[boards.arena]\nrate_limit_per_minute = 0\n")
    async with serving(replace(settings_for(), boards_file=str(path))) as client:
        done = await post(client, "/api/boards/arena/scores", make_token("ann"), {"increment": 2})
        assert body_of(done)["periods"]["all_time"]["score"] == 2
        assert (await get(client, "/api/boards/main/top")).code == 404
        assert body_of(await get(client, "/api/boards/arena/players/ann"))["score"] == 2


async def test_a_periods_seasons_are_listed_with_their_state() -> None:
    async with serving() as client:
        answer = await get(client, "/api/boards/main/seasons")
        assert body_of(answer) == {
            "board": "main",
            "period": "all_time",
            "seasons": [
                {"id": "all", "start": "1970-01-01T00:00:00.000Z", "end": None, "state": "current"}
            ],
        }
        assert body_of(await get(client, "/api/boards/main/seasons?period=all_time")) == body_of(
            answer
        )
        unknown = await get(client, "/api/boards/main/seasons?period=daily")
        assert (unknown.code, body_of(unknown)["error"]) == (404, "unknown_period")
        elsewhere = await get(client, "/api/boards/laps/seasons")
        assert (elsewhere.code, body_of(elsewhere)["error"]) == (404, "unknown_board")


async def test_an_admin_resets_a_user_on_a_board_and_period() -> None:
    admin = make_token("ops", scope="scores:admin", ttl_s=3600)
    headers = {"Authorization": f"Bearer {admin}"}
    async with serving() as client:
        await client.update(make_token("ann"), {"increment": 4})
        path = "/api/boards/main/users/ann/reset?period=all_time"
        done = await client.request("POST", path, b"", headers)
        assert body_of(done) == {"user_id": "ann", "score": 0}
        assert body_of(await get(client, "/api/players/ann"))["score"] == 0
        for wrong, code in (
            ("/api/boards/laps/users/ann/reset", "unknown_board"),
            ("/api/boards/main/users/ann/reset?period=daily", "unknown_period"),
            ("/api/boards/main/users/nobody/reset", "not_found"),
        ):
            answer = await client.request("POST", wrong, b"", headers)
            assert (answer.code, body_of(answer)["error"]) == (404, code)
        player = {"Authorization": f"Bearer {make_token('ann')}"}
        refused = await client.request("POST", "/api/boards/laps/users/ann/reset", b"", player)
        assert (refused.code, body_of(refused)["error"]) == (403, "forbidden")  # who, first
