"""The live page (``GET /``) and the files it is built of (``/client/...``): the live
client, an ES module a page imports from here (``handlers/web/scoreboard.js``, the protocol
of docs/protocol.md), and the page's own script and styles (issue 15).

The page is plain HTML whose script and styles come from this origin only, under a strict
Content-Security-Policy: no inline script or style, connections to this origin only, and
framing only by the origins of ``SCOREBOARD_FRAME_ANCESTORS`` (none by default). A token
the page is given rides in the URL's fragment, which browsers never send to a server.

Served by Tornado's static file handler (ETag, ``If-None-Match`` and ranges): a URL naming
the file's version (``?v=`` its :data:`MODULE_VERSION`, as :func:`module_url` gives it) is
cached for a year as immutable, any other is revalidated on every use (``no-cache``), so a
page that pins the version never waits on the network and one that does not is never
stale. Any origin may import it (a game's own site): the module holds no secrets.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any, Final

import tornado.web

from handlers.base import allowed_methods, render_error
from handlers.context import Backend
from handlers.inflight import InFlight

WEB_DIR: Final = Path(__file__).with_name("web")
MODULE_NAME: Final = "scoreboard.js"
# Each file's version: the start of its content's SHA-256 (what ``?v=`` must name).
VERSIONS: Final = {
    path.name: hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    for path in WEB_DIR.iterdir()
    if path.suffix in {".js", ".css", ".svg"}
}
MODULE_VERSION: Final = VERSIONS[MODULE_NAME]
FILES: Final = r"scoreboard\.js|page\.js|page\.css|icon\.svg"  # the route's group
_TYPES: Final = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
PAGE: Final = (WEB_DIR / "index.html").read_bytes()
YEAR_S: Final = 365 * 24 * 3600


def module_url() -> str:
    """The module's URL pinned to this version (cacheable for a year)."""
    return f"/client/{MODULE_NAME}?v={MODULE_VERSION}"


@functools.cache
def page_policy(frame_ancestors: tuple[str, ...]) -> str:
    """The page's Content-Security-Policy (built once: the settings never change)."""
    framing = " ".join(frame_ancestors) or "'none'"
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        f"img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors {framing}"
    )


class BrowserFileHandler(tornado.web.RequestHandler):
    """What the page and its files share: GET and HEAD only (a 405 says so in ``Allow``),
    each request counted in the route's metrics."""

    service: Backend
    route: str

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # As the API's errors: JSON with a stable code; a 405 lists the methods the route
        # answers (RFC 9110).
        if status_code == 405:
            self.set_header("Allow", ", ".join(allowed_methods(type(self))))
        render_error(self, status_code, kwargs.get("exc_info"))

    def on_finish(self) -> None:
        self.service.metrics.request_done(
            self.route, self.request.method, self.get_status(), self.request.request_time()
        )


class PageHandler(BrowserFileHandler):
    """``GET /``: the live page."""

    def initialize(self, service: Backend, inflight: InFlight, route: str) -> None:
        self.service = service
        self.route = route
        self.policy = page_policy(service.settings.frame_ancestors)

    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Content-Security-Policy", self.policy)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("Cache-Control", "no-cache")
        self.finish(PAGE)

    head = get


class ClientModuleHandler(tornado.web.StaticFileHandler, BrowserFileHandler):
    """``/client/(scoreboard.js|page.js|page.css|icon.svg)``: with their caching and CORS
    headers."""

    def initialize(  # type: ignore[override]
        self, service: Backend, inflight: InFlight, route: str
    ) -> None:
        super().initialize(path=str(WEB_DIR))
        self.service = service
        self.route = route

    @functools.cached_property
    def pinned(self) -> bool:
        """Whether ``?v=`` names this file's version (then cached for a year)."""
        name = self.path_args[0] if self.path_args else ""
        return self.get_query_argument("v", None) == VERSIONS.get(name)

    def get_cache_time(self, path: str, modified: Any, mime_type: str) -> int:
        return YEAR_S if self.pinned else 0

    def set_extra_headers(self, path: str) -> None:
        if self.pinned:
            self.set_header("Cache-Control", f"public, max-age={YEAR_S}, immutable")
        else:
            self.set_header("Cache-Control", "no-cache")
        self.set_header("Access-Control-Allow-Origin", "*")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Content-Type", _TYPES[Path(path).suffix])
