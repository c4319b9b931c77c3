"""``GET /client/scoreboard.js``: the live client, an ES module a page imports from here
(issue 15; the module is ``handlers/web/scoreboard.js``, its protocol docs/protocol.md's).

Served by Tornado's static file handler (ETag, ``If-None-Match`` and ranges): a URL naming
the file's version (``?v=`` its :data:`MODULE_VERSION`, as :func:`module_url` gives it) is
cached for a year as immutable, any other is revalidated on every use (``no-cache``), so a
page that pins the version never waits on the network and one that does not is never
stale. Any origin may import it (a game's own site): the module holds no secrets.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Final

import tornado.web

from handlers.context import Backend
from handlers.inflight import InFlight

WEB_DIR: Final = Path(__file__).with_name("web")
MODULE_NAME: Final = "scoreboard.js"
MODULE_VERSION: Final = hashlib.sha256((WEB_DIR / MODULE_NAME).read_bytes()).hexdigest()[:16]
YEAR_S: Final = 365 * 24 * 3600


def module_url() -> str:
    """The module's URL pinned to this version (cacheable for a year)."""
    return f"/client/{MODULE_NAME}?v={MODULE_VERSION}"


class ClientModuleHandler(tornado.web.StaticFileHandler):
    """``/client/(scoreboard.js)``: the module, with its caching and CORS headers."""

    def initialize(  # type: ignore[override]
        self, service: Backend, inflight: InFlight, route: str
    ) -> None:
        super().initialize(path=str(WEB_DIR))
        self.service = service
        self.route = route

    def pinned(self) -> bool:
        return self.get_query_argument("v", None) == MODULE_VERSION

    def get_cache_time(self, path: str, modified: Any, mime_type: str) -> int:
        return YEAR_S if self.pinned() else 0

    def set_extra_headers(self, path: str) -> None:
        if self.pinned():
            self.set_header("Cache-Control", f"public, max-age={YEAR_S}, immutable")
        else:
            self.set_header("Cache-Control", "no-cache")
        self.set_header("Access-Control-Allow-Origin", "*")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Content-Type", "text/javascript; charset=utf-8")

    def on_finish(self) -> None:
        self.service.metrics.request_done(
            self.route, self.request.method, self.get_status(), self.request.request_time()
        )
