"""Fan-out benchmark: our server against the textbook Tornado broadcast loop.

    python -m bench.fanout [--clients 1000 5000 10000] [--changes 20] [--formats seed delta]
    python -m bench.fanout --quick          # 200 clients, 5 changes: a few seconds

Exit status 1 when a client of our server missed a change or could not connect.

For every N in ``--clients`` and every server (ours, once per ``--formats`` entry, and
the textbook loop of ``bench/textbook_server.py``), a fresh server process is started on
127.0.0.1 and N WebSocket clients connect to it from this one process (a minimal
hand-written client on asyncio: the upgrade request, then unmasked server frames parsed
by hand, pings answered with masked pongs). Then ``--changes`` score updates are sent
one at a time, each by a distinct user and each changing the top 10; the next is sent
once every client got the previous one (or ``--change-timeout`` passed).

Reported per server and N:

- deliveries / missed: messages received by the clients / clients that did not get a
  change within the timeout (or were disconnected);
- CPU µs/msg: the server process's CPU time (all threads, from /proc/PID/task/*/schedstat,
  ns resolution; /proc/PID/stat utime+stime if that is missing) over the change series,
  divided by the messages delivered. It includes the HTTP update itself (JWT, store)
  and anything else the server did meanwhile (keepalive pings);
- p50 / p99 / max ms: delivery latency over all deliveries, from just before the update
  request is written to when the client parsed the frame (one clock, this process);
- last ms: the median over changes of the time the last client got it;
- fan-out ms: the server's own time in its write loop per change (ours: from
  ``/metrics``' broadcast histogram; textbook: timed in its handler);
- KB/idle: (server RSS with N idle clients - RSS with 0 clients) / N, VmRSS from
  /proc/PID/status.

Our server runs with ``SCOREBOARD_BROADCAST_INTERVAL_MS=0`` (every change broadcast at
once), no cap on WebSockets per address (every client is 127.0.0.1), in-memory SQLite,
no rate limit, a raised max increment, and its default keepalive pings; the textbook
server has Tornado's defaults (no pings). The clients share the machine's cores with the
server, as the issue's goals assume; at 10,000 clients this one client process needs
~8 µs per message, which bounds the latencies.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jwt

HOST = "127.0.0.1"
SECRET = "fanout-bench-secret-that-is-at-least-32-bytes"
REPO = Path(__file__).resolve().parent.parent
SEED_USERS = 10
WARMUP_CLIENTS = 20

# The goals of issue 3.
GOAL_CPU_US = 10.0
GOAL_CPU_MIN_CLIENTS = 2000
GOAL_P99_MS = 150.0
GOAL_P99_CLIENTS = 10_000
GOAL_KB_PER_CONN = 20.0

_VERSION = re.compile(rb'"version":\s*(\d+)')
_WS_KEY = base64.b64encode(b"fanout-bench-key").decode()
_WS_ACCEPT = base64.b64encode(
    hashlib.sha1((_WS_KEY + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
)
_perf = time.perf_counter


# --- processes -----------------------------------------------------------------------------

_children: list[subprocess.Popen[bytes]] = []


def raise_nofile_limit() -> int:
    """Raise the soft open-files limit to the hard one (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    kind: str  # "ours" or "textbook"
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def rss_kb(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def cpu_s(self) -> float:
        """CPU time of every thread, in seconds (ns resolution where available)."""
        total_ns = 0
        try:
            for tid in os.listdir(f"/proc/{self.pid}/task"):
                with open(f"/proc/{self.pid}/task/{tid}/schedstat") as f:
                    total_ns += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return sum(self.cpu_ticks_s())
        return total_ns / 1e9

    def cpu_ticks_s(self) -> tuple[float, float]:
        """(utime, stime) from /proc/PID/stat: clock-tick resolution, dead threads included."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / tick, int(fields[12]) / tick

    def stop(self, timeout_s: float = 10) -> None:
        """SIGTERM (a graceful stop), then SIGKILL past ``timeout_s``."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        with contextlib.suppress(ValueError):
            _children.remove(self.proc)


def start_server(kind: str, log_dir: Path, label: str) -> ServerProcess:
    port = free_port()
    env = dict(os.environ)
    env.update(
        {
            "SCOREBOARD_JWT_SECRET": SECRET,
            "SCOREBOARD_SQLITE_PATH": ":memory:",
            "SCOREBOARD_BROADCAST_INTERVAL_MS": "0",
            "SCOREBOARD_RATE_LIMIT_PER_MINUTE": "0",
            "SCOREBOARD_MAX_INCREMENT": "1000000",
            "SCOREBOARD_LOG_LEVEL": "WARNING",
            # Every client comes from 127.0.0.1 here.
            "SCOREBOARD_WS_MAX_PER_ADDRESS": "0",
        }
    )
    module = "server" if kind == "ours" else "bench.textbook_server"
    log_path = log_dir / f"{label.replace('/', '-')}-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, "--port", str(port), "--host", HOST],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    _children.append(proc)
    return ServerProcess(kind, port, proc, log_path)


def kill_children() -> None:
    for proc in list(_children):
        if proc.poll() is None:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
    _children.clear()


# --- a minimal HTTP/1.1 client (one keep-alive connection) ---------------------------------


class Http:
    def __init__(self, port: int) -> None:
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(HOST, self.port)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    def prepare(self, method: str, path: str, body: bytes = b"", token: str | None = None) -> bytes:
        head = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{self.port}"]
        if token is not None:
            head.append(f"Authorization: Bearer {token}")
        if method == "POST":
            head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        return ("\r\n".join(head) + "\r\n\r\n").encode() + body

    async def send(self, request: bytes) -> tuple[int, bytes]:
        """Write a prepared request, read the response: (status, body)."""
        if self._writer is None:
            await self._connect()
        assert self._reader is not None and self._writer is not None
        self._writer.write(request)
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await self._reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int((await self._reader.readuntil(b"\r\n")).strip(), 16)
                body += await self._reader.readexactly(size + 2)
                if size == 0:
                    break
        else:
            body = b""
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, body

    async def get(self, path: str) -> tuple[int, bytes]:
        return await self.send(self.prepare("GET", path))


def mint(user: str) -> str:
    now = int(time.time())
    claims = {"sub": user, "name": user.title(), "iat": now, "exp": now + 3600}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def update_request(http: Http, user: str, increment: int) -> bytes:
    body = json.dumps({"increment": increment}).encode()
    return http.prepare("POST", "/api/update-score", body, mint(user))


# --- a minimal WebSocket client ------------------------------------------------------------


class Tracker:
    """What the clients of one run record for the change in flight."""

    def __init__(self) -> None:
        self.expected = 1 << 62  # the version of the change in flight
        self.t0 = 0.0
        self.remaining = 0
        self.done: asyncio.Future[None] | None = None
        self.latencies: list[float] = []
        self.other = 0  # frames that were not the expected change (duplicates, stale)
        self.closed = 0  # clients the server closed or reset
        self.errors = 0  # frames this client does not understand


class WsClient(asyncio.Protocol):
    """One WebSocket connection: records when each change's frame was parsed."""

    __slots__ = ("buf", "open", "ready", "request", "seen", "tracker", "transport", "upgraded")

    def __init__(self, request: bytes, tracker: Tracker, ready: asyncio.Future[int]) -> None:
        self.tracker = tracker
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.upgraded = False
        self.ready: asyncio.Future[int] | None = ready  # the first message's version
        self.seen = -1
        self.open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.open = True
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.open:
            self.open = False
            if self.ready is None:
                self.tracker.closed += 1
        self._fail(exc or ConnectionError("closed before the first message"))

    def _fail(self, exc: BaseException) -> None:
        ready, self.ready = self.ready, None
        if ready is not None and not ready.done():
            ready.set_exception(exc)

    def abort(self) -> None:
        self.open = False
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        now = _perf()
        if self.buf:
            data = self.buf + data
            self.buf = b""
        if not self.upgraded:
            rest = self._upgrade(data)
            if rest is None:
                return
            data = rest
        size = len(data)
        pos = 0
        while size - pos >= 2:
            b1 = data[pos + 1]
            length = b1 & 0x7F
            if length < 126:
                start = pos + 2
            elif length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
                start = pos + 4
            else:
                if size - pos < 10:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                start = pos + 10
            if b1 & 0x80:  # a server never masks its frames
                self.tracker.errors += 1
                self.abort()
                return
            end = start + length
            if end > size:
                break
            b0 = data[pos]
            opcode = b0 & 0x0F
            if opcode == 1 and b0 & 0x80:
                self._on_text(data, start, end, now)
            elif opcode == 9:
                self._send_control(0xA, data[start:end])
            elif opcode == 8:
                self._send_control(0x8, data[start : start + 2])
                self.open = False
                self.tracker.closed += 1
            elif opcode != 10:  # fragments and binary frames: these servers send none
                self.tracker.errors += 1
            pos = end
        if pos < size:
            self.buf = data[pos:]

    def _upgrade(self, data: bytes) -> bytes | None:
        """Check the 101 response; return the bytes after it (None: not complete, or refused)."""
        end = data.find(b"\r\n\r\n")
        if end < 0:
            self.buf = data
            return None
        head = data[:end]
        if not head.startswith(b"HTTP/1.1 101") or _WS_ACCEPT not in head:
            self._fail(ConnectionError(head.split(b"\r\n", 1)[0].decode("latin-1")))
            self.abort()
            return None
        self.upgraded = True
        return data[end + 4 :]

    def _on_text(self, data: bytes, start: int, end: int, now: float) -> None:
        match = _VERSION.search(data, start, end)
        if match is None:
            self.tracker.errors += 1
            return
        version = int(match.group(1))
        ready = self.ready
        if ready is not None:  # the first message: a snapshot
            self.ready = None
            self.seen = version
            if not ready.done():
                ready.set_result(version)
            return
        tracker = self.tracker
        if version >= tracker.expected > self.seen:
            self.seen = version
            tracker.latencies.append(now - tracker.t0)
            tracker.remaining -= 1
            if tracker.remaining <= 0 and tracker.done is not None and not tracker.done.done():
                tracker.done.set_result(None)
        else:
            tracker.other += 1

    def _send_control(self, opcode: int, payload: bytes) -> None:
        """A client frame: final, masked (RFC 6455 5.3)."""
        if self.transport is None or self.transport.is_closing():
            return
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i & 3] for i, b in enumerate(payload[:125]))
        self.transport.write(bytes((0x80 | opcode, 0x80 | len(masked))) + mask + masked)


def upgrade_request(port: int, query: str) -> bytes:
    return (
        f"GET /ws/scoreboard{query} HTTP/1.1\r\n"
        f"Host: {HOST}:{port}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {_WS_KEY}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


async def connect_clients(
    port: int, query: str, count: int, tracker: Tracker, *, concurrency: int, timeout_s: float
) -> tuple[list[WsClient], int]:
    """Open ``count`` clients, each until its first message; return them and the failures."""
    loop = asyncio.get_running_loop()
    request = upgrade_request(port, query)
    gate = asyncio.Semaphore(concurrency)
    clients: list[WsClient] = []
    failures = 0

    async def one() -> None:
        nonlocal failures
        async with gate:
            ready: asyncio.Future[int] = loop.create_future()
            client = WsClient(request, tracker, ready)
            try:
                async with asyncio.timeout(min(30.0, timeout_s)):
                    await loop.create_connection(lambda: client, HOST, port)
                    await ready
            except (OSError, TimeoutError):
                failures += 1
                client.abort()
                return
            clients.append(client)

    tasks = [asyncio.ensure_future(one()) for _ in range(count)]
    try:
        async with asyncio.timeout(timeout_s):
            await asyncio.gather(*tasks)
    except TimeoutError:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        failures = count - len(clients)
    return clients, failures


# --- one run: one server, N clients ---------------------------------------------------------


@dataclass
class Result:
    label: str
    clients: int
    connected: int = 0
    connect_failures: int = 0
    connect_s: float = 0.0
    changes: int = 0
    deliveries: int = 0
    missed: int = 0
    cpu_s: float = 0.0
    cpu_user_s: float = 0.0
    cpu_sys_s: float = 0.0
    client_cpu_s: float = 0.0
    series_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    last_per_change: list[float] = field(default_factory=list)
    fanout_s: list[float] = field(default_factory=list)
    rss0_kb: int = 0
    rss_kb: int = 0
    other: int = 0
    closed: int = 0
    errors: int = 0

    @property
    def cpu_us_per_msg(self) -> float:
        return self.cpu_s / self.deliveries * 1e6 if self.deliveries else float("nan")

    @property
    def kb_per_conn(self) -> float:
        return (self.rss_kb - self.rss0_kb) / self.connected if self.connected else float("nan")

    def percentile_ms(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3

    @property
    def max_ms(self) -> float:
        return max(self.latencies) * 1e3 if self.latencies else float("nan")

    @property
    def last_ms(self) -> float:
        return statistics.median(self.last_per_change) * 1e3 if self.last_per_change else 0.0

    @property
    def fanout_ms(self) -> float:
        return statistics.mean(self.fanout_s) * 1e3 if self.fanout_s else float("nan")


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


async def broadcast_totals(server: ServerProcess, http: Http) -> tuple[float, float]:
    """Our server's broadcast histogram (sum of seconds, count) from /metrics."""
    if server.kind != "ours":
        return 0.0, 0.0
    status, body = await http.get("/metrics")
    text = body.decode() if status == 200 else ""
    return (
        _metric(text, "scoreboard_broadcast_duration_seconds_sum"),
        _metric(text, "scoreboard_broadcast_duration_seconds_count"),
    )


async def wait_ready(server: ServerProcess, http: Http, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.kind} server exited:\n{server.log_tail()}")
        try:
            status, _ = await asyncio.wait_for(http.get("/api/top-scores"), 2)
            if status == 200:
                return
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            http.close()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.kind} server not ready:\n{server.log_tail()}")
        await asyncio.sleep(0.1)


async def prepare(server: ServerProcess, http: Http, query: str, settle_s: float) -> None:
    """Seed a full top 10 and warm the WebSocket path up, so RSS at 0 clients is fair."""
    await wait_ready(server, http, 30)
    for i in range(SEED_USERS):
        status, body = await http.send(update_request(http, f"seed-{i:02d}", i + 1))
        if status != 200:
            raise RuntimeError(f"seed update answered {status}: {body[:200]!r}")
    warm, _ = await connect_clients(
        server.port, query, WARMUP_CLIENTS, Tracker(), concurrency=WARMUP_CLIENTS, timeout_s=30
    )
    for client in warm:
        client.abort()
    await asyncio.sleep(settle_s)


async def send_changes(
    server: ServerProcess,
    http: Http,
    clients: list[WsClient],
    tracker: Tracker,
    *,
    args: argparse.Namespace,
    result: Result,
) -> None:
    """Send the changes one at a time; record deliveries, misses and the server's CPU."""
    versions = {c.seen for c in clients}
    if len(versions) > 1:
        raise RuntimeError(f"clients started at different versions: {sorted(versions)[:5]}")
    version = versions.pop() if versions else 0
    requests = [  # strictly growing scores of new users: each one is the new number 1
        update_request(http, f"bench-{k:05d}", SEED_USERS + 1 + k) for k in range(args.changes)
    ]
    fan_sum0, fan_count0 = await broadcast_totals(server, http)
    cpu0, (user0, sys0) = server.cpu_s(), server.cpu_ticks_s()
    client_cpu0, started = time.process_time(), _perf()
    loop = asyncio.get_running_loop()
    for request in requests:
        version += 1
        first = len(tracker.latencies)
        tracker.expected = version
        tracker.remaining = sum(1 for c in clients if c.open)
        tracker.done = done = loop.create_future()
        if tracker.remaining == 0:
            done.set_result(None)
        tracker.t0 = _perf()
        status, body = await http.send(request)
        if status != 200:
            raise RuntimeError(f"update answered {status}: {body[:200]!r}")
        if server.kind == "textbook":
            result.fanout_s.append(json.loads(body)["fanout_s"])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done, max(0.0, tracker.t0 + args.change_timeout - _perf()))
        got = tracker.latencies[first:]
        result.deliveries += len(got)
        result.missed += result.connected - len(got)
        if got:
            result.last_per_change.append(max(got))
        result.changes += 1
    tracker.expected = 1 << 62  # frames arriving late from here on count as "other"
    result.series_s = _perf() - started
    result.client_cpu_s = time.process_time() - client_cpu0
    result.cpu_s = server.cpu_s() - cpu0
    user1, sys1 = server.cpu_ticks_s()
    result.cpu_user_s, result.cpu_sys_s = user1 - user0, sys1 - sys0
    fan_sum1, fan_count1 = await broadcast_totals(server, http)
    if fan_count1 > fan_count0:
        per = (fan_sum1 - fan_sum0) / (fan_count1 - fan_count0)
        result.fanout_s = [per] * int(fan_count1 - fan_count0)


async def run_one(
    label: str, kind: str, query: str, n: int, *, args: argparse.Namespace, log_dir: Path
) -> Result:
    """A fresh server, ``n`` idle clients (memory), then the change series (CPU, latency)."""
    result = Result(label, n)
    server = start_server(kind, log_dir, label)
    http = Http(server.port)
    clients: list[WsClient] = []
    try:
        await prepare(server, http, query, args.settle)
        result.rss0_kb = server.rss_kb()
        tracker = Tracker()
        started = _perf()
        clients, result.connect_failures = await connect_clients(
            server.port,
            query,
            n,
            tracker,
            concurrency=args.connect_concurrency,
            timeout_s=args.connect_timeout,
        )
        result.connect_s = _perf() - started
        result.connected = len(clients)
        await asyncio.sleep(args.settle)
        result.rss_kb = server.rss_kb()
        await send_changes(server, http, clients, tracker, args=args, result=result)
        result.latencies = tracker.latencies
        result.other, result.closed, result.errors = tracker.other, tracker.closed, tracker.errors
        return result
    finally:
        for client in clients:
            client.abort()
        http.close()
        await asyncio.sleep(0.2)
        server.stop()


# --- report -------------------------------------------------------------------------------

HEADER = (
    f"{'server':<16}{'clients':>8}{'deliveries':>11}{'missed':>8}{'CPU µs/msg':>11}"
    f"{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'last ms':>9}{'fan-out ms':>11}{'KB/idle':>9}"
)


def row(r: Result) -> str:
    return (
        f"{r.label:<16}{r.connected:>8}{r.deliveries:>11}{r.missed:>8}{r.cpu_us_per_msg:>11.2f}"
        f"{r.percentile_ms(0.5):>9.1f}{r.percentile_ms(0.99):>9.1f}{r.max_ms:>9.1f}"
        f"{r.last_ms:>9.1f}{r.fanout_ms:>11.2f}{r.kb_per_conn:>9.1f}"
    )


def detail(r: Result) -> str:
    lasts = sorted(r.last_per_change)
    slow = sum(1 for t in lasts if t * 1e3 >= GOAL_P99_MS)
    spread = (
        f"{lasts[0] * 1e3:.0f}/{statistics.median(lasts) * 1e3:.0f}/{lasts[-1] * 1e3:.0f} ms"
        if lasts
        else "-"
    )
    return (
        f"  {r.label} N={r.clients}: connected {r.connected} in {r.connect_s:.1f}s "
        f"({r.connect_failures} failed); RSS {r.rss0_kb} -> {r.rss_kb} kB\n"
        f"    series of {r.changes} changes {r.series_s:.2f}s; server CPU {r.cpu_s * 1e3:.0f} ms "
        f"(user {r.cpu_user_s * 1e3:.0f} + sys {r.cpu_sys_s * 1e3:.0f} ms in ticks); "
        f"client CPU {r.client_cpu_s * 1e3:.0f} ms\n"
        f"    last client per change min/median/max {spread}, {slow} changes >= "
        f"{GOAL_P99_MS:g} ms; other frames {r.other}, closed {r.closed}, errors {r.errors}"
    )


def goals(results: Sequence[Result]) -> list[str]:
    ours = [r for r in results if r.label.startswith("ours")]
    lines = []

    def verdict(rows: list[Result], ok: bool) -> str:
        return "not measured" if not rows else "MET" if ok else "NOT MET"

    cpu_rows = [r for r in ours if r.clients >= GOAL_CPU_MIN_CLIENTS]
    worst = max((r.cpu_us_per_msg for r in cpu_rows), default=float("nan"))
    lines.append(
        f"CPU <= {GOAL_CPU_US:g} µs/message at >= {GOAL_CPU_MIN_CLIENTS} clients: "
        f"{verdict(cpu_rows, worst <= GOAL_CPU_US)} (worst {worst:.2f} µs)"
    )
    p99_rows = [r for r in ours if r.clients >= GOAL_P99_CLIENTS]
    worst = max((r.percentile_ms(0.99) for r in p99_rows), default=float("nan"))
    lines.append(
        f"p99 < {GOAL_P99_MS:g} ms at {GOAL_P99_CLIENTS} clients (interval 0): "
        f"{verdict(p99_rows, worst < GOAL_P99_MS)} (worst {worst:.1f} ms)"
    )
    missed = sum(r.missed + r.connect_failures for r in ours)
    lines.append(
        f"no missed updates: {verdict(ours, missed == 0)} ({missed} missed or unconnected)"
    )
    worst = max((r.kb_per_conn for r in ours), default=float("nan"))
    lines.append(
        f"<= {GOAL_KB_PER_CONN:g} KB per idle connection: "
        f"{verdict(ours, worst <= GOAL_KB_PER_CONN)} (worst {worst:.1f} KB)"
    )
    return lines


def ratios(results: Sequence[Result]) -> Iterator[str]:
    by = {(r.label, r.clients): r for r in results}
    for (label, n), r in by.items():
        base = by.get(("textbook", n))
        if label.startswith("ours") and base is not None and r.deliveries and base.deliveries:
            yield (
                f"  N={n}: textbook / {label} CPU per message = "
                f"{base.cpu_us_per_msg:.2f} / {r.cpu_us_per_msg:.2f} = "
                f"{base.cpu_us_per_msg / r.cpu_us_per_msg:.1f}x"
            )


async def run_all(args: argparse.Namespace) -> list[Result]:
    targets = [(f"ours/{fmt}", "ours", f"?format={fmt}") for fmt in args.formats]
    if not args.no_textbook:
        targets.append(("textbook", "textbook", ""))
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-fanout-") as tmp:
        for n in args.clients:
            for label, kind, query in targets:
                result = await run_one(label, kind, query, n, args=args, log_dir=Path(tmp))
                print(row(result), file=sys.stderr, flush=True)
                results.append(result)
    return results


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1000, 5000, 10000])
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument(
        "--formats",
        nargs="+",
        choices=("seed", "delta"),
        default=["seed"],
        help="our server's stream formats to measure (default: seed)",
    )
    parser.add_argument("--no-textbook", action="store_true", help="skip the baseline")
    parser.add_argument("--change-timeout", type=float, default=10.0, help="seconds per change")
    parser.add_argument(
        "--connect-timeout", type=float, default=180.0, help="seconds to connect all N clients"
    )
    parser.add_argument("--connect-concurrency", type=int, default=100)
    parser.add_argument("--settle", type=float, default=1.0, help="seconds idle before reading RSS")
    parser.add_argument("--timeout", type=float, default=1800.0, help="hard limit for the run")
    parser.add_argument("--quick", action="store_true", help="200 clients, 5 changes")
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.changes, args.settle = [200], 5, 0.3
    if min(args.clients) < 1 or not 1 <= args.changes <= 100_000:
        parser.error("--clients must be positive and --changes from 1 to 100000")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    limit = raise_nofile_limit()
    if max(args.clients) + 100 > limit:
        print(
            f"error: open-files limit {limit} is too low for {max(args.clients)} clients",
            file=sys.stderr,
        )
        return 2

    def on_alarm(signum: int, frame: object) -> None:
        raise SystemExit(f"hard timeout of {args.timeout:g}s passed")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(args.timeout) + 30)
    print(
        f"fanout bench: clients={args.clients} changes={args.changes} formats={args.formats} "
        f"cpus={os.cpu_count()} python={sys.version.split()[0]} nofile={limit}",
        flush=True,
    )
    print(HEADER, file=sys.stderr, flush=True)
    try:
        results = asyncio.run(asyncio.wait_for(run_all(args), args.timeout))
    except TimeoutError:
        print(f"error: the run passed its hard timeout of {args.timeout:g}s", file=sys.stderr)
        return 3
    finally:
        signal.alarm(0)
        kill_children()
    print()
    print(HEADER)
    for r in results:
        print(row(r))
    print("\nDetails:")
    for r in results:
        print(detail(r))
    print("\nCPU per delivered message, textbook / ours:")
    for line in ratios(results):
        print(line)
    print("\nGoals (issue 3, our server):")
    for line in goals(results):
        print("  " + line)
    ours = [r for r in results if r.label.startswith("ours")]
    return 1 if any(r.missed or r.connect_failures for r in ours) else 0


if __name__ == "__main__":
    sys.exit(main())
