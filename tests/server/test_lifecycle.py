"""The lifecycle's forced path: a shutdown that passes its drain timeout.

A real server on an unused port takes an update whose store write never finishes; its
shutdown then cannot drain, and must still end: every actor cancelled, the request
answered, the connections and the store closed, no task left, an unclean exit (1 for
``python -m server``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import tornado.httpclient

from server import lifecycle
from server.domain.increments import IncrementPolicy
from server.settings import Settings
from server.store.sqlite import SqliteStore
from tests.conftest import SECRET, Client, body_of, make_token, scaled, settings_for

pytestmark = pytest.mark.gen_test(timeout=scaled(20))

DRAIN_TIMEOUT_S = scaled(0.5)
TIMED_OUT = "shutdown timed out; stopping what is left"


class StuckStore(SqliteStore):
    """The embedded store, whose increments never finish."""

    def __init__(self) -> None:
        super().__init__(":memory:", IncrementPolicy(rate_limit_per_minute=0))
        self.writing = asyncio.Event()  # an increment reached the store
        self.closed = False

    async def apply_increments(self, *args: Any, **kwargs: Any) -> Any:
        self.writing.set()
        await asyncio.Event().wait()  # until cancelled

    async def close(self) -> None:
        self.closed = True
        await super().close()


def other_tasks() -> set[asyncio.Task[Any]]:
    return asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]


async def update(client: Client) -> tornado.httpclient.HTTPResponse:
    return await client.update(make_token("stuck"), {"increment": 1})


async def kept_alive(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection that was answered once and stays open, idle (HTTP/1.1 keep-alive)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), scaled(5))
    assert head.startswith(b"HTTP/1.1 200 ")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    await reader.readexactly(length)
    return reader, writer


@pytest.fixture
def lifecycle_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.INFO, logger="server.lifecycle"):
        yield caplog


def shutdown_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str, Any]]:
    return [
        (r.levelname, r.getMessage(), getattr(r, "timeout_s", None))
        for r in caplog.records
        if r.name == "server.lifecycle"
    ]


async def test_a_request_stuck_past_the_drain_timeout_is_cut_by_the_forced_path(
    lifecycle_logs: pytest.LogCaptureFixture,
) -> None:
    """The request is still in flight when the timeout passes: its actor is cancelled,
    so it is answered 503 ``database_timeout`` (outcome unknown), and nothing is left."""
    store = StuckStore()
    settings = settings_for(shutdown_timeout_s=DRAIN_TIMEOUT_S, update_timeout_s=scaled(60))
    async with lifecycle.run_server(settings, SECRET, store=store) as running:
        client = Client(running)
        idle, idle_writer = await kept_alive(running.port)
        stuck = asyncio.ensure_future(update(client))
        await asyncio.wait_for(store.writing.wait(), scaled(5))
        assert len(running.inflight) == 1
        leaving = time.monotonic()
    took = time.monotonic() - leaving
    assert await asyncio.wait_for(idle.read(), scaled(5)) == b""  # closed by the server
    idle_writer.close()

    assert not running.clean_exit
    assert DRAIN_TIMEOUT_S <= took < DRAIN_TIMEOUT_S + scaled(3)
    assert shutdown_lines(lifecycle_logs) == [("ERROR", TIMED_OUT, DRAIN_TIMEOUT_S)]
    response = await asyncio.wait_for(stuck, scaled(5))
    assert (response.code, body_of(response)["error"]) == (503, "database_timeout")
    assert store.closed
    assert len(running.inflight) == 0
    assert other_tasks() == set()  # actors, sweepers, probe, connections: all ended


async def test_an_actor_write_stuck_past_the_drain_timeout_is_cancelled(
    lifecycle_logs: pytest.LogCaptureFixture,
) -> None:
    """The request was answered at its deadline, but its actor still writes: draining the
    mailboxes cannot end, so the forced path cancels the actor and closes the store."""
    store = StuckStore()
    settings = settings_for(shutdown_timeout_s=DRAIN_TIMEOUT_S, update_timeout_s=scaled(0.2))
    async with lifecycle.run_server(settings, SECRET, store=store) as running:
        client = Client(running)
        response = await update(client)
        assert (response.code, body_of(response)["error"]) == (503, "database_timeout")
        assert store.writing.is_set()
        assert len(running.inflight) == 0
        leaving = time.monotonic()
    took = time.monotonic() - leaving

    assert not running.clean_exit
    assert DRAIN_TIMEOUT_S <= took < DRAIN_TIMEOUT_S + scaled(3)
    assert shutdown_lines(lifecycle_logs) == [("ERROR", TIMED_OUT, DRAIN_TIMEOUT_S)]
    assert store.closed
    assert other_tasks() == set()


async def test_a_clean_shutdown_takes_the_graceful_path(
    lifecycle_logs: pytest.LogCaptureFixture,
) -> None:
    """The counterpart: the same server without a stuck write drains and exits cleanly."""
    settings = settings_for(shutdown_timeout_s=DRAIN_TIMEOUT_S)
    async with lifecycle.run_server(settings, SECRET) as running:
        client = Client(running)
        assert (await update(client)).code == 200
    assert running.clean_exit
    assert shutdown_lines(lifecycle_logs) == [("INFO", "shutdown complete", None)]
    assert other_tasks() == set()


async def test_serve_exits_1_when_sigterm_meets_a_stuck_write(
    monkeypatch: pytest.MonkeyPatch, lifecycle_logs: pytest.LogCaptureFixture
) -> None:
    """``python -m server``'s path: SIGTERM, the drain timeout passes, exit code 1."""
    store = StuckStore()

    def same_store(settings: Settings) -> StuckStore:
        return store

    monkeypatch.setattr(lifecycle, "create_store", same_store)
    # The process's collector tuning (a gc.freeze) is not for the test process.
    monkeypatch.setattr(
        lifecycle, "tune_for_serving", lambda: SimpleNamespace(thresholds=(), frozen_objects=0)
    )
    settings = settings_for(shutdown_timeout_s=DRAIN_TIMEOUT_S, update_timeout_s=scaled(60))
    listening: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    serving = asyncio.ensure_future(
        lifecycle.serve(settings, SECRET, on_listening=listening.set_result)
    )
    port = await asyncio.wait_for(listening, scaled(5))
    client = Client(SimpleNamespace(port=port))  # type: ignore[arg-type]
    stuck = asyncio.ensure_future(update(client))
    await asyncio.wait_for(store.writing.wait(), scaled(5))
    os.kill(os.getpid(), signal.SIGTERM)  # the handler serve() installed sets its stop event

    assert await asyncio.wait_for(serving, DRAIN_TIMEOUT_S + scaled(5)) == 1
    assert ("ERROR", TIMED_OUT, DRAIN_TIMEOUT_S) in shutdown_lines(lifecycle_logs)
    response = await asyncio.wait_for(stuck, scaled(5))
    assert response.code == 503
    assert store.closed
    assert other_tasks() == set()
