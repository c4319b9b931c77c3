"""The pod's rank index: loaded from the store in pages, kept current by every write.

:class:`LiveRanks` holds the :class:`~server.domain.rank_index.RankIndex` that answers
ranks on this pod. It is loaded from the store at start (after the change feed opened,
so that no write falls between the load and the feed: a write made during the load
arrives on the feed too, and the index's version check makes the copy harmless), in
pages of :attr:`LiveRanks.batch_size` players by user id, with a progress line in the
log. From then on it takes every write this pod applies (the user actors) and every
change on the feed (the follower, other pods' writes included).

When the follower lost its place in the feed, writes may have been missed: the index is
then loaded afresh into a new index and swapped in whole once complete. The old index
answers (complete, if behind by the writes missed) until then, so the pod stays ready
and no reader ever sees a half-loaded board; the writes it takes during the load are
kept and replayed onto the new index before the swap, so none is lost (the follower's
own events wait in its open stream and reach the new index after it).

Updates are synchronous and O(log n): the write path awaits nothing more for them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Final, Protocol

from server.domain.rank_index import RankIndex
from server.domain.records import BoardRow
from server.domain.topk import RankKey, rank_key

log = logging.getLogger(__name__)

BATCH_SIZE: Final = 10_000
PROGRESS_EVERY_S: Final = 2.0


class RankMoves(Protocol):
    """Who hears of each change of the index (the live rank stream): the player's key
    before it (``None``: not ranked before), and when the whole index was replaced."""

    def moved(self, user_id: str, old: RankKey | None) -> None: ...

    def replaced(self) -> None: ...


class RankUpdates(Protocol):
    """What a writer tells the rank index: a player's new row, or their removal (a ban)
    as of their write version ``v``. A :class:`RankIndex` is one; so is :class:`LiveRanks`."""

    def apply(self, row: BoardRow) -> object: ...

    def remove(self, user_id: str, v: int) -> object: ...


class ReloadableRanks(RankUpdates, Protocol):
    """Rank updates that can also be reloaded from the store (the follower's need)."""

    async def load(self) -> None: ...


class RankedRows(Protocol):
    """The store call the load reads with (:meth:`server.store.port.ScoreStore.ranked_rows`)."""

    async def ranked_rows(self, after_user_id: str | None, limit: int) -> list[BoardRow]: ...


_Update = BoardRow | tuple[str, int]  # a row taken, or (user id, v) of a removal


class LiveRanks:
    """The pod's current rank index, and how it is loaded and kept current.

    Args:
        store: where the ranked players are read from.
        batch_size: players read per store call.
        progress_every_s: at most one progress line per this many seconds while loading
            (and one when done); 0: one per batch.
        clock: monotonic seconds, for the progress lines.
    """

    def __init__(
        self,
        store: RankedRows,
        *,
        batch_size: int = BATCH_SIZE,
        progress_every_s: float = PROGRESS_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._store = store
        self.batch_size = batch_size
        self._progress_every_s = progress_every_s
        self._clock = clock
        self.index = RankIndex()
        self.loaded = False  # an index was loaded whole at least once
        self.loading = False
        # The updates taken while a load runs, to replay onto the new index.
        self._taken: list[_Update] | None = None
        # Told of every change (the live rank stream), while anyone listens.
        self.moves: RankMoves | None = None

    def apply(self, row: BoardRow) -> None:
        """Take a player's row if newer than the one held (O(log n))."""
        moves = self.moves
        if moves is None:
            self.index.apply(row)
        else:
            held = self.index.get(row.user_id)
            if self.index.apply(row):
                moves.moved(row.user_id, None if held is None else rank_key(held))
        if self._taken is not None:
            self._taken.append(row)

    def remove(self, user_id: str, v: int) -> None:
        """Take the player off, as of their version ``v`` (O(log n))."""
        moves = self.moves
        if moves is None:
            self.index.remove(user_id, v)
        else:
            held = self.index.get(user_id)
            if self.index.remove(user_id, v) and held is not None:
                moves.moved(user_id, rank_key(held))
        if self._taken is not None:
            self._taken.append((user_id, v))

    async def load(self) -> None:
        """Read every ranked player from the store, page by page, into a new index, and
        swap it in (with the updates taken meanwhile replayed onto it).

        Raises:
            StoreError: a page could not be read; the index held is kept as it was.
        """
        if self.loading:
            raise RuntimeError("the rank index is already loading")
        self.loading = True
        self._taken = []
        started = self._clock()
        try:
            rows = await self._read_all(started)
            index = RankIndex(rows)  # one sort: much faster than as many inserts
            for update in self._taken:
                if isinstance(update, BoardRow):
                    index.apply(update)
                else:
                    index.remove(*update)
            self.index = index
            self.loaded = True
            if self.moves is not None:
                self.moves.replaced()
            elapsed = self._clock() - started
            log.info(
                "rank index loaded: %d players in %.1f s",
                len(index),
                elapsed,
                extra={"players": len(index), "elapsed_s": round(elapsed, 3)},
            )
        finally:
            self._taken = None
            self.loading = False

    async def _read_all(self, started: float) -> list[BoardRow]:
        last_said = started
        rows: list[BoardRow] = []
        after: str | None = None
        while True:
            page = await self._store.ranked_rows(after, self.batch_size)
            rows += page
            if len(page) < self.batch_size:
                break
            after = page[-1].user_id
            now = self._clock()
            if now - last_said >= self._progress_every_s:
                last_said = now
                log.info(
                    "loading the rank index: %d players so far",
                    len(rows),
                    extra={"players": len(rows), "elapsed_s": round(now - started, 3)},
                )
            # The store's answer may come without a wait (an in-memory store): give the
            # loop to requests and probes between pages anyway.
            await asyncio.sleep(0)
        return rows
