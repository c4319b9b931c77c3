"""One player's standings on one board, in every period at once: the pure core of a
board's write (issue 14).

An accepted update feeds every period of its board in one atomic write: the record a
store keeps per (board, player) holds, for each period, the standing of the season the
player last scored in (:class:`BoardStandings`). :func:`standings_after` is that write as
data: for each period it finds the season the update belongs to (from the clock alone, so
every pod agrees), starts the player afresh when that season is newer than the one held
(the held standing is kept, read-only, among the ``ended`` ones, at most
``keep_seasons`` per period), and applies the board's operator
(:func:`~server.domain.boards.next_standing`). Nothing here reads a clock or a store.

So a season's standings are, for every player, the standing whose season id is that
season's, whether it is still the player's current one (they have not scored since) or
among their ended ones: an ended season stays readable, ranks included, from the records
alone, with no job at the boundary. A player who never scores again keeps an old current
standing; a bounded background job drops seasons past ``keep_seasons`` (the stores'
``retire_seasons``, by each season's start).

:class:`SeasonClock` caches each period's current season, recomputed only once it ended
(a cron period's season takes about 0.2 ms to compute; an update asks for every period).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from server.domain.boards import BoardSpec, Standing, next_standing
from server.domain.seasons import Period, Season, season_at, season_start


@dataclass(frozen=True, slots=True)
class SeasonStanding:
    """A player's standing in one season of one period."""

    period: str
    season: str
    standing: Standing


@dataclass(frozen=True, slots=True)
class BoardStandings:
    """One player's standings on one board: ``current`` holds, per period, the season the
    player last scored in (at most one per period, in the board's period order);
    ``ended`` the earlier seasons kept readable, newest first within each period."""

    current: tuple[SeasonStanding, ...] = ()
    ended: tuple[SeasonStanding, ...] = ()

    def in_season(self, period: str, season: str) -> Standing | None:
        """The standing in that season of that period, current or ended, or ``None``."""
        for held in (*self.current, *self.ended):
            if held.period == period and held.season == season:
                return held.standing
        return None


SeasonOf = Callable[[Period], Season]


def standings_after(
    spec: BoardSpec,
    held: BoardStandings,
    value: int,
    now_ms: int,
    season_of: SeasonOf,
) -> BoardStandings:
    """The standings after an update of ``value`` accepted at ``now_ms``, in every period.

    ``season_of`` gives a period's season at ``now_ms`` (:meth:`SeasonClock.at`). A held
    standing of an earlier season moves to ``ended``; each period keeps at most
    ``keep_seasons`` ended ones, the newest. A held standing of a *later* season (written
    by a pod whose clock was ahead, at a boundary) stays current, and this update counts
    in the season it was accepted in, among the ended ones: a write belongs to the season
    in which it was accepted.
    """
    current: list[SeasonStanding] = []
    ended = list(held.ended)
    ended_changed = False
    by_period = {s.period: s for s in held.current}
    for period in spec.periods:
        season = season_of(period)
        mine = by_period.get(period.name)
        if mine is not None and mine.season == season.season_id:
            current.append(
                _scored(spec, mine.period, mine.season, mine.standing, value=value, now_ms=now_ms)
            )
        elif mine is None or _start(period, mine.season) < season.start_ms:
            if mine is not None:
                ended.insert(0, mine)  # it is the newest of its period's ended ones
                ended_changed = True
            current.append(
                _scored(spec, period.name, season.season_id, None, value=value, now_ms=now_ms)
            )
        else:
            current.append(mine)
            ended = _with_earlier(spec, period, ended, season, value=value, now_ms=now_ms)
            ended_changed = True
    # A period no longer on the board (the file changed) keeps what it held, unchanged.
    if len(current) < len(held.current) or any(spec.period(p) is None for p in by_period):
        names = {p.name for p in spec.periods}
        current += [s for s in held.current if s.period not in names]
    if not ended_changed:  # the common case: no season ended, none to drop
        return BoardStandings(tuple(current), held.ended)
    return BoardStandings(tuple(current), _kept(spec, ended))


class SeasonClock:
    """Each period's current season, computed again only once it ended (or the clock went
    back before its start)."""

    def __init__(self) -> None:
        # By the period object's identity (each write asks for each period of its board:
        # hashing a Period's fields, its zone included, cost more than the rest of the
        # lookup); the period is kept beside its season, so an id is never reused.
        self._seasons: dict[int, tuple[Period, Season]] = {}

    def current(self, period: Period, now_ms: int) -> Season:
        """``period``'s season at ``now_ms``."""
        held = self._seasons.get(id(period))
        if held is not None and held[0] is period:
            season = held[1]
            if season.start_ms <= now_ms and (season.end_ms is None or now_ms < season.end_ms):
                return season
        season = season_at(period, now_ms)
        self._seasons[id(period)] = (period, season)
        return season

    def at(self, now_ms: int) -> SeasonOf:
        """The seasons at ``now_ms``, as :func:`standings_after` asks for them."""
        return lambda period: self.current(period, now_ms)


def _scored(
    spec: BoardSpec,
    period: str,
    season: str,
    held: Standing | None,
    *,
    value: int,
    now_ms: int,
) -> SeasonStanding:
    """The standing in ``season`` once ``value`` is applied to ``held`` (None: none yet)."""
    return SeasonStanding(period, season, next_standing(spec, held, value, now_ms))


def _start(period: Period, season_id: str) -> int:
    """The start of ``period``'s season ``season_id`` (ids are compared by their starts:
    a cron id with an offset does not sort as text)."""
    return season_start(period, season_id)


def _with_earlier(
    spec: BoardSpec,
    period: Period,
    ended: list[SeasonStanding],
    season: Season,
    *,
    value: int,
    now_ms: int,
) -> list[SeasonStanding]:
    """``ended`` with the update counted in ``season``, an earlier one than the current,
    kept in order (newest first within the period)."""
    earlier = next(
        (s for s in ended if s.period == period.name and s.season == season.season_id), None
    )
    others = [s for s in ended if s is not earlier]
    held = None if earlier is None else earlier.standing
    updated = _scored(spec, period.name, season.season_id, held, value=value, now_ms=now_ms)
    mine = sorted(
        [s for s in others if s.period == period.name] + [updated],
        key=lambda s: _start(period, s.season),
        reverse=True,
    )
    return [s for s in others if s.period != period.name] + mine


def _kept(spec: BoardSpec, ended: Iterable[SeasonStanding]) -> tuple[SeasonStanding, ...]:
    """At most ``keep_seasons`` ended standings per period, the first ones (newest)."""
    counts: dict[str, int] = {}
    kept = []
    for held in ended:
        counts[held.period] = counts.get(held.period, 0) + 1
        if counts[held.period] <= spec.keep_seasons:
            kept.append(held)
    return tuple(kept)
