"""The process's life, in one place: start, serve, shut down (as uvicorn's ``Server``).

:class:`Server` owns every step, each written once:

1. :meth:`Server.startup`: start the service's parts (fan-out, user actors, ask deadlines,
   loop-lag monitor) and its store connection in the background; bind the sockets and
   serve HTTP (the ``/healthz`` answers while the store is tried); return once the first
   attempt to reach the store ended.
2. :meth:`Server.until_stopped`: serve until the stop signal, or a fatal store error.
3. :meth:`Server.shutdown`, one sequence with a drain timeout
   (``SCOREBOARD_SHUTDOWN_TIMEOUT_S``): stop accepting connections, mark the server
   draining (updates and new WebSockets refused with 503 ``shutting_down``, ``/readyz``
   fails), close WebSockets with 1001; then, within the timeout, wait for the HTTP
   requests in flight, close the remaining connections, stop every actor (user mailboxes
   drained into the store, the leaderboard publishes what is pending) and close the
   store. Past the timeout, the forced path runs the same actor and store steps without
   draining: every actor is cancelled (its pending asks fail; their requests answer 503
   ``database_timeout``), then the connections and the store are closed, and the exit is
   unclean (``python -m server`` exits 1).

:func:`run_server` is that life as an ``async with`` block (tests, and :func:`serve`);
:func:`serve` is ``python -m server``'s: signals, the "listening" line, exit code.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager

import tornado.httpserver
import tornado.netutil

from handlers.base import body_timeout_s
from handlers.header_limit import HeaderLimitedServer
from handlers.inflight import InFlight
from server.app import make_router
from server.board_setup import served
from server.service import Service, create_store, wall_clock_ms
from server.settings import Settings, SettingsError
from server.store.port import ScoreStore
from server.support.gc_tuning import tune_for_serving
from server.support.tasks import cancel_and_wait

log = logging.getLogger(__name__)
# The process's own lines (listening, signals, stopping), as ``python -m server`` logs them.
process_log = logging.getLogger("server")

GOING_AWAY = 1001
# Larger bodies are cut off (bare 400, connection closed) before a handler sees them; the
# update handler streams its body and answers 413 for anything over 4 KiB up to this.
MAX_REQUEST_BYTES = 1024 * 1024
MAX_HEADER_BYTES = 16 * 1024  # room for an 8 KiB token; larger headers get 431


class Server:
    """One service served over HTTP, from :meth:`startup` to :meth:`shutdown`.

    Args:
        settings: the validated settings.
        jwt_key: the secret or public key tokens are checked with (None with a JWKS URL
            or an issuers file).
        store: the store adapter (default: the one the settings ask for).
        clock_ms: wall-clock milliseconds (tests inject one to cross season boundaries).
    """

    def __init__(
        self,
        settings: Settings,
        jwt_key: str | None,
        *,
        store: ScoreStore | None = None,
        clock_ms: Callable[[], int] = wall_clock_ms,
    ) -> None:
        # The served board's limits replace the server-wide ones (server/board_setup.py).
        settings, boards = served(settings)
        self.settings = settings
        self.service = Service(
            settings,
            store if store is not None else create_store(settings),
            jwt_key,
            boards=boards,
            clock_ms=clock_ms,
        )
        self.inflight = InFlight()
        self.http: tornado.httpserver.HTTPServer | None = None
        self.port = 0
        #: False once :meth:`shutdown` passed its timeout and took the forced path.
        self.clean_exit = True
        self._started = False

    async def startup(self, *, wait_for_store: bool) -> None:
        """Start the service, listen on ``settings.host:settings.port`` (0: a free port),
        and return once the first attempt to reach the store ended (connected, or
        retrying in the background while the store is unavailable).

        Call :meth:`shutdown` afterwards, also when this raises.

        Args:
            wait_for_store: return only once the store is open and the board loaded
                (tests); ``python -m server`` watches :meth:`Service.started` itself
                (:meth:`until_stopped`).

        Raises:
            StoreError: the store cannot be used (any error but ``StoreUnavailable``,
                which is retried) on the first attempt, or on a later one with
                ``wait_for_store``.
            SettingsError: the TLS certificate or key cannot be loaded.
            OSError: the address could not be bound.
        """
        if self._started:
            raise RuntimeError("the server already started")
        self._started = True
        service, settings = self.service, self.settings
        service.fanout.start()
        for fanout in service.board_fanouts.values():
            fanout.start()
        service.rank_stream.start()
        for stream in service.board_rank_streams.values():
            stream.start()
        service.users.start()
        service.ask_deadlines.start()
        service.loop_lag.start()
        for key_set in service.key_sets:
            key_set.start()  # /readyz waits for each issuer's first key set
        service.connect()
        ssl_options = tls_context(settings)
        sockets = tornado.netutil.bind_sockets(settings.port, settings.host, family=socket.AF_INET)
        self.http = HeaderLimitedServer(  # answers 431 to headers over max_header_size
            make_router(service, self.inflight),
            ssl_options=ssl_options,
            max_body_size=MAX_REQUEST_BYTES,
            max_header_size=MAX_HEADER_BYTES,
            body_timeout=body_timeout_s(),  # the update route keeps its own, cheaper timer
            idle_connection_timeout=75,
        )
        self.http.add_sockets(sockets)
        self.port = sockets[0].getsockname()[1]
        await service.first_attempt()
        if wait_for_store:
            await service.started()

    async def until_stopped(self, stop: asyncio.Event) -> None:
        """Return once ``stop`` is set.

        Raises:
            StoreError: the service cannot use its store (not a passing unavailability,
                which it retries): the process must exit.
        """
        loop = asyncio.get_running_loop()
        stopped = loop.create_task(stop.wait(), name="stop-signal")
        started = loop.create_task(self.service.started(), name="store-started")
        try:
            await asyncio.wait({stopped, started}, return_when=asyncio.FIRST_COMPLETED)
            if started.done():
                started.result()
                await stopped
        finally:
            for task in (stopped, started):
                if not task.done():
                    await cancel_and_wait(task)

    async def shutdown(self) -> None:
        """Stop gracefully within ``settings.shutdown_timeout_s``, else by force;
        :attr:`clean_exit` then says which. Safe whatever :meth:`startup` reached."""
        timeout_s = self.settings.shutdown_timeout_s
        self._stop_accepting()
        try:
            async with asyncio.timeout(timeout_s):
                await self.inflight.all_finished()
                await self._close_connections()
                await self._stop_service(drain=True)
        except TimeoutError:
            log.error("shutdown timed out; stopping what is left", extra={"timeout_s": timeout_s})
            self.clean_exit = False
            await self._stop_service(drain=False)
            # After the actors: the requests they held have their answer (503) written.
            await self._close_connections()
            return
        log.info("shutdown complete")

    def _stop_accepting(self) -> None:
        """Close the listeners; refuse what still arrives on open connections; close the
        WebSockets with 1001."""
        if self.http is not None:
            self.http.stop()
        # From here on, updates arriving on kept-alive connections are refused (503), so
        # an increment is applied only if its request was in flight before, and answered.
        self.inflight.draining = True
        self.service.fanout.close_all(GOING_AWAY, "server shutting down")
        for fanout in self.service.board_fanouts.values():
            fanout.close_all(GOING_AWAY, "server shutting down")

    async def _close_connections(self) -> None:
        if self.http is not None:
            await self.http.close_all_connections()

    async def _stop_service(self, *, drain: bool) -> None:
        """Stop what :meth:`startup` started, in one order for both ways down: the store
        connection, the actors (they write to the store), the rest, the store last.

        Args:
            drain: process every queued message first (each user mailbox into the store;
                the leaderboard publishes what is pending); without it (the forced path),
                cancel every actor: its pending asks fail.
        """
        service = self.service
        await service.stop_connecting()
        await (service.users.stop() if drain else service.users.kill_all())
        if service.board_runtime is not None:
            await service.board_runtime.stop(drain=drain)
        await service.follower.stop()
        await (service.leaderboard.stop() if drain else service.leaderboard.kill())
        service.rank_stream.stop()
        for stream in service.board_rank_streams.values():
            stream.stop()
        await service.fanout.stop()
        for fanout in service.board_fanouts.values():
            await fanout.stop()
        await service.ask_deadlines.stop()
        await service.loop_lag.stop()
        for key_set in service.key_sets:
            await key_set.stop()
        await service.store.close()


@asynccontextmanager
async def run_server(
    settings: Settings,
    jwt_key: str | None,
    *,
    store: ScoreStore | None = None,
    wait_for_store: bool = True,
    clock_ms: Callable[[], int] = wall_clock_ms,
) -> AsyncIterator[Server]:
    """A :class:`Server` started (:meth:`Server.startup`) for the block and shut down
    (:meth:`Server.shutdown`) when it ends, or when its startup fails.

    Raises:
        StoreError, SettingsError, OSError: see :meth:`Server.startup`.
    """
    server = Server(settings, jwt_key, store=store, clock_ms=clock_ms)
    try:
        await server.startup(wait_for_store=wait_for_store)
        yield server
    finally:
        await server.shutdown()


async def serve(
    settings: Settings, jwt_key: str | None, *, on_listening: Callable[[int], None] | None = None
) -> int:
    """Serve until SIGTERM or SIGINT, then shut down gracefully. A second signal forces exit.

    Args:
        on_listening: called with the port once the server listens.

    Returns:
        0 after a clean shutdown, 1 when it passed the shutdown timeout.

    Raises:
        StoreError, SettingsError, OSError: see :meth:`Server.startup`; also a
            ``StoreError`` after startup (see :meth:`Server.until_stopped`).
    """
    stop = asyncio.Event()
    # The handlers stay installed through the shutdown, so a second signal can cut it short.
    with _signals_set(stop):
        async with run_server(settings, jwt_key, wait_for_store=False) as server:
            store = "mongodb" if settings.uses_mongodb else f"sqlite:{settings.sqlite_path}"
            tuning = tune_for_serving()  # after startup: what it allocated is frozen
            process_log.info(
                "listening",
                extra={
                    "host": settings.host,
                    "port": server.port,
                    "store": store,
                    "gc_thresholds": list(tuning.thresholds),
                    "gc_frozen_objects": tuning.frozen_objects,
                },
            )
            if on_listening is not None:
                on_listening(server.port)
            await server.until_stopped(stop)
            process_log.info("stopping")
    return 0 if server.clean_exit else 1


@contextmanager
def _signals_set(stop: asyncio.Event) -> Iterator[None]:
    """Set ``stop`` on SIGTERM/SIGINT; on a second one, exit at once. Restores on exit."""
    loop = asyncio.get_running_loop()

    def on_signal(signum: int) -> None:
        if stop.is_set():
            process_log.warning("second signal: exiting without a graceful shutdown")
            os._exit(1)
        process_log.info("signal received", extra={"signal": signal.Signals(signum).name})
        stop.set()

    installed = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
        installed.append(signum)
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The server's TLS context when a certificate is configured.

    Raises:
        SettingsError: the certificate or key cannot be loaded.
    """
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (ssl.SSLError, OSError) as exc:
        raise SettingsError(
            "SCOREBOARD_TLS_CERT", f"cannot load the certificate/key: {exc}"
        ) from None
    return context
