"""HTTP conformance a client relies on: RFC 6750 challenges, CORS headers a browser may
read, and HEAD on every GET route."""

from __future__ import annotations

import json

import pytest
import tornado.httpclient

from handlers.errors import challenge
from tests.conftest import body_of, make_token, scaled, serving

pytestmark = pytest.mark.gen_test(timeout=scaled(30))

REALM = 'Bearer realm="scoreboard"'
GAME = {"Origin": "https://game.example"}


# --- WWW-Authenticate (RFC 6750) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("authorization", "expected"),
    [
        (None, REALM),  # no credentials: no error code
        ("Bearer ", REALM),
        ("Basic dXNlcjpwYXNz", REALM),  # another scheme is no bearer token
        ("Bearer not-a-jwt", REALM + ', error="invalid_token", error_description="the token'),
        (
            "Bearer " + make_token("x", ttl_s=-120),
            REALM + ', error="invalid_token", error_description="the token has expired"',
        ),
    ],
)
async def test_every_401_carries_a_bearer_challenge(
    authorization: str | None, expected: str
) -> None:
    async with serving() as client:
        headers = {} if authorization is None else {"Authorization": authorization}
        response = await client.update(None, {"increment": 1}, headers=headers)
        assert response.code == 401
        assert response.headers["WWW-Authenticate"].startswith(expected)


async def test_a_refused_websocket_token_and_a_missing_one_get_the_challenge_too() -> None:
    async with serving(ws_require_auth=True) as client:
        for query, error in (("", None), ("?token=junk", "invalid_token")):
            with pytest.raises(tornado.httpclient.HTTPClientError) as refused:
                await client.websocket(query)
            assert refused.value.code == 401
            assert refused.value.response is not None
            value = refused.value.response.headers["WWW-Authenticate"]
            assert value.startswith(REALM)
            assert (f'error="{error}"' in value) == (error is not None)


async def test_an_admin_route_without_the_scope_names_the_scope_it_needs() -> None:
    async with serving() as client:
        response = await client.request(
            "GET", "/api/users/u1", headers={"Authorization": f"Bearer {make_token('player')}"}
        )
        assert response.code == 403
        assert response.headers["WWW-Authenticate"] == (
            REALM + ', error="insufficient_scope", scope="scores:admin"'
        )


def test_a_description_keeps_only_what_rfc_6750_allows_in_it() -> None:
    value = challenge("invalid_token", 'bad "alg" \\ é\n')["WWW-Authenticate"]
    assert value == REALM + ', error="invalid_token", error_description="bad alg  "'


# --- CORS ---------------------------------------------------------------------------------


async def test_a_browser_may_read_retry_after_etag_and_the_request_id() -> None:
    async with serving(allowed_origins=("https://game.example",), rate_limit_per_minute=1) as c:
        top = await c.request("GET", "/api/top-scores", headers=GAME)
        token = make_token("limited")
        await c.update(token, {"increment": 1})
        limited = await c.update(token, {"increment": 1}, headers=GAME)
        assert limited.code == 429
        for response in (top, limited):
            exposed = {
                name.strip().lower()
                for name in response.headers["Access-Control-Expose-Headers"].split(",")
            }
            assert {"retry-after", "etag", "x-request-id", "idempotent-replayed"} <= exposed
        assert "Access-Control-Expose-Headers" not in (await c.request("GET", "/healthz")).headers


@pytest.mark.parametrize(
    ("path", "methods"),
    [
        ("/api/update-score", {"POST", "OPTIONS"}),
        ("/api/top-scores", {"GET", "HEAD", "OPTIONS"}),
        ("/api/users/u1", {"GET", "HEAD", "DELETE", "OPTIONS"}),
        ("/api/users/u1/reset", {"POST", "OPTIONS"}),
        ("/api/users/u1/ban", {"DELETE", "OPTIONS"}),
    ],
)
async def test_a_preflight_allows_the_methods_its_route_has(path: str, methods: set[str]) -> None:
    async with serving() as client:
        preflight = await client.request(
            "OPTIONS", path, headers={**GAME, "Access-Control-Request-Method": "POST"}
        )
        assert preflight.code == 204
        allowed = {m.strip() for m in preflight.headers["Access-Control-Allow-Methods"].split(",")}
        assert allowed == methods
        assert "x-request-id" in preflight.headers["Access-Control-Allow-Headers"].lower()


# --- HEAD ---------------------------------------------------------------------------------

PER_ANSWER = {"Date", "X-Request-Id"}


@pytest.mark.parametrize(
    "path", ["/api/top-scores", "/healthz", "/readyz", "/api/openapi.json", "/api/users/u1"]
)
async def test_head_answers_like_get_without_the_body(path: str) -> None:
    admin = {"Authorization": f"Bearer {make_token('admin', scope='scores:admin')}"}
    async with serving() as client:
        await client.update(make_token("u1"), {"increment": 3})
        get = await client.request("GET", path, headers=admin)
        head = await client.request("HEAD", path, headers=admin)
        assert get.code == head.code == 200
        assert head.body == b""
        assert int(head.headers["Content-Length"]) == len(get.body) > 0
        assert [(k, v) for k, v in head.headers.get_all() if k not in PER_ANSWER] == [
            (k, v) for k, v in get.headers.get_all() if k not in PER_ANSWER
        ]


async def test_head_of_metrics_and_of_errors_has_no_body() -> None:
    async with serving() as client:
        metrics = await client.request("HEAD", "/metrics")
        assert metrics.code == 200 and metrics.body == b""
        assert metrics.headers["Content-Type"].startswith("text/plain")
        missing = await client.request("HEAD", "/api/users/u1")  # no token
        assert (missing.code, missing.body) == (401, b"")
        assert missing.headers["WWW-Authenticate"] == REALM
        wrong = await client.request("HEAD", "/api/update-score")
        assert wrong.code == 405
        assert "HEAD" not in wrong.headers["Allow"]
        allow = (await client.request("DELETE", "/api/top-scores")).headers["Allow"]
        assert {m.strip() for m in allow.split(",")} == {"GET", "HEAD", "OPTIONS"}


async def test_head_of_the_top_scores_is_no_cacheable_write_and_follows_the_etag() -> None:
    async with serving() as client:
        get = await client.request("GET", "/api/top-scores")
        head = await client.request("HEAD", "/api/top-scores")
        assert "Cache-Control" not in head.headers
        assert head.headers["Etag"] == get.headers["Etag"]
        assert json.loads(get.body) == {"top_scores": []}
        again = await client.request(
            "HEAD", "/api/top-scores", headers={"If-None-Match": head.headers["Etag"]}
        )
        assert again.code == 304


async def test_a_head_request_on_the_websocket_route_is_refused_as_a_get_is() -> None:
    async with serving() as client:
        response = await client.request("HEAD", "/ws/scoreboard")
        assert response.code == 400  # prepare() refuses both without an Upgrade
        assert body_of(await client.request("GET", "/ws/scoreboard"))["error"] == (
            "websocket_required"
        )
