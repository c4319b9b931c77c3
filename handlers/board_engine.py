"""The per-board routes when a boards file is served (issue 14): the board's own
operator, order, periods and seasons, from :class:`actors.boards.BoardsRuntime`.

Without a file the one board is the original one and ``handlers/board_routes.py`` answers
with the original handlers; with a file those routes call here. Answers:

- ``POST /api/boards/{board}/scores``: ``{"status", "board", "user_id", "periods":
  {name: {"season", "score", "rank", "total"}}}``, the score and rank in every period;
- the reads answer in the shapes of the original routes, with ``board``, ``period`` and
  ``season`` added.
"""

from __future__ import annotations

import hashlib
from typing import Any

from actors.boards import BoardsRuntime, PeriodLive
from handlers.base import ApiHandler, ask_actor, header
from handlers.boards import season_answer
from handlers.errors import ApiError, failure_refusal, refusal
from handlers.pages import page_answer, parse_limit, ranked_row
from handlers.players import around_answer, not_ranked, parse_window, player_answer
from handlers.scores import check_content_type, parse_body, parse_idempotency_key
from server.domain.board_writes import (
    BoardApplied,
    BoardBanned,
    BoardCommand,
    BoardDecision,
    BoardReplayed,
)
from server.domain.boards import BoardSpec, validate_value
from server.domain.errors import DomainError, refusal_of
from server.domain.rank_index import RankIndex
from server.domain.records import Banned, Decision
from server.domain.seasons import Period, SeasonError, previous_seasons, season_named
from server.store.port import StoreError


def runtime_of(handler: ApiHandler) -> BoardsRuntime:
    runtime = handler.service.board_runtime
    assert runtime is not None  # these handlers serve a boards file only
    if not runtime.loaded:
        raise ApiError(503, "not_ready", "the boards are loading", {"Retry-After": "1"})
    return runtime


async def season_index(
    handler: ApiHandler, board: BoardSpec, period: Period, season_id: str | None
) -> tuple[PeriodLive, str, RankIndex]:
    """The period's live part, the season asked for (default: the current one) and its
    rank index.

    Raises:
        ApiError: 404 ``unknown_season`` (not a season of the period, or not kept);
            503 ``database_unavailable`` when an ended season must be read and the store
            cannot be.
    """
    runtime = runtime_of(handler)
    live = runtime.period(board.id, period.name)
    if season_id is None or season_id == live.season.season_id:
        return live, live.season.season_id, live.ranks.index
    try:
        named = season_named(period, season_id)
    except SeasonError as exc:
        raise ApiError(404, "unknown_season", str(exc)) from None
    if not runtime.kept(live, named.season_id):
        raise ApiError(
            404,
            "unknown_season",
            f"season {season_id!r} of {period.name!r} is not kept "
            f"(the current one is {live.season.season_id!r}, {board.keep_seasons} ended "
            "ones are kept)",
        )
    try:
        index = await runtime.season_index(board.id, period.name, named.season_id)
    except StoreError:
        raise ApiError(
            503, "database_unavailable", "the store cannot be read now", {"Retry-After": "1"}
        ) from None
    return live, named.season_id, index


def scope(board: BoardSpec, period: Period, season: str) -> dict[str, Any]:
    return {"board": board.id, "period": period.name, "season": season}


async def answer_top(handler: ApiHandler, board: BoardSpec, period: Period) -> None:
    """``GET /api/boards/{board}/top``."""
    _, season, index = await season_index(
        handler, board, period, handler.get_query_argument("season", None)
    )
    limit = parse_limit(handler.get_query_argument("limit", None), board.top_n)
    page = page_answer(index, limit, handler.get_query_argument("cursor", None))
    handler.write_json({**scope(board, period, season), **page})


async def answer_player(
    handler: ApiHandler, board: BoardSpec, period: Period, user_id: str, *, around: bool
) -> None:
    """``GET /api/boards/{board}/players/{id|me}`` and ``.../around``."""
    _, season, index = await season_index(
        handler, board, period, handler.get_query_argument("season", None)
    )
    if around:
        above = parse_window(handler.get_query_argument("above", None), "above")
        below = parse_window(handler.get_query_argument("below", None), "below")
        body = around_answer(index, user_id, above, below)
    else:
        if index.get(user_id) is None:
            raise not_ranked(user_id)
        body = player_answer(index, user_id)
    handler.write_json({**scope(board, period, season), **body})


def as_decision(decision: BoardDecision) -> Decision | None:
    """A board's refusal as the original board's decision (the same errors)."""
    if isinstance(decision, BoardBanned):
        return Banned()
    if isinstance(decision, BoardApplied | BoardReplayed):
        return None
    return decision


async def post_score(handler: ApiHandler, board: BoardSpec, body: bytes) -> dict[str, Any]:
    """Apply an update to ``board`` and answer the player's score and rank in every
    period.

    Raises:
        ApiError: the request's refusal (as ``POST /api/update-score``'s).
    """
    service = handler.service
    runtime = runtime_of(handler)
    identity = handler.authenticate(header(handler.request, "Authorization"))
    check_content_type(header(handler.request, "Content-Type"), bool(body.strip()))
    field = board.value_field
    data = parse_body(body, frozenset({field, "action_token"}))
    spent = None
    if board.action_points and service.actions is not None:
        try:
            action = service.actions.verify(
                data.get("action_token"), identity.user_id, board.id, dict(board.action_points)
            )
        except DomainError as refused:
            raise refusal(refused) from None
        spent = action.spent
        value: Any = action.points if board.operator == "incr" else data.get(field)
    else:
        value = data.get(field, 1 if board.operator == "incr" else None)
    problem = validate_value(board, value)
    if problem is not None:
        if field == "increment":
            raise ApiError(400, "invalid_increment", problem)
        raise ApiError(400, "invalid_score", problem)
    key = parse_idempotency_key(header(handler.request, "Idempotency-Key"))
    fingerprint = None
    if key is not None:
        jti = "" if spent is None else spent.jti
        fingerprint = hashlib.sha256(f"{board.id}\0{value}\0{jti}".encode()).hexdigest()[:32]
    command = BoardCommand(
        board=board.id,
        user_id=identity.user_id,
        username=identity.username,
        value=value,
        now_ms=service.clock_ms(),
        idempotency_key=key,
        action=spent,
        fingerprint=fingerprint,
    )
    writer_key = runtime.writer_key(board.id, identity.user_id)
    decision: BoardDecision = await ask_actor(
        service, lambda: runtime.writers.actor_for(writer_key), command
    )
    decided = as_decision(decision)
    if decided is not None:
        against = refusal_of(decided, board.rate_limit_per_minute)
        assert against is not None
        service.metrics.board_updates.labels(board.id, against.code).inc()
        raise refusal(against)
    if isinstance(decision, BoardReplayed):
        handler.set_header("Idempotent-Replayed", "true")
        scores = dict(zip((p.name for p in board.periods), decision.scores, strict=False))
        outcome = "replayed"
    else:
        assert isinstance(decision, BoardApplied)
        held = {s.period: s.standing.score for s in decision.record.standings.current}
        scores = {p.name: held[p.name] for p in board.periods if p.name in held}
        outcome = "applied"
    service.metrics.board_updates.labels(board.id, outcome).inc()
    periods: dict[str, Any] = {}
    for period in board.periods:
        live = runtime.period(board.id, period.name)
        index = live.ranks.index
        periods[period.name] = {
            "season": live.season.season_id,
            "score": scores.get(period.name),
            "rank": index.rank_of(identity.user_id),
            "total": len(index),
        }
    return {
        "status": "success",
        "board": board.id,
        "user_id": identity.user_id,
        "periods": periods,
    }


async def seasons_answer(handler: ApiHandler, board: BoardSpec, period: Period) -> dict[str, Any]:
    """``GET /api/boards/{board}/seasons?period=``: the current season and the ended ones
    kept (newest first), each ended one with its final top N.

    Raises:
        ApiError: 503 ``database_unavailable`` when an ended season must be read and the
            store cannot be.
    """
    runtime = runtime_of(handler)
    live = runtime.period(board.id, period.name)
    seasons: list[dict[str, Any]] = [{**season_answer(live.season), "state": "current"}]
    for ended in previous_seasons(period, live.season, board.keep_seasons):
        _, _, index = await season_index(handler, board, period, ended.season_id)
        seasons.append(
            {
                **season_answer(ended),
                "state": "ended",
                "total": len(index),
                "top": [ranked_row(row, rank) for rank, row in index.page(1, board.top_n)],
            }
        )
    return {"board": board.id, "period": period.name, "seasons": seasons}


async def reset(
    handler: ApiHandler, board: BoardSpec, period: Period, user_id: str
) -> dict[str, Any]:
    """The admin reset of one player in the current season of one period of ``board``.

    Raises:
        ApiError: 404 ``not_found`` (no record on this board); the store's failures.
    """
    runtime = runtime_of(handler)
    live = runtime.period(board.id, period.name)
    season = live.season.season_id
    try:
        record = await handler.service.store.reset_board_standing(
            runtime.rules[board.id], user_id, period.name, season
        )
    except StoreError as exc:
        raise failure_refusal(exc, handler.service.store.retry_after_s) from None
    if record is None:
        raise ApiError(404, "not_found", f"no player {user_id[:64]!r} on board {board.id!r}")
    runtime.took(record)
    return {**scope(board, period, season), "user_id": user_id, "reset": True}
