"""TopK: the leaderboard's cache of the best users, as data in and data out."""

from __future__ import annotations

import copy

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from server.domain.records import BoardRow
from server.domain.topk import TopK, rank_key


def row(user_id: str, score: int, reached_ms: int = 0, v: int = 1) -> BoardRow:
    return BoardRow(user_id, user_id.upper(), score, reached_ms, v)


def ids(topk: TopK, n: int = 1000) -> list[str]:
    return [r.user_id for r in topk.top(n)]


def loaded(capacity: int, *rows: BoardRow) -> TopK:
    topk = TopK(capacity)
    topk.load(rows)
    return topk


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        TopK(0)


def test_a_new_cache_is_empty_and_complete() -> None:
    topk = TopK(3)
    assert len(topk) == 0
    assert topk.complete
    assert not topk.needs_refill(2)
    assert topk.top(2) == ()


# --- order ---------------------------------------------------------------------------------


def test_higher_score_first() -> None:
    topk = TopK(5)
    for e in (row("a", 1), row("b", 30), row("c", 20)):
        assert topk.apply(e)
    assert ids(topk) == ["b", "c", "a"]


def test_tie_on_score_goes_to_who_reached_it_first() -> None:
    topk = TopK(5)
    topk.apply(row("late", 10, reached_ms=200))
    topk.apply(row("early", 10, reached_ms=100))
    assert ids(topk) == ["early", "late"]


def test_tie_on_score_and_time_goes_to_the_smaller_user_id() -> None:
    topk = TopK(5)
    for user in ("c", "a", "b"):
        topk.apply(row(user, 10, reached_ms=100))
    assert ids(topk) == ["a", "b", "c"]


def test_load_sorts_the_rows() -> None:
    rows = [row("z", 5, 1), row("y", 5, 0), row("x", 9, 7), row("w", 5, 0)]
    assert ids(loaded(10, *rows)) == ["x", "w", "y", "z"]
    assert rank_key(row("x", 9, 7)) == (-9, 7, "x")


def test_top_is_the_best_rows_in_rank_order() -> None:
    topk = loaded(5, row("a", 3), row("b", 5))
    assert topk.top(5) == (row("b", 5), row("a", 3))
    assert topk.top(1) == (row("b", 5),)


def test_a_changed_member_moves_to_its_new_place() -> None:
    topk = loaded(5, row("a", 30), row("b", 20), row("c", 10))
    assert topk.apply(row("c", 40, reached_ms=5, v=2))
    assert ids(topk) == ["c", "a", "b"]
    assert topk.apply(row("c", 25, reached_ms=6, v=3))
    assert ids(topk) == ["a", "c", "b"]
    assert topk.top(1)[0].score == 30
    assert len(topk) == 3


# --- stale and duplicate events ------------------------------------------------------------


def test_a_duplicate_version_is_ignored() -> None:
    topk = loaded(5, row("a", 10, v=3))
    # Same version, even with different data: a duplicate, the first one wins.
    assert not topk.apply(row("a", 99, v=3))
    assert topk.top(1) == (row("a", 10, v=3),)


def test_a_stale_version_is_ignored() -> None:
    topk = loaded(5, row("a", 10, v=3), row("b", 5, v=1))
    assert not topk.apply(row("a", 50, v=2))
    assert not topk.apply(row("a", 0, v=1))
    assert topk.top(2) == (row("a", 10, v=3), row("b", 5, v=1))
    assert topk.apply(row("a", 11, v=4))
    assert topk.top(1) == (row("a", 11, v=4),)


def test_a_stale_version_of_a_member_that_left_is_ignored() -> None:
    topk = loaded(3, row("a", 100, v=5), row("b", 50), row("c", 40))
    assert not topk.complete
    # An admin reset (v6) drops "a" out of the cache...
    assert topk.apply(row("a", 0, reached_ms=9, v=6))
    assert "a" not in topk
    # ...then the older v5 arrives late (e.g. from a second feed or a racing refill).
    topk.apply(row("a", 100, v=5))
    assert "a" not in topk
    assert ids(topk) == ["b", "c"]


# --- boundary, headroom, refill ------------------------------------------------------------


def test_load_with_fewer_rows_than_capacity_is_complete() -> None:
    topk = loaded(4, row("a", 3), row("b", 2), row("c", 1))
    assert topk.complete
    assert not topk.needs_refill(4)
    # Complete: any newcomer belongs to the cache, even one ranking last.
    assert topk.apply(row("d", 0))
    assert ids(topk) == ["a", "b", "c", "d"]


def test_load_with_capacity_rows_is_not_complete() -> None:
    topk = loaded(3, row("a", 3), row("b", 2), row("c", 1))
    assert not topk.complete
    # Not complete: a newcomer below the last row may rank below unknown users: stays out.
    assert not topk.apply(row("d", 0))
    assert "d" not in topk
    # A newcomer above the last row is in the true prefix: admitted, the last row drops.
    assert topk.apply(row("e", 2, reached_ms=-1))
    assert ids(topk) == ["a", "e", "b"]
    assert "c" not in topk


def test_load_keeps_the_best_capacity_rows() -> None:
    topk = loaded(2, row("a", 1), row("b", 3), row("c", 2))
    assert ids(topk) == ["b", "c"]
    assert not topk.complete


def test_load_replaces_the_contents() -> None:
    topk = loaded(3, row("a", 3), row("b", 2), row("c", 1))
    topk.load([row("x", 1)])
    assert ids(topk) == ["x"]
    assert topk.complete
    assert "a" not in topk


def test_overflowing_a_complete_cache_drops_the_last_row_and_makes_it_incomplete() -> None:
    topk = TopK(2)
    topk.apply(row("a", 5))
    topk.apply(row("b", 4))
    assert topk.complete
    assert topk.apply(row("c", 1))  # complete: admitted, then the worst row leaves
    assert ids(topk) == ["a", "b"]
    assert "c" not in topk
    assert not topk.complete


def test_a_member_that_falls_below_the_boundary_leaves_the_cache() -> None:
    topk = loaded(3, row("a", 30), row("b", 20), row("c", 10))
    assert not topk.complete
    # "a" drops under the last row: an unknown user may now rank above it.
    assert topk.apply(row("a", 5, reached_ms=1, v=2))
    assert "a" not in topk
    assert ids(topk) == ["b", "c"]


def test_a_member_that_falls_but_stays_above_the_boundary_is_kept() -> None:
    topk = loaded(3, row("a", 30), row("b", 20), row("c", 10))
    assert topk.apply(row("a", 15, reached_ms=1, v=2))
    assert ids(topk) == ["b", "a", "c"]


def test_the_last_row_falling_leaves_the_cache() -> None:
    topk = loaded(3, row("a", 30), row("b", 20), row("c", 10))
    assert topk.apply(row("c", 9, reached_ms=1, v=2))
    assert ids(topk) == ["a", "b"]


def test_in_a_complete_cache_a_falling_member_stays() -> None:
    topk = loaded(5, row("a", 30), row("b", 20), row("c", 10))
    assert topk.complete
    assert topk.apply(row("a", 0, reached_ms=1, v=2))
    assert ids(topk) == ["b", "c", "a"]


def test_an_outsider_below_the_boundary_changes_nothing() -> None:
    topk = loaded(2, row("a", 30), row("b", 20), row("c", 10))
    assert not topk.apply(row("c", 15, reached_ms=1, v=2))
    assert ids(topk) == ["a", "b"]


def test_headroom_absorbs_members_falling_out_before_a_refill() -> None:
    # N = 2 shown, K = 4 held: two members can fall out before the top 2 is unknown.
    topk = loaded(4, *(row(u, s) for u, s in zip("abcde", (50, 40, 30, 20, 10), strict=True)))
    assert ids(topk) == ["a", "b", "c", "d"]
    assert not topk.needs_refill(2)
    topk.apply(row("a", 0, reached_ms=1, v=2))
    assert not topk.needs_refill(2)
    assert ids(topk, 2) == ["b", "c"]
    topk.apply(row("b", 0, reached_ms=1, v=2))
    assert not topk.needs_refill(2)
    assert ids(topk, 2) == ["c", "d"]
    topk.apply(row("c", 0, reached_ms=1, v=2))
    assert len(topk) == 1
    assert topk.needs_refill(2)
    assert not topk.needs_refill(1)


def test_an_empty_incomplete_cache_admits_nobody_and_needs_a_refill() -> None:
    topk = loaded(1, row("a", 10))
    topk.apply(row("a", 0, reached_ms=1, v=2))
    assert len(topk) == 0
    assert topk.needs_refill(1)
    assert not topk.apply(row("z", 1000))  # nothing is known to rank below it
    assert len(topk) == 0


def test_remove_drops_a_cached_user() -> None:
    topk = loaded(5, row("a", 3), row("b", 2), row("c", 1))
    assert topk.remove("b", 99)
    assert "b" not in topk
    assert ids(topk) == ["a", "c"]
    assert not topk.remove("b", 100)
    assert not topk.remove("nobody", 1)
    # An event older than the removal cannot bring the user back.
    assert not topk.apply(row("b", 50, v=98))
    assert "b" not in topk
    assert ids(topk) == ["a", "c"]
    assert topk.complete  # removing a user cannot make an outsider appear


def test_remove_can_make_an_incomplete_cache_need_a_refill() -> None:
    topk = loaded(2, row("a", 3), row("b", 2), row("c", 1))
    assert not topk.needs_refill(2)
    topk.remove("a", 99)
    assert topk.needs_refill(2)


# --- model-based: TopK against a brute-force ranking ---------------------------------------

USERS = [f"u{i}" for i in range(10)]


class TopKAgainstBruteForce(RuleBasedStateMachine):
    """Score changes (ups, downs, resets, deletions, duplicate and stale events) go to a
    dict "store" and to a TopK; the TopK is refilled from the store whenever it asks.
    The shown top N must always equal the brute-force ranking's first N."""

    def __init__(self) -> None:
        super().__init__()
        self.store: dict[str, BoardRow] = {}
        self.history: dict[str, list[BoardRow]] = {}
        self.versions: dict[str, int] = {}
        self.clock = 0
        self.n = 1
        self.topk = TopK(1)
        self.refills = 0

    @initialize(n=st.integers(min_value=1, max_value=4), headroom=st.integers(0, 3))
    def setup(self, n: int, headroom: int) -> None:
        self.n = n
        self.topk = TopK(n + headroom)

    def ranking(self) -> list[BoardRow]:
        return sorted(self.store.values(), key=rank_key)

    def after_change(self) -> None:
        # What the leaderboard actor does after each change.
        if self.topk.needs_refill(self.n):
            self.refills += 1
            self.topk.load(self.ranking()[: self.topk.capacity])

    def write(self, user: str, score: int, tick: int) -> None:
        self.clock += tick  # 0: several users reach a score in the same millisecond
        v = self.versions.get(user, 0) + 1
        self.versions[user] = v
        new = BoardRow(user, user.upper(), score, self.clock, v)
        self.store[user] = new
        self.history.setdefault(user, []).append(new)
        self.topk.apply(new)
        self.after_change()

    @rule(user=st.sampled_from(USERS), delta=st.integers(-30, 30), tick=st.integers(0, 2))
    def change_score(self, user: str, delta: int, tick: int) -> None:
        old = self.store[user].score if user in self.store else 0
        self.write(user, max(0, old + delta), tick)

    @rule(user=st.sampled_from(USERS), tick=st.integers(0, 2))
    def admin_reset(self, user: str, tick: int) -> None:
        self.write(user, 0, tick)

    @rule(user=st.sampled_from(USERS), score=st.integers(0, 100), tick=st.integers(0, 2))
    def what_admits_refuses_changes_nothing(self, user: str, score: int, tick: int) -> None:
        # A user actor skips telling the board what the admission refuses: applying it
        # anyway (to a copy) must change nothing anyone sees.
        probe = BoardRow(
            user, user.upper(), score, self.clock + tick, self.versions.get(user, 0) + 1
        )
        if not self.topk.admission().admits(probe):
            told = copy.deepcopy(self.topk)
            assert not told.apply(probe)
            assert told.top(told.capacity) == self.topk.top(self.topk.capacity)

    @rule(user=st.sampled_from(USERS))
    def delete(self, user: str) -> None:
        if self.store.pop(user, None) is not None:
            # Removed by an admin: a write like any other, so its version grows.
            v = self.versions[user] + 1
            self.versions[user] = v
            self.topk.remove(user, v)
            self.after_change()

    @rule(user=st.sampled_from(USERS))
    def duplicate_event(self, user: str) -> None:
        if user in self.store:
            # Cached: the same version again; outside: it still ranks below the boundary.
            assert not self.topk.apply(self.store[user])

    @rule(user=st.sampled_from(USERS), data=st.data())
    def stale_event_of_a_member(self, user: str, data: st.DataObject) -> None:
        if user in self.topk and len(self.history[user]) > 1:
            old = data.draw(st.sampled_from(self.history[user][:-1]))
            assert not self.topk.apply(old)

    @invariant()
    def shows_the_true_top_n(self) -> None:
        assert list(self.topk.top(self.n)) == self.ranking()[: self.n]

    @invariant()
    def holds_a_prefix_of_the_true_ranking(self) -> None:
        held = self.topk.top(self.topk.capacity)
        assert list(held) == self.ranking()[: len(held)]
        assert len(held) <= self.topk.capacity
        if self.topk.complete:
            assert len(held) == len(self.store)


TopKAgainstBruteForce.TestCase.settings = settings(
    max_examples=150, stateful_step_count=60, deadline=None
)
test_topk_against_brute_force = TopKAgainstBruteForce.TestCase


def test_admits_whatever_could_change_the_cache() -> None:
    topk = loaded(2, row("a", 30), row("b", 20, reached_ms=5), row("c", 10))
    assert not topk.complete
    admission = topk.admission()
    assert admission.admits(row("a", 1, v=2))  # a member, even falling
    assert admission.admits(row("c", 25, v=2))  # an outsider ranking above the last row
    assert admission.admits(row("ab", 20, reached_ms=5))  # ties b, wins on the user id
    assert not admission.admits(row("c", 20, reached_ms=5, v=2))  # ties b, loses on it
    assert not admission.admits(row("c", 20, reached_ms=6, v=2))  # reached it later: below
    assert not admission.admits(row("d", 19))
    # What the admission refuses, apply() leaves out; what it admits, apply() takes in.
    assert not topk.apply(row("d", 19))
    assert ids(topk) == ["a", "b"]
    assert topk.apply(row("ab", 20, reached_ms=5))
    assert ids(topk) == ["a", "ab"]
    # A value: it answers for the cache as it was when taken.
    assert not admission.admits(row("ab", 19, reached_ms=6, v=2))
    assert topk.admission().admits(row("ab", 19, reached_ms=6, v=2))  # a member now


def test_a_complete_or_empty_cache_admits_everyone() -> None:
    assert loaded(5, row("a", 30)).admission().admits(row("z", 0))  # complete: all users
    empty = TopK(2)
    empty.load([row("a", 3), row("b", 2), row("c", 1)])
    for user in ("a", "b"):
        empty.remove(user, 9)
    assert not empty.complete and len(empty) == 0
    assert empty.admission().admits(row("z", 0))  # nothing to compare with: the owner refills
