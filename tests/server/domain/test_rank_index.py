"""The rank index as data: after any order of rows and removals it holds each player's
newest event, in the board's order, and its ranks, pages and windows agree with a
sorted list."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.domain.rank_index import RankIndex
from server.domain.records import BoardRow
from server.domain.topk import rank_key

USERS = [f"u{i}" for i in range(8)]

# One event per (user, version): a row (score, reached_ms) or a removal (None).
events = st.lists(
    st.tuples(
        st.sampled_from(USERS),
        st.integers(1, 30),
        st.one_of(st.none(), st.tuples(st.integers(0, 5), st.integers(0, 3))),
    ),
    unique_by=lambda e: (e[0], e[1]),
    max_size=60,
)


def row(user: str, score: int, reached_ms: int = 0, v: int = 1) -> BoardRow:
    return BoardRow(user, user.upper(), score, reached_ms, v)


def expected(delivered: list[tuple[str, int, tuple[int, int] | None]]) -> list[BoardRow]:
    """The board a sorted list gives: each player's newest event, removed ones left out."""
    newest: dict[str, tuple[int, tuple[int, int] | None]] = {}
    for user, v, what in delivered:
        if user not in newest or v > newest[user][0]:
            newest[user] = (v, what)
    rows = [row(u, what[0], what[1], v) for u, (v, what) in newest.items() if what is not None]
    return sorted(rows, key=rank_key)


@settings(max_examples=300)
@given(events, st.integers(0, 2))
def test_any_order_of_events_gives_the_sorted_board(
    delivered: list[tuple[str, int, tuple[int, int] | None]], loaded: int
) -> None:
    # Part of the events loaded at start (rows only), the rest applied one by one.
    start = [row(u, w[0], w[1], v) for u, v, w in delivered[:loaded] if w is not None]
    index = RankIndex(start)
    seen = [(u, v, w) for u, v, w in delivered[:loaded] if w is not None]
    for user, v, what in delivered[loaded:]:
        if what is None:
            index.remove(user, v)
        else:
            index.apply(row(user, what[0], what[1], v))
        seen.append((user, v, what))
        board = expected(seen)
        assert index.page(1, 100) == list(enumerate(board, start=1))
        assert len(index) == len(board)
    board = expected(seen)
    for rank, want in enumerate(board, start=1):
        assert index.rank_of(want.user_id) == rank
        assert index.at(rank) == want
        assert index.get(want.user_id) == want
    for user in set(USERS) - {r.user_id for r in board}:
        assert index.rank_of(user) is None and user not in index


@given(st.lists(st.integers(0, 50), min_size=1, max_size=40), st.data())
def test_windows_and_pages_agree_with_the_sorted_list(
    scores: list[int], data: st.DataObject
) -> None:
    rows = [row(f"p{i:02}", s, reached_ms=i % 3) for i, s in enumerate(scores)]
    board = sorted(rows, key=rank_key)
    index = RankIndex(rows)
    me = data.draw(st.sampled_from(board))
    above, below = data.draw(st.integers(0, 6)), data.draw(st.integers(0, 6))
    rank = board.index(me) + 1
    first = max(rank - above, 1)
    want = list(enumerate(board, start=1))[first - 1 : rank + below]
    assert index.around(me.user_id, above, below) == want
    # Paging forward then backward returns the same rows.
    limit = data.draw(st.integers(1, 7))
    forward = [index.page(r, limit) for r in range(1, len(board) + 1, limit)]
    starts = list(range(1, len(board) + 1, limit))
    backward = [index.page(r, limit) for r in reversed(starts)]
    assert forward == list(reversed(backward))
    assert [r for page in forward for _, r in page] == board


def test_ties_rank_by_who_reached_the_score_first_then_by_user_id() -> None:
    index = RankIndex([row("b", 10, 5), row("a", 10, 5), row("c", 10, 1), row("d", 11, 9)])
    assert [r.user_id for _, r in index.page(1, 10)] == ["d", "c", "a", "b"]


def test_a_late_older_row_does_not_undo_a_newer_one_or_a_removal() -> None:
    index = RankIndex()
    assert index.apply(row("a", 5, v=3))
    assert not index.apply(row("a", 50, v=2))  # older: ignored
    assert index.get("a") == row("a", 5, v=3)
    assert index.remove("a", 4)
    assert not index.apply(row("a", 7, v=4))  # not newer than the removal
    assert index.rank_of("a") is None
    assert index.apply(row("a", 1, v=5))  # unbanned and written again
    assert index.rank_of("a") == 1
    assert not index.remove("a", 2)  # an old removal: the newer row stays


def test_around_a_player_not_ranked_is_empty_and_pages_clip_at_the_ends() -> None:
    index = RankIndex([row("a", 3), row("b", 2), row("c", 1)])
    assert index.around("nobody", 2, 2) == []
    assert index.around("a", 5, 1) == [(1, row("a", 3)), (2, row("b", 2))]
    assert index.page(3, 10) == [(3, row("c", 1))]
    assert index.page(4, 10) == []
    assert index.page(0, 1) == [(1, row("a", 3))]
    with pytest.raises(IndexError):
        index.at(4)


@given(st.lists(st.integers(0, 9), min_size=1, max_size=30), st.integers(1, 6), st.data())
def test_keyset_pages_survive_moves_of_other_players(
    scores: list[int], limit: int, data: st.DataObject
) -> None:
    """Paging forward by the last row's key, while other players move between pages, never
    skips or repeats a player who did not move; paging back from a page's first key gives
    the page before it."""
    rows = [row(f"p{i:02}", s, reached_ms=i % 4) for i, s in enumerate(scores)]
    index = RankIndex(rows)
    first = index.page(1, limit)
    seen = [r.user_id for _, r in first]
    moved: set[str] = set()
    page = first
    while page:
        # Someone (not on this page) moves between two page reads.
        mover = data.draw(st.sampled_from(rows)).user_id
        if mover not in seen:
            held = index.get(mover)
            assert held is not None
            index.apply(row(mover, data.draw(st.integers(0, 9)), held.reached_ms, held.v + 1))
            moved.add(mover)
        page = index.after(rank_key(page[-1][1]), limit)
        seen += [r.user_id for _, r in page]
    still = [r.user_id for r in rows if r.user_id not in moved]
    assert sorted(u for u in seen if u in still) == sorted(still)  # none skipped or repeated
    # Backward from any page's first row gives the rows just before it.
    final = index.page(1, len(index))
    at = data.draw(st.integers(1, len(index)))
    back = index.before(rank_key(final[at - 1][1]), limit)
    assert back == final[max(at - 1 - limit, 0) : at - 1]
