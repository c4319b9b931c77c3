"""Pages of the whole board: ``GET /api/top-scores?limit=&cursor=``.

A cursor is the rank key (score, when reached, user id) of the row a page ended or began
at, with the direction to go from it, encoded opaquely (URL-safe base64 of JSON). Keyset
paging on the rank index: a player who did not move between two page reads is never
skipped or repeated at the boundary, whoever else moved.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Final

from handlers.errors import ApiError
from server.domain.rank_index import RankIndex
from server.domain.records import BoardRow
from server.domain.tokens import MAX_USER_ID_CHARS
from server.domain.topk import RankKey, rank_key

MAX_LIMIT: Final = 100
MAX_CURSOR_CHARS: Final = 512
NEXT: Final = "n"
PREVIOUS: Final = "p"


def ranked_row(row: BoardRow, rank: int) -> dict[str, Any]:
    """One row of an answer: who, their score and rank."""
    return {"user_id": row.user_id, "username": row.username, "score": row.score, "rank": rank}


def encode_cursor(direction: str, row: BoardRow) -> str:
    """The cursor that pages from ``row`` in ``direction`` (:data:`NEXT` or :data:`PREVIOUS`)."""
    score, reached_ms, user_id = rank_key(row)
    raw = json.dumps([direction, -score, reached_ms, user_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, RankKey]:
    """The direction and rank key of a cursor :func:`encode_cursor` made.

    Raises:
        ApiError: 400 ``invalid_cursor``.
    """
    invalid = ApiError(400, "invalid_cursor", "the cursor is not one this API gave out")
    if not cursor or len(cursor) > MAX_CURSOR_CHARS or not cursor.isascii():
        raise invalid
    try:
        data: Any = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error):
        raise invalid from None
    if not (
        isinstance(data, list)
        and len(data) == 4
        and data[0] in (NEXT, PREVIOUS)
        and all(type(v) is int and v >= 0 for v in data[1:3])
        and isinstance(data[3], str)
        and 0 < len(data[3]) <= MAX_USER_ID_CHARS
    ):
        raise invalid
    return data[0], (-data[1], data[2], data[3])


def parse_limit(raw: str | None, default: int) -> int:
    """``limit``: 1 to :data:`MAX_LIMIT`.

    Raises:
        ApiError: 400 ``invalid_limit``.
    """
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise ApiError(
            400, "invalid_limit", f"'limit' must be a whole number from 1 to {MAX_LIMIT}"
        )
    return int(raw)


def page_answer(ranks: RankIndex, limit: int, cursor: str | None) -> dict[str, Any]:
    """One page of the board, with the cursors to the pages after and before it (``None``
    at either end)."""
    if cursor is None:
        rows = ranks.page(1, limit)
    else:
        direction, key = decode_cursor(cursor)
        rows = ranks.after(key, limit) if direction == NEXT else ranks.before(key, limit)
    last_rank = rows[-1][0] if rows else 0
    return {
        "top_scores": [ranked_row(row, rank) for rank, row in rows],
        "total": len(ranks),
        "next_cursor": encode_cursor(NEXT, rows[-1][1])
        if rows and last_rank < len(ranks)
        else None,
        "prev_cursor": encode_cursor(PREVIOUS, rows[0][1]) if rows and rows[0][0] > 1 else None,
    }
