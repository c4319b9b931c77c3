"""``/ws/scoreboard`` against a real server: snapshot, updates, coalescing, closing."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import tornado.websocket

from server.app import WS_MAX_MESSAGE_BYTES
from tests.conftest import (
    Client,
    body_of,
    close_websocket,
    eventually,
    make_token,
    scaled,
    serving,
)

pytestmark = pytest.mark.gen_test(timeout=scaled(20))

WebSocket = tornado.websocket.WebSocketClientConnection


@asynccontextmanager
async def watching(client: Client) -> AsyncIterator[WebSocket]:
    """A WebSocket to the scoreboard, closed (and its socket released) on the way out."""
    ws = await client.websocket()
    try:
        yield ws
    finally:
        await close_websocket(ws)


async def receive(ws: WebSocket, timeout_s: float = 2.0) -> dict[str, Any]:
    """The next message, decoded; fails if none comes in time or the connection closed."""
    raw = await asyncio.wait_for(ws.read_message(), scaled(timeout_s))
    assert raw is not None, f"connection closed ({ws.close_code} {ws.close_reason})"
    assert isinstance(raw, str)
    message: dict[str, Any] = json.loads(raw)
    return message


async def receive_raw(ws: WebSocket, timeout_s: float = 2.0) -> str:
    raw = await asyncio.wait_for(ws.read_message(), scaled(timeout_s))
    assert isinstance(raw, str), f"connection closed ({ws.close_code} {ws.close_reason})"
    return raw


async def assert_silent(ws: WebSocket, wait_s: float = 0.3) -> None:
    """No message (and no close) arrives within ``wait_s``."""
    with pytest.raises(TimeoutError):
        message = await asyncio.wait_for(ws.read_message(), scaled(wait_s))
        pytest.fail(f"unexpected message: {message!r}")


async def websocket_gauge(client: Client) -> float:
    return gauge(await metrics_text(client), "scoreboard_websocket_connections")


async def metrics_text(client: Client) -> str:
    response = await client.request("GET", "/metrics")
    assert response.code == 200
    return response.body.decode()


def gauge(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in the metrics")


async def wait_for_gauge(client: Client, expected: float) -> None:
    """Wait until the WebSocket gauge counts ``expected`` open connections."""
    await eventually(
        lambda: websocket_gauge(client),
        f"the gauge counts {expected:g}",
        until=lambda value: value == expected,
    )


def row(user_id: str, score: int, username: str | None = None) -> dict[str, Any]:
    return {"user_id": user_id, "username": username or user_id, "score": score}


def epoch_of(client: Client) -> str:
    """The stream's epoch: one per server process."""
    return client.running.service.leaderboard.view.epoch


async def test_snapshot_on_connect_of_an_empty_board() -> None:
    async with serving() as client, watching(client) as ws:
        epoch = epoch_of(client)
        assert isinstance(epoch, str) and epoch
        assert await receive(ws) == {
            "event": "snapshot",
            "epoch": epoch,
            "version": 0,
            "reason": "new",
            "top_scores": [],
        }


async def test_snapshot_on_connect_shows_the_current_board_and_version() -> None:
    async with serving() as client:
        await client.update(make_token("alice", name="Alice"), {"increment": 5})
        await client.update(make_token("bob"), {"increment": 9})
        expected = [row("bob", 9), row("alice", 5, "Alice")]
        await eventually(client.top, "both on the board", until=lambda rows: rows == expected)
        async with watching(client) as ws:
            # Two visible changes so far, each broadcast at once (interval 0): version 2.
            assert await receive(ws) == {
                "event": "snapshot",
                "epoch": epoch_of(client),
                "version": 2,
                "reason": "new",
                "top_scores": expected,
            }
            await assert_silent(ws, 0.1)


async def test_snapshot_after_a_restart_shows_the_stored_board(tmp_path: Any) -> None:
    path = str(tmp_path / "scores.db")
    async with serving(sqlite_path=path) as client:
        first_epoch = epoch_of(client)
        await client.update(make_token("keeper"), {"increment": 4})
    async with serving(sqlite_path=path) as client, watching(client) as ws:
        snapshot = await receive(ws)
        assert snapshot["event"] == "snapshot"
        assert snapshot["top_scores"] == [row("keeper", 4)]
        # A new process is a new stream: another epoch, versions from 0 again.
        assert snapshot["epoch"] == epoch_of(client) != first_epoch
        assert snapshot["version"] == 0


async def test_update_after_post_with_strictly_increasing_versions() -> None:
    async with serving(top_n=3) as client, watching(client) as ws:
        snapshot = await receive(ws)
        versions = [snapshot["version"]]
        await client.update(make_token("alice"), {"increment": 5})
        first = await receive(ws)
        assert first["event"] == "update"
        assert first["epoch"] == snapshot["epoch"] == epoch_of(client)
        assert first["top_scores"] == [row("alice", 5)]
        versions.append(first["version"])
        steps = [("bob", 3), ("bob", 4), ("carol", 20), ("alice", 1)]
        for user, increment in steps:
            await client.update(make_token(user), {"increment": increment})
            message = await receive(ws)
            assert message["event"] == "update"
            assert message["epoch"] == snapshot["epoch"]
            versions.append(message["version"])
        assert message["top_scores"] == [row("carol", 20), row("bob", 7), row("alice", 6)]
        assert message["top_scores"] == await client.top()
        assert all(a < b for a, b in itertools.pairwise(versions)), versions
        assert versions == list(range(len(versions)))  # consecutive, within one epoch


async def test_a_change_outside_the_top_n_sends_no_message() -> None:
    async with serving(top_n=2) as client, watching(client) as ws:
        await receive(ws)  # snapshot
        await client.update(make_token("alice"), {"increment": 10})
        await client.update(make_token("bob"), {"increment": 5})
        await receive(ws)
        shown = await receive(ws)
        assert shown["top_scores"] == [row("alice", 10), row("bob", 5)]
        # A third user with a low score: the top 2 did not change.
        response = await client.update(make_token("carol"), {"increment": 1})
        assert body_of(response)["new_score"] == 1
        await assert_silent(ws)
        # ... and a later visible change still comes through, with the next version.
        await client.update(make_token("carol"), {"increment": 8})
        message = await receive(ws)
        assert message["top_scores"] == [row("alice", 10), row("carol", 9)]
        assert message["version"] == shown["version"] + 1


async def test_every_watcher_gets_the_same_update() -> None:
    async with serving() as client, contextlib.AsyncExitStack() as stack:
        watchers = [await stack.enter_async_context(watching(client)) for _ in range(4)]
        for ws in watchers:
            await receive(ws)  # snapshot
        await client.update(make_token("dave"), {"increment": 2})
        messages = [await receive_raw(ws) for ws in watchers]
        assert len(set(messages)) == 1
        assert json.loads(messages[0])["top_scores"] == [row("dave", 2)]
        assert json.loads(messages[0])["event"] == "update"


async def test_a_burst_within_the_interval_is_coalesced() -> None:
    async with (
        serving(broadcast_interval_ms=200, rate_limit_per_minute=0) as client,
        watching(client) as ws,
    ):
        await receive(ws)  # snapshot
        tokens = [make_token(f"burst-{i}") for i in range(5)]
        # After a quiet period, the first change goes out at once, not after 200 ms.
        started = time.monotonic()
        await client.update(tokens[0], {"increment": 1})
        first = await receive(ws)
        assert time.monotonic() - started < 0.15
        assert first == {
            "event": "update",
            "epoch": epoch_of(client),
            "version": 1,
            "top_scores": [row("burst-0", 1)],
        }
        # Then 50 updates at once, inside the next interval.
        # (The board was published just before, so this does not hit the race of
        # test_changes_racing_the_timer_still_get_at_most_one_publish_per_interval.)
        started = time.monotonic()
        responses = await asyncio.gather(
            *(client.update(tokens[i % 5], {"increment": i + 1}) for i in range(50))
        )
        burst_s = time.monotonic() - started
        assert all(r.code == 200 for r in responses)
        final = await client.top()
        assert [r["score"] for r in final] == [275, 265, 255, 245, 236]
        updates = []
        while True:
            message = await receive(ws)
            updates.append(message)
            if message["top_scores"] == final:
                break
        await assert_silent(ws, 0.4)  # longer than the interval: nothing else is pending
        assert all(m["event"] == "update" for m in updates)
        versions = [m["version"] for m in updates]
        assert versions == list(range(2, len(updates) + 2))
        # At most one message per 200 ms: one for a burst shorter than that.
        allowed = 1 + int(burst_s / 0.2)
        assert len(updates) <= allowed, f"{len(updates)} messages for a {burst_s:.3f} s burst"
        assert updates[-1]["top_scores"] == await client.top()


async def test_a_closing_client_does_not_break_broadcasts_and_the_gauge_goes_down() -> None:
    async with serving() as client:
        async with watching(client) as stays:
            await receive(stays)
            leaves = await client.websocket()
            try:
                await receive(leaves)
                await wait_for_gauge(client, 2)
            finally:
                await close_websocket(leaves)
            await wait_for_gauge(client, 1)
            await client.update(make_token("erin"), {"increment": 3})
            assert (await receive(stays))["top_scores"] == [row("erin", 3)]
        await wait_for_gauge(client, 0)
        # The fan-out (the leaderboard's one subscriber) holds no watcher any more.
        assert len(client.running.service.fanout) == 0
        assert client.running.service.leaderboard.subscribers == {client.running.service.fanout}


async def test_an_abruptly_dropped_client_does_not_break_broadcasts() -> None:
    async with serving() as client, watching(client) as stays:
        await receive(stays)
        dropped = await client.websocket()
        await receive(dropped)
        await wait_for_gauge(client, 2)
        # Drop the TCP connection without a closing handshake.
        assert dropped.protocol is not None and dropped.protocol.stream is not None
        dropped.protocol.stream.close()
        assert await asyncio.wait_for(dropped.read_message(), scaled(2)) is None
        await wait_for_gauge(client, 1)
        await client.update(make_token("frank"), {"increment": 4})
        assert (await receive(stays))["top_scores"] == [row("frank", 4)]
        await close_websocket(dropped)


async def test_client_messages_are_ignored() -> None:
    async with serving() as client, watching(client) as ws:
        await receive(ws)
        await ws.write_message("hello")
        await ws.write_message(json.dumps({"event": "subscribe"}))
        await ws.write_message(b"\x00\x01", binary=True)
        await ws.write_message("x" * WS_MAX_MESSAGE_BYTES)  # exactly the limit is allowed
        await assert_silent(ws, 0.2)
        await client.update(make_token("gina"), {"increment": 1})
        assert (await receive(ws))["top_scores"] == [row("gina", 1)]
        assert await websocket_gauge(client) == 1


async def test_a_message_over_the_limit_closes_that_connection_only() -> None:
    async with serving() as client, watching(client) as other, watching(client) as ws:
        await receive(other)
        await receive(ws)
        await wait_for_gauge(client, 2)
        await ws.write_message("x" * (WS_MAX_MESSAGE_BYTES + 1))
        assert await asyncio.wait_for(ws.read_message(), scaled(2)) is None
        assert ws.close_code == 1009
        await wait_for_gauge(client, 1)
        await client.update(make_token("hank"), {"increment": 2})
        assert (await receive(other))["top_scores"] == [row("hank", 2)]
