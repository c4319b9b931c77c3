"""The whole service, property-based: after any interleaving of increments, bans (removals),
unbans and resets sent over HTTP at once, the rank index holds the store's order; every
player's rank, window and the pages of the board (forward, then back) agree with it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.domain.records import BoardRow
from tests.conftest import Client, make_token, serving

USERS = ["ann", "bob", "cid", "dee", "eve", "fay"]
ADMIN = make_token("ops", scope="scores:admin leaderboard:read", ttl_s=3600)

operation = st.one_of(
    st.tuples(st.just("increment"), st.sampled_from(USERS), st.integers(1, 4)),
    st.tuples(st.sampled_from(["remove", "unban", "reset"]), st.sampled_from(USERS), st.none()),
)
# Rounds of operations; those of one round are sent at once (their order is the server's).
rounds = st.lists(st.lists(operation, min_size=1, max_size=6), min_size=1, max_size=4)


async def send(client: Client, op: tuple[str, str, int | None]) -> None:
    kind, user, amount = op
    if kind == "increment":
        answer = await client.update(make_token(user, name=user.title()), {"increment": amount})
        assert answer.code in (200, 403), answer.body  # 403: banned
        return
    method, path = {
        "remove": ("DELETE", f"/api/users/{user}"),
        "unban": ("DELETE", f"/api/users/{user}/ban"),
        "reset": ("POST", f"/api/users/{user}/reset"),
    }[kind]
    body = b"" if method == "POST" else None
    answer = await client.request(method, path, body, {"Authorization": f"Bearer {ADMIN}"})
    assert answer.code in (200, 404), answer.body  # 404: no such user yet


async def get(client: Client, path: str) -> Any:
    response = await client.request("GET", path)
    return response.code, json.loads(response.body)


async def check_agreement(client: Client, window: int, limit: int) -> None:
    service = client.running.service
    board: list[BoardRow] = await service.store.top(1000)  # the store's order: the truth
    assert [service.ranks.at(r) for r in range(1, len(service.ranks) + 1)] == board
    ranked = {row.user_id: rank for rank, row in enumerate(board, start=1)}
    for user in USERS:
        code, answer = await get(client, f"/api/players/{user}")
        if user not in ranked:
            assert (code, answer["error"]) == (404, "not_ranked")
            continue
        rank = ranked[user]
        assert (code, answer["rank"], answer["total"]) == (200, rank, len(board))
        _, around = await get(client, f"/api/players/{user}/around?above={window}&below={window}")
        first = max(rank - window, 1)
        want = [(r, row.user_id) for r, row in enumerate(board, 1)][first - 1 : rank + window]
        assert [(r["rank"], r["user_id"]) for r in around["rows"]] == want
    # Pages forward to the end, then back to the start: the same rows, each once.
    pages: list[list[str]] = []
    _, page = await get(client, f"/api/top-scores?limit={limit}")
    while True:
        pages.append([r["user_id"] for r in page["top_scores"]])
        if page["next_cursor"] is None:
            break
        _, page = await get(client, f"/api/top-scores?limit={limit}&cursor={page['next_cursor']}")
    assert [u for p in pages for u in p] == [row.user_id for row in board]
    back = [pages[-1]]
    while page["prev_cursor"] is not None:
        _, page = await get(client, f"/api/top-scores?limit={limit}&cursor={page['prev_cursor']}")
        back.append([r["user_id"] for r in page["top_scores"]])
    assert back[::-1] == pages


async def run(history: list[list[tuple[str, str, int | None]]], window: int, limit: int) -> None:
    async with serving(rate_limit_per_minute=0, top_n=3) as client:
        for ops in history:
            await asyncio.gather(*(send(client, op) for op in ops))
        await check_agreement(client, window, limit)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(rounds, st.integers(0, 3), st.integers(1, 4))
def test_any_interleaving_leaves_the_index_in_the_stores_order(
    history: list[list[tuple[str, str, int | None]]], window: int, limit: int
) -> None:
    asyncio.run(run(history, window, limit))
