"""Rank watchers as data: after any moves, :meth:`RankWatches.due` answers exactly the
watchers whose state changed (compared with computing every watcher afresh), with the
rank each was last sent; and it finds them without computing the others."""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.domain import rank_watch
from server.domain.rank_index import RankIndex
from server.domain.rank_watch import MAX_WINDOW, RankState, RankWatches, state_of
from server.domain.records import BoardRow
from server.domain.topk import rank_key


def row(user: str, score: int, reached_ms: int = 0, v: int = 1) -> BoardRow:
    return BoardRow(user, user.upper(), score, reached_ms, v)


class Board:
    """A rank index and the watchers' record of its moves, as the service keeps them."""

    def __init__(self, rows: list[BoardRow]) -> None:
        self.index = RankIndex(rows)
        self.watches: RankWatches[str] = RankWatches()
        self.versions = {r.user_id: r.v for r in rows}

    def set(self, user: str, score: int, reached_ms: int = 0) -> None:
        v = self.versions.get(user, 0) + 1
        self.versions[user] = v
        old = self.index.get(user)
        if self.index.apply(BoardRow(user, user.upper(), score, reached_ms, v)):
            self.watches.moved(user, rank_key(old) if old is not None else None)

    def remove(self, user: str) -> None:
        v = self.versions.get(user, 0) + 1
        self.versions[user] = v
        old = self.index.get(user)
        if self.index.remove(user, v):
            self.watches.moved(user, rank_key(old) if old is not None else None)


USERS = [f"p{i:03}" for i in range(90)]

moves = st.lists(
    st.tuples(
        st.sampled_from(USERS),
        st.one_of(st.none(), st.tuples(st.integers(0, 40), st.integers(0, 2))),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.sampled_from(USERS), st.integers(0, 40), max_size=80),
    st.lists(st.tuples(st.sampled_from(USERS), st.integers(0, MAX_WINDOW)), max_size=25),
    st.lists(moves, min_size=1, max_size=6),
)
def test_due_answers_exactly_the_watchers_whose_state_changed(
    scores: dict[str, int],
    watchers: list[tuple[str, int]],
    intervals: list[list[tuple[str, tuple[int, int] | None]]],
) -> None:
    board = Board([row(u, s, reached_ms=i % 3) for i, (u, s) in enumerate(scores.items())])
    shown: dict[str, RankState] = {}  # what each watcher was last sent
    rank_sent: dict[str, int | None] = {}
    for n, (user, window) in enumerate(watchers):
        seat = f"seat{n}"
        watch = board.watches.add(user, window, seat, board.index)
        assert watch.state == state_of(board.index, user, window)
        shown[seat] = watch.state
        rank_sent[seat] = watch.state.rank
    for interval in intervals:
        for user, what in interval:
            if what is None:
                board.remove(user)
            else:
                board.set(user, *what)
        changes = board.watches.due(board.index)
        want = {}
        for n, (user, window) in enumerate(watchers):
            seat = f"seat{n}"
            now = state_of(board.index, user, window)
            if now != shown[seat]:
                want[seat] = (now, rank_sent[seat])
        got = {c.seat: (c.state, c.previous) for c in changes}
        assert got == want
        assert len(changes) == len(got)  # one change per watcher per interval
        for seat, (state, _) in want.items():
            shown[seat] = state
            rank_sent[seat] = state.rank
        assert not board.watches.pending


def test_a_move_far_from_a_window_computes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    board = Board([row(f"p{i:03}", 1000 - i) for i in range(500)])
    for i in range(0, 500, 10):
        board.watches.add(f"p{i:03}", 2, f"seat{i}", board.index)
    computed: list[str] = []
    real = rank_watch.window_of

    def counted(index: RankIndex, user_id: str, window: int) -> Any:
        computed.append(user_id)
        return real(index, user_id, window)

    monkeypatch.setattr(rank_watch, "window_of", counted)
    board.set("p250", 1000 - 250, reached_ms=5)  # a move in place: nothing shown changes
    board.set("p305", 1000 - 300)  # p305 overtakes p301..p304: only watchers near them
    changes = board.watches.due(board.index)
    # p300's window (p298..p302) changed. p250's own player moved, so it was computed (and
    # nothing it shows changed); no other watcher's window met a move, none was computed.
    assert {c.seat for c in changes} == {"seat300"}
    assert sorted(computed) == ["p250", "p300"]


def test_a_watcher_gets_previous_rank_and_the_unranked_have_no_window() -> None:
    board = Board([row("a", 30), row("b", 20), row("c", 10)])
    watch = board.watches.add("c", 1, "seat", board.index)
    assert watch.state == RankState(3, 10, ((2, "b", "B", 20), (3, "c", "C", 10)))
    board.set("c", 25)
    (change,) = board.watches.due(board.index)
    assert (change.state.rank, change.previous, change.state.score) == (2, 3, 25)
    board.remove("c")
    (change,) = board.watches.due(board.index)
    assert change.state == RankState(None, None, ()) and change.previous == 2
    board.set("x", 5)  # someone else: an unranked watcher's state cannot change
    assert board.watches.due(board.index) == []
    board.set("c", 40)
    (change,) = board.watches.due(board.index)
    assert (change.state.rank, change.previous) == (1, None)


def test_a_replaced_index_recomputes_every_watcher_and_discard_forgets_one() -> None:
    board = Board([row("a", 30), row("b", 20)])
    first = board.watches.add("a", 0, "one", board.index)
    board.watches.add("b", 0, "two", board.index)
    board.watches.discard(first)
    board.watches.discard(first)  # twice: ignored
    assert len(board.watches) == 1
    board.index = RankIndex([row("a", 30), row("b", 50)])
    board.watches.replaced()
    assert board.watches.pending
    (change,) = board.watches.due(board.index)
    assert (change.seat, change.state.rank, change.previous) == ("two", 1, 2)


@pytest.mark.parametrize("window", [-1, MAX_WINDOW + 1])
def test_a_window_out_of_range_is_refused(window: int) -> None:
    with pytest.raises(ValueError, match="window"):
        RankWatches[str]().add("a", window, "seat", RankIndex())


def test_a_move_into_the_bottom_of_the_widest_window_is_found() -> None:
    """The farthest a straddling window's first row can be above a move: the move lands
    just above the window's last row, 2 x MAX_WINDOW rows below its first."""
    board = Board([row(f"p{i:03}", 10 * (300 - i)) for i in range(300)])
    watch = board.watches.add("p100", MAX_WINDOW, "seat", board.index)
    last = 100 + MAX_WINDOW
    board.set("p250", 10 * (300 - last) + 5)  # from far below to just above the last row
    (change,) = board.watches.due(board.index)
    assert (change.seat, change.state.rank, change.previous) == ("seat", 101, 101)
    assert change.state.window[-1][1] == "p250" and watch.state == change.state


step = st.one_of(
    st.tuples(st.just("set"), st.sampled_from(USERS[:60]), st.integers(0, 30), st.integers(0, 2)),
    st.tuples(st.just("remove"), st.sampled_from(USERS[:60]), st.just(0), st.just(0)),
    st.tuples(st.just("found"), st.just(""), st.just(0), st.just(0)),
    st.tuples(st.just("compute"), st.just(""), st.integers(1, 5), st.just(0)),
    st.tuples(st.just("join"), st.sampled_from(USERS[:60]), st.integers(0, MAX_WINDOW), st.just(0)),
    st.tuples(st.just("leave"), st.just(""), st.integers(0, 40), st.just(0)),
    st.tuples(st.just("reload"), st.just(""), st.just(0), st.just(0)),
)


@settings(max_examples=500, deadline=None)
@given(
    st.dictionaries(st.sampled_from(USERS[:60]), st.integers(0, 30), max_size=55),
    st.lists(st.tuples(st.sampled_from(USERS[:60]), st.integers(0, MAX_WINDOW)), max_size=20),
    st.lists(step, max_size=60),
)
def test_found_then_computed_in_steps_as_the_stream_does_misses_no_watcher(
    scores: dict[str, int],
    watchers: list[tuple[str, int]],
    steps: list[tuple[str, str, int, int]],
) -> None:
    """As the stream uses it: moves, ticks that find watchers, computes spread over later
    steps (moves in between), joins, leaves and reloads, in any order; afterwards every
    watcher shows what computing it afresh shows, and the left ones are gone."""
    board = Board([row(u, s, reached_ms=i % 3) for i, (u, s) in enumerate(scores.items())])
    live = [board.watches.add(u, w, n, board.index) for n, (u, w) in enumerate(watchers)]
    waiting: deque[Any] = deque()
    queued: set[Any] = set()

    def find() -> None:
        for watch in board.watches.found(board.index):
            if watch not in queued:
                queued.add(watch)
                waiting.append(watch)

    def compute(count: int) -> None:
        for _ in range(count):
            if waiting:
                watch = waiting.popleft()
                queued.discard(watch)
                board.watches.recompute(watch, board.index)

    for kind, user, x, y in steps:
        if kind == "set":
            board.set(user, x, y)
        elif kind == "remove":
            board.remove(user)
        elif kind == "found":
            find()
        elif kind == "compute":
            compute(x)
        elif kind == "join":
            live.append(board.watches.add(user, x, len(live) + 100, board.index))
        elif kind == "leave" and live:
            board.watches.discard(live.pop(x % len(live)))
        elif kind == "reload":
            held = [board.index.get(u) for u in list(board.versions)]
            board.index = RankIndex(r for r in held if r is not None)
            board.watches.replaced()
    find()
    compute(len(waiting))
    for watch in live:
        assert watch.state == state_of(board.index, watch.user_id, watch.window)
    assert len(board.watches) == len(live)
    assert board.watches.placed == sum(1 for w in live if w.state and w.state.rank is not None)
