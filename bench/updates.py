"""Update and top-10 throughput: our server against a bare Tornado app with the same routes.

    python -m bench.updates [--rounds 3] [--duration 10] [--loader auto|wrk|python]
    python -m bench.updates --sqlite-synchronous NORMAL     # the store's faster setting
    python -m bench.updates --quick --loader python         # 1 round of 1 s: the smoke test
    python -m bench.updates --periods daily,weekly,all_time # a board of three periods

Exit status 1 when our server answered anything but 2xx or a connection to it failed
(warm-ups and the hot-user phase included); missed speed goals are reported, not failed.
Exit status 2 when a server did not start or a loader is missing, 3 past ``--timeout``.

Two servers run side by side on 127.0.0.1, each on a free port, for the whole run:

- ours: ``python -m server`` on an SQLite file in a temporary directory, with the
  defaults a user gets (``synchronous`` FULL unless ``--sqlite-synchronous``; log level
  INFO, so the audit trail of every update is written, as in production) except the rate
  limit (``SCOREBOARD_RATE_LIMIT_PER_MINUTE=0``) and a fixed JWT secret. Its stdout and
  stderr go to a log file in that directory (``--keep-logs`` keeps it);
- bare: ``bench/bare_server.py``, a Tornado app answering the same routes with fixed JSON
  and doing nothing else: the ceiling of a Tornado process on this machine.

Each endpoint (``POST /api/update-score``, then ``GET /api/top-scores``) gets a warm-up
run per server (``--warmup`` s, not reported), then ``--rounds`` runs of ``--duration`` s
per server, alternating ours / bare. Every run applies the same load:

- ``wrk`` (when it is on PATH, or ``--loader wrk``): ``-t1 -c32 --latency --timeout 5s``
  and a Lua script that rotates over the pre-minted HS256 tokens of 2,000 users (valid
  for hours), one per request, with ``Content-Type: application/json`` and the body
  ``{"increment": 1}``; its ``done()`` hook prints the exact counts and percentiles;
- ``python`` (no wrk, or ``--loader python``): the same requests from 32 keep-alive
  HTTP/1.1 connections written by hand on asyncio in this process (status line and
  Content-Length parsed, one request in flight per connection), each request's latency
  recorded from its write to its last byte. It shares the machine with the server as wrk
  does, and its own event loop adds to the latencies under load.

Reported per server and endpoint: requests/s (the median of the rounds, and each round),
p50 / p99 latency (the median of the rounds' own percentiles), answers other than 2xx
(wrk: status >= 400), socket errors (connect, read, write, timeout), and the server's CPU
time per request (all threads, from /proc). Then the ratio ours / bare and the goals of
issue 6 as MET / NOT MET lines.

Other work on the machine skews every figure, so each measured run first waits (at most
``--quiet-timeout`` s) until processes other than this run's use under 10 % of the CPUs,
and reports the share they took during the run (busy time from /proc/stat minus the
servers', this process's and wrk's own); the summary warns when it passed 5 %.

The hot-user phase (``--hot``, on by default) runs on our server only: the 2,000 users'
updates from 16 connections alone, then the same while a second load generator with 16
connections sends updates for one user ("hot-user") with its own token. It shows whether
one user's queue slows the others: the normal users' req/s and p99 in both cases, and
the hot user's own req/s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import math
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jwt
import tornado

from bench import report as bench_report
from bench.fanout import HOST, REPO, Http, ServerProcess, free_port, wait_ready

SECRET = "updates-bench-secret-that-is-at-least-32-bytes"
TOKEN_TTL_S = 6 * 3600
HOT_USER = "hot-user"
REQUEST_TIMEOUT_S = 5
QUIET_PCT = 10.0  # other processes' share of the CPUs under which a run may start
PRIME_REQUESTS = 20

UPDATE = "update"
TOP = "top"
ROUTES = {UPDATE: ("POST", "/api/update-score"), TOP: ("GET", "/api/top-scores")}
NAMES = {endpoint: f"{method} {path}" for endpoint, (method, path) in ROUTES.items()}
UPDATE_BODY = b'{"increment": 1}'

# The goals of issue 6.
GOAL_UPDATE_RATIO = 0.6
GOAL_TOP_RATIO = 0.9
GOAL_P99_MS = 25.0

_perf = time.perf_counter


# --- tokens and requests --------------------------------------------------------------------


def mint(user_id: str, name: str) -> str:
    now = int(time.time())
    claims = {"sub": user_id, "name": name, "iat": now, "exp": now + TOKEN_TTL_S}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def user_tokens(count: int) -> list[str]:
    """Tokens of ``count`` distinct users, named like the bare server's top 10."""
    return [mint(f"user-{i:04d}", f"User {i:04d}") for i in range(count)]


@dataclass(frozen=True)
class Target:
    """What a load generator sends: an endpoint and, for updates, the tokens to rotate."""

    endpoint: str
    tokens: tuple[str, ...] = ()
    tokens_file: Path | None = None

    def requests(self, port: int) -> list[bytes]:
        """The raw HTTP/1.1 requests, one per token (one for GET)."""
        method, path = ROUTES[self.endpoint]
        head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        if self.endpoint == TOP:
            return [(head + "\r\n").encode()]
        return [
            (
                f"{head}Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(UPDATE_BODY)}\r\n\r\n"
            ).encode()
            + UPDATE_BODY
            for token in self.tokens
        ]


# --- one measured run -----------------------------------------------------------------------


@dataclass
class Run:
    server: str  # "ours" or "bare"
    endpoint: str
    connections: int
    requests: int = 0
    duration_s: float = 0.0
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    max_ms: float = math.nan
    non2xx: int = 0
    errors: dict[str, int] = field(
        default_factory=lambda: {"connect": 0, "read": 0, "write": 0, "timeout": 0}
    )
    server_cpu_s: float = math.nan
    other_cpu_pct: float = math.nan  # the machine's CPU used by processes not of this run
    # Our server's garbage collections during the run, by generation (None: not scraped).
    gc_collections: tuple[int, ...] | None = None

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def socket_errors(self) -> int:
        return sum(self.errors.values())

    @property
    def cpu_us_per_request(self) -> float:
        return self.server_cpu_s / self.requests * 1e6 if self.requests else math.nan

    def summary(self) -> str:
        errors = ", ".join(f"{k} {v}" for k, v in self.errors.items() if v) or "none"
        return (
            f"{self.rps:9,.0f} req/s  p50 {self.p50_ms:6.2f} ms  p99 {self.p99_ms:6.2f} ms  "
            f"non-2xx {self.non2xx}  socket errors: {errors}  "
            f"other processes' CPU {self.other_cpu_pct:.0f}%"
        )


def percentile(ordered: Sequence[float], q: float) -> float:
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --- the Python load generator --------------------------------------------------------------


class _Connection(asyncio.Protocol):
    """One keep-alive connection of a :class:`PyLoad`: one request in flight at a time."""

    def __init__(self, load: PyLoad) -> None:
        self.load = load
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.body_end = -1  # where the response in ``buf`` ends, once its head is parsed
        self.status = 0
        self.close_after = False
        self.sent_at = 0.0  # 0: nothing in flight
        self.timed_out = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.load.connections.add(self)
        if self.load.started:
            self.send()

    def send(self) -> None:
        load = self.load
        if self.transport is None or _perf() >= load.deadline:
            return
        self.sent_at = _perf()
        load.in_flight += 1
        self.transport.write(load.next_request())

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while True:
            if self.body_end < 0:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                if not self._parse_head(bytes(buf[:end]), end + 4):
                    return
            if len(buf) < self.body_end:
                return
            now = _perf()
            del buf[: self.body_end]
            self.body_end = -1
            sent_at, self.sent_at = self.sent_at, 0.0
            if sent_at:
                self.load.on_response(self.status, sent_at, now)
            if self.close_after:
                self.abort()
                return
            self.send()

    def _parse_head(self, head: bytes, head_end: int) -> bool:
        lower = head.lower()
        at = lower.find(b"\r\ncontent-length:")
        try:
            self.status = int(head[9:12])
            if at < 0:
                raise ValueError("no Content-Length")
            stop = lower.find(b"\r\n", at + 2)
            length = int(head[at + 17 : stop if stop >= 0 else len(head)])
        except ValueError:
            self.load.errors["read"] += 1
            self.abort()
            return False
        self.close_after = b"\r\nconnection: close" in lower
        self.body_end = head_end + length
        return True

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        load = self.load
        load.connections.discard(self)
        self.transport = None
        if self.sent_at and not load.finished:
            self.sent_at = 0.0
            load.in_flight -= 1
            if not self.timed_out:
                load.errors["read"] += 1
            load.check_idle()
        if load.started and _perf() < load.deadline:
            load.reconnect()


class PyLoad:
    """``connections`` keep-alive connections sending ``requests`` in rotation for a while."""

    def __init__(
        self, port: int, requests: Sequence[bytes], connections: int, duration_s: float
    ) -> None:
        self.port = port
        self.requests = requests
        self.next = 0
        self.count = connections
        self.duration_s = duration_s
        self.started = False
        self.finished = False  # after the run: connections closing now are not errors
        self.deadline = math.inf
        self.connections: set[_Connection] = set()
        self.in_flight = 0
        self.latencies: list[float] = []
        self.non2xx = 0
        self.errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0}
        self._idle = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def next_request(self) -> bytes:
        i = self.next
        self.next = (i + 1) % len(self.requests)
        return self.requests[i]

    def on_response(self, status: int, sent_at: float, now: float) -> None:
        self.in_flight -= 1
        if now <= self.deadline:
            self.latencies.append(now - sent_at)
            if not 200 <= status < 300:
                self.non2xx += 1
        self.check_idle()

    def check_idle(self) -> None:
        if self.in_flight == 0 and _perf() >= self.deadline:
            self._idle.set()

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                await loop.create_connection(lambda: _Connection(self), HOST, self.port)
        except (OSError, TimeoutError):
            self.errors["connect"] += 1

    def reconnect(self) -> None:
        task = asyncio.ensure_future(self._connect())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watchdog(self) -> None:
        """Abort the connections whose request is older than the timeout (wrk's --timeout)."""
        while True:
            await asyncio.sleep(0.1)
            now = _perf()
            for conn in list(self.connections):
                if conn.sent_at and now - conn.sent_at > REQUEST_TIMEOUT_S:
                    conn.timed_out = True
                    self.errors["timeout"] += 1
                    conn.abort()

    async def run(self, run: Run) -> Run:
        await asyncio.gather(*(self._connect() for _ in range(self.count)))
        watchdog = asyncio.ensure_future(self._watchdog())
        try:
            self.started = True
            started = _perf()
            self.deadline = started + self.duration_s
            for conn in list(self.connections):
                conn.send()
            await asyncio.sleep(self.duration_s)
            self.check_idle()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), REQUEST_TIMEOUT_S + 1)
        finally:
            self.finished = True
            watchdog.cancel()
            for task in list(self._tasks):
                task.cancel()
            for conn in list(self.connections):
                conn.abort()
        ordered = sorted(self.latencies)
        run.requests = len(ordered)
        run.duration_s = self.duration_s
        run.p50_ms = percentile(ordered, 0.50) * 1e3
        run.p99_ms = percentile(ordered, 0.99) * 1e3
        run.max_ms = ordered[-1] * 1e3 if ordered else math.nan
        run.non2xx = self.non2xx
        run.errors = dict(self.errors)
        return run


# --- wrk ------------------------------------------------------------------------------------

WRK_DONE = """
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH-RESULT requests=%d duration_us=%d p50_us=%.0f p99_us=%.0f max_us=%.0f "
      .. "status=%d connect=%d read=%d write=%d timeout=%d\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.max, e.status, e.connect, e.read, e.write, e.timeout))
end
"""

_WRK_UPDATE = (
    """
-- POST /api/update-score, one token after the other from the file named after "--".
local prepared = {}
local count = 0
local at = 0

function init(args)
  local headers = {["Content-Type"] = "application/json"}
  for token in io.lines(args[1]) do
    headers["Authorization"] = "Bearer " .. token
    count = count + 1
    prepared[count] = wrk.format("POST", nil, headers, '__BODY__')
  end
end

function request()
  at = at % count + 1
  return prepared[at]
end
""".replace("__BODY__", UPDATE_BODY.decode())
    + WRK_DONE
)

WRK_RESULT = re.compile(r"BENCH-RESULT (.*)")


def wrk_version() -> str:
    try:
        out = subprocess.run(
            ["wrk", "-v"], capture_output=True, text=True, timeout=5, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "wrk"
    return out.split(" Copyright")[0].strip() or "wrk"


@dataclass
class Workspace:
    """The run's temporary directory: server logs, token files, Lua scripts, wrk outputs."""

    path: Path
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def write(self, name: str, text: str) -> Path:
        target = self.path / name
        target.write_text(text)
        return target

    def kill_children(self) -> None:
        for proc in list(self.children):
            if proc.poll() is None:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)
        self.children.clear()


def spawn(ws: Workspace, command: list[str], out_path: Path) -> subprocess.Popen[bytes]:
    """Start a child with its output in ``out_path``; it is killed at the end at the latest."""
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
    ws.children.append(proc)
    return proc


async def wrk_load(
    ws: Workspace, port: int, target: Target, *, connections: int, duration_s: int, run: Run
) -> Run:
    script = ws.path / ("update.lua" if target.endpoint == UPDATE else "top.lua")
    url = f"http://{HOST}:{port}{ROUTES[target.endpoint][1]}"
    args = [] if target.tokens_file is None else [str(target.tokens_file)]
    name = f"{port}-{target.endpoint}"
    return await run_wrk(
        ws, script, url, args, connections=connections, duration_s=duration_s, run=run, name=name
    )


async def run_wrk(
    ws: Workspace,
    script: Path,
    url: str,
    script_args: Sequence[str],
    *,
    connections: int,
    duration_s: int,
    run: Run,
    name: str,
) -> Run:
    """One wrk run (``-t1 --latency``) with ``script`` (which ends with :data:`WRK_DONE`),
    its counts and percentiles read into ``run``.

    Raises:
        RuntimeError: wrk failed, or did not finish in time.
    """
    command = ["wrk", "-t1", f"-c{connections}", f"-d{duration_s}s", "--latency"]
    command += [f"--timeout={REQUEST_TIMEOUT_S}s", "-s", str(script), url]
    if script_args:
        command += ["--", *script_args]
    out_path = ws.path / f"wrk-{name}-{time.monotonic_ns()}.txt"
    proc = spawn(ws, command, out_path)
    try:
        deadline = time.monotonic() + duration_s + REQUEST_TIMEOUT_S + 30
        while proc.poll() is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"wrk did not finish: {shlex.join(command)}")
            await asyncio.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        ws.children.remove(proc)
    output = out_path.read_text(errors="replace")
    match = WRK_RESULT.search(output)
    if proc.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {shlex.join(command)}\n{output}")
    values = {k: int(v) for k, v in (item.split("=") for item in match.group(1).split())}
    run.requests = values["requests"]
    run.duration_s = values["duration_us"] / 1e6
    run.p50_ms = values["p50_us"] / 1e3
    run.p99_ms = values["p99_us"] / 1e3
    run.max_ms = values["max_us"] / 1e3
    run.non2xx = values["status"]
    run.errors = {k: values[k] for k in ("connect", "read", "write", "timeout")}
    return run


# --- servers --------------------------------------------------------------------------------


def boards_file(ws: Workspace, periods: str) -> Path:
    """A boards file whose one board, ``main``, adds to a score in each of ``periods``
    (comma-separated), with no rate limit: the original routes then serve it."""
    names = ", ".join(f'"{name.strip()}"' for name in periods.split(","))
    path = ws.path / "boards.toml"
    path.write_text(
        f'[boards.main]\nperiods = [{names}]\ntimezone = "Europe/Berlin"\n'
        "rate_limit_per_minute = 0\n"
    )
    return path


def start(ws: Workspace, kind: str, args: argparse.Namespace) -> ServerProcess:
    """Our server (an SQLite file in the workspace) or the bare app, on a free port."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCOREBOARD_")}
    if kind == "ours":
        env.update(
            {
                "SCOREBOARD_SQLITE_PATH": str(ws.path / "scoreboard.db"),
                "SCOREBOARD_JWT_SECRET": SECRET,
                "SCOREBOARD_RATE_LIMIT_PER_MINUTE": "0",
                "SCOREBOARD_LOG_LEVEL": args.log_level,
            }
        )
        if args.sqlite_synchronous:
            env["SCOREBOARD_SQLITE_SYNCHRONOUS"] = args.sqlite_synchronous
        if args.periods:
            env["SCOREBOARD_BOARDS_FILE"] = str(boards_file(ws, args.periods))
    module = "server" if kind == "ours" else "bench.bare_server"
    log_path = ws.path / f"{kind}-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, "--host", HOST, "--port", str(port)],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    ws.children.append(proc)
    return ServerProcess(kind, port, proc, log_path)


async def prime(server: ServerProcess, tokens: Sequence[str]) -> None:
    """Wait until the server answers, then check a few updates and a top 10 answer 200."""
    http = Http(server.port)
    try:
        await wait_ready(server, http, 30)
        method, path = ROUTES[UPDATE]
        for token in tokens[:PRIME_REQUESTS]:
            request = http.prepare(method, path, UPDATE_BODY, token)
            status, body = await asyncio.wait_for(http.send(request), REQUEST_TIMEOUT_S)
            # The original board answers new_score; a boards file's, each period's score.
            if status != 200 or not (b'"new_score"' in body or b'"periods"' in body):
                raise RuntimeError(f"{server.kind}: update answered {status} {body[:200]!r}")
        status, body = await asyncio.wait_for(http.get(ROUTES[TOP][1]), REQUEST_TIMEOUT_S)
        if status != 200 or b'"top_scores"' not in body:
            raise RuntimeError(f"{server.kind}: top scores answered {status} {body[:200]!r}")
    finally:
        http.close()


_GC_COLLECTIONS = re.compile(rb'^python_gc_collections_total\{generation="(\d)"\} (\S+)$', re.M)


async def gc_collections(server: ServerProcess) -> tuple[int, ...]:
    """The server's garbage collections so far, by generation (from its ``/metrics``)."""
    http = Http(server.port)
    try:
        status, body = await asyncio.wait_for(http.get("/metrics"), REQUEST_TIMEOUT_S)
    finally:
        http.close()
    found = {int(gen): int(float(count)) for gen, count in _GC_COLLECTIONS.findall(body)}
    if status != 200 or sorted(found) != [0, 1, 2]:
        raise RuntimeError(f"{server.kind}: /metrics has no GC counts ({status})")
    return tuple(found[gen] for gen in (0, 1, 2))


class ServerDied(RuntimeError):
    def __init__(self, server: ServerProcess) -> None:
        code = server.proc.returncode
        how = "a clean stop: a signal from outside?" if code == 0 else f"status {code}"
        super().__init__(f"the {server.kind} server exited during the run ({how})")
        self.kind = server.kind


def check_alive(server: ServerProcess) -> None:
    if server.proc.poll() is not None:
        raise ServerDied(server)


@dataclass(frozen=True)
class CpuSample:
    """The machine's busy CPU time and this run's own (servers, loaders), in seconds."""

    wall_s: float
    busy_s: float
    ours_s: float

    @staticmethod
    def take(servers: Sequence[ServerProcess]) -> CpuSample:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:8]]
        user, nice, system, _idle, _iowait, irq, softirq = ticks
        busy = (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")
        own = 0.0
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):  # this loader, wrk
            usage = resource.getrusage(who)
            own += usage.ru_utime + usage.ru_stime
        for server in servers:
            with contextlib.suppress(OSError):
                own += server.cpu_s()
        return CpuSample(time.monotonic(), busy, own)

    def other_pct(self, later: CpuSample) -> float:
        """Percent of the machine (all cores) busy with other processes since this sample."""
        other = (later.busy_s - self.busy_s) - (later.ours_s - self.ours_s)
        capacity = (later.wall_s - self.wall_s) * (os.cpu_count() or 1)
        return max(0.0, other) / capacity * 100 if capacity > 0 else math.nan


# --- the whole run --------------------------------------------------------------------------


@dataclass
class Report:
    loader: str
    rounds: list[Run] = field(default_factory=list)
    warmups: list[Run] = field(default_factory=list)
    hot_alone: Run | None = None
    hot_normal: Run | None = None
    hot_user: Run | None = None
    ours_alive: bool = True
    ours_log_tail: str = ""

    def runs(self, server: str, endpoint: str) -> list[Run]:
        return [r for r in self.rounds if r.server == server and r.endpoint == endpoint]

    def measured(self) -> list[Run]:
        """The reported runs: the rounds and the hot-user phase."""
        hot = [self.hot_alone, self.hot_normal, self.hot_user]
        return self.rounds + [r for r in hot if r is not None]

    def all_ours(self) -> list[Run]:
        return [r for r in self.warmups + self.measured() if r.server == "ours"]


class Bench:
    def __init__(self, args: argparse.Namespace, ws: Workspace, loader: str) -> None:
        self.args = args
        self.ws = ws
        self.loader = loader
        self.servers: list[ServerProcess] = []
        tokens = user_tokens(args.users)
        self.users = Target(UPDATE, tuple(tokens), ws.write("users.txt", "\n".join(tokens)))
        hot = mint(HOT_USER, "Hot User")
        self.hot = Target(UPDATE, (hot,), ws.write("hot.txt", hot + "\n"))
        self.top = Target(TOP)
        ws.write("update.lua", _WRK_UPDATE)
        ws.write("top.lua", WRK_DONE)

    async def load(
        self,
        server: ServerProcess,
        target: Target,
        connections: int,
        duration_s: int,
        *,
        quiet: bool = True,
    ) -> Run:
        """One load generator against one server, and the CPU time used meanwhile.

        Raises:
            ServerDied: the server is gone (before, during or after the run).
        """
        check_alive(server)
        if quiet:
            await self.wait_quiet()
        run = Run(server.kind, target.endpoint, connections)
        gc0 = await gc_collections(server) if server.kind == "ours" else None
        cpu0, sample0 = server.cpu_s(), CpuSample.take(self.servers)
        try:
            if self.loader == "wrk":
                await wrk_load(
                    self.ws,
                    server.port,
                    target,
                    connections=connections,
                    duration_s=duration_s,
                    run=run,
                )
            else:
                load = PyLoad(server.port, target.requests(server.port), connections, duration_s)
                await load.run(run)
        except RuntimeError:
            check_alive(server)  # a loader failing because the server died: say so
            raise
        check_alive(server)
        run.server_cpu_s = server.cpu_s() - cpu0
        run.other_cpu_pct = sample0.other_pct(CpuSample.take(self.servers))
        if gc0 is not None:
            gc1 = await gc_collections(server)
            run.gc_collections = tuple(b - a for a, b in zip(gc0, gc1, strict=True))
        return run

    async def wait_quiet(self) -> None:
        """Wait (at most ``--quiet-timeout`` s) until other processes leave the CPUs alone."""
        deadline = time.monotonic() + self.args.quiet_timeout
        said = False
        while time.monotonic() < deadline:
            before = CpuSample.take(self.servers)
            await asyncio.sleep(0.5)
            other = before.other_pct(CpuSample.take(self.servers))
            if other < QUIET_PCT:
                return
            if not said:
                print(
                    f"  waiting for other processes to leave the CPUs ({other:.0f}% busy)...",
                    file=sys.stderr,
                    flush=True,
                )
                said = True

    async def measure(self, report: Report) -> None:
        args = self.args
        ours = start(self.ws, "ours", args)
        bare = start(self.ws, "bare", args)
        self.servers = [ours, bare]
        try:
            await asyncio.gather(prime(ours, self.users.tokens), prime(bare, self.users.tokens))
            for target in (self.users, self.top):
                for server in (ours, bare) if args.warmup else ():
                    run = await self.load(
                        server, target, args.connections, args.warmup, quiet=False
                    )
                    self.progress(f"warm-up {server.kind}", run)
                    report.warmups.append(run)
                for i in range(args.rounds):
                    for server in (ours, bare):
                        run = await self.load(server, target, args.connections, args.duration)
                        self.progress(f"round {i + 1} {server.kind}", run)
                        report.rounds.append(run)
            if args.hot:
                await self.measure_hot(ours, report)
        finally:
            report.ours_alive = ours.proc.poll() is None
            report.ours_log_tail = ours.log_tail(10)
            ours.stop()
            bare.stop()

    async def measure_hot(self, ours: ServerProcess, report: Report) -> None:
        args = self.args
        alone = await self.load(ours, self.users, args.hot_connections, args.duration)
        self.progress("hot phase: users alone", alone)
        await self.wait_quiet()  # once, so that both start together
        normal, hot = await asyncio.gather(
            self.load(ours, self.users, args.hot_connections, args.duration, quiet=False),
            self.load(ours, self.hot, args.hot_connections, args.duration, quiet=False),
        )
        self.progress("hot phase: users", normal)
        self.progress("hot phase: hot-user", hot)
        report.hot_alone, report.hot_normal, report.hot_user = alone, normal, hot

    @staticmethod
    def progress(what: str, run: Run) -> None:
        print(f"  {what:<28} {NAMES[run.endpoint]:<24}{run.summary()}", file=sys.stderr, flush=True)


# --- report ---------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def load_average() -> str:
    """The 1/5/15-minute load averages: other work on the machine skews every figure."""
    return bench_report.load_average()


def code_version() -> str:
    """The commit measured, and whether the server's code differs from it."""
    return bench_report.code_version(
        ["server", "handlers", "actors"], "uncommitted changes to the server"
    )


def header_lines(args: argparse.Namespace, argv: Sequence[str], loader: str) -> list[str]:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    if loader == "wrk":
        load = f"{wrk_version()}, -t1 -c{args.connections} --latency --timeout {REQUEST_TIMEOUT_S}s"
    else:
        load = f"python (asyncio, hand-written HTTP/1.1), {args.connections} connections"
    sync = args.sqlite_synchronous or "FULL (the default)"
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    hot = f"; hot-user phase {args.hot_connections} + {args.hot_connections} connections"
    return [
        f"command: python -m bench.updates {shlex.join(argv)}".rstrip(),
        f"date: {now}; code: {code_version()}",
        f"machine: {cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; "
        f"load average {load_average()} at the start",
        f"python {platform.python_version()} ({sys.executable}), tornado {tornado.version}",
        f"loader: {load}",
        f"our server: SQLite file, synchronous {sync}, log level {args.log_level}, "
        f"rate limit off; {args.users} users' HS256 tokens, body {UPDATE_BODY.decode()}",
        f"runs: {args.rounds} round(s) x {args.duration} s per server and endpoint, "
        f"alternating ours / bare, warm-up {args.warmup} s each"
        + (hot if args.hot else "; no hot-user phase"),
    ]


TABLE_HEADER = (
    f"{'endpoint':<24}{'server':<7}{'req/s':>9}  {'rounds req/s':<26}{'p50 ms':>8}"
    f"{'p99 ms':>8}{'non-2xx':>9}{'sock err':>10}{'CPU µs/req':>12}"
)


def table_row(server: str, endpoint: str, runs: Sequence[Run]) -> str:
    each = " ".join(f"{r.rps:,.0f}" for r in runs)
    cpu = median([r.cpu_us_per_request for r in runs])
    return (
        f"{NAMES[endpoint]:<24}{server:<7}{median([r.rps for r in runs]):>9,.0f}  {each:<26}"
        f"{median([r.p50_ms for r in runs]):>8.2f}{median([r.p99_ms for r in runs]):>8.2f}"
        f"{sum(r.non2xx for r in runs):>9}{sum(r.socket_errors for r in runs):>10}{cpu:>12.0f}"
    )


def ratio(report: Report, endpoint: str) -> float:
    ours = median([r.rps for r in report.runs("ours", endpoint)])
    bare = median([r.rps for r in report.runs("bare", endpoint)])
    return ours / bare if bare else math.nan


def goal_lines(report: Report) -> list[str]:
    def verdict(ok: bool) -> str:
        return "MET" if ok else "NOT MET"

    update, top = ratio(report, UPDATE), ratio(report, TOP)
    non2xx = sum(r.non2xx + r.socket_errors for r in report.runs("ours", UPDATE))
    lines = [
        f"update-score >= {GOAL_UPDATE_RATIO:g}x bare req/s with zero non-2xx: "
        f"{verdict(update >= GOAL_UPDATE_RATIO and non2xx == 0)} "
        f"({update:.2f}x; {non2xx} non-2xx or socket errors)",
        f"top-scores >= {GOAL_TOP_RATIO:g}x bare req/s: {verdict(top >= GOAL_TOP_RATIO)} "
        f"({top:.2f}x)",
    ]
    for endpoint, name in ((UPDATE, "update-score"), (TOP, "top-scores")):
        p99s = [r.p99_ms for r in report.runs("ours", endpoint)]
        p99 = median(p99s)
        each = " ".join(f"{p:.1f}" for p in p99s)
        lines.append(
            f"p99 < {GOAL_P99_MS:g} ms on our {name}: {verdict(p99 < GOAL_P99_MS)} "
            f"(median of rounds {p99:.1f} ms; rounds {each})"
        )
    return lines


def hot_lines(report: Report, args: argparse.Namespace) -> list[str]:
    alone, normal, hot = report.hot_alone, report.hot_normal, report.hot_user
    if alone is None or normal is None or hot is None:
        return []
    n = args.hot_connections
    share = normal.rps / alone.rps if alone.rps else math.nan
    same_load = []
    rounds = report.runs("ours", UPDATE)
    if args.connections == 2 * n and rounds:  # the same total load, without a hot user
        same_load.append(
            f"  for comparison, the rounds above: {args.users} users on {args.connections} "
            f"connections, {median([r.rps for r in rounds]):,.0f} req/s, p50 "
            f"{median([r.p50_ms for r in rounds]):.2f} ms, p99 "
            f"{median([r.p99_ms for r in rounds]):.2f} ms"
        )
    return [
        f"Hot user (our server, {NAMES[UPDATE]}, {args.duration} s each):",
        f"  {args.users} users, {n} connections, alone:          {alone.summary()}",
        f"  {args.users} users, {n} connections, with hot-user:  {normal.summary()}",
        f"  hot-user, {n} connections (one token):        {hot.summary()}",
        f"  the users' req/s with the hot user / alone: {share:.2f}x; "
        f"p99 {alone.p99_ms:.2f} -> {normal.p99_ms:.2f} ms; users and hot-user together "
        f"{normal.rps + hot.rps:,.0f} req/s",
        *same_load,
    ]


def gc_lines(report: Report) -> list[str]:
    """Our server's garbage collections during its measured rounds, per route."""
    lines = []
    for endpoint in (UPDATE, TOP):
        runs = [r for r in report.runs("ours", endpoint) if r.gc_collections is not None]
        if runs:
            totals = [sum(r.gc_collections[gen] for r in runs) for gen in (0, 1, 2)]  # type: ignore[index]
            seconds = sum(r.duration_s for r in runs)
            lines.append(
                f"our server's garbage collections in its {NAMES[endpoint]} rounds "
                f"({seconds:.0f} s): generation 0: {totals[0]}, 1: {totals[1]}, 2: {totals[2]}"
            )
    return lines


def print_report(report: Report, args: argparse.Namespace) -> int:
    print(
        "Results (req/s: median of the rounds, then each round; p50/p99: median of the "
        "rounds' percentiles; CPU: the server's, per request)"
    )
    print(TABLE_HEADER)
    for endpoint in (UPDATE, TOP):
        for server in ("ours", "bare"):
            print(table_row(server, endpoint, report.runs(server, endpoint)))
    print("\nours / bare, req/s (medians):")
    for endpoint in (UPDATE, TOP):
        ours_rps = median([r.rps for r in report.runs("ours", endpoint)])
        bare_rps = median([r.rps for r in report.runs("bare", endpoint)])
        print(
            f"  {NAMES[endpoint]}: {ours_rps:,.0f} / {bare_rps:,.0f} = "
            f"{ratio(report, endpoint):.2f}x"
        )
    lines = hot_lines(report, args)
    if lines:
        print()
        print("\n".join(lines))
    print("\nGoals (issue 6, our server; speed goals are reported, not failed):")
    for line in goal_lines(report):
        print("  " + line)
    ours = report.all_ours()
    non2xx = sum(r.non2xx for r in ours)
    errors = sum(r.socket_errors for r in ours)
    total = sum(r.requests for r in ours)
    print(f"\nload average at the end (this run's own load included): {load_average()}")
    others = [r.other_cpu_pct for r in report.measured() if not math.isnan(r.other_cpu_pct)]
    if others:
        worst = max(others)
        print(
            f"other processes' CPU during the measured runs: median {median(others):.0f}%, "
            f"worst {worst:.0f}% of the machine"
            + (" -- WARNING: something else ran, the figures are skewed" if worst > 5 else "")
        )
    print(
        f"our server: {non2xx} non-2xx, {errors} socket errors in {total:,} requests "
        "(warm-ups and the hot-user phase included)"
    )
    print("\n".join(gc_lines(report)))
    failed = non2xx > 0 or errors > 0 or not report.ours_alive
    if not report.ours_alive:
        print("our server exited during the run: the report above is incomplete")
    if failed:
        print(f"the end of our server's log:\n{report.ours_log_tail}")
    return 1 if failed else 0


# --- command line ---------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="measured runs per server")
    parser.add_argument("--duration", type=int, default=10, help="seconds per run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up (0: none)")
    parser.add_argument(
        "--loader",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="auto: wrk when it is on PATH, else the Python load generator",
    )
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--users", type=int, default=2000, help="distinct users' tokens")
    parser.add_argument(
        "--hot",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the hot-user phase (default: on)",
    )
    parser.add_argument("--hot-connections", type=int, default=16, help="per load generator")
    parser.add_argument(
        "--sqlite-synchronous",
        type=str.upper,
        choices=("FULL", "NORMAL"),
        help="our server's SQLITE_SYNCHRONOUS (default: unset, the server's default FULL)",
    )
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        default="INFO",
        help="our server's log level (INFO: the audit trail is written, as in production)",
    )
    parser.add_argument(
        "--quiet-timeout",
        type=float,
        default=60.0,
        help="before each run, wait up to this many s for other processes to leave the CPUs "
        f"(< {QUIET_PCT:g}%% of the machine; 0: start at once)",
    )
    parser.add_argument(
        "--periods",
        default="",
        help="serve a boards file whose default board has these periods, e.g. "
        "daily,weekly,all_time (issue 14); default: no file, the original board",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--timeout", type=float, default=0, help="hard limit for the run in s (0: from the plan)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 round of 1 s, no warm-up, hot phase 1 s each"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.warmup, args.quiet_timeout = 1, 1, 0, 0.0
    if args.rounds < 1 or args.duration < 1 or args.warmup < 0:
        parser.error("--rounds and --duration must be at least 1, --warmup at least 0")
    if not 1 <= args.users <= 100_000 or args.connections < 1 or args.hot_connections < 1:
        parser.error("--users from 1 to 100000; --connections, --hot-connections at least 1")
    if not args.timeout:
        runs = 2 * 2 * ((args.warmup > 0) + args.rounds) + 2
        planned = 2 * 2 * (args.warmup + args.rounds * args.duration) + 2 * args.duration
        args.timeout = 2 * planned + runs * args.quiet_timeout + 90
    return args


def choose_loader(wanted: str) -> str | None:
    has_wrk = shutil.which("wrk") is not None
    if wanted == "wrk":
        return "wrk" if has_wrk else None
    if wanted == "python":
        return "python"
    return "wrk" if has_wrk else "python"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    loader = choose_loader(args.loader)
    if loader is None:
        print("error: --loader wrk, but wrk is not on PATH", file=sys.stderr)
        return 2
    for line in header_lines(args, argv, loader):
        print(line)
    print(flush=True)

    def on_alarm(signum: int, frame: object) -> None:
        raise SystemExit(f"hard timeout of {args.timeout:g}s passed")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(args.timeout) + 30)
    ws = Workspace(Path(tempfile.mkdtemp(prefix="bench-updates-")))
    report = Report(loader)
    status: int | None = None
    try:
        try:
            bench = Bench(args, ws, loader)
            asyncio.run(asyncio.wait_for(bench.measure(report), args.timeout))
        except TimeoutError:
            print(f"error: the run passed its hard timeout of {args.timeout:g}s", file=sys.stderr)
            status = 3
        except ServerDied as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = None if exc.kind == "ours" else 2  # ours: report what was measured
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 2
        finally:
            signal.alarm(0)
            ws.kill_children()
        if status is None:
            status = print_report(report, args)
    finally:
        if args.keep_logs or status != 0:
            print(f"logs kept in {ws.path}", file=sys.stderr)
        else:
            shutil.rmtree(ws.path, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
