"""Readiness as data: when a pod serves what it has."""

from __future__ import annotations

from typing import Any

import pytest

from server.readiness import not_ready_reason

STALENESS = 30.0


def reason(now: float = 100.0, **given: Any) -> str | None:
    state: dict[str, Any] = {
        "draining": False,
        "loaded": True,
        "ranks_loading": False,
        "ranks_loaded": True,
        "feed_live_at": now,
        "store_ok_at": now,
        "max_staleness_s": STALENESS,
    }
    state.update(given)
    return not_ready_reason(now, **state)


def test_a_loaded_pod_with_a_live_feed_and_a_passing_store_is_ready() -> None:
    assert reason() is None


def test_a_failover_shorter_than_the_staleness_keeps_it_ready() -> None:
    # Feed and probe both down for 12 s (an unplanned MongoDB failover).
    assert reason(100.0, feed_live_at=88.0, store_ok_at=88.0) is None
    assert reason(100.0, feed_live_at=70.0, store_ok_at=70.0) is None  # exactly 30 s


@pytest.mark.parametrize(
    ("given", "words"),
    [
        ({"draining": True}, "shutting down"),
        ({"loaded": False}, "not loaded"),
        ({"ranks_loaded": False}, "rank index is not loaded"),
        ({"ranks_loading": True, "ranks_loaded": False}, "rank index is loading"),
        ({"store_ok_at": None}, "not passed a probe"),
        ({"store_ok_at": 69.0}, "failed its probe for 31 s"),
        ({"feed_live_at": None}, "not been open"),
        ({"feed_live_at": 60.0}, "down for 40 s"),
    ],
)
def test_otherwise_it_says_why_not(given: dict[str, Any], words: str) -> None:
    why = reason(100.0, **given)
    assert why is not None and words in why


def test_the_first_load_of_the_rank_index_is_named_while_it_runs() -> None:
    """At start the rank index loads before the board: say so, not "the store has not
    answered"; a reload (an index already held) keeps the pod ready."""
    why = reason(loaded=False, ranks_loading=True, ranks_loaded=False)
    assert why is not None and "ranks_loading" in why and "is loading" in why
    assert reason(loaded=False, ranks_loading=False, ranks_loaded=False) == (
        "the leaderboard is not loaded yet (the store has not answered)"
    )
    assert reason(ranks_loading=True, ranks_loaded=True) is None


def test_draining_wins_over_everything() -> None:
    why = reason(draining=True, loaded=False, feed_live_at=None, store_ok_at=None)
    assert why == "the server is shutting down"


def test_no_staleness_allowed_means_unready_at_the_first_failure() -> None:
    assert reason(100.0, max_staleness_s=0) is None
    assert reason(100.0, max_staleness_s=0, store_ok_at=99.9) is not None
