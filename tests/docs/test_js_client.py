"""The client module (``handlers/web/scoreboard.js``, docs/protocol.md) run under Node
against real servers: it reconnects after a restart (through failed attempts, which Node
reports with ``error`` alone), refreshes a refused or expiring token once before retrying,
refreshes its token on a live connection when the server warns, and stops."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import jwt
import pytest

from tests.conftest import Client, make_token, scaled, serving, settings_for

pytestmark = pytest.mark.gen_test(timeout=scaled(60))

HARNESS = Path(__file__).with_name("watch_harness.mjs")
NO_NODE = (
    "NODE IS MISSING (or has no WebSocket even with --experimental-websocket): the "
    "client module handlers/web/scoreboard.js is NOT tested against a server here; "
    "install Node 20 or later"
)

Event = dict[str, Any]


@pytest.fixture(scope="module")
def node() -> list[str]:
    """The command that runs Node with a WebSocket global (Node 22: none; 20: a flag)."""
    binary = shutil.which("node")
    if binary is None:
        pytest.skip(NO_NODE)
    for flags in ([], ["--experimental-websocket"]):
        probe = subprocess.run(
            [binary, *flags, "-e", "process.exit(typeof WebSocket === 'function' ? 0 : 1)"],
            capture_output=True,
            timeout=scaled(20),
            check=False,
        )
        if probe.returncode == 0:
            return [binary, *flags]
    pytest.skip(NO_NODE)


class Watcher:
    """The module running in a Node process; its callbacks arrive as events."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.events: list[Event] = []

    async def wait_for(self, matches: Callable[[Event], bool], timeout_s: float = 10) -> Event:
        """The next event that ``matches``; fails after ``timeout_s`` (scaled)."""
        assert self.process.stdout is not None
        async with asyncio.timeout(scaled(timeout_s)):
            while True:
                line = await self.process.stdout.readline()
                assert line, f"the client ended; events: {self.events}"
                event = json.loads(line)
                self.events.append(event)
                if matches(event):
                    return event

    async def next(self, event: Event, timeout_s: float = 10) -> None:
        await self.wait_for(lambda e: e == event, timeout_s)

    async def board(self, rows: list[dict[str, Any]]) -> None:
        await self.next({"event": "board", "rows": rows})

    async def state(self, state: str) -> None:
        await self.next({"event": "state", "state": state})

    async def settle(self, seconds: float) -> None:
        """Collect what arrives within ``seconds`` (scaled)."""
        with contextlib.suppress(TimeoutError):
            await self.wait_for(lambda e: False, seconds)

    def count(self, event: Event) -> int:
        return self.events.count(event)

    async def stop(self) -> int:
        """Call ``stop()``; return the exit code once the process ends on its own."""
        assert self.process.stdin is not None
        self.process.stdin.write(b"stop\n")
        await self.process.stdin.drain()
        await self.state("stopped")
        assert self.process.stdout is not None
        async with asyncio.timeout(scaled(10)):
            rest = await self.process.stdout.read()
            code = await self.process.wait()
        self.events += [json.loads(line) for line in rest.splitlines()]
        return code


@contextlib.asynccontextmanager
async def watching(
    node: list[str],
    client: Client | int,
    token: str | None = None,
    fresh: list[str] | None = None,
    *,
    watch: bool = False,
) -> AsyncIterator[Watcher]:
    """The module connected to the server on ``client``'s port; ``fresh``: what its
    refreshToken() answers, in order (None: no refreshToken)."""
    port = client if isinstance(client, int) else client.running.port
    config = {"origin": f"http://127.0.0.1:{port}", "token": token, "fresh": fresh}
    process = await asyncio.create_subprocess_exec(
        *node,
        str(HARNESS),
        json.dumps({**config, "watch": watch}),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield Watcher(process)
    finally:
        if process.returncode is None:
            process.kill()
        _, errors = await process.communicate()
        assert b"Error" not in errors, errors.decode()


def row(user_id: str, score: int) -> dict[str, Any]:
    return {"user_id": user_id, "username": user_id.title(), "score": score}


async def update(client: Client, user_id: str, increment: int) -> None:
    token = make_token(user_id, name=user_id.title())
    response = await client.update(token, {"increment": increment})
    assert response.code == 200, response.body


async def test_the_client_reconnects_after_a_restart_and_sees_new_updates(
    node: list[str],
) -> None:
    async with contextlib.AsyncExitStack() as first_server:
        first = await first_server.enter_async_context(serving())
        port = first.running.port
        async with watching(node, port) as watcher:
            await watcher.board([])
            await update(first, "ada", 5)
            await watcher.board([row("ada", 5)])
            await first_server.aclose()  # a restart: 1001 going away, then nothing listens
            await watcher.state("reconnecting")
            # At least one attempt fails while the server is down (Node: "error" alone).
            await watcher.next({"event": "retry", "failedBeforeOpen": True})
            async with serving(settings_for(port=port)) as second:
                await watcher.state("live")
                await watcher.board([])  # the new server's own (empty) board, a new epoch
                await update(second, "bob", 5)
                await watcher.board([row("bob", 5)])
                assert await watcher.stop() == 0


async def test_a_refused_token_is_refreshed_once_and_the_retry_opens(node: list[str]) -> None:
    forged = make_token("p1", secret="another-secret-that-is-32-bytes-long!!", ttl_s=3600)
    async with (
        serving(ws_require_auth=True) as client,
        watching(node, client, forged, [make_token("p1")]) as watcher,
    ):
        await watcher.board([])
        await watcher.settle(0.5)  # a second reconnect for the same loss would show here
        assert watcher.events[:8] == [
            {"event": "state", "state": "connecting"},
            {"event": "socket"},  # refused: Node reports "error" alone, no "close"
            {"event": "state", "state": "reconnecting"},
            {"event": "retry", "failedBeforeOpen": True},
            {"event": "refresh"},
            {"event": "socket"},
            {"event": "state", "state": "live"},
            {"event": "board", "rows": []},
        ]
        assert watcher.count({"event": "socket"}) == 2
        assert watcher.count({"event": "refresh"}) == 1
        assert await watcher.stop() == 0


async def test_a_token_about_to_expire_is_refreshed_before_connecting(node: list[str]) -> None:
    expiring = make_token("p1", ttl_s=20)  # within the module's one-minute margin
    async with (
        serving(ws_require_auth=True) as client,
        watching(node, client, expiring, [make_token("p1")]) as watcher,
    ):
        await watcher.board([])
        assert watcher.events[:4] == [
            {"event": "refresh"},
            {"event": "state", "state": "connecting"},
            {"event": "socket"},
            {"event": "state", "state": "live"},
        ]
        assert await watcher.stop() == 0


async def test_a_live_connection_takes_a_fresh_token_when_the_server_warns(
    node: list[str],
) -> None:
    # The module refreshes a token that expires within a minute before it connects, so
    # its first refreshToken() answer is a 2 s token too: the server warns at once.
    expiring = make_token("p1", ttl_s=2)
    opened_with = make_token("p1", ttl_s=2)
    async with (
        serving(jwt_leeway_s=0) as client,
        watching(
            node, client, expiring, [opened_with, make_token("p1", ttl_s=600)], watch=True
        ) as watcher,
    ):
        await watcher.board([])
        await watcher.next({"event": "token", "token": "token_expiring"})
        await watcher.next({"event": "token", "token": "token_refreshed"})
        expired_at = jwt.decode(opened_with, options={"verify_signature": False})["exp"]
        await asyncio.sleep(max(0.0, expired_at - time.time()) + scaled(0.5))
        await update(client, "ada", 5)  # after the token it connected with expired
        await watcher.board([row("ada", 5)])
        await watcher.settle(0.2)
        assert watcher.count({"event": "refresh"}) == 2
        assert watcher.count({"event": "socket"}) == 1  # the same connection throughout
        assert [e for e in watcher.events if e["event"] in ("state", "close")] == [
            {"event": "state", "state": "connecting"},
            {"event": "state", "state": "live"},
        ]
        tokens = [e["token"] for e in watcher.events if e["event"] == "token"]
        assert tokens == ["token_expiring", "token_refreshed"]
        assert await watcher.stop() == 0


async def test_without_refresh_token_the_server_closes_and_the_client_reconnects(
    node: list[str],
) -> None:
    async with (
        serving(jwt_leeway_s=0) as client,
        watching(node, client, make_token("p1", ttl_s=2), watch=True) as watcher,
    ):
        await watcher.board([])
        await watcher.next({"event": "token", "token": "token_expiring"})
        await watcher.next({"event": "close", "code": 4401}, timeout_s=5)
        await watcher.state("reconnecting")
        await watcher.next({"event": "socket"})  # it does try again (after its backoff)
        assert watcher.count({"event": "socket"}) == 2
        assert {"event": "token", "token": "token_refreshed"} not in watcher.events
        assert await watcher.stop() == 0


async def test_stop_ends_the_retries_of_a_client_whose_server_is_gone(node: list[str]) -> None:
    async with contextlib.AsyncExitStack() as server:
        client = await server.enter_async_context(serving())
        async with watching(node, client) as watcher:
            await watcher.board([])
            await server.aclose()
            await watcher.state("reconnecting")
            await watcher.next({"event": "retry", "failedBeforeOpen": True})  # retrying
            assert await watcher.stop() == 0  # the process ends: no timer or socket left
            stopped = watcher.events.index({"event": "state", "state": "stopped"})
            assert {"event": "socket"} not in watcher.events[stopped:]
