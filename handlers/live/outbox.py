"""One WebSocket connection's broadcast frames on their way out, in order, bounded.

Frames go straight to the socket while it takes them whole
(:func:`handlers.tornado_internals.write_now`, which the fan-out calls directly and
:meth:`Outbox.send` wraps). When it does not, the rest waits here,
in this connection's :class:`Outbox`, as whole frames, and is handed to Tornado's stream a
chunk at a time: one ``IOStream.write`` (one Future) per chunk of up to
:data:`CHUNK_BYTES`, the next chunk once the previous one is sent. So a client that stops
reading costs its queued bytes (frames that are shared with every other client, not
copies) plus one chunk and one Future, however many frames it missed; and frames not yet
handed over can be dropped (:meth:`Outbox.drop`) so that a close frame is not stuck behind
them. Tornado writes its own frames (pings, pongs, the close frame) to the same stream;
they land between two chunks, never inside a frame, since a chunk holds whole frames.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Protocol

from tornado.iostream import IOStream, StreamClosedError

from handlers.tornado_internals import unsent_bytes, write_now

if TYPE_CHECKING:
    from asyncio import Future

# The most bytes handed to Tornado's stream at once (a single frame may be bigger). With
# the socket's send buffer capped (SCOREBOARD_WS_SEND_BUFFER_BYTES), a close frame written
# behind a stalled client's queue waits behind at most this and the kernel's buffer.
CHUNK_BYTES = 64 * 1024


class Watcher(Protocol):
    """A WebSocket connection watching the board (``handlers.live.socket.ScoreboardSocket``)."""

    wants_delta: bool
    out: IOStream | None  # the connection's stream; None once it is closing
    season: str | None  # on a board route, the season every message names

    def close(self, code: int | None = None, reason: str | None = None) -> None: ...


class Outbox:
    """What the fan-out knows about one watcher: its format, the version it is at, and the
    frames waiting for its socket.

    Args:
        watcher: the connection.
        base: the version the connection is at (its snapshot's, or the last one replayed
            to it): it is sent only later versions.
        season: on a board route, the season every message names.
    """

    __slots__ = ("_flushing", "base", "delta", "frames", "lagging", "queued", "season", "watcher")

    def __init__(self, watcher: Watcher, base: int, season: str | None = None) -> None:
        self.watcher = watcher
        self.delta = watcher.wants_delta
        self.base = base
        # A board route's watcher: every message names this season (None: /ws/scoreboard).
        self.season = season
        self.lagging = False  # skipped for being over the bound; the fan-out resyncs it
        # The frames waiting here. None while nothing waits and nothing handed over is
        # unsent: only then may the fan-out write to the socket directly.
        self.frames: deque[bytes | memoryview] | None = None
        self.queued = 0  # the bytes in ``frames`` (read-only outside)
        self._flushing = False  # a chunk handed to the stream is not sent yet

    # Bytes written to this connection that the socket has not taken yet, queued here or in
    # Tornado's stream (whose size is private: read in handlers/tornado_internals.py). Bound
    # as a method, not wrapped in one: the fan-out calls it per slow client per message.
    unsent = unsent_bytes

    def send(self, stream: IOStream, data: bytes) -> bool:
        """Write ``data`` (whole frames) to ``stream``'s socket at once when nothing waits
        here or in the stream and the socket takes it; queue what it does not take.

        Most clients take every frame whole: then there is no Future and no buffer.

        Returns:
            False if the connection is closed or reset (Tornado notices on its next read).
        """
        if self.frames is None:
            written = write_now(self, stream, data)
            if written is not None:
                return written
        return self.push(stream, data)

    def push(self, stream: IOStream, data: bytes | memoryview) -> bool:
        """Queue ``data`` (whole frames, or the rest of one already begun) behind what is
        queued; hand it to ``stream`` at once if nothing handed over is in flight.

        Returns:
            False if the stream is closed (nothing queued then).
        """
        frames = self.frames
        if frames is None:
            frames = self.frames = deque()
        frames.append(data)
        self.queued += len(data)
        if self._flushing:
            return True
        return self._hand_over(stream)

    def drop(self) -> None:
        """Forget the frames not yet handed to the stream (a chunk in flight still goes)."""
        if self.frames is not None:
            self.frames.clear()
            self.queued = 0

    def _hand_over(self, stream: IOStream) -> bool:
        frames = self.frames
        assert frames  # push appended, or _flushed saw some
        chunk = frames.popleft()
        if frames and len(chunk) < CHUNK_BYTES:
            parts = [chunk]
            size = len(chunk)
            while frames and size < CHUNK_BYTES:
                part = frames.popleft()
                parts.append(part)
                size += len(part)
            chunk = b"".join(parts)
        self.queued -= len(chunk)
        try:
            future = stream.write(chunk)
        except StreamClosedError:
            self.drop()
            return False
        self._flushing = True
        future.add_done_callback(self._flushed)
        return True

    def _flushed(self, future: Future[None]) -> None:
        self._flushing = False
        stream = self.watcher.out
        if stream is None or future.cancelled() or future.exception() is not None:
            self.drop()  # closing: no data frame may follow a close frame
            self.frames = None
        elif self.frames:
            self._hand_over(stream)
        else:
            self.frames = None  # caught up: back to direct writes
