"""A deadline on every ask of a user actor, without a timer per ask.

A request waits on its user's actor, which may wait on a store that no longer answers.
:class:`AskDeadlines` fails each watched reply still pending ``timeout_s`` after it was
watched (to within a sweep period): one sweeper task for every request in flight. All
asks share one timeout, so the oldest is always first in line. Measured against
``asyncio.timeout`` around each ask: about 0.3-0.4 µs a request instead of 4.5-4.7 µs (a
timer pushed onto and cancelled off the event loop's heap; ``python -m bench.guards``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from server.support.tasks import cancel_and_wait


class AskTimedOut(Exception):
    """No answer within the deadline. The message may still be processed later: its
    outcome is unknown."""


class AskDeadlines:
    """Fails replies not answered in time.

    Args:
        timeout_s: how long a watched reply may stay pending.
        clock: monotonic seconds.
    """

    def __init__(self, timeout_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.timeout_s = timeout_s
        self.period_s = min(1.0, timeout_s / 4)
        self._clock = clock
        self._pending: dict[asyncio.Future[Any], float] = {}  # oldest first
        self._sweeper: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._pending)

    def watch(self, reply: asyncio.Future[Any]) -> None:
        """Fail ``reply`` with :class:`AskTimedOut` if it is still pending after the
        timeout. Call :meth:`forget` once it is answered."""
        self._pending[reply] = self._clock() + self.timeout_s

    def forget(self, reply: asyncio.Future[Any]) -> None:
        """Stop watching ``reply`` (answered, failed or timed out)."""
        self._pending.pop(reply, None)

    def expire(self, now: float) -> int:
        """Fail every watched reply whose deadline is not after ``now``; return how many
        were still pending."""
        pending = self._pending
        failed = 0
        while pending:
            reply, deadline = next(iter(pending.items()))
            if deadline > now:
                break
            del pending[reply]
            if not reply.done():
                reply.set_exception(AskTimedOut(f"no answer within {self.timeout_s:g} s"))
                failed += 1
        return failed

    def start(self) -> None:
        """Start the sweeper (every ``period_s``)."""
        if self._sweeper is not None:
            raise RuntimeError("the deadline sweeper already started")
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="ask-deadlines")

    async def stop(self) -> None:
        """Stop the sweeper. Idempotent."""
        sweeper, self._sweeper = self._sweeper, None
        await cancel_and_wait(sweeper)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.period_s)
            self.expire(self._clock())
