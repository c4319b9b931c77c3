"""``/ws/scoreboard?watch=me``: rank events for the token's player, against a real server."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Client, body_of, close_websocket, eventually, make_token, serving
from tests.handlers.live.test_resume import refused
from tests.handlers.live.test_socket import assert_silent, gauge, metrics_text, receive

pytestmark = pytest.mark.gen_test(timeout=30)


async def scored(client: Client, **scores: int) -> None:
    for user, score in scores.items():
        response = await client.update(make_token(user), {"increment": score})
        assert response.code == 200, response.body


async def next_rank(ws: Any) -> dict[str, Any]:
    """The next rank event (board messages before it are skipped)."""
    while (message := await receive(ws))["event"] != "rank":
        pass
    return message


def shown(rank: int, user: str, score: int) -> dict[str, Any]:
    return {"rank": rank, "user_id": user, "username": user, "score": score}


async def test_an_overtaken_player_gets_one_rank_event_per_interval_with_the_previous_rank() -> (
    None
):
    # top_n=1: the board's own messages stay out of the way (carol stays first).
    async with serving(broadcast_interval_ms=500, top_n=1, rate_limit_per_minute=0) as client:
        await scored(client, carol=50, bob=40, me=30)
        ws = await client.websocket(f"?watch=me&window=1&token={make_token('me')}")
        try:
            assert (await receive(ws))["event"] == "snapshot"
            assert await receive(ws) == {
                "event": "rank",
                "rank": 3,
                "previous": None,
                "score": 30,
                "total": 3,
                "window": [shown(2, "bob", 40), shown(3, "me", 30)],
            }
            await assert_silent(ws, 0.6)  # nothing moved; and the interval passed
            await scored(client, dave=35)  # the first move after a quiet interval: at once
            first = await receive(ws)
            assert (first["rank"], first["previous"], first["total"]) == (4, 3, 4)
            assert first["window"] == [shown(3, "dave", 35), shown(4, "me", 30)]
            # Two more overtake within the interval: one event, from 4 to 6.
            await scored(client, erin=45, frank=31)
            second = await receive(ws)
            assert (second["rank"], second["previous"], second["score"]) == (6, 4, 30)
            assert second["window"] == [shown(5, "frank", 31), shown(6, "me", 30)]
            # A move wholly above the window changes nothing shown: no event.
            await scored(client, erin=1)
            await assert_silent(ws, 0.7)
            # The player's own write: rank and score (and a new top 1, on the board).
            await scored(client, me=100)
            own = await next_rank(ws)
            assert (own["rank"], own["previous"], own["score"]) == (1, 6, 130)
            assert own["window"] == [shown(1, "me", 130), shown(2, "carol", 50)]
        finally:
            await close_websocket(ws)


async def test_both_formats_carry_rank_events_and_a_player_not_ranked_has_no_window() -> None:
    async with serving(rate_limit_per_minute=0) as client:
        await scored(client, ann=10)
        token = make_token("newcomer")
        seed = await client.websocket(f"?watch=me&token={token}")
        delta = await client.websocket(f"?format=delta&watch=me&window=0&token={token}")
        try:
            for ws in (seed, delta):
                assert (await receive(ws))["event"] == "snapshot"
                first = await receive(ws)
                assert first == {
                    "event": "rank",
                    "rank": None,
                    "previous": None,
                    "score": None,
                    "total": 1,
                    "window": [],
                }
            await scored(client, newcomer=20)
            assert (await receive(seed))["event"] == "update"
            assert (await receive(delta))["event"] == "delta"
            seen = await receive(seed)
            assert (seen["rank"], seen["previous"], seen["score"]) == (1, None, 20)
            assert seen["window"] == [shown(1, "newcomer", 20), shown(2, "ann", 10)]
            assert (await receive(delta))["window"] == [shown(1, "newcomer", 20)]
            assert gauge(await metrics_text(client), "scoreboard_rank_watchers") == 2
            assert "scoreboard_rank_events_total 2.0" in await metrics_text(client)
        finally:
            await close_websocket(seed)
            await close_websocket(delta)
        stream = client.running.service.rank_stream
        await eventually(lambda: len(stream) == 0, "the rank watchers left")


async def test_a_banned_player_sees_their_rank_go() -> None:
    async with serving(rate_limit_per_minute=0) as client:
        await scored(client, a=10, b=5)
        ws = await client.websocket(f"?format=delta&watch=me&token={make_token('b')}")
        try:
            await receive(ws)  # snapshot
            assert (await receive(ws))["rank"] == 2
            service = client.running.service
            service.live_ranks.remove("a", 10**6)  # as a ban on another pod arrives
            event = await receive(ws)
            assert (event["rank"], event["previous"], event["total"]) == (1, 2, 1)
        finally:
            await close_websocket(ws)


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [
        ("?watch=you&token=T", 400, "invalid_watch"),
        ("?watch=me&window=11&token=T", 400, "invalid_window"),
        ("?watch=me&window=-1&token=T", 400, "invalid_window"),
        ("?window=2", 400, "invalid_window"),
        ("?watch=me", 401, "missing_token"),
        ("?watch=me&token=not-a-jwt", 401, "invalid_token"),
    ],
)
async def test_bad_watch_queries_are_refused(query: str, status: int, code: str) -> None:
    async with serving() as client:
        response = await refused(client, query.replace("token=T", f"token={make_token('me')}"))
        assert (response.code, body_of(response)["error"]) == (status, code)
        assert len(client.running.service.rank_stream) == 0
