"""``/ws/boards/{board}``: the scoreboard stream of one period's current season, each
message naming its season, otherwise message for message ``/ws/scoreboard``'s."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import body_of, close_websocket, make_token, scaled, serving
from tests.handlers.live.test_resume import refused
from tests.handlers.live.test_socket import receive

pytestmark = pytest.mark.gen_test(timeout=scaled(30))


def without_season(message: dict[str, Any]) -> dict[str, Any]:
    assert message["season"] == "all", message
    return {k: v for k, v in message.items() if k != "season"}


@pytest.mark.parametrize("fmt", ["seed", "delta"])
async def test_every_message_names_its_season_and_is_otherwise_the_scoreboards(
    fmt: str,
) -> None:
    async with serving(rate_limit_per_minute=0) as client:
        await client.update(make_token("ann"), {"increment": 2})
        token = make_token("bob")
        query = f"?format={fmt}&watch=me&token={token}"
        board = await client.websocket_at(f"/ws/boards/main{query}&period=all_time")
        plain = await client.websocket(query)
        try:
            for _ in range(2):  # the snapshot, then bob's first rank event
                assert without_season(await receive(board)) == await receive(plain)
            await client.update(token, {"increment": 5})
            for _ in range(2):  # the board's message (update or delta), then bob's rank
                assert without_season(await receive(board)) == await receive(plain)
        finally:
            await close_websocket(board)
            await close_websocket(plain)


async def test_a_resumed_stream_names_its_season_too() -> None:
    async with serving(rate_limit_per_minute=0) as client:
        await client.update(make_token("ann"), {"increment": 2})
        first = await client.websocket_at("/ws/boards/main?format=delta")
        snapshot = await receive(first)
        await close_websocket(first)
        await client.update(make_token("bob"), {"increment": 3})
        since = f"{snapshot['epoch']}:{snapshot['version']}"
        again = await client.websocket_at(f"/ws/boards/main?format=delta&since={since}")
        try:
            resumed, missed = await receive(again), await receive(again)
            assert (resumed["event"], resumed["season"]) == ("resumed", "all")
            assert (missed["event"], missed["season"]) == ("delta", "all")
        finally:
            await close_websocket(again)


@pytest.mark.parametrize(
    ("path", "code"),
    [("/ws/boards/laps", "unknown_board"), ("/ws/boards/main?period=daily", "unknown_period")],
)
async def test_a_board_or_period_not_served_is_refused_before_the_upgrade(
    path: str, code: str
) -> None:
    async with serving() as client:
        answer = await refused(client, "", path=path)
        assert (answer.code, body_of(answer)["error"]) == (404, code)
