"""The rank index over HTTP at a million players: our player routes and updates against
bare Tornado, and our rank beside a Tornado handler on Redis.

    python -m bench.ranks_http [--players 1000000] [--rounds 3] [--duration 10]
    python -m bench.ranks_http --quick     # 20,000 players, 1 round of 1 s: the smoke test

Exit status 1 when a rank disagrees (ours, Redis's or the sorted rows'), or our server
answered anything but 2xx; 2 when a server did not start or a loader is missing. Missed
speed goals are reported (MET / NOT MET), not failed.

1. players: ``bench.ranks.generate(--players, --seed)`` (the in-process bench's rows),
   written into an SQLite file with the store's schema (``bench.ranks.fill_sqlite``).
2. servers, each on a free port of 127.0.0.1:
   - ours: ``python -m server`` on that file (rate limit off, log level INFO: the audit
     trail is written, as in production). Its load of the rank index is timed from its
     own log line, and its RSS read once it is ready;
   - bare: ``bench/bare_server.py``, fixed answers on the same routes: the ceiling of a
     Tornado process here;
   - redis: Debian's ``redis-server`` (no persistence), loaded with the same players in
     a sorted set (``ZADD`` in pipelines), the board's order encoded into score and member
     (``bench/redis_rank_server.py``), and that Tornado handler in front of it
     (``ZREVRANK`` + ``ZSCORE``, one pipelined round trip).
3. check: every player's rank, ours (``POST /api/players/lookup``, 100 a request) and
   Redis's (``ZREVRANK``, pipelined), against the rows sorted by the board's key.
4. load, as ``bench.updates`` applies it (wrk ``-t1 -c32`` when on PATH, else its Python
   loader; a warm-up run each, then ``--rounds`` runs of ``--duration`` s alternating the
   servers), on 2,000 random players:
   - ``GET /api/players/{id}`` (public): ours, bare and redis;
   - ``GET /api/players/me`` (each player's own HS256 token): ours and bare;
   - ``POST /api/update-score`` (``{"increment": 1}``, each player's token): ours and
     bare; every update moves a player in our million-row index.
   Reported: req/s (median of rounds), p50 / p99, the server's CPU per request, ratios.
   Goals of issue 13: player >= 0.9x bare, me >= 0.8x, updates >= 0.6x.

The load average is printed at the start and at the end; other work on the machine skews
every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis

from bench import report as bench_report
from bench.fanout import HOST, REPO, ServerProcess, free_port
from bench.ranks import EPOCH_MS, fill_sqlite, generate
from bench.redis_rank_server import KEY, redis_member, redis_score
from bench.updates import (
    REQUEST_TIMEOUT_S,
    SECRET,
    WRK_DONE,
    CpuSample,
    PyLoad,
    Run,
    Workspace,
    check_alive,
    median,
    mint,
    run_wrk,
    spawn,
    wrk_version,
)
from server.domain.increments import IncrementPolicy
from server.domain.records import BoardRow
from server.domain.topk import rank_key
from server.store.sqlite import SqliteStore

QUICK_PLAYERS = 20_000
SAMPLE = 2_000  # players whose ids and tokens the load rotates over
LOOKUP_BATCH = 100
PLAYER, ME, UPDATE = "player", "me", "update"
NAMES = {
    PLAYER: "GET /api/players/{id}",
    ME: "GET /api/players/me",
    UPDATE: "POST /api/update-score",
}
GOALS = {PLAYER: 0.9, ME: 0.8, UPDATE: 0.6}
UPDATE_BODY = '{"increment": 1}'

_WRK_LINES = (
    """
-- One request per line of the file named after "--": METHOD PATH TOKEN ("-": none).
local prepared = {}
local count = 0
local at = 0

function init(args)
  for line in io.lines(args[1]) do
    local method, path, token = line:match("^(%S+) (%S+) (%S+)$")
    local headers = {}
    local body = nil
    if token ~= "-" then headers["Authorization"] = "Bearer " .. token end
    if method == "POST" then
      headers["Content-Type"] = "application/json"
      body = '__BODY__'
    end
    count = count + 1
    prepared[count] = wrk.format(method, path, headers, body)
  end
end

function request()
  at = at % count + 1
  return prepared[at]
end
""".replace("__BODY__", UPDATE_BODY)
    + WRK_DONE
)


@dataclass(frozen=True)
class Load:
    """The requests of one endpoint: (method, path, token or None), rotated over."""

    endpoint: str
    lines: tuple[tuple[str, str, str | None], ...]

    def raw(self, port: int) -> list[bytes]:
        out = []
        for method, path, token in self.lines:
            head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            if token is not None:
                head += f"Authorization: Bearer {token}\r\n"
            if method == "POST":
                body = UPDATE_BODY.encode()
                head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                out.append((head + "\r\n").encode() + body)
            else:
                out.append((head + "\r\n").encode())
        return out

    def file_text(self) -> str:
        return "\n".join(f"{m} {p} {t or '-'}" for m, p, t in self.lines) + "\n"


@dataclass
class Report:
    players: int
    load_line: str = ""
    rss_mib: float = float("nan")
    redis_load_s: float = float("nan")
    redis_rss_mib: float = float("nan")
    checked: int = 0
    disagreements: list[str] = field(default_factory=list)
    rounds: list[Run] = field(default_factory=list)
    ours_alive: bool = True

    def runs(self, server: str, endpoint: str) -> list[Run]:
        return [r for r in self.rounds if r.server == server and r.endpoint == endpoint]

    def rps(self, server: str, endpoint: str) -> float:
        return median([r.rps for r in self.runs(server, endpoint)])


# --- the data -------------------------------------------------------------------------------


async def build_database(path: Path, rows: Sequence[BoardRow]) -> float:
    """The store's schema, then every row (no budget: all of them). Returns seconds."""
    store = SqliteStore(str(path), IncrementPolicy(rate_limit_per_minute=0))
    await store.open()
    await store.close()
    count, seconds, _ = fill_sqlite(str(path), rows, float("inf"))
    assert count == len(rows)
    return seconds


def load_redis(port: int, rows: Sequence[BoardRow]) -> float:
    """ZADD every player, 10,000 per pipeline. Returns seconds."""
    client = redis.Redis(host=HOST, port=port)
    started = time.perf_counter()
    try:
        for start in range(0, len(rows), 10_000):
            batch = rows[start : start + 10_000]
            client.zadd(
                KEY,
                {
                    redis_member(r.user_id): redis_score(r.score, r.reached_ms, EPOCH_MS)
                    for r in batch
                },
            )
        return time.perf_counter() - started
    finally:
        client.close()


# --- servers --------------------------------------------------------------------------------


def start_ours(ws: Workspace, db: Path) -> ServerProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCOREBOARD_")}
    env.update(
        {
            "SCOREBOARD_SQLITE_PATH": str(db),
            "SCOREBOARD_JWT_SECRET": SECRET,
            "SCOREBOARD_RATE_LIMIT_PER_MINUTE": "0",
            "SCOREBOARD_LOG_LEVEL": "INFO",
        }
    )
    return start_process(ws, "ours", [sys.executable, "-m", "server"], env)


def start_process(
    ws: Workspace, kind: str, command: list[str], env: dict[str, str] | None = None
) -> ServerProcess:
    port = free_port()
    log_path = ws.path / f"{kind}-{port}.log"
    proc = spawn_in_repo(ws, [*command, "--host", HOST, "--port", str(port)], log_path, env)
    return ServerProcess(kind, port, proc, log_path)


def spawn_in_repo(
    ws: Workspace, command: list[str], log_path: Path, env: dict[str, str] | None
) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    ws.children.append(proc)
    return proc


def start_redis(ws: Workspace) -> ServerProcess:
    port = free_port()
    log_path = ws.path / f"redis-server-{port}.log"
    command = ["redis-server", "--port", str(port), "--bind", HOST, "--save", ""]
    command += ["--appendonly", "no", "--protected-mode", "yes"]
    return ServerProcess("redis-server", port, spawn(ws, command, log_path), log_path)


async def get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
        data = await asyncio.wait_for(reader.read(), REQUEST_TIMEOUT_S)
    finally:
        writer.close()
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    return status, data.split(b"\r\n\r\n", 1)[-1]


async def wait_answering(server: ServerProcess, path: str, timeout_s: float) -> None:
    """Until ``path`` answers 200 (ours: once the rank index and the board are loaded)."""
    deadline = time.monotonic() + timeout_s
    while True:
        check_alive(server)
        with contextlib.suppress(OSError, TimeoutError, ValueError, IndexError):
            if (await get(server.port, path))[0] == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{server.kind} not answering {path}:\n{server.log_tail()}")
        await asyncio.sleep(0.2)


async def wait_redis(server: ServerProcess, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        check_alive(server)
        with contextlib.suppress(redis.ConnectionError):
            client = redis.Redis(host=HOST, port=server.port)
            try:
                if client.ping():
                    return
            finally:
                client.close()
        if time.monotonic() > deadline:
            raise RuntimeError(f"redis-server not answering:\n{server.log_tail()}")
        await asyncio.sleep(0.1)


_LOADED = re.compile(r"rank index loaded: ([\d,]+) players in ([\d.]+) s")


async def load_line(server: ServerProcess, timeout_s: float = 10) -> str:
    """Our server's own report of its rank index load (its log is written in batches by
    another thread: the line may come a moment after the server answers)."""
    deadline = time.monotonic() + timeout_s
    while True:
        match = _LOADED.search(server.log_path.read_text(errors="replace"))
        if match:
            return match.group(0)
        if time.monotonic() > deadline:
            return "(no load line in the log)"
        await asyncio.sleep(0.1)


# --- the check ------------------------------------------------------------------------------


async def post_lookup(port: int, ids: Sequence[str]) -> dict[str, int]:
    body = json.dumps({"user_ids": list(ids)}).encode()
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(
            (
                f"POST /api/players/lookup HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body
        )
        data = await asyncio.wait_for(reader.read(), REQUEST_TIMEOUT_S)
    finally:
        writer.close()
    answer = json.loads(data.split(b"\r\n\r\n", 1)[1])
    return {row["user_id"]: row["rank"] for row in answer["rows"]}


async def check_ranks(
    ours: ServerProcess, redis_port: int, rows: Sequence[BoardRow], report: Report
) -> None:
    """Every player's rank: ours and Redis's against the sorted rows."""
    truth = {r.user_id: i for i, r in enumerate(sorted(rows, key=rank_key), start=1)}
    ids = [r.user_id for r in rows]
    client = redis.Redis(host=HOST, port=redis_port)
    try:
        for start in range(0, len(ids), 10_000):
            chunk = ids[start : start + 10_000]
            pipe = client.pipeline(transaction=False)
            for user_id in chunk:
                pipe.zrevrank(KEY, redis_member(user_id))
            theirs = pipe.execute()
            batches = [chunk[i : i + LOOKUP_BATCH] for i in range(0, len(chunk), LOOKUP_BATCH)]
            mine: dict[str, int] = {}
            for answer in await asyncio.gather(*(post_lookup(ours.port, b) for b in batches)):
                mine.update(answer)
            for user_id, their_rank in zip(chunk, theirs, strict=True):
                want = truth[user_id]
                got = (mine.get(user_id), None if their_rank is None else their_rank + 1)
                if got != (want, want) and len(report.disagreements) < 10:
                    report.disagreements.append(f"{user_id}: sorted {want}, ours/redis {got}")
                elif got != (want, want):
                    report.disagreements.append("")
            report.checked += len(chunk)
    finally:
        client.close()


# --- load -----------------------------------------------------------------------------------


async def run_load(
    ws: Workspace,
    loader: str,
    *,
    server: ServerProcess,
    load: Load,
    args: argparse.Namespace,
    duration_s: int,
    servers: Sequence[ServerProcess],
) -> Run:
    check_alive(server)
    run = Run(server.kind, load.endpoint, args.connections)
    cpu0, sample0 = server.cpu_s(), CpuSample.take(servers)
    if loader == "wrk":
        await wrk(
            ws, server.port, load, connections=args.connections, duration_s=duration_s, run=run
        )
    else:
        await PyLoad(server.port, load.raw(server.port), args.connections, duration_s).run(run)
    check_alive(server)
    run.server_cpu_s = server.cpu_s() - cpu0
    run.other_cpu_pct = sample0.other_pct(CpuSample.take(servers))
    return run


async def wrk(
    ws: Workspace, port: int, load: Load, *, connections: int, duration_s: int, run: Run
) -> None:
    lines = ws.write(f"{load.endpoint}.txt", load.file_text())
    script = ws.write("lines.lua", _WRK_LINES)
    url = f"http://{HOST}:{port}/"
    name = f"{port}-{load.endpoint}"
    await run_wrk(
        ws,
        script,
        url,
        [str(lines)],
        connections=connections,
        duration_s=duration_s,
        run=run,
        name=name,
    )


def loads(rows: Sequence[BoardRow], seed: int) -> dict[str, Load]:
    rng = random.Random(seed + 13)
    sample = rng.sample(list(rows), min(SAMPLE, len(rows)))
    tokens = [mint(r.user_id, r.username) for r in sample]
    return {
        PLAYER: Load(PLAYER, tuple(("GET", f"/api/players/{r.user_id}", None) for r in sample)),
        ME: Load(ME, tuple(("GET", "/api/players/me", t) for t in tokens)),
        UPDATE: Load(UPDATE, tuple(("POST", "/api/update-score", t) for t in tokens)),
    }


# --- the run --------------------------------------------------------------------------------


async def measure(args: argparse.Namespace, ws: Workspace, loader: str, report: Report) -> None:
    rows = generate(args.players, args.seed)
    db = ws.path / "ranks.db"
    insert_s = await build_database(db, rows)
    print(f"  database: {len(rows):,} players written in {insert_s:.1f} s", file=sys.stderr)
    ours = start_ours(ws, db)
    bare = start_process(ws, "bare", [sys.executable, "-m", "bench.bare_server"])
    redis_server = start_redis(ws)
    servers = [ours, bare, redis_server]
    try:
        await wait_redis(redis_server)
        report.redis_load_s = load_redis(redis_server.port, rows)
        report.redis_rss_mib = redis_server.rss_kb() / 1024
        redis_http = start_process(
            ws,
            "redis",
            [
                sys.executable,
                "-m",
                "bench.redis_rank_server",
                "--redis-port",
                str(redis_server.port),
            ],
        )
        servers.append(redis_http)
        first = rows[0].user_id
        await wait_answering(ours, f"/api/players/{first}", args.start_timeout)
        report.load_line = await load_line(ours)
        report.rss_mib = ours.rss_kb() / 1024
        await wait_answering(bare, f"/api/players/{first}", 30)
        await wait_answering(redis_http, f"/api/players/{first}", 30)
        print(f"  ours: {report.load_line}; RSS {report.rss_mib:,.0f} MiB", file=sys.stderr)
        await check_ranks(ours, redis_server.port, rows, report)
        print(
            f"  check: {report.checked:,} players, {len(report.disagreements)} disagreements",
            file=sys.stderr,
        )
        del rows
        plan = loads(generate(args.players, args.seed), args.seed)
        for endpoint, who in (
            (PLAYER, (ours, bare, redis_http)),
            (ME, (ours, bare)),
            (UPDATE, (ours, bare)),
        ):
            if endpoint not in args.endpoints:
                continue
            load = plan[endpoint]
            for server in who if args.warmup else ():
                await run_load(
                    ws,
                    loader,
                    server=server,
                    load=load,
                    args=args,
                    duration_s=args.warmup,
                    servers=servers,
                )
            for i in range(args.rounds):
                for server in who:
                    run = await run_load(
                        ws,
                        loader,
                        server=server,
                        load=load,
                        args=args,
                        duration_s=args.duration,
                        servers=servers,
                    )
                    print(
                        f"  round {i + 1} {server.kind:<6}{NAMES[endpoint]:<26}{run.summary()}",
                        file=sys.stderr,
                        flush=True,
                    )
                    report.rounds.append(run)
    finally:
        report.ours_alive = ours.proc.poll() is None
        for server in servers:
            server.stop()


def print_report(report: Report) -> int:
    print(f"our server: {report.load_line}; RSS once ready {report.rss_mib:,.0f} MiB")
    print(
        f"redis-server: {report.players:,} ZADDs in {report.redis_load_s:.1f} s; "
        f"RSS {report.redis_rss_mib:,.0f} MiB"
    )
    print(
        f"ranks checked: {report.checked:,} players, ours and Redis's against the sorted rows: "
        + ("all agree" if not report.disagreements else f"{len(report.disagreements)} disagree")
    )
    for line in report.disagreements[:10]:
        if line:
            print(f"  {line}")
    print(
        f"\n{'endpoint':<26}{'server':<8}{'req/s':>9}  {'rounds':<24}{'p50 ms':>8}{'p99 ms':>8}"
        f"{'non-2xx':>9}{'CPU µs/req':>12}"
    )
    for endpoint in (PLAYER, ME, UPDATE):
        for server in ("ours", "bare", "redis"):
            runs = report.runs(server, endpoint)
            if not runs:
                continue
            each = " ".join(f"{r.rps:,.0f}" for r in runs)
            print(
                f"{NAMES[endpoint]:<26}{server:<8}{median([r.rps for r in runs]):>9,.0f}  "
                f"{each:<24}{median([r.p50_ms for r in runs]):>8.2f}"
                f"{median([r.p99_ms for r in runs]):>8.2f}"
                f"{sum(r.non2xx + r.socket_errors for r in runs):>9}"
                f"{median([r.cpu_us_per_request for r in runs]):>12.0f}"
            )
    print("\nGoals (issue 13; reported, not failed):")
    for endpoint, goal in GOALS.items():
        if not report.runs("ours", endpoint):
            continue
        ratio = report.rps("ours", endpoint) / report.rps("bare", endpoint)
        verdict = "MET" if ratio >= goal else "NOT MET"
        print(f"  {NAMES[endpoint]} >= {goal:g}x bare req/s: {verdict} ({ratio:.2f}x)")
    redis_rps = report.rps("redis", PLAYER)
    if report.runs("redis", PLAYER):
        print(
            f"  beside Redis (ZREVRANK + ZSCORE behind Tornado): ours "
            f"{report.rps('ours', PLAYER):,.0f} req/s, redis {redis_rps:,.0f} req/s "
            f"({report.rps('ours', PLAYER) / redis_rps:.2f}x); p99 "
            f"{median([r.p99_ms for r in report.runs('ours', PLAYER)]):.2f} vs "
            f"{median([r.p99_ms for r in report.runs('redis', PLAYER)]):.2f} ms"
        )
    print(f"\nload average at the end: {bench_report.load_average()}")
    ours_bad = sum(r.non2xx + r.socket_errors for r in report.rounds if r.server == "ours")
    failed = bool(report.disagreements) or ours_bad > 0 or not report.ours_alive
    if ours_bad:
        print(f"our server answered {ours_bad} non-2xx or socket errors")
    return 1 if failed else 0


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--players", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds per run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up (0: none)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--loader", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--start-timeout", type=float, default=300, help="our server's start, s")
    parser.add_argument(
        "--endpoints",
        nargs="+",
        choices=(PLAYER, ME, UPDATE),
        default=[PLAYER, ME, UPDATE],
        help="which loads to run (default: all)",
    )
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_PLAYERS:,} players, 1 round of 1 s"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.players, args.rounds, args.duration, args.warmup = QUICK_PLAYERS, 1, 1, 0
    if args.players < 1 or args.rounds < 1 or args.duration < 1:
        parser.error("--players, --rounds and --duration must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    wanted = args.loader
    loader = "wrk" if wanted != "python" and shutil.which("wrk") else "python"
    if wanted == "wrk" and loader != "wrk":
        print("error: --loader wrk, but wrk is not on PATH", file=sys.stderr)
        return 2
    if shutil.which("redis-server") is None:
        print("error: redis-server is not on PATH (apt-get install redis-server)", file=sys.stderr)
        return 2
    print(f"command: python -m bench.ranks_http {shlex.join(argv)}".rstrip())
    print(f"code: {bench_report.code_version(['server', 'handlers', 'actors'], 'uncommitted')}")
    cpu, memory = bench_report.machine()
    print(
        f"machine: {cpu}, {os.cpu_count()} cores, {memory}; load average "
        f"{bench_report.load_average()}"
    )
    load = wrk_version() + f" -t1 -c{args.connections}" if loader == "wrk" else "python loader"
    print(f"loader: {load}; {args.rounds} round(s) x {args.duration} s, warm-up {args.warmup} s")
    print(f"players: {args.players:,} (seed {args.seed}); load over {SAMPLE:,} random players\n")
    ws = Workspace(Path(tempfile.mkdtemp(prefix="bench-ranks-http-")))
    report = Report(args.players)
    budget = 600 + args.players / 1000 + 10 * args.rounds * (args.duration + args.warmup)

    def on_alarm(signum: int, frame: object) -> None:
        raise SystemExit(f"hard timeout of {budget:.0f} s passed")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(budget))
    status = 2
    try:
        try:
            asyncio.run(measure(args, ws, loader, report))
            status = print_report(report)
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
        finally:
            signal.alarm(0)
            ws.kill_children()
    finally:
        if args.keep_logs or status != 0:
            print(f"logs kept in {ws.path}", file=sys.stderr)
        else:
            shutil.rmtree(ws.path, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
