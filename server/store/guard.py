"""A store that refuses writes at once while it is known to be down, and probes it.

:class:`GuardedStore` implements the :class:`~server.store.port.ScoreStore` port around
any adapter. A :class:`~server.store.breaker.Breaker` decides whether a write goes to the
store: a :class:`~server.store.port.StoreUnavailable` from any call, or a failing
background probe (``store.ping()``: SQLite commits a one-row write, MongoDB pings the
primary), opens it, so the writes queued behind an outage fail in microseconds instead of
one store timeout each; a passing probe (or a successful trial write) closes it. Reads
(``top``, ``rank``, ``get_score``, ``ranked_rows``) are never refused: the board loads and
refills from a store that reads but cannot write (a full disk, a read-only file), and their
``StoreUnavailable`` opens the breaker as well.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from server.domain.admin import AdminChange
from server.domain.board_writes import BoardCommand, BoardDecision, BoardRecord, BoardRules
from server.domain.records import (
    BoardRow,
    Decision,
    IncrementCommand,
    StoredUser,
    UserRecord,
)
from server.store.breaker import Breaker
from server.store.changes import ChangeFeed
from server.store.port import ScoreStore, StoreError, StoreTimeout, StoreUnavailable
from server.support.log_throttle import LogThrottle, log_throttled
from server.support.tasks import cancel_and_wait

log = logging.getLogger(__name__)

T = TypeVar("T")


class GuardedStore:
    """The store port around ``inner``, with a breaker and a background probe.

    Args:
        inner: the adapter. :meth:`open` and :meth:`close` open and close it.
        probe_interval_s: time between two probes; also how long a failure keeps
            writes refused before one may try again.
        clock: monotonic seconds.
    """

    def __init__(
        self,
        inner: ScoreStore,
        *,
        probe_interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.breaker = Breaker(probe_interval_s)
        self.probe_interval_s = probe_interval_s
        self._clock = clock
        # When the store last passed a probe (monotonic); None: never.
        self.last_probe_ok: float | None = None
        self._passing = False  # the latest probe passed
        self._prober: asyncio.Task[None] | None = None
        self._throttle = LogThrottle()

    @property
    def changes(self) -> ChangeFeed:
        return self.inner.changes

    # --- what the API layer asks -------------------------------------------------------

    def refusing(self) -> bool:
        """Whether a write asked for now would be refused (no trial taken): the early
        check a request makes before it queues behind its user's other requests."""
        return not self.breaker.closed and self.breaker.refusing(self._clock())

    def ok_at(self) -> float | None:
        """When the store was last known well (monotonic; now while its latest probe
        passed); ``None``: it never passed one."""
        return self._clock() if self._passing else self.last_probe_ok

    def retry_after_s(self) -> int:
        """Seconds a client refused for an unavailable store should wait."""
        return self.breaker.retry_after_s(self._clock())

    # --- lifecycle and probe -----------------------------------------------------------

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        """Stop probing, then close the adapter. Idempotent."""
        prober, self._prober = self._prober, None
        await cancel_and_wait(prober)
        await self.inner.close()

    async def ping(self) -> bool:
        return await self.inner.ping()

    async def probe(self) -> bool:
        """Probe the store once and tell the breaker; return whether it passed."""
        ok = await self.inner.ping()
        now = self._clock()
        self._passing = ok
        if ok:
            self.last_probe_ok = now
            if self.breaker.proven and not self.breaker.closed:
                log.info("the store passed its probe: writes go to it again")
            self.breaker.succeeded()
        else:
            log_throttled(
                log, self._throttle, logging.WARNING, "the store failed its probe; writes refused"
            )
            self.breaker.failed(now)
        return ok

    def start_probing(self) -> None:
        """Probe every ``probe_interval_s`` until :meth:`close`."""
        if self._prober is not None:
            raise RuntimeError("the store probe already started")
        self._prober = asyncio.get_running_loop().create_task(self._probe_loop(), name="probe")

    async def _probe_loop(self) -> None:
        while True:
            await asyncio.sleep(self.probe_interval_s)
            await self.probe()

    # --- writes: refused while the breaker is open -------------------------------------

    async def apply_increments(
        self, cmds: list[IncrementCommand], known: UserRecord | None = None
    ) -> list[Decision]:
        if self.breaker.closed:  # the hot path: one attribute read
            try:
                return await self.inner.apply_increments(cmds, known)
            except StoreUnavailable:
                self.breaker.failed(self._clock())
                raise
        return await self._trial(lambda: self.inner.apply_increments(cmds, known))

    async def apply_admin(
        self, user_id: str, change: AdminChange, blank: UserRecord | None = None
    ) -> UserRecord | None:
        return await self._write(lambda: self.inner.apply_admin(user_id, change, blank))

    async def apply_board_writes(
        self, rules: BoardRules, cmds: list[BoardCommand], known: BoardRecord | None = None
    ) -> list[BoardDecision]:
        return await self._write(lambda: self.inner.apply_board_writes(rules, cmds, known))

    async def reset_board_standing(
        self, rules: BoardRules, user_id: str, period: str, season: str
    ) -> BoardRecord | None:
        return await self._write(
            lambda: self.inner.reset_board_standing(rules, user_id, period, season)
        )

    async def retire_seasons(self, board: str, period: str, before_ms: int, limit: int) -> int:
        return await self._write(lambda: self.inner.retire_seasons(board, period, before_ms, limit))

    async def expire_spent_actions(self, now_ms: int, limit: int) -> int:
        return await self._write(lambda: self.inner.expire_spent_actions(now_ms, limit))

    async def _write(self, call: Callable[[], Awaitable[T]]) -> T:
        """A write: refused while the breaker is open, its outcome counted."""
        if self.breaker.closed:
            try:
                return await call()
            except StoreUnavailable:
                self.breaker.failed(self._clock())
                raise
        return await self._trial(call)

    async def _trial(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run a write while the breaker is not closed: refused, or admitted as the trial."""
        if not self.breaker.admit(self._clock()):
            raise StoreUnavailable("the score store is unavailable (recent failures)")
        try:
            result = await call()
        except StoreUnavailable:
            self.breaker.failed(self._clock())
            raise
        except StoreTimeout:
            self.breaker.abandoned(self._clock())
            raise
        except StoreError:
            self.breaker.succeeded()  # it answered: the failure is not the outage's
            raise
        except BaseException:
            self.breaker.abandoned(self._clock())
            raise
        self.breaker.succeeded()
        return result

    # --- reads: never refused ----------------------------------------------------------

    async def top(self, limit: int) -> list[BoardRow]:
        return await self._read(self.inner.top(limit))

    async def rank(self, user_id: str) -> int | None:
        return await self._read(self.inner.rank(user_id))

    async def get_score(self, user_id: str) -> BoardRow | None:
        return await self._read(self.inner.get_score(user_id))

    async def get_user(self, user_id: str) -> StoredUser | None:
        return await self._read(self.inner.get_user(user_id))

    async def ranked_rows(self, after_user_id: str | None, limit: int) -> list[BoardRow]:
        return await self._read(self.inner.ranked_rows(after_user_id, limit))

    async def get_board_record(self, rules: BoardRules, user_id: str) -> BoardRecord | None:
        return await self._read(self.inner.get_board_record(rules, user_id))

    async def banned_users(self) -> list[str]:
        return await self._read(self.inner.banned_users())

    async def season_rows(
        self, board: str, period: str, season: str, after_user_id: str | None, limit: int
    ) -> list[BoardRow]:
        return await self._read(self.inner.season_rows(board, period, season, after_user_id, limit))

    async def _read(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except StoreUnavailable:
            self.breaker.failed(self._clock())
            raise
