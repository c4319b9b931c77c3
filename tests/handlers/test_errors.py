"""The one table from the layers below the handlers to HTTP, as data: complete, in step with
the OpenAPI document, and the exact answers (status, headers, body fields) it makes."""

from __future__ import annotations

from typing import Any

import pytest

from actors.base import ActorCancelled, ActorStopped, MailboxFull
from actors.deadlines import AskTimedOut
from actors.user import RegistryFull
from handlers.errors import (
    FAILURES,
    HTTP_ANSWERS,
    STORE_UNAVAILABLE,
    answer_failure,
    failure_refusal,
    refusal,
)
from handlers.openapi_spec import openapi_document
from server.domain.errors import (
    ActionAlreadySpent,
    ActionForbidden,
    DomainError,
    IdempotencyKeyReused,
    InvalidAction,
    InvalidToken,
    MissingToken,
    RateLimitExceeded,
    UserBanned,
)
from server.store.port import StoreError, StoreTimeout, StoreUnavailable
from tests.server.domain.test_errors import concrete_errors

DOCUMENT = openapi_document()
REALM = 'Bearer realm="scoreboard"'

# The table as the API's clients see it: code -> (status, WWW-Authenticate, Retry-After).
EXPECTED = {
    "missing_token": (401, True, False),
    "invalid_token": (401, True, False),
    "invalid_action": (400, False, False),
    "action_forbidden": (403, False, False),
    "user_banned": (403, False, False),
    "action_replayed": (409, False, False),
    "idempotency_key_reused": (422, False, False),
    "rate_limited": (429, False, True),
    "busy": (503, False, True),
    "shutting_down": (503, False, True),
    "database_unavailable": (503, False, True),
    "database_timeout": (503, False, True),
    "database_error": (500, False, False),
}


def test_each_entry_answers_its_status_and_headers() -> None:
    table = {
        code: (answer.status, answer.challenge, answer.retry_after)
        for code, answer in HTTP_ANSWERS.items()
    }
    assert table == EXPECTED


def test_every_domain_error_and_every_failure_has_an_entry_and_nothing_else_does() -> None:
    domain = {kind.code for kind in concrete_errors()}
    failures = {failure.code for _, failure in FAILURES}
    assert domain <= set(HTTP_ANSWERS)
    assert failures <= set(HTTP_ANSWERS)
    assert set(HTTP_ANSWERS) == domain | failures  # no stale entry


def documented() -> list[tuple[str, str, int, str, dict[str, Any]]]:
    """(path, method, status, code, response) for every error code the document lists."""
    found = []
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                schema = response.get("content", {}).get("application/json", {}).get("schema")
                for part in (schema or {}).get("allOf", []):
                    for code in part.get("properties", {}).get("error", {}).get("enum", []):
                        found.append((path, method, int(status), code, response))
    return found


def test_every_entry_is_documented() -> None:
    listed = {(status, code) for _, _, status, code, _ in documented()}
    for code, answer in HTTP_ANSWERS.items():
        assert (answer.status, code) in listed, code


def test_a_route_lists_each_code_of_the_table_at_the_table_s_status_and_headers() -> None:
    checked = 0
    for path, method, status, code, response in documented():
        answer = HTTP_ANSWERS.get(code)
        if answer is None:
            continue  # a refusal a handler raises itself (tests/server/test_openapi.py)
        checked += 1
        where = f"{method.upper()} {path} {status} {code}"
        assert status == answer.status, where
        assert answer.challenge <= ("WWW-Authenticate" in response["headers"]), where
        # The WebSocket upgrades refuse a draining server themselves, without Retry-After.
        if not path.startswith("/ws/"):
            assert answer.retry_after <= ("Retry-After" in response["headers"]), where
    assert checked >= 30  # the update and admin routes' codes were all seen


def test_the_update_route_lists_every_domain_code() -> None:
    listed = {code for path, _, _, code, _ in documented() if path == "/api/update-score"}
    assert {kind.code for kind in concrete_errors()} <= listed


# --- domain errors -------------------------------------------------------------------------


def answered(error: DomainError) -> tuple[int, str, str, dict[str, str]]:
    api = refusal(error)
    return api.status, api.code, api.message, api.headers


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (MissingToken("no token"), (401, "missing_token", "no token", {"WWW-Authenticate": REALM})),
        (
            InvalidToken('bad "alg" \\ é\n', bearer_sent=True),
            (
                401,
                "invalid_token",
                'bad "alg" \\ é\n',
                {
                    "WWW-Authenticate": REALM
                    + ', error="invalid_token", error_description="bad alg  "'
                },
            ),
        ),
        (
            # Another scheme than Bearer: no bearer token was sent, so no error is named.
            InvalidToken("use Bearer", bearer_sent=False),
            (401, "invalid_token", "use Bearer", {"WWW-Authenticate": REALM}),
        ),
        (InvalidAction("expired"), (400, "invalid_action", "expired", {})),
        (ActionForbidden("not yours"), (403, "action_forbidden", "not yours", {})),
        (
            UserBanned(),
            (403, "user_banned", "an admin removed this player from the board", {}),
        ),
        (
            ActionAlreadySpent(),
            (409, "action_replayed", "this action token was already used", {}),
        ),
        (
            IdempotencyKeyReused(),
            (
                422,
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request; use a new key",
                {},
            ),
        ),
        (
            RateLimitExceeded(60, 7),
            (429, "rate_limited", "at most 60 updates per minute", {"Retry-After": "7"}),
        ),
    ],
    ids=lambda value: getattr(value, "code", ""),
)
def test_a_domain_error_is_answered_from_the_table(
    error: DomainError, expected: tuple[int, str, str, dict[str, str]]
) -> None:
    assert answered(error) == expected


# --- failures of the store and the actors --------------------------------------------------

TIMED_OUT = (
    503,
    "database_timeout",
    "the score store did not answer in time: the outcome is unknown; "
    "retry with the same Idempotency-Key",
    {"Retry-After": "1"},
)
UNAVAILABLE = (
    503,
    "database_unavailable",
    "the score store is unavailable and nothing was applied; retry later",
    {"Retry-After": "42"},
)


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (AskTimedOut(), TIMED_OUT),
        (ActorCancelled(), TIMED_OUT),  # cut by a shutdown timeout: the outcome is unknown
        (
            MailboxFull(),
            (503, "busy", "too many requests queued for this user", {"Retry-After": "1"}),
        ),
        (
            RegistryFull(),
            (503, "busy", "too many users active at once; retry shortly", {"Retry-After": "1"}),
        ),
        (
            ActorStopped(),
            (503, "shutting_down", "the server is shutting down", {"Retry-After": "1"}),
        ),
        (StoreUnavailable("no primary"), UNAVAILABLE),
        (StoreTimeout("wtimeout"), TIMED_OUT),
        (
            StoreError("disk I/O error"),
            (500, "database_error", "the score store failed; retry later", {}),
        ),
    ],
    ids=lambda value: type(value).__name__,
)
def test_a_failure_is_answered_from_the_table(
    failure: Exception, expected: tuple[int, str, str, dict[str, str]]
) -> None:
    asked: list[bool] = []

    def store_retry_after_s() -> int:
        asked.append(True)
        return 42

    api = failure_refusal(failure, store_retry_after_s)
    assert (api.status, api.code, api.message, api.headers) == expected
    # Only an unavailable store's answer waits for the store to be tried again.
    assert bool(asked) == (expected[1] == "database_unavailable")


def test_a_store_refusing_at_once_is_answered_as_an_unavailable_store() -> None:
    api = answer_failure(STORE_UNAVAILABLE, lambda: 42)
    assert (api.status, api.code, api.message, api.headers) == UNAVAILABLE


def test_a_failure_of_another_kind_is_no_refusal() -> None:
    with pytest.raises(TypeError):
        failure_refusal(RuntimeError("bug"), lambda: 1)
