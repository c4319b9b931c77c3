"""The live stream against a real server: delta format, resume, coalescing, access rules."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import tornado.httpclient
import tornado.websocket

from server.support.logs import JsonFormatter
from tests.conftest import (
    Client,
    body_of,
    close_websocket,
    eventually,
    make_token,
    scaled,
    serving,
)
from tests.handlers.live.test_socket import assert_silent, metrics_text, receive

pytestmark = pytest.mark.gen_test(timeout=scaled(20))

WebSocket = tornado.websocket.WebSocketClientConnection
Rows = list[dict[str, Any]]


@asynccontextmanager
async def connected(
    client: Client, query: str = "", headers: dict[str, str] | None = None
) -> AsyncIterator[WebSocket]:
    """A WebSocket to the scoreboard with ``query`` and ``headers``, closed on the way out."""
    request = tornado.httpclient.HTTPRequest(
        client.ws_url + query, headers=headers, request_timeout=scaled(5)
    )
    ws = await tornado.websocket.websocket_connect(request)
    try:
        yield ws
    finally:
        await close_websocket(ws)


async def refused(
    client: Client,
    query: str = "",
    headers: dict[str, str] | None = None,
    *,
    path: str = "/ws/scoreboard",
) -> tornado.httpclient.HTTPResponse:
    """The HTTP answer to an upgrade (of ``path``) that must be refused."""
    url = f"ws://127.0.0.1:{client.running.port}{path}{query}"
    request = tornado.httpclient.HTTPRequest(url, headers=headers, request_timeout=scaled(5))
    try:
        ws = await tornado.websocket.websocket_connect(request)
    except tornado.httpclient.HTTPClientError as error:
        assert error.response is not None
        return error.response
    await close_websocket(ws)
    raise AssertionError(f"the upgrade {query!r} {headers} was accepted")


@dataclass
class Board:
    """A client's copy of the top N, applying every message as docs/protocol.md's JavaScript.

    It also checks the stream: one epoch, versions consecutive (each message exactly one
    after the last applied), a resume followed by exactly the missed deltas.
    """

    epoch: str | None = None
    version: int | None = None
    rows: Rows = field(default_factory=list)
    events: list[tuple[str, int]] = field(default_factory=list)
    snapshot_reasons: list[str] = field(default_factory=list)
    resumes: list[int] = field(default_factory=list)  # "missed" of each resume
    _missed: int = 0

    def apply(self, message: dict[str, Any]) -> None:
        event, version = message["event"], message["version"]
        self.events.append((event, version))
        if event == "snapshot":
            assert self._missed == 0, "a snapshot in the middle of a replay"
            if self.epoch == message["epoch"] and self.version is not None:
                assert version >= self.version, f"snapshot {version} older than {self.version}"
            self.snapshot_reasons.append(message["reason"])
            self.rows = message["top_scores"]
        elif event == "resumed":
            assert (message["epoch"], version) == (self.epoch, self.version), message
            assert self._missed == 0
            self._missed = message["missed"]
            self.resumes.append(self._missed)
            return
        elif event == "delta":
            assert message["epoch"] == self.epoch, (message["epoch"], self.epoch)
            assert self.version is not None and version == self.version + 1, (
                f"delta {version} after {self.version}"
            )
            self._missed = max(0, self._missed - 1)
            gone = set(message["removed"]) | {row["user_id"] for row in message["changed"]}
            by_rank = {i + 1: row for i, row in enumerate(self.rows) if row["user_id"] not in gone}
            for c in message["changed"]:
                by_rank[c["rank"]] = {k: c[k] for k in ("user_id", "username", "score")}
            self.rows = [by_rank[rank] for rank in sorted(by_rank)]
        elif event == "update":  # the seed format: the whole board every time
            assert message["epoch"] == self.epoch
            assert self.version is not None and version == self.version + 1
            self.rows = message["top_scores"]
        else:
            raise AssertionError(f"unknown event {event!r}")
        self.epoch, self.version = message["epoch"], version

    @property
    def since(self) -> str:
        return f"since={self.epoch}:{self.version}"

    @property
    def replaying(self) -> bool:
        return self._missed > 0


async def settle(ws: WebSocket, board: Board, client: Client, quiet_s: float = 0.05) -> None:
    """Apply messages until the board equals ``GET /api/top-scores`` and nothing more comes
    within ``quiet_s`` (longer than the broadcast interval)."""
    deadline = time.monotonic() + scaled(5)
    while True:
        assert time.monotonic() < deadline, f"board {board.rows} never matched the API"
        if board.rows == await client.top() and not board.replaying:
            try:
                raw = await asyncio.wait_for(ws.read_message(), scaled(quiet_s))
            except TimeoutError:
                return
            assert isinstance(raw, str), "connection closed"
            board.apply(json.loads(raw))
        else:
            board.apply(await receive(ws))


def token_for(i: int, name: str | None = None) -> str:
    return make_token(f"user-{i:02d}", name=name or f"Player {i}")


async def post(client: Client, token: str, increment: int) -> None:
    response = await client.update(token, {"increment": increment})
    assert response.code == 200, response.body


async def wait_for_version(client: Client, version: int) -> None:
    leaderboard = client.running.service.leaderboard
    await eventually(
        lambda: leaderboard.view.version, f"version {version}", until=lambda now: now >= version
    )


# --- the delta stream equals the board -----------------------------------------------------


@pytest.mark.parametrize(("seed", "interval_ms"), [(1, 0), (2, 0), (3, 40)])
async def test_a_delta_client_applying_every_message_ends_equal_to_the_board(
    seed: int, interval_ms: int
) -> None:
    rng = random.Random(seed)
    async with (
        serving(top_n=5, rate_limit_per_minute=0, broadcast_interval_ms=interval_ms) as client,
        connected(client, "?format=delta") as delta_ws,
        connected(client) as seed_ws,
    ):
        delta, full = Board(), Board()
        delta.apply(await receive(delta_ws))
        full.apply(await receive(seed_ws))
        assert delta.snapshot_reasons == full.snapshot_reasons == ["new"]
        for _ in range(12):
            # A few users at once, some renamed, so deltas mix moves, entries, exits, renames.
            batch = []
            for _ in range(rng.randint(1, 5)):
                i = rng.randrange(15)
                name = f"Player {i}" if rng.random() < 0.8 else f"P{i} ({rng.randrange(9)})"
                batch.append(post(client, token_for(i, name), rng.randint(1, 40)))
            await asyncio.gather(*batch)
            quiet_s = 0.05 + 2 * interval_ms / 1000
            await asyncio.gather(
                settle(delta_ws, delta, client, quiet_s), settle(seed_ws, full, client, quiet_s)
            )
            assert delta.rows == full.rows == await client.top()
        assert len(delta.rows) == 5
        # Both formats carry every version, in order, and saw the same ones.
        assert [e for e, _ in delta.events] == ["snapshot"] + ["delta"] * (len(delta.events) - 1)
        assert [e for e, _ in full.events] == ["snapshot"] + ["update"] * (len(full.events) - 1)
        assert [v for _, v in delta.events] == [v for _, v in full.events]
        assert delta.version == client.running.service.leaderboard.view.version >= 10


async def test_a_delta_touches_only_the_rows_that_changed() -> None:
    async with (
        serving(top_n=3, rate_limit_per_minute=0) as client,
        connected(client, "?format=delta") as ws,
    ):
        board = Board()
        board.apply(await receive(ws))
        for i, increment in [(1, 30), (2, 20), (3, 10)]:
            await post(client, token_for(i), increment)
            board.apply(await receive(ws))
        # Only user 3's score changes, at rank 3.
        await post(client, token_for(3), 5)
        message = await receive(ws)
        assert message["changed"] == [
            {"rank": 3, "user_id": "user-03", "username": "Player 3", "score": 15}
        ]
        assert message["removed"] == []
        board.apply(message)
        # User 4 enters at rank 1: everyone moves down one, user 3 leaves.
        await post(client, token_for(4), 40)
        message = await receive(ws)
        assert [c["user_id"] for c in message["changed"]] == ["user-04", "user-01", "user-02"]
        assert [c["rank"] for c in message["changed"]] == [1, 2, 3]
        assert message["removed"] == ["user-03"]
        board.apply(message)
        assert board.rows == await client.top()


# --- resume --------------------------------------------------------------------------------


async def test_a_reconnect_with_since_replays_exactly_the_missed_versions() -> None:
    async with serving(top_n=5, rate_limit_per_minute=0) as client:
        board = Board()
        async with connected(client, "?format=delta") as ws:
            board.apply(await receive(ws))
            for i in range(4):
                await post(client, token_for(i), 10 + i)
                board.apply(await receive(ws))
        last_seen = board.version
        assert last_seen == 4
        # Disconnected: six visible changes (each user overtakes the leader).
        for step in range(6):
            await post(client, token_for(step % 3), 100)
        await wait_for_version(client, last_seen + 6)
        async with connected(client, f"?format=delta&{board.since}") as ws:
            resumed = await receive(ws)
            assert resumed == {
                "event": "resumed",
                "epoch": board.epoch,
                "version": last_seen,
                "missed": 6,
            }
            board.apply(resumed)
            for k in range(1, 7):
                message = await receive(ws)
                assert (message["event"], message["version"]) == ("delta", last_seen + k)
                board.apply(message)
            assert board.rows == await client.top()
            await assert_silent(ws, 0.1)
            # ... and then the live stream goes on from there.
            await post(client, token_for(9), 100)
            message = await receive(ws)
            assert (message["event"], message["version"]) == ("delta", last_seen + 7)
            board.apply(message)
            assert board.rows == await client.top()
        # Reconnecting at the current version: resumed, nothing missed.
        async with connected(client, f"?format=delta&{board.since}") as ws:
            assert await receive(ws) == {
                "event": "resumed",
                "epoch": board.epoch,
                "version": last_seen + 7,
                "missed": 0,
            }
            await assert_silent(ws, 0.1)
        assert board.snapshot_reasons == ["new"]


async def test_reconnecting_during_a_stream_of_updates_loses_and_repeats_no_version() -> None:
    async with serving(top_n=5, rate_limit_per_minute=0) as client:
        stop = asyncio.Event()

        async def writer() -> None:
            rng = random.Random(7)
            while not stop.is_set():
                await post(client, token_for(rng.randrange(12)), rng.randint(1, 30))

        task = asyncio.create_task(writer())
        try:
            board = Board()
            query = "?format=delta"
            rng = random.Random(8)
            for _ in range(8):
                async with connected(client, query) as ws:
                    for _ in range(rng.randint(1, 6)):
                        board.apply(await receive(ws))
                    while board.replaying:
                        board.apply(await receive(ws))
                query = f"?format=delta&{board.since}"
                await wait_for_version(client, (board.version or 0) + 2)  # missed while away
        finally:
            stop.set()
            await task
        async with connected(client, query) as ws:
            await settle(ws, board, client)
        assert board.rows == await client.top()
        assert board.snapshot_reasons == ["new"]  # every reconnect resumed
        assert len(board.resumes) == 8
        assert all(missed >= 2 for missed in board.resumes), board.resumes
        # Every version from the first snapshot on was applied exactly once, in order.
        versions = [v for e, v in board.events if e in {"delta", "snapshot"}]
        assert versions == list(range(versions[0], versions[0] + len(versions)))


async def test_since_from_another_epoch_gets_a_snapshot() -> None:
    async with serving(top_n=3) as client:
        await post(client, token_for(1), 5)
        await wait_for_version(client, 1)
        epoch = client.running.service.leaderboard.view.epoch
        async with connected(client, "?format=delta&since=0badc0de:1") as ws:
            snapshot = await receive(ws)
            assert snapshot == {
                "event": "snapshot",
                "epoch": epoch,
                "version": 1,
                "reason": "epoch_changed",
                "top_scores": await client.top(),
            }
        # A version this stream has not reached yet.
        async with connected(client, f"?format=delta&since={epoch}:2") as ws:
            snapshot = await receive(ws)
            assert (snapshot["event"], snapshot["reason"], snapshot["version"]) == (
                "snapshot",
                "unknown_version",
                1,
            )


async def test_since_after_a_restart_gets_a_snapshot_of_the_stored_board(tmp_path: Any) -> None:
    path = str(tmp_path / "scores.db")
    board = Board()
    async with (
        serving(sqlite_path=path) as client,
        connected(client, "?format=delta") as ws,
    ):
        board.apply(await receive(ws))
        await post(client, token_for(1), 5)
        board.apply(await receive(ws))
    async with (
        serving(sqlite_path=path) as client,
        connected(client, f"?format=delta&{board.since}") as ws,
    ):
        snapshot = await receive(ws)
        assert snapshot["event"] == "snapshot"
        assert snapshot["reason"] == "epoch_changed"
        assert snapshot["epoch"] != board.epoch
        assert snapshot["top_scores"] == board.rows == await client.top()


async def test_since_older_than_the_history_gets_a_snapshot() -> None:
    async with serving(top_n=3, rate_limit_per_minute=0, ws_history_size=2) as client:
        board = Board()
        async with connected(client, "?format=delta") as ws:
            board.apply(await receive(ws))
        since = board.since
        for i in range(2):  # two versions missed: still in a history of 2
            await post(client, token_for(i), 10 * (i + 1))
        await wait_for_version(client, 2)
        async with connected(client, f"?format=delta&{since}") as ws:
            resumed = await receive(ws)
            assert (resumed["event"], resumed["missed"]) == ("resumed", 2)
        await post(client, token_for(5), 50)  # a third: version 1 is gone
        await wait_for_version(client, 3)
        async with connected(client, f"?format=delta&{since}") as ws:
            snapshot = await receive(ws)
            assert snapshot["event"] == "snapshot"
            assert snapshot["reason"] == "history_expired"
            assert snapshot["version"] == 3
            assert snapshot["top_scores"] == await client.top()
            board.apply(snapshot)
            await post(client, token_for(6), 60)
            board.apply(await receive(ws))  # the live deltas follow the snapshot
            assert board.rows == await client.top()


async def test_a_seed_client_ignores_since_and_gets_full_updates() -> None:
    async with serving(top_n=3) as client:
        await post(client, token_for(1), 5)
        await wait_for_version(client, 1)
        epoch = client.running.service.leaderboard.view.epoch
        async with connected(client, f"?since={epoch}:0") as ws:
            snapshot = await receive(ws)
            assert (snapshot["event"], snapshot["reason"], snapshot["version"]) == (
                "snapshot",
                "new",
                1,
            )
            await post(client, token_for(2), 7)
            update = await receive(ws)
            assert update == {
                "event": "update",
                "epoch": epoch,
                "version": 2,
                "top_scores": await client.top(),
            }


# --- coalescing ----------------------------------------------------------------------------


async def test_fifty_updates_inside_one_interval_make_one_message_per_format() -> None:
    interval_s = scaled(0.3)
    async with (
        serving(
            top_n=5, rate_limit_per_minute=0, broadcast_interval_ms=round(interval_s * 1000)
        ) as client,
        connected(client, "?format=delta") as delta_ws,
        connected(client) as seed_ws,
    ):
        delta, full = Board(), Board()
        delta.apply(await receive(delta_ws))
        full.apply(await receive(seed_ws))
        tokens = [token_for(i) for i in range(10)]
        # The first change after a quiet period goes out at once and arms the interval.
        await post(client, tokens[0], 1)
        delta.apply(await receive(delta_ws))
        full.apply(await receive(seed_ws))
        armed = time.monotonic()
        broadcasts = client.running.service.leaderboard.view.version
        await asyncio.gather(*(post(client, tokens[i % 10], i + 1) for i in range(50)))
        burst_s = time.monotonic() - armed
        assert burst_s < interval_s, f"the burst took {burst_s:.3f} s, longer than the interval"
        delta.apply(await receive(delta_ws, 2 * interval_s + 1))
        full.apply(await receive(seed_ws, 2 * interval_s + 1))
        await asyncio.gather(assert_silent(delta_ws, 2 * interval_s), assert_silent(seed_ws, 0))
        assert client.running.service.leaderboard.view.version == broadcasts + 1
        assert delta.events[-1] == ("delta", 2)
        assert full.events[-1] == ("update", 2)
        assert delta.rows == full.rows == await client.top()
        assert [row["score"] for row in delta.rows] == [150, 145, 140, 135, 130]


# --- access: tokens, origins, CORS, bad queries ----------------------------------------------


async def test_require_auth_refuses_upgrades_without_a_valid_token() -> None:
    async with serving(ws_require_auth=True) as client:
        response = await refused(client)
        assert response.code == 401
        assert body_of(response)["error"] == "missing_token"
        response = await refused(client, "?token=not-a-jwt")
        assert response.code == 401
        assert body_of(response)["error"] == "invalid_token"
        expired = make_token("p1", ttl_s=-3600)
        assert (await refused(client, f"?token={expired}")).code == 401
        forged = make_token("p1", secret="another-secret-that-is-32-bytes-long!!")
        assert (await refused(client, f"?format=delta&token={forged}")).code == 401
        async with connected(client, f"?format=delta&token={make_token('p1')}") as ws:
            assert (await receive(ws))["event"] == "snapshot"


async def test_without_require_auth_an_invalid_token_is_ignored_logged_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    expired = make_token("p1", ttl_s=-3600)
    forged = make_token("p1", secret="another-secret-that-is-32-bytes-long!!")
    invalid = ["not-a-jwt", expired, forged, ""]
    # Two failures a minute would throttle the address, were these counted as failures.
    async with serving(auth_failures_per_minute=2) as client:
        with caplog.at_level(logging.INFO, logger="handlers.live.auth"):
            for token in invalid:
                async with connected(client, f"?format=delta&token={token}") as ws:
                    assert (await receive(ws))["event"] == "snapshot"  # opened anonymously
            # A client reconnecting in a loop with its expired token: counted every time,
            # logged once per interval.
            for _ in range(3):
                async with connected(client, f"?token={expired}") as ws:
                    assert (await receive(ws))["event"] == "snapshot"
        async with connected(client) as ws, connected(client, f"?token={make_token()}") as ws2:
            assert (await receive(ws))["event"] == "snapshot"
            assert (await receive(ws2))["event"] == "snapshot"
        metrics = await metrics_text(client)
        assert "scoreboard_ws_ignored_tokens_total 7.0" in metrics
        lines = [r for r in caplog.records if r.name == "handlers.live.auth"]
        assert [r.error for r in lines] == [  # type: ignore[attr-defined]
            "invalid_token",
            "invalid_token",
            "invalid_token",
            "missing_token",
        ]
        assert "expired" in lines[1].reason  # type: ignore[attr-defined]
        logged = "\n".join(JsonFormatter().format(r) for r in lines)
        for token in (expired, forged):
            assert token not in logged and token.split(".")[1] not in logged
        # Nothing was counted against the address: a valid update is not throttled.
        response = await client.update(make_token("p1"), {"increment": 1})
        assert response.code == 200


async def test_websocket_origins_outside_the_allow_list_are_refused() -> None:
    async with serving(allowed_origins=("https://game.example",)) as client:
        response = await refused(client, "?format=delta", {"Origin": "https://evil.example"})
        assert response.code == 403
        # Not a prefix or suffix match: the whole origin must be listed.
        for origin in ("https://game.example.evil.example", "http://game.example"):
            assert (await refused(client, "", {"Origin": origin})).code == 403
        async with (
            connected(client, "?format=delta", {"Origin": "https://game.example"}) as browser,
            connected(client) as no_origin,  # not a browser: no Origin to check
        ):
            assert (await receive(browser))["event"] == "snapshot"
            assert (await receive(no_origin))["event"] == "snapshot"


async def test_any_origin_by_default() -> None:
    async with (
        serving() as client,
        connected(client, "", {"Origin": "https://anyone.example"}) as ws,
    ):
        assert (await receive(ws))["event"] == "snapshot"
        response = await client.request(
            "GET", "/api/top-scores", headers={"Origin": "https://anyone.example"}
        )
        assert response.headers["Access-Control-Allow-Origin"] == "*"


async def test_cors_on_top_scores_and_preflight() -> None:
    async with serving(allowed_origins=("https://game.example",)) as client:
        game = {"Origin": "https://game.example"}
        response = await client.request("GET", "/api/top-scores", headers=game)
        assert response.code == 200
        assert response.headers["Access-Control-Allow-Origin"] == "https://game.example"
        assert "Origin" in response.headers.get_list("Vary")
        evil = await client.request(
            "GET", "/api/top-scores", headers={"Origin": "https://evil.example"}
        )
        assert evil.code == 200  # the browser, not the server, withholds the answer
        assert "Access-Control-Allow-Origin" not in evil.headers
        plain = await client.request("GET", "/api/top-scores")
        assert "Access-Control-Allow-Origin" not in plain.headers

        preflight_headers = {
            **game,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        }
        preflight = await client.request("OPTIONS", "/api/update-score", headers=preflight_headers)
        assert preflight.code == 204
        assert preflight.headers["Access-Control-Allow-Origin"] == "https://game.example"
        assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
        allowed = preflight.headers["Access-Control-Allow-Headers"].lower()
        assert "authorization" in allowed and "content-type" in allowed
        refused_preflight = await client.request(
            "OPTIONS",
            "/api/update-score",
            headers={**preflight_headers, "Origin": "https://evil.example"},
        )
        assert refused_preflight.code == 403
        assert body_of(refused_preflight)["error"] == "origin_not_allowed"
        assert "Access-Control-Allow-Origin" not in refused_preflight.headers
        # A POST from the allowed origin can be read by the page.
        ok = await client.update(make_token(), {"increment": 1}, headers=game)
        assert ok.code == 200
        assert ok.headers["Access-Control-Allow-Origin"] == "https://game.example"


async def test_cors_on_error_answers() -> None:
    async with serving(allowed_origins=("https://game.example",)) as client:
        game = {"Origin": "https://game.example"}
        response = await client.update("not-a-jwt", {"increment": 1}, headers=game)
        assert response.code == 401
        assert response.headers.get("Access-Control-Allow-Origin") == "https://game.example"


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("?format=json", "invalid_format"),
        ("?format=", "invalid_format"),
        ("?format=DELTA", "invalid_format"),
        ("?format=delta&since=abc", "invalid_since"),
        ("?format=delta&since=abc:", "invalid_since"),
        ("?format=delta&since=:5", "invalid_since"),
        ("?format=delta&since=abc:-1", "invalid_since"),
        ("?format=delta&since=abc:1.5", "invalid_since"),
    ],
)
async def test_bad_queries_are_refused_with_400(query: str, code: str) -> None:
    async with serving() as client:
        response = await refused(client, query)
        assert response.code == 400
        assert body_of(response)["error"] == code
        assert len(client.running.service.fanout) == 0  # refused before joining


async def test_the_ws_metrics_count_messages() -> None:
    async with (
        serving() as client,
        connected(client, "?format=delta") as ws,
        connected(client) as ws2,
    ):
        await receive(ws)
        await receive(ws2)
        await post(client, token_for(1), 3)
        await receive(ws)
        await receive(ws2)
        text = await metrics_text(client)
        assert "scoreboard_ws_messages_total 2.0" in text
        assert "scoreboard_broadcast_duration_seconds_count 1.0" in text
        assert "scoreboard_ws_skipped_total 0.0" in text
        assert "scoreboard_ws_slow_closes_total 0.0" in text
