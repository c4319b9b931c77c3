"""Pages of the whole board: cursors as data, and pages over HTTP (forward, back, and the
seed's answer unchanged without parameters)."""

from __future__ import annotations

import json

import pytest

from handlers.errors import ApiError
from handlers.pages import NEXT, decode_cursor, encode_cursor, page_answer, parse_limit
from server.domain.rank_index import RankIndex
from server.domain.records import BoardRow
from server.domain.topk import rank_key
from tests.conftest import scaled, serving


def test_a_cursor_round_trips_the_rank_key() -> None:
    row = BoardRow("carol", "Carol", 120, 5, 3)
    assert decode_cursor(encode_cursor(NEXT, row)) == (NEXT, rank_key(row))


@pytest.mark.parametrize("cursor", ["", "x", "!!!!", "WyJ4IiwxLDIsImEiXQ", "W10", "é"])
def test_a_cursor_this_api_did_not_give_out_is_400(cursor: str) -> None:
    with pytest.raises(ApiError) as refused:
        decode_cursor(cursor)
    assert (refused.value.status, refused.value.code) == (400, "invalid_cursor")


@pytest.mark.parametrize("raw", ["0", "101", "-1", "ten"])
def test_a_limit_out_of_range_is_400(raw: str) -> None:
    with pytest.raises(ApiError) as refused:
        parse_limit(raw, 10)
    assert (refused.value.status, refused.value.code) == (400, "invalid_limit")


def test_pages_forward_and_back_cover_the_board_once() -> None:
    ranks = RankIndex(BoardRow(f"p{i}", f"P{i}", 100 - i, 0, 1) for i in range(7))
    first = page_answer(ranks, 3, None)
    assert first["prev_cursor"] is None and first["total"] == 7
    second = page_answer(ranks, 3, first["next_cursor"])
    third = page_answer(ranks, 3, second["next_cursor"])
    assert third["next_cursor"] is None
    ids = [r["user_id"] for page in (first, second, third) for r in page["top_scores"]]
    assert ids == [f"p{i}" for i in range(7)]
    assert [r["rank"] for r in third["top_scores"]] == [7]
    back = page_answer(ranks, 3, third["prev_cursor"])
    assert back["top_scores"] == second["top_scores"]


@pytest.mark.gen_test(timeout=scaled(30))
async def test_pages_over_http_and_the_seed_answer_without_parameters() -> None:
    async with serving(top_n=3) as client:
        await client.scored(a=60, b=50, c=40, d=30, e=20)
        plain = await client.request("GET", "/api/top-scores")
        assert json.loads(plain.body) == {
            "top_scores": [
                {"user_id": "a", "username": "A", "score": 60},
                {"user_id": "b", "username": "B", "score": 50},
                {"user_id": "c", "username": "C", "score": 40},
            ]
        }
        page = json.loads((await client.request("GET", "/api/top-scores?limit=2")).body)
        assert [(r["user_id"], r["rank"]) for r in page["top_scores"]] == [("a", 1), ("b", 2)]
        # e jumps from the last place to the first between the two reads: a and b move down
        # one rank, so the next page by offset (ranks 3-4) would give b again; by the cursor
        # it starts after b, whose key did not change.
        await client.scored(e=50)
        nxt = await client.request("GET", f"/api/top-scores?limit=2&cursor={page['next_cursor']}")
        rows = json.loads(nxt.body)["top_scores"]
        assert [(r["user_id"], r["rank"]) for r in rows] == [("c", 4), ("d", 5)]
        bad = await client.request("GET", "/api/top-scores?limit=500")
        assert bad.code == 400 and json.loads(bad.body)["error"] == "invalid_limit"
        worse = await client.request("GET", "/api/top-scores?cursor=nope")
        assert worse.code == 400 and json.loads(worse.body)["error"] == "invalid_cursor"
