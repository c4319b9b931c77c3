"""Plain reads of the top 10 answered without a RequestHandler (handlers/router.py):
the same answer as the handler's, and everything else left to the handler."""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Any

import pytest
import tornado.httpclient
from tornado import httputil

from handlers import router as fast_reads
from handlers.players import PlayerHandler
from handlers.router import is_plain_read, plain_player_read
from handlers.scores import TopScoresHandler
from tests.conftest import Client, body_of, make_token, scaled, serving

pytestmark = pytest.mark.gen_test(timeout=scaled(30))

PATH = "/api/top-scores"


def request(method: str = "GET", uri: str = PATH, **headers: str) -> httputil.HTTPServerRequest:
    return httputil.HTTPServerRequest(
        start_line=httputil.RequestStartLine(method, uri, "HTTP/1.1"),
        headers=httputil.HTTPHeaders(
            {"Host": "127.0.0.1", **{k.replace("_", "-"): v for k, v in headers.items()}}
        ),
    )


def test_only_a_get_of_the_top_scores_without_origin_or_validator_is_plain() -> None:
    assert is_plain_read(request())
    assert is_plain_read(request(uri=f"{PATH}?page=2"))  # the handler ignores the query too
    assert not is_plain_read(request(uri=f"{PATH}?limit=50"))  # a page of the board
    assert not is_plain_read(request(uri=f"{PATH}?page=2&cursor=abc"))
    assert is_plain_read(request(X_Request_ID="trace-1", Accept="application/json"))
    assert not is_plain_read(request("HEAD"))
    assert not is_plain_read(request("POST"))
    assert not is_plain_read(request("OPTIONS", Origin="https://game.example"))
    assert not is_plain_read(request(uri="/api/top-scores/"))
    assert not is_plain_read(request(uri="/api/update-score"))
    assert not is_plain_read(request(Origin="https://game.example"))
    assert not is_plain_read(request(If_None_Match='"abc"'))
    assert not is_plain_read(request(Content_Length="3"))  # a body the app may refuse
    assert not is_plain_read(request(Transfer_Encoding="chunked"))


def shape(response: tornado.httpclient.HTTPResponse) -> list[tuple[str, str]]:
    """The headers in order, with the values that differ per response made generic."""
    generic = {"Date": "<date>", "X-Request-Id": "<id>"}
    return [
        (name, generic.get(name, value) if not value.startswith("trace-") else value)
        for name, value in response.headers.get_all()
    ]


async def read_both_ways(
    client: Client,
    monkeypatch: pytest.MonkeyPatch,
    headers: dict[str, str] | None = None,
    *,
    path: str = PATH,
) -> tuple[Any, Any]:
    """``path`` read by the fast path, then with the fast path off (the handler's)."""
    fast = await client.request("GET", path, None, headers)
    with monkeypatch.context() as patched:
        patched.setattr(fast_reads, "is_plain_read", lambda request: False)
        patched.setattr(fast_reads, "plain_player_read", lambda request: None)
        handled = await client.request("GET", path, None, headers)
    return fast, handled


async def test_a_plain_read_gets_the_handlers_status_headers_and_body(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with serving() as client:
        await client.update(make_token("alice"), {"increment": 3})
        fast, handled = await read_both_ways(client, monkeypatch)
        while body_of(fast)["top_scores"] == []:  # the board is updated asynchronously
            fast, handled = await read_both_ways(client, monkeypatch)
        assert (fast.code, fast.body) == (handled.code, handled.body) == (200, fast.body)
        assert body_of(fast) == {
            "top_scores": [{"user_id": "alice", "username": "alice", "score": 3}]
        }
        assert shape(fast) == shape(handled)
        assert [name for name, _ in shape(fast) if name != "Connection"] == [
            "Server",
            "Content-Type",
            "Date",
            "X-Content-Type-Options",
            "X-Request-Id",
            "Etag",
            "Content-Length",
        ]
        assert re.fullmatch(r"[0-9a-f]{12}-[0-9a-f]+", fast.headers["X-Request-Id"])
        assert fast.headers["X-Request-Id"] != handled.headers["X-Request-Id"]
        # A caller's request id is echoed both ways.
        fast, handled = await read_both_ways(client, monkeypatch, {"X-Request-ID": "trace-7"})
        assert fast.headers["X-Request-Id"] == handled.headers["X-Request-Id"] == "trace-7"
        assert shape(fast) == shape(handled)


async def test_plain_reads_skip_the_handler_and_the_rest_still_reach_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with serving() as client:
        no_handler(monkeypatch)
        plain = await client.request("GET", PATH)
        assert plain.code == 200
        assert body_of(plain) == {"top_scores": []}
        # A conditional read, a browser's read and a read while the board loads: handler.
        conditional = await client.request("GET", PATH, None, {"If-None-Match": '"x"'})
        browser = await client.request("GET", PATH, None, {"Origin": "https://game.example"})
        assert conditional.code == browser.code == 500
        board = client.running.service.leaderboard
        loaded = board.view
        board.view = dataclasses.replace(loaded, loaded=False)
        try:
            assert (await client.request("GET", PATH)).code == 500
        finally:
            board.view = loaded
        # Other methods are the application's answer as before.
        post = await client.request("POST", PATH, b"{}")
        assert (post.code, body_of(post)["error"]) == (405, "method_not_allowed")


def no_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make TopScoresHandler fail: whatever still works was answered by the fast path."""

    def broken(handler: TopScoresHandler) -> None:
        raise RuntimeError("the handler was used")

    monkeypatch.setattr(TopScoresHandler, "get", broken)


async def test_plain_reads_are_counted_like_handled_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with serving() as client:
        no_handler(monkeypatch)
        metrics = client.running.service.metrics

        def counted() -> tuple[float | None, float | None]:
            labels = {"route": "top_scores", "method": "GET"}
            return (
                metrics.registry.get_sample_value(
                    "scoreboard_request_duration_seconds_count", labels
                ),
                metrics.registry.get_sample_value(
                    "scoreboard_http_responses_total", {"route": "top_scores", "status": "200"}
                ),
            )

        before = counted()
        for _ in range(3):
            assert (await client.request("GET", PATH)).code == 200
        after = counted()
        assert after == ((before[0] or 0) + 3, (before[1] or 0) + 3)


async def test_plain_reads_write_the_access_log_line_handled_ones_write(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving() as client:
        with caplog.at_level(logging.DEBUG, logger="scoreboard.access"):
            await read_both_ways(client, monkeypatch)
        lines = [r for r in caplog.records if r.name == "scoreboard.access"]
        fields = ("method", "path", "status", "remote_ip")
        assert [tuple(r.__dict__[f] for f in fields) for r in lines] == [
            ("GET", PATH, 200, "127.0.0.1")
        ] * 2
        assert [r.levelno for r in lines] == [logging.DEBUG] * 2
        assert all(r.__dict__["duration_ms"] >= 0 for r in lines)


# --- GET /api/players/{id|me} ---------------------------------------------------------------


def test_a_plain_read_of_one_player_gives_its_id_and_the_rest_goes_to_the_handler() -> None:
    assert plain_player_read(request(uri="/api/players/carol")) == "carol"
    assert plain_player_read(request(uri="/api/players/me")) == "me"
    assert plain_player_read(request(uri="/api/players/carol?x=1")) is None
    assert plain_player_read(request(uri="/api/players/car%20ol")) is None  # decoded there
    assert plain_player_read(request(uri="/api/players/" + "x" * 129)) is None
    assert plain_player_read(request(uri="/api/players/lookup")) is None  # its own route
    assert plain_player_read(request(uri="/api/players/carol/around")) is None
    assert plain_player_read(request(uri="/api/players/")) is None
    assert plain_player_read(request("HEAD", "/api/players/carol")) is None
    assert plain_player_read(request(uri="/api/players/carol", Origin="https://a.example")) is None
    assert plain_player_read(request(uri="/api/players/carol", If_None_Match='"x"')) is None
    assert plain_player_read(request(uri="/api/players/carol", Content_Length="2")) is None


async def test_a_plain_read_of_a_player_gets_the_handlers_status_headers_and_body(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with serving() as client:
        for user, score in (("ann", 5), ("bob", 3)):
            await client.update(make_token(user, name=user.title()), {"increment": score})
        mine = {"Authorization": f"Bearer {make_token('bob')}"}
        for path, headers in (("/api/players/ann", {}), ("/api/players/me", mine)):
            fast, handled = await read_both_ways(client, monkeypatch, headers, path=path)
            assert (fast.code, fast.body) == (handled.code, handled.body)
            assert shape(fast) == shape(handled)
            assert fast.headers["Etag"] == handled.headers["Etag"]
        assert body_of(fast) == {
            "user_id": "bob",
            "username": "Bob",
            "score": 3,
            "rank": 2,
            "total": 2,
            "percentile": 50.0,
        }


def no_player_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(handler: PlayerHandler, user_id: str) -> None:
        raise RuntimeError("the handler was used")

    monkeypatch.setattr(PlayerHandler, "get", broken)


async def test_player_reads_skip_the_handler_unless_it_must_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with serving(auth_failures_per_minute=2) as client:
        await client.update(make_token("ann"), {"increment": 5})
        no_player_handler(monkeypatch)
        assert (await client.request("GET", "/api/players/ann")).code == 200
        good = {"Authorization": f"Bearer {make_token('ann')}"}
        assert (await client.request("GET", "/api/players/me", None, good)).code == 200
        # Not ranked, no token, a bad token: the handler answers (here: fails).
        assert (await client.request("GET", "/api/players/nobody")).code == 500
        assert (await client.request("GET", "/api/players/me")).code == 500
        bad = {"Authorization": "Bearer not-a-jwt"}
        assert (await client.request("GET", "/api/players/me", None, bad)).code == 500
        metrics = client.running.service.metrics
        assert (
            metrics.registry.get_sample_value(
                "scoreboard_http_responses_total", {"route": "player", "status": "200"}
            )
            == 2
        )


async def test_a_refused_token_counts_once_and_a_throttled_address_waits_even_with_a_good_one() -> (
    None
):
    async with serving(auth_failures_per_minute=2) as client:
        await client.update(make_token("ann"), {"increment": 5})
        bad = {"Authorization": "Bearer not-a-jwt"}
        for _ in range(2):
            answer = await client.request("GET", "/api/players/me", None, bad)
            assert (answer.code, body_of(answer)["error"]) == (401, "invalid_token")
        good = {"Authorization": f"Bearer {make_token('ann')}"}
        throttled = await client.request("GET", "/api/players/me", None, good)
        assert (throttled.code, body_of(throttled)["error"]) == (429, "auth_throttled")
