"""Plain data exchanged through the store port. No I/O here."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

# The seq of keys stored before keys had one: below any real seq (a version, >= 1),
# ordered by their position in the stored list (which was oldest first).
LEGACY_KEY_SEQ: Final = -(1 << 40)


class RememberedKey(NamedTuple):
    """An idempotency key a user sent, with what its request produced.

    ``seq`` orders the keys (the user's version ``v`` after the write that stored it; keys
    stored before it was recorded get negative ones, oldest lowest). ``fingerprint``
    identifies the request that used the key (see :attr:`IncrementCommand.fingerprint`);
    ``None`` for keys stored before fingerprints were.
    """

    key: str
    score: int
    seq: int
    fingerprint: str | None = None


def keys_from_stored(entries: Iterable[Sequence[Any]]) -> tuple[RememberedKey, ...]:
    """Decode a stored key ring: ``[key, score, seq, fingerprint]`` entries, and the
    ``[key, score]`` pairs stored before seq and fingerprint were (see
    :data:`LEGACY_KEY_SEQ`), in the same slots."""
    keys = []
    for slot, entry in enumerate(entries):
        if len(entry) >= 4:
            fingerprint = None if entry[3] is None else str(entry[3])
            keys.append(RememberedKey(str(entry[0]), int(entry[1]), int(entry[2]), fingerprint))
        else:
            keys.append(RememberedKey(str(entry[0]), int(entry[1]), LEGACY_KEY_SEQ + slot))
    return tuple(keys)


@dataclass(frozen=True, slots=True)
class UserRecord:
    """One user's stored state: a MongoDB document in ``users_scores`` or a SQLite row.

    ``v`` is the per-user write version: it grows by one on every write, so readers
    (the leaderboard, other pods) can drop stale events. ``reached_ms`` is when the
    current score was reached; it breaks ties (first to reach a score ranks higher).

    The three logs are rings of slots: a write fills a free slot or overwrites one whose
    entry no longer counts, so it changes a few slots, never moves the others (MongoDB
    then writes and replicates only those slots; see :mod:`server.store.mongo_documents`).
    Their order in the tuple means nothing. ``recent_keys`` holds the user's last
    idempotency keys (the newest by ``seq``). ``accepted_ms`` holds the times of accepted
    updates; those older than the rate-limit window no longer count. ``used_actions``
    holds ``(jti, expires_ms)`` of spent proof-of-action tokens; the expired ones no
    longer count.
    """

    user_id: str
    username: str
    score: int
    v: int
    reached_ms: int
    recent_keys: tuple[RememberedKey, ...] = ()
    accepted_ms: tuple[int, ...] = ()
    used_actions: tuple[tuple[str, int], ...] = ()
    banned: bool = False


@dataclass(frozen=True, slots=True)
class IncrementCommand:
    """A validated request to add ``amount`` to a user's score at time ``now_ms``.

    ``fingerprint``: a digest of what the request asks for, stored with its
    ``idempotency_key``: a later request with the same key and another fingerprint is a
    different request (:class:`KeyReused`). ``None``: not compared.
    """

    user_id: str
    username: str
    amount: int
    now_ms: int
    idempotency_key: str | None = None
    action: SpentAction | None = None
    fingerprint: str | None = None


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
class KeyReused:
    """The idempotency key was seen before with a different request: nothing applied."""


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


Decision = Applied | Replayed | KeyReused | RateLimited | ActionReplayed | Banned


@dataclass(frozen=True, slots=True)
class BoardRow:
    """One user's row on the board: what ``store.top`` reads, the top-K cache holds and
    the board publishes.

    Clients see ``user_id``, ``username`` and ``score``; ``reached_ms`` breaks ties in the
    ranking (first to reach a score ranks higher) and ``v`` is the user's write version
    (stale events are dropped by it).
    """

    user_id: str
    username: str
    score: int
    reached_ms: int
    v: int
    # On a board ranked lowest first (``order = "asc"``: race times); see ``rank_key``.
    ascending: bool = False


@dataclass(frozen=True, slots=True)
class StoredUser:
    """One user as the store holds them: their row, and whether they are banned (the
    record of truth an admin reads; the rank index only holds who is ranked)."""

    row: BoardRow
    banned: bool
