"""A store that goes away, hangs, or is not there at start: what clients and probes see.

Real servers on unused ports; the store is the embedded one with switches
(:class:`SwitchedStore`): ``down`` makes every call raise ``StoreUnavailable`` and the
probe fail, as an unreachable MongoDB does once its adapter classifies the driver's
errors; ``hang`` makes writes wait forever, as a write stuck on a lost primary does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Awaitable
from pathlib import Path

import pytest
import tornado.httpclient
import tornado.websocket

from server.domain.admin import AdminChange
from server.domain.increments import IncrementPolicy
from server.domain.records import BoardRow, Decision, IncrementCommand, UserRecord
from server.lifecycle import run_server
from server.store.port import StoreError, StoreUnavailable
from server.store.sqlite import SqliteStore
from tests.conftest import (
    SECRET,
    Client,
    body_of,
    eventually,
    make_token,
    scaled,
    serving,
    settings_for,
)
from tests.server.pods import PausableFeed

pytestmark = pytest.mark.gen_test(timeout=scaled(30))

ADMIN = make_token("admin-1", scope="scores:admin")
OUTAGE_S = 5.0  # how long a test waits for the service to notice an outage, or its end


class SwitchedStore(SqliteStore):
    """The embedded store with an outage switch, a hang switch and call counts.

    Args:
        unavailable_opens: how many first calls of ``open`` raise ``StoreUnavailable``.
        fatal_open: ``open`` raises a plain ``StoreError`` (what start must not retry).
    """

    def __init__(self, *, unavailable_opens: int = 0, fatal_open: bool = False) -> None:
        super().__init__(":memory:", IncrementPolicy(rate_limit_per_minute=0))
        self.down = False
        self.hang = False
        self.unavailable_opens = unavailable_opens
        self.fatal_open = fatal_open
        self.opens = 0
        self.writes = 0
        self.released = asyncio.Event()  # ends every hung write

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailable("the test cut the store off")

    async def open(self) -> None:
        self.opens += 1
        if self.fatal_open:
            raise StoreError("the test's store cannot be used")
        if self.opens <= self.unavailable_opens:
            raise StoreUnavailable("the test's store is not reachable yet")
        await super().open()

    async def ping(self) -> bool:
        return not self.down and await super().ping()

    async def apply_increments(
        self, cmds: list[IncrementCommand], known: UserRecord | None = None
    ) -> list[Decision]:
        self.writes += 1
        self._check()
        if self.hang:
            await self.released.wait()  # no answer until the test releases it
        return await super().apply_increments(cmds, known)

    async def apply_admin(
        self, user_id: str, change: AdminChange, blank: UserRecord | None = None
    ) -> UserRecord | None:
        self.writes += 1
        self._check()
        if self.hang:
            await self.released.wait()
        return await super().apply_admin(user_id, change, blank)

    async def top(self, limit: int) -> list[BoardRow]:
        self._check()
        return await super().top(limit)


async def ready(client: Client) -> bool:
    return (await client.request("GET", "/readyz")).code == 200


async def tried(store: SwitchedStore, times: int) -> bool:
    return store.opens >= times


async def refusing(client: Client) -> bool:
    return not client.running.service.store.breaker.closed


async def update_answers(client: Client, code: int, user: str = "bob") -> bool:
    return (await client.update(make_token(user), {"increment": 1})).code == code


def error_of(response: tornado.httpclient.HTTPResponse) -> str:
    error: str = body_of(response)["error"]
    return error


# --- finding 1: readiness is "this pod can serve what it has" ----------------------------


async def test_a_short_store_outage_keeps_the_pod_ready_and_its_reads_served() -> None:
    store = SwitchedStore()
    async with serving(
        store=store, ready_max_staleness_s=scaled(30), store_probe_interval_s=0.05
    ) as client:
        assert (await client.update(make_token("ann"), {"increment": 4})).code == 200
        store.down = True  # a failover: the primary is gone
        await eventually(lambda: refusing(client), "a probe noticed", timeout_s=OUTAGE_S)
        # Within the staleness the pod stays in the Service: reads and the live stream go on.
        readyz = await client.request("GET", "/readyz")
        assert readyz.code == 200, readyz.body
        assert await client.top() == [{"user_id": "ann", "username": "ann", "score": 4}]
        ws = await client.websocket()
        assert json.loads(await ws.read_message())["event"] == "snapshot"
        ws.close()
        # Writes fail fast and say when to come back.
        writes = store.writes
        response = await client.update(make_token("ann"), {"increment": 1})
        assert response.code == 503
        assert error_of(response) == "database_unavailable"
        assert int(response.headers["Retry-After"]) >= 1
        assert store.writes == writes, "refused without queueing behind the store"
        # Back: the next probe reopens writes.
        store.down = False
        await eventually(
            lambda: update_answers(client, 200), "writes go through again", timeout_s=OUTAGE_S
        )


async def test_a_store_down_longer_than_the_staleness_makes_the_pod_unready() -> None:
    store = SwitchedStore()
    async with serving(
        store=store, ready_max_staleness_s=0.3, store_probe_interval_s=0.05
    ) as client:
        assert await ready(client)
        store.down = True
        await eventually(
            lambda: _not(ready(client)), "unready past the staleness", timeout_s=OUTAGE_S
        )
        response = await client.request("GET", "/readyz")
        assert error_of(response) == "not_ready"
        assert "probe" in body_of(response)["message"]
        assert (await client.request("GET", "/healthz")).code == 200  # alive all the same
        store.down = False
        await eventually(
            lambda: ready(client), "ready again once the store answers", timeout_s=OUTAGE_S
        )


async def _not(check: Awaitable[bool]) -> bool:
    return not await check


async def test_a_change_feed_down_longer_than_the_staleness_makes_the_pod_unready() -> None:
    store = SwitchedStore()
    feed = PausableFeed(store.changes)
    store.changes = feed  # type: ignore[misc]  # the follower reads the wrapped feed
    async with serving(
        store=store, ready_max_staleness_s=0.3, store_probe_interval_s=0.05
    ) as client:
        assert await ready(client)
        feed.pause()  # the change stream cannot be reopened
        await eventually(
            lambda: _not(ready(client)), "unready past the staleness", timeout_s=OUTAGE_S
        )
        assert "change feed" in body_of(await client.request("GET", "/readyz"))["message"]
        feed.resume()
        await eventually(
            lambda: ready(client), "ready again once the feed reopened", timeout_s=OUTAGE_S
        )


async def test_a_read_only_sqlite_database_is_not_ready_and_refuses_updates_at_once(
    tmp_path: Path,
) -> None:
    """Finding 13: it used to report ready while every update failed with 500."""
    path = str(tmp_path / "scores.db")
    async with serving(sqlite_path=path) as client:
        assert (await client.update(make_token("ann"), {"increment": 3})).code == 200
    with sqlite3.connect(path) as conn:  # a file an earlier version made: no probe's table
        conn.execute("DROP TABLE scoreboard_health")
    store = ReadOnlySqliteStore(path, IncrementPolicy(rate_limit_per_minute=0))
    async with serving(store=store, sqlite_path=path) as client:
        readyz = await client.request("GET", "/readyz")
        assert readyz.code == 503
        assert error_of(readyz) == "not_ready"
        # What it has, it serves: the board loaded from the read-only file.
        assert await client.top() == [{"user_id": "ann", "username": "ann", "score": 3}]
        response = await client.update(make_token("ann"), {"increment": 1})
        assert response.code == 503, response.body
        assert error_of(response) == "database_unavailable"
        assert int(response.headers["Retry-After"]) >= 1


async def test_a_full_disk_answers_503_with_retry_after_and_logs_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Finding 14: SQLITE_FULL used to answer 500 and log a line per failed job."""
    store = FullDiskSqliteStore()
    # Probes pass (they rewrite one row in place), so writes keep reaching the full disk.
    async with serving(store=store, store_probe_interval_s=0.01) as client:
        assert (await client.update(make_token("first"), {"increment": 1})).code == 200
        await store.fill_up()
        with caplog.at_level(logging.ERROR, logger="server.store.sqlite"):
            answers = []
            for i in range(1000):  # new users, until their rows need a page more
                answers.append(await client.update(make_token(f"new-{i}"), {"increment": 1}))
                if answers[-1].code != 200:
                    break
            assert answers[-1].code == 503, "the disk never filled up"
            for i in range(30):
                await asyncio.sleep(0.03)  # a probe closes the breaker in between
                answers.append(await client.update(make_token(f"more-{i}"), {"increment": 1}))
        assert {r.code for r in answers} == {200, 503}
        for response in answers:
            if response.code == 503:
                assert error_of(response) == "database_unavailable"
                assert int(response.headers["Retry-After"]) >= 1
        assert store.full_failures >= 10, store.full_failures
        # Many failed writes, one line per kind of failure (and interval).
        full = [r for r in caplog.records if r.exc_info and "full" in str(r.exc_info[1])]
        assert 1 <= len(full) <= 2, [r.getMessage() for r in full]


class ReadOnlySqliteStore(SqliteStore):
    """The embedded store on a file it may read but not write: SQLite's read-only open
    (``mode=ro``), which refuses writes even to root, unlike ``chmod``. Everything else
    the store does at open runs as it does on a real read-only file."""

    def _open_connection(self) -> sqlite3.Connection:
        return sqlite3.connect(
            f"file:{self._path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )


class FullDiskSqliteStore(SqliteStore):
    """The embedded store in memory, whose disk can be filled up: ``PRAGMA
    max_page_count`` makes SQLite answer SQLITE_FULL, as a full disk does."""

    def __init__(self) -> None:
        super().__init__(":memory:", IncrementPolicy(rate_limit_per_minute=0))
        self.full_failures = 0

    async def apply_increments(
        self, cmds: list[IncrementCommand], known: UserRecord | None = None
    ) -> list[Decision]:
        try:
            return await super().apply_increments(cmds, known)
        except StoreUnavailable:
            self.full_failures += 1
            raise

    async def fill_up(self) -> None:
        def cap(conn: sqlite3.Connection) -> None:
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {pages}")

        await self._call(cap)


# --- finding 2: a deadline on the actor ask ----------------------------------------------


async def test_an_update_whose_store_never_answers_gets_503_database_timeout() -> None:
    store = SwitchedStore()
    async with serving(store=store, update_timeout_s=0.3) as client:
        store.hang = True
        started = time.monotonic()
        response = await client.update(make_token("stuck"), {"increment": 1})
        assert response.code == 503, response.body
        assert error_of(response) == "database_timeout"
        assert "Idempotency-Key" in body_of(response)["message"]  # outcome unknown: retry
        assert response.headers["Retry-After"] == "1"
        assert time.monotonic() - started < scaled(5)
        # Other users are not held up by the stuck one.
        store.hang = False
        assert (await client.update(make_token("free"), {"increment": 1})).code == 200
        store.released.set()  # the stuck write ends; the shutdown need not wait for it


async def test_a_write_cut_by_a_shutdown_timeout_gets_503_database_timeout() -> None:
    """What a killed actor was writing may or may not be stored: the same answer as a
    deadline, never a 500."""
    store = SwitchedStore()
    async with serving(store=store, update_timeout_s=60) as client:
        store.hang = True
        pending = asyncio.ensure_future(client.update(make_token("cut"), {"increment": 1}))

        async def writing() -> bool:
            return store.writes > 0

        await eventually(writing, "the write started", timeout_s=OUTAGE_S)
        await client.running.service.users.kill_all()
        response = await pending
        assert (response.code, error_of(response)) == (503, "database_timeout")
        store.released.set()


async def test_an_admin_action_whose_store_never_answers_gets_503_database_timeout() -> None:
    store = SwitchedStore()
    async with serving(store=store, update_timeout_s=0.3) as client:
        assert (await client.update(make_token("cheat"), {"increment": 1})).code == 200
        store.hang = True
        response = await client.request(
            "POST", "/api/users/cheat/reset", b"", {"Authorization": f"Bearer {ADMIN}"}
        )
        assert response.code == 503, response.body
        assert error_of(response) == "database_timeout"
        store.released.set()


async def test_admin_routes_fail_fast_too_while_the_store_is_down() -> None:
    store = SwitchedStore()
    async with serving(store=store, store_probe_interval_s=scaled(10)) as client:
        assert (await client.update(make_token("cheat"), {"increment": 1})).code == 200
        store.down = True
        auth = {"Authorization": f"Bearer {ADMIN}"}
        reset = await client.request("POST", "/api/users/cheat/reset", b"", auth)
        assert (reset.code, error_of(reset)) == (503, "database_unavailable")
        assert int(reset.headers["Retry-After"]) >= 1
        assert not client.running.service.store.breaker.closed
        writes = store.writes
        ban = await client.request("DELETE", "/api/users/cheat", None, auth)
        assert (ban.code, error_of(ban)) == (503, "database_unavailable")
        assert store.writes == writes  # refused at once


# --- finding 5: a server starts without its store -----------------------------------------


async def test_a_server_whose_store_is_unreachable_at_start_serves_and_retries() -> None:
    store = SwitchedStore(unavailable_opens=1_000_000)
    settings = settings_for(store_probe_interval_s=0.05)
    async with run_server(settings, SECRET, store=store, wait_for_store=False) as running:
        client = Client(running)
        await eventually(lambda: tried(store, 2), "retried", timeout_s=OUTAGE_S)
        # Retrying: alive, not ready, and every route says so.
        assert (await client.request("GET", "/healthz")).code == 200
        readyz = await client.request("GET", "/readyz")
        assert (readyz.code, error_of(readyz)) == (503, "not_ready")
        update = await client.update(make_token("early"), {"increment": 1})
        assert (update.code, error_of(update)) == (503, "database_unavailable")
        assert int(update.headers["Retry-After"]) >= 1
        top = await client.request("GET", "/api/top-scores")
        assert (top.code, error_of(top)) == (503, "not_ready")
        with pytest.raises(tornado.httpclient.HTTPClientError) as refused:
            await tornado.websocket.websocket_connect(client.ws_url)
        assert refused.value.code == 503
        store.unavailable_opens = store.opens  # reachable from the next attempt on
        await asyncio.wait_for(running.service.started(), scaled(10))
        assert await ready(client)
        assert (await client.update(make_token("late"), {"increment": 2})).code == 200
        assert await client.top() == [{"user_id": "late", "username": "late", "score": 2}]


async def test_a_server_whose_store_stays_unreachable_stops_cleanly() -> None:
    store = SwitchedStore(unavailable_opens=1_000_000)
    async with run_server(settings_for(), SECRET, store=store, wait_for_store=False) as running:
        client = Client(running)
        await eventually(lambda: tried(store, 3), "retried", timeout_s=OUTAGE_S)
        assert not await ready(client)
    assert running.clean_exit  # the retrying task was cancelled with the rest


async def test_any_other_store_error_at_start_is_fatal() -> None:
    store = SwitchedStore(fatal_open=True)
    with pytest.raises(StoreError, match="cannot be used"):
        async with serving(store=store):
            pass
    assert store.opens == 1  # not retried


async def test_a_pod_whose_mongodb_is_unreachable_at_start_serves_unready(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Finding 5 end to end, with the real driver: nothing listens on port 1, so every
    attempt fails with the adapter's StoreUnavailable by the store deadline, and the pod
    stays up, unready, refusing writes at once, instead of exiting."""
    settings = settings_for(
        mongodb_uri="mongodb://127.0.0.1:1/?directConnection=true", store_timeout_s=2.0
    )
    async with run_server(settings, SECRET, wait_for_store=False) as running:
        client = Client(running)
        assert (await client.request("GET", "/healthz")).code == 200
        readyz = await client.request("GET", "/readyz")
        assert (readyz.code, error_of(readyz)) == (503, "not_ready")
        update = await client.update(make_token("early"), {"increment": 1})
        assert (update.code, error_of(update)) == (503, "database_unavailable")

        async def retry_logged() -> bool:
            return "the store is unavailable; retrying" in caplog.text

        await eventually(retry_logged, "a retry logged", timeout_s=OUTAGE_S)
    assert running.clean_exit
