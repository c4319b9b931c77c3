"""Tokens on live connections, against a real server: a connection that needs its token
(``watch=me``, or ``SCOREBOARD_WS_REQUIRE_AUTH``) is warned before it expires, may send a
fresh one, and is closed with 4401 if it does not; public watchers are not affected."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
import tornado.websocket

from handlers.live.token_lease import TokenLease, TokenLeases
from server.domain.token_lease import TOKEN_EXPIRED_CLOSE_CODE
from tests.conftest import Client, close_websocket, eventually, make_token, scaled, serving
from tests.handlers.live.test_fanout import stuck_client

pytestmark = pytest.mark.gen_test(timeout=scaled(20))

WebSocket = tornado.websocket.WebSocketClientConnection
SHORT_S = 2  # a token this short-lived is warned of at once (less than 30 s left)


async def next_event(ws: WebSocket, event: str, timeout_s: float = 3.0) -> dict[str, Any]:
    """The next message whose event is ``event`` (others skipped); fails on a close."""
    async with asyncio.timeout(scaled(timeout_s)):
        while True:
            raw = await ws.read_message()
            assert raw is not None, f"closed ({ws.close_code} {ws.close_reason})"
            message: dict[str, Any] = json.loads(raw)
            if message.get("event") == event:
                return message


async def closed(ws: WebSocket, timeout_s: float = 4.0) -> list[str]:
    """Every event read until the server closes the connection (then closed here too)."""
    events = []
    async with asyncio.timeout(scaled(timeout_s)):
        while (raw := await ws.read_message()) is not None:
            events.append(json.loads(raw)["event"])
    await close_websocket(ws)
    return events


async def refresh(ws: WebSocket, token: str | None) -> None:
    message: dict[str, Any] = {"event": "refresh"}
    if token is not None:
        message["token"] = token
    await ws.write_message(json.dumps(message))


def expired_closes(client: Client) -> float:
    registry = client.running.service.metrics.registry
    return registry.get_sample_value("scoreboard_ws_token_expired_total", {}) or 0.0


def refreshes(client: Client, outcome: str) -> float:
    registry = client.running.service.metrics.registry
    labels = {"outcome": outcome}
    return registry.get_sample_value("scoreboard_ws_token_refreshes_total", labels) or 0.0


async def test_a_warned_connection_refreshes_its_token_and_stays() -> None:
    async with serving(jwt_leeway_s=0) as client:
        ws = await client.websocket(f"?watch=me&token={make_token('ann', ttl_s=SHORT_S)}")
        try:
            warning = await next_event(ws, "token_expiring")
            assert 0 <= warning["in_s"] <= SHORT_S
            await refresh(ws, make_token("ann", ttl_s=600))
            refreshed = await next_event(ws, "token_refreshed")
            assert 595 <= refreshed["expires_in_s"] <= 600
            await asyncio.sleep(SHORT_S + 0.5)  # past the first token's expiry
            await client.scored(ann=4)
            rank = await next_event(ws, "rank")
            assert (rank["rank"], rank["score"]) == (1, 4)
            assert ws.close_code is None
            assert (refreshes(client, "accepted"), expired_closes(client)) == (1, 0)
        finally:
            await close_websocket(ws)


async def test_a_connection_that_does_not_refresh_is_closed_with_4401() -> None:
    async with serving(jwt_leeway_s=0) as client:
        ws = await client.websocket(f"?watch=me&token={make_token('bo', ttl_s=SHORT_S)}")
        events = await closed(ws)
        assert "token_expiring" in events
        assert (ws.close_code, ws.close_reason) == (TOKEN_EXPIRED_CLOSE_CODE, "token expired")
        assert expired_closes(client) == 1


async def test_the_leeway_extends_the_connection_as_it_extends_the_token() -> None:
    async with serving(jwt_leeway_s=1) as client:
        ws = await client.websocket(f"?watch=me&token={make_token('cy', ttl_s=1)}")
        warning = await next_event(ws, "token_expiring")
        assert 1 <= warning["in_s"] <= 2  # exp (0 to 1 s away) plus the 1 s leeway
        await closed(ws)
        assert ws.close_code == TOKEN_EXPIRED_CLOSE_CODE


async def test_a_fresh_token_of_another_player_or_an_invalid_one_is_refused() -> None:
    async with serving(jwt_leeway_s=0) as client:
        ws = await client.websocket(f"?watch=me&token={make_token('di', ttl_s=SHORT_S)}")
        await next_event(ws, "token_expiring")
        await refresh(ws, make_token("eve", ttl_s=600))
        assert (await next_event(ws, "token_refused"))["error"] == "token_mismatch"
        await refresh(ws, "not-a-jwt")
        assert (await next_event(ws, "token_refused"))["error"] == "invalid_token"
        await refresh(ws, None)
        assert (await next_event(ws, "token_refused"))["error"] == "missing_token"
        assert refreshes(client, "refused") == 3
        # The first token's deadline stands.
        await closed(ws)
        assert ws.close_code == TOKEN_EXPIRED_CLOSE_CODE


async def test_a_fresh_token_expiring_no_later_or_not_ascii_is_refused_and_harmless() -> None:
    async with serving() as client:
        ws = await client.websocket(f"?watch=me&token={make_token('ida', ttl_s=600)}")
        try:
            await next_event(ws, "rank")  # open, and nothing to warn of yet
            await refresh(ws, make_token("ida", ttl_s=300))  # older: would cut it short
            refused = await next_event(ws, "token_refused")
            assert (refused["error"], refused["message"]) == (
                "invalid_token",
                "the fresh token expires no later than the one held",
            )
            await refresh(ws, "\ud800.x.y")  # a lone surrogate: not even encodable
            assert (await next_event(ws, "token_refused"))["error"] == "invalid_token"
            await client.scored(ida=2)
            assert (await next_event(ws, "rank"))["score"] == 2  # the connection goes on
            [lease] = client.running.service.token_leases
            assert lease.expires_at > time.time() + 500  # still the first token's
        finally:
            await close_websocket(ws)


async def test_a_shutdown_ends_every_lease_and_its_timer_at_once() -> None:
    async with serving(jwt_leeway_s=0) as client:
        # A client that never reads: its close handshake never ends (Tornado gives it 5 s
        # before on_close), so only the close itself can end the lease.
        token = make_token("jo", ttl_s=SHORT_S)
        async with stuck_client(client, f"?watch=me&token={token}"):
            leases = client.running.service.token_leases
            await eventually(lambda: asyncio.sleep(0, len(leases)), "the lease held")
            client.running.service.fanout.close_all(1001, "server shutting down")
            assert len(leases) == 0
            await asyncio.sleep(SHORT_S + 0.5)
            assert expired_closes(client) == 0  # its timer did not fire


async def test_connections_of_a_board_that_requires_auth_are_held_to_their_token() -> None:
    async with serving(jwt_leeway_s=0, ws_require_auth=True) as client:
        ws = await client.websocket(f"?token={make_token('fay', ttl_s=SHORT_S)}")
        await next_event(ws, "token_expiring")
        await closed(ws)
        assert ws.close_code == TOKEN_EXPIRED_CLOSE_CODE


async def test_a_board_route_connection_is_warned_too() -> None:
    async with serving(jwt_leeway_s=0) as client:
        token = make_token("gus", ttl_s=SHORT_S)
        ws = await client.websocket_at(f"/ws/boards/main?watch=me&token={token}")
        try:
            await next_event(ws, "token_expiring")
            await refresh(ws, make_token("gus", ttl_s=600))
            await next_event(ws, "token_refreshed")
        finally:
            await close_websocket(ws)


async def test_public_watchers_are_not_affected() -> None:
    async with serving(jwt_leeway_s=0) as client:
        # An optional token (auth not required, no watch=me) is not held.
        ws = await client.websocket(f"?token={make_token('hal', ttl_s=1)}")
        try:
            assert json.loads(await ws.read_message() or "{}")["event"] == "snapshot"
            await refresh(ws, make_token("hal", ttl_s=600))  # ignored, as any message
            await asyncio.sleep(scaled(2.5))
            await client.scored(hal=1)
            assert json.loads(await ws.read_message() or "{}")["event"] == "update"
            assert ws.close_code is None
        finally:
            await close_websocket(ws)


# --- the lease itself, with a fake connection ------------------------------------------


class FakeConnection:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None

    def send(self, message: str) -> bool:
        self.sent.append(json.loads(message))
        return True

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


def lease_for(connection: FakeConnection, expires_in_s: float) -> TokenLease:
    return TokenLease(
        "ann",
        time.time() + expires_in_s,
        leeway_s=0,
        send=connection.send,
        close=connection.close,
    )


async def test_a_resynced_connection_is_warned_again_once_warned_before() -> None:
    leases = TokenLeases()
    warned, quiet = FakeConnection(), FakeConnection()
    leases.hold(warned, lease_for(warned, 5))  # under 30 s left: warned at once
    leases.hold(quiet, lease_for(quiet, 600))  # not warned yet
    await asyncio.sleep(0.01)
    assert [m["event"] for m in warned.sent] == ["token_expiring"]
    # The fan-out resynced both (their warnings may have been skipped while they lagged).
    leases.resynced(warned)
    leases.resynced(quiet)
    assert [m["event"] for m in warned.sent] == ["token_expiring", "token_expiring"]
    assert quiet.sent == []
    leases.resynced(object())  # a watcher without a lease: nothing
    for connection in (warned, quiet):
        leases.release(connection)
    assert len(leases) == 0


async def test_a_released_lease_never_closes_its_connection() -> None:
    leases = TokenLeases()
    connection = FakeConnection()
    leases.hold(connection, lease_for(connection, 0.05))
    leases.release(connection)
    await asyncio.sleep(0.2)
    assert connection.closed is None


async def test_every_fanout_tells_the_leases_of_its_resyncs(tmp_path: Path) -> None:
    boards = tmp_path / "boards.toml"
    boards.write_text('[boards.kills]\nperiods = ["daily", "all_time"]\n')
    async with serving(boards_file=str(boards)) as client:
        service = client.running.service
        resynced = service.token_leases.resynced
        fanouts = [service.fanout, *service.board_fanouts.values()]
        assert len(fanouts) == 3  # the original stream's and each board period's
        assert all(resynced in fanout._on_resync for fanout in fanouts)
