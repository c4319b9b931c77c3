"""Errors that reach API clients: an HTTP status, a stable code and a human message."""

from __future__ import annotations

import tornado.web


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
