"""The per-board routes (issue 14): ``/api/boards/{board}/...``, with ``period`` and
``season`` where a read names one.

A server serves one board today (``server/board_setup.py``): these routes answer for it
exactly as the original routes do (``POST /api/update-score``, ``GET /api/top-scores``,
``GET /api/players/{id|me}`` and ``/around``), which stay as its aliases. What they add is
the board in the path and the period and season in the query, each checked: 404
``unknown_board``, ``unknown_period`` or ``unknown_season`` for one the server does not have.
The board's default period is its first; a season defaults to the period's current one.
"""

from __future__ import annotations

from typing import Any

import tornado.web

from handlers.admin import ResetHandler
from handlers.base import ApiHandler
from handlers.boards import season_answer
from handlers.context import Backend
from handlers.errors import ApiError
from handlers.players import AroundHandler, PlayerHandler
from handlers.scores import TopScoresHandler, UpdateScoreHandler
from server.domain.boards import BoardSpec
from server.domain.seasons import Period, SeasonError, season_named
from server.domain.standings import SeasonOf


def served_board(service: Backend, board_id: str) -> BoardSpec:
    """The board ``board_id`` names (the one served today is the first).

    Raises:
        ApiError: 404 ``unknown_board``.
    """
    board = service.boards[0]
    if board_id != board.id:
        shown = board_id if len(board_id) <= 32 else board_id[:32] + "…"
        raise ApiError(404, "unknown_board", f"no board {shown!r} (GET /api/boards lists them)")
    return board


def period_of(board: BoardSpec, name: str | None) -> Period:
    """The board's period called ``name`` (``None``: its default, the first).

    Raises:
        ApiError: 404 ``unknown_period``.
    """
    period = board.default_period if name is None else board.period(name)
    if period is None:
        names = ", ".join(p.name for p in board.periods)
        raise ApiError(
            404, "unknown_period", f"board {board.id!r} has no period {name!r} ({names})"
        )
    return period


def check_period_and_season(
    service: Backend, board: BoardSpec, period_name: str | None, season_id: str | None
) -> None:
    """The ``period`` and ``season`` a read names must be the board's, and the season one
    whose standings this server holds (today: the current one).

    Raises:
        ApiError: 404 ``unknown_period`` or ``unknown_season``.
    """
    period = period_of(board, period_name)
    if season_id is None:
        return
    current = service.seasons.current(period, service.clock_ms())
    try:
        named = season_named(period, season_id)
    except SeasonError as exc:
        raise ApiError(404, "unknown_season", str(exc)) from None
    if named != current:
        raise ApiError(
            404,
            "unknown_season",
            f"season {season_id!r} of {period.name!r} is not kept "
            f"(the current one is {current.season_id!r})",
        )


def check_read(handler: ApiHandler, board_id: str) -> None:
    """The board, period and season of a read, checked before the original handler answers.

    Raises:
        ApiError: 404 ``unknown_board``, ``unknown_period`` or ``unknown_season``.
    """
    board = served_board(handler.service, board_id)
    period = handler.get_query_argument("period", None)
    season = handler.get_query_argument("season", None)
    check_period_and_season(handler.service, board, period, season)


@tornado.web.stream_request_body
class BoardScoresHandler(UpdateScoreHandler):
    """``POST /api/boards/{board}/scores``: ``POST /api/update-score`` on that board."""

    def prepare(self) -> None:
        super().prepare()
        if self.request.method == "POST":  # a preflight is answered as on every route
            served_board(self.service, self.path_args[0])  # before the body is read

    async def post(self, board_id: str) -> None:  # type: ignore[override]
        await super().post()


class BoardTopHandler(TopScoresHandler):
    """``GET /api/boards/{board}/top?period=&season=&limit=&cursor=``."""

    def get(self, board_id: str) -> None:  # type: ignore[override]
        check_read(self, board_id)
        super().get()

    head = get  # type: ignore[assignment]


class BoardPlayerHandler(PlayerHandler):
    """``GET /api/boards/{board}/players/{id|me}?period=&season=``."""

    def get(self, board_id: str, user_id: str) -> None:  # type: ignore[override]
        check_read(self, board_id)
        super().get(user_id)

    head = get  # type: ignore[assignment]


class BoardAroundHandler(AroundHandler):
    """``GET /api/boards/{board}/players/{id|me}/around?period=&season=&above=&below=``."""

    def get(self, board_id: str, user_id: str) -> None:  # type: ignore[override]
        check_read(self, board_id)
        super().get(user_id)

    head = get  # type: ignore[assignment]


def seasons_answer(
    board: BoardSpec, period_name: str | None, season_of: SeasonOf
) -> dict[str, Any]:
    """``GET /api/boards/{board}/seasons``'s body: the period's seasons this server keeps,
    newest first, each with its start, end and state.

    Raises:
        ApiError: 404 ``unknown_period``.
    """
    period = period_of(board, period_name)
    current = season_of(period)
    # Ended seasons are kept once several periods are served (issue 14): an all_time
    # period, the only one served today, has a single season that never ends.
    return {
        "board": board.id,
        "period": period.name,
        "seasons": [{**season_answer(current), "state": "current"}],
    }


class BoardSeasonsHandler(ApiHandler):
    """``GET /api/boards/{board}/seasons?period=``."""

    def get(self, board_id: str) -> None:
        service = self.service
        board = served_board(service, board_id)
        period = self.get_query_argument("period", None)
        self.write_json(seasons_answer(board, period, service.seasons.at(service.clock_ms())))

    head = get


class BoardResetHandler(ResetHandler):
    """``POST /api/boards/{board}/users/{id}/reset?period=``: the admin reset of one
    board and period (today the served board's all_time period: the user's score)."""

    async def post(self, board_id: str, user_id: str) -> None:  # type: ignore[override]
        self.admin()  # who may ask comes first: 401/403 before 404
        board = served_board(self.service, board_id)
        period_of(board, self.get_query_argument("period", None))
        await super().post(user_id)
