"""Boards: each leaderboard's rules, read from a TOML file, and the operators that apply them.

A deployment names its boards in ``SCOREBOARD_BOARDS_FILE``::

    [boards.kills]
    title = "Kills this week"
    operator = "incr"            # incr | best | set
    order = "desc"               # desc | asc
    max_increment = 100          # incr only
    periods = ["weekly", "all_time"]
    timezone = "Europe/Berlin"
    week_starts = "monday"

    [boards.laps]
    operator = "best"
    order = "asc"
    min_score = 1000             # best and set only
    max_score = 600000
    periods = ["all_time", { name = "cup", cron = "0 0 1 * *" }]

The file is checked once, at start, and every mistake is refused with one line naming the
board and the field (:class:`BoardsError`): a server must not come up with rules other than
the ones written. Boards keep the file's order; the FIRST is the default board (the one the
seed's routes serve), and each board's first period is its default period. Without a file
there is one board, ``main`` (:func:`default_boards`), with today's settings, so a
deployment without a file behaves as before.

Operators, and what ``reached`` (the time that breaks ties: who reached a score first ranks
first) means for each:

- ``incr`` adds the body's ``increment`` (1 to ``max_increment``); reached: the last write,
  which always changes the score.
- ``best`` keeps the better of the held score and the body's ``score``, "better" by the
  board's order; reached: when the held score was first reached. A score equal to the held
  one, or worse, changes nothing, so reaching a score again does not move the player
  behind those who reached it since.
- ``set`` takes the body's ``score``, whatever it is; reached: the latest write, even one
  that writes the same score again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, NoReturn, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from server.domain.seasons import BUILTIN_PERIODS, WEEKDAYS, Period, cron_problem

Operator = Literal["incr", "best", "set"]
Order = Literal["desc", "asc"]

DEFAULT_BOARD_ID: Final = "main"
DEFAULT_KEEP_SEASONS: Final = 8
# The largest score a JSON client reads exactly (JavaScript's Number.MAX_SAFE_INTEGER).
SCORE_LIMIT: Final = 2**53 - 1
MAX_INCREMENT: Final = 1_000_000_000
MAX_TOP_N: Final = 1000
MAX_RATE_LIMIT_PER_MINUTE: Final = 1000
MAX_KEEP_SEASONS: Final = 1000
MAX_TITLE_CHARS: Final = 100
MAX_ACTION_CHARS: Final = 64
# Bounds on the file, not on taste: every accepted write feeds each period of its board
# in one atomic write, and metrics are labelled by board.
MAX_BOARDS: Final = 100
MAX_PERIODS: Final = 8

_NAME: Final = re.compile(r"[a-z0-9_-]{1,32}", re.ASCII)
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
_BOARD_KEYS: Final = (
    "title",
    "operator",
    "order",
    "max_increment",
    "min_score",
    "max_score",
    "periods",
    "timezone",
    "week_starts",
    "top_n",
    "rate_limit_per_minute",
    "keep_seasons",
    "action_points",
)
_CRON_PERIOD_KEYS: Final = ("name", "cron")
_MACHINE_ZONES: Final = frozenset({"localtime", "posixrules"})


class BoardsError(ValueError):
    """The boards file, or one board in it, is wrong; the message is one line."""


@dataclass(frozen=True, slots=True)
class BoardDefaults:
    """What a board takes from the server's settings when its file does not say.

    Filled by the composition root from ``Settings`` (the domain does not read settings).
    ``action_points`` is ``()`` when updates need no proof of action.
    """

    top_n: int = 10
    max_increment: int = 100
    rate_limit_per_minute: int = 10
    action_points: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class BoardSpec:
    """One board's rules.

    ``max_increment`` is set for ``incr`` boards only, ``min_score`` and ``max_score`` for
    ``best`` and ``set`` boards only. ``periods`` keeps the file's order: the first is the
    board's default period. ``action_points`` is sorted by action; ``()``: no proof of
    action is asked for. ``keep_seasons``: how many ended seasons of each period stay
    readable.
    """

    id: str
    title: str
    operator: Operator
    order: Order
    periods: tuple[Period, ...]
    timezone: str
    week_starts: str
    top_n: int
    rate_limit_per_minute: int
    keep_seasons: int
    action_points: tuple[tuple[str, int], ...]
    max_increment: int | None = None
    min_score: int | None = None
    max_score: int | None = None

    @property
    def default_period(self) -> Period:
        return self.periods[0]

    def period(self, name: str) -> Period | None:
        """The period called ``name``, or ``None`` (the caller answers ``unknown_period``)."""
        for period in self.periods:
            if period.name == name:
                return period
        return None

    @property
    def value_field(self) -> str:
        """The body's field an update carries: ``increment`` or ``score``."""
        return "increment" if self.operator == "incr" else "score"


# --- operators ----------------------------------------------------------------------------


def is_better(spec: BoardSpec, a: int, b: int) -> bool:
    """Whether score ``a`` ranks strictly ahead of score ``b`` on this board."""
    return a < b if spec.order == "asc" else a > b


def ordering_score(spec: BoardSpec, score: int) -> int:
    """``score`` turned so that ascending order is the board's: sort rows by
    ``(ordering_score, reached_ms, user_id)`` to rank them (ties: first to reach it)."""
    return score if spec.order == "asc" else -score


def validate_value(spec: BoardSpec, value: object) -> str | None:
    """What is wrong with an update's value for this board, or ``None`` when it is fine.

    ``value`` is the body's :attr:`BoardSpec.value_field`, as decoded from JSON (a bool
    is not a number, nor is 1.0).
    """
    low: int | None
    high: int | None
    if spec.operator == "incr":
        low, high = 1, spec.max_increment
    else:
        low, high = spec.min_score, spec.max_score
    assert low is not None and high is not None  # parse_boards sets the operator's limits
    if type(value) is not int or not low <= value <= high:
        return f"'{spec.value_field}' must be a whole number from {low} to {high}"
    return None


def new_score(spec: BoardSpec, current: int | None, value: int) -> int:
    """The score held after an accepted update of ``value`` (``current``: ``None`` when
    the player has none yet in this season)."""
    if spec.operator == "incr":
        return (current or 0) + value
    if spec.operator == "best" and current is not None and not is_better(spec, value, current):
        return current
    return value


@dataclass(frozen=True, slots=True)
class Standing:
    """A player's score in one season, and when it was reached (the tie-break)."""

    score: int
    reached_ms: int


def next_standing(spec: BoardSpec, current: Standing | None, value: int, now_ms: int) -> Standing:
    """The standing after an update of ``value`` accepted at ``now_ms``.

    ``best`` keeps ``current`` itself (score and time) unless ``value`` is strictly better;
    ``incr`` and ``set`` are reached at ``now_ms``.
    """
    score = new_score(spec, None if current is None else current.score, value)
    if spec.operator == "best" and current is not None and score == current.score:
        return current
    return Standing(score, now_ms)


# --- the boards file ----------------------------------------------------------------------


def default_boards(defaults: BoardDefaults) -> tuple[BoardSpec, ...]:
    """The boards without a file: ``main``, an all-time ``incr`` board, highest first,
    with the settings' limits (today's one board)."""
    return (
        BoardSpec(
            id=DEFAULT_BOARD_ID,
            title=DEFAULT_BOARD_ID,
            operator="incr",
            order="desc",
            periods=(Period("all_time", "all_time", ZoneInfo("UTC")),),
            timezone="UTC",
            week_starts=WEEKDAYS[0],
            top_n=defaults.top_n,
            rate_limit_per_minute=defaults.rate_limit_per_minute,
            keep_seasons=DEFAULT_KEEP_SEASONS,
            action_points=defaults.action_points,
            max_increment=defaults.max_increment,
        ),
    )


def parse_boards(document: Mapping[str, Any], defaults: BoardDefaults) -> tuple[BoardSpec, ...]:
    """The boards of a decoded TOML document, in the file's order.

    Raises:
        BoardsError: the first mistake found, on one line naming the board and field.
    """
    for key in document:
        if key != "boards":
            raise BoardsError(f"unknown top-level key {key!r} (the file holds [boards.<id>])")
    boards = document.get("boards")
    if not isinstance(boards, dict) or not boards:
        raise BoardsError("no boards: add at least one [boards.<id>] table")
    if len(boards) > MAX_BOARDS:
        raise BoardsError(f"{len(boards)} boards: at most {MAX_BOARDS}")
    return tuple(_board(board_id, raw, defaults) for board_id, raw in boards.items())


def _board(board_id: str, raw: object, defaults: BoardDefaults) -> BoardSpec:
    if not _NAME.fullmatch(board_id):
        raise BoardsError(f"board {board_id!r}: the id must be 1 to 32 of a-z, 0-9, '_' and '-'")
    if not isinstance(raw, dict):
        raise BoardsError(f"board {board_id!r}: must be a table ([boards.{board_id}])")
    fields = _Fields(board_id, raw)
    for key in raw:
        if key not in _BOARD_KEYS:
            fields.fail(key, f"unknown key (known: {', '.join(_BOARD_KEYS)})")

    title = fields.text("title", board_id)
    operator: Operator = fields.choice("operator", get_args(Operator), "incr")
    order: Order = fields.choice("order", get_args(Order), "desc")
    timezone = fields.text("timezone", "UTC")
    zone = _zone(timezone)
    if zone is None:
        fields.fail(
            "timezone", f"unknown timezone {timezone!r} (an IANA name like 'Europe/Berlin')"
        )
    week_starts = fields.choice("week_starts", WEEKDAYS, WEEKDAYS[0])
    periods = _periods(fields, zone, WEEKDAYS.index(week_starts))

    max_increment = min_score = max_score = None
    if operator == "incr":
        for key in ("min_score", "max_score"):
            if key in raw:
                fields.fail(key, "applies to best and set boards only")
        max_increment = fields.whole("max_increment", defaults.max_increment, 1, MAX_INCREMENT)
    else:
        if "max_increment" in raw:
            fields.fail("max_increment", "applies to incr boards only")
        min_score = fields.whole("min_score", 0, -SCORE_LIMIT, SCORE_LIMIT)
        max_score = fields.whole("max_score", SCORE_LIMIT, -SCORE_LIMIT, SCORE_LIMIT)
        if min_score > max_score:
            fields.fail("min_score", f"{min_score} is above max_score ({max_score})")

    return BoardSpec(
        id=board_id,
        title=title,
        operator=operator,
        order=order,
        periods=periods,
        timezone=timezone,
        week_starts=week_starts,
        top_n=fields.whole("top_n", defaults.top_n, 1, MAX_TOP_N),
        rate_limit_per_minute=fields.whole(
            "rate_limit_per_minute", defaults.rate_limit_per_minute, 0, MAX_RATE_LIMIT_PER_MINUTE
        ),
        keep_seasons=fields.whole("keep_seasons", DEFAULT_KEEP_SEASONS, 0, MAX_KEEP_SEASONS),
        action_points=_action_points(fields, defaults.action_points),
        max_increment=max_increment,
        min_score=min_score,
        max_score=max_score,
    )


def _zone(key: str) -> ZoneInfo | None:
    """The IANA zone called ``key``; ``None`` for an unknown name, and for the machine's
    own zone (``localtime``), which pods need not share."""
    if key in _MACHINE_ZONES:
        return None
    try:
        return ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a directory (America)
        return None


def _periods(fields: _Fields, zone: ZoneInfo, week_starts: int) -> tuple[Period, ...]:
    raw = fields.raw.get("periods", ["all_time"])
    if not isinstance(raw, list) or not raw:
        fields.fail("periods", "must be a non-empty array of periods")
    if len(raw) > MAX_PERIODS:
        fields.fail("periods", f"{len(raw)} periods: at most {MAX_PERIODS}")
    periods: list[Period] = []
    for index, entry in enumerate(raw):
        where = f"periods[{index}]"
        if isinstance(entry, str):
            if entry not in BUILTIN_PERIODS:
                fields.fail(
                    where,
                    f"unknown period {entry!r} ({', '.join(BUILTIN_PERIODS)}, "
                    "or a table {name, cron})",
                )
            period = Period(entry, entry, zone, week_starts)
        elif isinstance(entry, dict):
            period = _cron_period(fields, where, entry, zone, week_starts)
        else:
            fields.fail(where, "must be a period name or a table {name, cron}")
        if any(known.name == period.name for known in periods):
            fields.fail(where, f"the period {period.name!r} is named twice")
        periods.append(period)
    return tuple(periods)


def _cron_period(
    fields: _Fields, where: str, entry: dict[str, Any], zone: ZoneInfo, week_starts: int
) -> Period:
    for key in entry:
        if key not in _CRON_PERIOD_KEYS:
            fields.fail(f"{where}.{key}", "unknown key (a cron period has name and cron)")
    for key in _CRON_PERIOD_KEYS:
        if not isinstance(entry.get(key), str):
            fields.fail(f"{where}.{key}", "required, a string")
    name, expression = entry["name"], entry["cron"]
    if not _NAME.fullmatch(name):
        fields.fail(f"{where}.name", f"{name!r}: must be 1 to 32 of a-z, 0-9, '_' and '-'")
    if name in BUILTIN_PERIODS:
        fields.fail(f"{where}.name", f"{name!r} is a built-in period's name")
    problem = cron_problem(expression)
    if problem is not None:
        fields.fail(f"{where}.cron", problem)
    return Period(name, "cron", zone, week_starts, expression)


def _action_points(
    fields: _Fields, default: tuple[tuple[str, int], ...]
) -> tuple[tuple[str, int], ...]:
    raw = fields.raw.get("action_points")
    if raw is None:
        return default
    if not isinstance(raw, dict) or not raw:
        fields.fail("action_points", "must be a non-empty table like { kill = 1 }")
    for action, points in raw.items():
        if not action or len(action) > MAX_ACTION_CHARS or _CONTROL.search(action):
            fields.fail("action_points", f"action {action!r}: 1 to {MAX_ACTION_CHARS} characters")
        if type(points) is not int or not 1 <= points <= MAX_INCREMENT:
            fields.fail(
                f"action_points.{action}", f"must be a whole number from 1 to {MAX_INCREMENT}"
            )
    return tuple(sorted(raw.items()))


class _Fields:
    """Reads one board's fields, refusing each mistake with the board and field named."""

    __slots__ = ("board_id", "raw")

    def __init__(self, board_id: str, raw: dict[str, Any]) -> None:
        self.board_id = board_id
        self.raw = raw

    def fail(self, field: str, problem: str) -> NoReturn:
        raise BoardsError(f"board {self.board_id!r}: {field}: {problem}")

    def text(self, key: str, default: str) -> str:
        value = self.raw.get(key, default)
        if not isinstance(value, str):
            self.fail(key, f"must be a string, not {_kind(value)}")
        if not value or len(value) > MAX_TITLE_CHARS or _CONTROL.search(value):
            self.fail(key, f"must be 1 to {MAX_TITLE_CHARS} characters, no control characters")
        return value

    def choice(self, key: str, choices: tuple[Any, ...], default: Any) -> Any:
        value = self.raw.get(key, default)
        if value not in choices or not isinstance(value, str):
            self.fail(key, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def whole(self, key: str, default: int, low: int, high: int) -> int:
        value = self.raw.get(key, default)
        # bool is an int to Python; `true` in the file is not a number.
        if type(value) is not int:
            self.fail(key, f"must be a whole number, not {_kind(value)}")
        if not low <= value <= high:
            self.fail(key, f"{value} is not from {low} to {high}")
        return value


def _kind(value: object) -> str:
    names = {bool: "a boolean", str: "a string", float: "a decimal", list: "an array"}
    return names.get(type(value), "a table" if isinstance(value, dict) else type(value).__name__)


def _one_line(message: str) -> str:
    return " ".join(message.split())
