"""What the outage guards add to each update, measured alone (no HTTP, no store).

    python -m bench.guards [--calls 300000] [--rounds 5]
    python -m bench.guards --quick                      # the smoke test

Each update now passes three guards (issue 11): the early "is the store known to be
down?" check, a deadline on the ask of its user's actor, and the store guard (a breaker
around the adapter). Timed here against the same work without them, on one event loop:

- ``ask``: a reply future resolved on the next loop iteration and awaited (what an
  actor's answer costs a handler), then the same with ``AskDeadlines.watch/forget``
  (the deadline as built) and with ``asyncio.timeout`` around the await (the obvious
  alternative: a timer pushed onto and cancelled off the loop's heap per request);
- ``store``: an ``apply_increments`` of a store that answers at once, called directly
  and through ``GuardedStore`` with its breaker closed, plus the ``refusing()`` check.

Reports the best round's microseconds per call and the difference each guard makes.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from actors.deadlines import AskDeadlines
from server.domain.records import IncrementCommand
from server.store.changes import NoOtherWriters
from server.store.guard import GuardedStore

CMD = IncrementCommand("user", "User", 1, 0, None)


class InstantStore:
    """A store whose every write answers at once (what is left is the calling cost)."""

    changes = NoOtherWriters()

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def ping(self) -> bool:
        return True

    async def apply_increments(self, cmds: list[IncrementCommand], known: Any = None) -> Any:
        return cmds


async def per_call_us(call: Callable[[], Awaitable[Any]], calls: int, rounds: int) -> float:
    """The best round's microseconds per ``await call()``."""
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            await call()
        best = min(best, (time.perf_counter() - started) / calls * 1e6)
    return best


async def measure(calls: int, rounds: int) -> list[tuple[str, float]]:
    loop = asyncio.get_running_loop()
    deadlines = AskDeadlines(10)

    async def ask() -> Any:
        reply = loop.create_future()
        loop.call_soon(reply.set_result, 1)
        return await reply

    async def ask_with_deadline() -> Any:
        reply = loop.create_future()
        loop.call_soon(reply.set_result, 1)
        deadlines.watch(reply)
        try:
            return await reply
        finally:
            deadlines.forget(reply)

    async def ask_with_timeout() -> Any:
        reply = loop.create_future()
        loop.call_soon(reply.set_result, 1)
        async with asyncio.timeout(10):
            return await reply

    inner = InstantStore()
    guarded = GuardedStore(inner, probe_interval_s=1)
    guarded.breaker.succeeded()  # as after the first passing probe

    async def direct_write() -> Any:
        return await inner.apply_increments([CMD])

    async def guarded_write() -> Any:
        if guarded.refusing():
            raise AssertionError("closed")
        return await guarded.apply_increments([CMD])

    results = []
    for name, call in (
        ("ask", ask),
        ("ask + AskDeadlines", ask_with_deadline),
        ("ask + asyncio.timeout", ask_with_timeout),
        ("store write, direct", direct_write),
        ("store write, refusing() + GuardedStore", guarded_write),
    ):
        results.append((name, await per_call_us(call, calls, rounds)))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1 round of 10,000 calls")
    args = parser.parse_args()
    calls, rounds = (10_000, 1) if args.quick else (args.calls, args.rounds)
    results = dict(asyncio.run(measure(calls, rounds)))
    print(f"calls: {calls} x {rounds} rounds (best round)")
    for name, us in results.items():
        print(f"{name:40s} {us:6.2f} us")
    print(f"deadline as built adds     {results['ask + AskDeadlines'] - results['ask']:+.2f} us")
    print(f"asyncio.timeout would add  {results['ask + asyncio.timeout'] - results['ask']:+.2f} us")
    guard = results["store write, refusing() + GuardedStore"] - results["store write, direct"]
    print(f"store guard adds           {guard:+.2f} us")


if __name__ == "__main__":
    main()
