"""``/ws/scoreboard?watch=me``: rank events for the token's player, against a real server."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest

from server.domain.records import BoardRow
from tests.conftest import body_of, close_websocket, eventually, make_token, serving
from tests.handlers.live.test_fanout import stuck_client, unsent
from tests.handlers.live.test_resume import refused
from tests.handlers.live.test_socket import assert_silent, gauge, metrics_text, receive

pytestmark = pytest.mark.gen_test(timeout=30)


async def next_rank(ws: Any) -> dict[str, Any]:
    """The next rank event (board messages before it are skipped)."""
    while (message := await receive(ws))["event"] != "rank":
        pass
    return message


def shown(rank: int, user: str, score: int) -> dict[str, Any]:
    return {"rank": rank, "user_id": user, "username": user.title(), "score": score}


async def test_an_overtaken_player_gets_one_rank_event_per_interval_with_the_previous_rank() -> (
    None
):
    # top_n=1: the board's own messages stay out of the way (carol stays first).
    async with serving(broadcast_interval_ms=500, top_n=1, rate_limit_per_minute=0) as client:
        await client.scored(carol=50, bob=40, me=30)
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
            await client.scored(dave=35)  # the first move after a quiet interval: at once
            first = await receive(ws)
            assert (first["rank"], first["previous"], first["total"]) == (4, 3, 4)
            assert first["window"] == [shown(3, "dave", 35), shown(4, "me", 30)]
            # Two more overtake within the interval: one event, from 4 to 6.
            await client.scored(erin=45, frank=31)
            second = await receive(ws)
            assert (second["rank"], second["previous"], second["score"]) == (6, 4, 30)
            assert second["window"] == [shown(5, "frank", 31), shown(6, "me", 30)]
            # A move wholly above the window changes nothing shown: no event.
            await client.scored(erin=1)
            await assert_silent(ws, 0.7)
            # The player's own write: rank and score (and a new top 1, on the board).
            await client.scored(me=100)
            own = await next_rank(ws)
            assert (own["rank"], own["previous"], own["score"]) == (1, 6, 130)
            assert own["window"] == [shown(1, "me", 130), shown(2, "carol", 50)]
        finally:
            await close_websocket(ws)


async def test_both_formats_carry_rank_events_and_a_player_not_ranked_has_no_window() -> None:
    async with serving(rate_limit_per_minute=0) as client:
        await client.scored(ann=10)
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
            await client.scored(newcomer=20)
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
        await client.scored(a=10, b=5)
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


async def test_a_watcher_that_stops_reading_rank_events_is_bounded_then_closed() -> None:
    bound = 16384
    async with serving(
        top_n=1,  # the board's own messages stay out of the way: rank events alone
        rate_limit_per_minute=0,
        max_increment=1_000_000,
        ws_max_buffer_bytes=bound,
        ws_slow_client_timeout_s=0.5,
        ws_send_buffer_bytes=4096,
    ) as client:
        service = client.running.service
        await client.scored(top=10_000, me=500, nb=499)
        token = make_token("me")
        async with stuck_client(client, f"?watch=me&window=10&token={token}") as stuck:
            await eventually(lambda: len(service.rank_stream) == 1, "the rank watcher")
            [watcher] = service.fanout._seats
            worst, v = 0, 10
            while not service.fanout._lagging:
                assert v < 2_000, "the stalled rank watcher was never marked lagging"
                v += 1  # nb passes me, then falls behind again: my rank moves each time
                service.live_ranks.apply(BoardRow("nb", "nb", 499 + 2 * (v % 2), v, v))
                await asyncio.sleep(0.002)
                worst = max(worst, unsent(service.fanout, watcher))
            assert worst <= bound  # never past the bound
            # It stays behind past the timeout: closed with 1013 (the board's rules).
            slow_closes = "scoreboard_ws_slow_closes_total"
            await eventually(
                lambda: service.metrics.registry.get_sample_value(slow_closes) == 1,
                "the slow close",
                timeout_s=3,
            )
            frames = await stuck.read_until_close_frame(2)
            assert frames[-1][0] == 0x8 and struct.unpack("!H", frames[-1][1][:2])[0] == 1013


async def test_a_resynced_watcher_gets_its_current_rank_after_the_snapshot() -> None:
    async with serving(rate_limit_per_minute=0) as client:
        await client.scored(a=10, me=5)
        ws = await client.websocket(f"?watch=me&token={make_token('me')}")
        try:
            await receive(ws)  # snapshot
            assert (await receive(ws))["rank"] == 2
            service = client.running.service
            [watcher] = service.fanout._seats
            seat = service.fanout.seat_of(watcher)
            assert seat is not None
            seat.lagging = True  # as the fan-out marks a client over its bound
            service.fanout._lagging[seat] = 0.0
            await client.scored(me=10)  # me first now: skipped while lagging
            # The fan-out's sweeper finds it drained and resyncs it (before or after the
            # write): a snapshot, then the current rank with no "previous".
            seen = [await receive(ws)]
            while not (seen[-1]["event"] == "rank" and seen[-1]["rank"] == 1):
                seen.append(await receive(ws))
            resync = next(i for i, m in enumerate(seen) if m.get("reason") == "resync")
            assert all(m["event"] != "rank" for m in seen[:resync])  # skipped while lagging
            after = seen[resync + 1]
            assert (after["event"], after["previous"]) == ("rank", None)
        finally:
            await close_websocket(ws)
