"""Periods and seasons: which window of a board's time an instant belongs to, from the clock.

A board keeps its standings per *period* (``all_time``, ``daily``, ``weekly``, ``monthly``,
or a named cron schedule), and a period is cut into *seasons*: today, this week, this month,
the cup that started on the 1st. A write belongs to the season that holds the instant it
was accepted. Every function here is a pure function of the period and an instant, so
every pod computes the same seasons without a coordinator: nothing is stored, nothing is
scheduled, and a season "starts" when the clock reaches it.

Seasons are half-open, ``start_ms <= t < end_ms``, and contiguous: a season ends exactly
where the next starts, so an instant on a boundary belongs to the NEW season.

Calendar periods follow the board's IANA timezone. A day is the time its local date is
shown on the zone's clocks, so it is 23 or 25 hours long on the days the clocks change.
Its start is the first instant of the local date: local midnight, or, where the clocks
skip midnight (America/Santiago in September, America/Havana in March: 00:00 becomes
01:00), the instant they jump to; where midnight happens twice (America/Havana in
November: 01:00 becomes 00:00) the first of the two. A date a zone skips altogether
(Pacific/Apia, 30 December 2011) has no season: the day before ends where the day after
starts. A week starts on the board's ``week_starts`` day; a month on its 1st.

Cron periods (``croniter``, five fields: minute hour day-of-month month day-of-week) name
the START of each season, read on the zone's wall clock; a season lasts until the next
start. A start in a skipped hour moves to the end of the gap (croniter's rule); a start in
a repeated hour happens twice, and the second is a season of its own.

Season ids are the season's start on the zone's wall clock: ``2026-12-04`` (daily),
``2026-11-30`` (weekly: the first day), ``2026-12`` (monthly), ``2026-12-01T00:00``
(cron; when that wall time also names an earlier instant, the repeated hour of a
fall-back, the UTC offset follows: ``2026-10-25T02:30+01:00``), ``all`` (all_time).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone
from functools import lru_cache
from typing import Final, Literal
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, CroniterError, croniter

PeriodKind = Literal["all_time", "daily", "weekly", "monthly", "cron"]

# The built-in periods, by name (a cron period has a name of its own).
BUILTIN_PERIODS: Final[tuple[PeriodKind, ...]] = ("all_time", "daily", "weekly", "monthly")
WEEKDAYS: Final = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
ALL_TIME_ID: Final = "all"
ALL_TIME_START_MS: Final = 0

_ID_EXAMPLES: Final[dict[PeriodKind, str]] = {
    "all_time": ALL_TIME_ID,
    "daily": "2026-12-04",
    "weekly": "2026-11-30",
    "monthly": "2026-12",
    "cron": "2026-12-01T00:00",
}
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)
_DATE_ID: Final = re.compile(r"(\d{4})-(\d{2})-(\d{2})", re.ASCII)
_MONTH_ID: Final = re.compile(r"(\d{4})-(\d{2})", re.ASCII)
_CRON_ID: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?:([+-])(\d{2}):(\d{2}))?", re.ASCII
)
# Five fields of cron's characters; names (jan, mon) and L, W, # are croniter's to check.
_CRON_FIELDS: Final = re.compile(r"[A-Za-z0-9*,/#?()-]+(?: +[A-Za-z0-9*,/#?()-]+){4}", re.ASCII)
# croniter's H (hashed) and R (random) draw a value per process: pods would disagree.
_DRAWN_VALUE: Final = re.compile(r"[hr](?:$|[(/])", re.ASCII | re.IGNORECASE)


class SeasonError(ValueError):
    """A season id that is malformed, or is not the start of a season of its period."""


@dataclass(frozen=True, slots=True)
class Period:
    """One period of a board: how its time is cut into seasons.

    ``week_starts`` is an index into :data:`WEEKDAYS` (0: Monday); it matters to
    ``weekly`` only. ``cron`` is set for, and only for, ``kind == "cron"``. Build cron
    periods from an expression :func:`cron_problem` accepted.
    """

    name: str
    kind: PeriodKind
    zone: ZoneInfo
    week_starts: int = 0
    cron: str | None = None


@dataclass(frozen=True, slots=True)
class Season:
    """One season of a period: ``start_ms <= t < end_ms`` (UTC epoch milliseconds).

    ``end_ms`` is ``None`` for ``all_time``, the one season that never ends.
    """

    period: str
    season_id: str
    start_ms: int
    end_ms: int | None

    def contains(self, when_ms: int) -> bool:
        """Whether ``when_ms`` is in this season (a boundary is the next season's)."""
        return self.start_ms <= when_ms and (self.end_ms is None or when_ms < self.end_ms)


def cron_problem(expression: str) -> str | None:
    """What is wrong with a cron period's expression, or ``None`` when it will do.

    Accepted: five fields (minute hour day-of-month month day-of-week) that fire at least
    once. Refused: seconds or years fields (season ids name minutes), and croniter's
    ``H`` and ``R``, which draw a value per process where every pod must agree.
    """
    if not _CRON_FIELDS.fullmatch(expression):
        return (
            f"{expression!r} is not a cron expression of 5 fields "
            "(minute hour day-of-month month day-of-week)"
        )
    for field in expression.split():
        if any(_DRAWN_VALUE.match(part) for part in field.split(",")):
            return f"{expression!r}: H and R fields are not allowed (every pod must agree)"
    try:
        croniter(expression, _EPOCH, ret_type=datetime).get_next(datetime)
    except CroniterBadDateError:  # 31 February: croniter looks ahead for years, in vain
        return f"{expression!r} never fires"
    except CroniterError as exc:
        problem = " ".join(str(exc).split()) or type(exc).__name__  # on one line
        return f"{expression!r} is not a valid cron expression: {problem}"
    return None


def season_at(period: Period, when_ms: int) -> Season:
    """The season of ``period`` that holds the instant ``when_ms`` (UTC epoch ms)."""
    if period.kind == "all_time":
        return Season(period.name, ALL_TIME_ID, ALL_TIME_START_MS, None)
    if period.kind == "cron":
        return _cron_season_at(period, when_ms)
    first = _first_day(period, _local(when_ms, period.zone).date())
    start = _day_start_ms(first, period.zone)
    after = _following_day(period, first)
    end = _day_start_ms(after, period.zone)
    # A date shown again after its successor's start (the clocks moved back across
    # midnight) belongs to the successor's season: seasons are cut by start instants.
    while end <= when_ms:
        first, start, after = after, end, _following_day(period, after)
        end = _day_start_ms(after, period.zone)
    return Season(period.name, _calendar_id(period, first), start, end)


def season_named(period: Period, season_id: str) -> Season:
    """The season of ``period`` whose id is ``season_id``.

    Raises:
        SeasonError: the id is malformed, or names no season start of this period (a
            weekly id on another day than the week's first, a date the zone skipped, a
            cron time the schedule does not fire at).
    """
    season = None
    try:
        start_ms = _start_named(period, season_id)
        if start_ms is not None:
            season = season_at(period, start_ms)
    except (ValueError, OverflowError):  # a date that does not exist, or out of range
        season = None
    # Only the canonical id of a season start names it: the round trip must be exact.
    if season is None or season.season_id != season_id or season.start_ms != start_ms:
        raise SeasonError(
            f"{season_id!r} is not a season of period {period.name!r} "
            f"(ids look like {_ID_EXAMPLES[period.kind]!r})"
        )
    return season


@lru_cache(maxsize=4096)
def season_start(period: Period, season_id: str) -> int:
    """The start of ``period``'s season ``season_id`` (:func:`season_named`), or 0 for an
    id the period's schedule does not give: one stored before the schedule changed (a
    new cron expression or ``week_starts``), which is then older than every season of the
    new schedule. Cached: it takes tens of microseconds to compute (a cron season's, a
    fraction of a millisecond), and every write of a season asks for the same few."""
    try:
        return season_named(period, season_id).start_ms
    except SeasonError:
        return 0


def season_after(period: Period, season: Season) -> Season | None:
    """The season that follows ``season`` (``None`` after ``all_time``'s only one)."""
    if season.end_ms is None:
        return None
    return season_at(period, season.end_ms)


def previous_seasons(period: Period, season: Season, count: int) -> list[Season]:
    """Up to ``count`` seasons that ended before ``season`` started, newest first.

    ``all_time`` has none. For ``keep_seasons`` retention: the seasons still kept once
    ``season`` is current are ``[season, *previous_seasons(period, season, keep)]``.
    """
    found: list[Season] = []
    current = season
    while len(found) < count and current.end_ms is not None:
        current = season_at(period, current.start_ms - 1)
        found.append(current)
    return found


# --- cron periods -------------------------------------------------------------------------


def _cron_season_at(period: Period, when_ms: int) -> Season:
    assert period.cron is not None
    here = _local(when_ms, period.zone)
    # get_next is strictly after its start and get_prev strictly before: the season ends
    # at the first start after the instant and began at the one before that end, so an
    # instant exactly on a start belongs to the season it starts.
    end = croniter(period.cron, here, ret_type=datetime).get_next(datetime)
    start = croniter(period.cron, end, ret_type=datetime).get_prev(datetime)
    start_ms = _ms(start)
    return Season(period.name, _cron_id(start_ms, period.zone), start_ms, _ms(end))


def _cron_id(start_ms: int, zone: ZoneInfo) -> str:
    local = _local(start_ms, zone)
    season_id = f"{local.date().isoformat()}T{local.hour:02d}:{local.minute:02d}"
    if _ms(local.replace(fold=0)) != start_ms:  # the second of a repeated wall time
        offset = local.utcoffset()
        assert offset is not None
        minutes = offset // timedelta(minutes=1)
        sign = "+" if minutes >= 0 else "-"
        season_id += f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"
    return season_id


# --- calendar periods ---------------------------------------------------------------------


def _first_day(period: Period, day: date) -> date:
    """The first local date of the season that holds ``day``."""
    if period.kind == "weekly":
        return day - timedelta(days=(day.weekday() - period.week_starts) % 7)
    if period.kind == "monthly":
        return day.replace(day=1)
    return day


def _following_day(period: Period, first: date) -> date:
    """The first local date of the season after the one that starts on ``first``."""
    if period.kind == "weekly":
        return first + timedelta(days=7)
    if period.kind == "monthly":
        return date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return first + timedelta(days=1)


def _calendar_id(period: Period, first: date) -> str:
    return first.isoformat()[:7] if period.kind == "monthly" else first.isoformat()


def _day_start_ms(day: date, zone: ZoneInfo) -> int:
    """The first instant at which ``zone``'s clocks show the date ``day`` (or a later one)."""
    midnight = datetime.combine(day, time(), tzinfo=zone)
    earlier, later = _ms(midnight), _ms(midnight.replace(fold=1))
    if earlier <= later:  # shown once, or twice (take the first)
        return earlier
    # Midnight is skipped. In a gap fold=0 reads the wall time with the offset before the
    # jump (an instant after it) and fold=1 with the offset after (an instant before it);
    # the day starts at the jump, found between the two.
    low, high = later, earlier  # low shows an earlier date, high shows this one or later
    while high - low > 1:
        middle = (low + high) // 2
        if _local(middle, zone).date() >= day:
            high = middle
        else:
            low = middle
    return high


# --- season ids ---------------------------------------------------------------------------


def _start_named(period: Period, season_id: str) -> int | None:
    """The start instant ``season_id`` names, if it is well formed (checked by the caller)."""
    if period.kind == "all_time":
        return ALL_TIME_START_MS if season_id == ALL_TIME_ID else None
    if period.kind == "cron":
        return _cron_start_named(period, season_id)
    matched = (_MONTH_ID if period.kind == "monthly" else _DATE_ID).fullmatch(season_id)
    if matched is None:
        return None
    year, month, *day = (int(part) for part in matched.groups())
    return _day_start_ms(date(year, month, day[0] if day else 1), period.zone)


def _cron_start_named(period: Period, season_id: str) -> int | None:
    matched = _CRON_ID.fullmatch(season_id)
    if matched is None:
        return None
    year, month, day, hour, minute = (int(part) for part in matched.groups()[:5])
    wall = datetime(year, month, day, hour, minute)
    sign, offset_h, offset_m = matched.groups()[5:]
    if sign is None:
        return _ms(wall.replace(tzinfo=period.zone))
    offset = timedelta(hours=int(offset_h), minutes=int(offset_m))
    return _ms(wall.replace(tzinfo=timezone(-offset if sign == "-" else offset)))


# --- instants -----------------------------------------------------------------------------


def _ms(moment: datetime) -> int:
    """UTC epoch milliseconds of an aware datetime, exactly (no float rounding)."""
    return (moment - _EPOCH) // _MS


def _local(when_ms: int, zone: ZoneInfo) -> datetime:
    return (_EPOCH + timedelta(milliseconds=when_ms)).astimezone(zone)
