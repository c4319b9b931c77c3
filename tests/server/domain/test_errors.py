"""Domain errors: stable codes, and the refusal each store decision means."""

from __future__ import annotations

import pytest

from server.domain.errors import (
    ActionAlreadySpent,
    DomainError,
    IdempotencyKeyReused,
    InvalidToken,
    MissingToken,
    RateLimitExceeded,
    UserBanned,
    refusal_of,
)
from server.domain.records import (
    ActionReplayed,
    Applied,
    Banned,
    Decision,
    KeyReused,
    RateLimited,
    Replayed,
    UserRecord,
)


def concrete_errors() -> list[type[DomainError]]:
    """Every domain error class with a code of its own."""
    found, pending = [], [DomainError]
    while pending:
        kind = pending.pop()
        pending.extend(kind.__subclasses__())
        if "code" in vars(kind):
            found.append(kind)
    return found


def test_each_code_names_one_kind_of_error() -> None:
    codes = [kind.code for kind in concrete_errors()]
    assert len(codes) == len(set(codes)) >= 8
    assert all(code.isidentifier() and code.islower() for code in codes)


def test_a_domain_error_has_a_code_and_a_message_and_nothing_of_http() -> None:
    error = InvalidToken("the token has expired", bearer_sent=True)
    assert (error.code, error.message, str(error)) == (
        "invalid_token",
        "the token has expired",
        "invalid_token: the token has expired",
    )
    assert not hasattr(error, "status") and not hasattr(error, "headers")
    assert MissingToken("none").bearer_sent is False


@pytest.mark.parametrize(
    ("decision", "expected", "message"),
    [
        (Banned(), UserBanned, "an admin removed this player from the board"),
        (ActionReplayed(), ActionAlreadySpent, "this action token was already used"),
        (
            KeyReused(),
            IdempotencyKeyReused,
            "this Idempotency-Key was used with a different request; use a new key",
        ),
        (RateLimited(retry_after_s=7), RateLimitExceeded, "at most 30 updates per minute"),
    ],
)
def test_a_refused_increment_is_a_domain_error(
    decision: Decision, expected: type[DomainError], message: str
) -> None:
    refused = refusal_of(decision, limit_per_minute=30)
    assert type(refused) is expected
    assert refused.message == message


def test_the_rate_limit_refusal_says_when_to_come_back() -> None:
    refused = refusal_of(RateLimited(retry_after_s=7), limit_per_minute=30)
    assert isinstance(refused, RateLimitExceeded)
    assert refused.retry_after_s == 7


def test_an_applied_or_replayed_increment_is_no_refusal() -> None:
    record = UserRecord("u", "U", score=3, v=1, reached_ms=0)
    assert refusal_of(Applied(record), 30) is None
    assert refusal_of(Replayed(3), 30) is None
