"""The leaderboard actor: the top K in memory, fed by score changes, broadcast per tick.

It owns the :class:`~server.domain.topk.TopK` cache and the subscribers (the WebSocket
fan-out). Changes inside one broadcast interval are coalesced: at most one broadcast per
interval, and only when the visible top N really changed. Each message is encoded once per
tick, never per subscriber, and handed to every subscriber without waiting on any of them.

Writes come as messages; reads go through :attr:`LeaderboardActor.view`, an immutable
:class:`~server.domain.board_view.BoardView` the actor replaces after each change of its
cache and each publication. Nobody else reads the actor's state.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from actors.base import Actor
from server.domain.board_view import BoardView, Publication, TopScores
from server.domain.deltas import looks_same
from server.domain.records import BoardRow
from server.domain.topk import ADMITS_ALL, Admission, TopK
from server.store.port import StoreError
from server.support.log_throttle import LogThrottle, error_key, log_throttled

log = logging.getLogger(__name__)

__all__ = [
    "BoardViews",
    "LeaderboardActor",
    "Publication",
    "ReloadTop",
    "ScoreChanged",
    "Subscriber",
    "UserRemoved",
]


class Subscriber(Protocol):
    """Where publications go (the WebSocket fan-out). ``publish`` must not block or raise."""

    def publish(self, publication: Publication) -> None: ...


class BoardViews(Protocol):
    """What a reader of the board may use: the last view published, a value.

    ``LeaderboardActor`` is one; readers are typed with this, so they cannot reach into
    the actor's state.
    """

    @property
    def view(self) -> BoardView: ...


class TopSource(Protocol):
    """Where the top K is read from: the store (:meth:`ScoreStore.top`), or a board
    period's rank index (:mod:`actors.boards`)."""

    async def top(self, limit: int) -> list[BoardRow]: ...


@dataclass(frozen=True, slots=True)
class ScoreChanged:
    """A user's score changed in the store (sent by that user's actor after the write)."""

    row: BoardRow


@dataclass(frozen=True, slots=True)
class UserRemoved:
    """An admin took a user off the board (write version ``v``)."""

    user_id: str
    v: int


@dataclass(frozen=True, slots=True)
class ReloadTop:
    """The change feed lost its place: read the top K from the store again.

    Asked, not told: the answer is whether the store could be read (``False``: the
    asker retries later).
    """


@dataclass(frozen=True, slots=True)
class NewSeason:
    """The board's period began a new season (issue 14): read the top K again (the new
    season's, from the rank index) and start a new epoch, so no client resumes across
    seasons. ``started`` is called once the new view is in place, before any later
    message is handled (the watchers move to the new season before any of its
    publications). Asked: the answer is whether the read succeeded."""

    started: Callable[[], None] = lambda: None


class _Publish:
    """The broadcast interval elapsed: publish what changed."""


_PUBLISH: Final = _Publish()
LeaderboardMessage = ScoreChanged | UserRemoved | ReloadTop | NewSeason | _Publish


class LeaderboardActor(Actor[LeaderboardMessage]):
    """Keeps the top N (plus headroom) and tells subscribers when it changes.

    Args:
        store: refills the cache when members fall out of it.
        top_n: the rows shown.
        broadcast_interval_s: the least time between two broadcasts; 0 broadcasts each
            change as it is applied.
        history_size: how many versions of deltas are kept for resuming clients.
        clock: a monotonic clock in seconds.
    """

    def __init__(
        self,
        store: TopSource,
        top_n: int,
        broadcast_interval_s: float,
        *,
        history_size: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__("leaderboard")
        self._store = store
        self._top_n = top_n
        self._interval = broadcast_interval_s
        self._clock = clock
        self._topk = TopK(top_n + max(10, top_n))
        self._subscribers: set[Subscriber] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._last_publish = float("-inf")
        # A new epoch per process: versions restart, and history from before is gone.
        self.view = BoardView.empty(secrets.token_hex(4), history_size)
        self._throttle = LogThrottle()

    @property
    def subscribers(self) -> frozenset[Subscriber]:
        return frozenset(self._subscribers)

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.add(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    # --- lifecycle ---------------------------------------------------------------------

    async def load(self) -> None:
        """Fill the cache from the store, before :meth:`start`.

        Raises:
            StoreError: the store could not be read.
        """
        self._topk.load(await self._store.top(self._topk.capacity))
        self.view = self.view.loaded_with(self._topk.top(self._top_n), self._admission())

    async def on_stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._publish()

    # --- messages ----------------------------------------------------------------------

    async def receive(self, message: LeaderboardMessage) -> bool | None:
        if isinstance(message, NewSeason):
            if not await self._refill():
                return False
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            fresh = BoardView.empty(secrets.token_hex(4), self.view.history.size)
            self.view = fresh.loaded_with(self._topk.top(self._top_n), self._admission())
            message.started()
            return True
        if isinstance(message, ReloadTop):
            reloaded = await self._refill()
            if reloaded:
                self._on_change()
            return reloaded
        if isinstance(message, ScoreChanged | UserRemoved):
            if isinstance(message, ScoreChanged):
                changed = self._topk.apply(message.row)
            else:
                changed = self._topk.remove(message.user_id, message.v)
            if self._topk.needs_refill(self._top_n):
                # Every change is wanted while the refill reads the store: a write that
                # misses the read must still reach the board.
                self.view = self.view.changed(self.view.top_scores, ADMITS_ALL)
                changed = await self._refill() or changed
            if changed:
                self._on_change()
        else:
            self._timer = None
            self._publish()
        return None

    async def _refill(self) -> bool:
        try:
            best = await self._store.top(self._topk.capacity)
        except StoreError as exc:
            log_throttled(
                log,
                self._throttle,
                logging.ERROR,
                "leaderboard refill failed; the next change retries",
                key=error_key(exc),
                exc_info=exc,
            )
            return False
        self._topk.load(best)
        return True

    def _admission(self) -> Admission:
        # While a refill is owed (one failed), every change is wanted: each one retries it.
        topk = self._topk
        return ADMITS_ALL if topk.needs_refill(self._top_n) else topk.admission()

    def _on_change(self) -> None:
        """The cache changed: a new view; a publication if the top N looks different."""
        view = self.view
        rows = self._topk.top(self._top_n)
        if looks_same(rows, view.top_scores.rows):
            self.view = view.changed(view.top_scores, self._admission())
            return
        self.view = view.changed(TopScores(rows), self._admission())
        if self._interval <= 0:
            self._publish()
        elif self._timer is None:
            delay = max(0.0, self._last_publish + self._interval - self._clock())
            self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        # The timer stays "armed" until _PUBLISH is handled: changes queued ahead of it
        # must not arm a second one, or two broadcasts would go out within one interval.
        if not self._stopping:
            self.tell(_PUBLISH)

    def _publish(self) -> None:
        view = self.view
        if looks_same(view.top_scores.rows, view.rows):
            return
        publication, self.view = view.published()
        self._last_publish = self._clock()
        for subscriber in tuple(self._subscribers):
            subscriber.publish(publication)
