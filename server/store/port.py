"""The store port: what the actors need from persistent storage, and nothing more."""

from __future__ import annotations

from typing import Protocol

from server.domain.admin import AdminChange
from server.domain.records import (
    BoardRow,
    Decision,
    IncrementCommand,
    StoredUser,
    UserRecord,
)
from server.store.changes import ChangeFeed


class StoreError(Exception):
    """The store failed in a way it could not classify (a bug, a corrupt record, too much
    contention). Nothing is known to be applied; the caller answers 500 ``database_error``."""


class StoreUnavailable(StoreError):
    """The store cannot take the call right now (unreachable, no primary, read-only, disk
    full) and nothing was applied: a condition that passes. The caller answers 503
    ``database_unavailable`` with ``Retry-After``."""


class StoreTimeout(StoreError):
    """The call's deadline passed before the store answered: a write may or may not have
    been applied. The caller answers 503 ``database_timeout``; the client retries with the
    same ``Idempotency-Key`` to learn the outcome without applying it twice."""


class ScoreStore(Protocol):
    """An async store of user scores. Adapters: SQLite (embedded), MongoDB.

    ``changes`` is the feed of every write to the store, by this process or another
    (:mod:`server.store.changes`).
    """

    @property
    def changes(self) -> ChangeFeed: ...

    async def open(self) -> None:
        """Connect and create the schema/indexes. Call once before anything else."""

    async def close(self) -> None:
        """Finish pending work and release connections. Idempotent."""

    async def ping(self) -> bool:
        """Return whether the store answers right now (readiness)."""

    async def apply_increments(
        self, cmds: list[IncrementCommand], known: UserRecord | None = None
    ) -> list[Decision]:
        """Apply consecutive increments of one user in one atomic write (see
        :func:`server.domain.increments.decide_all`); one decision per command, in order.

        ``known``: the user's record as the caller last saw it. The store may decide on it
        and write with a compare-and-set on its version instead of reading first (one
        round trip); it is trusted only when that write succeeds, so a stale one costs a
        read, never a wrong answer.

        Raises:
            StoreError: none is known to be applied.
        """

    async def top(self, limit: int) -> list[BoardRow]:
        """Return the best ``limit`` users: score descending, then earliest reached, then id."""

    async def apply_admin(self, user_id: str, change: AdminChange) -> UserRecord | None:
        """Apply an admin ``change`` to the user's record atomically; ``None``: no such user.

        Raises:
            StoreError: nothing is known to be applied.
        """

    async def rank(self, user_id: str) -> int | None:
        """The user's 1-based rank among users on the board; ``None``: unknown or removed."""

    async def get_score(self, user_id: str) -> BoardRow | None:
        """Return one user's row, or ``None``."""

    async def get_user(self, user_id: str) -> StoredUser | None:
        """Return one user's row and whether they are banned, or ``None``."""

    async def ranked_rows(self, after_user_id: str | None, limit: int) -> list[BoardRow]:
        """Up to ``limit`` rows of users on the board (not banned), in user id order, from
        the first id after ``after_user_id`` (``None``: from the start): one page of the
        whole board for loading the rank index (:mod:`actors.ranks`). Pages follow the
        user id, which every user keeps, so a write between two pages neither skips nor
        repeats anyone."""
