"""Serving: start the service and the HTTP server, and stop them in order.

Shutdown order (as uvicorn does it): stop accepting connections, close WebSockets with
1001, wait for in-flight requests, close the remaining connections, drain every actor
mailbox into the store, close the store, all within the shutdown timeout.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import tornado.httpserver
import tornado.netutil

from handlers.base import body_timeout_s
from server.app import make_router
from server.service import Service, create_store
from server.settings import Settings, SettingsError
from server.store.port import ScoreStore

log = logging.getLogger(__name__)

GOING_AWAY = 1001
# Larger bodies are cut off (bare 400, connection closed) before a handler sees them; the
# update handler streams its body and answers 413 for anything over 4 KiB up to this.
MAX_REQUEST_BYTES = 1024 * 1024
MAX_HEADER_BYTES = 16 * 1024  # room for an 8 KiB token; larger headers are refused


@dataclass(slots=True)
class RunningServer:
    """A server that accepts requests until the ``run_server`` block ends."""

    service: Service
    http: tornado.httpserver.HTTPServer
    port: int
    clean_exit: bool = True


@asynccontextmanager
async def run_server(
    settings: Settings, jwt_key: str, *, store: ScoreStore | None = None
) -> AsyncIterator[RunningServer]:
    """Start the service and listen on ``settings.host:settings.port`` (0: a free port).

    Leaving the block shuts down gracefully; ``RunningServer.clean_exit`` then says whether
    it finished within the shutdown timeout.

    Raises:
        StoreError: the store could not be opened or read at start.
        OSError: the address could not be bound.
    """
    service = Service(settings, store if store is not None else create_store(settings), jwt_key)
    try:
        await service.start()
    except BaseException:
        await service.stop()
        raise
    try:
        ssl_options = tls_context(settings)
    except BaseException:
        await service.stop()
        raise
    http = tornado.httpserver.HTTPServer(
        make_router(service),
        ssl_options=ssl_options,
        max_body_size=MAX_REQUEST_BYTES,
        max_header_size=MAX_HEADER_BYTES,
        body_timeout=body_timeout_s(),  # the update route keeps its own, cheaper timer
        idle_connection_timeout=75,
    )
    try:
        sockets = tornado.netutil.bind_sockets(settings.port, settings.host, family=socket.AF_INET)
    except BaseException:
        await service.stop()
        raise
    http.add_sockets(sockets)
    running = RunningServer(service, http, sockets[0].getsockname()[1])
    try:
        yield running
    finally:
        running.clean_exit = await shutdown(running, settings.shutdown_timeout_s)


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


async def shutdown(running: RunningServer, timeout_s: float) -> bool:
    """Stop ``running`` gracefully; return whether everything finished within ``timeout_s``."""
    service, http = running.service, running.http
    http.stop()
    # From here on, updates arriving on kept-alive connections are refused (503), so an
    # increment is applied only if its request was in flight before, and gets answered.
    service.draining = True
    service.fanout.close_all(GOING_AWAY, "server shutting down")
    try:
        async with asyncio.timeout(timeout_s):
            await service.requests_done()
            await http.close_all_connections()
            await service.stop()
    except TimeoutError:
        log.error("shutdown timed out; stopping what is left", extra={"timeout_s": timeout_s})
        await service.users.kill_all()
        await service.leaderboard.kill()
        await service.fanout.stop()
        await service.loop_lag.stop()
        await service.store.close()
        return False
    log.info("shutdown complete")
    return True
