"""The players' answers as data: rank, total, percentile, windows and lookups from a rank
index, and the refusals of bad parameters."""

from __future__ import annotations

import json

import pytest

from handlers.errors import ApiError
from handlers.players import (
    MAX_LOOKUP,
    around_answer,
    lookup_answer,
    parse_lookup,
    parse_window,
    percentile,
    player_answer,
)
from server.domain.rank_index import RankIndex
from server.domain.records import BoardRow
from tests.conftest import make_token, scaled, serving

TOO_MANY = ('{"user_ids": [' + ",".join(['"a"'] * (MAX_LOOKUP + 1)) + "]}").encode()


def board(*scores: int) -> RankIndex:
    return RankIndex(BoardRow(f"p{i}", f"P{i}", s, 0, 1) for i, s in enumerate(scores))


def test_a_player_answer_has_rank_total_and_percentile() -> None:
    ranks = board(10, 30, 20, 40)  # p3 40, p1 30, p2 20, p0 10
    assert player_answer(ranks, "p1") == {
        "user_id": "p1",
        "username": "P1",
        "score": 30,
        "rank": 2,
        "total": 4,
        "percentile": 75.0,
    }
    assert player_answer(ranks, "p3")["percentile"] == 100.0
    assert player_answer(ranks, "p0")["percentile"] == 25.0


def test_a_player_not_ranked_is_404_not_ranked() -> None:
    with pytest.raises(ApiError) as refused:
        player_answer(board(1), "nobody")
    assert (refused.value.status, refused.value.code) == (404, "not_ranked")


def test_percentile_rounds_to_two_decimals() -> None:
    assert percentile(1, 3) == 100.0
    assert percentile(2, 3) == 66.67
    assert percentile(3, 3) == 33.33


def test_around_clips_at_the_ends_and_gives_the_top_to_a_player_not_ranked() -> None:
    ranks = board(50, 40, 30, 20, 10)
    answer = around_answer(ranks, "p1", 2, 1)
    assert answer["ranked"] is True and answer["total"] == 5
    assert [(r["user_id"], r["rank"]) for r in answer["rows"]] == [
        ("p0", 1),
        ("p1", 2),
        ("p2", 3),
    ]
    outsider = around_answer(ranks, "nobody", 1, 1)
    assert outsider["ranked"] is False
    assert [r["rank"] for r in outsider["rows"]] == [1, 2, 3]


def test_lookup_keeps_the_order_asked_once_each_and_names_the_missing() -> None:
    answer = lookup_answer(board(5, 9), ["p0", "ghost", "p1", "p0"])
    assert [(r["user_id"], r["rank"]) for r in answer["rows"]] == [("p0", 2), ("p1", 1)]
    assert answer["not_ranked"] == ["ghost"] and answer["total"] == 2


@pytest.mark.parametrize("raw", ["-1", "51", "x", "1.5", "", "\uff15"])  # \uff15: a fullwidth 5
def test_a_window_out_of_range_is_400_invalid_window(raw: str) -> None:
    with pytest.raises(ApiError) as refused:
        parse_window(raw, "above")
    assert (refused.value.status, refused.value.code) == (400, "invalid_window")


def test_a_window_defaults_to_5_and_takes_0_to_50() -> None:
    assert parse_window(None, "below") == 5
    assert parse_window("0", "below") == 0
    assert parse_window("50", "below") == 50


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"[]", "invalid_json"),
        (b'{"user_ids": "p1"}', "invalid_json"),
        (b'{"user_ids": [], "x": 1}', "invalid_json"),
        (b'{"user_ids": [1]}', "invalid_json"),
        (b'{"user_ids": [""]}', "invalid_json"),
        (b"{", "invalid_json"),
        (
            ('{"user_ids": [' + ",".join(['"a"'] * (MAX_LOOKUP + 1)) + "]}").encode(),
            "too_many_players",
        ),
    ],
)
def test_a_bad_lookup_body_is_refused(body: bytes, code: str) -> None:
    with pytest.raises(ApiError) as refused:
        parse_lookup(body)
    assert (refused.value.status, refused.value.code) == (400, code)


def test_a_lookup_body_gives_its_ids() -> None:
    assert parse_lookup(b'{"user_ids": ["a", "b"]}') == ["a", "b"]


# --- over HTTP, on a real server -----------------------------------------------------


@pytest.mark.gen_test(timeout=scaled(30))
async def test_a_player_reads_their_rank_and_anyone_reads_anyones() -> None:
    async with serving() as client:
        await client.scored(ann=30, bob=20, cid=10)
        mine = await client.request(
            "GET", "/api/players/me", headers={"Authorization": f"Bearer {make_token('bob')}"}
        )
        assert mine.code == 200
        assert json.loads(mine.body) == {
            "user_id": "bob",
            "username": "Bob",
            "score": 20,
            "rank": 2,
            "total": 3,
            "percentile": 66.67,
        }
        public = await client.request("GET", "/api/players/cid")
        assert json.loads(public.body)["rank"] == 3
        missing = await client.request("GET", "/api/players/nobody")
        assert missing.code == 404 and json.loads(missing.body)["error"] == "not_ranked"
        anonymous = await client.request("GET", "/api/players/me")
        assert anonymous.code == 401 and json.loads(anonymous.body)["error"] == "missing_token"


@pytest.mark.gen_test(timeout=scaled(30))
async def test_a_write_moves_the_rank_at_once() -> None:
    async with serving() as client:
        await client.scored(ann=30, bob=20)
        await client.scored(bob=15)
        answer = await client.request("GET", "/api/players/bob")
        assert json.loads(answer.body)["rank"] == 1


@pytest.mark.gen_test(timeout=scaled(30))
async def test_around_and_lookup_over_http() -> None:
    async with serving() as client:
        await client.scored(a=50, b=40, c=30, d=20, e=10)
        around = await client.request("GET", "/api/players/c/around?above=1&below=1")
        assert [(r["user_id"], r["rank"]) for r in json.loads(around.body)["rows"]] == [
            ("b", 2),
            ("c", 3),
            ("d", 4),
        ]
        bad = await client.request("GET", "/api/players/c/around?above=99")
        assert bad.code == 400 and json.loads(bad.body)["error"] == "invalid_window"
        lookup = await client.request(
            "POST",
            "/api/players/lookup",
            json.dumps({"user_ids": ["e", "zz", "a"]}),
            {"Content-Type": "application/json"},
        )
        body = json.loads(lookup.body)
        assert [(r["user_id"], r["rank"]) for r in body["rows"]] == [("e", 5), ("a", 1)]
        assert body["not_ranked"] == ["zz"]
