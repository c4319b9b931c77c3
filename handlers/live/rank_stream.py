"""The live rank stream: ``rank`` events for watchers of one player (``?watch=me``).

Each WebSocket opened with ``watch=me`` follows its own player: after its first board
message it gets a ``rank`` event (rank, score, the rows ``window`` places around them),
and another whenever any of that changes, at most once per broadcast interval, with every
change in the interval coalesced into one event. The events travel in the connection's
own stream (its :class:`~handlers.live.outbox.Outbox`), between the board's messages, in
either format.

The rank index tells this stream of every move (:class:`actors.ranks.RankMoves`). The
first move after a quiet interval starts a tick at once; later ones wait for the interval
to pass. A tick asks :class:`~server.domain.rank_watch.RankWatches` which watchers the
moves could have changed (not every watcher: see there), queues them behind those still
waiting, then computes and writes them in steps of at most ``step_budget_s``, yielding to
the event loop in between (as the fan-out does), so a request waits for one step at most.

A tick spends at most ``tick_share`` of the interval (and at least ``MIN_TICK_BUDGET_S``):
when moves sweep across the board (a ban of the leader, or many players jumping over the
crowd of low scores) nearly every watcher changes every interval, and computing them all
would cost more than the interval. The watchers not reached wait, in order, for the next
tick (their events still coalesce: one per watcher, with everything up to then), so the
stream's CPU stays bounded whatever the number of watchers, and each watcher's events
come less often rather than the writes slowing down. ``scoreboard_rank_watchers_waiting``
counts those left for the next tick.

Events are written through the fan-out (:meth:`~handlers.live.fanout.Fanout.write_own`),
under its slow-client rules: a watcher that stops reading is marked lagging once its unsent
bytes would pass the bound, skipped meanwhile, and, once the fan-out resyncs it with a
snapshot, sent its current state right after (or closed, if it stays behind).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from json.encoder import encode_basestring as _string
from typing import Any, Final, Protocol

from actors.ranks import RankMoves
from handlers.live.fanout import (
    STEP_BUDGET_S,
    Cancellable,
    Schedule,
    after_ready_io,
)
from handlers.live.outbox import Outbox, Watcher
from server.domain.rank_index import RankIndex
from server.domain.rank_watch import RankState, RankWatch, RankWatches
from server.domain.topk import RankKey
from server.support.metrics import Metrics

log = logging.getLogger(__name__)

TICK_SHARE: Final = 0.25  # of the broadcast interval, at most, per tick
MIN_TICK_BUDGET_S: Final = 0.005


class Ranks(Protocol):
    """What the stream uses of :class:`actors.ranks.LiveRanks`: the index as it is now,
    and the hook through which it hears of every move."""

    @property
    def index(self) -> RankIndex: ...

    moves: RankMoves | None


class Seats(Protocol):
    """What the stream uses of the fan-out: whether a watcher has a seat, writes to it
    under the fan-out's slow-client rules, and word of its resyncs."""

    def seat_of(self, watcher: Watcher) -> Outbox | None: ...

    def write_own(self, watcher: Watcher, message: str) -> bool: ...

    def on_resync(self, callback: Callable[[Watcher], None]) -> None: ...


def rank_event(state: RankState, previous: int | None, total: int) -> dict[str, Any]:
    """The ``rank`` event of ``state`` (see docs/protocol.md)."""
    return {
        "event": "rank",
        "rank": state.rank,
        "previous": previous,
        "score": state.score,
        "total": total,
        "window": [
            {"rank": rank, "user_id": user_id, "username": username, "score": score}
            for rank, user_id, username, score in state.window
        ],
    }


def rank_event_json(state: RankState, previous: int | None, total: int) -> str:
    """:func:`rank_event` encoded as ``json.dumps(..., separators=(",", ":"),
    ensure_ascii=False)`` would, by hand: a tick encodes thousands of these, and this is a
    quarter of the cost (2.5 vs 8.5 µs at ±2 rows by ``python -m bench.ranks --quick``,
    docs/benchmarks.md). Strings go through
    the ``json`` module's own escaping (``encode_basestring``); the rest are integers."""
    window = ",".join(
        f'{{"rank":{rank},"user_id":{_string(user_id)},"username":{_string(username)},'
        f'"score":{score}}}'
        for rank, user_id, username, score in state.window
    )
    return (
        f'{{"event":"rank","rank":{_number(state.rank)},"previous":{_number(previous)},'
        f'"score":{_number(state.score)},"total":{total},"window":[{window}]}}'
    )


def _number(value: int | None) -> str:
    return "null" if value is None else str(value)


class RankStream:
    """Owns the rank watchers of one service and writes their ``rank`` events.

    Args:
        ranks: the pod's rank index (it tells this stream of every move once started).
        seats: the fan-out whose seats carry the events.
        interval_s: the least time between two ticks (the broadcast interval).
        tick_share: the most of an interval one tick may spend computing and writing.
        step_budget_s: how long one step of a tick may hold the event loop.
        schedule: runs the next step later (tests step by hand).
        clock: monotonic seconds.
    """

    def __init__(
        self,
        ranks: Ranks,
        seats: Seats,
        metrics: Metrics,
        *,
        interval_s: float,
        tick_share: float = TICK_SHARE,
        step_budget_s: float = STEP_BUDGET_S,
        schedule: Schedule = after_ready_io,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ranks = ranks
        self._seats = seats
        self._metrics = metrics
        self._interval = interval_s
        self._tick_budget = max(interval_s * tick_share, MIN_TICK_BUDGET_S)
        self._step_budget = step_budget_s
        self._schedule = schedule
        self._clock = clock
        self._watches: RankWatches[Watcher] = RankWatches()
        self._by_watcher: dict[Watcher, RankWatch[Watcher]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._next_step: Cancellable | None = None
        # Found by a tick, not yet computed: in order, each once.
        self._waiting: deque[RankWatch[Watcher]] = deque()
        self._queued: set[RankWatch[Watcher]] = set()
        self._tick_ends = 0.0  # perf_counter: the current tick's budget runs out
        self._tick_seconds = 0.0
        self._last_tick = float("-inf")

    def __len__(self) -> int:
        return len(self._by_watcher)

    def start(self) -> None:
        """Hear of the fan-out's resyncs (and of the index's moves while anyone watches:
        without watchers the write path skips telling anyone)."""
        self._seats.on_resync(self.resynced)

    def stop(self) -> None:
        """Stop hearing of moves; cancel a tick waiting or in progress. Idempotent."""
        if self._ranks.moves is self:
            self._ranks.moves = None
        for pending in (self._timer, self._next_step):
            if pending is not None:
                pending.cancel()
        self._timer = self._next_step = None
        self._waiting.clear()
        self._queued.clear()

    # --- watchers ------------------------------------------------------------------------

    def watch(self, watcher: Watcher, user_id: str, window: int) -> None:
        """Follow ``user_id`` for ``watcher`` (already joined to the fan-out) and send its
        first ``rank`` event now, right behind its first board message."""
        if self._seats.seat_of(watcher) is None or watcher in self._by_watcher:
            return  # its first message could not be written: it is closing
        index = self._ranks.index
        watch = self._watches.add(user_id, window, watcher, index)
        self._by_watcher[watcher] = watch
        self._ranks.moves = self
        self._metrics.rank_watchers.set(len(self._by_watcher))
        assert watch.state is not None
        self._send(watcher, rank_event_json(watch.state, None, len(index)))

    def leave(self, watcher: Watcher) -> None:
        """Forget a watcher whose connection closed (one that did not watch is ignored)."""
        watch = self._by_watcher.pop(watcher, None)
        if watch is not None:
            self._watches.discard(watch)
            self._metrics.rank_watchers.set(len(self._by_watcher))
            if not self._by_watcher and self._ranks.moves is self:
                self._ranks.moves = None

    def resynced(self, watcher: Watcher) -> None:
        """The fan-out just sent ``watcher`` a fresh snapshot: send its current state too
        (its events were skipped while it lagged), with no ``previous``."""
        watch = self._by_watcher.get(watcher)
        if watch is not None and watch.state is not None:
            self._send(watcher, rank_event_json(watch.state, None, len(self._ranks.index)))

    # --- moves (actors.ranks.RankMoves) --------------------------------------------------

    def moved(self, user_id: str, old: RankKey | None) -> None:
        if self._by_watcher:
            self._watches.moved(user_id, old)
            self._tick_soon()

    def replaced(self) -> None:
        if self._by_watcher:
            self._watches.replaced()
            self._tick_soon()

    # --- ticks ---------------------------------------------------------------------------

    def _tick_soon(self) -> None:
        if self._timer is not None or self._next_step is not None:
            return  # a tick waits, or one is in progress (its end schedules the next)
        delay = max(0.0, self._last_tick + self._interval - self._clock())
        self._timer = asyncio.get_running_loop().call_later(delay, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._last_tick = self._clock()
        for watch in self._watches.found(self._ranks.index):
            if watch not in self._queued:
                self._queued.add(watch)
                self._waiting.append(watch)
        self._tick_ends = time.perf_counter() + self._tick_budget
        self._tick_seconds = 0.0
        self._step()

    def _step(self) -> None:
        self._next_step = None
        started = time.perf_counter()
        deadline = min(started + self._step_budget, self._tick_ends)
        index = self._ranks.index
        total = len(index)
        waiting, queued, watches = self._waiting, self._queued, self._watches
        sent = 0
        while waiting:
            watch = waiting.popleft()
            queued.discard(watch)
            try:
                change = watches.recompute(watch, index)
                if change is not None:
                    event = rank_event_json(change.state, change.previous, total)
                    sent += self._send(change.seat, event)
            except Exception:  # one broken watcher must not stop the tick for the others
                log.exception("a rank event failed")
            if time.perf_counter() >= deadline:
                break
        self._metrics.rank_events.inc(sent)
        now = time.perf_counter()
        self._tick_seconds += now - started
        if waiting and now < self._tick_ends:
            self._next_step = self._schedule(self._step)
            return
        self._metrics.rank_tick_seconds.observe(self._tick_seconds)
        self._metrics.rank_waiting.set(len(waiting))
        if waiting or watches.pending:
            self._tick_soon()  # one interval after this tick began

    def _send(self, watcher: Watcher, event: str) -> int:
        return 1 if self._seats.write_own(watcher, event) else 0
