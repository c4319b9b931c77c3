"""The JavaScript client of docs/protocol.md, run under Node against real servers: it
reconnects after a restart (through failed attempts, which Node reports with ``error``
alone), refreshes a refused or expiring token once before retrying, and stops."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Client, make_token, scaled, serving, settings_for

pytestmark = pytest.mark.gen_test(timeout=scaled(60))

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "docs" / "client" / "watch-scoreboard.mjs"
HARNESS = Path(__file__).with_name("watch_harness.mjs")
NO_NODE = (
    "NODE IS MISSING (or has no WebSocket even with --experimental-websocket): the "
    "JavaScript client of docs/protocol.md is NOT tested here; install Node 20 or later"
)

Event = dict[str, Any]


def test_the_client_in_protocol_md_is_the_tested_file() -> None:
    protocol = (ROOT / "docs" / "protocol.md").read_text()
    section = protocol.split("## A client to copy (JavaScript)", 1)[1]
    snippet = re.search(r"```js\n(.*?)```", section, re.DOTALL)
    assert snippet is not None
    assert snippet.group(1) == CLIENT.read_text()


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
    """The client running in a Node process; its callbacks arrive as events."""

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

    async def board(self, rows: list[dict[str, Any]]) -> None:
        await self.wait_for(lambda e: e == {"event": "board", "board": rows})

    async def status(self, status: str) -> None:
        await self.wait_for(lambda e: e == {"event": "status", "status": status})

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
        await self.wait_for(lambda e: e["event"] == "stopped")
        assert self.process.stdout is not None
        async with asyncio.timeout(scaled(10)):
            rest = await self.process.stdout.read()
            code = await self.process.wait()
        self.events += [json.loads(line) for line in rest.splitlines()]
        return code


@contextlib.asynccontextmanager
async def watching(node: list[str], port: int, *tokens: str) -> AsyncIterator[Watcher]:
    url = f"ws://127.0.0.1:{port}/ws/scoreboard"
    process = await asyncio.create_subprocess_exec(
        *node,
        str(HARNESS),
        url,
        *tokens,
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
            await watcher.status("lost")
            # At least one attempt fails while the server is down (Node: "error" alone).
            await watcher.status("connecting")
            await watcher.status("lost")
            async with serving(settings_for(port=port)) as second:
                await watcher.status("open")
                await watcher.board([])  # the new server's own (empty) board, a new epoch
                await update(second, "bob", 5)
                await watcher.board([row("bob", 5)])
                assert await watcher.stop() == 0


async def test_a_refused_token_is_refreshed_once_and_the_retry_opens(node: list[str]) -> None:
    forged = make_token("p1", secret="another-secret-that-is-32-bytes-long!!", ttl_s=3600)
    async with (
        serving(ws_require_auth=True) as client,
        watching(node, client.running.port, forged, make_token("p1")) as watcher,
    ):
        await watcher.board([])
        await watcher.settle(0.5)  # a second reconnect for the same loss would show here
        assert watcher.events[:6] == [
            {"event": "status", "status": "connecting"},
            {"event": "status", "status": "lost"},  # refused: Node reports "error" alone
            {"event": "refresh"},
            {"event": "status", "status": "connecting"},
            {"event": "status", "status": "open"},
            {"event": "board", "board": []},
        ]
        assert watcher.count({"event": "status", "status": "connecting"}) == 2
        assert watcher.count({"event": "refresh"}) == 1
        assert await watcher.stop() == 0


async def test_a_token_about_to_expire_is_refreshed_before_connecting(node: list[str]) -> None:
    expiring = make_token("p1", ttl_s=20)  # within the client's one-minute margin
    async with (
        serving(ws_require_auth=True) as client,
        watching(node, client.running.port, expiring, make_token("p1")) as watcher,
    ):
        await watcher.board([])
        assert watcher.events[:2] == [
            {"event": "refresh"},
            {"event": "status", "status": "connecting"},
        ]
        assert await watcher.stop() == 0


async def test_stop_ends_the_retries_of_a_client_whose_server_is_gone(node: list[str]) -> None:
    async with contextlib.AsyncExitStack() as server:
        client = await server.enter_async_context(serving())
        async with watching(node, client.running.port) as watcher:
            await watcher.board([])
            await server.aclose()
            await watcher.status("connecting")  # retrying
            await watcher.status("lost")
            assert await watcher.stop() == 0  # the process ends: no timer or socket left
            stopped = watcher.events.index({"event": "stopped"})
            assert {"event": "status", "status": "connecting"} not in watcher.events[stopped:]
