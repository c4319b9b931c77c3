"""POST /api/update-score and GET /api/top-scores against a real server."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import tornado.httpclient

from handlers.scores import request_fingerprint
from server.domain.increments import IncrementPolicy
from server.domain.records import Decision, IncrementCommand, UserRecord
from server.store.port import StoreError, StoreTimeout, StoreUnavailable
from server.store.sqlite import SqliteStore
from tests.conftest import Client, body_of, eventually, make_token, scaled, serving

pytestmark = pytest.mark.gen_test(timeout=scaled(30))


async def wait_for_top(client: Client, expected: list[dict[str, Any]]) -> None:
    """Wait until GET /api/top-scores equals ``expected`` (the leaderboard is async)."""
    await eventually(client.top, f"the board is {expected}", until=lambda rows: rows == expected)


async def test_update_returns_new_score_and_top_scores_shows_it() -> None:
    async with serving() as client:
        alice = make_token("alice", name="Alice")
        first = await client.update(alice, {"increment": 5})
        assert first.code == 200
        assert body_of(first) == {"status": "success", "new_score": 5, "rank": 1, "total": 1}
        second = await client.update(alice, b"")  # an empty body means +1
        assert body_of(second) == {"status": "success", "new_score": 6, "rank": 1, "total": 1}
        await wait_for_top(client, [{"user_id": "alice", "username": "Alice", "score": 6}])


async def test_username_follows_name_then_preferred_username_then_sub() -> None:
    async with serving() as client:
        await client.update(make_token("u1", name="Named"))
        await client.update(make_token("u2", preferred_username="pref", name=None))
        await client.update(make_token("u3"))
        await client.update(make_token("u3"))
        expected = [
            {"user_id": "u3", "username": "u3", "score": 2},
            {"user_id": "u1", "username": "Named", "score": 1},
            {"user_id": "u2", "username": "pref", "score": 1},
        ]
        await wait_for_top(client, expected)
        # Later updates keep the username current.
        await client.update(make_token("u1", name="Renamed"))
        expected[1:2] = []
        expected.insert(0, {"user_id": "u1", "username": "Renamed", "score": 2})
        expected[0], expected[1] = expected[1], expected[0]  # u3 reached 2 first
        await wait_for_top(client, expected)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{", "invalid_json"),
        (b"[1]", "invalid_json"),
        (b'"x"', "invalid_json"),
        (b'{"incremnt": 2}', "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b'{"increment": 0}', "invalid_increment"),
        (b'{"increment": -3}', "invalid_increment"),
        (b'{"increment": 1.5}', "invalid_increment"),
        (b'{"increment": 2.0}', "invalid_increment"),
        (b'{"increment": true}', "invalid_increment"),
        (b'{"increment": "3"}', "invalid_increment"),
        (b'{"increment": null}', "invalid_increment"),
        (b'{"increment": 101}', "invalid_increment"),
    ],
)
async def test_bad_bodies_get_400_with_a_stable_code(body: bytes, code: str) -> None:
    async with serving() as client:
        response = await client.update(make_token("bob"), body)
        assert response.code == 400
        assert body_of(response)["error"] == code
        assert body_of(response)["message"]
        assert await client.top() == []  # nothing applied


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[" * 3000, "nests too deep"),  # json.loads raises RecursionError: not a 500
        (b"[" * 17 + b'"\\' * 2000, "not valid JSON"),  # once 50 ms of regex backtracking
        (b'{"increment": ' + b"[" * 17 + b"1" + b"]" * 17 + b"}", "nests 18 levels deep"),
        (b'{"increment": 5, "increment": 1}', "'increment' appears twice"),
        (b'{"increment": {"a": 1, "a": 2}}', "'a' appears twice"),
    ],
)
async def test_deep_nesting_and_duplicate_keys_get_400_invalid_json(
    body: bytes, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with serving() as client:
        with caplog.at_level(logging.WARNING):
            response = await client.update(make_token("bob"), body)
        assert response.code == 400
        assert body_of(response)["error"] == "invalid_json"
        assert message in body_of(response)["message"]
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert await client.top() == []  # nothing applied


async def test_nesting_within_the_bound_and_colons_in_strings_are_plain_json() -> None:
    async with serving() as client:
        token = make_token("bob")
        within = b'{"increment": ' + b"[" * 15 + b"1" + b"]" * 15 + b"}"
        assert body_of(await client.update(token, within))["error"] == "invalid_increment"
        response = await client.update(token, b'{"increment": 3, "action_token": "a:b:{["}')
        assert body_of(response) == {"status": "success", "new_score": 3, "rank": 1, "total": 1}


async def test_largest_increment_is_accepted() -> None:
    async with serving(max_increment=7) as client:
        assert body_of(await client.update(make_token("bob"), {"increment": 7}))["new_score"] == 7
        response = await client.update(make_token("bob"), {"increment": 8})
        assert body_of(response)["error"] == "invalid_increment"


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "missing_token"),
        ("", "missing_token"),
        ("Bearer ", "missing_token"),
        ("Basic dXNlcjpwYXNz", "invalid_token"),
        ("Bearer not-a-jwt", "invalid_token"),
        (
            "Bearer " + make_token("x", secret="another-secret-that-is-32-bytes-long!!"),
            "invalid_token",
        ),
        ("Bearer " + make_token("x", ttl_s=-120), "invalid_token"),
    ],
)
async def test_bad_authorization_gets_401(header: str | None, code: str) -> None:
    async with serving() as client:
        headers = {} if header is None else {"Authorization": header}
        response = await client.update(None, {"increment": 1}, headers=headers)
        assert response.code == 401
        assert body_of(response)["error"] == code


async def test_body_over_4_kib_gets_413() -> None:
    async with serving() as client:
        token = make_token("big")
        padded = b'{"increment": 1' + b" " * 4096 + b"}"
        response = await client.update(token, padded)
        assert response.code == 413
        assert body_of(response)["error"] == "body_too_large"
        exactly = b'{"increment": 2}'.ljust(4096)
        assert body_of(await client.update(token, exactly))["new_score"] == 2


async def test_eleventh_update_in_a_minute_gets_429_with_retry_after() -> None:
    async with serving() as client:
        token = make_token("spammer")
        for expected in range(1, 11):
            assert body_of(await client.update(token))["new_score"] == expected
        response = await client.update(token)
        assert response.code == 429
        assert body_of(response)["error"] == "rate_limited"
        assert 1 <= int(response.headers["Retry-After"]) <= 60
        # Other users are not affected.
        assert (await client.update(make_token("other"))).code == 200


async def test_malformed_requests_do_not_count_against_the_rate_limit() -> None:
    async with serving(rate_limit_per_minute=2) as client:
        token = make_token("careful")
        for _ in range(5):
            assert (await client.update(token, {"increment": 0})).code == 400
        assert (await client.update(token)).code == 200
        assert (await client.update(token)).code == 200
        assert (await client.update(token)).code == 429


async def test_rate_limit_zero_turns_it_off() -> None:
    async with serving(rate_limit_per_minute=0) as client:
        token = make_token("free")
        for expected in range(1, 31):
            assert body_of(await client.update(token))["new_score"] == expected


async def test_idempotent_retry_is_not_applied_twice() -> None:
    async with serving() as client:
        token = make_token("retrier")
        key = {"Idempotency-Key": "action-42"}
        first = await client.update(token, {"increment": 3}, headers=key)
        again = await client.update(token, {"increment": 3}, headers=key)
        assert (
            body_of(first)
            == body_of(again)
            == {"status": "success", "new_score": 3, "rank": 1, "total": 1}
        )
        other = await client.update(token, {"increment": 3}, headers={"Idempotency-Key": "b"})
        assert body_of(other)["new_score"] == 6
        # The first key still answers its own result.
        assert body_of(await client.update(token, {"increment": 3}, headers=key))["new_score"] == 3


def test_a_request_fingerprint_is_what_decides_the_outcome() -> None:
    fingerprint = request_fingerprint(5, None)
    assert fingerprint == hashlib.sha256(b"[5,null]").hexdigest()[:16]
    assert request_fingerprint(5, None) == fingerprint  # the same request, the same digest
    others = {request_fingerprint(6, None), request_fingerprint(5, "jti-1")}
    others.add(request_fingerprint(5, "jti-2"))
    assert fingerprint not in others and len(others) == 3


async def test_a_replay_is_marked_and_only_a_replay() -> None:
    async with serving() as client:
        token = make_token("retrier")
        key = {"Idempotency-Key": "action-42"}
        first = await client.update(token, {"increment": 3}, headers=key)
        assert "Idempotent-Replayed" not in first.headers
        again = await client.update(token, {"increment": 3}, headers=key)
        assert again.headers["Idempotent-Replayed"] == "true"
        assert body_of(again) == {"status": "success", "new_score": 3, "rank": 1, "total": 1}
        unkeyed = await client.update(token, {"increment": 3})
        assert "Idempotent-Replayed" not in unkeyed.headers


async def test_a_key_reused_with_another_body_is_refused_with_422() -> None:
    async with serving() as client:
        token = make_token("reuser")
        key = {"Idempotency-Key": "k-1"}
        assert body_of(await client.update(token, {"increment": 3}, headers=key))["new_score"] == 3
        reused = await client.update(token, {"increment": 4}, headers=key)
        assert reused.code == 422
        assert body_of(reused) == {
            "error": "idempotency_key_reused",
            "message": "this Idempotency-Key was used with a different request; use a new key",
        }
        assert "Idempotent-Replayed" not in reused.headers
        # The same request written differently is the same request: a replay.
        same = await client.update(token, b' {\n  "increment" :3 }', headers=key)
        assert (same.code, body_of(same)["new_score"]) == (200, 3)
        assert same.headers["Idempotent-Replayed"] == "true"
        # No body and {"increment": 1} mean the same.
        other = {"Idempotency-Key": "k-2"}
        assert body_of(await client.update(token, b"", headers=other))["new_score"] == 4
        same = await client.update(token, {"increment": 1}, headers=other)
        assert (same.code, body_of(same)["new_score"]) == (200, 4)
        assert (await client.update(token, {"increment": 2}, headers=other)).code == 422
        await wait_for_top(client, [{"user_id": "reuser", "username": "reuser", "score": 4}])


async def test_a_key_stored_before_fingerprints_answers_any_body_as_a_replay() -> None:
    """A record written by the previous version: its keys have no fingerprint."""
    store = SqliteStore(":memory:", IncrementPolicy())
    async with serving(store=store) as client:
        await store._call(
            lambda conn: conn.execute(
                "INSERT INTO users_scores (user_id, username, score, v, reached_ms, recent_keys) "
                "VALUES ('old', 'Old', 7, 2, 0, '[[\"k-old\", 7]]')"
            )
        )
        token = make_token("old")
        replay = await client.update(token, {"increment": 9}, headers={"Idempotency-Key": "k-old"})
        assert (replay.code, body_of(replay)["new_score"]) == (200, 7)
        assert replay.headers["Idempotent-Replayed"] == "true"
        applied = await client.update(token, {"increment": 9}, headers={"Idempotency-Key": "k-new"})
        assert body_of(applied)["new_score"] == 16


async def test_idempotency_key_over_128_characters_is_refused() -> None:
    async with serving() as client:
        response = await client.update(
            make_token("k"), {"increment": 1}, headers={"Idempotency-Key": "x" * 129}
        )
        assert response.code == 400
        assert body_of(response)["error"] == "invalid_idempotency_key"


async def test_ten_concurrent_increments_of_one_user_get_1_to_10() -> None:
    async with serving() as client:
        token = make_token("hot")
        responses = await asyncio.gather(*(client.update(token) for _ in range(10)))
        assert sorted(body_of(r)["new_score"] for r in responses) == list(range(1, 11))


async def test_many_users_in_parallel() -> None:
    async with serving(rate_limit_per_minute=0) as client:
        tokens = [make_token(f"user-{i:02d}") for i in range(40)]
        # User i sends i+1 increments of 1, all users at once.
        requests = [client.update(t) for i, t in enumerate(tokens) for _ in range(i + 1)]
        responses = await asyncio.gather(*requests)
        assert all(r.code == 200 for r in responses)
        expected = [
            {"user_id": f"user-{i:02d}", "username": f"user-{i:02d}", "score": i + 1}
            for i in range(39, 29, -1)
        ]
        await wait_for_top(client, expected)


async def test_full_mailbox_answers_503_busy_and_applies_nothing_more() -> None:
    async with serving(mailbox_size=1, rate_limit_per_minute=0) as client:
        token = make_token("flood")
        responses = await asyncio.gather(*(client.update(token) for _ in range(20)))
        codes = [r.code for r in responses]
        assert set(codes) <= {200, 503}
        busy = [r for r in responses if r.code == 503]
        assert busy, "a one-message mailbox must push back under 20 concurrent requests"
        assert all(body_of(r)["error"] == "busy" and r.headers["Retry-After"] for r in busy)
        applied = sorted(body_of(r)["new_score"] for r in responses if r.code == 200)
        assert applied == list(range(1, len(applied) + 1))


async def test_top_scores_has_at_most_top_n_rows_and_ties_go_to_the_first() -> None:
    async with serving(top_n=3) as client:
        for name in ["b", "a", "c", "d"]:
            await client.update(make_token(name), {"increment": 5})
        # All tied at 5: the first to reach it ranks first.
        expected = [{"user_id": n, "username": n, "score": 5} for n in ["b", "a", "c"]]
        await wait_for_top(client, expected)


async def test_unknown_route_and_wrong_method_are_json_errors() -> None:
    async with serving() as client:
        missing = await client.request("GET", "/api/nope")
        assert missing.code == 404 and body_of(missing)["error"] == "not_found"
        wrong = await client.request("DELETE", "/api/top-scores")
        assert wrong.code == 405 and body_of(wrong)["error"] == "method_not_allowed"
        get_update = await client.request("GET", "/api/update-score")
        assert get_update.code == 405


async def test_scores_survive_a_restart_on_the_same_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "scores.db")
    async with serving(sqlite_path=path) as client:
        await client.update(make_token("keeper"), {"increment": 9})
    async with serving(sqlite_path=path) as client:
        assert await client.top() == [{"user_id": "keeper", "username": "keeper", "score": 9}]
        assert body_of(await client.update(make_token("keeper")))["new_score"] == 10


async def test_chunked_body_far_over_4_kib_gets_413_json() -> None:
    async with serving() as client:
        token = make_token("chunky")

        async def seventy_kib(write: Callable[[bytes], Awaitable[None]]) -> None:
            for _ in range(70):  # chunked: no Content-Length to refuse it up front
                await write(b" " * 1024)

        response = await tornado.httpclient.AsyncHTTPClient().fetch(
            client.base_url + "/api/update-score",
            method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            body_producer=seventy_kib,
            raise_error=False,
            request_timeout=scaled(10),
        )
        assert response.code == 413
        assert body_of(response)["error"] == "body_too_large"


async def test_client_leaving_mid_body_does_not_hold_up_shutdown() -> None:
    async with serving(shutdown_timeout_s=scaled(5)) as client:
        port = client.running.port
        loop = asyncio.get_running_loop()
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(
            b"POST /api/update-score HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n123456"
        )
        await asyncio.sleep(0.05)
        sock.close()
        await asyncio.sleep(0.05)
        started = loop.time()
    assert client.running.clean_exit
    assert loop.time() - started < scaled(2)


class FailingStore(SqliteStore):
    """A store whose increments fail, as a full disk or a lost database would."""

    async def apply_increments(
        self, cmds: list[IncrementCommand], known: UserRecord | None = None
    ) -> list[Decision]:
        raise StoreError("disk I/O error")


async def test_store_failure_answers_500_database_error() -> None:
    store = FailingStore(":memory:", IncrementPolicy())
    async with serving(store=store) as client:
        response = await client.update(make_token("unlucky"))
        assert response.code == 500
        assert body_of(response) == {
            "error": "database_error",
            "message": "the score store failed; retry later",
        }


class UnavailableStore(SqliteStore):
    """A store that cannot be reached (nothing applied), or that answered too late."""

    error: StoreError = StoreUnavailable("MongoDB error: no primary")

    async def apply_increments(
        self, cmds: list[IncrementCommand], known: UserRecord | None = None
    ) -> list[Decision]:
        raise self.error


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        (
            StoreUnavailable("no primary"),
            "database_unavailable",
            "the score store is unavailable and nothing was applied; retry later",
        ),
        (
            StoreTimeout("timed out"),
            "database_timeout",
            "the score store did not answer in time: the outcome is unknown; "
            "retry with the same Idempotency-Key",
        ),
    ],
)
async def test_a_store_down_or_late_answers_503_with_retry_after(
    error: StoreError, code: str, message: str
) -> None:
    store = UnavailableStore(":memory:", IncrementPolicy())
    store.error = error
    async with serving(store=store) as client:
        response = await client.update(make_token("unlucky"))
        assert response.code == 503
        assert response.headers["Retry-After"] == "1"
        assert body_of(response) == {"error": code, "message": message}
        registry = client.running.service.metrics.registry
        assert registry.get_sample_value("scoreboard_updates_total", {"outcome": code}) == 1


class BrokenStore(SqliteStore):
    """A store with a bug: an exception no layer maps to an API error."""

    async def apply_increments(
        self, cmds: list[IncrementCommand], known: UserRecord | None = None
    ) -> list[Decision]:
        raise RuntimeError("a bug")


async def test_server_errors_are_counted_by_outcome_and_by_status() -> None:
    def sample(client: Client, name: str, **labels: str) -> float:
        registry = client.running.service.metrics.registry
        return registry.get_sample_value(name, labels) or 0.0

    async with serving(store=FailingStore(":memory:", IncrementPolicy())) as client:
        assert (await client.update(make_token("unlucky"))).code == 500
        assert sample(client, "scoreboard_updates_total", outcome="database_error") == 1
        assert (
            sample(client, "scoreboard_http_responses_total", route="update_score", status="500")
            == 1
        )
    async with serving(store=BrokenStore(":memory:", IncrementPolicy())) as client:
        response = await client.update(make_token("unlucky"))
        assert response.code == 500
        assert body_of(response)["error"] == "internal_error"
        assert sample(client, "scoreboard_updates_total", outcome="internal_error") == 1
        await client.top()
        assert (
            sample(client, "scoreboard_http_responses_total", route="top_scores", status="200") == 1
        )


async def test_updates_during_shutdown_get_503_shutting_down() -> None:
    async with serving() as client:
        client.running.inflight.draining = True  # what shutdown() sets once it stops listening
        response = await client.update(make_token("late"))
        assert response.code == 503
        assert body_of(response)["error"] == "shutting_down"
        assert response.headers["Retry-After"] == "1"
        client.running.inflight.draining = False


def sha1_etag(body: bytes) -> str:
    return f'"{hashlib.sha1(body).hexdigest()}"'


async def test_top_scores_etag_is_the_sha1_of_its_body_and_answers_if_none_match() -> None:
    async with serving() as client:
        await client.update(make_token("alice"), {"increment": 3})
        await wait_for_top(client, [{"user_id": "alice", "username": "alice", "score": 3}])
        first = await client.request("GET", "/api/top-scores")
        assert first.code == 200
        etag = first.headers["ETag"]
        assert etag == sha1_etag(first.body)
        again = await client.request("GET", "/api/top-scores")
        assert (again.headers["ETag"], again.body) == (etag, first.body)  # nothing changed
        cached = await client.request("GET", "/api/top-scores", None, {"If-None-Match": etag})
        assert cached.code == 304
        assert cached.body == b""
        assert cached.headers["ETag"] == etag
        other = await client.request("GET", "/api/top-scores", None, {"If-None-Match": '"x"'})
        assert (other.code, other.body) == (200, first.body)


async def test_top_scores_etag_changes_with_the_top() -> None:
    async with serving() as client:
        empty = await client.request("GET", "/api/top-scores")
        assert empty.headers["ETag"] == sha1_etag(empty.body)
        await client.update(make_token("bob"), {"increment": 2})
        await wait_for_top(client, [{"user_id": "bob", "username": "bob", "score": 2}])
        changed = await client.request("GET", "/api/top-scores")
        assert changed.headers["ETag"] == sha1_etag(changed.body)
        assert changed.headers["ETag"] != empty.headers["ETag"]
        stale = await client.request(
            "GET", "/api/top-scores", None, {"If-None-Match": empty.headers["ETag"]}
        )
        assert (stale.code, stale.body) == (200, changed.body)
        await client.update(make_token("bob"), {"increment": 1})
        await wait_for_top(client, [{"user_id": "bob", "username": "bob", "score": 3}])
        latest = await client.request("GET", "/api/top-scores")
        assert latest.headers["ETag"] == sha1_etag(latest.body)
        assert latest.headers["ETag"] not in {empty.headers["ETag"], changed.headers["ETag"]}


async def test_top_scores_not_ready_has_no_etag() -> None:
    async with serving() as client:
        ready = await client.request("GET", "/api/top-scores")
        leaderboard = client.running.service.leaderboard
        loaded = leaderboard.view
        leaderboard.view = dataclasses.replace(loaded, loaded=False)
        try:
            loading = await client.request("GET", "/api/top-scores")
            assert loading.code == 503
            assert body_of(loading)["error"] == "not_ready"
            assert "ETag" not in loading.headers
            revalidating = await client.request(
                "GET", "/api/top-scores", None, {"If-None-Match": ready.headers["ETag"]}
            )
            assert revalidating.code == 503  # never a 304 for a board that is not loaded
            assert "ETag" not in revalidating.headers
        finally:
            leaderboard.view = loaded


async def test_top_scores_body_is_hashed_once_per_change_not_per_response(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_sha1 = hashlib.sha1
    hashed: list[bytes] = []

    def counting_sha1(data: bytes = b"", **kwargs: Any) -> Any:
        hashed.append(bytes(data))  # Tornado's default ETag hashes with update(), not here
        return real_sha1(data, **kwargs)

    async with serving() as client:
        await client.update(make_token("carol"), {"increment": 4})
        await wait_for_top(client, [{"user_id": "carol", "username": "carol", "score": 4}])
        monkeypatch.setattr(hashlib, "sha1", counting_sha1)
        responses = [await client.request("GET", "/api/top-scores") for _ in range(5)]
        monkeypatch.undo()
        assert {r.headers["ETag"] for r in responses} == {sha1_etag(responses[0].body)}
        etag = client.running.service.leaderboard.view.top_scores.etag
        assert etag == responses[0].headers["ETag"]
        assert len(hashed) <= 1  # the unchanged body is not hashed again per response


# --- one hot user: concurrent updates batched by the user actor ------------------------------


async def _update_concurrently(client: Client, token: str, n: int) -> list[Any]:
    """POST ``n`` updates at once, each on its own connection; return the answers."""
    http = tornado.httpclient.AsyncHTTPClient(force_instance=True, max_clients=n)
    try:
        responses = await asyncio.gather(
            *(
                http.fetch(
                    client.base_url + "/api/update-score",
                    method="POST",
                    body=b'{"increment": 1}',
                    headers={
                        "Authorization": f"Bearer {token}",
                        "Content-Type": "application/json",
                    },
                    raise_error=False,
                    request_timeout=scaled(10),
                )
                for _ in range(n)
            )
        )
    finally:
        http.close()
    assert [r.code for r in responses] == [200] * n, [r.body for r in responses if r.code != 200]
    return [body_of(r) for r in responses]


async def test_concurrent_updates_of_one_user_each_get_their_own_new_score() -> None:
    async with serving(rate_limit_per_minute=0) as client:
        answers = await _update_concurrently(client, make_token("hot", name="Hot"), 40)
        assert all(a["status"] == "success" for a in answers)
        assert sorted(a["new_score"] for a in answers) == list(range(1, 41))
        expected = [{"user_id": "hot", "username": "Hot", "score": 40}]
        await wait_for_top(client, expected)


class BatchRecordingStore(SqliteStore):
    """Records the size of every ``apply_increments`` call; the first waits at a gate."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sizes: list[int] = []
        self.gate = asyncio.Event()
        self.entered = asyncio.Event()

    async def apply_increments(
        self, cmds: list[IncrementCommand], known: UserRecord | None = None
    ) -> list[Decision]:
        self.sizes.append(len(cmds))
        self.entered.set()
        await self.gate.wait()
        return await super().apply_increments(cmds, known)


async def test_updates_queued_behind_a_slow_write_are_written_together() -> None:
    store = BatchRecordingStore(":memory:", IncrementPolicy(rate_limit_per_minute=0))
    async with serving(store=store) as client:
        token = make_token("hot", name="Hot")
        first = asyncio.ensure_future(client.update(token))
        await asyncio.wait_for(store.entered.wait(), scaled(5))
        rest = asyncio.ensure_future(_update_concurrently(client, token, 30))
        users = client.running.service.users
        for _ in range(int(scaled(5) / 0.005)):  # until all 30 wait in the user's mailbox
            if users.mailbox_depth() >= 30:
                break
            await asyncio.sleep(0.005)
        assert users.mailbox_depth() == 30
        store.gate.set()
        assert body_of(await first)["new_score"] == 1
        assert sorted(a["new_score"] for a in await rest) == list(range(2, 32))
        assert store.sizes == [1, 30]
        expected = [{"user_id": "hot", "username": "Hot", "score": 31}]
        await wait_for_top(client, expected)
