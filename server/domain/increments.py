"""The pure rule that turns a user's stored state and an increment into a decision.

Both store adapters run this same function inside one atomic operation (a SQLite
transaction, or a compare-and-set on the MongoDB document's version), so the
increment, the idempotency check and the rate limit are applied together or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from server.domain.records import (
    ActionReplayed,
    Applied,
    Banned,
    Decision,
    IncrementCommand,
    KeyReused,
    RateLimited,
    RememberedKey,
    Replayed,
    SpentAction,
    UserRecord,
)

T = TypeVar("T")
RATE_WINDOW_MS = 60_000


@dataclass(frozen=True, slots=True)
class IncrementPolicy:
    """Limits applied to every increment.

    ``rate_limit_per_minute`` of 0 turns the rate limit off. ``idempotency_keys`` is how
    many recent keys each user keeps.
    """

    rate_limit_per_minute: int = 10
    idempotency_keys: int = 64
    # Spent action tokens are kept until they expire; this bounds them all the same
    # (at 10 updates a minute, tokens living 5 minutes need 50).
    used_actions: int = 1024


def decide(record: UserRecord | None, cmd: IncrementCommand, policy: IncrementPolicy) -> Decision:
    """Decide what an increment does to ``record`` (``None``: the user has no record yet).

    The order matters: a retried idempotency key answers its first result even when the
    user is now rate limited, because a retry is not a new update. The rate limit is a
    sliding log of accepted update times, so no window of 60 seconds ever holds more than
    the limit (no double burst at a window edge, as fixed windows allow).

    The record's logs are rings (see :class:`UserRecord`): an entry is added in the slot
    of one that no longer counts (an expired time or action, the oldest key once the
    user has ``policy.idempotency_keys``), or appended, so the new record differs from
    ``record`` in a few slots (:func:`server.store.mongo_documents.update_of`).

    Returns:
        :class:`Applied` with the new record to store, or :class:`Replayed`,
        :class:`KeyReused`, :class:`ActionReplayed`, :class:`RateLimited` or
        :class:`Banned`, which mean "store nothing".
    """
    if record is not None and record.banned:
        return Banned()
    if record is not None and cmd.idempotency_key is not None:
        seen = key_seen(record.recent_keys, cmd.idempotency_key, cmd.fingerprint)
        if isinstance(seen, KeyReused):
            return seen
        if seen is not None:
            return Replayed(new_score=seen.score)
    now_ms = cmd.now_ms
    guarded = admit(
        record.used_actions if record is not None else (),
        record.accepted_ms if record is not None else (),
        cmd.action,
        now_ms,
        policy,
    )
    if isinstance(guarded, ActionReplayed | RateLimited):
        return guarded
    used, accepted = guarded

    old_score = record.score if record is not None else 0
    new_score = old_score + cmd.amount
    v = (record.v if record is not None else 0) + 1
    keys = record.recent_keys if record is not None else ()
    if cmd.idempotency_key is not None and policy.idempotency_keys > 0:
        keys = remember(
            keys,
            RememberedKey(cmd.idempotency_key, new_score, v, cmd.fingerprint),
            policy.idempotency_keys,
        )
    return Applied(
        UserRecord(
            user_id=cmd.user_id,
            username=cmd.username,
            score=new_score,
            v=v,
            reached_ms=now_ms,
            recent_keys=keys,
            accepted_ms=accepted,
            used_actions=used,
        )
    )


class SeenKey(Protocol):
    """A remembered idempotency key (a user's, or a player's on one board)."""

    @property
    def key(self) -> str: ...
    @property
    def fingerprint(self) -> str | None: ...


K = TypeVar("K", bound=SeenKey)


def key_seen(keys: Iterable[K], key: str, fingerprint: str | None) -> K | KeyReused | None:
    """The remembered entry of idempotency key ``key`` (its request was applied: answer
    what it answered), :class:`KeyReused` when that request was a different one (by
    ``fingerprint``), or ``None`` for a key not seen."""
    for remembered in keys:
        if remembered.key == key:
            if (
                remembered.fingerprint is not None
                and fingerprint is not None
                and remembered.fingerprint != fingerprint
            ):
                return KeyReused()
            return remembered
    return None


def admit(
    used_actions: tuple[tuple[str, int], ...],
    accepted_ms: tuple[int, ...],
    action: SpentAction | None,
    now_ms: int,
    policy: IncrementPolicy,
) -> tuple[tuple[tuple[str, int], ...], tuple[int, ...]] | ActionReplayed | RateLimited:
    """The proof-of-action and rate-limit checks of an update at ``now_ms``, on the rings
    it is checked against (any writer's: a user's, or a player's on one board).

    Returns the rings with this update in them, or why it is refused: a spent action
    token (:class:`ActionReplayed`, checked first: a replay is not a new update) or too
    many accepted updates in the window (:class:`RateLimited`).
    """
    used = used_actions
    if action is not None:
        live_exp: list[int] = []
        free = -1
        for slot, (jti, exp) in enumerate(used):
            if exp > now_ms:
                if jti == action.jti:
                    return ActionReplayed()
                live_exp.append(exp)
            elif free < 0:
                free = slot
        if len(live_exp) >= policy.used_actions:
            # Forgetting a live jti would let it be replayed: wait until one expires.
            wait_ms = min(live_exp) - now_ms
            return RateLimited(retry_after_s=max(1, -(-wait_ms // 1000)))
        used = _put(used, free, (action.jti, action.expires_ms))

    accepted: tuple[int, ...] = ()
    if policy.rate_limit_per_minute > 0:
        # Keep "> window_start": an update exactly 60 s old has left the window.
        window_start = now_ms - RATE_WINDOW_MS
        live: list[int] = []
        free = -1
        for slot, t in enumerate(accepted_ms):
            if t > window_start:
                live.append(t)
            elif free < 0:
                free = slot
        if len(live) >= policy.rate_limit_per_minute:
            # The oldest update that must leave the window before one more fits. Sorted,
            # because clocks can step back (NTP, pods' clocks differ): the log need not
            # be in time order. A stepped-back clock can let one extra update into a
            # window; clamping times forward instead could lock a user out for as long
            # as a fast clock was ahead.
            live.sort()
            blocker = live[len(live) - policy.rate_limit_per_minute]
            wait_ms = blocker + RATE_WINDOW_MS - now_ms
            return RateLimited(retry_after_s=max(1, -(-wait_ms // 1000)))
        accepted = _put(accepted_ms, free, now_ms)
    return used, accepted


def _put(ring: tuple[T, ...], slot: int, item: T) -> tuple[T, ...]:
    """``ring`` with ``item`` in ``slot``, or appended when ``slot`` is -1."""
    if slot < 0:
        return (*ring, item)
    return (*ring[:slot], item, *ring[slot + 1 :])


class _Sequenced(Protocol):
    @property
    def seq(self) -> int: ...


S = TypeVar("S", bound=_Sequenced)


def remember(keys: tuple[S, ...], new: S, capacity: int) -> tuple[S, ...]:
    """The last ``capacity`` keys once ``new`` is added: the oldest one's slot is reused."""
    if len(keys) < capacity:
        return (*keys, new)
    if len(keys) == capacity:
        oldest = min(range(capacity), key=lambda slot: keys[slot].seq)
        return _put(keys, oldest, new)
    # More than a smaller policy keeps (written under a larger one): keep the newest.
    newest = sorted(keys, key=lambda k: k.seq)[len(keys) - capacity + 1 :]
    return (*newest, new)


def decide_all(
    record: UserRecord | None, cmds: Sequence[IncrementCommand], policy: IncrementPolicy
) -> tuple[list[Decision], UserRecord | None]:
    """Decide consecutive increments of one user, each on the state the previous ones left.

    Returns each command's decision, and the record to write: the state after the last
    applied one, or ``None`` when none applied (nothing to write). Writing that one record
    is the same as writing each applied record in turn (each later one contains the
    earlier), so a hot user's queued increments cost one write.
    """
    decisions: list[Decision] = []
    current, final = record, None
    for cmd in cmds:
        decision = decide(current, cmd, policy)
        if isinstance(decision, Applied):
            current = final = decision.record
        decisions.append(decision)
    return decisions, final
