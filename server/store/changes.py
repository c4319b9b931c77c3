"""The change feed: every pod's writes, as events, for every pod's leaderboard.

A store exposes a :class:`ChangeFeed` (``store.changes``). MongoDB's is its change stream
(:mod:`server.store.mongo_changes`); the embedded store and the mongomock test double use
:class:`LocalChangeFeed`, which carries the writes of every store object it is given to,
in one process: several app instances on one SQLite file (or one mongomock database)
behave like pods on one MongoDB replica set.

A stream is opened at a position (now, or just after a resume token) and yields the
changes written after it, in write order. Errors say what the reader must do:
:class:`FeedInterrupted`: reconnect and resume from the last token;
:class:`FeedHistoryLost` (and :class:`FeedInvalidated`, :class:`FeedNotResumable`): the
resume point is gone or unusable, so open a new stream from now and reload the top K from
the store.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Protocol

from server.domain.board_writes import BoardRecord
from server.domain.records import BoardRow, UserRecord

DEFAULT_HISTORY: Final = 100_000
# Every reason a change-feed reader restarts its stream for (the ``reason`` label of
# ``scoreboard_change_stream_restarts_total``): resumed from the token ("interrupted"),
# reopened from now and the top K reloaded (the :class:`FeedHistoryLost` family, and
# "error": anything unexpected), or the reload itself failed ("reload_failed").
RESTART_REASONS: Final = (
    "interrupted",
    "history_lost",
    "invalidated",
    "not_resumable",
    "error",
    "reload_failed",
)


@dataclass(frozen=True, slots=True)
class Change:
    """One user's state as written: what the board needs of it (its row; banned: off
    the board).

    ``written_ms``: wall-clock time of the write when the feed knows it (feed lag).
    """

    row: BoardRow
    banned: bool
    written_ms: int | None = None

    @classmethod
    def of(cls, record: UserRecord, written_ms: int | None = None) -> Change:
        row = BoardRow(record.user_id, record.username, record.score, record.reached_ms, record.v)
        return cls(row, record.banned, written_ms)


@dataclass(frozen=True, slots=True)
class BoardChange:
    """One player's record on one board as written (issue 14): every pod's board
    runtime takes the standings it shows from it."""

    record: BoardRecord
    written_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Reload:
    """Something changed that no :class:`Change` describes (a deleted document): the reader
    must reload the top K from the store."""


ChangeEvent = Change | BoardChange | Reload


class FeedInterrupted(Exception):
    """The stream broke (network, server stepping down): reopen it from the last token."""


class FeedHistoryLost(Exception):
    """The resume point is no longer known (MongoDB error 286): start a new stream from
    now and reload the top K."""

    reason = "history_lost"


class FeedInvalidated(FeedHistoryLost):
    """The collection was dropped or renamed: the stream ended; start anew and reload."""

    reason = "invalidated"


class FeedNotResumable(FeedHistoryLost):
    """The stream failed in a way resuming cannot mend (MongoDB's non-resumable errors:
    280 ChangeStreamFatalError, 260 InvalidResumeToken, ...): start anew and reload."""

    reason = "not_resumable"


class ChangeStream(Protocol):
    """An open stream of changes."""

    @property
    def resume_token(self) -> object | None:
        """Where a new stream would resume to continue just after the last batch."""

    async def next_batch(self) -> list[ChangeEvent]:
        """The next changes, in write order; may be empty after a quiet wait.

        Raises:
            FeedInterrupted: reopen from :attr:`resume_token`.
            FeedHistoryLost: reopen from now and reload.
        """

    async def close(self) -> None:
        """Release the stream. Idempotent."""


class ChangeFeed(Protocol):
    """Where a store's change streams come from."""

    async def watch(self, resume_token: object | None) -> ChangeStream:
        """Open a stream just after ``resume_token``, or at the current end when ``None``.

        Raises:
            FeedInterrupted: the feed cannot be reached now; try again later.
            FeedHistoryLost: ``resume_token`` is older than the feed remembers.
        """


class LocalChangeFeed:
    """An in-process change feed with a bounded history, like a MongoDB oplog.

    Stores call :meth:`publish` on the event loop after their writes commit. A stream that
    falls more than ``history`` events behind, or resumes from a token that old, gets
    :class:`FeedHistoryLost`, as a MongoDB change stream would.
    """

    def __init__(self, history: int = DEFAULT_HISTORY) -> None:
        if history < 1:
            raise ValueError("history must be at least 1")
        self._events: deque[ChangeEvent] = deque(maxlen=history)
        self._last = 0  # position of the newest event; the oldest kept is _last - len + 1
        self._streams: set[_LocalStream] = set()

    @property
    def position(self) -> int:
        """How many events were ever published."""
        return self._last

    def publish(self, events: Iterable[ChangeEvent]) -> None:
        """Append events (in write order) and wake every open stream."""
        before = self._last
        for event in events:
            self._events.append(event)  # a full deque drops its oldest event
            self._last += 1
        if self._last != before:
            for stream in self._streams:
                stream.wake()

    async def watch(self, resume_token: object | None) -> ChangeStream:
        if resume_token is None:
            start = self._last
        elif isinstance(resume_token, int) and 0 <= resume_token <= self._last:
            start = resume_token
            if start < self._oldest_position() - 1:
                raise FeedHistoryLost(f"position {start} is older than the feed's history")
        else:
            raise FeedHistoryLost(f"unknown resume token {resume_token!r}")
        stream = _LocalStream(self, start)
        self._streams.add(stream)
        return stream

    def _oldest_position(self) -> int:
        return self._last - len(self._events) + 1

    def _read_after(self, position: int) -> list[ChangeEvent]:
        """Events after ``position``; raises :class:`FeedHistoryLost` if some are gone."""
        count = self._last - position
        if count > len(self._events):
            raise FeedHistoryLost(f"the reader at {position} fell behind the feed's history")
        # From the newest end: O(count), not O(history).
        newest_first = list(itertools.islice(reversed(self._events), count))
        newest_first.reverse()
        return newest_first

    def _forget(self, stream: _LocalStream) -> None:
        self._streams.discard(stream)


class _LocalStream:
    __slots__ = ("_closed", "_feed", "_position", "_wakeup")

    def __init__(self, feed: LocalChangeFeed, position: int) -> None:
        self._feed = feed
        self._position = position
        self._wakeup = asyncio.Event()
        self._closed = False

    @property
    def resume_token(self) -> object | None:
        return self._position

    def wake(self) -> None:
        self._wakeup.set()

    async def next_batch(self) -> list[ChangeEvent]:
        while True:
            if self._closed:
                raise FeedInterrupted("the change stream was closed")
            if self._position < self._feed.position:
                events = self._feed._read_after(self._position)
                self._position = self._feed.position
                return events
            self._wakeup.clear()
            await self._wakeup.wait()

    async def close(self) -> None:
        self._closed = True
        self._wakeup.set()
        self._feed._forget(self)


class NoOtherWriters:
    """The feed of a store no other process or store object writes to (one embedded
    SQLite store on its own): its streams never yield anything, since the pod's own writes
    reach its leaderboard directly. Saves publishing every write to nobody."""

    async def watch(self, resume_token: object | None) -> ChangeStream:
        return _QuietStream()


class _QuietStream:
    __slots__ = ("_closed",)

    def __init__(self) -> None:
        self._closed = asyncio.Event()

    @property
    def resume_token(self) -> object | None:
        return None

    async def next_batch(self) -> list[ChangeEvent]:
        await self._closed.wait()
        raise FeedInterrupted("the change stream was closed")

    async def close(self) -> None:
        self._closed.set()
