"""Plain data exchanged through the store port. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class UserRecord:
    """One user's stored state: a MongoDB document in ``users_scores`` or a SQLite row.

    ``v`` is the per-user write version: it grows by one on every write, so readers
    (the leaderboard, other pods) can drop stale events. ``reached_ms`` is when the
    current score was reached; it breaks ties (first to reach a score ranks higher).
    ``recent_keys`` holds the last idempotency keys with the score each one produced,
    oldest first. ``accepted_ms`` holds the times of the accepted updates inside the
    rate-limit window, oldest first. ``used_actions`` holds ``(jti, expires_ms)`` of the
    proof-of-action tokens spent and not yet expired, so each is accepted once.
    """

    user_id: str
    username: str
    score: int
    v: int
    reached_ms: int
    recent_keys: tuple[tuple[str, int], ...] = ()
    accepted_ms: tuple[int, ...] = ()
    used_actions: tuple[tuple[str, int], ...] = ()
    banned: bool = False


@dataclass(frozen=True, slots=True)
class IncrementCommand:
    """A validated request to add ``amount`` to a user's score at time ``now_ms``."""

    user_id: str
    username: str
    amount: int
    now_ms: int
    idempotency_key: str | None = None
    action: SpentAction | None = None


@dataclass(frozen=True, slots=True)
class SpentAction:
    """A proof-of-action token this increment spends: its ``jti`` and expiry."""

    jti: str
    expires_ms: int


@dataclass(frozen=True, slots=True)
class Applied:
    """The increment was applied; ``record`` is the user's state after it."""

    record: UserRecord

    @property
    def new_score(self) -> int:
        return self.record.score


@dataclass(frozen=True, slots=True)
class Replayed:
    """The idempotency key was seen before: nothing changed; answer the first result."""

    new_score: int


@dataclass(frozen=True, slots=True)
class RateLimited:
    """Too many accepted updates in the window; the client may retry after ``retry_after_s``."""

    retry_after_s: int


@dataclass(frozen=True, slots=True)
class ActionReplayed:
    """The proof-of-action token was already spent: nothing applied."""


@dataclass(frozen=True, slots=True)
class Banned:
    """An admin removed this user from the board: their updates are refused."""


Decision = Applied | Replayed | RateLimited | ActionReplayed | Banned


@dataclass(frozen=True, slots=True)
class RankedScore:
    """One row of a ranking read from the store."""

    user_id: str
    username: str
    score: int
    reached_ms: int
    v: int
