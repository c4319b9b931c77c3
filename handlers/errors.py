"""Errors that reach API clients, and the one table that answers the layers below in HTTP.

Handlers raise :class:`ApiError` themselves for what only HTTP knows of (a body too large,
a wrong content type, a draining server). What the layers below refuse reaches a client
through :data:`HTTP_ANSWERS`, the status and headers of each code:

- domain errors (:mod:`server.domain.errors`): :func:`refusal` answers one;
- failures of the store or of a user's actor (:data:`FAILURES`, nothing a client did
  wrong): :func:`failure_refusal` answers one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

import tornado.web

from actors.base import ActorCancelled, ActorStopped, MailboxFull
from actors.deadlines import AskTimedOut
from actors.user import RegistryFull
from server.domain.errors import (
    ActionAlreadySpent,
    ActionForbidden,
    DomainError,
    IdempotencyKeyReused,
    InvalidAction,
    InvalidToken,
    MissingToken,
    RateLimitExceeded,
    TokenRefused,
    UserBanned,
)
from server.store.port import StoreError, StoreTimeout, StoreUnavailable


class ApiError(tornado.web.HTTPError):
    """An error answered as ``{"error": code, "message": message}`` with ``status``.

    It is a Tornado ``HTTPError``, so raising it from a handler answers the request (through
    the handler's ``write_error``) without logging a traceback. ``headers`` are added to the
    response (e.g. ``Retry-After``).
    """

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """How one error code is answered.

    ``challenge``: with RFC 6750's ``WWW-Authenticate`` (see :func:`challenge`).
    ``retry_after``: with ``Retry-After``, the seconds the refusal gives.
    """

    status: int
    challenge: bool = False
    retry_after: bool = False


# Every code the layers below the handlers refuse with, and its answer: the only place
# their HTTP status is written down (tests/handlers/test_errors.py holds it to the
# OpenAPI document).
HTTP_ANSWERS: Final[Mapping[str, HttpAnswer]] = MappingProxyType(
    {
        # Domain errors.
        MissingToken.code: HttpAnswer(401, challenge=True),
        InvalidToken.code: HttpAnswer(401, challenge=True),
        InvalidAction.code: HttpAnswer(400),
        ActionForbidden.code: HttpAnswer(403),
        UserBanned.code: HttpAnswer(403),
        ActionAlreadySpent.code: HttpAnswer(409),
        IdempotencyKeyReused.code: HttpAnswer(422),
        RateLimitExceeded.code: HttpAnswer(429, retry_after=True),
        # Failures of the store or of a user's actor (FAILURES).
        "busy": HttpAnswer(503, retry_after=True),
        "shutting_down": HttpAnswer(503, retry_after=True),
        "database_unavailable": HttpAnswer(503, retry_after=True),
        "database_timeout": HttpAnswer(503, retry_after=True),
        "database_error": HttpAnswer(500),
    }
)

REALM: Final = "scoreboard"
# RFC 6750's error_description: printable ASCII without '"' and '\\'.
_NOT_IN_DESCRIPTION: Final = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")


def challenge(
    error: str | None = None, description: str | None = None, scope: str | None = None
) -> dict[str, str]:
    """The ``WWW-Authenticate`` header of a refusal (RFC 6750 section 3), to pass as an
    ``ApiError``'s headers: the Bearer scheme and realm; ``error`` only when a bearer token
    was sent and refused (``invalid_token``, 401) or lacks a scope (``insufficient_scope``,
    403), with ``description`` (characters the RFC forbids there are dropped) and ``scope``.
    """
    value = f'Bearer realm="{REALM}"'
    if error is not None:
        value += f', error="{error}"'
    if description:
        value += f', error_description="{_NOT_IN_DESCRIPTION.sub("", description)}"'
    if scope:
        value += f', scope="{scope}"'
    return {"WWW-Authenticate": value}


def refusal(error: DomainError) -> ApiError:
    """The answer to a domain error, from :data:`HTTP_ANSWERS` (raise it ``from None``).

    Raises:
        KeyError: ``error``'s code has no entry (a test keeps every code in the table).
    """
    answer = HTTP_ANSWERS[error.code]
    headers: dict[str, str] = {}
    if answer.challenge:
        sent = isinstance(error, TokenRefused) and error.bearer_sent
        headers = challenge(error.code, error.message) if sent else challenge()
    if answer.retry_after and isinstance(error, RateLimitExceeded):
        headers["Retry-After"] = str(error.retry_after_s)
    return ApiError(answer.status, error.code, error.message, headers)


@dataclass(frozen=True, slots=True)
class Failure:
    """How a failure below the handlers is answered: its code and message, and the
    seconds of its ``Retry-After`` (``None``: the store's own, until it is tried again)."""

    code: str
    message: str
    retry_after_s: int | None = 1


_TIMED_OUT: Final = Failure(
    "database_timeout",
    "the score store did not answer in time: the outcome is unknown; "
    "retry with the same Idempotency-Key",
)
STORE_UNAVAILABLE: Final = Failure(
    "database_unavailable",
    "the score store is unavailable and nothing was applied; retry later",
    None,
)

# Failures of the store or of a user's actor, by exception type; the first match wins
# (ActorCancelled before ActorStopped, StoreError last).
FAILURES: Final[tuple[tuple[type[Exception], Failure], ...]] = (
    (AskTimedOut, _TIMED_OUT),
    # Stopped mid-write by a shutdown timeout: it may or may not have been applied, as
    # when a deadline passes.
    (ActorCancelled, _TIMED_OUT),
    (MailboxFull, Failure("busy", "too many requests queued for this user")),
    (RegistryFull, Failure("busy", "too many users active at once; retry shortly")),
    (ActorStopped, Failure("shutting_down", "the server is shutting down")),
    (StoreUnavailable, STORE_UNAVAILABLE),
    (StoreTimeout, _TIMED_OUT),
    (StoreError, Failure("database_error", "the score store failed; retry later")),
)
FAILURE_TYPES: Final = tuple(kind for kind, _ in FAILURES)


def failure_refusal(exc: Exception, store_retry_after_s: Callable[[], int]) -> ApiError:
    """The answer to a failure of :data:`FAILURE_TYPES` (raise it ``from None``).

    Args:
        exc: what the store or the actor raised.
        store_retry_after_s: the seconds until the store is tried again (the guarded
            store's ``retry_after_s``), asked only for an unavailable store.

    Raises:
        TypeError: ``exc`` is none of :data:`FAILURE_TYPES`.
    """
    for kind, failure in FAILURES:
        if isinstance(exc, kind):
            return answer_failure(failure, store_retry_after_s)
    raise TypeError(f"no answer for {type(exc).__name__}") from exc


def answer_failure(failure: Failure, store_retry_after_s: Callable[[], int]) -> ApiError:
    """The answer to ``failure``, with its status from :data:`HTTP_ANSWERS`."""
    answer = HTTP_ANSWERS[failure.code]
    headers: dict[str, str] = {}
    if answer.retry_after:
        seconds = store_retry_after_s() if failure.retry_after_s is None else failure.retry_after_s
        headers["Retry-After"] = str(seconds)
    return ApiError(answer.status, failure.code, failure.message, headers)


def board_loading() -> ApiError:
    """503 ``not_ready`` while the board (and the rank index, loaded before it) loads:
    what every read of the board answers until then."""
    return ApiError(503, "not_ready", "the leaderboard is loading", {"Retry-After": "1"})
