"""The audit trail: one line per update request with its fields, and no token anywhere."""

from __future__ import annotations

import json
import logging
import re

import pytest

from handlers.base import request_id
from server.support.logs import JsonFormatter
from tests.conftest import make_token, mint_action_token, scaled, serving

pytestmark = pytest.mark.gen_test(timeout=scaled(30))

ACTION_SECRET = "action-service-secret-of-32-bytes-or-more"


async def test_a_scripted_session_leaves_one_audit_line_per_update_and_no_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    alice = make_token("alice", name="Alice")
    action = mint_action_token(ACTION_SECRET, "alice", "kill", "j-1")
    async with serving(
        action_secret=ACTION_SECRET, action_points=(("kill", 10),), rate_limit_per_minute=2
    ) as client:
        ok = await client.update(alice, {"action_token": action}, headers={"X-Request-ID": "r-1"})
        replayed = await client.update(alice, {"action_token": action})
        bad = await client.update("not-a-token", {"action_token": action})
        assert (ok.code, replayed.code, bad.code) == (200, 409, 401)
        assert ok.headers["X-Request-ID"] == "r-1"
        generated = replayed.headers["X-Request-ID"]
        assert generated != "r-1" and re.fullmatch(r"[0-9a-f]{12}-[0-9a-f]+", generated)
    audit = [r for r in caplog.records if r.name == "scoreboard.audit"]
    lines = [json.loads(JsonFormatter().format(r)) for r in audit]
    assert [line["outcome"] for line in lines] == ["applied", "action_replayed", "invalid_token"]
    first = lines[0]
    assert first["request_id"] == "r-1"
    assert first["client"] == "127.0.0.1"
    assert (first["user_id"], first["action"], first["increment"], first["new_score"]) == (
        "alice",
        "kill",
        10,
        10,
    )
    assert first["latency_ms"] >= 0 and first["ts"].endswith("Z")
    assert lines[1]["new_score"] is None and lines[1]["user_id"] == "alice"
    assert lines[2]["user_id"] is None  # nobody was authenticated
    assert lines[1]["request_id"] == replayed.headers["X-Request-ID"]
    # No token, action token or secret in any log line of the session.
    everything = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    for secret in (alice, action, ACTION_SECRET, alice.split(".")[2], action.split(".")[2]):
        assert secret not in everything


async def test_token_shaped_request_ids_are_replaced(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    alice = make_token("alice")
    async with serving() as client:
        response = await client.update(alice, {"increment": 1}, headers={"X-Request-ID": alice})
        assert response.headers["X-Request-ID"] != alice
    assert alice not in "\n".join(JsonFormatter().format(r) for r in caplog.records)


async def test_admin_requests_are_audited_refused_ones_and_lookups_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    admin = make_token("ops", scope="scores:admin")
    async with serving() as client:
        await client.update(make_token("a"), {"increment": 2})
        for token in (admin, make_token("player")):
            await client.request("GET", "/api/users/a", None, {"Authorization": f"Bearer {token}"})
    lines = [
        json.loads(JsonFormatter().format(r))
        for r in caplog.records
        if r.name == "scoreboard.audit" and r.getMessage() == "admin"
    ]
    assert [(x["action"], x["admin"], x["outcome"]) for x in lines] == [
        ("lookup", "ops", "applied"),
        ("lookup", "player", "forbidden"),
    ]
    assert all(x["latency_ms"] >= 0 and x["user_id"] == "a" for x in lines)


GENERATED_ID = re.compile(r"([0-9a-f]{12})-([0-9a-f]+)")


def test_generated_request_ids_are_unique_and_shaped_prefix_dash_counter() -> None:
    ids = [request_id(None) for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    shapes = [GENERATED_ID.fullmatch(i) for i in ids]
    assert all(shapes), next(i for i, m in zip(ids, shapes, strict=True) if not m)
    assert len({m.group(1) for m in shapes if m}) == 1  # one prefix per process
    counters = [int(m.group(2), 16) for m in shapes if m]
    assert counters == sorted(counters)  # a counter, never reused
    for insane in ("", "has space", "x" * 65, "a.b", "ü", "id\n"):
        assert GENERATED_ID.fullmatch(request_id(insane)), insane


async def test_every_answer_gets_its_own_request_id_and_a_sane_given_one_is_echoed() -> None:
    async with serving() as client:
        token = make_token("ids")
        responses = []
        for i in range(20):
            responses.append(await client.update(token, {"increment": 1}))
            responses.append(await client.request("GET", "/api/top-scores"))
            responses.append(await client.request("GET", "/api/nope" if i % 2 else "/healthz"))
        ids = [r.headers["X-Request-ID"] for r in responses]
        assert len(set(ids)) == len(ids)
        assert all(GENERATED_ID.fullmatch(i) for i in ids), ids
        for given in ("r-1", "A_b-9", "x" * 64):
            echoed = await client.update(token, {"increment": 1}, headers={"X-Request-ID": given})
            assert echoed.headers["X-Request-ID"] == given
            missing = await client.request("GET", "/api/nope", None, {"X-Request-ID": given})
            assert (missing.code, missing.headers["X-Request-ID"]) == (404, given)
