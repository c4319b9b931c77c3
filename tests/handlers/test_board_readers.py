"""The web layer reads the board only through its published view.

The service's board is swapped for one that has nothing but a view: every answer that
depends on the board (top scores on the fast path and through the handler, conditional
reads, readiness, the WebSocket's readiness check, the fan-out's first messages) must come
from that value, and follow when a new view replaces it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import tornado.httpclient

from handlers.live.fanout import Fanout
from server.domain.board_view import BoardView, Publication, TopScores
from server.domain.deltas import Since
from server.domain.records import BoardRow
from server.domain.topk import ADMITS_ALL
from server.support.metrics import Metrics
from tests.conftest import Client, body_of, scaled, serving
from tests.handlers.live.test_fanout import FakeWatcher, drain

pytestmark = pytest.mark.gen_test(timeout=scaled(20))

ROWS = (BoardRow("zed", "Zed", 42, 1, 3), BoardRow("amy", "Amy", 7, 2, 1))


class ViewOnlyBoard:
    """Nothing but a published view (and subscriptions, for the fan-out): a reader that
    asks the board for anything else fails with an AttributeError."""

    __slots__ = ("subscribers", "view")

    def __init__(self, view: BoardView) -> None:
        self.view = view
        self.subscribers: set[Any] = set()

    def subscribe(self, subscriber: Any) -> None:
        self.subscribers.add(subscriber)

    def unsubscribe(self, subscriber: Any) -> None:
        self.subscribers.discard(subscriber)


def view_of(rows: tuple[BoardRow, ...], epoch: str = "feedbeef") -> BoardView:
    return BoardView.empty(epoch, 8).loaded_with(rows, ADMITS_ALL)


@asynccontextmanager
async def served_from(view: BoardView) -> AsyncIterator[tuple[Client, ViewOnlyBoard]]:
    async with serving() as client:
        service: Any = client.running.service
        actor, board = service.leaderboard, ViewOnlyBoard(view)
        service.leaderboard = board
        try:
            yield client, board
        finally:
            service.leaderboard = actor  # the real one, for the shutdown


async def test_top_scores_come_from_the_view_on_every_path() -> None:
    async with served_from(view_of(ROWS)) as (client, board):
        top = board.view.top_scores
        fast = await client.request("GET", "/api/top-scores")
        handler = await client.request(
            "GET", "/api/top-scores", None, {"Origin": "https://game.example"}
        )
        for response in (fast, handler):
            assert response.code == 200
            assert response.body == top.body
            assert response.headers["ETag"] == top.etag
        conditional = await client.request(
            "GET", "/api/top-scores", None, {"If-None-Match": top.etag}
        )
        assert conditional.code == 304
        # A new view replaces the old one: the answers follow it at once.
        board.view = view_of(ROWS[1:])
        assert body_of(await client.request("GET", "/api/top-scores")) == {
            "top_scores": [{"user_id": "amy", "username": "Amy", "score": 7}]
        }
        changed = await client.request("GET", "/api/top-scores", None, {"If-None-Match": top.etag})
        assert changed.code == 200


async def test_readiness_follows_the_views_loaded_flag() -> None:
    async with served_from(BoardView.empty("feedbeef", 8)) as (client, board):
        for path in ("/api/top-scores", "/readyz"):
            response = await client.request("GET", path)
            assert (response.code, body_of(response)["error"]) == (503, "not_ready")
        with pytest.raises(tornado.httpclient.HTTPClientError) as refused:
            await client.websocket()
        assert refused.value.code == 503
        board.view = view_of(ROWS)
        assert (await client.request("GET", "/api/top-scores")).code == 200


async def test_the_fanout_sends_joining_watchers_what_the_view_holds() -> None:
    first = view_of(ROWS)
    board = ViewOnlyBoard(first)
    fanout = Fanout(board, Metrics(), max_buffer_bytes=1 << 20, slow_timeout_s=5.0)
    fanout.start()
    try:
        assert board.subscribers == {fanout}
        seed = FakeWatcher(wants_delta=False, takes_all=True)
        fanout.join(seed, None)
        assert [
            json.dumps(m, separators=(",", ":"), ensure_ascii=False) for m in seed.stream.messages()
        ] == [first.snapshot("new")]
        # The board publishes version 1: a new view, and the publication for watchers.
        changed = first.changed(TopScores(ROWS[:1]), ADMITS_ALL)
        publication, board.view = changed.published()
        assert isinstance(publication, Publication)
        fanout.publish(publication)
        resuming = FakeWatcher(wants_delta=True, takes_all=True)
        fanout.join(resuming, Since("feedbeef", 0))
        assert [m["event"] for m in resuming.stream.messages()] == ["resumed", "delta"]
        assert resuming.stream.messages()[1] == json.loads(publication.delta)
        late = FakeWatcher(wants_delta=False, takes_all=True)
        fanout.join(late, None)
        assert late.stream.messages() == [json.loads(board.view.snapshot("new"))]
        await drain(seed)
        assert [m["version"] for m in seed.stream.messages()] == [0, 1]
    finally:
        await fanout.stop()
    assert board.subscribers == set()
