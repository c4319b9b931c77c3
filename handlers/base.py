"""The base of every JSON handler: error rendering, request counting and latency metrics."""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any

import tornado.web

from server.errors import ApiError
from server.service import Service

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


class ApiHandler(tornado.web.RequestHandler):
    """Answers errors as ``{"error": code, "message": text}`` and records each request."""

    service: Service
    route: str

    def initialize(self, service: Service, route: str = "other") -> None:
        self.service = service
        self.route = route
        service.request_started()
        self._counted = True

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("X-Content-Type-Options", "nosniff")

    def on_finish(self) -> None:
        if self._counted:
            self._counted = False
            self.service.request_finished()
            self.service.metrics.request_seconds.labels(self.route, self.request.method).observe(
                self.request.request_time()
            )

    def write_json(self, body: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(body, separators=(",", ":"), ensure_ascii=False))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            for name, value in exc.headers.items():
                self.set_header(name, value)
            code, message = exc.code, exc.message
        else:
            code = _STATUS_CODES.get(status_code, "error")
            if isinstance(exc, tornado.web.HTTPError) and exc.log_message:
                message = exc.log_message % exc.args if exc.args else exc.log_message
            else:
                message = HTTPStatus(status_code).phrase
        self.finish(json.dumps({"error": code, "message": message}))


class NotFoundHandler(ApiHandler):
    """Every unknown path: a JSON 404."""

    def prepare(self) -> None:
        raise ApiError(404, "not_found", f"no route for {self.request.path}")
