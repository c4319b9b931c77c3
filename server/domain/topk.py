"""The leaderboard's pure logic: the top-K cache and the rows it shows. No I/O.

The cache holds a prefix of the true ranking: every user outside it ranks below every
user inside it. ``complete`` says the cache holds every user there is. When a member
falls below the last cached row, nobody knows whether an outsider now ranks above it, so
it leaves the cache; when fewer than ``N`` rows remain and the cache is not complete, the
owner must refill it from the store (:meth:`TopK.needs_refill`). K = N plus headroom, so
members can fall out a few times before a refill.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from server.domain.records import BoardRow

RankKey = tuple[int, int, str]


def rank_key(row: BoardRow) -> RankKey:
    """Sort key: higher score first (lower first on an ascending board), then whoever
    reached it first, then user id."""
    return (row.score if row.ascending else -row.score, row.reached_ms, row.user_id)


@dataclass(frozen=True, slots=True)
class Admission:
    """Which rows could change the cache, as of one state of it (:meth:`TopK.admission`).

    ``takes_all``: every row could (the cache holds every user, or it is empty, or its
    owner decided so); else a member's row could, and a row ranking at or above ``last``
    (the last cached row's key). An outsider that stays out changes nothing readers see,
    so its writer need not send it. (Only the version remembered for it is left older: a
    stale event of that user from the change feed is then weighed on its own, as it is on
    every pod that did not make the write.)
    """

    takes_all: bool
    members: frozenset[str] = frozenset()
    last: RankKey | None = None

    def admits(self, row: BoardRow) -> bool:
        """Whether :meth:`TopK.apply` could put ``row`` in the cache or change it."""
        if self.takes_all or row.user_id in self.members:
            return True
        assert self.last is not None  # an empty cache takes all
        return rank_key(row) <= self.last


ADMITS_ALL = Admission(takes_all=True)


class TopK:
    """The best ``capacity`` users, kept in rank order.

    Args:
        capacity: K, the most users held (N plus headroom).
        remembered: how many users that left the cache keep their last version, so a
            late, stale event cannot bring them back with an old score.
    """

    def __init__(self, capacity: int, remembered: int = 4096) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._remembered = remembered
        self._departed: OrderedDict[str, int] = OrderedDict()
        self.complete = True
        self._keys: list[RankKey] = []
        self._rows: list[BoardRow] = []
        self._by_user: dict[str, BoardRow] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, user_id: object) -> bool:
        return user_id in self._by_user

    def load(self, best: Iterable[BoardRow]) -> None:
        """Replace the contents with the store's best rows (``store.top(capacity)``).

        Fewer rows than the capacity mean the store holds no other user: complete.
        """
        rows = sorted(best, key=rank_key)[: self.capacity + 1]
        self.complete = len(rows) < self.capacity
        self._rows = rows[: self.capacity]
        self._keys = [rank_key(r) for r in self._rows]
        self._by_user = {r.user_id: r for r in self._rows}

    def apply(self, row: BoardRow) -> bool:
        """Apply one user's new row; return whether the cache changed.

        A row whose version ``v`` is not newer than the cached one is a duplicate or
        stale event (e.g. seen both directly and from another feed) and is ignored.
        """
        old = self._by_user.get(row.user_id)
        known_v = old.v if old is not None else self._departed.get(row.user_id, 0)
        if row.v <= known_v:
            return False
        key = rank_key(row)
        # Every outsider ranks below the current last row (before this change).
        boundary = self._keys[-1] if self._keys else None
        if old is not None:
            self._remove(old)
        self._departed.pop(row.user_id, None)
        admitted = self.complete or (boundary is not None and key <= boundary)
        if admitted:
            self._insert(row, key)
            if len(self._rows) > self.capacity:
                self._depart(self._rows[-1])
                self.complete = False
        else:
            # An outsider stays out, or a member that fell below the boundary leaves
            # (outsiders may now rank above it); either way its version is remembered.
            self._depart(row)
        return admitted or old is not None

    def admission(self) -> Admission:
        """Which rows :meth:`apply` could take now, as a value (it does not follow later
        changes): the cache holds every user, the user is a member, or the row ranks at
        or above the last one."""
        if self.complete or not self._keys:
            return ADMITS_ALL
        return Admission(False, frozenset(self._by_user), self._keys[-1])

    def remove(self, user_id: str, v: int) -> bool:
        """Take a user off the board (an admin removed it) at version ``v``; return whether
        it was cached. Older events of that user are ignored from now on."""
        old = self._by_user.get(user_id)
        if old is not None and v <= old.v:
            return False
        if old is not None:
            self._remove(old)
        self._departed[user_id] = max(v, self._departed.get(user_id, 0))
        if len(self._departed) > self._remembered:
            self._departed.popitem(last=False)
        return old is not None

    def needs_refill(self, n: int) -> bool:
        """Whether fewer than ``n`` rows are known to be the true top ``n``."""
        return len(self._rows) < n and not self.complete

    def top(self, n: int) -> tuple[BoardRow, ...]:
        """The best ``n`` cached rows, in rank order."""
        return tuple(self._rows[:n])

    def _insert(self, row: BoardRow, key: RankKey) -> None:
        index = bisect.bisect_left(self._keys, key)
        self._keys.insert(index, key)
        self._rows.insert(index, row)
        self._by_user[row.user_id] = row

    def _depart(self, row: BoardRow) -> None:
        """Drop ``row`` from the cache but remember its version (bounded, oldest out)."""
        if row.user_id in self._by_user:
            self._remove(row)
        self._departed[row.user_id] = row.v
        if len(self._departed) > self._remembered:
            self._departed.popitem(last=False)

    def _remove(self, row: BoardRow) -> None:
        index = bisect.bisect_left(self._keys, rank_key(row))
        del self._keys[index]
        del self._rows[index]
        del self._by_user[row.user_id]
