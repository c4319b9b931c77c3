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

What this takes of Tornado's stream (its ``close`` replaced, its read state, its socket
taken off the IOLoop) is in handlers/tornado_internals.py.
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
from tornado.iostream import IOStream, SSLIOStream, UnsatisfiableReadError

from handlers.base import HSTS, JSON_CONTENT_TYPE, request_id
from handlers.tornado_internals import (
    close_for_real,
    detach_from_loop,
    intercept_close,
    reading_until_regex,
    send_whole_now,
    unwatch_reads,
    watch_reads,
)

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
        intercept_close(stream, _HeaderGuard(stream, limit, address))
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
            and reading_until_regex(stream)
            and not stream.closed()
            and self._answer()
        ):
            return
        if self._linger is not None:
            stream.io_loop.remove_timeout(self._linger)
            unwatch_reads(stream)
            self._linger = None
        # A guard may be called again (Tornado schedules ``close`` callbacks): that is the
        # class's close then.
        close_for_real(stream, exc_info)

    def _answer(self) -> bool:
        """Send the 431 and start lingering; False if it cannot be sent at once."""
        stream = self._stream
        tls = isinstance(stream, SSLIOStream)
        # A fresh socket buffer takes it whole; an earlier answer still queued, a reset, or
        # a partial send: the stream closes as Tornado would have closed it.
        if not send_whole_now(stream, headers_too_large_answer(self._limit, tls=tls)):
            return False
        _access_log.info(
            "request",
            extra={"status": 431, "remote_ip": self._address[0] if self._address else None},
        )
        detach_from_loop(stream)  # Tornado stops reading; the discarding starts
        if not tls:  # (a TLS socket cannot half-close without ending the session)
            with contextlib.suppress(OSError):
                stream.socket.shutdown(socket.SHUT_WR)
        watch_reads(stream, self._discard)
        self._linger = stream.io_loop.call_later(LINGER_S, self)
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
