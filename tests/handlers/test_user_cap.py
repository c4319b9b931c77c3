"""A cap on live user actors over HTTP (issue 11, finding 9): a full registry makes room
from its least recently used idle actor, and with none idle answers 503 busy."""

from __future__ import annotations

import asyncio

import pytest

from server.store.sqlite import SqliteStore
from tests.actors.test_user import POLICY, GatedStore
from tests.conftest import body_of, make_token, scaled, serving, settings_for
from tests.handlers.live.test_socket import metrics_text

pytestmark = pytest.mark.gen_test(timeout=scaled(20))


async def test_a_full_registry_of_busy_actors_answers_503_busy_and_then_makes_room() -> None:
    store = GatedStore(SqliteStore(":memory:", POLICY))
    settings = settings_for(max_user_actors=1, rate_limit_per_minute=0)
    async with serving(settings, store=store) as client:
        store.gate.clear()
        first = asyncio.ensure_future(client.update(make_token("alice")))
        await asyncio.wait_for(store.entered.wait(), scaled(5))
        refused = await client.update(make_token("bob"))
        assert refused.code == 503
        assert refused.headers["Retry-After"] == "1"
        assert body_of(refused)["error"] == "busy"
        assert len(client.running.service.users) == 1  # nobody's actor was added
        store.gate.set()
        assert (await first).code == 200
        accepted = await client.update(make_token("bob"))  # alice is idle now: room
        assert accepted.code == 200
        assert body_of(accepted)["new_score"] == 1
        assert len(client.running.service.users) == 1
        text = await metrics_text(client)
        assert "scoreboard_user_actors_displaced_total 1.0" in text
        assert 'scoreboard_updates_total{outcome="busy"} 1.0' in text
