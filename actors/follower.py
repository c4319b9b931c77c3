"""The feed follower: brings every pod's writes to this pod's leaderboard and rank index.

Each pod's user actors tell the leaderboard and the rank index of their own writes at
once; the follower reads the store's change feed (MongoDB's change stream, or the
in-process feed) and tells them of everyone's, this pod's included. Both drop what they
already have by the per-user version ``v``, so the two paths never double count.

The stream is opened before the first loads of the rank index and the leaderboard
(:meth:`FeedFollower.open`), so no write falls between a load and the first event. A
broken stream is reopened from its resume token, with jittered exponential backoff; a
lost history (or an invalidated stream) is reopened from now and followed by a reload of
the top K and of the rank index.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Final, Protocol

from actors.base import ActorStopped
from actors.leaderboard import LeaderboardActor, ReloadTop, ScoreChanged, UserRemoved
from actors.ranks import ReloadableRanks
from server.store.changes import (
    RESTART_REASONS,
    BoardChange,
    Change,
    ChangeEvent,
    ChangeFeed,
    ChangeStream,
    FeedHistoryLost,
    FeedInterrupted,
)
from server.store.port import StoreError
from server.support.log_throttle import LogThrottle, error_key, log_throttled
from server.support.metrics import Metrics
from server.support.tasks import cancel_and_wait

log = logging.getLogger(__name__)

BASE_BACKOFF_S: Final = 0.05
MAX_BACKOFF_S: Final = 5.0


def backoff_delay(attempt: int, base_s: float, cap_s: float, draw: float) -> float:
    """Seconds to wait before reconnect ``attempt`` (0-based): "full jitter", i.e.
    ``draw`` (uniform in [0, 1)) times ``base_s * 2**attempt`` capped at ``cap_s``."""
    return draw * min(cap_s, base_s * 2.0 ** min(attempt, 30))


class _ReloadFailed(Exception):
    """The store could not be read to reload the top K or the rank index (the stream
    itself is fine)."""


class FollowedBoards(Protocol):
    """The boards of a boards file, as the follower feeds them (:mod:`actors.boards`)."""

    def saw(self, event: BoardChange | Change) -> None: ...

    async def reload(self) -> None: ...


class FeedFollower:
    """Follows a :class:`~server.store.changes.ChangeFeed` into a leaderboard.

    Args:
        feed: the store's change feed.
        leaderboard: where changes go; asked to reload when the feed lost its place.
        ranks: the rank index: every change goes there too, and it is reloaded with the
            top K.
        metrics: events, lag, restarts and whether the stream is open.
        base_backoff_s, max_backoff_s: reconnect delays (full jitter, doubling).
        clock_ms: wall-clock milliseconds, for the lag of each event.
        draw: uniform random numbers in [0, 1), for the jitter.
        on_version: told ``(user_id, v)`` of every write on the feed (the user actors
            drop records older than that, so their next write needs no failed try).
        on_reload: told when the top K is reloaded (nothing cached can be trusted).
        boards: the boards of a boards file (issue 14): told of every board write and
            every user change (bans hold on every board), and reloaded with the top K.
        clock_s: monotonic seconds, for :meth:`live_at`.
    """

    def __init__(
        self,
        feed: ChangeFeed,
        leaderboard: LeaderboardActor,
        metrics: Metrics,
        *,
        ranks: ReloadableRanks,
        base_backoff_s: float = BASE_BACKOFF_S,
        max_backoff_s: float = MAX_BACKOFF_S,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        draw: Callable[[], float] = random.random,
        on_version: Callable[[str, int], None] = lambda user_id, v: None,
        on_reload: Callable[[], None] = lambda: None,
        clock_s: Callable[[], float] = time.monotonic,
        boards: FollowedBoards | None = None,
    ) -> None:
        self._feed = feed
        self._leaderboard = leaderboard
        self._ranks = ranks
        self._metrics = metrics
        for reason in RESTART_REASONS:  # at zero from the start: increase() sees the first
            metrics.stream_restarts.labels(reason)
        self._base_s = base_backoff_s
        self._cap_s = max_backoff_s
        self._clock_ms = clock_ms
        self._draw = draw
        self._on_version = on_version
        self._on_reload = on_reload
        self._clock_s = clock_s
        self._boards = boards
        self._last_live: float | None = None  # when the last stream closed
        self._throttle = LogThrottle()
        self._stream: ChangeStream | None = None
        self._token: object | None = None
        self._reload_needed = False
        self._task: asyncio.Task[None] | None = None

    def live_at(self) -> float | None:
        """When a stream was last open (monotonic; now while one is); ``None``: never.
        Readiness allows a bounded time since (``SCOREBOARD_READY_MAX_STALENESS_S``)."""
        return self._clock_s() if self._stream is not None else self._last_live

    async def open(self) -> None:
        """Open the stream at the feed's current end. Call before the leaderboard loads;
        again (after a failed load) it keeps a stream already open.

        A feed that cannot be reached now is not fatal: the running follower keeps
        trying, and reloads the top K once its stream is open.
        """
        if self._stream is not None:
            return
        try:
            self._set_stream(await self._feed.watch(None))
        except (FeedInterrupted, FeedHistoryLost) as exc:
            self._warn("change feed not open at start; retrying in the background: %s", exc)
            self._reload_needed = True

    def start(self) -> None:
        """Start following (after the leaderboard started)."""
        if self._task is not None:
            raise RuntimeError("the feed follower already started")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="feed-follower")

    async def stop(self) -> None:
        """Stop following and close the stream. Idempotent."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        await self._drop_stream()

    async def _run(self) -> None:
        attempt = 0
        while True:
            try:
                if self._stream is None:
                    self._set_stream(await self._feed.watch(self._token))
                if self._reload_needed:
                    await self._reload()
                stream = self._stream
                assert stream is not None
                events = await stream.next_batch()
                self._dispatch(events)
                self._token = stream.resume_token
                attempt = 0
                continue
            except FeedHistoryLost as exc:
                self._warn("change feed lost its place (%s); reloading the top K", exc)
                await self._restart(exc.reason, from_now=True)
            except FeedInterrupted as exc:
                self._warn("change feed interrupted; resuming: %s", exc)
                await self._restart("interrupted", from_now=False)
            except _ReloadFailed:
                self._warn("the top K or the ranks could not be reloaded from the store; retrying")
                self._metrics.stream_restarts.labels("reload_failed").inc()
            except ActorStopped:
                return  # the leaderboard is shutting down: nothing left to feed
            except Exception as exc:
                # Resuming from the same token could meet the same bad event forever:
                # start from now and reload instead, so the board is right again.
                log_throttled(
                    log,
                    self._throttle,
                    logging.ERROR,
                    "change feed follower failed; restarting from now",
                    key=error_key(exc),
                    exc_info=exc,
                )
                await self._restart("error", from_now=True)
            await asyncio.sleep(backoff_delay(attempt, self._base_s, self._cap_s, self._draw()))
            attempt += 1

    def _warn(self, msg: str, exc: Exception | None = None) -> None:
        """A warning, at most once per interval for the same error (an outage repeats it)."""
        key = error_key(exc) if exc is not None else None
        args = (exc,) if exc is not None else ()
        log_throttled(log, self._throttle, logging.WARNING, msg, *args, key=key)

    async def _restart(self, reason: str, *, from_now: bool) -> None:
        """Close the stream; ``from_now``: forget the token and reload once reopened."""
        self._metrics.stream_restarts.labels(reason).inc()
        await self._drop_stream()
        if from_now:
            self._token = None
            self._reload_needed = True

    async def _reload(self) -> None:
        self._on_reload()
        if not await self._leaderboard.ask(ReloadTop()):
            raise _ReloadFailed
        # After the top K (the board is right again at once), while the stream's events
        # wait; the index held keeps answering until the new one is complete.
        try:
            await self._ranks.load()
            if self._boards is not None:
                await self._boards.reload()
        except StoreError as exc:
            raise _ReloadFailed from exc
        self._reload_needed = False

    def _dispatch(self, events: list[ChangeEvent]) -> None:
        if not events:
            self._metrics.stream_lag.set(0)  # a quiet stream is not behind
            return
        self._metrics.stream_events.inc(len(events))
        written_ms: int | None = None
        boards = self._boards
        for event in events:
            if isinstance(event, BoardChange):
                if boards is not None:
                    boards.saw(event)
                written_ms = event.written_ms or written_ms
            elif isinstance(event, Change):
                if boards is not None:
                    boards.saw(event)
                row = event.row
                self._on_version(row.user_id, row.v)
                if event.banned:
                    self._ranks.remove(row.user_id, row.v)
                    self._leaderboard.tell(UserRemoved(row.user_id, row.v))
                else:
                    self._ranks.apply(row)
                    self._leaderboard.tell(ScoreChanged(row))
                written_ms = event.written_ms or written_ms
            else:
                self._reload_needed = True  # asked on the next turn, and retried until done
        if written_ms is not None:
            self._metrics.stream_lag.set(max(0, self._clock_ms() - written_ms) / 1000)

    def _set_stream(self, stream: ChangeStream) -> None:
        # Its start is a resume point too: a stream cut before its first event must
        # resume from where it opened, not from "now".
        self._stream = stream
        self._token = stream.resume_token
        self._metrics.stream_watching.set(1)

    async def _drop_stream(self) -> None:
        stream, self._stream = self._stream, None
        self._metrics.stream_watching.set(0)
        if stream is not None:
            self._last_live = self._clock_s()
            await stream.close()
