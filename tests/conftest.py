"""Shared test helpers: tokens, settings, a real server on an unused port, polling a
condition until it holds, and closing a WebSocket the way a client should."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any, TypeVar, overload

import jwt
import pytest
import tornado.httpclient
import tornado.websocket

from server.lifecycle import Server, run_server
from server.settings import Settings
from server.store.port import ScoreStore

SECRET = "test-secret-that-is-at-least-32-bytes-long!"

# A MongoDB replica set to run the real-MongoDB tests against (docs/deploy.md); unset: skipped.
MONGODB_URI = os.environ.get("SCOREBOARD_TEST_MONGODB_URI")
NEEDS_MONGODB = [
    pytest.mark.mongodb,
    pytest.mark.skipif(
        not MONGODB_URI,
        reason="set SCOREBOARD_TEST_MONGODB_URI to a MongoDB replica set to run this backend",
    ),
]

# Every time-based wait in the tests is multiplied by this one factor (slow CI: raise it).
TIME_SCALE = float(os.environ.get("SCOREBOARD_TEST_TIME_SCALE", "1"))


def scaled(seconds: float) -> float:
    """A timeout in seconds, scaled for the machine running the tests."""
    return seconds * TIME_SCALE


T = TypeVar("T")

POLL_INTERVAL_S = 0.005


@overload
async def eventually(
    check: Callable[[], Awaitable[T]],
    what: str,
    *,
    until: Callable[[T], object] = bool,
    timeout_s: float = 2.0,
) -> T: ...


@overload
async def eventually(
    check: Callable[[], T],
    what: str,
    *,
    until: Callable[[T], object] = bool,
    timeout_s: float = 2.0,
) -> T: ...


async def eventually(
    check: Callable[[], Any],
    what: str,
    *,
    until: Callable[[Any], object] = bool,
    timeout_s: float = 2.0,
) -> Any:
    """Poll ``check`` until ``until`` holds for its value, and return that value.

    Args:
        check: a plain or an async function of no arguments: a predicate, or a getter of the
            value to wait for. Called at once, then every ``POLL_INTERVAL_S``; an exception
            it raises fails the test at once (a broken check is not "not yet").
        what: the awaited condition in words, for the failure message.
        until: when the value is the one awaited; by default, when it is truthy.
        timeout_s: how long to wait, scaled by ``TIME_SCALE``.

    Raises:
        AssertionError: ``until`` still did not hold, checked once more after ``timeout_s``;
            the message names ``what`` and shows the last value.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + scaled(timeout_s)
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if until(value):
            return value
        if loop.time() > deadline:
            raise AssertionError(
                f"not within {scaled(timeout_s):g} s: {what} (last value: {value!r:.2000})"
            )
        await asyncio.sleep(POLL_INTERVAL_S)


def make_token(
    sub: Any = "player-1",
    *,
    name: str | None = None,
    ttl_s: int = 600,
    secret: str = SECRET,
    algorithm: str = "HS256",
    **claims: Any,
) -> str:
    """A token like an identity provider's; ``claims`` add or override (None removes)."""
    now = int(time.time())
    body: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + ttl_s}
    if name is not None:
        body["name"] = name
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    return jwt.encode(body, secret, algorithm=algorithm)


def mint_action_token(
    secret: str, sub: str, act: str, jti: str, *, ttl_s: int = 60, now: float | None = None
) -> str:
    """Sign an action token as the game's action service would."""
    issued = int(time.time() if now is None else now)
    claims = {"sub": sub, "jti": jti, "act": act, "iat": issued, "exp": issued + ttl_s}
    return jwt.encode(claims, secret, algorithm="HS256")


def settings_for(**overrides: Any) -> Settings:
    """Settings for a test server: loopback, any free port, in-memory SQLite, no waiting."""
    base = Settings(
        host="127.0.0.1",
        port=0,
        sqlite_path=":memory:",
        sqlite_synchronous="NORMAL",
        jwt_secret=SECRET,
        jwt_algorithms=("HS256",),
        broadcast_interval_ms=0,
        shutdown_timeout_s=scaled(10),
    )
    return replace(base, **overrides)


@dataclass
class Client:
    """Talks to one running server over real HTTP and WebSocket connections."""

    running: Server

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.running.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.running.port}/ws/scoreboard"

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tornado.httpclient.HTTPResponse:
        if body is None and method == "POST":
            body = b""
        client = tornado.httpclient.AsyncHTTPClient()
        return await client.fetch(
            self.base_url + path,
            method=method,
            body=body,
            headers=headers,
            raise_error=False,
            request_timeout=scaled(10),
        )

    async def update(
        self,
        token: str | None,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> tornado.httpclient.HTTPResponse:
        """POST /api/update-score; ``body`` is JSON-encoded unless it is bytes or str."""
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        raw = body if isinstance(body, bytes | str) else json.dumps(body or {})
        return await self.request("POST", "/api/update-score", raw, all_headers)

    async def scored(self, **increments: int) -> None:
        """Each user (a keyword) adds their increment, with a token naming them in title
        case; each must be answered 200."""
        for user, increment in increments.items():
            token = make_token(user, name=user.title())
            response = await self.update(token, {"increment": increment})
            assert response.code == 200, response.body

    async def top(self) -> list[dict[str, Any]]:
        response = await self.request("GET", "/api/top-scores")
        assert response.code == 200, response.body
        rows: list[dict[str, Any]] = json.loads(response.body)["top_scores"]
        return rows

    async def websocket(self, query: str = "") -> tornado.websocket.WebSocketClientConnection:
        return await tornado.websocket.websocket_connect(self.ws_url + query)

    async def websocket_at(self, path: str) -> tornado.websocket.WebSocketClientConnection:
        """A WebSocket to ``path`` (with its query) on this server."""
        return await tornado.websocket.websocket_connect(
            f"ws://127.0.0.1:{self.running.port}{path}"
        )


async def close_websocket(
    ws: tornado.websocket.WebSocketClientConnection, timeout_s: float = 2.0
) -> None:
    """Close ``ws`` with the closing handshake: send a close frame, then read (and drop) what
    the server still sends until its close frame ends the connection.

    Returns at once if the connection already ended (the server closed it or the socket
    dropped). Fails if the server does not answer the close frame within ``timeout_s``
    (scaled): a server that leaves a closing client hanging is a bug, not a slow test.
    """
    protocol = ws.protocol  # None once this client sent its close frame
    ended = protocol is None or protocol.stream is None or protocol.stream.closed()
    ws.close()  # on an ended connection, only marks the client closed
    if ended:
        return  # reading now would wait forever: the end was already read or is queued
    try:
        async with asyncio.timeout(scaled(timeout_s)):
            while await ws.read_message() is not None:
                pass
    except TimeoutError:
        raise AssertionError(
            f"the server did not answer the close frame within {scaled(timeout_s):g} s"
        ) from None


def body_of(response: tornado.httpclient.HTTPResponse) -> Any:
    return json.loads(response.body)


@asynccontextmanager
async def serving(
    settings: Settings | None = None,
    *,
    store: ScoreStore | None = None,
    clock_ms: Callable[[], int] | None = None,
    **overrides: Any,
) -> AsyncIterator[Client]:
    """Run a real server for the duration of the block and yield a :class:`Client`
    (``clock_ms``: the server's wall clock, default the real one)."""
    settings = settings or settings_for(**overrides)
    clock = {} if clock_ms is None else {"clock_ms": clock_ms}
    async with run_server(settings, settings.jwt_secret or SECRET, store=store, **clock) as running:
        yield Client(running)


@pytest.fixture
def token() -> str:
    return make_token("player-1", name="Player One")
