"""A player's rank, the players around them, and many players at once, from the pod's
rank index (``service.ranks``, :class:`server.domain.rank_index.RankIndex`).

- ``GET /api/players/me`` (a player's token) and ``GET /api/players/{user_id}``
  (public): the player's row with ``rank`` (1-based), ``total`` (players ranked) and
  ``percentile``.
- ``GET /api/players/{user_id|me}/around?above=5&below=5``: the rows around the player,
  each with its rank, clipped at the ends of the board; a player not ranked gets the top
  rows and ``"ranked": false``.
- ``POST /api/players/lookup`` with ``{"user_ids": [...]}`` (at most
  :data:`MAX_LOOKUP`): each known player's row and rank, in the order asked, and the ids
  not ranked.

Banned, removed and unknown players are not ranked: 404 ``not_ranked``.
"""

from __future__ import annotations

from typing import Any, Final

from handlers.base import ApiHandler, header
from handlers.errors import ApiError, board_loading
from handlers.pages import ranked_row
from handlers.scores import check_content_type
from handlers.strict_json import JsonRefused, loads_strict
from server.domain.rank_index import RankIndex
from server.domain.tokens import MAX_USER_ID_CHARS

MAX_WINDOW: Final = 50  # rows above, and rows below, one player
DEFAULT_WINDOW: Final = 5
MAX_LOOKUP: Final = 100
ME: Final = "me"


def percentile(rank: int, total: int) -> float:
    """The share of ranked players this one ranks above or level with, in percent, to
    two decimals: 100.0 for the first, 100 / total for the last."""
    return round(100 * (total - rank + 1) / total, 2)


def player_answer(ranks: RankIndex, user_id: str) -> dict[str, Any]:
    """``GET /api/players/{id}``'s body.

    Raises:
        ApiError: 404 ``not_ranked``.
    """
    row = ranks.get(user_id)
    rank = ranks.rank_of(user_id)
    if row is None or rank is None:
        raise not_ranked(user_id)
    total = len(ranks)
    return {**ranked_row(row, rank), "total": total, "percentile": percentile(rank, total)}


def around_answer(ranks: RankIndex, user_id: str, above: int, below: int) -> dict[str, Any]:
    """``GET /api/players/{id}/around``'s body: the window, or the top rows for a player
    not ranked."""
    window = ranks.around(user_id, above, below)
    ranked = bool(window)
    if not ranked:
        window = ranks.page(1, above + below + 1)
    return {
        "user_id": user_id,
        "ranked": ranked,
        "total": len(ranks),
        "rows": [ranked_row(row, rank) for rank, row in window],
    }


def lookup_answer(ranks: RankIndex, user_ids: list[str]) -> dict[str, Any]:
    """``POST /api/players/lookup``'s body: the ranked ones in the order asked (each id
    once), and the ids not ranked."""
    rows: list[dict[str, Any]] = []
    missing: list[str] = []
    seen: set[str] = set()
    for user_id in user_ids:
        if user_id in seen:
            continue
        seen.add(user_id)
        row = ranks.get(user_id)
        rank = ranks.rank_of(user_id)
        if row is None or rank is None:
            missing.append(user_id)
        else:
            rows.append(ranked_row(row, rank))
    return {"total": len(ranks), "rows": rows, "not_ranked": missing}


def parse_window(
    raw: str | None, name: str, *, default: int = DEFAULT_WINDOW, most: int = MAX_WINDOW
) -> int:
    """Rows on one side of a player (``above``, ``below``, a rank stream's ``window``):
    0 to ``most`` (default ``default``).

    Raises:
        ApiError: 400 ``invalid_window``.
    """
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or int(raw) > most:
        raise ApiError(400, "invalid_window", f"'{name}' must be a whole number from 0 to {most}")
    return int(raw)


def parse_lookup(body: bytes) -> list[str]:
    """The ids of a lookup body ``{"user_ids": [...]}``.

    Raises:
        ApiError: 400 ``invalid_json`` (not that shape) or ``too_many_players``.
    """
    try:
        data: Any = loads_strict(body)
    except JsonRefused as exc:
        raise ApiError(400, "invalid_json", str(exc)) from None
    ids = data.get("user_ids") if isinstance(data, dict) else None
    if not isinstance(data, dict) or set(data) != {"user_ids"} or not isinstance(ids, list):
        raise ApiError(400, "invalid_json", 'the body must be {"user_ids": [ids]}')
    if len(ids) > MAX_LOOKUP:
        raise ApiError(400, "too_many_players", f"look up at most {MAX_LOOKUP} players at once")
    if not all(isinstance(i, str) and 0 < len(i) <= MAX_USER_ID_CHARS for i in ids):
        raise ApiError(
            400, "invalid_json", f"each user id must be a string of 1 to {MAX_USER_ID_CHARS}"
        )
    return ids


def not_ranked(user_id: str) -> ApiError:
    shown = user_id if len(user_id) <= MAX_USER_ID_CHARS else user_id[:MAX_USER_ID_CHARS] + "…"
    return ApiError(404, "not_ranked", f"{shown!r} is not on the board")


class PlayersHandler(ApiHandler):
    """Reads of the rank index; ``me`` is the caller of a player token."""

    async def player_id(self, given: str) -> str:
        """The id asked for: ``me`` is the caller (401 without a valid token)."""
        if given == ME:
            return (await self.authenticate(header(self.request, "Authorization"))).user_id
        if len(given) > MAX_USER_ID_CHARS:  # no token could carry it
            raise not_ranked(given)
        return given

    def ready_ranks(self) -> RankIndex:
        """The rank index, complete once the board is loaded (the index loads first).

        Raises:
            ApiError: 503 ``not_ready`` until then.
        """
        if not self.service.leaderboard.view.loaded:
            raise board_loading()
        return self.service.ranks


class PlayerHandler(PlayersHandler):
    """``GET /api/players/{id|me}``."""

    async def get(self, user_id: str) -> None:
        self.ready_ranks()  # 503 while the index loads comes before a 401
        player = await self.player_id(user_id)
        self.write_json(player_answer(self.ready_ranks(), player))

    head = get


class AroundHandler(PlayersHandler):
    """``GET /api/players/{id|me}/around``."""

    async def get(self, user_id: str) -> None:
        above = parse_window(self.get_query_argument("above", None), "above")
        below = parse_window(self.get_query_argument("below", None), "below")
        player = await self.player_id(user_id)
        self.write_json(around_answer(self.ready_ranks(), player, above, below))

    head = get


class LookupHandler(PlayersHandler):
    """``POST /api/players/lookup``."""

    def post(self) -> None:
        body = self.request.body  # at most the server's request bound (1 MiB)
        check_content_type(header(self.request, "Content-Type"), bool(body))
        self.write_json(lookup_answer(self.ready_ranks(), parse_lookup(body)))
