"""Memory and disk per player per period of a boards file's board (issue 14).

    python -m bench.board_memory [--players 1000000] [--periods 3]

A pod keeps, per board and period, the current season's rank index in memory
(``actors/boards.py``): one row per player who scored in the season. This builds those
indexes for ``--players`` players in each of ``--periods`` periods, as a pod loading them
would (rows as the store pages them, one sort per index), and reports the memory they take
(``tracemalloc``: every Python allocation, the rows and the sorted lists), per player per
period. It then writes the same standings into the embedded store's tables
(``server/store/sqlite_boards.py``: one row per (board, period, season, player) and one
per (board, player)) in a temporary file and reports the file's size per player per period.

Exit status 0; the figures go to ``docs/benchmarks.md`` with the command beside them.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sqlite3
import tempfile
import time
import tracemalloc
from collections.abc import Sequence

from server.domain.rank_index import RankIndex
from server.domain.records import BoardRow
from server.store.sqlite_boards import BOARDS_SCHEMA

SEASONS = ("2026-12-04", "2026-11-30", "all")  # a daily, a weekly and the all_time season
PERIODS = ("daily", "weekly", "all_time")


def rows(players: int, seed: int) -> list[BoardRow]:
    """Rows as a store page gives them: ids in order, scores and times at random."""
    draw = random.Random(seed)
    return [
        BoardRow(
            f"player-{i:07d}", f"Player {i}", draw.randrange(1, 10**6), draw.randrange(10**12), 1
        )
        for i in range(players)
    ]


def index_memory(players: int, periods: int) -> tuple[float, float]:
    """Bytes per player per period of ``periods`` rank indexes, and the build time in s."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    started = time.perf_counter()
    indexes = [RankIndex(rows(players, seed)) for seed in range(periods)]
    elapsed = time.perf_counter() - started
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert all(len(index) == players for index in indexes)
    return used / (players * periods), elapsed


def store_size(players: int, periods: int) -> tuple[float, float]:
    """Bytes of the SQLite file per player per period, and the write time in s."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "boards.db")
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = OFF")
        conn.executescript(BOARDS_SCHEMA)
        started = time.perf_counter()
        conn.execute("BEGIN")
        for p in range(periods):
            period, season = PERIODS[p % len(PERIODS)], SEASONS[p % len(SEASONS)]
            conn.executemany(
                "INSERT INTO board_standings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    (
                        "kills",
                        f"{period}{p}",
                        season,
                        r.user_id,
                        r.username,
                        r.score,
                        r.reached_ms,
                        1,
                        0,
                    )
                    for r in rows(players, p)
                ),
            )
        conn.executemany(
            "INSERT INTO board_players VALUES (?, ?, ?, ?, '[]', '[]')",
            (("kills", f"player-{i:07d}", f"Player {i}", 1) for i in range(players)),
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("VACUUM")
        elapsed = time.perf_counter() - started
        conn.close()
        return os.path.getsize(path) / (players * periods), elapsed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.board_memory", description=__doc__)
    parser.add_argument("--players", type=int, default=1_000_000)
    parser.add_argument("--periods", type=int, default=3)
    args = parser.parse_args(argv)
    print(
        f"command: python -m bench.board_memory --players {args.players} --periods {args.periods}"
    )
    per_row, built_s = index_memory(args.players, args.periods)
    print(
        f"rank indexes in memory: {per_row:,.0f} B per player per period "
        f"({per_row * args.players * args.periods / 2**20:,.0f} MiB for {args.periods} periods; "
        f"built in {built_s:.1f} s)"
    )
    on_disk, written_s = store_size(args.players, args.periods)
    print(
        f"SQLite file: {on_disk:,.0f} B per player per period "
        f"({on_disk * args.players * args.periods / 2**20:,.0f} MiB; written in {written_s:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
