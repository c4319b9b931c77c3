"""Refusals of the domain: a stable code for programs and a message for people.

They carry no transport detail (no status, no header): the web layer answers each code
through its one table (:data:`handlers.errors.HTTP_ANSWERS`). What a refusal records
beyond its message is what any transport would need to explain it: whether a bearer
token was sent (:class:`TokenRefused`), when to try again (:class:`RateLimitExceeded`).
"""

from __future__ import annotations

from typing import ClassVar

from server.domain.records import ActionReplayed, Banned, Decision, KeyReused, RateLimited


class DomainError(Exception):
    """A request the domain refuses. Each subclass has one stable :attr:`code`."""

    code: ClassVar[str]

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


# --- who is calling (server.domain.tokens) ------------------------------------------------


class TokenRefused(DomainError):
    """The caller is not authenticated.

    ``bearer_sent``: a bearer token was sent and refused, rather than none at all (no
    header, an empty token, another scheme); RFC 6750 names the error in its challenge
    only then. ``reason``: why, as a bounded label (``scoreboard_tokens_refused_total``;
    the values are :data:`server.support.metrics.REFUSAL_REASONS`).
    """

    def __init__(self, message: str, *, bearer_sent: bool, reason: str = "malformed") -> None:
        super().__init__(message)
        self.bearer_sent = bearer_sent
        self.reason = reason


class MissingToken(TokenRefused):
    """No bearer token was sent."""

    code = "missing_token"

    def __init__(self, message: str) -> None:
        super().__init__(message, bearer_sent=False, reason="missing")


class InvalidToken(TokenRefused):
    """The token sent is not a valid bearer token (or not a bearer token at all)."""

    code = "invalid_token"


# --- proof of action (server.domain.actions) ----------------------------------------------


class InvalidAction(DomainError):
    """The action token is missing, malformed, badly signed, expired or of no known type."""

    code = "invalid_action"


class ActionForbidden(DomainError):
    """The action token proves another player's action."""

    code = "action_forbidden"


# --- what the store decided about an increment (server.domain.increments) -----------------


class UpdateRefused(DomainError):
    """The store decided against an increment: nothing was applied."""


class UserBanned(UpdateRefused):
    code = "user_banned"

    def __init__(self) -> None:
        super().__init__("an admin removed this player from the board")


class ActionAlreadySpent(UpdateRefused):
    code = "action_replayed"

    def __init__(self) -> None:
        super().__init__("this action token was already used")


class IdempotencyKeyReused(UpdateRefused):
    code = "idempotency_key_reused"

    def __init__(self) -> None:
        super().__init__("this Idempotency-Key was used with a different request; use a new key")


class RateLimitExceeded(UpdateRefused):
    """Too many accepted updates in the window; ``retry_after_s`` until the next may pass."""

    code = "rate_limited"

    def __init__(self, limit_per_minute: int, retry_after_s: int) -> None:
        super().__init__(f"at most {limit_per_minute} updates per minute")
        self.retry_after_s = retry_after_s


def refusal_of(decision: Decision, limit_per_minute: int) -> UpdateRefused | None:
    """The refusal a store decision means (``None``: applied or replayed).

    Args:
        decision: what the store decided for one increment.
        limit_per_minute: the rate limit, for the message of a rate-limited increment.
    """
    if isinstance(decision, Banned):
        return UserBanned()
    if isinstance(decision, ActionReplayed):
        return ActionAlreadySpent()
    if isinstance(decision, KeyReused):
        return IdempotencyKeyReused()
    if isinstance(decision, RateLimited):
        return RateLimitExceeded(limit_per_minute, decision.retry_after_s)
    return None
