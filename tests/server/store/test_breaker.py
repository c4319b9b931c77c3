"""The store's circuit breaker, as data: times in, decisions out."""

from __future__ import annotations

import pytest

from server.store.breaker import Breaker, BreakerState

OPEN_S = 2.0


def proven() -> Breaker:
    """A breaker whose store answered once (a probe passed)."""
    breaker = Breaker(OPEN_S)
    breaker.succeeded()
    return breaker


def test_it_starts_open_and_only_a_success_opens_the_way() -> None:
    breaker = Breaker(OPEN_S)
    assert breaker.state is BreakerState.OPEN and not breaker.closed
    # Nothing is known of the store: no trial, however long it has been.
    assert breaker.refusing(1e9) and not breaker.admit(1e9)
    breaker.failed(5.0)  # a failed read before the first probe changes nothing
    assert not breaker.admit(1e9)
    assert breaker.retry_after_s(0.0) == 2
    breaker.succeeded()
    assert breaker.closed and breaker.admit(0.0) and not breaker.refusing(0.0)


def test_a_failure_refuses_calls_until_the_open_time_has_passed() -> None:
    breaker = proven()
    breaker.failed(10.0)
    assert breaker.state is BreakerState.OPEN
    for now in (10.0, 11.0, 11.99):
        assert breaker.refusing(now)
        assert not breaker.admit(now)
    assert breaker.retry_after_s(10.0) == 2
    assert breaker.retry_after_s(11.5) == 1  # never 0
    assert not breaker.refusing(12.0)


def test_past_the_open_time_one_trial_goes_and_the_rest_wait_for_it() -> None:
    breaker = proven()
    breaker.failed(10.0)
    assert breaker.admit(12.0)  # the trial
    assert breaker.state is BreakerState.HALF_OPEN
    assert not breaker.admit(12.0) and breaker.refusing(12.0)
    assert not breaker.admit(100.0)  # however long it takes
    assert breaker.retry_after_s(12.0) == 2


@pytest.mark.parametrize(
    ("outcome", "state"),
    [("succeeded", BreakerState.CLOSED), ("failed", BreakerState.OPEN)],
)
def test_the_trial_decides(outcome: str, state: BreakerState) -> None:
    breaker = proven()
    breaker.failed(10.0)
    assert breaker.admit(12.0)
    if outcome == "succeeded":
        breaker.succeeded()
    else:
        breaker.failed(12.5)
        assert breaker.reopen_at == 14.5
    assert breaker.state is state


def test_a_trial_that_said_nothing_lets_the_next_call_try() -> None:
    breaker = proven()
    breaker.failed(10.0)
    assert breaker.admit(12.0)
    breaker.abandoned(13.0)  # it timed out: the store's state is still unknown
    assert breaker.state is BreakerState.OPEN
    assert breaker.admit(13.0)


def test_an_abandoned_call_outside_a_trial_changes_nothing() -> None:
    breaker = proven()
    breaker.abandoned(1.0)
    assert breaker.closed
    breaker.failed(2.0)
    breaker.abandoned(2.5)
    assert breaker.refusing(2.5) and breaker.reopen_at == 4.0


def test_a_passing_probe_closes_it_from_any_state() -> None:
    for prepare in (lambda b: b.failed(1.0), lambda b: (b.failed(1.0), b.admit(5.0))):
        breaker = proven()
        prepare(breaker)
        breaker.succeeded()
        assert breaker.closed and breaker.state is BreakerState.CLOSED


def test_open_time_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Breaker(0)
