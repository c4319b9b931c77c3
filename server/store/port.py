"""The store port: what the actors need from persistent storage, and nothing more."""

from __future__ import annotations

from typing import Protocol

from server.domain.admin import AdminChange
from server.domain.board_writes import BoardCommand, BoardDecision, BoardRecord, BoardRules
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

    async def apply_admin(
        self, user_id: str, change: AdminChange, blank: UserRecord | None = None
    ) -> UserRecord | None:
        """Apply an admin ``change`` to the user's record atomically; ``None``: no such
        user. ``blank``: the record to apply it to when the user has none (a boards file's
        players may have no record on the original board, and a ban must hold for them).

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

    # --- boards (issue 14): one record per (board, player) ----------------------------

    async def apply_board_writes(
        self, rules: BoardRules, cmds: list[BoardCommand], known: BoardRecord | None = None
    ) -> list[BoardDecision]:
        """Apply consecutive updates of one player to ``rules``' board in one atomic write
        (:func:`server.domain.board_writes.decide_board_all`): every period's standing,
        the player's idempotency key and rate-limit log, and the proof-of-action tokens
        spent (once across all boards). A banned player's are refused
        (:class:`~server.domain.board_writes.BoardBanned`).

        ``known``: the player's record as the caller last saw it; as for
        :meth:`apply_increments`, the store may decide on it and write with a
        compare-and-set on its version instead of reading first.

        Raises:
            StoreError: none is known to be applied.
        """

    async def get_board_record(self, rules: BoardRules, user_id: str) -> BoardRecord | None:
        """The player's record on ``rules``' board, or ``None``."""

    async def banned_users(self) -> list[str]:
        """The ids of every banned user (bans are few: an admin's response to cheating),
        for a boards file's runtime to keep them off every board."""

    async def season_rows(
        self, board: str, period: str, season: str, after_user_id: str | None, limit: int
    ) -> list[BoardRow]:
        """Up to ``limit`` rows of one season's ranking (banned players left out), in user
        id order after ``after_user_id`` (``None``: from the start), as
        :meth:`ranked_rows` pages the original board. Scores as stored: the board's order
        is the caller's to apply."""

    async def reset_board_standing(
        self, rules: BoardRules, user_id: str, period: str, season: str
    ) -> BoardRecord | None:
        """Drop the player's standing in one season of one period (an admin reset),
        atomically, growing their version; ``None``: no record on this board.

        Raises:
            StoreError: nothing is known to be applied.
        """

    async def retire_seasons(self, board: str, period: str, before_ms: int, limit: int) -> int:
        """Delete at most ``limit`` standings of ``period``'s seasons that started before
        ``before_ms`` (seasons past ``keep_seasons``); returns how many went: fewer than
        ``limit`` means none are left. For a background job, in bounded steps."""

    async def expire_spent_actions(self, now_ms: int, limit: int) -> int:
        """Forget at most ``limit`` spent proof-of-action tokens that expired by
        ``now_ms``; returns how many went."""
