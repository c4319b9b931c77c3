"""``GET /api/openapi.json``: the OpenAPI 3.1 description of this API."""

from __future__ import annotations

from handlers.base import ApiHandler
from handlers.openapi_spec import openapi_body


class OpenApiHandler(ApiHandler):
    """Serves the OpenAPI document (with this server's limits), encoded once per process."""

    def get(self) -> None:
        settings = self.service.settings
        self.finish(openapi_body(settings.max_increment, settings.top_n))

    head = get
