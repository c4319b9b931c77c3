"""Hostile and heavy clients against one server: its memory and latency before, during, after.

    python -m bench.hostile                      # every scenario at full size (a few minutes)
    python -m bench.hostile --scenarios stalled watchers
    python -m bench.hostile --quick              # every scenario, tiny: a few seconds each
    python -m bench.hostile --repo ../before     # the same against another checkout

Everything runs on 127.0.0.1, bounded in count and in time, and stops by itself (a hard
``--timeout``). Exit status 1 when a server died or a scenario could not be run as
described (e.g. a "users" answer other than 200 or 503), 2 when a server did not start,
3 past the timeout.

Each scenario gets a fresh ``python -m server`` (from ``--repo``, default this checkout,
with ``REPO/.venv/bin/python`` when it exists): an SQLite file in a temporary directory,
the rate limit off, increments up to 10^9, log level WARNING, and whatever
``--server-env NAME=VALUE`` adds. Its settings are printed with the results.

A separate process (``--probe``, started by this one) sends ``GET /api/top-scores`` and
``GET /healthz`` alternately, one every ``--probe-every`` s, on two keep-alive
connections, and records each answer's latency; it shares the 2 cores with the server
and the hostile clients, as a real client of a busy pod would. For each scenario:

- before: the server warmed up and idle (``--window`` s);
- during: the hostile or heavy clients at work;
- after: those clients gone, ``--settle`` s later (``--window`` s).

Per phase: the server's RSS at its end (VmRSS from /proc; "during" also the most seen,
sampled every 0.5 s), the probe's p50 / p99 per route, the server's garbage collections
of generations 1 and 2 (``python_gc_collections_total``), and the event loop's lag from the
server's ``scoreboard_event_loop_lag_seconds`` histogram (timer lateness sampled every
0.1 s; p50 / p99 as the histogram bucket they fall in, and the worst bucket reached;
"n/a" on a server without that metric). The scenarios:

- ``stalled``: ``--stalled`` WebSocket clients that read nothing after the upgrade
  (receive buffer 4 KiB, no authentication) and send a pong every 5 s without reading
  anything (which keeps a server's ping timeout away); meanwhile ``--stalled-rate``
  top-10 changes a second for ``--stalled-s`` s, with
  ``SCOREBOARD_BROADCAST_INTERVAL_MS=0`` (each change a broadcast). Reported: the slow
  closes (1013) the server made and when, its broadcast skips, and, when the phase
  ends and each client reads what it was sent (at most 1 s), what it finds last: a
  close frame with its code, the end of the connection without one, or nothing yet.
- ``pings``: ``--pingers`` clients each sending pings (125-byte payload) as fast as
  they can for ``--pings-s`` s and never reading a pong.
- ``connections``: ``--flood`` WebSocket upgrades from this one address, 100 at a time,
  held open (not read) for ``--flood-s`` s. Reported: how many were accepted (101),
  refused (by status) or failed.
- ``users``: ``--users`` distinct users each sending one update (32 keep-alive
  connections, as fast as the server answers). Reported: answers by status, the most
  live user actors seen, RSS per user.
- ``watchers``: ``--watchers`` WebSocket clients that read everything (pings answered),
  and ``--watcher-rate`` top-10 changes a second for ``--watchers-s`` s with the default
  broadcast interval (100 ms) and no cap on WebSockets per address (they all come from
  127.0.0.1). Reported also: the broadcast step histogram (how many
  steps held the loop over 5 ms) on a server that has it.

Against another checkout (``--repo``) the figures compare the two servers under the same
load; run both on a quiet machine: other processes on the cores move every latency.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import http.client
import math
import os
import platform
import re
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jwt

from bench.fanout import (
    HOST,
    REPO,
    Http,
    ServerProcess,
    Tracker,
    WsClient,
    connect_clients,
    free_port,
    raise_nofile_limit,
    upgrade_request,
    wait_ready,
)
from bench.memory import Pass, run_pass

SECRET = "hostile-bench-secret-that-is-at-least-32-bytes"
SCENARIOS = ("stalled", "pings", "connections", "users", "watchers")
PONG_EVERY_S = 5.0
GCS = 'python_gc_collections_total{generation="%d"}'
MIB = 1024 * 1024

# --- the server -----------------------------------------------------------------------------


def server_python(repo: Path) -> str:
    venv = repo / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() and repo != REPO else sys.executable


def start_server(
    args: argparse.Namespace, tmp: Path, name: str, extra: dict[str, str]
) -> tuple[ServerProcess, dict[str, str]]:
    port = free_port()
    settings = {
        "SCOREBOARD_HOST": HOST,
        "SCOREBOARD_PORT": str(port),
        "SCOREBOARD_JWT_SECRET": SECRET,
        "SCOREBOARD_SQLITE_PATH": str(tmp / f"{name}.db"),
        "SCOREBOARD_RATE_LIMIT_PER_MINUTE": "0",
        "SCOREBOARD_MAX_INCREMENT": "1000000000",
        "SCOREBOARD_LOG_LEVEL": "WARNING",
        **extra,
        **dict(item.split("=", 1) for item in args.server_env),
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCOREBOARD_")}
    env.update(settings)
    log_path = tmp / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [server_python(args.repo), "-B", "-m", "server"],
            cwd=args.repo,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return ServerProcess("ours", port, proc, log_path), settings


def rss_mib(server: ServerProcess) -> float:
    return server.rss_kb() / 1024


def token(user: str) -> str:
    return jwt.encode(
        {"sub": user, "name": user, "exp": int(time.time()) + 7200}, SECRET, algorithm="HS256"
    )


def update_request(port: int, user: str, increment: int) -> bytes:
    body = f'{{"increment": {increment}}}'.encode()
    return (
        f"POST /api/update-score HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        f"Authorization: Bearer {token(user)}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


# --- metrics ----------------------------------------------------------------------------------


_SAMPLE = re.compile(r"^(\w+)(?:\{([^}]*)\})? (\S+)$", re.M)


async def scrape(http: Http) -> dict[str, float]:
    """Every sample of ``/metrics`` as ``name{labels}`` -> value ({} if unreachable).

    Tried twice: the server closes a keep-alive connection idle for 75 s.
    """
    for _attempt in range(2):
        try:
            status, body = await asyncio.wait_for(http.get("/metrics"), 10)
            break
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            http.close()
    else:
        return {}
    if status != 200:
        return {}
    return {
        f"{m.group(1)}{{{m.group(2)}}}" if m.group(2) else m.group(1): float(m.group(3))
        for m in _SAMPLE.finditer(body.decode())
    }


def buckets(metrics: dict[str, float], name: str) -> list[tuple[float, float]]:
    """A histogram's cumulative (upper bound, count) pairs, in order."""
    pattern = re.compile(rf'^{name}_bucket\{{le="([^"]+)"\}}$')
    found = []
    for key, value in metrics.items():
        match = pattern.match(key)
        if match:
            found.append((float(match.group(1)), value))
    return sorted(found)


def histogram_summary(before: dict[str, float], after: dict[str, float], name: str) -> str:
    """p50 / p99 (as the bucket they fall in) and the worst bucket of the observations
    between two scrapes."""
    ends, starts = buckets(after, name), dict(buckets(before, name))
    if not ends:
        return "n/a"
    diff = [(bound, count - starts.get(bound, 0.0)) for bound, count in ends]
    total = diff[-1][1]
    if total <= 0:
        return "no samples"

    def quantile(q: float) -> str:
        for bound, count in diff:
            if count >= q * total:
                return bucket_text(bound)
        return "?"

    previous = 0.0
    worst = diff[0][0]
    for bound, count in diff:
        if count > previous:
            worst = bound
        previous = count
    return f"{quantile(0.5)} / {quantile(0.99)} (worst {bucket_text(worst)}, n={total:.0f})"


def bucket_text(bound: float) -> str:
    return "> 5 s" if math.isinf(bound) else f"<= {bound * 1000:g} ms"


def steps_over(
    before: dict[str, float],
    after: dict[str, float],
    seconds: float,
    name: str = "scoreboard_broadcast_step_seconds",
) -> str:
    """How many broadcast steps took longer than ``seconds``, and how the steps spread
    (``name``: the steps' wall-clock histogram, or their CPU time's)."""
    ends, starts = buckets(after, name), dict(buckets(before, name))
    if not ends:
        return "n/a"
    counts = [(bound, count - starts.get(bound, 0.0)) for bound, count in ends]
    total = counts[-1][1]
    within = dict(counts)[seconds]
    spread, previous = [], 0.0
    for bound, count in counts:
        if count > previous:
            spread.append(
                f"{bucket_text(bound).replace('> 5 s', '> 100 ms')}: {count - previous:.0f}"
            )
        previous = count
    return (
        f"{total - within:.0f} of {total:.0f} steps over {seconds * 1000:g} ms "
        f"({', '.join(spread)})"
    )


def counter_delta(before: dict[str, float], after: dict[str, float], name: str) -> str:
    if name not in after:
        return "n/a"
    return f"{after[name] - before.get(name, 0.0):.0f}"


# --- the latency probe (its own process) -------------------------------------------------------


def probe_main(port: int, out: Path, every_s: float) -> None:
    """Until SIGTERM: alternate GET /api/top-scores and GET /healthz; write
    ``monotonic route ms status`` lines to ``out``."""
    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    connections: dict[str, http.client.HTTPConnection | None] = {}
    with open(out, "w", buffering=1) as f:
        while not stop:
            for route in ("/api/top-scores", "/healthz"):
                started = time.monotonic()
                status = -1
                try:
                    conn = connections.get(route)
                    if conn is None:
                        conn = connections[route] = http.client.HTTPConnection(
                            HOST, port, timeout=10
                        )
                    conn.request("GET", route)
                    response = conn.getresponse()
                    response.read()
                    status = response.status
                except (OSError, http.client.HTTPException):
                    bad = connections.pop(route, None)
                    if bad is not None:
                        bad.close()
                elapsed = time.monotonic() - started
                f.write(f"{started:.6f} {route} {elapsed * 1000:.3f} {status}\n")
                time.sleep(max(0.0, every_s - elapsed))


@dataclass
class Probe:
    proc: subprocess.Popen[bytes]
    out: Path

    def samples(self, start: float, end: float) -> dict[str, list[float]]:
        found: dict[str, list[float]] = {"/api/top-scores": [], "/healthz": [], "errors": []}
        with contextlib.suppress(FileNotFoundError):
            for line in self.out.read_text().splitlines():
                parts = line.split()
                if len(parts) != 4:
                    continue
                at, route, ms, status = float(parts[0]), parts[1], float(parts[2]), int(parts[3])
                if start <= at < end:
                    found["errors" if status != 200 else route].append(ms)
        return found

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def start_probe(port: int, tmp: Path, name: str, every_s: float) -> Probe:
    out = tmp / f"{name}.probe"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.hostile", "--probe", str(port), str(out), str(every_s)],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
    )
    return Probe(proc, out)


def percentiles(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return f"{statistics.median(ordered):.1f} / {p99:.1f}"


# --- phases -------------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    start: float
    end: float = 0.0
    rss_mib: float = 0.0
    max_rss_mib: float = 0.0
    metrics_before: dict[str, float] = field(default_factory=dict)
    metrics_after: dict[str, float] = field(default_factory=dict)


@dataclass
class Report:
    scenario: str
    description: str
    settings: dict[str, str]
    phases: list[Phase] = field(default_factory=list)
    details: list[str] = field(default_factory=list)
    latencies: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


class Scenario:
    """One scenario against one fresh server: before, during (the ``attack``), after."""

    def __init__(self, args: argparse.Namespace, tmp: Path, report: Report) -> None:
        self.args = args
        self.tmp = tmp
        self.report = report

    async def run(
        self, extra: dict[str, str], attack: Callable[[ServerProcess, Http], Awaitable[None]]
    ) -> None:
        args, report = self.args, self.report
        server, report.settings = start_server(args, self.tmp, report.scenario, extra)
        http = Http(server.port)
        probe: Probe | None = None
        try:
            await wait_ready(server, http, 60)
            await warm_up(server.port, http)
            probe = start_probe(server.port, self.tmp, report.scenario, args.probe_every)
            await asyncio.sleep(args.settle)
            await self.phase("before", server, http, asyncio.sleep(args.window))
            await self.phase("during", server, http, attack(server, http))
            await asyncio.sleep(args.settle)
            await self.phase("after", server, http, asyncio.sleep(args.window))
        finally:
            if probe is not None:
                probe.stop()
                for phase in report.phases:
                    report.latencies[phase.name] = probe.samples(phase.start, phase.end)
            http.close()
            died = server.proc.poll()
            server.stop(timeout_s=30)
            if died is not None:
                report.problems.append(f"the server exited ({died}) during the scenario")

    async def phase(
        self, name: str, server: ServerProcess, http: Http, work: Awaitable[None]
    ) -> None:
        phase = Phase(name, time.monotonic(), metrics_before=await scrape(http))
        self.report.phases.append(phase)
        sampler = asyncio.ensure_future(sample_rss(server, phase))
        try:
            await work
        finally:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
        phase.end = time.monotonic()
        phase.rss_mib = rss_mib(server)
        phase.max_rss_mib = max(phase.max_rss_mib, phase.rss_mib)
        phase.metrics_after = await scrape(http)


async def sample_rss(server: ServerProcess, phase: Phase) -> None:
    while True:
        with contextlib.suppress(OSError, RuntimeError):
            phase.max_rss_mib = max(phase.max_rss_mib, rss_mib(server))
        await asyncio.sleep(0.5)


async def warm_up(port: int, http: Http) -> None:
    """A full top 10, and every route once."""
    for i in range(10):
        status, body = await http.send(update_request(port, f"seed-{i:02d}", i + 1))
        if status != 200:
            raise RuntimeError(f"a warm-up update answered {status}: {body[:200]!r}")
    await http.get("/api/top-scores")
    await http.get("/healthz")
    await scrape(http)


class Climbers:
    """Top-10 changes at a steady rate: each update is a new user reaching a new best score."""

    def __init__(self, port: int, prefix: str) -> None:
        self.port = port
        self.prefix = prefix
        self.sent = 0
        self.statuses: Counter[int] = Counter()

    async def run(self, rate: float, seconds: float, connections: int = 4) -> None:
        started = time.monotonic()
        total = int(rate * seconds)
        counter = iter(range(total))

        async def sender() -> None:
            http = Http(self.port)
            try:
                for k in counter:
                    delay = started + k / rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    request = update_request(self.port, f"{self.prefix}-{k:06d}", 1000 + k)
                    try:
                        status, _ = await asyncio.wait_for(http.send(request), 10)
                    except (OSError, asyncio.IncompleteReadError, TimeoutError):
                        http.close()
                        status = -1
                    self.statuses[status] += 1
                    self.sent += 1
            finally:
                http.close()

        await asyncio.gather(*(sender() for _ in range(connections)))

    def text(self, seconds: float) -> str:
        answers = ", ".join(f"{s}: {n}" for s, n in sorted(self.statuses.items()))
        return f"{self.sent} updates in {seconds:.1f} s ({self.sent / seconds:.0f}/s; {answers})"


# --- raw WebSocket clients that do not read ---------------------------------------------------


def masked(opcode: int, payload: bytes = b"") -> bytes:
    mask = os.urandom(4)
    body = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
    return bytes((0x80 | opcode, 0x80 | len(payload))) + mask + body


class RawClient:
    """A WebSocket client on a raw socket that reads nothing after the upgrade's head."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.status = 0

    @classmethod
    async def connect(cls, port: int, rcvbuf: int = 4096) -> RawClient:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        client = cls(sock)
        try:
            await loop.sock_connect(sock, (HOST, port))
            await loop.sock_sendall(sock, upgrade_request(port, ""))
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = await loop.sock_recv(sock, 1)  # byte by byte: leave the frames unread
                if not chunk:
                    break
                head += chunk
            first = head.split(b"\r\n", 1)[0].split()
            client.status = int(first[1]) if len(first) > 1 else 0
        except OSError:
            client.status = -1
        return client

    def close(self) -> None:
        self.sock.close()

    async def send(self, data: bytes) -> bool:
        try:
            await asyncio.get_running_loop().sock_sendall(self.sock, data)
        except OSError:
            return False
        return True

    async def read_what_came(self, seconds: float) -> str:
        """Read for at most ``seconds``; what is found last: a close frame, the end, or
        nothing more."""
        loop = asyncio.get_running_loop()
        data = b""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                chunk = await asyncio.wait_for(
                    loop.sock_recv(self.sock, 1 << 20), deadline - time.monotonic()
                )
            except (TimeoutError, OSError):
                break
            if not chunk:
                close = last_close_frame(data)
                return f"close {close}" if close else "end without a close frame"
            data += chunk
            close = last_close_frame(data)
            if close:
                return f"close {close}"
        return "still open, no close frame"


def last_close_frame(data: bytes) -> int | None:
    """The code of the close frame ending ``data``'s complete frames, if any."""
    pos, code = 0, None
    while len(data) - pos >= 2:
        length, offset = data[pos + 1] & 0x7F, 2
        if length == 126:
            if len(data) - pos < 4:
                break
            (length,) = struct.unpack("!H", data[pos + 2 : pos + 4])
            offset = 4
        elif length == 127:
            if len(data) - pos < 10:
                break
            (length,) = struct.unpack("!Q", data[pos + 2 : pos + 10])
            offset = 10
        if len(data) - pos < offset + length:
            break
        if data[pos] & 0x0F == 0x8:
            payload = data[pos + offset : pos + offset + length]
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
        pos += offset + length
    return code


async def open_raw(port: int, count: int, concurrency: int = 100) -> list[RawClient]:
    gate = asyncio.Semaphore(concurrency)

    async def one() -> RawClient:
        async with gate:
            return await RawClient.connect(port)

    return list(await asyncio.gather(*(one() for _ in range(count))))


# --- the scenarios ------------------------------------------------------------------------------


async def stalled(args: argparse.Namespace, tmp: Path) -> Report:
    n, rate, seconds = args.stalled, args.stalled_rate, args.stalled_s
    report = Report(
        "stalled",
        f"{n} WebSocket clients that never read (pongs sent blind every {PONG_EVERY_S:g} s), "
        f"{rate:g} top-10 changes/s for {seconds:g} s, every change broadcast",
        {},
    )

    async def attack(server: ServerProcess, http: Http) -> None:
        clients = await open_raw(server.port, n)
        accepted = [c for c in clients if c.status == 101]
        report.details.append(f"connected: {len(accepted)} of {n} upgraded")
        closes: list[float] = []
        started = time.monotonic()

        async def watch_closes() -> None:
            seen = 0.0
            metrics = Http(server.port)
            try:
                while True:
                    await asyncio.sleep(0.5)
                    value = (await scrape(metrics)).get("scoreboard_ws_slow_closes_total")
                    if value is not None and value > seen:
                        closes.extend([time.monotonic() - started] * int(value - seen))
                        seen = value
            finally:
                metrics.close()

        async def blind_pongs() -> None:
            while True:
                await asyncio.sleep(PONG_EVERY_S)
                for client in accepted:
                    await client.send(masked(0xA))

        helpers = [asyncio.ensure_future(watch_closes()), asyncio.ensure_future(blind_pongs())]
        climbers = Climbers(server.port, "climber")
        try:
            await climbers.run(rate, seconds)
        finally:
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
        report.details.append("load: " + climbers.text(time.monotonic() - started))
        if closes:
            report.details.append(
                f"slow closes (1013): {len(closes)}, the first {closes[0]:.1f} s and the last "
                f"{closes[-1]:.1f} s after the clients stopped reading"
            )
        else:
            report.details.append(f"slow closes (1013): none within {seconds:g} s")
        outcomes = Counter(await asyncio.gather(*(c.read_what_came(1.0) for c in accepted)))
        report.details.append(
            "reading at the end, the clients found last: "
            + ", ".join(f"{what} x{count}" for what, count in outcomes.most_common())
        )
        for client in clients:
            client.close()

    await Scenario(args, tmp, report).run({"SCOREBOARD_BROADCAST_INTERVAL_MS": "0"}, attack)
    during = report.phases[1] if len(report.phases) > 1 else None
    if during is not None:
        report.details.append(
            "broadcast messages skipped: "
            + counter_delta(
                during.metrics_before, during.metrics_after, "scoreboard_ws_skipped_total"
            )
        )
    return report


async def pings(args: argparse.Namespace, tmp: Path) -> Report:
    n, seconds = args.pingers, args.pings_s
    report = Report(
        "pings",
        f"{n} WebSocket client(s) sending pings as fast as they can for {seconds:g} s, "
        "never reading a pong",
        {},
    )

    async def attack(server: ServerProcess, http: Http) -> None:
        clients = [c for c in await open_raw(server.port, n) if c.status == 101]
        batch = masked(0x9, b"p" * 125) * 256
        sent = [0]

        async def flood(client: RawClient) -> None:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                if not await client.send(batch):
                    return
                sent[0] += 256

        await asyncio.gather(*(flood(c) for c in clients))
        report.details.append(f"{sent[0]:,} pings sent by {len(clients)} client(s)")
        for client in clients:
            client.close()

    await Scenario(args, tmp, report).run({}, attack)
    return report


async def connections(args: argparse.Namespace, tmp: Path) -> Report:
    n, seconds = args.flood, args.flood_s
    report = Report(
        "connections",
        f"{n} WebSocket upgrades from one address, 100 at a time, held for {seconds:g} s "
        "(never read)",
        {},
    )

    async def attack(server: ServerProcess, http: Http) -> None:
        started = time.monotonic()
        clients = await open_raw(server.port, n)
        statuses = Counter(c.status for c in clients)
        report.details.append(
            f"opened in {time.monotonic() - started:.1f} s: "
            + ", ".join(
                f"{'failed' if s == -1 else s}: {count}" for s, count in sorted(statuses.items())
            )
        )
        await asyncio.sleep(seconds)
        metrics = await scrape(http)
        if "scoreboard_websocket_connections" in metrics:
            report.details.append(
                f"open WebSockets on the server: {metrics['scoreboard_websocket_connections']:.0f}"
            )
        for client in clients:
            client.close()

    await Scenario(args, tmp, report).run({}, attack)
    return report


async def users(args: argparse.Namespace, tmp: Path) -> Report:
    n = args.users
    report = Report(
        "users", f"{n:,} distinct users, one update each, from 32 keep-alive connections", {}
    )

    async def attack(server: ServerProcess, http: Http) -> None:
        minted = time.monotonic()
        requests = [update_request(server.port, f"user-{i}", 1) for i in range(n)]
        report.details.append(f"{n:,} tokens minted in {time.monotonic() - minted:.1f} s")
        load = Pass(requests, expected_score=1)
        most_actors = [0.0]

        async def sample() -> None:
            metrics = Http(server.port)
            try:
                while True:
                    await asyncio.sleep(0.5)
                    value = (await scrape(metrics)).get("scoreboard_user_actors", 0.0)
                    most_actors[0] = max(most_actors[0], value)
            finally:
                metrics.close()

        sampler = asyncio.ensure_future(sample())
        try:
            await run_pass(load, server.port, 32)
        finally:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
        answers = ", ".join(f"{s}: {c:,}" for s, c in sorted(load.statuses.items()))
        report.details.append(
            f"{load.answered:,} answers in {load.seconds:.1f} s ({answers}); "
            f"most live user actors seen: {most_actors[0]:,.0f}"
        )
        odd = set(load.statuses) - {200, 503}
        if odd or load.lost:
            report.problems.append(f"users: statuses {sorted(odd)}, {load.lost} lost")

    await Scenario(args, tmp, report).run({}, attack)
    if len(report.phases) == 3:
        before, during = report.phases[0], report.phases[1]
        per_user = (during.rss_mib - before.rss_mib) * MIB / n
        report.details.append(f"RSS growth per user, end of load: {per_user:,.0f} bytes")
    return report


async def watchers(args: argparse.Namespace, tmp: Path) -> Report:
    n, rate, seconds = args.watchers, args.watcher_rate, args.watchers_s
    report = Report(
        "watchers",
        f"{n:,} WebSocket clients reading everything, {rate:g} top-10 changes/s for "
        f"{seconds:g} s (broadcasts at most every 100 ms, the default)",
        {},
    )
    clients: list[WsClient] = []

    async def attack(server: ServerProcess, http: Http) -> None:
        climbers = Climbers(server.port, "climber")
        started = time.monotonic()
        await climbers.run(rate, seconds)
        report.details.append("load: " + climbers.text(time.monotonic() - started))

    class WithWatchers(Scenario):
        async def phase(
            self, name: str, server: ServerProcess, http: Http, work: Awaitable[None]
        ) -> None:
            if name == "during":
                started = time.monotonic()
                found, failed = await connect_clients(
                    server.port, "", n, Tracker(), concurrency=200, timeout_s=300
                )
                clients.extend(found)
                report.details.append(
                    f"connected {len(found):,} watchers in {time.monotonic() - started:.1f} s "
                    f"({failed} failed)"
                )
                await asyncio.sleep(self.args.settle)
            await super().phase(name, server, http, work)
            if name == "during":
                during = self.report.phases[-1]
                report.details.append(
                    "broadcast steps, wall clock: "
                    + steps_over(during.metrics_before, during.metrics_after, 0.005)
                )
                report.details.append(
                    "broadcast steps, their own CPU time: "
                    + steps_over(
                        during.metrics_before,
                        during.metrics_after,
                        0.005,
                        "scoreboard_broadcast_step_cpu_seconds",
                    )
                )
                closed = sum(1 for c in clients if not c.open)
                report.details.append(f"watchers the server closed or reset: {closed}")
                for client in clients:
                    client.abort()
                clients.clear()

    # Every watcher comes from 127.0.0.1 here.
    await WithWatchers(args, tmp, report).run({"SCOREBOARD_WS_MAX_PER_ADDRESS": "0"}, attack)
    return report


RUNNERS: dict[str, Callable[[argparse.Namespace, Path], Awaitable[Report]]] = {
    "stalled": stalled,
    "pings": pings,
    "connections": connections,
    "users": users,
    "watchers": watchers,
}


# --- report ---------------------------------------------------------------------------------------


def print_report(report: Report) -> None:
    print(f"\n== {report.scenario}: {report.description}")
    shown = {
        k: v
        for k, v in report.settings.items()
        if k not in ("SCOREBOARD_HOST", "SCOREBOARD_PORT", "SCOREBOARD_JWT_SECRET")
        and not k.endswith("SQLITE_PATH")
    }
    print("   server settings: " + " ".join(f"{k}={v}" for k, v in sorted(shown.items())))
    print(
        f"   {'phase':<8}{'RSS MiB':>10}{'max MiB':>10}   {'top-scores p50/p99 ms':<23}"
        f"{'healthz p50/p99 ms':<20}{'errors':>7}{'GCs g1/g2':>11}   loop lag p50 / p99"
    )
    for phase in report.phases:
        samples = report.latencies.get(phase.name, {})
        lag = histogram_summary(
            phase.metrics_before, phase.metrics_after, "scoreboard_event_loop_lag_seconds"
        )
        print(
            f"   {phase.name:<8}{phase.rss_mib:>10.1f}{phase.max_rss_mib:>10.1f}   "
            f"{percentiles(samples.get('/api/top-scores', [])):<23}"
            f"{percentiles(samples.get('/healthz', [])):<20}"
            f"{len(samples.get('errors', [])):>7}"
            f"{gcs(phase):>11}   {lag}"
        )
    for line in report.details:
        print(f"   - {line}")
    for line in report.problems:
        print(f"   ! {line}")


def gcs(phase: Phase) -> str:
    """Garbage collections of generations 1 and 2 (full) during the phase."""
    before, after = phase.metrics_before, phase.metrics_after
    return "/".join(counter_delta(before, after, GCS % generation) for generation in (1, 2))


def describe_code(repo: Path) -> str:
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return f"{repo} (not a git checkout)"
    return f"{repo} at {commit}{' with uncommitted changes' if dirty else ''}"


async def run_all(args: argparse.Namespace) -> list[Report]:
    reports = []
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
        for name in args.scenarios:
            report = await RUNNERS[name](args, Path(tmp))
            print_report(report)
            sys.stdout.flush()
            reports.append(report)
    return reports


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout whose server to run")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for every server started (repeat)",
    )
    parser.add_argument("--stalled", type=int, default=200)
    parser.add_argument("--stalled-rate", type=float, default=200.0)
    parser.add_argument("--stalled-s", type=float, default=30.0)
    parser.add_argument("--pingers", type=int, default=1)
    parser.add_argument("--pings-s", type=float, default=20.0)
    parser.add_argument("--flood", type=int, default=2000)
    parser.add_argument("--flood-s", type=float, default=10.0)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--watchers", type=int, default=10_000)
    parser.add_argument("--watcher-rate", type=float, default=50.0)
    parser.add_argument("--watchers-s", type=float, default=20.0)
    parser.add_argument("--window", type=float, default=5.0, help="seconds of before / after")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds between phases")
    parser.add_argument("--probe-every", type=float, default=0.01, help="seconds per probe")
    parser.add_argument("--timeout", type=float, default=1800.0, help="hard limit for the run")
    parser.add_argument("--quick", action="store_true", help="every scenario, tiny")
    parser.add_argument("--probe", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.stalled, args.stalled_rate, args.stalled_s = 5, 50.0, 2.0
        args.pingers, args.pings_s = 1, 1.0
        args.flood, args.flood_s = 20, 0.5
        args.users = 200
        args.watchers, args.watchers_s = 20, 1.0
        args.window, args.settle = 0.5, 0.3
    args.repo = args.repo.resolve()
    for item in args.server_env:
        if "=" not in item or not item.startswith("SCOREBOARD_"):
            parser.error(f"--server-env wants SCOREBOARD_NAME=VALUE, not {item!r}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.probe:
        port, out, every = args.probe
        probe_main(int(port), Path(out), float(every))
        return 0
    limit = raise_nofile_limit()
    needed = max(args.watchers, args.flood, args.stalled) + 200
    if needed > limit:
        print(f"error: open-files limit {limit} is below the {needed} this run needs")
        return 2

    def on_alarm(signum: int, frame: object) -> None:
        raise SystemExit(3)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(args.timeout) + 60)
    print("command: python -m bench.hostile " + " ".join(sys.argv[1:] if argv is None else argv))
    print(f"date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the start "
        "(other processes on these cores move every latency below)"
    )
    print(f"server code: {describe_code(args.repo)}; python {server_python(args.repo)}")
    print(
        "latency: a separate probe process alternating GET /api/top-scores and GET /healthz "
        f"every {args.probe_every * 1000:g} ms; loop lag: the server's "
        "scoreboard_event_loop_lag_seconds histogram (bucket bounds)"
    )
    try:
        reports = asyncio.run(asyncio.wait_for(run_all(args), args.timeout))
    except TimeoutError:
        print(f"error: the run passed its hard timeout of {args.timeout:g}s")
        return 3
    except RuntimeError as exc:
        print(f"error: {exc}")
        return 2
    finally:
        signal.alarm(0)
    print(
        f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
        "(this run's own load included)"
    )
    problems = [p for r in reports for p in r.problems]
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
