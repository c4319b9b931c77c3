"""The running service: store, actors, token verifier and metrics, wired together.

:class:`Service` is the composition root: it builds the parts and wires them, and is
what handlers receive (through route kwargs). :meth:`Service.connect` reaches the store
in the background (opens it, opens the change feed, loads the rank index and the
leaderboard, retrying
while the store is unavailable). Starting and stopping the parts, in order, is the
lifecycle's (``server/lifecycle.py``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

from pymongo import AsyncMongoClient

from actors.boards import BoardsRuntime, LiveSettings
from actors.deadlines import AskDeadlines
from actors.follower import BASE_BACKOFF_S, MAX_BACKOFF_S, FeedFollower, backoff_delay
from actors.leaderboard import LeaderboardActor
from actors.ranks import LiveRanks
from actors.user import UserRegistry
from handlers.live.addresses import OpenPerAddress
from handlers.live.fanout import Fanout
from handlers.live.rank_stream import RankStream
from handlers.live.token_lease import TokenLeases
from server.board_setup import boards_of
from server.domain.actions import ActionVerifier
from server.domain.boards import BoardSpec
from server.domain.increments import IncrementPolicy
from server.domain.origins import AllowedOrigins
from server.domain.rank_index import RankIndex
from server.domain.standings import SeasonClock
from server.domain.throttle import FailedAuthThrottle, parse_networks
from server.domain.tokens import TokenVerifier
from server.issuer_setup import issuers_of, keys_of
from server.jwks_client import JwksClient
from server.readiness import not_ready_reason
from server.settings import Settings
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


def create_store(settings: Settings) -> ScoreStore:
    """The store the settings ask for: MongoDB when a URI is set, else embedded SQLite."""
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
    return SqliteStore(settings.sqlite_path, policy, synchronous=settings.sqlite_synchronous)


def players_of(ranks: LiveRanks) -> Callable[[], float]:
    """How many players ``ranks`` holds, read when scraped."""
    return lambda: len(ranks.index)


class Service:
    """Everything a handler needs; :class:`server.lifecycle.Server` starts and stops it.

    Args:
        settings: the validated settings.
        store: the store adapter; :meth:`connect` opens it, the lifecycle closes it.
            Everything here uses it through a :class:`GuardedStore` (:attr:`store`).
        jwt_key: the secret or public key tokens are checked with (the single-key
            settings' or a demo's); None with a JWKS URL or an issuers file.
        clock_ms: wall-clock time in milliseconds, passed into every increment.
        boards: the boards served (:func:`server.board_setup.served`); default: those
            the settings name.
    """

    def __init__(
        self,
        settings: Settings,
        store: ScoreStore,
        jwt_key: str | None,
        *,
        clock_ms: Callable[[], int] = wall_clock_ms,
        boards: tuple[BoardSpec, ...] | None = None,
    ) -> None:
        self.settings = settings
        # The boards this server runs (SCOREBOARD_BOARDS_FILE, checked at start).
        self.boards = boards if boards is not None else boards_of(settings)
        self.seasons = SeasonClock()  # each period's current season, until it ends
        self.store = GuardedStore(store, probe_interval_s=settings.store_probe_interval_s)
        self.clock_ms = clock_ms
        self.metrics = Metrics()
        # The trusted issuers (server/issuer_setup.py) and their keys; the JWKS clients
        # among them are started and stopped by the lifecycle.
        self.issuers = issuers_of(settings, jwt_key)
        issuer_keys = [(spec, keys_of(spec, self.metrics)) for spec in self.issuers]
        self.key_sets = [keys for _, keys in issuer_keys if isinstance(keys, JwksClient)]
        self.verifier = TokenVerifier(issuer_keys, leeway_s=settings.jwt_leeway_s)
        for key_set in self.key_sets:
            key_set.on_withdrawn = self.verifier.forget_verified
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
        # Every ranked player in board order, kept current by this pod's writes and the
        # change feed; read through :attr:`ranks`.
        self.live_ranks = LiveRanks(self.store)
        # Rank events for watchers of one player (?watch=me), in the fan-out's streams.
        self.rank_stream = RankStream(
            self.live_ranks,
            self.fanout,
            self.metrics,
            interval_s=settings.broadcast_interval_ms / 1000,
        )
        # Live connections holding their token; each fan-out's resyncs re-send a warning.
        self.token_leases = TokenLeases()
        self.fanout.on_resync(self.token_leases.resynced)
        self.users = UserRegistry(
            self.store,
            self.leaderboard,
            ranks=self.live_ranks,
            mailbox_size=settings.mailbox_size,
            idle_s=settings.user_idle_s,
            max_actors=settings.max_user_actors,
            on_displaced=self.metrics.user_actors_displaced.inc,
        )
        self.ws_addresses = OpenPerAddress(settings.ws_max_per_address)
        self.loop_lag = LoopLagMonitor(self.metrics.event_loop_lag.observe)
        # The boards of a boards file (issue 14): each period's season, index, leaderboard
        # and watchers. Without a file the one board is the original one, above.
        self.board_fanouts: dict[tuple[str, str], Fanout] = {}
        self.board_rank_streams: dict[tuple[str, str], RankStream] = {}
        self.board_runtime: BoardsRuntime | None = None
        if settings.boards_file is not None:
            self.board_runtime = self._board_runtime(settings)
        self.follower = FeedFollower(
            self.store.changes,
            self.leaderboard,
            self.metrics,
            ranks=self.live_ranks,
            on_version=self.users.saw_version,
            on_reload=self.users.forget_known,
            boards=self.board_runtime,
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

    def _board_runtime(self, settings: Settings) -> BoardsRuntime:
        runtime = BoardsRuntime(
            self.boards,
            self.store,
            self.seasons,
            self.clock_ms,
            LiveSettings(
                broadcast_interval_s=settings.broadcast_interval_ms / 1000,
                history_size=settings.ws_history_size,
                mailbox_size=settings.mailbox_size,
                idle_s=settings.user_idle_s,
                max_actors=settings.max_user_actors,
            ),
            on_season_started=self._season_started,
        )
        for key, live in runtime.periods.items():
            fanout = self.board_fanouts[key] = Fanout(
                live.leaderboard,
                self.metrics,
                max_buffer_bytes=settings.ws_max_buffer_bytes,
                slow_timeout_s=settings.ws_slow_client_timeout_s,
            )
            fanout.on_resync(self.token_leases.resynced)
            self.board_rank_streams[key] = RankStream(
                live.ranks,
                fanout,
                self.metrics,
                interval_s=settings.broadcast_interval_ms / 1000,
            )
            self.metrics.board_players.labels(*key).set_function(players_of(live.ranks))
        self.metrics.expect_boards((b.id, [p.name for p in b.periods]) for b in self.boards)
        return runtime

    def _season_started(self, board: str, period: str, season: str) -> None:
        self.metrics.board_seasons_started.labels(board, period).inc()
        self.board_fanouts[(board, period)].start_season(season)

    @property
    def ranks(self) -> RankIndex:
        """The rank index as it is now (a reload swaps in a new one: do not keep it)."""
        return self.live_ranks.index

    def connect(self) -> None:
        """Connect to the store in the background; once loaded, start the leaderboard,
        the change feed's follower and the store's probe.

        Until connected, updates answer 503 ``database_unavailable``, reads and
        ``/readyz`` 503 ``not_ready``. :meth:`started` says when it is done, or why it
        cannot be; :meth:`stop_connecting` ends it.
        """
        if self._connecting is not None:
            raise RuntimeError("the service already connects")
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
            raise RuntimeError("the service does not connect")
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
            raise RuntimeError("the service does not connect")
        await asyncio.wait({task})
        task.result()

    async def _connect(self) -> None:
        """Open the store and the change feed, load the rank index and the top K (the
        feed first, so no write falls between them), retrying with jittered exponential
        backoff while the store is unavailable; then start the actors and the store's
        probe."""
        opened = False
        attempt = 0
        while True:
            try:
                if not opened:
                    await self.store.open()
                    opened = True
                await self.follower.open()
                # Before the probe and the board: writes wait for the probe (the breaker
                # refuses them until one passed), and a loaded board means a pod serving
                # reads and writes, which need the whole index. /readyz waits for it.
                if not self.live_ranks.loaded:
                    await self.live_ranks.load()
                # Writes wait for a passing probe: a store that reads but cannot write
                # (a read-only or full SQLite file) serves its board, refuses updates.
                await self.store.probe()
                await self.leaderboard.load()
                if self.board_runtime is not None:
                    await self.board_runtime.load()
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
        if self.board_runtime is not None:
            self.board_runtime.start()
        self.follower.start()
        self.store.start_probing()
        self._tried.set()
        log.info("store connected", extra={"attempts": attempt + 1})

    def not_ready_reason(self, *, draining: bool) -> str | None:
        """Why ``/readyz`` answers 503 now (``None``: ready); ``draining``: the server is
        shutting down. See :mod:`server.readiness`."""
        return not_ready_reason(
            time.monotonic(),
            draining=draining,
            loaded=self.leaderboard.view.loaded
            and (self.board_runtime is None or self.board_runtime.loaded),
            ranks_loading=self.live_ranks.loading,
            ranks_loaded=self.live_ranks.loaded,
            feed_live_at=self.follower.live_at(),
            store_ok_at=self.store.ok_at(),
            max_staleness_s=self.settings.ready_max_staleness_s,
            keys_waiting=next((k.issuer for k in self.key_sets if not k.loaded), None),
        )

    async def stop_connecting(self) -> None:
        """Cancel the connection if it still runs. Idempotent."""
        task, self._connecting = self._connecting, None
        if task is None:
            return
        if task.done():
            if not task.cancelled():
                task.exception()  # a fatal error: :meth:`started` reported it
            return
        await cancel_and_wait(task)
