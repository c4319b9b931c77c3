"""What a studio would otherwise build: a Tornado handler asking Redis for a player's rank.

    python -m bench.redis_rank_server --port 8002 --redis-port 6390 [--host 127.0.0.1]

``GET /api/players/{user_id}`` sends ``ZREVRANK`` and ``ZSCORE`` of the player's member in
the sorted set ``board`` in one pipelined round trip (redis-py's asyncio client, a pool of
connections) and answers ``{"user_id", "score", "rank"}`` (404 for a player not in the
set). The score and member encode the board's order (:func:`redis_score`,
:func:`redis_member`): ``bench/ranks_http.py`` loads the set and compares every rank with
ours. Used by that benchmark only: Redis is not a dependency of the service.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from typing import Final

import redis.asyncio as aioredis
import tornado.web

from bench.serving import serve_until_stopped

KEY: Final = "board"
CONTENT_TYPE: Final = "application/json; charset=utf-8"
# reached_ms within the benchmark's 90 days fits in 33 bits; scores below 2**20 leave the
# sum within a double's 53 exact bits.
REACHED_BITS: Final = 33
MAX_SCORE: Final = 2**20
ID_DIGITS: Final = 7  # player-0000001 ...


def redis_score(score: int, reached_ms: int, epoch_ms: int) -> float:
    """One double ordering as the board does on (score desc, reached_ms asc): the score in
    the high bits, the time *before the end of the span* in the low ones.

    Raises:
        ValueError: the score or time does not fit (the encoding would lose order).
    """
    offset = reached_ms - epoch_ms
    if not 0 <= score < MAX_SCORE or not 0 <= offset < 2**REACHED_BITS:
        raise ValueError(f"score {score} or reached_ms offset {offset} does not fit")
    return float(score * 2**REACHED_BITS + (2**REACHED_BITS - 1 - offset))


def redis_member(user_id: str) -> str:
    """The member of ``user_id`` (``player-NNNNNNN``): Redis ranks equal scores in
    *descending* member order (ZREVRANK), the board by ascending user id, so the number is
    stored complemented."""
    number = int(user_id.rsplit("-", 1)[1])
    return f"p{10**ID_DIGITS - 1 - number:0{ID_DIGITS}d}"


class RedisPlayerHandler(tornado.web.RequestHandler):
    def initialize(self, client: aioredis.Redis) -> None:
        self.client = client

    async def get(self, user_id: str) -> None:
        self.set_header("Content-Type", CONTENT_TYPE)
        try:
            member = redis_member(user_id)
        except (ValueError, IndexError):
            self.set_status(404)
            self.finish(b'{"error":"not_ranked"}')
            return
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.zrevrank(KEY, member)
            pipe.zscore(KEY, member)
            rank, score = await pipe.execute()
        if rank is None:
            self.set_status(404)
            self.finish(b'{"error":"not_ranked"}')
            return
        body = {"user_id": user_id, "score": int(score) >> REACHED_BITS, "rank": rank + 1}
        self.finish(json.dumps(body, separators=(",", ":")))


def make_app(client: aioredis.Redis) -> tornado.web.Application:
    return tornado.web.Application(
        [(r"/api/players/([^/]+)", RedisPlayerHandler, {"client": client})]
    )


async def serve(host: str, port: int, redis_port: int) -> None:
    client = aioredis.Redis(host=host, port=redis_port, max_connections=64)
    try:
        await serve_until_stopped(make_app(client), host, port)
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-port", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)  # no access log: Tornado's is at INFO
    asyncio.run(serve(args.host, args.port, args.redis_port))


if __name__ == "__main__":
    main()
