"""``GET /api/top-scores`` without a ``RequestHandler``, for the plain case.

The top 10 is the most read route and its answer is encoded once per change, so what a
read costs is Tornado's per-request machinery: a ``RequestHandler`` (its headers, its
UI namespaces, a coroutine run as a task). :class:`FastReads` sits in front of the
application as its router: a plain read of the top 10 (GET, no body, no ``Origin``,
no ``If-None-Match``, the board loaded) is answered at once by :class:`TopScoresAnswer`,
with the same status, headers and body as :class:`handlers.scores.TopScoresHandler`;
every other request goes to the application unchanged (CORS, conditional requests,
errors, other methods and routes).
"""

from __future__ import annotations

import time
from typing import Any, Final

import tornado
from tornado import httputil
from tornado.routing import Router
from tornado.web import Application

from handlers.base import HSTS, JSON_CONTENT_TYPE, access_log, header, request_id
from handlers.context import Backend

TOP_SCORES_PATH: Final = "/api/top-scores"
_PAGING: Final = frozenset({"limit", "cursor"})
ROUTE: Final = "top_scores"  # the route label of its metrics (server/app.py uses it too)
SERVER_HEADER: Final = f"TornadoServer/{tornado.version}"  # what RequestHandler sends
_OK: Final = httputil.ResponseStartLine("", 200, "OK")


def is_plain_read(request: httputil.HTTPServerRequest) -> bool:
    """A GET of the top 10 the fast path answers exactly as the handler would."""
    headers = request.headers
    return (
        request.method == "GET"
        and request.path == TOP_SCORES_PATH
        # Pages of the board (limit, cursor): the handler. Other parameters are ignored.
        and not (request.query and _PAGING.intersection(request.query_arguments))
        and not headers.get_list("Origin")  # CORS: the handler decides
        and not headers.get_list("If-None-Match")  # may be a 304: the handler decides
        # A body (form data the application would parse and may refuse): the handler.
        and not headers.get_list("Content-Length")
        and not headers.get_list("Transfer-Encoding")
    )


class FastReads(Router):
    """The HTTP server's router: plain top-10 reads here, everything else to ``app``."""

    def __init__(self, app: Application, service: Backend) -> None:
        self.app = app
        self.service = service

    def find_handler(
        self, request: httputil.HTTPServerRequest, **kwargs: Any
    ) -> httputil.HTTPMessageDelegate | None:
        if self.service.leaderboard.view.loaded and is_plain_read(request):
            return TopScoresAnswer(self.service, request)
        return self.app.find_handler(request, **kwargs)


class TopScoresAnswer(httputil.HTTPMessageDelegate):
    """Answers one plain read when its request ends."""

    def __init__(self, service: Backend, request: httputil.HTTPServerRequest) -> None:
        self.service = service
        self.request = request

    def finish(self) -> None:
        service, request = self.service, self.request
        body, etag = service.leaderboard.view.top_scores.answer
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
        service.metrics.request_done(ROUTE, "GET", 200, request.request_time())
        access_log(request, 200)
