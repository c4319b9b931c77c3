"""The base of every JSON handler: error rendering, request counting and latency metrics."""

from __future__ import annotations

import functools
import itertools
import json
import logging
import re
import secrets
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Final

import tornado.web
from tornado.httputil import HTTPServerRequest

from actors.base import Actor
from handlers.context import Backend
from handlers.errors import (
    FAILURE_TYPES,
    STORE_UNAVAILABLE,
    ApiError,
    answer_failure,
    failure_refusal,
    refusal,
)
from handlers.inflight import InFlight
from server.domain.errors import TokenRefused
from server.domain.throttle import client_address
from server.domain.tokens import Identity, verify_fetching

log = logging.getLogger(__name__)

# Codes for errors Tornado raises itself (unknown route, wrong method, ...).
_STATUS_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    500: "internal_error",
    503: "unavailable",
}


_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]+")
JSON_CONTENT_TYPE: Final = "application/json; charset=utf-8"
HSTS: Final = "max-age=31536000"  # Strict-Transport-Security, on every answer over TLS
BODY_TIMEOUT_S = 10.0  # a client trickling a body cannot hold a request open for longer
# CORS: the response headers a browser script may read beyond the safelisted ones, and
# the request headers it may send.
EXPOSED_HEADERS: Final = "Retry-After, ETag, X-Request-ID, Idempotent-Replayed"
ALLOWED_REQUEST_HEADERS: Final = "Authorization, Content-Type, Idempotency-Key, X-Request-ID"


def header(request: HTTPServerRequest, name: str) -> str | None:
    """A request header's value (repeated ones joined by commas, as ``headers[name]``), or
    ``None``. Unlike ``headers.get``, a missing header costs no ``KeyError``: several
    headers are usually absent from every request (X-Request-ID, Origin, ...)."""
    values = request.headers.get_list(name)
    return ",".join(values) if values else None


_access_log = logging.getLogger("scoreboard.access")


def access_log(request: HTTPServerRequest, status: int) -> None:
    """The access log line of an answered request: DEBUG below 400, INFO for client errors,
    WARNING for server errors."""
    level = logging.DEBUG if status < 400 else logging.INFO if status < 500 else logging.WARNING
    if _access_log.isEnabledFor(level):
        _access_log.log(
            level,
            "request",
            extra={
                "method": request.method,
                "path": request.path,
                "status": status,
                "duration_ms": round(request.request_time() * 1000, 3),
                "remote_ip": request.remote_ip,
            },
        )


def body_timeout_s() -> float:
    """:data:`BODY_TIMEOUT_S`, read when used (tests lower it)."""
    return BODY_TIMEOUT_S


# New request ids: a random prefix per process and a counter (unique across pods and
# restarts, and far cheaper than a uuid4 per request).
_ID_PREFIX = secrets.token_hex(6)
_ID_COUNTER = itertools.count(1)


class ApiHandler(tornado.web.RequestHandler):
    """Answers errors as ``{"error": code, "message": text}`` and records each request."""

    service: Backend
    inflight: InFlight
    route: str

    def initialize(self, service: Backend, inflight: InFlight, route: str = "other") -> None:
        self.service = service
        self.inflight = inflight
        self.route = route
        inflight.started()
        self._counted = True
        self.request_id = request_id(header(self.request, "X-Request-ID"))

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", JSON_CONTENT_TYPE)
        self.set_header("X-Content-Type-Options", "nosniff")

    def on_connection_close(self) -> None:
        # The client left mid-request; Tornado may then never call finish() (a streamed
        # body cut short), so the request stops counting as in flight here too.
        super().on_connection_close()
        self.on_finish()

    def on_finish(self) -> None:
        if self._counted:
            self._counted = False
            self.inflight.finished()
            self.service.metrics.request_done(
                self.route, self.request.method, self.get_status(), self.request.request_time()
            )

    def write_json(self, body: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(body, separators=(",", ":"), ensure_ascii=False))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # send_error cleared the headers: browsers must read errors too, and clients
        # quote the request id when they report one.
        self.common_headers()
        if status_code == 405:
            self.set_header("Allow", ", ".join(allowed_methods(type(self))))
        render_error(self, status_code, kwargs.get("exc_info"))

    def prepare(self) -> None:
        self.common_headers()

    @functools.cached_property
    def client(self) -> str:
        """The client's address (``X-Forwarded-For`` is believed from trusted proxies only)."""
        return client_of(self.request, self.service)

    async def authenticate(self, header: str | None) -> Identity:
        """Verify the bearer token of this request (see :func:`authenticate`)."""
        return await authenticate(
            self.service, self.client, lambda: self.service.verifier.verify_header(header)
        )

    def common_headers(self) -> None:
        """Headers of every answer, errors included."""
        self.set_header("X-Request-ID", self.request_id)
        if self.service.settings.uses_tls:
            self.set_header("Strict-Transport-Security", HSTS)
        if self.request.method not in ("GET", "HEAD") or self.route.startswith("admin"):
            self.set_header("Cache-Control", "no-store")  # writes, and player data
        self.allow_origin()

    def allow_origin(self) -> None:
        """CORS: let an allowed browser origin read the answer."""
        origin = header(self.request, "Origin")
        if origin is not None and self.service.origins.allows(origin):
            self.set_header(
                "Access-Control-Allow-Origin", "*" if self.service.origins.any else origin
            )
            self.set_header("Access-Control-Expose-Headers", EXPOSED_HEADERS)
            self.add_header("Vary", "Origin")

    def options(self, *args: Any) -> None:
        """CORS preflight, answered from ``SCOREBOARD_ALLOWED_ORIGINS``."""
        origin = header(self.request, "Origin")
        if origin is None or not self.service.origins.allows(origin):
            raise ApiError(403, "origin_not_allowed", "this origin may not call the API")
        # This route's own methods, as its 405 answers list them in Allow.
        self.set_header("Access-Control-Allow-Methods", ", ".join(allowed_methods(type(self))))
        self.set_header("Access-Control-Allow-Headers", ALLOWED_REQUEST_HEADERS)
        self.set_header("Access-Control-Max-Age", "600")
        self.set_status(204)
        self.finish()


def allowed_methods(handler: type[tornado.web.RequestHandler]) -> list[str]:
    """The HTTP methods a handler class implements itself (RFC 9110's ``Allow``)."""
    base = tornado.web.RequestHandler
    return [
        method
        for method in handler.SUPPORTED_METHODS
        if getattr(handler, method.lower(), None) is not getattr(base, method.lower(), None)
    ]


async def ask_user_actor(service: Backend, user_id: str, message: Any) -> Any:
    """Ask the user's actor and map its failures to API errors.

    Refused at once while the store is known to be down; bounded by
    ``SCOREBOARD_UPDATE_TIMEOUT_S`` (past it the request is answered, though the message
    may still be applied later).

    Raises:
        ApiError: a failure of the store or the actor, answered by
            :func:`handlers.errors.failure_refusal`: 503 ``busy`` (mailbox full),
            ``shutting_down``, ``database_unavailable`` (nothing applied) or
            ``database_timeout`` (outcome unknown); 500 ``database_error`` (the store failed
            unexpectedly). A write cut by a shutdown timeout is a ``database_timeout`` too.
    """
    return await ask_actor(service, lambda: service.users.actor_for(user_id), message)


async def ask_actor(service: Backend, find: Callable[[], Actor[Any]], message: Any) -> Any:
    """Ask the actor ``find`` gives (a user's, or a player's on one board: it may raise
    as ``UserRegistry.actor_for`` does), as :func:`ask_user_actor` describes.

    Raises:
        ApiError: as :func:`ask_user_actor`.
    """
    store = service.store
    if store.refusing():
        raise answer_failure(STORE_UNAVAILABLE, store.retry_after_s)
    try:
        reply = find().ask(message)
        deadlines = service.ask_deadlines
        deadlines.watch(reply)
        try:
            return await reply
        finally:
            deadlines.forget(reply)
    except FAILURE_TYPES as exc:
        raise failure_refusal(exc, store.retry_after_s) from None


def client_of(request: HTTPServerRequest, service: Backend) -> str:
    """The address a request came from, through the service's trusted proxies."""
    return client_address(
        request.remote_ip or "", header(request, "X-Forwarded-For"), service.trusted_proxies
    )


async def authenticate(service: Backend, client: str, verify: Callable[[], Identity]) -> Identity:
    """Run ``verify`` unless ``client`` failed too often lately (a token naming a key its
    issuer's JWKS lacks has the set refetched first, :func:`verify_fetching`); count its
    failures, by address and by reason (``scoreboard_tokens_refused_total``).

    Raises:
        ApiError: 429 ``auth_throttled``, or the answer to the verifier's
            :class:`~server.domain.errors.TokenRefused` (401).
    """
    now = time.monotonic()
    wait = service.auth_throttle.retry_after(client, now)
    if wait is not None:
        raise ApiError(
            429,
            "auth_throttled",
            "too many failed authentications from this address",
            {"Retry-After": str(wait)},
        )
    try:
        return await verify_fetching(verify)
    except TokenRefused as refused:
        service.auth_throttle.failed(client, now)
        service.metrics.tokens_refused.labels(refused.reason).inc()
        raise refusal(refused) from None


def request_id(given: str | None) -> str:
    """The caller's ``X-Request-ID`` if it is a sane one, else a new random id."""
    # Letters, digits, '-' and '_' only: nothing token-shaped (JWTs have dots) can reach
    # the logs through this header.
    if given and len(given) <= 64 and _REQUEST_ID.fullmatch(given):
        return given
    return f"{_ID_PREFIX}-{next(_ID_COUNTER):x}"


def render_error(handler: tornado.web.RequestHandler, status_code: int, exc_info: Any) -> None:
    """Finish ``handler`` with ``{"error": code, "message": text}`` for ``exc_info``."""
    exc = exc_info[1] if exc_info else None
    if isinstance(exc, ApiError):
        for name, value in exc.headers.items():
            handler.set_header(name, value)
        code, message = exc.code, exc.message
    else:
        code = _STATUS_CODES.get(status_code, "error")
        if isinstance(exc, tornado.web.HTTPError) and exc.log_message:
            message = exc.log_message % exc.args if exc.args else exc.log_message
        else:
            message = HTTPStatus(status_code).phrase
    handler.set_header("Content-Type", JSON_CONTENT_TYPE)
    handler.finish(json.dumps({"error": code, "message": message}))


class NotFoundHandler(ApiHandler):
    """Every unknown path: a JSON 404."""

    def prepare(self) -> None:
        super().prepare()
        raise ApiError(404, "not_found", f"no route for {self.request.path}")
