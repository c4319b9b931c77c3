"""A live connection's token lease: when it is warned and closed, the messages it gets,
and the client's ``refresh`` message."""

from __future__ import annotations

import json
from typing import Any

import pytest

from server.domain.token_lease import (
    TOKEN_EXPIRED_CLOSE_CODE,
    WARNING_S,
    LeaseTimes,
    RefreshRequest,
    lease_times,
    parse_client_message,
    seconds_left,
    token_expiring,
    token_refreshed,
    token_refused,
)

NOW = 1_700_000_000.0


def test_a_connection_is_closed_when_the_token_plus_the_leeway_expires() -> None:
    times = lease_times(expires_at=NOW + 600, leeway_s=30, now=NOW)
    assert times.close_at == NOW + 630


def test_a_connection_is_warned_thirty_seconds_before_it_is_closed() -> None:
    assert WARNING_S == 30.0
    assert lease_times(expires_at=NOW + 600, leeway_s=30, now=NOW) == LeaseTimes(
        warn_at=NOW + 600, close_at=NOW + 630
    )
    assert lease_times(expires_at=NOW + 600, leeway_s=0, now=NOW) == LeaseTimes(
        warn_at=NOW + 570, close_at=NOW + 600
    )


def test_a_connection_with_less_than_the_warning_left_is_warned_at_once() -> None:
    assert lease_times(expires_at=NOW + 10, leeway_s=0, now=NOW) == LeaseTimes(
        warn_at=NOW, close_at=NOW + 10
    )
    assert lease_times(expires_at=NOW + 20, leeway_s=10, now=NOW).warn_at == NOW
    assert lease_times(expires_at=NOW + 21, leeway_s=10, now=NOW).warn_at == NOW + 1


def test_a_token_already_past_its_close_is_warned_now_and_closed_at_once() -> None:
    times = lease_times(expires_at=NOW - 100, leeway_s=30, now=NOW)
    assert times == LeaseTimes(warn_at=NOW, close_at=NOW - 70)


@pytest.mark.parametrize(
    ("left", "expected"),
    [(30.0, 30), (29.2, 30), (29.9999, 30), (0.1, 1), (0.0, 0), (-5.0, 0), (600.5, 601)],
)
def test_seconds_left_are_rounded_up_and_never_negative(left: float, expected: int) -> None:
    assert seconds_left(NOW + left, NOW) == expected


def test_the_warning_says_how_many_seconds_are_left() -> None:
    assert json.loads(token_expiring(NOW + 29.5, NOW)) == {"event": "token_expiring", "in_s": 30}
    assert json.loads(token_expiring(NOW - 1, NOW)) == {"event": "token_expiring", "in_s": 0}


def test_the_refreshed_answer_says_how_long_the_fresh_token_holds() -> None:
    assert json.loads(token_refreshed(NOW + 3600, NOW)) == {
        "event": "token_refreshed",
        "expires_in_s": 3600,
    }


def test_the_refused_answer_carries_the_error_and_its_message() -> None:
    message = 'the token\'s "sub" is another player'
    assert json.loads(token_refused("invalid_token", message)) == {
        "event": "token_refused",
        "error": "invalid_token",
        "message": message,
    }


def test_the_close_code_is_one_of_the_applications() -> None:
    assert 4000 <= TOKEN_EXPIRED_CLOSE_CODE <= 4999


@pytest.mark.parametrize(
    "message", ['{"event": "refresh", "token": "a.b.c"}', b'{"event":"refresh","token":"a.b.c"}']
)
def test_a_refresh_message_carries_its_token(message: str | bytes) -> None:
    assert parse_client_message(message) == RefreshRequest("a.b.c")


@pytest.mark.parametrize("token", [None, "", 7, ["a.b.c"], {"t": "a.b.c"}])
def test_a_refresh_message_without_a_token_string_has_no_token(token: Any) -> None:
    body = {"event": "refresh"} if token is None else {"event": "refresh", "token": token}
    assert parse_client_message(json.dumps(body)) == RefreshRequest(None)


@pytest.mark.parametrize(
    "message",
    [
        '{"event": "ping"}',
        '{"event": "Refresh", "token": "a.b.c"}',
        '{"token": "a.b.c"}',
        '["refresh", "a.b.c"]',
        '"refresh"',
        "null",
        "refresh",
        "",
        "{",
        b"\xff\xfe\xfd",
        b"",
        b"\x00",
    ],
)
def test_any_other_message_is_ignored(message: str | bytes) -> None:
    assert parse_client_message(message) is None


def test_a_client_message_nesting_thousands_deep_is_ignored_not_a_crash() -> None:
    # json.loads raises RecursionError (not a ValueError) on such JSON; a client's message
    # of a few kilobytes (within the WebSocket's message bound) is enough.
    for message in ("[" * 3000, '{"event": "refresh", "token": ' + "[" * 3000):
        assert parse_client_message(message) is None
