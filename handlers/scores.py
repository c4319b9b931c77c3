"""``POST /api/update-score`` and ``GET /api/top-scores``."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import tornado.web

from handlers.base import ApiHandler, ask_user_actor, body_timeout_s, header
from handlers.errors import ApiError, board_loading, refusal
from handlers.pages import page_answer, parse_limit
from handlers.strict_json import JsonRefused, loads_strict
from handlers.tornado_internals import body_timer
from server.domain.actions import ProvenAction
from server.domain.errors import DomainError, refusal_of
from server.domain.records import Applied, IncrementCommand, Replayed, SpentAction
from server.support.audit import UpdateAudit

T = TypeVar("T")
MAX_BODY_BYTES: Final = 4096
MAX_IDEMPOTENCY_KEY_CHARS: Final = 128
_BODY_FIELDS: Final = frozenset({"increment", "action_token"})


def check_content_type(content_type: str | None, has_body: bool) -> None:
    """A body must be JSON; one sent as something else is refused, not guessed at.

    Raises:
        ApiError: 415 ``unsupported_media_type``.
    """
    if not has_body or content_type is None:
        return
    media = content_type.split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise ApiError(
            415, "unsupported_media_type", "send the body as Content-Type: application/json"
        )


def parse_body(body: bytes, fields: frozenset[str] | None = None) -> dict[str, Any]:
    """The update body as an object (empty body: ``{}``); ``fields``: the ones it may
    have (default: ``increment`` and ``action_token``).

    Raises:
        ApiError: 400 ``invalid_json`` (not JSON, not an object, an unknown field, nesting
            deeper than :data:`handlers.strict_json.MAX_DEPTH`, or a key given twice).
    """
    if not body.strip():
        return {}
    try:
        data: Any = loads_strict(body)
    except JsonRefused as exc:
        raise ApiError(400, "invalid_json", str(exc)) from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    allowed = _BODY_FIELDS if fields is None else fields
    if not allowed.issuperset(data):
        unknown = sorted(set(data) - allowed)
        raise ApiError(400, "invalid_json", f"unknown field {unknown[0]!r} in the body")
    if "action_token" in data and not isinstance(data["action_token"], str):
        raise ApiError(400, "invalid_json", "'action_token' must be a string")
    return data


def parse_increment(data: dict[str, Any], max_increment: int) -> int:
    """The increment an update body asks for (absent: 1).

    Raises:
        ApiError: 400 ``invalid_increment``.
    """
    increment = data.get("increment", 1)
    # bool is an int in Python; a JSON true must not count as 1.
    if type(increment) is not int or not 1 <= increment <= max_increment:
        raise ApiError(
            400,
            "invalid_increment",
            f"'increment' must be a whole number from 1 to {max_increment}",
        )
    return increment


def proven_increment(data: dict[str, Any], action: ProvenAction) -> int:
    """The points of a proven action; an ``increment`` in the body must match them.

    Raises:
        ApiError: 400 ``invalid_increment``.
    """
    if "increment" in data and (
        type(data["increment"]) is not int or data["increment"] != action.points
    ):
        raise ApiError(
            400,
            "invalid_increment",
            f"action {action.act!r} is worth {action.points}; "
            "leave 'increment' out or make it match",
        )
    return action.points


def parse_idempotency_key(value: str | None) -> str | None:
    """Validate the optional ``Idempotency-Key`` header.

    Raises:
        ApiError: 400 ``invalid_idempotency_key``.
    """
    if value is None:
        return None
    if not value or len(value) > MAX_IDEMPOTENCY_KEY_CHARS or not value.isprintable():
        raise ApiError(
            400,
            "invalid_idempotency_key",
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} printable characters",
        )
    return value


def request_fingerprint(amount: int, action_jti: str | None) -> str:
    """A digest of what an update asks for, to tell a retry from another request that
    reuses its ``Idempotency-Key`` (IETF draft "The Idempotency-Key HTTP Header Field").

    Made of what decides the outcome, once parsed and checked: the increment and the
    proof-of-action token's ``jti`` (the user is the token's, and keys are per user).
    So the same request written differently (whitespace, key order, an ``increment`` of
    1 left out, the action's points written out) has the same fingerprint. The first
    8 bytes of the SHA-256 of the canonical JSON ``[amount, jti]``, in hex: it tells
    apart two requests of one user under one key, where 64 bits leave no doubt, and it
    is kept with each of the user's 64 keys (in memory and in the store).
    """
    canonical = json.dumps([amount, action_jti], separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@tornado.web.stream_request_body
class UpdateScoreHandler(ApiHandler):
    """Adds to the caller's score, exactly once per idempotency key, within the rate limit.

    The body is streamed so an oversized one is refused (413) without being buffered. Its
    time limit is a plain timer rather than Tornado's ``body_timeout`` (which wraps every
    body read in a timeout future: about a tenth of an update's cost).
    """

    def prepare(self) -> None:
        super().prepare()
        self._audit = UpdateAudit(self.request_id, self.client)
        self._body = bytearray()
        self._too_large = False
        self._body_timer = body_timer(self.request.connection, body_timeout_s())
        if self.inflight.draining:
            self.set_header("Connection", "close")
            self._outcome("shutting_down")
            raise ApiError(
                503, "shutting_down", "the server is shutting down", {"Retry-After": "1"}
            )
        length = header(self.request, "Content-Length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
            self._outcome("body_too_large")
            raise body_too_large()

    def data_received(self, chunk: bytes) -> None:
        if len(self._body) + len(chunk) > MAX_BODY_BYTES:
            self._too_large = True
        elif not self._too_large:
            self._body += chunk

    def _body_done(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    async def post(self) -> None:
        user_id, new_score = await self.counted(self._update)
        # The rank now, from this pod's index (which took the write before the answer).
        ranks = self.service.ranks
        rank = ranks.rank_of(user_id)
        self.finish(
            f'{{"status":"success","new_score":{new_score},'
            f'"rank":{"null" if rank is None else rank},"total":{len(ranks)}}}'
        )

    async def counted(self, update: Callable[[], Awaitable[T]]) -> T:
        """Run ``update`` once the body is in, counting a refusal's outcome (its error
        code; ``internal_error`` for anything else, answered 500)."""
        self._body_done()
        try:
            if self._too_large:
                raise body_too_large()
            return await update()
        except ApiError as error:
            self._outcome(error.code)
            raise
        except Exception:
            self._outcome("internal_error")  # answered 500 by write_error
            raise

    async def _update(self) -> tuple[str, int]:
        service = self.service
        identity = await self.authenticate(header(self.request, "Authorization"))
        self._audit.user_id = identity.user_id
        check_content_type(header(self.request, "Content-Type"), bool(self._body.strip()))
        data = parse_body(bytes(self._body))
        spent = None
        if service.actions is None:
            amount = parse_increment(data, service.settings.max_increment)
        else:
            try:
                action = service.actions.verify(
                    data.get("action_token"), identity.user_id, service.boards[0].id
                )
            except DomainError as refused:
                raise refusal(refused) from None
            amount, spent = proven_increment(data, action), action.spent
            self._audit.action = action.act
        self._audit.increment = amount
        key = parse_idempotency_key(header(self.request, "Idempotency-Key"))
        command = IncrementCommand(
            user_id=identity.user_id,
            username=identity.username,
            amount=amount,
            now_ms=service.clock_ms(),
            idempotency_key=key,
            action=spent,
            fingerprint=None if key is None else request_fingerprint(amount, _jti(spent)),
        )
        decision = await ask_user_actor(service, identity.user_id, command)
        decided_against = refusal_of(decision, service.settings.rate_limit_per_minute)
        if decided_against is not None:
            raise refusal(decided_against)
        if isinstance(decision, Replayed):
            self._outcome("replayed")
            self.set_header("Idempotent-Replayed", "true")
        else:
            self._outcome("applied")
        assert isinstance(decision, Applied | Replayed)
        self._audit.new_score = decision.new_score
        return identity.user_id, decision.new_score

    def _outcome(self, outcome: str) -> None:
        self._audit.outcome = outcome
        self.service.metrics.update_outcome(outcome)

    def on_finish(self) -> None:
        if getattr(self, "_body_timer", None) is not None:
            self._body_done()  # refused in prepare, or the client left mid-body
        audit = getattr(self, "_audit", None)  # None: refused before prepare ran
        if self._counted and audit is not None and self.request.method == "POST":
            audit.outcome = audit.outcome or f"http_{self.get_status()}"
            audit.emit(self.request.request_time())
        super().on_finish()


def _jti(spent: SpentAction | None) -> str | None:
    return None if spent is None else spent.jti


def body_too_large() -> ApiError:
    return ApiError(413, "body_too_large", f"the body must be at most {MAX_BODY_BYTES} bytes")


class TopScoresHandler(ApiHandler):
    """The current top N, from the board's published view (encoded once per change)."""

    def get(self) -> None:
        view = self.service.leaderboard.view
        if not view.loaded:
            raise board_loading()
        limit = self.get_query_argument("limit", None)
        cursor = self.get_query_argument("cursor", None)
        if limit is None and cursor is None:
            self.finish(view.top_scores.body)
            return
        # Pages of the whole board, from the rank index (complete once the board loaded).
        self._paged = True
        page = page_answer(self.service.ranks, parse_limit(limit, len(view.rows) or 10), cursor)
        self.write_json(page)

    head = get  # the same status and headers, no body (Tornado drops it for HEAD)

    def check_etag_header(self) -> bool:
        # Most readers send no If-None-Match: skip Tornado's lookup of it (a KeyError).
        return bool(self.request.headers.get_list("If-None-Match")) and super().check_etag_header()

    _paged = False

    def compute_etag(self) -> str | None:
        # The body is encoded once per change: so is its ETag (Tornado's default hashes
        # every response). Called within get's finish(): the same view as the body's.
        if self.get_status() != 200 or self._paged:
            return None
        return self.service.leaderboard.view.top_scores.etag
