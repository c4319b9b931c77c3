"""Board specs from the boards file (each mistake refused on one line naming board and field),
the board without a file, and the operators incr, best and set with their ties."""

from __future__ import annotations

import tomllib
from zoneinfo import ZoneInfo

import pytest

from server.domain.boards import (
    BoardDefaults,
    BoardsError,
    BoardSpec,
    Operator,
    Order,
    Standing,
    default_boards,
    is_better,
    new_score,
    next_standing,
    ordering_score,
    parse_boards,
    validate_value,
)
from server.domain.seasons import Period

DEFAULTS = BoardDefaults(
    top_n=10, max_increment=100, rate_limit_per_minute=10, action_points=(("quest", 50),)
)

WORKED_EXAMPLE = """
[boards.kills]
title = "Kills this week"
operator = "incr"
order = "desc"
max_increment = 100
periods = ["weekly", "all_time", "daily"]
timezone = "Europe/Berlin"
week_starts = "monday"
top_n = 10
rate_limit_per_minute = 60
keep_seasons = 8
action_points = { kill = 1, assist = 1 }

[boards.laps]
title = "Best lap (ms)"
operator = "best"
order = "asc"
min_score = 1000
max_score = 600000
periods = ["all_time", { name = "cup", cron = "0 0 1 * *" }]

[boards.level]
operator = "set"
"""


def boards(text: str, defaults: BoardDefaults = DEFAULTS) -> tuple[BoardSpec, ...]:
    return parse_boards(tomllib.loads(text), defaults)


def test_the_worked_example_parses_in_the_files_order() -> None:
    berlin, utc = ZoneInfo("Europe/Berlin"), ZoneInfo("UTC")
    assert boards(WORKED_EXAMPLE) == (
        BoardSpec(
            id="kills",
            title="Kills this week",
            operator="incr",
            order="desc",
            periods=(
                Period("weekly", "weekly", berlin),
                Period("all_time", "all_time", berlin),
                Period("daily", "daily", berlin),
            ),
            timezone="Europe/Berlin",
            week_starts="monday",
            top_n=10,
            rate_limit_per_minute=60,
            keep_seasons=8,
            action_points=(("assist", 1), ("kill", 1)),
            max_increment=100,
        ),
        BoardSpec(
            id="laps",
            title="Best lap (ms)",
            operator="best",
            order="asc",
            periods=(
                Period("all_time", "all_time", utc),
                Period("cup", "cron", utc, 0, "0 0 1 * *"),
            ),
            timezone="UTC",
            week_starts="monday",
            top_n=10,
            rate_limit_per_minute=10,
            keep_seasons=8,
            action_points=(("quest", 50),),
            min_score=1000,
            max_score=600000,
        ),
        BoardSpec(
            id="level",
            title="level",
            operator="set",
            order="desc",
            periods=(Period("all_time", "all_time", utc),),
            timezone="UTC",
            week_starts="monday",
            top_n=10,
            rate_limit_per_minute=10,
            keep_seasons=8,
            action_points=(("quest", 50),),
            min_score=0,
            max_score=2**53 - 1,
        ),
    )


def test_a_boards_first_period_is_its_default_and_periods_are_found_by_name() -> None:
    kills, laps, _ = boards(WORKED_EXAMPLE)
    assert kills.default_period.name == "weekly"
    assert laps.period("cup") == Period("cup", "cron", ZoneInfo("UTC"), 0, "0 0 1 * *")
    assert laps.period("weekly") is None


def test_week_starts_reaches_the_periods() -> None:
    (board,) = boards('[boards.b]\nperiods = ["weekly"]\nweek_starts = "sunday"')
    assert board.default_period.week_starts == 6


def test_without_a_file_there_is_main_with_the_settings_limits() -> None:
    defaults = BoardDefaults(
        top_n=25, max_increment=7, rate_limit_per_minute=0, action_points=(("kill", 10),)
    )
    (main,) = default_boards(defaults)
    assert main == BoardSpec(
        id="main",
        title="main",
        operator="incr",
        order="desc",
        periods=(Period("all_time", "all_time", ZoneInfo("UTC")),),
        timezone="UTC",
        week_starts="monday",
        top_n=25,
        rate_limit_per_minute=0,
        keep_seasons=8,
        action_points=(("kill", 10),),
        max_increment=7,
    )
    # A file with an empty [boards.main] describes the same board.
    assert boards("[boards.main]", defaults) == (main,)


# (file, the one-line error): every mistake names the board and the field.
ERRORS = [
    pytest.param("", "no boards: add at least one [boards.<id>] table", id="no [boards]"),
    pytest.param("[boards]", "no boards: add at least one [boards.<id>] table", id="empty"),
    pytest.param(
        "boards = 3", "no boards: add at least one [boards.<id>] table", id="boards not a table"
    ),
    pytest.param(
        "title = 'x'\n[boards.a]",
        "unknown top-level key 'title' (the file holds [boards.<id>])",
        id="top-level key",
    ),
    pytest.param(
        "[boards.Kills]",
        "board 'Kills': the id must be 1 to 32 of a-z, 0-9, '_' and '-'",
        id="id with a capital",
    ),
    pytest.param(
        f"[boards.{'a' * 33}]",
        f"board '{'a' * 33}': the id must be 1 to 32 of a-z, 0-9, '_' and '-'",
        id="id too long",
    ),
    pytest.param(
        "[boards]\nkills = 3", "board 'kills': must be a table ([boards.kills])", id="not a table"
    ),
    pytest.param(
        "[boards.k]\nperods = ['daily']",
        "board 'k': perods: unknown key (known: title, operator, order, max_increment, "
        "min_score, max_score, periods, timezone, week_starts, top_n, rate_limit_per_minute, "
        "keep_seasons, action_points)",
        id="unknown key",
    ),
    pytest.param(
        "[boards.k]\noperator = 'sum'",
        "board 'k': operator: 'sum' is not one of incr, best, set",
        id="unknown operator",
    ),
    pytest.param(
        "[boards.k]\norder = 'up'", "board 'k': order: 'up' is not one of desc, asc", id="order"
    ),
    pytest.param(
        "[boards.k]\norder = 1", "board 'k': order: 1 is not one of desc, asc", id="order type"
    ),
    pytest.param(
        "[boards.k]\ntitle = 5", "board 'k': title: must be a string, not int", id="title type"
    ),
    pytest.param(
        "[boards.k]\ntitle = ''",
        "board 'k': title: must be 1 to 100 characters, no control characters",
        id="empty title",
    ),
    pytest.param(
        '[boards.k]\ntitle = "a\\nb"',
        "board 'k': title: must be 1 to 100 characters, no control characters",
        id="title with a newline",
    ),
    pytest.param(
        "[boards.k]\ntop_n = true",
        "board 'k': top_n: must be a whole number, not a boolean",
        id="bool is not int",
    ),
    pytest.param(
        "[boards.k]\ntop_n = 10.0",
        "board 'k': top_n: must be a whole number, not a decimal",
        id="float is not int",
    ),
    pytest.param(
        "[boards.k]\ntop_n = '10'",
        "board 'k': top_n: must be a whole number, not a string",
        id="string is not int",
    ),
    pytest.param(
        "[boards.k]\ntop_n = 0", "board 'k': top_n: 0 is not from 1 to 1000", id="top_n range"
    ),
    pytest.param(
        "[boards.k]\nrate_limit_per_minute = -1",
        "board 'k': rate_limit_per_minute: -1 is not from 0 to 1000",
        id="rate limit range",
    ),
    pytest.param(
        "[boards.k]\nkeep_seasons = [8]",
        "board 'k': keep_seasons: must be a whole number, not an array",
        id="keep_seasons type",
    ),
    pytest.param(
        "[boards.k]\nmax_increment = 0",
        "board 'k': max_increment: 0 is not from 1 to 1000000000",
        id="max_increment range",
    ),
    pytest.param(
        "[boards.k]\noperator = 'best'\nmax_increment = 5",
        "board 'k': max_increment: applies to incr boards only",
        id="max_increment on best",
    ),
    pytest.param(
        "[boards.k]\nmin_score = 5",
        "board 'k': min_score: applies to best and set boards only",
        id="min_score on incr",
    ),
    pytest.param(
        "[boards.k]\noperator = 'set'\nmin_score = 10\nmax_score = 9",
        "board 'k': min_score: 10 is above max_score (9)",
        id="min above max",
    ),
    pytest.param(
        "[boards.k]\noperator = 'set'\nmax_score = 9007199254740992",
        "board 'k': max_score: 9007199254740992 is not from -9007199254740991 to 9007199254740991",
        id="max_score beyond exact JSON integers",
    ),
    pytest.param(
        "[boards.k]\nperiods = []",
        "board 'k': periods: must be a non-empty array of periods",
        id="no periods",
    ),
    pytest.param(
        "[boards.k]\nperiods = 'daily'",
        "board 'k': periods: must be a non-empty array of periods",
        id="periods not an array",
    ),
    pytest.param(
        "[boards.k]\nperiods = ['daily', 'hourly']",
        "board 'k': periods[1]: unknown period 'hourly' (all_time, daily, weekly, monthly, "
        "or a table {name, cron})",
        id="unknown period",
    ),
    pytest.param(
        "[boards.k]\nperiods = [7]",
        "board 'k': periods[0]: must be a period name or a table {name, cron}",
        id="period type",
    ),
    pytest.param(
        "[boards.k]\nperiods = ['daily', 'weekly', 'daily']",
        "board 'k': periods[2]: the period 'daily' is named twice",
        id="duplicate period",
    ),
    pytest.param(
        "[boards.k]\nperiods = [{name = 'cup', cron = '0 0 1 * *'}, "
        "{name = 'cup', cron = '0 0 * * 1'}]",
        "board 'k': periods[1]: the period 'cup' is named twice",
        id="duplicate cron period",
    ),
    pytest.param(
        "[boards.k]\nperiods = [{name = 'Cup', cron = '0 0 1 * *'}]",
        "board 'k': periods[0].name: 'Cup': must be 1 to 32 of a-z, 0-9, '_' and '-'",
        id="period name",
    ),
    pytest.param(
        "[boards.k]\nperiods = [{name = 'daily', cron = '0 0 1 * *'}]",
        "board 'k': periods[0].name: 'daily' is a built-in period's name",
        id="period name taken",
    ),
    pytest.param(
        "[boards.k]\nperiods = [{name = 'cup'}]",
        "board 'k': periods[0].cron: required, a string",
        id="cron missing",
    ),
    pytest.param(
        "[boards.k]\nperiods = [{name = 'cup', cron = '0 0 1 * *', tz = 'UTC'}]",
        "board 'k': periods[0].tz: unknown key (a cron period has name and cron)",
        id="cron period key",
    ),
    pytest.param(
        "[boards.k]\nperiods = [{name = 'cup', cron = '0 0 31 2 *'}]",
        "board 'k': periods[0].cron: '0 0 31 2 *' never fires",
        id="cron never fires",
    ),
    pytest.param(
        "[boards.k]\nperiods = [{name = 'cup', cron = 'monthly'}]",
        "board 'k': periods[0].cron: 'monthly' is not a cron expression of 5 fields "
        "(minute hour day-of-month month day-of-week)",
        id="bad cron",
    ),
    pytest.param(
        "[boards.k]\ntimezone = 'Europe/Berln'",
        "board 'k': timezone: unknown timezone 'Europe/Berln' (an IANA name like 'Europe/Berlin')",
        id="unknown timezone",
    ),
    pytest.param(
        "[boards.k]\ntimezone = 'America'",
        "board 'k': timezone: unknown timezone 'America' (an IANA name like 'Europe/Berlin')",
        id="timezone that is a folder",
    ),
    pytest.param(
        "[boards.k]\ntimezone = '../etc/passwd'",
        "board 'k': timezone: unknown timezone '../etc/passwd' (an IANA name like 'Europe/Berlin')",
        id="timezone path",
    ),
    pytest.param(
        "[boards.k]\ntimezone = 'localtime'",
        "board 'k': timezone: unknown timezone 'localtime' (an IANA name like 'Europe/Berlin')",
        id="the machine's zone",
    ),
    pytest.param(
        "[boards.k]\nweek_starts = 'Monday'",
        "board 'k': week_starts: 'Monday' is not one of monday, tuesday, wednesday, thursday, "
        "friday, saturday, sunday",
        id="week_starts",
    ),
    pytest.param(
        "[boards.k]\naction_points = {}",
        "board 'k': action_points: must be a non-empty table like { kill = 1 }",
        id="no action points",
    ),
    pytest.param(
        "[boards.k]\naction_points = { kill = 0 }",
        "board 'k': action_points.kill: must be a whole number from 1 to 1000000000",
        id="action points range",
    ),
    pytest.param(
        "[boards.k]\naction_points = { kill = true }",
        "board 'k': action_points.kill: must be a whole number from 1 to 1000000000",
        id="action points bool",
    ),
    pytest.param(
        "[boards.k]\naction_points = { '' = 1 }",
        "board 'k': action_points: action '': 1 to 64 characters",
        id="empty action",
    ),
    pytest.param(
        "[boards.k]\nperiods = ['all_time', 'daily', 'weekly', 'monthly', "
        + ", ".join(f"{{name = 'c{n}', cron = '0 0 1 * *'}}" for n in range(5))
        + "]",
        "board 'k': periods: 9 periods: at most 8",
        id="too many periods",
    ),
    pytest.param(
        "".join(f"[boards.b{n}]\n" for n in range(101)), "101 boards: at most 100", id="boards"
    ),
]


@pytest.mark.parametrize(("text", "message"), ERRORS)
def test_each_mistake_is_refused_on_one_line_naming_board_and_field(
    text: str, message: str
) -> None:
    with pytest.raises(BoardsError) as refused:
        boards(text)
    assert str(refused.value) == message
    assert "\n" not in message


# --- operators ----------------------------------------------------------------------------


def spec(operator: Operator, order: Order = "desc") -> BoardSpec:
    limits = "max_increment = 100" if operator == "incr" else "min_score = -5\nmax_score = 500"
    (board,) = boards(f"[boards.b]\noperator = '{operator}'\norder = '{order}'\n{limits}")
    return board


@pytest.mark.parametrize(
    ("operator", "order", "current", "value", "expected"),
    [
        ("incr", "desc", None, 5, 5),
        ("incr", "desc", 10, 5, 15),
        ("incr", "asc", 10, 5, 15),  # incr adds whatever the order
        ("best", "desc", None, 5, 5),
        ("best", "desc", 10, 12, 12),
        ("best", "desc", 10, 8, 10),
        ("best", "desc", 10, 10, 10),
        ("best", "asc", None, 50, 50),
        ("best", "asc", 60, 50, 50),  # a faster lap
        ("best", "asc", 60, 70, 60),  # a slower one changes nothing
        ("best", "asc", 60, -5, -5),
        ("set", "desc", None, 5, 5),
        ("set", "desc", 10, 3, 3),  # the latest wins, worse or not
        ("set", "asc", 10, 30, 30),
    ],
)
def test_the_score_after_an_update(
    operator: Operator, order: Order, current: int | None, value: int, expected: int
) -> None:
    assert new_score(spec(operator, order), current, value) == expected


def test_better_means_higher_or_lower_by_the_boards_order() -> None:
    desc, asc = spec("best", "desc"), spec("best", "asc")
    assert is_better(desc, 2, 1) and not is_better(desc, 1, 2) and not is_better(desc, 1, 1)
    assert is_better(asc, 1, 2) and not is_better(asc, 2, 1) and not is_better(asc, 1, 1)


@pytest.mark.parametrize(
    ("operator", "order", "current", "value", "expected"),
    [
        # best: reaching the held score again keeps the time it was first reached.
        ("best", "desc", Standing(10, 1000), 10, Standing(10, 1000)),
        ("best", "desc", Standing(10, 1000), 9, Standing(10, 1000)),
        ("best", "desc", Standing(10, 1000), 11, Standing(11, 5000)),
        ("best", "asc", Standing(60, 1000), 60, Standing(60, 1000)),
        ("best", "asc", Standing(60, 1000), 59, Standing(59, 5000)),
        ("best", "asc", None, 60, Standing(60, 5000)),
        # set: the time of the latest write, even of the same score.
        ("set", "desc", Standing(10, 1000), 10, Standing(10, 5000)),
        ("set", "asc", Standing(10, 1000), 99, Standing(99, 5000)),
        # incr: every update changes the score, reached now.
        ("incr", "desc", Standing(10, 1000), 1, Standing(11, 5000)),
        ("incr", "desc", None, 1, Standing(1, 5000)),
    ],
)
def test_reached_breaks_ties_as_each_operator_says(
    operator: Operator, order: Order, current: Standing | None, value: int, expected: Standing
) -> None:
    assert next_standing(spec(operator, order), current, value, now_ms=5000) == expected


@pytest.mark.parametrize("order", ["desc", "asc"])
def test_ties_rank_whoever_reached_the_score_first(order: Order) -> None:
    board = spec("best", order)
    # a and c tie on 30; a reached it first. b is better or worse by the order.
    a = next_standing(board, None, 30, now_ms=1)
    c = next_standing(board, None, 30, now_ms=2)
    b = next_standing(board, None, 40, now_ms=3)
    a = next_standing(board, a, 30, now_ms=4)  # a reaches 30 again: still first
    rows = {"a": a, "b": b, "c": c}
    ranked = sorted(
        rows, key=lambda user: (ordering_score(board, rows[user].score), rows[user].reached_ms)
    )
    assert ranked == (["b", "a", "c"] if order == "desc" else ["a", "c", "b"])


@pytest.mark.parametrize(
    ("operator", "value", "problem"),
    [
        ("incr", 1, None),
        ("incr", 100, None),
        ("incr", 0, "'increment' must be a whole number from 1 to 100"),
        ("incr", 101, "'increment' must be a whole number from 1 to 100"),
        ("incr", True, "'increment' must be a whole number from 1 to 100"),
        ("incr", 1.0, "'increment' must be a whole number from 1 to 100"),
        ("incr", "1", "'increment' must be a whole number from 1 to 100"),
        ("best", -5, None),
        ("best", 500, None),
        ("best", -6, "'score' must be a whole number from -5 to 500"),
        ("set", 501, "'score' must be a whole number from -5 to 500"),
        ("set", None, "'score' must be a whole number from -5 to 500"),
    ],
)
def test_an_updates_value_is_checked_against_the_boards_limits(
    operator: Operator, value: object, problem: str | None
) -> None:
    board = spec(operator)
    assert validate_value(board, value) == problem
    assert board.value_field == ("increment" if operator == "incr" else "score")
