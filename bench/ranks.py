"""The rank index in process: load time, memory per player, rank and window latency, and
the count-based rank it replaces ("before").

    python -m bench.ranks [--players 1000000] [--seed 13] [--lookups 100000]
    python -m bench.ranks --quick          # 20,000 players: the smoke test, a few seconds

Exit status 1 when the index disagrees with a sorted list or with the store's rank (see
below); missed speed or memory goals are reported (MET / NOT MET), not failed.

Everything runs in this process, one phase after the other:

1. players: ``--players`` rows generated from ``--seed`` (the same rows every run):
   user ids ``player-0000001`` ..., usernames of 8 to 16 letters and digits, scores from a
   skewed distribution (most players low, a long tail; many ties), ``reached_ms`` spread
   over 90 days, versions 1 to 40.
2. load: ``RankIndex(rows)``, the bulk build, timed (goal <= 10 s at a million); for
   comparison the same rows by one ``apply`` each into an empty index (skipped when the
   first 5 % project past ``--apply-budget`` s). The bulk-built index is the one measured.
3. memory: ``VmRSS`` from ``/proc/self/status`` before the rows are generated and after the
   index is built; the growth (the rows, their ids and names, and the index) / players, goal
   <= 512 bytes. The rows alone (read between the two) are shown too. Then the garbage
   collector is set as a serving process sets it (:func:`tune_for_serving`: collect,
   freeze, gen-0 threshold 10,000), as the server does after loading.
4. reads: ``rank_of`` for ``--lookups`` random players, each timed alone with
   ``time.perf_counter_ns`` minus the timer's own cost (the median of as many empty timed
   pairs, measured first); p50 / p99 / max, goal p99 <= 20 µs. ``around(id, 5, 5)`` the
   same (goal p99 <= 50 µs), and ``page(rank, 100)`` at random ranks.
5. updates: ``apply`` of ``--lookups`` newer rows (a random player's score up by 1 to 50,
   later ``reached_ms``, version + 1), each timed alone; rows built before the timing.
6. check: the index against ``sorted(rows, key=rank_key)`` (the rows after the updates)
   for 1,000 random players: ``rank_of`` and ``at`` must both agree.
7. before: the count-based rank of the store (``SqliteStore.rank``: the player's row, then
   ``COUNT(*)`` of the rows ahead of it on the partial index ``users_scores_rank_active``)
   on a temporary SQLite file holding the same rows: the store creates its schema, the
   rank index is dropped, the rows go in with one ``executemany`` (synchronous OFF), and
   the store opened again creates the index (its own DDL). If the insert of the first
   5 % projects past ``--sqlite-budget`` s, only the rows inserted by then are used (said
   in the report). Then ``--store-lookups`` random players' ``await store.rank(id)``, each
   timed alone (it includes the hop to the store's thread and back), and the same query
   on a connection of this thread; every rank compared with the index's.

Other work on the machine skews every figure: the load average is printed at the start and
at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import json
import os
import platform
import random
import shlex
import sqlite3
import statistics
import string
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import sortedcontainers

from bench import report
from handlers.live.rank_stream import (
    MIN_TICK_BUDGET_S,
    TICK_SHARE,
    rank_event,
    rank_event_json,
)
from handlers.tornado_internals import text_frame
from server.domain.increments import IncrementPolicy
from server.domain.rank_index import RankIndex
from server.domain.rank_watch import RankState, RankWatches, state_of
from server.domain.records import BoardRow
from server.domain.topk import rank_key
from server.store.sqlite import _COUNT_AHEAD, SqliteStore
from server.support.gc_tuning import tune_for_serving

REPO = Path(__file__).resolve().parents[1]
QUICK_PLAYERS = 20_000
CHECKED = 1_000
WINDOW = 5
PAGE = 100
DAY_MS = 86_400_000
EPOCH_MS = 1_767_225_600_000  # 2026-01-01 UTC: reached_ms from here over 90 days
NAME_CHARS = string.ascii_letters + string.digits

GOAL_LOAD_S = 10.0
GOAL_BYTES_PER_PLAYER = 512
GOAL_RANK_P99_US = 20.0
GOAL_AROUND_P99_US = 50.0
GOAL_PLAYERS = 1_000_000
STREAM_WINDOW = 2  # rows each side of a rank watcher (the example)
# A tick's budget at the default 100 ms broadcast interval (handlers/live/rank_stream.py).
RANK_TICK_BUDGET_S = max(0.1 * TICK_SHARE, MIN_TICK_BUDGET_S)


# --- the players ----------------------------------------------------------------------------


def generate(players: int, seed: int) -> list[BoardRow]:
    """``players`` rows, the same for the same seed.

    Scores: ``int(10 * (pareto(1.3) - 1))``: about half the players under 7, a long tail
    into the tens of thousands, so most scores are shared by many players (ties broken by
    ``reached_ms``, then user id)."""
    rng = random.Random(seed)
    pareto = rng.paretovariate
    randrange = rng.randrange
    choices = rng.choices
    span = 90 * DAY_MS
    rows = []
    for i in range(1, players + 1):
        name = "".join(choices(NAME_CHARS, k=randrange(8, 17)))
        score = int(10 * (pareto(1.3) - 1))
        rows.append(
            BoardRow(f"player-{i:07d}", name, score, EPOCH_MS + randrange(span), randrange(1, 41))
        )
    return rows


def newer(row: BoardRow, rng: random.Random, points: tuple[int, int] = (1, 50)) -> BoardRow:
    """The player's next write: a higher score (by ``points``, inclusive), reached later,
    one version on."""
    return BoardRow(
        row.user_id,
        row.username,
        row.score + rng.randint(*points),
        row.reached_ms + rng.randint(1, DAY_MS),
        row.v + 1,
    )


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


# --- timing ----------------------------------------------------------------------------------


def timer_overhead_ns(samples: int) -> int:
    """The median cost of one timed pair of ``perf_counter_ns`` calls around nothing."""
    clock = time.perf_counter_ns
    costs = []
    for _ in range(samples):
        t0 = clock()
        t1 = clock()
        costs.append(t1 - t0)
    costs.sort()
    return costs[len(costs) // 2]


def time_each(call: Callable[[str], object], args: Sequence[str], overhead_ns: int) -> list[int]:
    """Each call's ns (minus the timer's cost, at least 0), sorted."""
    clock = time.perf_counter_ns
    out = []
    for arg in args:
        t0 = clock()
        call(arg)
        t1 = clock()
        out.append(max(t1 - t0 - overhead_ns, 0))
    out.sort()
    return out


def pct(sorted_ns: Sequence[int], q: float) -> float:
    """The ``q`` quantile (nearest rank) of sorted ns, in µs."""
    index = min(len(sorted_ns) - 1, max(0, int(q * len(sorted_ns) + 0.5) - 1))
    return sorted_ns[index] / 1000


@dataclass
class Latency:
    name: str
    count: int
    p50_us: float
    p99_us: float
    max_us: float

    @classmethod
    def of(cls, name: str, sorted_ns: Sequence[int]) -> Latency:
        return cls(
            name, len(sorted_ns), pct(sorted_ns, 0.5), pct(sorted_ns, 0.99), pct(sorted_ns, 1)
        )

    def line(self) -> str:
        return (
            f"  {self.name:<28}{self.count:>9,}  p50 {self.p50_us:8.2f} µs  "
            f"p99 {self.p99_us:8.2f} µs  max {self.max_us:10.2f} µs"
        )


# --- the "before": the store's count-based rank ------------------------------------------------


@dataclass
class Before:
    players: int
    insert_s: float
    index_s: float
    note: str
    plan: str
    store: Latency
    direct: Latency
    agree: int
    compared: int


def fill_sqlite(path: str, rows: Sequence[BoardRow], budget_s: float) -> tuple[int, float, str]:
    """Insert ``rows`` (or as many as the budget allows) into the store's table, without its
    rank index (the store creates it when opened next). Returns (rows inserted, seconds, note)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("DROP INDEX IF EXISTS users_scores_rank_active")
        insert = (
            "INSERT INTO users_scores (user_id, username, score, v, reached_ms) VALUES (?,?,?,?,?)"
        )
        started = time.perf_counter()
        first = max(1, len(rows) // 20)
        conn.execute("BEGIN")
        conn.executemany(
            insert, ((r.user_id, r.username, r.score, r.v, r.reached_ms) for r in rows[:first])
        )
        projected = (time.perf_counter() - started) * len(rows) / first
        count, note = len(rows), ""
        if projected > budget_s:
            count = min(len(rows), max(first, int(first * budget_s / projected)))
            note = (
                f"the first {first:,} rows took {projected * first / len(rows):.1f} s "
                f"(projected {projected:.0f} s for all, past the {budget_s:g} s budget): "
                f"{count:,} rows used"
            )
        conn.executemany(
            insert, ((r.user_id, r.username, r.score, r.v, r.reached_ms) for r in rows[first:count])
        )
        conn.execute("COMMIT")
        return count, time.perf_counter() - started, note
    finally:
        conn.close()


async def measure_before(
    rows: Sequence[BoardRow], index: RankIndex, args: argparse.Namespace, overhead_ns: int
) -> Before:
    with tempfile.TemporaryDirectory(prefix="bench-ranks-") as tmp:
        path = os.path.join(tmp, "ranks.db")
        policy = IncrementPolicy(rate_limit_per_minute=0)
        store = SqliteStore(path, policy)
        await store.open()  # the schema
        await store.close()
        # Rows in user id order, as a store's primary key holds them.
        count, insert_s, note = fill_sqlite(path, rows, args.sqlite_budget)
        inserted = rows[:count]
        started = time.perf_counter()
        store = SqliteStore(path, policy)
        await store.open()  # creates users_scores_rank_active over the rows
        index_s = time.perf_counter() - started
        rng = random.Random(args.seed + 7)
        sample = [r.user_id for r in rng.sample(inserted, min(args.store_lookups, len(inserted)))]
        truth = {r.user_id: r for r in inserted}
        expected = sorted(inserted, key=rank_key)
        position = {r.user_id: i + 1 for i, r in enumerate(expected) if r.user_id in set(sample)}
        del expected
        clock = time.perf_counter_ns
        store_ns, agree = [], 0
        try:
            for user_id in sample:
                t0 = clock()
                rank = await store.rank(user_id)
                t1 = clock()
                store_ns.append(max(t1 - t0 - overhead_ns, 0))
                if rank == position[user_id] and (
                    count < len(rows) or rank == index.rank_of(user_id)
                ):
                    agree += 1
        finally:
            await store.close()
        conn = sqlite3.connect(path)
        try:
            row = truth[sample[0]]
            plan = " / ".join(
                str(r[-1])
                for r in conn.execute(
                    "EXPLAIN QUERY PLAN " + _COUNT_AHEAD, (row.score, row.reached_ms, row.user_id)
                )
            )

            def count_ahead(user_id: str) -> object:
                r = truth[user_id]
                return conn.execute(_COUNT_AHEAD, (r.score, r.reached_ms, r.user_id)).fetchone()

            direct_ns = time_each(count_ahead, sample, overhead_ns)
        finally:
            conn.close()
    store_ns.sort()
    return Before(
        count,
        insert_s,
        index_s,
        note,
        plan,
        Latency.of("store.rank (await)", store_ns),
        Latency.of("COUNT(*) query alone", direct_ns),
        agree,
        len(sample),
    )


# --- the run ---------------------------------------------------------------------------------


def code_version() -> str:
    return report.code_version(["server", "bench/ranks.py"])


def load_average() -> str:
    return report.load_average()


def header_lines(args: argparse.Namespace, argv: Sequence[str]) -> list[str]:
    cpu, mem = report.machine()
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return [
        f"command: python -m bench.ranks {shlex.join(argv)}".rstrip(),
        f"date: {now}; code: {code_version()}",
        f"machine: {cpu}, {os.cpu_count()} cores, {mem} RAM, {platform.system()} "
        f"{platform.release()}; load average {load_average()} at the start",
        f"python {platform.python_version()} ({sys.executable}), sortedcontainers "
        f"{sortedcontainers.__version__}, sqlite {sqlite3.sqlite_version}",
        f"players: {args.players:,} (seed {args.seed}); lookups {args.lookups:,}; "
        f"store lookups {args.store_lookups:,}",
    ]


@dataclass
class Loaded:
    """The rows and the index built from them, with what loading took."""

    rows: list[BoardRow]
    index: RankIndex
    load_s: float
    bytes_per_player: float


def load_phase(args: argparse.Namespace) -> Loaded:
    """Generate the players, build the index, read the memory it took; then the same rows by
    single ``apply`` calls, for comparison (after the memory reading: it allocates its own
    keys)."""
    n = args.players
    gc.collect()
    rss_start = rss_kb()
    started = time.perf_counter()
    rows = generate(n, args.seed)
    generate_s = time.perf_counter() - started
    rss_rows = rss_kb()
    started = time.perf_counter()
    index = RankIndex(rows)
    load_s = time.perf_counter() - started
    rss_index = rss_kb()
    bytes_per_player = (rss_index - rss_start) * 1024 / n
    print(f"\nplayers: {n:,} generated in {generate_s:.1f} s; {len(index):,} ranked")
    print(f"load: RankIndex(rows) in {load_s:.2f} s ({n / load_s:,.0f} players/s)")

    by_apply = RankIndex()
    first = max(1, n // 20)
    started = time.perf_counter()
    for row in rows[:first]:
        by_apply.apply(row)
    projected = (time.perf_counter() - started) * n / first
    if projected > args.apply_budget:
        print(
            f"load by {n:,} single apply calls: skipped (the first {first:,} took "
            f"{projected * first / n:.1f} s, projected {projected:.0f} s, past "
            f"{args.apply_budget:g} s)"
        )
    else:
        for row in rows[first:]:
            by_apply.apply(row)
        apply_s = time.perf_counter() - started
        print(
            f"load by {n:,} single apply calls: {apply_s:.2f} s ({n / apply_s:,.0f} players/s, "
            f"{apply_s / load_s:.1f}x the bulk build)"
        )
    del by_apply
    gc.collect()
    print(
        f"memory: VmRSS {rss_start / 1024:,.1f} MiB before the rows, {rss_rows / 1024:,.1f} MiB "
        f"with the rows, {rss_index / 1024:,.1f} MiB with the index: "
        f"{(rss_rows - rss_start) * 1024 / n:,.0f} bytes/player for the rows (ids, names, "
        f"ints), {(rss_index - rss_rows) * 1024 / n:,.0f} for the index's own structures, "
        f"{bytes_per_player:,.0f} bytes/player in all"
    )
    return Loaded(rows, index, load_s, bytes_per_player)


@dataclass
class Measured:
    """The timed calls on the loaded index, and the rows it should now hold."""

    rank: Latency
    around: Latency
    current: dict[str, BoardRow]
    overhead_ns: int


def reads_and_writes(args: argparse.Namespace, loaded: Loaded) -> Measured:
    """Time reads at random players and ranks, then updates of random players."""
    rows, index = loaded.rows, loaded.index
    n = len(rows)
    overhead_ns = timer_overhead_ns(args.lookups)
    print(f"\ntimer: a perf_counter_ns pair costs {overhead_ns} ns (median), subtracted from each")
    rng = random.Random(args.seed + 1)
    ids = [rows[rng.randrange(n)].user_id for _ in range(args.lookups)]
    ranks = [str(rng.randint(1, max(1, n - PAGE + 1))) for _ in range(args.lookups)]
    rank_lat = Latency.of("rank_of(id)", time_each(index.rank_of, ids, overhead_ns))
    around_lat = Latency.of(
        f"around(id, {WINDOW}, {WINDOW})",
        time_each(lambda u: index.around(u, WINDOW, WINDOW), ids, overhead_ns),
    )
    page_lat = Latency.of(
        f"page(rank, {PAGE})", time_each(lambda r: index.page(int(r), PAGE), ranks, overhead_ns)
    )
    at_lat = Latency.of("at(rank)", time_each(lambda r: index.at(int(r)), ranks, overhead_ns))

    # Newer rows for random players (some players more than once), built before the timing.
    current = {r.user_id: r for r in rows}
    updates = []
    for _ in range(args.lookups):
        user_id = ids[rng.randrange(len(ids))]
        row = newer(current[user_id], rng)
        current[user_id] = row
        updates.append(row)
    clock = time.perf_counter_ns
    apply_ns, changed = [], 0
    apply = index.apply
    for row in updates:
        t0 = clock()
        taken = apply(row)
        t1 = clock()
        apply_ns.append(max(t1 - t0 - overhead_ns, 0))
        changed += taken
    apply_ns.sort()
    print("reads and writes, each call timed alone:")
    for lat in (rank_lat, around_lat, page_lat, at_lat, Latency.of("apply(newer row)", apply_ns)):
        print(lat.line())
    print(f"  updates taken: {changed:,} of {len(updates):,}")
    return Measured(rank_lat, around_lat, current, overhead_ns)


def rank_stream_phase(
    args: argparse.Namespace, index: RankIndex, current: dict[str, BoardRow]
) -> None:
    """The live rank stream's cost per broadcast interval with ``--watchers`` watchers.

    Each interval: ``--moves`` random players' newer rows taken by the index (as
    ``LiveRanks.apply`` does, telling the watchers of each move), then what a tick does
    before writing to sockets: find the watchers the moves could have changed, compute
    them, and frame an event for each one whose state changed. Then the worst case, a ban
    of the leader (every rank below moves: every watcher computed and sent an event), and
    for comparison one pass computing every watcher (what a tick without the search would
    do every interval). ``current`` is kept up to date (the store phase reads it).
    """
    rng = random.Random(args.seed + 3)
    ids = list(current)
    watches: RankWatches[int] = RankWatches()
    for seat in range(args.watchers):
        watches.add(ids[rng.randrange(len(ids))], STREAM_WINDOW, seat, index)

    def take(row: BoardRow) -> None:
        held = index.get(row.user_id)
        if index.apply(row):
            watches.moved(row.user_id, None if held is None else rank_key(held))
        current[row.user_id] = row

    def tick() -> tuple[int, int, int]:
        started = time.perf_counter_ns()
        found = watches.found(index)
        total = len(index)
        events = 0
        for watch in found:
            change = watches.recompute(watch, index)
            if change is not None:
                text_frame(rank_event_json(change.state, change.previous, total))
                events += 1
        return time.perf_counter_ns() - started, len(found), events

    print(
        f"\nlive rank stream: {args.watchers:,} watchers (window ±{STREAM_WINDOW}), "
        f"{args.intervals} intervals of {args.moves} moves each; per interval: find the "
        "watchers, compute them, frame an event for each changed one (the socket writes "
        "are the fan-out's):"
    )
    budget_ms = 1000 * RANK_TICK_BUDGET_S
    for what, points in (("1 point each", (1, 1)), ("1 to 50 points each", (1, 50))):
        times, found, events = [], [], []
        for _ in range(args.intervals):
            for _ in range(args.moves):
                user_id = ids[rng.randrange(len(ids))]
                take(newer(current[user_id], rng, points))
            ns, n_found, n_events = tick()
            times.append(ns)
            found.append(n_found)
            events.append(n_events)
        times.sort()
        per_watcher_us = sum(times) / 1e3 / max(sum(found), 1)
        print(
            f"  moves of {what}: time p50 {pct(times, 0.5) / 1e3:,.2f} ms, p99 "
            f"{pct(times, 0.99) / 1e3:,.2f} ms, max {times[-1] / 1e6:,.2f} ms; watchers "
            f"computed: mean {statistics.mean(found):,.1f}, max {max(found):,}; events: mean "
            f"{statistics.mean(events):,.1f} ({per_watcher_us:.1f} µs per watcher computed)"
        )
        mean_ms = statistics.mean(times) / 1e6
        if mean_ms > budget_ms:
            print(
                f"    past a tick's budget ({budget_ms:g} ms of the default 100 ms interval): "
                f"each watcher's events come about every {mean_ms / budget_ms * 0.1:.1f} s"
            )
    # The worst case: the leader is banned, every watcher's rank moves.
    leader = index.at(1)
    held = index.get(leader.user_id)
    if index.remove(leader.user_id, leader.v + 1) and held is not None:
        watches.moved(leader.user_id, rank_key(held))
    ns, n_found, n_events = tick()
    print(
        f"  a ban of the leader: {n_found:,} watchers computed, {n_events:,} events, "
        f"{ns / 1e6:,.1f} ms ({ns / 1e3 / max(n_found, 1):.1f} µs each; written in 1 ms steps)"
    )
    back = BoardRow(leader.user_id, leader.username, leader.score, leader.reached_ms, leader.v + 2)
    take(back)
    tick()
    started = time.perf_counter_ns()
    states = [state_of(index, ids[seat % len(ids)], STREAM_WINDOW) for seat in range(args.watchers)]
    naive = time.perf_counter_ns() - started
    print_encoding_costs(states, len(index))
    print(
        f"  without the search (every watcher computed each interval): {naive / 1e6:,.1f} ms "
        f"per interval"
    )


def print_encoding_costs(states: Sequence[RankState], total: int) -> None:
    """The event's encoding: ``json.dumps`` of the dict, and the hand-written encoder the
    stream uses (``rank_event_json``), over the same states."""
    started = time.perf_counter_ns()
    for state in states:
        json.dumps(rank_event(state, 1, total), separators=(",", ":"), ensure_ascii=False)
    by_json = time.perf_counter_ns() - started
    started = time.perf_counter_ns()
    for state in states:
        rank_event_json(state, 1, total)
    by_hand = time.perf_counter_ns() - started
    print(
        f"  encoding an event: json.dumps {by_json / 1e3 / len(states):.2f} µs, "
        f"rank_event_json {by_hand / 1e3 / len(states):.2f} µs (the stream's)"
    )


def check_against_sorted(index: RankIndex, current: dict[str, BoardRow], seed: int) -> bool:
    """The index's rank and row at rank against a sorted list, for random players."""
    expected = sorted(current.values(), key=rank_key)
    checked = random.Random(seed + 2).sample(range(len(expected)), min(CHECKED, len(expected)))
    agree = sum(
        1
        for i in checked
        if index.rank_of(expected[i].user_id) == i + 1 and index.at(i + 1) == expected[i]
    )
    print(
        f"\nranks checked: {agree:,} of {len(checked):,} agree "
        f"(index vs sorted(rows, key=rank_key))"
    )
    return agree == len(checked)


def print_before(before: Before, rank_lat: Latency) -> None:
    print(
        f"\nbefore (count-based rank, SQLite): {before.players:,} rows inserted in "
        f"{before.insert_s:.1f} s, users_scores_rank_active built in {before.index_s:.1f} s"
    )
    if before.note:
        print(f"  {before.note}")
    print(f"  plan: {before.plan}")
    print(before.store.line())
    print(before.direct.line())
    print(f"  store ranks checked: {before.agree:,} of {before.compared:,} agree with the index")
    if rank_lat.p50_us:
        speedup = before.store.p50_us / rank_lat.p50_us
        print(f"  rank_of p50 is {speedup:,.0f}x faster than store.rank p50")


def print_goals(n: int, loaded: Loaded, measured: Measured) -> None:
    at_scale = "" if n >= GOAL_PLAYERS else f" (at {n:,} players, not the goal's 1,000,000)"
    rank_p99, around_p99 = measured.rank.p99_us, measured.around.p99_us
    for ok, text in (
        (loaded.load_s <= GOAL_LOAD_S, f"load <= {GOAL_LOAD_S:g} s: {loaded.load_s:.2f} s"),
        (
            loaded.bytes_per_player <= GOAL_BYTES_PER_PLAYER,
            f"memory <= {GOAL_BYTES_PER_PLAYER} bytes/player: {loaded.bytes_per_player:,.0f}",
        ),
        (rank_p99 <= GOAL_RANK_P99_US, f"rank p99 <= {GOAL_RANK_P99_US:g} µs: {rank_p99:.2f} µs"),
        (
            around_p99 <= GOAL_AROUND_P99_US,
            f"±{WINDOW} window p99 <= {GOAL_AROUND_P99_US:g} µs: {around_p99:.2f} µs",
        ),
    ):
        print(f"goal {text}{at_scale}: {'MET' if ok else 'NOT MET'}")


def run(args: argparse.Namespace) -> int:
    loaded = load_phase(args)
    tuning = tune_for_serving()
    print(
        f"gc: as a serving process: collected, {tuning.frozen_objects:,} objects frozen, "
        f"thresholds {tuning.thresholds}"
    )
    measured = reads_and_writes(args, loaded)
    if args.watchers:
        rank_stream_phase(args, loaded.index, measured.current)
    sorted_ok = check_against_sorted(loaded.index, measured.current, args.seed)
    # The store gets the rows after the updates, in user id order (as its primary key).
    rows = sorted(measured.current.values(), key=lambda r: r.user_id)
    measured.current = {}
    loaded.rows = []
    before = asyncio.run(measure_before(rows, loaded.index, args, measured.overhead_ns))
    print_before(before, measured.rank)
    print(f"\nload average {load_average()} at the end")
    print_goals(args.players, loaded, measured)
    problems = []
    if not sorted_ok:
        problems.append("the index disagrees with a sorted list")
    if before.agree != before.compared:
        problems.append(
            f"store vs index: {before.compared - before.agree} of {before.compared} disagree"
        )
    if problems:
        print("\nFAILED: " + "; ".join(problems))
        return 1
    print("\nOK: the index agrees with a sorted list and with the store's count")
    return 0


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ranks", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--players", type=int, default=GOAL_PLAYERS)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_PLAYERS:,} players")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--lookups", type=int, default=100_000, help="timed calls of each kind")
    parser.add_argument("--store-lookups", type=int, default=200)
    parser.add_argument("--apply-budget", type=float, default=60.0, help="s, apply-by-apply load")
    parser.add_argument("--sqlite-budget", type=float, default=60.0, help="s, SQLite insert")
    parser.add_argument(
        "--watchers", type=int, default=10_000, help="rank stream watchers (0: no such phase)"
    )
    parser.add_argument("--intervals", type=int, default=200, help="rank stream intervals")
    parser.add_argument("--moves", type=int, default=50, help="moves per interval")
    args = parser.parse_args(argv)
    if args.quick:
        args.players = QUICK_PLAYERS
        args.lookups = min(args.lookups, QUICK_PLAYERS)
        args.watchers, args.intervals = min(args.watchers, 1_000), min(args.intervals, 20)
    if args.players < PAGE:
        parser.error(f"--players must be at least {PAGE}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    print("\n".join(header_lines(args, argv)), flush=True)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
