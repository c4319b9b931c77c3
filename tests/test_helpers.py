"""The shared test helpers fail when what they wait for never happens: a helper that
passes on a timeout would make every test built on it pass with the feature broken."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import tornado.websocket

from server.app import WS_MAX_MESSAGE_BYTES
from tests.conftest import close_websocket, eventually, scaled, serving

pytestmark = pytest.mark.gen_test(timeout=scaled(10))


async def test_eventually_returns_the_first_value_that_holds() -> None:
    values = iter([0, 0, 3, 4])
    assert await eventually(lambda: next(values), "a truthy value") == 3
    lengths = iter([[1], [1, 2], [1, 2, 3]])
    assert await eventually(lambda: next(lengths), "two", until=lambda v: len(v) == 2) == [1, 2]


async def test_eventually_awaits_an_async_check() -> None:
    calls = 0

    async def counted() -> int:
        nonlocal calls
        calls += 1
        return calls

    assert await eventually(counted, "three calls", until=lambda n: n >= 3) == 3


async def test_eventually_fails_on_timeout_naming_the_condition_and_the_last_value() -> None:
    started = time.monotonic()
    with pytest.raises(AssertionError) as failure:
        await eventually(lambda: [1, 2], "the answer", until=lambda v: v == [42], timeout_s=0.05)
    assert time.monotonic() - started >= scaled(0.05)
    assert "the answer" in str(failure.value)
    assert "last value: [1, 2]" in str(failure.value)
    with pytest.raises(AssertionError, match="never true"):
        await eventually(lambda: False, "never true", timeout_s=0.05)


async def test_eventually_lets_an_error_in_the_check_through_at_once() -> None:
    def broken() -> int:
        raise KeyError("no such sample")

    started = time.monotonic()
    with pytest.raises(KeyError):
        await eventually(broken, "a sample", timeout_s=5)
    assert time.monotonic() - started < scaled(1)


@asynccontextmanager
async def silent_websocket_server() -> AsyncIterator[str]:
    """A server that accepts the WebSocket upgrade, then never answers a frame; its URL.
    The test must drop the connection before leaving."""
    served = asyncio.Event()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip().decode()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept_value = tornado.websocket.WebSocketProtocol13.compute_accept_value(key)
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept_value.encode() + b"\r\n\r\n"
        )
        await reader.read()  # take the close frame, answer nothing, wait for the client to go
        writer.close()
        await writer.wait_closed()
        served.set()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        await asyncio.wait_for(served.wait(), scaled(2))
    finally:
        server.close()
        await server.wait_closed()


async def test_close_websocket_fails_when_the_server_does_not_answer_the_close_frame() -> None:
    async with silent_websocket_server() as url:
        ws = await tornado.websocket.websocket_connect(url)
        assert ws.protocol is not None and ws.protocol.stream is not None
        stream = ws.protocol.stream
        try:
            with pytest.raises(AssertionError, match="did not answer the close frame"):
                await close_websocket(ws, timeout_s=0.1)
            assert ws.protocol is None  # closed on the client's side all the same
        finally:
            stream.close()  # what Tornado would do after its own 5 s wait


async def test_close_websocket_returns_at_once_on_a_connection_the_server_ended() -> None:
    async with serving() as client:
        ws = await client.websocket()
        await ws.read_message()  # the snapshot
        await ws.write_message("x" * (WS_MAX_MESSAGE_BYTES + 1))  # the server closes (1009)
        assert await asyncio.wait_for(ws.read_message(), scaled(2)) is None
        started = time.monotonic()
        await close_websocket(ws)
        assert time.monotonic() - started < scaled(0.5)
        assert ws.protocol is None
