"""The HTTP requests in flight, and whether the server is draining them.

The lifecycle (``server/lifecycle.py``) owns one :class:`InFlight` per server and hands
it to every handler through its route kwargs: handlers count each request in it, refuse
updates and new WebSockets while it drains, and ``/readyz`` fails then; the shutdown
waits on it before it stops the actors.
"""

from __future__ import annotations

import asyncio


class InFlight:
    """Counts the HTTP requests being answered; :attr:`draining` once shutdown began."""

    __slots__ = ("_count", "_none", "draining")

    def __init__(self) -> None:
        #: Set by the shutdown once the server stopped accepting connections: updates
        #: arriving on kept-alive connections are then refused, so every applied
        #: increment is one that was in flight before, and gets answered.
        self.draining = False
        self._count = 0
        self._none = asyncio.Event()
        self._none.set()

    def __len__(self) -> int:
        """How many requests are in flight."""
        return self._count

    def started(self) -> None:
        """Count a request as in flight (each handler once, when it is built)."""
        self._count += 1
        self._none.clear()

    def finished(self) -> None:
        """Count a request as answered, or abandoned by its client (each handler once)."""
        self._count -= 1
        if self._count == 0:
            self._none.set()

    async def all_finished(self) -> None:
        """Return once no request is in flight."""
        await self._none.wait()
