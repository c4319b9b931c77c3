"""Periods and seasons, computed from the clock alone: local days, weeks and months in an
IANA zone (daylight saving included), cron seasons, season ids and their round trip."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.domain.seasons import (
    BUILTIN_PERIODS,
    WEEKDAYS,
    Period,
    PeriodKind,
    Season,
    SeasonError,
    cron_problem,
    previous_seasons,
    season_after,
    season_at,
    season_named,
)


def at(moment: str) -> int:
    """UTC epoch milliseconds of an ISO 8601 time with its offset."""
    parsed = datetime.fromisoformat(moment)
    assert parsed.tzinfo is not None, moment
    return int(parsed.timestamp() * 1000)


def period(
    kind: PeriodKind, zone: str = "Europe/Berlin", week_starts: str = "monday", cron: str = ""
) -> Period:
    name = "cup" if kind == "cron" else kind
    return Period(name, kind, ZoneInfo(zone), WEEKDAYS.index(week_starts), cron or None)


def season(name: str, season_id: str, start: str, end: str) -> Season:
    return Season(name, season_id, at(start), at(end))


# (period, an instant) -> the season that holds it: id, start and end as local times.
CASES = [
    pytest.param(
        period("daily"),
        "2026-12-03T23:59:59.999+01:00",
        season("daily", "2026-12-03", "2026-12-03T00:00+01:00", "2026-12-04T00:00+01:00"),
        id="daily: the last millisecond before local midnight",
    ),
    pytest.param(
        period("daily"),
        "2026-12-04T00:00+01:00",  # 23:00 UTC: the same UTC date as the row above
        season("daily", "2026-12-04", "2026-12-04T00:00+01:00", "2026-12-05T00:00+01:00"),
        id="daily: local midnight starts the next day",
    ),
    pytest.param(
        period("daily"),
        "2026-03-29T12:00+02:00",
        season("daily", "2026-03-29", "2026-03-29T00:00+01:00", "2026-03-30T00:00+02:00"),
        id="daily: Berlin's spring-forward day lasts 23 hours",
    ),
    pytest.param(
        period("daily"),
        "2026-10-25T02:30+01:00",  # the second 02:30 of the night
        season("daily", "2026-10-25", "2026-10-25T00:00+02:00", "2026-10-26T00:00+01:00"),
        id="daily: Berlin's fall-back day lasts 25 hours",
    ),
    pytest.param(
        period("daily", "America/Santiago"),
        "2026-09-05T23:59:59.999-04:00",
        season("daily", "2026-09-05", "2026-09-05T00:00-04:00", "2026-09-06T01:00-03:00"),
        id="daily: Santiago skips midnight, the day before ends at the jump",
    ),
    pytest.param(
        period("daily", "America/Santiago"),
        "2026-09-06T12:00-03:00",
        season("daily", "2026-09-06", "2026-09-06T01:00-03:00", "2026-09-07T00:00-03:00"),
        id="daily: Santiago's day without a midnight starts at 01:00",
    ),
    pytest.param(
        period("daily", "America/Havana"),
        "2026-03-08T01:00-04:00",  # 00:00 -05:00 becomes 01:00 -04:00
        season("daily", "2026-03-08", "2026-03-08T01:00-04:00", "2026-03-09T00:00-04:00"),
        id="daily: Havana's day without a midnight starts at 01:00",
    ),
    pytest.param(
        period("daily", "America/Havana"),
        "2026-11-01T00:30-05:00",  # the second 00:30 of that night
        season("daily", "2026-11-01", "2026-11-01T00:00-04:00", "2026-11-02T00:00-05:00"),
        id="daily: Havana's day with two midnights starts at the first",
    ),
    pytest.param(
        period("daily", "America/Toronto"),
        "1919-03-31T00:45-04:00",  # the clocks jumped from 23:30 to 00:30
        season("daily", "1919-03-31", "1919-03-31T00:30-04:00", "1919-04-01T00:00-04:00"),
        id="daily: a jump across midnight, the day starts where the clocks land",
    ),
    pytest.param(
        period("daily", "Pacific/Apia"),
        "2011-12-29T23:59:59.999-10:00",
        season("daily", "2011-12-29", "2011-12-29T00:00-10:00", "2011-12-31T00:00+14:00"),
        id="daily: Apia skipped 30 December 2011, the day before ends where the 31st starts",
    ),
    pytest.param(
        period("daily", "America/Sitka"),
        "1867-10-18T20:00-09:01:13",  # Alaska turned its clocks back a day: 18 October again
        season("daily", "1867-10-19", "1867-10-19T00:00+14:58:47", "1867-10-20T00:00-09:01:13"),
        id="daily: a date shown again after the next one started belongs to the next",
    ),
    pytest.param(
        period("weekly"),
        "2026-03-29T12:00+02:00",
        season("weekly", "2026-03-23", "2026-03-23T00:00+01:00", "2026-03-30T00:00+02:00"),
        id="weekly: the week of spring-forward lasts 167 hours",
    ),
    pytest.param(
        period("weekly"),
        "2026-10-25T12:00+01:00",
        season("weekly", "2026-10-19", "2026-10-19T00:00+02:00", "2026-10-26T00:00+01:00"),
        id="weekly: the week of fall-back lasts 169 hours",
    ),
    pytest.param(
        period("weekly"),
        "2026-12-06T12:00+01:00",  # a Sunday
        season("weekly", "2026-11-30", "2026-11-30T00:00+01:00", "2026-12-07T00:00+01:00"),
        id="weekly: weeks starting on Monday hold the Sunday after",
    ),
    pytest.param(
        period("weekly", week_starts="sunday"),
        "2026-12-05T23:59:59.999+01:00",  # a Saturday
        season("weekly", "2026-11-29", "2026-11-29T00:00+01:00", "2026-12-06T00:00+01:00"),
        id="weekly: weeks starting on Sunday end on Saturday night",
    ),
    pytest.param(
        period("weekly", week_starts="sunday"),
        "2026-12-06T00:00+01:00",
        season("weekly", "2026-12-06", "2026-12-06T00:00+01:00", "2026-12-13T00:00+01:00"),
        id="weekly: weeks starting on Sunday start on Sunday",
    ),
    pytest.param(
        period("monthly"),
        "2026-12-31T23:59:59.999+01:00",
        season("monthly", "2026-12", "2026-12-01T00:00+01:00", "2027-01-01T00:00+01:00"),
        id="monthly: December ends at the new year",
    ),
    pytest.param(
        period("monthly"),
        "2027-01-01T00:00+01:00",
        season("monthly", "2027-01", "2027-01-01T00:00+01:00", "2027-02-01T00:00+01:00"),
        id="monthly: January starts at the new year",
    ),
    pytest.param(
        period("monthly"),
        "2028-02-29T23:59:59.999+01:00",
        season("monthly", "2028-02", "2028-02-01T00:00+01:00", "2028-03-01T00:00+01:00"),
        id="monthly: a leap February holds its 29th",
    ),
    pytest.param(
        period("monthly"),
        "2026-03-15T12:00+01:00",
        season("monthly", "2026-03", "2026-03-01T00:00+01:00", "2026-04-01T00:00+02:00"),
        id="monthly: a month across spring-forward",
    ),
    pytest.param(
        period("cron", cron="0 0 1 * *"),
        "2026-12-01T00:00+01:00",
        season("cup", "2026-12-01T00:00", "2026-12-01T00:00+01:00", "2027-01-01T00:00+01:00"),
        id="cron: an instant on a start belongs to the new season",
    ),
    pytest.param(
        period("cron", cron="0 0 1 * *"),
        "2026-11-30T23:59:59.999+01:00",
        season("cup", "2026-11-01T00:00", "2026-11-01T00:00+01:00", "2026-12-01T00:00+01:00"),
        id="cron: the millisecond before a start belongs to the old season",
    ),
    pytest.param(
        period("cron", "Asia/Tokyo", cron="0 18 * * fri"),
        "2026-12-04T17:59+09:00",
        season("cup", "2026-11-27T18:00", "2026-11-27T18:00+09:00", "2026-12-04T18:00+09:00"),
        id="cron: on the zone's wall clock, Friday 18:00 in Tokyo",
    ),
    pytest.param(
        period("cron", cron="30 * * * *"),
        "2026-10-25T02:45+02:00",
        season("cup", "2026-10-25T02:30", "2026-10-25T02:30+02:00", "2026-10-25T02:30+01:00"),
        id="cron: the first of two 02:30 starts at fall-back",
    ),
    pytest.param(
        period("cron", cron="30 * * * *"),
        "2026-10-25T02:45+01:00",
        season("cup", "2026-10-25T02:30+01:00", "2026-10-25T02:30+01:00", "2026-10-25T03:30+01:00"),
        id="cron: the second 02:30 is a season of its own, its id carries the offset",
    ),
    pytest.param(
        period("cron", cron="30 2 * * *"),
        "2026-03-29T12:00+02:00",
        season("cup", "2026-03-29T03:00", "2026-03-29T03:00+02:00", "2026-03-30T02:30+02:00"),
        id="cron: a start in the skipped hour moves to the end of the gap",
    ),
    pytest.param(
        period("cron", "UTC", cron="0 0 29 2 *"),
        "2026-06-01T00:00Z",
        season("cup", "2024-02-29T00:00", "2024-02-29T00:00Z", "2028-02-29T00:00Z"),
        id="cron: a season from one 29 February to the next",
    ),
]


@pytest.mark.parametrize(("of", "when", "expected"), CASES)
def test_the_season_of_an_instant(of: Period, when: str, expected: Season) -> None:
    found = season_at(of, at(when))
    assert found == expected
    assert found.contains(at(when))
    assert season_named(of, expected.season_id) == expected


def test_writes_either_side_of_local_midnight_land_in_different_daily_seasons() -> None:
    berlin, utc = period("daily"), period("daily", "UTC")
    before, after = at("2026-12-03T22:59:59.999Z"), at("2026-12-03T23:00Z")
    assert season_at(berlin, before).season_id == "2026-12-03"
    assert season_at(berlin, after).season_id == "2026-12-04"
    # The same two instants share a day in UTC: the zone, not UTC, cuts the days.
    assert season_at(utc, before) == season_at(utc, after)


def test_all_time_is_one_season_that_never_ends() -> None:
    all_time = period("all_time")
    only = Season("all_time", "all", 0, None)
    assert season_at(all_time, at("2026-12-04T12:00Z")) == only
    assert season_named(all_time, "all") == only
    assert only.contains(at("2999-01-01T00:00Z"))
    assert season_after(all_time, only) is None
    assert previous_seasons(all_time, only, 8) == []


def test_a_season_is_half_open() -> None:
    december = season_at(period("monthly"), at("2026-12-15T12:00+01:00"))
    assert december.end_ms is not None
    assert december.contains(december.start_ms)
    assert december.contains(december.end_ms - 1)
    assert not december.contains(december.end_ms)
    assert not december.contains(december.start_ms - 1)


def test_previous_seasons_are_newest_first_and_contiguous() -> None:
    weekly = period("weekly")
    current = season_at(weekly, at("2026-04-01T12:00+02:00"))
    older = previous_seasons(weekly, current, 3)
    assert [s.season_id for s in older] == ["2026-03-23", "2026-03-16", "2026-03-09"]
    assert [s.end_ms for s in older] == [current.start_ms, older[0].start_ms, older[1].start_ms]
    assert previous_seasons(weekly, current, 0) == []


def test_previous_cron_seasons_count_both_starts_of_a_repeated_hour() -> None:
    hourly = period("cron", cron="30 * * * *")
    current = season_at(hourly, at("2026-10-25T03:45+01:00"))
    ids = [s.season_id for s in previous_seasons(hourly, current, 3)]
    assert ids == ["2026-10-25T02:30+01:00", "2026-10-25T02:30", "2026-10-25T01:30"]


def test_the_season_after_starts_where_this_one_ends() -> None:
    daily = period("daily", "America/Santiago")
    saturday = season_at(daily, at("2026-09-05T12:00-04:00"))
    sunday = season_after(daily, saturday)
    assert sunday is not None
    assert (sunday.season_id, sunday.start_ms) == ("2026-09-06", saturday.end_ms)


@pytest.mark.parametrize(
    ("of", "season_id"),
    [
        pytest.param(period("daily"), "2026-12-4", id="daily: not zero-padded"),
        pytest.param(period("daily"), "2026-02-30", id="daily: no such date"),
        pytest.param(period("daily"), " 2026-12-04", id="daily: padded with a space"),
        pytest.param(period("daily"), "2026-12", id="daily: a month id"),
        pytest.param(period("daily"), "\uff12\uff10\uff12\uff16-12-04", id="daily: wide digits"),
        pytest.param(period("daily", "Pacific/Apia"), "2011-12-30", id="daily: a skipped date"),
        pytest.param(period("weekly"), "2026-12-01", id="weekly: a Tuesday"),
        pytest.param(period("weekly", week_starts="sunday"), "2026-11-30", id="weekly: a Monday"),
        pytest.param(period("monthly"), "2026-13", id="monthly: no 13th month"),
        pytest.param(period("monthly"), "2026-12-01", id="monthly: a date"),
        pytest.param(period("all_time"), "ALL", id="all_time: another spelling"),
        pytest.param(period("cron", cron="0 0 1 * *"), "2026-12-02T00:00", id="cron: not a start"),
        pytest.param(
            period("cron", cron="0 0 1 * *"), "2026-12-01T00:00:00", id="cron: with seconds"
        ),
        pytest.param(
            period("cron", cron="0 0 1 * *"),
            "2026-12-01T00:00+01:00",
            id="cron: an offset where the wall time is not repeated",
        ),
        pytest.param(
            period("cron", cron="30 * * * *"),
            "2026-10-25T02:30+02:00",
            id="cron: the first of a repeated wall time spelled with its offset",
        ),
        pytest.param(
            period("cron", cron="30 2 * * *"),
            "2026-03-29T02:30",
            id="cron: a start that the clocks skipped",
        ),
        pytest.param(
            period("cron", cron="0 0 1 * *"),
            "2026-12-01T00:00+25:00",
            id="cron: an offset out of range",
        ),
        pytest.param(period("daily"), "9999-12-31", id="daily: its end is out of range"),
    ],
)
def test_an_id_that_names_no_season_start_is_refused(of: Period, season_id: str) -> None:
    with pytest.raises(SeasonError, match="is not a season of period"):
        season_named(of, season_id)


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("0 0 1 * *", None),
        ("0 18 * * fri", None),
        ("0 0 L * *", None),
        ("0 0 * * mon#2", None),
        ("*/15 9-17 * * 1-5", None),
        ("0 0 1 * * 0", "is not a cron expression of 5 fields"),
        ("0 0 1 *", "is not a cron expression of 5 fields"),
        ("@monthly", "is not a cron expression of 5 fields"),
        ("0\n0 1 * *", "is not a cron expression of 5 fields"),
        ("0 0 1 * *\u00a0", "is not a cron expression of 5 fields"),
        ("H 0 * * *", "H and R fields are not allowed"),
        ("0 R * * *", "H and R fields are not allowed"),
        ("0 0 1,h(1-5) * *", "H and R fields are not allowed"),
        ("0 0 * * 8", "is not a valid cron expression"),
        ("0 0 1 foo *", "is not a valid cron expression"),
        ("0 0 31 2 *", "never fires"),
    ],
)
def test_cron_expressions_a_period_accepts(expression: str, problem: str | None) -> None:
    found = cron_problem(expression)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found and "\n" not in found


ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/Santiago",
    "America/Havana",
    "Pacific/Apia",
    "Australia/Lord_Howe",  # a 30-minute daylight-saving shift
    "Asia/Kathmandu",  # +05:45
    "America/St_Johns",  # -03:30, with daylight saving
]
CRONS = ["0 0 1 * *", "30 2 * * *", "30 * * * *", "0 18 * * fri", "*/20 1-3 * * *"]


@st.composite
def periods(draw: st.DrawFn) -> Period:
    kind: PeriodKind = draw(st.sampled_from([*BUILTIN_PERIODS, "cron"]))
    return period(
        kind,
        draw(st.sampled_from(ZONES)),
        draw(st.sampled_from(WEEKDAYS)),
        draw(st.sampled_from(CRONS)) if kind == "cron" else "",
    )


instants = st.integers(min_value=at("1990-01-01T00:00Z"), max_value=at("2100-01-01T00:00Z"))


@settings(max_examples=300, deadline=None)
@given(periods(), instants)
def test_seasons_tile_time_and_their_ids_name_them(of: Period, when: int) -> None:
    found = season_at(of, when)
    assert found.contains(when)
    assert season_named(of, found.season_id) == found
    if found.end_ms is not None:
        assert found.start_ms < found.end_ms
        following = season_after(of, found)
        assert following is not None and following.start_ms == found.end_ms
        (before,) = previous_seasons(of, found, 1)
        assert before.end_ms == found.start_ms and before.season_id != found.season_id
        assert season_at(of, found.start_ms) == found
        assert season_at(of, found.end_ms - 1) == found
