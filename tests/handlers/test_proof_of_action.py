"""Proof of action over HTTP: points from the action, each token spent once, across apps."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import jwt
import pytest

from tests.conftest import body_of, make_token, mint_action_token, scaled, serving

pytestmark = pytest.mark.gen_test(timeout=scaled(30))

ACTION_SECRET = "action-service-secret-of-32-bytes-or-more"
ACTIONS = {
    "action_secret": ACTION_SECRET,
    "action_points": (("kill", 10), ("quest", 50)),
}


def action(sub: str, act: str, jti: str, **kwargs: int) -> dict[str, object]:
    return {"action_token": mint_action_token(ACTION_SECRET, sub, act, jti, **kwargs)}


async def test_points_come_from_the_action_and_a_token_is_spent_once() -> None:
    async with serving(**ACTIONS) as client:
        alice = make_token("alice")
        first = await client.update(alice, action("alice", "quest", "q-1"))
        assert body_of(first) == {"status": "success", "new_score": 50, "rank": 1, "total": 1}
        replay = await client.update(alice, action("alice", "quest", "q-1"))
        assert replay.code == 409
        assert body_of(replay)["error"] == "action_replayed"
        matching = await client.update(alice, {**action("alice", "kill", "k-1"), "increment": 10})
        assert body_of(matching)["new_score"] == 60


async def test_an_action_token_naming_another_board_is_refused_on_this_one() -> None:
    async with serving(**ACTIONS) as client:
        alice = make_token("alice")

        def scoped(board: str, jti: str) -> dict[str, object]:
            now = int(time.time())
            claims = {"sub": "alice", "jti": jti, "act": "kill", "iat": now, "exp": now + 60}
            token = jwt.encode({**claims, "brd": board}, ACTION_SECRET, algorithm="HS256")
            return {"action_token": token}

        elsewhere = await client.update(alice, scoped("laps", "b-1"))
        assert (elsewhere.code, body_of(elsewhere)["error"]) == (403, "action_forbidden")
        here = await client.update(alice, scoped("main", "b-2"))  # the default board's id
        assert body_of(here)["new_score"] == 10


# Bodies are built inside the test: a token minted at collection could expire before a
# long suite reaches the test, and then be refused for that instead.
@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (lambda: {}, 400, "invalid_action"),
        (lambda: {"increment": 5}, 400, "invalid_action"),
        (lambda: action("alice", "quest", "j", ttl_s=-120), 400, "invalid_action"),
        (lambda: action("alice", "dance", "j"), 400, "invalid_action"),
        (lambda: action("bob", "quest", "j"), 403, "action_forbidden"),
        (lambda: {**action("alice", "kill", "j"), "increment": 100}, 400, "invalid_increment"),
        (lambda: {**action("alice", "kill", "j"), "increment": True}, 400, "invalid_increment"),
    ],
    ids=[
        "missing",
        "increment-only",
        "expired",
        "unknown-type",
        "other-player",
        "tampered",
        "tampered-bool",
    ],
)
async def test_bad_actions_are_refused_and_apply_nothing(
    body: Callable[[], dict[str, object]], status: int, code: str
) -> None:
    async with serving(**ACTIONS) as client:
        response = await client.update(make_token("alice"), body())
        assert response.code == status
        assert body_of(response)["error"] == code
        assert await client.top() == []


async def test_without_the_secret_updates_work_as_before() -> None:
    async with serving() as client:
        response = await client.update(make_token("alice"), {"increment": 3})
        assert body_of(response)["new_score"] == 3


async def test_a_token_replayed_at_once_on_two_apps_sharing_the_store_wins_once(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "shared.db")
    async with (
        serving(sqlite_path=path, **ACTIONS) as one,
        serving(sqlite_path=path, **ACTIONS) as two,
    ):
        alice = make_token("alice")
        for round_ in range(5):
            body = action("alice", "kill", f"race-{round_}")
            responses = await asyncio.gather(
                one.update(alice, body), two.update(alice, body), one.update(alice, body)
            )
            codes = sorted(r.code for r in responses)
            assert codes == [200, 409, 409], codes
        top = await one.request("GET", "/api/top-scores")
        assert top.code == 200
    # Five tokens, each applied exactly once: 5 x 10 points.
    async with serving(sqlite_path=path, **ACTIONS) as again:
        assert (await again.top())[0]["score"] == 50


async def test_an_idempotency_key_reused_with_another_action_token_is_refused() -> None:
    """The action's jti is part of the request's fingerprint: the same key with another
    token (even worth the same points) is another request, not a retry."""
    async with serving(**ACTIONS) as client:
        alice = make_token("alice")
        key = {"Idempotency-Key": "quest-once"}
        first = await client.update(alice, action("alice", "kill", "k-1"), headers=key)
        assert body_of(first)["new_score"] == 10
        retry = await client.update(alice, action("alice", "kill", "k-1"), headers=key)
        assert (retry.code, body_of(retry)["new_score"]) == (200, 10)
        assert retry.headers.get("Idempotent-Replayed") == "true"
        other = await client.update(alice, action("alice", "kill", "k-2"), headers=key)
        assert other.code == 422
        assert body_of(other)["error"] == "idempotency_key_reused"
        # Not spent by the refused request: k-2 still counts once, under a new key.
        fresh = await client.update(alice, action("alice", "kill", "k-2"))
        assert body_of(fresh)["new_score"] == 20
