"""``/healthz``, ``/readyz`` and ``/metrics`` against a real server."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

import pytest
import tornado.websocket
from prometheus_client.parser import text_string_to_metric_families

from server.domain.increments import IncrementPolicy
from server.domain.records import Decision, IncrementCommand, UserRecord
from server.store.sqlite import SqliteStore
from tests.conftest import Client, body_of, close_websocket, eventually, make_token, scaled, serving

pytestmark = pytest.mark.gen_test(timeout=scaled(20))


class ControlledStore(SqliteStore):
    """The test server's store, with a ping that can fail and increments that can wait."""

    def __init__(self) -> None:
        super().__init__(":memory:", IncrementPolicy(rate_limit_per_minute=10))
        self.healthy = True
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def ping(self) -> bool:
        return self.healthy and await super().ping()

    async def apply_increments(
        self, cmds: list[IncrementCommand], known: UserRecord | None = None
    ) -> list[Decision]:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        return await super().apply_increments(cmds, known)


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(client: Client) -> Samples:
    """GET /metrics, parsed: (sample name, labels) -> value."""
    response = await client.request("GET", "/metrics")
    assert response.code == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(response.body.decode()):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def next_message(ws: tornado.websocket.WebSocketClientConnection) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.read_message(), scaled(2))
    assert isinstance(raw, str), "the connection closed"
    message: dict[str, Any] = json.loads(raw)
    return message


async def wait_for_sample(
    client: Client, name: str, expected: float, timeout_s: float = 2.0
) -> None:
    """Scrape until the unlabelled sample ``name`` equals ``expected``."""

    async def sample() -> float | None:
        return value(await scrape(client), name)

    await eventually(
        sample, f"{name} at {expected:g}", until=lambda got: got == expected, timeout_s=timeout_s
    )


async def test_healthz_answers_ok() -> None:
    async with serving() as client:
        response = await client.request("GET", "/healthz")
        assert response.code == 200
        assert body_of(response) == {"status": "ok"}
        assert response.headers["Content-Type"].startswith("application/json")


async def test_readyz_is_200_when_the_store_answers_and_the_board_is_loaded() -> None:
    async with serving() as client:
        response = await client.request("GET", "/readyz")
        assert response.code == 200
        assert body_of(response) == {"status": "ready"}


async def test_readyz_is_503_while_the_store_does_not_answer() -> None:
    store = ControlledStore()
    # No staleness allowed: unready from the first failed probe.
    async with serving(store=store, ready_max_staleness_s=0, store_probe_interval_s=0.05) as client:
        assert (await client.request("GET", "/readyz")).code == 200
        store.healthy = False
        response = await eventually(
            lambda: client.request("GET", "/readyz"),
            "unready",
            until=lambda answer: answer.code != 200,
            timeout_s=5,
        )
        assert response.code == 503
        assert response.headers["Content-Type"].startswith("application/json")
        body = body_of(response)
        assert body["error"] == "not_ready"
        assert body["message"]
        # Alive all the same, and ready again once the store answers.
        assert (await client.request("GET", "/healthz")).code == 200
        store.healthy = True
        await eventually(
            lambda: client.request("GET", "/readyz"),
            "ready again",
            until=lambda answer: answer.code == 200,
            timeout_s=5,
        )


async def test_readyz_is_503_while_draining() -> None:
    async with serving() as client:
        client.running.inflight.draining = True  # what shutdown does first
        response = await client.request("GET", "/readyz")
        assert response.code == 503
        assert body_of(response)["error"] == "not_ready"
        assert (await client.request("GET", "/healthz")).code == 200


async def test_readyz_is_503_while_the_board_is_not_loaded() -> None:
    async with serving() as client:
        board = client.running.service.leaderboard
        board.view = dataclasses.replace(board.view, loaded=False)
        response = await client.request("GET", "/readyz")
        assert response.code == 503
        assert body_of(response)["error"] == "not_ready"


async def test_metrics_is_prometheus_text_with_every_metric() -> None:
    async with serving() as client:
        response = await client.request("GET", "/metrics")
        assert response.code == 200
        content_type = response.headers["Content-Type"]
        assert content_type.startswith("text/plain")
        assert "version=" in content_type
        families = {f.name: f.type for f in text_string_to_metric_families(response.body.decode())}
        assert families["scoreboard_updates"] == "counter"
        assert families["scoreboard_request_duration_seconds"] == "histogram"
        for gauge in (
            "scoreboard_websocket_connections",
            "scoreboard_user_actors",
            "scoreboard_mailbox_depth",
            "scoreboard_leaderboard_version",
        ):
            assert families[gauge] == "gauge", gauge
        text = response.body.decode()
        assert "_created" not in text


async def test_update_outcomes_are_counted() -> None:
    async with serving() as client:
        token = make_token("counted")
        assert (await client.update(token, {"increment": 2})).code == 200
        assert (await client.update(token, {"increment": 3})).code == 200
        assert (await client.update(token, {"increment": 0})).code == 400
        samples = await scrape(client)
        assert value(samples, "scoreboard_updates_total", outcome="applied") == 2.0
        assert value(samples, "scoreboard_updates_total", outcome="invalid_increment") == 1.0
        text = (await client.request("GET", "/metrics")).body.decode()
        assert 'scoreboard_updates_total{outcome="applied"} 2.0' in text
        assert 'scoreboard_updates_total{outcome="invalid_increment"} 1.0' in text
        # Replays and other errors get their own outcome.
        key = {"Idempotency-Key": "k1"}
        await client.update(token, {"increment": 1}, headers=key)
        await client.update(token, {"increment": 1}, headers=key)
        await client.update(None, {"increment": 1})
        samples = await scrape(client)
        assert value(samples, "scoreboard_updates_total", outcome="applied") == 3.0
        assert value(samples, "scoreboard_updates_total", outcome="replayed") == 1.0
        assert value(samples, "scoreboard_updates_total", outcome="missing_token") == 1.0


async def test_request_durations_by_route_and_method() -> None:
    async with serving() as client:
        for _ in range(3):
            await client.request("GET", "/healthz")
        await client.update(make_token("timed"), {"increment": 1})
        await client.top()
        samples = await scrape(client)
        name = "scoreboard_request_duration_seconds_count"
        assert value(samples, name, route="healthz", method="GET") == 3.0
        assert value(samples, name, route="update_score", method="POST") == 1.0
        assert value(samples, name, route="top_scores", method="GET") == 1.0
        total = value(
            samples, "scoreboard_request_duration_seconds_sum", route="healthz", method="GET"
        )
        assert total is not None and total > 0
        inf = value(
            samples,
            "scoreboard_request_duration_seconds_bucket",
            route="healthz",
            method="GET",
            le="+Inf",
        )
        assert inf == 3.0


async def test_websocket_gauge_counts_open_connections() -> None:
    async with serving() as client:
        assert value(await scrape(client), "scoreboard_websocket_connections") == 0.0
        ws = await client.websocket()
        try:
            assert (await next_message(ws))["event"] == "snapshot"
            await wait_for_sample(client, "scoreboard_websocket_connections", 1.0)
        finally:
            await close_websocket(ws)
        await wait_for_sample(client, "scoreboard_websocket_connections", 0.0)


async def test_user_actor_gauge_follows_live_actors() -> None:
    async with serving(user_idle_s=0.3) as client:
        assert value(await scrape(client), "scoreboard_user_actors") == 0.0
        await client.update(make_token("ua-1"))
        await client.update(make_token("ua-2"))
        await client.update(make_token("ua-1"))
        assert value(await scrape(client), "scoreboard_user_actors") == 2.0
        # Idle actors are evicted, and the gauge follows.
        await wait_for_sample(client, "scoreboard_user_actors", 0.0, timeout_s=3.0)


async def test_mailbox_depth_gauge_counts_queued_increments() -> None:
    store = ControlledStore()
    async with serving(store=store) as client:
        assert value(await scrape(client), "scoreboard_mailbox_depth") == 0.0
        store.gate = asyncio.Event()
        store.entered.clear()
        token = make_token("queued")
        pending = [asyncio.ensure_future(client.update(token))]
        await asyncio.wait_for(store.entered.wait(), scaled(5))
        pending += [asyncio.ensure_future(client.update(token)) for _ in range(3)]
        try:
            # One increment is waiting on the store, three are queued behind it.
            await wait_for_sample(client, "scoreboard_mailbox_depth", 3.0)
        finally:
            store.gate.set()
            responses = await asyncio.gather(*pending)
        assert sorted(body_of(r)["new_score"] for r in responses) == [1, 2, 3, 4]
        await wait_for_sample(client, "scoreboard_mailbox_depth", 0.0)


async def test_leaderboard_version_gauge_follows_the_broadcasts() -> None:
    async with serving(top_n=2) as client:
        assert value(await scrape(client), "scoreboard_leaderboard_version") == 0.0
        ws = await client.websocket()
        try:
            assert (await next_message(ws))["version"] == 0
            await client.update(make_token("lv-a"), {"increment": 9})
            await client.update(make_token("lv-b"), {"increment": 5})
            assert [(await next_message(ws))["version"] for _ in range(2)] == [1, 2]
            assert value(await scrape(client), "scoreboard_leaderboard_version") == 2.0
            # A change below the top 2 is not broadcast and does not move the version.
            await client.update(make_token("lv-c"), {"increment": 1})
            await asyncio.sleep(scaled(0.1))
            assert value(await scrape(client), "scoreboard_leaderboard_version") == 2.0
            await client.update(make_token("lv-c"), {"increment": 10})
            assert (await next_message(ws))["version"] == 3
            assert value(await scrape(client), "scoreboard_leaderboard_version") == 3.0
        finally:
            await close_websocket(ws)
