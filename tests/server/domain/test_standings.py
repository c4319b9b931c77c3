"""A board's write in every period at once, as data: seasons from the clock, ended ones
kept, operators per period, a pod whose clock is behind, and the season clock's cache."""

from __future__ import annotations

import tomllib
from datetime import datetime
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from server.domain.boards import BoardDefaults, BoardSpec, Standing, next_standing, parse_boards
from server.domain.seasons import season_at, season_named
from server.domain.standings import (
    BoardStandings,
    SeasonClock,
    SeasonStanding,
    standings_after,
)

BERLIN = ZoneInfo("Europe/Berlin")


def board(text: str) -> BoardSpec:
    (spec,) = parse_boards(tomllib.loads(text), BoardDefaults(rate_limit_per_minute=0))
    return spec


KILLS = board(
    """
[boards.kills]
periods = ["all_time", "weekly", "daily"]
timezone = "Europe/Berlin"
keep_seasons = 2
"""
)
LAPS = board(
    """
[boards.laps]
operator = "best"
order = "asc"
min_score = 1
max_score = 100000
periods = ["daily", "all_time"]
timezone = "Europe/Berlin"
"""
)


def at(text: str) -> int:
    """Epoch ms of a wall-clock time in Berlin."""
    return int(datetime.fromisoformat(text).replace(tzinfo=BERLIN).timestamp() * 1000)


def write(spec: BoardSpec, held: BoardStandings, value: int, when: str) -> BoardStandings:
    now = at(when)
    return standings_after(spec, held, value, now, lambda period: season_at(period, now))


def test_one_write_feeds_every_period_and_midnight_starts_a_new_day() -> None:
    held = write(KILLS, BoardStandings(), 3, "2026-12-04T23:59:59")
    held = write(KILLS, held, 4, "2026-12-05T00:00:01")  # Saturday: the same week
    assert [
        (s.period, s.season, s.standing.score if s.standing else None) for s in held.current
    ] == [
        ("all_time", "all", 7),
        ("weekly", "2026-11-30", 7),
        ("daily", "2026-12-05", 4),
    ]
    assert held.ended == (
        SeasonStanding("daily", "2026-12-04", Standing(3, at("2026-12-04T23:59:59"))),
    )
    assert held.in_season("daily", "2026-12-04") == Standing(3, at("2026-12-04T23:59:59"))
    assert held.in_season("daily", "2026-12-03") is None


def test_ended_seasons_are_kept_up_to_keep_seasons_newest_first() -> None:
    held = BoardStandings()
    for day in range(1, 6):  # 1 to 5 December: five days, the first four end
        held = write(KILLS, held, day, f"2026-12-0{day}T12:00:00")
    daily = [s.season for s in held.ended if s.period == "daily"]
    assert daily == ["2026-12-04", "2026-12-03"]  # keep_seasons = 2


def test_best_with_lowest_first_keeps_the_better_time_and_when_it_was_reached() -> None:
    held = write(LAPS, BoardStandings(), 5_000, "2026-12-04T10:00:00")
    held = write(LAPS, held, 6_000, "2026-12-04T11:00:00")  # slower: nothing moves
    held = write(LAPS, held, 5_000, "2026-12-04T12:00:00")  # the same: still 10:00
    assert held.in_season("daily", "2026-12-04") == Standing(5_000, at("2026-12-04T10:00:00"))
    held = write(LAPS, held, 4_000, "2026-12-05T09:00:00")  # a new day starts afresh
    assert held.in_season("daily", "2026-12-05") == Standing(4_000, at("2026-12-05T09:00:00"))
    assert held.in_season("all_time", "all") == Standing(4_000, at("2026-12-05T09:00:00"))


def test_a_write_from_a_pod_whose_clock_is_behind_counts_in_its_own_season() -> None:
    held = write(KILLS, BoardStandings(), 5, "2026-12-05T00:00:01")  # a pod already past midnight
    held = write(KILLS, held, 2, "2026-12-04T23:59:59")  # another, a moment behind
    assert held.in_season("daily", "2026-12-05") == Standing(5, at("2026-12-05T00:00:01"))
    assert held.in_season("daily", "2026-12-04") == Standing(2, at("2026-12-04T23:59:59"))
    assert [s.season for s in held.current if s.period == "daily"] == ["2026-12-05"]
    assert held.in_season("all_time", "all") == Standing(7, at("2026-12-04T23:59:59"))


def test_the_season_clock_computes_a_season_again_only_once_it_ended() -> None:
    clock = SeasonClock()
    daily = KILLS.period("daily")
    assert daily is not None
    first = clock.current(daily, at("2026-12-04T08:00:00"))
    assert clock.current(daily, at("2026-12-04T23:59:59")) is first  # cached
    after = clock.current(daily, at("2026-12-05T00:00:00"))
    assert after.season_id == "2026-12-05" and after is not first
    assert clock.current(daily, at("2026-12-04T12:00:00")).season_id == "2026-12-04"  # back


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 6 * 24 * 3600 * 1000), st.integers(1, 50)),
        min_size=1,
        max_size=20,
    ),
    st.sampled_from([KILLS, LAPS]),
)
def test_each_kept_season_holds_what_its_own_writes_fold_to(
    writes: list[tuple[int, int]], spec: BoardSpec
) -> None:
    start = at("2026-11-28T00:00:00")
    held = BoardStandings()
    clock = SeasonClock()
    for offset, value in sorted(writes):
        now = start + offset
        held = standings_after(spec, held, value, now, clock.at(now))
    for period in spec.periods:
        folded: dict[str, Standing] = {}  # each season's writes, folded by the operator
        for offset, value in sorted(writes):
            season = season_at(period, start + offset).season_id
            folded[season] = next_standing(spec, folded.get(season), value, start + offset)
        assert len([s for s in held.ended if s.period == period.name]) <= spec.keep_seasons
        # The newest seasons (the current one and keep_seasons ended ones) are all there,
        # each exactly; older ones are dropped.
        by_start = sorted(folded, key=lambda s: season_named(period, s).start_ms, reverse=True)
        kept = by_start[: spec.keep_seasons + 1]
        for season, want in folded.items():
            got = held.in_season(period.name, season)
            assert got == (want if season in kept else None), (period.name, season)
        (current,) = [s for s in held.current if s.period == period.name]
        assert current.standing == folded[current.season]
        last = start + max(offset for offset, _ in writes)
        assert current.season == season_at(period, last).season_id  # the last write's
