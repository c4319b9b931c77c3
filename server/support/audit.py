"""The audit trail: one structured line per update request and per admin action.

It goes to the ``scoreboard.audit`` logger (JSON lines on stdout with the rest, unless an
operator routes that logger elsewhere). It never holds a token or a secret: only who
(user id, client address), what (increment or action type), the outcome code, the new
score, and how long it took.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from server.support.logs import log_fields

audit_log = logging.getLogger("scoreboard.audit")


@dataclass(slots=True)
class UpdateAudit:
    """What one update request did, filled in as the request is handled."""

    request_id: str
    client: str | None
    user_id: str | None = None
    increment: int | None = None
    action: str | None = None
    outcome: str | None = None
    new_score: int | None = None

    def emit(self, latency_s: float) -> None:
        """Write the audit line (once the request is answered)."""
        log_fields(
            audit_log,
            logging.INFO,
            "update",
            {
                "request_id": self.request_id,
                "client": self.client,
                "user_id": self.user_id,
                "increment": self.increment,
                "action": self.action,
                "outcome": self.outcome,
                "new_score": self.new_score,
                "latency_ms": round(latency_s * 1000, 3),
            },
        )
