"""Operations endpoints: ``/healthz``, ``/readyz`` and ``/metrics``."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST

from handlers.base import ApiHandler
from handlers.errors import ApiError


class HealthHandler(ApiHandler):
    """Alive: the process answers HTTP."""

    def get(self) -> None:
        self.write_json({"status": "ok"})

    head = get  # probes may use HEAD: the same status and headers, no body


class ReadyHandler(ApiHandler):
    """Ready: this pod can serve what it has (:mod:`server.readiness`); 503 otherwise.

    Answered from state the service keeps (the store is probed in the background), so
    a probe of the pod never waits on the store.
    """

    def get(self) -> None:
        reason = self.service.not_ready_reason(draining=self.inflight.draining)
        if reason is not None:
            raise ApiError(503, "not_ready", reason)
        self.write_json({"status": "ready"})

    head = get


class MetricsHandler(ApiHandler):
    """Prometheus text exposition."""

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(self.service.metrics.render())

    head = get
