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

from server.domain.records import RankedScore

RankKey = tuple[int, int, str]
Row = tuple[str, str, int]  # user_id, username, score: what clients see


def rank_key(entry: RankedScore) -> RankKey:
    """Sort key: higher score first, then whoever reached it first, then user id."""
    return (-entry.score, entry.reached_ms, entry.user_id)


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
        self._entries: list[RankedScore] = []
        self._by_user: dict[str, RankedScore] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, user_id: object) -> bool:
        return user_id in self._by_user

    def load(self, ranked: Iterable[RankedScore]) -> None:
        """Replace the contents with the store's best rows (``store.top(capacity)``).

        Fewer rows than the capacity mean the store holds no other user: complete.
        """
        entries = sorted(ranked, key=rank_key)[: self.capacity + 1]
        self.complete = len(entries) < self.capacity
        self._entries = entries[: self.capacity]
        self._keys = [rank_key(e) for e in self._entries]
        self._by_user = {e.user_id: e for e in self._entries}

    def apply(self, entry: RankedScore) -> bool:
        """Apply one user's new state; return whether the cache changed.

        An entry whose version ``v`` is not newer than the cached one is a duplicate or
        stale event (e.g. seen both directly and from another feed) and is ignored.
        """
        old = self._by_user.get(entry.user_id)
        known_v = old.v if old is not None else self._departed.get(entry.user_id, 0)
        if entry.v <= known_v:
            return False
        key = rank_key(entry)
        # Every outsider ranks below the current last row (before this change).
        boundary = self._keys[-1] if self._keys else None
        if old is not None:
            self._remove(old)
        self._departed.pop(entry.user_id, None)
        admitted = self.complete or (boundary is not None and key <= boundary)
        if admitted:
            self._insert(entry, key)
            if len(self._entries) > self.capacity:
                self._depart(self._entries[-1])
                self.complete = False
        else:
            # An outsider stays out, or a member that fell below the boundary leaves
            # (outsiders may now rank above it); either way its version is remembered.
            self._depart(entry)
        return admitted or old is not None

    def admits(self, entry: RankedScore) -> bool:
        """Whether :meth:`apply` could put ``entry`` in the cache or change it: the cache
        holds every user, the user is a member, or the entry ranks at or above the last
        row. An outsider that stays out changes nothing readers see, so its writer need
        not send it. (Only the version remembered for it is left older: a stale event of
        that user from the change feed is then weighed on its own, as it is on every pod
        that did not make the write.)
        """
        if self.complete or entry.user_id in self._by_user or not self._keys:
            return True
        return rank_key(entry) <= self._keys[-1]

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
        return len(self._entries) < n and not self.complete

    def top(self, n: int) -> list[RankedScore]:
        """The best ``n`` cached users, in rank order."""
        return self._entries[:n]

    def rows(self, n: int) -> tuple[Row, ...]:
        """The best ``n`` as the rows clients see."""
        return tuple((e.user_id, e.username, e.score) for e in self._entries[:n])

    def _insert(self, entry: RankedScore, key: RankKey) -> None:
        index = bisect.bisect_left(self._keys, key)
        self._keys.insert(index, key)
        self._entries.insert(index, entry)
        self._by_user[entry.user_id] = entry

    def _depart(self, entry: RankedScore) -> None:
        """Drop ``entry`` from the cache but remember its version (bounded, oldest out)."""
        if entry.user_id in self._by_user:
            self._remove(entry)
        self._departed[entry.user_id] = entry.v
        if len(self._departed) > self._remembered:
            self._departed.popitem(last=False)

    def _remove(self, entry: RankedScore) -> None:
        index = bisect.bisect_left(self._keys, rank_key(entry))
        del self._keys[index]
        del self._entries[index]
        del self._by_user[entry.user_id]
