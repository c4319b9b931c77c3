"""Stopping a loaded server: SIGTERM loses no accepted increment, kill -9 no answered one.

A real ``python -m server`` on a SQLite file takes a sustained load (N users, each sending
increments of 1 one after another on a keep-alive connection) when the signal arrives.
The file is then read with ``sqlite3`` (which recovers the WAL after a kill) and compared,
per user, with what the clients were answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import signal
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import tornado.websocket

from tests.conftest import SECRET, make_token, scaled
from tests.server.test_main import ServerProcess, post_update, server_env

pytestmark = pytest.mark.slow

USERS = 20
MAX_PER_USER = 3000  # each user's load ends by itself after this many requests
LOAD_TIME_S = 30.0  # ... or after this long
SIGNAL_AFTER_OK = 600  # answered increments (all users) before the signal is sent
SHUTDOWN_TIMEOUT_S = 10.0
WEBSOCKETS = 3


@dataclass
class UserLoad:
    """One user's sequential increments and what the server answered."""

    user_id: str
    sent: int = 0  # requests started (an upper bound of what the server can have applied)
    ok: int = 0  # answered 200
    max_new_score: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failed: str | None = None  # the error that ended the load (no answer to the last request)
    failed_at: float = 0.0


class Load:
    """``USERS`` threads, each POSTing ``{"increment": 1}`` until an error, a cap or a time."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.users = [UserLoad(f"load-user-{i:02d}") for i in range(USERS)]
        self._lock = threading.Lock()
        self._ok_total = 0
        self._deadline = time.monotonic() + scaled(LOAD_TIME_S)
        self._threads = [
            threading.Thread(target=self._run, args=(user,), daemon=True) for user in self.users
        ]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._deadline = 0.0  # stop early if the test failed
        self.join()

    @property
    def ok_total(self) -> int:
        with self._lock:
            return self._ok_total

    def join(self) -> None:
        for thread in self._threads:
            thread.join(timeout=scaled(LOAD_TIME_S) + 15)
        assert not any(t.is_alive() for t in self._threads), "the load did not stop"

    def wait_ok(self, count: int, server: ServerProcess) -> None:
        server.wait_for(lambda: self.ok_total >= count, f"{count} answered increments", 20)

    def _run(self, user: UserLoad) -> None:
        token = make_token(user.user_id, name=user.user_id.title())
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=scaled(15))
        try:
            while user.sent < MAX_PER_USER and time.monotonic() < self._deadline:
                user.sent += 1
                try:
                    conn.request("POST", "/api/update-score", b'{"increment": 1}', headers)
                    response = conn.getresponse()
                    body = response.read()
                except (OSError, http.client.HTTPException) as exc:
                    user.failed, user.failed_at = repr(exc), time.monotonic()
                    return
                user.statuses[response.status] += 1
                if response.status == 200:
                    user.max_new_score = max(user.max_new_score, json.loads(body)["new_score"])
                    user.ok += 1
                    with self._lock:
                        self._ok_total += 1
        finally:
            conn.close()


class Watcher:
    """A WebSocket client in its own thread and event loop; records the close code."""

    def __init__(self, port: int) -> None:
        self.url = f"ws://127.0.0.1:{port}/ws/scoreboard"
        self.connected = threading.Event()
        self.messages = 0
        self.close_code: int | None = None
        self.error: str | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._watch(),), daemon=True)
        self._thread.start()

    async def _watch(self) -> None:
        try:
            async with asyncio.timeout(scaled(LOAD_TIME_S)):
                ws = await tornado.websocket.websocket_connect(self.url)
                try:
                    self.connected.set()
                    while await ws.read_message() is not None:
                        self.messages += 1
                    self.close_code = ws.close_code
                finally:
                    ws.close()
        except Exception as exc:
            self.error = repr(exc)
        finally:
            self.connected.set()

    def join(self) -> None:
        self._thread.join(timeout=scaled(LOAD_TIME_S) + 5)
        assert not self._thread.is_alive()


@contextlib.contextmanager
def running_server(db: Path) -> Iterator[ServerProcess]:
    """A server on SQLite file ``db``, listening; killed on exit if it still runs."""
    env = server_env(
        host="127.0.0.1",
        port="0",
        sqlite_path=str(db),
        jwt_secret=SECRET,
        rate_limit_per_minute="0",
        shutdown_timeout_s=str(scaled(SHUTDOWN_TIMEOUT_S)),
        broadcast_interval_ms="50",
    )
    server = ServerProcess(env)
    try:
        server.wait_listening()
        yield server
    finally:
        server.close()


def stored_scores(db: Path) -> dict[str, int]:
    """Every user's score in the file, read by a fresh connection (it recovers the WAL)."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return dict(conn.execute("SELECT user_id, score FROM users_scores").fetchall())


@dataclass
class SigtermRun:
    code: int
    stop_s: float  # from SIGTERM to exit
    signalled: float
    server: ServerProcess
    load: Load
    watchers: list[Watcher]
    stored: dict[str, int]


@pytest.fixture(scope="module")
def sigterm_run(tmp_path_factory: pytest.TempPathFactory) -> SigtermRun:
    """One server under load, WebSockets connected, stopped by SIGTERM mid-load."""
    db = tmp_path_factory.mktemp("sigterm") / "scores.db"
    with running_server(db) as server:
        watchers = [Watcher(server.port) for _ in range(WEBSOCKETS)]
        for watcher in watchers:
            assert watcher.connected.wait(scaled(10)) and watcher.error is None, watcher.error
        with Load(server.port) as load:
            load.wait_ok(SIGNAL_AFTER_OK, server)
            signalled = time.monotonic()
            server.signal(signal.SIGTERM)
            code = server.wait(SHUTDOWN_TIMEOUT_S + 5)
            stop_s = time.monotonic() - signalled
            load.join()
        for watcher in watchers:
            watcher.join()
    return SigtermRun(code, stop_s, signalled, server, load, watchers, stored_scores(db))


def test_sigterm_under_load_exits_0_closes_websockets_and_keeps_every_answered_increment(
    sigterm_run: SigtermRun,
) -> None:
    run = sigterm_run
    assert run.code == 0, run.server.stderr
    assert run.stop_s < scaled(SHUTDOWN_TIMEOUT_S)
    assert any(e["msg"] == "shutdown complete" for e in run.server.log_lines())
    assert [w.close_code for w in run.watchers] == [1001] * WEBSOCKETS
    assert all(w.messages >= 1 for w in run.watchers)  # the snapshot, at least
    for user in run.load.users:
        # The load was still running: the signal, not a cap, ended it.
        assert user.sent < MAX_PER_USER, user
        assert user.failed is None or user.failed_at >= run.signalled, user
        assert set(user.statuses) <= {200, 503}, user  # 503 shutting_down: refused, not applied
        assert user.max_new_score == user.ok, user  # sequential +1s: the answers count up
        stored = run.stored.get(user.user_id, 0)
        # Every answered increment is stored, and none twice: at most the one request
        # left without an answer (the connection was closed) is there besides.
        unanswered = user.sent - sum(user.statuses.values())
        assert user.ok <= stored <= user.ok + unanswered, (user, stored)


def test_sigterm_under_load_applies_no_increment_it_does_not_answer(
    sigterm_run: SigtermRun,
) -> None:
    """The store holds exactly the increments answered 200: a client whose connection was
    cut may retry without double counting."""
    applied_unanswered = {}
    for user in sigterm_run.load.users:
        stored = sigterm_run.stored.get(user.user_id, 0)
        if stored != user.ok:
            applied_unanswered[user.user_id] = stored - user.ok
    assert applied_unanswered == {}


def test_kill_9_under_load_keeps_every_answered_increment(tmp_path: Path) -> None:
    db = tmp_path / "scores.db"
    with running_server(db) as server, Load(server.port) as load:
        load.wait_ok(SIGNAL_AFTER_OK, server)
        server.signal(signal.SIGKILL)
        assert server.wait(10) == -signal.SIGKILL
        load.join()

    assert all(user.failed is not None for user in load.users)  # killed mid-load
    stored = stored_scores(db)
    for user in load.users:
        assert user.sent < MAX_PER_USER, user
        assert set(user.statuses) <= {200}, user
        score = stored.get(user.user_id, 0)
        # Answered => durable; and nothing is stored that was not sent.
        assert user.max_new_score <= score <= user.sent, (user, score)

    # A server restarted on the same file carries on from the stored scores.
    with running_server(db) as restarted:
        first = load.users[0]
        status, body = post_update(restarted.port, make_token(first.user_id))
        assert (status, body["status"], body["new_score"]) == (
            200,
            "success",
            stored[first.user_id] + 1,
        )
        assert body["total"] == len(stored) and 1 <= body["rank"] <= len(stored)
        restarted.signal(signal.SIGTERM)
        assert restarted.wait(SHUTDOWN_TIMEOUT_S + 5) == 0, restarted.stderr
