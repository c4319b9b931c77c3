"""Store micro-benchmark: increments per second through a store adapter, no HTTP.

    python -m bench.store [--users 1000] [--increments 20000] [--concurrency 1 64]

Drives ``apply_increments`` directly, one increment a call: with concurrency 1 every
increment is its own transaction; with more, the SQLite writer thread commits whatever is
queued together (group commit). Reports increments/s and µs per increment for each synchronous mode.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time

from server.domain.increments import IncrementPolicy
from server.domain.records import IncrementCommand
from server.store.sqlite import SqliteStore


async def run(path: str, synchronous: str, users: int, increments: int, concurrency: int) -> float:
    store = SqliteStore(path, IncrementPolicy(rate_limit_per_minute=0), synchronous=synchronous)
    await store.open()
    counter = iter(range(increments))

    async def worker() -> None:
        for i in counter:
            await store.apply_increments([IncrementCommand(f"user-{i % users}", "u", 1, i)])

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    top = await store.top(10)
    await store.close()
    assert sum(1 for _ in top) == min(10, users)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--increments", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    args = parser.parse_args()
    print(f"users={args.users} increments={args.increments} cpus={os.cpu_count()}")
    for synchronous in ("NORMAL", "FULL"):
        for concurrency in args.concurrency:
            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "bench.db")
                elapsed = asyncio.run(
                    run(path, synchronous, args.users, args.increments, concurrency)
                )
            rate = args.increments / elapsed
            print(
                f"synchronous={synchronous:6} concurrency={concurrency:3}: "
                f"{rate:8.0f} increments/s, {1e6 / rate:6.1f} µs each"
            )


if __name__ == "__main__":
    main()
