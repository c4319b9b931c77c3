"""Every use of Tornado's internals, in one place: private attributes, and the tricks that
depend on how Tornado works inside.

Written against Tornado 6.6 (tornado/iostream.py, websocket.py, http1connection.py,
platform/asyncio.py of 6.6.1). Each function names what it relies on; :func:`missing_internals`
checks at import that those attributes are still there, so a Tornado that changed them
stops the server at startup instead of failing on the first slow client. The tests in
tests/handlers/test_tornado_internals.py cover every branch below on real sockets; no other
module of handlers/ or server/ may touch these attributes (a test there greps for them).

What they buy: the fan-out frames a message once and writes it to each socket in one
``send`` (18 -> 9 µs per delivered message); an update's body timer is one plain timer
instead of a timeout future per body read; request headers over the limit get a 431
instead of a dropped connection; and the fan-out learns of a close before its close frame
is written.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Sequence
from types import FunctionType
from typing import Any, Final, Protocol, runtime_checkable

import tornado
from tornado.http1connection import HTTP1Connection
from tornado.httputil import HTTPConnection
from tornado.ioloop import IOLoop
from tornado.iostream import BaseIOStream, IOStream
from tornado.platform.asyncio import BaseAsyncIOLoop
from tornado.websocket import WebSocketProtocol, WebSocketProtocol13

__all__ = [
    "CloseHook",
    "CloseListener",
    "DirectWrites",
    "body_timer",
    "close_for_real",
    "detach_from_loop",
    "intercept_close",
    "missing_internals",
    "notify_closing",
    "reading_until_regex",
    "send_whole_now",
    "text_frame",
    "unsent_bytes",
    "unwatch_reads",
    "watch_reads",
    "write_now",
]

# --- the startup check -----------------------------------------------------------------------

MIN_VERSION: Final = (6, 6)

# (class, function, names its code must hold): each attribute below is set or read in these
# functions, so its name is in the function's code object.
Reliance = tuple[type, str, tuple[str, ...]]
RELIED_ON: Final[tuple[Reliance, ...]] = (
    (BaseIOStream, "__init__", ("_write_buffer", "_read_regex", "_state")),
    (BaseIOStream, "_signal_closed", ("_write_buffer",)),  # None once closed
    (BaseIOStream, "_read_from_buffer", ("_read_regex",)),  # None once the read ends
    (BaseIOStream, "close", ("_state", "remove_handler")),
    (HTTP1Connection, "set_body_timeout", ("_body_timeout",)),
    (HTTP1Connection, "_read_message_inner", ("_body_timeout",)),  # None: no timeout
    (BaseAsyncIOLoop, "initialize", ("asyncio_loop",)),
    (WebSocketProtocol13, "close", ()),
)


def missing_internals(
    relied_on: Sequence[Reliance] = RELIED_ON,
    version: tuple[int, ...] = tornado.version_info,
) -> list[str]:
    """What this module relies on that the installed Tornado lacks (empty when all is there).

    Looks for names in the code of the functions that set or use them: no stream, socket
    or loop is made, so it is cheap enough to run at every import.
    """
    missing = []
    if version[:2] < MIN_VERSION:
        missing.append(f"tornado>={MIN_VERSION[0]}.{MIN_VERSION[1]} (found {version})")
    for owner, name, names in relied_on:
        function = vars(owner).get(name)
        where = f"{owner.__name__}.{name}"
        if not isinstance(function, FunctionType):
            missing.append(f"{where} (no such function)")
            continue
        code_names = function.__code__.co_names
        missing += [f"{where}: {n}" for n in names if n not in code_names]
    return missing


def _check_at_startup() -> None:
    missing = missing_internals()
    if missing:
        raise RuntimeError(
            f"Tornado {tornado.version} lacks what handlers/tornado_internals.py relies on: "
            + "; ".join(missing)
        )


_check_at_startup()

# --- writing to a WebSocket's socket directly (the fan-out) --------------------------------


class DirectWrites(Protocol):
    """What :func:`write_now` needs of a connection's outbox (handlers.live.outbox.Outbox)."""

    queued: int  # bytes waiting in the outbox, not yet handed to the stream

    def push(self, stream: IOStream, data: bytes | memoryview) -> bool: ...


def write_now(outbox: DirectWrites, stream: IOStream, data: bytes) -> bool | None:
    """Write ``data`` (whole frames) straight to ``stream``'s socket, bypassing Tornado's
    write buffer, if Tornado has nothing buffered; queue in ``outbox`` what the socket
    does not take.

    The caller must have nothing queued in ``outbox`` (else the frames would overtake).
    Relies on (tornado/iostream.py, 6.6): ``IOStream._write_buffer``, the bytes Tornado
    has not written yet (``None`` once the stream is closed): writing past them would
    reorder the stream; and on a plain ``IOStream``'s ``socket`` being the connection's
    non-blocking socket, with nothing between it and the client (an ``SSLIOStream``'s
    socket would need TLS records: it is left to Tornado).

    Returns:
        True if the socket took ``data``, or took part of it and the rest is queued in
        ``outbox``; False if the connection is closed or reset (Tornado notices on its
        next read); None if nothing was written because Tornado has bytes buffered or
        the stream is not a plain ``IOStream``: the caller queues ``data`` itself.
    """
    if stream._write_buffer or type(stream) is not IOStream:
        return None
    sock = stream.socket
    if sock is None:
        return False
    try:
        taken = sock.send(data)
    except BlockingIOError:
        taken = 0
    except OSError:
        return False
    return taken == len(data) or outbox.push(stream, memoryview(data)[taken:])


def unsent_bytes(outbox: DirectWrites, stream: IOStream) -> int:
    """Bytes written to this connection that the socket has not taken yet: those queued
    in ``outbox`` and those in Tornado's write buffer (``IOStream._write_buffer``, None once
    the stream is closed: tornado/iostream.py ``_signal_closed``, 6.6).

    A function with the outbox as its first argument so that ``Outbox`` binds it as its
    ``unsent`` method: the fan-out calls it per slow client per message, through no
    further call."""
    buffer = stream._write_buffer
    return outbox.queued + (len(buffer) if buffer is not None else 0)


# --- WebSocket frames built once for many connections ---------------------------------------

_FIN_TEXT: Final = 0x81


def text_frame(payload: str | bytes) -> bytes:
    """One final, unmasked, uncompressed text frame carrying ``payload`` (RFC 6455, 5.2).

    A server's frames are not masked, so one text frame's bytes are the same for every
    client: the fan-out builds them once per message and writes them to each connection's
    stream itself, beside Tornado's ``WebSocketProtocol13._write_frame``
    (tornado/websocket.py, 6.6), whose header encoding this repeats; as it is bypassed,
    its ``_wire_bytes_out`` count leaves these frames out. Uncompressed frames are valid on
    a connection that negotiated permessage-deflate (RFC 7692: RSV1 unset).
    """
    data = payload.encode() if isinstance(payload, str) else payload
    length = len(data)
    if length < 126:
        header = struct.pack("!BB", _FIN_TEXT, length)
    elif length <= 0xFFFF:
        header = struct.pack("!BBH", _FIN_TEXT, 126, length)
    else:
        header = struct.pack("!BBQ", _FIN_TEXT, 127, length)
    return header + data


# --- a close noticed before its close frame (the WebSocket handler) -------------------------


@runtime_checkable
class CloseListener(Protocol):
    """A WebSocket handler told of every close of its connection before it happens."""

    def on_closing(self) -> None:
        """The connection begins to close (a close frame follows): write no more data."""


class _ClosingNoticeProtocol(WebSocketProtocol13):
    """Tornado's protocol, telling its handler of each close before the close frame.

    Every close goes through ``WebSocketProtocol13.close``: the handler's own, the reply
    to the client's close frame, and Tornado's on a ping timeout (tornado/websocket.py,
    6.6), which does not pass through the handler.
    """

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        handler = self.handler
        if isinstance(handler, CloseListener):
            handler.on_closing()
        super().close(code, reason)


def notify_closing(protocol: WebSocketProtocol | None) -> None:
    """Make ``protocol`` call its handler's :meth:`CloseListener.on_closing` at every close.

    Only a plain ``WebSocketProtocol13`` (what ``WebSocketHandler.get_websocket_protocol``
    makes in Tornado 6.6) is changed, by setting its class: the same object with one
    method overridden costs no memory per connection (a wrapper closure measured about
    1.7 KB each). Anything else (None: the upgrade was refused; a subclass) is left as is.
    """
    if type(protocol) is WebSocketProtocol13:
        protocol.__class__ = _ClosingNoticeProtocol


# --- a stream whose header read failed (the 431 answer) -------------------------------------


class CloseHook(Protocol):
    """Stands in for ``stream.close``: takes what ``BaseIOStream.close`` takes."""

    def __call__(self, exc_info: Any = False) -> None: ...


def intercept_close(stream: IOStream, hook: CloseHook) -> None:
    """Route every ``stream.close(exc_info)`` to ``hook`` until :func:`close_for_real`.

    Tornado's stream closes itself from inside (``self.close(exc_info=e)``, e.g. when a
    bounded read fails) with no other hook (tornado/iostream.py, 6.6); an instance
    attribute is found before the class's method. Not a subclass: a subclass would
    take the stream off the fan-out's direct writes (:func:`write_now`).
    """
    stream.close = hook  # type: ignore[method-assign]


def close_for_real(stream: IOStream, exc_info: Any = False) -> None:
    """Close ``stream`` with its class's own ``close`` (``BaseIOStream.close``,
    tornado/iostream.py, 6.6), which it has again from now on, so no stream <-> hook cycle
    is left. Safe to call again."""
    vars(stream).pop("close", None)
    type(stream).close(stream, exc_info)


def reading_until_regex(stream: IOStream) -> bool:
    """Whether ``stream`` has a ``read_until_regex`` under way (``_read_regex``, reset when
    the read ends: tornado/iostream.py ``_read_from_buffer``, 6.6). An
    HTTP/1 server's one regex read is that of the request headers."""
    return stream._read_regex is not None


def send_whole_now(stream: IOStream, data: bytes) -> bool:
    """Send ``data`` on ``stream``'s socket at once, bypassing Tornado's write buffer.

    Returns:
        True if the socket took all of it. False if Tornado has bytes waiting to be
        written (``writing()``: they must go first), the socket is closed or reset, or
        took only part (with TLS, ``ssl.SSLWantWriteError``): then some bytes may have
        gone, and the caller must close the connection.
    """
    if stream.writing():
        return False
    try:
        sent = stream.socket.send(data)
    except OSError:  # a reset, or ssl.SSLWantWriteError
        return False
    return sent == len(data)


def detach_from_loop(stream: IOStream) -> None:
    """Stop Tornado reading and writing ``stream``, leaving its socket open: its handler
    is taken off the IOLoop as ``BaseIOStream.close`` does, and ``_state`` is reset so
    that Tornado neither adds it back nor removes it again on close (tornado/iostream.py
    ``_add_io_state``, ``close``, 6.6)."""
    if stream._state is not None:
        stream.io_loop.remove_handler(stream.socket)
        stream._state = None


def watch_reads(stream: IOStream, callback: Callable[[Any, int], None]) -> None:
    """Call ``callback(fd, events)`` whenever ``stream``'s socket is readable; only after
    :func:`detach_from_loop`: Tornado's IOLoop takes one handler per socket and raises on
    a second (``BaseAsyncIOLoop.add_handler``, tornado/platform/asyncio.py, 6.6). Undo
    with :func:`unwatch_reads` before the stream closes."""
    stream.io_loop.add_handler(stream.socket, callback, IOLoop.READ)


def unwatch_reads(stream: IOStream) -> None:
    """Remove the handler :func:`watch_reads` added (the stream's own close would not: its
    ``_state`` is None after :func:`detach_from_loop`)."""
    stream.io_loop.remove_handler(stream.socket)


# --- an update's body time limit (scores) ----------------------------------------------------


def body_timer(connection: HTTPConnection | None, timeout_s: float) -> asyncio.TimerHandle | None:
    """Replace Tornado's body timeout on an HTTP/1 ``connection`` with one plain timer
    that closes the connection after ``timeout_s``; the caller cancels it once the body
    is in. None (and nothing changed) for any other connection.

    Tornado wraps every body read in a timeout future (about a tenth of an update's
    cost); a body timeout of None turns that off (``HTTP1Connection._read_message_inner``,
    6.6), though ``set_body_timeout`` is typed ``float``. The timer goes on the stream's
    own asyncio loop (``AsyncIOLoop.asyncio_loop``): no running-loop lookup (a
    ``getpid()`` system call).
    """
    if not isinstance(connection, HTTP1Connection):
        return None
    connection.set_body_timeout(None)  # type: ignore[arg-type]
    loop: asyncio.AbstractEventLoop = connection.stream.io_loop.asyncio_loop  # type: ignore[attr-defined]
    return loop.call_later(timeout_s, connection.close)
