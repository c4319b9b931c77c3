"""``GET /api/top-scores`` and ``GET /api/players/{id|me}`` without a ``RequestHandler``,
for the plain case.

The top 10 is the most read route and its answer is encoded once per change; a player's
rank costs a few tree steps in the rank index. So what such a read costs is mostly
Tornado's per-request machinery: a ``RequestHandler`` (its headers, its UI namespaces, a
coroutine run as a task). :class:`FastReads` sits in front of the application as its
router. A plain read (GET, no body, no ``Origin``, no ``If-None-Match``, the board
loaded) of the top 10, or of a ranked player (``me``: with a valid token, from an
address not throttled), is answered at once by :class:`ReadAnswer`, with the same status,
headers and body as :class:`handlers.scores.TopScoresHandler` or
:class:`handlers.players.PlayerHandler`; every other request goes to the application
unchanged (CORS, conditional requests, errors such as 401 or 404, other methods and
routes), which decides again from the start.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any, Final

import tornado
from tornado import httputil
from tornado.routing import Router
from tornado.web import Application

from handlers.base import HSTS, JSON_CONTENT_TYPE, access_log, client_of, header, request_id
from handlers.context import Backend
from handlers.errors import ApiError
from handlers.players import ME, player_answer
from server.domain.errors import TokenRefused
from server.domain.tokens import MAX_USER_ID_CHARS

TOP_SCORES_PATH: Final = "/api/top-scores"
PLAYERS_PREFIX: Final = "/api/players/"
_PAGING: Final = frozenset({"limit", "cursor"})
# The route labels of their metrics (server/app.py uses them too).
ROUTE: Final = "top_scores"
PLAYER_ROUTE: Final = "player"
SERVER_HEADER: Final = f"TornadoServer/{tornado.version}"  # what RequestHandler sends
_OK: Final = httputil.ResponseStartLine("", 200, "OK")


def _plain_get(request: httputil.HTTPServerRequest) -> bool:
    headers = request.headers
    return (
        request.method == "GET"
        and not headers.get_list("Origin")  # CORS: the handler decides
        and not headers.get_list("If-None-Match")  # may be a 304: the handler decides
        # A body (form data the application would parse and may refuse): the handler.
        and not headers.get_list("Content-Length")
        and not headers.get_list("Transfer-Encoding")
    )


def is_plain_read(request: httputil.HTTPServerRequest) -> bool:
    """A GET of the top 10 the fast path answers exactly as the handler would."""
    return (
        request.path == TOP_SCORES_PATH
        # Pages of the board (limit, cursor): the handler. Other parameters are ignored.
        and not (request.query and _PAGING.intersection(request.query_arguments))
        and _plain_get(request)
    )


def plain_player_read(request: httputil.HTTPServerRequest) -> str | None:
    """The id of a GET of one player the fast path may answer (``me`` included), or None.

    Left to the handler: a query, an escaped id (``%``: the handler decodes it), an id
    longer than any token carries, ``lookup`` (its own route), deeper paths (``/around``).
    """
    path = request.path
    if not path.startswith(PLAYERS_PREFIX) or request.query or not _plain_get(request):
        return None
    given = path[len(PLAYERS_PREFIX) :]
    if (
        not given
        or len(given) > MAX_USER_ID_CHARS
        or "/" in given
        or "%" in given
        or given == "lookup"
    ):
        return None
    return given


def player_body(service: Backend, request: httputil.HTTPServerRequest, given: str) -> bytes | None:
    """The body of a 200 answer to a plain read of player ``given``, or None when the
    handler must answer (a player not ranked; for ``me``: no valid token, or an address
    throttled for failing too often; the handler checks again and counts the failure)."""
    user_id = given
    if given == ME:
        if service.auth_throttle.retry_after(client_of(request, service), time.monotonic()):
            return None
        try:
            user_id = service.verifier.verify_header(header(request, "Authorization")).user_id
        except TokenRefused:
            return None
    try:
        answer = player_answer(service.ranks, user_id)
    except ApiError:
        return None
    return json.dumps(answer, separators=(",", ":"), ensure_ascii=False).encode()


def default_etag(body: bytes) -> str:
    """The ETag Tornado's ``RequestHandler.compute_etag`` gives ``body``."""
    return f'"{hashlib.sha1(body).hexdigest()}"'  # an ETag, not a secret


class FastReads(Router):
    """The HTTP server's router: plain reads here, everything else to ``app``."""

    def __init__(self, app: Application, service: Backend) -> None:
        self.app = app
        self.service = service

    def find_handler(
        self, request: httputil.HTTPServerRequest, **kwargs: Any
    ) -> httputil.HTTPMessageDelegate | None:
        service = self.service
        runtime = service.board_runtime
        if runtime is not None:
            # A boards file: plain reads of the top N of the default board's default
            # period, as its top route answers them (any query: the handler).
            if not request.query and is_plain_read(request) and runtime.loaded:
                default = service.boards[0]
                body, etag = runtime.period(default.id, default.default_period.name).plain_top()
                return ReadAnswer(service, request, ROUTE, body, etag)
            return self.app.find_handler(request, **kwargs)
        if service.leaderboard.view.loaded:
            if is_plain_read(request):
                body, etag = service.leaderboard.view.top_scores.answer
                return ReadAnswer(service, request, ROUTE, body, etag)
            given = plain_player_read(request)
            if given is not None:
                player = player_body(service, request, given)
                if player is not None:
                    return ReadAnswer(service, request, PLAYER_ROUTE, player, default_etag(player))
        return self.app.find_handler(request, **kwargs)


class ReadAnswer(httputil.HTTPMessageDelegate):
    """Answers one plain read with ``body`` when its request ends."""

    def __init__(
        self,
        service: Backend,
        request: httputil.HTTPServerRequest,
        route: str,
        body: bytes,
        etag: str,
    ) -> None:
        self.service = service
        self.request = request
        self.route = route
        self.body = body
        self.etag = etag

    def finish(self) -> None:
        service, request, body, etag = self.service, self.request, self.body, self.etag
        # The handler's headers, in its order (Tornado's defaults, then ours).
        headers = httputil.HTTPHeaders()
        headers["Server"] = SERVER_HEADER
        headers["Content-Type"] = JSON_CONTENT_TYPE
        headers["Date"] = httputil.format_timestamp(time.time())
        headers["X-Content-Type-Options"] = "nosniff"
        headers["X-Request-Id"] = request_id(header(request, "X-Request-ID"))
        if service.settings.uses_tls:
            headers["Strict-Transport-Security"] = HSTS
        headers["Etag"] = etag
        headers["Content-Length"] = str(len(body))
        assert request.connection is not None
        request.connection.write_headers(_OK, headers, body)
        request.connection.finish()
        # Answered within this call: never in flight across an await, so the drain
        # counter (handlers/inflight.py) has nothing to wait for.
        service.metrics.request_done(self.route, "GET", 200, request.request_time())
        access_log(request, 200)
