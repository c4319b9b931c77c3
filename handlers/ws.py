"""``/ws/scoreboard``: a snapshot on connect, then every change of the top N."""

from __future__ import annotations

import asyncio
import logging

import tornado.websocket

from server.service import Service

log = logging.getLogger(__name__)


def _consume(future: asyncio.Future[None]) -> None:
    # A write to a client that went away fails; the close handler cleans up.
    if not future.cancelled():
        future.exception()


class ScoreboardSocket(tornado.websocket.WebSocketHandler):
    """One watcher of the scoreboard, subscribed to the leaderboard actor's broadcasts."""

    service: Service

    def initialize(self, service: Service) -> None:
        self.service = service
        self._subscribed = False

    def check_origin(self, origin: str) -> bool:
        # The scoreboard is public and read-only; browsers on any site may watch it.
        return True

    def open(self) -> None:
        leaderboard = self.service.leaderboard
        self.send(leaderboard.snapshot_message)
        leaderboard.subscribe(self)
        self._subscribed = True
        self.service.metrics.websockets.inc()

    def on_message(self, message: str | bytes) -> None:
        # The stream is one-way; client messages are ignored (their size is bounded).
        pass

    def on_close(self) -> None:
        if self._subscribed:
            self._subscribed = False
            self.service.leaderboard.unsubscribe(self)
            self.service.metrics.websockets.dec()

    def send(self, payload: str) -> None:
        """Queue ``payload`` to this client without waiting for it to be written."""
        connection = self.ws_connection
        if connection is None or connection.is_closing():
            return
        try:
            future = self.write_message(payload)
        except tornado.websocket.WebSocketClosedError:
            return
        future.add_done_callback(_consume)
