"""Admin response to cheating over HTTP: lookup, reset, remove/ban, unban; the board follows."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from server.support.logs import JsonFormatter
from tests.conftest import Client, body_of, eventually, make_token, scaled, serving

pytestmark = pytest.mark.gen_test(timeout=scaled(30))

ADMIN = make_token("ops", scope="scores:admin leaderboard:read", ttl_s=3600)


async def admin(client: Client, method: str, path: str, token: str = ADMIN) -> Any:
    response = await client.request(
        method, path, b"" if method == "POST" else None, {"Authorization": f"Bearer {token}"}
    )
    return response


async def wait_for_board(client: Client, expected: list[str]) -> None:
    """Wait until GET /api/top-scores lists the users ``expected``, in that order."""

    async def user_ids() -> list[str]:
        return [row["user_id"] for row in await client.top()]

    await eventually(user_ids, f"the board lists {expected}", until=lambda ids: ids == expected)


async def seed_board(client: Client, scores: dict[str, int]) -> None:
    for user, score in scores.items():
        assert (await client.update(make_token(user), {"increment": score})).code == 200


async def test_lookup_gives_score_and_rank() -> None:
    async with serving() as client:
        await seed_board(client, {"a": 30, "b": 20, "c": 10})
        response = await admin(client, "GET", "/api/users/b")
        assert body_of(response) == {
            "user_id": "b",
            "username": "b",
            "score": 20,
            "rank": 2,
            "banned": False,
        }
        missing = await admin(client, "GET", "/api/users/nobody")
        assert missing.code == 404 and body_of(missing)["error"] == "not_found"


async def test_lookup_reads_the_rank_from_the_index_and_the_ban_from_the_record() -> None:
    async with serving(rate_limit_per_minute=0) as client:
        await seed_board(client, {"a": 30, "b": 20})
        # The index takes a removal the store has not seen (as during a feed's lag): the
        # rank follows the index, "banned" the stored record.
        client.running.service.live_ranks.remove("a", 10**6)
        b = body_of(await admin(client, "GET", "/api/users/b"))
        a = body_of(await admin(client, "GET", "/api/users/a"))
        assert (b["rank"], b["banned"]) == (1, False)
        assert (a["rank"], a["banned"], a["score"]) == (None, False, 30)


async def test_non_admin_tokens_are_refused() -> None:
    async with serving() as client:
        await seed_board(client, {"a": 5})
        for method, path in [
            ("GET", "/api/users/a"),
            ("POST", "/api/users/a/reset"),
            ("DELETE", "/api/users/a"),
            ("DELETE", "/api/users/a/ban"),
        ]:
            player = await admin(client, method, path, make_token("a"))
            assert player.code == 403 and body_of(player)["error"] == "forbidden"
            list_scope = await admin(client, method, path, make_token("x", scope=["other"]))
            assert list_scope.code == 403
            anonymous = await client.request(method, path, b"" if method == "POST" else None)
            assert anonymous.code == 401
        assert (await client.top())[0]["score"] == 5  # nothing changed


async def test_reset_drops_a_member_and_the_board_refills_from_the_store() -> None:
    # top_n=2 with 3 users: after the reset the third must come back from the store.
    async with serving(top_n=2) as client:
        await seed_board(client, {"a": 30, "b": 20, "c": 10})
        await wait_for_board(client, ["a", "b"])
        ws = await client.websocket()
        await ws.read_message()
        reset = await admin(client, "POST", "/api/users/a/reset")
        assert body_of(reset) == {"user_id": "a", "score": 0}
        await wait_for_board(client, ["b", "c"])
        update = json.loads(await ws.read_message())  # type: ignore[arg-type]
        assert [row["user_id"] for row in update["top_scores"]] == ["b", "c"]
        # The player may climb again from zero.
        assert body_of(await client.update(make_token("a"), {"increment": 1}))["new_score"] == 1
        ws.close()


async def test_removed_users_leave_the_board_and_are_refused_until_unbanned() -> None:
    async with serving(top_n=2) as client:
        await seed_board(client, {"a": 30, "b": 20, "c": 10})
        removed = await admin(client, "DELETE", "/api/users/a")
        assert body_of(removed) == {"user_id": "a", "banned": True}
        await wait_for_board(client, ["b", "c"])
        refused = await client.update(make_token("a"))
        assert refused.code == 403 and body_of(refused)["error"] == "user_banned"
        looked_up = body_of(await admin(client, "GET", "/api/users/a"))
        assert (looked_up["banned"], looked_up["rank"], looked_up["score"]) == (True, None, 0)
        lifted = await admin(client, "DELETE", "/api/users/a/ban")
        assert body_of(lifted) == {"user_id": "a", "banned": False}
        assert body_of(await client.update(make_token("a"), {"increment": 15}))["new_score"] == 15
        await wait_for_board(client, ["b", "a"])


async def test_admin_actions_on_unknown_users_are_404_and_audited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with serving() as client:
        await seed_board(client, {"a": 3})
        missing = await admin(client, "POST", "/api/users/ghost/reset")
        assert missing.code == 404
        assert (await admin(client, "DELETE", "/api/users/a")).code == 200
    lines = [
        json.loads(JsonFormatter().format(r))
        for r in caplog.records
        if r.name == "scoreboard.audit" and r.getMessage() == "admin"
    ]
    assert [(line["action"], line["user_id"], line["outcome"]) for line in lines] == [
        ("reset", "ghost", "not_found"),
        ("remove", "a", "applied"),
    ]
    assert all(line["admin"] == "ops" for line in lines)
    everything = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    assert ADMIN not in everything
