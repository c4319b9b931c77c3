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
import json
from functools import lru_cache
from typing import Any

from actors.boards import BoardsRuntime, PeriodLive
from handlers.base import ApiHandler, ask_actor, header
from handlers.boards import season_answer
from handlers.errors import ApiError, failure_refusal, refusal
from handlers.pages import page_answer, parse_limit, ranked_row
from handlers.players import around_answer, parse_window, player_answer
from handlers.scores import check_content_type, parse_body, parse_idempotency_key
from server.domain.board_writes import (
    BoardApplied,
    BoardBanned,
    BoardCommand,
    BoardDecision,
    BoardReplayed,
    landed_scores,
)
from server.domain.boards import BoardSpec, validate_value
from server.domain.errors import DomainError, refusal_of
from server.domain.rank_index import RankIndex
from server.domain.records import Banned, Decision, SpentAction
from server.domain.seasons import Period, SeasonError, season_named
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
    if not live.keeps(named.season_id):
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


async def top_answer(
    handler: ApiHandler, board: BoardSpec, period: Period
) -> tuple[bytes, str | None]:
    """``GET /api/boards/{board}/top``'s body, and its ETag when it has one. A plain read
    (no season, limit or cursor) answers the current season's top N as
    ``GET /api/top-scores`` does, encoded once per published view; otherwise a page of
    the season asked for."""
    season_id = handler.get_query_argument("season", None)
    limit = handler.get_query_argument("limit", None)
    cursor = handler.get_query_argument("cursor", None)
    live, season, index = await season_index(handler, board, period, season_id)
    if season_id is None and limit is None and cursor is None:
        return live.plain_top()
    page = page_answer(index, parse_limit(limit, board.top_n), cursor)
    body = json.dumps({**scope(board, period, season), **page}, separators=(",", ":"))
    return body.encode(), None


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
        body = player_answer(index, user_id)
    handler.write_json({**scope(board, period, season), **body})


@lru_cache(maxsize=128)
def body_fields(board: BoardSpec) -> frozenset[str]:
    """The fields an update's body may have on ``board``."""
    return frozenset({board.value_field, "action_token"})


def as_decision(decision: BoardDecision) -> Decision | None:
    """A board's refusal as the original board's decision (the same errors)."""
    if isinstance(decision, BoardBanned):
        return Banned()
    if isinstance(decision, BoardApplied | BoardReplayed):
        return None
    return decision


async def post_score(handler: ApiHandler, board: BoardSpec, body: bytes) -> tuple[str, str]:
    """Apply an update to ``board``; return the answer (the player's score and rank in
    every period, as JSON text) and the outcome (``applied`` or ``replayed``).

    Raises:
        ApiError: the request's refusal (as ``POST /api/update-score``'s).
    """
    service = handler.service
    runtime = runtime_of(handler)
    identity = await handler.authenticate(header(handler.request, "Authorization"))
    check_content_type(header(handler.request, "Content-Type"), bool(body.strip()))
    data = parse_body(body, body_fields(board))
    value, spent = board_value(handler, board, data, identity.user_id)
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
        service.metrics.board_update(board.id, against.code)
        raise refusal(against)
    rules = runtime.rules[board.id]
    if isinstance(decision, BoardReplayed):
        handler.set_header("Idempotent-Replayed", "true")
        scores = decision.scores
        outcome = "replayed"
    else:
        assert isinstance(decision, BoardApplied)
        scores = landed_scores(board, decision.record.standings, rules.seasons, command.now_ms)
        outcome = "applied"
    service.metrics.board_update(board.id, outcome)
    return answer_json(runtime, board, identity.user_id, scores, command.now_ms), outcome


def board_value(
    handler: ApiHandler, board: BoardSpec, data: dict[str, Any], user_id: str
) -> tuple[int, SpentAction | None]:
    """The value an update's body gives ``board`` (with proof of action: an ``incr``
    board's is the action's points), and the action token it spends.

    Raises:
        ApiError: 400 ``invalid_increment`` / ``invalid_score``, or the action's refusal.
    """
    actions = handler.service.actions
    field = board.value_field
    spent = None
    if board.action_points and actions is not None:
        try:
            points = dict(board.action_points)
            action = actions.verify(data.get("action_token"), user_id, board.id, points)
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
    return value, spent


def answer_json(
    runtime: BoardsRuntime,
    board: BoardSpec,
    user_id: str,
    scores: tuple[int, ...],
    accepted_ms: int,
) -> str:
    """An update's answer: in each period, the season the update landed in (the one of
    its acceptance time: the current one, or the one just ended when this pod's clock was
    behind another's at the boundary), the score there and the rank there now, from this
    pod's indexes (which took the write before the answer; ``null`` for a season it does
    not hold in memory)."""
    seasons = runtime.rules[board.id].seasons
    parts = []
    for period, score in zip(board.periods, scores, strict=True):
        season = seasons.current(period, accepted_ms).season_id
        index = runtime.held_index(board.id, period.name, season)
        rank = None if index is None else index.rank_of(user_id)
        total = 0 if index is None else len(index)
        parts.append(period_json(period.name, season, score, rank, total))
    shown_id = json.dumps(user_id, ensure_ascii=False)
    return (
        f'{{"status":"success","board":"{board.id}","user_id":{shown_id},'
        f'"periods":{{{",".join(parts)}}}}}'
    )


def period_json(name: str, season: str, score: int | None, rank: int | None, total: int) -> str:
    """One period's entry of an update's answer, encoded by hand (as the original
    answer is): ids of boards, periods and seasons are of ``[0-9A-Za-z_:+-]``, never
    escaped; ``None`` is ``null``."""
    shown = "null" if score is None else score
    place = "null" if rank is None else rank
    return f'"{name}":{{"season":"{season}","score":{shown},"rank":{place},"total":{total}}}'


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
    for ended in live.ended_kept():
        try:
            total, top = await runtime.final(board.id, period.name, ended.season_id)
        except StoreError:
            raise ApiError(
                503, "database_unavailable", "the store cannot be read now", {"Retry-After": "1"}
            ) from None
        seasons.append(
            {
                **season_answer(ended),
                "state": "ended",
                "total": total,
                "top": [ranked_row(row, rank) for rank, row in top],
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
