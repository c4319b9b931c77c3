"""Request headers over the limit: a 431 with the JSON error body, not a dropped connection.

Tornado's HTTP/1 server reads a request's headers with one bounded read
(``max_header_size``). Past the bound its stream raises ``UnsatisfiableReadError`` and
closes itself at once, so the client sees the connection end with no answer, and there
is no hook between the two (tornado/iostream.py ``read_until_regex``).
:class:`HeaderLimitedServer` gives each connection's stream its own ``close`` until the
stream closes: when the header read fails for size, it sends a 431
``headers_too_large`` with ``Connection: close``, stops reading, half-closes (plain TCP),
and discards what the client still sends for up to :data:`LINGER_S` seconds before it
closes for real. Closing with unread data would make the kernel answer a reset, which
can destroy the 431 before the client reads it (the lingering close that nginx does).

The replacement is an instance attribute, not a subclass: the fan-out's direct-write
path applies to streams whose type is exactly ``IOStream`` (handlers/live/outbox.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import time
from typing import Any, Final

import tornado
import tornado.httpserver
from tornado import httputil
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream, SSLIOStream, UnsatisfiableReadError

from handlers.base import HSTS, JSON_CONTENT_TYPE, request_id

LINGER_S: Final = 2.0  # the longest a refused connection stays open to drain the client
_DISCARD_CHUNK: Final = 64 * 1024
_DISCARD_MAX: Final = 1024 * 1024  # past this much unread input, close at once

_access_log = logging.getLogger("scoreboard.access")


def headers_too_large_answer(limit: int, *, tls: bool, now: float | None = None) -> bytes:
    """The whole HTTP/1.1 431 answer for headers over ``limit`` bytes: JSON error body,
    the headers of every API answer, and ``Connection: close``."""
    body = json.dumps(
        {
            "error": "headers_too_large",
            "message": f"the request headers are over {limit} bytes in all; send smaller ones",
        }
    ).encode()
    lines = [
        "HTTP/1.1 431 Request Header Fields Too Large",
        f"Server: TornadoServer/{tornado.version}",
        f"Content-Type: {JSON_CONTENT_TYPE}",
        f"Date: {httputil.format_timestamp(time.time() if now is None else now)}",
        "X-Content-Type-Options: nosniff",
        f"X-Request-Id: {request_id(None)}",
        "Cache-Control: no-store",
        *([f"Strict-Transport-Security: {HSTS}"] if tls else []),
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class HeaderLimitedServer(tornado.httpserver.HTTPServer):
    """Tornado's ``HTTPServer``, answering 431 to request headers over ``max_header_size``
    instead of dropping the connection."""

    def handle_stream(self, stream: IOStream, address: tuple[Any, ...]) -> None:
        limit = self.conn_params.max_header_size
        stream.close = _HeaderGuard(stream, limit, address)  # type: ignore[method-assign]
        super().handle_stream(stream, address)


class _HeaderGuard:
    """One stream's ``close`` until the stream closes (then the class's own again)."""

    __slots__ = ("_address", "_discarded", "_limit", "_linger", "_stream")

    def __init__(self, stream: IOStream, limit: int, address: tuple[Any, ...]) -> None:
        self._stream = stream
        self._limit = limit
        self._address = address
        self._linger: object | None = None
        self._discarded = 0

    def __call__(self, exc_info: Any = False) -> None:
        stream = self._stream
        if (
            self._linger is None
            and isinstance(exc_info, UnsatisfiableReadError)
            # The one regex read of an HTTP/1 server is the headers' (bodies use others).
            and stream._read_regex is not None
            and not stream.closed()
            and self._answer()
        ):
            return
        if self._linger is not None:
            stream.io_loop.remove_timeout(self._linger)
            stream.io_loop.remove_handler(stream.socket)
            self._linger = None
        # The class's own close again, so no stream <-> guard cycle is left. A guard may be
        # called again (Tornado schedules ``close`` callbacks): that is the class's close.
        vars(stream).pop("close", None)
        type(stream).close(stream, exc_info)

    def _answer(self) -> bool:
        """Send the 431 and start lingering; False if it cannot be sent at once."""
        stream = self._stream
        if stream.writing():  # an earlier answer is still queued: this one cannot go first
            return False
        tls = isinstance(stream, SSLIOStream)
        answer = headers_too_large_answer(self._limit, tls=tls)
        try:
            sent = stream.socket.send(answer)  # a fresh socket buffer takes it whole
        except OSError:  # a reset, or ssl.SSLWantWriteError
            return False
        if sent != len(answer):
            return False
        _access_log.info(
            "request",
            extra={"status": 431, "remote_ip": self._address[0] if self._address else None},
        )
        io_loop = stream.io_loop
        if stream._state is not None:  # Tornado stops reading; the discarding starts
            io_loop.remove_handler(stream.socket)
            stream._state = None
        if not tls:  # (a TLS socket cannot half-close without ending the session)
            with contextlib.suppress(OSError):
                stream.socket.shutdown(socket.SHUT_WR)
        io_loop.add_handler(stream.socket, self._discard, IOLoop.READ)
        self._linger = io_loop.call_later(LINGER_S, self)
        return True

    def _discard(self, fd: Any, events: int) -> None:
        """Read and drop what the client still sends; close at its end or past the cap."""
        try:
            data = self._stream.socket.recv(_DISCARD_CHUNK)
        except (BlockingIOError, ssl.SSLWantReadError):
            return
        except OSError:
            data = b""
        self._discarded += len(data)
        if not data or self._discarded > _DISCARD_MAX:
            self()
