"""The pure rule that turns a user's stored state and an increment into a decision.

Both store adapters run this same function inside one atomic operation (a SQLite
transaction, or a compare-and-set on the MongoDB document's version), so the
increment, the idempotency check and the rate limit are applied together or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from server.store.records import (
    ActionReplayed,
    Applied,
    Banned,
    Decision,
    IncrementCommand,
    RateLimited,
    Replayed,
    UserRecord,
)

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

    Returns:
        :class:`Applied` with the new record to store, or :class:`Replayed`,
        :class:`ActionReplayed` or :class:`RateLimited`, which mean "store nothing".
    """
    if record is not None and record.banned:
        return Banned()
    if record is not None and cmd.idempotency_key is not None:
        for key, score in record.recent_keys:
            if key == cmd.idempotency_key:
                return Replayed(new_score=score)

    # Spent action tokens, kept until they expire. A replay is refused before the rate
    # limit is consulted: it is not a new update either.
    used = tuple(
        (jti, exp) for jti, exp in (record.used_actions if record else ()) if exp > cmd.now_ms
    )
    if cmd.action is not None:
        if any(jti == cmd.action.jti for jti, _ in used):
            return ActionReplayed()
        if len(used) >= policy.used_actions:
            # Forgetting a live jti would let it be replayed: wait until one expires.
            soonest = min(exp for _, exp in used)
            return RateLimited(retry_after_s=max(1, -(-(soonest - cmd.now_ms) // 1000)))
        used = (*used, (cmd.action.jti, cmd.action.expires_ms))

    accepted: tuple[int, ...] = ()
    if policy.rate_limit_per_minute > 0:
        previous = record.accepted_ms if record is not None else ()
        now_ms = cmd.now_ms
        window_start = now_ms - RATE_WINDOW_MS
        # Keep "> window_start": an update exactly 60 s old has left the window. Sorted,
        # because clocks can step back (NTP, pods' clocks differ): a log in arrival order
        # may then be out of time order. A stepped-back clock can let one extra update
        # into a window; clamping times forward instead could lock a user out for as long
        # as a fast clock was ahead.
        accepted = tuple(sorted(t for t in previous if t > window_start))
        if len(accepted) >= policy.rate_limit_per_minute:
            # The oldest update that must leave the window before one more fits.
            blocker = accepted[len(accepted) - policy.rate_limit_per_minute]
            wait_ms = blocker + RATE_WINDOW_MS - now_ms
            return RateLimited(retry_after_s=max(1, -(-wait_ms // 1000)))
        accepted = (*accepted, now_ms)

    old_score = record.score if record is not None else 0
    new_score = old_score + cmd.amount
    keys = record.recent_keys if record is not None else ()
    if cmd.idempotency_key is not None and policy.idempotency_keys > 0:
        keys = (*keys, (cmd.idempotency_key, new_score))[-policy.idempotency_keys :]
    return Applied(
        UserRecord(
            user_id=cmd.user_id,
            username=cmd.username,
            score=new_score,
            v=(record.v if record is not None else 0) + 1,
            reached_ms=cmd.now_ms,
            recent_keys=keys,
            accepted_ms=accepted,
            used_actions=used,
        )
    )


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
