"""The leaderboard actor: the top K in memory, fed by score changes, broadcast per tick.

It owns the :class:`~server.domain.topk.TopK` cache and the subscribers (WebSocket handlers).
Changes inside one broadcast interval are coalesced: at most one broadcast per interval,
and only when the visible top N really changed. Each message is encoded once per tick,
never per subscriber, and handed to every subscriber without waiting on any of them.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from actors.base import Actor
from server.domain.deltas import (
    StreamHistory,
    delta_message,
    diff_rows,
    encode,
    rows_json,
    snapshot_message,
    update_message,
)
from server.domain.records import RankedScore
from server.domain.topk import Row, TopK
from server.store.port import ScoreStore, StoreError
from server.support.log_throttle import LogThrottle, error_key, log_throttled

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Publication:
    """One version of the live stream, its messages encoded once for every subscriber."""

    epoch: str
    version: int
    rows: tuple[Row, ...]
    update: str  # seed format: the whole top N
    delta: str  # delta format: changed rows and removed users


class Subscriber(Protocol):
    """Where publications go (the WebSocket fan-out). ``publish`` must not block or raise."""

    def publish(self, publication: Publication) -> None: ...


@dataclass(frozen=True, slots=True)
class ScoreChanged:
    """A user's score changed in the store (sent by that user's actor after the write)."""

    entry: RankedScore


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


class _Publish:
    """The broadcast interval elapsed: publish what changed."""


_PUBLISH: Final = _Publish()
LeaderboardMessage = ScoreChanged | UserRemoved | ReloadTop | _Publish


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
        store: ScoreStore,
        top_n: int,
        broadcast_interval_s: float,
        *,
        history_size: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__("leaderboard")
        self._store = store
        self.top_n = top_n
        self._interval = broadcast_interval_s
        self._clock = clock
        self._topk = TopK(top_n + max(10, top_n))
        self._subscribers: set[Subscriber] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._last_publish = float("-inf")
        self.loaded = False
        # A new epoch per process: versions restart, and history from before is gone.
        self.epoch = secrets.token_hex(4)
        self.version = 0
        self.history = StreamHistory(history_size)
        self._current: tuple[Row, ...] = ()
        self._current_body: bytes | None = None
        self._current_etag = ""
        self._published: tuple[Row, ...] = ()
        self._snapshots: dict[str, str] = {}
        self._throttle = LogThrottle()

    # --- read side (called from handlers, on the event loop) -----------------------------

    @property
    def top_scores_body(self) -> bytes:
        """``{"top_scores": [...]}`` for ``GET /api/top-scores``, encoded once per change."""
        if self._current_body is None:
            body = encode({"top_scores": rows_json(self._current)}).encode()
            self._current_etag = f'"{hashlib.sha1(body, usedforsecurity=False).hexdigest()}"'
            self._current_body = body
        return self._current_body

    @property
    def top_scores_etag(self) -> str:
        """The HTTP ETag of :attr:`top_scores_body`, computed with it."""
        _ = self.top_scores_body
        return self._current_etag

    def wants(self, entry: RankedScore) -> bool:
        """Whether a score change could change the board (see :meth:`TopK.admits`): user
        actors skip telling it about users who stay outside it, most users in a big game.

        While a refill is owed (one failed), every change is wanted: each one retries it.
        Otherwise it is answered from the cache as of now. A refill queued behind (or a
        ``ReloadTop``) reads the store, where the change already is. On MongoDB a write a
        concurrent refill's read missed comes back on the change feed moments later,
        which also settles the version the cache remembers for that user.
        """
        topk = self._topk
        return not self.loaded or topk.needs_refill(self.top_n) or topk.admits(entry)

    @property
    def published_rows(self) -> tuple[Row, ...]:
        """The top N as of the last publication (``version``)."""
        return self._published

    def snapshot(self, reason: str) -> str:
        """The snapshot message of the current version, encoded once per version and reason."""
        message = self._snapshots.get(reason)
        if message is None:
            message = snapshot_message(self.epoch, self.version, self._published, reason)
            self._snapshots[reason] = message
        return message

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
        self._current = self._published = self._topk.rows(self.top_n)
        self._current_body = None
        self._snapshots.clear()
        self.loaded = True

    async def on_stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._publish()

    # --- messages ----------------------------------------------------------------------

    async def receive(self, message: LeaderboardMessage) -> bool | None:
        if isinstance(message, ReloadTop):
            reloaded = await self._refill()
            if reloaded:
                self._on_change()
            return reloaded
        if isinstance(message, ScoreChanged | UserRemoved):
            if isinstance(message, ScoreChanged):
                changed = self._topk.apply(message.entry)
            else:
                changed = self._topk.remove(message.user_id, message.v)
            if self._topk.needs_refill(self.top_n):
                changed = await self._refill() or changed
            if changed:
                self._on_change()
        else:
            self._timer = None
            self._publish()
        return None

    async def _refill(self) -> bool:
        try:
            ranked = await self._store.top(self._topk.capacity)
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
        self._topk.load(ranked)
        return True

    def _on_change(self) -> None:
        rows = self._topk.rows(self.top_n)
        if rows == self._current:
            return
        self._current = rows
        self._current_body = None
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
        if self._current == self._published:
            return
        previous, rows = self._published, self._current
        self._published = rows
        self._last_publish = self._clock()
        self.version += 1
        self._snapshots.clear()
        delta = delta_message(self.epoch, self.version, diff_rows(previous, rows))
        self.history.append(self.version, delta)
        publication = Publication(
            epoch=self.epoch,
            version=self.version,
            rows=rows,
            update=update_message(self.epoch, self.version, rows),
            delta=delta,
        )
        for subscriber in tuple(self._subscribers):
            subscriber.publish(publication)
