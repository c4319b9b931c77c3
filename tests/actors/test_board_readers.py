"""User actors decide whether to tell the board of a change from its published view alone."""

from __future__ import annotations

import time
from typing import Any

import pytest

from actors.leaderboard import ScoreChanged
from actors.user import UserActor
from server.domain.board_view import BoardView
from server.domain.increments import IncrementPolicy
from server.domain.rank_index import RankIndex
from server.domain.records import BoardRow, IncrementCommand
from server.domain.topk import ADMITS_ALL, Admission, rank_key
from server.store.sqlite import SqliteStore
from tests.conftest import scaled

pytestmark = pytest.mark.gen_test(timeout=scaled(10))

T0 = 1_700_000_000_000


class ViewOnlyBoard:
    """A board that offers a user actor nothing but its published view and its mailbox:
    reading anything else of the board fails the test."""

    __slots__ = ("told", "view")

    def __init__(self, view: BoardView) -> None:
        self.view = view
        self.told: list[object] = []

    def tell(self, message: object) -> None:
        self.told.append(message)


def full_board_view(last: BoardRow) -> BoardView:
    """A loaded view whose cache is full: only members and rows above ``last`` wanted."""
    admission = Admission(False, frozenset({"member", last.user_id}), rank_key(last))
    return BoardView.empty("e", 4).loaded_with((last,), admission)


async def test_a_user_actor_tells_the_board_only_what_its_view_wants() -> None:
    store = SqliteStore(":memory:", IncrementPolicy(rate_limit_per_minute=0, idempotency_keys=8))
    await store.open()
    board = ViewOnlyBoard(full_board_view(BoardRow("last", "Last", 50, T0, 1)))
    actors = [
        UserActor(user, store, board, 0, time.monotonic, ranks=RankIndex())  # type: ignore[arg-type]
        for user in ("low", "high", "member")
    ]
    try:
        for actor in actors:
            actor.start()

        async def add(actor: UserActor, amount: int) -> Any:
            user = actor.user_id
            return await actor.ask(IncrementCommand(user, user.title(), amount, T0))

        low, high, member = actors
        await add(low, 10)  # ranks below the last row: stays outside
        assert board.told == []
        await add(high, 60)  # ranks above it
        await add(member, 1)  # a member, however low
        assert [m.row.user_id for m in board.told if isinstance(m, ScoreChanged)] == [
            "high",
            "member",
        ]
        # A new view is what counts: one that wants everything (a refill owed) is told all.
        board.view = board.view.changed(board.view.top_scores, ADMITS_ALL)
        await add(low, 1)
        assert isinstance(board.told[-1], ScoreChanged)
        assert board.told[-1].row.user_id == "low" and board.told[-1].row.score == 11
    finally:
        for actor in actors:
            await actor.stop()
        await store.close()
