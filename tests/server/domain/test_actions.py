"""ActionVerifier: what a proof-of-action token must be, and what it is worth."""

from __future__ import annotations

import time

import jwt
import pytest

from server.domain.actions import ActionVerifier
from server.domain.errors import DomainError
from server.domain.increments import IncrementPolicy, decide
from server.domain.records import (
    ActionReplayed,
    Applied,
    IncrementCommand,
    RateLimited,
    SpentAction,
)
from tests.conftest import mint_action_token

ACTION_SECRET = "action-service-secret-of-32-bytes-or-more"
POINTS = {"kill": 10, "quest": 50}


def verifier() -> ActionVerifier:
    return ActionVerifier(ACTION_SECRET, POINTS, leeway_s=5)


def code_of(token: object, player: str = "alice") -> str:
    with pytest.raises(DomainError) as caught:
        verifier().verify(token, player, "main")
    return caught.value.code


def test_a_valid_token_is_worth_its_action_points_and_spends_its_jti() -> None:
    token = mint_action_token(ACTION_SECRET, "alice", "quest", "j-1", ttl_s=60)
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    proven = verifier().verify(token, "alice", "main")
    assert (proven.act, proven.points) == ("quest", 50)
    # Kept until the token could no longer pass: expiry plus the leeway.
    assert proven.spent == SpentAction("j-1", (exp + 5) * 1000)


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (None, "invalid_action"),
        ("", "invalid_action"),
        (42, "invalid_action"),
        ("not.a.token", "invalid_action"),
        ("x" * 5000, "invalid_action"),
        # Minted when the test runs, not when it is collected: a token minted then had
        # expired (60 s) by the time a long test run reached it.
        (
            lambda: mint_action_token("another-secret-of-32-bytes-or-more!!", "alice", "kill", "j"),
            "invalid_action",
        ),
        (
            lambda: mint_action_token(ACTION_SECRET, "alice", "kill", "j", ttl_s=-60),
            "invalid_action",
        ),
        (lambda: mint_action_token(ACTION_SECRET, "alice", "dance", "j"), "invalid_action"),
        (lambda: mint_action_token(ACTION_SECRET, "bob", "kill", "j"), "action_forbidden"),
    ],
    ids=[
        "missing",
        "empty",
        "not-a-string",
        "garbage",
        "oversized",
        "wrong-key",
        "expired",
        "unknown-type",
        "other-player",
    ],
)
def test_bad_action_tokens_are_refused(token: object, expected: str) -> None:
    assert code_of(token() if callable(token) else token) == expected


@pytest.mark.parametrize("missing", ["sub", "jti", "act", "exp"])
def test_every_claim_is_required(missing: str) -> None:
    claims = {"sub": "alice", "jti": "j", "act": "kill", "exp": int(time.time()) + 60}
    del claims[missing]
    assert code_of(jwt.encode(claims, ACTION_SECRET, algorithm="HS256")) == "invalid_action"


def test_alg_none_and_non_string_jti_are_refused() -> None:
    claims = {"sub": "alice", "jti": "j", "act": "kill", "exp": int(time.time()) + 60}
    unsigned = jwt.encode(claims, None, algorithm="none")
    assert code_of(unsigned) == "invalid_action"
    numeric = jwt.encode({**claims, "jti": 7}, ACTION_SECRET, algorithm="HS256")
    assert code_of(numeric) == "invalid_action"


def command(jti: str, now_ms: int = 1_000, key: str | None = None) -> IncrementCommand:
    return IncrementCommand(
        "alice", "Alice", 10, now_ms, idempotency_key=key, action=SpentAction(jti, 61_000)
    )


def test_decide_spends_a_jti_once_and_forgets_it_after_expiry() -> None:
    policy = IncrementPolicy(rate_limit_per_minute=0)
    first = decide(None, command("j-1"), policy)
    assert isinstance(first, Applied)
    assert first.record.used_actions == (("j-1", 61_000),)
    assert isinstance(decide(first.record, command("j-1", 2_000), policy), ActionReplayed)
    second = decide(first.record, command("j-2", 2_000), policy)
    assert isinstance(second, Applied) and second.new_score == 20
    # Past its expiry the jti no longer counts (the token itself can no longer pass):
    # its slot is reused, so the log does not grow.
    later = decide(second.record, command("j-3", 61_000), policy)
    assert isinstance(later, Applied)
    assert later.record.used_actions == (("j-3", 61_000), ("j-2", 61_000))
    assert isinstance(decide(later.record, command("j-2", 61_000), policy), Applied)


def test_an_idempotent_retry_of_a_spent_action_answers_its_first_result() -> None:
    policy = IncrementPolicy()
    first = decide(None, command("j-1", key="k"), policy)
    assert isinstance(first, Applied)
    retry = decide(first.record, command("j-1", 2_000, key="k"), policy)
    assert not isinstance(retry, ActionReplayed)
    assert retry.new_score == 10  # type: ignore[union-attr]


def test_a_replay_is_refused_before_the_rate_limit_is_consulted() -> None:
    policy = IncrementPolicy(rate_limit_per_minute=1)
    first = decide(None, command("j-1"), policy)
    assert isinstance(first, Applied)
    assert isinstance(decide(first.record, command("j-1", 1_500), policy), ActionReplayed)


def test_a_long_lived_action_token_is_refused() -> None:
    token = mint_action_token(ACTION_SECRET, "alice", "kill", "j", ttl_s=10**6)
    assert code_of(token) == "invalid_action"
    fine = mint_action_token(ACTION_SECRET, "alice", "kill", "j", ttl_s=300)
    assert verifier().verify(fine, "alice", "main").points == 10


def test_a_live_jti_is_never_forgotten_to_make_room() -> None:
    policy = IncrementPolicy(rate_limit_per_minute=0, used_actions=3)
    record = None
    for i in range(3):
        decision = decide(record, command(f"j-{i}", 1_000 + i), policy)
        assert isinstance(decision, Applied)
        record = decision.record
    full = decide(record, command("j-3", 2_000), policy)
    assert isinstance(full, RateLimited) and full.retry_after_s >= 1
    assert record is not None
    assert isinstance(decide(record, command("j-0", 2_000), policy), ActionReplayed)


def board_token(board: object) -> str:
    now = int(time.time())
    claims = {"sub": "alice", "jti": "j", "act": "kill", "iat": now, "exp": now + 60}
    return jwt.encode({**claims, "brd": board}, ACTION_SECRET, algorithm="HS256")


def test_a_token_naming_its_board_is_good_there_only() -> None:
    assert verifier().verify(board_token("laps"), "alice", "laps").points == 10
    with pytest.raises(DomainError) as elsewhere:
        verifier().verify(board_token("laps"), "alice", "main")
    assert elsewhere.value.code == "action_forbidden"
    assert "board 'laps'" in elsewhere.value.message
    assert code_of(board_token(7)) == "invalid_action"  # not a board id
    # Without the claim: good on any board.
    plain = mint_action_token(ACTION_SECRET, "alice", "kill", "j")
    assert verifier().verify(plain, "alice", "laps").points == 10
