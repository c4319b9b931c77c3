"""``GET /api/boards``: every board the server runs, its rules, and each period's current
season (issue 14; the boards come from ``SCOREBOARD_BOARDS_FILE``, see docs/boards.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from handlers.base import ApiHandler
from server.domain.boards import BoardSpec
from server.domain.seasons import Period, Season
from server.domain.standings import SeasonOf


def instant(ms: int | None) -> str | None:
    """RFC 3339 in UTC, to the millisecond (``None`` stays ``None``: a season without end)."""
    if ms is None:
        return None
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def season_answer(season: Season) -> dict[str, Any]:
    return {
        "id": season.season_id,
        "start": instant(season.start_ms),
        "end": instant(season.end_ms),
    }


def period_answer(period: Period, season_of: SeasonOf) -> dict[str, Any]:
    return {
        "name": period.name,
        "kind": period.kind,
        "cron": period.cron,
        "season": season_answer(season_of(period)),
    }


def board_answer(board: BoardSpec, season_of: SeasonOf, *, default: bool) -> dict[str, Any]:
    """One board as ``GET /api/boards`` lists it: what a client needs to post to it and to
    show it (its id, title, rules, limits and periods, each with its current season)."""
    limits: dict[str, int | None]
    if board.operator == "incr":
        limits = {"max_increment": board.max_increment}
    else:
        limits = {"min_score": board.min_score, "max_score": board.max_score}
    return {
        "id": board.id,
        "title": board.title,
        "default": default,
        "operator": board.operator,
        "order": board.order,
        "value_field": board.value_field,
        "limits": limits,
        "top_n": board.top_n,
        "rate_limit_per_minute": board.rate_limit_per_minute,
        "proof_of_action": bool(board.action_points),
        "keep_seasons": board.keep_seasons,
        "timezone": board.timezone,
        "week_starts": board.week_starts,
        "periods": [period_answer(p, season_of) for p in board.periods],
    }


def boards_answer(boards: tuple[BoardSpec, ...], season_of: SeasonOf) -> dict[str, Any]:
    """``GET /api/boards``'s body: the boards in the file's order, the first the default;
    ``season_of`` gives each period's current season (:meth:`SeasonClock.at`)."""
    return {"boards": [board_answer(b, season_of, default=i == 0) for i, b in enumerate(boards)]}


class BoardsHandler(ApiHandler):
    """``GET /api/boards``."""

    def get(self) -> None:
        service = self.service
        self.write_json(boards_answer(service.boards, service.seasons.at(service.clock_ms())))

    head = get
