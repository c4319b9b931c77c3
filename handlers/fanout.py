"""The WebSocket fan-out: one publication, written to every watcher without waiting.

Per publication the two messages (seed ``update`` and ``delta``) are framed once; each
watcher's connection then gets the bytes appended to its write buffer (Tornado's
``IOStream.write`` sends what the socket takes at once and queues the rest). Nothing is
awaited per client, so a slow client never holds up the others. A client whose unsent
bytes would pass ``max_buffer_bytes`` is skipped and marked lagging; once its buffer
drains below half the bound it gets a fresh snapshot (so a delta client is consistent
again); if it stays lagging past ``slow_timeout_s`` it is closed with 1013.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from typing import Protocol

from tornado.iostream import IOStream, StreamClosedError

from actors.leaderboard import LeaderboardActor, Publication
from actors.stream import Replay, Since, plan_resume, resumed_message
from actors.tasks import cancel_and_wait
from handlers.frames import text_frame
from server.metrics import Metrics

log = logging.getLogger(__name__)

TRY_AGAIN_LATER = 1013
RESYNC = "resync"


class Watcher(Protocol):
    """A WebSocket connection watching the board (``handlers.ws.ScoreboardSocket``)."""

    wants_delta: bool
    out: IOStream | None  # the connection's stream; None once it is closing

    def close(self, code: int | None = None, reason: str | None = None) -> None: ...


def unsent_bytes(stream: IOStream) -> int:
    """Bytes queued on ``stream`` that the socket has not taken yet.

    Tornado has no public accessor for this; its write buffer knows its length.
    """
    return len(stream._write_buffer)


def write_now(stream: IOStream, frame: bytes) -> bool:
    """Hand ``frame`` to the connection; return False if it is closed.

    When nothing is queued on a plain (non-TLS) stream, the frame goes straight to the
    socket: most clients take it whole, which skips the Future, buffer and callback that
    ``IOStream.write`` costs per call. What the socket does not take is queued on the
    stream as usual, behind nothing, so the byte order is kept.
    """
    if type(stream) is IOStream and not stream._write_buffer:
        sock = stream.socket
        if sock is None:  # closed; its close callback has not run yet
            return False
        try:
            taken = sock.send(frame)
        except BlockingIOError:
            taken = 0
        except OSError:
            return False  # reset or closed; Tornado notices on its next read and cleans up
        if taken == len(frame):
            return True
        frame = frame[taken:]
    try:
        stream.write(frame)
    except StreamClosedError:
        return False
    return True


class Fanout:
    """Owns the watchers of one service and writes every publication to them.

    Args:
        leaderboard: the source of publications, snapshots and history.
        max_buffer_bytes: the most unsent bytes a watcher may have after a write.
        slow_timeout_s: how long a watcher may stay lagging before it is closed.
    """

    def __init__(
        self,
        leaderboard: LeaderboardActor,
        metrics: Metrics,
        *,
        max_buffer_bytes: int,
        slow_timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._leaderboard = leaderboard
        self._metrics = metrics
        self._max_buffer = max_buffer_bytes
        self._slow_timeout = slow_timeout_s
        self._clock = clock
        self._watchers: set[Watcher] = set()
        self._lagging: dict[Watcher, float] = {}
        self._sweeper: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._watchers)

    def start(self) -> None:
        """Subscribe to the leaderboard and start watching for slow clients."""
        self._leaderboard.subscribe(self)
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="ws-sweeper")

    async def stop(self) -> None:
        """Stop the slow-client sweeper and unsubscribe. Idempotent."""
        self._leaderboard.unsubscribe(self)
        sweeper, self._sweeper = self._sweeper, None
        await cancel_and_wait(sweeper)

    def close_all(self, code: int, reason: str) -> None:
        """Close every watcher (``on_close`` then calls :meth:`leave`)."""
        for watcher in tuple(self._watchers):
            watcher.close(code, reason)

    # --- joining and leaving -------------------------------------------------------------

    def join(self, watcher: Watcher, since: Since | None) -> None:
        """Send a new watcher its first messages, then include it in every publication.

        A delta watcher with a resumable ``since`` gets ``resumed`` and the missed deltas;
        every other watcher gets a snapshot saying why. Both happen in one go on the
        event loop, so no publication can fall between them and the live stream.
        """
        stream = watcher.out
        if stream is None:
            return
        board = self._leaderboard
        try:
            if watcher.wants_delta:
                plan = plan_resume(since, board.epoch, board.version, board.history)
                if isinstance(plan, Replay):
                    assert since is not None
                    resumed = resumed_message(board.epoch, since.version, len(plan.messages))
                    stream.write(text_frame(resumed))
                    for message in plan.messages:
                        stream.write(text_frame(message))
                else:
                    stream.write(text_frame(board.snapshot(plan.reason)))
            else:
                stream.write(text_frame(board.snapshot("new")))
        except StreamClosedError:
            return
        self._watchers.add(watcher)
        self._metrics.websockets.set(len(self._watchers))

    def leave(self, watcher: Watcher) -> None:
        """Forget a watcher whose connection closed."""
        self._watchers.discard(watcher)
        self._lagging.pop(watcher, None)
        self._metrics.websockets.set(len(self._watchers))

    # --- publishing ----------------------------------------------------------------------

    def publish(self, publication: Publication) -> None:
        """Write ``publication`` to every watcher that keeps up; never waits on any."""
        started = time.perf_counter()
        update_frame = text_frame(publication.update)
        delta_frame = text_frame(publication.delta)
        limit = self._max_buffer
        lagging = self._lagging
        sent = skipped = 0
        now = self._clock()
        # The loop allocates a little per client; a collection of the whole heap (about
        # 100 objects per connection) in the middle of it would stall every client.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            for watcher in tuple(self._watchers):
                if watcher in lagging:
                    continue
                stream = watcher.out
                if stream is None:
                    continue
                frame = delta_frame if watcher.wants_delta else update_frame
                # A client with nothing queued always gets the frame, even one bigger than
                # the bound; otherwise its queue may not pass the bound.
                unsent = unsent_bytes(stream)
                if unsent and unsent + len(frame) > limit:
                    lagging[watcher] = now
                    skipped += 1
                    continue
                if write_now(stream, frame):
                    sent += 1
        finally:
            if gc_was_enabled:
                gc.enable()
        metrics = self._metrics
        metrics.ws_messages.inc(sent)
        if skipped:
            metrics.ws_skipped.inc(skipped)
        metrics.broadcast_seconds.observe(time.perf_counter() - started)

    # --- slow clients ------------------------------------------------------------------

    def check_lagging(self) -> None:
        """Resync lagging watchers that drained; close those lagging past the timeout."""
        if not self._lagging:
            return
        now = self._clock()
        for watcher, since in tuple(self._lagging.items()):
            stream = watcher.out
            if stream is None:
                self._lagging.pop(watcher, None)
                continue
            if unsent_bytes(stream) <= self._max_buffer // 2:
                del self._lagging[watcher]
                if write_now(stream, text_frame(self._leaderboard.snapshot(RESYNC))):
                    self._metrics.ws_resyncs.inc()
            elif now - since > self._slow_timeout:
                del self._lagging[watcher]
                log.info("closing a WebSocket client that stopped reading")
                self._metrics.ws_slow_closes.inc()
                watcher.close(TRY_AGAIN_LATER, "client too slow")

    async def _sweep(self) -> None:
        period = min(0.25, self._slow_timeout / 4)
        while True:
            await asyncio.sleep(period)
            try:
                self.check_lagging()
            except Exception:  # one bad watcher must not end slow-client handling for all
                log.exception("slow-client check failed")
