"""The event loop's lag: how late it runs a timer, i.e. how long a request may wait.

One small task sleeps ``interval_s`` at a time and reports how much later than asked it
woke up. Anything that holds the event loop (a long broadcast step, a garbage
collection, a slow callback) shows up here, whatever caused it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from server.support.tasks import cancel_and_wait

SAMPLE_INTERVAL_S = 0.1


class LoopLagMonitor:
    """Reports the lateness of a timer to ``observe`` every ``interval_s``.

    Call :meth:`start` on the event loop; :meth:`stop` (idempotent) ends its task.
    """

    def __init__(
        self, observe: Callable[[float], None], *, interval_s: float = SAMPLE_INTERVAL_S
    ) -> None:
        self._observe = observe
        self._interval = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start sampling."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag")

    async def stop(self) -> None:
        """Stop sampling and wait for the task to end."""
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self._interval
            await asyncio.sleep(self._interval)
            self._observe(max(0.0, loop.time() - due))
