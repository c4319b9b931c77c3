"""A board's write as data: one player's record on one board, and what an update does to it.

A store keeps one record per (board, player) (:class:`BoardRecord`): the player's
standings in every period (:class:`~server.domain.standings.BoardStandings`) and the
rings that make an update safe to repeat and bounded in rate on that board, as a user's
record does for the original board (:mod:`server.domain.increments`, whose checks this
reuses). :func:`decide_board` is the whole write: both store adapters run it inside one
atomic operation, so an accepted update feeds every period of its board together, or
nothing is written.

What is checked, in order (the same order as the original board's):

1. an ``Idempotency-Key`` seen on this board answers what its first request answered
   (:class:`BoardReplayed`), or :class:`~server.domain.records.KeyReused` for another
   request under the same key;
2. a proof-of-action token already spent, on ANY board, is refused
   (:class:`~server.domain.records.ActionReplayed`): the store says whether the ``jti``
   is spent (``jti_spent``), since spent tokens are kept across boards;
3. the board's rate limit (per player and board);
4. then every period's standing moves (:func:`~server.domain.standings.standings_after`).

A ban is the store's to check (it holds on every board).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from server.domain.boards import BoardSpec
from server.domain.increments import IncrementPolicy, admit, key_seen, remember
from server.domain.records import (
    ActionReplayed,
    BoardRow,
    KeyReused,
    RateLimited,
    SpentAction,
)
from server.domain.seasons import season_start
from server.domain.standings import BoardStandings, SeasonClock, SeasonStanding, standings_after


class BoardKey(NamedTuple):
    """An idempotency key a player sent to one board, with the scores its update left in
    each period (in the board's period order) and its ``seq`` (the record's version after
    it; the oldest is forgotten first)."""

    key: str
    scores: tuple[int, ...]
    seq: int
    fingerprint: str | None = None


@dataclass(frozen=True, slots=True)
class BoardRecord:
    """One player's stored state on one board. ``v`` grows by one on every write, as a
    user's does (readers drop older events by it). ``accepted_ms`` is the board's
    rate-limit log; ``recent_keys`` its idempotency keys."""

    board: str
    user_id: str
    username: str
    v: int
    standings: BoardStandings
    recent_keys: tuple[BoardKey, ...] = ()
    accepted_ms: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class BoardCommand:
    """A validated update of ``value`` (the increment, or the score) to one board at
    ``now_ms``. ``action``: the proof-of-action token it spends; ``fingerprint``: what
    the request asks for, kept with its ``idempotency_key``."""

    board: str
    user_id: str
    username: str
    value: int
    now_ms: int
    idempotency_key: str | None = None
    action: SpentAction | None = None
    fingerprint: str | None = None


@dataclass(frozen=True, slots=True)
class BoardApplied:
    """The update was applied; ``record`` is the player's state on the board after it."""

    record: BoardRecord


@dataclass(frozen=True, slots=True)
class BoardReplayed:
    """The idempotency key was seen on this board: nothing changed; ``scores`` (one per
    period, in the board's order) are what the first request left."""

    scores: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class BoardBanned:
    """The player is banned: their updates are refused on every board."""


BoardDecision = (
    BoardApplied | BoardReplayed | KeyReused | RateLimited | ActionReplayed | BoardBanned
)


@dataclass(frozen=True, slots=True)
class BoardRules:
    """What a store needs to decide one board's writes: its spec, each period's current
    season (from the clock), and its limits."""

    spec: BoardSpec
    seasons: SeasonClock
    idempotency_keys: int = 64
    policy: IncrementPolicy = field(init=False)

    def __post_init__(self) -> None:
        policy = IncrementPolicy(
            rate_limit_per_minute=self.spec.rate_limit_per_minute,
            idempotency_keys=self.idempotency_keys,
        )
        object.__setattr__(self, "policy", policy)  # frozen: set once, here


def decide_board(
    record: BoardRecord | None, cmd: BoardCommand, rules: BoardRules, *, jti_spent: bool = False
) -> BoardDecision:
    """What ``cmd`` does to ``record`` (``None``: the player has none on this board yet).

    ``jti_spent``: the store found ``cmd.action``'s token already spent (on any board).
    """
    if record is not None and cmd.idempotency_key is not None:
        seen = key_seen(record.recent_keys, cmd.idempotency_key, cmd.fingerprint)
        if isinstance(seen, KeyReused):
            return seen
        if seen is not None:
            return BoardReplayed(seen.scores)
    if jti_spent:
        return ActionReplayed()
    policy = rules.policy
    guarded = admit((), record.accepted_ms if record is not None else (), None, cmd.now_ms, policy)
    if isinstance(guarded, ActionReplayed | RateLimited):
        return guarded
    _, accepted = guarded
    spec = rules.spec
    held = record.standings if record is not None else BoardStandings()
    standings = standings_after(spec, held, cmd.value, cmd.now_ms, rules.seasons.at(cmd.now_ms))
    v = (record.v if record is not None else 0) + 1
    keys = record.recent_keys if record is not None else ()
    if cmd.idempotency_key is not None and policy.idempotency_keys > 0:
        scores = landed_scores(spec, standings, rules.seasons, cmd.now_ms)
        keys = remember(
            keys, BoardKey(cmd.idempotency_key, scores, v, cmd.fingerprint), policy.idempotency_keys
        )
    return BoardApplied(
        BoardRecord(
            board=spec.id,
            user_id=cmd.user_id,
            username=cmd.username,
            v=v,
            standings=standings,
            recent_keys=keys,
            accepted_ms=accepted,
        )
    )


def decide_board_all(
    record: BoardRecord | None,
    cmds: Sequence[BoardCommand],
    rules: BoardRules,
    *,
    spent: frozenset[str] = frozenset(),
) -> tuple[list[BoardDecision], BoardRecord | None, list[SpentAction]]:
    """Decide consecutive updates of one player on one board, each on the state the
    previous ones left (as :func:`server.domain.increments.decide_all` does).

    ``spent``: the ``jti`` s among ``cmds``' tokens the store found spent. Returns each
    decision, the record to write (``None``: none applied) and the tokens the applied
    updates spend (to record as spent in the same write).
    """
    decisions: list[BoardDecision] = []
    current, final = record, None
    used = set(spent)
    spending: list[SpentAction] = []
    for cmd in cmds:
        jti = cmd.action.jti if cmd.action is not None else None
        decision = decide_board(current, cmd, rules, jti_spent=jti is not None and jti in used)
        if isinstance(decision, BoardApplied):
            current = final = decision.record
            if cmd.action is not None:
                used.add(cmd.action.jti)
                spending.append(cmd.action)
        decisions.append(decision)
    return decisions, final, spending


def landed_scores(
    spec: BoardSpec, standings: BoardStandings, seasons: SeasonClock, now_ms: int
) -> tuple[int, ...]:
    """The score in each period (the board's order) of the season an update accepted at
    ``now_ms`` landed in: the current one, or, from a pod whose clock is behind at a
    boundary, the one before."""
    scores = []
    for period in spec.periods:
        held = standings.in_season(period.name, seasons.current(period, now_ms).season_id)
        scores.append(held.score if held is not None else 0)
    return tuple(scores)


def row_of(spec: BoardSpec, record: BoardRecord, held: SeasonStanding) -> BoardRow:
    """``held`` as a row of its season's ranking."""
    return BoardRow(
        record.user_id,
        record.username,
        held.standing.score,
        held.standing.reached_ms,
        record.v,
        spec.order == "asc",
    )


def board_season_start(spec: BoardSpec | None, period_name: str, season_id: str) -> int:
    """The start of a season of ``spec``'s period, for its stored rows (retirement
    deletes by it); 0 for a period the board no longer names, or an id of an earlier
    schedule (their standings then stay findable). Both stores use it."""
    period = spec.period(period_name) if spec is not None else None
    if period is None:
        return 0
    return season_start(period, season_id)  # remembered (lru_cache) by the seasons module
