"""The running service: store, actors, token verifier and metrics, wired together.

:class:`Service` is what handlers receive (through route kwargs); it owns the lifecycle
of everything below the HTTP layer: :meth:`start` opens the store and loads the
leaderboard, :meth:`stop` drains every mailbox into the store, then closes it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from pymongo import AsyncMongoClient

from actors.follower import FeedFollower
from actors.leaderboard import LeaderboardActor
from actors.user import UserRegistry
from handlers.fanout import Fanout
from handlers.ws_addresses import OpenPerAddress
from server.actions import ActionVerifier
from server.auth import TokenVerifier
from server.loop_lag import LoopLagMonitor
from server.metrics import Metrics
from server.origins import AllowedOrigins
from server.settings import Settings
from server.store.changes import LocalChangeFeed
from server.store.increments import IncrementPolicy
from server.store.mongodb import MongoStore
from server.store.port import ScoreStore
from server.store.sqlite import SqliteStore
from server.throttle import FailedAuthThrottle, parse_networks

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
        client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(
            settings.mongodb_uri, w="majority", tz_aware=True, appname="scoreboard"
        )
        return MongoStore(client[settings.mongodb_db], policy, client=client)
    return SqliteStore(
        settings.sqlite_path, policy, synchronous=settings.sqlite_synchronous, feed=feed
    )


class Service:
    """Everything a handler needs. Build it, ``await start()``, serve, ``await stop()``.

    Args:
        settings: the validated settings.
        store: the store port; :meth:`start` opens it and :meth:`stop` closes it.
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
        self.store = store
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
            store,
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
            store,
            self.leaderboard,
            mailbox_size=settings.mailbox_size,
            idle_s=settings.user_idle_s,
            max_actors=settings.max_user_actors,
            on_displaced=self.metrics.user_actors_displaced.inc,
        )
        self.ws_addresses = OpenPerAddress(settings.ws_max_per_address)
        self.loop_lag = LoopLagMonitor(self.metrics.event_loop_lag.observe)
        self.follower = FeedFollower(
            store.changes,
            self.leaderboard,
            self.metrics,
            on_version=self.users.saw_version,
            on_reload=self.users.forget_known,
        )
        self.metrics.track(
            user_actors=lambda: len(self.users),
            mailbox_depth=self.users.mailbox_depth,
            leaderboard_version=lambda: self.leaderboard.version,
        )
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
        """Open the store and its change feed, load the top K, start the actors.

        The feed opens before the load, so no other pod's write falls between them.

        Raises:
            StoreError: the store could not be opened or read.
        """
        await self.store.open()
        await self.follower.open()
        await self.leaderboard.load()
        self.leaderboard.start()
        self.follower.start()
        self.fanout.start()
        self.users.start()
        self.loop_lag.start()

    async def ready(self) -> bool:
        """Whether the store answers and the leaderboard is loaded (``/readyz``)."""
        return not self.draining and self.leaderboard.loaded and await self.store.ping()

    async def stop(self) -> None:
        """Drain every user mailbox into the store, stop the leaderboard, close the store.

        Idempotent. Call after the HTTP side stopped taking requests.
        """
        self.draining = True
        await self.users.stop()
        await self.follower.stop()
        await self.leaderboard.stop()
        await self.fanout.stop()
        await self.loop_lag.stop()
        await self.store.close()
