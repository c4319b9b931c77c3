"""When to stop sending writes to a store that is down, and when to try it again.

A circuit breaker, pure: the caller passes the time in and reports what happened; the
breaker answers whether a call may go to the store.

- **closed**: every call goes through.
- **open**: calls are refused at once (the API answers 503 ``database_unavailable`` with
  ``Retry-After``) until ``reopen_at``.
- **half-open**: past ``reopen_at``, one call (the trial) goes through and the others are
  refused until it ends; its success closes the breaker, its failure opens it again.

A background probe of the store reports as well: a passing probe closes the breaker
from any state, a failing one opens it. The breaker starts open with no reopen time:
nothing is known of the store until it first passed a probe.
"""

from __future__ import annotations

import enum
import math


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Breaker:
    """The breaker's state.

    Args:
        open_s: how long a failure keeps calls refused before one trial may go.
    """

    __slots__ = ("closed", "open_s", "proven", "reopen_at", "state")

    def __init__(self, open_s: float) -> None:
        if open_s <= 0:
            raise ValueError("open_s must be positive")
        self.open_s = open_s
        self.state = BreakerState.OPEN
        self.reopen_at = math.inf
        # The one question asked per request, as a plain attribute.
        self.closed = False
        self.proven = False  # the store answered once: failures may be retried

    def refusing(self, now: float) -> bool:
        """Whether a call made at ``now`` would be refused. Takes no trial: a cheap early
        check before queueing work that would only reach :meth:`admit` later."""
        if self.closed:
            return False
        if self.state is BreakerState.HALF_OPEN:
            return True
        return now < self.reopen_at

    def admit(self, now: float) -> bool:
        """Whether a call may go to the store at ``now``.

        Past ``reopen_at`` the first caller is admitted as the trial: it must report how
        the call ended (:meth:`succeeded`, :meth:`failed` or :meth:`abandoned`).
        """
        if self.closed:
            return True
        if self.state is BreakerState.OPEN and now >= self.reopen_at:
            self.state = BreakerState.HALF_OPEN
            return True
        return False

    def succeeded(self) -> None:
        """The store answered (a call or a probe): close."""
        self.state = BreakerState.CLOSED
        self.closed = True
        self.proven = True

    def failed(self, now: float) -> None:
        """The store is unavailable (a call or a probe said so): open for ``open_s``.
        Before the store ever answered, only a passing probe opens the way."""
        if not self.proven:
            return
        self.state = BreakerState.OPEN
        self.closed = False
        self.reopen_at = now + self.open_s

    def abandoned(self, now: float) -> None:
        """A call ended saying nothing of the store (it timed out, it was cancelled). If
        it was the trial, the next call may be the trial."""
        if self.state is BreakerState.HALF_OPEN:
            self.state = BreakerState.OPEN
            self.reopen_at = now

    def retry_after_s(self, now: float) -> int:
        """Whole seconds a refused caller should wait: until ``reopen_at``, at least 1 and
        at most ``open_s`` rounded up."""
        wait = self.reopen_at - now if self.state is BreakerState.OPEN else self.open_s
        return max(1, math.ceil(min(wait, self.open_s)))
