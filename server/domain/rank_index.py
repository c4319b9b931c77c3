"""Every ranked player in board order, with ranks in O(log n): the rank index.

The store is the record of truth; a pod keeps this index in memory (as Nakama's rank
cache does) so that "my rank", "the players around me" and pages of the whole board cost
a few tree steps rather than a count over the store's index (B-trees keep no counts: a
count of the players ahead is O(rank)).

Order: the board's own (:func:`server.domain.topk.rank_key`: higher score first, then
whoever reached it first, then user id), so rank 1 is the board's first row. Rows newer
than the one held replace it (by the user's write version ``v``); older and equal ones
are ignored, so the index can take this pod's writes and the change feed's in any order.
A removed (banned) player leaves the index; the version of the removal is remembered so
that an older row arriving late cannot bring them back.

Why ``sortedcontainers.SortedList``: a well-kept, pure-Python order-statistic list (a
list of sorted sublists with a positional index), O(log n) insert, remove, ``index`` and
positional access, and fast bulk construction from sorted data; a hand-written balanced
tree would need its own proof of correctness and is slower in CPython.
"""

from __future__ import annotations

from collections.abc import Iterable

from sortedcontainers import SortedList

from server.domain.records import BoardRow
from server.domain.topk import RankKey, rank_key


class RankIndex:
    """The ranked players of one board, in board order."""

    __slots__ = ("_order", "_removed", "_rows")

    def __init__(self, rows: Iterable[BoardRow] = ()) -> None:
        self._rows: dict[str, BoardRow] = {}
        self._removed: dict[str, int] = {}  # user id -> version of the removal
        for row in rows:
            held = self._rows.get(row.user_id)
            if held is None or row.v > held.v:
                self._rows[row.user_id] = row
        # One sort of all keys, then one bulk build: much faster than n inserts.
        self._order: SortedList[RankKey] = SortedList(rank_key(r) for r in self._rows.values())

    def __len__(self) -> int:
        """How many players are ranked."""
        return len(self._rows)

    def __contains__(self, user_id: object) -> bool:
        return user_id in self._rows

    def get(self, user_id: str) -> BoardRow | None:
        """The player's row, or ``None`` if not ranked."""
        return self._rows.get(user_id)

    def apply(self, row: BoardRow) -> bool:
        """Take ``row`` if it is newer than what the index holds (or knows was removed).

        Returns:
            Whether the index changed.
        """
        user_id = row.user_id
        held = self._rows.get(user_id)
        if held is not None:
            if row.v <= held.v:
                return False
            self._order.remove(rank_key(held))
        else:
            removed_at = self._removed.get(user_id)
            if removed_at is not None:
                if row.v <= removed_at:
                    return False
                del self._removed[user_id]
        self._rows[user_id] = row
        self._order.add(rank_key(row))
        return True

    def remove(self, user_id: str, v: int) -> bool:
        """Take the player out of the ranking, as of their write version ``v`` (a removal
        or ban); rows up to ``v`` arriving later are ignored.

        Returns:
            Whether the index changed.
        """
        held = self._rows.get(user_id)
        if held is not None and held.v > v:
            return False  # the removal is older than the row held
        if self._removed.get(user_id, -1) < v:
            self._removed[user_id] = v
        if held is None:
            return False
        del self._rows[user_id]
        self._order.remove(rank_key(held))
        return True

    def forget_removal(self, user_id: str) -> None:
        """Take rows of a removed player again, whatever their version (a ban lifted:
        their rows as stored come back)."""
        self._removed.pop(user_id, None)

    def rank_of(self, user_id: str) -> int | None:
        """The player's 1-based rank, or ``None`` if not ranked. O(log n)."""
        row = self._rows.get(user_id)
        if row is None:
            return None
        position: int = self._order.index(rank_key(row))
        return position + 1

    def at(self, rank: int) -> BoardRow:
        """The row at 1-based ``rank``. O(log n).

        Raises:
            IndexError: ``rank`` is not between 1 and ``len(self)``.
        """
        if not 1 <= rank <= len(self._order):
            raise IndexError(f"rank {rank} is not between 1 and {len(self._order)}")
        return self._rows[self._order[rank - 1][2]]

    def count_ahead(self, key: RankKey) -> int:
        """How many players rank ahead of ``key`` (whether or not a row has it). O(log n)."""
        ahead: int = self._order.bisect_left(key)
        return ahead

    def key_at(self, rank: int) -> RankKey:
        """The :func:`rank_key` of the row at 1-based ``rank``. O(log n).

        Raises:
            IndexError: ``rank`` is not between 1 and ``len(self)``.
        """
        if not 1 <= rank <= len(self._order):
            raise IndexError(f"rank {rank} is not between 1 and {len(self._order)}")
        key: RankKey = self._order[rank - 1]
        return key

    def page(self, first_rank: int, limit: int) -> list[tuple[int, BoardRow]]:
        """Up to ``limit`` rows from 1-based ``first_rank`` on, each with its rank; clipped
        at the ends of the board (empty past its end)."""
        start = max(first_rank, 1) - 1
        keys = self._order[start : start + max(limit, 0)]
        rows = self._rows
        return [(start + i + 1, rows[key[2]]) for i, key in enumerate(keys)]

    def around(self, user_id: str, above: int, below: int) -> list[tuple[int, BoardRow]]:
        """The player's row and up to ``above`` rows ahead of it and ``below`` behind it,
        each with its rank, clipped at the ends of the board; empty if not ranked."""
        rank = self.rank_of(user_id)
        if rank is None:
            return []
        first = max(rank - max(above, 0), 1)
        return self.page(first, rank + max(below, 0) - first + 1)

    def after(self, key: RankKey, limit: int) -> list[tuple[int, BoardRow]]:
        """Up to ``limit`` rows ranked after ``key`` (a row's :func:`rank_key`, whether or
        not that row is still here), each with its rank: keyset paging, so a player who did
        not move is never skipped or repeated at a page boundary."""
        return self.page(self._order.bisect_right(key) + 1, limit)

    def before(self, key: RankKey, limit: int) -> list[tuple[int, BoardRow]]:
        """Up to ``limit`` rows ranked just before ``key``, in board order, each with its
        rank (the page that ends where ``key`` is)."""
        end = self._order.bisect_left(key)
        start = max(end - max(limit, 0), 0)
        return self.page(start + 1, end - start)
