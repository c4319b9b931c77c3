"""Which rank watchers the moves of one interval could have changed, and what changed.

A watcher follows one player (``/ws/scoreboard?watch=me``): their rank, score, and the
rows ``window`` places above and below them. Each broadcast interval the players who moved
are known, each with the key it had when the interval began (:meth:`RankWatches.moved`);
:meth:`RankWatches.due` then finds the watchers whose state could have changed, computes
theirs afresh from the rank index, and answers those whose state did change. Pure logic:
the I/O (the timer, the frames, the sockets) is :mod:`handlers.live.rank_stream`'s.

**Which watchers could have changed.** A watcher's state is the rows of its window, each
with its rank. Its window spans the keys ``[lo, hi]`` (those of its first and last row
when it was last computed; ``hi`` is past every key when the window reaches the bottom of
the board, where a newcomer would join it). A player's move from key ``old`` to key
``new`` (a newcomer from past the bottom, a removed player to past the bottom) changes
how many players rank ahead of every key between the two, and of no other. So it changes
the watcher's state only if ``[min(old, new), max(old, new)]`` meets ``[lo, hi]``: a move
wholly above the window or wholly below it leaves every row of it where it was.

Found without looking at every watcher: watchers are kept sorted by ``lo``. A move's span
``[a, b]`` meets the windows whose ``lo`` lies in ``[a, b]`` and those that straddle
``a`` (``lo < a <= hi``). A straddling window held at most ``2 * window`` rows above
``a`` when it was computed, and only players who moved into ``[lo, a)`` since can have
added to them; the topmost of those found the window itself (its own span starts within
``2 * window`` rows below ``lo``). So windows whose ``lo`` is at most
:data:`REACH` rows above ``a`` in the current index cover every straddling one. The cost
of an interval is O(moves x log n) plus the watchers found, not O(watchers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Generic, TypeVar

from sortedcontainers import SortedKeyList

from server.domain.rank_index import RankIndex
from server.domain.topk import RankKey, rank_key

# The most rows a watcher may ask for on each side of its player.
MAX_WINDOW: Final = 10
# How many rows above a move's upper end a straddling window's first row is looked for:
# at most 2 * MAX_WINDOW (see above), and one to spare.
REACH: Final = 2 * MAX_WINDOW + 1
# Keys past every real one (scores are 64-bit integers in both stores): where a newcomer
# comes from and a removed player goes, and the window bounds at the ends of the board.
BOTTOM: Final[RankKey] = (2**64, 0, "")
TOP: Final[RankKey] = (-(2**64), 0, "")

Seat = TypeVar("Seat")


# One row of a window as a watcher sees it: rank, user id, username, score.
ShownRow = tuple[int, str, str, int]


@dataclass(frozen=True, slots=True)
class RankState:
    """What a watcher of one player is shown: their rank and score (``None`` when not
    ranked) and the rows around them (empty when not ranked). Only what is shown: a
    write that changes none of it (a later ``reached_ms`` in the same place) sends
    nothing."""

    rank: int | None
    score: int | None
    window: tuple[ShownRow, ...]


@dataclass(frozen=True, slots=True)
class RankChange(Generic[Seat]):
    """A state to send: the watcher's seat, its new state, and the rank it was last sent
    (``None`` for its first)."""

    seat: Seat
    state: RankState
    previous: int | None


@dataclass(eq=False, slots=True)
class RankWatch(Generic[Seat]):
    """One watcher: whose rank it follows, how many rows each side, and where its window
    was when last computed. ``seat`` is the I/O layer's handle for the connection."""

    user_id: str
    window: int
    seat: Seat
    state: RankState | None = None
    lo: RankKey | None = None  # None: the player is not ranked (no window)
    hi: RankKey = BOTTOM
    gone: bool = False  # discarded
    _order: tuple[RankKey, int] = field(default=(TOP, 0), repr=False)


_NOT_RANKED: Final = RankState(None, None, ())


def window_of(
    index: RankIndex, user_id: str, window: int
) -> tuple[RankState, RankKey | None, RankKey]:
    """The player's state in ``index`` with ``window`` rows each side, and its window's
    key span ``(lo, hi)`` (``lo`` None when not ranked; ``hi`` past every key when the
    window reaches the bottom of the board)."""
    rank = index.rank_of(user_id)
    if rank is None:
        return _NOT_RANKED, None, BOTTOM
    first = max(rank - window, 1)
    rows = index.page(first, rank + window - first + 1)
    shown = tuple((r, row.user_id, row.username, row.score) for r, row in rows)
    last_rank, last = rows[-1]
    hi = BOTTOM if last_rank >= len(index) else rank_key(last)
    return RankState(rank, shown[rank - first][3], shown), rank_key(rows[0][1]), hi


def state_of(index: RankIndex, user_id: str, window: int) -> RankState:
    """The player's state in ``index``, with ``window`` rows each side."""
    return window_of(index, user_id, window)[0]


class RankWatches(Generic[Seat]):
    """Every rank watcher of one pod, and the moves since they were last computed."""

    def __init__(self) -> None:
        self._by_lo: SortedKeyList[RankWatch[Seat]] = SortedKeyList(key=_order_of)
        self._by_user: dict[str, set[RankWatch[Seat]]] = {}
        self._moved: dict[str, RankKey] = {}
        self._everyone = False  # the whole index was replaced: recompute every watcher
        self._next_id = 0
        self._count = 0

    def __len__(self) -> int:
        """How many watchers there are."""
        return self._count

    @property
    def placed(self) -> int:
        """How many watchers have a window in the search (ranked players' watchers)."""
        return len(self._by_lo)

    @property
    def pending(self) -> bool:
        """Whether moves wait for :meth:`due`."""
        return bool(self._moved) or self._everyone

    def add(self, user_id: str, window: int, seat: Seat, index: RankIndex) -> RankWatch[Seat]:
        """Watch ``user_id`` with ``window`` rows each side; its state is computed now
        (read it from the watch: it is what the watcher is sent first).

        Raises:
            ValueError: ``window`` is not between 0 and :data:`MAX_WINDOW`.
        """
        if not 0 <= window <= MAX_WINDOW:
            raise ValueError(f"window must be from 0 to {MAX_WINDOW}")
        self._next_id += 1
        watch = RankWatch(user_id, window, seat, _order=(TOP, self._next_id))
        self._by_user.setdefault(user_id, set()).add(watch)
        self._count += 1
        self._place(watch, *window_of(index, user_id, window))
        return watch

    def discard(self, watch: RankWatch[Seat]) -> None:
        """Stop watching (a watch not held is ignored)."""
        watches = self._by_user.get(watch.user_id)
        if watches is None or watch not in watches:
            return
        watches.discard(watch)
        watch.gone = True
        self._count -= 1
        if not watches:
            del self._by_user[watch.user_id]
        if watch.lo is not None:
            self._by_lo.remove(watch)
            watch.lo = None

    def moved(self, user_id: str, old: RankKey | None) -> None:
        """``user_id``'s row changed or was removed; ``old`` is its key before (``None``:
        it was not ranked). Only the first key of an interval counts: the states between
        two calls of :meth:`due` were never shown."""
        self._moved.setdefault(user_id, BOTTOM if old is None else old)

    def replaced(self) -> None:
        """The whole index was replaced (reloaded): every watcher is computed again."""
        self._everyone = True

    def due(self, index: RankIndex) -> list[RankChange[Seat]]:
        """Compute afresh every watcher the moves since the last call could have changed,
        and answer those whose state changed: :meth:`found` then :meth:`recompute`."""
        changes = (self.recompute(watch, index) for watch in self.found(index))
        return [change for change in changes if change is not None]

    def found(self, index: RankIndex) -> list[RankWatch[Seat]]:
        """The watchers the moves since the last call could have changed (every watcher
        after :meth:`replaced`); forgets the moves. Compute each with :meth:`recompute`,
        now or in later steps: moves meanwhile wait for the next call."""
        moved, self._moved = self._moved, {}
        everyone, self._everyone = self._everyone, False
        if everyone:
            return [watch for watches in self._by_user.values() for watch in watches]
        return list(self._found(moved, index))

    def recompute(self, watch: RankWatch[Seat], index: RankIndex) -> RankChange[Seat] | None:
        """Compute ``watch``'s state in ``index``; the change to send if it changed (None
        also for a watch discarded since it was found)."""
        if watch.gone:
            return None
        before = watch.state
        state, lo, hi = window_of(index, watch.user_id, watch.window)
        self._place(watch, state, lo, hi)
        if state == before:
            return None
        return RankChange(watch.seat, state, before.rank if before is not None else None)

    def _found(self, moved: dict[str, RankKey], index: RankIndex) -> set[RankWatch[Seat]]:
        found: set[RankWatch[Seat]] = set()
        spans: list[tuple[RankKey, RankKey]] = []
        for user_id, old in moved.items():
            watches = self._by_user.get(user_id)
            if watches:
                found.update(watches)  # their own player moved
            row = index.get(user_id)
            new = rank_key(row) if row is not None else BOTTOM
            # A move in place (a new name, say) is a span of one key.
            spans.append((old, new) if old < new else (new, old))
        if not self._by_lo:
            return found
        for a, b in _merged(spans):
            ahead = index.count_ahead(a)
            lowest = index.key_at(ahead - REACH + 1) if ahead - REACH >= 0 else TOP
            for watch in self._by_lo.irange_key((lowest, 0), (b, self._next_id + 1)):
                if watch.hi >= a:
                    found.add(watch)
        return found

    def _place(
        self, watch: RankWatch[Seat], state: RankState, lo: RankKey | None, hi: RankKey
    ) -> None:
        """Keep ``state`` as the watch's, and its window's key span (re-sorted only when
        its first key moved: most changes move ranks, not the rows of a window)."""
        watch.state = state
        watch.hi = hi
        if lo == watch.lo:
            return
        if watch.lo is not None:
            self._by_lo.remove(watch)
        watch.lo = lo
        if lo is not None:
            watch._order = (lo, watch._order[1])
            self._by_lo.add(watch)


def _order_of(watch: RankWatch[Seat]) -> tuple[RankKey, int]:
    return watch._order


def _merged(spans: list[tuple[RankKey, RankKey]]) -> list[tuple[RankKey, RankKey]]:
    """The spans joined where they meet, in key order."""
    merged: list[tuple[RankKey, RankKey]] = []
    for a, b in sorted(spans):
        if merged and a <= merged[-1][1]:
            if b > merged[-1][1]:
                merged[-1] = (merged[-1][0], b)
        else:
            merged.append((a, b))
    return merged
