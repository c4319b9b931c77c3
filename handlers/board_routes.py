"""The per-board routes (issue 14): ``/api/boards/{board}/...``, with ``period`` and
``season`` where a read names one, each checked: 404 ``unknown_board``, ``unknown_period``
or ``unknown_season`` for one the server does not have. The board's default period is its
first; a season defaults to the period's current one.

Without a boards file the one board, ``main``, is the original one: these routes answer for
it exactly as the original routes do (``POST /api/update-score``, ``GET /api/top-scores``,
``GET /api/players/{id|me}`` and ``/around``). With a file, every board is served by
:mod:`handlers.board_engine` (its operator, order, periods and seasons), and the original
routes answer for the default board's default period.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import tornado.web

from handlers import board_engine as engine
from handlers.admin import ResetHandler
from handlers.base import ApiHandler
from handlers.boards import season_answer
from handlers.context import Backend
from handlers.errors import ApiError
from handlers.players import AroundHandler, PlayerHandler, PlayersHandler
from handlers.scores import TopScoresHandler, UpdateScoreHandler
from server.domain.boards import BoardSpec
from server.domain.seasons import Period, SeasonError, season_named
from server.domain.standings import SeasonOf


def served_board(service: Backend, board_id: str) -> BoardSpec:
    """The board ``board_id`` names.

    Raises:
        ApiError: 404 ``unknown_board``.
    """
    board = next((b for b in service.boards if b.id == board_id), None)
    if board is None:
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


def board_and_period(handler: ApiHandler, board_id: str) -> tuple[BoardSpec, Period]:
    """The board a request's path names and the period its query names (default: the
    board's first).

    Raises:
        ApiError: 404 ``unknown_board`` or ``unknown_period``.
    """
    board = served_board(handler.service, board_id)
    return board, period_of(board, handler.get_query_argument("period", None))


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
        if self.service.board_runtime is None:
            await super().post()
            return
        await self.post_to(served_board(self.service, board_id))

    async def post_to(self, board: BoardSpec) -> None:
        """Apply the body to ``board`` of a boards file (:func:`engine.post_score`)."""
        answer, outcome = await self.counted(
            lambda: engine.post_score(self, board, bytes(self._body))
        )
        self._outcome(outcome)
        self.finish(answer)


class DefaultBoardScoresHandler(BoardScoresHandler):
    """``POST /api/update-score`` with a boards file: the default board's scores."""

    def prepare(self) -> None:
        UpdateScoreHandler.prepare(self)  # the default board is always there

    async def post(self) -> None:  # type: ignore[override]
        await self.post_to(self.service.boards[0])


class BoardTopHandler(TopScoresHandler):
    """``GET /api/boards/{board}/top?period=&season=&limit=&cursor=``."""

    async def get(self, board_id: str) -> None:  # type: ignore[override]
        if self.service.board_runtime is None:
            check_read(self, board_id)
            super().get()
            return
        board, period = board_and_period(self, board_id)
        body, self._board_etag = await engine.top_answer(self, board, period)
        self.finish(body)

    head = get  # type: ignore[assignment]

    _board_etag: str | None = None

    def compute_etag(self) -> str | None:
        if self.service.board_runtime is None:
            return super().compute_etag()
        return self._board_etag if self.get_status() == 200 else None


async def player_read(
    handler: PlayersHandler,
    board_id: str,
    user_id: str,
    original: Callable[[str], Awaitable[None]],
    *,
    around: bool,
) -> None:
    """A board's read of one player (``around``: and the rows around them): without a
    boards file, ``original`` (the original route's answer) once the board, period and
    season are checked; with one, from the season's rank index."""
    if handler.service.board_runtime is None:
        check_read(handler, board_id)
        await original(user_id)
        return
    board, period = board_and_period(handler, board_id)
    player = await handler.player_id(user_id)
    await engine.answer_player(handler, board, period, player, around=around)


class BoardPlayerHandler(PlayerHandler):
    """``GET /api/boards/{board}/players/{id|me}?period=&season=``."""

    async def get(self, board_id: str, user_id: str) -> None:  # type: ignore[override]
        await player_read(self, board_id, user_id, super().get, around=False)

    head = get  # type: ignore[assignment]


class BoardAroundHandler(AroundHandler):
    """``GET /api/boards/{board}/players/{id|me}/around?period=&season=&above=&below=``."""

    async def get(self, board_id: str, user_id: str) -> None:  # type: ignore[override]
        await player_read(self, board_id, user_id, super().get, around=True)

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

    async def get(self, board_id: str) -> None:
        service = self.service
        board = served_board(service, board_id)
        period = self.get_query_argument("period", None)
        if service.board_runtime is None:
            self.write_json(seasons_answer(board, period, service.seasons.at(service.clock_ms())))
            return
        self.write_json(await engine.seasons_answer(self, board, period_of(board, period)))

    head = get


class BoardResetHandler(ResetHandler):
    """``POST /api/boards/{board}/users/{id}/reset?period=``: the admin reset of one
    board and period (today the served board's all_time period: the user's score)."""

    async def post(self, board_id: str, user_id: str) -> None:  # type: ignore[override]
        await self.admin()  # who may ask comes first: 401/403 before 404
        board = served_board(self.service, board_id)
        period = period_of(board, self.get_query_argument("period", None))
        if self.service.board_runtime is None:
            await super().post(user_id)
            return
        self.write_json(await engine.reset(self, board, period, user_id))


class DefaultBoardTopHandler(BoardTopHandler):
    """``GET /api/top-scores`` with a boards file: the default board's default period."""

    async def get(self) -> None:  # type: ignore[override]
        await super().get(self.service.boards[0].id)

    head = get  # type: ignore[assignment]


class DefaultBoardPlayerHandler(BoardPlayerHandler):
    """``GET /api/players/{id|me}`` with a boards file: on the default board."""

    async def get(self, user_id: str) -> None:  # type: ignore[override]
        await super().get(self.service.boards[0].id, user_id)

    head = get  # type: ignore[assignment]


class DefaultBoardAroundHandler(BoardAroundHandler):
    """``GET /api/players/{id|me}/around`` with a boards file: on the default board."""

    async def get(self, user_id: str) -> None:  # type: ignore[override]
        await super().get(self.service.boards[0].id, user_id)

    head = get  # type: ignore[assignment]
