"""The running service: store, actors, token verifier and metrics, wired together.

:class:`Service` is what handlers receive (through route kwargs); it owns the lifecycle
of everything below the HTTP layer: :meth:`start` connects to the store in the
background (opens it, opens the change feed, loads the leaderboard, retrying while the
store is unavailable), :meth:`stop` drains every mailbox into the store, then closes it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

from pymongo import AsyncMongoClient

from actors.deadlines import AskDeadlines
from actors.follower import BASE_BACKOFF_S, MAX_BACKOFF_S, FeedFollower, backoff_delay
from actors.leaderboard import LeaderboardActor
from actors.user import UserRegistry
from handlers.live.addresses import OpenPerAddress
from handlers.live.fanout import Fanout
from server.domain.actions import ActionVerifier
from server.domain.increments import IncrementPolicy
from server.domain.origins import AllowedOrigins
from server.domain.throttle import FailedAuthThrottle, parse_networks
from server.domain.tokens import TokenVerifier
from server.readiness import not_ready_reason
from server.settings import Settings
from server.store.changes import LocalChangeFeed
from server.store.guard import GuardedStore
from server.store.mongodb import MongoStore
from server.store.port import ScoreStore, StoreUnavailable
from server.store.sqlite import SqliteStore
from server.support.log_throttle import LogThrottle, error_key, log_throttled
from server.support.loop_lag import LoopLagMonitor
from server.support.metrics import Metrics
from server.support.tasks import cancel_and_wait

log = logging.getLogger(__name__)


def wall_clock_ms() -> int:
    """Milliseconds since the Unix epoch: the time passed into every increment."""
    return time.time_ns() // 1_000_000


def create_store(settings: Settings, *, feed: LocalChangeFeed | None = None) -> ScoreStore:
    """The store the settings ask for: MongoDB when a URI is set, else embedded SQLite.

    ``feed``: for SQLite, a change feed shared with other stores on the same file (several
    app instances in one process); MongoDB always uses its change stream.
    """
    policy = IncrementPolicy(rate_limit_per_minute=settings.rate_limit_per_minute)
    if settings.mongodb_uri is not None:
        # timeoutMS: every operation, the wait for the majority included, has a deadline
        # (and overrides wTimeoutMS/socketTimeoutMS); server selection stops at it too.
        client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
            settings.mongodb_uri,
            w="majority",
            tz_aware=True,
            appname="scoreboard",
            timeoutMS=round(settings.store_timeout_s * 1000),
        )
        return MongoStore(
            client[settings.mongodb_db],
            policy,
            client=client,
            timeout_s=settings.store_timeout_s,
        )
    return SqliteStore(
        settings.sqlite_path, policy, synchronous=settings.sqlite_synchronous, feed=feed
    )


class Service:
    """Everything a handler needs. Build it, ``await start()``, serve, ``await stop()``.

    Args:
        settings: the validated settings.
        store: the store adapter; :meth:`start` opens it and :meth:`stop` closes it.
            Everything here uses it through a :class:`GuardedStore` (:attr:`store`).
        jwt_key: the secret or public key tokens are checked with.
        clock_ms: wall-clock time in milliseconds, passed into every increment.
    """

    def __init__(
        self,
        settings: Settings,
        store: ScoreStore,
        jwt_key: str,
        *,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        self.settings = settings
        self.store = GuardedStore(store, probe_interval_s=settings.store_probe_interval_s)
        self.clock_ms = clock_ms
        self.metrics = Metrics()
        self.verifier = TokenVerifier(
            jwt_key,
            settings.jwt_algorithms,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            leeway_s=settings.jwt_leeway_s,
        )
        self.origins = AllowedOrigins(settings.allowed_origins)
        self.trusted_proxies = parse_networks(settings.trusted_proxies)
        self.auth_throttle = FailedAuthThrottle(settings.auth_failures_per_minute)
        self.actions = (
            ActionVerifier(
                settings.action_secret,
                dict(settings.action_points),
                leeway_s=settings.jwt_leeway_s,
                max_ttl_s=settings.action_max_ttl_s,
            )
            if settings.action_secret
            else None
        )
        self.leaderboard = LeaderboardActor(
            self.store,
            settings.top_n,
            settings.broadcast_interval_ms / 1000,
            history_size=settings.ws_history_size,
        )
        self.fanout = Fanout(
            self.leaderboard,
            self.metrics,
            max_buffer_bytes=settings.ws_max_buffer_bytes,
            slow_timeout_s=settings.ws_slow_client_timeout_s,
        )
        self.users = UserRegistry(
            self.store,
            self.leaderboard,
            mailbox_size=settings.mailbox_size,
            idle_s=settings.user_idle_s,
            max_actors=settings.max_user_actors,
            on_displaced=self.metrics.user_actors_displaced.inc,
        )
        self.ws_addresses = OpenPerAddress(settings.ws_max_per_address)
        self.loop_lag = LoopLagMonitor(self.metrics.event_loop_lag.observe)
        self.follower = FeedFollower(
            self.store.changes,
            self.leaderboard,
            self.metrics,
            on_version=self.users.saw_version,
            on_reload=self.users.forget_known,
        )
        self.metrics.track(
            user_actors=lambda: len(self.users),
            mailbox_depth=self.users.mailbox_depth,
            leaderboard_version=lambda: self.leaderboard.view.version,
            store_available=lambda: float(self.store.breaker.closed),
        )
        self.ask_deadlines = AskDeadlines(settings.update_timeout_s)
        self._connecting: asyncio.Task[None] | None = None
        self._tried = asyncio.Event()  # the first attempt to reach the store ended
        # Repeated identical log lines of this service: one per interval, with a count.
        self.log_throttle = LogThrottle()
        self.draining = False
        self._in_flight = 0
        self._no_requests = asyncio.Event()
        self._no_requests.set()

    def request_started(self) -> None:
        """Count an HTTP request in flight (handlers call this in ``prepare``)."""
        self._in_flight += 1
        self._no_requests.clear()

    def request_finished(self) -> None:
        """Count an HTTP request as answered (handlers call this in ``on_finish``)."""
        self._in_flight -= 1
        if self._in_flight == 0:
            self._no_requests.set()

    async def requests_done(self) -> None:
        """Return once no HTTP request is in flight."""
        await self._no_requests.wait()

    async def start(self) -> None:
        """Start what needs no store, and connect to the store in the background.

        Until connected, updates answer 503 ``database_unavailable``, reads and
        ``/readyz`` 503 ``not_ready``. :meth:`started` says when it is done, or why it
        cannot be.
        """
        if self._connecting is not None:
            raise RuntimeError("the service already started")
        self.fanout.start()
        self.users.start()
        self.ask_deadlines.start()
        self.loop_lag.start()
        self._connecting = asyncio.get_running_loop().create_task(
            self._connect(), name="store-connect"
        )

    async def first_attempt(self) -> None:
        """Return once the first attempt to reach the store ended: connected, or retrying
        in the background (the store is unavailable).

        Raises:
            StoreError: the store cannot be used (see :meth:`started`).
        """
        task = self._connecting
        if task is None:
            raise RuntimeError("the service was not started")
        tried = asyncio.get_running_loop().create_task(self._tried.wait())
        try:
            await asyncio.wait({task, tried}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_and_wait(tried)
        if task.done():
            task.result()

    async def started(self) -> None:
        """Return once the store is open and the leaderboard loaded and running.

        Cancelling the caller does not cancel the connection.

        Raises:
            StoreError: the store cannot be used (anything but ``StoreUnavailable``, which
                is retried): the process must exit.
        """
        task = self._connecting
        if task is None:
            raise RuntimeError("the service was not started")
        await asyncio.wait({task})
        task.result()

    async def _connect(self) -> None:
        """Open the store and the change feed, load the top K (the feed first, so no
        write falls between them), retrying with jittered exponential backoff while the
        store is unavailable; then start the actors and the store's probe."""
        opened = False
        attempt = 0
        while True:
            try:
                if not opened:
                    await self.store.open()
                    opened = True
                await self.follower.open()
                # Writes wait for a passing probe: a store that reads but cannot write
                # (a read-only or full SQLite file) serves its board, refuses updates.
                await self.store.probe()
                await self.leaderboard.load()
                break
            except StoreUnavailable as exc:
                log_throttled(
                    log,
                    self.log_throttle,
                    logging.WARNING,
                    "the store is unavailable; retrying: %s",
                    exc,
                    key=error_key(exc),
                )
            self._tried.set()
            delay = backoff_delay(attempt, BASE_BACKOFF_S, MAX_BACKOFF_S, random.random())
            await asyncio.sleep(delay)
            attempt += 1
        # Loaded and started in one step (no await between): a read that finds the
        # board loaded finds every part of the service running.
        self.leaderboard.start()
        self.follower.start()
        self.store.start_probing()
        self._tried.set()
        log.info("store connected", extra={"attempts": attempt + 1})

    def not_ready_reason(self) -> str | None:
        """Why ``/readyz`` answers 503 now (``None``: ready). See :mod:`server.readiness`."""
        return not_ready_reason(
            time.monotonic(),
            draining=self.draining,
            loaded=self.leaderboard.view.loaded,
            feed_live_at=self.follower.live_at(),
            store_ok_at=self.store.ok_at(),
            max_staleness_s=self.settings.ready_max_staleness_s,
        )

    async def stop(self) -> None:
        """Stop connecting, drain every user mailbox into the store, stop the
        leaderboard (it publishes what is pending), close the store.

        Idempotent. Call after the HTTP side stopped taking requests.
        """
        await self._shut_down(drain=True)

    async def kill(self) -> None:
        """Stop now, after :meth:`stop` ran out of time: cancel every actor (their
        pending asks fail), then close the store."""
        await self._shut_down(drain=False)

    async def _shut_down(self, *, drain: bool) -> None:
        """One order for both ways down: actors first (they write to the store), the
        store last."""
        self.draining = True
        await self._stop_connecting()
        await (self.users.stop() if drain else self.users.kill_all())
        await self.follower.stop()
        await (self.leaderboard.stop() if drain else self.leaderboard.kill())
        await self.fanout.stop()
        await self.ask_deadlines.stop()
        await self.loop_lag.stop()
        await self.store.close()

    async def _stop_connecting(self) -> None:
        task, self._connecting = self._connecting, None
        if task is None:
            return
        if task.done():
            if not task.cancelled():
                task.exception()  # a fatal error: :meth:`started` reported it
            return
        await cancel_and_wait(task)
