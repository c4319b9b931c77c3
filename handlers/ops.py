"""Operations endpoints: ``/healthz``, ``/readyz`` and ``/metrics``."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST

from handlers.base import ApiHandler
from server.errors import ApiError


class HealthHandler(ApiHandler):
    """Alive: the process answers HTTP."""

    def get(self) -> None:
        self.write_json({"status": "ok"})

    head = get  # probes may use HEAD: the same status and headers, no body


class ReadyHandler(ApiHandler):
    """Ready: the store answers and the leaderboard is loaded; 503 otherwise."""

    async def get(self) -> None:
        if not await self.service.ready():
            raise ApiError(503, "not_ready", "the store is unreachable or the board is loading")
        self.write_json({"status": "ready"})

    head = get


class MetricsHandler(ApiHandler):
    """Prometheus text exposition."""

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(self.service.metrics.render())

    head = get
