"""handlers/tornado_internals.py on real loopback sockets: each branch of each function, and
no Tornado private attribute touched anywhere else in handlers/ or server/."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import select
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import tornado
import tornado.web
import tornado.websocket
from tornado.http1connection import HTTP1Connection, HTTP1ConnectionParameters
from tornado.httputil import HTTPConnection
from tornado.iostream import IOStream, SSLIOStream, StreamClosedError, UnsatisfiableReadError
from tornado.netutil import bind_sockets
from tornado.websocket import WebSocketProtocol13

import handlers.header_limit
from handlers.header_limit import HeaderLimitedServer
from handlers.live.outbox import Outbox
from handlers.tornado_internals import (
    CloseListener,
    body_timer,
    close_for_real,
    detach_from_loop,
    intercept_close,
    missing_internals,
    notify_closing,
    reading_until_regex,
    send_whole_now,
    text_frame,
    unsent_bytes,
    unwatch_reads,
    watch_reads,
    write_now,
)
from tests.conftest import scaled
from tests.server.test_transport import self_signed

ROOT = Path(__file__).resolve().parents[2]
SMALL_BUFFER = 4096  # kernel buffers this small back a stream up at once


# --- real sockets --------------------------------------------------------------------------


@contextlib.contextmanager
def tcp_pair(*, small: bool = True) -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected TCP pair on loopback (an unused port): ours (to wrap in a stream) and
    the peer's (non-blocking). With ``small``, both kernel buffers are tiny."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        peer = socket.socket()
        if small:
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
        peer.connect(listener.getsockname())
        ours, _ = listener.accept()
    if small:
        ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
    peer.setblocking(False)
    try:
        yield ours, peer
    finally:
        ours.close()
        peer.close()


class Peer:
    """The client end: reads only when told to."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.received = b""

    async def read(self, size: int) -> bytes:
        """Read until ``size`` more bytes came; return them."""
        loop = asyncio.get_running_loop()
        start = len(self.received)
        async with asyncio.timeout(scaled(5)):
            while len(self.received) < start + size:
                chunk = await loop.sock_recv(self.sock, start + size - len(self.received))
                assert chunk, "the connection ended"
                self.received += chunk
        return self.received[start:]

    def reset(self) -> None:
        """Close with a reset (RST), as a client that vanished."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


class Watcher:
    wants_delta = False

    def __init__(self, stream: IOStream) -> None:
        self.out: IOStream | None = stream

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        self.out = None


@asynccontextmanager
async def watched() -> AsyncIterator[tuple[IOStream, Outbox, Peer]]:
    """A plain IOStream on a loopback connection with tiny buffers, its outbox, its peer."""
    with tcp_pair() as (ours, theirs):
        stream = IOStream(ours)
        try:
            yield stream, Outbox(Watcher(stream), 0), Peer(theirs)
        finally:
            stream.close()


def fill(sock: socket.socket) -> int:
    """Write to ``sock`` until the kernel takes no more; return how much it took."""
    total = 0
    with contextlib.suppress(BlockingIOError):
        while True:
            total += sock.send(b"f" * 65536)
    return total


def drain(sock: socket.socket, size: int) -> None:
    """Read ``size`` bytes from non-blocking ``sock`` without yielding to the event loop."""
    while size:
        try:
            size -= len(sock.recv(size))
        except BlockingIOError:
            select.select([sock], [], [], scaled(5))


def closed_future(stream: IOStream) -> asyncio.Future[None]:
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def closed() -> None:
        if not future.done():
            future.set_result(None)

    stream.set_close_callback(closed)
    return future


BIG = text_frame("x" * (1 << 20)) + text_frame("y" * 1000)  # far more than the kernel takes


# --- write_now / unsent_bytes: the fan-out's direct writes ---------------------------------


@pytest.mark.gen_test(timeout=scaled(20))
async def test_a_frame_the_socket_takes_whole_goes_straight_out() -> None:
    async with watched() as (stream, outbox, peer):
        frame = text_frame("hello")
        assert write_now(outbox, stream, frame) is True
        assert outbox.frames is None  # nothing queued, no Future
        assert not stream.writing()
        assert await peer.read(len(frame)) == frame


@pytest.mark.gen_test(timeout=scaled(20))
async def test_a_partial_write_queues_the_rest_which_arrives_whole_and_in_order() -> None:
    async with watched() as (stream, outbox, peer):
        assert write_now(outbox, stream, BIG) is True
        unsent = outbox.unsent(stream)
        assert 0 < unsent < len(BIG)  # the socket took part, the rest waits
        assert outbox.frames is not None
        after = text_frame("after")
        assert outbox.send(stream, after)  # goes behind the rest, not straight out
        assert await peer.read(len(BIG) + len(after)) == BIG + after
        await asyncio.sleep(0)  # the last chunk's Future resolves
        assert outbox.unsent(stream) == 0
        assert outbox.frames is None  # caught up: direct writes again


@pytest.mark.gen_test(timeout=scaled(20))
async def test_a_full_socket_blocking_io_error_queues_the_whole_frame() -> None:
    async with watched() as (stream, outbox, peer):
        filler = fill(stream.socket)
        frame = text_frame("behind the filler")
        assert write_now(outbox, stream, frame) is True  # BlockingIOError: not a failure
        assert outbox.unsent(stream) == len(frame)  # none of it went
        received = await peer.read(filler + len(frame))
        assert received == b"f" * filler + frame


@pytest.mark.gen_test(timeout=scaled(20))
async def test_bytes_tornado_holds_go_first_nothing_is_written_past_them() -> None:
    async with watched() as (stream, outbox, peer):
        filler = fill(stream.socket)
        own = b"\x89\x00"  # a ping Tornado queued in its buffer
        stream.write(own)
        assert stream.writing()
        frame = text_frame("mine")
        assert write_now(outbox, stream, frame) is None  # the caller queues it
        assert outbox.unsent(stream) == len(own)  # Tornado's buffer counts as unsent
        assert outbox.send(stream, frame)  # queued behind Tornado's bytes
        received = await peer.read(filler + len(own) + len(frame))
        assert received == b"f" * filler + own + frame


@pytest.mark.gen_test(timeout=scaled(20))
async def test_a_reset_connection_is_reported_not_raised() -> None:
    async with watched() as (stream, outbox, peer):
        peer.reset()
        assert write_now(outbox, stream, text_frame("lost")) is False
        assert outbox.send(stream, text_frame("lost")) is False
        assert outbox.frames is None


@pytest.mark.gen_test(timeout=scaled(20))
async def test_a_connection_reset_mid_send_drops_the_rest_and_refuses_more() -> None:
    async with watched() as (stream, outbox, peer):
        closed = closed_future(stream)
        assert outbox.send(stream, BIG)  # part taken, the rest handed to Tornado
        assert outbox.frames is not None
        peer.reset()
        await asyncio.wait_for(closed, scaled(5))  # Tornado's write fails: it closes
        await asyncio.sleep(0)  # the chunk's Future fails: the outbox gives up its queue
        assert outbox.frames is None
        assert outbox.unsent(stream) == 0
        assert write_now(outbox, stream, text_frame("more")) is False
        assert outbox.send(stream, text_frame("more")) is False


@pytest.mark.gen_test(timeout=scaled(20))
async def test_a_closed_stream_has_no_buffer_nothing_unsent_and_takes_nothing() -> None:
    async with watched() as (stream, outbox, _):
        stream.close()
        assert not stream.writing()  # its write buffer is None now
        assert unsent_bytes(outbox, stream) == 0
        outbox.queued = 7
        assert unsent_bytes(outbox, stream) == 7
        outbox.queued = 0
        assert write_now(outbox, stream, text_frame("late")) is False
        assert outbox.send(stream, text_frame("late")) is False


@pytest.mark.gen_test(timeout=scaled(20))
async def test_a_tls_stream_is_left_to_tornado_and_still_gets_the_frame(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=cert)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        port = listener.getsockname()[1]
        connecting = asyncio.ensure_future(
            asyncio.open_connection("127.0.0.1", port, ssl=client_context)
        )
        ours, _ = await asyncio.get_running_loop().sock_accept(listener)
    tls = server_context.wrap_socket(ours, server_side=True, do_handshake_on_connect=False)
    stream = SSLIOStream(tls)
    try:
        outbox = Outbox(Watcher(stream), 0)
        frame = text_frame("over TLS")
        # Before the handshake: a direct send would fail (and after it, skip TLS records).
        assert write_now(outbox, stream, frame) is None
        assert outbox.send(stream, frame)  # through Tornado's stream instead
        reader, writer = await asyncio.wait_for(connecting, scaled(5))
        try:
            assert await asyncio.wait_for(reader.readexactly(len(frame)), scaled(5)) == frame
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
    finally:
        stream.close()


# --- text_frame: the same bytes as Tornado's own framing -----------------------------------


class Echo(tornado.websocket.WebSocketHandler):
    """Answers a text message ``N`` with a message of N characters, through Tornado."""

    def on_message(self, message: str | bytes) -> None:
        self.write_message(payload_of(int(message)))


def payload_of(length: int) -> str:
    return ("0123456789" * (length // 10 + 1))[:length]


def masked_text(text: str) -> bytes:
    """A client's text frame (clients must mask; a zero key leaves the bytes as they are)."""
    data = text.encode()
    assert len(data) < 126
    return struct.pack("!BB", 0x81, 0x80 | len(data)) + b"\0\0\0\0" + data


@asynccontextmanager
async def serving_app(app: tornado.web.Application, **server_args: Any) -> AsyncIterator[int]:
    """Serve ``app`` on an unused loopback port; yield the port."""
    server = HeaderLimitedServer(app, **server_args)
    [sock] = bind_sockets(0, "127.0.0.1", family=socket.AF_INET)
    server.add_sockets([sock])
    try:
        yield sock.getsockname()[1]
    finally:
        server.stop()
        await server.close_all_connections()


async def upgrade(port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a WebSocket by hand (no extensions offered: no compression)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), scaled(5))
    assert head.startswith(b"HTTP/1.1 101 ")
    return reader, writer


@pytest.mark.gen_test(timeout=scaled(20))
async def test_text_frames_are_byte_for_byte_tornados_at_each_length_boundary() -> None:
    lengths = [0, 1, 125, 126, 127, 65535, 65536, 70000]
    async with serving_app(tornado.web.Application([("/echo", Echo)])) as port:
        reader, writer = await upgrade(port, "/echo")
        try:
            for length in lengths:
                ours = text_frame(payload_of(length))
                assert text_frame(payload_of(length).encode()) == ours
                writer.write(masked_text(str(length)))
                tornados = await asyncio.wait_for(reader.readexactly(len(ours)), scaled(5))
                assert tornados == ours, length
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def test_text_frame_headers_at_the_boundaries() -> None:
    # What RFC 6455 5.2 says, spelled out: 7-bit length, then 16-bit, then 64-bit.
    assert text_frame(b"a" * 125)[:2] == b"\x81\x7d"
    assert text_frame(b"a" * 126)[:4] == b"\x81\x7e\x00\x7e"
    assert text_frame(b"a" * 65535)[:4] == b"\x81\x7e\xff\xff"
    assert text_frame(b"a" * 65536)[:10] == b"\x81\x7f" + (65536).to_bytes(8, "big")


# --- notify_closing: the protocol swap -----------------------------------------------------


class Noticing(tornado.websocket.WebSocketHandler):
    """Records each on_closing, and whether its close frame had gone out by then."""

    notices: list[bool]
    opened: asyncio.Future[Noticing]

    def initialize(self, notices: list[bool], opened: asyncio.Future[Noticing]) -> None:
        self.notices = notices
        self.opened = opened

    def get_websocket_protocol(self) -> tornado.websocket.WebSocketProtocol | None:
        protocol = super().get_websocket_protocol()
        notify_closing(protocol)
        return protocol

    def open(self, *args: Any, **kwargs: Any) -> None:
        self.opened.set_result(self)

    def on_closing(self) -> None:
        assert isinstance(self.ws_connection, WebSocketProtocol13)
        self.notices.append(self.ws_connection.server_terminated)


def bare_protocol(cls: type[WebSocketProtocol13]) -> WebSocketProtocol13:
    return cls.__new__(cls)  # no connection needed to look at its class


def test_the_swap_applies_to_tornados_own_protocol_only() -> None:
    plain = bare_protocol(WebSocketProtocol13)
    notify_closing(plain)
    assert type(plain) is not WebSocketProtocol13
    assert isinstance(plain, WebSocketProtocol13)  # the same object, one method overridden
    assert type(plain).close is not WebSocketProtocol13.close

    class Custom(WebSocketProtocol13):
        pass

    custom = bare_protocol(Custom)
    notify_closing(custom)
    assert type(custom) is Custom  # a subclass has its own close: left alone
    notify_closing(None)  # a refused upgrade has no protocol


def test_the_handler_hook_is_a_close_listener() -> None:
    assert issubclass(Noticing, CloseListener)
    assert not isinstance(object(), CloseListener)


@pytest.mark.parametrize("who", ["server", "tornado", "client"])
@pytest.mark.gen_test(timeout=scaled(20))
async def test_every_close_is_noticed_once_before_its_close_frame(who: str) -> None:
    notices: list[bool] = []
    opened: asyncio.Future[Noticing] = asyncio.get_running_loop().create_future()
    app = tornado.web.Application([("/ws", Noticing, {"notices": notices, "opened": opened})])
    async with serving_app(app) as port:
        client = await tornado.websocket.websocket_connect(f"ws://127.0.0.1:{port}/ws")
        handler = await asyncio.wait_for(opened, scaled(5))
        if who == "server":
            handler.close(1000)
        elif who == "tornado":  # a ping timeout closes the protocol, not the handler
            assert handler.ws_connection is not None
            handler.ws_connection.close(reason="ping timed out")
        else:
            client.close(1000)
        assert await asyncio.wait_for(client.read_message(), scaled(5)) is None
        client.close()
    assert notices[:1] == [False]  # before the server's close frame was written


# --- the header-limit hooks ----------------------------------------------------------------


@pytest.mark.gen_test(timeout=scaled(20))
async def test_a_failed_header_read_comes_to_the_hook_not_the_close() -> None:
    with tcp_pair(small=False) as (ours, theirs):
        stream = IOStream(ours)
        seen: asyncio.Future[tuple[Any, bool, bool]] = asyncio.get_running_loop().create_future()

        def hook(exc_info: Any = False) -> None:
            if not seen.done():
                seen.set_result((exc_info, reading_until_regex(stream), stream.closed()))

        intercept_close(stream, hook)
        assert not reading_until_regex(stream)
        read = stream.read_until_regex(b"\r?\n\r?\n", max_bytes=64)
        assert reading_until_regex(stream)
        theirs.sendall(b"X-Long: " + b"a" * 200)  # past the bound, no end of headers
        exc_info, reading, closed = await asyncio.wait_for(seen, scaled(5))
        assert isinstance(exc_info, UnsatisfiableReadError)
        assert reading  # still the header read: the 431 applies
        assert not closed  # the hook decides
        assert "close" in vars(stream)
        close_for_real(stream, exc_info)
        assert stream.closed()
        assert "close" not in vars(stream)  # the class's close again: no cycle left
        close_for_real(stream)  # again: harmless
        with pytest.raises(StreamClosedError):
            await read


@pytest.mark.gen_test(timeout=scaled(20))
async def test_reading_until_regex_is_false_once_the_read_ended() -> None:
    with tcp_pair(small=False) as (ours, theirs):
        stream = IOStream(ours)
        try:
            read = stream.read_until_regex(b"\r\n\r\n")
            theirs.sendall(b"GET / HTTP/1.1\r\n\r\n")
            await asyncio.wait_for(read, scaled(5))
            assert not reading_until_regex(stream)
            body = stream.read_bytes(4)  # a body read is not the header read
            assert not reading_until_regex(stream)
            theirs.sendall(b"body")
            assert await asyncio.wait_for(body, scaled(5)) == b"body"
        finally:
            stream.close()


@pytest.mark.gen_test(timeout=scaled(20))
async def test_send_whole_now_takes_all_or_says_no() -> None:
    answer = b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n"
    async with watched() as (stream, _, peer):
        assert send_whole_now(stream, answer)
        assert await peer.read(len(answer)) == answer
        assert not send_whole_now(stream, BIG)  # the socket took only part
    async with watched() as (stream, _, peer):
        filler = fill(stream.socket)
        stream.write(b"earlier")  # Tornado keeps it: the socket is full
        drain(peer.sock, filler)  # the socket has room again, before Tornado knows
        assert not send_whole_now(stream, answer)  # Tornado's bytes must go first
        assert await peer.read(len(b"earlier")) == b"earlier"
    async with watched() as (stream, _, peer):
        peer.reset()
        assert not send_whole_now(stream, answer)  # a reset is an answer not sent


@pytest.mark.gen_test(timeout=scaled(20))
async def test_a_detached_stream_reads_nothing_and_its_watcher_sees_the_input() -> None:
    with tcp_pair(small=False) as (ours, theirs):
        stream = IOStream(ours)
        read = asyncio.ensure_future(stream.read_bytes(5))  # Tornado waits for input
        detach_from_loop(stream)
        detach_from_loop(stream)  # again: nothing to take off
        readable: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        def discard(fd: Any, events: int) -> None:
            if not readable.done():
                readable.set_result(stream.socket.recv(100))

        watch_reads(stream, discard)  # would raise if Tornado still had its handler
        theirs.sendall(b"hello")
        assert await asyncio.wait_for(readable, scaled(5)) == b"hello"
        assert not read.done()  # Tornado read none of it
        unwatch_reads(stream)
        close_for_real(stream)
        with pytest.raises(StreamClosedError):
            await read


class Healthz(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write("ok")


def read_to_the_end(port: int, request: bytes) -> tuple[bytes, bool]:
    """Send ``request``, read until the server ends the connection (a blocking socket, for
    a thread); return what came and whether it ended with a reset."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(scaled(10))
        sock.sendall(request)
        received = []
        try:
            while chunk := sock.recv(65536):
                received.append(chunk)
        except ConnectionResetError:
            return b"".join(received), True
        return b"".join(received), False


def headers_of(size: int) -> bytes:
    return b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * size + b"\r\n\r\n"


@pytest.mark.gen_test(timeout=scaled(30))
async def test_headers_over_the_limit_get_the_431_then_the_end(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "scoreboard.access")
    app = tornado.web.Application([("/healthz", Healthz)])
    async with serving_app(app, max_header_size=1024) as port:
        answer, reset = await asyncio.to_thread(read_to_the_end, port, headers_of(4096))
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 431 ")
        assert json.loads(body)["error"] == "headers_too_large"  # all of it, then the end
        assert not reset
        assert [r for r in caplog.records if getattr(r, "status", None) == 431]
        under = headers_of(500)[:-2] + b"Connection: close\r\n\r\n"
        ok, _ = await asyncio.to_thread(read_to_the_end, port, under)
        assert ok.startswith(b"HTTP/1.1 200 ")


@pytest.mark.gen_test(timeout=scaled(30))
async def test_a_431_that_cannot_go_at_once_is_not_sent_the_connection_just_ends(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "scoreboard.access")
    huge = b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n" + b"z" * (64 << 20)
    monkeypatch.setattr(handlers.header_limit, "headers_too_large_answer", lambda *a, **k: huge)
    monkeypatch.setattr(handlers.header_limit, "LINGER_S", 3600.0)  # a linger would hang here
    app = tornado.web.Application([("/healthz", Healthz)])
    async with serving_app(app, max_header_size=1024) as port:
        answer, _ = await asyncio.to_thread(read_to_the_end, port, headers_of(4096))
    assert len(answer) < len(huge)  # part of it went; then Tornado's close
    assert not [r for r in caplog.records if getattr(r, "status", None) == 431]  # not answered


# --- body_timer ----------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=scaled(20))
async def test_the_body_timer_closes_an_http1_connection_and_replaces_tornados() -> None:
    with tcp_pair(small=False) as (ours, _):
        stream = IOStream(ours)
        params = HTTP1ConnectionParameters(body_timeout=3600.0)
        connection = HTTP1Connection(stream, is_client=False, params=params)
        closed = closed_future(stream)  # (the connection clears the stream's callback)
        timer = body_timer(connection, 0.01)
        assert timer is not None
        assert connection._body_timeout is None  # Tornado's per-read timeout is off
        await asyncio.wait_for(closed, scaled(5))
        timer.cancel()


def test_no_body_timer_for_other_connections() -> None:
    assert body_timer(None, 1.0) is None
    assert body_timer(HTTPConnection(), 1.0) is None


# --- the startup check ---------------------------------------------------------------------


def test_the_installed_tornado_has_everything_relied_on() -> None:
    assert missing_internals() == []


def test_the_startup_check_names_what_is_missing() -> None:
    class Changed:
        def __init__(self) -> None:
            self._renamed = None

    found = missing_internals(
        [(Changed, "__init__", ("_write_buffer",)), (Changed, "gone", ())], version=(6, 6, 1)
    )
    assert found == ["Changed.__init__: _write_buffer", "Changed.gone (no such function)"]
    assert missing_internals([], version=(6, 5, 0)) == ["tornado>=6.6 (found (6, 5, 0))"]


# --- nobody else touches Tornado's privates ------------------------------------------------

# Attributes of Tornado's streams, connections, protocols and handlers that are not its
# public API (each checked to exist below), and the tricks handlers/tornado_internals.py
# keeps to itself.
TORNADO_PRIVATES = (
    "_write_buffer",
    "_write_futures",
    "_total_write_index",
    "_total_write_done_index",
    "_read_buffer",
    "_read_buffer_size",
    "_read_regex",
    "_read_delimiter",
    "_read_bytes",
    "_read_max_bytes",
    "_read_future",
    "_state",
    "_add_io_state",
    "_handle_write",
    "_handle_events",
    "_close_callback",
    "_try_inline_read",
    "_finish_read",
    "_read_from_buffer",
    "_handshake_writing",
    "_body_timeout",
    "_max_body_size",
    "_read_message_inner",
    "_disconnect_on_finish",
    "_clear_callbacks",
    "_write_finished",
    "_pending_write",
    "_connections",
    "_write_frame",
    "_wire_bytes_out",
    "_pending_pong",
    "_received_pong",
    "_abort",
    "_finished",
    "_headers_written",
    "_status_code",
    "_transforms",
    "_auto_finish",
    "_prepared_future",
)
TRICKS = (
    r"\.__class__\s*=",  # a protocol's class swapped
    r"\.close\s*=",  # a stream's close replaced
    r"\bset_body_timeout\b",
    r"\.asyncio_loop\b",
    r"\b(add|remove)_handler\(",  # IOLoop handlers on a socket Tornado owns
    r"\bsocket\.send\(|\bsock\.send\(",  # writing past Tornado's buffer
)
FORBIDDEN = re.compile(
    r"\.(?:" + "|".join(TORNADO_PRIVATES) + r")\b|" + "|".join(f"(?:{t})" for t in TRICKS)
)
ALLOWED = ROOT / "handlers" / "tornado_internals.py"


def violations(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if FORBIDDEN.search(line)]


def test_the_scan_finds_what_it_looks_for() -> None:
    for line in (
        "if seat.frames is None and not stream._write_buffer:",
        "stream._state = None",
        "protocol.__class__ = _WatchedProtocol",
        "stream.close = guard  # type: ignore[method-assign]",
        "connection.set_body_timeout(None)",
        "loop = connection.stream.io_loop.asyncio_loop",
        "io_loop.remove_handler(stream.socket)",
        "taken = sock.send(data)",
    ):
        assert violations(line), line
    assert violations("self._seats = {}\nstate = stream.closed()") == []


def test_each_known_private_name_is_tornados() -> None:
    source = "".join(
        (Path(tornado.__file__).parent / name).read_text()
        for name in ("iostream.py", "websocket.py", "http1connection.py", "httpserver.py", "web.py")
    )
    assert [name for name in TORNADO_PRIVATES if f"self.{name}" not in source] == []


def test_no_module_but_tornado_internals_touches_tornados_privates() -> None:
    found = {
        str(path.relative_to(ROOT)): hits
        for folder in ("handlers", "server")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path != ALLOWED and (hits := violations(path.read_text()))
    }
    assert found == {}
    assert violations(ALLOWED.read_text())  # the scan does see them where they belong
