"""A bare Tornado app with our two HTTP routes: the ceiling of ``bench/updates.py``.

    python -m bench.bare_server --port 8001 [--host 127.0.0.1]

``POST /api/update-score`` answers ``{"status":"success","new_score":1}``,
``GET /api/top-scores`` a fixed top 10 shaped like ours (``user_id``, ``username``,
``score``) and ``GET /api/players/{id}`` (``me`` too) a fixed player answer shaped like
ours, all with our ``Content-Type``. Nothing else: no JWT decoding, no body
parsing, no store, no logging, no metrics. Whatever our server does per request on top of
Tornado itself is the difference between the two. SIGTERM or SIGINT stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging

import tornado.web

from bench.serving import serve_until_stopped

UPDATE_BODY = b'{"status":"success","new_score":1}'
TOP_SCORES_BODY = json.dumps(
    {
        "top_scores": [
            {"user_id": f"user-{i:04d}", "username": f"User {i:04d}", "score": 1000 - i}
            for i in range(10)
        ]
    },
    separators=(",", ":"),
).encode()
PLAYER_BODY = json.dumps(
    {
        "user_id": "player-0000001",
        "username": "abcdefghijkl",
        "score": 120,
        "rank": 123456,
        "total": 1000000,
        "percentile": 87.65,
    },
    separators=(",", ":"),
).encode()
CONTENT_TYPE = "application/json; charset=utf-8"


class UpdateScoreHandler(tornado.web.RequestHandler):
    def post(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE)
        self.finish(UPDATE_BODY)


class TopScoresHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE)
        self.finish(TOP_SCORES_BODY)


class PlayerHandler(tornado.web.RequestHandler):
    def get(self, user_id: str) -> None:
        self.set_header("Content-Type", CONTENT_TYPE)
        self.finish(PLAYER_BODY)


def make_app() -> tornado.web.Application:
    return tornado.web.Application(
        [
            (r"/api/update-score", UpdateScoreHandler),
            (r"/api/top-scores", TopScoresHandler),
            (r"/api/players/([^/]+)", PlayerHandler),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)  # no access log: Tornado's is at INFO
    asyncio.run(serve_until_stopped(make_app(), args.host, args.port))


if __name__ == "__main__":
    main()
