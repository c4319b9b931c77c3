"""Memory of many users who each made one update: what stays in the server, and for how long.

    python -m bench.memory [--users 100000] [--connections 32] [--idle-s 2] [--repeat 1]
    python -m bench.memory --quick          # 2,000 users, 1 s idle eviction: a few seconds

Exit status 1 when a request was not answered 200 with the expected score, the user actors
were not all evicted within ``--evict-timeout``, the store does not hold exactly the
expected scores, or the server did not stop cleanly; 2 when the server did not start; 3
past ``--timeout``.

A fresh ``python -m server`` is started on 127.0.0.1 (a free port) with an SQLite file in a
temporary directory (``synchronous`` as ``--sqlite-synchronous``, FULL by default), the
rate limit off (``SCOREBOARD_RATE_LIMIT_PER_MINUTE=0``: one update per user never reaches
it, and the repeat pass should not wait a minute), a short idle eviction
(``SCOREBOARD_USER_IDLE_S``, ``--idle-s``; the default is 60 s) so the run is short, a
fixed JWT secret, and log level WARNING: at INFO every update writes an audit line, which
costs CPU but no memory that grows with users (the log handler keeps at most 256 pending
lines), and the log is not what is measured here.

This process mints ``--users`` distinct HS256 tokens (``sub`` ``user-N``, a ``name`` claim,
valid two hours) and sends exactly one ``POST /api/update-score`` ``{"increment": 1}`` per
user, from ``--connections`` keep-alive HTTP/1.1 connections (a client written by hand on
asyncio: one request in flight per connection, status line and ``Content-Length``
parsed). Every answer must be 200 with ``new_score`` equal to the pass number. Then the
same users send one more update each, ``--repeat`` times (the second pass and later: same
tokens, so the server's caches see the same keys again; memory should not keep growing).

Recorded from ``/proc/PID/status`` (``VmRSS``: resident now; ``VmHWM``: the peak resident
size since the start) and from ``/metrics`` (the gauges ``scoreboard_user_actors`` and
``scoreboard_mailbox_depth``):

- ready: the server answers, before any update;
- start: after a warm-up (a few updates by ``warmup-N`` users, reads, a scrape) and their
  eviction;
- per pass, end of load: right after the last answer; and the most live actors seen by a
  sampler scraping ``/metrics`` every ``--sample-s`` during the load;
- per pass, after eviction: once ``scoreboard_user_actors`` is 0 (polled, bounded by
  ``--evict-timeout``), with the time that took.

With a short idle time, actors are evicted during the load too: at any moment about
(updates/s x idle time) users have an actor, not all of them. ``--idle-s`` longer than a
pass keeps every user's actor alive until the end of the load (the worst case: all users
active within one idle period).

RSS after eviction is not expected to fall back to the start: CPython keeps freed objects'
memory in its allocator's arenas and glibc's heap for reuse. What matters is that it is
reused: the repeat pass (the same number of users again) should add little. The report
gives both differences per user.

On disk: the SQLite file and its WAL at each point, and after the server stopped (SIGTERM;
closing the last connection checkpoints the WAL into the file and removes it) the file's
size, its rows, bytes per row, and (when SQLite has the ``dbstat`` table) the bytes of the
table and of each index. The file is read back to check that every user's score is exactly
the number of passes (exactly once per request).

What the server keeps per user, and its bound (read from the code):

- a user actor (``actors/user.py``, ``UserRegistry``): created on the user's first update,
  with its mailbox (at most ``SCOREBOARD_MAILBOX_SIZE`` queued increments) and one asyncio
  task; a sweeper every ``idle_s / 2`` stops every actor idle (empty mailbox, nothing in
  progress) for ``SCOREBOARD_USER_IDLE_S``. So: users active within the last idle period.
- the verified-token cache (``server/domain/tokens.py``, ``TokenVerifier``): at most
  ``VERIFIED_CACHE_SIZE`` (10,000) tokens, each kept until its ``exp`` at the latest; when
  full, the oldest inserted goes first (insertion order; a hit does not refresh it).
- the leaderboard (``server/domain/topk.py``, ``TopK``): K = N + max(10, N) rows (20 for the top
  10) and the last version of users that left or never entered the cache, so a stale event
  cannot bring them back: at most 4,096 user ids (``remembered``), oldest out.
- the failed-auth throttle (``server/domain/throttle.py``): per client address, not per user,
  and only for addresses that failed (none here): at most 65,536 addresses, each with at
  most the limit's timestamps; its address-key cache holds 4,096.
- the change feed: one SQLite store on its own (``python -m server``) keeps nothing
  (``NoOtherWriters``; the pod's writes reach its leaderboard directly). The in-process
  feed with a 100,000-event history (``LocalChangeFeed``) is only used when several stores
  share one file in one process (the tests).
- not per user: the live stream's history (``SCOREBOARD_WS_HISTORY_SIZE`` deltas), the
  metrics' labelled series (by route, method, status and outcome), the log handler's
  pending lines (at most 256), SQLite's page cache (its default, about 2 MiB) and statement
  cache, and Tornado's per-connection buffers (per connection, 32 here).

Everything else about a user (score, version, idempotency keys, the rate limiter's
accepted times, spent action tokens) is in the store's row, not in the server's memory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import functools
import os
import platform
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jwt
import tornado

from bench import report as bench_report
from bench.fanout import HOST, REPO, Http, ServerProcess, free_port, wait_ready

SECRET = "memory-bench-secret-that-is-at-least-32-bytes"
UPDATE_BODY = b'{"increment": 1}'
WARMUP_USERS = 16
TOKEN_TTL_S = 2 * 3600
_NEW_SCORE = re.compile(rb'"new_score":\s*(\d+)')


# --- the server ---------------------------------------------------------------------------


@dataclass
class Memory:
    """One reading of the server process's memory, in kB (as /proc/PID/status gives it)."""

    rss_kb: int
    hwm_kb: int


def read_memory(pid: int) -> Memory:
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(rest.split()[0])
    return Memory(fields["VmRSS"], fields["VmHWM"])


def start_server(args: argparse.Namespace, db_path: Path, log_path: Path) -> ServerProcess:
    port = free_port()
    env = dict(os.environ)
    env.update(
        {
            "SCOREBOARD_HOST": HOST,
            "SCOREBOARD_PORT": str(port),
            "SCOREBOARD_JWT_SECRET": SECRET,
            "SCOREBOARD_SQLITE_PATH": str(db_path),
            "SCOREBOARD_SQLITE_SYNCHRONOUS": args.sqlite_synchronous,
            "SCOREBOARD_RATE_LIMIT_PER_MINUTE": "0",
            "SCOREBOARD_USER_IDLE_S": f"{args.idle_s:g}",
            "SCOREBOARD_LOG_LEVEL": "WARNING",
        }
    )
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            # -B: no .pyc files written by a benchmark run. It also makes the command line
            # differ from a developer's "python -m server", so a broad cleanup such as
            # pkill -f "python -m server" elsewhere on the machine does not stop this run.
            [sys.executable, "-B", "-m", "server"],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return ServerProcess("ours", port, proc, log_path)


def stop_server(server: ServerProcess, timeout_s: float) -> int | None:
    """SIGTERM (a graceful stop); the exit status, or None if it had to be killed."""
    if server.proc.poll() is not None:
        return server.proc.returncode
    server.proc.terminate()
    try:
        return server.proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait(5)
        return None


async def gauges(http: Http) -> dict[str, float]:
    """The gauges and counters this benchmark reads from ``/metrics``."""
    status, body = await http.get("/metrics")
    if status != 200:
        raise RuntimeError(f"/metrics answered {status}")
    text = body.decode()
    values = {}
    for name, pattern in (
        ("user_actors", r"^scoreboard_user_actors (\S+)$"),
        ("mailbox_depth", r"^scoreboard_mailbox_depth (\S+)$"),
        ("applied", r'^scoreboard_updates_total\{outcome="applied"\} (\S+)$'),
    ):
        match = re.search(pattern, text, re.M)
        values[name] = float(match.group(1)) if match else 0.0
    return values


def disk_bytes(db_path: Path) -> tuple[int, int]:
    """(size of the SQLite file, size of its WAL) in bytes; 0 for a missing file."""
    sizes = []
    for path in (db_path, Path(f"{db_path}-wal")):
        try:
            sizes.append(path.stat().st_size)
        except FileNotFoundError:
            sizes.append(0)
    return sizes[0], sizes[1]


# --- the load: one request per user, from N keep-alive connections ------------------------


def mint_tokens(users: int) -> list[str]:
    exp = int(time.time()) + TOKEN_TTL_S
    return [
        jwt.encode({"sub": f"user-{i}", "name": f"Player {i}", "exp": exp}, SECRET, "HS256")
        for i in range(users)
    ]


def update_request(port: int, token: str) -> bytes:
    return (
        f"POST /api/update-score HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(UPDATE_BODY)}\r\n\r\n"
    ).encode() + UPDATE_BODY


@dataclass
class Pass:
    """One pass over every user: what was sent and what came back."""

    requests: list[bytes]
    expected_score: int
    next_index: int = 0
    answered: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    wrong_score: int = 0
    lost: int = 0  # requests written whose connection closed before the answer
    examples: list[str] = field(default_factory=list)
    seconds: float = 0.0
    max_actors: float = 0.0
    max_mailbox: float = 0.0
    max_rss_kb: int = 0

    def take(self) -> int | None:
        if self.next_index >= len(self.requests):
            return None
        index = self.next_index
        self.next_index += 1
        return index

    def record(self, status: int, body: bytes) -> None:
        self.answered += 1
        self.statuses[status] += 1
        if status != 200:
            self.note(f"HTTP {status}: {body[:200]!r}")
            return
        match = _NEW_SCORE.search(body)
        if match is None or int(match.group(1)) != self.expected_score:
            self.wrong_score += 1
            self.note(f"expected new_score {self.expected_score}: {body[:200]!r}")

    def note(self, text: str) -> None:
        if len(self.examples) < 5:
            self.examples.append(text)

    @property
    def ok(self) -> int:
        return self.statuses[200] - self.wrong_score

    @property
    def failed(self) -> bool:
        return self.ok != len(self.requests)


class LoadConnection(asyncio.Protocol):
    """One keep-alive connection: writes the pass's next request once the last is answered."""

    def __init__(self, load: Pass, finished: asyncio.Future[bool]) -> None:
        self.load = load
        self.finished = finished  # result: whether the connection was lost mid-request
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.in_flight = False
        self.body_start = -1
        self.length = 0
        self.status = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._send_next()

    def _send_next(self) -> None:
        assert self.transport is not None
        index = self.load.take()
        if index is None:
            self.in_flight = False
            self.transport.close()
            return
        self.in_flight = True
        self.buf = b""
        self.body_start = -1
        self.transport.write(self.load.requests[index])

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.body_start < 0:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1")
            lines = head.split("\r\n")
            self.status = int(lines[0].split()[1])
            self.length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    self.length = int(value)
            self.body_start = end + 4
        if len(self.buf) < self.body_start + self.length:
            return
        self.load.record(self.status, self.buf[self.body_start : self.body_start + self.length])
        self._send_next()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.in_flight:
            self.load.lost += 1
            self.load.note(f"connection lost mid-request: {exc!r}")
        if not self.finished.done():
            self.finished.set_result(self.in_flight)


async def run_pass(load: Pass, port: int, connections: int) -> None:
    loop = asyncio.get_running_loop()

    async def worker() -> None:
        for _attempt in range(5):  # reconnect after a lost connection, a few times
            finished: asyncio.Future[bool] = loop.create_future()
            try:
                await loop.create_connection(
                    functools.partial(LoadConnection, load, finished), HOST, port
                )
            except OSError as exc:
                load.note(f"connect failed: {exc!r}")
                await asyncio.sleep(0.1)
                continue
            if not await finished or load.next_index >= len(load.requests):
                return

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    load.seconds = time.perf_counter() - started


async def sample_during(load: Pass, server: ServerProcess, port: int, every_s: float) -> None:
    """Until cancelled: the most live actors, queued increments and RSS seen during a pass."""
    http = Http(port)
    try:
        while True:
            await asyncio.sleep(every_s)
            load.max_rss_kb = max(load.max_rss_kb, read_memory(server.pid).rss_kb)
            with contextlib.suppress(OSError, asyncio.IncompleteReadError, RuntimeError):
                values = await gauges(http)
                load.max_actors = max(load.max_actors, values["user_actors"])
                load.max_mailbox = max(load.max_mailbox, values["mailbox_depth"])
    finally:
        http.close()


# --- the run ------------------------------------------------------------------------------


@dataclass
class Point:
    """The server's state at one moment of the run."""

    label: str
    memory: Memory
    user_actors: float
    mailbox_depth: float
    db_bytes: int
    wal_bytes: int


class NotStarted(Exception):
    """The server did not start (exit status 2)."""


@dataclass
class Run:
    error: str = ""
    points: list[Point] = field(default_factory=list)
    passes: list[Pass] = field(default_factory=list)
    evict_s: list[float | None] = field(default_factory=list)
    applied: float = 0.0
    exit_status: int | None = None
    file_bytes: int = 0
    rows: int = 0
    store_check: str = ""
    store_ok: bool = False
    dbstat: list[tuple[str, int]] = field(default_factory=list)


class ServerExited(RuntimeError):
    """The server process ended before the run did (something else stopped it)."""


def check_alive(server: ServerProcess, when: str) -> None:
    status = server.proc.poll()
    if status is not None:
        raise ServerExited(
            f"the server exited with status {status} {when} (0: a SIGTERM or SIGINT from "
            "outside this run; the server logs the signal at INFO, hidden at WARNING)"
        )


async def point(label: str, server: ServerProcess, http: Http, db_path: Path) -> Point:
    check_alive(server, f"before the point {label!r}")
    values = await gauges(http)
    db, wal = disk_bytes(db_path)
    return Point(
        label, read_memory(server.pid), values["user_actors"], values["mailbox_depth"], db, wal
    )


async def wait_evicted(http: Http, timeout_s: float) -> float | None:
    """Seconds until no user actor and no queued increment is left; None past the timeout."""
    started = time.monotonic()
    while True:
        values = await gauges(http)
        if values["user_actors"] == 0 and values["mailbox_depth"] == 0:
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            return None
        await asyncio.sleep(0.1)


async def drive(args: argparse.Namespace, server: ServerProcess, db_path: Path, run: Run) -> None:
    http = Http(server.port)
    try:
        try:
            await wait_ready(server, http, 30)
        except RuntimeError as exc:
            raise NotStarted(str(exc)) from None
        run.points.append(await point("ready (no update yet)", server, http, db_path))

        warm = Pass([update_request(server.port, t) for t in warmup_tokens()], expected_score=1)
        await run_pass(warm, server.port, min(args.connections, WARMUP_USERS))
        if warm.failed:
            raise RuntimeError(f"warm-up failed: {warm.examples}")
        for _ in range(3):
            await http.get("/api/top-scores")
        if await wait_evicted(http, args.evict_timeout) is None:
            raise RuntimeError("the warm-up users' actors were not evicted")
        run.points.append(await point("start (warm-up, evicted)", server, http, db_path))

        print(f"minting {args.users:,} tokens...", file=sys.stderr, flush=True)
        requests = [update_request(server.port, t) for t in mint_tokens(args.users)]
        for number in range(1, args.repeat + 2):
            load = Pass(requests, expected_score=number)
            run.passes.append(load)
            print(f"pass {number}: {args.users:,} updates...", file=sys.stderr, flush=True)
            sampler = asyncio.create_task(sample_during(load, server, server.port, args.sample_s))
            try:
                await run_pass(load, server.port, args.connections)
            finally:
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampler
            check_alive(server, f"during pass {number}")
            run.points.append(await point(f"pass {number}: end of load", server, http, db_path))
            evicted = await wait_evicted(http, args.evict_timeout)
            run.evict_s.append(evicted)
            label = f"pass {number}: after eviction"
            run.points.append(await point(label, server, http, db_path))
            if evicted is None:
                break  # the verdict fails; a further pass would measure nothing clean
        run.applied = (await gauges(http))["applied"]
    finally:
        http.close()


def warmup_tokens() -> list[str]:
    exp = int(time.time()) + TOKEN_TTL_S
    return [
        jwt.encode({"sub": f"warmup-{i}", "exp": exp}, SECRET, "HS256") for i in range(WARMUP_USERS)
    ]


def check_store(db_path: Path, args: argparse.Namespace, passes: int, run: Run) -> None:
    """Read the stopped server's file: its size, its rows, and every user's exact score."""
    run.file_bytes = disk_bytes(db_path)[0]
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        run.rows = conn.execute("SELECT count(*) FROM users_scores").fetchone()[0]
        count, low, high, total = conn.execute(
            "SELECT count(*), min(score), max(score), sum(score) FROM users_scores "
            "WHERE user_id LIKE 'user-%'"
        ).fetchone()
        run.store_ok = count == args.users and low == high == passes
        run.store_check = (
            f"{count:,} users' rows (expected {args.users:,}), scores min {low} max {high} "
            f"sum {total or 0:,} (expected each {passes})"
        )
        with contextlib.suppress(sqlite3.Error):  # dbstat is a compile-time option
            run.dbstat = conn.execute(
                "SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC"
            ).fetchall()
    finally:
        conn.close()


# --- report -------------------------------------------------------------------------------


def mib(kb: float) -> str:
    return f"{kb / 1024:,.1f}"


def header_lines(args: argparse.Namespace, argv: Sequence[str]) -> list[str]:
    cpu, mem = bench_report.machine()
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = bench_report.load_average()
    return [
        f"command: python -m bench.memory {shlex.join(argv)}".rstrip(),
        f"date: {now}",
        f"machine: {cpu}, {os.cpu_count()} cores, {mem} RAM, {platform.system()} "
        f"{platform.release()}; load average {load} at the start",
        f"python {platform.python_version()} ({sys.executable}), tornado {tornado.version}, "
        f"sqlite {sqlite3.sqlite_version}",
        f"server: python -m server, SQLite file (synchronous {args.sqlite_synchronous}), "
        f"SCOREBOARD_USER_IDLE_S={args.idle_s:g}, rate limit off, log level WARNING",
        f"load: {args.users:,} users x {args.repeat + 1} pass(es), one POST /api/update-score "
        f"{UPDATE_BODY.decode()} per user per pass, {args.connections} keep-alive connections "
        f"(hand-written asyncio HTTP/1.1 client); warm-up {WARMUP_USERS} other users",
    ]


def report(args: argparse.Namespace, run: Run) -> list[str]:
    lines = [
        "",
        f"{'point':<28}{'VmRSS MiB':>10}{'VmHWM MiB':>10}{'user_actors':>12}"
        f"{'mailbox':>9}{'db MiB':>9}{'wal MiB':>9}",
    ]
    for p in run.points:
        lines.append(
            f"{p.label:<28}{mib(p.memory.rss_kb):>10}{mib(p.memory.hwm_kb):>10}"
            f"{p.user_actors:>12,.0f}{p.mailbox_depth:>9,.0f}"
            f"{mib(p.db_bytes / 1024):>9}{mib(p.wal_bytes / 1024):>9}"
        )
    lines.append("")
    evictions = [*run.evict_s, *[None] * (len(run.passes) - len(run.evict_s))]
    for number, (load, evicted) in enumerate(zip(run.passes, evictions, strict=True), 1):
        rate = len(load.requests) / load.seconds if load.seconds else 0.0
        others = {s: n for s, n in sorted(load.statuses.items()) if s != 200}
        lines.append(
            f"pass {number}: {len(load.requests):,} requests in {load.seconds:.1f} s "
            f"({rate:,.0f}/s): {load.ok:,} answered 200 with new_score {load.expected_score}, "
            f"other statuses {others or 'none'}, wrong score {load.wrong_score}, "
            f"lost {load.lost}, unanswered {len(load.requests) - load.answered - load.lost}"
        )
        lines.append(
            f"  during the load (sampled every {args.sample_s:g} s): at most "
            f"{load.max_actors:,.0f} live user actors, {load.max_mailbox:,.0f} queued "
            f"increments, VmRSS {mib(load.max_rss_kb)} MiB"
        )
        for example in load.examples:
            lines.append(f"  e.g. {example}")
        if number > len(run.evict_s):
            lines.append("  eviction not measured (the run stopped)")
        elif evicted is None:
            lines.append(f"  user actors NOT evicted within {args.evict_timeout:g} s")
        else:
            lines.append(f"  evicted: user_actors 0 after {evicted:.1f} s")
    lines.append(f"scoreboard_updates_total{{outcome=applied}}: {run.applied:,.0f}")
    lines += memory_summary(args, run)
    lines += disk_summary(args, run)
    return lines


def memory_summary(args: argparse.Namespace, run: Run) -> list[str]:
    by_label = {p.label: p for p in run.points}
    start = by_label.get("start (warm-up, evicted)")
    first = by_label.get("pass 1: after eviction")
    last = run.points[-1] if run.points else None
    if start is None or first is None or last is None:
        return []
    users = args.users

    def per_user(kb: int) -> str:
        return f"{kb / 1024:+,.1f} MiB ({kb * 1024 / users:+,.0f} bytes per user)"

    lines = [
        "",
        "memory (VmRSS):",
        f"  start -> pass 1 after eviction: {per_user(first.memory.rss_kb - start.memory.rss_kb)}",
    ]
    if last is not first and last.label.endswith("after eviction"):
        lines.append(
            f"  pass 1 after eviction -> {last.label.replace(':', '')}: "
            f"{per_user(last.memory.rss_kb - first.memory.rss_kb)}"
        )
        lines.append(
            f"  peak (VmHWM) after pass 1 -> at the end: "
            f"{per_user(last.memory.hwm_kb - first.memory.hwm_kb)}"
        )
    return lines


def disk_summary(args: argparse.Namespace, run: Run) -> list[str]:
    if not run.rows:
        return ["", f"disk: {run.store_check or 'no rows'}"]
    status = "killed" if run.exit_status is None else f"exit status {run.exit_status}"
    lines = [
        "",
        f"disk, after the server stopped ({status}; the WAL checkpointed into the file):",
        f"  {run.file_bytes:,} bytes ({mib(run.file_bytes / 1024)} MiB), {run.rows:,} rows: "
        f"{run.file_bytes / run.rows:,.0f} bytes per user (table and indexes)",
    ]
    for name, size in run.dbstat:
        lines.append(f"    {name}: {size:,} bytes ({size / run.rows:,.0f} per row)")
    lines.append(f"  store check: {run.store_check}: {'OK' if run.store_ok else 'WRONG'}")
    return lines


def verdict(run: Run, args: argparse.Namespace) -> list[str]:
    problems = [run.error] if run.error else []
    expected_passes = args.repeat + 1
    if len(run.passes) < expected_passes:
        problems.append(f"only {len(run.passes)} of {expected_passes} passes ran")
    for number, load in enumerate(run.passes, 1):
        if load.failed:
            problems.append(f"pass {number}: {len(load.requests) - load.ok:,} requests failed")
    if any(e is None for e in run.evict_s):
        problems.append("user actors were not all evicted")
    if not run.store_ok:
        problems.append("the store does not hold the expected scores")
    if run.exit_status != 0:
        problems.append(f"the server did not stop cleanly ({run.exit_status})")
    return problems


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--users", type=int, default=100_000, help="distinct users (tokens)")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections")
    parser.add_argument(
        "--idle-s", type=float, default=2.0, help="the server's SCOREBOARD_USER_IDLE_S"
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="further passes over the same users (0: none)"
    )
    parser.add_argument(
        "--evict-timeout",
        type=float,
        default=None,
        help="seconds to wait for eviction (default: 2 x the idle time + 10, at least 30)",
    )
    parser.add_argument(
        "--sample-s", type=float, default=0.5, help="metrics sampling period during a pass"
    )
    parser.add_argument(
        "--sqlite-synchronous", choices=("FULL", "NORMAL"), default="FULL", type=str.upper
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="hard limit for the run")
    parser.add_argument(
        "--keep-dir", action="store_true", help="keep the SQLite file and log (kept on failure)"
    )
    parser.add_argument("--quick", action="store_true", help="2,000 users, 1 s idle eviction")
    args = parser.parse_args(argv)
    if args.quick:
        args.users, args.idle_s = 2000, 1.0
        args.evict_timeout = args.evict_timeout or 15.0
    if args.users < 1 or args.connections < 1 or args.repeat < 0 or args.idle_s <= 0:
        parser.error("--users and --connections must be positive, --repeat at least 0")
    if args.evict_timeout is None:
        args.evict_timeout = max(30.0, 2 * args.idle_s + 10)
    return args


async def measure(args: argparse.Namespace, tmp: Path, run: Run) -> None:
    db_path = tmp / "scoreboard.db"
    server = start_server(args, db_path, tmp / "server.log")
    try:
        await drive(args, server, db_path, run)
    except NotStarted:
        raise
    except ServerExited as exc:
        run.error = str(exc)
    except (OSError, asyncio.IncompleteReadError, RuntimeError) as exc:
        run.error = f"{type(exc).__name__}: {exc}"  # reported; the run fails
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.proc.wait(2)  # a connection error because the server is ending?
        if server.proc.returncode is not None:
            run.error = f"{run.error}: the server exited with status {server.proc.returncode} "
            run.error += "(0: a SIGTERM or SIGINT from outside this run)"
    finally:
        run.exit_status = stop_server(server, 30)
        if run.exit_status != 0 or run.error:
            print(f"server log tail:\n{server.log_tail()}", file=sys.stderr)
    try:
        check_store(db_path, args, len(run.passes), run)
    except sqlite3.Error as exc:
        run.store_check = f"cannot read the file: {exc}"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)

    def on_alarm(signum: int, frame: object) -> None:
        raise SystemExit(f"hard timeout of {args.timeout:g}s passed")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(args.timeout) + 30)
    header = header_lines(args, argv)
    print("\n".join(header), flush=True)
    run = Run()
    tmp = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    try:
        asyncio.run(asyncio.wait_for(measure(args, tmp, run), args.timeout))
    except TimeoutError:
        print(f"error: the run passed its hard timeout of {args.timeout:g}s (see {tmp})")
        return 3
    except NotStarted as exc:
        print(f"error: the server did not start (see {tmp}): {exc}")
        return 2
    finally:
        signal.alarm(0)
    print("\n".join(report(args, run)))
    problems = verdict(run, args)
    if args.keep_dir or problems:
        print(f"\nkept the SQLite file and the server's log in {tmp}")
    else:
        for path in tmp.iterdir():
            path.unlink()
        tmp.rmdir()
    print()
    if problems:
        print("FAILED: " + "; ".join(problems))
        return 1
    print(
        "OK: every request answered 200 with the expected score, every user actor evicted, "
        "the store exact"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
