"""The log throttle, as data; and a logger that writes through it."""

from __future__ import annotations

import logging

import pytest

from server.support.log_throttle import LogThrottle, error_key, log_throttled


def test_the_first_line_goes_then_one_per_interval_with_the_count_left_out() -> None:
    throttle = LogThrottle(interval_s=10)
    decisions = [throttle.admit("disk full", now) for now in (0, 1, 2, 9.9, 10, 11, 25)]
    assert decisions == [0, None, None, None, 3, None, 1]


def test_keys_are_throttled_apart() -> None:
    throttle = LogThrottle(interval_s=10)
    assert throttle.admit("a", 0) == 0
    assert throttle.admit("b", 0) == 0
    assert throttle.admit("a", 1) is None
    assert throttle.admit("b", 1) is None


def test_it_remembers_a_bounded_number_of_keys_oldest_out() -> None:
    throttle = LogThrottle(interval_s=10, max_keys=2)
    assert throttle.admit("a", 0) == 0
    assert throttle.admit("b", 0) == 0
    assert throttle.admit("c", 0) == 0  # "a" forgotten
    assert throttle.admit("b", 1) is None
    assert throttle.admit("a", 1) == 0  # written again: it was forgotten


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        LogThrottle(interval_s=-1)
    with pytest.raises(ValueError):
        LogThrottle(max_keys=0)


def test_identical_errors_share_a_key_and_different_ones_do_not() -> None:
    assert error_key(OSError("disk full")) == error_key(OSError("disk full"))
    assert error_key(OSError("disk full")) != error_key(ValueError("disk full"))
    assert len(error_key(ValueError("x" * 1000))[1]) == 200


def test_a_throttled_logger_writes_once_and_then_the_count(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = iter([0.0, 1.0, 2.0, 11.0])
    monkeypatch.setattr("server.support.log_throttle.time.monotonic", lambda: next(clock))
    logger = logging.getLogger("tests.throttled")
    throttle = LogThrottle(interval_s=10)
    error = OSError("disk full")
    with caplog.at_level(logging.ERROR, logger="tests.throttled"):
        for _ in range(4):
            log_throttled(logger, throttle, logging.ERROR, "write failed: %s", error, key=1)
    assert [r.getMessage() for r in caplog.records] == ["write failed: disk full"] * 2
    assert not hasattr(caplog.records[0], "suppressed")
    assert caplog.records[1].suppressed == 2  # type: ignore[attr-defined]
