"""The WebSocket fan-out: every publication written to every watcher, in slices of time.

Per publication the two messages (seed ``update`` and ``delta``) are framed once. The
fan-out then walks its watchers a slice at a time: each step writes to watchers until
``step_budget_s`` has passed, then yields to the event loop and continues in its next
iteration, after the I/O ready then: a request waits for one step, never for a whole
fan-out. Publications that arrive during a
walk wait for it to end and then go out together, in one walk, their frames joined: each
watcher still gets every version, in order, in one ``send``.

A watcher's frames go straight to its socket while it takes them whole; the rest waits in
its :class:`~handlers.live.outbox.Outbox`. Nothing is awaited per client, so a slow client
never holds up the others. A client whose unsent bytes would pass ``max_buffer_bytes`` is
skipped and marked lagging; once its unsent bytes drain below half the bound it gets a
fresh snapshot (so a delta client is consistent again); if it stays lagging past
``slow_timeout_s``, its queued frames are dropped and it is closed with 1013, so the close
frame waits behind at most one chunk and the socket's (capped) send buffer.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from actors.leaderboard import BoardViews, Subscriber
from handlers.live.outbox import Outbox, Watcher
from handlers.tornado_internals import text_frame, write_now
from server.domain.board_view import Publication
from server.domain.deltas import (
    NEW,
    RESYNC,
    SEASON_STARTED,
    Replay,
    Since,
    plan_resume,
    resumed_message,
)
from server.support.metrics import Metrics
from server.support.tasks import cancel_and_wait

log = logging.getLogger(__name__)

TRY_AGAIN_LATER = 1013
# The most time one step of a walk holds the event loop before yielding, checked every
# SLICE watchers (each ~10 µs: a step ends within about 1.2 ms). Every hop of a request
# through the event loop (read, handler, write) may wait for one step: measured with
# 10,000 watchers (bench.hostile), 2 ms steps gave top-scores p50 / p99 of 7.7 / 21.6 ms,
# 1 ms steps 4.0 / 11.9 ms, at the same CPU per message.
STEP_BUDGET_S = 0.001
SLICE = 16

__all__ = ["RESYNC", "TRY_AGAIN_LATER", "Batch", "Board", "Fanout", "Watcher"]


class Board(BoardViews, Protocol):
    """What the fan-out uses of the leaderboard: its publications, and its published
    view (for a joining or resyncing watcher's first messages), never its state."""

    def subscribe(self, subscriber: Subscriber) -> None: ...

    def unsubscribe(self, subscriber: Subscriber) -> None: ...


class Cancellable(Protocol):
    """A scheduled call (``asyncio.Handle``)."""

    def cancel(self) -> None: ...


Schedule = Callable[[Callable[[], None]], Cancellable]


def after_ready_io(callback: Callable[[], None]) -> Cancellable:
    """Run ``callback`` in the event loop's next iteration, after the callbacks of the I/O
    that is ready then: asyncio queues a timer that is due behind them, whereas a
    ``call_soon`` callback would run first. A request that arrives during a broadcast
    waits for one step, not two."""
    return asyncio.get_running_loop().call_later(0, callback)


def with_season(message: str, season: str) -> str:
    """``message`` (a JSON object) naming the ``season`` it is of, as a board route's
    messages do (docs/protocol.md)."""
    return f'{{"season":{json.dumps(season)},' + message[1:]


class Batch:
    """Publications of consecutive versions, framed once for every watcher.

    ``seed`` and ``delta`` are the frames of every version joined (one ``send`` per
    watcher); :meth:`after` gives a watcher that joined or resynced during the batch the
    versions it lacks.
    """

    __slots__ = (
        "_frames",
        "_publications",
        "_seasoned",
        "_suffixes",
        "count",
        "delta",
        "first",
        "seed",
    )

    def __init__(self, publications: Sequence[Publication]) -> None:
        if not publications:
            raise ValueError("a batch needs a publication")
        self.first = publications[0].version
        self.count = len(publications)
        self._publications = tuple(publications)
        seed = [text_frame(p.update) for p in publications]
        delta = [text_frame(p.delta) for p in publications]
        self._frames = (seed, delta)
        self.seed = b"".join(seed)
        self.delta = b"".join(delta)
        self._suffixes: dict[tuple[int, bool], bytes] = {}
        # A board route's frames (each message naming its season), built when first asked.
        self._seasoned: dict[tuple[int, bool, str], bytes] = {}

    def after(self, version: int, delta: bool) -> tuple[bytes, int]:
        """The frames of this batch's versions after ``version``, joined, and how many."""
        skip = min(max(version - self.first + 1, 0), self.count)
        if skip == 0:
            return (self.delta if delta else self.seed), self.count
        data = self._suffixes.get((skip, delta))
        if data is None:
            data = self._suffixes[(skip, delta)] = b"".join(self._frames[delta][skip:])
        return data, self.count - skip

    def in_season(self, version: int, delta: bool, season: str) -> tuple[bytes, int]:
        """:meth:`after`, each message naming ``season`` (``/ws/boards/{board}``)."""
        skip = min(max(version - self.first + 1, 0), self.count)
        data = self._seasoned.get((skip, delta, season))
        if data is None:
            messages = (p.delta if delta else p.update for p in self._publications[skip:])
            data = b"".join(text_frame(with_season(m, season)) for m in messages)
            self._seasoned[(skip, delta, season)] = data
        return data, self.count - skip


@dataclass(slots=True)
class _Walk:
    """One batch on its way to the watchers that were there when it began."""

    batch: Batch
    seats: tuple[Outbox, ...]
    index: int = 0
    sent: int = 0
    skipped: int = 0
    seconds: float = 0.0


class Fanout:
    """Owns the watchers of one service and writes every publication to them.

    Args:
        board: the source of publications, and of the views whose snapshots and history
            joining and resyncing watchers get.
        max_buffer_bytes: the most unsent bytes a watcher may have after a write.
        slow_timeout_s: how long a watcher may stay lagging before it is closed.
        step_budget_s: how long one step of a walk may hold the event loop.
        schedule: runs the next step later (tests step by hand).
    """

    def __init__(
        self,
        board: Board,
        metrics: Metrics,
        *,
        max_buffer_bytes: int,
        slow_timeout_s: float,
        step_budget_s: float = STEP_BUDGET_S,
        schedule: Schedule = after_ready_io,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._board = board
        self._metrics = metrics
        self._max_buffer = max_buffer_bytes
        self._slow_timeout = slow_timeout_s
        self._step_budget = step_budget_s
        self._schedule = schedule
        self._clock = clock
        self._seats: dict[Watcher, Outbox] = {}
        self._lagging: dict[Outbox, float] = {}
        self._pending: list[Publication] = []
        self._walk: _Walk | None = None
        self._next_step: Cancellable | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._on_resync: list[Callable[[Watcher], None]] = []

    def __len__(self) -> int:
        return len(self._seats)

    def start(self) -> None:
        """Subscribe to the leaderboard and start watching for slow clients."""
        self._board.subscribe(self)
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="ws-sweeper")

    async def stop(self) -> None:
        """Stop the slow-client sweeper and any walk in progress; unsubscribe. Idempotent."""
        self._board.unsubscribe(self)
        if self._next_step is not None:
            self._next_step.cancel()
            self._next_step = None
        self._walk = None
        self._pending.clear()
        sweeper, self._sweeper = self._sweeper, None
        await cancel_and_wait(sweeper)

    def close_all(self, code: int, reason: str) -> None:
        """Close every watcher (``on_close`` then calls :meth:`leave`)."""
        for watcher in tuple(self._seats):
            watcher.close(code, reason)

    # --- joining and leaving -------------------------------------------------------------

    def join(self, watcher: Watcher, since: Since | None) -> None:
        """Send a new watcher its first messages, then include it in every publication.

        A delta watcher with a resumable ``since`` gets ``resumed`` and the missed deltas;
        every other watcher gets a snapshot saying why. Both are of the board's published
        view, and the watcher is sent only later versions: also those of a walk in
        progress or waiting, which the snapshot already covers.
        """
        stream = watcher.out
        if stream is None:
            return
        view = self._board.view
        if watcher.wants_delta:
            plan = plan_resume(since, view.epoch, view.version, view.history)
            if isinstance(plan, Replay):
                assert since is not None
                messages = [resumed_message(view.epoch, since.version, len(plan.messages))]
                messages += plan.messages
            else:
                messages = [view.snapshot(plan.reason)]
        else:
            messages = [view.snapshot(NEW)]
        seat = Outbox(watcher, view.version, watcher.season)
        if seat.season is not None:  # a board route's: every message names the season
            messages = [with_season(m, seat.season) for m in messages]
        if not seat.send(stream, b"".join(text_frame(m) for m in messages)):
            return
        if watcher not in self._seats:
            self._metrics.websockets.inc()  # one gauge for every fan-out (a board's each)
        self._seats[watcher] = seat

    def seat_of(self, watcher: Watcher) -> Outbox | None:
        """The watcher's seat, or None (not joined, or gone)."""
        return self._seats.get(watcher)

    def write_own(self, watcher: Watcher, message: str) -> bool:
        """Write ``message``, one of this watcher's own (a rank event), in order with the
        board's, framed as they are (naming the season on a board route) and under the
        same bound: a watcher that is lagging is skipped (its resync follows), and one
        whose unsent bytes would pass the bound is marked lagging (resynced once it
        drains, closed if it stays behind).

        Returns:
            Whether the message was written or queued.
        """
        seat = self._seats.get(watcher)
        stream = watcher.out
        if seat is None or stream is None or seat.lagging:
            return False
        if seat.season is not None:
            message = with_season(message, seat.season)
        frame = text_frame(message)
        if seat.frames is None:  # straight to the socket, unless Tornado has bytes
            written = write_now(seat, stream, frame)
            if written is not None:
                return written
        unsent = seat.unsent(stream)
        if unsent and unsent + len(frame) > self._max_buffer:
            self._mark_lagging(seat)
            return False
        return seat.push(stream, frame)

    def start_season(self, season: str) -> None:
        """Move every watcher to ``season`` (issue 14): the leaderboard has just started
        it, in a new epoch. Each watcher gets a snapshot of it (reason
        ``season_started``) and from then on only its versions; what the previous season
        still had to send is dropped. A lagging watcher gets its resync (of the new
        season) once it drains."""
        if self._next_step is not None:
            self._next_step.cancel()
            self._next_step = None
        self._walk = None
        self._pending.clear()
        view = self._board.view
        snapshot = view.snapshot(SEASON_STARTED)
        named = text_frame(with_season(snapshot, season))
        plain = text_frame(snapshot)
        for seat in tuple(self._seats.values()):
            # /ws/scoreboard's watchers of a boards file's default period keep messages
            # without a season, as the original route's are.
            if seat.season is not None:
                seat.season = seat.watcher.season = season
            seat.base = view.version
            stream = seat.watcher.out
            if stream is None or seat.lagging:
                continue
            try:
                seat.send(stream, named if seat.season is not None else plain)
            except Exception:  # one broken watcher must not keep the others in the old season
                log.exception("writing to a WebSocket client failed")

    def on_resync(self, callback: Callable[[Watcher], None]) -> None:
        """Call ``callback`` (too) right after a lagging watcher was sent its fresh
        snapshot: its own messages skipped while it lagged are sent again."""
        self._on_resync.append(callback)

    def leave(self, watcher: Watcher) -> None:
        """Forget a watcher whose connection closed."""
        seat = self._seats.pop(watcher, None)
        if seat is not None:
            self._lagging.pop(seat, None)
            seat.drop()
            self._metrics.websockets.dec()

    # --- publishing ----------------------------------------------------------------------

    def publish(self, publication: Publication) -> None:
        """Write ``publication`` to every watcher; never waits on any, never raises.

        The first step runs now; the rest of the walk, and any walk for publications that
        arrive meanwhile, run in later iterations of the event loop.
        """
        self._pending.append(publication)
        if self._next_step is None:
            self._step()

    def _step(self) -> None:
        self._next_step = None
        walk = self._walk
        if walk is None:
            if not self._pending:
                return
            walk = self._walk = _Walk(Batch(self._pending), tuple(self._seats.values()))
            self._pending = []
        started = time.perf_counter()
        cpu_started = time.thread_time()
        # The walk allocates a little per client; a collection of the whole heap (about
        # 100 objects per connection) in the middle of a step would stall every client.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            done = self._write_slice(walk, started + self._step_budget)
        finally:
            if gc_was_enabled:
                gc.enable()
        seconds = time.perf_counter() - started
        walk.seconds += seconds
        metrics = self._metrics
        metrics.broadcast_step_seconds.observe(seconds)
        # The step's own CPU: above, a step the OS paused (another process on the core)
        # counts the pause too; this says what the step itself took.
        metrics.broadcast_step_cpu_seconds.observe(time.thread_time() - cpu_started)
        if done:
            self._walk = None
            metrics.ws_messages.inc(walk.sent)
            if walk.skipped:
                metrics.ws_skipped.inc(walk.skipped)
            metrics.broadcast_seconds.observe(walk.seconds)
        if self._walk is not None or self._pending:
            self._next_step = self._schedule(self._step)

    def _write_slice(self, walk: _Walk, deadline: float) -> bool:
        """Write ``walk``'s batch to its watchers until ``deadline``; return whether all got it."""
        seats = walk.seats
        total = len(seats)
        index = walk.index
        perf = time.perf_counter
        while index < total:
            end = index + SLICE
            sent, skipped = self._write_to(seats[index:end], walk.batch)
            walk.sent += sent
            walk.skipped += skipped
            index = min(end, total)
            if perf() >= deadline:
                break
        walk.index = index
        return index >= total

    def _write_to(self, seats: tuple[Outbox, ...], batch: Batch) -> tuple[int, int]:
        """Write ``batch`` to ``seats``; return the messages sent and skipped."""
        first, seed, delta, count = batch.first, batch.seed, batch.delta, batch.count
        limit = self._max_buffer
        sent = skipped = 0
        for seat in seats:
            try:
                stream = seat.watcher.out
                if stream is None:
                    continue  # closing or gone
                if seat.season is not None:  # a board route's: messages name the season
                    data, n = batch.in_season(seat.base, seat.delta, seat.season)
                    if not n:
                        continue
                elif seat.base >= first:  # joined or resynced since the batch began
                    data, n = batch.after(seat.base, seat.delta)
                    if not n:
                        continue
                else:
                    data, n = (delta, count) if seat.delta else (seed, count)
                if seat.lagging:
                    skipped += n
                    continue
                if seat.frames is None:  # straight to the socket, unless Tornado has bytes
                    written = write_now(seat, stream, data)
                    if written is not None:
                        if written:
                            sent += n
                        continue
                # A client with nothing queued always gets the frames, even more than the
                # bound; otherwise its queue may not pass the bound.
                unsent = seat.unsent(stream)
                if unsent and unsent + len(data) > limit:
                    self._mark_lagging(seat)
                    skipped += n
                elif seat.push(stream, data):
                    sent += n
            except Exception:  # one broken watcher must not stop the walk for the others
                log.exception("writing to a WebSocket client failed")
        return sent, skipped

    # --- slow clients ------------------------------------------------------------------

    def _mark_lagging(self, seat: Outbox) -> None:
        seat.lagging = True
        self._lagging[seat] = self._clock()

    def check_lagging(self) -> None:
        """Resync lagging watchers that drained; close those lagging past the timeout."""
        if not self._lagging:
            return
        now = self._clock()
        view = self._board.view
        for seat, since in tuple(self._lagging.items()):
            stream = seat.watcher.out
            if stream is None:
                del self._lagging[seat]
                continue
            if seat.unsent(stream) <= self._max_buffer // 2:
                del self._lagging[seat]
                seat.lagging = False
                seat.base = view.version  # the snapshot covers every version up to it
                snapshot = view.snapshot(RESYNC)
                if seat.season is not None:
                    snapshot = with_season(snapshot, seat.season)
                if seat.send(stream, text_frame(snapshot)):
                    self._metrics.ws_resyncs.inc()
                    for callback in self._on_resync:
                        callback(seat.watcher)
            elif now - since > self._slow_timeout:
                del self._lagging[seat]
                log.info("closing a WebSocket client that stopped reading")
                self._metrics.ws_slow_closes.inc()
                # The close frame goes behind what the socket already has, not behind the
                # whole queue; Tornado aborts the connection if the client does not answer
                # it within 5 s.
                seat.drop()
                seat.watcher.close(TRY_AGAIN_LATER, "client too slow")

    async def _sweep(self) -> None:
        period = min(0.25, self._slow_timeout / 4)
        while True:
            await asyncio.sleep(period)
            try:
                self.check_lagging()
            except Exception:  # one bad watcher must not end slow-client handling for all
                log.exception("slow-client check failed")
