"""The textbook Tornado broadcast, the baseline of ``bench/fanout.py``.

    python -m bench.textbook_server --port 8001 [--host 127.0.0.1]

What most Tornado tutorials (and Tornado's own chat demo) do: a set of WebSocket
handlers, and on every change ``for c in clients: c.write_message(msg)`` with the JSON
of the new top 10, nothing awaited. The same HTTP surface as the real service for what
the benchmark uses: ``POST /api/update-score`` (``Authorization: Bearer <HS256 JWT>``,
``{"increment": n}``), ``GET /api/top-scores`` and ``/ws/scoreboard``. Scores live in a
dict; Tornado's defaults otherwise (no keepalive pings, no per-client buffer bound).

The update response carries ``fanout_s``, the time the write loop took, so the
benchmark can tell server time from client time.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import logging
import os
import time
from typing import Any

import jwt
import tornado.web
import tornado.websocket

from bench.serving import serve_until_stopped

log = logging.getLogger("textbook")


class Board:
    def __init__(self) -> None:
        self.scores: dict[str, int] = {}
        self.names: dict[str, str] = {}
        self.version = 0
        self.clients: set[ScoreSocket] = set()

    def top(self) -> list[dict[str, Any]]:
        best = heapq.nlargest(10, self.scores.items(), key=lambda kv: (kv[1], kv[0]))
        return [{"user_id": u, "username": self.names[u], "score": s} for u, s in best]

    def message(self, event: str) -> str:
        return json.dumps({"event": event, "version": self.version, "top_scores": self.top()})


class ScoreSocket(tornado.websocket.WebSocketHandler):
    def initialize(self, board: Board) -> None:
        self.board = board

    def check_origin(self, origin: str) -> bool:
        return True

    def open(self) -> None:
        self.board.clients.add(self)
        self.write_message(self.board.message("snapshot"))

    def on_close(self) -> None:
        self.board.clients.discard(self)


class UpdateHandler(tornado.web.RequestHandler):
    def initialize(self, board: Board, secret: str) -> None:
        self.board = board
        self.secret = secret

    def post(self) -> None:
        auth = self.request.headers.get("Authorization", "")
        try:
            claims = jwt.decode(auth.removeprefix("Bearer "), self.secret, algorithms=["HS256"])
        except jwt.InvalidTokenError:
            raise tornado.web.HTTPError(401) from None
        body = json.loads(self.request.body or b"{}")
        user = claims["sub"]
        board = self.board
        board.names[user] = claims.get("name", user)
        board.scores[user] = board.scores.get(user, 0) + int(body.get("increment", 1))
        board.version += 1
        message = board.message("update")
        started = time.perf_counter()
        for client in tuple(board.clients):  # the textbook loop (Tornado's chat demo)
            try:
                client.write_message(message)
            except tornado.websocket.WebSocketClosedError:
                log.warning("write to a closed client")
        fanout_s = time.perf_counter() - started
        self.write({"score": board.scores[user], "version": board.version, "fanout_s": fanout_s})


class TopHandler(tornado.web.RequestHandler):
    def initialize(self, board: Board) -> None:
        self.board = board

    def get(self) -> None:
        self.write({"top_scores": self.board.top()})


def make_app(secret: str) -> tornado.web.Application:
    board = Board()
    return tornado.web.Application(
        [
            (r"/api/update-score", UpdateHandler, {"board": board, "secret": secret}),
            (r"/api/top-scores", TopHandler, {"board": board}),
            (r"/ws/scoreboard", ScoreSocket, {"board": board}),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    secret = os.environ.get("SCOREBOARD_JWT_SECRET")
    if not secret:
        parser.error("SCOREBOARD_JWT_SECRET must be set")
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve_until_stopped(make_app(secret), args.host, args.port))


if __name__ == "__main__":
    main()
